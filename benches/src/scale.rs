//! The `scale` workload (issue 19): one writer loads `--scale-base`
//! partitions (the reference figure), then `--partitions` partitions into a
//! fresh table with a progress line every `--progress-secs`; then random
//! point reads of the settled table; then overwrites of random existing
//! keys and the space amplification once compaction has settled.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::{ReadFilter, StorageEngine, TableId};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use crate::{
    io_write_bytes, key, new_hist, peak_rss, reset_peak_rss, rss, table_options, value, Args,
    Report,
};

/// Bytes of the files under `dir` (SSTables, commitlog, WAL, manifests).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Free bytes on the file system holding `dir`, for unprivileged users
/// (`df`: the crate has no unsafe code for statvfs).
fn free_bytes(dir: &Path) -> u64 {
    std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().nth(1).and_then(|l| l.trim().parse().ok()))
        .unwrap_or(u64::MAX)
}

fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

const MIB: f64 = 1048576.0;

/// Progress lines and the maxima seen over a phase.
struct Tracker<'a> {
    engine: &'a Arc<dyn StorageEngine>,
    table: TableId,
    dir: &'a Path,
    every: Duration,
    phase: &'static str,
    start: Instant,
    last: Instant,
    last_rows: u64,
    last_rate: f64,
    max_sstables: usize,
    max_pending: u64,
    max_rss: u64,
    max_disk: u64,
    /// Stop (an error) when the disk's free space falls below this: the
    /// machine is shared.
    min_free: u64,
}

impl<'a> Tracker<'a> {
    fn new(
        engine: &'a Arc<dyn StorageEngine>,
        table: TableId,
        dir: &'a Path,
        every: Duration,
    ) -> Self {
        let now = Instant::now();
        Tracker {
            engine,
            table,
            dir,
            every,
            phase: "",
            start: now,
            last: now,
            last_rows: 0,
            last_rate: 0.0,
            max_sstables: 0,
            max_pending: 0,
            max_rss: 0,
            max_disk: 0,
            min_free: 0,
        }
    }

    /// Starts a phase: rows and the interval rate count from here.
    fn phase(&mut self, phase: &'static str) {
        self.phase = phase;
        self.start = Instant::now();
        self.last = self.start;
        self.last_rows = 0;
        self.last_rate = 0.0;
    }

    /// Prints a line if `every` has passed since the last one.
    fn tick(&mut self, rows: u64) -> anyhow::Result<()> {
        if self.last.elapsed() >= self.every {
            self.print(rows)?;
        }
        Ok(())
    }

    fn print(&mut self, rows: u64) -> anyhow::Result<()> {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64().max(1e-9);
        self.last_rate = (rows - self.last_rows) as f64 / dt;
        self.last = now;
        self.last_rows = rows;
        let s = self.engine.table_stats(self.table)?;
        let disk = dir_bytes(self.dir);
        let free = free_bytes(self.dir);
        anyhow::ensure!(
            free >= self.min_free,
            "stopping: {:.1} GiB free on the disk, under --min-free-gb",
            free as f64 / 1073741824.0
        );
        let rss = rss();
        self.max_sstables = self.max_sstables.max(s.sstable_count);
        self.max_pending = self.max_pending.max(s.pending_compaction_bytes);
        self.max_rss = self.max_rss.max(rss);
        self.max_disk = self.max_disk.max(disk);
        println!(
            "{} {:>7.1}s rows {:>10} {:>8.0} ops/s  sstables {:>4} {:?} pending {} ({:>8.1} MiB)  sst {:>8.1} MiB dir {:>8.1} MiB free {:>5.1} GiB  rss {:>6.1} MiB  load1 {}",
            self.phase,
            now.duration_since(self.start).as_secs_f64(),
            rows,
            self.last_rate,
            s.sstable_count,
            s.sstables_per_level,
            s.compaction_pending,
            s.pending_compaction_bytes as f64 / MIB,
            s.disk_bytes as f64 / MIB,
            disk as f64 / MIB,
            free as f64 / 1073741824.0,
            rss as f64 / MIB,
            load1(),
        );
        Ok(())
    }

    /// Waits (with progress lines) until compaction has nothing to do, at
    /// most `cap`; returns how long it took and whether it settled.
    fn settle(&mut self, cap: Duration) -> anyhow::Result<(Duration, bool)> {
        self.phase("settle");
        let start = Instant::now();
        loop {
            let s = self.engine.table_stats(self.table)?;
            if !s.compaction_pending && s.pending_compaction_bytes == 0 {
                self.print(0)?;
                return Ok((start.elapsed(), true));
            }
            if start.elapsed() >= cap {
                self.print(0)?;
                return Ok((start.elapsed(), false));
            }
            self.tick(0)?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One writer applying `n` partitions (keys from `pick`) at `ts`.
#[allow(clippy::too_many_arguments)]
fn load(
    engine: &Arc<dyn StorageEngine>,
    table: TableId,
    n: u64,
    value_size: usize,
    ts: i64,
    mut pick: impl FnMut(u64) -> u64,
    seed: u64,
    tracker: Option<&mut Tracker<'_>>,
) -> anyhow::Result<(Duration, Histogram<u64>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut hist = new_hist();
    let mut tracker = tracker;
    let start = Instant::now();
    for i in 0..n {
        let p = Partition::with_key(key(pick(i))).set(
            Bytes::new(),
            CellName::simple("v"),
            Cell::live(ts, value(&mut rng, value_size)),
        );
        let t0 = Instant::now();
        engine.apply(table, p)?;
        hist.record(t0.elapsed().as_nanos() as u64)?;
        if i % 1024 == 0 {
            if let Some(t) = tracker.as_deref_mut() {
                t.tick(i)?;
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(t) = tracker {
        t.print(n)?;
    }
    Ok((elapsed, hist))
}

pub fn run(
    engine: &Arc<dyn StorageEngine>,
    args: &Args,
    dir: &Path,
) -> anyhow::Result<Vec<Report>> {
    let run_start = Instant::now();
    let row_bytes = args.value_size as u64 + 16;
    let every = Duration::from_secs(args.progress_secs.max(1));
    let cap = Duration::from_secs(args.settle_cap_secs);
    let mut out = Vec::new();
    println!("scale: load1 at start {}", load1());

    // The reference: the same writer and values, `--scale-base` partitions.
    let base = TableId(uuid::Uuid::from_u128(100));
    engine.create_table(base, table_options())?;
    reset_peak_rss();
    let io0 = io_write_bytes();
    let (elapsed, hist) = load(
        engine,
        base,
        args.scale_base,
        args.value_size,
        1,
        |i| i,
        1,
        None,
    )?;
    engine.flush(Some(base))?;
    let s = engine.table_stats(base)?;
    out.push(Report {
        name: "base-load".into(),
        ops: args.scale_base,
        elapsed,
        hist,
        disk_bytes: s.disk_bytes,
        user_bytes: args.scale_base * row_bytes,
        peak_rss: peak_rss(),
        disk_written: io_write_bytes().saturating_sub(io0),
    });
    out.last().into_iter().for_each(|r| r.print(args.json));
    engine.drop_table(base)?;

    // The load at scale.
    let table = TableId(uuid::Uuid::from_u128(101));
    engine.create_table(table, table_options())?;
    let n = args.partitions;
    let mut tracker = Tracker::new(engine, table, dir, every);
    tracker.min_free = args.min_free_gb << 30;
    tracker.phase("load");
    reset_peak_rss();
    let io0 = io_write_bytes();
    let (elapsed, hist) = load(
        engine,
        table,
        n,
        args.value_size,
        1,
        |i| i,
        2,
        Some(&mut tracker),
    )?;
    let last_rate = tracker.last_rate;
    let io_load = io_write_bytes().saturating_sub(io0);
    engine.flush(Some(table))?;
    let (settle_load, settled_load) = tracker.settle(cap)?;
    let io_settled = io_write_bytes().saturating_sub(io0);
    let s = engine.table_stats(table)?;
    out.push(Report {
        name: "scale-load".into(),
        ops: n,
        elapsed,
        hist,
        disk_bytes: s.disk_bytes,
        user_bytes: n * row_bytes,
        peak_rss: peak_rss(),
        disk_written: io_settled,
    });
    out.last().into_iter().for_each(|r| r.print(args.json));
    let base_rate = out[0].ops as f64 / out[0].elapsed.as_secs_f64();
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "scale-load: whole {:.0} ops/s ({:.2}x of base {:.0}), last interval {:.0} ops/s ({:.2}x); WA during load {:.2}, after settle {:.2}; settle {:.1}s (settled: {settled_load})",
        rate,
        rate / base_rate,
        base_rate,
        last_rate,
        last_rate / base_rate,
        io_load as f64 / (n * row_bytes) as f64,
        io_settled as f64 / (n * row_bytes) as f64,
        settle_load.as_secs_f64(),
    );

    // Random point reads of the settled table.
    tracker.phase("read");
    reset_peak_rss();
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut hist = new_hist();
    let filter = ReadFilter::all();
    let start = Instant::now();
    let mut found = 0u64;
    for r in 0..args.reads {
        let k = DecoratedKey::new(key(rng.gen_range(0..n)));
        let t0 = Instant::now();
        if engine.read(table, &k, &filter, 0)?.is_some() {
            found += 1;
        }
        hist.record(t0.elapsed().as_nanos() as u64)?;
        if r % 1024 == 0 {
            tracker.tick(r)?;
        }
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(
        found == args.reads,
        "only {found} of {} reads found data",
        args.reads
    );
    let s = engine.table_stats(table)?;
    out.push(Report {
        name: "scale-read".into(),
        ops: args.reads,
        elapsed,
        hist,
        disk_bytes: s.disk_bytes,
        user_bytes: n * row_bytes,
        peak_rss: peak_rss(),
        disk_written: 0,
    });
    out.last().into_iter().for_each(|r| r.print(args.json));

    // Overwrites of random existing keys, then space amplification.
    let m = (n as f64 * args.overwrite_share) as u64;
    tracker.phase("overwrite");
    reset_peak_rss();
    let io0 = io_write_bytes();
    let mut krng = rand::rngs::StdRng::seed_from_u64(7);
    let (elapsed, hist) = load(
        engine,
        table,
        m,
        args.value_size,
        2,
        |_| krng.gen_range(0..n),
        3,
        Some(&mut tracker),
    )?;
    engine.flush(Some(table))?;
    let (settle_ow, settled_ow) = tracker.settle(cap)?;
    let s = engine.table_stats(table)?;
    let dir_now = dir_bytes(dir);
    out.push(Report {
        name: "overwrite".into(),
        ops: m,
        elapsed,
        hist,
        disk_bytes: s.disk_bytes,
        user_bytes: m * row_bytes,
        peak_rss: peak_rss(),
        disk_written: io_write_bytes().saturating_sub(io0),
    });
    out.last().into_iter().for_each(|r| r.print(args.json));
    let live = (n * row_bytes) as f64;
    println!(
        "overwrite: {m} writes; settle {:.1}s (settled: {settled_ow}); space amplification: SSTables {:.3}x, whole dir {:.3}x ({:.1} / {:.1} MiB over {:.1} MiB live)",
        settle_ow.as_secs_f64(),
        s.disk_bytes as f64 / live,
        dir_now as f64 / live,
        s.disk_bytes as f64 / MIB,
        dir_now as f64 / MIB,
        live / MIB,
    );
    println!(
        "scale summary: max sstables {}, max pending compaction {:.1} MiB, max dir {:.1} MiB, max rss {:.1} MiB, run {:.1}s, load1 at end {}",
        tracker.max_sstables,
        tracker.max_pending as f64 / MIB,
        tracker.max_disk as f64 / MIB,
        tracker.max_rss as f64 / MIB,
        run_start.elapsed().as_secs_f64(),
        load1(),
    );
    Ok(out)
}
