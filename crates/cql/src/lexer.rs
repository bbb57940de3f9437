//! Turns CQL text into tokens. Signs are not part of numbers: the parser
//! joins `-` and a number in term position, so `c = c -1` still parses.

use crate::ast::Duration;
use crate::error::{ParseError, Position};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An unquoted word; keywords are words too, matched case-insensitively.
    Word(String),
    QuotedName(String),
    Str(String),
    Int(String),
    Float(String),
    Blob(Vec<u8>),
    Uuid(u128),
    Duration(Duration),
    Sym(Sym),
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sym {
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Semi,
    Colon,
    Dot,
    Star,
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
    Neq,
    Plus,
    Minus,
    PlusEq,
    MinusEq,
    QMark,
    Slash,
    Percent,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: Position,
    /// Byte range in the source, for error messages.
    pub start: usize,
    pub end: usize,
}

struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    i: usize,
    line: u32,
    col: u32,
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut lx = Lexer {
        src,
        bytes: src.as_bytes(),
        i: 0,
        line: 1,
        col: 1,
    };
    let mut out = Vec::new();
    loop {
        lx.skip_trivia()?;
        let pos = lx.pos();
        let start = lx.i;
        if lx.i >= lx.bytes.len() {
            out.push(Token {
                tok: Tok::Eof,
                pos,
                start,
                end: start,
            });
            return Ok(out);
        }
        let tok = lx.next_token(pos)?;
        out.push(Token {
            tok,
            pos,
            start,
            end: lx.i,
        });
    }
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Lexer<'_> {
    fn pos(&self) -> Position {
        Position {
            line: self.line,
            column: self.col,
        }
    }

    fn peek(&self, off: usize) -> Option<u8> {
        self.bytes.get(self.i + off).copied()
    }

    /// Advances over one character, keeping line and column right.
    fn bump(&mut self) -> Option<char> {
        let c = self.src[self.i..].chars().next()?;
        self.i += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// Advances over `n` ASCII bytes.
    fn bump_ascii(&mut self, n: usize) {
        self.i += n;
        self.col += n as u32;
    }

    fn skip_trivia(&mut self) -> Result<(), ParseError> {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b' ' | b'\t' | b'\r' | b'\n' | 0x0c), _) => {
                    self.bump();
                }
                (Some(b'-'), Some(b'-')) | (Some(b'/'), Some(b'/')) => {
                    while let Some(b) = self.peek(0) {
                        if b == b'\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    let pos = self.pos();
                    self.bump_ascii(2);
                    loop {
                        match (self.peek(0), self.peek(1)) {
                            (Some(b'*'), Some(b'/')) => {
                                self.bump_ascii(2);
                                break;
                            }
                            (Some(_), _) => {
                                self.bump();
                            }
                            (None, _) => return Err(ParseError::UnterminatedComment { pos }),
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn next_token(&mut self, pos: Position) -> Result<Tok, ParseError> {
        // A uuid may start with a letter or a digit, so it goes first.
        if let Some(u) = self.uuid_at() {
            self.bump_ascii(36);
            return Ok(Tok::Uuid(u));
        }
        let b = self.bytes[self.i];
        match b {
            b'P' | b'p'
                if self
                    .src
                    .get(self.i..self.i + 20)
                    .and_then(parse_iso_alternative)
                    .is_some()
                    && !self.peek(20).is_some_and(is_ident_char) =>
            {
                let d = self
                    .src
                    .get(self.i..self.i + 20)
                    .and_then(parse_iso_alternative)
                    .unwrap_or_default();
                self.bump_ascii(20);
                Ok(Tok::Duration(d))
            }
            b'a'..=b'z' | b'A'..=b'Z' => {
                let s = self.i;
                while self.peek(0).is_some_and(is_ident_char) {
                    self.bump_ascii(1);
                }
                Ok(Tok::Word(self.src[s..self.i].to_owned()))
            }
            b'0'..=b'9' => self.number(pos),
            b'\'' => self.string(pos),
            b'"' => self.quoted_name(pos),
            b'$' if self.peek(1) == Some(b'$') => self.dollar_string(pos),
            _ => self.symbol(pos),
        }
    }

    fn uuid_at(&self) -> Option<u128> {
        let s = self.bytes.get(self.i..self.i + 36)?;
        let mut v: u128 = 0;
        for (k, &c) in s.iter().enumerate() {
            if matches!(k, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return None;
                }
            } else {
                v = (v << 4) | u128::from(hex_val(c)?);
            }
        }
        if self.peek(36).is_some_and(is_ident_char) {
            return None;
        }
        Some(v)
    }

    fn number(&mut self, pos: Position) -> Result<Tok, ParseError> {
        let s = self.i;
        if self.peek(0) == Some(b'0') && matches!(self.peek(1), Some(b'x' | b'X')) {
            self.bump_ascii(2);
            while self.peek(0).is_some_and(is_ident_char) {
                self.bump_ascii(1);
            }
            let text = &self.src[s..self.i];
            return decode_hex(&text[2..])
                .map(Tok::Blob)
                .ok_or_else(|| bad_number(pos, text));
        }
        while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
            self.bump_ascii(1);
        }
        let mut float = false;
        if self.peek(0) == Some(b'.') {
            float = true;
            self.bump_ascii(1);
            while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                self.bump_ascii(1);
            }
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.peek(1), Some(b'+' | b'-')));
            if self.peek(1 + sign).is_some_and(|b| b.is_ascii_digit()) {
                float = true;
                self.bump_ascii(1 + sign);
                while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                    self.bump_ascii(1);
                }
            }
        }
        let rest_is_word = self.peek(0).is_some_and(is_ident_char) || self.at_micro_sign();
        if !rest_is_word {
            let text = self.src[s..self.i].to_owned();
            return Ok(if float {
                Tok::Float(text)
            } else {
                Tok::Int(text)
            });
        }
        // Digits glued to letters: only a duration like `1h30m` is valid.
        while self.peek(0).is_some_and(is_ident_char) || self.at_micro_sign() {
            self.bump();
        }
        let text = &self.src[s..self.i];
        if float {
            return Err(bad_number(pos, text));
        }
        parse_unit_duration(text)
            .map(Tok::Duration)
            .ok_or_else(|| bad_number(pos, text))
    }

    fn at_micro_sign(&self) -> bool {
        self.src[self.i..].starts_with('µ') || self.src[self.i..].starts_with('μ')
    }

    fn string(&mut self, pos: Position) -> Result<Tok, ParseError> {
        self.bump_ascii(1);
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(ParseError::UnterminatedString { pos }),
                Some('\'') => {
                    if self.peek(0) == Some(b'\'') {
                        self.bump_ascii(1);
                        out.push('\'');
                    } else {
                        return Ok(Tok::Str(out));
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn dollar_string(&mut self, pos: Position) -> Result<Tok, ParseError> {
        self.bump_ascii(2);
        let body_start = self.i;
        loop {
            if self.peek(0) == Some(b'$') && self.peek(1) == Some(b'$') {
                let body = self.src[body_start..self.i].to_owned();
                self.bump_ascii(2);
                return Ok(Tok::Str(body));
            }
            if self.bump().is_none() {
                return Err(ParseError::UnterminatedString { pos });
            }
        }
    }

    fn quoted_name(&mut self, pos: Position) -> Result<Tok, ParseError> {
        self.bump_ascii(1);
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(ParseError::UnterminatedIdentifier { pos }),
                Some('"') => {
                    if self.peek(0) == Some(b'"') {
                        self.bump_ascii(1);
                        out.push('"');
                    } else if out.is_empty() {
                        return Err(ParseError::Invalid {
                            pos,
                            message: "empty quoted identifier".to_owned(),
                        });
                    } else {
                        return Ok(Tok::QuotedName(out));
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn symbol(&mut self, pos: Position) -> Result<Tok, ParseError> {
        let two = match (self.peek(0), self.peek(1)) {
            (Some(b'<'), Some(b'=')) => Some(Sym::Lte),
            (Some(b'>'), Some(b'=')) => Some(Sym::Gte),
            (Some(b'!'), Some(b'=')) => Some(Sym::Neq),
            (Some(b'+'), Some(b'=')) => Some(Sym::PlusEq),
            (Some(b'-'), Some(b'=')) => Some(Sym::MinusEq),
            _ => None,
        };
        if let Some(sym) = two {
            self.bump_ascii(2);
            return Ok(Tok::Sym(sym));
        }
        let sym = match self.bytes[self.i] {
            b'(' => Sym::LParen,
            b')' => Sym::RParen,
            b'[' => Sym::LBracket,
            b']' => Sym::RBracket,
            b'{' => Sym::LBrace,
            b'}' => Sym::RBrace,
            b',' => Sym::Comma,
            b';' => Sym::Semi,
            b':' => Sym::Colon,
            b'.' => Sym::Dot,
            b'*' => Sym::Star,
            b'=' => Sym::Eq,
            b'<' => Sym::Lt,
            b'>' => Sym::Gt,
            b'+' => Sym::Plus,
            b'-' => Sym::Minus,
            b'?' => Sym::QMark,
            b'/' => Sym::Slash,
            b'%' => Sym::Percent,
            _ => {
                let ch = self.src[self.i..].chars().next().unwrap_or('\u{fffd}');
                return Err(ParseError::InvalidCharacter { pos, ch });
            }
        };
        self.bump_ascii(1);
        Ok(Tok::Sym(sym))
    }
}

fn bad_number(pos: Position, text: &str) -> ParseError {
    ParseError::BadNumber {
        pos,
        text: text.to_owned(),
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|p| Some(hex_val(p[0])? << 4 | hex_val(p[1])?))
        .collect()
}

const NANOS_PER_MICRO: i64 = 1_000;
const NANOS_PER_MILLI: i64 = 1_000_000;
const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_MINUTE: i64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: i64 = 60 * NANOS_PER_MINUTE;

/// Adds `n` units to a duration; `None` on an unknown unit or overflow.
fn add_unit(d: &mut Duration, n: i64, unit: &str) -> Option<()> {
    let months = |k: i64| -> Option<i32> { i32::try_from(n.checked_mul(k)?).ok() };
    match unit {
        "y" => d.months = d.months.checked_add(months(12)?)?,
        "mo" => d.months = d.months.checked_add(months(1)?)?,
        "w" => d.days = d.days.checked_add(months(7)?)?,
        "d" => d.days = d.days.checked_add(months(1)?)?,
        _ => {
            let k = match unit {
                "h" => NANOS_PER_HOUR,
                "m" => NANOS_PER_MINUTE,
                "s" => NANOS_PER_SECOND,
                "ms" => NANOS_PER_MILLI,
                "us" | "µs" | "μs" => NANOS_PER_MICRO,
                "ns" => 1,
                _ => return None,
            };
            d.nanos = d.nanos.checked_add(n.checked_mul(k)?)?;
        }
    }
    Some(())
}

/// `1h30m`, `2y3mo`, `10us`, ...; units are case-insensitive. Cassandra's
/// rule that units come in decreasing order is not enforced.
pub(crate) fn parse_unit_duration(text: &str) -> Option<Duration> {
    let lower = text.to_lowercase();
    let mut d = Duration::default();
    let mut rest = lower.as_str();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit())
            .map_or(rest.len(), |(k, _)| k);
        add_unit(&mut d, n, &rest[..unit_len])?;
        rest = &rest[unit_len..];
    }
    Some(d)
}

/// ISO 8601's alternative format `PYYYY-MM-DDThh:mm:ss` (Cassandra's
/// third duration form, e.g. `P0000-00-00T89:09:09`).
pub(crate) fn parse_iso_alternative(text: &str) -> Option<Duration> {
    let b = text.as_bytes();
    if b.len() != 20 || !matches!(b[0], b'P' | b'p') {
        return None;
    }
    for (i, shape) in b"PDDDD-DD-DDTDD:DD:DD".iter().enumerate().skip(1) {
        let ok = match shape {
            b'D' => b[i].is_ascii_digit(),
            b'T' => matches!(b[i], b'T' | b't'),
            other => b[i] == *other,
        };
        if !ok {
            return None;
        }
    }
    let n = |r: std::ops::Range<usize>| text.get(r).and_then(|t| t.parse::<i64>().ok());
    let mut d = Duration::default();
    for (range, unit) in [
        (1..5, "y"),
        (6..8, "mo"),
        (9..11, "d"),
        (12..14, "h"),
        (15..17, "m"),
        (18..20, "s"),
    ] {
        add_unit(&mut d, n(range)?, unit)?;
    }
    Some(d)
}

/// ISO 8601 `P[nY][nM][nW][nD][T[nH][nM][nS]]`, as Cassandra accepts it.
pub(crate) fn parse_iso_duration(text: &str) -> Option<Duration> {
    let upper = text.to_ascii_uppercase();
    let body = upper.strip_prefix('P')?;
    let (date, time) = match body.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (body, None),
    };
    let mut d = Duration::default();
    let mut any = false;
    let mut walk = |part: &str, units: &[(char, &str)]| -> Option<()> {
        let mut rest = part;
        let mut next_unit = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let n: i64 = rest[..digits].parse().ok()?;
            let c = rest[digits..].chars().next()?;
            let k = units[next_unit..].iter().position(|(u, _)| *u == c)? + next_unit;
            add_unit(&mut d, n, units[k].1)?;
            next_unit = k + 1;
            rest = &rest[digits + 1..];
            any = true;
        }
        Some(())
    };
    walk(date, &[('Y', "y"), ('M', "mo"), ('W', "w"), ('D', "d")])?;
    if let Some(t) = time {
        walk(t, &[('H', "h"), ('M', "m"), ('S', "s")])?;
    }
    any.then_some(d)
}
