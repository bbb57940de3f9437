//! The engine trait, the clock it is given, and the read-side logic both
//! engines share.

use std::ops::Bound;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use gyre_common::{lww, DecoratedKey, LocalTime, Partition, Slice, SliceBound};

use crate::snapshot::SnapshotInfo;
use crate::types::{
    ColumnFilter, EngineStats, ImportReport, ReadFilter, ScanPage, ScanRequest, ScanStart, TableId,
    TableOptions, TableStats,
};
use crate::{Error, Result};

/// A write handed to the engine: resolves once it is durable as the sync
/// mode requires (see [`StorageEngine::apply_deferred`]).
pub type WriteFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// A node-local storage engine: Cassandra's data model over byte keys.
///
/// Implementations are shared by many threads. Methods block on disk I/O
/// and, for `apply`, on the commitlog sync the configured mode requires.
/// The node's request path calls [`StorageEngine::apply_deferred`] (no
/// thread waits for an fsync) and `read` / `scan` inline on its async
/// workers (reads are CPU work over memtables and page-cached SSTables).
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

    /// [`StorageEngine::apply`] for async callers: the update is applied
    /// (commitlog buffer and memtable) when this is called, and the future
    /// resolves once it is durable, so no thread is parked on the fsync.
    /// A writer held back by memory pressure waits inside the future. The
    /// default applies in full before returning (engines whose durability
    /// cannot be awaited separately).
    fn apply_deferred(&self, table: TableId, update: Partition) -> WriteFuture {
        Box::pin(std::future::ready(self.apply(table, update)))
    }

    /// [`StorageEngine::apply_deferred`] of an already encoded update: an
    /// engine whose log takes the same encoding appends its bytes as they
    /// are (the native engine); the default applies the update.
    fn apply_mutation(&self, m: crate::Mutation) -> WriteFuture {
        self.apply_deferred(m.table(), m.into_update())
    }

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

    /// `nodetool cleanup`: flushes the table and rewrites its on-disk data
    /// without the partitions whose token `keep` rejects (ranges this node
    /// no longer replicates). Dropped outright, tombstones included: no
    /// other copy on this node could need them.
    fn cleanup(
        &self,
        table: TableId,
        keep: &(dyn Fn(gyre_common::Token) -> bool + Sync),
    ) -> Result<()> {
        let _ = (table, keep);
        Err(Error::Unsupported("cleanup".into()))
    }

    fn table_stats(&self, table: TableId) -> Result<TableStats>;
    fn engine_stats(&self) -> EngineStats;

    /// Flushes a table and hard-links its SSTables into snapshot `tag`
    /// (refused if the table has one by that tag).
    fn snapshot(&self, table: TableId, tag: &str) -> Result<SnapshotInfo> {
        let _ = (table, tag);
        Err(Error::Unsupported("snapshots".into()))
    }

    /// Every snapshot on disk, including those of dropped tables.
    fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(Vec::new())
    }

    /// Removes the snapshots with `tag` (all when `None`) of `table` (every
    /// table when `None`); returns what it removed.
    fn clear_snapshots(
        &self,
        tag: Option<&str>,
        table: Option<TableId>,
    ) -> Result<Vec<SnapshotInfo>> {
        let _ = (tag, table);
        Ok(Vec::new())
    }

    /// Loads the SSTables an operator copied into the table's import
    /// directory (`nodetool refresh`), without a restart.
    fn import_sstables(&self, table: TableId) -> Result<ImportReport> {
        let _ = table;
        Err(Error::Unsupported("importing SSTables".into()))
    }

    /// Loads snapshot `tag` of table `from` (this table, or a dropped one
    /// whose snapshot outlived it) into `table`: its files are linked into
    /// the import directory and imported, without a restart.
    fn restore_snapshot(&self, table: TableId, from: TableId, tag: &str) -> Result<ImportReport> {
        let _ = (table, from, tag);
        Err(Error::Unsupported("restoring snapshots".into()))
    }

    /// The SSTables holding tokens of one segment `start..end` of a
    /// streamed range (never wrapping); the caller flushes the table first
    /// so that they hold everything written before. `Unsupported` (the
    /// default) makes the
    /// streaming fall back to rows read by [`StorageEngine::scan`].
    fn stream_files(
        &self,
        table: TableId,
        start: &crate::ScanStart,
        end: &std::ops::Bound<gyre_common::Token>,
    ) -> Result<Vec<crate::stream::OutgoingFile>> {
        let _ = (table, start, end);
        Err(Error::Unsupported("streaming SSTable files".into()))
    }

    /// A staging area for SSTable files streamed in for `table`.
    /// `Unsupported` (the default) makes the receiver apply rows instead.
    fn stream_receiver(&self, table: TableId) -> Result<crate::stream::StreamReceiver> {
        let _ = table;
        Err(Error::Unsupported("streaming SSTable files".into()))
    }

    /// Imports the files a receiver staged into its table (all of them or
    /// none) and empties the receiver.
    fn import_streamed(
        &self,
        table: TableId,
        receiver: &mut crate::stream::StreamReceiver,
    ) -> Result<ImportReport> {
        let _ = (table, receiver);
        Err(Error::Unsupported("streaming SSTable files".into()))
    }

    /// Why the engine refuses writes until it is reopened (its log could
    /// not be written or synced), or `None` while it works. The node acts
    /// on it (`storage.commit_failure_policy`).
    /// Storage-attached index builds over existing data, per table (running
    /// and finished since start-up). Engines without indexes build none.
    fn index_builds(&self) -> Vec<(TableId, crate::sai::IndexBuild)> {
        Vec::new()
    }

    /// Whether this engine answers `ScanRequest::index` (storage-attached
    /// indexes, ANN). An engine that does not (the RocksDB engine) ignores
    /// it and returns plain pages: the query layer would filter those, so
    /// equality answers stay right but cost a scan of the ring, and an ANN
    /// query would gather every row of the table at the coordinator. Nodes
    /// on such an engine refuse CREATE INDEX and indexed queries instead.
    fn serves_indexes(&self) -> bool {
        false
    }

    fn failure(&self) -> Option<String> {
        None
    }
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

/// Where a scan starts, as a bound on (token, key) positions; `None` when
/// the range is empty (a start just after the last token).
pub fn scan_start_bound(start: &ScanStart) -> Option<Bound<DecoratedKey>> {
    let min_key = |token| DecoratedKey {
        token,
        key: Bytes::new(),
    };
    Some(match start {
        ScanStart::Token(Bound::Unbounded) => Bound::Unbounded,
        ScanStart::Token(Bound::Included(t)) => Bound::Included(min_key(*t)),
        ScanStart::Token(Bound::Excluded(t)) => Bound::Included(min_key(t.checked_add(1)?)),
        ScanStart::After(k) => Bound::Excluded(k.clone()),
        ScanStart::Within { key, .. } => Bound::Included(key.clone()),
    })
}

/// Builds a scan page from merged partitions in (token, key) order, starting
/// at the request's start: stops at the end token, resumes inside a
/// partition, applies per-partition and page row limits, and says where the
/// next page starts. Every engine's `scan` ends here.
pub fn assemble_scan_page(
    req: &ScanRequest,
    now: LocalTime,
    mut next: impl FnMut() -> Result<Option<Partition>>,
) -> Result<ScanPage> {
    let resume_after = match &req.start {
        ScanStart::Within {
            key,
            after,
            returned,
        } => Some((key, after, *returned)),
        _ => None,
    };
    let mut out = Vec::new();
    let mut rows = 0usize;
    while let Some(mut p) = next()? {
        let past_end = match req.end {
            Bound::Unbounded => false,
            Bound::Included(e) => p.key.token > e,
            Bound::Excluded(e) => p.key.token >= e,
        };
        if past_end {
            break;
        }
        let mut filter = req.filter.clone();
        let mut returned_before = 0;
        if let Some((k, ck, returned)) = resume_after {
            if p.key == *k {
                returned_before = returned;
                filter.limit = filter.limit.map(|l| l.saturating_sub(returned));
                // Resuming inside this partition: its static row and the
                // rows up to `ck` went out with the previous page.
                p.static_row = None;
                p.rows = p
                    .rows
                    .split_off(ck)
                    .into_iter()
                    .filter(|(c, _)| c != ck)
                    .collect();
                let rest = Slice::new(SliceBound::Exclusive(ck.clone()), SliceBound::Unbounded);
                p.range_tombstones.retain(|rt| rt.slice.intersects(&rest));
            }
        }
        let key = p.key.clone();
        let remaining = req.max_rows.saturating_sub(rows);
        let limited = filter.limit.is_none_or(|l| l > remaining);
        if limited {
            filter.limit = Some(remaining);
        }
        let Some(p) = finish_read(p, &filter, now) else {
            continue;
        };
        let n = live_row_count(&p, now);
        rows += n;
        let last_ck = p.rows.keys().next_back().cloned();
        out.push(p);
        if rows >= req.max_rows {
            let resume = match last_ck {
                Some(ck) if limited => ScanStart::Within {
                    key,
                    after: ck,
                    returned: returned_before + n,
                },
                _ => ScanStart::After(key),
            };
            return Ok(ScanPage {
                partitions: out,
                resume: Some(resume),
            });
        }
    }
    Ok(ScanPage {
        partitions: out,
        resume: None,
    })
}

/// Checks a mutation against the size limits before anything is written.
pub fn validate_update(
    update: &Partition,
    max_key_bytes: usize,
    max_value_bytes: usize,
) -> Result<()> {
    let key = update.key.key.len();
    if key == 0 {
        return Err(Error::LimitExceeded("the partition key is empty".into()));
    }
    if key > max_key_bytes {
        return Err(Error::LimitExceeded(format!(
            "partition key of {key} bytes is over the limit of {max_key_bytes} bytes"
        )));
    }
    for ck in update.rows.keys() {
        if ck.len() > max_key_bytes {
            return Err(Error::LimitExceeded(format!(
                "clustering key of {} bytes is over the limit of {max_key_bytes} bytes",
                ck.len()
            )));
        }
    }
    for (name, cell) in update.cells() {
        if let Some(v) = cell.value_at(LocalTime::MIN) {
            if v.len() > max_value_bytes {
                return Err(Error::LimitExceeded(format!(
                    "value of {} bytes in column {:?} is over the limit of {max_value_bytes} bytes",
                    v.len(),
                    String::from_utf8_lossy(&name.column),
                )));
            }
        }
    }
    Ok(())
}
