//! `engine-bench`: storage engine workloads with ops/s, latency percentiles,
//! bytes on disk and peak memory.
//!
//! Run: `cargo run --release -p gyre-benches --bin engine-bench -- --help`
//!
//! Workloads (each on a fresh table):
//! - `write1` / `write4`: random writes of `--partitions` partitions with
//!   `--value-size` byte values, by 1 and 4 writer threads, commitlog on;
//! - `read`: random point reads of those partitions after flush and major
//!   compaction;
//! - `slice`: clustering-slice reads of 100 rows from wide partitions;
//! - `mixed`: 50/50 random reads and overwrites of the `write1` data;
//! - `delete`: half the partitions deleted, then random reads;
//! - `scale`: one writer loads `--scale-base` partitions (the reference
//!   figure), then `--partitions` into a fresh table with progress lines
//!   (ops/s, SSTables, pending compaction, disk, RSS), random point reads
//!   of the settled table, and overwrites of random existing keys with the
//!   space amplification once compaction settles (`scale.rs`).
//!
//! `--engine both` (with `--features rocksdb`) runs every workload on the
//! native engine and on RocksDB in one process and prints them side by side,
//! with write amplification from `/proc/self/io`.

mod scale;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use gyre_common::{Cell, CellName, DecoratedKey, Partition, Slice, SliceBound};
use gyre_storage::{
    ClusteringFilter, LsmConfig, LsmEngine, ReadFilter, StorageEngine, SyncMode, TableId,
    TableOptions,
};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks a Gyre storage engine")]
struct Args {
    /// Comma-separated workloads: write1, write4, read, slice, mixed,
    /// delete, scale (not in the default set).
    #[arg(long, default_value = "write1,write4,read,slice,mixed,delete")]
    workloads: String,
    #[arg(long, default_value_t = 1_000_000)]
    partitions: u64,
    /// Point reads to time in the `read` workload.
    #[arg(long, default_value_t = 500_000)]
    reads: u64,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Commitlog sync: periodic, group or batch.
    #[arg(long, default_value = "periodic")]
    sync: String,
    /// Directory for data (default: a temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Memtable budget in MiB, for both engines (default: each engine's
    /// own: Gyre's is a fraction of memory, RocksDB's 64 MiB per table).
    #[arg(long)]
    memtable_mb: Option<u64>,
    /// Gyre's memtable flush threads (`memtable_flush_writers`). Memtables
    /// use up to (1 + N) x `--memtable-mb`; the default 1 matches RocksDB's
    /// two write buffers of `--memtable-mb` each (equal budget).
    #[arg(long, default_value_t = 1)]
    flush_writers: usize,
    /// Engine: gyre, rocksdb (needs `--features rocksdb`) or both.
    #[arg(long, default_value = "gyre")]
    engine: String,
    /// Print results as JSON lines too.
    #[arg(long)]
    json: bool,
    /// The tables' compaction option as CQL writes it, comma-separated
    /// (e.g. `class=LeveledCompactionStrategy,sstable_size_in_mb=16`);
    /// default size-tiered. The native engine only.
    #[arg(long)]
    compaction: Option<String>,
    /// After each write workload, wait (untimed) until background
    /// compaction has nothing left to do, so that write amplification
    /// counts the whole compaction debt (native engine).
    #[arg(long)]
    settle: bool,
    /// Print resident memory and the engine's memory per component to
    /// stderr every this many milliseconds (0: never).
    #[arg(long, default_value_t = 0)]
    memory_trace_ms: u64,
    /// `scale`: partitions of the reference load (the "1M figure").
    #[arg(long, default_value_t = 1_000_000)]
    scale_base: u64,
    /// `scale`: overwrites, as a share of `--partitions`.
    #[arg(long, default_value_t = 1.0)]
    overwrite_share: f64,
    /// `scale`: seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    progress_secs: u64,
    /// `scale`: the longest wait for compaction to settle, in seconds.
    #[arg(long, default_value_t = 3600)]
    settle_cap_secs: u64,
    /// `scale`: stop with an error when the disk holding the data has less
    /// than this many GiB free (checked with every progress line).
    #[arg(long, default_value_t = 15)]
    min_free_gb: u64,
}

/// Resident memory now (VmRSS).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `--memory-trace-ms`: a thread printing RSS and the engine's memory.
fn memory_trace(engine: &Arc<dyn StorageEngine>, every: Duration) {
    let engine = Arc::downgrade(engine);
    let start = Instant::now();
    std::thread::spawn(move || {
        let mib = |b: u64| b as f64 / 1048576.0;
        while let Some(e) = engine.upgrade() {
            let s = e.engine_stats();
            drop(e);
            eprintln!(
                "mem {:>7.2}s rss {:>7.1} memtables {:>7.1} bloom {:>5.1} index {:>5.1} cache {:>5.1} MiB",
                start.elapsed().as_secs_f64(),
                mib(rss()),
                mib(s.memtable_bytes),
                mib(s.bloom_filter_bytes),
                mib(s.index_bytes),
                mib(s.block_cache_bytes),
            );
            std::thread::sleep(every);
        }
    });
}

/// The node's allocator (crates/node/src/main.rs), so that peak RSS is
/// what the product would use: glibc malloc keeps much of what a flushed
/// memtable frees in its arenas.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set from `--settle`.
static SETTLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Waits until the table's compaction strategy has nothing to do (at most
/// an hour).
fn settle(engine: &Arc<dyn StorageEngine>, table: TableId) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    while engine.table_stats(table)?.compaction_pending && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The options of every table the workloads create (`--compaction`).
static TABLE_OPTIONS: std::sync::OnceLock<TableOptions> = std::sync::OnceLock::new();

fn table_options() -> TableOptions {
    TABLE_OPTIONS.get().cloned().unwrap_or_default()
}

fn parse_compaction(spec: &str) -> anyhow::Result<gyre_storage::CompactionOptions> {
    let mut map = std::collections::BTreeMap::new();
    for kv in spec.split(',') {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--compaction: {kv:?} is not key=value"))?;
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    gyre_storage::CompactionOptions::from_cql(&map).map_err(anyhow::Error::msg)
}

struct Report {
    name: String,
    ops: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    disk_bytes: u64,
    user_bytes: u64,
    peak_rss: u64,
    /// Bytes written to storage during the workload (`/proc/self/io`).
    disk_written: u64,
}

impl Report {
    /// Bytes written to disk per byte of user data.
    fn write_amp(&self) -> f64 {
        self.disk_written as f64 / self.user_bytes.max(1) as f64
    }

    fn print(&self, json: bool) {
        let secs = self.elapsed.as_secs_f64();
        let q = |p: f64| self.hist.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "{:<8} {:>9} ops {:>8.1}s {:>10.0} ops/s  p50 {:>7.1}us  p99 {:>8.1}us  p99.9 {:>8.1}us  disk {:>8.1} MiB  user {:>7.1} MiB  WA {:>5.2}  peak RSS {:>7.1} MiB",
            self.name,
            self.ops,
            secs,
            self.ops as f64 / secs,
            q(0.5),
            q(0.99),
            q(0.999),
            self.disk_bytes as f64 / 1048576.0,
            self.user_bytes as f64 / 1048576.0,
            self.write_amp(),
            self.peak_rss as f64 / 1048576.0,
        );
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "workload": self.name, "ops": self.ops, "seconds": secs,
                    "ops_per_sec": self.ops as f64 / secs,
                    "p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999),
                    "disk_bytes": self.disk_bytes, "user_bytes": self.user_bytes, "peak_rss": self.peak_rss,
                    "disk_written": self.disk_written, "write_amplification": self.write_amp(),
                })
            );
        }
    }
}

/// Peak resident memory since the last reset (VmHWM).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Partition key `i`: spread over the ring by the token, like real keys.
fn key(i: u64) -> Bytes {
    Bytes::from(format!(
        "user{:012}",
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % 1_000_000_000_000
    ))
}

fn value(rng: &mut impl Rng, size: usize) -> Bytes {
    let mut v = vec![0u8; size];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn sync_mode(s: &str) -> anyhow::Result<SyncMode> {
    Ok(match s {
        "periodic" => SyncMode::Periodic { period_ms: 10_000 },
        "group" => SyncMode::Group { window_ms: 2 },
        "batch" => SyncMode::Batch,
        other => anyhow::bail!("unknown sync mode {other}"),
    })
}

fn write_workload(
    engine: &Arc<dyn StorageEngine>,
    table: TableId,
    name: &str,
    partitions: u64,
    threads: u64,
    value_size: usize,
) -> anyhow::Result<Report> {
    engine.create_table(table, table_options())?;
    reset_peak_rss();
    let start = Instant::now();
    let per = partitions / threads;
    let hists = std::thread::scope(|s| -> anyhow::Result<Vec<Histogram<u64>>> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let engine = engine.clone();
                s.spawn(move || -> anyhow::Result<Histogram<u64>> {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                    let mut hist = new_hist();
                    for i in (t * per)..((t + 1) * per) {
                        let p = Partition::with_key(key(i)).set(
                            Bytes::new(),
                            CellName::simple("v"),
                            Cell::live(1, value(&mut rng, value_size)),
                        );
                        let t0 = Instant::now();
                        engine.apply(table, p)?;
                        hist.record(t0.elapsed().as_nanos() as u64)?;
                    }
                    Ok(hist)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("writer panicked"))?)
            .collect()
    })?;
    let elapsed = start.elapsed();
    let mut hist = new_hist();
    for h in hists {
        hist.add(h)?;
    }
    // Untimed: puts the memtable on disk so that bytes on disk and write
    // amplification compare the engines on the same data, not on how much
    // each happens to hold in memory.
    engine.flush(Some(table))?;
    if SETTLE.load(std::sync::atomic::Ordering::Relaxed) {
        settle(engine, table)?;
    }
    let stats = engine.table_stats(table)?;
    if stats.flush_micros > 0 {
        // The flush's throughput in memtable bytes (as budgeted) per second
        // of flush-thread time: what decides whether flushes keep up.
        let secs = stats.flush_micros as f64 / 1e6;
        let mib = stats.memtable_bytes_flushed as f64 / 1048576.0;
        println!(
            "{name}: flushes wrote {mib:.1} MiB of memtables in {secs:.2}s: {:.0} MiB/s",
            mib / secs
        );
    }
    Ok(Report {
        name: name.into(),
        ops: per * threads,
        elapsed,
        hist,
        disk_bytes: stats.disk_bytes,
        user_bytes: per * threads * (value_size as u64 + 16),
        peak_rss: peak_rss(),
        disk_written: 0,
    })
}

/// Bytes this process has caused to be written to storage (`/proc/self/io`).
fn io_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("write_bytes:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_engine(
    name: &str,
    dir: &std::path::Path,
    args: &Args,
) -> anyhow::Result<Arc<dyn StorageEngine>> {
    match name {
        "gyre" => {
            let mut config = LsmConfig {
                sync: sync_mode(&args.sync)?,
                ..LsmConfig::in_dir(dir)
            };
            if let Some(mb) = args.memtable_mb {
                config.memtable_space_bytes = mb << 20;
            }
            config.memtable_flush_writers = args.flush_writers;
            Ok(Arc::new(
                LsmEngine::open(config).context("opening the gyre engine")?,
            ))
        }
        #[cfg(feature = "rocksdb")]
        "rocksdb" => {
            let mut config = gyre_storage_rocksdb::RocksConfig {
                sync: sync_mode(&args.sync)?,
                ..gyre_storage_rocksdb::RocksConfig::in_dir(dir)
            };
            if let Some(mb) = args.memtable_mb {
                config.memtable_bytes = usize::try_from(mb << 20)?;
            }
            Ok(Arc::new(
                gyre_storage_rocksdb::RocksEngine::open(config)
                    .context("opening the rocksdb engine")?,
            ))
        }
        other => anyhow::bail!("unknown engine {other} (rocksdb needs `--features rocksdb`)"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    SETTLE.store(args.settle, std::sync::atomic::Ordering::Relaxed);
    if let Some(spec) = &args.compaction {
        let compaction = parse_compaction(spec)?;
        println!("compaction: {compaction:?}");
        let _ = TABLE_OPTIONS.set(TableOptions {
            compaction,
            ..Default::default()
        });
    }
    let tmp = tempfile::tempdir()?;
    let base = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let engines: Vec<&str> = match args.engine.as_str() {
        "both" => vec!["gyre", "rocksdb"],
        e => vec![e],
    };
    println!(
        "partitions: {}  value: {} B  sync: {}  dir: {}",
        args.partitions,
        args.value_size,
        args.sync,
        base.display()
    );
    let mut all: Vec<(String, Report)> = Vec::new();
    for name in &engines {
        let dir = base.join(name);
        let engine = open_engine(name, &dir, &args)?;
        if args.memory_trace_ms > 0 {
            memory_trace(&engine, Duration::from_millis(args.memory_trace_ms));
        }
        println!("== engine {name}");
        for report in run_workloads(&engine, &args, &dir)? {
            report.print(args.json);
            all.push((name.to_string(), report));
        }
    }
    if engines.len() == 2 {
        print_side_by_side(&all);
    }
    Ok(())
}

/// The side-by-side table (Markdown): each cell is "gyre / rocksdb", and
/// `ops ratio` is gyre's ops/s over RocksDB's (1.0x or more: gyre keeps up).
fn print_side_by_side(all: &[(String, Report)]) {
    println!(
        "\n| workload | ops/s gyre / rocks | ops ratio | p50 us | p99 us | disk MiB | WA | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mib = |b: u64| b as f64 / 1048576.0;
    for (_, g) in all.iter().filter(|(e, _)| e == "gyre") {
        let Some((_, r)) = all.iter().find(|(e, r)| e == "rocksdb" && r.name == g.name) else {
            continue;
        };
        let ops = |x: &Report| x.ops as f64 / x.elapsed.as_secs_f64();
        let q = |x: &Report, p: f64| x.hist.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "| {} | {:.0} / {:.0} | {:.2}x | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} / {:.2} | {:.0} / {:.0} |",
            g.name,
            ops(g),
            ops(r),
            ops(g) / ops(r),
            q(g, 0.5),
            q(r, 0.5),
            q(g, 0.99),
            q(r, 0.99),
            mib(g.disk_bytes),
            mib(r.disk_bytes),
            g.write_amp(),
            r.write_amp(),
            mib(g.peak_rss),
            mib(r.peak_rss),
        );
    }
}

fn run_workloads(
    engine: &Arc<dyn StorageEngine>,
    args: &Args,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Report>> {
    let mut out = Vec::new();
    let workloads: Vec<&str> = args.workloads.split(',').collect();
    let write_table = TableId(uuid::Uuid::from_u128(1));
    let mut have_data = false;
    for w in &workloads {
        if *w == "scale" {
            out.extend(scale::run(engine, args, dir)?);
            continue;
        }
        let io_before = io_write_bytes();
        let mut report = match *w {
            "write1" => {
                have_data = true;
                write_workload(
                    engine,
                    write_table,
                    "write1",
                    args.partitions,
                    1,
                    args.value_size,
                )?
            }
            "write4" => write_workload(
                engine,
                TableId(uuid::Uuid::from_u128(4)),
                "write4",
                args.partitions,
                4,
                args.value_size,
            )?,
            "read" => {
                if !have_data {
                    write_workload(
                        engine,
                        write_table,
                        "load",
                        args.partitions,
                        1,
                        args.value_size,
                    )?;
                }
                engine.flush(None)?;
                engine.compact(write_table)?;
                reset_peak_rss();
                let mut rng = rand::rngs::StdRng::seed_from_u64(99);
                let mut hist = new_hist();
                let filter = ReadFilter::all();
                let start = Instant::now();
                let mut found = 0u64;
                for _ in 0..args.reads {
                    let k = DecoratedKey::new(key(rng.gen_range(0..args.partitions)));
                    let t0 = Instant::now();
                    if engine.read(write_table, &k, &filter, 0)?.is_some() {
                        found += 1;
                    }
                    hist.record(t0.elapsed().as_nanos() as u64)?;
                }
                let elapsed = start.elapsed();
                anyhow::ensure!(
                    found == args.reads,
                    "only {found} of {} reads found data",
                    args.reads
                );
                let stats = engine.table_stats(write_table)?;
                Report {
                    name: "read".into(),
                    ops: args.reads,
                    elapsed,
                    hist,
                    disk_bytes: stats.disk_bytes,
                    user_bytes: args.partitions * (args.value_size as u64 + 16),
                    peak_rss: peak_rss(),
                    disk_written: 0,
                }
            }
            "slice" => {
                let table = TableId(uuid::Uuid::from_u128(5));
                engine.create_table(table, table_options())?;
                let (parts, rows) = (100u64, 10_000u64);
                let mut rng = rand::rngs::StdRng::seed_from_u64(5);
                for p in 0..parts {
                    for chunk in 0..(rows / 100) {
                        let mut u = Partition::with_key(key(p));
                        for r in chunk * 100..(chunk + 1) * 100 {
                            u = u.set(
                                Bytes::copy_from_slice(&r.to_be_bytes()),
                                CellName::simple("v"),
                                Cell::live(1, value(&mut rng, args.value_size)),
                            );
                        }
                        engine.apply(table, u)?;
                    }
                }
                engine.flush(Some(table))?;
                engine.compact(table)?;
                reset_peak_rss();
                let mut hist = new_hist();
                let n = 20_000u64;
                let start = Instant::now();
                for _ in 0..n {
                    let k = DecoratedKey::new(key(rng.gen_range(0..parts)));
                    let from = rng.gen_range(0..rows - 100);
                    let filter = ReadFilter {
                        clustering: ClusteringFilter::Slices(vec![Slice::new(
                            SliceBound::Inclusive(Bytes::copy_from_slice(&from.to_be_bytes())),
                            SliceBound::Exclusive(Bytes::copy_from_slice(
                                &(from + 100).to_be_bytes(),
                            )),
                        )]),
                        ..ReadFilter::all()
                    };
                    let t0 = Instant::now();
                    let got = engine
                        .read(table, &k, &filter, 0)?
                        .map_or(0, |p| p.rows.len());
                    hist.record(t0.elapsed().as_nanos() as u64)?;
                    anyhow::ensure!(got == 100, "slice returned {got} rows");
                }
                let stats = engine.table_stats(table)?;
                Report {
                    name: "slice".into(),
                    ops: n,
                    elapsed: start.elapsed(),
                    hist,
                    disk_bytes: stats.disk_bytes,
                    user_bytes: parts * rows * (args.value_size as u64 + 8),
                    peak_rss: peak_rss(),
                    disk_written: 0,
                }
            }
            "mixed" => {
                if !have_data {
                    write_workload(
                        engine,
                        write_table,
                        "load",
                        args.partitions,
                        1,
                        args.value_size,
                    )?;
                    have_data = true;
                }
                let mut rng = rand::rngs::StdRng::seed_from_u64(7);
                let mut hist = new_hist();
                let filter = ReadFilter::all();
                let start = Instant::now();
                for _ in 0..args.reads {
                    let i = rng.gen_range(0..args.partitions);
                    let t0 = Instant::now();
                    if rng.gen_bool(0.5) {
                        let p = Partition::with_key(key(i)).set(
                            Bytes::new(),
                            CellName::simple("v"),
                            Cell::live(2, value(&mut rng, args.value_size)),
                        );
                        engine.apply(write_table, p)?;
                    } else {
                        engine.read(write_table, &DecoratedKey::new(key(i)), &filter, 0)?;
                    }
                    hist.record(t0.elapsed().as_nanos() as u64)?;
                }
                let elapsed = start.elapsed();
                if SETTLE.load(std::sync::atomic::Ordering::Relaxed) {
                    // Untimed: the overwrites on disk and compacted, so
                    // bytes on disk show the space amplification.
                    engine.flush(Some(write_table))?;
                    settle(engine, write_table)?;
                }
                let stats = engine.table_stats(write_table)?;
                Report {
                    name: "mixed".into(),
                    ops: args.reads,
                    elapsed,
                    hist,
                    disk_bytes: stats.disk_bytes,
                    user_bytes: args.reads / 2 * (args.value_size as u64 + 16),
                    peak_rss: peak_rss(),
                    disk_written: 0,
                }
            }
            "delete" => {
                // Tombstones then reads: half the partitions deleted.
                let table = TableId(uuid::Uuid::from_u128(8));
                let n = (args.partitions / 5).max(1);
                write_workload(engine, table, "load", n, 1, args.value_size)?;
                for i in (0..n).step_by(2) {
                    let p = Partition::with_key(key(i))
                        .delete_partition(gyre_common::Deletion::new(5, 0));
                    engine.apply(table, p)?;
                }
                engine.flush(Some(table))?;
                let mut rng = rand::rngs::StdRng::seed_from_u64(8);
                let mut hist = new_hist();
                let filter = ReadFilter::all();
                let start = Instant::now();
                let mut live = 0u64;
                for _ in 0..args.reads {
                    let i = rng.gen_range(0..n);
                    let t0 = Instant::now();
                    let got = engine.read(table, &DecoratedKey::new(key(i)), &filter, 0)?;
                    hist.record(t0.elapsed().as_nanos() as u64)?;
                    if got.is_some_and(|p| !gyre_common::lww::live_view(&p, 0).is_empty()) {
                        live += 1;
                    }
                }
                anyhow::ensure!(live < args.reads, "deleted partitions were read back");
                let stats = engine.table_stats(table)?;
                Report {
                    name: "delete".into(),
                    ops: args.reads,
                    elapsed: start.elapsed(),
                    hist,
                    disk_bytes: stats.disk_bytes,
                    user_bytes: n * (args.value_size as u64 + 16),
                    peak_rss: peak_rss(),
                    disk_written: 0,
                }
            }
            other => anyhow::bail!("unknown workload {other}"),
        };
        let _ = &mut report;
        report.disk_written = io_write_bytes().saturating_sub(io_before);
        out.push(report);
    }
    Ok(out)
}
