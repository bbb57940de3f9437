//! The memtable: an ordered concurrent map of partitions.
//!
//! A lock-free skip list orders partitions by (token, key); each partition
//! has its own mutex, so writers to different partitions never contend and
//! a reader copies out only the rows it needs.

use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;
use gyre_common::codec;
use gyre_common::{lww, DecoratedKey, Partition, Timestamp};
use parking_lot::Mutex;

use crate::commitlog::Position;
use crate::types::ClusteringFilter;

pub struct Memtable {
    map: SkipMap<DecoratedKey, Mutex<MemPartition>>,
    bytes: AtomicU64,
    min_timestamp: AtomicI64,
    /// Commitlog position when this memtable stopped taking writes; every
    /// record before it is in this memtable or an older one.
    end: Mutex<Option<Position>>,
}

/// A partition in the memtable: updates are kept in their encoded form (the
/// bytes already made for the commitlog) and merged only when the partition
/// is read or flushed. Decoded trees cost kilobytes per row; most written
/// partitions are never read before their flush.
struct MemPartition {
    merged: Option<Partition>,
    pending: Vec<Bytes>,
}

impl MemPartition {
    /// Pending updates folded into `merged` once there are this many, so a
    /// read never decodes more than a handful.
    const FOLD_AT: usize = 8;

    /// The merged partition, without keeping the decoded form around
    /// (a decoded tree costs kilobytes; the encoded one, its bytes).
    fn resolve(&mut self, key: &DecoratedKey) -> Partition {
        if self.pending.len() >= Self::FOLD_AT {
            let folded = Self::merge(self.merged.take(), &self.pending, key);
            self.pending.clear();
            self.merged = Some(folded);
        }
        Self::merge(self.merged.clone(), &self.pending, key)
    }

    fn merge(base: Option<Partition>, pending: &[Bytes], key: &DecoratedKey) -> Partition {
        let mut out = base;
        for enc in pending {
            match codec::decode_partition(&mut codec::Reader::new(enc)) {
                Ok(p) => match &mut out {
                    None => out = Some(p),
                    Some(m) => lww::merge_partitions(m, p),
                },
                // Only our own encoder wrote these bytes: a failure is a bug.
                Err(e) => tracing::error!(error = %e, "undecodable memtable entry"),
            }
        }
        out.unwrap_or_else(|| Partition::new(key.clone()))
    }
}

impl Default for Memtable {
    fn default() -> Self {
        Self::new()
    }
}

/// Fixed overhead of a memtable entry beyond its encoded bytes.
const ENTRY_OVERHEAD: u64 = 96;

impl Memtable {
    pub fn new() -> Self {
        Memtable {
            map: SkipMap::new(),
            bytes: AtomicU64::new(0),
            min_timestamp: AtomicI64::new(Timestamp::MAX),
            end: Mutex::new(None),
        }
    }

    /// Adds an update, given with its encoding (`codec::encode_partition`);
    /// returns the approximate bytes it added.
    pub fn apply(&self, update: &Partition, encoded: Bytes) -> u64 {
        if let Some((lo, _)) = update.timestamp_range() {
            self.min_timestamp.fetch_min(lo, Ordering::Relaxed);
        }
        let size = encoded.len() as u64 + ENTRY_OVERHEAD;
        let entry = self.map.get_or_insert_with(update.key.clone(), || {
            Mutex::new(MemPartition {
                merged: None,
                pending: Vec::with_capacity(1),
            })
        });
        entry.value().lock().pending.push(encoded);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        size
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The least write timestamp in the memtable (for tombstone purging).
    pub fn min_timestamp(&self) -> Timestamp {
        self.min_timestamp.load(Ordering::Relaxed)
    }

    pub fn set_end(&self, pos: Position) {
        *self.end.lock() = Some(pos);
    }

    pub fn end(&self) -> Option<Position> {
        *self.end.lock()
    }

    /// Copies out the part of a partition that the clustering filter selects.
    pub fn get(&self, key: &DecoratedKey, filter: &ClusteringFilter) -> Option<Partition> {
        let entry = self.map.get(key)?;
        let p = entry.value().lock().resolve(key);
        Some(clip(&p, filter))
    }

    /// Partitions from `start` on, in order, clipped to the filter.
    pub fn range(
        &self,
        start: Bound<DecoratedKey>,
        filter: &ClusteringFilter,
    ) -> impl Iterator<Item = Partition> + '_ {
        let filter = filter.clone();
        self.map.range((start, Bound::Unbounded)).map(move |e| {
            let p = e.value().lock().resolve(e.key());
            clip(&p, &filter)
        })
    }

    /// Every partition in order, whole (for flushing). Readers may still use
    /// the memtable while it flushes, so this copies.
    pub fn iter(&self) -> impl Iterator<Item = Partition> + '_ {
        self.map.iter().map(|e| e.value().lock().resolve(e.key()))
    }
}

/// Copies a partition keeping only selected rows.
pub fn clip(p: &Partition, filter: &ClusteringFilter) -> Partition {
    let mut out = Partition {
        key: p.key.clone(),
        deletion: p.deletion,
        range_tombstones: p.range_tombstones.clone(),
        static_row: p.static_row.clone(),
        rows: Default::default(),
    };
    match filter {
        ClusteringFilter::Names(names) => {
            for n in names {
                if let Some(r) = p.rows.get(n) {
                    out.rows.insert(n.clone(), r.clone());
                }
            }
        }
        ClusteringFilter::Slices(slices) => {
            for s in slices {
                let start = bytes::Bytes::copy_from_slice(s.seek_key());
                for (ck, r) in p.rows.range(start..) {
                    if !s.before_end(ck) {
                        break;
                    }
                    if s.contains(ck) {
                        out.rows.insert(ck.clone(), r.clone());
                    }
                }
            }
        }
    }
    out
}
