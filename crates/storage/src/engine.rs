//! The engine trait, the clock it is given, and the read-side logic both
//! engines share.

use std::sync::atomic::{AtomicI64, Ordering};

use gyre_common::{lww, DecoratedKey, LocalTime, Partition};

use crate::types::{
    ColumnFilter, EngineStats, ReadFilter, ScanPage, ScanRequest, TableId, TableOptions, TableStats,
};
use crate::Result;

/// A node-local storage engine: Cassandra's data model over byte keys.
///
/// Implementations are shared by many threads. Methods block (on disk I/O
/// and, for `apply`, on the commitlog sync the configured mode requires);
/// async callers run them on a blocking pool.
pub trait StorageEngine: Send + Sync {
    /// Creates a table, or updates its options if it exists.
    fn create_table(&self, id: TableId, options: TableOptions) -> Result<()>;
    /// Removes a table and all its data.
    fn drop_table(&self, id: TableId) -> Result<()>;
    /// Removes all data of a table, keeping the table.
    fn truncate_table(&self, id: TableId) -> Result<()>;
    /// The tables this engine holds.
    fn tables(&self) -> Vec<(TableId, TableOptions)>;

    /// Applies a change to one partition, atomically and durably (as the
    /// commitlog sync mode defines durability).
    fn apply(&self, table: TableId, update: Partition) -> Result<()>;

    /// Reads one partition: reconciled, with shadowed data removed, clipped
    /// to the filter. Tombstones in the selection are kept (see
    /// [`ReadFilter`]). `None` when the engine holds nothing for the key.
    fn read(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
    ) -> Result<Option<Partition>>;

    /// Reads partitions in (token, key) order, a page at a time.
    fn scan(&self, table: TableId, request: &ScanRequest, now: LocalTime) -> Result<ScanPage>;

    /// Writes memtables to disk (one table, or all).
    fn flush(&self, table: Option<TableId>) -> Result<()>;
    /// Major compaction: merges all of a table's on-disk data into one run.
    fn compact(&self, table: TableId) -> Result<()>;

    fn table_stats(&self, table: TableId) -> Result<TableStats>;
    fn engine_stats(&self) -> EngineStats;
}

/// The engine's only source of "now" (seconds), for TTL expiry and tombstone
/// purging in background compaction. Reads take `now` as an argument.
pub trait Clock: Send + Sync {
    fn now(&self) -> LocalTime;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> LocalTime {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }
}

/// A clock that tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now: LocalTime) -> Self {
        ManualClock(AtomicI64::new(now))
    }

    pub fn set(&self, now: LocalTime) {
        self.0.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> LocalTime {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> LocalTime {
        (**self).now()
    }
}

/// Turns merged partition data into a read result: removes what deletions
/// shadow, clips rows, range tombstones and columns to the filter and applies
/// the live-row limit. Every engine finishes its reads here.
pub fn finish_read(mut p: Partition, filter: &ReadFilter, now: LocalTime) -> Option<Partition> {
    lww::purge_shadowed(&mut p);
    p.rows.retain(|ck, _| filter.clustering.contains(ck));
    p.range_tombstones
        .retain(|rt| filter.clustering.intersects(&rt.slice));
    if let ColumnFilter::Columns(_) = &filter.columns {
        let keep = |row: &mut gyre_common::Row| {
            row.cells.retain(|n, _| filter.columns.contains(&n.column))
        };
        if let Some(r) = &mut p.static_row {
            keep(r);
            if r.is_empty() {
                p.static_row = None;
            }
        }
        p.rows.retain(|_, r| {
            keep(r);
            !r.is_empty()
        });
    }
    if let Some(limit) = filter.limit {
        apply_limit(&mut p, limit, filter.reversed, now);
    }
    if p.is_empty() {
        None
    } else {
        Some(p)
    }
}

/// Keeps rows up to and including the `limit`-th live one, counting from the
/// end when reversed.
fn apply_limit(p: &mut Partition, limit: usize, reversed: bool, now: LocalTime) {
    let mut live = 0;
    let mut cut: Option<bytes::Bytes> = None;
    let mut iter: Box<dyn Iterator<Item = (&bytes::Bytes, &gyre_common::Row)>> = if reversed {
        Box::new(p.rows.iter().rev())
    } else {
        Box::new(p.rows.iter())
    };
    for (ck, row) in &mut iter {
        if live == limit {
            cut = Some(ck.clone());
            break;
        }
        if row.is_live(now) {
            live += 1;
        }
    }
    drop(iter);
    if let Some(cut) = cut {
        if reversed {
            let keep = p.rows.split_off(&cut);
            let _ = std::mem::replace(&mut p.rows, keep);
            // `split_off` keeps `cut` itself on the kept side; it is past the limit.
            p.rows.remove(&cut);
        } else {
            p.rows.split_off(&cut);
        }
    }
}

/// Live rows of a read result, as a scan counts them for its page size.
pub fn live_row_count(p: &Partition, now: LocalTime) -> usize {
    let rows = p.rows.values().filter(|r| r.is_live(now)).count();
    if rows == 0 && p.static_row.as_ref().is_some_and(|r| r.is_live(now)) {
        1
    } else {
        rows
    }
}
