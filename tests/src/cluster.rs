//! Helpers for the cluster tests: real `gyre` processes driven through the
//! real `gyrectl`, each test on its own loopback range and temp directory.
//!
//! The binaries are found next to the test executable's directory
//! (`target/<profile>/`). `cargo test --workspace` builds them (gyre-node
//! and gyrectl have integration tests, which makes cargo build their
//! binaries); with `-p gyre-tests` alone, run
//! `cargo build -p gyre-node -p gyrectl` first.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gyre_node::{EndpointReport, StatusReport};
use gyrectl::LocalCluster;

/// Path of a workspace binary (`gyre`, `gyrectl`) built by cargo.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`, or build it first with \
         `cargo build -p gyre-node -p gyrectl`",
        bin.display()
    );
    bin
}

/// A cluster of `nodes` gyre processes on `127.0.<octet>.1..=nodes`.
/// Dropping it SIGKILLs every node, so a failing test leaves nothing behind.
pub struct TestCluster {
    pub nodes: usize,
    pub octet: u8,
    pub dir: tempfile::TempDir,
    gyrectl: PathBuf,
    gyre: PathBuf,
}

impl TestCluster {
    pub fn new(nodes: usize, octet: u8) -> Self {
        Self {
            nodes,
            octet,
            dir: tempfile::Builder::new()
                .prefix("gyre-cluster-")
                .tempdir()
                .expect("tempdir"),
            gyrectl: workspace_bin("gyrectl"),
            gyre: workspace_bin("gyre"),
        }
    }

    pub fn cluster_dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    /// Runs `gyrectl <args>` (plus `--dir <cluster dir>` for `cluster` commands).
    pub fn gyrectl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.gyrectl);
        cmd.env("GYRE_BIN", &self.gyre);
        // `--dir` goes before a `--` (what follows is for the gyre processes).
        let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        cmd.args(&args[..split]);
        if args.first() == Some(&"cluster") {
            cmd.arg("--dir").arg(self.cluster_dir());
        }
        cmd.args(&args[split..]);
        let out = cmd.output().expect("running gyrectl");
        eprintln!(
            "$ gyrectl {} -> {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs gyrectl and panics (with the node logs) unless it succeeds.
    pub fn gyrectl_ok(&self, args: &[&str]) -> String {
        let out = self.gyrectl(args);
        if !out.status.success() {
            panic!("gyrectl {args:?} failed\n{}", self.logs());
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `gyrectl cluster up` with this cluster's addresses; returns its stdout.
    pub fn up(&self) -> String {
        self.up_with(&[])
    }

    /// [`TestCluster::up`] with extra `gyre` flags for every node.
    pub fn up_with(&self, gyre_args: &[&str]) -> String {
        let n = self.nodes.to_string();
        let prefix = format!("127.0.{}", self.octet);
        let mut args = vec![
            "cluster",
            "up",
            "--nodes",
            &n,
            "--ip-prefix",
            &prefix,
            "--cluster-name",
            "test cluster",
            "--timeout-secs",
            "60",
        ];
        if !gyre_args.is_empty() {
            args.push("--");
            args.extend_from_slice(gyre_args);
        }
        self.gyrectl_ok(&args)
    }

    pub fn internode(&self, node: usize) -> String {
        format!("127.0.{}.{node}:7000", self.octet)
    }

    /// Node `node`'s CQL address (each node has its own loopback address
    /// and the default port, as drivers expect).
    pub fn cql(&self, node: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, self.octet, node as u8], 9042))
    }

    pub fn admin(&self, node: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, self.octet, node as u8], 9180))
    }

    /// Node `node`'s `/status`, if it answers.
    pub fn status(&self, node: usize) -> Option<StatusReport> {
        gyrectl::fetch_status(self.admin(node), Duration::from_secs(1)).ok()
    }

    /// How `observer` sees `target` right now.
    pub fn view(&self, observer: usize, target: usize) -> Option<EndpointReport> {
        let addr = self.internode(target);
        self.status(observer)?
            .endpoints
            .into_iter()
            .find(|e| e.address == addr)
    }

    /// True when `observer` sees `target` UP (or DOWN) and NORMAL.
    pub fn sees(&self, observer: usize, target: usize, up: bool) -> bool {
        self.view(observer, target)
            .is_some_and(|e| e.is_up() == up && e.is_normal())
    }

    /// Polls `cond` every 100 ms until it holds; returns the time it took.
    /// Panics after `timeout` with the node logs.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            if cond() {
                let took = t0.elapsed();
                eprintln!("{what}: after {:.2} s", took.as_secs_f64());
                return took;
            }
            if t0.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        (1..=self.nodes)
            .map(|n| {
                let path = self.cluster_dir().join(format!("node{n}/gyre.log"));
                format!("--- node {n} ---\n{}\n", gyrectl::tail(&path, 30))
            })
            .collect()
    }

    pub fn pid(&self, node: usize) -> Option<i32> {
        std::fs::read_to_string(self.cluster_dir().join(format!("node{node}/pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Ok(c) = LocalCluster::open(&self.cluster_dir()) {
            c.kill_all();
        }
    }
}
