//! Keyspaces and tables as the CQL that creates them (what `DESCRIBE`
//! prints), in Cassandra's layout.

use std::collections::BTreeMap;
use std::fmt::Write;

use gyre_cql::{quote_identifier as ident, quote_string as string};

use crate::model::{ClusteringOrder, ColumnKind, KeyspaceDef, TableDef};

fn cql_map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}: {}", string(k), string(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

impl KeyspaceDef {
    /// `CREATE KEYSPACE ...;` for this keyspace.
    pub fn to_cql(&self) -> String {
        format!(
            "CREATE KEYSPACE {} WITH replication = {} AND durable_writes = {};",
            ident(&self.name),
            cql_map(&self.replication.to_map()),
            self.durable_writes
        )
    }
}

impl TableDef {
    /// `CREATE TABLE ks.t (...) WITH ...;` for this table.
    pub fn to_cql(&self) -> String {
        let mut out = format!(
            "CREATE TABLE {}.{} (\n",
            ident(&self.keyspace),
            ident(&self.name)
        );
        let pk = self.partition_key();
        let ck = self.clustering();
        let inline_key = pk.len() == 1 && ck.is_empty();
        for c in &self.columns {
            let _ = write!(out, "    {} {}", ident(&c.name), c.ty);
            if c.kind == ColumnKind::Static {
                out.push_str(" static");
            }
            if inline_key && c.kind.is_primary_key() {
                out.push_str(" PRIMARY KEY");
            }
            out.push_str(",\n");
        }
        if inline_key {
            // Drop the last ",\n" before closing.
            out.truncate(out.len() - 2);
            out.push('\n');
        } else {
            let names = |v: &[&crate::model::ColumnDef]| {
                v.iter()
                    .map(|c| ident(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let partition = if pk.len() == 1 {
                names(&pk)
            } else {
                format!("({})", names(&pk))
            };
            if ck.is_empty() {
                let _ = writeln!(out, "    PRIMARY KEY ({partition})");
            } else {
                let _ = writeln!(out, "    PRIMARY KEY ({partition}, {})", names(&ck));
            }
        }
        out.push(')');
        let mut with = Vec::new();
        if !ck.is_empty() {
            let order: Vec<String> = ck
                .iter()
                .map(|c| {
                    let o = match c.kind {
                        ColumnKind::Clustering(_, ClusteringOrder::Desc) => "DESC",
                        _ => "ASC",
                    };
                    format!("{} {o}", ident(&c.name))
                })
                .collect();
            with.push(format!("CLUSTERING ORDER BY ({})", order.join(", ")));
        }
        for (name, value) in self.options.to_cells() {
            let rendered = match name.as_str() {
                "gc_grace_seconds" | "default_time_to_live" | "bloom_filter_fp_chance" => value,
                _ => match serde_json::from_str::<BTreeMap<String, String>>(&value) {
                    Ok(m) if value.starts_with('{') => cql_map(&m),
                    _ => string(&value),
                },
            };
            with.push(format!("{name} = {rendered}"));
        }
        out.push_str(" WITH ");
        out.push_str(&with.join("\n    AND "));
        out.push(';');
        out
    }
}
