//! Result rendering: cqlsh-looking tables and expanded (vertical) rows.

use comfy_table::{CellAlignment, ContentArrangement, Table};

/// cqlsh's look: no outer borders, `|` between columns, `-+-` under the
/// header (comfy-table preset, one character per table component).
const CQLSH_PRESET: &str = "     -+ |          ";

/// One formatted cell; numbers are right-aligned as in cqlsh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub numeric: bool,
}

/// Renders rows as an aligned table with a header line.
pub fn table(headers: &[String], rows: &[Vec<Cell>]) -> String {
    let mut t = Table::new();
    t.load_preset(CQLSH_PRESET)
        // Never wrap: long values stay on one line, like cqlsh.
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(
            headers
                .iter()
                .map(|h| comfy_table::Cell::new(h).set_alignment(CellAlignment::Center)),
        );
    for row in rows {
        t.add_row(row.iter().map(|c| {
            let align = if c.numeric {
                CellAlignment::Right
            } else {
                CellAlignment::Left
            };
            comfy_table::Cell::new(&c.text).set_alignment(align)
        }));
    }
    t.to_string()
}

/// Renders rows one column per line (`EXPAND ON`), numbered from `first`.
pub fn expanded(headers: &[String], rows: &[Vec<Cell>], first: usize) -> String {
    let width = headers.iter().map(|h| h.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("@ Row {}\n", first + i));
        out.push_str(&format!("-{}-+-------\n", "-".repeat(width)));
        for (h, c) in headers.iter().zip(row) {
            out.push_str(&format!(" {h:<width$} | {}\n", c.text));
        }
    }
    out
}

/// The line after a result: `(3 rows)` plus the elapsed time.
pub fn footer(rows: usize, elapsed: std::time::Duration) -> String {
    let noun = if rows == 1 { "row" } else { "rows" };
    format!("({rows} {noun}, {:.1} ms)", elapsed.as_secs_f64() * 1000.0)
}

/// One row of a server-side DESCRIBE (Cassandra 4 columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub keyspace: String,
    pub kind: String,
    pub name: String,
    pub create_statement: String,
}

/// Renders DESCRIBE rows as cqlsh does: the CQL of each object, or, for
/// the listing forms (KEYSPACES, TABLES) whose rows carry no CQL, the
/// names (tables grouped under their keyspace).
pub fn describe(rows: &[Described]) -> String {
    if rows.iter().any(|r| !r.create_statement.is_empty()) {
        let parts: Vec<&str> = rows
            .iter()
            .map(|r| r.create_statement.trim_end())
            .filter(|s| !s.is_empty())
            .collect();
        return format!("\n{}\n", parts.join("\n\n"));
    }
    if rows.iter().all(|r| r.kind == "keyspace") {
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        return format!("\n{}\n", names.join("  "));
    }
    let mut out = String::new();
    let mut i = 0;
    while i < rows.len() {
        let ks = &rows[i].keyspace;
        let names: Vec<&str> = rows[i..]
            .iter()
            .take_while(|r| &r.keyspace == ks)
            .map(|r| r.name.as_str())
            .collect();
        i += names.len();
        out.push_str(&format!(
            "\nKeyspace {ks}\n{}\n{}\n",
            "-".repeat(9 + ks.len()),
            names.join("  ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(text: &str, numeric: bool) -> Cell {
        Cell {
            text: text.into(),
            numeric,
        }
    }

    #[test]
    fn table_looks_like_cqlsh() {
        let out = table(
            &["k".into(), "name".into()],
            &[
                vec![cell("1", true), cell("alice", false)],
                vec![cell("10", true), cell("bo", false)],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].contains(" k ") && lines[0].contains("|"), "{out}");
        assert!(lines[1].contains("-+-"), "{out}");
        assert!(lines[2].contains("  1 | alice"), "{out}");
        assert!(lines[3].contains(" 10 | bo"), "{out}");
    }

    #[test]
    fn expanded_rows() {
        let out = expanded(
            &["k".into(), "name".into()],
            &[vec![cell("1", true), cell("alice", false)]],
            1,
        );
        assert!(out.starts_with("@ Row 1\n"), "{out}");
        assert!(out.contains(" k    | 1\n"), "{out}");
        assert!(out.contains(" name | alice\n"), "{out}");
    }

    fn described(ks: &str, kind: &str, name: &str, cql: &str) -> Described {
        Described {
            keyspace: ks.into(),
            kind: kind.into(),
            name: name.into(),
            create_statement: cql.into(),
        }
    }

    #[test]
    fn describe_prints_cql_or_names() {
        let out = describe(&[
            described("ks", "keyspace", "ks", "CREATE KEYSPACE ks ...;"),
            described("ks", "table", "t", "CREATE TABLE ks.t (...);"),
        ]);
        assert_eq!(
            out,
            "\nCREATE KEYSPACE ks ...;\n\nCREATE TABLE ks.t (...);\n"
        );
        let out = describe(&[
            described("a", "keyspace", "a", ""),
            described("b", "keyspace", "b", ""),
        ]);
        assert_eq!(out, "\na  b\n");
        let out = describe(&[
            described("a", "table", "t1", ""),
            described("a", "table", "t2", ""),
            described("b", "table", "u", ""),
        ]);
        assert_eq!(
            out,
            "\nKeyspace a\n----------\nt1  t2\n\nKeyspace b\n----------\nu\n"
        );
    }

    #[test]
    fn footer_counts_rows() {
        let d = std::time::Duration::from_micros(1500);
        assert_eq!(footer(1, d), "(1 row, 1.5 ms)");
        assert_eq!(footer(0, d), "(0 rows, 1.5 ms)");
    }
}
