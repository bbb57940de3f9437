//! The compaction filter: what RocksDB compactions may drop.
//!
//! RocksDB shows a filter one record at a time, and only records stored as
//! full values (merge operands and the result of a merge made in the same
//! compaction are never shown), so the native engine's rule (purge a
//! tombstone past gc grace only when nothing older it shadows can exist
//! outside the compaction) is kept with these per-record rules:
//!
//! - always safe, in every compaction: cells shadowed by a deletion in the
//!   same record (row deletion, or partition deletion over the static row
//!   and range tombstones), rows' data shadowed by the partition header
//!   (partition deletion, range tombstones) seen earlier in the same
//!   compaction (keys sort header first), and expired cells turned into
//!   tombstones. The shadowing deletion is kept, so nothing comes back;
//! - row-scoped tombstones (cell tombstones, row deletions, static cells)
//!   past gc grace: only in a full compaction inside [`RocksEngine::compact`]'s
//!   purge window, and only below the least timestamp written since the
//!   window's flush: in a full compaction every other version of the key is
//!   in a memtable written after that flush;
//! - partition-scoped tombstones (partition deletions, range tombstones)
//!   past gc grace: as above and only if nothing at all was written to the
//!   table since that flush. Their scope is every row key of the partition,
//!   and those rows are all shown to this filter (after the header) only
//!   when the compaction holds every file and no merge operand.
//!
//! Background compactions therefore never purge tombstones; `compact` does.
//!
//! [`RocksEngine::compact`]: crate::RocksEngine

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use gyre_common::{Deletion, LocalTime, Partition, RangeTombstone, Timestamp};
use gyre_storage::{compact_partition, Clock};
use parking_lot::RwLock;
use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use crate::engine::{decode_fragment, split_key};

/// gc grace not yet known (a column family opened before its options were
/// read): never purge.
const GC_GRACE_UNKNOWN: i64 = -1;

/// Per-table state shared by the engine and the table's compaction filters.
pub(crate) struct PurgeState {
    clock: Arc<dyn Clock>,
    gc_grace_seconds: AtomicI64,
    /// Least timestamp written since the last reset (`Timestamp::MAX`: none).
    min_written: AtomicI64,
    /// Writers hold it shared around "note timestamp, write"; the reset
    /// holds it exclusively, so every write is either in the memtable the
    /// following flush persists or counted in `min_written`.
    write_gate: RwLock<()>,
    /// Open purge windows (compactions inside `compact` after its flush).
    windows: AtomicUsize,
}

impl PurgeState {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Arc<PurgeState> {
        Arc::new(PurgeState {
            clock,
            gc_grace_seconds: AtomicI64::new(GC_GRACE_UNKNOWN),
            min_written: AtomicI64::new(Timestamp::MAX),
            write_gate: RwLock::new(()),
            windows: AtomicUsize::new(0),
        })
    }

    pub(crate) fn set_gc_grace(&self, seconds: u32) {
        self.gc_grace_seconds
            .store(i64::from(seconds), Ordering::SeqCst);
    }

    /// Runs `write` (of data whose least timestamp is `lo`) after noting
    /// `lo`.
    pub(crate) fn note_write<T>(&self, lo: Timestamp, write: impl FnOnce() -> T) -> T {
        let _gate = self.write_gate.read();
        self.min_written.fetch_min(lo, Ordering::SeqCst);
        write()
    }

    /// Starts counting writes afresh; call just before a flush.
    pub(crate) fn reset_written(&self) {
        let _gate = self.write_gate.write();
        self.min_written.store(Timestamp::MAX, Ordering::SeqCst);
    }

    pub(crate) fn open_window(&self) {
        self.windows.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn close_window(&self) {
        self.windows.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct PurgeFilterFactory {
    pub(crate) state: Arc<PurgeState>,
    pub(crate) name: CString,
}

impl CompactionFilterFactory for PurgeFilterFactory {
    type Filter = PurgeFilter;

    fn create(&mut self, context: CompactionFilterContext) -> PurgeFilter {
        let s = &self.state;
        let now = s.clock.now();
        let gc_grace = s.gc_grace_seconds.load(Ordering::SeqCst);
        let may_purge = context.is_full_compaction
            && s.windows.load(Ordering::SeqCst) > 0
            && gc_grace != GC_GRACE_UNKNOWN;
        PurgeFilter {
            state: s.clone(),
            now,
            gc_before: if may_purge {
                now.saturating_sub(gc_grace)
            } else {
                LocalTime::MIN
            },
            header: None,
            out: Vec::new(),
            name: self.name.clone(),
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

/// The partition header last seen in this compaction.
struct Header {
    prefix: Vec<u8>,
    deletion: Option<Deletion>,
    range_tombstones: Vec<RangeTombstone>,
}

pub(crate) struct PurgeFilter {
    state: Arc<PurgeState>,
    now: LocalTime,
    /// Deletions made before this may be purged; `MIN` when none may.
    gc_before: LocalTime,
    header: Option<Header>,
    /// The changed value handed back to RocksDB (see [`change`]).
    out: Vec<u8>,
    name: CString,
}

impl PurgeFilter {
    fn rewrite(&mut self, key: &[u8], value: &[u8]) -> Option<Option<Partition>> {
        let (prefix_len, is_row) = split_key(key)?;
        let prefix = &key[..prefix_len];
        let mut p = decode_fragment(value)?;
        let max_purgeable = self.state.min_written.load(Ordering::SeqCst);
        if !is_row {
            // Shadowed data first, with the partition deletion in place.
            gyre_common::lww::purge_shadowed(&mut p);
            self.header = Some(Header {
                prefix: prefix.to_vec(),
                deletion: p.deletion,
                range_tombstones: p.range_tombstones.clone(),
            });
            let quiescent = max_purgeable == Timestamp::MAX;
            let (deletion, rts) = if quiescent {
                (None, Vec::new())
            } else {
                (p.deletion.take(), std::mem::take(&mut p.range_tombstones))
            };
            let key = p.key.clone();
            let mut p = compact_partition(p, self.now, self.gc_before, max_purgeable)
                .unwrap_or_else(|| Partition::new(key));
            if !quiescent {
                p.deletion = deletion;
                p.range_tombstones = rts;
            }
            return Some((!p.is_empty()).then_some(p));
        }
        // A row: bring in the header's deletions so that the shared purge
        // drops what they shadow, then take them out again.
        let mut attached = false;
        if let Some(h) = self.header.as_ref().filter(|h| h.prefix == prefix) {
            p.deletion = h.deletion;
            p.range_tombstones = h.range_tombstones.clone();
            attached = true;
        }
        let Some(mut p) = compact_partition(p, self.now, self.gc_before, max_purgeable) else {
            return Some(None);
        };
        if attached {
            p.deletion = None;
            p.range_tombstones.clear();
        }
        Some((!p.is_empty()).then_some(p))
    }
}

impl CompactionFilter for PurgeFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> Decision {
        match self.rewrite(key, value) {
            None => {
                tracing::error!("compaction filter: undecodable record kept as is");
                Decision::Keep
            }
            Some(None) => Decision::Remove,
            Some(Some(p)) => {
                self.out.clear();
                gyre_common::codec::encode_partition(&mut self.out, &p);
                if self.out == value {
                    Decision::Keep
                } else {
                    change(&self.out)
                }
            }
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

/// The binding types a changed value as `&'static`, but RocksDB's C shim
/// copies it (`new_value->assign(...)` in `c.cc`) before the callback
/// returns; the buffer lives in the filter and is not touched until the
/// next call.
#[allow(unsafe_code)]
fn change(buf: &[u8]) -> Decision {
    // SAFETY: the slice is only read during this callback (see above).
    Decision::Change(unsafe { std::mem::transmute::<&[u8], &'static [u8]>(buf) })
}
