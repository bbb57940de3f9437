//! Golden tests: every `tests/golden/*.cql` file is parsed as a whole and
//! compared with its `.out` file (normalized CQL, bind markers and the AST).
//! Run with `GYRE_BLESS=1` to rewrite the `.out` files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn render(src: &str) -> String {
    let mut out = String::new();
    match gyre_cql::parse_all(src) {
        Err(e) => writeln!(out, "ERROR: {e}").expect("write to string"),
        Ok(stmts) => {
            for p in stmts {
                writeln!(out, "-- {}", p.statement).expect("write to string");
                for m in &p.bind_markers {
                    writeln!(out, "-- marker {m:?}").expect("write to string");
                }
                writeln!(out, "{:#?}\n", p.statement).expect("write to string");
                // The normalized text must read back to the same tree.
                let again = gyre_cql::parse(&p.statement.to_string())
                    .unwrap_or_else(|e| panic!("reparse of `{}` failed: {e}", p.statement));
                assert_eq!(
                    again.statement, p.statement,
                    "round trip of `{}`",
                    p.statement
                );
                assert_eq!(
                    again.bind_markers, p.bind_markers,
                    "markers of `{}`",
                    p.statement
                );
            }
        }
    }
    out
}

fn golden_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read tests/golden")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    files
}

#[test]
fn golden() {
    let bless = std::env::var("GYRE_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for cql in golden_files() {
        let src = std::fs::read_to_string(&cql).expect("read .cql");
        let actual = render(&src);
        let out = cql.with_extension("out");
        if bless {
            std::fs::write(&out, &actual).expect("write .out");
            continue;
        }
        let expected = std::fs::read_to_string(&out).unwrap_or_default();
        if expected != actual {
            failures.push(out.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "golden output differs (rerun with GYRE_BLESS=1 and review the diff): {failures:?}"
    );
}
