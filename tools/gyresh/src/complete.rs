//! Tab completion: keywords, keyspaces, tables and columns, by context.

use std::collections::BTreeMap;

/// CQL and shell keywords offered for completion.
pub const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "KEYSPACE",
    "KEYSPACES",
    "TABLE",
    "TABLES",
    "IF",
    "NOT",
    "EXISTS",
    "PRIMARY",
    "KEY",
    "WITH",
    "REPLICATION",
    "USING",
    "TTL",
    "TIMESTAMP",
    "LIMIT",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "DESCRIBE",
    "ALLOW",
    "FILTERING",
    "BATCH",
    "BEGIN",
    "APPLY",
    "USE",
    "IN",
    "CLUSTERING",
    "COUNT",
    "DISTINCT",
    "JSON",
    "CONSISTENCY",
    "SERIAL",
    "EXPAND",
    "PAGING",
    "TRACING",
    "SOURCE",
    "HELP",
    "EXIT",
    "QUIT",
    "ON",
    "OFF",
    "ONE",
    "QUORUM",
    "ALL",
    "LOCAL_QUORUM",
    "LOCAL_ONE",
    "ascii",
    "bigint",
    "blob",
    "boolean",
    "counter",
    "date",
    "decimal",
    "double",
    "duration",
    "float",
    "inet",
    "int",
    "smallint",
    "text",
    "time",
    "timestamp",
    "timeuuid",
    "tinyint",
    "uuid",
    "varchar",
    "varint",
    "list",
    "set",
    "map",
    "frozen",
    "tuple",
];

/// What the cluster holds, as far as completion cares:
/// keyspace -> table -> columns.
#[derive(Debug, Default, Clone)]
pub struct SchemaNames {
    pub keyspaces: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl SchemaNames {
    pub fn add_column(&mut self, keyspace: &str, table: &str, column: &str) {
        self.keyspaces
            .entry(keyspace.to_string())
            .or_default()
            .entry(table.to_string())
            .or_default()
            .push(column.to_string());
    }

    pub fn add_keyspace(&mut self, keyspace: &str) {
        self.keyspaces.entry(keyspace.to_string()).or_default();
    }
}

/// Start of the word under the cursor (words break on space, `(`, `,`, `=`).
pub fn word_start(line: &str, pos: usize) -> usize {
    line[..pos]
        .rfind(|c: char| c.is_whitespace() || "(),=;".contains(c))
        .map_or(0, |i| i + 1)
}

/// Candidates for the word ending at `pos` in `line`, given the current
/// keyspace and the schema. Returns the replacement start and candidates.
pub fn candidates(
    line: &str,
    pos: usize,
    current_keyspace: Option<&str>,
    schema: &SchemaNames,
) -> (usize, Vec<String>) {
    let start = word_start(line, pos);
    let word = &line[start..pos];
    let before: Vec<String> = line[..start]
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let prev = before.last().map(String::as_str).unwrap_or("");
    let matches = |c: &str| c.to_lowercase().starts_with(&word.to_lowercase());

    // `ks.ta<TAB>`: tables of that keyspace.
    if let Some((ks, partial)) = word.split_once('.') {
        let tables = schema.keyspaces.get(ks).into_iter().flat_map(|t| t.keys());
        let out = tables
            .filter(|t| t.starts_with(partial))
            .map(|t| format!("{ks}.{t}"))
            .collect();
        return (start, out);
    }

    let mut out: Vec<String> = Vec::new();
    match prev {
        "USE" | "KEYSPACE" => out.extend(schema.keyspaces.keys().filter(|k| matches(k)).cloned()),
        "FROM" | "INTO" | "UPDATE" | "TABLE" | "TRUNCATE" => {
            if let Some(tables) = current_keyspace.and_then(|ks| schema.keyspaces.get(ks)) {
                out.extend(tables.keys().filter(|t| matches(t)).cloned());
            }
            out.extend(
                schema
                    .keyspaces
                    .keys()
                    .filter(|k| matches(k))
                    .map(|k| format!("{k}.")),
            );
        }
        _ => {
            // Columns of the tables named on the line (or of every table
            // in the current keyspace), then keywords.
            let upper_line = line.to_ascii_uppercase();
            for (ks, tables) in &schema.keyspaces {
                for (table, columns) in tables {
                    let named = upper_line.contains(&table.to_ascii_uppercase());
                    if named || current_keyspace == Some(ks.as_str()) {
                        out.extend(columns.iter().filter(|c| matches(c)).cloned());
                    }
                }
            }
            let lower = !word.is_empty() && word.chars().all(|c| !c.is_ascii_uppercase());
            out.extend(KEYWORDS.iter().filter(|k| matches(k)).map(|k| {
                if lower {
                    k.to_ascii_lowercase()
                } else {
                    k.to_string()
                }
            }));
        }
    }
    out.sort();
    out.dedup();
    (start, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> SchemaNames {
        let mut s = SchemaNames::default();
        s.add_column("shop", "orders", "order_id");
        s.add_column("shop", "orders", "owner");
        s.add_column("shop", "users", "name");
        s.add_keyspace("stress");
        s
    }

    #[test]
    fn keyspaces_after_use() {
        let (start, c) = candidates("USE st", 6, None, &schema());
        assert_eq!(start, 4);
        assert_eq!(c, vec!["stress"]);
    }

    #[test]
    fn tables_after_from() {
        let (_, c) = candidates("SELECT * FROM o", 15, Some("shop"), &schema());
        assert_eq!(c, vec!["orders"]);
        let (_, c) = candidates("SELECT * FROM shop.u", 20, None, &schema());
        assert_eq!(c, vec!["shop.users"]);
    }

    #[test]
    fn columns_and_keywords() {
        let line = "SELECT * FROM orders WHERE o";
        let (_, c) = candidates(line, line.len(), Some("shop"), &schema());
        assert_eq!(c, vec!["off", "on", "one", "order", "order_id", "owner"]);
        let (_, c) = candidates("sel", 3, None, &schema());
        assert_eq!(c, vec!["select"]);
    }
}
