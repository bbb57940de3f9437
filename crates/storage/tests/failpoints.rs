//! A disk that fails fsync, through the `commitlog::fsync` and
//! `sstable::fsync` failpoints: the engine reports errors, never panics,
//! keeps serving what it acknowledged, and loses none of it across a restart.
//!
//! Run with `cargo test -p gyre-storage --features failpoints --test failpoints`.
#![cfg(feature = "failpoints")]

use std::path::Path;

use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::failpoints::{COMMITLOG_FSYNC, SSTABLE_FSYNC};
use gyre_storage::{
    Error, LsmConfig, LsmEngine, ReadFilter, StorageEngine, SyncMode, TableId, TableOptions,
};

const TABLE: TableId = TableId(uuid::Uuid::from_u128(0xfa11));

fn config(dir: &Path, sync: SyncMode) -> LsmConfig {
    LsmConfig {
        sync,
        // Small segments, so the writes below also roll segments.
        segment_bytes: 4096,
        block_bytes: 512,
        background_compaction: false,
        ..LsmConfig::in_dir(dir)
    }
}

fn row(i: u32) -> Partition {
    Partition::with_key(format!("key-{i}").into_bytes()).set(
        "r",
        CellName::simple("v"),
        Cell::live(1, format!("value-{i}")),
    )
}

/// The value stored for row `i`, if any.
fn value(engine: &LsmEngine, i: u32) -> Option<Vec<u8>> {
    let p = engine
        .read(
            TABLE,
            &DecoratedKey::new(format!("key-{i}").into_bytes()),
            &ReadFilter::all(),
            0,
        )
        .expect("reads keep working");
    let p = p?;
    let row = p.rows.values().next().expect("a row");
    let cell = row.cells.values().next().expect("a cell");
    Some(cell.value_at(0).expect("live").to_vec())
}

fn assert_all_present(engine: &LsmEngine, rows: impl IntoIterator<Item = u32>, when: &str) {
    for i in rows {
        assert_eq!(
            value(engine, i).as_deref(),
            Some(format!("value-{i}").as_bytes()),
            "acknowledged row {i} lost {when}"
        );
    }
}

/// Writes rows `from..to`, each acknowledged.
fn write(engine: &LsmEngine, from: u32, to: u32) {
    for i in from..to {
        engine.apply(TABLE, row(i)).expect("write acknowledged");
    }
}

/// An engine with rows 0..100 in an SSTable and 100..200 only in the
/// commitlog and memtable, all acknowledged.
fn populated(dir: &Path, sync: SyncMode) -> LsmEngine {
    let engine = LsmEngine::open(config(dir, sync)).expect("opens");
    engine
        .create_table(TABLE, TableOptions::default())
        .expect("creates");
    write(&engine, 0, 100);
    engine.flush(Some(TABLE)).expect("flushes");
    write(&engine, 100, 200);
    engine
}

/// `deferred`: the failing write goes through `apply_deferred` (the node's
/// async path), whose future must fail rather than resolve.
fn commitlog_fsync_failure(sync: SyncMode, deferred: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = populated(dir.path(), sync);

    fail::cfg(COMMITLOG_FSYNC, "return").expect("sets the failpoint");
    let first = if deferred {
        futures::executor::block_on(engine.apply_deferred(TABLE, row(200)))
    } else {
        engine.apply(TABLE, row(200))
    };
    let err = first.expect_err("a write whose fsync failed must not be acknowledged");
    assert!(matches!(err, Error::Poisoned(_)), "{sync:?}: got {err:?}");
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    // Poisoned: refuses writes without trying the disk again.
    let err = engine
        .apply(TABLE, row(201))
        .expect_err("the commitlog stays failed");
    assert!(matches!(err, Error::Poisoned(_)), "{sync:?}: got {err:?}");
    // Acknowledged data is still served.
    assert_all_present(&engine, 0..200, "while the commitlog is failed");

    fail::remove(COMMITLOG_FSYNC);
    // Still refused: the node must restart after a failed fsync.
    assert!(engine.apply(TABLE, row(202)).is_err(), "{sync:?}");
    drop(engine);

    let engine = LsmEngine::open(config(dir.path(), sync)).expect("reopens");
    assert_all_present(&engine, 0..200, "across the restart");
    // Row 200 may or may not have reached the disk; 201 and 202 never did.
    assert_eq!(value(&engine, 201), None);
    assert_eq!(value(&engine, 202), None);
    write(&engine, 300, 310);
    assert_all_present(&engine, 300..310, "after the restart");
}

fn sstable_fsync_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = populated(dir.path(), SyncMode::Batch);
    let sstables = engine.sstable_paths(TABLE).expect("lists").len();

    fail::cfg(SSTABLE_FSYNC, "return").expect("sets the failpoint");
    let err = engine
        .flush(Some(TABLE))
        .expect_err("a flush whose fsync failed must fail");
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    assert_eq!(
        engine.sstable_paths(TABLE).expect("lists").len(),
        sstables,
        "no SSTable installed by a failed flush"
    );
    // The memtable was kept: everything is still readable.
    assert_all_present(&engine, 0..200, "after a failed flush");
    // Writes are suspended until a flush succeeds.
    let err = engine
        .apply(TABLE, row(200))
        .expect_err("writes are suspended");
    assert!(matches!(err, Error::WritesSuspended(_)), "got {err:?}");

    // Restart while the flush is still failing: the commitlog was kept.
    drop(engine);
    fail::remove(SSTABLE_FSYNC);
    let engine = LsmEngine::open(config(dir.path(), SyncMode::Batch)).expect("reopens");
    assert_all_present(&engine, 0..200, "across a restart after a failed flush");
    assert_eq!(value(&engine, 200), None, "a refused write never appears");

    // Fail again, then let the retry succeed without a restart.
    write(&engine, 200, 250);
    fail::cfg(SSTABLE_FSYNC, "return").expect("sets the failpoint");
    assert!(engine.flush(Some(TABLE)).is_err());
    fail::remove(SSTABLE_FSYNC);
    engine
        .flush(Some(TABLE))
        .expect("the retried flush succeeds");
    write(&engine, 250, 260);
    assert_all_present(&engine, 0..260, "after a successful retry");
    drop(engine);

    let engine = LsmEngine::open(config(dir.path(), SyncMode::Batch)).expect("reopens");
    assert_all_present(&engine, 0..260, "after the final restart");
}

/// A compaction split into several outputs that fails on its second
/// output: the first output is removed again, nothing temporary is left,
/// the inputs stay and serve every row, before and after a restart.
fn split_compaction_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let table_options = TableOptions {
        compaction: gyre_storage::CompactionOptions::Leveled(gyre_storage::LeveledOptions {
            sstable_size_bytes: 4 << 10,
            ..Default::default()
        }),
        ..Default::default()
    };
    let engine = LsmEngine::open(config(dir.path(), SyncMode::Batch)).expect("opens");
    engine.create_table(TABLE, table_options).expect("creates");
    for part in 0..4 {
        write(&engine, part * 500, part * 500 + 500);
        engine.flush(Some(TABLE)).expect("flushes");
    }
    let table_dir = engine.sstable_paths(TABLE).expect("lists")[0]
        .parent()
        .expect("a table directory")
        .to_path_buf();
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&table_dir)
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files();
    // The first output's two fsyncs (file, directory) succeed, then fail.
    fail::cfg(SSTABLE_FSYNC, "2*off->return").expect("sets the failpoint");
    let err = engine.compact(TABLE).expect_err("the compaction fails");
    fail::remove(SSTABLE_FSYNC);
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    assert_eq!(files(), before, "a failed compaction leaves no file behind");
    assert_all_present(&engine, 0..2000, "after a failed compaction");
    drop(engine);
    let engine = LsmEngine::open(config(dir.path(), SyncMode::Batch)).expect("reopens");
    assert_eq!(files(), before);
    assert_all_present(&engine, 0..2000, "after a restart");
    engine
        .compact(TABLE)
        .expect("the retried compaction succeeds");
    assert!(
        engine.sstable_paths(TABLE).expect("lists").len() > 2,
        "split outputs"
    );
    assert_all_present(&engine, 0..2000, "after the retried compaction");
}

/// One test function: the failpoint registry is global to the process.
#[test]
fn a_disk_that_fails_fsync_loses_no_acknowledged_write() {
    let scenario = fail::FailScenario::setup();
    for deferred in [false, true] {
        commitlog_fsync_failure(SyncMode::Batch, deferred);
        commitlog_fsync_failure(SyncMode::Group { window_ms: 2 }, deferred);
    }
    sstable_fsync_failure();
    split_compaction_failure();
    scenario.teardown();
}
