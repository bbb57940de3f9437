//! The native LSM engine: commitlog, memtables, SSTables and compaction.
//!
//! Write path: validate, append to the commitlog, merge into the table's
//! memtable, then wait for the fsync the sync mode asks for. A memtable
//! switch (at flush) holds `switch_lock` exclusively, so every commitlog
//! record before the switch position is in the old memtable; that makes
//! "flushed up to position P" exact and lets segments be deleted safely.
//!
//! Flush pipeline: `memtable_flush_writers` threads each switch out and
//! write a memtable, so writers wait only when all are busy and the active
//! memtables are full again. Switched-out memtables of a table may be
//! written in parallel but end strictly oldest first (their generation is
//! fixed at the switch): an SSTable is installed and "flushed up to" moved
//! only once every older memtable is an SSTable.
//!
//! Read path: a snapshot of the table state (memtables and SSTables behind
//! one `Arc`) is merged newest first with the LWW rules; flushes and
//! compactions install new snapshots atomically, so a reader never sees a
//! row missing or twice.

use std::collections::HashMap;
use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use gyre_common::{lww, DecoratedKey, LocalTime, Partition, Timestamp};
use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::commitlog::{self, fsync_dir, CommitLog, Position};
use crate::compaction::{self, MergeIter, Source};
use crate::config::LsmConfig;
use crate::engine::{
    assemble_scan_page, finish_read, scan_start_bound, validate_update, Clock, StorageEngine,
    SystemClock, WriteFuture,
};
use crate::error::IoContext;
use crate::memtable::Memtable;
use crate::mutation::{decode_record, Mutation};
use crate::sai;
use crate::snapshot::{self, SnapshotInfo};
use crate::sstable::{sstable_path, SsTable, SsTableWriter};
use crate::strategy::{self, CompactionTask, PlanContext, SsTableInfo};

/// Failpoint evaluated as a flush starts writing a memtable.
pub const FLUSH_FAILPOINT: &str = "lsm::flush";
/// Returns the free bytes compactions see (`return(N)`; `return`: none).
pub const SPACE_FAILPOINT: &str = "lsm::available_space";

/// First wait before background work that failed (a full disk) is tried
/// again; it doubles up to [`COMPACTION_CHECK_INTERVAL`].
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// Which partitions a cleanup keeps, by token.
type Keep<'a> = &'a (dyn Fn(gyre_common::Token) -> bool + Sync);
use crate::types::{
    ClusteringFilter, CompactionProgress, EngineStats, ImportReport, ReadFilter, ScanPage,
    ScanRequest, TableId, TableOptions, TableStats,
};
use crate::{Error, Result};

/// What the table directory records about a table.
#[derive(Serialize, Deserialize)]
struct TableFile {
    id: TableId,
    options: TableOptions,
    /// Commitlog records for this table before this position were truncated.
    truncated_at: Option<Position>,
    /// Commitlog records up to here are in SSTables. Replay skips them:
    /// re-applying them could resurrect data whose tombstones compaction
    /// has purged since.
    #[serde(default)]
    flushed_upto: Option<Position>,
}

/// A compaction in flight, recorded so a crash can finish or undo it.
///
/// Written before the first output is created and again as each output is
/// started (so every output file on disk is listed), and finally with
/// `complete` set once every output is in place: that write is the commit
/// point. On restart a complete record deletes its inputs, an incomplete
/// one its outputs.
#[derive(Serialize, Deserialize)]
struct CompactionTxn {
    inputs: Vec<u64>,
    /// The single output of a record written before outputs were split
    /// (complete when that SSTable, or its `.empty` marker, exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<u64>,
    #[serde(default)]
    outputs: Vec<u64>,
    #[serde(default)]
    complete: bool,
}

#[derive(Clone, Default)]
struct TableState {
    memtable: Arc<Memtable>,
    /// Switched-out memtables waiting for their flush, oldest first.
    flushing: Vec<Arc<Memtable>>,
    /// Newest data first (by max timestamp), so reads can stop early.
    sstables: Vec<Arc<SsTable>>,
}

struct Table {
    id: TableId,
    dir: PathBuf,
    options: RwLock<TableOptions>,
    state: RwLock<Arc<TableState>>,
    /// Held shared by each flush (several run at once) and exclusively by
    /// TRUNCATE and DROP, which must not race a flush installing SSTables.
    flush_lock: RwLock<()>,
    /// Serializes the end of flushes: switched-out memtables become
    /// SSTables oldest first (see [`Inner::retire_flushed`]).
    retire_lock: Mutex<()>,
    /// Signalled (with `retire_lock`) when a flush ends or fails.
    retired: Condvar,
    compaction_lock: Mutex<()>,
    next_generation: AtomicU64,
    truncated_at: Mutex<Option<Position>>,
    flushed_upto: Mutex<Option<Position>>,
    bytes_flushed: AtomicU64,
    memtable_bytes_flushed: AtomicU64,
    flush_micros: AtomicU64,
    bytes_compacted: AtomicU64,
    compactions: AtomicU64,
    compactions_failed: AtomicU64,
    /// SSTables (and their bytes) deleted whole because all their data
    /// expired.
    expired_dropped: AtomicU64,
    expired_bytes_dropped: AtomicU64,
    /// The merge running now (for compactionstats).
    active: Mutex<Option<CompactionProgress>>,
    /// Serializes writes of `table.json`: a flush (its commitlog position)
    /// and an ALTER (its options) may persist at once, and both go through
    /// the same temporary file.
    persist_lock: Mutex<()>,
    /// Storage-attached indexes being built on existing data, by name
    /// (finished ones stay, `done`, for their status).
    builds: Mutex<HashMap<String, crate::sai::IndexBuild>>,
}

impl Table {
    fn snapshot(&self) -> Arc<TableState> {
        self.state.read().clone()
    }

    fn persist(&self) -> Result<()> {
        let _one_at_a_time = self.persist_lock.lock();
        let f = TableFile {
            id: self.id,
            options: self.options.read().clone(),
            truncated_at: *self.truncated_at.lock(),
            flushed_upto: *self.flushed_upto.lock(),
        };
        let body = serde_json::to_vec_pretty(&f).map_err(|e| Error::Config(e.to_string()))?;
        write_atomically(&self.dir.join("table.json"), &body)
    }

    fn install(&self, f: impl FnOnce(&mut TableState)) {
        let mut guard = self.state.write();
        let mut st = (**guard).clone();
        f(&mut st);
        st.sstables
            .sort_by_key(|s| std::cmp::Reverse(s.meta.max_timestamp));
        *guard = Arc::new(st);
    }
}

fn write_atomically(path: &Path, body: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, body).ctx(|| format!("writing {}", tmp.display()))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .ctx(|| format!("syncing {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming {}", tmp.display()))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

enum Work {
    FlushLargest,
    /// Flush these tables: they pin the oldest commitlog segment.
    FlushTables(Vec<TableId>),
    Compact(TableId),
}

struct Inner {
    config: LsmConfig,
    clock: Arc<dyn Clock>,
    commitlog: CommitLog,
    tables: RwLock<HashMap<TableId, Arc<Table>>>,
    switch_lock: RwLock<()>,
    memtable_bytes: AtomicU64,
    /// The part of `memtable_bytes` in switched-out memtables.
    immutable_bytes: AtomicU64,
    flush_requested: AtomicBool,
    commitlog_flush_requested: AtomicBool,
    /// Why writes are suspended (a failed flush), if they are.
    suspended: Mutex<Option<String>>,
    freed: Condvar,
    freed_lock: Mutex<()>,
    /// `freed` for async writers held back by [`Inner::admit`].
    freed_notify: tokio::sync::Notify,
    flush_tx: Mutex<Option<mpsc::Sender<Work>>>,
    compact_tx: Mutex<Option<mpsc::Sender<Work>>>,
    /// Set by `close`: running merges stop (removing their outputs) rather
    /// than hold the shutdown up.
    closing: AtomicBool,
    /// Blocks of point reads, shared by all tables (none when sized 0).
    block_cache: Option<crate::block_cache::BlockCache>,
    /// Tables whose flush or compaction failed (a full disk), with when to
    /// try again and the wait after that (doubling).
    retries: Mutex<HashMap<TableId, (std::time::Instant, Duration)>>,
}

/// Gyre's own LSM storage engine.
pub struct LsmEngine {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl LsmEngine {
    /// Opens (or creates) an engine with the wall clock.
    pub fn open(config: LsmConfig) -> Result<LsmEngine> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens an engine: loads tables and SSTables, finishes or undoes
    /// interrupted compactions, replays the commitlog and flushes what it
    /// replayed, then starts the background flusher and compactor.
    pub fn open_with_clock(config: LsmConfig, clock: Arc<dyn Clock>) -> Result<LsmEngine> {
        config.validate()?;
        for d in [&config.data_dir, &config.commitlog_dir] {
            fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
        }
        let tables = load_tables(&config.data_dir)?;
        let segments = commitlog::list_segments(&config.commitlog_dir)?;
        let next_segment = segments.last().map_or(1, |s| s + 1);
        let commitlog = CommitLog::open(
            &config.commitlog_dir,
            config.sync,
            config.segment_bytes,
            next_segment,
        )?;
        let block_cache = (config.block_cache_bytes > 0).then(|| {
            crate::block_cache::BlockCache::new(
                usize::try_from(config.block_cache_bytes).unwrap_or(usize::MAX),
            )
        });
        let inner = Arc::new(Inner {
            config,
            clock,
            commitlog,
            tables: RwLock::new(tables),
            switch_lock: RwLock::new(()),
            memtable_bytes: AtomicU64::new(0),
            immutable_bytes: AtomicU64::new(0),
            flush_requested: AtomicBool::new(false),
            commitlog_flush_requested: AtomicBool::new(false),
            suspended: Mutex::new(None),
            freed: Condvar::new(),
            freed_lock: Mutex::new(()),
            freed_notify: tokio::sync::Notify::new(),
            flush_tx: Mutex::new(None),
            compact_tx: Mutex::new(None),
            closing: AtomicBool::new(false),
            block_cache,
            retries: Mutex::new(HashMap::new()),
        });
        inner.replay(&segments)?;
        let engine = LsmEngine {
            inner: inner.clone(),
            workers: Mutex::new(Vec::new()),
        };
        if inner.config.background_compaction {
            engine.start_workers()?;
            let ids: Vec<TableId> = inner.tables.read().keys().copied().collect();
            for id in ids {
                inner.request_compaction(id);
            }
        }
        engine.warm_indexes();
        Ok(engine)
    }

    fn start_workers(&self) -> Result<()> {
        let (ftx, frx) = mpsc::channel::<Work>();
        let (ctx, crx) = mpsc::channel::<Work>();
        *self.inner.flush_tx.lock() = Some(ftx);
        *self.inner.compact_tx.lock() = Some(ctx);
        let mut workers = self.workers.lock();
        // Flushers share one queue, and so do compactors; the first
        // compactor also runs the periodic check.
        let frx = Arc::new(Mutex::new(frx));
        let crx = Arc::new(Mutex::new(crx));
        let mut threads: Vec<_> = (0..self.inner.config.memtable_flush_writers.max(1))
            .map(|i| (format!("gyre-flush-{i}"), frx.clone(), None))
            .collect();
        for i in 0..self.inner.config.concurrent_compactors.max(1) {
            let tick = (i == 0).then_some(COMPACTION_CHECK_INTERVAL);
            threads.push((format!("gyre-compact-{i}"), crx.clone(), tick));
        }
        for (name, rx, tick) in threads {
            let inner = self.inner.clone();
            let thread_name = name.clone();
            let h = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    background_priority(&thread_name);
                    inner.run_worker(&rx, tick)
                })
                .ctx(|| format!("starting {name}"))?;
            workers.push(h);
        }
        Ok(())
    }

    /// Stops background work and syncs the commitlog. Memtables are not
    /// flushed (the commitlog holds them); call `flush` first for a fast
    /// restart.
    pub fn close(&self) -> Result<()> {
        self.inner.closing.store(true, Ordering::Release);
        self.inner.flush_tx.lock().take();
        self.inner.compact_tx.lock().take();
        for h in self.workers.lock().drain(..) {
            let _ = h.join();
        }
        self.inner.commitlog.close()
    }

    /// Marks the commitlog failed, as a failed fsync would (fault tests).
    pub fn poison_commitlog(&self, why: &str) {
        self.inner.commitlog.poison(why);
    }

    /// The snapshot DROP and TRUNCATE take first (`auto_snapshot`), tagged
    /// `<what>-<seconds>-<name>` as Cassandra tags them (a counter appended
    /// if that tag exists).
    fn auto_snapshot(&self, id: TableId, what: &str) -> Result<()> {
        let t = self.inner.table(id)?;
        let name: String = t
            .options
            .read()
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = if name.is_empty() {
            id.to_string()
        } else {
            name
        };
        let base = format!("{what}-{}-{name}", self.inner.clock.now());
        let mut tag = base.clone();
        let mut n = 1;
        while snapshot::snapshot_dir(&t.dir, &tag).exists() {
            n += 1;
            tag = format!("{base}-{n}");
        }
        self.snapshot(id, &tag).map(|_| ())
    }

    /// Asks the compactor to check a table now (it does after every flush,
    /// on option changes and every minute anyway).
    pub fn request_compaction(&self, table: TableId) {
        self.inner.request_compaction(table);
    }

    /// The SSTable files of a table (for tests and tools).
    pub fn sstable_paths(&self, table: TableId) -> Result<Vec<PathBuf>> {
        let t = self.inner.table(table)?;
        Ok(t.snapshot()
            .sstables
            .iter()
            .map(|s| s.path().to_path_buf())
            .collect())
    }
}

impl Drop for LsmEngine {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the storage engine");
        }
    }
}

fn load_tables(data_dir: &Path) -> Result<HashMap<TableId, Arc<Table>>> {
    let mut out = HashMap::new();
    for e in fs::read_dir(data_dir).ctx(|| format!("listing {}", data_dir.display()))? {
        let dir = e.ctx(|| format!("listing {}", data_dir.display()))?.path();
        let meta_path = dir.join("table.json");
        if !meta_path.exists() {
            continue;
        }
        let body = fs::read(&meta_path).ctx(|| format!("reading {}", meta_path.display()))?;
        let tf: TableFile = serde_json::from_slice(&body).map_err(|e| Error::Corruption {
            file: meta_path.clone(),
            offset: 0,
            detail: e.to_string(),
        })?;
        let table = open_table(&dir, tf)?;
        out.insert(table.id, Arc::new(table));
    }
    Ok(out)
}

/// Paces a compaction to a byte rate by sleeping when it runs ahead.
struct Throttle {
    bytes_per_sec: u64,
    start: std::time::Instant,
    checked_at: u64,
}

impl Throttle {
    fn new(bytes_per_sec: u64) -> Self {
        Throttle {
            bytes_per_sec,
            start: std::time::Instant::now(),
            checked_at: 0,
        }
    }

    /// Called with the bytes written so far; sleeps (checking at most every
    /// 64 KiB) until the rate allows them, or until `stop` is set.
    fn pace(&mut self, written: u64, stop: &AtomicBool) {
        if self.bytes_per_sec == 0 || written < self.checked_at + (64 << 10) {
            return;
        }
        self.checked_at = written;
        let due = Duration::from_secs_f64(written as f64 / self.bytes_per_sec as f64);
        while let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            if stop.load(Ordering::Relaxed) || ahead.is_zero() {
                return;
            }
            std::thread::sleep(ahead.min(Duration::from_millis(100)));
        }
    }
}

/// The planners' view of a table's SSTables.
/// Free space a compaction must find before it starts (Cassandra's
/// `checkAvailableDiskSpace`): its output can be as large as its inputs,
/// written beside them until it replaces them. Starting without the room would fill the disk and fail anyway,
/// after taking the last free bytes from flushes and the commitlog.
fn check_space_for(
    dir: &Path,
    inputs: &[Arc<SsTable>],
    max_output_bytes: Option<u64>,
) -> Result<()> {
    let expected: u64 = inputs.iter().map(|s| s.file_bytes).sum();
    let available = available_bytes(dir)?;
    if expected <= available {
        return Ok(());
    }
    let estimated_sstables = max_output_bytes
        .filter(|m| *m > 0)
        .map_or(1, |m| expected.div_ceil(m).max(1));
    Err(Error::NotEnoughSpace {
        estimated_sstables,
        expected_bytes: expected,
        available_bytes: available,
    })
}

/// Bytes an unprivileged writer may still use on `dir`'s filesystem.
fn available_bytes(dir: &Path) -> Result<u64> {
    fail::fail_point!(SPACE_FAILPOINT, |free: Option<String>| {
        Ok(free.and_then(|f| f.parse().ok()).unwrap_or(0))
    });
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| Error::io(format!("reading free space of {}", dir.display()), e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// True when a partition deletion read so far covers everything `s`
/// holds: SSTables are newest first, so neither it nor any older one can
/// matter to the read.
fn deleted_past(acc: &Option<Partition>, s: &SsTable) -> bool {
    acc.as_ref()
        .and_then(|a| a.deletion)
        .is_some_and(|d| d.timestamp >= s.meta.max_timestamp)
}

/// Adds `p` to a read's result so far (LWW).
fn merge_into(acc: &mut Option<Partition>, p: Partition) {
    match acc {
        None => *acc = Some(p),
        Some(a) => lww::merge_partitions(a, p),
    }
}

fn sstable_infos(st: &TableState) -> Vec<SsTableInfo> {
    st.sstables
        .iter()
        .map(|s| SsTableInfo {
            generation: s.generation(),
            bytes: s.file_bytes,
            level: s.meta.level,
            min_token: s.meta.min_token,
            max_token: s.meta.max_token,
            min_timestamp: s.meta.min_timestamp,
            max_timestamp: s.meta.max_timestamp,
            max_local_deletion_time: s.meta.max_local_deletion_time,
        })
        .collect()
}

/// The oldest write in a table's memtables (`Timestamp::MAX` if none).
fn memtable_min_timestamp(st: &TableState) -> Timestamp {
    std::iter::once(&st.memtable)
        .chain(st.flushing.iter())
        .map(|m| m.min_timestamp())
        .min()
        .unwrap_or(Timestamp::MAX)
}

fn parse_generation(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

fn open_table(dir: &Path, tf: TableFile) -> Result<Table> {
    crate::stream::clear_staging(dir)?;
    let mut gens = Vec::new();
    let mut txns = Vec::new();
    let mut components = Vec::new();
    for e in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let path = e.ctx(|| format!("listing {}", dir.display()))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("tmp-") {
            // A write that never finished: never part of the table.
            fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
        } else if let Some(g) = parse_generation(&name, "sst-", ".db") {
            gens.push(g);
        } else if let Some(g) = parse_generation(&name, "txn-", ".json") {
            txns.push((g, path));
        } else if let Some(g) = parse_generation(&name, "sst-", ".sai") {
            components.push(g);
        }
    }
    // Interrupted compactions: if the output made it, its inputs go;
    // otherwise the inputs stay and the record goes.
    for (_, path) in txns {
        let body = fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        let txn: CompactionTxn = serde_json::from_slice(&body).map_err(|e| Error::Corruption {
            file: path.clone(),
            offset: 0,
            detail: e.to_string(),
        })?;
        let complete = match txn.output {
            // A record of the single-output format.
            Some(out) => {
                gens.contains(&out) || sstable_path(dir, out).with_extension("empty").exists()
            }
            None => txn.complete,
        };
        let doomed = if complete { &txn.inputs } else { &txn.outputs };
        for g in doomed {
            let p = sstable_path(dir, *g);
            if p.exists() {
                fs::remove_file(&p).ctx(|| format!("removing {}", p.display()))?;
            }
        }
        gens.retain(|g| !doomed.contains(g));
        if let Some(out) = txn.output {
            let empty_marker = sstable_path(dir, out).with_extension("empty");
            if empty_marker.exists() {
                fs::remove_file(&empty_marker)
                    .ctx(|| format!("removing {}", empty_marker.display()))?;
            }
        }
        fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
    }
    // Index components whose SSTable is gone (removed by a compaction or
    // a truncation the crash interrupted).
    for g in components.iter().filter(|g| !gens.contains(g)) {
        sai::remove_component(&sstable_path(dir, *g));
    }
    fsync_dir(dir)?;
    let mut sstables = Vec::new();
    for g in &gens {
        sstables.push(Arc::new(SsTable::open(&sstable_path(dir, *g))?));
    }
    sstables.sort_by_key(|s| std::cmp::Reverse(s.meta.max_timestamp));
    Ok(Table {
        id: tf.id,
        dir: dir.to_path_buf(),
        options: RwLock::new(tf.options),
        state: RwLock::new(Arc::new(TableState {
            sstables,
            ..Default::default()
        })),
        flush_lock: RwLock::new(()),
        retire_lock: Mutex::new(()),
        retired: Condvar::new(),
        compaction_lock: Mutex::new(()),
        next_generation: AtomicU64::new(gens.iter().max().map_or(1, |g| g + 1)),
        truncated_at: Mutex::new(tf.truncated_at),
        flushed_upto: Mutex::new(tf.flushed_upto),
        bytes_flushed: AtomicU64::new(0),
        memtable_bytes_flushed: AtomicU64::new(0),
        flush_micros: AtomicU64::new(0),
        bytes_compacted: AtomicU64::new(0),
        compactions: AtomicU64::new(0),
        compactions_failed: AtomicU64::new(0),
        expired_dropped: AtomicU64::new(0),
        expired_bytes_dropped: AtomicU64::new(0),
        active: Mutex::new(None),
        persist_lock: Mutex::new(()),
        builds: Mutex::new(HashMap::new()),
    })
}

/// Lowers the calling (flush or compaction) thread's scheduling priority,
/// so that on a machine with few cores the request path keeps the CPU and a
/// flush slows down instead of stalling requests (memory stays bounded by
/// the writers' backpressure at twice the memtable budget).
fn background_priority(name: &str) {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
        tracing::debug!(thread = name, error = %e, "could not lower the thread's priority");
    }
}

/// The nice value of flush and compaction threads.
const BACKGROUND_NICE: i32 = 10;

/// How often the compactor checks every table without being asked (as
/// Cassandra's `expired_sstable_check_frequency_seconds`, which it ignores).
const COMPACTION_CHECK_INTERVAL: Duration = Duration::from_secs(60);

impl Inner {
    /// Memory held by SSTable metadata and the block cache, engine-wide.
    fn memory_stats(&self) -> EngineStats {
        let tables: Vec<Arc<Table>> = self.tables.read().values().cloned().collect();
        let (mut bloom, mut index) = (0u64, 0u64);
        for t in tables {
            for s in &t.snapshot().sstables {
                let (b, i) = s.memory_bytes();
                bloom += b as u64;
                index += i as u64;
            }
        }
        let cache = self
            .block_cache
            .as_ref()
            .map(|c| c.stats())
            .unwrap_or_default();
        EngineStats {
            bloom_filter_bytes: bloom,
            index_bytes: index,
            block_cache_bytes: cache.used_bytes,
            block_cache_capacity_bytes: cache.capacity_bytes,
            block_cache_hits: cache.hits,
            block_cache_misses: cache.misses,
            ..Default::default()
        }
    }
}

impl Inner {
    fn table(&self, id: TableId) -> Result<Arc<Table>> {
        self.tables
            .read()
            .get(&id)
            .cloned()
            .ok_or(Error::UnknownTable(id))
    }

    fn replay(&self, segments: &[u64]) -> Result<()> {
        let dir = &self.config.commitlog_dir;
        let mut replayed = 0usize;
        for (i, seg) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            let r =
                commitlog::replay_segment(dir, *seg, is_last, self.config.skip_corrupt_commitlog)?;
            for rec in r.records {
                let (id, update) = decode_record(&rec.payload).map_err(|e| Error::Corruption {
                    file: dir.join(format!("CommitLog-{seg}.log")),
                    offset: rec.position.offset,
                    detail: e.to_string(),
                })?;
                // Records of dropped tables, or from before a truncate, are gone.
                let Ok(table) = self.table(id) else { continue };
                if table.truncated_at.lock().is_some_and(|t| rec.position <= t) {
                    continue;
                }
                if table.flushed_upto.lock().is_some_and(|f| rec.position <= f) {
                    continue;
                }
                let memtable = table.snapshot().memtable.clone();
                let added = memtable.apply(&update, &rec.payload[16..]);
                memtable.sai.add(&table.options.read().indexes, &update);
                self.memtable_bytes.fetch_add(added, Ordering::Relaxed);
                replayed += 1;
            }
        }
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                segments = segments.len(),
                "replayed the commitlog"
            );
        }
        let ids: Vec<TableId> = self.tables.read().keys().copied().collect();
        for id in ids {
            self.flush_table(&self.table(id)?)?;
        }
        commitlog::delete_segments(dir, segments)
    }

    fn validate(&self, update: &Partition) -> Result<()> {
        validate_update(
            update,
            self.config.max_key_bytes,
            self.config.max_value_bytes,
        )
    }

    fn check_writable(&self) -> Result<()> {
        if let Some(why) = self.suspended.lock().clone() {
            return Err(Error::WritesSuspended(why));
        }
        Ok(())
    }

    /// Holds writers back while every flush thread is busy and the active
    /// memtables are full again, until a flush frees memory.
    fn backpressure(&self) -> Result<()> {
        let mut guard = self.freed_lock.lock();
        while self.over_hard_limit() {
            self.check_writable()?;
            self.request_flush();
            self.freed.wait_for(&mut guard, Duration::from_millis(50));
        }
        Ok(())
    }

    fn request_flush(&self) {
        if self.flush_requested.swap(true, Ordering::AcqRel) {
            return;
        }
        let sent = self
            .flush_tx
            .lock()
            .as_ref()
            .is_some_and(|tx| tx.send(Work::FlushLargest).is_ok());
        if !sent {
            self.flush_requested.store(false, Ordering::Release);
        }
    }

    /// Keeps the commitlog within its space by flushing the tables that
    /// hold its oldest segment (an idle table would otherwise keep every
    /// segment after its last write alive).
    fn limit_commitlog(&self) {
        if self.commitlog_flush_requested.load(Ordering::Acquire) {
            return;
        }
        let tables = self
            .commitlog
            .tables_pinning_oldest(self.config.commitlog_space_bytes);
        if tables.is_empty() || self.commitlog_flush_requested.swap(true, Ordering::AcqRel) {
            return;
        }
        let sent = self
            .flush_tx
            .lock()
            .as_ref()
            .is_some_and(|tx| tx.send(Work::FlushTables(tables)).is_ok());
        if !sent {
            self.commitlog_flush_requested
                .store(false, Ordering::Release);
        }
    }

    fn request_compaction(&self, id: TableId) {
        if let Some(tx) = self.compact_tx.lock().as_ref() {
            let _ = tx.send(Work::Compact(id));
        }
    }

    fn apply(&self, id: TableId, update: Partition) -> Result<()> {
        if self.over_hard_limit() {
            self.backpressure()?;
        }
        let pos = self.submit(&Mutation::new(id, update))?;
        self.commitlog.wait_durable(pos)
    }

    /// Whether memtables use their whole allowance (one budget for the
    /// active memtables and one for each flush thread's): writers wait for a
    /// flush.
    fn over_hard_limit(&self) -> bool {
        let writers = self.config.memtable_flush_writers.max(1) as u64;
        self.memtable_bytes.load(Ordering::Relaxed)
            > self.config.memtable_space_bytes * (1 + writers)
    }

    /// Bytes in memtables that take writes (not switched out).
    fn active_bytes(&self) -> u64 {
        self.memtable_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(self.immutable_bytes.load(Ordering::Relaxed))
    }

    /// The async [`Inner::backpressure`]: resolves once memtables are back
    /// under twice their budget (or fails if writes are suspended).
    async fn admit(&self) -> Result<()> {
        while self.over_hard_limit() {
            let freed = self.freed_notify.notified();
            tokio::pin!(freed);
            // Registered before the re-check, so a flush that ends in
            // between still wakes this writer.
            freed.as_mut().enable();
            self.check_writable()?;
            self.request_flush();
            if !self.over_hard_limit() {
                break;
            }
            freed.await;
        }
        Ok(())
    }

    /// The CPU part of a write: the update is validated, its encoding
    /// appended to the commitlog buffer as it is and kept by the memtable.
    /// Returns the commitlog position that must be durable before the write
    /// is acknowledged.
    fn submit(&self, m: &Mutation) -> Result<Position> {
        self.check_writable()?;
        self.validate(m.update())?;
        let id = m.table();
        let table = self.table(id)?;
        let (pos, added) = {
            let _switch = self.switch_lock.read();
            let pos = self.commitlog.append(id, m.encoded())?;
            let memtable = table.state.read().memtable.clone();
            let added = memtable.apply(m.update(), &m.encoded()[16..]);
            let options = table.options.read();
            if !options.indexes.is_empty() {
                memtable.sai.add(&options.indexes, m.update());
            }
            (pos, added)
        };
        self.memtable_bytes.fetch_add(added, Ordering::Relaxed);
        if self.active_bytes() > self.config.memtable_space_bytes {
            self.request_flush();
        }
        self.limit_commitlog();
        Ok(pos)
    }

    /// Runs background work until the channel closes. With a `tick`, every
    /// table is also checked that often for compactions that time alone
    /// makes due (expired SSTables).
    fn run_worker(&self, rx: &Mutex<mpsc::Receiver<Work>>, tick: Option<Duration>) {
        let mut next_tick = tick.map(|t| std::time::Instant::now() + t);
        loop {
            if let (Some(at), Some(tick)) = (next_tick, tick) {
                // Due even when work keeps arriving.
                if std::time::Instant::now() >= at {
                    next_tick = Some(std::time::Instant::now() + tick);
                    let ids: Vec<TableId> = self.tables.read().keys().copied().collect();
                    for id in ids {
                        self.request_compaction(id);
                    }
                }
                self.retry_due();
            }
            // One worker waits on the queue at a time; the others wait for
            // the lock.
            let wake = next_tick.map(|at| match self.next_retry() {
                Some(r) => r.min(at),
                None => at,
            });
            let w = match wake {
                None => match rx.lock().recv() {
                    Ok(w) => w,
                    Err(_) => return,
                },
                Some(at) => {
                    let wait = at.saturating_duration_since(std::time::Instant::now());
                    match rx.lock().recv_timeout(wait) {
                        Ok(w) => w,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            match w {
                Work::FlushLargest => {
                    self.flush_requested.store(false, Ordering::Release);
                    let largest = self
                        .tables
                        .read()
                        .values()
                        .max_by_key(|t| t.state.read().memtable.bytes())
                        .cloned();
                    if let Some(t) = largest {
                        if let Err(e) = self.flush_pending(&t, false) {
                            tracing::error!(table = %t.id, error = %e, "background flush failed");
                        }
                    }
                }
                Work::FlushTables(ids) => {
                    for id in ids {
                        let Ok(t) = self.table(id) else { continue };
                        if let Err(e) = self.flush_table(&t) {
                            tracing::error!(table = %t.id, error = %e, "flush to free commitlog space failed");
                        }
                    }
                    self.commitlog_flush_requested
                        .store(false, Ordering::Release);
                }
                Work::Compact(id) => {
                    if self.closing.load(Ordering::Acquire) {
                        // Every flush queues a request: a backlog of them
                        // would each open a compaction only to stop it,
                        // holding close up for minutes.
                        continue;
                    }
                    let Ok(t) = self.table(id) else { continue };
                    if t.compaction_lock.is_locked() {
                        // Another compactor (or a major compaction) works
                        // on this table and plans again when it is done.
                        continue;
                    }
                    let mut last: Option<CompactionTask> = None;
                    let mut failed = false;
                    loop {
                        let st = t.snapshot();
                        let strategy = strategy::strategy_for(&t.options.read().compaction);
                        let ctx = self.plan_context(&t, &st);
                        let Some(task) = strategy.next_task(&sstable_infos(&st), &ctx) else {
                            break;
                        };
                        if last.as_ref() == Some(&task) {
                            // The same task again made no progress; a new
                            // flush or option change will ask again.
                            tracing::warn!(table = %t.id, ?task, "compaction planned twice");
                            break;
                        }
                        if let Err(e) = self.run_task(&t, &task, None) {
                            if matches!(e, Error::Closed) {
                                tracing::debug!(table = %t.id, "compaction stopped by shutdown");
                            } else {
                                // Its outputs are gone; it runs again
                                // later (when a full disk has room).
                                let wait = self.schedule_retry(t.id);
                                t.compactions_failed.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(table = %t.id, error = %e, retry_in = ?wait, "background compaction failed");
                            }
                            failed = true;
                            break;
                        }
                        last = Some(task);
                    }
                    let flush_failed =
                        t.snapshot().flushing.iter().any(|m| {
                            matches!(*m.flush.lock(), crate::memtable::FlushSlot::Waiting)
                        });
                    if !failed && !flush_failed {
                        self.retries.lock().remove(&t.id);
                    }
                }
            }
        }
    }

    /// Asks for a table's failed background work to run again after a
    /// doubling wait; returns the wait.
    fn schedule_retry(&self, id: TableId) -> Duration {
        let mut retries = self.retries.lock();
        let now = std::time::Instant::now();
        let wait = retries.get(&id).map_or(RETRY_FIRST, |(_, w)| {
            (*w * 2).min(COMPACTION_CHECK_INTERVAL)
        });
        retries.insert(id, (now + wait, wait));
        wait
    }

    fn next_retry(&self) -> Option<std::time::Instant> {
        self.retries.lock().values().map(|(at, _)| *at).min()
    }

    /// Runs the failed work whose wait is over: the table's compaction, and
    /// the flush of memtables whose flush failed. The entry stays (its wait
    /// doubles if the work fails again) until a compaction succeeds.
    fn retry_due(&self) {
        let now = std::time::Instant::now();
        let due: Vec<TableId> = {
            let mut retries = self.retries.lock();
            let due: Vec<TableId> = retries
                .iter()
                .filter(|(_, (at, _))| *at <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in &due {
                // Parked until the work fails again (or succeeds).
                if let Some(e) = retries.get_mut(id) {
                    e.0 = now + COMPACTION_CHECK_INTERVAL;
                }
            }
            due
        };
        for id in due {
            let Ok(t) = self.table(id) else {
                self.retries.lock().remove(&id);
                continue;
            };
            let failed_flush = t
                .snapshot()
                .flushing
                .iter()
                .any(|m| matches!(*m.flush.lock(), crate::memtable::FlushSlot::Waiting));
            if failed_flush {
                if let Some(tx) = self.flush_tx.lock().as_ref() {
                    let _ = tx.send(Work::FlushTables(vec![id]));
                }
            }
            self.request_compaction(id);
        }
    }

    /// Removes all data of a table: memtables, SSTables and, by the
    /// recorded truncation point, its commitlog records.
    fn truncate(&self, id: TableId) -> Result<()> {
        let t = self.table(id)?;
        let _f = t.flush_lock.write();
        let _c = t.compaction_lock.lock();
        let (pos, old) = {
            let _switch = self.switch_lock.write();
            let pos = self.commitlog.current_position();
            let mut guard = t.state.write();
            let old = std::mem::take(&mut *guard);
            (pos, old)
        };
        let immutable: u64 = old.flushing.iter().map(|m| m.bytes()).sum();
        let freed = old.memtable.bytes() + immutable;
        self.memtable_bytes.fetch_sub(
            freed.min(self.memtable_bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.immutable_bytes.fetch_sub(
            immutable.min(self.immutable_bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        *t.truncated_at.lock() = Some(pos);
        t.persist()?;
        for s in &old.sstables {
            fs::remove_file(s.path()).ctx(|| format!("removing {}", s.path().display()))?;
            sai::remove_component(s.path());
        }
        fsync_dir(&t.dir)?;
        self.commitlog.mark_flushed(id, pos)
    }

    /// What a planner needs besides the SSTables.
    fn plan_context(&self, t: &Table, st: &TableState) -> PlanContext {
        let now = self.clock.now();
        PlanContext {
            now,
            gc_before: now - i64::from(t.options.read().gc_grace_seconds),
            memtable_min_timestamp: memtable_min_timestamp(st),
        }
    }

    /// Moves SSTable `files` (in `dir`) into table `t` under new
    /// generations. Every file is checked before any is loaded: a corrupt
    /// one refuses the import, naming the file, and loads nothing.
    fn import_files(&self, t: &Arc<Table>, dir: &Path, files: &[PathBuf]) -> Result<ImportReport> {
        for f in files {
            SsTable::open(f)?;
        }
        let _c = t.compaction_lock.lock();
        let mut report = ImportReport {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        for f in files {
            let generation = t.next_generation.fetch_add(1, Ordering::Relaxed);
            let dest = sstable_path(&t.dir, generation);
            // Its index component (`X.sai` beside `X.db`) comes along,
            // before the SSTable as the writer does; it names its SSTable
            // by content, so the new generation does not matter, and one
            // that does not fit is rebuilt on first use.
            let component = sai::component_path(f);
            if component.exists() {
                let to = sai::component_path(&dest);
                fs::rename(&component, &to)
                    .ctx(|| format!("moving {} into the table", component.display()))?;
            }
            fs::rename(f, &dest).ctx(|| format!("moving {} into the table", f.display()))?;
            fsync_dir(&t.dir)?;
            let s = SsTable::open(&dest)?;
            report.files += 1;
            report.bytes += s.file_bytes;
            t.install(|st| st.sstables.push(Arc::new(s)));
        }
        fsync_dir(dir)?;
        drop(_c);
        if report.files > 0 {
            self.request_compaction(t.id);
        }
        Ok(report)
    }

    /// Switches the memtable out and writes every pending memtable of the
    /// table to an SSTable; returns once all of them are SSTables.
    fn flush_table(&self, t: &Arc<Table>) -> Result<()> {
        self.flush_pending(t, true)
    }

    /// Switches the table's memtable out and writes it, and any switched-out
    /// memtable no other flush thread has (one whose flush failed), to
    /// SSTables. With `wait`, also waits for the flushes other threads run
    /// of memtables switched out before, so that everything written before
    /// the call is in SSTables on return.
    fn flush_pending(&self, t: &Arc<Table>, wait: bool) -> Result<()> {
        let _flush = t.flush_lock.read();
        let failed_before = t
            .snapshot()
            .flushing
            .iter()
            .any(|m| matches!(*m.flush.lock(), crate::memtable::FlushSlot::Waiting));
        if !wait && failed_before {
            // A flush of this table failed: the retry timer (or an explicit
            // flush) tries it again; meanwhile no more switched-out
            // memtables pile up, and writers are held back at the memtable
            // allowance.
            return Ok(());
        }
        self.switch_memtable(t);
        let targets = t.snapshot().flushing.clone();
        let options = t.options.read().clone();
        loop {
            let st = t.snapshot();
            let pending: Vec<&Arc<Memtable>> = targets
                .iter()
                .filter(|m| st.flushing.iter().any(|x| Arc::ptr_eq(x, m)))
                .collect();
            if pending.is_empty() {
                break;
            }
            if let Some(m) = pending.iter().find(|m| m.claim()) {
                self.write_memtable(t, m, &options)?;
                continue;
            }
            if !wait {
                break;
            }
            // Every one left is being written by another thread: wait for
            // it to finish (or fail, leaving it to be claimed here).
            let mut g = t.retire_lock.lock();
            let st = t.snapshot();
            let busy = targets.iter().any(|m| {
                st.flushing.iter().any(|x| Arc::ptr_eq(x, m))
                    && matches!(*m.flush.lock(), crate::memtable::FlushSlot::Writing)
            });
            if busy {
                t.retired.wait_for(&mut g, Duration::from_millis(100));
            } else {
                // All written, none ended: the last end failed (recording
                // the flushed position); try it again.
                drop(g);
                self.retire_flushed(t)?;
            }
        }
        *self.suspended.lock() = None;
        self.notify_freed();
        self.request_compaction(t.id);
        Ok(())
    }

    /// Moves the table's memtable, if it holds anything, to the switched-out
    /// ones. The commitlog position and the SSTable generation are fixed
    /// here, under the switch lock, so both follow the memtables' age.
    fn switch_memtable(&self, t: &Table) {
        let _switch = self.switch_lock.write();
        let st = t.snapshot();
        if st.memtable.is_empty() {
            return;
        }
        st.memtable.set_end(self.commitlog.current_position());
        st.memtable.generation.store(
            t.next_generation.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.immutable_bytes
            .fetch_add(st.memtable.bytes(), Ordering::Relaxed);
        t.install(|s| {
            let old = std::mem::take(&mut s.memtable);
            s.flushing.push(old);
        });
    }

    /// Writes a claimed switched-out memtable to its SSTable, then ends
    /// every flush that is done, oldest first.
    fn write_memtable(
        &self,
        t: &Arc<Table>,
        m: &Arc<Memtable>,
        options: &TableOptions,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let res = (|| -> Result<Option<SsTable>> {
            fail::fail_point!(FLUSH_FAILPOINT);
            if m.is_empty() {
                return Ok(None);
            }
            let mut w = SsTableWriter::create(
                &t.dir,
                m.generation.load(Ordering::Relaxed),
                options.compression,
                self.config.block_bytes,
                self.config.bloom_bits_per_key,
            )?;
            w.set_indexes(&options.indexes);
            for e in m.flush_iter() {
                match e {
                    // Written once (the common case): its bytes become the
                    // SSTable's records as they are.
                    crate::memtable::FlushEntry::Encoded(key, enc) => {
                        if !w.add_encoded(&key, &enc)? {
                            w.add(
                                &crate::memtable::FlushEntry::Encoded(key, enc).into_partition(),
                            )?;
                        }
                    }
                    crate::memtable::FlushEntry::Merged(p) => w.add(&p)?,
                }
            }
            Ok(Some(w.finish()?))
        })();
        match res {
            Ok(s) => {
                if let Some(s) = &s {
                    t.bytes_flushed.fetch_add(s.file_bytes, Ordering::Relaxed);
                    t.memtable_bytes_flushed
                        .fetch_add(m.bytes(), Ordering::Relaxed);
                    t.flush_micros
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                *m.flush.lock() = crate::memtable::FlushSlot::Written(s.map(Arc::new));
                self.retire_flushed(t)
            }
            Err(e) => {
                // Keep the memtable and its commitlog segments.
                *m.flush.lock() = crate::memtable::FlushSlot::Waiting;
                if e.is_disk_full() {
                    // Writes go on into memory (held back at the memtable
                    // allowance) while the flush waits for space.
                    let wait = self.schedule_retry(t.id);
                    tracing::error!(table = %t.id, error = %e, retry_in = ?wait, "flush failed: disk full");
                    let _g = t.retire_lock.lock();
                    t.retired.notify_all();
                } else {
                    // Refuse writes until a flush succeeds.
                    self.suspend(t, &e, "flush failed: suspending writes");
                }
                Err(e)
            }
        }
    }

    fn suspend(&self, t: &Table, e: &Error, what: &str) {
        *self.suspended.lock() = Some(e.to_string());
        tracing::error!(table = %t.id, error = %e, "{what}");
        {
            let _g = t.retire_lock.lock();
            t.retired.notify_all();
        }
        // Held-back writers see the suspension at once.
        self.notify_freed();
    }

    fn notify_freed(&self) {
        {
            let _g = self.freed_lock.lock();
            self.freed.notify_all();
        }
        self.freed_notify.notify_waiters();
    }

    /// Ends the flushes at the head of the table's switched-out memtables
    /// whose SSTables are written: each records the commitlog position it
    /// covers, then its SSTable replaces the memtable and the commitlog may
    /// drop what it held. Strictly oldest first, as "flushed up to P" must
    /// mean every record before P is in an SSTable.
    fn retire_flushed(&self, t: &Arc<Table>) -> Result<()> {
        let _g = t.retire_lock.lock();
        loop {
            let st = t.snapshot();
            let Some(m) = st.flushing.first().cloned() else {
                break;
            };
            let sst = match &*m.flush.lock() {
                crate::memtable::FlushSlot::Written(s) => s.clone(),
                _ => break,
            };
            // Record the flush before the SSTable becomes visible to
            // compaction, which may then purge tombstones the commitlog's
            // copies of these records would no longer meet.
            if let Some(end) = m.end() {
                *t.flushed_upto.lock() = Some(end);
                if let Err(e) = t.persist() {
                    *self.suspended.lock() = Some(e.to_string());
                    t.retired.notify_all();
                    return Err(e);
                }
            }
            t.install(|s| {
                s.flushing.retain(|x| !Arc::ptr_eq(x, &m));
                if let Some(sst) = sst {
                    s.sstables.push(sst);
                }
            });
            for counter in [&self.memtable_bytes, &self.immutable_bytes] {
                counter.fetch_sub(
                    m.bytes().min(counter.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
            if let Some(end) = m.end() {
                self.commitlog.mark_flushed(t.id, end)?;
            }
        }
        t.retired.notify_all();
        drop(_g);
        self.notify_freed();
        Ok(())
    }

    /// Runs a compaction task. Returns `false` (doing nothing) when an input
    /// is gone since the task was planned.
    /// Runs `task`; a merge drops the partitions `keep` rejects (cleanup).
    fn run_task(
        &self,
        t: &Arc<Table>,
        task: &CompactionTask,
        keep: Option<Keep<'_>>,
    ) -> Result<bool> {
        let _c = t.compaction_lock.lock();
        let st = t.snapshot();
        let inputs: Vec<Arc<SsTable>> = st
            .sstables
            .iter()
            .filter(|s| task.inputs().contains(&s.generation()))
            .cloned()
            .collect();
        if inputs.is_empty() || inputs.len() != task.inputs().len() {
            return Ok(false);
        }
        match task {
            CompactionTask::DropExpired { .. } => self.drop_expired(t, &st, inputs),
            CompactionTask::Merge {
                level,
                max_output_bytes,
                ..
            } => {
                check_space_for(&t.dir, &inputs, *max_output_bytes)?;
                self.merge(t, &st, inputs, *level, *max_output_bytes, keep)
            }
        }
    }

    /// Deletes wholly expired SSTables without rewriting them. Checked
    /// again here, under the compaction lock, against the current memtables.
    fn drop_expired(
        &self,
        t: &Arc<Table>,
        st: &TableState,
        inputs: Vec<Arc<SsTable>>,
    ) -> Result<bool> {
        let still = strategy::fully_expired(&sstable_infos(st), &self.plan_context(t, st));
        let inputs: Vec<Arc<SsTable>> = inputs
            .into_iter()
            .filter(|s| still.contains(&s.generation()))
            .collect();
        if inputs.is_empty() {
            return Ok(false);
        }
        let gens: Vec<u64> = inputs.iter().map(|s| s.generation()).collect();
        t.install(|s| s.sstables.retain(|x| !gens.contains(&x.generation())));
        // No transaction record: each of these may go on its own, so a
        // crash between two deletions leaves a table that is still right.
        for s in &inputs {
            fs::remove_file(s.path()).ctx(|| format!("removing {}", s.path().display()))?;
            sai::remove_component(s.path());
            t.expired_dropped.fetch_add(1, Ordering::Relaxed);
            t.expired_bytes_dropped
                .fetch_add(s.file_bytes, Ordering::Relaxed);
        }
        fsync_dir(&t.dir)?;
        tracing::debug!(table = %t.id, sstables = ?gens, "dropped expired SSTables");
        Ok(true)
    }

    /// Merges `inputs` into new SSTables at `level`, split at partition
    /// boundaries (never inside a token) once an output reaches
    /// `max_output_bytes`. On error every output written so far is removed
    /// and the inputs stay.
    fn merge(
        &self,
        t: &Arc<Table>,
        st: &TableState,
        inputs: Vec<Arc<SsTable>>,
        level: u32,
        max_output_bytes: Option<u64>,
        keep: Option<Keep<'_>>,
    ) -> Result<bool> {
        let input_gens: Vec<u64> = inputs.iter().map(|s| s.generation()).collect();
        let others: Vec<Arc<SsTable>> = st
            .sstables
            .iter()
            .filter(|s| !input_gens.contains(&s.generation()))
            .cloned()
            .collect();
        let memtable_min = memtable_min_timestamp(st);
        let options = t.options.read().clone();
        let now = self.clock.now();
        let gc_before = now - i64::from(options.gc_grace_seconds);
        let txn_gen = t.next_generation.fetch_add(1, Ordering::Relaxed);
        let txn_path = t.dir.join(format!("txn-{txn_gen}.json"));
        let mut txn = CompactionTxn {
            inputs: input_gens.clone(),
            output: None,
            outputs: Vec::new(),
            complete: false,
        };
        let write_txn = |txn: &CompactionTxn| -> Result<()> {
            let body = serde_json::to_vec(txn).map_err(|e| Error::Config(e.to_string()))?;
            write_atomically(&txn_path, &body)
        };
        write_txn(&txn)?;
        let mut outputs: Vec<Arc<SsTable>> = Vec::new();
        let mut progress = CompactionProgress {
            level,
            input_sstables: inputs.len(),
            input_bytes: inputs.iter().map(|s| s.file_bytes).sum(),
            partitions_total: inputs.iter().map(|s| s.meta.partition_count).sum(),
            ..Default::default()
        };
        *t.active.lock() = Some(progress.clone());
        let res = (|| -> Result<()> {
            let mut iters = Vec::with_capacity(inputs.len());
            for s in &inputs {
                iters.push(s.row_iter()?);
            }
            // Partitions stream row by row, in chunks compacted on their
            // own: a partition of any width needs bounded memory.
            let mut merged = compaction::RowMerge::new(iters);
            let mut w: Option<SsTableWriter> = None;
            let mut throttle = Throttle::new(self.config.compaction_throughput_bytes_per_sec);
            let mut finished_bytes = 0u64;
            // Blooms sized up front: at most every input partition, or an
            // output's share of them when outputs split.
            let input_data: u64 = inputs.iter().map(|s| s.meta.data_bytes).sum::<u64>().max(1);
            let expect_keys = match max_output_bytes {
                Some(m) => progress.partitions_total.min(
                    (u128::from(progress.partitions_total) * u128::from(m) * 3
                        / 2
                        / u128::from(input_data)) as u64
                        + 1024,
                ),
                None => progress.partitions_total,
            };
            while let Some(head) = merged.next_partition()? {
                if self.closing.load(Ordering::Relaxed) {
                    return Err(Error::Closed);
                }
                progress.partitions_done += 1;
                if keep.is_some_and(|k| !k(head.key.token)) {
                    continue;
                }
                if progress.partitions_done.is_multiple_of(1024) {
                    progress.bytes_written =
                        finished_bytes + w.as_ref().map_or(0, |w| w.bytes_written());
                    *t.active.lock() = Some(progress.clone());
                }
                let max_purgeable = compaction::min_timestamp_outside(
                    &head.key,
                    others.iter().map(|s| &**s),
                    memtable_min,
                );
                let header =
                    compaction::compact_partition(head.clone(), now, gc_before, max_purgeable);
                let mut next_chunk = || -> Result<Option<std::collections::BTreeMap<bytes::Bytes, gyre_common::Row>>> {
                    loop {
                        let mut chunk = Partition::new(head.key.clone());
                        chunk.deletion = head.deletion;
                        chunk.range_tombstones = head.range_tombstones.clone();
                        let mut bytes = 0usize;
                        while chunk.rows.len() < 1024 && bytes < (1 << 20) {
                            let Some((ck, row)) = merged.next_row()? else {
                                break;
                            };
                            bytes += ck.len() + row.size_estimate();
                            chunk.rows.insert(ck, row);
                        }
                        if chunk.rows.is_empty() {
                            return Ok(None);
                        }
                        if self.closing.load(Ordering::Relaxed) {
                            return Err(Error::Closed);
                        }
                        if let Some(c) =
                            compaction::compact_partition(chunk, now, gc_before, max_purgeable)
                        {
                            if !c.rows.is_empty() {
                                return Ok(Some(c.rows));
                            }
                        }
                    }
                };
                let mut rows = next_chunk()?;
                if header.is_none() && rows.is_none() {
                    continue;
                }
                if let Some(cur) = &w {
                    let full = max_output_bytes.is_some_and(|m| cur.bytes_written() >= m);
                    // Outputs of one level must not share a token.
                    if full && cur.last_token() != Some(head.key.token) {
                        if let Some(done) = w.take() {
                            let done = done.finish()?;
                            finished_bytes += done.file_bytes;
                            outputs.push(Arc::new(done));
                        }
                    }
                }
                if w.is_none() {
                    let g = t.next_generation.fetch_add(1, Ordering::Relaxed);
                    txn.outputs.push(g);
                    write_txn(&txn)?;
                    let mut nw = SsTableWriter::create(
                        &t.dir,
                        g,
                        options.compression,
                        self.config.block_bytes,
                        self.config.bloom_bits_per_key,
                    )?;
                    nw.set_level(level);
                    nw.set_indexes(&options.indexes);
                    nw.expect_keys(expect_keys);
                    w = Some(nw);
                }
                let Some(cur) = &mut w else {
                    continue;
                };
                // Purged deletions leave a bare header when rows remain.
                cur.begin_partition(&header.unwrap_or_else(|| Partition::new(head.key.clone())))?;
                while let Some(chunk) = rows {
                    for (ck, row) in &chunk {
                        cur.add_row(ck, row)?;
                    }
                    drop(chunk);
                    throttle.pace(finished_bytes + cur.bytes_written(), &self.closing);
                    rows = next_chunk()?;
                }
                cur.end_partition();
                throttle.pace(finished_bytes + cur.bytes_written(), &self.closing);
            }
            if let Some(done) = w.take() {
                outputs.push(Arc::new(done.finish()?));
            }
            txn.complete = true;
            write_txn(&txn)
        })();
        *t.active.lock() = None;
        if let Err(e) = res {
            // Undo: the outputs go (an unfinished one removed itself), the
            // inputs stay.
            for o in &outputs {
                if let Err(e) = fs::remove_file(o.path()) {
                    tracing::warn!(path = %o.path().display(), error = %e, "removing a failed compaction's output");
                }
                sai::remove_component(o.path());
            }
            if let Err(e) = fs::remove_file(&txn_path) {
                tracing::warn!(path = %txn_path.display(), error = %e, "removing a failed compaction's record");
            }
            return Err(e);
        }
        for o in &outputs {
            t.bytes_compacted.fetch_add(o.file_bytes, Ordering::Relaxed);
        }
        t.install(|s| {
            s.sstables.retain(|x| !input_gens.contains(&x.generation()));
            s.sstables.extend(outputs.iter().cloned());
        });
        // Readers still holding an input keep their open file; unlinking is
        // safe on Unix.
        for s in &inputs {
            fs::remove_file(s.path()).ctx(|| format!("removing {}", s.path().display()))?;
            sai::remove_component(s.path());
        }
        fs::remove_file(&txn_path).ctx(|| format!("removing {}", txn_path.display()))?;
        fsync_dir(&t.dir)?;
        t.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    fn read(
        &self,
        id: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
    ) -> Result<Option<Partition>> {
        let t = self.table(id)?;
        let st = t.snapshot();
        let mut acc: Option<Partition> = None;
        for m in std::iter::once(&st.memtable).chain(st.flushing.iter().rev()) {
            if let Some(p) = m.get(key, &filter.clustering) {
                merge_into(&mut acc, p);
            }
        }
        if let (Some(limit), ClusteringFilter::Slices(_)) = (filter.limit, &filter.clustering) {
            return self.read_limited(&st, key, filter, limit, now, acc);
        }
        let merge = merge_into;
        for s in &st.sstables {
            if deleted_past(&acc, s) {
                break;
            }
            if let Some(p) = s.get_with(key, &filter.clustering, self.block_cache.as_ref())? {
                merge(&mut acc, p);
            }
        }
        Ok(acc.and_then(|p| finish_read(p, filter, now)))
    }

    /// A read with a row limit (a LIMIT, a page): the SSTables are read in
    /// chunks of rows, growing, until the limit's live rows are known, so
    /// a page of a partition of many GiB holds about a page of rows in
    /// memory instead of the whole partition. Forward, rows up to the
    /// smallest key where a chunk stopped are final (every source has given
    /// all its rows up to there); reversed, rows from the largest key where
    /// a chunk stopped. (`memtables` holds the memtables' part, in memory
    /// anyway.)
    fn read_limited(
        &self,
        st: &TableState,
        key: &DecoratedKey,
        filter: &ReadFilter,
        limit: usize,
        now: LocalTime,
        memtables: Option<Partition>,
    ) -> Result<Option<Partition>> {
        let reversed = filter.reversed;
        let mut acc = memtables;
        // Forward: rows after this key; reversed: rows before it.
        let mut from: Option<bytes::Bytes> = None;
        // From one row past the limit (so the conformance suite's small
        // partitions cross chunk boundaries too), doubling.
        let mut chunk = limit.saturating_add(1).min(1 << 16);
        let unlimited = ReadFilter {
            limit: None,
            ..filter.clone()
        };
        loop {
            // Where the least advanced source that stopped at the cap stopped.
            let mut cut: Option<bytes::Bytes> = None;
            for s in &st.sstables {
                if deleted_past(&acc, s) {
                    break;
                }
                let cache = self.block_cache.as_ref();
                let read = if reversed {
                    s.get_capped_rev(key, &filter.clustering, cache, from.as_deref(), chunk)?
                } else {
                    s.get_capped(key, &filter.clustering, cache, from.as_deref(), chunk)?
                };
                let Some((mut p, more)) = read else {
                    continue;
                };
                let stopped = if reversed {
                    p.rows.keys().next()
                } else {
                    p.rows.keys().next_back()
                };
                if let Some(at) = stopped.filter(|_| more) {
                    let less_advanced =
                        cut.as_ref()
                            .is_none_or(|c| if reversed { at > c } else { at < c });
                    if less_advanced {
                        cut = Some(at.clone());
                    }
                }
                if from.is_some() {
                    // Deletion, range tombstones and static row came with
                    // the first chunk.
                    p.deletion = None;
                    p.range_tombstones.clear();
                    p.static_row = None;
                }
                merge_into(&mut acc, p);
            }
            let Some(cut) = cut else { break };
            let Some(a) = acc.as_mut() else { break };
            let settled_rows = if reversed {
                a.rows.range(cut.clone()..)
            } else {
                a.rows.range(..=cut.clone())
            };
            let settled = Partition {
                key: a.key.clone(),
                deletion: a.deletion,
                range_tombstones: a.range_tombstones.clone(),
                static_row: a.static_row.clone(),
                rows: settled_rows.map(|(k, r)| (k.clone(), r.clone())).collect(),
            };
            let live = finish_read(settled, &unlimited, now)
                .map_or(0, |p| p.rows.values().filter(|r| r.is_live(now)).count());
            if live >= limit {
                // Rows beyond the cut may lack a source's rows; the limit
                // ends the answer before them anyway.
                let mut past = a.rows.split_off(&cut);
                if reversed {
                    a.rows = past;
                } else {
                    if let Some(r) = past.remove(&cut) {
                        a.rows.insert(cut, r);
                    }
                }
                break;
            }
            from = Some(cut);
            chunk = chunk.saturating_mul(2).min(1 << 20);
        }
        Ok(acc.and_then(|p| finish_read(p, filter, now)))
    }

    fn scan(&self, id: TableId, req: &ScanRequest, now: LocalTime) -> Result<ScanPage> {
        let t = self.table(id)?;
        if let Some(q) = &req.index {
            return self.index_scan(&t, req, q, now);
        }
        let st = t.snapshot();
        let Some(start) = scan_start_bound(&req.start) else {
            return Ok(ScanPage {
                partitions: Vec::new(),
                resume: None,
            });
        };
        let mut sources: Vec<Source<'_>> = Vec::new();
        for m in std::iter::once(&st.memtable).chain(st.flushing.iter()) {
            let mut it = m.range(start.clone(), &req.filter.clustering);
            sources.push(Box::new(move || Ok(it.next())));
        }
        for s in &st.sstables {
            let mut it = s.iter_from(&start, req.filter.clustering.clone())?;
            sources.push(Box::new(move || it.next_partition()));
        }
        let mut merged = MergeIter::new(sources);
        assemble_scan_page(req, now, || merged.next_partition())
    }
}

impl Inner {
    /// A scan served by storage-attached indexes: the candidates from the
    /// memtables' indexes and the SSTables' segments within the range, each
    /// read through the normal merged read and kept only if its merged
    /// rows still match (so overwritten, deleted and expired values never
    /// show), assembled into a page like any scan.
    fn index_scan(
        &self,
        t: &Arc<Table>,
        req: &ScanRequest,
        q: &sai::IndexQuery,
        now: LocalTime,
    ) -> Result<ScanPage> {
        {
            let builds = t.builds.lock();
            for c in &q.clauses {
                if builds.get(&c.index).is_some_and(|b| !b.done) {
                    return Err(Error::IndexNotAvailable(c.index.clone()));
                }
            }
            if let Some(a) = &q.ann {
                if builds.get(&a.index).is_some_and(|b| !b.done) {
                    return Err(Error::IndexNotAvailable(a.index.clone()));
                }
            }
        }
        if let Some(a) = &q.ann {
            return self.ann_scan(t, req, q, a, now);
        }
        let specs = t.options.read().indexes.clone();
        let st = t.snapshot();
        let Some(start) = scan_start_bound(&req.start) else {
            return Ok(ScanPage {
                partitions: Vec::new(),
                resume: None,
            });
        };
        let within = |k: &DecoratedKey| {
            let after_start = match &start {
                Bound::Unbounded => true,
                Bound::Included(s) => k >= s,
                Bound::Excluded(s) => k > s,
            };
            let before_end = match req.end {
                Bound::Unbounded => true,
                Bound::Included(e) => k.token <= e,
                Bound::Excluded(e) => k.token < e,
            };
            after_start && before_end
        };
        let memtables: Vec<&Arc<Memtable>> = std::iter::once(&st.memtable)
            .chain(st.flushing.iter())
            .collect();
        let segments = |spec: &sai::IndexSpec| -> Result<Vec<Arc<sai::Segment>>> {
            st.sstables
                .iter()
                .map(|s| segment_for(s, spec, &specs))
                .collect()
        };
        let candidates = sai::candidates(
            &specs,
            q,
            memtables.iter().map(|m| &m.sai),
            &segments,
            &within,
        )?;
        let Some(candidates) = candidates else {
            // An index this node does not know (yet): the caller filters.
            let mut plain = req.clone();
            plain.index = None;
            return self.scan(t.id, &plain, now);
        };
        let static_query = q.clauses.iter().any(|c| {
            specs
                .iter()
                .any(|s| s.name == c.index && s.partition_level())
        });
        let mut it = candidates.0.into_iter();
        assemble_scan_page(req, now, || loop {
            let Some((key, cks)) = it.next() else {
                return Ok(None);
            };
            let clustering = match (cks, &req.filter.clustering) {
                (Some(names), ClusteringFilter::Names(wanted)) => {
                    ClusteringFilter::Names(names.intersection(wanted).cloned().collect())
                }
                (Some(names), c) => {
                    ClusteringFilter::Names(names.into_iter().filter(|n| c.contains(n)).collect())
                }
                (None, c) => c.clone(),
            };
            let filter = ReadFilter {
                clustering,
                ..ReadFilter::default()
            };
            let Some(mut p) = self.read(t.id, &key, &filter, now)? else {
                continue;
            };
            sai::retain_matching(&specs, q, &mut p, now);
            if p.rows.is_empty() && !(static_query && p.static_row.is_some()) {
                continue;
            }
            return Ok(Some(p));
        })
    }
}

impl Inner {
    /// `ORDER BY v ANN OF [..] LIMIT k` on this node's part of a range:
    /// each memtable's graph and each SSTable segment's graph give their
    /// best k rows (among rows matching the other clauses), the merged
    /// rows are read and scored on their live vector (so overwritten and
    /// deleted rows drop out), and the best k are returned, in token
    /// order, as a complete page. When stale versions crowd out live rows,
    /// the sources are asked again for more.
    fn ann_scan(
        &self,
        t: &Arc<Table>,
        req: &ScanRequest,
        q: &sai::IndexQuery,
        a: &sai::AnnQuery,
        now: LocalTime,
    ) -> Result<ScanPage> {
        let specs = t.options.read().indexes.clone();
        let empty = ScanPage {
            partitions: Vec::new(),
            resume: None,
        };
        let Some(spec) = specs
            .iter()
            .find(|s| s.name == a.index && s.vector.is_some())
        else {
            // Not (yet) a vector index on this node.
            return Err(Error::IndexNotAvailable(a.index.clone()));
        };
        let Some(dim) = spec.vector.map(|v| v.dim) else {
            return Ok(empty);
        };
        let Some(query) = crate::ann::decode_vector(&a.vector, dim) else {
            return Ok(empty);
        };
        let st = t.snapshot();
        let Some(start) = scan_start_bound(&req.start) else {
            return Ok(empty);
        };
        let within = |k: &DecoratedKey| {
            let after_start = match &start {
                Bound::Unbounded => true,
                Bound::Included(s) => k >= s,
                Bound::Excluded(s) => k > s,
            };
            let before_end = match req.end {
                Bound::Unbounded => true,
                Bound::Included(e) => k.token <= e,
                Bound::Excluded(e) => k.token < e,
            };
            after_start && before_end
        };
        let memtables: Vec<&Arc<Memtable>> = std::iter::once(&st.memtable)
            .chain(st.flushing.iter())
            .collect();
        let segments_of = |spec: &sai::IndexSpec| -> Result<Vec<Arc<sai::Segment>>> {
            st.sstables
                .iter()
                .map(|s| segment_for(s, spec, &specs))
                .collect()
        };
        // Rows matching the other clauses (None: no other clause).
        let filtered = if q.clauses.is_empty() {
            None
        } else {
            match sai::candidates(
                &specs,
                q,
                memtables.iter().map(|m| &m.sai),
                &segments_of,
                &within,
            )? {
                Some(c) => Some(c),
                None => return Err(Error::IndexNotAvailable(a.index.clone())),
            }
        };
        let allowed = |key: &DecoratedKey, ck: &bytes::Bytes| {
            within(key) && filtered.as_ref().is_none_or(|c| c.holds(key, ck))
        };
        let segments = segments_of(spec)?;
        let k = a.k.clamp(1, sai::MAX_ANN_K);
        let mut want = k;
        let mut scored: Vec<(
            f32,
            DecoratedKey,
            bytes::Bytes,
            gyre_common::Row,
            Option<gyre_common::Row>,
        )>;
        loop {
            let (cands, more) = sai::ann_candidates(
                spec,
                &query,
                want,
                memtables.iter().map(|m| &m.sai),
                &segments,
                &allowed,
                filtered.as_ref(),
            );
            scored = Vec::new();
            for (key, cks) in cands {
                let filter = ReadFilter {
                    clustering: ClusteringFilter::Names(cks),
                    ..ReadFilter::default()
                };
                let Some(mut p) = self.read(t.id, &key, &filter, now)? else {
                    continue;
                };
                if !q.clauses.is_empty() {
                    sai::retain_matching(&specs, q, &mut p, now);
                }
                for (ck, row) in std::mem::take(&mut p.rows) {
                    if let Some(s) = sai::vector_score(spec, &row, now, &query) {
                        scored.push((s, key.clone(), ck, row, p.static_row.clone()));
                    }
                }
            }
            scored.sort_by(|x, y| y.0.total_cmp(&x.0));
            // Done when no source cut off at `want` could still hold a
            // live row better than the k-th found (stale versions in a
            // source push its live rows down its list).
            let kth = if scored.len() >= k {
                scored[k - 1].0
            } else {
                f32::NEG_INFINITY
            };
            // (Strictly better, beyond rounding: the sources score their
            // normalized copies, `scored` the rows' own vectors; a source
            // whose last is the k-th found needs no second search.)
            if !more.iter().any(|last| *last > kth + 1e-5) || want >= k * 16 {
                break;
            }
            want *= 2;
        }
        scored.truncate(k);
        let mut parts: std::collections::BTreeMap<DecoratedKey, Partition> =
            std::collections::BTreeMap::new();
        for (_, key, ck, row, static_row) in scored {
            let p = parts.entry(key.clone()).or_insert_with(|| {
                let mut p = Partition::new(key);
                p.static_row = static_row;
                p
            });
            p.rows.insert(ck, row);
        }
        Ok(ScanPage {
            partitions: parts.into_values().collect(),
            resume: None,
        })
    }
}

/// An SSTable's segment for an index (one of the table's `specs`): from
/// memory, its component file, or built from its data.
fn segment_for(
    s: &SsTable,
    spec: &sai::IndexSpec,
    specs: &[sai::IndexSpec],
) -> Result<Arc<sai::Segment>> {
    sai::segment_of(s, spec, specs)
}

impl LsmEngine {
    /// Index segments of a table's current SSTables read from their
    /// component files, and built from their data, since they were opened
    /// (a restart that finds every component builds none).
    pub fn index_segment_counts(&self, table: TableId) -> Result<(u64, u64)> {
        let t = self.inner.table(table)?;
        let st = t.snapshot();
        Ok(st.sstables.iter().fold((0, 0), |(l, r), s| {
            (
                l + s.sai.loaded.load(Ordering::Relaxed),
                r + s.sai.rebuilt.load(Ordering::Relaxed),
            )
        }))
    }

    /// After start-up a thread loads the index segments of every indexed
    /// table from its SSTables' component files (building those missing),
    /// so that the first queries need not (until it gets there, a query
    /// loads what it needs).
    fn warm_indexes(&self) {
        let tables: Vec<Arc<Table>> = self.inner.tables.read().values().cloned().collect();
        self.warm_segments(tables);
    }

    /// Loads or builds, in a background thread, the index segments of the
    /// SSTables of `tables` that are indexed (segments already in memory
    /// cost nothing): after start-up, and after an import or a stream
    /// brought SSTables without usable components, so that the first
    /// queries need not build them.
    fn warm_segments(&self, tables: Vec<Arc<Table>>) {
        let tables: Vec<Arc<Table>> = tables
            .into_iter()
            .filter(|t| !t.options.read().indexes.is_empty())
            .collect();
        if tables.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("gyre-index-warm".into())
            .spawn(move || {
                background_priority("gyre-index-warm");
                for t in tables {
                    let specs = t.options.read().indexes.clone();
                    for s in t.snapshot().sstables.iter() {
                        for spec in &specs {
                            if inner.closing.load(Ordering::Relaxed) {
                                return;
                            }
                            if let Err(e) = segment_for(s, spec, &specs) {
                                tracing::warn!(index = %spec.name, error = %e, "loading an index segment");
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "starting the index segment rebuild");
        }
    }

    /// Builds new indexes over the SSTables a table already has, in the
    /// background; queries on them are refused until it is done.
    fn start_index_build(&self, t: &Arc<Table>, specs: Vec<sai::IndexSpec>) {
        let sstables = t.snapshot().sstables.clone();
        {
            let mut builds = t.builds.lock();
            for s in &specs {
                builds.insert(
                    s.name.clone(),
                    sai::IndexBuild {
                        index: s.name.clone(),
                        sstables_total: sstables.len(),
                        sstables_done: 0,
                        done: sstables.is_empty(),
                    },
                );
            }
        }
        if sstables.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        let t = t.clone();
        let spawned = std::thread::Builder::new()
            .name("gyre-index-build".into())
            .spawn(move || {
                background_priority("gyre-index-build");
                for s in &sstables {
                    if inner.closing.load(Ordering::Relaxed) {
                        return;
                    }
                    let all = t.options.read().indexes.clone();
                    for spec in &specs {
                        if let Err(e) = segment_for(s, spec, &all) {
                            tracing::error!(index = %spec.name, error = %e, "index build failed");
                            return;
                        }
                    }
                    let mut builds = t.builds.lock();
                    for spec in &specs {
                        if let Some(b) = builds.get_mut(&spec.name) {
                            b.sstables_done += 1;
                        }
                    }
                }
                let mut builds = t.builds.lock();
                for spec in &specs {
                    if let Some(b) = builds.get_mut(&spec.name) {
                        b.done = true;
                        tracing::info!(index = %spec.name, sstables = b.sstables_total, "index built");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "starting an index build");
        }
    }
}

impl StorageEngine for LsmEngine {
    fn create_table(&self, id: TableId, options: TableOptions) -> Result<()> {
        let inner = &self.inner;
        if let Ok(t) = inner.table(id) {
            let old = t.options.read().indexes.clone();
            let added: Vec<_> = options
                .indexes
                .iter()
                .filter(|s| !old.contains(s))
                .cloned()
                .collect();
            {
                // Writes index their memtable under the switch lock's shared
                // side: with it held exclusively, every write is either in a
                // memtable indexed here or sees the new index.
                let _switch = inner.switch_lock.write();
                *t.options.write() = options.clone();
                if !added.is_empty() {
                    let st = t.snapshot();
                    for m in std::iter::once(&st.memtable).chain(st.flushing.iter()) {
                        for p in m.iter() {
                            m.sai.add(&added, &p);
                        }
                    }
                }
            }
            let names: Vec<&str> = options.indexes.iter().map(|s| s.name.as_str()).collect();
            for s in &t.snapshot().sstables {
                s.sai.retain(|n| names.contains(&n));
            }
            t.builds.lock().retain(|n, _| names.contains(&n.as_str()));
            t.persist()?;
            if !added.is_empty() {
                self.start_index_build(&t, added);
            }
            // A new strategy (ALTER TABLE) plans at once.
            inner.request_compaction(id);
            return Ok(());
        }
        let dir = inner.config.data_dir.join(id.to_string());
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let table = open_table(
            &dir,
            TableFile {
                id,
                options,
                truncated_at: None,
                flushed_upto: None,
            },
        )?;
        table.persist()?;
        fsync_dir(&inner.config.data_dir)?;
        inner.tables.write().insert(id, Arc::new(table));
        Ok(())
    }

    fn drop_table(&self, id: TableId) -> Result<()> {
        let inner = &self.inner;
        if inner.config.auto_snapshot && inner.table(id).is_ok() {
            self.auto_snapshot(id, "dropped")?;
        }
        inner.truncate(id)?;
        let Some(t) = inner.tables.write().remove(&id) else {
            return Ok(());
        };
        let _f = t.flush_lock.write();
        let _c = t.compaction_lock.lock();
        if t.dir.join(snapshot::SNAPSHOTS_DIR).is_dir() {
            // Snapshots outlive the table: everything else goes, starting
            // with table.json, so the directory is no table on restart.
            let meta = t.dir.join("table.json");
            fs::remove_file(&meta).ctx(|| format!("removing {}", meta.display()))?;
            for e in fs::read_dir(&t.dir).ctx(|| format!("listing {}", t.dir.display()))? {
                let path = e.ctx(|| format!("listing {}", t.dir.display()))?.path();
                if path
                    .file_name()
                    .is_some_and(|n| n == snapshot::SNAPSHOTS_DIR)
                {
                    continue;
                }
                if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                }
                .ctx(|| format!("removing {}", path.display()))?;
            }
            fsync_dir(&t.dir)?;
        } else {
            fs::remove_dir_all(&t.dir).ctx(|| format!("removing {}", t.dir.display()))?;
        }
        fsync_dir(&inner.config.data_dir)?;
        inner.commitlog.forget_table(id)
    }

    fn truncate_table(&self, id: TableId) -> Result<()> {
        if self.inner.config.auto_snapshot {
            self.auto_snapshot(id, "truncated")?;
        }
        self.inner.truncate(id)
    }

    fn snapshot(&self, table: TableId, tag: &str) -> Result<SnapshotInfo> {
        snapshot::validate_tag(tag)?;
        let inner = &self.inner;
        let t = inner.table(table)?;
        if snapshot::snapshot_dir(&t.dir, tag).exists() {
            return Err(Error::SnapshotExists(tag.to_string()));
        }
        inner.flush_table(&t)?;
        // No compaction deletes an SSTable while it is linked.
        let _c = t.compaction_lock.lock();
        // With their index components, so a restore need not rebuild them.
        let mut files: Vec<PathBuf> = Vec::new();
        for s in &t.snapshot().sstables {
            files.push(s.path().to_path_buf());
            let component = sai::component_path(s.path());
            if component.exists() {
                files.push(component);
            }
        }
        let info = SnapshotInfo {
            tag: tag.to_string(),
            table,
            name: t.options.read().name.clone(),
            created_at: inner.clock.now(),
            files: Vec::new(),
            bytes: 0,
            dir: PathBuf::new(),
        };
        let info = snapshot::create(&t.dir, tag, info, &files)?;
        tracing::info!(table = %table, tag, files = info.files.len(), "snapshot taken");
        Ok(info)
    }

    fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        snapshot::list(&self.inner.config.data_dir)
    }

    fn clear_snapshots(
        &self,
        tag: Option<&str>,
        table: Option<TableId>,
    ) -> Result<Vec<SnapshotInfo>> {
        if let Some(tag) = tag {
            snapshot::validate_tag(tag)?;
        }
        snapshot::clear(&self.inner.config.data_dir, tag, table)
    }

    fn restore_snapshot(&self, table: TableId, from: TableId, tag: &str) -> Result<ImportReport> {
        snapshot::validate_tag(tag)?;
        let t = self.inner.table(table)?;
        let info = snapshot::list(&self.inner.config.data_dir)?
            .into_iter()
            .find(|s| s.table == from && s.tag == tag)
            .ok_or_else(|| Error::InvalidArgument(format!("no snapshot {tag} of table {from}")))?;
        let import = t.dir.join(snapshot::IMPORT_DIR);
        snapshot::stage(&info, &import)?;
        self.import_sstables(table)
    }

    fn import_sstables(&self, table: TableId) -> Result<ImportReport> {
        let inner = &self.inner;
        let t = inner.table(table)?;
        let dir = t.dir.join(snapshot::IMPORT_DIR);
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let mut files = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let path = e.ctx(|| format!("listing {}", dir.display()))?.path();
            if path.is_file() && path.extension().is_some_and(|x| x == "db") {
                files.push(path);
            }
        }
        files.sort();
        let report = inner.import_files(&t, &dir, &files)?;
        if report.files > 0 {
            tracing::info!(table = %table, files = report.files, bytes = report.bytes, "imported SSTables");
            self.warm_segments(vec![t]);
        }
        Ok(report)
    }

    fn stream_files(
        &self,
        table: TableId,
        start: &crate::ScanStart,
        end: &Bound<gyre_common::Token>,
    ) -> Result<Vec<crate::stream::OutgoingFile>> {
        let t = self.inner.table(table)?;
        Ok(crate::stream::OutgoingFile::select(
            &t.snapshot().sstables,
            start,
            end,
        ))
    }

    fn stream_receiver(&self, table: TableId) -> Result<crate::stream::StreamReceiver> {
        let t = self.inner.table(table)?;
        let compression = t.options.read().compression;
        crate::stream::StreamReceiver::new(
            &t.dir,
            compression,
            self.inner.config.block_bytes,
            self.inner.config.bloom_bits_per_key,
        )
    }

    fn import_streamed(
        &self,
        table: TableId,
        receiver: &mut crate::stream::StreamReceiver,
    ) -> Result<ImportReport> {
        let t = self.inner.table(table)?;
        let files = std::mem::take(&mut receiver.staged);
        let dir = receiver.dir.clone();
        let report = self.inner.import_files(&t, &dir, &files);
        match &report {
            // Streamed SSTables come without index components.
            Ok(r) if r.files > 0 => self.warm_segments(vec![t]),
            Ok(_) => {}
            // Whatever was not moved into the table goes with the receiver.
            Err(_) => receiver.staged = files.into_iter().filter(|f| f.exists()).collect(),
        }
        report
    }

    fn tables(&self) -> Vec<(TableId, TableOptions)> {
        self.inner
            .tables
            .read()
            .values()
            .map(|t| (t.id, t.options.read().clone()))
            .collect()
    }

    fn apply(&self, table: TableId, update: Partition) -> Result<()> {
        self.inner.apply(table, update)
    }

    fn apply_deferred(&self, table: TableId, update: Partition) -> WriteFuture {
        self.apply_mutation(Mutation::new(table, update))
    }

    fn apply_mutation(&self, m: Mutation) -> WriteFuture {
        // The common case does the CPU work now and returns the durability
        // wait; a writer over the memory limit waits for a flush first.
        if !self.inner.over_hard_limit() {
            return match self.inner.submit(&m) {
                Ok(pos) => Box::pin(self.inner.commitlog.durable(pos)),
                Err(e) => Box::pin(std::future::ready(Err(e))),
            };
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.admit().await?;
            let pos = inner.submit(&m)?;
            inner.commitlog.durable(pos).await
        })
    }

    fn read(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
    ) -> Result<Option<Partition>> {
        self.inner.read(table, key, filter, now)
    }

    fn scan(&self, table: TableId, request: &ScanRequest, now: LocalTime) -> Result<ScanPage> {
        self.inner.scan(table, request, now)
    }

    fn flush(&self, table: Option<TableId>) -> Result<()> {
        let tables: Vec<Arc<Table>> = match table {
            Some(id) => vec![self.inner.table(id)?],
            None => self.inner.tables.read().values().cloned().collect(),
        };
        for t in tables {
            self.inner.flush_table(&t)?;
        }
        Ok(())
    }

    fn compact(&self, table: TableId) -> Result<()> {
        let t = self.inner.table(table)?;
        let infos = sstable_infos(&t.snapshot());
        let strategy = strategy::strategy_for(&t.options.read().compaction);
        if let Some(task) = strategy.major_task(&infos) {
            self.inner.run_task(&t, &task, None)?;
        }
        // Background compactions skipped the table meanwhile.
        self.inner.request_compaction(table);
        Ok(())
    }

    fn cleanup(
        &self,
        table: TableId,
        keep: &(dyn Fn(gyre_common::Token) -> bool + Sync),
    ) -> Result<()> {
        let t = self.inner.table(table)?;
        self.inner.flush_table(&t)?;
        let strategy = strategy::strategy_for(&t.options.read().compaction);
        // A background compaction may replace the SSTables between the
        // plan and the run (the task then does nothing): plan again.
        let mut done = false;
        for _ in 0..100 {
            let infos = sstable_infos(&t.snapshot());
            let Some(task) = strategy.major_task(&infos) else {
                done = true;
                break;
            };
            if self.inner.run_task(&t, &task, Some(keep))? {
                done = true;
                break;
            }
        }
        self.inner.request_compaction(table);
        if done {
            Ok(())
        } else {
            Err(Error::Unsupported(
                "cleanup: background compactions kept changing the table's SSTables; retry".into(),
            ))
        }
    }

    fn table_stats(&self, table: TableId) -> Result<TableStats> {
        let t = self.inner.table(table)?;
        let st = t.snapshot();
        let strategy = strategy::strategy_for(&t.options.read().compaction);
        let (infos, ctx) = (sstable_infos(&st), self.inner.plan_context(&t, &st));
        let compaction_pending = strategy.next_task(&infos, &ctx).is_some();
        let pending_compaction_bytes = strategy.pending_bytes(&infos, &ctx);
        let active_compaction = t.active.lock().clone();
        Ok(TableStats {
            sstable_count: st.sstables.len(),
            disk_bytes: st.sstables.iter().map(|s| s.file_bytes).sum(),
            memtable_bytes: std::iter::once(&st.memtable)
                .chain(st.flushing.iter())
                .map(|m| m.bytes())
                .sum(),
            estimated_partitions: st
                .sstables
                .iter()
                .map(|s| s.meta.partition_count)
                .sum::<u64>()
                + st.memtable.len() as u64,
            tombstones_on_disk: st.sstables.iter().map(|s| s.meta.tombstone_count).sum(),
            bytes_flushed: t.bytes_flushed.load(Ordering::Relaxed),
            memtable_bytes_flushed: t.memtable_bytes_flushed.load(Ordering::Relaxed),
            flush_micros: t.flush_micros.load(Ordering::Relaxed),
            bytes_compacted: t.bytes_compacted.load(Ordering::Relaxed),
            compactions: t.compactions.load(Ordering::Relaxed),
            compactions_failed: t.compactions_failed.load(Ordering::Relaxed),
            sstables_per_level: {
                let mut levels = Vec::new();
                for s in &st.sstables {
                    let l = s.meta.level as usize;
                    if levels.len() <= l {
                        levels.resize(l + 1, 0);
                    }
                    levels[l] += 1;
                }
                levels
            },
            expired_sstables_dropped: t.expired_dropped.load(Ordering::Relaxed),
            expired_bytes_dropped: t.expired_bytes_dropped.load(Ordering::Relaxed),
            compaction_pending,
            pending_compaction_bytes,
            active_compaction,
            bloom_filter_bytes: st.sstables.iter().map(|s| s.memory_bytes().0 as u64).sum(),
            index_bytes: st.sstables.iter().map(|s| s.memory_bytes().1 as u64).sum(),
        })
    }

    fn engine_stats(&self) -> EngineStats {
        EngineStats {
            commitlog_bytes_written: self.inner.commitlog.bytes_written(),
            commitlog_syncs: self.inner.commitlog.syncs(),
            commitlog_records: self.inner.commitlog.records(),
            memtable_bytes: self.inner.memtable_bytes.load(Ordering::Relaxed),
            tables: self.inner.tables.read().len(),
            ..self.inner.memory_stats()
        }
    }

    fn serves_indexes(&self) -> bool {
        true
    }

    fn index_builds(&self) -> Vec<(TableId, sai::IndexBuild)> {
        let tables: Vec<Arc<Table>> = self.inner.tables.read().values().cloned().collect();
        let mut out = Vec::new();
        for t in tables {
            for b in t.builds.lock().values() {
                out.push((t.id, b.clone()));
            }
        }
        out.sort_by(|a, b| (a.0, &a.1.index).cmp(&(b.0, &b.1.index)));
        out
    }

    fn failure(&self) -> Option<String> {
        self.inner.commitlog.failure()
    }
}
