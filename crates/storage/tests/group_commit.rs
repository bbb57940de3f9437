//! Group commit and deferred durability: many writes in flight share
//! fsyncs, every future resolves once its write is on disk, an idle log
//! fsyncs at once, and every acknowledged write survives a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use futures::future::join_all;
use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::{
    LsmConfig, LsmEngine, ReadFilter, StorageEngine, SyncMode, TableId, TableOptions,
};

const TABLE: TableId = TableId(uuid::Uuid::from_u128(0x6c));

fn open(dir: &Path, sync: SyncMode) -> LsmEngine {
    open_with(dir, sync, LsmConfig::in_dir(dir).segment_bytes)
}

fn open_with(dir: &Path, sync: SyncMode, segment_bytes: u64) -> LsmEngine {
    let engine = LsmEngine::open(LsmConfig {
        sync,
        segment_bytes,
        ..LsmConfig::in_dir(dir)
    })
    .expect("opens");
    engine
        .create_table(TABLE, TableOptions::default())
        .expect("creates");
    engine
}

fn row(i: u32) -> Partition {
    Partition::with_key(format!("key-{i}").into_bytes()).set(
        "r",
        CellName::simple("v"),
        Cell::live(1, format!("value-{i}")),
    )
}

fn present(engine: &LsmEngine, i: u32) -> bool {
    engine
        .read(
            TABLE,
            &DecoratedKey::new(format!("key-{i}").into_bytes()),
            &ReadFilter::all(),
            0,
        )
        .expect("reads")
        .is_some()
}

#[test]
fn concurrent_deferred_writes_share_fsyncs_and_survive_a_restart() {
    let default_segment = LsmConfig::in_dir(Path::new(".")).segment_bytes;
    // 4 KiB segments: the writes roll dozens of segments, which the syncer
    // (not the writer) must fsync before anything after them counts.
    for (sync, segment) in [
        (SyncMode::Group { window_ms: 0 }, default_segment),
        (SyncMode::Batch, default_segment),
        (SyncMode::Group { window_ms: 0 }, 4096),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = open_with(dir.path(), sync, segment);
        let syncs_before = engine.engine_stats().commitlog_syncs;
        // Every write is applied when submitted; the futures only wait.
        let pending: Vec<_> = (0..2_000)
            .map(|i| engine.apply_deferred(TABLE, row(i)))
            .collect();
        assert!(present(&engine, 1_999), "applied before it is awaited");
        for r in block_on(join_all(pending)) {
            r.expect("acknowledged");
        }
        let stats = engine.engine_stats();
        let syncs = stats.commitlog_syncs - syncs_before;
        assert!(syncs >= 1, "{sync:?}: acknowledged without an fsync");
        assert!(
            syncs < stats.commitlog_records,
            "{sync:?}: {syncs} fsyncs for {} writes: no write shared an fsync",
            stats.commitlog_records
        );
        drop(engine);
        let engine = open_with(dir.path(), sync, segment);
        assert!((0..2_000).all(|i| present(&engine, i)), "{sync:?}: lost");
    }
}

/// The group window only spaces fsyncs under load: a write to an idle log
/// is synced at once, not after the window.
#[test]
fn an_idle_log_fsyncs_at_once_whatever_the_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(dir.path(), SyncMode::Group { window_ms: 600_000 });
    let started = Instant::now();
    engine.apply(TABLE, row(1)).expect("acknowledged");
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "the first write waited for the group window"
    );
    assert!(engine.engine_stats().commitlog_syncs >= 1);
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<(String, u64)> {
    std::fs::read_dir(dir.join("commitlog"))
        .expect("commitlog dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .map(|e| {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect()
}

/// Segments are allocated to their full size, and once one is half full the
/// next is made ahead under a spare name; the roll renames it into place,
/// and replay reads the zeros after the last record as the segment's end.
#[test]
fn segments_are_prepared_ahead_and_replay_past_their_zeros() {
    const SEGMENT: u64 = 64 << 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open_with(dir.path(), SyncMode::Group { window_ms: 0 }, SEGMENT);
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Until a spare of the full size is ready.
    loop {
        engine.apply(TABLE, row(i)).expect("acknowledged");
        i += 1;
        let spares = files_ending(dir.path(), ".log.spare");
        if spares.iter().any(|(_, len)| *len == SEGMENT) {
            break;
        }
        assert!(Instant::now() < deadline, "no spare segment was prepared");
        if i > 400 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Then until the roll has taken it.
    while !files_ending(dir.path(), ".log.spare").is_empty()
        || files_ending(dir.path(), ".log").len() < 2
    {
        engine.apply(TABLE, row(i)).expect("acknowledged");
        i += 1;
        assert!(Instant::now() < deadline, "the spare was never used");
    }
    for _ in 0..50 {
        engine.apply(TABLE, row(i)).expect("acknowledged");
        i += 1;
    }
    let segments = files_ending(dir.path(), ".log");
    assert!(
        segments.iter().any(|(_, len)| *len == SEGMENT),
        "no segment of the preallocated size: {segments:?}"
    );
    drop(engine);
    assert!(
        files_ending(dir.path(), ".log.spare").is_empty(),
        "a spare left after close"
    );
    let engine = open_with(dir.path(), SyncMode::Group { window_ms: 0 }, SEGMENT);
    let missing: Vec<u32> = (0..i).filter(|k| !present(&engine, *k)).collect();
    assert!(missing.is_empty(), "lost after replay: {missing:?}");
}
