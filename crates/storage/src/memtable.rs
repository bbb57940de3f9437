//! The memtable: an ordered concurrent map of partitions.
//!
//! Partitions are ordered by (token, key) in B-trees sharded by token range:
//! shard `i` holds the `i`-th slice of the ring, so walking the shards in
//! order walks the ring in order, and writers to different shards never
//! contend. A B-tree beat a lock-free skip list here: with a million random
//! keys the skip list's pointer chasing took a quarter of the write path.
//!
//! Keys and encoded updates are copied into per-shard arena chunks (as
//! RocksDB's memtable arena): a partition costs its bytes plus its B-tree
//! slot instead of two or three allocations of its own, the memory goes
//! back as whole chunks when the memtable is dropped, and the budget counts
//! what the memtable really holds (bytes copied plus B-tree slots).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use gyre_common::codec;
use gyre_common::{lww, DecoratedKey, Partition, Timestamp};
use parking_lot::{Mutex, RwLock};

use crate::commitlog::Position;
use crate::types::ClusteringFilter;

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;
/// Partitions a range iterator copies out per shard lock.
const BATCH: usize = 64;

type Shard = RwLock<ShardData>;

#[derive(Default)]
struct ShardData {
    map: BTreeMap<DecoratedKey, MemPartition>,
    arena: Arena,
}

/// Bump allocation of byte strings in shared chunks: each copy is a `Bytes`
/// slice of the current chunk (no allocation of its own), and a chunk is
/// freed when the last slice of it goes (normally with the memtable).
#[derive(Default)]
struct Arena {
    chunk: BytesMut,
    /// The size of the next chunk: it doubles from `MIN_CHUNK` to
    /// `MAX_CHUNK`, so the thousands of tiny memtables (system tables, one
    /// per shard touched) cost little.
    next: usize,
}

impl Arena {
    const MIN_CHUNK: usize = 1 << 10;
    const MAX_CHUNK: usize = 64 << 10;

    /// Copies `data` into the arena. The budget counts the bytes copied:
    /// the unused tails of the shards' current chunks (a few MiB at most)
    /// are not counted, so that small budgets (tests) are not eaten by
    /// chunks that are mostly empty.
    fn copy(&mut self, data: &[u8]) -> Bytes {
        // Large values get their own allocation: they would waste most of
        // a chunk's tail.
        if data.len() > Self::MAX_CHUNK / 8 {
            return Bytes::copy_from_slice(data);
        }
        if self.chunk.capacity() - self.chunk.len() < data.len() {
            self.next = (self.next * 2).clamp(Self::MIN_CHUNK, Self::MAX_CHUNK);
            self.chunk = BytesMut::with_capacity(self.next);
        }
        self.chunk.extend_from_slice(data);
        self.chunk.split().freeze()
    }
}

pub struct Memtable {
    shards: Vec<Shard>,
    len: AtomicUsize,
    bytes: AtomicU64,
    min_timestamp: AtomicI64,
    /// Commitlog position when this memtable stopped taking writes; every
    /// record before it is in this memtable or an older one.
    end: Mutex<Option<Position>>,
    /// The in-memory index of this memtable's data (storage-attached
    /// indexes).
    pub(crate) sai: crate::sai::MemIndex,
    /// Where the flush of this memtable is, once switched out (lsm.rs).
    pub(crate) flush: Mutex<FlushSlot>,
    /// The generation its SSTable gets, fixed when it is switched out so
    /// that flushes finishing out of order still number SSTables by age.
    pub(crate) generation: AtomicU64,
}

/// The flush state of a switched-out memtable. Flushes of one table may
/// run in parallel, but finish (become an SSTable, move the commitlog's
/// flushed position) strictly oldest first.
#[derive(Default)]
pub(crate) enum FlushSlot {
    /// Not taken by a flush thread yet, or its last flush failed.
    #[default]
    Waiting,
    /// A flush thread is writing it.
    Writing,
    /// Its SSTable is written (`None`: nothing to write), waiting for the
    /// older memtables to finish.
    Written(Option<Arc<crate::sstable::SsTable>>),
}

/// The shard of a token: its top bits, with the sign flipped so shard
/// order is token order.
fn shard_of(token: i64) -> usize {
    ((token as u64 ^ (1 << 63)) >> (64 - SHARD_BITS)) as usize
}

/// A partition in the memtable: updates are kept in their encoded form (the
/// bytes already made for the commitlog) and merged only when the partition
/// is read or flushed. Decoded trees cost kilobytes per row; encoded, a
/// partition costs about its size, which is what the memtable budget counts.
struct MemPartition {
    /// Earlier updates, merged and re-encoded.
    merged: Option<Bytes>,
    pending: Vec<Bytes>,
    /// How many times `merged` was rewritten (the fold policy's cost).
    folds: u32,
}

impl MemPartition {
    /// Pending updates are folded into `merged` once there are this many
    /// and they add up to half of it: the fold rewrites the whole partition,
    /// so tying it to growth keeps appends to a wide partition from costing
    /// quadratic time.
    const FOLD_AT: usize = 8;
    /// Reads decode every pending update: never let there be more.
    const FOLD_ALWAYS_AT: usize = 256;

    /// Adds an update; returns the heap bytes a fold allocated.
    fn push(&mut self, key: &DecoratedKey, encoded: Bytes) -> u64 {
        self.pending.push(encoded);
        let n = self.pending.len();
        let fold = n >= Self::FOLD_ALWAYS_AT
            || (n >= Self::FOLD_AT
                && self.pending.iter().map(Bytes::len).sum::<usize>() * 2
                    >= self.merged.as_ref().map_or(0, Bytes::len));
        if fold {
            let folded = self.resolve(key);
            let mut buf = Vec::new();
            codec::encode_partition(&mut buf, &folded);
            self.pending.clear();
            let took = buf.capacity() as u64;
            self.merged = Some(Bytes::from(buf));
            self.folds += 1;
            return took;
        }
        0
    }

    /// The merged partition, decoded.
    fn resolve(&self, key: &DecoratedKey) -> Partition {
        let mut out: Option<Partition> = None;
        for enc in self.merged.iter().chain(self.pending.iter()) {
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

/// Memory of a partition's B-tree slot: key and value, with the nodes'
/// unused slots and edges (random inserts leave nodes about 2/3 full).
const SLOT_BYTES: u64 = (std::mem::size_of::<(DecoratedKey, MemPartition)>() * 3 / 2) as u64;
/// Memory of one more pending update of a partition (its `Bytes` in
/// `pending`, doubled for the Vec's spare capacity).
const PENDING_BYTES: u64 = 2 * std::mem::size_of::<Bytes>() as u64;

impl Memtable {
    pub fn new() -> Self {
        Memtable {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            len: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            min_timestamp: AtomicI64::new(Timestamp::MAX),
            end: Mutex::new(None),
            sai: Default::default(),
            flush: Mutex::new(FlushSlot::Waiting),
            generation: AtomicU64::new(0),
        }
    }

    /// Adds an update, given with its encoding (`codec::encode_partition`,
    /// copied into the memtable's arena); returns the bytes of memory it
    /// added.
    pub fn apply(&self, update: &Partition, encoded: &[u8]) -> u64 {
        if let Some((lo, _)) = update.timestamp_range() {
            self.min_timestamp.fetch_min(lo, Ordering::Relaxed);
        }
        let mut shard = self.shards[shard_of(update.key.token)].write();
        let shard = &mut *shard;
        let mut size = encoded.len() as u64;
        let encoded = shard.arena.copy(encoded);
        match shard.map.get_mut(&update.key) {
            Some(p) => size += PENDING_BYTES + p.push(&update.key, encoded),
            None => {
                let key = shard.arena.copy(&update.key.key);
                size += key.len() as u64 + SLOT_BYTES;
                // The first update is the partition as it is: kept as
                // `merged`, so a partition written once has no Vec.
                shard.map.insert(
                    DecoratedKey {
                        token: update.key.token,
                        key,
                    },
                    MemPartition {
                        merged: Some(encoded),
                        pending: Vec::new(),
                        folds: 0,
                    },
                );
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        size
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
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

    /// Takes this switched-out memtable for writing, unless another flush
    /// thread has it or has written it.
    pub(crate) fn claim(&self) -> bool {
        let mut slot = self.flush.lock();
        if matches!(*slot, FlushSlot::Waiting) {
            *slot = FlushSlot::Writing;
            true
        } else {
            false
        }
    }

    /// Copies out the part of a partition that the clustering filter selects.
    pub fn get(&self, key: &DecoratedKey, filter: &ClusteringFilter) -> Option<Partition> {
        let p = self.shards[shard_of(key.token)]
            .read()
            .map
            .get(key)?
            .resolve(key);
        Some(clip(&p, filter))
    }

    /// Partitions from `start` on, in order, clipped to the filter. Copies
    /// out a batch per shard lock, so a slow consumer never blocks writers.
    pub fn range(&self, start: Bound<DecoratedKey>, filter: &ClusteringFilter) -> MemtableIter<'_> {
        let shard = match &start {
            Bound::Included(k) | Bound::Excluded(k) => shard_of(k.token),
            Bound::Unbounded => 0,
        };
        MemtableIter {
            memtable: self,
            shard,
            from: start,
            filter: Some(filter.clone()),
            batch: Vec::new(),
        }
    }

    /// Every partition in order, for flushing: partitions written once as
    /// the bytes the memtable holds (shared, not copied), the others merged.
    pub fn flush_iter(&self) -> FlushIter<'_> {
        FlushIter {
            memtable: self,
            shard: 0,
            from: Bound::Unbounded,
            batch: Default::default(),
        }
    }

    /// Every partition in order, whole. Readers may still use the memtable
    /// while it flushes, so this copies.
    pub fn iter(&self) -> MemtableIter<'_> {
        MemtableIter {
            memtable: self,
            shard: 0,
            from: Bound::Unbounded,
            filter: None,
            batch: Vec::new(),
        }
    }
}

/// A partition as a flush gets it: the encoding the memtable holds, when
/// it holds a single one (no updates to merge), or merged.
pub enum FlushEntry {
    Encoded(DecoratedKey, Bytes),
    Merged(Partition),
}

impl FlushEntry {
    /// The partition, decoded.
    pub fn into_partition(self) -> Partition {
        match self {
            FlushEntry::Encoded(key, enc) => MemPartition {
                merged: Some(enc),
                pending: Vec::new(),
                folds: 0,
            }
            .resolve(&key),
            FlushEntry::Merged(p) => p,
        }
    }
}

/// Walks a memtable for flushing, a batch of partitions per shard lock.
pub struct FlushIter<'a> {
    memtable: &'a Memtable,
    shard: usize,
    from: Bound<DecoratedKey>,
    batch: std::collections::VecDeque<FlushEntry>,
}

impl Iterator for FlushIter<'_> {
    type Item = FlushEntry;

    fn next(&mut self) -> Option<FlushEntry> {
        while self.batch.is_empty() {
            if self.shard >= SHARDS {
                return None;
            }
            let shard = self.memtable.shards[self.shard].read();
            let mut last = None;
            for (k, p) in shard
                .map
                .range((self.from.clone(), Bound::Unbounded))
                .take(BATCH)
            {
                self.batch
                    .push_back(match (&p.merged, p.pending.is_empty()) {
                        (Some(enc), true) => FlushEntry::Encoded(k.clone(), enc.clone()),
                        _ => FlushEntry::Merged(p.resolve(k)),
                    });
                last = Some(k.clone());
            }
            drop(shard);
            match last {
                Some(k) if self.batch.len() == BATCH => self.from = Bound::Excluded(k),
                _ => {
                    self.shard += 1;
                    self.from = Bound::Unbounded;
                }
            }
        }
        self.batch.pop_front()
    }
}

/// Walks a memtable in (token, key) order.
pub struct MemtableIter<'a> {
    memtable: &'a Memtable,
    shard: usize,
    from: Bound<DecoratedKey>,
    filter: Option<ClusteringFilter>,
    /// The next partitions, in reverse order (popped from the end).
    batch: Vec<Partition>,
}

impl Iterator for MemtableIter<'_> {
    type Item = Partition;

    fn next(&mut self) -> Option<Partition> {
        while self.batch.is_empty() {
            if self.shard >= SHARDS {
                return None;
            }
            let shard = self.memtable.shards[self.shard].read();
            let mut last = None;
            for (k, p) in shard
                .map
                .range((self.from.clone(), Bound::Unbounded))
                .take(BATCH)
            {
                let whole = p.resolve(k);
                self.batch.push(match &self.filter {
                    Some(f) => clip(&whole, f),
                    None => whole,
                });
                last = Some(k.clone());
            }
            drop(shard);
            match last {
                Some(k) if self.batch.len() == BATCH => self.from = Bound::Excluded(k),
                _ => {
                    self.shard += 1;
                    self.from = Bound::Unbounded;
                }
            }
            self.batch.reverse();
        }
        self.batch.pop()
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

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_common::{codec, Cell, CellName};

    fn put(m: &Memtable, i: u32) -> DecoratedKey {
        let p = Partition::with_key(i.to_be_bytes().to_vec()).set(
            "r",
            CellName::simple("v"),
            Cell::live(1, "x"),
        );
        let mut enc = Vec::new();
        codec::encode_partition(&mut enc, &p);
        m.apply(&p, &enc);
        p.key
    }

    /// Appending rows one at a time to a wide partition must not rewrite
    /// it every few appends (quadratic): folds grow with the partition.
    #[test]
    fn appends_to_a_wide_partition_fold_logarithmically() {
        let key = DecoratedKey::new("wide");
        let mut mp = MemPartition {
            merged: None,
            pending: Vec::new(),
            folds: 0,
        };
        for i in 0..20_000u32 {
            let p = Partition::new(key.clone()).set(
                i.to_be_bytes().to_vec(),
                CellName::simple("v"),
                Cell::live(1, "x"),
            );
            let mut enc = Vec::new();
            codec::encode_partition(&mut enc, &p);
            mp.push(&key, Bytes::from(enc));
        }
        assert_eq!(mp.resolve(&key).rows.len(), 20_000);
        // Every 8 appends would be 2,500 folds; growth-tied folding is ~100.
        assert!(mp.folds < 150, "{} folds", mp.folds);
    }

    /// A flush gets the bytes of a partition written once as they are (no
    /// copy: the same memory), and the merge of one written again.
    #[test]
    fn flush_iter_shares_single_updates_and_merges_the_others() {
        let m = Memtable::new();
        let mut keys: Vec<DecoratedKey> = (0..300).map(|i| put(&m, i)).collect();
        keys.sort();
        let again = put(&m, 7);
        let mut seen = Vec::new();
        for e in m.flush_iter() {
            match e {
                FlushEntry::Encoded(k, enc) => {
                    assert_ne!(k, again);
                    let shard = m.shards[shard_of(k.token)].read();
                    let held = shard.map.get(&k).and_then(|p| p.merged.clone());
                    assert_eq!(held.map(|b| b.as_ptr()), Some(enc.as_ptr()));
                    seen.push(k);
                }
                FlushEntry::Merged(p) => {
                    assert_eq!(p.key, again);
                    assert_eq!(p.rows.len(), 1);
                    seen.push(p.key);
                }
            }
        }
        assert_eq!(seen, keys);
    }

    #[test]
    fn iterates_every_partition_in_ring_order_across_shards_and_batches() {
        let m = Memtable::new();
        let mut keys: Vec<DecoratedKey> = (0..5_000).map(|i| put(&m, i)).collect();
        put(&m, 7); // a second update to one partition
        keys.sort();
        assert_eq!(m.len(), 5_000);
        let got: Vec<DecoratedKey> = m.iter().map(|p| p.key).collect();
        assert_eq!(got, keys);
        let mid = keys[2_345].clone();
        let from: Vec<DecoratedKey> = m
            .range(Bound::Excluded(mid.clone()), &ClusteringFilter::all())
            .map(|p| p.key)
            .collect();
        assert_eq!(from, keys[2_346..].to_vec());
        let incl = m
            .range(Bound::Included(mid.clone()), &ClusteringFilter::all())
            .next();
        assert_eq!(incl.map(|p| p.key), Some(mid));
    }
}
