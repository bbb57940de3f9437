//! A disk that fails fsync, through the `commitlog::fsync` and
//! `sstable::fsync` failpoints: the engine reports errors, never panics,
//! keeps serving what it acknowledged, and loses none of it across a restart.
//! A full disk (`sstable::write` failing with ENOSPC) undoes compactions,
//! lets writes go on and resumes once there is room; flushes that run in
//! parallel (held back at `lsm::flush`) end oldest first. A compaction
//! whose output may not fit in the free space (`lsm::available_space`)
//! does not start, and starts once there is room.
//!
//! Run with `cargo test -p gyre-storage --features failpoints --test failpoints`.
#![cfg(feature = "failpoints")]

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::failpoints::{
    AVAILABLE_SPACE, COMMITLOG_FSYNC, FLUSH_WRITE, SSTABLE_FSYNC, SSTABLE_WRITE,
};
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

/// Polls `done` until it holds, failing with `what` after 30 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The directory of the only table under `data`.
fn table_dir(data: &Path) -> std::path::PathBuf {
    std::fs::read_dir(data)
        .expect("lists")
        .map(|e| e.expect("entry").path())
        .find(|p| p.join("table.json").is_file())
        .expect("a table directory")
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creates");
    for e in std::fs::read_dir(from).expect("lists") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copies");
        }
    }
}

/// Holds the first flush that reaches the `lsm::flush` failpoint until
/// opened; later flushes pass.
#[derive(Default)]
struct Gate {
    state: Mutex<(u32, bool)>,
    cv: Condvar,
}

impl Gate {
    fn install(self: &Arc<Self>) {
        let g = self.clone();
        fail::cfg_callback(FLUSH_WRITE, move || {
            let mut st = g.state.lock().expect("gate");
            st.0 += 1;
            if st.0 == 1 {
                g.cv.notify_all();
                while !st.1 {
                    st = g.cv.wait(st).expect("gate");
                }
            }
        })
        .expect("sets the failpoint");
    }

    fn wait_held(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut st = self.state.lock().expect("gate");
        while st.0 == 0 {
            assert!(Instant::now() < deadline, "no flush reached the gate");
            st = self
                .cv
                .wait_timeout(st, Duration::from_millis(100))
                .expect("gate")
                .0;
        }
    }

    fn open(&self) {
        self.state.lock().expect("gate").1 = true;
        self.cv.notify_all();
    }
}

/// Two flushes of one table run at once and the newer one finishes first:
/// its SSTable waits (not installed, the commitlog's flushed position not
/// moved) until the older one is done, so a crash in between loses
/// nothing; writes go on meanwhile; generations follow the memtables' age.
fn parallel_flushes_end_oldest_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(LsmEngine::open(config(dir.path(), SyncMode::Batch)).expect("opens"));
    engine
        .create_table(TABLE, TableOptions::default())
        .expect("creates");
    let gate = Arc::new(Gate::default());
    gate.install();

    write(&engine, 0, 100);
    let older = {
        let e = engine.clone();
        std::thread::spawn(move || e.flush(Some(TABLE)))
    };
    gate.wait_held();
    write(&engine, 100, 150);
    let newer = {
        let e = engine.clone();
        std::thread::spawn(move || e.flush(Some(TABLE)))
    };
    let tdir = table_dir(&dir.path().join("data"));
    let ssts = |d: &Path| {
        file_names(d)
            .into_iter()
            .filter(|n| n.starts_with("sst-"))
            .count()
    };
    wait_until("the newer flush to write its SSTable", || ssts(&tdir) == 1);
    assert!(
        engine.sstable_paths(TABLE).expect("lists").is_empty(),
        "the newer SSTable waits for the older flush"
    );
    write(&engine, 150, 200);
    assert_all_present(&engine, 0..200, "while a flush is held");

    // A crash now: what is on disk must hold every acknowledged write.
    let image = tempfile::tempdir().expect("temp dir");
    copy_dir(dir.path(), image.path());
    {
        let crashed = LsmEngine::open(config(image.path(), SyncMode::Batch)).expect("reopens");
        assert_all_present(&crashed, 0..200, "after a crash during parallel flushes");
    }

    gate.open();
    older
        .join()
        .expect("joins")
        .expect("the older flush succeeds");
    newer
        .join()
        .expect("joins")
        .expect("the newer flush succeeds");
    fail::remove(FLUSH_WRITE);
    let mut by_generation: Vec<(u64, u64)> = engine
        .sstable_paths(TABLE)
        .expect("lists")
        .iter()
        .map(|p| {
            let s = gyre_storage::sstable::SsTable::open(p).expect("opens");
            (s.generation(), s.meta.partition_count)
        })
        .collect();
    by_generation.sort();
    assert_eq!(
        by_generation.iter().map(|g| g.1).collect::<Vec<_>>(),
        vec![100, 50],
        "the older memtable's SSTable has the lower generation: {by_generation:?}"
    );
    assert_all_present(&engine, 0..200, "after both flushes");
    drop(engine);
    let engine = LsmEngine::open(config(dir.path(), SyncMode::Batch)).expect("reopens");
    assert_all_present(&engine, 0..200, "after a restart");
}

/// The disk fills up during a compaction: the compaction is undone (no
/// output, temporary file or record left), writes go on (a flush that
/// fails for want of space does not suspend them), and once there is room
/// again the compaction and the flush run by themselves.
fn full_disk_during_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = LsmConfig {
        background_compaction: true,
        ..config(dir.path(), SyncMode::Batch)
    };
    // No compaction until the disk is full.
    let options = TableOptions {
        compaction: gyre_storage::CompactionOptions::from_cql(
            &[
                (
                    "class".to_string(),
                    "SizeTieredCompactionStrategy".to_string(),
                ),
                ("enabled".to_string(), "false".to_string()),
            ]
            .into_iter()
            .collect(),
        )
        .expect("options"),
        ..Default::default()
    };
    let engine = LsmEngine::open(cfg.clone()).expect("opens");
    engine.create_table(TABLE, options).expect("creates");
    for part in 0..4 {
        write(&engine, part * 500, part * 500 + 500);
        engine.flush(Some(TABLE)).expect("flushes");
    }
    let tdir = table_dir(&cfg.data_dir);
    let before = file_names(&tdir);
    assert_eq!(engine.sstable_paths(TABLE).expect("lists").len(), 4);

    // The disk is full; enabling compaction starts a merge of the four.
    fail::cfg(SSTABLE_WRITE, "return").expect("sets the failpoint");
    engine
        .create_table(TABLE, TableOptions::default())
        .expect("enables compaction");
    wait_until("a compaction to fail and be undone", || {
        let s = engine.table_stats(TABLE).expect("stats");
        s.compactions_failed >= 1 && s.active_compaction.is_none() && file_names(&tdir) == before
    });
    assert_eq!(engine.table_stats(TABLE).expect("stats").compactions, 0);
    assert_all_present(&engine, 0..2000, "after a compaction failed");

    // Writes go on, and a flush that cannot write does not stop them.
    write(&engine, 2000, 2500);
    let err = engine
        .flush(Some(TABLE))
        .expect_err("a flush on a full disk fails");
    assert!(err.is_disk_full(), "{err}");
    write(&engine, 2500, 2600);
    assert_all_present(&engine, 0..2600, "on a full disk");
    assert!(
        !file_names(&tdir).iter().any(|n| n.starts_with("tmp-")),
        "a failed flush leaves no temporary file: {:?}",
        file_names(&tdir)
    );

    // Room again: the compaction and the failed flush run by themselves.
    fail::remove(SSTABLE_WRITE);
    let freed = Instant::now();
    wait_until("compaction and flush to resume", || {
        let s = engine.table_stats(TABLE).expect("stats");
        // memtable_bytes 0: the memtable whose flush failed is flushed.
        s.compactions >= 1 && !s.compaction_pending && s.memtable_bytes == 0
    });
    println!(
        "resumed {:?} after the disk had room: {:?}",
        freed.elapsed(),
        engine.table_stats(TABLE).expect("stats")
    );
    assert!(
        !file_names(&tdir)
            .iter()
            .any(|n| n.starts_with("tmp-") || n.starts_with("txn-")),
        "{:?}",
        file_names(&tdir)
    );
    assert_all_present(&engine, 0..2600, "after the disk had room again");
    drop(engine);
    let engine = LsmEngine::open(cfg).expect("reopens");
    assert_all_present(&engine, 0..2600, "after a restart");
}

/// Less free space than a compaction's inputs: it does not start (no
/// temporary file, Cassandra's message, counted as failed), and it runs
/// by itself once the space is there.
fn not_enough_space_for_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = LsmConfig {
        background_compaction: true,
        ..config(dir.path(), SyncMode::Batch)
    };
    let engine = LsmEngine::open(cfg.clone()).expect("opens");
    engine
        .create_table(TABLE, TableOptions::default())
        .expect("creates");
    // 1,000 bytes free: less than any four SSTables of 500 rows.
    fail::cfg(AVAILABLE_SPACE, "return(1000)").expect("sets the failpoint");
    for part in 0..4 {
        write(&engine, part * 500, part * 500 + 500);
        engine.flush(Some(TABLE)).expect("flushes");
    }
    let tdir = table_dir(&cfg.data_dir);
    wait_until("a compaction refused for want of space", || {
        engine.table_stats(TABLE).expect("stats").compactions_failed >= 1
    });
    let err = engine
        .compact(TABLE)
        .expect_err("a major compaction is refused too");
    assert!(
        err.to_string().starts_with(
            "Not enough space for compaction, estimated sstables = 1, expected write size = "
        ),
        "{err}"
    );
    assert!(err.is_disk_full(), "{err}");
    let s = engine.table_stats(TABLE).expect("stats");
    assert_eq!((s.compactions, s.sstable_count), (0, 4), "{s:?}");
    assert!(
        !file_names(&tdir).iter().any(|n| n.starts_with("tmp-")),
        "{:?}",
        file_names(&tdir)
    );
    assert_all_present(&engine, 0..2000, "with a compaction refused");

    fail::remove(AVAILABLE_SPACE);
    wait_until("the compaction to run once there is room", || {
        let s = engine.table_stats(TABLE).expect("stats");
        s.compactions >= 1 && !s.compaction_pending
    });
    assert_all_present(&engine, 0..2000, "after the compaction");
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
    parallel_flushes_end_oldest_first();
    full_disk_during_compaction();
    not_enough_space_for_compaction();
    scenario.teardown();
}
