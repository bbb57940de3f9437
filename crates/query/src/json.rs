//! JSON: `SELECT JSON` rows and `INSERT ... JSON` values, formatted and
//! read as Cassandra does (strings quoted, uuids, inets and dates as
//! strings, timestamps as `yyyy-mm-dd hh:mm:ss.SSSZ`, blobs as `"0x.."`,
//! lists and sets as arrays, maps as objects with string keys).
//!
//! The parser is small and hand-written so that numbers keep their source
//! text: a varint or decimal is not rounded through a float.

use std::fmt::Write;

use bytes::Bytes;
use gyre_cql::{CqlType, JsonDefault, Literal, Term};
use gyre_protocol::{date_to_days, ColumnType, CqlDuration, CqlValue};
use gyre_schema::{ColumnDef, TableDef};

use crate::error::{QueryError, Result};
use crate::values::{term_bytes, unfrozen};

/// Nesting limit for parsed JSON (the input comes from clients).
const MAX_DEPTH: usize = 64;

/// A parsed JSON value; numbers keep their text.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

// ---- SELECT JSON -------------------------------------------------------

/// One result row as a JSON object keyed by column name.
pub(crate) fn row_json(columns: &[(String, ColumnType)], row: &[Option<Bytes>]) -> Result<String> {
    let mut out = String::from("{");
    for (i, ((name, ty), value)) in columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // Column names and aliases are quoted when case-sensitive, as in
        // CQL; selector names such as `ttl(v)` are not.
        if name.contains('(') {
            write_string(&mut out, name);
        } else {
            write_string(&mut out, &gyre_cql::quote_identifier(name));
        }
        out.push_str(": ");
        match value {
            None => out.push_str("null"),
            Some(b) => {
                let mut v = CqlValue::decode(ty, b).map_err(|e| {
                    QueryError::Server(format!("undecodable value for {name}: {e}"))
                })?;
                pad_udts(&mut v, ty);
                write_value(&mut out, &v);
            }
        }
    }
    out.push('}');
    Ok(out)
}

/// One value as JSON text (`toJson()`).
pub(crate) fn value_json(ty: &ColumnType, bytes: Option<&Bytes>) -> Result<String> {
    let mut out = String::new();
    match bytes {
        None => out.push_str("null"),
        Some(b) => {
            let mut v = CqlValue::decode(ty, b)
                .map_err(|e| QueryError::Server(format!("undecodable value: {e}")))?;
            pad_udts(&mut v, ty);
            write_value(&mut out, &v);
        }
    }
    Ok(out)
}

/// Gives every user type value all of its type's fields (a value written
/// before ALTER TYPE ADD, or stored without trailing nulls, is shorter),
/// so JSON lists every field as Cassandra does.
fn pad_udts(v: &mut CqlValue, ty: &ColumnType) {
    match (v, ty) {
        (CqlValue::Udt(fields), ColumnType::Udt { fields: types, .. }) => {
            for (name, _) in types.iter().skip(fields.len()) {
                fields.push((name.clone(), None));
            }
            for ((_, v), (_, t)) in fields.iter_mut().zip(types) {
                if let Some(v) = v {
                    pad_udts(v, t);
                }
            }
        }
        (
            CqlValue::List(items) | CqlValue::Set(items) | CqlValue::Vector(items),
            ColumnType::List(t) | ColumnType::Set(t) | ColumnType::Vector(t, _),
        ) => items.iter_mut().for_each(|i| pad_udts(i, t)),
        (CqlValue::Map(entries), ColumnType::Map(kt, vt)) => {
            for (k, v) in entries {
                pad_udts(k, kt);
                pad_udts(v, vt);
            }
        }
        (CqlValue::Tuple(items), ColumnType::Tuple(types)) => {
            for (v, t) in items.iter_mut().zip(types) {
                if let Some(v) = v {
                    pad_udts(v, t);
                }
            }
        }
        _ => {}
    }
}

/// `fromJson(text)` for a value of type `ty`: the CQL term the JSON stands for.
pub(crate) fn from_json(text: &str, ty: &CqlType, column: &str) -> Result<Term> {
    json_term(&parse(text)?, ty, column)
}

fn write_value(out: &mut String, v: &CqlValue) {
    match v {
        CqlValue::Ascii(s) | CqlValue::Text(s) => write_string(out, s),
        CqlValue::Bigint(x) | CqlValue::Counter(x) => push(out, x),
        CqlValue::Int(x) => push(out, x),
        CqlValue::Smallint(x) => push(out, x),
        CqlValue::Tinyint(x) => push(out, x),
        CqlValue::Varint(x) => out.push_str(&varint_string(&x.0)),
        CqlValue::Decimal(d) => {
            let digits = varint_string(&d.unscaled.0);
            out.push_str(&decimal_string(&digits, d.scale));
        }
        CqlValue::Double(x) => write_float(out, *x),
        CqlValue::Float(x) => write_float(out, f64::from(*x)),
        CqlValue::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        CqlValue::Blob(b) | CqlValue::Custom(b) => {
            let mut s = String::with_capacity(2 + b.len() * 2);
            s.push_str("0x");
            for x in b.iter() {
                let _ = write!(s, "{x:02x}");
            }
            write_string(out, &s);
        }
        CqlValue::Uuid(u) | CqlValue::Timeuuid(u) => write_string(out, &u.to_string()),
        CqlValue::Inet(ip) => write_string(out, &ip.to_string()),
        CqlValue::Timestamp(ms) => write_string(out, &timestamp_string(*ms)),
        CqlValue::Date(d) => write_string(out, &date_string(i64::from(date_to_days(*d)))),
        CqlValue::Time(nanos) => write_string(out, &time_string(*nanos)),
        CqlValue::Duration(d) => write_string(out, &duration_string(d)),
        CqlValue::List(items) | CqlValue::Set(items) | CqlValue::Vector(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        CqlValue::Tuple(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match item {
                    Some(v) => write_value(out, v),
                    None => out.push_str("null"),
                }
            }
            out.push(']');
        }
        CqlValue::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                // Object keys are strings: a non-string key's JSON is quoted.
                let mut key = String::new();
                write_value(&mut key, k);
                if key.starts_with('"') {
                    out.push_str(&key);
                } else {
                    write_string(out, &key);
                }
                out.push_str(": ");
                write_value(out, v);
            }
            out.push('}');
        }
        CqlValue::Udt(fields) => {
            out.push('{');
            for (i, (name, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, &gyre_cql::quote_identifier(name));
                out.push_str(": ");
                match v {
                    Some(v) => write_value(out, v),
                    None => out.push_str("null"),
                }
            }
            out.push('}');
        }
        CqlValue::Empty => out.push_str("null"),
    }
}

fn push(out: &mut String, x: impl std::fmt::Display) {
    let _ = write!(out, "{x}");
}

/// Java's spelling of doubles: `1.0`, `1.0E20`-like exponents are fine as
/// JSON in Rust's form (`1e20`); non-finite values as Java prints them.
fn write_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(out, "{x:?}");
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A big-endian two's complement integer in decimal.
fn varint_string(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "0".to_owned();
    }
    let negative = bytes[0] & 0x80 != 0;
    // Magnitude: negate two's complement when negative.
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        let mut carry = true;
        for b in mag.iter_mut().rev() {
            *b = !*b;
            if carry {
                let (v, c) = b.overflowing_add(1);
                *b = v;
                carry = c;
            }
        }
    }
    let mut digits = Vec::new();
    while mag.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// Unscaled digits (with sign) and a scale as BigDecimal prints them
/// (plain notation; `E+n` for a negative scale).
fn decimal_string(digits: &str, scale: i32) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", digits),
    };
    if scale <= 0 {
        return if scale == 0 {
            format!("{sign}{digits}")
        } else {
            format!("{sign}{digits}E+{}", -i64::from(scale))
        };
    }
    let scale = scale as usize;
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale - digits.len() + 1))
    } else {
        digits.to_owned()
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// (year, month, day) of days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn date_string(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn timestamp_string(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (h, min, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000,
    );
    format!("{} {h:02}:{min:02}:{s:02}.{milli:03}Z", date_string(days))
}

fn time_string(nanos: i64) -> String {
    let s = nanos / 1_000_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:09}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        nanos % 1_000_000_000
    )
}

/// Cassandra's duration text: `1y2mo3d4h5m6s7ms8us9ns`, zero parts left out.
fn duration_string(d: &CqlDuration) -> String {
    let negative = d.months < 0 || d.days < 0 || d.nanos < 0;
    let mut out = String::from(if negative { "-" } else { "" });
    let mut part = |n: i64, unit: &str| {
        if n != 0 {
            let _ = write!(out, "{n}{unit}");
        }
    };
    let months = i64::from(d.months).abs();
    part(months / 12, "y");
    part(months % 12, "mo");
    part(i64::from(d.days).abs(), "d");
    let mut nanos = d.nanos.unsigned_abs();
    for (size, unit) in [
        (3_600_000_000_000u64, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ] {
        part((nanos / size) as i64, unit);
        nanos %= size;
    }
    if out.is_empty() || out == "-" {
        out = "0s".to_owned();
    }
    out
}

// ---- INSERT JSON -------------------------------------------------------

/// The columns an `INSERT ... JSON` writes, with their values. Columns the
/// object leaves out are null with `DEFAULT NULL` (Cassandra's default)
/// and left untouched with `DEFAULT UNSET`.
pub(crate) fn insert_values<'a>(
    table: &'a TableDef,
    text: &str,
    default: JsonDefault,
) -> Result<Vec<(&'a ColumnDef, Option<Bytes>)>> {
    let json = parse(text)?;
    if json == Json::Null {
        return Err(QueryError::invalid("Got null for INSERT JSON values"));
    }
    let Json::Object(entries) = json else {
        return Err(QueryError::invalid(
            "Could not decode JSON string as a map: not a JSON object",
        ));
    };
    let mut out: Vec<(&ColumnDef, Option<Bytes>)> = Vec::new();
    for (key, value) in &entries {
        // `"\"Name\""` names a case-sensitive column; other names fold.
        let name = match key.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => key.to_lowercase(),
        };
        let col = table.column(&name).ok_or_else(|| {
            QueryError::invalid(format!(
                "JSON values map contains unrecognized column: {key}"
            ))
        })?;
        if out.iter().any(|(c, _)| c.name == col.name) {
            return Err(QueryError::invalid(format!(
                "JSON values map contains column {key} more than once"
            )));
        }
        let term = json_term(value, &col.ty, &col.name)?;
        out.push((col, term_bytes(&term, &col.ty, &col.name, &[])?));
    }
    if default == JsonDefault::Null {
        for col in &table.columns {
            if !col.kind.is_primary_key() && !out.iter().any(|(c, _)| c.name == col.name) {
                out.push((col, None));
            }
        }
    }
    Ok(out)
}

/// A JSON value as the CQL term it stands for in a column of type `ty`.
fn json_term(v: &Json, ty: &CqlType, column: &str) -> Result<Term> {
    let ty = unfrozen(ty);
    let bad = |what: &str| {
        QueryError::invalid(format!(
            "Error decoding JSON value for {column}: expected {what} for type {ty}"
        ))
    };
    let number = |text: &str| {
        if text.contains(['.', 'e', 'E']) || matches!(text, "NaN" | "Infinity" | "-Infinity") {
            Literal::Float(text.to_owned())
        } else {
            Literal::Integer(text.to_owned())
        }
    };
    let lit = |l: Literal| Ok(Term::Literal(l));
    match (v, ty) {
        (Json::Null, _) => lit(Literal::Null),
        (Json::String(s), CqlType::Text | CqlType::Ascii) => lit(Literal::String(s.clone())),
        (_, CqlType::Text | CqlType::Ascii) => Err(bad("a string")),
        (
            Json::Number(n) | Json::String(n),
            CqlType::Tinyint
            | CqlType::Smallint
            | CqlType::Int
            | CqlType::Bigint
            | CqlType::Counter
            | CqlType::Varint
            | CqlType::Float
            | CqlType::Double
            | CqlType::Decimal,
        ) => lit(number(n.trim())),
        (Json::Bool(b), CqlType::Boolean) => lit(Literal::Bool(*b)),
        (Json::String(s), CqlType::Boolean) => match s.to_ascii_lowercase().as_str() {
            "true" => lit(Literal::Bool(true)),
            "false" => lit(Literal::Bool(false)),
            _ => Err(bad("true or false")),
        },
        (Json::Number(n), CqlType::Timestamp | CqlType::Date | CqlType::Time) => {
            lit(Literal::Integer(n.clone()))
        }
        (Json::String(s), CqlType::Timestamp | CqlType::Date | CqlType::Time | CqlType::Inet) => {
            lit(Literal::String(s.clone()))
        }
        (Json::String(s), CqlType::Uuid | CqlType::Timeuuid) => {
            let u = uuid::Uuid::parse_str(s).map_err(|_| bad("a uuid string"))?;
            lit(Literal::Uuid(u.as_u128()))
        }
        (Json::String(s), CqlType::Blob) => {
            let hex = s
                .strip_prefix("0x")
                .or_else(|| s.strip_prefix("0X"))
                .ok_or_else(|| bad("a string starting with 0x"))?;
            lit(Literal::Blob(
                parse_hex(hex).ok_or_else(|| bad("hex digits"))?,
            ))
        }
        (Json::String(s), CqlType::Duration) => lit(Literal::Duration(
            gyre_cql::parse_duration(s).ok_or_else(|| bad("a duration"))?,
        )),
        (Json::Array(items), CqlType::List(et) | CqlType::Vector(et, _)) => Ok(Term::List(
            items
                .iter()
                .map(|i| json_term(i, et, column))
                .collect::<Result<_>>()?,
        )),
        (Json::Array(items), CqlType::Set(et)) => Ok(Term::Set(
            items
                .iter()
                .map(|i| json_term(i, et, column))
                .collect::<Result<_>>()?,
        )),
        (Json::Array(items), CqlType::Tuple(types)) => {
            if items.len() > types.len() {
                return Err(bad(&format!("at most {} tuple items", types.len())));
            }
            Ok(Term::Tuple(
                items
                    .iter()
                    .zip(types)
                    .map(|(i, t)| json_term(i, t, column))
                    .collect::<Result<_>>()?,
            ))
        }
        (Json::Object(entries), CqlType::Map(kt, vt)) => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                // Keys are strings; a non-string key type holds its JSON there.
                let key = match unfrozen(kt) {
                    CqlType::Text | CqlType::Ascii => Json::String(k.clone()),
                    _ => parse(k).unwrap_or_else(|_| Json::String(k.clone())),
                };
                out.push((json_term(&key, kt, column)?, json_term(v, vt, column)?));
            }
            Ok(Term::Map(out))
        }
        (Json::Object(entries), CqlType::UserType(u)) => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                // A quoted key keeps its case, as in Cassandra.
                let name = match k.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
                    Some(quoted) => quoted.to_owned(),
                    None => k.clone(),
                };
                let Some((_, ft)) = u.field(&name) else {
                    return Err(QueryError::invalid(format!(
                        "Unknown field '{name}' in value of user defined type {}",
                        u.name
                    )));
                };
                out.push((name, json_term(v, ft, column)?));
            }
            Ok(Term::Udt(out))
        }
        _ => Err(bad("another JSON value")),
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

// ---- parser ----------------------------------------------------------------

fn parse(text: &str) -> Result<Json> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.error("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> QueryError {
        QueryError::invalid(format!(
            "Could not decode JSON string: {what} at character {}",
            self.i
        ))
    }

    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn word(&mut self, w: &str) -> bool {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.ws();
        match self.s.get(self.i) {
            None => Err(self.error("unexpected end")),
            Some(b'{') => {
                self.i += 1;
                let mut entries = Vec::new();
                if self.eat(b'}') {
                    return Ok(Json::Object(entries));
                }
                loop {
                    self.ws();
                    let Json::String(k) = self.value(depth + 1)? else {
                        return Err(self.error("expected a string key"));
                    };
                    if !self.eat(b':') {
                        return Err(self.error("expected ':'"));
                    }
                    entries.push((k, self.value(depth + 1)?));
                    if self.eat(b'}') {
                        return Ok(Json::Object(entries));
                    }
                    if !self.eat(b',') {
                        return Err(self.error("expected ',' or '}'"));
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Ok(Json::Array(items));
                    }
                    if !self.eat(b',') {
                        return Err(self.error("expected ',' or ']'"));
                    }
                }
            }
            Some(b'"') => self.string().map(Json::String),
            Some(b't') if self.word("true") => Ok(Json::Bool(true)),
            Some(b'f') if self.word("false") => Ok(Json::Bool(false)),
            Some(b'n') if self.word("null") => Ok(Json::Null),
            Some(b'N') if self.word("NaN") => Ok(Json::Number("NaN".into())),
            Some(b'I') if self.word("Infinity") => Ok(Json::Number("Infinity".into())),
            Some(b'-') if self.s[self.i..].starts_with(b"-Infinity") => {
                self.i += "-Infinity".len();
                Ok(Json::Number("-Infinity".into()))
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                self.i += 1;
                while self.s.get(self.i).is_some_and(|b| {
                    b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')
                }) {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i])
                    .map_err(|_| self.error("bad number"))?;
                Ok(Json::Number(text.to_owned()))
            }
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn string(&mut self) -> Result<String> {
        self.i += 1; // the opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                return Err(self.error("unterminated string"));
            };
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return Err(self.error("unterminated string"));
                    };
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            // A surrogate pair encodes one character.
                            let code = if (0xd800..0xdc00).contains(&hi) && self.word("\\u") {
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or_else(|| self.error("bad \\u escape"))?
                        }
                        _ => return Err(self.error("bad escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("invalid UTF-8"))
    }

    fn hex4(&mut self) -> Result<u32> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.error("bad \\u escape"))?;
        self.i += 4;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_cassandra() {
        assert_eq!(timestamp_string(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(
            timestamp_string(1_296_705_900_123),
            "2011-02-03 04:05:00.123Z"
        );
        assert_eq!(timestamp_string(-1), "1969-12-31 23:59:59.999Z");
        assert_eq!(time_string(3_600_500_000_000), "01:00:00.500000000");
        assert_eq!(varint_string(&[0xff]), "-1");
        assert_eq!(varint_string(&[0x01, 0x00]), "256");
        assert_eq!(decimal_string("-125", 2), "-1.25");
        assert_eq!(decimal_string("5", 3), "0.005");
        assert_eq!(decimal_string("5", -2), "5E+2");
        let d = CqlDuration {
            months: 14,
            days: 3,
            nanos: 3_600_000_000_001,
        };
        assert_eq!(duration_string(&d), "1y2mo3d1h1ns");
    }

    #[test]
    fn parses_json() {
        let v = parse(r#" {"a": [1, -2.5e3, "x\"\u00e9"], "b": {"c": null, "d": true}} "#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v,
            Json::Object(vec![
                (
                    "a".into(),
                    Json::Array(vec![
                        Json::Number("1".into()),
                        Json::Number("-2.5e3".into()),
                        Json::String("x\"é".into()),
                    ])
                ),
                (
                    "b".into(),
                    Json::Object(vec![
                        ("c".into(), Json::Null),
                        ("d".into(), Json::Bool(true))
                    ])
                ),
            ])
        );
        assert!(parse("{\"a\": }").is_err());
        assert!(parse("[1, 2").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
    }
}
