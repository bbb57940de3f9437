//! The schema rows kept in the node's own storage engine, in the internal
//! table `gyre_system.schema`: one partition per keyspace (key: the name),
//! one clustered row per schema row, one cell per schema cell with the
//! change's timestamp. The engine's last-write-wins then merges exactly as
//! [`SchemaRows::merge`] does.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use gyre_common::{Cell, CellName, CellValue, Deletion, Partition, Timestamp};
use gyre_storage::{ReadFilter, ScanRequest, ScanStart, StorageEngine, TableId, TableOptions};
use uuid::Uuid;

use crate::encoding::{decode_bytes, encode_bytes};
use crate::error::{Result, SchemaError};
use crate::rows::{CellVersion, RowKey, SchemaRow, SchemaRows};
use crate::schema::Schema;

/// The fixed id of `gyre_system.schema`.
pub const SCHEMA_TABLE_ID: TableId =
    TableId(Uuid::from_u128(0x6779_7265_0000_4000_8000_0000_5343_4845));

/// Persists schema rows in a storage engine and loads them back.
pub struct SchemaStore {
    engine: Arc<dyn StorageEngine>,
}

impl std::fmt::Debug for SchemaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaStore").finish_non_exhaustive()
    }
}

/// Deletion times are derived from the timestamp so that the stored form
/// is a pure function of the rows.
fn deletion(ts: Timestamp) -> Deletion {
    Deletion::new(ts, ts.div_euclid(1_000_000))
}

fn encode_row_key(key: &RowKey) -> Vec<u8> {
    let mut out = Vec::new();
    match key {
        RowKey::Keyspace => out.push(0),
        RowKey::Table { table } => {
            out.push(1);
            encode_bytes(table.as_bytes(), &mut out);
        }
        RowKey::Type { name } => {
            out.push(5);
            encode_bytes(name.as_bytes(), &mut out);
        }
        RowKey::Column {
            table,
            table_id,
            column,
        }
        | RowKey::DroppedColumn {
            table,
            table_id,
            column,
        }
        | RowKey::Index {
            table,
            table_id,
            index: column,
        } => {
            out.push(match key {
                RowKey::Column { .. } => 2,
                RowKey::DroppedColumn { .. } => 3,
                _ => 4,
            });
            encode_bytes(table.as_bytes(), &mut out);
            out.extend_from_slice(table_id.as_bytes());
            encode_bytes(column.as_bytes(), &mut out);
        }
    }
    out
}

fn decode_row_key(b: &[u8]) -> Result<RowKey> {
    let corrupt = || SchemaError::Corrupt(format!("schema row key {b:02x?}"));
    let text = |b: &[u8]| -> Result<(String, usize)> {
        let (v, n) = decode_bytes(b).map_err(|_| corrupt())?;
        Ok((String::from_utf8(v).map_err(|_| corrupt())?, n))
    };
    match b.first() {
        Some(0) if b.len() == 1 => Ok(RowKey::Keyspace),
        Some(1) => {
            let (table, n) = text(&b[1..])?;
            if n + 1 != b.len() {
                return Err(corrupt());
            }
            Ok(RowKey::Table { table })
        }
        Some(5) => {
            let (name, n) = text(&b[1..])?;
            if n + 1 != b.len() {
                return Err(corrupt());
            }
            Ok(RowKey::Type { name })
        }
        Some(kind @ (2..=4)) => {
            let (table, n) = text(&b[1..])?;
            let rest = &b[1 + n..];
            let id: [u8; 16] = rest
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(corrupt)?;
            let (column, m) = text(&rest[16..])?;
            if 16 + m != rest.len() {
                return Err(corrupt());
            }
            let table_id = Uuid::from_bytes(id);
            Ok(if *kind == 2 {
                RowKey::Column {
                    table,
                    table_id,
                    column,
                }
            } else if *kind == 4 {
                RowKey::Index {
                    table,
                    table_id,
                    index: column,
                }
            } else {
                RowKey::DroppedColumn {
                    table,
                    table_id,
                    column,
                }
            })
        }
        _ => Err(corrupt()),
    }
}

impl SchemaStore {
    /// Opens the store, creating the schema table if needed.
    pub fn open(engine: Arc<dyn StorageEngine>) -> Result<Self> {
        engine.create_table(SCHEMA_TABLE_ID, TableOptions::default())?;
        Ok(SchemaStore { engine })
    }

    /// Durably writes schema rows (a change's mutation, a merged diff or the
    /// whole schema); the engine merges them with what it holds.
    pub fn save(&self, rows: &SchemaRows) -> Result<()> {
        for (ks, p) in &rows.partitions {
            let mut update = Partition::with_key(Bytes::copy_from_slice(ks.as_bytes()));
            if let Some(ts) = p.deletion {
                update = update.delete_partition(deletion(ts));
            }
            for (key, row) in &p.rows {
                let ck = Bytes::from(encode_row_key(key));
                if let Some(ts) = row.deletion {
                    update = update.delete_row(ck.clone(), deletion(ts));
                }
                for (name, cell) in &row.cells {
                    update = update.set(
                        ck.clone(),
                        CellName::simple(Bytes::copy_from_slice(name.as_bytes())),
                        Cell::live(
                            cell.timestamp,
                            Bytes::copy_from_slice(cell.value.as_bytes()),
                        ),
                    );
                }
            }
            self.engine.apply(SCHEMA_TABLE_ID, update)?;
        }
        tracing::debug!(keyspaces = rows.partitions.len(), "schema rows saved");
        Ok(())
    }

    /// Reads every stored schema row.
    pub fn load_rows(&self) -> Result<SchemaRows> {
        let mut rows = SchemaRows::default();
        let mut request = ScanRequest {
            start: ScanStart::Token(Bound::Unbounded),
            end: Bound::Unbounded,
            filter: ReadFilter::all(),
            max_rows: 1000,
            index: None,
        };
        loop {
            // Schema cells never expire, so "now" does not matter.
            let page = self.engine.scan(SCHEMA_TABLE_ID, &request, 0)?;
            for p in page.partitions {
                let ks = String::from_utf8(p.key.key.to_vec())
                    .map_err(|_| SchemaError::Corrupt("keyspace name is not UTF-8".into()))?;
                let part = rows.partitions.entry(ks).or_default();
                if let Some(d) = p.deletion {
                    part.deletion = part.deletion.max(Some(d.timestamp));
                }
                for (ck, row) in p.rows {
                    let key = decode_row_key(&ck)?;
                    let into: &mut SchemaRow = part.rows.entry(key).or_default();
                    if let Some(d) = row.deletion {
                        into.deletion = into.deletion.max(Some(d.timestamp));
                    }
                    for (name, cell) in row.cells {
                        let CellValue::Live(v) = cell.value else {
                            continue;
                        };
                        let name = String::from_utf8(name.column.to_vec())
                            .map_err(|_| SchemaError::Corrupt("cell name is not UTF-8".into()))?;
                        let value = String::from_utf8(v.to_vec())
                            .map_err(|_| SchemaError::Corrupt("cell value is not UTF-8".into()))?;
                        into.cells.insert(
                            name,
                            CellVersion {
                                timestamp: cell.timestamp,
                                value,
                            },
                        );
                    }
                }
            }
            match page.resume {
                Some(start) => request.start = start,
                None => break,
            }
        }
        rows.normalize();
        Ok(rows)
    }

    /// Loads the schema stored in the engine.
    pub fn load(&self) -> Result<Schema> {
        let schema = Schema::from_rows(self.load_rows()?);
        tracing::info!(version = %schema.version(), keyspaces = schema.keyspaces().len(), "schema loaded");
        Ok(schema)
    }
}
