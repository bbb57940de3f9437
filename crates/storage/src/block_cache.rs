//! A bounded cache of decompressed SSTable data blocks for point reads.
//!
//! Sharded by block, each shard a CLOCK (second-chance) cache under its own
//! mutex: a hit sets the block's reference bit, eviction walks the ring and
//! drops the first block not referenced since the hand last passed it. The
//! size counts block bytes plus a fixed per-entry overhead, so the
//! configured capacity bounds the cache's real footprint. Compaction and
//! scans read around it (as RocksDB's `fill_cache = false`) so that a big
//! merge does not flush out the blocks reads need.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

const SHARDS: usize = 16;
/// Map slot, ring slot and `Bytes` header, roughly.
const ENTRY_OVERHEAD: usize = 96;

/// (SSTable id, block number).
type BlockKey = (u64, u32);

struct Entry {
    data: Bytes,
    referenced: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<BlockKey, Entry>,
    ring: VecDeque<BlockKey>,
    bytes: usize,
}

/// Counters and size of a [`BlockCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockCacheStats {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

pub struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl BlockCache {
    /// A cache holding at most `capacity` bytes (0 caches nothing).
    pub fn new(capacity: usize) -> BlockCache {
        BlockCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_capacity: capacity / SHARDS,
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: BlockKey) -> &Mutex<Shard> {
        // SSTable ids are sequential and blocks too: mix both.
        let h = key
            .0
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(u64::from(key.1).wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
        &self.shards[(h >> 32) as usize % SHARDS]
    }

    pub fn get(&self, sstable: u64, block: u32) -> Option<Bytes> {
        let key = (sstable, block);
        let mut s = self.shard(key).lock();
        match s.map.get_mut(&key) {
            Some(e) => {
                e.referenced = true;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(e.data.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn insert(&self, sstable: u64, block: u32, data: Bytes) {
        let cost = data.len() + ENTRY_OVERHEAD;
        if cost > self.shard_capacity {
            return;
        }
        let key = (sstable, block);
        let mut s = self.shard(key).lock();
        if s.map.contains_key(&key) {
            return;
        }
        while s.bytes + cost > self.shard_capacity {
            let Some(victim) = s.ring.pop_front() else {
                break;
            };
            let keep = match s.map.get_mut(&victim) {
                Some(e) if e.referenced => {
                    e.referenced = false;
                    true
                }
                Some(_) => false,
                None => continue,
            };
            if keep {
                s.ring.push_back(victim);
            } else if let Some(e) = s.map.remove(&victim) {
                s.bytes -= e.data.len() + ENTRY_OVERHEAD;
            }
        }
        s.bytes += cost;
        s.ring.push_back(key);
        s.map.insert(
            key,
            Entry {
                data,
                referenced: false,
            },
        );
    }

    pub fn stats(&self) -> BlockCacheStats {
        BlockCacheStats {
            capacity_bytes: self.capacity as u64,
            used_bytes: self.shards.iter().map(|s| s.lock().bytes as u64).sum(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_capacity_and_keeps_referenced_blocks() {
        let cache = BlockCache::new(SHARDS * 10 * (1024 + ENTRY_OVERHEAD));
        let block = Bytes::from(vec![7u8; 1024]);
        for b in 0..10_000u32 {
            cache.insert(1, b, block.clone());
            // Block 0 is read all the time: it must survive the churn.
            assert!(cache.get(1, 0).is_some(), "block 0 evicted at {b}");
        }
        let st = cache.stats();
        assert!(st.used_bytes <= st.capacity_bytes, "{st:?}");
        assert!(st.used_bytes > st.capacity_bytes / 2, "{st:?}");
        assert!(cache.get(1, 9_999).is_some());
        assert!(cache.get(1, 5).is_none());
        let st = cache.stats();
        assert!(st.hits >= 9_999 && st.misses >= 1, "{st:?}");
        // A cache of size 0 holds nothing.
        let none = BlockCache::new(0);
        none.insert(1, 1, block);
        assert!(none.get(1, 1).is_none());
    }
}
