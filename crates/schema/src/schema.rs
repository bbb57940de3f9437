//! The schema as a whole: keyspaces and tables derived from the schema rows,
//! changes applied as timestamped row mutations, merges from peers, and the
//! version digest.

use std::collections::BTreeMap;

use gyre_common::Timestamp;
use std::sync::Arc;

use gyre_cql::{CqlType, UserType};
use gyre_storage::TableId;
use uuid::Uuid;

use crate::error::{Result, SchemaError};
use crate::model::{
    check_name, check_type, ClusteringOrder, ColumnDef, ColumnKind, DroppedColumn, KeyspaceDef,
    Replication, TableDef, TableOptions,
};
use crate::rows::{RowKey, SchemaRow, SchemaRows};
use crate::types::KeyspaceTypes;

/// The built-in keyspaces: present on every node, never droppable, their
/// tables never in the schema rows; only the replicated ones' replication
/// can be altered ([`is_replicated_system_keyspace`]).
pub const SYSTEM_KEYSPACES: &[&str] = &[
    "system",
    "system_schema",
    "system_auth",
    "system_distributed",
    "system_traces",
];

pub fn is_system_keyspace(name: &str) -> bool {
    SYSTEM_KEYSPACES.contains(&name)
}

/// The system keyspaces whose replication ALTER KEYSPACE may change, as in
/// Cassandra (so that roles in `system_auth` can live on several nodes);
/// `system` and `system_schema` are local to each node. Their keyspace row
/// (replication, durable_writes) is schema like any keyspace's, pushed and
/// merged; their tables stay built in.
pub fn is_replicated_system_keyspace(name: &str) -> bool {
    matches!(name, "system_auth" | "system_distributed" | "system_traces")
}

/// Drops rows no peer or disk may set: anything of the local system
/// keyspaces, and the tables of the replicated ones.
fn retain_alterable(rows: &mut SchemaRows) {
    rows.partitions.retain(|ks, p| {
        if !is_system_keyspace(ks) {
            return true;
        }
        if !is_replicated_system_keyspace(ks) {
            return false;
        }
        p.rows.retain(|key, _| *key == RowKey::Keyspace);
        !p.rows.is_empty()
    });
}

fn system_keyspace(name: &str) -> KeyspaceDef {
    // Cassandra's defaults for its system keyspaces.
    let replication = match name {
        "system_auth" => Replication::Simple {
            replication_factor: 1,
        },
        "system_distributed" => Replication::Simple {
            replication_factor: 3,
        },
        "system_traces" => Replication::Simple {
            replication_factor: 2,
        },
        _ => Replication::Local,
    };
    KeyspaceDef {
        name: name.to_owned(),
        replication,
        durable_writes: true,
    }
}

/// The tables of `system_auth`, with Cassandra's columns: built in like the
/// keyspace, on every node with the same ids (Cassandra's
/// `TableId.forSystemTable`: an MD5 name UUID of keyspace + table), so the
/// roles written through one coordinator are the same table everywhere.
///
/// They are found by [`Schema::table`] and [`Schema::table_by_id`] but not
/// listed by [`Schema::tables`] (like the other system tables, which the
/// node serves itself).
pub fn system_auth_tables() -> &'static [TableDef] {
    static TABLES: std::sync::OnceLock<Vec<TableDef>> = std::sync::OnceLock::new();
    TABLES.get_or_init(build_system_auth_tables)
}

/// The tables of `system_traces` (Cassandra's columns), built in like
/// `system_auth`'s: traced requests write their sessions and events there
/// (`gyre_common::trace`).
pub fn system_traces_tables() -> &'static [TableDef] {
    static TABLES: std::sync::OnceLock<Vec<TableDef>> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        use ColumnKind::{Clustering, PartitionKey, Regular};
        let col = |name: &str, ty: CqlType, kind: ColumnKind| ColumnDef {
            name: name.to_owned(),
            ty,
            kind,
        };
        let tables = vec![
            (
                "sessions",
                vec![
                    col("session_id", CqlType::Uuid, PartitionKey(0)),
                    col("client", CqlType::Inet, Regular),
                    col("command", CqlType::Text, Regular),
                    col("coordinator", CqlType::Inet, Regular),
                    col("coordinator_port", CqlType::Int, Regular),
                    col("duration", CqlType::Int, Regular),
                    col(
                        "parameters",
                        CqlType::Map(Box::new(CqlType::Text), Box::new(CqlType::Text)),
                        Regular,
                    ),
                    col("request", CqlType::Text, Regular),
                    col("started_at", CqlType::Timestamp, Regular),
                ],
            ),
            (
                "events",
                vec![
                    col("session_id", CqlType::Uuid, PartitionKey(0)),
                    col(
                        "event_id",
                        CqlType::Timeuuid,
                        Clustering(0, ClusteringOrder::Asc),
                    ),
                    col("activity", CqlType::Text, Regular),
                    col("source", CqlType::Inet, Regular),
                    col("source_elapsed", CqlType::Int, Regular),
                    col("source_port", CqlType::Int, Regular),
                    col("thread", CqlType::Text, Regular),
                ],
            ),
        ];
        built_in_tables("system_traces", tables)
    })
}

/// Built-in tables with Cassandra's ids (`TableId.forSystemTable`).
fn built_in_tables(keyspace: &str, tables: Vec<(&str, Vec<ColumnDef>)>) -> Vec<TableDef> {
    tables
        .into_iter()
        .map(|(name, columns)| {
            let mut id = crate::md5::md5(format!("{keyspace}{name}").as_bytes());
            // RFC 4122 version 3 (name-based, MD5), as Java's nameUUIDFromBytes.
            id[6] = (id[6] & 0x0f) | 0x30;
            id[8] = (id[8] & 0x3f) | 0x80;
            TableDef {
                keyspace: keyspace.to_owned(),
                name: name.to_owned(),
                id: TableId(Uuid::from_bytes(id)),
                columns,
                options: TableOptions::default(),
                dropped_columns: BTreeMap::new(),
                indexes: Vec::new(),
            }
        })
        .collect()
}

/// Every built-in replicated table (`system_auth`, `system_traces`).
pub fn built_in_replicated_tables() -> impl Iterator<Item = &'static TableDef> {
    system_auth_tables().iter().chain(system_traces_tables())
}

fn build_system_auth_tables() -> Vec<TableDef> {
    use ColumnKind::{Clustering, PartitionKey, Regular};
    let text = || CqlType::Text;
    let col = |name: &str, ty: CqlType, kind: ColumnKind| ColumnDef {
        name: name.to_owned(),
        ty,
        kind,
    };
    let asc = ClusteringOrder::Asc;
    let tables = vec![
        (
            "roles",
            vec![
                col("role", text(), PartitionKey(0)),
                col("can_login", CqlType::Boolean, Regular),
                col("is_superuser", CqlType::Boolean, Regular),
                col("member_of", CqlType::Set(Box::new(text())), Regular),
                col("salted_hash", text(), Regular),
            ],
        ),
        (
            "role_members",
            vec![
                col("role", text(), PartitionKey(0)),
                col("member", text(), Clustering(0, asc)),
            ],
        ),
        (
            "role_permissions",
            vec![
                col("role", text(), PartitionKey(0)),
                col("resource", text(), Clustering(0, asc)),
                col("permissions", CqlType::Set(Box::new(text())), Regular),
            ],
        ),
    ];
    built_in_tables("system_auth", tables)
}

/// A change to the schema, already checked against the CQL rules (see
/// [`crate::statement_to_change`]).
#[derive(Clone, Debug, PartialEq)]
pub enum SchemaChange {
    CreateKeyspace(KeyspaceDef),
    /// Replaces the keyspace's replication and durable_writes.
    AlterKeyspace(KeyspaceDef),
    DropKeyspace(String),
    CreateTable(TableDef),
    AlterTable {
        keyspace: String,
        table: String,
        alteration: TableAlteration,
    },
    DropTable {
        keyspace: String,
        table: String,
    },
    CreateIndex {
        keyspace: String,
        table: String,
        index: crate::index::IndexDef,
    },
    DropIndex {
        keyspace: String,
        table: String,
        index: String,
    },
    /// A new user-defined type, its fields resolved.
    CreateType {
        keyspace: String,
        name: String,
        fields: Vec<(String, CqlType)>,
    },
    /// A type's new list of fields (ALTER TYPE ADD / RENAME).
    AlterType {
        keyspace: String,
        name: String,
        fields: Vec<(String, CqlType)>,
    },
    DropType {
        keyspace: String,
        name: String,
    },
}

/// What an ALTER TABLE changes.
#[derive(Clone, Debug, PartialEq)]
pub enum TableAlteration {
    /// Regular or static columns.
    AddColumns(Vec<ColumnDef>),
    DropColumns(Vec<String>),
    /// Primary key columns only, as Cassandra allows.
    RenameColumns(Vec<(String, String)>),
    /// Options by name, as canonical text ([`TableOptions::to_cells`]).
    SetOptions(BTreeMap<String, String>),
}

/// The schema: keyspaces and tables, derived from [`SchemaRows`].
#[derive(Clone, Debug, Default)]
pub struct Schema {
    rows: SchemaRows,
    keyspaces: BTreeMap<String, KeyspaceDef>,
    tables: BTreeMap<(String, String), TableDef>,
    by_id: BTreeMap<TableId, (String, String)>,
    /// User-defined types per keyspace, resolved.
    types: BTreeMap<String, KeyspaceTypes>,
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows
    }
}

impl Schema {
    /// The schema with only the system keyspaces.
    pub fn new() -> Self {
        Schema::from_rows(SchemaRows::default())
    }

    /// The schema these rows describe. Rows that do not make sense (from a
    /// corrupt disk or a buggy peer) are skipped with a warning.
    pub fn from_rows(mut rows: SchemaRows) -> Self {
        rows.normalize();
        if rows.partitions.iter().any(|(ks, p)| {
            is_system_keyspace(ks)
                && (!is_replicated_system_keyspace(ks)
                    || p.rows.keys().any(|k| *k != RowKey::Keyspace))
        }) {
            tracing::warn!("ignoring schema rows for system keyspaces' tables");
        }
        retain_alterable(&mut rows);
        let mut s = Schema {
            rows,
            ..Default::default()
        };
        s.derive();
        s
    }

    /// The rows the schema is derived from: what to persist or ship whole.
    pub fn rows(&self) -> &SchemaRows {
        &self.rows
    }

    pub fn keyspaces(&self) -> &BTreeMap<String, KeyspaceDef> {
        &self.keyspaces
    }

    pub fn tables(&self) -> &BTreeMap<(String, String), TableDef> {
        &self.tables
    }

    pub fn keyspace(&self, name: &str) -> Option<&KeyspaceDef> {
        self.keyspaces.get(name)
    }

    pub fn table(&self, keyspace: &str, table: &str) -> Option<&TableDef> {
        if keyspace == "system_auth" {
            return system_auth_tables().iter().find(|t| t.name == table);
        }
        if keyspace == "system_traces" {
            return system_traces_tables().iter().find(|t| t.name == table);
        }
        self.tables.get(&(keyspace.to_owned(), table.to_owned()))
    }

    /// The user-defined types of a keyspace (empty when it has none).
    pub fn types_in(&self, keyspace: &str) -> &KeyspaceTypes {
        static EMPTY: KeyspaceTypes = BTreeMap::new();
        self.types.get(keyspace).unwrap_or(&EMPTY)
    }

    /// Every keyspace's user-defined types.
    pub fn types(&self) -> &BTreeMap<String, KeyspaceTypes> {
        &self.types
    }

    /// A user-defined type by keyspace and name.
    pub fn user_type(&self, keyspace: &str, name: &str) -> Option<&Arc<UserType>> {
        self.types.get(keyspace)?.get(name)
    }

    /// Resolves the user type names in a type written in keyspace `ks`
    /// (Cassandra's "Unknown type ks.name" when one is missing).
    pub fn resolve_type(&self, ks: &str, ty: &CqlType) -> Result<CqlType> {
        crate::types::resolve(ty, ks, self.types_in(ks))
    }

    pub fn table_by_id(&self, id: TableId) -> Option<&TableDef> {
        self.by_id
            .get(&id)
            .and_then(|k| self.tables.get(k))
            .or_else(|| built_in_replicated_tables().find(|t| t.id == id))
    }

    /// The tables of one keyspace, by name.
    pub fn tables_in<'a>(&'a self, keyspace: &'a str) -> impl Iterator<Item = &'a TableDef> + 'a {
        self.tables
            .range((keyspace.to_owned(), String::new())..)
            .take_while(move |((ks, _), _)| ks == keyspace)
            .map(|(_, t)| t)
    }

    /// The keyspace, or Cassandra's error for a missing one.
    pub fn require_keyspace(&self, name: &str) -> Result<&KeyspaceDef> {
        self.live_keyspace(name)
    }

    /// The table a query names, or Cassandra's query-time errors: an unknown
    /// keyspace, or "unconfigured table t".
    pub fn require_table(&self, keyspace: &str, table: &str) -> Result<&TableDef> {
        self.live_keyspace(keyspace)?;
        self.table(keyspace, table)
            .ok_or_else(|| SchemaError::invalid(format!("unconfigured table {table}")))
    }

    /// A timestamp for the next local change: `now` (microseconds), or just
    /// after the newest timestamp in the schema when the clock lags, so a
    /// change is never shadowed by history it has already seen.
    pub fn next_timestamp(&self, now: Timestamp) -> Timestamp {
        self.rows
            .max_timestamp()
            .map_or(now, |m| now.max(m.saturating_add(1)))
    }

    /// The schema version: an MD5 digest of the canonical rows as a uuid,
    /// equal on nodes with equal schema content.
    pub fn version(&self) -> Uuid {
        uuid::Builder::from_md5_bytes(self.rows.digest()).into_uuid()
    }

    /// Merges rows from a peer (the whole schema or a diff). Returns true
    /// when the schema changed.
    pub fn merge(&mut self, mut rows: SchemaRows) -> bool {
        retain_alterable(&mut rows);
        let changed = self.rows.merge(rows);
        if changed {
            self.derive();
            tracing::debug!(version = %self.version(), "schema merged");
        }
        changed
    }

    /// Applies a change at `timestamp` (microseconds), checking it against
    /// the current schema. Returns the row mutation it made, to persist and
    /// to push to peers.
    pub fn apply_change(
        &mut self,
        change: SchemaChange,
        timestamp: Timestamp,
    ) -> Result<SchemaRows> {
        let m = self.mutation_for(&change, timestamp)?;
        self.rows.merge(m.clone());
        self.derive();
        tracing::info!(?change, version = %self.version(), "schema change applied");
        Ok(m)
    }

    fn live_keyspace(&self, name: &str) -> Result<&KeyspaceDef> {
        self.keyspaces
            .get(name)
            .ok_or_else(|| SchemaError::invalid(format!("Keyspace '{name}' does not exist")))
    }

    fn live_table(&self, ks: &str, table: &str) -> Result<&TableDef> {
        self.live_keyspace(ks)?;
        self.table(ks, table)
            .ok_or_else(|| SchemaError::invalid(format!("Table '{ks}.{table}' doesn't exist")))
    }

    fn mutation_for(&self, change: &SchemaChange, ts: Timestamp) -> Result<SchemaRows> {
        let mut m = SchemaRows::default();
        match change {
            SchemaChange::CreateKeyspace(def) => {
                check_name("Keyspace", &def.name)?;
                if self.keyspaces.contains_key(&def.name) {
                    return Err(SchemaError::AlreadyExists {
                        keyspace: def.name.clone(),
                        table: None,
                    });
                }
                self.check_not_shadowed(&def.name, &RowKey::Keyspace, ts)?;
                keyspace_cells(&mut m, def, ts)?;
            }
            SchemaChange::AlterKeyspace(def) => {
                if !is_replicated_system_keyspace(&def.name) {
                    not_system(&def.name, "alter")?;
                }
                self.live_keyspace(&def.name)?;
                keyspace_cells(&mut m, def, ts)?;
            }
            SchemaChange::DropKeyspace(name) => {
                not_system(name, "drop")?;
                self.live_keyspace(name)?;
                m.delete_partition(name, ts);
            }
            SchemaChange::CreateTable(def) => {
                not_system(&def.keyspace, "alter")?;
                self.live_keyspace(&def.keyspace)?;
                if self.table(&def.keyspace, &def.name).is_some() {
                    return Err(SchemaError::AlreadyExists {
                        keyspace: def.keyspace.clone(),
                        table: Some(def.name.clone()),
                    });
                }
                if self.by_id.contains_key(&def.id) || self.id_ever_used(def.id) {
                    return Err(SchemaError::invalid(format!(
                        "Table id {} is already in use",
                        def.id
                    )));
                }
                def.validate()?;
                let key = RowKey::Table {
                    table: def.name.clone(),
                };
                self.check_not_shadowed(&def.keyspace, &key, ts)?;
                m.set(&def.keyspace, key.clone(), "id", def.id.0.to_string(), ts);
                for (name, value) in def.options.to_cells() {
                    m.set(&def.keyspace, key.clone(), &name, value, ts);
                }
                for c in &def.columns {
                    column_cells(&mut m, def, c, ts);
                }
            }
            SchemaChange::AlterTable {
                keyspace,
                table,
                alteration,
            } => {
                not_system(keyspace, "alter")?;
                let def = self.live_table(keyspace, table)?;
                let mut new = def.clone();
                match alteration {
                    TableAlteration::AddColumns(cols) => {
                        for c in cols {
                            if new.column(&c.name).is_some() {
                                return Err(SchemaError::invalid(format!(
                                    "Invalid column name {} because it conflicts with an existing column",
                                    c.name
                                )));
                            }
                            if c.kind.is_primary_key() {
                                return Err(SchemaError::invalid(format!(
                                    "Cannot add PRIMARY KEY column {}",
                                    c.name
                                )));
                            }
                            check_type(&c.ty, false, &c.name)?;
                            if let Some(d) = def.dropped_columns.get(&c.name) {
                                if d.ty != c.ty {
                                    return Err(SchemaError::invalid(format!(
                                        "Cannot re-add previously dropped column '{}' of type {}, incompatible with previous type {}",
                                        c.name, c.ty, d.ty
                                    )));
                                }
                            }
                            new.columns.push(c.clone());
                            column_cells(&mut m, def, c, ts);
                        }
                    }
                    TableAlteration::DropColumns(names) => {
                        for n in names {
                            let dependent: Vec<&str> = def
                                .indexes
                                .iter()
                                .filter(|i| i.target.column() == n)
                                .map(|i| i.name.as_str())
                                .collect();
                            if !dependent.is_empty() {
                                return Err(SchemaError::invalid(format!(
                                    "Cannot drop column {n} because it has dependent secondary indexes ({})",
                                    dependent.join(", ")
                                )));
                            }
                            let c = new.column(n).ok_or_else(|| {
                                SchemaError::invalid(format!(
                                    "Column {n} was not found in table {table}"
                                ))
                            })?;
                            if c.kind.is_primary_key() {
                                return Err(SchemaError::invalid(format!(
                                    "Cannot drop PRIMARY KEY column {n}"
                                )));
                            }
                            let ty = c.ty.clone();
                            new.columns.retain(|c| &c.name != n);
                            m.delete_row(keyspace, column_key(def, n), ts);
                            let dropped = RowKey::DroppedColumn {
                                table: def.name.clone(),
                                table_id: def.id.0,
                                column: n.clone(),
                            };
                            m.set(keyspace, dropped.clone(), "type", ty.to_string(), ts);
                            m.set(keyspace, dropped, "dropped_time", ts.to_string(), ts);
                        }
                    }
                    TableAlteration::RenameColumns(renames) => {
                        for (from, to) in renames {
                            let c = new.column(from).cloned().ok_or_else(|| {
                                SchemaError::invalid(format!(
                                    "Cannot rename unknown column {from} in table {keyspace}.{table}"
                                ))
                            })?;
                            if !c.kind.is_primary_key() {
                                return Err(SchemaError::invalid(format!(
                                    "Cannot rename non PRIMARY KEY column {from}"
                                )));
                            }
                            if new.column(to).is_some() {
                                return Err(SchemaError::invalid(format!(
                                    "Cannot rename column {from} to {to} in table {keyspace}.{table}; another column with that name already exists"
                                )));
                            }
                            for col in &mut new.columns {
                                if &col.name == from {
                                    col.name = to.clone();
                                }
                            }
                            m.delete_row(keyspace, column_key(def, from), ts);
                            let renamed = ColumnDef {
                                name: to.clone(),
                                ..c
                            };
                            column_cells(&mut m, def, &renamed, ts);
                        }
                    }
                    TableAlteration::SetOptions(opts) => {
                        let key = RowKey::Table {
                            table: table.clone(),
                        };
                        for (name, value) in opts {
                            new.options.set_cell(name, value).map_err(|_| {
                                SchemaError::invalid(format!(
                                    "Invalid value for option {name}: {value}"
                                ))
                            })?;
                            m.set(keyspace, key.clone(), name, value.clone(), ts);
                        }
                    }
                }
                new.validate()?;
            }
            SchemaChange::DropTable { keyspace, table } => {
                not_system(keyspace, "alter")?;
                let def = self.live_table(keyspace, table)?;
                m.delete_row(
                    keyspace,
                    RowKey::Table {
                        table: table.clone(),
                    },
                    ts,
                );
                for c in &def.columns {
                    m.delete_row(keyspace, column_key(def, &c.name), ts);
                }
                for i in &def.indexes {
                    m.delete_row(keyspace, index_key(def, &i.name), ts);
                }
                for name in def.dropped_columns.keys() {
                    let key = RowKey::DroppedColumn {
                        table: def.name.clone(),
                        table_id: def.id.0,
                        column: name.clone(),
                    };
                    m.delete_row(keyspace, key, ts);
                }
            }
            SchemaChange::CreateIndex {
                keyspace,
                table,
                index,
            } => {
                not_system(keyspace, "alter")?;
                let def = self.live_table(keyspace, table)?;
                if self
                    .tables_in(keyspace)
                    .any(|t| t.index(&index.name).is_some())
                {
                    return Err(SchemaError::invalid(format!(
                        "Index '{}' already exists",
                        index.name
                    )));
                }
                let key = index_key(def, &index.name);
                self.check_not_shadowed(keyspace, &key, ts)?;
                let options = serde_json::to_string(&index.options)
                    .map_err(|e| SchemaError::invalid(e.to_string()))?;
                m.set(keyspace, key.clone(), "target", index.target_text(), ts);
                m.set(keyspace, key.clone(), "kind", index.kind().into(), ts);
                m.set(keyspace, key, "options", options, ts);
            }
            SchemaChange::DropIndex {
                keyspace,
                table,
                index,
            } => {
                not_system(keyspace, "alter")?;
                let def = self.live_table(keyspace, table)?;
                if def.index(index).is_none() {
                    return Err(SchemaError::invalid(format!(
                        "Index '{keyspace}.{index}' doesn't exist"
                    )));
                }
                m.delete_row(keyspace, index_key(def, index), ts);
            }
            SchemaChange::CreateType {
                keyspace,
                name,
                fields,
            } => {
                not_system(keyspace, "alter")?;
                self.live_keyspace(keyspace)?;
                if self.user_type(keyspace, name).is_some() {
                    return Err(SchemaError::invalid(format!(
                        "A user type with name '{name}' already exists"
                    )));
                }
                let key = RowKey::Type { name: name.clone() };
                self.check_not_shadowed(keyspace, &key, ts)?;
                type_cells(&mut m, keyspace, name, fields, ts)?;
            }
            SchemaChange::AlterType {
                keyspace,
                name,
                fields,
            } => {
                not_system(keyspace, "alter")?;
                self.live_keyspace(keyspace)?;
                if self.user_type(keyspace, name).is_none() {
                    return Err(SchemaError::invalid(format!(
                        "Type {keyspace}.{name} doesn't exist"
                    )));
                }
                type_cells(&mut m, keyspace, name, fields, ts)?;
            }
            SchemaChange::DropType { keyspace, name } => {
                not_system(keyspace, "alter")?;
                self.live_keyspace(keyspace)?;
                if self.user_type(keyspace, name).is_none() {
                    return Err(SchemaError::invalid(format!(
                        "Type '{keyspace}.{name}' doesn't exist"
                    )));
                }
                let users: Vec<&str> = self
                    .types_in(keyspace)
                    .values()
                    .filter(|t| {
                        t.name != *name
                            && t.fields
                                .iter()
                                .any(|(_, ft)| crate::types::references(ft, name))
                    })
                    .map(|t| t.name.as_str())
                    .collect();
                if !users.is_empty() {
                    return Err(SchemaError::invalid(format!(
                        "Cannot drop user type '{keyspace}.{name}' as it is still used by user types {}",
                        users.join(", ")
                    )));
                }
                let tables: Vec<&str> = self
                    .tables_in(keyspace)
                    .filter(|t| {
                        t.columns
                            .iter()
                            .any(|c| crate::types::references(&c.ty, name))
                    })
                    .map(|t| t.name.as_str())
                    .collect();
                if !tables.is_empty() {
                    return Err(SchemaError::invalid(format!(
                        "Cannot drop user type '{keyspace}.{name}' as it is still used by tables {}",
                        tables.join(", ")
                    )));
                }
                m.delete_row(keyspace, RowKey::Type { name: name.clone() }, ts);
            }
        }
        Ok(m)
    }

    /// Rejects a change that an earlier drop would shadow (a timestamp at
    /// or before it), which would otherwise silently vanish.
    fn check_not_shadowed(&self, ks: &str, key: &RowKey, ts: Timestamp) -> Result<()> {
        let Some(p) = self.rows.partitions.get(ks) else {
            return Ok(());
        };
        let row_del = p.rows.get(key).and_then(|r| r.deletion);
        match p.deletion.max(row_del) {
            Some(d) if ts <= d => Err(SchemaError::invalid(format!(
                "Schema change timestamp {ts} is not after the drop of {ks} at {d}; use Schema::next_timestamp"
            ))),
            _ => Ok(()),
        }
    }

    /// True when any row, live or deleted, names this table id: dropped
    /// tables' ids are never reused.
    fn id_ever_used(&self, id: TableId) -> bool {
        self.rows.partitions.values().any(|p| {
            p.rows.iter().any(|(k, r)| match k {
                RowKey::Column { table_id, .. }
                | RowKey::DroppedColumn { table_id, .. }
                | RowKey::Index { table_id, .. } => *table_id == id.0,
                RowKey::Table { .. } => r.get("id") == Some(id.0.to_string().as_str()),
                RowKey::Keyspace | RowKey::Type { .. } => false,
            })
        })
    }

    /// Rebuilds keyspaces and tables from the rows.
    fn derive(&mut self) {
        self.keyspaces.clear();
        self.tables.clear();
        self.by_id.clear();
        self.types.clear();
        for name in SYSTEM_KEYSPACES {
            self.keyspaces
                .insert((*name).to_owned(), system_keyspace(name));
        }
        for (ks, p) in &self.rows.partitions {
            let Some(row) = p.rows.get(&RowKey::Keyspace) else {
                continue;
            };
            match keyspace_from_row(ks, row) {
                // An altered replicated system keyspace: its replication
                // replaces the built-in one; its tables stay built in.
                Ok(Some(def)) if is_system_keyspace(ks) => {
                    self.keyspaces.insert(ks.clone(), def);
                    continue;
                }
                Ok(Some(def)) => {
                    self.keyspaces.insert(ks.clone(), def);
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(keyspace = %ks, error = %e, "skipping keyspace with a bad schema row");
                    continue;
                }
            }
            let mut raw_types = BTreeMap::new();
            for (key, row) in &p.rows {
                let RowKey::Type { name } = key else {
                    continue;
                };
                match type_from_row(row) {
                    Ok(Some(fields)) => {
                        raw_types.insert(name.clone(), fields);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(keyspace = %ks, r#type = %name, error = %e, "skipping type with a bad schema row")
                    }
                }
            }
            let types = crate::types::resolve_all(ks, &raw_types);
            for (key, row) in &p.rows {
                let RowKey::Table { table } = key else {
                    continue;
                };
                let def = table_from_rows(ks, table, row, &p.rows).and_then(|def| {
                    def.map(|mut def| {
                        for c in &mut def.columns {
                            c.ty = crate::types::resolve(&c.ty, ks, &types)?;
                        }
                        Ok(def)
                    })
                    .transpose()
                });
                match def {
                    Ok(Some(def)) if def.validate().is_err() => {
                        // Only a peer's partial or foreign rows get here.
                        tracing::warn!(keyspace = %ks, table = %table, "skipping table with incomplete schema rows");
                    }
                    Ok(Some(def)) => {
                        self.by_id.insert(def.id, (ks.clone(), table.clone()));
                        self.tables.insert((ks.clone(), table.clone()), def);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(keyspace = %ks, table = %table, error = %e, "skipping table with bad schema rows")
                    }
                }
            }
            if !types.is_empty() {
                self.types.insert(ks.clone(), types);
            }
        }
    }
}

fn type_cells(
    m: &mut SchemaRows,
    ks: &str,
    name: &str,
    fields: &[(String, CqlType)],
    ts: Timestamp,
) -> Result<()> {
    let json =
        |v: Vec<String>| serde_json::to_string(&v).map_err(|e| SchemaError::invalid(e.to_string()));
    let names = json(fields.iter().map(|(f, _)| f.clone()).collect())?;
    let types = json(fields.iter().map(|(_, t)| t.to_string()).collect())?;
    let key = RowKey::Type {
        name: name.to_owned(),
    };
    m.set(ks, key.clone(), "field_names", names, ts);
    m.set(ks, key, "field_types", types, ts);
    Ok(())
}

/// A type's fields with their types as parsed from text (names unresolved).
fn type_from_row(row: &SchemaRow) -> Result<Option<Vec<(String, CqlType)>>> {
    let (Some(names), Some(types)) = (row.get("field_names"), row.get("field_types")) else {
        return Ok(None);
    };
    let bad = |e: serde_json::Error| SchemaError::Corrupt(format!("type fields: {e}"));
    let names: Vec<String> = serde_json::from_str(names).map_err(bad)?;
    let types: Vec<String> = serde_json::from_str(types).map_err(bad)?;
    if names.len() != types.len() || names.is_empty() {
        return Err(SchemaError::Corrupt("type field lists differ".into()));
    }
    names
        .into_iter()
        .zip(types)
        .map(|(n, t)| Ok((n, parse_type(&t)?)))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn not_system(ks: &str, what: &str) -> Result<()> {
    if is_system_keyspace(ks) {
        Err(SchemaError::Unauthorized(format!(
            "Cannot {what} system keyspace {ks}"
        )))
    } else {
        Ok(())
    }
}

fn keyspace_cells(m: &mut SchemaRows, def: &KeyspaceDef, ts: Timestamp) -> Result<()> {
    if def.replication == Replication::Local {
        return Err(SchemaError::invalid(
            "LocalStrategy is only for internal use",
        ));
    }
    let replication = serde_json::to_string(&def.replication.to_map())
        .map_err(|e| SchemaError::invalid(e.to_string()))?;
    m.set(&def.name, RowKey::Keyspace, "replication", replication, ts);
    m.set(
        &def.name,
        RowKey::Keyspace,
        "durable_writes",
        def.durable_writes.to_string(),
        ts,
    );
    Ok(())
}

fn index_key(def: &TableDef, index: &str) -> RowKey {
    RowKey::Index {
        table: def.name.clone(),
        table_id: def.id.0,
        index: index.to_owned(),
    }
}

fn column_key(def: &TableDef, column: &str) -> RowKey {
    RowKey::Column {
        table: def.name.clone(),
        table_id: def.id.0,
        column: column.to_owned(),
    }
}

fn column_cells(m: &mut SchemaRows, def: &TableDef, c: &ColumnDef, ts: Timestamp) {
    let key = column_key(def, &c.name);
    let (kind, position, order) = match c.kind {
        ColumnKind::PartitionKey(p) => ("partition_key", p as i64, "none"),
        ColumnKind::Clustering(p, ClusteringOrder::Asc) => ("clustering", p as i64, "asc"),
        ColumnKind::Clustering(p, ClusteringOrder::Desc) => ("clustering", p as i64, "desc"),
        ColumnKind::Regular => ("regular", -1, "none"),
        ColumnKind::Static => ("static", -1, "none"),
    };
    m.set(&def.keyspace, key.clone(), "type", c.ty.to_string(), ts);
    m.set(&def.keyspace, key.clone(), "kind", kind.into(), ts);
    m.set(
        &def.keyspace,
        key.clone(),
        "position",
        position.to_string(),
        ts,
    );
    m.set(&def.keyspace, key, "clustering_order", order.into(), ts);
}

fn keyspace_from_row(ks: &str, row: &SchemaRow) -> Result<Option<KeyspaceDef>> {
    let Some(repl) = row.get("replication") else {
        return Ok(None);
    };
    let map: BTreeMap<String, String> = serde_json::from_str(repl)
        .map_err(|e| SchemaError::Corrupt(format!("replication of {ks}: {e}")))?;
    let replication = Replication::from_map(ks, &map)?;
    Ok(Some(KeyspaceDef {
        name: ks.to_owned(),
        replication,
        durable_writes: row.get("durable_writes") != Some("false"),
    }))
}

/// Parses a CQL type from its canonical text.
pub(crate) fn parse_type(text: &str) -> Result<CqlType> {
    let stmt = gyre_cql::parse_statement(&format!("CREATE TABLE t (c {text} PRIMARY KEY)"))
        .map_err(|e| SchemaError::Corrupt(format!("type {text:?}: {e}")))?;
    match stmt {
        gyre_cql::Statement::CreateTable(ct) => ct
            .columns
            .into_iter()
            .next()
            .map(|c| c.ty)
            .ok_or_else(|| SchemaError::Corrupt(format!("type {text:?}"))),
        _ => Err(SchemaError::Corrupt(format!("type {text:?}"))),
    }
}

fn table_from_rows(
    ks: &str,
    table: &str,
    row: &SchemaRow,
    rows: &BTreeMap<RowKey, SchemaRow>,
) -> Result<Option<TableDef>> {
    let Some(id) = row.get("id") else {
        return Ok(None);
    };
    let id = Uuid::parse_str(id).map_err(|e| SchemaError::Corrupt(format!("table id: {e}")))?;
    let mut options = TableOptions::default();
    for (name, cell) in &row.cells {
        if name != "id" {
            options.set_cell(name, &cell.value)?;
        }
    }
    let mut columns = Vec::new();
    let lo = RowKey::Column {
        table: table.to_owned(),
        table_id: id,
        column: String::new(),
    };
    for (key, r) in rows.range(lo..) {
        let RowKey::Column {
            table: t,
            table_id,
            column,
        } = key
        else {
            break;
        };
        if t != table || *table_id != id {
            break;
        }
        let corrupt =
            |what: &str| SchemaError::Corrupt(format!("column {ks}.{table}.{column}: {what}"));
        let Some(ty) = r.get("type") else {
            continue;
        };
        let ty = parse_type(ty)?;
        let position: u32 = r
            .get("position")
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(0, |p| p.max(0) as u32);
        let kind = match r.get("kind") {
            Some("partition_key") => ColumnKind::PartitionKey(position),
            Some("clustering") => ColumnKind::Clustering(
                position,
                if r.get("clustering_order") == Some("desc") {
                    ClusteringOrder::Desc
                } else {
                    ClusteringOrder::Asc
                },
            ),
            Some("regular") => ColumnKind::Regular,
            Some("static") => ColumnKind::Static,
            _ => return Err(corrupt("kind")),
        };
        columns.push(ColumnDef {
            name: column.clone(),
            ty,
            kind,
        });
    }
    let mut dropped_columns = BTreeMap::new();
    let lo = RowKey::DroppedColumn {
        table: table.to_owned(),
        table_id: id,
        column: String::new(),
    };
    for (key, r) in rows.range(lo..) {
        let RowKey::DroppedColumn {
            table: t,
            table_id,
            column,
        } = key
        else {
            break;
        };
        if t != table || *table_id != id {
            break;
        }
        let (Some(ty), Some(at)) = (r.get("type"), r.get("dropped_time")) else {
            continue;
        };
        let dropped_at = at
            .parse()
            .map_err(|_| SchemaError::Corrupt(format!("dropped_time of {ks}.{table}.{column}")))?;
        dropped_columns.insert(
            column.clone(),
            DroppedColumn {
                ty: parse_type(ty)?,
                dropped_at,
            },
        );
    }
    let mut indexes = Vec::new();
    let lo = RowKey::Index {
        table: table.to_owned(),
        table_id: id,
        index: String::new(),
    };
    for (key, r) in rows.range(lo..) {
        let RowKey::Index {
            table: t,
            table_id,
            index,
        } = key
        else {
            break;
        };
        if t != table || *table_id != id {
            break;
        }
        let Some(target) = r.get("target") else {
            continue;
        };
        let options: BTreeMap<String, String> = match r.get("options") {
            Some(o) => serde_json::from_str(o)
                .map_err(|e| SchemaError::Corrupt(format!("options of index {index}: {e}")))?,
            None => BTreeMap::new(),
        };
        indexes.push(crate::index::IndexDef::from_stored(
            index,
            target,
            r.get("kind") == Some("CUSTOM"),
            options,
        )?);
    }
    let mut def = TableDef {
        keyspace: ks.to_owned(),
        name: table.to_owned(),
        id: TableId(id),
        columns,
        options,
        dropped_columns,
        indexes,
    };
    def.sort_columns();
    Ok(Some(def))
}
