//! The commitlog stays within its space: a table that stopped writing does
//! not pin every later segment; the tables holding the oldest segment are
//! flushed so it can go.

use std::time::{Duration, Instant};

use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::{
    LsmConfig, LsmEngine, ReadFilter, StorageEngine, SyncMode, TableId, TableOptions,
};

const IDLE: TableId = TableId(uuid::Uuid::from_u128(21));
const BUSY: TableId = TableId(uuid::Uuid::from_u128(22));

fn config(dir: &std::path::Path) -> LsmConfig {
    LsmConfig {
        sync: SyncMode::Periodic { period_ms: 50 },
        segment_bytes: 8 << 10,
        commitlog_space_bytes: 64 << 10,
        memtable_space_bytes: 64 << 20,
        ..LsmConfig::in_dir(dir)
    }
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("commitlog"))
        .expect("lists")
        .count()
}

fn row(i: u32) -> Partition {
    Partition::with_key(format!("k{i}").into_bytes()).set(
        "r",
        CellName::simple("v"),
        Cell::live(1, vec![7u8; 100]),
    )
}

#[test]
fn an_idle_table_is_flushed_so_old_segments_can_be_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = LsmEngine::open(config(dir.path())).expect("opens");
    engine
        .create_table(IDLE, TableOptions::default())
        .expect("creates");
    engine
        .create_table(BUSY, TableOptions::default())
        .expect("creates");
    engine.apply(IDLE, row(0)).expect("writes");
    for i in 0..5_000 {
        engine.apply(BUSY, row(i)).expect("writes");
    }
    // About 600 KiB of log went through 8 KiB segments; the space limit
    // keeps roughly 64 KiB of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while segments(dir.path()) > 12 {
        assert!(
            Instant::now() < deadline,
            "commitlog kept {} segments",
            segments(dir.path())
        );
        std::thread::sleep(Duration::from_millis(20));
        engine.apply(BUSY, row(0)).expect("writes");
    }
    drop(engine);
    let engine = LsmEngine::open(config(dir.path())).expect("reopens");
    let get = |t, i: u32| {
        engine
            .read(
                t,
                &DecoratedKey::new(format!("k{i}").into_bytes()),
                &ReadFilter::all(),
                0,
            )
            .expect("reads")
    };
    assert!(get(IDLE, 0).is_some(), "the idle table's row survived");
    assert!(
        (0..5_000).all(|i| get(BUSY, i).is_some()),
        "every busy row survived"
    );
}
