//! Splitting input into statements ended by `;`.
//!
//! A `;` inside a string (`'..'`, `$$..$$`), a quoted identifier (`".."`)
//! or a comment (`--`, `//`, `/* */`) does not end a statement. Comments
//! are kept in the statement text: the server skips them and error
//! positions then match what the user typed.

use crate::command;

/// Where the scanner is at the end of the text so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    Single,
    Double,
    Dollar,
    LineComment,
    BlockComment,
}

/// Splits `text` into complete statements (each without its `;`, trimmed,
/// empty ones dropped) and the unfinished rest.
pub fn split_statements(text: &str) -> (Vec<String>, String) {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut state = State::Code;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        match state {
            State::Code => match c {
                b'\'' => state = State::Single,
                b'"' => state = State::Double,
                b'$' if next == Some(b'$') => {
                    state = State::Dollar;
                    i += 1;
                }
                b'-' if next == Some(b'-') => state = State::LineComment,
                b'/' if next == Some(b'/') => state = State::LineComment,
                b'/' if next == Some(b'*') => {
                    state = State::BlockComment;
                    i += 1;
                }
                b';' => {
                    push_statement(&mut out, &text[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
            // A doubled quote is an escaped quote: leaving and re-entering
            // the string gives the same result, so no lookahead is needed.
            State::Single if c == b'\'' => state = State::Code,
            State::Double if c == b'"' => state = State::Code,
            State::Dollar if c == b'$' && next == Some(b'$') => {
                state = State::Code;
                i += 1;
            }
            State::LineComment if c == b'\n' => state = State::Code,
            State::BlockComment if c == b'*' && next == Some(b'/') => {
                state = State::Code;
                i += 1;
            }
            _ => {}
        }
        i += 1;
        // Shell commands (EXIT, EXPAND ON, ...) end at the line's end,
        // with or without `;`, as in cqlsh.
        if state == State::Code && c == b'\n' {
            let pending = &text[start..i];
            if is_only_comments(pending).is_none() && command::is_shell_command(pending) {
                push_statement(&mut out, pending);
                start = i;
            }
        }
    }
    let rest = &text[start..];
    if state == State::Code && command::is_shell_command(rest) && !rest.trim().is_empty() {
        // A shell command typed on the last line without a newline.
        push_statement(&mut out, rest);
        return (out, String::new());
    }
    let rest = if is_only_comments(rest).is_some() && state == State::Code {
        String::new()
    } else {
        rest.to_string()
    };
    (out, rest)
}

fn push_statement(out: &mut Vec<String>, text: &str) {
    if is_only_comments(text).is_none() {
        out.push(text.trim().to_string());
    }
}

/// `Some(())` if `text` holds nothing but whitespace and comments.
fn is_only_comments(text: &str) -> Option<()> {
    let mut rest = text.trim_start();
    loop {
        if rest.is_empty() {
            return Some(());
        }
        if rest.starts_with("--") || rest.starts_with("//") {
            rest = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(body) = rest.strip_prefix("/*") {
            rest = body.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let (stmts, rest) = split_statements(
            "SELECT 'a;b' FROM t; -- c;d\nINSERT INTO \"x;y\" (k) VALUES ($$p;q$$);/* ; */ SEL",
        );
        assert_eq!(
            stmts,
            vec![
                "SELECT 'a;b' FROM t",
                "-- c;d\nINSERT INTO \"x;y\" (k) VALUES ($$p;q$$)"
            ]
        );
        assert_eq!(rest, "/* ; */ SEL");
    }

    #[test]
    fn multi_line_statement_waits_for_semicolon() {
        let (stmts, rest) = split_statements("CREATE TABLE t (\n  k int PRIMARY KEY\n");
        assert!(stmts.is_empty());
        assert_eq!(rest, "CREATE TABLE t (\n  k int PRIMARY KEY\n");
        let (stmts, rest) = split_statements("CREATE TABLE t (\n  k int PRIMARY KEY\n);\n");
        assert_eq!(stmts, vec!["CREATE TABLE t (\n  k int PRIMARY KEY\n)"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn escaped_quotes_stay_inside_strings() {
        let (stmts, rest) = split_statements("INSERT INTO t (s) VALUES ('it''s; fine');");
        assert_eq!(stmts, vec!["INSERT INTO t (s) VALUES ('it''s; fine')"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn shell_commands_need_no_semicolon() {
        let (stmts, rest) = split_statements("EXPAND ON\nSELECT * FROM t;\nexit");
        assert_eq!(stmts, vec!["EXPAND ON", "SELECT * FROM t", "exit"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn comment_only_input_is_dropped() {
        let (stmts, rest) = split_statements("-- nothing here\n");
        assert!(stmts.is_empty());
        assert_eq!(rest, "");
    }
}
