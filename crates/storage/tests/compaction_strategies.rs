//! The compaction strategies on a real engine: leveled compaction builds
//! non-overlapping levels, time-window compaction drops expired SSTables
//! whole without rewriting them, and switching strategies on a live table
//! under load loses no acknowledged row.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::sstable::SsTable;
use gyre_storage::{
    Clock, CompactionOptions, LeveledOptions, LsmConfig, LsmEngine, ManualClock, ReadFilter,
    SizeTieredOptions, StorageEngine, SyncMode, TableId, TableOptions, TableStats,
    TimeWindowOptions,
};

const TABLE: TableId = TableId(uuid::Uuid::from_u128(0x5717));

fn key(i: u64) -> DecoratedKey {
    DecoratedKey::new(format!("key-{i:08}").into_bytes())
}

fn value(i: u64, version: u64) -> String {
    format!("{i}-{version}-{}", "x".repeat(80))
}

fn row(i: u64, version: u64, ts: i64) -> Partition {
    Partition::new(key(i)).set(
        "r",
        CellName::simple("v"),
        Cell::live(ts, value(i, version)),
    )
}

fn config(dir: &Path) -> LsmConfig {
    LsmConfig {
        sync: SyncMode::Periodic { period_ms: 50 },
        memtable_space_bytes: 64 << 10,
        block_bytes: 1024,
        ..LsmConfig::in_dir(dir)
    }
}

fn leveled() -> CompactionOptions {
    CompactionOptions::Leveled(LeveledOptions {
        sstable_size_bytes: 32 << 10,
        fanout: 4,
        min_threshold: 4,
        max_threshold: 32,
    })
}

fn size_tiered() -> CompactionOptions {
    CompactionOptions::SizeTiered(SizeTieredOptions {
        min_threshold: 2,
        ..Default::default()
    })
}

fn with_compaction(compaction: CompactionOptions) -> TableOptions {
    TableOptions {
        compaction,
        ..Default::default()
    }
}

/// Polls the table's stats until `done` holds, or fails after a minute.
fn wait_for(engine: &LsmEngine, what: &str, done: impl Fn(&TableStats) -> bool) -> TableStats {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = engine.table_stats(TABLE).expect("stats");
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        engine.request_compaction(TABLE);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_value(engine: &LsmEngine, i: u64) -> Option<String> {
    let p = engine
        .read(TABLE, &key(i), &ReadFilter::all(), 0)
        .expect("reads")?;
    let cell = p.rows.values().next()?.cells.values().next()?.clone();
    match cell.value {
        gyre_common::CellValue::Live(v) => Some(String::from_utf8_lossy(&v).into_owned()),
        _ => None,
    }
}

/// The SSTables' levels and token ranges, from their files.
fn levels(engine: &LsmEngine) -> BTreeMap<u32, Vec<(i64, i64)>> {
    let mut out: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
    for path in engine.sstable_paths(TABLE).expect("paths") {
        let s = SsTable::open(&path).expect("opens");
        out.entry(s.meta.level)
            .or_default()
            .push((s.meta.min_token, s.meta.max_token));
    }
    for ranges in out.values_mut() {
        ranges.sort_unstable();
    }
    out
}

#[test]
fn leveled_compaction_builds_non_overlapping_levels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = LsmEngine::open(config(dir.path())).expect("opens");
    engine
        .create_table(TABLE, with_compaction(leveled()))
        .expect("creates");
    const N: u64 = 6_000;
    for i in 0..N {
        engine.apply(TABLE, row(i, 0, 1)).expect("applies");
        if i % 500 == 499 {
            engine.flush(Some(TABLE)).expect("flushes");
        }
    }
    engine.flush(Some(TABLE)).expect("flushes");
    let stats = wait_for(&engine, "level 0 to drain into level 2", |s| {
        s.sstables_per_level.len() >= 3 && !s.compaction_pending
    });
    assert!(stats.sstables_per_level[0] < 4, "{stats:?}");
    let levels = levels(&engine);
    for (level, ranges) in levels.iter().filter(|(l, _)| **l > 0) {
        for w in ranges.windows(2) {
            assert!(w[0].1 < w[1].0, "level {level} overlaps: {w:?}");
        }
    }
    for i in 0..N {
        assert_eq!(read_value(&engine, i), Some(value(i, 0)), "key {i}");
    }
    assert!(stats.compactions > 0);
    // A restart keeps the levels.
    drop(engine);
    let engine = LsmEngine::open(config(dir.path())).expect("reopens");
    assert_eq!(self::levels(&engine), levels);
    // Major compaction under LCS leaves one run in one level.
    engine.compact(TABLE).expect("compacts");
    let after = self::levels(&engine);
    assert_eq!(after.len(), 1, "one level: {after:?}");
    assert!(after.keys().all(|l| *l > 0));
    for i in (0..N).step_by(7) {
        assert_eq!(read_value(&engine, i), Some(value(i, 0)), "key {i}");
    }
}

#[test]
fn time_window_drops_expired_sstables_whole_without_rewriting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let config = LsmConfig {
        // Only the test's flushes: one SSTable per window.
        memtable_space_bytes: 16 << 20,
        ..config(dir.path())
    };
    let engine = LsmEngine::open_with_clock(config, clock.clone()).expect("opens");
    engine
        .create_table(
            TABLE,
            TableOptions {
                gc_grace_seconds: 0,
                compaction: CompactionOptions::TimeWindow(TimeWindowOptions {
                    window_seconds: 3600,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .expect("creates");
    // Six hours of TTL'd data, one SSTable per hour (window), written with
    // timestamps an hour apart; then an hour of data without TTL.
    const HOUR_US: i64 = 3_600_000_000;
    const PER_HOUR: u64 = 300;
    for h in 0..7u64 {
        for n in 0..PER_HOUR {
            let i = h * PER_HOUR + n;
            let ts = h as i64 * HOUR_US + n as i64;
            let cell = if h < 6 {
                Cell::expiring(ts, value(i, 0), 600, clock.now())
            } else {
                Cell::live(ts, value(i, 0))
            };
            let p = Partition::new(key(i)).set("r", CellName::simple("v"), cell);
            engine.apply(TABLE, p).expect("applies");
        }
        engine.flush(Some(TABLE)).expect("flushes");
    }
    let before = wait_for(&engine, "seven SSTables", |s| s.sstable_count == 7);
    assert_eq!(
        before.compactions, 0,
        "one SSTable per window: nothing merges"
    );
    let expired_bytes: u64 = engine
        .sstable_paths(TABLE)
        .expect("paths")
        .iter()
        .map(|p| SsTable::open(p).expect("opens"))
        .filter(|s| s.meta.max_local_deletion_time != i64::MAX)
        .map(|s| s.file_bytes)
        .sum();
    // Past the TTL (gc grace 0), the six expired SSTables go whole.
    clock.advance(601);
    let after = wait_for(&engine, "expired SSTables dropped", |s| {
        s.expired_sstables_dropped == 6
    });
    assert_eq!(after.sstable_count, 1);
    assert_eq!(after.expired_bytes_dropped, expired_bytes);
    assert_eq!(after.disk_bytes, before.disk_bytes - expired_bytes);
    assert_eq!(after.bytes_compacted, 0, "nothing was rewritten");
    assert_eq!(after.compactions, 0, "nothing was rewritten");
    eprintln!(
        "reclaimed {expired_bytes} bytes of {} in 6 expired SSTables without rewriting",
        before.disk_bytes
    );
    for i in 0..6 * PER_HOUR {
        assert_eq!(read_value(&engine, i), None, "key {i} expired");
    }
    for i in 6 * PER_HOUR..7 * PER_HOUR {
        assert_eq!(read_value(&engine, i), Some(value(i, 0)), "key {i} is live");
    }
}

#[test]
fn expired_sstable_that_shadows_older_data_is_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let engine = LsmEngine::open_with_clock(config(dir.path()), clock.clone()).expect("opens");
    engine
        .create_table(
            TABLE,
            TableOptions {
                gc_grace_seconds: 0,
                compaction: CompactionOptions::TimeWindow(TimeWindowOptions::default()),
                ..Default::default()
            },
        )
        .expect("creates");
    // Old live data, then an expiring overwrite with a newer timestamp.
    engine.apply(TABLE, row(1, 0, 10)).expect("applies");
    engine.flush(Some(TABLE)).expect("flushes");
    let cell = Cell::expiring(20, value(1, 1), 60, clock.now());
    let p = Partition::new(key(1)).set("r", CellName::simple("v"), cell);
    engine.apply(TABLE, p).expect("applies");
    engine.flush(Some(TABLE)).expect("flushes");
    clock.advance(120);
    engine.request_compaction(TABLE);
    // Whatever the compactor does, the old value must not come back: the
    // expired cell still shadows it, so its SSTable cannot be dropped
    // whole (a merge may purge both).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        assert_eq!(
            read_value(&engine, 1),
            None,
            "the overwritten value is back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        engine
            .table_stats(TABLE)
            .expect("stats")
            .expired_sstables_dropped,
        0
    );
}

#[test]
fn switching_strategies_under_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(LsmEngine::open(config(dir.path())).expect("opens"));
    engine
        .create_table(TABLE, with_compaction(size_tiered()))
        .expect("creates");
    const WRITERS: u64 = 3;
    const KEYS: u64 = 2_000;
    let stop = AtomicBool::new(false);
    // acked[w] = the last version writer w finished writing to all its keys
    // (each pass overwrites them with the next version), and how far it
    // got into the current pass.
    let passes: Vec<AtomicU64> = (0..WRITERS).map(|_| AtomicU64::new(0)).collect();
    let progress: Vec<AtomicU64> = (0..WRITERS).map(|_| AtomicU64::new(0)).collect();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (engine, stop, passes, progress) = (&engine, &stop, &passes, &progress);
            s.spawn(move || {
                let mut version = 1;
                let mut ts = 1;
                while !stop.load(Ordering::Acquire) {
                    for n in 0..KEYS {
                        let i = w * KEYS + n;
                        ts += 1;
                        engine.apply(TABLE, row(i, version, ts)).expect("applies");
                        progress[w as usize].store(n + 1, Ordering::Release);
                    }
                    passes[w as usize].store(version, Ordering::Release);
                    version += 1;
                }
            });
        }
        let compactions = || engine.table_stats(TABLE).expect("stats").compactions;
        let wait_compactions = |n: u64, what: &str| {
            let deadline = Instant::now() + Duration::from_secs(120);
            let start = compactions();
            while compactions() < start + n {
                assert!(Instant::now() < deadline, "no compactions under {what}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_compactions(3, "size-tiered");
        engine
            .create_table(TABLE, with_compaction(leveled()))
            .expect("switches to leveled");
        wait_compactions(3, "leveled");
        let deadline = Instant::now() + Duration::from_secs(120);
        while engine
            .table_stats(TABLE)
            .expect("stats")
            .sstables_per_level
            .len()
            < 2
        {
            assert!(Instant::now() < deadline, "leveled never reached level 1");
            std::thread::sleep(Duration::from_millis(20));
        }
        engine
            .create_table(TABLE, with_compaction(size_tiered()))
            .expect("switches back to size-tiered");
        wait_compactions(3, "size-tiered again");
        stop.store(true, Ordering::Release);
    });
    let check = |engine: &LsmEngine| {
        let mut checked = 0;
        for w in 0..WRITERS {
            let done = passes[w as usize].load(Ordering::Acquire);
            let partial = progress[w as usize].load(Ordering::Acquire);
            for n in 0..KEYS {
                let i = w * KEYS + n;
                let got = read_value(engine, i).unwrap_or_else(|| panic!("key {i} lost"));
                let version: u64 = got
                    .split('-')
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .expect("a version");
                // Every key holds the last acknowledged version: the last
                // full pass, or the one after it for keys the next
                // (interrupted) pass reached.
                assert!(version >= done, "key {i}: version {version} < {done}");
                assert!(
                    version <= done + 1,
                    "key {i}: version {version} from nowhere"
                );
                if n < partial && partial < KEYS {
                    assert_eq!(version, done + 1, "key {i} lost its last write");
                }
                checked += 1;
            }
        }
        checked
    };
    assert_eq!(check(&engine), WRITERS * KEYS);
    // And after a restart.
    let engine = Arc::into_inner(engine).expect("one owner");
    drop(engine);
    let engine = LsmEngine::open(config(dir.path())).expect("reopens");
    assert_eq!(check(&engine), WRITERS * KEYS);
}

#[test]
fn compaction_throughput_paces_a_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LsmConfig {
        // No background threads, so no background flush either: the
        // memtables must hold a whole part.
        background_compaction: false,
        memtable_space_bytes: 64 << 20,
        compaction_throughput_bytes_per_sec: 1 << 20,
        ..config(dir.path())
    };
    let engine = LsmEngine::open(config).expect("opens");
    engine
        .create_table(
            TABLE,
            TableOptions {
                compression: gyre_storage::Compression::None,
                ..Default::default()
            },
        )
        .expect("creates");
    // About 3 MiB in three SSTables.
    for part in 0..3u64 {
        for i in part * 10_000..(part + 1) * 10_000 {
            engine.apply(TABLE, row(i, 0, 1)).expect("applies");
        }
        engine.flush(Some(TABLE)).expect("flushes");
    }
    let start = Instant::now();
    std::thread::scope(|s| {
        let compaction = s.spawn(|| engine.compact(TABLE));
        // The paced merge shows its progress meanwhile.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let active = engine.table_stats(TABLE).expect("stats").active_compaction;
            if let Some(a) = active.filter(|a| a.partitions_done > 0) {
                assert_eq!((a.input_sstables, a.partitions_total), (3, 30_000), "{a:?}");
                break;
            }
            assert!(Instant::now() < deadline, "no progress seen");
            assert!(
                !compaction.is_finished(),
                "finished before any progress was seen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        compaction.join().expect("joins").expect("compacts");
    });
    assert_eq!(
        engine.table_stats(TABLE).expect("stats").active_compaction,
        None
    );
    let written = engine.table_stats(TABLE).expect("stats").bytes_compacted;
    assert!(written > 2 << 20, "compacted {written} bytes");
    // A lower bound only, and a loose one (the index and bloom filter
    // written at the end are not paced): at 1 MiB/s, writing W bytes takes
    // well over W / 2 MiB/s; unpaced it takes a fraction of a second.
    let floor = Duration::from_secs_f64(written as f64 / f64::from(2 << 20));
    assert!(
        start.elapsed() >= floor,
        "{:?} < {floor:?}",
        start.elapsed()
    );
}

#[test]
fn concurrent_compactors_work_on_two_tables_at_once() {
    const OTHER: TableId = TableId(uuid::Uuid::from_u128(0x5718));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LsmConfig {
        memtable_space_bytes: 64 << 20,
        // Slow merges, so both are seen running.
        compaction_throughput_bytes_per_sec: 1 << 20,
        concurrent_compactors: 2,
        ..config(dir.path())
    };
    let engine = LsmEngine::open(config).expect("opens");
    let options = TableOptions {
        compression: gyre_storage::Compression::None,
        compaction: size_tiered(),
        ..Default::default()
    };
    for table in [TABLE, OTHER] {
        engine
            .create_table(table, options.clone())
            .expect("creates");
        for part in 0..2u64 {
            for i in part * 15_000..(part + 1) * 15_000 {
                engine.apply(table, row(i, 0, 1)).expect("applies");
            }
            engine.flush(Some(table)).expect("flushes");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active = |t| engine.table_stats(t).expect("stats").active_compaction;
        if active(TABLE).is_some() && active(OTHER).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never saw both tables compacting"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn closing_stops_a_running_compaction_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LsmConfig {
        memtable_space_bytes: 64 << 20,
        // Minutes for this merge: it is still running at close.
        compaction_throughput_bytes_per_sec: 16 << 10,
        ..config(dir.path())
    };
    let engine = LsmEngine::open(config.clone()).expect("opens");
    engine
        .create_table(TABLE, with_compaction(size_tiered()))
        .expect("creates");
    for part in 0..2u64 {
        for i in part * 10_000..(part + 1) * 10_000 {
            engine.apply(TABLE, row(i, 0, 1)).expect("applies");
        }
        engine.flush(Some(TABLE)).expect("flushes");
    }
    wait_for(&engine, "the merge to start", |s| {
        s.active_compaction
            .as_ref()
            .is_some_and(|a| a.partitions_done > 0)
    });
    let table_dir = engine.sstable_paths(TABLE).expect("paths")[0]
        .parent()
        .expect("a directory")
        .to_path_buf();
    drop(engine);
    let leftovers: Vec<String> = std::fs::read_dir(&table_dir)
        .expect("lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp-") || n.starts_with("txn-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let engine = LsmEngine::open(LsmConfig {
        background_compaction: false,
        ..config
    })
    .expect("reopens");
    assert_eq!(engine.table_stats(TABLE).expect("stats").sstable_count, 2);
    for i in (0..20_000).step_by(13) {
        assert_eq!(read_value(&engine, i), Some(value(i, 0)), "key {i}");
    }
}

#[test]
fn cleanup_drops_the_partitions_outside_the_kept_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = LsmEngine::open(config(dir.path())).expect("opens");
    engine
        .create_table(TABLE, with_compaction(size_tiered()))
        .expect("table");
    let n = 400;
    for i in 0..n {
        engine.apply(TABLE, row(i, 1, 1)).expect("writes");
    }
    engine.flush(None).expect("flush");
    // The last ones stay in the memtable: cleanup flushes them too.
    for i in n..n + 20 {
        engine.apply(TABLE, row(i, 1, 1)).expect("writes");
    }
    let before = engine.table_stats(TABLE).expect("stats");
    engine.cleanup(TABLE, &|t: i64| t < 0).expect("cleanup");
    let after = engine.table_stats(TABLE).expect("stats");
    assert!(
        after.disk_bytes < before.disk_bytes * 3 / 4,
        "{before:?} -> {after:?}"
    );
    let mut kept = 0;
    for i in 0..n + 20 {
        let present = read_value(&engine, i).is_some();
        assert_eq!(present, key(i).token < 0, "key {i}");
        kept += u64::from(present);
    }
    assert!(kept > 0 && kept < n, "{kept}");
}
