//! Error positions and wording.

use gyre_cql::{parse, parse_statement, parse_statements, ParseError, Position};

fn err(cql: &str) -> ParseError {
    match parse_statement(cql) {
        Ok(s) => panic!("`{cql}` parsed unexpectedly as {s:?}"),
        Err(e) => e,
    }
}

fn check(cql: &str, expected: &str) {
    assert_eq!(err(cql).to_string(), expected, "for `{cql}`");
}

#[test]
fn wrong_keyword() {
    check(
        "SELECT * FORM t",
        "line 1:10 mismatched input 'FORM' expecting FROM",
    );
    check(
        "SELEC * FROM t",
        "line 1:1 no viable alternative at input 'SELEC'",
    );
    check(
        "CREATE TABEL t (k int PRIMARY KEY)",
        "line 1:8 no viable alternative at input 'TABEL'",
    );
    check(
        "INSERT t (k) VALUES (1)",
        "line 1:8 mismatched input 't' expecting INTO",
    );
    check(
        "DELETE FROM t USING TTL 5 WHERE k = 1",
        "line 1:21 mismatched input 'TTL' expecting TIMESTAMP",
    );
    check(
        "BEGIN BATCH SELECT * FROM t APPLY BATCH",
        "line 1:13 mismatched input 'SELECT' expecting INSERT, UPDATE, DELETE or APPLY BATCH",
    );
}

#[test]
fn reserved_word_as_identifier() {
    check(
        "CREATE TABLE t (select int PRIMARY KEY)",
        "line 1:17 mismatched input 'select' expecting identifier",
    );
    check(
        "SELECT from FROM t",
        "line 1:8 no viable alternative at input 'from'",
    );
}

#[test]
fn unterminated_tokens() {
    check(
        "SELECT * FROM t WHERE k = 'abc",
        "line 1:27 unterminated string literal",
    );
    check(
        "SELECT * FROM t WHERE k = $$abc",
        "line 1:27 unterminated string literal",
    );
    check(
        "SELECT \"abc FROM t",
        "line 1:8 unterminated quoted identifier",
    );
    check(
        "SELECT * FROM t /* no end",
        "line 1:17 unterminated comment",
    );
}

#[test]
fn bad_numbers() {
    check(
        "SELECT * FROM t LIMIT 12abc",
        "line 1:23 bad number '12abc'",
    );
    check(
        "INSERT INTO t (k) VALUES (1.5x)",
        "line 1:27 bad number '1.5x'",
    );
    check(
        "INSERT INTO t (k) VALUES (0xZZ)",
        "line 1:27 bad number '0xZZ'",
    );
    check(
        "INSERT INTO t (k) VALUES (0x123)",
        "line 1:27 bad number '0x123'",
    );
}

#[test]
fn invalid_character() {
    check(
        "SELECT * FROM t WHERE k # 1",
        "line 1:25 invalid character '#'",
    );
}

#[test]
fn multi_line_positions() {
    check(
        "SELECT *\nFROM t\nWHERE k = = 1",
        "line 3:11 no viable alternative at input '='",
    );
    // Columns count characters, not bytes.
    check(
        "SELECT * FROM t WHERE k = 'é' AND = 1",
        "line 1:35 mismatched input '=' expecting identifier",
    );
    let e = err("\n\n  SELECT * FROM t WHERE");
    assert_eq!(
        e.position(),
        Position {
            line: 3,
            column: 24
        }
    );
}

#[test]
fn unexpected_end_and_trailing_input() {
    check(
        "SELECT * FROM",
        "line 1:14 mismatched input '<EOF>' expecting identifier",
    );
    check(
        "INSERT INTO t (k) VALUES (1) USING TTL",
        "line 1:39 no viable alternative at input '<EOF>'",
    );
    check(
        "SELECT * FROM t garbage",
        "line 1:17 mismatched input 'garbage' expecting EOF",
    );
    check(
        "USE a; USE b",
        "line 1:8 mismatched input 'USE' expecting EOF",
    );
    check("", "line 1:1 no viable alternative at input '<EOF>'");
    assert!(parse_statements("USE a USE b").is_err());
}

#[test]
fn parser_level_rejections() {
    check(
        "SELECT count(2) FROM t",
        "line 1:8 Only COUNT(1) is supported, got COUNT(2)",
    );
    check(
        "CREATE TABLE t (k int PRIMARY KEY, v int, PRIMARY KEY (v))",
        "line 1:43 Multiple PRIMARY KEYs specified",
    );
    assert!(matches!(
        err("UPDATE t SET a = b + 1 WHERE k = 1"),
        ParseError::Invalid {
            pos: Position {
                line: 1,
                column: 14
            },
            ..
        }
    ));
    check(
        "CREATE TABLE t (k list PRIMARY KEY)",
        "line 1:24 mismatched input 'PRIMARY' expecting '<'",
    );
}

#[test]
fn errors_are_values_not_panics_for_every_prefix() {
    // Every prefix of a valid statement either parses or fails cleanly.
    let full = "BEGIN BATCH USING TIMESTAMP 1 INSERT INTO ks.t (a, b) VALUES (?, {'k': [1, 2]}) IF NOT EXISTS; UPDATE t SET m['x'] = 1 WHERE (a, b) IN ((1, 2)) IF c = 1; APPLY BATCH";
    for (end, _) in full.char_indices() {
        let _ = parse(&full[..end]);
    }
    assert!(parse(full).is_ok());
}
