//! The shell's own commands, recognised before anything goes to the server.

use scylla::statement::{Consistency, SerialConsistency};

/// Words that start a shell command; these end at the end of the line
/// and need no `;`. `DESCRIBE` goes to the server but, as in cqlsh, may
/// be typed without `;`.
const SHELL_WORDS: &[&str] = &[
    "EXIT",
    "QUIT",
    "HELP",
    "?",
    "EXPAND",
    "PAGING",
    "TRACING",
    "CONSISTENCY",
    "SERIAL",
    "SOURCE",
    "CLEAR",
    "CLS",
    "DESCRIBE",
    "DESC",
];

/// True if `text` starts with a shell command word.
pub fn is_shell_command(text: &str) -> bool {
    let first = first_word(text);
    SHELL_WORDS.iter().any(|w| first.eq_ignore_ascii_case(w))
}

fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or("")
}

/// What a statement asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exit,
    Help(Option<String>),
    /// `EXPAND` alone shows the setting.
    Expand(Option<bool>),
    Paging(PagingArg),
    /// `TRACING` alone shows the setting.
    Tracing(Option<bool>),
    Consistency(Option<Consistency>),
    SerialConsistency(Option<SerialConsistency>),
    Source(String),
    Clear,
    /// `USE ks`: sent to the server, then the prompt changes.
    Use(String),
    /// Anything else: CQL for the server (DESCRIBE included: Gyre
    /// describes server-side).
    Cql(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingArg {
    Show,
    On,
    Off,
    Size(i32),
}

/// Parses one statement (without its `;`). Errors are usage messages.
pub fn parse(stmt: &str) -> Result<Command, String> {
    let stmt = stmt.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = stmt.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let arg = |i: usize| upper.get(i).map(String::as_str);
    match arg(0).unwrap_or("") {
        "EXIT" | "QUIT" => Ok(Command::Exit),
        "HELP" | "?" => Ok(Command::Help(words.get(1).map(|w| w.to_ascii_uppercase()))),
        "CLEAR" | "CLS" => Ok(Command::Clear),
        "EXPAND" => match arg(1) {
            None => Ok(Command::Expand(None)),
            Some("ON") => Ok(Command::Expand(Some(true))),
            Some("OFF") => Ok(Command::Expand(Some(false))),
            Some(_) => Err("usage: EXPAND [ON|OFF]".into()),
        },
        "PAGING" => match arg(1) {
            None => Ok(Command::Paging(PagingArg::Show)),
            Some("ON") => Ok(Command::Paging(PagingArg::On)),
            Some("OFF") => Ok(Command::Paging(PagingArg::Off)),
            Some(n) => match n.parse::<i32>() {
                Ok(n) if n > 0 => Ok(Command::Paging(PagingArg::Size(n))),
                _ => Err("usage: PAGING [ON|OFF|N] (N > 0)".into()),
            },
        },
        "TRACING" => match arg(1) {
            None => Ok(Command::Tracing(None)),
            Some("ON") => Ok(Command::Tracing(Some(true))),
            Some("OFF") => Ok(Command::Tracing(Some(false))),
            Some(_) => Err("usage: TRACING [ON|OFF]".into()),
        },
        "CONSISTENCY" => match arg(1) {
            None => Ok(Command::Consistency(None)),
            Some(level) => parse_consistency(level)
                .map(|c| Command::Consistency(Some(c)))
                .ok_or_else(|| format!("unknown consistency level: {level}")),
        },
        "SERIAL" if arg(1) == Some("CONSISTENCY") => match arg(2) {
            None => Ok(Command::SerialConsistency(None)),
            Some("SERIAL") => Ok(Command::SerialConsistency(Some(SerialConsistency::Serial))),
            Some("LOCAL_SERIAL") => Ok(Command::SerialConsistency(Some(
                SerialConsistency::LocalSerial,
            ))),
            Some(level) => Err(format!(
                "unknown serial consistency level: {level} (SERIAL or LOCAL_SERIAL)"
            )),
        },
        "SOURCE" => {
            let rest = stmt[words[0].len()..].trim();
            let path = rest
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
                .unwrap_or(rest);
            if path.is_empty() {
                Err("usage: SOURCE 'file'".into())
            } else {
                Ok(Command::Source(path.to_string()))
            }
        }
        "USE" if words.len() == 2 => Ok(Command::Use(unquote_identifier(words[1]))),
        _ => Ok(Command::Cql(stmt.to_string())),
    }
}

/// The keyspace name as the server will see it: quoted names keep their
/// case, unquoted ones are folded to lower case.
pub fn unquote_identifier(ident: &str) -> String {
    match ident.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => ident.to_ascii_lowercase(),
    }
}

/// A consistency level by its CQL name (any case).
pub fn parse_consistency(name: &str) -> Option<Consistency> {
    Some(match name.to_ascii_uppercase().as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        "SERIAL" => Consistency::Serial,
        "LOCAL_SERIAL" => Consistency::LocalSerial,
        _ => return None,
    })
}

/// The CQL name of a consistency level.
pub fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Any => "ANY",
        Consistency::One => "ONE",
        Consistency::Two => "TWO",
        Consistency::Three => "THREE",
        Consistency::Quorum => "QUORUM",
        Consistency::All => "ALL",
        Consistency::LocalQuorum => "LOCAL_QUORUM",
        Consistency::EachQuorum => "EACH_QUORUM",
        Consistency::LocalOne => "LOCAL_ONE",
        Consistency::Serial => "SERIAL",
        Consistency::LocalSerial => "LOCAL_SERIAL",
    }
}

/// The shell's help text.
pub const HELP: &str = "\
Shell commands (no `;` needed):
  CONSISTENCY [level]            show or set the consistency level (ONE, QUORUM, ALL, ...)
  SERIAL CONSISTENCY [level]     show or set the serial level (SERIAL, LOCAL_SERIAL)
  EXPAND [ON|OFF]                one line per column instead of a table
  PAGING [ON|OFF|N]              page long results (N rows a page, default 100)
  TRACING [ON|OFF]               trace each statement and print its events
  SOURCE 'file'                  run the statements in a file
  DESCRIBE ...                   KEYSPACES, KEYSPACE ks, TABLES, TABLE t, ... (from the server)
  USE keyspace;                  set the current keyspace
  CLEAR                          clear the screen
  HELP                           this text
  EXIT | QUIT                    leave (Ctrl-D too)
Any other statement, ended by `;`, is sent to the server as CQL.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shell_commands() {
        assert_eq!(parse("exit"), Ok(Command::Exit));
        assert_eq!(parse("EXPAND on;"), Ok(Command::Expand(Some(true))));
        assert_eq!(parse("paging 50"), Ok(Command::Paging(PagingArg::Size(50))));
        assert_eq!(parse("PAGING off"), Ok(Command::Paging(PagingArg::Off)));
        assert!(parse("PAGING 0").is_err());
        assert_eq!(parse("tracing on;"), Ok(Command::Tracing(Some(true))));
        assert_eq!(parse("TRACING OFF"), Ok(Command::Tracing(Some(false))));
        assert_eq!(parse("TRACING"), Ok(Command::Tracing(None)));
        assert!(parse("TRACING maybe").is_err());
        assert_eq!(
            parse("consistency quorum"),
            Ok(Command::Consistency(Some(Consistency::Quorum)))
        );
        assert!(parse("CONSISTENCY BOGUS").is_err());
        assert_eq!(
            parse("SERIAL CONSISTENCY LOCAL_SERIAL"),
            Ok(Command::SerialConsistency(Some(
                SerialConsistency::LocalSerial
            )))
        );
        assert_eq!(
            parse("SOURCE '/tmp/x.cql'"),
            Ok(Command::Source("/tmp/x.cql".into()))
        );
        assert_eq!(parse("USE Ks1"), Ok(Command::Use("ks1".into())));
        assert_eq!(parse("use \"MyKs\";"), Ok(Command::Use("MyKs".into())));
        assert_eq!(
            parse("DESCRIBE TABLE t"),
            Ok(Command::Cql("DESCRIBE TABLE t".into()))
        );
        assert_eq!(
            parse("SELECT * FROM t;"),
            Ok(Command::Cql("SELECT * FROM t".into()))
        );
    }

    #[test]
    fn recognises_shell_words() {
        assert!(is_shell_command("  expand on"));
        assert!(is_shell_command("desc tables"));
        assert!(!is_shell_command("SELECT 1"));
        assert!(!is_shell_command(""));
    }

    #[test]
    fn consistency_names_round_trip() {
        for name in ["ONE", "QUORUM", "ALL", "LOCAL_QUORUM", "ANY"] {
            let c = parse_consistency(name);
            assert_eq!(c.map(consistency_name), Some(name));
        }
    }
}
