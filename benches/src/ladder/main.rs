//! `layer-ladder`: what a CQL write (and read) costs at each layer of the
//! request path, measured one layer after another in one run with the same
//! commitlog sync mode, requests in flight and value size:
//!
//! 1. `engine`: `LsmEngine::apply_deferred` / `read`, with the partition
//!    the query processor would build (row marker + a `v` cell).
//! 2. `qp`: `QueryProcessor::execute_plan` over `LocalData` (the engine
//!    alone), statements parsed and planned once (as PREPARE does), values
//!    bound per request.
//! 3. `coord`: the same through a started node's query processor, whose
//!    data access is the coordinator (`ClusterData`, ring, strategy, the
//!    sole-replica fast path).
//! 4. `handler`: the node's CQL request handler (`CqlHandler`), EXECUTE of
//!    a PREPAREd statement, without socket or frame codec.
//! 5. `tcp`: a node in its own process, driven over loopback by the scylla
//!    driver (prepared statements, CL ONE), as gyre-stress does.
//!
//! In-process layers run on a tokio runtime with 2 workers (the node's
//! own runtime has one per core: 2 here), `--concurrency` tasks each
//! issuing requests back to back. Per layer and op: ops/s, wall µs per op
//! (1 / throughput), CPU µs per op (this process for in-process layers, the
//! node process for `tcp`), each with its difference to the layer below,
//! and allocations per request from a counting global allocator.
//!
//! Run: `cargo run --release -p gyre-benches --bin layer-ladder -- --help`

// The counting allocator, getrusage, sysconf and kill.
#![allow(unsafe_code)]

mod alloc;
mod node_proc;

use std::future::Future;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_node::config::{CommitlogSync, CommitlogSyncArg};
use gyre_node::NodeConfig;
use gyre_protocol::{
    ConnectionState, Consistency, CqlResult, Execute, HandlerRequest, Prepare, QueryParameters,
    Response, Values,
};
use gyre_query::{LocalData, QueryParams, QueryProcessor, QueryResult, Value};
use gyre_storage::{LsmConfig, LsmEngine, ReadFilter, StorageEngine, SystemClock, TableId};

use crate::alloc::Allocs;
use crate::node_proc::NodeProcess;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const KEYSPACE_DDL: &str = "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = \
                            {'class': 'SimpleStrategy', 'replication_factor': 1}";
const TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS ks.t (k bigint PRIMARY KEY, v blob)";
const INSERT: &str = "INSERT INTO ks.t (k, v) VALUES (?, ?)";
const SELECT: &str = "SELECT v FROM ks.t WHERE k = ?";

/// The loopback address of every node this bench starts.
const NODE_IP: &str = "127.0.0.61";

#[derive(Parser, Debug)]
#[command(about = "Measures a write and a read at each layer of Gyre's request path")]
struct Args {
    /// Timed operations per layer and op (writes, then reads of those keys).
    /// The default keeps every write of a layer (warm-up and repeats
    /// included) in the memtable, so that reads measure the same thing at
    /// every layer; far more lets a flush land in some layers' runs.
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Untimed operations before each timed run (default: ops / 10).
    #[arg(long)]
    warmup: Option<u64>,
    /// Timed runs per layer and op; the table shows the median by ops/s
    /// and the range.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Commitlog sync mode for every layer.
    #[arg(long, value_enum, default_value = "group")]
    sync: CommitlogSyncArg,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Layers to run, bottom up: engine, qp, coord, handler, tcp.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "engine,qp,coord,handler,tcp"
    )]
    layers: Vec<String>,
    /// Skip the reads.
    #[arg(long)]
    no_reads: bool,
    /// Driver connections for `tcp` (gyre-stress's default is 2).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// A built `gyre` binary for `tcp` (default: this binary re-executed as
    /// a node, the same node code `gyre` runs).
    #[arg(long)]
    gyre_bin: Option<PathBuf>,
    /// Do not count allocations (to see what counting costs).
    #[arg(long)]
    no_alloc_count: bool,
    /// Runs a node with this config until SIGTERM (used for `tcp`).
    #[arg(long, hide = true)]
    serve_node: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    Engine,
    Qp,
    Coord,
    Handler,
    Tcp,
}

impl Layer {
    fn parse(s: &str) -> anyhow::Result<Layer> {
        Ok(match s.trim() {
            "engine" => Layer::Engine,
            "qp" => Layer::Qp,
            "coord" => Layer::Coord,
            "handler" => Layer::Handler,
            "tcp" => Layer::Tcp,
            other => bail!("unknown layer {other:?} (engine, qp, coord, handler, tcp)"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Layer::Engine => "engine (LsmEngine)",
            Layer::Qp => "qp (QueryProcessor + LocalData)",
            Layer::Coord => "coord (node's QueryProcessor + coordinator)",
            Layer::Handler => "handler (CqlHandler, EXECUTE)",
            Layer::Tcp => "tcp (node process + scylla driver)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Write,
    Read,
}

/// One timed run.
struct Sample {
    layer: Layer,
    op: Op,
    ops: u64,
    wall: Duration,
    /// This process's CPU for in-process layers; the node process's for tcp.
    cpu: Duration,
    /// This process's CPU (the driver) for tcp.
    client_cpu: Option<Duration>,
    /// Allocations in this process (the driver's, for tcp).
    allocs: Allocs,
    misses: u64,
    /// Commitlog fsyncs during the run (writes only).
    fsyncs: Option<u64>,
    /// Lowest and highest ops/s of the repeated runs.
    range: (f64, f64),
}

impl Sample {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64()
    }

    fn wall_us(&self) -> f64 {
        self.wall.as_secs_f64() * 1e6 / self.ops as f64
    }

    fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ops as f64
    }
}

/// What every layer shares.
struct Ctx {
    ops: u64,
    warmup: u64,
    repeat: usize,
    concurrency: usize,
    sync: CommitlogSync,
    value: Bytes,
    reads: bool,
    connections: usize,
    gyre_bin: Option<PathBuf>,
}

/// The key of read `i`: spread over the `n` written keys.
fn read_key(i: u64, n: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) % n.max(1)
}

fn key_bytes(k: u64) -> Bytes {
    Bytes::copy_from_slice(&(k as i64).to_be_bytes())
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Runs `f(key_of(i))` for `i` in `0..n` from `concurrency` tasks; returns
/// the elapsed time and how many calls answered `false` (a read miss).
async fn drive<K, F, Fut>(n: u64, concurrency: usize, key_of: K, f: F) -> anyhow::Result<u64>
where
    K: Fn(u64) -> u64 + Send + Sync + 'static,
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<bool>> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let misses = Arc::new(AtomicU64::new(0));
    let work = Arc::new((key_of, f));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, misses, work) = (next.clone(), misses.clone(), work.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                if !(work.1)((work.0)(i)).await? {
                    misses.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a request task panicked")??;
    }
    Ok(misses.load(Ordering::Relaxed))
}

/// The commitlog's fsync count so far, where it can be read.
type SyncProbe = Box<dyn Fn() -> Option<u64> + Send + Sync>;

fn engine_syncs(engine: Arc<dyn StorageEngine>) -> SyncProbe {
    Box::new(move || Some(engine.engine_stats().commitlog_syncs))
}

/// Warms up then times writes of keys `0..ops`, then (unless disabled)
/// warms up and times reads of those keys; each timed run `repeat` times,
/// keeping the median by ops/s.
async fn measure<W, WF, R, RF>(
    ctx: &Ctx,
    layer: Layer,
    server: Option<u32>,
    syncs: SyncProbe,
    write: W,
    read: R,
) -> anyhow::Result<Vec<Sample>>
where
    W: Fn(u64) -> WF + Send + Sync + 'static,
    WF: Future<Output = anyhow::Result<bool>> + Send + 'static,
    R: Fn(u64) -> RF + Send + Sync + 'static,
    RF: Future<Output = anyhow::Result<bool>> + Send + 'static,
{
    let write = Arc::new(write);
    let read = Arc::new(read);
    let mut out = Vec::new();
    let (ops, warmup, conc) = (ctx.ops, ctx.warmup, ctx.concurrency);
    for op in [Op::Write, Op::Read] {
        if op == Op::Read && !ctx.reads {
            break;
        }
        let timed = |warm: bool| {
            let (write, read) = (write.clone(), read.clone());
            async move {
                let n = if warm { warmup } else { ops };
                match op {
                    // Warm-up writes go to keys above the timed ones.
                    Op::Write => {
                        let base = if warm { ops } else { 0 };
                        drive(n, conc, move |i| base + i, move |k| (*write)(k)).await
                    }
                    Op::Read => {
                        drive(n, conc, move |i| read_key(i, ops), move |k| (*read)(k)).await
                    }
                }
            }
        };
        if warmup > 0 {
            timed(true).await?;
        }
        let mut runs = Vec::new();
        for _ in 0..ctx.repeat.max(1) {
            let syncs0 = syncs();
            let cpu0 = (
                node_proc::self_cpu(),
                server.map(node_proc::proc_cpu).transpose()?,
            );
            let allocs0 = Allocs::now();
            let t0 = Instant::now();
            let misses = timed(false).await?;
            let wall = t0.elapsed();
            let allocs = Allocs::now().since(allocs0);
            let fsyncs = match (op, syncs0, syncs()) {
                (Op::Write, Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            };
            let self_cpu = node_proc::self_cpu().saturating_sub(cpu0.0);
            let (cpu, client_cpu) = match (server, cpu0.1) {
                (Some(pid), Some(c0)) => {
                    (node_proc::proc_cpu(pid)?.saturating_sub(c0), Some(self_cpu))
                }
                _ => (self_cpu, None),
            };
            let s = Sample {
                layer,
                op,
                ops,
                wall,
                cpu,
                client_cpu,
                allocs,
                misses,
                fsyncs,
                range: (0.0, 0.0),
            };
            eprintln!(
                "  {:<8} {:>9.0} ops/s  {:>7.2} us/op wall  {:>7.2} us/op CPU",
                format!("{op:?}").to_lowercase(),
                s.ops_per_sec(),
                s.wall_us(),
                s.cpu_us()
            );
            runs.push(s);
        }
        runs.sort_by(|a, b| a.ops_per_sec().total_cmp(&b.ops_per_sec()));
        let range = (
            runs.first().map_or(0.0, Sample::ops_per_sec),
            runs.last().map_or(0.0, Sample::ops_per_sec),
        );
        let mut median = runs.swap_remove(runs.len() / 2);
        median.range = range;
        out.push(median);
    }
    Ok(out)
}

/// The engine configuration a node uses for `sync` (gyre-node's
/// `open_engine`: `LsmConfig::default()` but the directories and sync).
fn lsm_config(dir: &Path, sync: CommitlogSync) -> LsmConfig {
    let storage = gyre_node::config::StorageConfig {
        commitlog_sync: sync,
        ..Default::default()
    };
    LsmConfig {
        data_dir: dir.join("data"),
        commitlog_dir: dir.join("commitlog"),
        sync: storage.sync_mode(),
        ..LsmConfig::default()
    }
}

/// A node configuration on [`NODE_IP`] with its own ports.
fn node_config(dir: &Path, sync: CommitlogSync, port_offset: u16) -> anyhow::Result<NodeConfig> {
    let mut cfg = NodeConfig::default();
    cfg.cluster.name = "layer-ladder".into();
    cfg.network.listen_address = NODE_IP.parse()?;
    cfg.network.internode_port = 7000 + port_offset;
    cfg.network.cql_port = 9042 + port_offset;
    cfg.network.admin_port = 9180 + port_offset;
    cfg.admin.listen_address = cfg.network.listen_address;
    cfg.cluster.seeds = vec![cfg.network.internode_addr().to_string()];
    cfg.storage.data_dir = dir.join("data");
    cfg.storage.commitlog_dir = dir.join("commitlog");
    cfg.storage.commitlog_sync = sync;
    cfg.log.level = "warn".into();
    cfg.validate()?;
    Ok(cfg)
}

/// Runs the keyspace and table DDL through `qp` (on the blocking pool, as
/// the node's handler does).
async fn create_schema(qp: &Arc<QueryProcessor>) -> anyhow::Result<()> {
    for ddl in [KEYSPACE_DDL, TABLE_DDL] {
        let qp = qp.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let parsed = gyre_cql::parse(ddl)?;
            qp.execute_schema_change(&parsed, &QueryParams::default())?;
            Ok(())
        })
        .await??;
    }
    Ok(())
}

async fn engine_layer(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let dir = tempfile::tempdir()?;
    let engine = Arc::new(LsmEngine::open(lsm_config(dir.path(), ctx.sync))?);
    let table = TableId(uuid::Uuid::from_u128(1));
    engine.create_table(table, Default::default())?;
    let value = ctx.value.clone();
    let (we, re) = (engine.clone(), engine.clone());
    let now = now_micros() / 1_000_000;
    let samples = measure(
        ctx,
        Layer::Engine,
        None,
        engine_syncs(engine.clone()),
        move |k| {
            // What the query processor builds for the INSERT: a row marker
            // and the cell, at one timestamp.
            let ts = now_micros();
            let p = Partition::with_key(key_bytes(k))
                .set(
                    Bytes::new(),
                    CellName::simple(Bytes::new()),
                    Cell::live(ts, Bytes::new()),
                )
                .set(
                    Bytes::new(),
                    CellName::simple(Bytes::from_static(b"v")),
                    Cell::live(ts, value.clone()),
                );
            let fut = we.apply_deferred(table, p);
            async move {
                fut.await?;
                Ok(true)
            }
        },
        move |k| {
            let r = re.read(
                table,
                &DecoratedKey::new(key_bytes(k)),
                &ReadFilter::all(),
                now,
            );
            async move { Ok(r?.is_some()) }
        },
    )
    .await?;
    drop(engine);
    Ok(samples)
}

/// Writes and reads through `qp` with statements parsed and planned once.
async fn qp_samples(
    ctx: &Ctx,
    layer: Layer,
    qp: Arc<QueryProcessor>,
    syncs: SyncProbe,
) -> anyhow::Result<Vec<Sample>> {
    create_schema(&qp).await?;
    let planned = |cql: &str| -> anyhow::Result<_> {
        let parsed = gyre_cql::parse(cql)?;
        let plan = qp
            .plan(&parsed, None)
            .ok_or_else(|| anyhow::anyhow!("no plan for {cql}"))?;
        Ok(Arc::new((plan, parsed.bind_markers.len())))
    };
    let insert = planned(INSERT)?;
    let select = planned(SELECT)?;
    let value = ctx.value.clone();
    let qr = qp.clone();
    measure(
        ctx,
        layer,
        None,
        syncs,
        move |k| {
            let (qp, insert, value) = (qp.clone(), insert.clone(), value.clone());
            async move {
                let params = QueryParams {
                    values: vec![Value::Bytes(key_bytes(k)), Value::Bytes(value)],
                    consistency: Consistency::One,
                    ..Default::default()
                };
                qp.execute_plan(&insert.0, insert.1, &params).await?;
                Ok(true)
            }
        },
        move |k| {
            let (qp, select) = (qr.clone(), select.clone());
            async move {
                let params = QueryParams {
                    values: vec![Value::Bytes(key_bytes(k))],
                    consistency: Consistency::One,
                    ..Default::default()
                };
                match qp.execute_plan(&select.0, select.1, &params).await? {
                    QueryResult::Rows { rows, .. } => Ok(!rows.is_empty()),
                    other => bail!("SELECT answered {other:?}"),
                }
            }
        },
    )
    .await
}

async fn qp_layer(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let dir = tempfile::tempdir()?;
    let engine = Arc::new(LsmEngine::open(lsm_config(dir.path(), ctx.sync))?);
    let store = gyre_schema::SchemaStore::open(engine.clone())?;
    let qp = Arc::new(QueryProcessor::new(
        gyre_schema::Schema::new(),
        Some(store),
        Arc::new(LocalData::new(engine.clone())),
        Arc::new(SystemClock),
    ));
    qp_samples(ctx, Layer::Qp, qp, engine_syncs(engine)).await
}

async fn coord_layer(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let dir = tempfile::tempdir()?;
    let node = gyre_node::Node::start(node_config(dir.path(), ctx.sync, 101)?).await?;
    let samples = qp_samples(
        ctx,
        Layer::Coord,
        node.query_processor_for_bench(),
        engine_syncs(node.engine_for_bench()),
    )
    .await;
    node.shutdown().await?;
    samples
}

fn prepared_id(r: Response) -> anyhow::Result<Bytes> {
    match r {
        Response::Result(CqlResult::Prepared(p)) => Ok(p.id),
        other => bail!("PREPARE answered {other:?}"),
    }
}

async fn handler_layer(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let dir = tempfile::tempdir()?;
    let node = gyre_node::Node::start(node_config(dir.path(), ctx.sync, 102)?).await?;
    let run = async {
        create_schema(&node.query_processor_for_bench()).await?;
        let handler = node.cql_handler_for_bench();
        let conn = Arc::new(ConnectionState::new(1, "127.0.0.1:40000".parse()?));
        let prepare = |q: &str| {
            HandlerRequest::Prepare(Prepare {
                query: q.to_owned(),
                keyspace: None,
            })
        };
        let insert = prepared_id(handler.handle(&conn, prepare(INSERT)).await)?;
        let select = prepared_id(handler.handle(&conn, prepare(SELECT)).await)?;
        let value = ctx.value.clone();
        let (hr, cr) = (handler.clone(), conn.clone());
        let execute = |id: Bytes, values: Vec<Value>| {
            HandlerRequest::Execute(Execute {
                id,
                result_metadata_id: None,
                params: QueryParameters {
                    consistency: Consistency::One,
                    values: Values::Positional(values),
                    skip_metadata: true,
                    ..Default::default()
                },
            })
        };
        measure(
            ctx,
            Layer::Handler,
            None,
            engine_syncs(node.engine_for_bench()),
            move |k| {
                let (handler, conn) = (handler.clone(), conn.clone());
                let req = execute(
                    insert.clone(),
                    vec![Value::Bytes(key_bytes(k)), Value::Bytes(value.clone())],
                );
                async move {
                    match handler.handle(&conn, req).await {
                        Response::Result(CqlResult::Void) => Ok(true),
                        other => bail!("INSERT answered {other:?}"),
                    }
                }
            },
            move |k| {
                let (handler, conn) = (hr.clone(), cr.clone());
                let req = execute(select.clone(), vec![Value::Bytes(key_bytes(k))]);
                async move {
                    match handler.handle(&conn, req).await {
                        Response::Result(CqlResult::Rows(r)) => Ok(!r.rows.is_empty()),
                        other => bail!("SELECT answered {other:?}"),
                    }
                }
            },
        )
        .await
    };
    let samples = run.await;
    node.shutdown().await?;
    samples
}

async fn tcp_layer(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    use scylla::client::session_builder::SessionBuilder;
    use scylla::client::PoolSize;

    let dir = tempfile::tempdir()?;
    let cfg = node_config(dir.path(), ctx.sync, 0)?;
    let node = NodeProcess::start(&cfg, dir.path(), ctx.gyre_bin.as_deref())?;
    let run = async {
        let session = SessionBuilder::new()
            .known_node(cfg.network.cql_addr().to_string())
            .pool_size(PoolSize::PerHost(
                NonZeroUsize::new(ctx.connections).context("--connections must be > 0")?,
            ))
            .auto_await_schema_agreement(false)
            .build()
            .await
            .context("connecting the driver")?;
        for ddl in [KEYSPACE_DDL, TABLE_DDL] {
            session.query_unpaged(ddl, ()).await?;
        }
        let mut insert = session.prepare(INSERT).await?;
        let mut select = session.prepare(SELECT).await?;
        for p in [&mut insert, &mut select] {
            p.set_consistency(scylla::statement::Consistency::One);
            p.set_is_idempotent(true);
        }
        let session = Arc::new(session);
        let value: Arc<Vec<u8>> = Arc::new(ctx.value.to_vec());
        let sr = session.clone();
        let admin = cfg.admin_addr();
        let syncs: SyncProbe = Box::new(move || metrics_syncs(admin));
        measure(
            ctx,
            Layer::Tcp,
            Some(node.pid()),
            syncs,
            move |k| {
                let (session, insert, value) = (session.clone(), insert.clone(), value.clone());
                async move {
                    session
                        .execute_unpaged(&insert, (k as i64, value.as_slice()))
                        .await?;
                    Ok(true)
                }
            },
            move |k| {
                let (session, select) = (sr.clone(), select.clone());
                async move {
                    let r = session.execute_unpaged(&select, (k as i64,)).await?;
                    Ok(r.into_rows_result()?.rows_num() > 0)
                }
            },
        )
        .await
    };
    let samples = run.await;
    node.stop()?;
    samples
}

/// `gyre_storage_commitlog_syncs_total` from the node's `/metrics`.
fn metrics_syncs(admin: std::net::SocketAddr) -> Option<u64> {
    let text = gyre_node::http::get(admin, "/metrics", Duration::from_secs(5)).ok()?;
    text.lines()
        .find(|l| l.starts_with("gyre_storage_commitlog_syncs_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

fn print_table(ctx: &Ctx, samples: &[Sample], counting: bool) {
    println!(
        "\nlayer ladder: commitlog {:?}, {} in flight, {} B values, {} timed ops per layer and op \
         (+{} warm-up), median of {} runs, {} cores\n",
        ctx.sync,
        ctx.concurrency,
        ctx.value.len(),
        ctx.ops,
        ctx.warmup,
        ctx.repeat.max(1),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "| op | layer | ops/s | ops/s range | µs/op (wall) | Δ wall µs/op | CPU µs/op | Δ CPU µs/op | allocs/op | bytes alloc/op | writes/fsync |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for op in [Op::Write, Op::Read] {
        let mut below: Option<&Sample> = None;
        for s in samples.iter().filter(|s| s.op == op) {
            let delta = |f: fn(&Sample) -> f64| {
                below.map_or("—".to_string(), |b| format!("{:+.2}", f(s) - f(b)))
            };
            let (allocs, bytes) = match (counting, s.layer) {
                (false, _) => ("off".to_string(), "off".to_string()),
                (true, Layer::Tcp) => ("n/a".to_string(), "n/a".to_string()),
                (true, _) => (
                    format!("{:.1}", s.allocs.calls as f64 / s.ops as f64),
                    format!("{:.0}", s.allocs.bytes as f64 / s.ops as f64),
                ),
            };
            let per_fsync = match s.fsyncs {
                Some(0) => "no fsync".to_string(),
                Some(n) => format!("{:.1}", s.ops as f64 / n as f64),
                None => "—".to_string(),
            };
            println!(
                "| {} | {} | {:.0} | {:.0}–{:.0} | {:.2} | {} | {:.2} | {} | {} | {} | {} |",
                format!("{op:?}").to_lowercase(),
                s.layer.name(),
                s.ops_per_sec(),
                s.range.0,
                s.range.1,
                s.wall_us(),
                delta(Sample::wall_us),
                s.cpu_us(),
                delta(Sample::cpu_us),
                allocs,
                bytes,
                per_fsync,
            );
            if let Some(c) = s.client_cpu {
                notes.push(format!(
                    "tcp {}: the node process used {:.2} CPU µs/op; the driver (this process) {:.2} CPU µs/op{}",
                    format!("{op:?}").to_lowercase(),
                    s.cpu_us(),
                    c.as_secs_f64() * 1e6 / s.ops as f64,
                    if counting {
                        format!(
                            " and {:.1} allocs/op",
                            s.allocs.calls as f64 / s.ops as f64
                        )
                    } else {
                        String::new()
                    }
                ));
            }
            if s.misses > 0 {
                notes.push(format!(
                    "{} {}: {} of {} reads found no row",
                    s.layer.name(),
                    format!("{op:?}").to_lowercase(),
                    s.misses,
                    s.ops
                ));
            }
            below = Some(s);
        }
    }
    println!();
    println!(
        "µs/op (wall) is 1 / throughput with {} requests in flight (latency ≈ {} × it). CPU µs/op: \
         this process's CPU (every thread: workers, commitlog syncer, flusher) per op for the \
         in-process layers, the node process's for tcp. Δ: minus the row above. Allocations: \
         calls to the global allocator per op, this process, every thread. writes/fsync: timed \
         writes per commitlog fsync (in group mode a write waits for its group's fsync, so wall \
         time there follows the disk more than the layer).",
        ctx.concurrency, ctx.concurrency
    );
    for n in notes {
        println!("- {n}");
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(conf) = &args.serve_node {
        return node_proc::serve(conf);
    }
    alloc::set_enabled(!args.no_alloc_count);
    let layers = args
        .layers
        .iter()
        .map(|l| Layer::parse(l))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.ops == 0 || args.concurrency == 0 {
        bail!("--ops and --concurrency must be at least 1");
    }
    let ctx = Ctx {
        ops: args.ops,
        warmup: args.warmup.unwrap_or(args.ops / 10),
        repeat: args.repeat,
        concurrency: args.concurrency,
        sync: args.sync.into(),
        value: Bytes::from(vec![0x5a; args.value_size]),
        reads: !args.no_reads,
        connections: args.connections,
        gyre_bin: args.gyre_bin.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let samples = rt.block_on(async {
        let mut all = Vec::new();
        for layer in &layers {
            eprintln!("{}", layer.name());
            let mut s = match layer {
                Layer::Engine => engine_layer(&ctx).await,
                Layer::Qp => qp_layer(&ctx).await,
                Layer::Coord => coord_layer(&ctx).await,
                Layer::Handler => handler_layer(&ctx).await,
                Layer::Tcp => tcp_layer(&ctx).await,
            }
            .with_context(|| format!("layer {}", layer.name()))?;
            all.append(&mut s);
        }
        anyhow::Ok(all)
    })?;
    print_table(&ctx, &samples, alloc::enabled());
    Ok(())
}
