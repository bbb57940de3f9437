//! Gyre's node-local storage.
//!
//! [`StorageEngine`] is the trait every engine implements: Cassandra's data
//! model (partitions of clustered rows of timestamped cells, with deletions
//! at every level) over byte keys, with reads and token-ordered scans that
//! reconcile by the shared last-write-wins rule in [`gyre_common::lww`].
//!
//! [`LsmEngine`] is Gyre's own implementation: a CRC-checked commitlog with
//! periodic, group and batch sync, token-sharded memtables, block-checksummed
//! SSTables with bloom filters and block indexes, and size-tiered compaction
//! that purges tombstones after gc grace only where that is safe.
//!
//! What it is not: it knows nothing of CQL types, schemas or replication;
//! the layers above encode values and decide what to store where. The engine
//! never reads the wall clock except through the [`Clock`] it is given.
//!
//! The `conformance` feature exports [`conformance`], the model-based suite
//! that every engine must pass.
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
pub mod sstable;
mod types;

pub use compaction::{compact_partition, plan_size_tiered, Candidate, MergeIter, Source};
pub use config::{LsmConfig, SyncMode};
pub use engine::{
    assemble_scan_page, finish_read, live_row_count, scan_start_bound, validate_update, Clock,
    ManualClock, StorageEngine, SystemClock,
};
pub use error::{Error, Result};
pub use lsm::LsmEngine;
pub use types::{
    ClusteringFilter, ColumnFilter, CompactionOptions, Compression, EngineStats, ReadFilter,
    ScanPage, ScanRequest, ScanStart, SizeTieredOptions, TableId, TableOptions, TableStats,
};
