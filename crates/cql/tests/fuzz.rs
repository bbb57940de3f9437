//! Robustness: random bytes, random token soups and mutated statements never
//! panic, and whatever parses prints back to CQL that parses to the same tree.
//! The inputs under `fuzz_corpus/` are replayed on every run.

use proptest::prelude::*;
use std::path::Path;

/// Parse, and if it succeeds check the Display round trip.
fn check(src: &str) {
    let Ok(stmts) = gyre_cql::parse_all(src) else {
        return;
    };
    for p in stmts {
        let text = p.statement.to_string();
        match gyre_cql::parse(&text) {
            Ok(again) => {
                assert_eq!(
                    again.statement, p.statement,
                    "round trip of {src:?} via {text:?}"
                );
                assert_eq!(again.bind_markers, p.bind_markers, "markers of {src:?}");
            }
            Err(e) => panic!("{src:?} printed as {text:?}, which fails: {e}"),
        }
    }
}

const VOCAB: &[&str] = &[
    "SELECT",
    "INSERT",
    "INTO",
    "UPDATE",
    "DELETE",
    "FROM",
    "WHERE",
    "AND",
    "SET",
    "VALUES",
    "IF",
    "NOT",
    "EXISTS",
    "USING",
    "TTL",
    "TIMESTAMP",
    "BEGIN",
    "UNLOGGED",
    "COUNTER",
    "BATCH",
    "APPLY",
    "CREATE",
    "ALTER",
    "DROP",
    "TABLE",
    "KEYSPACE",
    "WITH",
    "PRIMARY",
    "KEY",
    "STATIC",
    "CLUSTERING",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "LIMIT",
    "PER",
    "PARTITION",
    "ALLOW",
    "FILTERING",
    "IN",
    "CONTAINS",
    "LIKE",
    "IS",
    "NULL",
    "JSON",
    "DISTINCT",
    "AS",
    "COUNT",
    "token",
    "writetime",
    "cast",
    "DESCRIBE",
    "FULL",
    "SCHEMA",
    "USE",
    "TRUNCATE",
    "ADD",
    "RENAME",
    "TO",
    "frozen",
    "list",
    "set",
    "map",
    "tuple",
    "int",
    "text",
    "a",
    "b",
    "ks",
    "t",
    "\"Q\"",
    "'s'",
    "''",
    "$$x$$",
    "1",
    "-1",
    "1.5",
    "1e3",
    "NaN",
    "Infinity",
    "true",
    "0xab",
    "1h",
    "P1D",
    "550e8400-e29b-41d4-a716-446655440000",
    "?",
    ":n",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    "<=",
    ">=",
    "=",
    "!=",
    "+",
    "-",
    "+=",
    ",",
    ";",
    ":",
    ".",
    "*",
    "--",
    "/*",
    "*/",
    "\n",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCAB), 0..40).prop_map(|v| v.join(" "))
}

/// Valid statements to mutate.
const SEEDS: &[&str] = &[
    "SELECT a, count(*), writetime(b) AS w FROM ks.t WHERE token(a) > ? AND (b, c) IN ((1, 2)) ORDER BY b DESC LIMIT 10 ALLOW FILTERING",
    "INSERT INTO t (a, b) VALUES ((int) ?, {'k': [1, -2.5]}) IF NOT EXISTS USING TTL 5",
    "UPDATE t SET l = [1] + l, m[:k] = 'v' WHERE a = 1 IF b = 2",
    "BEGIN UNLOGGED BATCH DELETE m['x'] FROM t WHERE a = 1; APPLY BATCH",
    "CREATE TABLE IF NOT EXISTS t (a int, b frozen<map<text, int>> STATIC, PRIMARY KEY ((a), b)) WITH compaction = {'class': 'x'} AND CLUSTERING ORDER BY (b DESC)",
];

proptest! {
    // 2000 cases keeps the suite fast; set PROPTEST_CASES for a longer run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_text_never_panics(s in "\\PC{0,120}") {
        check(&s);
    }

    #[test]
    fn token_soup_never_panics(s in soup()) {
        check(&s);
    }

    #[test]
    fn mutated_statements_never_panic(
        seed in prop::sample::select(SEEDS),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(VOCAB), 0u8..3), 1..4),
    ) {
        let mut words: Vec<String> = seed.split(' ').map(str::to_owned).collect();
        for (at, word, op) in edits {
            let k = at.index(words.len() + 1);
            match op {
                0 => words.insert(k, word.to_owned()),
                1 if k < words.len() => { words.remove(k); }
                _ if k < words.len() => words[k] = word.to_owned(),
                _ => {}
            }
        }
        check(&words.join(" "));
    }
}

#[test]
fn corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("read fuzz_corpus") {
        let path = entry.expect("dir entry").path();
        let bytes = std::fs::read(&path).expect("read corpus file");
        check(&String::from_utf8_lossy(&bytes));
        // Each line alone too: many corpus files hold one case per line.
        for line in String::from_utf8_lossy(&bytes).lines() {
            check(line);
        }
        n += 1;
    }
    assert!(n > 0, "empty corpus");
}
