//! Gyre's second storage engine: the [`gyre_storage::StorageEngine`] trait
//! on RocksDB, for operators who trust RocksDB's years in production and as
//! a yardstick for the native engine.
//!
//! Built only with the `rocksdb` feature (RocksDB's C++ build needs
//! `libclang-dev`, see `scripts/install-rocksdb-deps.sh`, and about 12
//! minutes); without it this crate only offers [`AVAILABLE`] = false so
//! that a node can refuse `storage.engine = "rocksdb"` clearly.
//!
//! How the model maps onto RocksDB:
//! - a column family per table, options kept in a `gyre_meta` family;
//! - keys ordered by (token, partition key, header | clustering key): the
//!   token as sign-flipped big-endian bytes, then the escaped partition key
//!   (0x00 → 0x00 0xFF, ended by 0x00 0x00), then 0x00 for the partition's
//!   header (partition deletion, range tombstones, static row) or 0x01 and
//!   the escaped clustering key for a row; partition reads and token-range
//!   scans are range iterations;
//! - values are encoded partition fragments (`gyre_common::codec`) written
//!   with RocksDB merges, and the merge operator reconciles them with
//!   `gyre_common::lww`, the same code the native engine uses;
//! - range and partition deletions are records read alongside the rows
//!   (RocksDB's own range deletes cannot carry timestamps);
//! - RocksDB's WAL is the commitlog: `batch` and `group` sync every write
//!   (RocksDB groups concurrent writers into one fsync), `periodic` syncs
//!   the WAL from a background thread.
//!
//! - a compaction filter (`purge.rs`) drops shadowed data and turns expired
//!   cells into tombstones in every compaction; tombstones past gc grace are
//!   purged only by [`gyre_storage::StorageEngine::compact`], under the
//!   native engine's safe-purge rule (nothing they shadow may exist outside
//!   the compaction). Background compactions keep them.

#[cfg(feature = "rocksdb")]
mod engine;
#[cfg(feature = "rocksdb")]
mod purge;

#[cfg(feature = "rocksdb")]
pub use engine::{RocksConfig, RocksEngine};

/// Whether this build includes the RocksDB engine.
pub const AVAILABLE: bool = cfg!(feature = "rocksdb");
