//! A node that comes back at a new address with its data (what Kubernetes
//! does when it reschedules a pod: same volume, new IP) keeps its host id
//! and tokens, and every node forgets its old address (Cassandra's host id
//! collision: the endpoint that started last owns the id). Nodes on
//! 127.0.160.1-3; node 3 moves to 127.0.161.3.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gyre_tests::cluster::{workspace_bin, TestCluster};

const MOVED: &str = "127.0.161.3";

/// Kills the moved node's process, also when the test fails.
struct Moved(Child);

impl Drop for Moved {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stress(host: &str, args: &[&str]) -> String {
    let out = Command::new(workspace_bin("gyre-stress"))
        .args(args)
        .args([
            "--hosts", host, "--rf", "3", "--keys", "500", "--ops", "500",
        ])
        .args([
            "--driver",
            "native",
            "--coordinator-only",
            "--max-errors",
            "0",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "gyre-stress {args:?} via {host}:\n{text}"
    );
    text
}

fn lists(observer: &str, target: &str) -> Option<gyre_node::EndpointReport> {
    let addr: std::net::SocketAddr = format!("{observer}:9180").parse().unwrap();
    let r = gyrectl::fetch_status(addr, Duration::from_secs(1)).ok()?;
    r.endpoints
        .into_iter()
        .find(|e| e.address == format!("{target}:7000"))
}

fn answers(observer: &str) -> bool {
    let addr: std::net::SocketAddr = format!("{observer}:9180").parse().unwrap();
    gyrectl::fetch_status(addr, Duration::from_secs(1)).is_ok()
}

#[test]
fn a_node_restarted_at_a_new_address_keeps_its_identity_and_data() {
    let c = TestCluster::new(3, 160);
    c.up();
    let old = "127.0.160.3";
    stress("127.0.160.1", &["write", "--cl", "ALL"]);
    let id3 = c.status(3).unwrap().host_id;

    // Stopped gracefully (as a pod is drained), started at a new address
    // on the same data and configuration.
    c.gyrectl_ok(&["cluster", "stop", "3"]);
    let dir = c.cluster_dir().join("node3");
    let log = std::fs::File::create(dir.join("moved.log")).unwrap();
    let moved = Moved(
        Command::new(workspace_bin("gyre"))
            .arg("--config")
            .arg(dir.join("gyre.toml"))
            .args(["--listen-address", MOVED, "--cql-address", MOVED])
            .args(["--admin-address", MOVED])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let observers = ["127.0.160.1", "127.0.160.2", MOVED];
    c.wait_until(
        "node 3 UN at its new address, its old one forgotten everywhere",
        Duration::from_secs(60),
        || {
            observers.iter().all(|o| {
                answers(o)
                    && lists(o, MOVED).is_some_and(|e| e.is_up() && e.is_normal())
                    && lists(o, old).is_none()
            })
        },
    );
    for o in observers {
        let e = lists(o, MOVED).unwrap();
        assert_eq!(
            e.host_id.as_deref(),
            Some(id3.as_str()),
            "{o}: host id of node 3"
        );
        let status = c.gyrectl_ok(&["status", "--host", o]);
        assert_eq!(status.matches("UN ").count(), 3, "{o}:\n{status}");
    }
    // Its data, read through it alone, and every replica at ALL.
    stress(MOVED, &["read", "--validate", "--cl", "ONE"]);
    stress("127.0.160.1", &["read", "--validate", "--cl", "ALL"]);
    // New writes reach it at its new address.
    stress("127.0.160.2", &["write", "--cl", "ALL"]);
    drop(moved);
}
