//! protocol-bench: throughput of one node's CQL server at protocol v4 and
//! v5 in one run, over raw connections (no driver in the way; the scylla
//! driver, which gyre-stress uses, speaks only v4).
//!
//! Each connection prepares a statement and keeps `--in-flight` EXECUTEs
//! outstanding, writing the next requests as responses arrive (one write
//! per read). Rounds alternate between the versions (v4, v5, v4, v5, ...)
//! so that drift in the machine's load hits both alike; the report gives
//! each version's median ops/s and its ratio to the first (v4).
//!
//! Without `--addr` it starts its own node (this binary, or `--gyre-bin`)
//! on 127.0.53.1 with the periodic commitlog in a scratch directory, and
//! also reports the node's CPU per operation.
//!
//! ```sh
//! cargo run --release -p gyre-benches --bin protocol-bench -- --op read --lz4
//! ```

// node_proc (shared with the layer ladder) signals and measures the node
// process through libc.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[allow(dead_code)] // shared with the layer ladder, which uses all of it
#[path = "ladder/node_proc.rs"]
mod node_proc;

/// What node_proc expects of the ladder's counting allocator, which this
/// binary does not install.
mod alloc {
    pub fn set_enabled(_: bool) {}
}

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use gyre_protocol::{
    decode_frame, Compression, Consistency, CqlResult, Deframer, Execute, FrameWriter, Prepare,
    ProtocolVersion, Query, QueryParameters, Request, RequestFrame, Response, ResponseFrame, Value,
    Values, DEFAULT_MAX_FRAME_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "CQL server throughput at protocol v4 and v5, interleaved")]
struct Cli {
    /// A running node's CQL address; without it a node is started.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// With `--addr`: the node's pid, to report its CPU per operation.
    #[arg(long)]
    node_pid: Option<u32>,
    /// The gyre binary for the node started here (default: this binary).
    #[arg(long)]
    gyre_bin: Option<PathBuf>,
    /// Runs a node with this config until SIGTERM (the started node).
    #[arg(long, hide = true)]
    serve_node: Option<PathBuf>,
    /// Connections per round.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests outstanding per connection.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Seconds per round.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Requests per round (over all connections) instead of `--seconds`:
    /// a fixed amount of work, for counting the node's instructions per
    /// operation (e.g. under callgrind).
    #[arg(long)]
    requests: Option<u64>,
    /// Rounds per version.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// `write` (INSERT of a 100-byte value) or `read` (SELECT of one row).
    #[arg(long, default_value = "read")]
    op: String,
    /// Negotiate lz4 (v4: per envelope; v5: per frame).
    #[arg(long)]
    lz4: bool,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Do not load the keys (a node loaded by an earlier run): reloading
    /// adds versions of every row, which makes later reads cost more than
    /// earlier ones on the same node.
    #[arg(long)]
    skip_load: bool,
    /// Protocol versions to compare (4 and 5; `4` alone drives a node
    /// that serves only v4).
    #[arg(long, value_delimiter = ',', default_value = "4,5")]
    versions: Vec<u8>,
}

const INSERT: &str = "INSERT INTO protocol_bench.kv (k, v) VALUES (?, ?)";
const SELECT: &str = "SELECT v FROM protocol_bench.kv WHERE k = ?";

/// One connection speaking `version`.
struct Conn {
    socket: TcpStream,
    version: ProtocolVersion,
    compression: Compression,
    deframer: Option<Deframer>,
    writer: Option<FrameWriter>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Requests pushed since the last flush (with lz4 framing they wait in
    /// the frame writer, not in `wbuf`).
    pending: bool,
}

impl Conn {
    async fn open(addr: SocketAddr, version: ProtocolVersion, lz4: bool) -> Result<Self> {
        let socket = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        socket.set_nodelay(true)?;
        let mut c = Conn {
            socket,
            version,
            compression: Compression::None,
            deframer: None,
            writer: None,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(64 * 1024),
            pending: false,
        };
        let mut opts =
            std::collections::BTreeMap::from([("CQL_VERSION".to_string(), "3.4.7".to_string())]);
        if lz4 {
            opts.insert("COMPRESSION".into(), "lz4".into());
        }
        c.push(0, Request::Startup(opts));
        c.flush().await?;
        match c.recv().await? {
            (_, Response::Ready) => {}
            (_, other) => bail!("STARTUP answered {other:?}"),
        }
        if version.is_v5() {
            c.deframer = Some(Deframer::new(lz4, DEFAULT_MAX_FRAME_BYTES));
            c.writer = Some(FrameWriter::new(lz4));
        } else if lz4 {
            c.compression = Compression::Lz4;
        }
        Ok(c)
    }

    /// Queues a request in the write buffer.
    fn push(&mut self, stream: i16, request: Request) {
        let mut rf = RequestFrame::new(stream, request);
        rf.version = self.version;
        let frame = rf.to_frame(self.compression);
        self.pending = true;
        match &mut self.writer {
            Some(w) => w.push(&mut self.wbuf, |dst| frame.encode(dst)),
            None => frame.encode(&mut self.wbuf),
        }
    }

    async fn flush(&mut self) -> Result<()> {
        if let Some(w) = &mut self.writer {
            w.finish(&mut self.wbuf);
        }
        self.socket.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        self.pending = false;
        Ok(())
    }

    /// Decodes one buffered response, if a whole one is there.
    fn try_decode(&mut self) -> Result<Option<(i16, Response)>> {
        let frame = match &mut self.deframer {
            Some(d) => d.decode(&mut self.rbuf)?,
            None => decode_frame(&mut self.rbuf, DEFAULT_MAX_FRAME_BYTES)?,
        };
        let Some(frame) = frame else {
            return Ok(None);
        };
        let rf = ResponseFrame::decode(&frame, self.compression, DEFAULT_MAX_FRAME_BYTES)?;
        Ok(Some((rf.stream, rf.response)))
    }

    async fn fill(&mut self) -> Result<()> {
        if self.socket.read_buf(&mut self.rbuf).await? == 0 {
            bail!("connection closed by the server");
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<(i16, Response)> {
        loop {
            if let Some(r) = self.try_decode()? {
                return Ok(r);
            }
            self.fill().await?;
        }
    }

    async fn request(&mut self, request: Request) -> Result<Response> {
        self.push(1, request);
        self.flush().await?;
        Ok(self.recv().await?.1)
    }
}

fn key_value(k: u64) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&(k as i64).to_be_bytes()))
}

async fn setup(addr: SocketAddr, keys: u64, load: bool) -> Result<()> {
    let mut c = Conn::open(addr, ProtocolVersion::V4, false).await?;
    for q in [
        "CREATE KEYSPACE IF NOT EXISTS protocol_bench WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE IF NOT EXISTS protocol_bench.kv (k bigint PRIMARY KEY, v blob)",
    ] {
        let r = c
            .request(Request::Query(Query {
                query: q.into(),
                params: QueryParameters::default(),
            }))
            .await?;
        if let Response::Error(e) = r {
            bail!("{q}: {e}");
        }
    }
    if !load {
        return Ok(());
    }
    // Load every key once so that reads find rows.
    let id = prepare(&mut c, INSERT).await?;
    let value = Value::Bytes(Bytes::from(vec![7u8; 100]));
    for chunk in (0..keys).collect::<Vec<_>>().chunks(256) {
        for (i, k) in chunk.iter().enumerate() {
            c.push(i as i16, execute(&id, vec![key_value(*k), value.clone()]));
        }
        c.flush().await?;
        for _ in chunk {
            if let (_, Response::Error(e)) = c.recv().await? {
                bail!("loading: {e}");
            }
        }
    }
    Ok(())
}

async fn prepare(c: &mut Conn, query: &str) -> Result<(Bytes, Option<Bytes>)> {
    match c
        .request(Request::Prepare(Prepare {
            query: query.into(),
            keyspace: None,
        }))
        .await?
    {
        Response::Result(CqlResult::Prepared(p)) => {
            let meta = c.version.is_v5().then_some(p.result_metadata_id);
            Ok((p.id, meta))
        }
        other => bail!("PREPARE answered {other:?}"),
    }
}

/// EXECUTE of a prepared `(id, result metadata id)`.
fn execute(id: &(Bytes, Option<Bytes>), values: Vec<Value>) -> Request {
    Request::Execute(Execute {
        id: id.0.clone(),
        result_metadata_id: id.1.clone(),
        params: QueryParameters {
            consistency: Consistency::One,
            values: Values::Positional(values),
            skip_metadata: true,
            ..QueryParameters::default()
        },
    })
}

/// When a connection stops sending: at a time, or after a number of
/// requests.
#[derive(Clone, Copy)]
enum Until {
    Deadline(Instant),
    Requests(u64),
}

/// One connection's closed loop until `until`; returns the responses.
async fn drive(
    cli: Cli,
    addr: SocketAddr,
    version: ProtocolVersion,
    seed: u64,
    until: Until,
) -> Result<u64> {
    let mut c = Conn::open(addr, version, cli.lz4).await?;
    let write = cli.op == "write";
    let id = prepare(&mut c, if write { INSERT } else { SELECT }).await?;
    let value = Value::Bytes(Bytes::from(vec![9u8; 100]));
    let mut next = seed;
    let request = |next: &mut u64| {
        *next = next
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = key_value((*next >> 33) % cli.keys);
        let values = if write {
            vec![k, value.clone()]
        } else {
            vec![k]
        };
        execute(&id, values)
    };
    let quota = match until {
        Until::Deadline(_) => u64::MAX,
        Until::Requests(n) => n,
    };
    let mut sent = 0u64;
    for s in 0..(cli.in_flight as u64).min(quota) {
        c.push(s as i16, request(&mut next));
        sent += 1;
    }
    c.flush().await?;
    let mut done = 0u64;
    let mut outstanding = sent;
    while outstanding > 0 {
        c.fill().await?;
        let open = match until {
            Until::Deadline(d) => Instant::now() < d,
            Until::Requests(_) => true,
        };
        while let Some((stream, response)) = c.try_decode()? {
            if let Response::Error(e) = response {
                bail!("request failed: {e}");
            }
            done += 1;
            outstanding -= 1;
            if open && sent < quota {
                c.push(stream, request(&mut next));
                sent += 1;
                outstanding += 1;
            }
        }
        if c.pending {
            c.flush().await?;
        }
    }
    Ok(done)
}

/// One round: ops/s and the number of operations.
async fn round(cli: &Cli, version: ProtocolVersion, round: usize) -> Result<(f64, u64)> {
    let addr = cli.addr.context("no node address")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(cli.seconds);
    let n = cli.connections as u64;
    let tasks: Vec<_> = (0..cli.connections)
        .map(|i| {
            let seed = (round * 1000 + i) as u64;
            let until = match cli.requests {
                // Split evenly, the remainder to the first connections.
                Some(total) => Until::Requests(total / n + u64::from((i as u64) < total % n)),
                None => Until::Deadline(deadline),
            };
            tokio::spawn(drive(cli.clone(), addr, version, seed, until))
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok((total as f64 / started.elapsed().as_secs_f64(), total))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The node this run starts: 127.0.53.1, periodic commitlog, quiet log.
fn start_node(cli: &Cli, dir: &std::path::Path) -> Result<node_proc::NodeProcess> {
    let mut cfg = gyre_node::NodeConfig::default();
    cfg.cluster.name = "protocol-bench".into();
    cfg.network.listen_address = "127.0.53.1".parse()?;
    cfg.cluster.seeds = vec![cfg.network.internode_addr().to_string()];
    cfg.storage.data_dir = dir.join("data");
    cfg.storage.commitlog_dir = dir.join("commitlog");
    cfg.storage.commitlog_sync = gyre_node::config::CommitlogSync::Periodic;
    cfg.log.level = "warn".into();
    cfg.validate()?;
    node_proc::NodeProcess::start(&cfg, dir, cli.gyre_bin.as_deref())
}

fn main() -> Result<()> {
    let mut cli = Cli::parse();
    if let Some(conf) = &cli.serve_node {
        return node_proc::serve(conf);
    }
    if cli.op != "read" && cli.op != "write" {
        bail!("--op is read or write");
    }
    let scratch = tempfile::tempdir()?;
    let node = match cli.addr {
        Some(_) => None,
        None => {
            let node = start_node(&cli, scratch.path())?;
            cli.addr = Some("127.0.53.1:9042".parse()?);
            Some(node)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(&cli, node.as_ref()));
    if let Some(node) = node {
        node.stop()?;
    }
    result
}

async fn run(cli: &Cli, node: Option<&node_proc::NodeProcess>) -> Result<()> {
    let addr = cli.addr.context("no node address")?;
    setup(addr, cli.keys, !cli.skip_load).await?;
    let versions = cli
        .versions
        .iter()
        .map(|v| match v {
            4 => Ok(ProtocolVersion::V4),
            5 => Ok(ProtocolVersion::V5),
            other => bail!("--versions takes 4 and 5, not {other}"),
        })
        .collect::<Result<Vec<_>>>()?;
    if versions.is_empty() {
        bail!("--versions is empty");
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); versions.len()];
    // Node CPU seconds and operations per version, when the node is ours.
    let mut cpu = vec![(0f64, 0f64); versions.len()];
    // A warm-up round of each, not counted.
    for &v in &versions {
        let (ops, _) = round(cli, v, 0).await?;
        eprintln!("warm-up v{}: {:.0} ops/s", v.number(), ops);
    }
    for r in 0..cli.repeat {
        for (i, v) in versions.iter().enumerate() {
            let pid = node.map(|n| n.pid()).or(cli.node_pid);
            let before = pid.map(node_proc::proc_cpu).transpose()?;
            let (ops, count) = round(cli, *v, r + 1).await?;
            if let (Some(pid), Some(before)) = (pid, before) {
                let used = node_proc::proc_cpu(pid)? - before;
                cpu[i].0 += used.as_secs_f64();
                cpu[i].1 += count as f64;
            }
            eprintln!("round {} v{}: {:.0} ops/s", r + 1, v.number(), ops);
            results[i].push(ops);
        }
    }
    let per_op = |(secs, ops): (f64, f64)| {
        if ops > 0.0 {
            format!("{:.1}", secs * 1e6 / ops)
        } else {
            "-".into()
        }
    };
    let medians: Vec<f64> = results.iter_mut().map(|r| median(r)).collect();
    println!("| op | compression | connections x in flight | version | ops/s (median) | vs first | node CPU µs/op |");
    println!("|---|---|---|---|---|---|---|");
    for (i, v) in versions.iter().enumerate() {
        println!(
            "| {} | {} | {} x {} | v{} | {:.0} | {:.3} | {} |",
            cli.op,
            if cli.lz4 { "lz4" } else { "none" },
            cli.connections,
            cli.in_flight,
            v.number(),
            medians[i],
            medians[i] / medians[0],
            per_op(cpu[i]),
        );
    }
    Ok(())
}
