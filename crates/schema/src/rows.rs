//! The schema as timestamped rows, like Cassandra's `system_schema` tables:
//! one partition per keyspace holding a keyspace row, table rows and column
//! rows. Rows merge by last-write-wins per cell (ties go to the greater
//! value, as in [`gyre_common::lww`]), and deletions at partition and row
//! level shadow everything written at or before them, so any set of changes
//! merged in any order gives the same rows.

use std::collections::BTreeMap;

use gyre_common::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identifies a row inside a keyspace's partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RowKey {
    /// The keyspace's own row: replication and durable_writes.
    Keyspace,
    /// A table's row: its id and options.
    Table { table: String },
    /// A column of one incarnation of a table. Keying by the table id keeps
    /// the columns of concurrent or earlier incarnations apart.
    Column {
        table: String,
        table_id: Uuid,
        column: String,
    },
    /// A dropped column of one incarnation of a table: its type and drop
    /// time, so data written before the drop stays invisible if a column
    /// of that name is added again (Cassandra's `dropped_columns`).
    DroppedColumn {
        table: String,
        table_id: Uuid,
        column: String,
    },
    /// A secondary index of one incarnation of a table: its target, kind
    /// and options (Cassandra's `system_schema.indexes`).
    Index {
        table: String,
        table_id: Uuid,
        index: String,
    },
    /// A user-defined type: its field names and field types as JSON lists
    /// (Cassandra's `system_schema.types`).
    Type { name: String },
}

/// One version of a cell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellVersion {
    pub timestamp: Timestamp,
    pub value: String,
}

impl CellVersion {
    /// True when `self` wins over `other` (higher timestamp, then greater
    /// value bytes, as the storage engine decides).
    fn beats(&self, other: &CellVersion) -> bool {
        (self.timestamp, self.value.as_bytes()) > (other.timestamp, other.value.as_bytes())
    }
}

/// A schema row: an optional row deletion and live cells by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRow {
    pub deletion: Option<Timestamp>,
    pub cells: BTreeMap<String, CellVersion>,
}

impl SchemaRow {
    /// The cell's value if the row holds it live.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.cells.get(name).map(|c| c.value.as_str())
    }
}

/// One keyspace's schema rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaPartition {
    pub deletion: Option<Timestamp>,
    #[serde(with = "pairs")]
    pub rows: BTreeMap<RowKey, SchemaRow>,
}

/// The whole schema (or a change to it, or a diff) as rows: what nodes
/// persist, ship to each other and merge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRows {
    pub partitions: BTreeMap<String, SchemaPartition>,
}

fn max_ts(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl SchemaRows {
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Writes a live cell.
    pub(crate) fn set(&mut self, ks: &str, key: RowKey, cell: &str, value: String, ts: Timestamp) {
        self.partitions
            .entry(ks.to_owned())
            .or_default()
            .rows
            .entry(key)
            .or_default()
            .cells
            .insert(
                cell.to_owned(),
                CellVersion {
                    timestamp: ts,
                    value,
                },
            );
    }

    /// Deletes a row.
    pub(crate) fn delete_row(&mut self, ks: &str, key: RowKey, ts: Timestamp) {
        let row = self
            .partitions
            .entry(ks.to_owned())
            .or_default()
            .rows
            .entry(key)
            .or_default();
        row.deletion = max_ts(row.deletion, Some(ts));
    }

    /// Deletes a whole keyspace partition.
    pub(crate) fn delete_partition(&mut self, ks: &str, ts: Timestamp) {
        let p = self.partitions.entry(ks.to_owned()).or_default();
        p.deletion = max_ts(p.deletion, Some(ts));
    }

    /// Merges `other` in by last-write-wins. Returns true when anything
    /// changed. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: SchemaRows) -> bool {
        let before = self.clone();
        for (ks, theirs) in other.partitions {
            let mine = self.partitions.entry(ks).or_default();
            mine.deletion = max_ts(mine.deletion, theirs.deletion);
            for (key, row) in theirs.rows {
                let into = mine.rows.entry(key).or_default();
                into.deletion = max_ts(into.deletion, row.deletion);
                for (name, cell) in row.cells {
                    match into.cells.get(&name) {
                        Some(cur) if !cell.beats(cur) => {}
                        _ => {
                            into.cells.insert(name, cell);
                        }
                    }
                }
            }
        }
        self.normalize();
        *self != before
    }

    /// Removes what deletions shadow so equal content has equal rows.
    pub(crate) fn normalize(&mut self) {
        for p in self.partitions.values_mut() {
            let pdel = p.deletion;
            for row in p.rows.values_mut() {
                if row.deletion.is_some() && row.deletion <= pdel {
                    row.deletion = None;
                }
                let cutoff = max_ts(pdel, row.deletion);
                if let Some(cut) = cutoff {
                    row.cells.retain(|_, c| c.timestamp > cut);
                }
            }
            p.rows
                .retain(|_, r| r.deletion.is_some() || !r.cells.is_empty());
        }
        self.partitions
            .retain(|_, p| p.deletion.is_some() || !p.rows.is_empty());
    }

    /// What `theirs` lacks of `self`: merging the result into `theirs` gives
    /// the same rows as merging all of `self`.
    pub fn diff(&self, theirs: &SchemaRows) -> SchemaRows {
        let mut out = SchemaRows::default();
        for (ks, mine) in &self.partitions {
            let other = theirs.partitions.get(ks);
            let mut part = SchemaPartition::default();
            if mine.deletion > other.and_then(|p| p.deletion) {
                part.deletion = mine.deletion;
            }
            for (key, row) in &mine.rows {
                let orow = other.and_then(|p| p.rows.get(key));
                let mut r = SchemaRow::default();
                if row.deletion > orow.and_then(|r| r.deletion) {
                    r.deletion = row.deletion;
                }
                for (name, cell) in &row.cells {
                    let wins = orow
                        .and_then(|o| o.cells.get(name))
                        .is_none_or(|oc| cell.beats(oc));
                    if wins {
                        r.cells.insert(name.clone(), cell.clone());
                    }
                }
                if r.deletion.is_some() || !r.cells.is_empty() {
                    part.rows.insert(key.clone(), r);
                }
            }
            if part.deletion.is_some() || !part.rows.is_empty() {
                out.partitions.insert(ks.clone(), part);
            }
        }
        out
    }

    /// The newest timestamp anywhere in the rows.
    pub fn max_timestamp(&self) -> Option<Timestamp> {
        let mut m = None;
        for p in self.partitions.values() {
            m = max_ts(m, p.deletion);
            for r in p.rows.values() {
                m = max_ts(m, r.deletion);
                for c in r.cells.values() {
                    m = max_ts(m, Some(c.timestamp));
                }
            }
        }
        m
    }

    /// A content digest: MD5 of the canonical serialization.
    pub(crate) fn digest(&self) -> [u8; 16] {
        // Serializing maps of strings cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        crate::md5::md5(&bytes)
    }
}

/// Serializes a map with non-string keys as a list of pairs (JSON maps
/// need string keys).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}
