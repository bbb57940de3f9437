//! A child process writes with `batch` and `group` sync and is killed with
//! SIGKILL at random points; after each restart every acknowledged write is
//! present with the right value, and no write appears half-applied.
//!
//! The same bodies run on the native engine and, when gyre-tests is built
//! with the `rocksdb` feature, on the RocksDB engine (module `rocksdb`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use gyre_common::lww;
use gyre_storage::{ReadFilter, ScanRequest, ScanStart, SyncMode};
use gyre_tests::{crash_table, key, parse_sync, value, CrashEngine, COLUMNS};
use rand::Rng;

fn spawn(engine: CrashEngine, dir: &Path, sync: &str, start: u64, extra: &[&str]) -> Child {
    spawn_with(engine, "stcs", dir, sync, start, extra)
}

fn spawn_with(
    engine: CrashEngine,
    compaction: &str,
    dir: &Path,
    sync: &str,
    start: u64,
    extra: &[&str],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_crash_writer"))
        .env("GYRE_CRASH_ENGINE", engine.name())
        .env("GYRE_CRASH_COMPACTION", compaction)
        .arg(dir)
        .arg(sync)
        .arg(start.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("crash_writer starts")
}

/// Checks the engine's contents: every acknowledged key complete and
/// correct, every present key complete. Returns the highest key present.
fn verify(kind: CrashEngine, dir: &Path, sync: SyncMode, acked: &[u64]) -> u64 {
    let engine = kind.open(dir, sync).expect("engine recovers");
    for &i in acked {
        let p = engine
            .read(crash_table(), &key(i), &ReadFilter::all(), 0)
            .expect("read works")
            .unwrap_or_else(|| panic!("acknowledged write {i} is missing"));
        check_complete(i, &p);
    }
    // Nothing half-applied anywhere, acknowledged or not.
    let mut start = ScanStart::Token(std::ops::Bound::Unbounded);
    let mut max = 0;
    loop {
        let page = engine
            .scan(
                crash_table(),
                &ScanRequest {
                    start: start.clone(),
                    end: std::ops::Bound::Unbounded,
                    filter: ReadFilter::all(),
                    max_rows: 1000,
                    index: None,
                },
                0,
            )
            .expect("scan works");
        for p in &page.partitions {
            let name = String::from_utf8_lossy(&p.key.key).into_owned();
            let i: u64 = name.trim_start_matches("key-").parse().expect("key format");
            check_complete(i, p);
            max = max.max(i);
        }
        match page.resume {
            Some(s) => start = s,
            None => break,
        }
    }
    max
}

fn check_complete(i: u64, p: &gyre_common::Partition) {
    let live = lww::live_view(p, 0);
    let row = live
        .rows
        .values()
        .next()
        .unwrap_or_else(|| panic!("key {i} has no live row"));
    for c in COLUMNS {
        let cell = row
            .cells
            .get(&gyre_common::CellName::simple(c))
            .unwrap_or_else(|| panic!("key {i} is half-applied: column {c} missing"));
        assert_eq!(
            cell.value_at(0),
            Some(&value(i)),
            "key {i} column {c} has a wrong value"
        );
    }
}

/// Runs the writer, kills it after a random number of acknowledgements,
/// and returns the acknowledged keys.
fn run_and_kill(
    engine: CrashEngine,
    compaction: &str,
    dir: &Path,
    sync: &str,
    start: u64,
    acks: usize,
) -> Vec<u64> {
    let mut child = spawn_with(engine, compaction, dir, sync, start, &[]);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reads child output");
        if let Some(i) = line.strip_prefix("ACK ") {
            acked.push(i.parse().expect("ack format"));
            if acked.len() >= acks {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("child reaped");
    acked
}

fn crash_loop(engine: CrashEngine, sync: &str) {
    crash_loop_with(engine, "stcs", sync);
}

/// The crash loop on a table with the given compaction strategy (see
/// `gyre_tests::crash_compaction`).
fn crash_loop_with(engine: CrashEngine, compaction: &str, sync: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mode = parse_sync(sync).expect("sync mode");
    let mut rng = rand::thread_rng();
    let mut all_acked = Vec::new();
    let mut next = 0;
    for _round in 0..6 {
        let acks = rng.gen_range(1..3000);
        let acked = run_and_kill(engine, compaction, dir.path(), sync, next, acks);
        assert!(!acked.is_empty(), "the writer acknowledged nothing");
        all_acked.extend(acked);
        let max = verify(engine, dir.path(), mode, &all_acked);
        next = max.max(*all_acked.last().expect("non-empty")) + 1;
    }
}

#[test]
fn batch_sync_loses_no_acknowledged_write() {
    crash_loop(CrashEngine::Lsm, "batch");
}

#[test]
fn group_sync_loses_no_acknowledged_write() {
    crash_loop(CrashEngine::Lsm, "group");
}

#[test]
fn leveled_compaction_loses_no_acknowledged_write() {
    crash_loop_with(CrashEngine::Lsm, "lcs", "batch");
    crash_loop_with(CrashEngine::Lsm, "lcs", "group");
}

#[test]
fn time_window_compaction_loses_no_acknowledged_write() {
    crash_loop_with(CrashEngine::Lsm, "twcs", "batch");
    crash_loop_with(CrashEngine::Lsm, "twcs", "group");
}

/// Runs the writer with files capped at `limit` bytes (a full disk) and
/// returns the acknowledged keys and the error it reported.
fn run_until_full(engine: CrashEngine, dir: &Path, limit: &str) -> (Vec<u64>, String) {
    // Let the directory layout be created first, without a limit.
    drop(engine.open(dir, SyncMode::Batch).expect("engine opens"));
    let mut child = spawn(engine, dir, "batch", 0, &["--fsize-limit", limit]);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acked = Vec::new();
    let mut error = None;
    let mut again = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reads child output");
        if let Some(i) = line.strip_prefix("ACK ") {
            acked.push(i.parse::<u64>().expect("ack format"));
        } else if let Some(e) = line.strip_prefix("ERR ") {
            error = Some(e.to_string());
        } else if let Some(a) = line.strip_prefix("AGAIN ") {
            again = Some(a.to_string());
        }
    }
    let status = child.wait().expect("child reaped");
    assert!(
        status.success(),
        "the writer crashed on a full disk: {status}"
    );
    let error = error.expect("a write failed once the disk was full");
    assert_eq!(
        again.as_deref(),
        Some("refused"),
        "writes went on after the failure"
    );
    assert!(!acked.is_empty());
    (acked, error)
}

/// The commitlog cannot grow: the write fails with a clear error, the log
/// refuses every later write, and on restart with space every acknowledged
/// write is there.
#[test]
fn full_disk_on_commitlog_append_refuses_writes_and_keeps_acknowledged_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (acked, error) = run_until_full(CrashEngine::Lsm, dir.path(), "20000");
    assert!(error.contains("refuses writes"), "unclear error: {error}");
    verify(CrashEngine::Lsm, dir.path(), SyncMode::Batch, &acked);
}

/// A flush cannot write its SSTable: writes are suspended with a clear
/// error, the memtable and commitlog keep the data, and a restart with
/// space recovers every acknowledged write.
#[test]
fn full_disk_during_flush_suspends_writes_and_keeps_acknowledged_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (acked, error) = run_until_full(CrashEngine::Lsm, dir.path(), "50000");
    assert!(error.contains("suspended"), "unclear error: {error}");
    verify(CrashEngine::Lsm, dir.path(), SyncMode::Batch, &acked);
}

/// The same crash bodies on the RocksDB engine.
#[cfg(feature = "rocksdb")]
mod rocksdb {
    use super::*;

    #[test]
    fn batch_sync_loses_no_acknowledged_write() {
        crash_loop(CrashEngine::Rocks, "batch");
    }

    #[test]
    fn group_sync_loses_no_acknowledged_write() {
        crash_loop(CrashEngine::Rocks, "group");
    }

    /// The WAL cannot grow (RocksDB's WAL is its commitlog, and with 256 KiB
    /// memtables it reaches the cap before any SSTable): the write fails
    /// with RocksDB's I/O error, later writes are refused (the database
    /// is in its background-error state), and a restart with space has
    /// every acknowledged write. The cap is above the native test's 20000
    /// bytes because RocksDB rewrites its OPTIONS file (about 20 KB with
    /// three column families) when the table is created.
    #[test]
    fn full_disk_on_wal_append_refuses_writes_and_keeps_acknowledged_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (acked, error) = run_until_full(CrashEngine::Rocks, dir.path(), "100000");
        assert!(
            error.contains("While appending to file") && error.contains("File too large"),
            "unclear error: {error}"
        );
        verify(CrashEngine::Rocks, dir.path(), SyncMode::Batch, &acked);
    }
}
