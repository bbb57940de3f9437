//! The batchlog: logged batches are written to (up to) two other nodes
//! before their mutations go out, and removed once every mutation was
//! acknowledged. A node replays the entries it holds that are older than
//! twice the write timeout, so a batch is applied in full even when its
//! coordinator dies half-way.
//!
//! Entries live in an internal table of the node's own storage engine:
//! partition key = batch id, one cell holding the encoded batch, written
//! at the coordinator's timestamp; removal is a partition deletion.

use std::ops::Bound;

use bytes::Bytes;
use gyre_common::{Cell, CellName, Deletion, Partition, Timestamp};
use gyre_storage::{
    ReadFilter, ScanRequest, ScanStart, StorageEngine, TableId, TableOptions, WriteFuture,
};
use uuid::Uuid;

use crate::error::Result;

/// The fixed id of the internal batchlog table.
pub const BATCHLOG_TABLE: TableId =
    TableId(Uuid::from_u128(0x6779_7265_0000_4000_8000_0000_4241_5443));

const DATA: &str = "data";

pub(crate) fn create_table(engine: &dyn StorageEngine) -> Result<()> {
    // Removed entries need not outlive their replicas for long.
    let options = TableOptions {
        gc_grace_seconds: 3600,
        ..TableOptions::default()
    };
    Ok(engine.create_table(BATCHLOG_TABLE, options)?)
}

/// Stores an encoded batch (see `messages::encode_batch`) under its id;
/// resolves once the entry is durable.
pub(crate) fn store_deferred(
    engine: &dyn StorageEngine,
    id: Uuid,
    batch: Bytes,
    ts: Timestamp,
) -> WriteFuture {
    engine.apply_deferred(BATCHLOG_TABLE, entry(id, batch, ts))
}

/// The batchlog row of a batch.
fn entry(id: Uuid, batch: Bytes, ts: Timestamp) -> Partition {
    Partition::with_key(Bytes::copy_from_slice(id.as_bytes())).set(
        Bytes::new(),
        CellName::simple(DATA),
        Cell::live(ts, batch),
    )
}

/// Forgets a batch (a deletion at `ts`, which must be after its write).
pub(crate) fn remove(engine: &dyn StorageEngine, id: Uuid, ts: Timestamp) -> Result<()> {
    Ok(engine.apply(BATCHLOG_TABLE, removal(id, ts))?)
}

/// [`remove`] without blocking.
pub(crate) fn remove_deferred(engine: &dyn StorageEngine, id: Uuid, ts: Timestamp) -> WriteFuture {
    engine.apply_deferred(BATCHLOG_TABLE, removal(id, ts))
}

fn removal(id: Uuid, ts: Timestamp) -> Partition {
    Partition::with_key(Bytes::copy_from_slice(id.as_bytes()))
        .delete_partition(Deletion::new(ts, ts.div_euclid(1_000_000)))
}

/// Entries written before `before` (microseconds): (id, write time, batch).
pub(crate) fn due(
    engine: &dyn StorageEngine,
    before: Timestamp,
) -> Result<Vec<(Uuid, Timestamp, Bytes)>> {
    let mut out = Vec::new();
    let mut request = ScanRequest {
        start: ScanStart::Token(Bound::Unbounded),
        end: Bound::Unbounded,
        filter: ReadFilter::all(),
        max_rows: 256,
        index: None,
    };
    let now = (before / 1_000_000).max(0);
    loop {
        let page = engine.scan(BATCHLOG_TABLE, &request, now)?;
        for p in page.partitions {
            let Ok(id) = Uuid::from_slice(&p.key.key) else {
                tracing::warn!("batchlog entry with a malformed id; skipped");
                continue;
            };
            let live = gyre_common::lww::live_view(&p, now);
            let cell = live
                .rows
                .values()
                .next()
                .and_then(|r| r.cells.get(&CellName::simple(DATA)));
            if let Some(c) = cell {
                if let (gyre_common::CellValue::Live(v), true) = (&c.value, c.timestamp < before) {
                    out.push((id, c.timestamp, v.clone()));
                }
            }
        }
        match page.resume {
            Some(s) => request.start = s,
            None => return Ok(out),
        }
    }
}
