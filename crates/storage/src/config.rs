//! Configuration of the native LSM engine.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// When the commitlog is fsynced, and so when a write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum SyncMode {
    /// Acknowledge at once; fsync every `period_ms`. A crash of the machine
    /// loses at most that window (a crash of the process loses nothing).
    Periodic { period_ms: u64 },
    /// Writes wait for the next shared fsync (group commit): an idle log
    /// fsyncs at once, and the writes that arrive during an fsync form the
    /// next group. `window_ms` (default 0) spaces fsyncs at least that far
    /// apart under load, trading latency for fewer fsyncs.
    Group { window_ms: u64 },
    /// Writes wait for an fsync that starts as soon as the previous one
    /// ends (group commit with no spacing).
    Batch,
}

impl Default for SyncMode {
    fn default() -> Self {
        SyncMode::Group { window_ms: 0 }
    }
}

impl SyncMode {
    pub(crate) fn waits_for_sync(&self) -> bool {
        !matches!(self, SyncMode::Periodic { .. })
    }

    pub(crate) fn window(&self) -> Duration {
        match self {
            SyncMode::Periodic { period_ms } => Duration::from_millis(*period_ms),
            SyncMode::Group { window_ms } => Duration::from_millis(*window_ms),
            SyncMode::Batch => Duration::ZERO,
        }
    }
}

/// Settings of an [`crate::LsmEngine`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LsmConfig {
    pub data_dir: PathBuf,
    pub commitlog_dir: PathBuf,
    pub sync: SyncMode,
    /// Commitlog segment size before a new segment is started.
    pub segment_bytes: u64,
    /// Commitlog space before the tables holding the oldest segment are
    /// flushed so it can be deleted.
    pub commitlog_space_bytes: u64,
    /// Memory all memtables may use before the largest is flushed. Default:
    /// a sixteenth of the machine's memory, at most 128 MiB (larger
    /// memtables make every insert's skip-list search slower: 1 GiB cost a
    /// fifth of the write throughput in engine-bench).
    pub memtable_space_bytes: u64,
    /// Flush threads, and so switched-out memtables that may be flushing
    /// at once (Cassandra's `memtable_flush_writers`, RocksDB's
    /// `max_write_buffer_number` - 1). Writers are held back only when all
    /// are busy and the active memtables are full again: memtables use at
    /// most `(1 + memtable_flush_writers) * memtable_space_bytes`.
    pub memtable_flush_writers: usize,
    /// Target size of an SSTable data block (before compression).
    pub block_bytes: usize,
    pub bloom_bits_per_key: usize,
    /// Largest cell value accepted.
    pub max_value_bytes: usize,
    /// Largest partition or clustering key accepted (Cassandra: 64 KiB - 1).
    pub max_key_bytes: usize,
    /// Skip corrupt records in the middle of a commitlog segment on replay
    /// (logging them) instead of refusing to start.
    pub skip_corrupt_commitlog: bool,
    /// Run flushes and compactions on background threads.
    pub background_compaction: bool,
    /// Snapshot a table before DROP and TRUNCATE delete its data (tags
    /// `dropped-<secs>-<name>` and `truncated-<secs>-<name>`), as
    /// Cassandra's `auto_snapshot`. Off in the library, on in the node.
    pub auto_snapshot: bool,
    /// Bytes per second a compaction may write (0: no limit), as
    /// Cassandra's `compaction_throughput`: background work that leaves
    /// the disk to requests. Background compactions run one at a time; a
    /// major compaction on request runs beside them with its own pace.
    pub compaction_throughput_bytes_per_sec: u64,
    /// Background compaction threads (Cassandra's `concurrent_compactors`).
    /// They work on different tables: a table compacts one merge at a time.
    pub concurrent_compactors: usize,
    /// Bytes of decompressed SSTable blocks kept for point reads, shared by
    /// all tables (0: no cache; reads go to the OS page cache).
    pub block_cache_bytes: u64,
}

impl Default for LsmConfig {
    fn default() -> Self {
        LsmConfig {
            data_dir: PathBuf::from("data"),
            commitlog_dir: PathBuf::from("commitlog"),
            sync: SyncMode::default(),
            segment_bytes: 32 << 20,
            commitlog_space_bytes: 1 << 30,
            memtable_space_bytes: default_memtable_space(),
            memtable_flush_writers: 2,
            block_bytes: 4 << 10,
            bloom_bits_per_key: 10,
            max_value_bytes: 64 << 20,
            max_key_bytes: u16::MAX as usize,
            skip_corrupt_commitlog: false,
            background_compaction: true,
            auto_snapshot: false,
            compaction_throughput_bytes_per_sec: 0,
            concurrent_compactors: 1,
            block_cache_bytes: 32 << 20,
        }
    }
}

impl LsmConfig {
    /// A configuration with data and commitlog under one directory.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        LsmConfig {
            data_dir: dir.join("data"),
            commitlog_dir: dir.join("commitlog"),
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.segment_bytes < 4096 {
            return bad("segment_bytes must be at least 4096");
        }
        if self.block_bytes < 256 {
            return bad("block_bytes must be at least 256");
        }
        if self.memtable_space_bytes < 1 << 16 {
            return bad("memtable_space_bytes must be at least 64 KiB");
        }
        if self.memtable_flush_writers == 0 || self.memtable_flush_writers > 64 {
            return bad("memtable_flush_writers must be between 1 and 64");
        }
        if self.max_key_bytes > u16::MAX as usize {
            return bad("max_key_bytes must be at most 65535");
        }
        if self.concurrent_compactors == 0 || self.concurrent_compactors > 64 {
            return bad("concurrent_compactors must be between 1 and 64");
        }
        if let SyncMode::Periodic { period_ms: 0 } = self.sync {
            return bad("sync.period_ms must be positive");
        }
        Ok(())
    }
}

fn default_memtable_space() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(2 << 30, |kb| kb * 1024);
    (total / 16).min(128 << 20)
}
