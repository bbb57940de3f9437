//! `gyrectl`: local clusters and `nodetool status`. See the library docs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use gyrectl::chaos::{self, nemesis::FaultKind, ChaosConfig};
use gyrectl::{fetch_status, format_status, Layout, LocalCluster, ProcState};

#[derive(Parser, Debug)]
#[command(name = "gyrectl", version, about = "Operate Gyre clusters")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Bearer token for nodes whose admin endpoint sets `admin.token`
    /// (default: the `GYRE_ADMIN_TOKEN` environment variable).
    #[arg(long, global = true)]
    admin_token: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Local development clusters of `gyre` processes.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
        /// Directory holding the cluster (layout, node dirs, logs, pids).
        #[arg(long, global = true, default_value = "./var/cluster")]
        dir: PathBuf,
    },
    /// Workloads under faults on a running local cluster, then a check of
    /// every acknowledged write (exit status 1 on any anomaly).
    Chaos {
        /// Directory of a cluster started with `gyrectl cluster up`.
        #[arg(long, default_value = "./var/cluster")]
        dir: PathBuf,
        /// Total run time before healing and checking (seconds).
        #[arg(long, default_value_t = 120)]
        duration_secs: u64,
        /// Healthy time before each fault (seconds).
        #[arg(long, default_value_t = 10)]
        healthy_secs: u64,
        /// Time each fault lasts (seconds).
        #[arg(long, default_value_t = 20)]
        fault_secs: u64,
        /// Faults, in turn: kill, kill-all, pause, restart, isolate, halves,
        /// bridge, slow, flush-compact (default: these), clock (one
        /// node's write clock 5 s ahead; its anomalies are expected),
        /// fsync (one node's disk fails fsync; needs a gyre binary built
        /// with the `failpoints` feature; healed by restarting the node)
        /// and membership (in turn: a node joins, one is killed and
        /// removed, one joins, one is decommissioned; the layout changes
        /// for good). A fault may be named more than once.
        #[arg(long, value_delimiter = ',')]
        faults: Vec<String>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Requests per second per client.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        #[arg(long, default_value_t = 16)]
        registers: usize,
        #[arg(long, default_value_t = 4)]
        sets: usize,
        /// Compare-and-set registers (lightweight transactions and SERIAL
        /// reads, checked for linearizability) in use at once; 0: none.
        #[arg(long, default_value_t = 2)]
        cas_registers: usize,
        /// Shared counters; 0: none.
        #[arg(long, default_value_t = 2)]
        counters: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the report (availability, anomalies, final state) as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// The gyre binary used to restart nodes.
        #[arg(long)]
        gyre_bin: Option<PathBuf>,
    },
    /// Anti-entropy repair of a keyspace's tables over the node's ranges,
    /// like `nodetool repair`: replicas compare Merkle trees and exchange
    /// only the partitions that differ. Fails, naming it, when a replica is
    /// down.
    Repair {
        /// The keyspace (default: every keyspace but the system ones).
        keyspace: Option<String>,
        /// Tables (default: every table of the keyspace).
        tables: Vec<String>,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The node's admin HTTP port.
        #[arg(long, default_value_t = 9180)]
        port: u16,
        /// Only the ranges the node is the primary owner of (run on every
        /// node to cover the ring once).
        #[arg(long)]
        pr: bool,
        /// Repair (start, end] only: exclusive start token.
        #[arg(long, allow_hyphen_values = true)]
        start_token: Option<i64>,
        /// Inclusive end token.
        #[arg(long, allow_hyphen_values = true)]
        end_token: Option<i64>,
        /// Full repair (the only kind there is).
        #[arg(long)]
        full: bool,
        /// Most Merkle tree depth (2^depth leaves per range; default 10;
        /// less where the node estimates fewer than ~32 partitions a leaf).
        #[arg(long)]
        depth: Option<u8>,
    },
    /// Remove a dead node from the ring (`nodetool removenode`): the
    /// remaining replicas stream its ranges to their new owners. Refused
    /// for a live node. `status` shows the removal this node coordinates;
    /// `force` finishes it without waiting for the streams.
    Removenode {
        /// A host id (see `status`), `status` or `force`.
        what: String,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The node's admin HTTP port.
        #[arg(long, default_value_t = 9180)]
        port: u16,
        /// Seconds to wait for the removal to finish.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Decommission a node (`nodetool decommission`): it streams its ranges
    /// to the nodes taking them over, hands off its hints, announces LEFT
    /// and exits. Waits until it has left; refused (with the node's reason)
    /// when a keyspace would keep fewer nodes than its replication factor.
    Decommission {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The node's admin HTTP port.
        #[arg(long, default_value_t = 9180)]
        port: u16,
        /// Seconds to wait for the node to leave.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// Delete the data of ranges a node no longer replicates (after a join),
    /// like `nodetool cleanup`: each table is rewritten without them; says
    /// how many bytes each freed.
    Cleanup {
        /// One keyspace (default: every keyspace of the users).
        keyspace: Option<String>,
        #[command(flatten)]
        node: NodeAddr,
    },
    /// Stream this node's ranges of every keyspace (or one) from the
    /// replicas in SOURCE_DC, as `nodetool rebuild` does: how the nodes of
    /// a datacenter just added (with `auto_bootstrap = false`, after the
    /// keyspaces were altered to replicate there) get their data. Waits
    /// for the end and prints what was streamed.
    Rebuild {
        /// The datacenter to stream from.
        source_dc: String,
        /// Only this keyspace.
        #[arg(long)]
        keyspace: Option<String>,
        #[command(flatten)]
        node: NodeAddr,
        /// Seconds to wait for each node's rebuild.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// The token ring as a node sees it (`nodetool ring`): every token with
    /// its node, Up/Down and Normal/Leaving/Joining.
    Ring {
        #[command(flatten)]
        node: NodeAddr,
    },
    /// A keyspace's token ranges and their replicas (`nodetool describering`).
    Describering {
        keyspace: String,
        #[command(flatten)]
        node: NodeAddr,
    },
    /// The nodes holding a partition key (`nodetool getendpoints`): natural
    /// replicas, then pending ones marked `(pending)`.
    Getendpoints {
        keyspace: String,
        table: String,
        key: String,
        #[command(flatten)]
        node: NodeAddr,
    },
    /// Streaming sessions of a node (bootstrap, decommission, removenode),
    /// like `nodetool netstats`: peer, ranges, rows, bytes, rate, progress.
    Netstats {
        #[command(flatten)]
        node: NodeAddr,
    },
    /// Cluster state as one node sees it, like `nodetool status`. `Owns
    /// (effective)` is each node's share of KEYSPACE's data (without one, of
    /// the replication all non-system keyspaces share, if they do).
    Status {
        /// The keyspace whose effective ownership is shown.
        keyspace: Option<String>,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The node's admin HTTP port.
        #[arg(long, default_value_t = 9180)]
        port: u16,
    },
    /// Flush and hard-link the SSTables of a table, a keyspace or every
    /// table on one node (`nodetool snapshot`). A tag that exists is refused.
    Snapshot {
        /// KEYSPACE or KEYSPACE.TABLE (default: every table).
        target: Option<String>,
        /// The snapshot's name (default: the time in milliseconds).
        #[arg(short = 't', long)]
        tag: Option<String>,
        #[command(flatten)]
        node: NodeAddr,
    },
    /// Storage memory by component (memtables, bloom filters, SSTable
    /// indexes, block cache with its hit ratio), engine-wide and per table
    /// (`nodetool info`'s memory lines).
    Info {
        #[command(flatten)]
        node: NodeAddr,
    },
    /// Compactions per table: pending work, SSTables per level and the
    /// running merge's progress (`nodetool compactionstats`).
    #[command(name = "compactionstats")]
    CompactionStats {
        #[command(flatten)]
        node: NodeAddr,
    },
    /// Secondary index builds over existing data and their progress
    /// (queries on an index are refused until its build is done).
    #[command(name = "indexstats")]
    IndexStats {
        #[command(flatten)]
        node: NodeAddr,
    },
    /// The share of requests traced without the client asking, 0 to 1
    /// (`nodetool settraceprobability`; traces land in `system_traces`).
    #[command(name = "settraceprobability")]
    SetTraceProbability {
        probability: f64,
        #[command(flatten)]
        node: NodeAddr,
    },
    /// The node's trace probability (`nodetool gettraceprobability`).
    #[command(name = "gettraceprobability")]
    GetTraceProbability {
        #[command(flatten)]
        node: NodeAddr,
    },
    /// The node's repair history (`nodetool repair_admin list`): the
    /// running sessions and the last finished ones, restarts included.
    #[command(name = "repair_admin")]
    RepairAdmin {
        /// `list` (the only action).
        #[arg(value_parser = ["list"])]
        action: String,
        #[command(flatten)]
        node: NodeAddr,
    },
    /// The node's snapshots, dropped tables' included (`nodetool listsnapshots`).
    #[command(name = "listsnapshots")]
    ListSnapshots {
        #[command(flatten)]
        node: NodeAddr,
    },
    /// Remove snapshots by tag, or every one with --all, optionally only
    /// of KEYSPACE or KEYSPACE.TABLE (`nodetool clearsnapshot`).
    #[command(name = "clearsnapshot")]
    ClearSnapshot {
        target: Option<String>,
        #[arg(short = 't', long)]
        tag: Option<String>,
        #[arg(long, conflicts_with = "tag")]
        all: bool,
        #[command(flatten)]
        node: NodeAddr,
    },
    /// Load the SSTables copied into a table's import directory without a
    /// restart (`nodetool refresh`); see the README's restore procedure.
    Refresh {
        /// KEYSPACE.TABLE
        table: String,
        /// First link in the files of this snapshot of the table by that
        /// name (typically a dropped table's, kept by auto_snapshot).
        #[arg(long)]
        from_snapshot: Option<String>,
        #[command(flatten)]
        node: NodeAddr,
    },
}

/// Which nodes' admin endpoints to ask.
#[derive(clap::Args, Debug)]
struct NodeAddr {
    /// The node's address; several, comma-separated, run the command on
    /// each in turn (as `nodetool` run on every node).
    #[arg(long, default_value = "127.0.0.1", value_delimiter = ',')]
    host: Vec<String>,
    /// The nodes' admin HTTP port.
    #[arg(long, default_value_t = 9180)]
    port: u16,
}

impl NodeAddr {
    fn addrs(&self) -> anyhow::Result<Vec<std::net::SocketAddr>> {
        self.host
            .iter()
            .map(|h| {
                let ip = h
                    .parse()
                    .with_context(|| format!("--host {h}: not an IP address"))?;
                Ok(std::net::SocketAddr::new(ip, self.port))
            })
            .collect()
    }
}

/// The JSON answer of the first `--host`'s admin endpoint to `path`.
fn admin_json(
    node: &NodeAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let addr = *node.addrs()?.first().context("no --host given")?;
    let (code, text) = gyre_node::http::request(
        addr,
        method,
        path,
        body.map(str::as_bytes),
        Duration::from_secs(10),
    )?;
    if code != 200 {
        bail!("{addr}: {}", text.trim());
    }
    Ok(serde_json::from_str(&text)?)
}

/// KEYSPACE or KEYSPACE.TABLE as a snapshot request.
fn snapshot_request(target: Option<&str>) -> gyre_node::SnapshotRequest {
    let (keyspace, table) = match target {
        None => (None, None),
        Some(t) => match t.split_once('.') {
            Some((k, t)) => (Some(k.to_string()), Some(t.to_string())),
            None => (Some(t.to_string()), None),
        },
    };
    gyre_node::SnapshotRequest {
        keyspace,
        table,
        ..Default::default()
    }
}

/// Calls an admin route, failing with the node's message unless it
/// answers 200.
fn admin(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<String> {
    let (status, text) =
        gyre_node::http::request(addr, method, path, body, Duration::from_secs(120))
            .with_context(|| format!("calling {addr}{path}"))?;
    if status != 200 {
        bail!("{addr}: {}", text.trim());
    }
    Ok(text)
}

fn snapshots_cmd(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Snapshot { target, tag, node } => {
            let mut req = snapshot_request(target.as_deref());
            req.tag = tag;
            let body = serde_json::to_vec(&req)?;
            for addr in node.addrs()? {
                let taken: Vec<gyre_storage::SnapshotInfo> =
                    serde_json::from_str(&admin(addr, "POST", "/snapshot", Some(&body))?)?;
                match taken.first() {
                    None => println!("{addr}: no tables to snapshot"),
                    Some(first) => {
                        println!(
                            "{addr}: snapshot {} of {} table(s) taken",
                            first.tag,
                            taken.len()
                        );
                        for s in &taken {
                            println!("  {:<32} {}", s.name, s.dir.display());
                        }
                    }
                }
            }
            Ok(())
        }
        Cmd::SetTraceProbability { probability, node } => {
            if !(0.0..=1.0).contains(&probability) {
                bail!("Trace probability must be between 0 and 1");
            }
            let body = probability.to_string();
            for addr in node.addrs()? {
                admin(addr, "POST", "/traceprobability", Some(body.as_bytes()))?;
                println!("{addr}: trace probability set to {probability}");
            }
            Ok(())
        }
        Cmd::GetTraceProbability { node } => {
            for addr in node.addrs()? {
                let p = admin(addr, "GET", "/traceprobability", None)?;
                println!("{addr}: current trace probability: {}", p.trim());
            }
            Ok(())
        }
        Cmd::IndexStats { node } => {
            for addr in node.addrs()? {
                let builds: Vec<serde_json::Value> =
                    serde_json::from_str(&admin(addr, "GET", "/indexbuilds", None)?)?;
                println!("{addr}:");
                println!("{:<32} {:<32} {:>12}  State", "Table", "Index", "SSTables");
                for b in &builds {
                    let s = |k: &str| b[k].as_str().unwrap_or("").to_string();
                    let n = |k: &str| b[k].as_u64().unwrap_or(0);
                    println!(
                        "{:<32} {:<32} {:>12}  {}",
                        s("table"),
                        s("index"),
                        format!("{}/{}", n("sstables_done"), n("sstables_total")),
                        if b["done"].as_bool().unwrap_or(false) {
                            "built"
                        } else {
                            "building"
                        }
                    );
                }
            }
            Ok(())
        }
        Cmd::Info { node } => {
            let mib = |b: u64| {
                if b >= 1 << 20 {
                    format!("{:.2} MiB", b as f64 / 1048576.0)
                } else {
                    format!("{:.2} KiB", b as f64 / 1024.0)
                }
            };
            for addr in node.addrs()? {
                let i: gyre_node::MemoryInfo =
                    serde_json::from_str(&admin(addr, "GET", "/info", None)?)?;
                let lookups = i.block_cache_hits + i.block_cache_misses;
                println!("{addr}:");
                println!("{:<24}: {}", "Memtables", mib(i.memtable_bytes));
                println!("{:<24}: {}", "Bloom filters", mib(i.bloom_filter_bytes));
                println!("{:<24}: {}", "SSTable indexes", mib(i.index_bytes));
                println!(
                    "{:<24}: size {}, capacity {}, {} hits, {} requests, {:.3} hit ratio",
                    "Block cache",
                    mib(i.block_cache_bytes),
                    mib(i.block_cache_capacity_bytes),
                    i.block_cache_hits,
                    lookups,
                    i.block_cache_hits as f64 / lookups.max(1) as f64
                );
                println!(
                    "{:<24}: {}",
                    "Total",
                    mib(i.memtable_bytes
                        + i.bloom_filter_bytes
                        + i.index_bytes
                        + i.block_cache_bytes)
                );
                if !i.tables.is_empty() {
                    println!(
                        "{:<32} {:>14} {:>14} {:>14}",
                        "Table", "Memtable", "Bloom filter", "Index"
                    );
                    for t in &i.tables {
                        println!(
                            "{:<32} {:>14} {:>14} {:>14}",
                            t.table,
                            mib(t.memtable_bytes),
                            mib(t.bloom_filter_bytes),
                            mib(t.index_bytes)
                        );
                    }
                }
            }
            Ok(())
        }
        Cmd::CompactionStats { node } => {
            for addr in node.addrs()? {
                let stats: Vec<gyre_node::CompactionStats> =
                    serde_json::from_str(&admin(addr, "GET", "/compactionstats", None)?)?;
                let pending = stats.iter().filter(|s| s.pending).count();
                println!("{addr}: pending tasks: {pending}");
                println!(
                    "{:<32} {:>7}  {:<24} {:>22}  {:>10}",
                    "Table", "Pending", "SSTables per level", "Running: partitions", "written"
                );
                for s in &stats {
                    let levels = s
                        .sstables_per_level
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    let running = s.active.as_ref().map_or("-".to_string(), |a| {
                        format!(
                            "L{} {}/{} ({:.0}%)",
                            a.level,
                            a.partitions_done,
                            a.partitions_total,
                            100.0 * a.partitions_done as f64 / a.partitions_total.max(1) as f64
                        )
                    });
                    let written = s.active.as_ref().map_or("-".to_string(), |a| {
                        format!("{:.1} MiB", a.bytes_written as f64 / 1048576.0)
                    });
                    println!(
                        "{:<32} {:>7}  {:<24} {:>22}  {:>10}",
                        s.table,
                        if s.pending { "yes" } else { "no" },
                        levels,
                        running,
                        written
                    );
                }
            }
            Ok(())
        }
        Cmd::RepairAdmin { action: _, node } => {
            for addr in node.addrs()? {
                let all: Vec<gyre_node::RepairSession> =
                    serde_json::from_str(&admin(addr, "GET", "/repair", None)?)?;
                println!("{addr}:");
                println!(
                    "{:>6}  {:<20}  {:<8}  {:<20}  {:>9}  {:>7}  {:>10}  Tables / error",
                    "Id", "Keyspace", "State", "Started (UTC)", "Seconds", "Ranges", "Differing"
                );
                for s in &all {
                    let differing: u64 = s.tables.iter().map(|t| t.partitions_differing).sum();
                    let tables: Vec<&str> = s.tables.iter().map(|t| t.table.as_str()).collect();
                    println!(
                        "{:>6}  {:<20}  {:<8}  {:<20}  {:>9.1}  {:>7}  {:>10}  {}",
                        s.id,
                        s.keyspace,
                        s.state,
                        gyrectl::utc_time(s.started_at),
                        s.seconds,
                        format!("{}/{}", s.ranges_done, s.ranges_total),
                        differing,
                        s.error.clone().unwrap_or_else(|| tables.join(","))
                    );
                }
            }
            Ok(())
        }
        Cmd::ListSnapshots { node } => {
            for addr in node.addrs()? {
                let all: Vec<gyre_storage::SnapshotInfo> =
                    serde_json::from_str(&admin(addr, "GET", "/snapshots", None)?)?;
                if all.is_empty() {
                    println!("{addr}: there are no snapshots");
                    continue;
                }
                println!("{addr}:");
                println!(
                    "{:<36} {:<32} {:>6} {:>14}  Directory",
                    "Snapshot name", "Table", "Files", "Size (bytes)"
                );
                for s in &all {
                    println!(
                        "{:<36} {:<32} {:>6} {:>14}  {}",
                        s.tag,
                        s.name,
                        s.files.len(),
                        s.bytes,
                        s.dir.display()
                    );
                }
            }
            Ok(())
        }
        Cmd::ClearSnapshot {
            target,
            tag,
            all,
            node,
        } => {
            let mut req = snapshot_request(target.as_deref());
            req.tag = tag;
            req.all = all;
            let body = serde_json::to_vec(&req)?;
            for addr in node.addrs()? {
                let removed: Vec<gyre_storage::SnapshotInfo> =
                    serde_json::from_str(&admin(addr, "POST", "/snapshots/clear", Some(&body))?)?;
                println!("{addr}: {} snapshot(s) removed", removed.len());
            }
            Ok(())
        }
        Cmd::Refresh {
            table,
            from_snapshot,
            node,
        } => {
            let mut req = snapshot_request(Some(&table));
            if req.table.is_none() {
                bail!("refresh takes KEYSPACE.TABLE");
            }
            req.tag = from_snapshot;
            let body = serde_json::to_vec(&req)?;
            for addr in node.addrs()? {
                let report: serde_json::Value =
                    serde_json::from_str(&admin(addr, "POST", "/import", Some(&body))?)?;
                let dir = report["dir"].as_str().unwrap_or("?");
                match report["files"].as_u64().unwrap_or(0) {
                    0 => println!(
                        "{addr}: no SSTables in {dir}: copy a snapshot's sst-*.db files there first"
                    ),
                    n => println!(
                        "{addr}: imported {n} SSTable(s), {} bytes, from {dir}",
                        report["bytes"].as_u64().unwrap_or(0)
                    ),
                }
            }
            Ok(())
        }
        _ => bail!("not a snapshot command"),
    }
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Start (or complete) a cluster and wait until every node sees every node UP and NORMAL.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Datacenters (`dc1`, `dc2`, ...) the nodes are split over evenly,
        /// in order, as ccm's `-n 3:3` (`--nodes 6 --dcs 2`).
        #[arg(long, default_value_t = 1)]
        dcs: usize,
        /// Racks per datacenter (`rack1`, ...), the nodes of each dealt
        /// over them in turn.
        #[arg(long, default_value_t = 1)]
        racks: usize,
        /// The gyre binary (default: $GYRE_BIN, else next to gyrectl).
        #[arg(long)]
        gyre_bin: Option<PathBuf>,
        #[arg(long, default_value = "Gyre Dev Cluster")]
        cluster_name: String,
        /// First three octets of the node addresses.
        #[arg(long, default_value = "127.0.0")]
        ip_prefix: String,
        /// Last octet of node 1; node K gets first_ip + K - 1.
        #[arg(long, default_value_t = 1)]
        first_ip: u8,
        #[arg(long, default_value_t = 7000)]
        internode_port: u16,
        #[arg(long, default_value_t = 9042)]
        cql_port: u16,
        #[arg(long, default_value_t = 9180)]
        admin_port: u16,
        #[arg(long, default_value_t = 16)]
        num_tokens: usize,
        /// Seconds to wait for the cluster to converge.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
        /// Require logins (PasswordAuthenticator) and check permissions
        /// (CassandraAuthorizer); the nodes create the superuser
        /// `cassandra` / `cassandra` about 10 s after they start.
        #[arg(long)]
        auth: bool,
        /// TLS on every node's CQL port and mutual TLS between the nodes,
        /// with certificates of a CA made for this cluster
        /// (`DIR/tls/ca.crt`); writes `DIR/cqlshrc` for `cqlsh --cqlshrc`.
        #[arg(long)]
        tls: bool,
        /// Extra arguments for every gyre process (after `--`).
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Stop every node gracefully (SIGTERM).
    Down,
    /// Add nodes to the running cluster: each bootstraps (streams the data
    /// of the ranges it takes over) and turns NORMAL before the next starts.
    Add {
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// The datacenter of the new nodes (default: dc1). A datacenter
        /// with no member yet is a new one: as Cassandra's procedure, its
        /// nodes start with `auto_bootstrap = false` (NORMAL at once, no
        /// streaming); then add it to the keyspaces (ALTER KEYSPACE) and
        /// run `gyrectl rebuild SOURCE_DC` on each of them.
        #[arg(long)]
        dc: Option<String>,
        /// The rack of the new nodes (default: rack1).
        #[arg(long)]
        rack: Option<String>,
        #[arg(long)]
        gyre_bin: Option<PathBuf>,
        /// Seconds to wait for each node to join.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Replace dead node N (Cassandra's replace_address_first_boot): a new
    /// node on the next free address takes over N's tokens, streams N's
    /// ranges from the other replicas and turns NORMAL; N leaves the ring.
    Replace {
        node: usize,
        #[arg(long)]
        gyre_bin: Option<PathBuf>,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Decommission node N: it streams its data to the nodes taking over its
    /// ranges, hands off its hints, leaves the ring and stops.
    Decommission {
        node: usize,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Processes and the cluster as node 1 (or the first reachable node) sees it.
    Status,
    /// Stop node N gracefully (SIGTERM) and wait for it to exit.
    Stop { node: usize },
    /// Start stopped node N again with its stored configuration.
    Start {
        node: usize,
        #[arg(long)]
        gyre_bin: Option<PathBuf>,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Kill node N (SIGKILL).
    Kill { node: usize },
    /// Freeze node N (SIGSTOP).
    Pause { node: usize },
    /// Unfreeze node N (SIGCONT).
    Resume { node: usize },
    /// Cut the network between groups of nodes, e.g. `1,2 3` (node 3 alone)
    /// or `1,2 2,3` (a bridge through node 2); fault rules in each node's
    /// messaging layer.
    Partition {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Clear every node's network fault rules.
    Heal,
    /// Compare the nodes' local copies of a table (KEYSPACE.TABLE) by
    /// digest; exits non-zero when running nodes disagree. Meaningful when
    /// every node replicates the whole table (RF = nodes).
    Digest { table: String },
    /// Print node N's log.
    Logs {
        node: usize,
        /// Only the last LINES lines.
        #[arg(long)]
        lines: Option<usize>,
    },
}

/// Runs a repair on the node and prints its progress and summary.
fn repair(addr: std::net::SocketAddr, req: &gyre_node::RepairRequest) -> anyhow::Result<()> {
    let mut started = false;
    let done = gyrectl::repair(addr, req, |s| {
        if !started {
            started = true;
            println!(
                "repair #{} of {} on {addr}: {} ranges",
                s.id, s.keyspace, s.ranges_total
            );
        } else {
            // A progress bar of 20 cells.
            let filled = (s.ranges_done * 20)
                .checked_div(s.ranges_total)
                .unwrap_or(20)
                .min(20) as usize;
            println!(
                "  [{}{}] {}/{} ranges repaired ({:.1} s)",
                "#".repeat(filled),
                ".".repeat(20 - filled),
                s.ranges_done,
                s.ranges_total,
                s.seconds
            );
        }
    })?;
    println!(
        "{:<32}{:>8}{:>12}{:>12}{:>12}{:>12}{:>14}{:>14}{:>12}",
        "Table",
        "Ranges",
        "Compared",
        "Leaves≠",
        "Differing",
        "Writes",
        "Sent",
        "Received",
        "Trees"
    );
    for t in &done.tables {
        println!(
            "{:<32}{:>8}{:>12}{:>12}{:>12}{:>12}{:>14}{:>14}{:>12}",
            t.table,
            t.ranges,
            t.partitions_compared,
            t.mismatched_leaves,
            t.partitions_differing,
            t.mutations_sent,
            gyrectl::human_bytes(t.bytes_sent as f64),
            gyrectl::human_bytes(t.bytes_received as f64),
            gyrectl::human_bytes(t.tree_bytes as f64)
        );
    }
    println!(
        "repair #{} {} in {:.1} s",
        done.id, done.state, done.seconds
    );
    match done.error {
        Some(e) => bail!("repair failed: {e}"),
        None => Ok(()),
    }
}

/// `removenode HOST_ID|status|force` through a node's admin endpoint.
fn removenode(addr: std::net::SocketAddr, what: &str, timeout: Duration) -> anyhow::Result<()> {
    use gyre_node::http::request;
    let status = || -> anyhow::Result<serde_json::Value> {
        let (code, body) = request(addr, "GET", "/removenode", None, Duration::from_secs(5))?;
        if code != 200 {
            bail!("HTTP {code}: {}", body.trim());
        }
        Ok(serde_json::from_str(&body)?)
    };
    let body = match what {
        "status" => {
            let s = status()?;
            if s.is_null() {
                println!("RemovalStatus: No removals in process.");
            } else {
                println!("{}", serde_json::to_string_pretty(&s)?);
            }
            return Ok(());
        }
        "force" => serde_json::json!({ "force": true }),
        id => serde_json::json!({ "host_id": id }),
    };
    let (code, text) = request(
        addr,
        "POST",
        "/removenode",
        Some(body.to_string().as_bytes()),
        Duration::from_secs(10),
    )?;
    if code != 202 {
        bail!("{}", text.trim());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let s = status()?;
        match s["state"].as_str() {
            Some("done") => {
                println!("Removal of {} ({}) done", s["host_id"], s["address"]);
                return Ok(());
            }
            Some(st) if st.starts_with("failed") => bail!("removal {st}"),
            _ => {}
        }
        if Instant::now() >= deadline {
            bail!("the removal did not finish within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `rebuild SOURCE_DC` on one node: starts it, follows it to the end.
fn rebuild(
    addr: std::net::SocketAddr,
    source_dc: &str,
    keyspace: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    use gyre_node::http::request;
    let body = serde_json::json!({ "source_dc": source_dc, "keyspace": keyspace }).to_string();
    let t0 = Instant::now();
    let (code, text) = request(
        addr,
        "POST",
        "/rebuild",
        Some(body.as_bytes()),
        Duration::from_secs(10),
    )?;
    if code != 202 {
        bail!("{addr}: {}", text.trim());
    }
    let deadline = t0 + timeout;
    loop {
        let (code, text) = request(addr, "GET", "/rebuild", None, Duration::from_secs(5))?;
        if code != 200 {
            bail!("{addr}: HTTP {code}: {}", text.trim());
        }
        let s: serde_json::Value = serde_json::from_str(&text)?;
        let state = s["state"].as_str().unwrap_or("?");
        if state != "streaming" {
            for k in s["keyspaces"].as_array().into_iter().flatten() {
                println!(
                    "{}: {}: {} ranges from {} sources{}",
                    addr.ip(),
                    k["keyspace"].as_str().unwrap_or("?"),
                    k["ranges"],
                    k["sources"],
                    match k["skipped"].as_u64() {
                        Some(n) if n > 0 => {
                            format!(" ({n} ranges have no replica in {source_dc})")
                        }
                        _ => String::new(),
                    }
                );
            }
            if let Some(why) = state.strip_prefix("failed: ") {
                bail!("{addr}: rebuild from {source_dc} failed: {why}");
            }
            println!(
                "{}: rebuilt from {source_dc} in {:.1} s ({} bytes streamed)",
                addr.ip(),
                t0.elapsed().as_secs_f64(),
                s["bytes"]
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{addr}: rebuild still running after {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(t) = cli
        .admin_token
        .or_else(|| std::env::var("GYRE_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty())
    {
        gyre_node::http::set_client_token(t);
    }
    match cli.cmd {
        Cmd::Status {
            keyspace,
            host,
            port,
        } => {
            let ip = host
                .parse()
                .with_context(|| format!("--host {host}: not an IP address"))?;
            let r = gyrectl::fetch_status_of(
                std::net::SocketAddr::new(ip, port),
                keyspace.as_deref(),
                Duration::from_secs(5),
            )?;
            println!("Cluster: {}", r.cluster_name);
            print!("{}", format_status(&r));
            Ok(())
        }
        Cmd::Cluster { cmd, dir } => cluster(cmd, dir),
        Cmd::Ring { node } => {
            let tokens = admin_json(&node, "GET", "/ring", None)?;
            println!(
                "{:<18}{:<8}{:<9}{:>22}",
                "Address", "Status", "State", "Token"
            );
            for t in tokens.as_array().into_iter().flatten() {
                println!(
                    "{:<18}{:<8}{:<9}{:>22}",
                    t["address"].as_str().unwrap_or("?"),
                    if t["up"].as_bool() == Some(true) {
                        "Up"
                    } else {
                        "Down"
                    },
                    t["state"].as_str().unwrap_or("?"),
                    t["token"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        Cmd::Describering { keyspace, node } => {
            let body = serde_json::json!({ "keyspace": keyspace }).to_string();
            let ranges = admin_json(&node, "POST", "/describering", Some(&body))?;
            println!("TokenRange: ");
            for r in ranges.as_array().into_iter().flatten() {
                let endpoints: Vec<&str> = r["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str())
                    .collect();
                println!(
                    "\tTokenRange(start_token:{}, end_token:{}, endpoints:[{}])",
                    r["start_token"].as_str().unwrap_or("?"),
                    r["end_token"].as_str().unwrap_or("?"),
                    endpoints.join(", ")
                );
            }
            Ok(())
        }
        Cmd::Getendpoints {
            keyspace,
            table,
            key,
            node,
        } => {
            let body =
                serde_json::json!({ "keyspace": keyspace, "table": table, "key": key }).to_string();
            let r = admin_json(&node, "POST", "/getendpoints", Some(&body))?;
            for (list, mark) in [("natural", ""), ("pending", " (pending)")] {
                for e in r[list].as_array().into_iter().flatten() {
                    println!("{}{mark}", e.as_str().unwrap_or("?"));
                }
            }
            Ok(())
        }
        Cmd::Cleanup { keyspace, node } => {
            let body = serde_json::json!({ "keyspace": keyspace }).to_string();
            for addr in node.addrs()? {
                // Rewrites every table: allow it time.
                let (code, body) = gyre_node::http::request(
                    addr,
                    "POST",
                    "/cleanup",
                    Some(body.as_bytes()),
                    Duration::from_secs(3600),
                )?;
                if code != 200 {
                    bail!("{addr}: {}", body.trim());
                }
                let tables: Vec<serde_json::Value> = serde_json::from_str(&body)?;
                let mut freed = 0i64;
                for t in &tables {
                    let (b, a) = (
                        t["bytes_before"].as_i64().unwrap_or(0),
                        t["bytes_after"].as_i64().unwrap_or(0),
                    );
                    freed += b - a;
                    println!(
                        "{}: {}.{}: {b} -> {a} bytes",
                        addr.ip(),
                        t["keyspace"].as_str().unwrap_or("?"),
                        t["table"].as_str().unwrap_or("?")
                    );
                }
                println!("{}: cleanup freed {freed} bytes", addr.ip());
            }
            Ok(())
        }
        Cmd::Decommission {
            host,
            port,
            timeout_secs,
        } => {
            let ip: std::net::IpAddr = host
                .parse()
                .with_context(|| format!("--host {host}: not an IP address"))?;
            let addr = std::net::SocketAddr::new(ip, port);
            let t0 = Instant::now();
            let (code, body) = gyre_node::http::request(
                addr,
                "POST",
                "/decommission",
                None,
                Duration::from_secs(10),
            )?;
            if code != 202 {
                bail!("{addr}: {}", body.trim());
            }
            let deadline = t0 + Duration::from_secs(timeout_secs);
            let mut unanswered = 0;
            loop {
                // The node exits once it has left: its endpoint stops
                // answering for good (a few misses in a row, not one).
                match gyre_node::http::request(
                    addr,
                    "GET",
                    "/decommission",
                    None,
                    Duration::from_secs(5),
                ) {
                    Err(_) => {
                        unanswered += 1;
                        if unanswered >= 5 {
                            break;
                        }
                    }
                    Ok((200, body)) => {
                        unanswered = 0;
                        let v: serde_json::Value = serde_json::from_str(&body)?;
                        if v["left"].as_bool() == Some(true) {
                            break;
                        }
                        if let Some(why) = v["last"].as_str().filter(|l| l.starts_with("failed")) {
                            bail!("{addr}: decommission {why}");
                        }
                    }
                    Ok((code, body)) => bail!("{addr}: HTTP {code}: {}", body.trim()),
                }
                if Instant::now() >= deadline {
                    bail!("{addr}: still in the ring after {timeout_secs} s");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            println!(
                "{}: decommissioned after {:.1} s",
                addr.ip(),
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::Rebuild {
            source_dc,
            keyspace,
            node,
            timeout_secs,
        } => {
            for addr in node.addrs()? {
                rebuild(
                    addr,
                    &source_dc,
                    keyspace.as_deref(),
                    Duration::from_secs(timeout_secs),
                )?;
            }
            Ok(())
        }
        Cmd::Netstats { node } => {
            for addr in node.addrs()? {
                let (code, body) = gyre_node::http::request(
                    addr,
                    "GET",
                    "/streams",
                    None,
                    Duration::from_secs(5),
                )?;
                if code != 200 {
                    bail!("{addr}: HTTP {code}: {}", body.trim());
                }
                let sessions: Vec<gyre_node::SessionReport> = serde_json::from_str(&body)?;
                println!(
                    "{}",
                    gyrectl::format_netstats(&addr.ip().to_string(), &sessions)
                );
            }
            Ok(())
        }
        Cmd::Removenode {
            what,
            host,
            port,
            timeout_secs,
        } => {
            let ip = host
                .parse()
                .with_context(|| format!("--host {host}: not an IP address"))?;
            removenode(
                std::net::SocketAddr::new(ip, port),
                &what,
                Duration::from_secs(timeout_secs),
            )
        }
        cmd @ (Cmd::Snapshot { .. }
        | Cmd::CompactionStats { .. }
        | Cmd::Info { .. }
        | Cmd::IndexStats { .. }
        | Cmd::SetTraceProbability { .. }
        | Cmd::GetTraceProbability { .. }
        | Cmd::ListSnapshots { .. }
        | Cmd::RepairAdmin { .. }
        | Cmd::ClearSnapshot { .. }
        | Cmd::Refresh { .. }) => snapshots_cmd(cmd),
        Cmd::Repair {
            keyspace,
            tables,
            host,
            port,
            pr,
            start_token,
            end_token,
            full: _,
            depth,
        } => {
            let ip = host
                .parse()
                .with_context(|| format!("--host {host}: not an IP address"))?;
            let req = gyre_node::RepairRequest {
                keyspace: keyspace.unwrap_or_default(),
                tables,
                start_token,
                end_token,
                primary_range: pr,
                depth,
            };
            repair(std::net::SocketAddr::new(ip, port), &req)
        }
        Cmd::Chaos {
            dir,
            duration_secs,
            healthy_secs,
            fault_secs,
            faults,
            clients,
            rate,
            registers,
            sets,
            cas_registers,
            counters,
            seed,
            json,
            gyre_bin,
        } => {
            let faults = if faults.is_empty() {
                FaultKind::ALL.to_vec()
            } else {
                faults
                    .iter()
                    .map(|f| f.parse::<FaultKind>().map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            let cfg = ChaosConfig {
                duration: Duration::from_secs(duration_secs),
                healthy: Duration::from_secs(healthy_secs),
                fault: Duration::from_secs(fault_secs),
                faults,
                clients: clients.max(1),
                registers: registers.max(1),
                sets: sets.max(1),
                cas_registers,
                counters,
                client_rate: rate,
                seed,
                gyre_bin: gyrectl::find_gyre_bin(gyre_bin.as_deref())?,
            };
            let c = LocalCluster::open(&dir)?;
            let report = chaos::run(&c, &cfg, &mut |line| println!("{line}"))?;
            println!("\n{} operations", report.ops);
            print!("{}", report.table());
            if !report.hints_drained {
                println!("note: hints were not fully delivered before the final reads");
            }
            println!(
                "{} compare-and-set operations checked for linearizability",
                report.cas_ops
            );
            if !report.cas_unchecked.is_empty() {
                println!(
                    "note: linearizability search gave up (budget) on {}",
                    report.cas_unchecked.join(", ")
                );
            }
            for c in &report.counters {
                println!(
                    "counter {}: total {} for {} acknowledged + {} unknown increments",
                    c.key,
                    c.total.map_or_else(|| "missing".into(), |t| t.to_string()),
                    c.acknowledged,
                    c.unknown
                );
            }
            if let Some(path) = json {
                let text = serde_json::to_vec_pretty(&report)?;
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if report.anomalies.is_empty() {
                println!("no anomalies");
                Ok(())
            } else {
                println!("{} anomalies:", report.anomalies.len());
                for a in &report.anomalies {
                    println!(
                        "  {} {}: expected {}, observed {} (t={} ms)",
                        a.kind, a.key, a.expected, a.observed, a.at_ms
                    );
                }
                std::process::exit(1);
            }
        }
    }
}

fn cluster(cmd: ClusterCmd, dir: PathBuf) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Up {
            nodes,
            dcs,
            racks,
            gyre_bin,
            cluster_name,
            ip_prefix,
            first_ip,
            internode_port,
            cql_port,
            admin_port,
            num_tokens,
            timeout_secs,
            auth,
            tls,
            mut extra,
        } => {
            if nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            if auth {
                // Before the user's own flags, so those can override them.
                let flags = [
                    "--authenticator",
                    "PasswordAuthenticator",
                    "--authorizer",
                    "CassandraAuthorizer",
                ];
                extra.splice(0..0, flags.map(String::from));
            }
            let bin = gyrectl::find_gyre_bin(gyre_bin.as_deref())?;
            let layout = Layout {
                nodes,
                cluster_name,
                ip_prefix,
                first_ip,
                internode_port,
                cql_port,
                admin_port,
                num_tokens,
                extra_args: extra,
                decommissioned: Vec::new(),
                tls,
                placement: if dcs == 1 && racks == 1 {
                    Default::default()
                } else {
                    gyrectl::spread(nodes, dcs, racks)?
                },
            };
            layout.ip(nodes)?;
            let c = LocalCluster::open_or_create(&dir, layout)?;
            let t0 = Instant::now();
            let started = c.up(&bin, Duration::from_secs(timeout_secs))?;
            if started.is_empty() {
                println!(
                    "cluster in {} is already running ({nodes} nodes)",
                    dir.display()
                );
            } else {
                println!(
                    "started node(s) {started:?}; all {nodes} nodes UP and NORMAL after {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
            }
            print_cluster(&c);
            let ip1 = c.layout.ip(1)?;
            let login = if c
                .layout
                .extra_args
                .iter()
                .any(|a| a == "PasswordAuthenticator")
            {
                " -u cassandra -p cassandra"
            } else {
                ""
            };
            if c.layout.tls {
                let rc = write_cqlshrc(&c, !login.is_empty())?;
                println!("Connect with:  cqlsh --cqlshrc {}   (TLS)", rc.display());
            } else {
                println!(
                    "Connect with:  cqlsh{login} {ip1} {}   (or gyresh{login})",
                    c.layout.cql_port
                );
            }
            println!(
                "Status:        gyrectl status --host {ip1} --port {}",
                c.layout.admin_port
            );
            println!("Logs:          {}/nodeK/gyre.log", dir.display());
            Ok(())
        }
        ClusterCmd::Down => {
            let c = LocalCluster::open(&dir)?;
            let members = c.members();
            for &n in &members {
                c.signal_node(n, libc::SIGCONT)?;
                c.signal_node(n, libc::SIGTERM)?;
            }
            for &n in &members {
                c.wait_exit(n, Duration::from_secs(30))?;
            }
            println!("all {} nodes stopped", members.len());
            Ok(())
        }
        ClusterCmd::Add {
            count,
            dc,
            rack,
            gyre_bin,
            timeout_secs,
        } => {
            let mut c = LocalCluster::open(&dir)?;
            let bin = gyrectl::find_gyre_bin(gyre_bin.as_deref())?;
            let place = (dc.is_some() || rack.is_some()).then(|| {
                gyrectl::Place::new(
                    dc.clone().unwrap_or_else(|| "dc1".into()),
                    rack.unwrap_or_else(|| "rack1".into()),
                )
            });
            // Decided once for the whole command: the second node of a new
            // datacenter must not bootstrap from the first.
            let new_dc = place
                .as_ref()
                .filter(|p| !c.datacenters().contains(&p.dc))
                .map(|p| p.dc.clone());
            if let Some(dc) = &new_dc {
                println!(
                    "{dc} is a new datacenter: its nodes start with auto_bootstrap = false \
                     (nothing streamed)"
                );
            }
            let mut added = Vec::new();
            for _ in 0..count {
                let t0 = Instant::now();
                let n = c.add_node_at(
                    &bin,
                    Duration::from_secs(timeout_secs),
                    place.clone(),
                    new_dc.is_none(),
                )?;
                added.push(n);
                println!(
                    "node {n} joined (UN) after {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
            }
            print_cluster(&c);
            if let Some(dc) = new_dc {
                let hosts: Vec<String> = added
                    .iter()
                    .filter_map(|n| c.layout.ip(*n).ok().map(|ip| ip.to_string()))
                    .collect();
                println!(
                    "Next: ALTER KEYSPACE ... to replicate to {dc}, then \
                     gyrectl rebuild SOURCE_DC --host {} --port {}",
                    hosts.join(","),
                    c.layout.admin_port
                );
            }
            Ok(())
        }
        ClusterCmd::Replace {
            node,
            gyre_bin,
            timeout_secs,
        } => {
            let mut c = LocalCluster::open(&dir)?;
            let bin = gyrectl::find_gyre_bin(gyre_bin.as_deref())?;
            let t0 = Instant::now();
            let n = c.replace_node(node, &bin, Duration::from_secs(timeout_secs))?;
            println!(
                "node {n} replaced node {node} (UN) after {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            print_cluster(&c);
            Ok(())
        }
        ClusterCmd::Decommission { node, timeout_secs } => {
            let mut c = LocalCluster::open(&dir)?;
            let t0 = Instant::now();
            c.decommission(node, Duration::from_secs(timeout_secs))?;
            println!(
                "node {node} decommissioned after {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
        ClusterCmd::Status => {
            let c = LocalCluster::open(&dir)?;
            print_cluster(&c);
            Ok(())
        }
        ClusterCmd::Stop { node } => {
            let c = LocalCluster::open(&dir)?;
            if c.stop_node(node, Duration::from_secs(30))? {
                println!("node {node} stopped");
            } else {
                println!("node {node} was not running");
            }
            Ok(())
        }
        ClusterCmd::Start {
            node,
            gyre_bin,
            timeout_secs,
        } => {
            let c = LocalCluster::open(&dir)?;
            let bin = gyrectl::find_gyre_bin(gyre_bin.as_deref())?;
            if !c.start_node(node, &bin)? {
                println!("node {node} is already running");
                return Ok(());
            }
            let admin = c.layout.admin_addr(node)?;
            let me = c.layout.internode_addr(node)?.to_string();
            c.wait_for(
                &format!("node {node} to be NORMAL"),
                Duration::from_secs(timeout_secs),
                &[node],
                |_| {
                    Ok(fetch_status(admin, Duration::from_secs(1))
                        .is_ok_and(|r| gyrectl::sees_up_normal(&r, &me)))
                },
            )?;
            println!("node {node} started");
            Ok(())
        }
        ClusterCmd::Kill { node } => {
            let c = LocalCluster::open(&dir)?;
            if c.kill_node(node)? {
                println!("node {node} killed");
            } else {
                println!("node {node} was not running");
            }
            Ok(())
        }
        ClusterCmd::Partition { groups } => {
            let c = LocalCluster::open(&dir)?;
            let groups = groups
                .iter()
                .map(|g| {
                    g.split(',')
                        .map(|n| {
                            n.trim()
                                .parse::<usize>()
                                .ok()
                                .filter(|n| c.members().contains(n))
                                .with_context(|| format!("{n:?} is not a node of this cluster"))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            chaos::nemesis::partition(&c, &groups)?;
            println!("partitioned: {groups:?}");
            Ok(())
        }
        ClusterCmd::Digest { table } => {
            let c = LocalCluster::open(&dir)?;
            let (ks, t) = table
                .split_once('.')
                .with_context(|| format!("{table:?}: expected KEYSPACE.TABLE"))?;
            let digests = c.table_digests(ks, t);
            println!(
                "{:<6}{:<18}{:>12}{:>12}",
                "Node", "Digest", "Partitions", "Rows"
            );
            for (i, d) in digests.iter().enumerate() {
                match d {
                    Ok(d) => println!(
                        "{:<6}{:<18}{:>12}{:>12}",
                        i + 1,
                        d.digest,
                        d.partitions,
                        d.rows
                    ),
                    Err(e) => println!("{:<6}unavailable: {e}", i + 1),
                }
            }
            let distinct: std::collections::BTreeSet<&str> = digests
                .iter()
                .filter_map(|d| d.as_ref().ok().map(|d| d.digest.as_str()))
                .collect();
            match distinct.len() {
                0 => bail!("no node answered"),
                1 => {
                    println!("replicas agree");
                    Ok(())
                }
                n => bail!("replicas disagree: {n} different digests"),
            }
        }
        ClusterCmd::Heal => {
            let c = LocalCluster::open(&dir)?;
            chaos::nemesis::clear_faults(&c);
            println!("network healed");
            Ok(())
        }
        ClusterCmd::Pause { node } | ClusterCmd::Resume { node } => {
            let c = LocalCluster::open(&dir)?;
            let (sig, what) = match cmd {
                ClusterCmd::Pause { .. } => (libc::SIGSTOP, "paused"),
                _ => (libc::SIGCONT, "resumed"),
            };
            if c.signal_node(node, sig)? {
                println!("node {node} {what}");
                Ok(())
            } else {
                bail!("node {node} is not running")
            }
        }
        ClusterCmd::Logs { node, lines } => {
            let c = LocalCluster::open(&dir)?;
            let path = c.log_path(node);
            match lines {
                Some(n) => println!("{}", gyrectl::tail(&path, n)),
                None => print!(
                    "{}",
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?
                ),
            }
            Ok(())
        }
    }
}

fn print_cluster(c: &LocalCluster) {
    println!(
        "{:<6}{:<18}{:<10}{:<8}",
        "Node", "Address", "Process", "Pid"
    );
    for n in c.members() {
        let addr = c
            .layout
            .internode_addr(n)
            .map_or("?".into(), |a| a.to_string());
        let (state, pid) = match c.state(n) {
            ProcState::Running(p) => ("running", p.to_string()),
            ProcState::Paused(p) => ("paused", p.to_string()),
            ProcState::Stopped => ("stopped", "-".into()),
        };
        println!("{n:<6}{addr:<18}{state:<10}{pid:<8}");
    }
    println!();
    let view = c.views().into_iter().flatten().next();
    match view {
        Some(r) => {
            println!("Cluster: {} (as seen by {})", r.cluster_name, r.address);
            print!("{}", format_status(&r));
        }
        None => println!("no node is answering on its admin port"),
    }
}

/// A `cqlshrc` for a TLS cluster: node 1, TLS validated against the
/// cluster's CA, and the default superuser when logins are on.
fn write_cqlshrc(c: &LocalCluster, auth: bool) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::fs::canonicalize(&c.dir)?;
    let mut text = format!(
        "[connection]\nhostname = {}\nport = {}\nssl = true\n\n[ssl]\ncertfile = {}\nvalidate = true\n",
        c.layout.ip(1)?,
        c.layout.cql_port,
        dir.join("tls/ca.crt").display()
    );
    if auth {
        text.push_str("\n[authentication]\nusername = cassandra\npassword = cassandra\n");
    }
    let path = dir.join("cqlshrc");
    std::fs::write(&path, text)?;
    Ok(path)
}
