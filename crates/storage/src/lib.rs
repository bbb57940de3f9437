//! Gyre's node-local storage.
//!
//! [`StorageEngine`] is the trait every engine implements: Cassandra's data
//! model (partitions of clustered rows of timestamped cells, with deletions
//! at every level) over byte keys, with reads and token-ordered scans that
//! reconcile by the shared last-write-wins rule in [`gyre_common::lww`].
//!
//! [`LsmEngine`] is Gyre's own implementation: a CRC-checked commitlog with
//! periodic, group and batch sync, token-sharded memtables, block-checksummed
//! SSTables with bloom filters and block indexes, and compaction per table
//! by Cassandra's size-tiered, leveled or time-window strategy (pure
//! planners in [`strategy`]) that purges tombstones after gc grace only
//! where that is safe and drops wholly expired SSTables without rewriting.
//!
//! What it is not: it knows nothing of CQL types, schemas or replication;
//! the layers above encode values and decide what to store where. The engine
//! never reads the wall clock except through the [`Clock`] it is given.
//!
//! Snapshots ([`snapshot`]) hard-link a table's SSTables; they outlive
//! DROP TABLE and load back into a table without a restart
//! ([`StorageEngine::restore_snapshot`], [`StorageEngine::import_sstables`]).
//!
//! The `conformance` feature exports [`conformance`], the model-based suite
//! that every engine must pass (each case on a randomly chosen compaction
//! strategy).
//!
//! The `failpoints` feature compiles in [fail-rs] failpoints for storage
//! fault tests (a disk that fails fsync); without it they cost nothing.
//! Set them with [`failpoints::set`] (or `fail::cfg`, or the `FAILPOINTS`
//! environment variable under `fail::FailScenario`), e.g. `return`:
//!
//! | name | where | effect of `return` |
//! | --- | --- | --- |
//! | `commitlog::fsync` | every commitlog fsync: group / batch / periodic sync, segment roll, segment creation, directory sync, replay truncation | the fsync fails with an I/O error; the commitlog poisons itself and the engine refuses writes ([`Error::Poisoned`]) until restarted, since after a failed fsync the page cache cannot be trusted |
//! | `sstable::fsync` | the SSTable file and directory fsyncs of a flush or compaction | the flush fails, keeps its memtable and commitlog segments, and suspends writes ([`Error::WritesSuspended`]) until a flush succeeds |
//!
//! Table metadata (`table.json`, compaction transactions) is synced without
//! a failpoint.
//!
//! [fail-rs]: https://docs.rs/fail
//!
//! ```
//! use gyre_common::{Cell, CellName, DecoratedKey, Partition};
//! use gyre_storage::{LsmConfig, LsmEngine, ReadFilter, StorageEngine, TableId, TableOptions};
//!
//! let dir = std::env::temp_dir().join(format!("gyre-doc-{}", std::process::id()));
//! let engine = LsmEngine::open(LsmConfig::in_dir(&dir))?;
//! let table = TableId::random();
//! engine.create_table(table, TableOptions::default())?;
//! engine.apply(table, Partition::with_key("k").set("r", CellName::simple("v"), Cell::live(1, "hello")))?;
//! let got = engine.read(table, &DecoratedKey::new("k"), &ReadFilter::all(), 0)?.expect("found");
//! assert_eq!(got.rows.len(), 1);
//! # drop(engine); std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), gyre_storage::Error>(())
//! ```

pub mod ann;
pub mod block_cache;
mod bloom;
pub mod commitlog;
mod compaction;
mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
mod engine;
mod error;
mod lsm;
mod memtable;
mod mutation;
pub mod sai;
pub mod snapshot;
pub mod sstable;
pub mod strategy;
pub mod stream;
mod types;

/// Run-time control of failpoints (see the crate docs), for the node's admin
/// endpoint. The process has one failpoint registry.
pub mod failpoints {
    /// Fails every commitlog fsync.
    pub const COMMITLOG_FSYNC: &str = crate::commitlog::FSYNC_FAILPOINT;
    /// Fails the SSTable fsyncs of flushes and compactions.
    pub const SSTABLE_FSYNC: &str = crate::sstable::FSYNC_FAILPOINT;
    /// Fails SSTable block writes (flushes and compactions) with ENOSPC, as
    /// a full disk does.
    pub const SSTABLE_WRITE: &str = crate::sstable::WRITE_FAILPOINT;
    /// Evaluated as a flush starts writing a memtable (a callback there
    /// holds a flush back, for tests of flushes that end out of order).
    pub const FLUSH_WRITE: &str = crate::lsm::FLUSH_FAILPOINT;
    /// The free bytes a compaction sees before it starts (`return(N)`, or
    /// `return` for none).
    pub const AVAILABLE_SPACE: &str = crate::lsm::SPACE_FAILPOINT;

    /// Whether this build has failpoints compiled in (the `failpoints`
    /// feature); when not, setting one has no effect.
    pub fn enabled() -> bool {
        fail::has_failpoints()
    }

    /// Sets the actions of a failpoint, in fail-rs syntax (`return`, `off`,
    /// `50%return`, `1*return->off`, ...).
    pub fn set(name: &str, actions: &str) -> Result<(), String> {
        fail::cfg(name, actions)
    }

    /// The configured failpoints, as (name, actions).
    pub fn list() -> Vec<(String, String)> {
        fail::list()
    }

    /// Removes every configured failpoint.
    pub fn clear() {
        for (name, _) in fail::list() {
            fail::remove(name);
        }
    }
}

pub use compaction::{compact_partition, MergeIter, Source};
pub use config::{LsmConfig, SyncMode};
pub use engine::{
    assemble_scan_page, finish_read, live_row_count, scan_start_bound, validate_update, Clock,
    ManualClock, StorageEngine, SystemClock, WriteFuture,
};
pub use error::{Error, Result};
pub use lsm::LsmEngine;
pub use mutation::Mutation;
pub use snapshot::SnapshotInfo;
pub use types::{
    ClusteringFilter, ColumnFilter, CompactionOptions, CompactionProgress, Compression,
    EngineStats, ImportReport, LeveledOptions, ReadFilter, ScanPage, ScanRequest, ScanStart,
    SizeTieredOptions, TableId, TableOptions, TableStats, TimeWindowOptions,
};
