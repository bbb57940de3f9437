//! `gyrectl`: runs local development clusters of `gyre` processes and shows
//! a `nodetool status`-like view of a running cluster.
//!
//! A local cluster lives in one directory (default `./var/cluster`):
//! `cluster.json` records its layout ([`Layout`]), and `nodeK/` holds node
//! K's `gyre.toml`, `pid`, `gyre.log`, `data/` and `commitlog/`. Node K
//! listens on `<ip_prefix>.<first_ip + K - 1>` with the same ports as every
//! other node, and node 1 is the seed. Processes run detached (own process
//! group) and outlive `gyrectl`; they are controlled by pid with signals
//! (TERM to stop, KILL to kill, STOP/CONT to pause/resume).
//!
//! Linux only: liveness comes from `/proc/<pid>/stat`.

#![allow(unsafe_code)] // kill(2), in `signal` only.

pub mod chaos;
pub mod cql;
pub mod tls;

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gyre_node::{DigestRequest, NodeConfig, StatusReport, TableDigest};
use serde::{Deserialize, Serialize};

/// Everything that can go wrong while managing a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Cluster(String),
    #[error(transparent)]
    Node(#[from] gyre_node::Error),
    #[error("invalid JSON from {what}: {message}")]
    Json { what: String, message: String },
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout { what: String, secs: f64 },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// How a local cluster is laid out; stored as `cluster.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub nodes: usize,
    pub cluster_name: String,
    /// First three octets, e.g. `127.0.0`.
    pub ip_prefix: String,
    /// Last octet of node 1.
    pub first_ip: u8,
    pub internode_port: u16,
    pub cql_port: u16,
    pub admin_port: u16,
    pub num_tokens: usize,
    /// Extra `gyre` arguments given to every node, e.g. `--gossip-interval-ms`.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Nodes that were decommissioned: they left the ring for good and are
    /// neither started nor asked any more.
    #[serde(default)]
    pub decommissioned: Vec<usize>,
    /// TLS on every node's CQL port with certificates of the cluster's own
    /// CA (`tls/ca.crt`), and a `cqlshrc` that uses it.
    #[serde(default)]
    pub tls: bool,
    /// Datacenter and rack of each node (key: node number), as
    /// `cluster up --dcs D --racks R` or `cluster add --dc` placed it; a
    /// node not listed is in `dc1`, `rack1`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub placement: std::collections::BTreeMap<usize, Place>,
}

/// Where a node stands: its datacenter and rack (`cluster.datacenter`,
/// `cluster.rack` of its configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    pub dc: String,
    pub rack: String,
}

impl Place {
    pub fn new(dc: impl Into<String>, rack: impl Into<String>) -> Self {
        Place {
            dc: dc.into(),
            rack: rack.into(),
        }
    }
}

/// ccm's `-n 3:3`: `nodes` split evenly over `dcs` datacenters (`dc1`,
/// `dc2`, ...; nodes 1..=nodes/dcs in dc1, and so on), each datacenter's
/// nodes dealt round-robin over `racks` racks (`rack1`, ...).
pub fn spread(
    nodes: usize,
    dcs: usize,
    racks: usize,
) -> Result<std::collections::BTreeMap<usize, Place>> {
    if dcs == 0 || racks == 0 {
        return Err(Error::Cluster(
            "--dcs and --racks must be at least 1".into(),
        ));
    }
    if !nodes.is_multiple_of(dcs) {
        return Err(Error::Cluster(format!(
            "{nodes} nodes do not split evenly over {dcs} datacenters"
        )));
    }
    let per_dc = nodes / dcs;
    Ok((1..=nodes)
        .map(|n| {
            let i = n - 1;
            (
                n,
                Place::new(
                    format!("dc{}", i / per_dc + 1),
                    format!("rack{}", i % per_dc % racks + 1),
                ),
            )
        })
        .collect())
}

impl Layout {
    /// Node `node`'s datacenter and rack.
    pub fn place(&self, node: usize) -> Place {
        self.placement
            .get(&node)
            .cloned()
            .unwrap_or_else(|| Place::new("dc1", "rack1"))
    }

    pub fn ip(&self, node: usize) -> Result<IpAddr> {
        let last = usize::from(self.first_ip) + node - 1;
        if node == 0 || last > 254 {
            return Err(Error::Cluster(format!(
                "node {node} does not fit after {}.{}",
                self.ip_prefix, self.first_ip
            )));
        }
        format!("{}.{last}", self.ip_prefix)
            .parse()
            .map_err(|_| Error::Cluster(format!("bad ip prefix {}", self.ip_prefix)))
    }

    pub fn admin_addr(&self, node: usize) -> Result<SocketAddr> {
        Ok(SocketAddr::new(self.ip(node)?, self.admin_port))
    }

    pub fn internode_addr(&self, node: usize) -> Result<SocketAddr> {
        Ok(SocketAddr::new(self.ip(node)?, self.internode_port))
    }

    pub fn cql_addr(&self, node: usize) -> Result<SocketAddr> {
        Ok(SocketAddr::new(self.ip(node)?, self.cql_port))
    }

    /// The configuration of node `node` living in `node_dir`.
    pub fn node_config(&self, node: usize, node_dir: &Path) -> Result<NodeConfig> {
        let mut cfg = NodeConfig::default();
        cfg.cluster.name = self.cluster_name.clone();
        // The first member still in the cluster is the seed.
        let seed = (1..=self.nodes)
            .find(|n| !self.decommissioned.contains(n))
            .unwrap_or(1);
        cfg.cluster.seeds = vec![self.internode_addr(seed)?.to_string()];
        cfg.cluster.num_tokens = self.num_tokens;
        let place = self.place(node);
        cfg.cluster.datacenter = place.dc;
        cfg.cluster.rack = place.rack;
        cfg.network.listen_address = self.ip(node)?;
        cfg.network.internode_port = self.internode_port;
        cfg.network.cql_port = self.cql_port;
        cfg.network.admin_port = self.admin_port;
        // Each node on its own loopback address: its admin endpoint too
        // (where `admin_addr` looks for it). Local clusters are for
        // development and chaos runs, so fault injection is on.
        cfg.admin.listen_address = self.ip(node)?;
        cfg.admin.allow_fault_injection = true;
        if self.tls {
            cfg.client_encryption.enabled = true;
            cfg.client_encryption.certificate = node_dir.join("node.crt");
            cfg.client_encryption.private_key = node_dir.join("node.key");
            // Internode mutual TLS with the same certificate (valid for
            // the node's address) and the cluster's CA.
            cfg.server_encryption.internode_encryption =
                gyre_node::config::InternodeEncryption::All;
            cfg.server_encryption.certificate = node_dir.join("node.crt");
            cfg.server_encryption.private_key = node_dir.join("node.key");
            // The node directory sits in the cluster directory (`node_dir`).
            let cluster_dir = node_dir.parent().unwrap_or(node_dir);
            cfg.server_encryption.ca_certificate = tls::ca_path(cluster_dir);
        }
        cfg.storage.data_dir = node_dir.join("data");
        cfg.storage.commitlog_dir = node_dir.join("commitlog");
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A local cluster directory.
#[derive(Clone, Debug)]
pub struct LocalCluster {
    pub dir: PathBuf,
    pub layout: Layout,
}

/// What `/proc` says about a recorded node process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    Running(i32),
    Paused(i32),
    Stopped,
}

impl LocalCluster {
    /// Opens an existing cluster directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("cluster.json");
        let body = fs::read(&path).map_err(io_err(format!(
            "no cluster in {} (run `gyrectl cluster up` first); reading {}",
            dir.display(),
            path.display()
        )))?;
        let layout = serde_json::from_slice(&body).map_err(|e| Error::Json {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            layout,
        })
    }

    /// Opens `dir` if it holds a cluster, else creates it with `layout`.
    pub fn open_or_create(dir: &Path, layout: Layout) -> Result<Self> {
        if dir.join("cluster.json").exists() {
            let c = Self::open(dir)?;
            if c.layout.nodes != layout.nodes {
                return Err(Error::Cluster(format!(
                    "{} holds a {}-node cluster; grow it with `gyrectl cluster add`, shrink it \
                     with `gyrectl cluster decommission N`, or run `gyrectl cluster down` and \
                     remove it to start another size",
                    dir.display(),
                    c.layout.nodes
                )));
            }
            return Ok(c);
        }
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let body = serde_json::to_vec_pretty(&layout).map_err(|e| Error::Json {
            what: "layout".into(),
            message: e.to_string(),
        })?;
        let path = dir.join("cluster.json");
        fs::write(&path, body).map_err(io_err(format!("writing {}", path.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            layout,
        })
    }

    /// The nodes still in the cluster (not decommissioned), in order.
    pub fn members(&self) -> Vec<usize> {
        (1..=self.layout.nodes)
            .filter(|n| !self.layout.decommissioned.contains(n))
            .collect()
    }

    /// Rewrites `cluster.json` (atomically: temporary file, rename).
    pub fn save_layout(&self) -> Result<()> {
        let body = serde_json::to_vec_pretty(&self.layout).map_err(|e| Error::Json {
            what: "layout".into(),
            message: e.to_string(),
        })?;
        let path = self.dir.join("cluster.json");
        let tmp = self.dir.join("cluster.json.tmp");
        fs::write(&tmp, body).map_err(io_err(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io_err(format!("renaming to {}", path.display())))
    }

    /// Adds a node to the layout and starts it: it bootstraps into the
    /// running cluster. Waits until every running member sees it UP and
    /// NORMAL. Returns its number.
    pub fn add_node(&mut self, gyre_bin: &Path, timeout: Duration) -> Result<usize> {
        self.add_node_at(gyre_bin, timeout, None, true)
    }

    /// The datacenters of the cluster's members.
    pub fn datacenters(&self) -> std::collections::BTreeSet<String> {
        self.members()
            .into_iter()
            .map(|n| self.layout.place(n).dc)
            .collect()
    }

    /// [`LocalCluster::add_node`] at `place` (default: `dc1`, `rack1`);
    /// without `bootstrap` the node starts with `auto_bootstrap = false`
    /// (Cassandra's procedure for a new datacenter: it joins NORMAL at
    /// once, streaming nothing, and `rebuild` fills it later).
    pub fn add_node_at(
        &mut self,
        gyre_bin: &Path,
        timeout: Duration,
        place: Option<Place>,
        bootstrap: bool,
    ) -> Result<usize> {
        let n = self.layout.nodes + 1;
        self.layout.ip(n)?;
        let seed = *self
            .members()
            .first()
            .ok_or_else(|| Error::Cluster("the cluster has no member left to join".into()))?;
        self.layout.nodes = n;
        if let Some(p) = place {
            self.layout.placement.insert(n, p);
        }
        self.save_layout()?;
        self.write_node_config(n, |c| c.cluster.auto_bootstrap = bootstrap)?;
        self.start_node(n, gyre_bin)?;
        let me = self.layout.internode_addr(n)?.to_string();
        // Joined means every running member sees it UN: until gossip has
        // told a member, that member still has pending ranges and refuses
        // cleanup or another join.
        let mut probes = vec![self.layout.admin_addr(seed)?];
        for m in self.members() {
            if m != seed && matches!(self.state(m), ProcState::Running(_)) {
                probes.push(self.layout.admin_addr(m)?);
            }
        }
        self.wait_for(&format!("node {n} to join"), timeout, &[n], |_| {
            Ok(probes.iter().all(|p| {
                fetch_status(*p, Duration::from_secs(1)).is_ok_and(|r| sees_up_normal(&r, &me))
            }))
        })?;
        Ok(n)
    }

    /// Replaces the dead node `dead` (Cassandra's `replace_address`): a new
    /// node, on the next free address, starts with `cluster.replace_address`
    /// = `dead`'s address, takes over its tokens, streams its ranges and
    /// turns NORMAL; `dead` leaves the ring and the layout. Waits until the
    /// seed sees the new node UN and no longer knows `dead`. Returns the new
    /// node's number.
    pub fn replace_node(
        &mut self,
        dead: usize,
        gyre_bin: &Path,
        timeout: Duration,
    ) -> Result<usize> {
        self.check_node(dead)?;
        if self.layout.decommissioned.contains(&dead) {
            return Err(Error::Cluster(format!(
                "node {dead} is no longer in the cluster"
            )));
        }
        if self.state(dead) != ProcState::Stopped {
            return Err(Error::Cluster(format!(
                "node {dead} is running: only a dead node is replaced (kill or stop it first)"
            )));
        }
        let n = self.layout.nodes + 1;
        self.layout.ip(n)?;
        let dead_ip = self.layout.ip(dead)?;
        let dead_addr = self.layout.internode_addr(dead)?.to_string();
        // Out of the layout first: never started again, and not the seed.
        self.layout.decommissioned.push(dead);
        let Some(seed) = self.members().first().copied() else {
            self.layout.decommissioned.retain(|d| *d != dead);
            return Err(Error::Cluster("no live member left to replace from".into()));
        };
        self.layout.nodes = n;
        self.save_layout()?;
        self.write_node_config(n, |c| c.cluster.replace_address = Some(dead_ip))?;
        self.start_node(n, gyre_bin)?;
        let me = self.layout.internode_addr(n)?.to_string();
        let seed_probe = self.layout.admin_addr(seed)?;
        let my_probe = self.layout.admin_addr(n)?;
        self.wait_for(
            &format!("node {n} to replace node {dead}"),
            timeout,
            &[n],
            |_| {
                let seed_view = fetch_status(seed_probe, Duration::from_secs(1)).is_ok_and(|r| {
                    sees_up_normal(&r, &me) && !r.endpoints.iter().any(|e| e.address == dead_addr)
                });
                Ok(seed_view
                    && fetch_status(my_probe, Duration::from_secs(1))
                        .is_ok_and(|r| sees_up_normal(&r, &me)))
            },
        )?;
        Ok(n)
    }

    /// Decommissions node `node` through its admin endpoint and waits until
    /// its process has exited (after streaming its data away).
    pub fn decommission(&mut self, node: usize, timeout: Duration) -> Result<()> {
        self.check_node(node)?;
        if self.layout.decommissioned.contains(&node) {
            return Err(Error::Cluster(format!(
                "node {node} was already decommissioned"
            )));
        }
        let addr = self.layout.admin_addr(node)?;
        match gyre_node::http::request(addr, "POST", "/decommission", None, Duration::from_secs(10))
        {
            Ok((202, _)) => {}
            Ok((_, body)) => return Err(Error::Cluster(body.trim().to_string())),
            Err(e) => {
                return Err(Error::Cluster(format!(
                    "node {node} did not accept the decommission: {e}"
                )))
            }
        }
        let deadline = Instant::now() + timeout;
        while self.state(node) != ProcState::Stopped {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("node {node} to leave the ring"),
                    secs: timeout.as_secs_f64(),
                });
            }
            // A failed decommission leaves the node NORMAL and running: say why.
            if let Ok((200, body)) =
                gyre_node::http::request(addr, "GET", "/decommission", None, Duration::from_secs(2))
            {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    if let Some(why) = v["last"].as_str().filter(|l| l.starts_with("failed")) {
                        return Err(Error::Cluster(format!("decommission of node {node} {why}")));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = fs::remove_file(self.node_dir(node).join("pid"));
        self.layout.decommissioned.push(node);
        self.save_layout()
    }

    /// `removenode` of dead node `dead` through the first other running
    /// member: waits until that member sees it DOWN, asks for the removal
    /// (the remaining replicas stream its ranges to their new owners) and
    /// waits for its end; `dead` then leaves the layout for good.
    pub fn removenode(&mut self, dead: usize, timeout: Duration) -> Result<()> {
        self.check_node(dead)?;
        if self.layout.decommissioned.contains(&dead) {
            return Err(Error::Cluster(format!(
                "node {dead} is no longer in the cluster"
            )));
        }
        if self.state(dead) != ProcState::Stopped {
            return Err(Error::Cluster(format!(
                "node {dead} is running: only a dead node is removed (kill or stop it first)"
            )));
        }
        let Some(via) = self
            .members()
            .into_iter()
            .find(|n| *n != dead && matches!(self.state(*n), ProcState::Running(_)))
        else {
            return Err(Error::Cluster("no running member to remove it".into()));
        };
        let admin = self.layout.admin_addr(via)?;
        let target = self.layout.internode_addr(dead)?.to_string();
        let mut host_id = None;
        self.wait_for(
            &format!("node {via} to see node {dead} DOWN"),
            timeout,
            &[via],
            |_| {
                let seen = fetch_status(admin, Duration::from_secs(1))
                    .ok()
                    .and_then(|r| r.endpoints.into_iter().find(|e| e.address == target));
                Ok(match seen {
                    Some(e) if !e.is_up() => {
                        host_id = e.host_id;
                        host_id.is_some()
                    }
                    _ => false,
                })
            },
        )?;
        let body = serde_json::json!({ "host_id": host_id }).to_string();
        match gyre_node::http::request(
            admin,
            "POST",
            "/removenode",
            Some(body.as_bytes()),
            Duration::from_secs(10),
        )? {
            (202, _) => {}
            (_, text) => {
                return Err(Error::Cluster(format!(
                    "removenode of node {dead} refused: {}",
                    text.trim()
                )))
            }
        }
        self.wait_for(
            &format!("the removal of node {dead}"),
            timeout,
            &[via],
            |_| {
                let (code, text) = gyre_node::http::request(
                    admin,
                    "GET",
                    "/removenode",
                    None,
                    Duration::from_secs(5),
                )?;
                let v: serde_json::Value = if code == 200 {
                    serde_json::from_str(&text).unwrap_or_default()
                } else {
                    serde_json::Value::Null
                };
                match v["state"].as_str() {
                    Some("done") => Ok(true),
                    Some(s) if s.starts_with("failed") => {
                        Err(Error::Cluster(format!("removal of node {dead} {s}")))
                    }
                    _ => Ok(false),
                }
            },
        )?;
        let _ = fs::remove_file(self.node_dir(dead).join("pid"));
        self.layout.decommissioned.push(dead);
        self.save_layout()
    }

    pub fn node_dir(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node{node}"))
    }

    pub fn log_path(&self, node: usize) -> PathBuf {
        self.node_dir(node).join("gyre.log")
    }

    fn check_node(&self, node: usize) -> Result<()> {
        if node == 0 || node > self.layout.nodes {
            return Err(Error::Cluster(format!(
                "no node {node}: the cluster has nodes 1..={}",
                self.layout.nodes
            )));
        }
        Ok(())
    }

    fn pid(&self, node: usize) -> Option<i32> {
        fs::read_to_string(self.node_dir(node).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether node `node`'s recorded process is alive (and really `gyre`).
    pub fn state(&self, node: usize) -> ProcState {
        match self.pid(node) {
            Some(pid) => proc_state(pid),
            None => ProcState::Stopped,
        }
    }

    /// Writes node `node`'s `gyre.toml` (and TLS certificate), with `edit`
    /// applied to the layout's configuration.
    fn write_node_config(&self, node: usize, edit: impl FnOnce(&mut NodeConfig)) -> Result<()> {
        let dir = self.node_dir(node);
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let conf = dir.join("gyre.toml");
        // Absolute paths, so the node works whatever its working directory.
        let abs = fs::canonicalize(&dir).map_err(io_err(format!("resolving {}", dir.display())))?;
        if self.layout.tls {
            let cluster = fs::canonicalize(&self.dir)
                .map_err(io_err(format!("resolving {}", self.dir.display())))?;
            tls::issue_node_certificate(&cluster, &abs, self.layout.ip(node)?)?;
        }
        let mut cfg = self.layout.node_config(node, &abs)?;
        edit(&mut cfg);
        let text = cfg.to_toml()?;
        fs::write(&conf, text).map_err(io_err(format!("writing {}", conf.display())))
    }

    /// Starts node `node` unless it is running; returns false if it was.
    pub fn start_node(&self, node: usize, gyre_bin: &Path) -> Result<bool> {
        self.check_node(node)?;
        if self.state(node) != ProcState::Stopped {
            return Ok(false);
        }
        let dir = self.node_dir(node);
        let conf = dir.join("gyre.toml");
        if !conf.exists() {
            self.write_node_config(node, |_| {})?;
        }
        let log_path = self.log_path(node);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        use std::os::unix::process::CommandExt;
        // The node runs in its own directory: give it an absolute path.
        let conf =
            fs::canonicalize(&conf).map_err(io_err(format!("resolving {}", conf.display())))?;
        let child = Command::new(gyre_bin)
            .arg("--config")
            .arg(&conf)
            .args(&self.layout.extra_args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Own process group: survives gyrectl and its terminal's signals.
            .process_group(0)
            .spawn()
            .map_err(io_err(format!("starting {}", gyre_bin.display())))?;
        let pid_path = dir.join("pid");
        fs::write(&pid_path, format!("{}\n", child.id()))
            .map_err(io_err(format!("writing {}", pid_path.display())))?;
        Ok(true)
    }

    /// Sends `sig` to node `node`; `Ok(false)` if it is not running.
    pub fn signal_node(&self, node: usize, sig: i32) -> Result<bool> {
        self.check_node(node)?;
        match self.state(node) {
            ProcState::Running(pid) | ProcState::Paused(pid) => {
                signal(pid, sig).map_err(io_err(format!("signalling node {node} (pid {pid})")))?;
                Ok(true)
            }
            ProcState::Stopped => Ok(false),
        }
    }

    /// Waits until node `node`'s process has exited.
    pub fn wait_exit(&self, node: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.state(node) != ProcState::Stopped {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("node {node} to exit"),
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = fs::remove_file(self.node_dir(node).join("pid"));
        Ok(())
    }

    /// SIGTERM (resuming it first if paused) and wait for the exit.
    pub fn stop_node(&self, node: usize, timeout: Duration) -> Result<bool> {
        if self.state(node) == ProcState::Stopped {
            return Ok(false);
        }
        self.signal_node(node, libc::SIGCONT)?;
        self.signal_node(node, libc::SIGTERM)?;
        self.wait_exit(node, timeout)?;
        Ok(true)
    }

    /// SIGKILL and wait for the exit.
    pub fn kill_node(&self, node: usize) -> Result<bool> {
        let sent = self.signal_node(node, libc::SIGKILL)?;
        self.wait_exit(node, Duration::from_secs(10))?;
        Ok(sent)
    }

    /// SIGKILLs every node without waiting (test teardown).
    pub fn kill_all(&self) {
        for n in self.members() {
            let _ = self.signal_node(n, libc::SIGKILL);
        }
    }

    /// The status reports of every reachable node (index = node - 1).
    pub fn views(&self) -> Vec<Option<StatusReport>> {
        (1..=self.layout.nodes)
            .map(|n| {
                let running = matches!(self.state(n), ProcState::Running(_))
                    && !self.layout.decommissioned.contains(&n);
                let addr = self.layout.admin_addr(n).ok()?;
                running
                    .then(|| fetch_status(addr, Duration::from_secs(1)).ok())
                    .flatten()
            })
            .collect()
    }

    /// Every node's digest of its local copy of `keyspace.table` (index =
    /// node - 1), or why a node could not give one. Replicas that
    /// converged give equal digests over the ranges they share (the whole
    /// table when RF equals the node count).
    pub fn table_digests(
        &self,
        keyspace: &str,
        table: &str,
    ) -> Vec<std::result::Result<TableDigest, String>> {
        let req = DigestRequest {
            keyspace: keyspace.to_string(),
            table: table.to_string(),
            start: None,
            end: None,
        };
        (1..=self.layout.nodes)
            .map(|n| {
                if self.layout.decommissioned.contains(&n) {
                    return Err("decommissioned".to_string());
                }
                let addr = self.layout.admin_addr(n).map_err(|e| e.to_string())?;
                let body = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
                match gyre_node::http::request(
                    addr,
                    "POST",
                    "/digest",
                    Some(&body),
                    Duration::from_secs(120),
                ) {
                    Ok((200, b)) => serde_json::from_str(&b).map_err(|e| e.to_string()),
                    Ok((s, b)) => Err(format!("HTTP {s}: {}", b.trim())),
                    Err(e) => Err(e.to_string()),
                }
            })
            .collect()
    }

    /// True when every node answers and sees every node UP and NORMAL.
    pub fn all_up_normal(&self) -> Result<bool> {
        let members = self.members();
        let want: Vec<String> = members
            .iter()
            .map(|n| self.layout.internode_addr(*n).map(|a| a.to_string()))
            .collect::<Result<_>>()?;
        let views = self.views();
        Ok(members.iter().all(|n| {
            views[n - 1]
                .as_ref()
                .is_some_and(|r| want.iter().all(|a| sees_up_normal(r, a)))
        }))
    }

    /// Polls until `cond` holds, failing early if a node we started died.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        started: &[usize],
        mut cond: impl FnMut(&Self) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self)? {
                return Ok(());
            }
            for &n in started {
                if self.state(n) == ProcState::Stopped {
                    return Err(Error::Cluster(format!(
                        "node {n} exited while waiting for {what}; last log lines:\n{}",
                        tail(&self.log_path(n), 15)
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: what.to_string(),
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts every stopped node, one at a time (a new node must see the
    /// previous one's tokens before choosing its own), then waits until all
    /// nodes see each other UP and NORMAL. Returns the nodes it started.
    pub fn up(&self, gyre_bin: &Path, timeout: Duration) -> Result<Vec<usize>> {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut started = Vec::new();
        let members = self.members();
        let seed = members.first().copied().unwrap_or(1);
        let seed_admin = self.layout.admin_addr(seed)?;
        for n in members {
            if !self.start_node(n, gyre_bin)? {
                continue;
            }
            started.push(n);
            let me = self.layout.internode_addr(n)?.to_string();
            let seed_running = matches!(self.state(seed), ProcState::Running(_));
            let probe = if seed_running {
                seed_admin
            } else {
                self.layout.admin_addr(n)?
            };
            self.wait_for(&format!("node {n} to join"), left(), &started, |_| {
                Ok(fetch_status(probe, Duration::from_secs(1)).is_ok_and(|r| sees_normal(&r, &me)))
            })?;
        }
        self.wait_for(
            "every node to see every node UP and NORMAL",
            left(),
            &started,
            |c| c.all_up_normal(),
        )?;
        Ok(started)
    }
}

/// True when `report` shows `addr` UP with status NORMAL.
pub fn sees_up_normal(report: &StatusReport, addr: &str) -> bool {
    report
        .endpoints
        .iter()
        .any(|e| e.address == addr && e.is_up() && e.is_normal())
}

fn sees_normal(report: &StatusReport, addr: &str) -> bool {
    report
        .endpoints
        .iter()
        .any(|e| e.address == addr && e.is_normal())
}

/// `GET /status` of the node whose admin endpoint is `addr`.
/// Starts a repair session on the node at `addr` (its admin port) and
/// follows it to the end, calling `progress` whenever it advances.
pub fn repair(
    addr: SocketAddr,
    req: &gyre_node::RepairRequest,
    mut progress: impl FnMut(&gyre_node::RepairSession),
) -> Result<gyre_node::RepairSession> {
    let json = |what: &str, e: serde_json::Error| Error::Json {
        what: format!("{addr}{what}"),
        message: e.to_string(),
    };
    let body = serde_json::to_vec(req).map_err(|e| json("/repair", e))?;
    let (status, text) = gyre_node::http::request(
        addr,
        "POST",
        "/repair",
        Some(&body),
        Duration::from_secs(10),
    )?;
    if status != 202 {
        return Err(Error::Cluster(format!(
            "repair refused by {addr}: {}",
            text.trim()
        )));
    }
    let session: gyre_node::RepairSession =
        serde_json::from_str(&text).map_err(|e| json("/repair", e))?;
    progress(&session);
    let mut last = session.ranges_done;
    loop {
        let text = gyre_node::http::get(addr, "/repair", Duration::from_secs(10))?;
        let sessions: Vec<gyre_node::RepairSession> =
            serde_json::from_str(&text).map_err(|e| json("/repair", e))?;
        let Some(s) = sessions.into_iter().find(|s| s.id == session.id) else {
            return Err(Error::Cluster(format!(
                "repair #{} vanished from {addr} (restarted?)",
                session.id
            )));
        };
        if s.ranges_done != last || s.state != "running" {
            last = s.ranges_done;
            progress(&s);
        }
        if s.state != "running" {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn fetch_status(addr: SocketAddr, timeout: Duration) -> Result<StatusReport> {
    fetch_status_of(addr, None, timeout)
}

/// `GET /status/KEYSPACE`: the status with effective ownership for
/// `keyspace` (an unknown one is refused with Cassandra's message).
pub fn fetch_status_of(
    addr: SocketAddr,
    keyspace: Option<&str>,
    timeout: Duration,
) -> Result<StatusReport> {
    let path = match keyspace {
        Some(k) => format!("/status/{k}"),
        None => "/status".to_string(),
    };
    let (code, body) = gyre_node::http::request(addr, "GET", &path, None, timeout)?;
    if code == 400 {
        // What nodetool prints for an unknown keyspace.
        return Err(Error::Cluster(body.trim().to_string()));
    }
    if code != 200 {
        return Err(Error::Cluster(format!(
            "{addr}{path}: HTTP {code}: {}",
            body.trim()
        )));
    }
    serde_json::from_str(&body).map_err(|e| Error::Json {
        what: format!("{addr}{path}"),
        message: e.to_string(),
    })
}

/// Sends a signal with kill(2).
pub fn signal(pid: i32, sig: i32) -> std::io::Result<()> {
    if pid <= 0 {
        return Err(std::io::Error::other("refusing to signal a process group"));
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let r = unsafe { libc::kill(pid, sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Liveness from `/proc`: zombies count as stopped, and so does a pid that
/// was reused by something other than `gyre`.
pub fn proc_state(pid: i32) -> ProcState {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcState::Stopped;
    };
    // comm (in parentheses, from the executable's name) rather than
    // cmdline, which reads empty while the process is still in exec.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return ProcState::Stopped;
    };
    if stat.get(open + 1..close) != Some("gyre") {
        return ProcState::Stopped;
    }
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("?");
    match state {
        "Z" | "X" | "x" => ProcState::Stopped,
        "T" | "t" => ProcState::Paused(pid),
        _ => ProcState::Running(pid),
    }
}

/// The last `n` lines of a file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Human-readable bytes, like nodetool (`12.3 KiB`).
pub fn human_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", units[i])
    } else {
        format!("{v:.2} {}", units[i])
    }
}

/// `nodetool status`: one block per datacenter, one line per node starting
/// with its two-letter state (`UN`, `DN`, `UJ`, `UL`, ...). `Owns
/// (effective)` when the report has effective ownership; otherwise `Owns`
/// is the primary share, followed by nodetool's note saying why.
pub fn format_status(r: &StatusReport) -> String {
    let effective = r.ownership_keyspace.is_some();
    let (owns_header, owns_width) = if effective {
        ("Owns (effective)", 18)
    } else {
        ("Owns", 10)
    };
    let mut by_dc: std::collections::BTreeMap<&str, Vec<&gyre_node::EndpointReport>> =
        Default::default();
    for e in r
        .endpoints
        .iter()
        .filter(|e| e.status.as_deref() != Some("LEFT"))
    {
        by_dc
            .entry(e.dc.as_deref().unwrap_or("?"))
            .or_default()
            .push(e);
    }
    let mut out = String::new();
    for (dc, eps) in by_dc {
        let title = format!("Datacenter: {dc}");
        let _ = writeln!(out, "{title}\n{}", "=".repeat(title.len()));
        let _ = writeln!(
            out,
            "Status=Up/Down\n|/ State=Normal/Leaving/Joining/Moving"
        );
        let _ = writeln!(
            out,
            "{:<4}{:<22}{:<12}{:<8}{:<owns_width$}{:<38}Rack",
            "--", "Address", "Load", "Tokens", owns_header, "Host ID"
        );
        for e in eps {
            let owns = if effective {
                e.effective_ownership
                    .map_or("?".into(), |o| format!("{:.1}%", o * 100.0))
            } else {
                format!("{:.1}%", e.ownership * 100.0)
            };
            let _ = writeln!(
                out,
                "{:<4}{:<22}{:<12}{:<8}{:<owns_width$}{:<38}{}",
                e.state_code(),
                e.address,
                e.load.map_or("?".into(), human_bytes),
                e.tokens.len(),
                owns,
                e.host_id.as_deref().unwrap_or("?"),
                e.rack.as_deref().unwrap_or("?"),
            );
        }
        out.push('\n');
    }
    if let Some(note) = &r.ownership_note {
        let _ = writeln!(out, "Note: {note}\n");
    }
    if !r.hints.is_empty() {
        let _ = writeln!(
            out,
            "Hints held by this node\n{:<38}{:<8}Size",
            "Target host ID", "Files"
        );
        for h in &r.hints {
            let _ = writeln!(
                out,
                "{:<38}{:<8}{}",
                h.host_id,
                h.files,
                human_bytes(h.bytes as f64)
            );
        }
        out.push('\n');
    }
    out
}

/// `nodetool netstats`: one line per streaming session with a progress bar
/// over its ranges.
pub fn format_netstats(node: &str, sessions: &[gyre_node::SessionReport]) -> String {
    let mut out = String::new();
    if sessions.is_empty() {
        let _ = writeln!(out, "{node}: not sending or receiving any streams.");
        return out;
    }
    let _ = writeln!(
        out,
        "{node}:\n{:<4}{:<14}{:<5}{:<22}{:<24}{:>10}{:>12}{:>11}  State",
        "Id", "Operation", "Dir", "Peer", "Ranges", "Rows", "Bytes", "MiB/s"
    );
    for s in sessions {
        let width = 10;
        let filled = (s.ranges_done * width as u64)
            .checked_div(s.ranges_total)
            .map_or(width, |f| f as usize);
        let bar = format!(
            "[{}{}] {}/{}",
            "#".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            s.ranges_done,
            s.ranges_total
        );
        let _ = writeln!(
            out,
            "{:<4}{:<14}{:<5}{:<22}{:<24}{:>10}{:>12}{:>11.1}  {}",
            s.id,
            s.operation,
            s.direction,
            s.peer,
            bar,
            s.partitions,
            human_bytes(s.bytes as f64),
            s.rate_mib_per_sec,
            s.state
        );
    }
    out
}

/// The `gyre` binary: `explicit`, else `$GYRE_BIN`, else next to this executable.
pub fn find_gyre_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("GYRE_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().map_err(io_err("locating gyrectl's own executable"))?;
    let candidate = me
        .parent()
        .map(|d| d.join("gyre"))
        .ok_or_else(|| Error::Cluster("gyrectl has no parent directory".into()))?;
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(Error::Cluster(format!(
            "no gyre binary at {} (build it with `cargo build -p gyre-node`, or pass --gyre-bin / set GYRE_BIN)",
            candidate.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            nodes: 3,
            cluster_name: "t".into(),
            ip_prefix: "127.0.0".into(),
            first_ip: 1,
            internode_port: 7000,
            cql_port: 9042,
            admin_port: 9180,
            num_tokens: 16,
            extra_args: vec![],
            decommissioned: vec![],
            tls: false,
            placement: Default::default(),
        }
    }

    #[test]
    fn node_addresses_and_configs() {
        let l = layout();
        assert_eq!(
            l.internode_addr(3).expect("fits").to_string(),
            "127.0.0.3:7000"
        );
        assert!(l.ip(0).is_err());
        let cfg = l.node_config(2, Path::new("/x/node2")).expect("valid");
        assert_eq!(cfg.cluster.seeds, ["127.0.0.1:7000"]);
        assert_eq!(cfg.storage.data_dir, Path::new("/x/node2/data"));
        let back = NodeConfig::from_toml(&cfg.to_toml().expect("toml"), "x").expect("parses");
        assert_eq!(back, cfg);
    }

    #[test]
    fn datacenters_and_racks_spread_like_ccm() {
        let p = spread(6, 2, 3).expect("even");
        let at = |n: usize| (p[&n].dc.as_str(), p[&n].rack.as_str());
        assert_eq!(at(1), ("dc1", "rack1"));
        assert_eq!(at(3), ("dc1", "rack3"));
        assert_eq!(at(4), ("dc2", "rack1"));
        assert_eq!(at(6), ("dc2", "rack3"));
        assert_eq!(spread(4, 2, 1).expect("even")[&2].rack, "rack1");
        assert!(spread(5, 2, 1).is_err());
        assert!(spread(4, 0, 1).is_err());
        let mut l = layout();
        l.nodes = 7;
        l.placement = p;
        let cfg = l.node_config(5, Path::new("/x/node5")).expect("valid");
        assert_eq!(
            (cfg.cluster.datacenter.as_str(), cfg.cluster.rack.as_str()),
            ("dc2", "rack2")
        );
        // A node not placed (added without --dc) is in dc1.
        let cfg = l.node_config(7, Path::new("/x/node7")).expect("valid");
        assert_eq!(cfg.cluster.datacenter, "dc1");
        // The placement survives cluster.json.
        let json = serde_json::to_string(&l).expect("json");
        let back: Layout = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, l);
    }

    #[test]
    fn status_lines_start_with_state() {
        let e = gyre_node::EndpointReport {
            address: "127.0.0.1:7000".into(),
            host_id: Some("h".into()),
            dc: Some("dc1".into()),
            rack: Some("rack1".into()),
            status: Some("NORMAL".into()),
            state: "UP".into(),
            generation: 1,
            heartbeat: 2,
            tokens: vec![1, 2],
            load: Some(2048.0),
            ownership: 0.5,
            effective_ownership: Some(1.0),
            native_address: None,
            release_version: None,
            schema: None,
            is_local: true,
        };
        let mut down = e.clone();
        down.state = "DOWN".into();
        down.address = "127.0.0.2:7000".into();
        let r = StatusReport {
            cluster_name: "c".into(),
            host_id: "h".into(),
            address: e.address.clone(),
            generation: 1,
            endpoints: vec![e, down],
            hints: vec![gyre_node::HintsReport {
                host_id: "h2".into(),
                files: 2,
                bytes: 3 << 20,
            }],
            ownership_keyspace: None,
            ownership_note: Some("Non-system keyspaces don't have the same replication".into()),
        };
        let text = format_status(&r);
        // Primary shares under `Owns`, then nodetool's note.
        assert!(
            text.contains("Owns      Host ID") && !text.contains("effective"),
            "{text}"
        );
        assert!(
            text.contains("\nNote: Non-system keyspaces don't have the same replication\n"),
            "{text}"
        );
        let mut eff = r.clone();
        eff.ownership_keyspace = Some("ks".into());
        eff.ownership_note = None;
        eff.endpoints[1].effective_ownership = None;
        let eff = format_status(&eff);
        assert!(eff.contains("Owns (effective)  Host ID"), "{eff}");
        assert!(!eff.contains("Note:"), "{eff}");
        assert!(
            eff.lines()
                .any(|l| l.starts_with("UN  127.0.0.1:7000") && l.contains(" 100.0% ")),
            "{eff}"
        );
        assert!(
            eff.lines()
                .any(|l| l.starts_with("DN  127.0.0.2:7000") && l.contains(" ?  ")),
            "{eff}"
        );
        assert!(text.contains("Datacenter: dc1"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("UN  127.0.0.1:7000")),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("DN  127.0.0.2:7000")),
            "{text}"
        );
        assert!(
            text.contains("2.00 KiB") && text.contains("50.0%"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("h2") && l.contains("3.00 MiB")),
            "{text}"
        );
    }
}

/// `secs` (Unix time) as `YYYY-MM-DD HH:MM:SS` UTC (Hinnant's
/// days-to-civil algorithm; no date library needed for a listing).
pub fn utc_time(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod utc_time_tests {
    #[test]
    fn formats_unix_seconds_as_utc() {
        assert_eq!(super::utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc_time(1_796_622_896), "2026-12-07 05:54:56");
    }
}
