//! Server-side DESCRIBE (Cassandra 4): rows of `keyspace_name`, `type`,
//! `name` and `create_statement`, from the schema's own CQL rendering.

use bytes::Bytes;
use gyre_cql::{Describe, DescribeTarget};
use gyre_protocol::ColumnType;
use gyre_schema::Schema;

use crate::error::{QueryError, Result};
use crate::processor::{QueryProcessor, QueryResult};

impl QueryProcessor {
    pub(crate) fn describe(&self, d: &Describe, keyspace: Option<&str>) -> Result<QueryResult> {
        let schema = self.schema();
        let mut rows = Vec::new();
        let current = || {
            keyspace
                .ok_or_else(|| QueryError::invalid("No keyspace specified and no current keyspace"))
        };
        match &d.target {
            DescribeTarget::Keyspaces => {
                for ks in schema.keyspaces().keys() {
                    rows.push(row(ks, "keyspace", ks, ""));
                }
            }
            DescribeTarget::Tables => {
                for (ks, name) in schema.tables().keys() {
                    rows.push(row(ks, "table", name, ""));
                }
            }
            DescribeTarget::Keyspace { only, name } => {
                let ks = match name {
                    Some(n) => n.as_str(),
                    None => current()?,
                };
                keyspace_rows(&schema, ks, !*only, &mut rows)?;
            }
            DescribeTarget::Schema { .. } => {
                for ks in schema.keyspaces().keys() {
                    keyspace_rows(&schema, ks, true, &mut rows)?;
                }
            }
            DescribeTarget::Table(name) | DescribeTarget::Generic(name) => {
                let ks = match &name.keyspace {
                    Some(k) => k.as_str(),
                    None => current()?,
                };
                if name.keyspace.is_none() && schema.keyspace(&name.name).is_some() {
                    // `DESCRIBE x` names a keyspace when one is called x.
                    keyspace_rows(&schema, &name.name, true, &mut rows)?;
                } else if let (DescribeTarget::Generic(_), Some(t)) =
                    (&d.target, schema.user_type(ks, &name.name))
                {
                    rows.push(row(ks, "type", &t.name, &gyre_schema::type_to_cql(t)));
                } else {
                    let t = schema.require_table(ks, &name.name)?;
                    table_rows(t, &mut rows);
                }
            }
            DescribeTarget::Types => {
                for (ks, types) in schema.types() {
                    for name in types.keys() {
                        rows.push(row(ks, "type", name, ""));
                    }
                }
            }
            DescribeTarget::Type(name) => {
                let ks = match &name.keyspace {
                    Some(k) => k.as_str(),
                    None => current()?,
                };
                schema.require_keyspace(ks)?;
                let t = schema.user_type(ks, &name.name).ok_or_else(|| {
                    QueryError::invalid(format!(
                        "User defined type '{}' not found in '{ks}'",
                        name.name
                    ))
                })?;
                rows.push(row(ks, "type", &t.name, &gyre_schema::type_to_cql(t)));
            }
            DescribeTarget::Index(name) => {
                let ks = match &name.keyspace {
                    Some(k) => k.as_str(),
                    None => current()?,
                };
                schema.require_keyspace(ks)?;
                let found = schema
                    .tables_in(ks)
                    .find_map(|t| t.index(&name.name).map(|i| (t, i)));
                let Some((t, i)) = found else {
                    return Err(QueryError::invalid(format!(
                        "Index '{}' not found in '{ks}'",
                        name.name
                    )));
                };
                rows.push(row(ks, "index", &i.name, &i.to_cql(t)));
            }
            // Gyre has no user-defined functions or aggregates: the
            // listings are empty, and naming one is Cassandra's not-found.
            DescribeTarget::Functions | DescribeTarget::Aggregates => {}
            DescribeTarget::Function(name) | DescribeTarget::Aggregate(name) => {
                let ks = match &name.keyspace {
                    Some(k) => k.as_str(),
                    None => current()?,
                };
                schema.require_keyspace(ks)?;
                let kind = if matches!(d.target, DescribeTarget::Function(_)) {
                    "function"
                } else {
                    "aggregate"
                };
                return Err(QueryError::invalid(format!(
                    "User defined {kind} '{}' not found in '{ks}'",
                    name.name
                )));
            }
            _ => return Err(QueryError::invalid("This DESCRIBE form is not supported")),
        }
        let text = |n: &str| (n.to_owned(), ColumnType::Varchar);
        Ok(QueryResult::Rows {
            columns: vec![
                text("keyspace_name"),
                text("type"),
                text("name"),
                text("create_statement"),
            ],
            rows,
            paging_state: None,
        })
    }
}

fn keyspace_rows(
    schema: &Schema,
    ks: &str,
    with_tables: bool,
    rows: &mut Vec<Vec<Option<Bytes>>>,
) -> Result<()> {
    let def = schema.require_keyspace(ks)?;
    rows.push(row(ks, "keyspace", ks, &def.to_cql()));
    if with_tables {
        // Types first, each after the types it uses, so the output replays.
        for t in gyre_schema::dependency_order(schema.types_in(ks)) {
            rows.push(row(ks, "type", &t.name, &gyre_schema::type_to_cql(&t)));
        }
        for t in schema.tables_in(ks) {
            table_rows(t, rows);
        }
    }
    Ok(())
}

/// A table and then its indexes, as Cassandra describes them.
fn table_rows(t: &gyre_schema::TableDef, rows: &mut Vec<Vec<Option<Bytes>>>) {
    rows.push(row(&t.keyspace, "table", &t.name, &t.to_cql()));
    for i in &t.indexes {
        rows.push(row(&t.keyspace, "index", &i.name, &i.to_cql(t)));
    }
}

fn row(ks: &str, kind: &str, name: &str, cql: &str) -> Vec<Option<Bytes>> {
    [ks, kind, name, cql]
        .iter()
        .map(|s| Some(Bytes::copy_from_slice(s.as_bytes())))
        .collect()
}
