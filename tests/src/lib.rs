//! Support code for Gyre's integration tests.
//!
//! The crash tests drive the `crash_writer` binary: it writes a derived,
//! checkable workload to a storage engine and reports each acknowledged
//! write on stdout, until the test kills it.

use bytes::Bytes;
use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::{LsmConfig, LsmEngine, StorageEngine, SyncMode, TableId};

/// The table the crash workload writes to.
pub fn crash_table() -> TableId {
    TableId(uuid_from(0x6779_7265_6372_6173_6800_0000_0000_0001))
}

fn uuid_from(v: u128) -> gyre_storage_uuid::Uuid {
    gyre_storage_uuid::Uuid::from_u128(v)
}

/// Re-exported so tests name the same uuid type the engine uses.
pub use uuid as gyre_storage_uuid;

/// Columns written by every mutation: all must be present with the same
/// value, or the mutation was torn.
pub const COLUMNS: [&str; 3] = ["a", "b", "c"];

pub fn key(i: u64) -> DecoratedKey {
    DecoratedKey::new(format!("key-{i}").into_bytes())
}

/// The value written for key `i`: derived, so the checker keeps no state,
/// and incompressible, so files grow as fast as the data.
pub fn value(i: u64) -> Bytes {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let len = 40 + (i % 100) as usize;
    let mut out = format!("v{i}-");
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    Bytes::from(out)
}

pub fn mutation(i: u64) -> Partition {
    let mut p = Partition::new(key(i));
    for c in COLUMNS {
        p = p.set(
            Bytes::from_static(b"row"),
            CellName::simple(c),
            // A millisecond apart: the time-window strategy sees windows.
            Cell::live((i as i64 + 1) * 1_000, value(i)),
        );
    }
    p
}

/// The engine configuration of the crash workload: tiny memtables and
/// segments so that kills land during flushes and compactions too.
pub fn crash_config(dir: &std::path::Path, sync: SyncMode) -> LsmConfig {
    LsmConfig {
        sync,
        memtable_space_bytes: 256 << 10,
        segment_bytes: 32 << 10,
        block_bytes: 4 << 10,
        ..LsmConfig::in_dir(dir)
    }
}

/// The compaction strategy of the crash workload's table, by name
/// (`stcs`, `lcs`, `twcs`), tuned to its tiny memtables: leveled with
/// 64 KiB SSTables and fanout 4, time-window with 1 s windows (a thousand
/// writes, as timestamps are a millisecond apart).
pub fn crash_compaction(name: &str) -> Option<gyre_storage::CompactionOptions> {
    use gyre_storage::{CompactionOptions, LeveledOptions, TimeWindowOptions};
    match name {
        "stcs" => Some(CompactionOptions::default()),
        "lcs" => Some(CompactionOptions::Leveled(LeveledOptions {
            sstable_size_bytes: 64 << 10,
            fanout: 4,
            ..Default::default()
        })),
        "twcs" => Some(CompactionOptions::TimeWindow(TimeWindowOptions {
            window_seconds: 1,
            ..Default::default()
        })),
        _ => None,
    }
}

/// The storage engine under a crash test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashEngine {
    Lsm,
    /// Only usable when gyre-tests is built with the `rocksdb` feature.
    Rocks,
}

impl CrashEngine {
    pub fn name(self) -> &'static str {
        match self {
            CrashEngine::Lsm => "lsm",
            CrashEngine::Rocks => "rocksdb",
        }
    }

    pub fn parse(s: &str) -> Option<CrashEngine> {
        match s {
            "lsm" => Some(CrashEngine::Lsm),
            "rocksdb" => Some(CrashEngine::Rocks),
            _ => None,
        }
    }

    /// Opens the engine with the crash workload's configuration: tiny
    /// memtables (and, natively, segments) so that kills land during
    /// flushes and compactions too.
    pub fn open(
        self,
        dir: &std::path::Path,
        sync: SyncMode,
    ) -> gyre_storage::Result<Box<dyn StorageEngine>> {
        match self {
            CrashEngine::Lsm => Ok(Box::new(LsmEngine::open(crash_config(dir, sync))?)),
            CrashEngine::Rocks => open_rocks(dir, sync),
        }
    }
}

#[cfg(feature = "rocksdb")]
fn open_rocks(
    dir: &std::path::Path,
    sync: SyncMode,
) -> gyre_storage::Result<Box<dyn StorageEngine>> {
    use gyre_storage_rocksdb::{RocksConfig, RocksEngine};
    Ok(Box::new(RocksEngine::open(RocksConfig {
        sync,
        memtable_bytes: 256 << 10,
        ..RocksConfig::in_dir(dir)
    })?))
}

#[cfg(not(feature = "rocksdb"))]
fn open_rocks(
    _dir: &std::path::Path,
    _sync: SyncMode,
) -> gyre_storage::Result<Box<dyn StorageEngine>> {
    Err(gyre_storage::Error::Config(
        "gyre-tests was built without the `rocksdb` feature".into(),
    ))
}

pub fn parse_sync(s: &str) -> Option<SyncMode> {
    match s {
        "batch" => Some(SyncMode::Batch),
        "group" => Some(SyncMode::Group { window_ms: 2 }),
        "periodic" => Some(SyncMode::Periodic { period_ms: 100 }),
        _ => None,
    }
}

pub mod cluster;
pub mod cqlsh;
pub mod deploy;
pub mod python;
/// The blocking CQL client lives in gyrectl (the chaos workloads use it).
pub use gyrectl::cql as cql_client;
