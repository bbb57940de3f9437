//! Elastic clusters with real processes: nodes join a running cluster
//! (`gyrectl cluster add`: BOOT, streaming, NORMAL) and leave it
//! (`gyrectl cluster decommission N`) while `gyre-stress` writes at QUORUM
//! at a fixed rate; afterwards every row validates through every node at
//! QUORUM and ONE. The Python driver sees a new node in its metadata. A
//! dead node whose disk is lost is replaced (`gyrectl cluster replace N`)
//! under load, and cleanup after a join frees the ranges given away.
//!
//! The short form runs in about a minute; `GYRE_ELASTIC_LONG=1` runs the
//! same scenario with ten times the data and load.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use gyre_tests::cluster::{workspace_bin, TestCluster};

/// Ring delay of the test nodes: long enough to observe `UJ`/`UL`.
const RING_DELAY_MS: &str = "1500";

fn long() -> bool {
    std::env::var_os("GYRE_ELASTIC_LONG").is_some_and(|v| v != "0")
}

/// `gyre-stress`, next to the test executable's directory.
fn stress_bin() -> PathBuf {
    workspace_bin("gyre-stress")
}

fn stress_cmd(host: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(stress_bin());
    cmd.args(args)
        .args(["--hosts", host, "--rf", "3", "--quiet", "--max-errors", "0"]);
    cmd
}

fn show(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes keys `0..keys` of `table` at QUORUM (as fast as possible).
fn populate(c: &TestCluster, table: &str, keys: u64) {
    let k = keys.to_string();
    let out = stress_cmd(
        &c.cql(1).ip().to_string(),
        &[
            "write", "--table", table, "--ops", &k, "--keys", &k, "--cl", "QUORUM",
        ],
    )
    .output()
    .expect("gyre-stress");
    assert!(out.status.success(), "{}\n{}", show(&out), c.logs());
}

/// Starts a QUORUM write load of `ops` keys of `table` at `rate` ops/s.
fn start_load(c: &TestCluster, table: &str, ops: u64, rate: u64, json: &Path) -> Child {
    // The table exists before any node starts to join or leave.
    populate(c, table, 1);
    let (o, r) = (ops.to_string(), rate.to_string());
    stress_cmd(
        &c.cql(1).ip().to_string(),
        &[
            "write", "--table", table, "--ops", &o, "--keys", &o, "--rate", &r, "--cl", "QUORUM",
        ],
    )
    .arg("--json")
    .arg(json)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("gyre-stress")
}

fn finish_load(c: &TestCluster, load: Child, json: &Path) {
    let out = load.wait_with_output().expect("gyre-stress");
    assert!(
        out.status.success(),
        "load failed:\n{}\n{}",
        show(&out),
        c.logs()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("report")).expect("json");
    assert_eq!(report["total"]["errors"], 0, "{report}");
}

/// Reads every key of `table` through node `node` only (the native client
/// sends every request to that coordinator) at `cl`: 0 missing, 0 wrong.
fn validate(c: &TestCluster, node: usize, table: &str, keys: u64, cl: &str) {
    let k = keys.to_string();
    let out = stress_cmd(
        &c.cql(node).ip().to_string(),
        &[
            "read",
            "--validate",
            "--driver",
            "native",
            "--coordinator-only",
            "--table",
            table,
            "--keys",
            &k,
            "--cl",
            cl,
        ],
    )
    .output()
    .expect("gyre-stress");
    let text = show(&out);
    assert!(
        out.status.success() && text.contains(&format!("{keys} checked, 0 missing, 0 wrong")),
        "validation of {table} through node {node} at {cl}:\n{text}\n{}",
        c.logs()
    );
}

/// Polls node `observer`'s status until it shows node `target` with the
/// two-letter state `code` (`UJ`, `UL`); returns whether it did in time.
fn saw_state(c: &TestCluster, observer: usize, target: usize, code: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if c.view(observer, target)
            .is_some_and(|e| e.state_code() == code)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn three_to_five_and_back_under_quorum_load_loses_nothing() {
    let scale = if long() { 10 } else { 1 };
    let (base, load_ops, rate) = (10_000 * scale, 6_000 * scale, 500);
    let c = TestCluster::new(5, 100);
    // Three nodes first: `cluster up --nodes 3` on a 5-node TestCluster.
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--ip-prefix",
        "127.0.100",
        "--cluster-name",
        "elastic",
        "--timeout-secs",
        "60",
        "--",
        "--ring-delay-ms",
        RING_DELAY_MS,
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    populate(&c, "base", base);

    // Join two nodes while writes run at QUORUM.
    let json = dir.path().join("join.json");
    let load = start_load(&c, "during_join", load_ops, rate, &json);
    let observer = std::thread::scope(|s| {
        let watch = s.spawn(|| saw_state(&c, 1, 4, "UJ"));
        c.gyrectl_ok(&["cluster", "add", "--count", "2", "--timeout-secs", "300"]);
        watch.join().expect("watcher")
    });
    assert!(observer, "node 1 never showed node 4 as UJ while it joined");
    finish_load(&c, load, &json);
    // The joining nodes balanced their tokens for the keyspace's replication.
    for n in [4, 5] {
        let log = std::fs::read_to_string(c.cluster_dir().join(format!("node{n}/gyre.log")))
            .expect("node log");
        assert!(
            log.lines().any(|l| l.contains("allocated tokens")
                && l.contains("balanced_for=keyspace gyre_stress")
                && l.contains("Simple { rf: 3 }")),
            "node {n} did not balance its tokens for gyre_stress:\n{log}"
        );
    }
    // Balanced: every node holds its share of the data at RF 3 (3/5)
    // within ±25%, as `nodetool status KEYSPACE` shows it.
    let status = c.gyrectl_ok(&["status", "gyre_stress", "--host", "127.0.100.1"]);
    assert_eq!(status.matches("UN  ").count(), 5, "{status}");
    assert!(status.contains("Owns (effective)"), "{status}");
    let owns: Vec<f64> = status
        .lines()
        .filter(|l| l.starts_with("UN  "))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_suffix('%')))
        .map(|p| p.parse::<f64>().expect("a percentage") / 100.0)
        .collect();
    assert_eq!(owns.len(), 5, "{status}");
    let total: f64 = owns.iter().sum();
    assert!(
        (total - 3.0).abs() < 0.01,
        "effective ownership sums to {total}: {status}"
    );
    for o in &owns {
        assert!(
            (0.45..=0.75).contains(o),
            "a node holds {o:.3} of the data at RF 3 (mean 0.6):\n{status}"
        );
    }
    for node in 1..=5 {
        for cl in ["QUORUM", "ONE"] {
            validate(&c, node, "base", base, cl);
            validate(&c, node, "during_join", load_ops, cl);
        }
    }
    // The joined nodes stream their share: about 3/4 and 3/5 of each table.
    let streams: serde_json::Value = serde_json::from_str(
        &gyre_node::http::request(c.admin(4), "GET", "/streams", None, Duration::from_secs(5))
            .expect("/streams")
            .1,
    )
    .expect("json");
    let partitions: u64 = streams
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| {
            assert_eq!(s["state"], "done", "{s}");
            s["partitions"].as_u64().unwrap_or(0)
        })
        .sum();
    assert!(
        partitions > base / 2,
        "node 4 streamed {partitions} partitions"
    );
    // ... as SSTable files (whole or sections), not rows.
    let files: u64 = streams
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["whole_files"].as_u64().unwrap_or(0) + s["sections"].as_u64().unwrap_or(0))
        .sum();
    assert!(files > 0, "node 4 received no SSTable: {streams}");
    // Sections carry runs of stored data blocks, not only decoded
    // partitions (small ranges of small SSTables: the edges weigh much).
    let raw: u64 = streams
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["raw_bytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(raw > 0, "node 4 received no stored block: {streams}");
    let netstats = c.gyrectl_ok(&["netstats", "--host", "127.0.100.4"]);
    assert!(
        netstats.contains("bootstrap") && netstats.contains("[##########]"),
        "{netstats}"
    );

    // Decommission two of them under the same load, back to three nodes.
    let json = dir.path().join("leave.json");
    let load = start_load(&c, "during_leave", load_ops, rate, &json);
    let observer = std::thread::scope(|s| {
        let watch = s.spawn(|| saw_state(&c, 1, 5, "UL"));
        c.gyrectl_ok(&["cluster", "decommission", "5"]);
        let saw = watch.join().expect("watcher");
        c.gyrectl_ok(&["cluster", "decommission", "4"]);
        saw
    });
    assert!(observer, "node 1 never showed node 5 as UL while it left");
    finish_load(&c, load, &json);
    let status = c.gyrectl_ok(&["status", "--host", "127.0.100.1"]);
    assert_eq!(status.matches("UN  ").count(), 3, "{status}");
    assert!(
        !status.contains("127.0.100.4") && !status.contains("127.0.100.5"),
        "{status}"
    );
    for node in 1..=3 {
        for cl in ["QUORUM", "ONE"] {
            validate(&c, node, "base", base, cl);
            validate(&c, node, "during_join", load_ops, cl);
            validate(&c, node, "during_leave", load_ops, cl);
        }
    }
    // RF = nodes again: every node holds every row.
    c.gyrectl_ok(&["cluster", "digest", "gyre_stress.base"]);

    // A keyspace with RF 3 may not drop to two nodes (Cassandra's message).
    let out = c.gyrectl(&["cluster", "decommission", "3"]);
    assert!(!out.status.success());
    assert!(
        show(&out).contains(
            "Not enough live nodes to maintain replication factor in keyspace gyre_stress \
             (RF = 3, N = 2). Perform a forceful decommission to ignore."
        ),
        "{}",
        show(&out)
    );
}

const DRIVER_SCRIPT: &str = r#"
import sys, time
from cassandra.cluster import Cluster
from cassandra.policies import TokenAwarePolicy, RoundRobinPolicy
from cassandra.cluster import ExecutionProfile, EXEC_PROFILE_DEFAULT
host, new = sys.argv[1], sys.argv[2]
profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()))
cluster = Cluster([host], execution_profiles={EXEC_PROFILE_DEFAULT: profile})
session = cluster.connect()
session.execute("CREATE KEYSPACE IF NOT EXISTS drv WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}")
session.execute("CREATE TABLE IF NOT EXISTS drv.t (k int PRIMARY KEY, v int)")
for k in range(200):
    session.execute("INSERT INTO drv.t (k, v) VALUES (%s, %s)", (k, k))
print("hosts", sorted(h.address for h in cluster.metadata.all_hosts()), flush=True)
print("ready", flush=True)
deadline = time.time() + 120
while time.time() < deadline:
    hosts = {h.address: h for h in cluster.metadata.all_hosts()}
    if new in hosts and hosts[new].is_up is not False:
        break
    time.sleep(0.2)
else:
    sys.exit("the driver never saw %s: %s" % (new, sorted(hosts)))
# The token map includes the new node's tokens: token-aware routing sends
# some keys' requests to it, and every row is still there (RF 1: the new
# node serves the rows it streamed).
deadline = time.time() + 60
while time.time() < deadline:
    owners = set()
    tm = cluster.metadata.token_map
    for k in range(200):
        key = session.prepare("SELECT v FROM drv.t WHERE k = ?").bind((k,)).routing_key
        owners.update(h.address for h in tm.get_replicas("drv", tm.token_class.from_key(key)))
    if new in owners:
        break
    time.sleep(0.5)
else:
    sys.exit("the token map never routed to %s" % new)
prepared = session.prepare("SELECT v FROM drv.t WHERE k = ?")
served = 0
for k in range(200):
    rs = session.execute(prepared, (k,))
    row = rs.one()
    assert row is not None and row.v == k, (k, row)
    if rs.response_future._current_host.address == new:
        served += 1
assert served > 0, "no request was routed to the new node"
print("routed to new node:", served, flush=True)
print("ok", flush=True)
"#;

/// The Python driver's venv, shared with the other driver tests.
fn python() -> PathBuf {
    gyre_tests::python::python_with_driver()
}

#[test]
fn python_driver_sees_a_joining_node_and_routes_to_it() {
    let c = TestCluster::new(3, 104);
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "2",
        "--ip-prefix",
        "127.0.104",
        "--cluster-name",
        "elastic",
        "--timeout-secs",
        "60",
        "--",
        "--ring-delay-ms",
        "500",
    ]);
    let addr = c.cql(1);
    c.wait_until("CQL port open", Duration::from_secs(30), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    let new = c.cql(3).ip().to_string();
    let mut child = Command::new(python())
        .args(["-c", DRIVER_SCRIPT, &addr.ip().to_string(), &new])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        seen.push(line.clone());
        if line == "ready" {
            break;
        }
    }
    assert_eq!(seen.last().map(String::as_str), Some("ready"), "{seen:?}");
    c.gyrectl_ok(&["cluster", "add"]);
    seen.extend(lines.map_while(Result::ok));
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success() && seen.iter().any(|l| l == "ok"),
        "driver script failed: {seen:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
}

#[test]
fn removenode_of_a_dead_node_streams_its_ranges_and_refuses_a_live_one() {
    let c = TestCluster::new(4, 101);
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "4",
        "--ip-prefix",
        "127.0.101",
        "--cluster-name",
        "elastic",
        "--timeout-secs",
        "60",
        "--",
        "--ring-delay-ms",
        "500",
    ]);
    populate(&c, "base", 5_000);
    let host_id = |n: usize| c.status(n).expect("status").host_id;
    let (live, dead) = (host_id(3), host_id(4));
    c.gyrectl_ok(&["cluster", "kill", "4"]);
    c.wait_until("node 1 sees node 4 DOWN", Duration::from_secs(30), || {
        c.sees(1, 4, false)
    });

    let out = c.gyrectl(&["removenode", &live, "--host", "127.0.101.1"]);
    assert!(!out.status.success());
    assert!(
        show(&out).contains(
            "Node /127.0.101.3:7000 is alive and owns this ID. Use decommission command to \
             remove it from the ring"
        ),
        "{}",
        show(&out)
    );
    let out = c.gyrectl(&["removenode", "force", "--host", "127.0.101.1"]);
    assert!(
        show(&out).contains("No tokens to force removal on"),
        "{}",
        show(&out)
    );

    c.gyrectl_ok(&["removenode", &dead, "--host", "127.0.101.1"]);
    for n in 1..=3 {
        c.wait_until(
            &format!("node {n} forgets node 4"),
            Duration::from_secs(30),
            || c.view(n, 4).is_none(),
        );
    }
    let status = c.gyrectl_ok(&["removenode", "status", "--host", "127.0.101.1"]);
    assert!(status.contains("\"done\""), "{status}");
    // Before any read could repair them: the three nodes (RF 3) each hold
    // every row again, streamed from the remaining replicas.
    let digest = c.gyrectl_ok(&["cluster", "digest", "gyre_stress.base"]);
    assert!(digest.contains("replicas agree"), "{digest}");
    for node in 1..=3 {
        validate(&c, node, "base", 5_000, "ALL");
    }
}

/// Node `n`'s streaming sessions (`GET /streams`), if it answers.
fn streams(c: &TestCluster, n: usize) -> Option<serde_json::Value> {
    let (code, body) =
        gyre_node::http::request(c.admin(n), "GET", "/streams", None, Duration::from_secs(2))
            .ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

#[test]
fn a_killed_bootstrap_resumes_after_a_restart() {
    let c = TestCluster::new(4, 102);
    // 1 MiB/s: streaming the new node's share takes a few seconds.
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--ip-prefix",
        "127.0.102",
        "--cluster-name",
        "elastic",
        "--timeout-secs",
        "60",
        "--",
        "--ring-delay-ms",
        "500",
        "--stream-throughput-mb-per-sec",
        "1",
    ]);
    populate(&c, "base", 20_000);
    std::thread::scope(|s| {
        let add = s.spawn(|| c.gyrectl(&["cluster", "add"]));
        c.wait_until("node 4 received a range", Duration::from_secs(60), || {
            streams(&c, 4).is_some_and(|v| {
                v.as_array()
                    .is_some_and(|a| a.iter().any(|s| s["ranges_done"].as_u64() > Some(0)))
            })
        });
        c.gyrectl_ok(&["cluster", "kill", "4"]);
        let out = add.join().expect("add");
        assert!(
            !out.status.success(),
            "the add should fail with its node killed"
        );
    });
    let state = std::fs::read_to_string(c.cluster_dir().join("node4/data/node_state.json"))
        .expect("node_state.json");
    assert!(state.contains("\"bootstrapped\": false"), "{state}");
    // The ranges received before the kill are recorded, and skipped.
    let record = c.cluster_dir().join("node4/data/bootstrap_ranges.json");
    let done = std::fs::read_to_string(&record).expect("bootstrap_ranges.json");
    assert!(done.contains("\"table\""), "{done}");
    c.gyrectl_ok(&["cluster", "start", "4"]);
    let state = std::fs::read_to_string(c.cluster_dir().join("node4/data/node_state.json"))
        .expect("node_state.json");
    assert!(state.contains("\"bootstrapped\": true"), "{state}");
    let log = std::fs::read_to_string(c.cluster_dir().join("node4/gyre.log")).expect("log");
    assert!(
        log.contains("ranges already received are skipped"),
        "no resume in node 4's log"
    );
    assert!(
        !record.exists(),
        "the record goes once the bootstrap is done"
    );
    for cl in ["ONE", "QUORUM"] {
        validate(&c, 4, "base", 20_000, cl);
    }
}

#[test]
fn a_join_with_a_source_down_is_refused_unless_overridden() {
    let c = TestCluster::new(4, 103);
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--ip-prefix",
        "127.0.103",
        "--cluster-name",
        "elastic",
        "--timeout-secs",
        "60",
        "--",
        "--ring-delay-ms",
        "500",
    ]);
    populate(&c, "base", 3_000);
    c.gyrectl_ok(&["cluster", "kill", "3"]);
    c.wait_until("node 1 sees node 3 DOWN", Duration::from_secs(30), || {
        c.sees(1, 3, false)
    });
    // RF 3 on 3 nodes: every range the new node takes is given up by one
    // replica, node 3 among them.
    let out = c.gyrectl(&["cluster", "add", "--timeout-secs", "60"]);
    assert!(!out.status.success());
    let log = gyrectl::tail(&c.cluster_dir().join("node4/gyre.log"), 50);
    assert!(
        log.contains("A node required to move the data consistently is down (/127.0.103.3)"),
        "{log}"
    );
    // The documented override: stream from any live replica.
    let conf = c.cluster_dir().join("node4/gyre.toml");
    let text = std::fs::read_to_string(&conf).expect("gyre.toml");
    assert!(text.contains("consistent_rangemovement = true"), "{text}");
    std::fs::write(
        &conf,
        text.replace(
            "consistent_rangemovement = true",
            "consistent_rangemovement = false",
        ),
    )
    .expect("write gyre.toml");
    c.gyrectl_ok(&["cluster", "start", "4"]);
    for cl in ["ONE", "QUORUM"] {
        validate(&c, 4, "base", 3_000, cl);
    }
}

/// Connected to node 1 before a replace: the driver drops the replaced
/// node and gains the replacement (REMOVED_NODE / NEW_NODE), and node 1's
/// `system.peers` lists the replacement in its place.
const REPLACE_DRIVER_SCRIPT: &str = r#"
import sys, time
from cassandra.cluster import Cluster
contact, old, new = sys.argv[1], sys.argv[2], sys.argv[3]
cluster = Cluster([contact], protocol_version=4, connect_timeout=10)
session = cluster.connect()
print("ready", flush=True)
deadline = time.time() + 180
while time.time() < deadline:
    hosts = {h.address for h in cluster.metadata.all_hosts()}
    if new in hosts and old not in hosts:
        break
    time.sleep(0.2)
else:
    sys.exit("driver hosts never became new-without-old: %s" % sorted(hosts))
# Asked of whichever node the driver picks: each drops the old node as it
# hears the replacement turn NORMAL.
deadline = time.time() + 60
while time.time() < deadline:
    peers = sorted(r.peer for r in session.execute("SELECT peer FROM system.peers"))
    if old not in peers and new in peers:
        break
    time.sleep(0.2)
else:
    sys.exit("system.peers still %s" % peers)
print("peers", peers, flush=True)
print("ok", flush=True)
"#;

/// Runs `gyre` directly as a replacement of `replace` at 127.0.145.9 and
/// returns its output once it exits (a refused replace stops the node).
fn refused_replacement(c: &TestCluster, replace: &str) -> String {
    let data = tempfile::tempdir().expect("tempdir");
    let out = Command::new(workspace_bin("gyre"))
        .args([
            "--cluster-name",
            "elastic",
            "--listen-address",
            "127.0.145.9",
            "--admin-address",
            "127.0.145.9",
            "--seeds",
            "127.0.145.1",
            "--ring-delay-ms",
            "500",
            "--replace-address",
            replace,
        ])
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .arg("--commitlog-dir")
        .arg(data.path().join("commitlog"))
        .output()
        .expect("gyre");
    assert!(!out.status.success(), "{}\n{}", show(&out), c.logs());
    show(&out)
}

#[test]
fn a_dead_node_replaced_serves_its_ranges_from_streamed_data() {
    let scale = if long() { 10 } else { 1 };
    let (base, load_ops, rate) = (5_000 * scale, 3_000 * scale, 300);
    let c = TestCluster::new(4, 145);
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--ip-prefix",
        "127.0.145",
        "--cluster-name",
        "elastic",
        "--timeout-secs",
        "60",
        "--",
        "--ring-delay-ms",
        "1000",
    ]);
    populate(&c, "base", base);

    // Cassandra's refusals: a live node, an address gossip does not know.
    let out = refused_replacement(&c, "127.0.145.2");
    assert!(
        out.contains("Cannot replace a live node /127.0.145.2"),
        "{out}"
    );
    let out = refused_replacement(&c, "127.0.145.8");
    assert!(
        out.contains("Cannot replace_address /127.0.145.8 because it doesn't exist in gossip"),
        "{out}"
    );

    // Node 3 dies with its disk.
    c.gyrectl_ok(&["cluster", "kill", "3"]);
    c.wait_until("node 1 sees node 3 DOWN", Duration::from_secs(30), || {
        c.sees(1, 3, false)
    });
    let node3 = c.cluster_dir().join("node3");
    for d in ["data", "commitlog"] {
        std::fs::remove_dir_all(node3.join(d)).expect("delete node 3's data");
    }
    let out = c.gyrectl(&["cluster", "replace", "1"]);
    assert!(
        !out.status.success() && show(&out).contains("node 1 is running"),
        "{}",
        show(&out)
    );

    let mut driver = Command::new(python())
        .args(["-c", REPLACE_DRIVER_SCRIPT, "127.0.145.1", "127.0.145.3"])
        .arg("127.0.145.4")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    let mut lines = BufReader::new(driver.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        seen.push(line.clone());
        if line == "ready" {
            break;
        }
    }
    assert_eq!(seen.last().map(String::as_str), Some("ready"), "{seen:?}");

    // Replace it under a light QUORUM write load.
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("replace.json");
    let load = start_load(&c, "during_replace", load_ops, rate, &json);
    let joining = std::thread::scope(|s| {
        let watch = s.spawn(|| saw_state(&c, 1, 4, "UJ"));
        let out = c.gyrectl_ok(&["cluster", "replace", "3", "--timeout-secs", "300"]);
        assert!(out.contains("node 4 replaced node 3"), "{out}");
        watch.join().expect("watcher")
    });
    assert!(
        joining,
        "node 1 never showed node 4 as UJ while it replaced node 3"
    );
    finish_load(&c, load, &json);
    for n in [1, 2, 4] {
        c.wait_until(
            &format!("node {n} forgets node 3"),
            Duration::from_secs(30),
            || c.view(n, 3).is_none() && c.sees(n, 4, true),
        );
    }
    // Node 4 owns node 3's tokens.
    let status = c.gyrectl_ok(&["status", "--host", "127.0.145.1"]);
    assert_eq!(status.matches("UN  ").count(), 3, "{status}");
    seen.extend(lines.map_while(Result::ok));
    let out = driver.wait_with_output().expect("python");
    assert!(
        out.status.success() && seen.iter().any(|l| l == "ok"),
        "driver script failed: {seen:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );

    for node in [1, 2, 4] {
        validate(&c, node, "base", base, "ALL");
        validate(&c, node, "during_replace", load_ops, "ALL");
    }
    // Node 4 alone: its rows were streamed (base) or written to it as a
    // pending replica (the load), not read from the others.
    c.gyrectl_ok(&["cluster", "kill", "1"]);
    c.gyrectl_ok(&["cluster", "kill", "2"]);
    c.wait_until(
        "node 4 sees nodes 1 and 2 DOWN",
        Duration::from_secs(30),
        || c.sees(4, 1, false) && c.sees(4, 2, false),
    );
    validate(&c, 4, "base", base, "ONE");
    validate(&c, 4, "during_replace", load_ops, "ONE");
}

#[test]
fn cleanup_after_a_join_frees_the_ranges_given_away() {
    let base = if long() { 50_000 } else { 5_000 };
    let c = TestCluster::new(4, 146);
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--ip-prefix",
        "127.0.146",
        "--cluster-name",
        "elastic",
        "--timeout-secs",
        "60",
        "--",
        "--ring-delay-ms",
        "500",
    ]);
    populate(&c, "base", base);
    // Cassandra's refusals.
    let out = c.gyrectl(&["cleanup", "system", "--host", "127.0.146.1"]);
    assert!(
        show(&out).contains("Cleanup of the system keyspace is neither necessary nor possible."),
        "{}",
        show(&out)
    );
    let out = c.gyrectl(&["cleanup", "nope", "--host", "127.0.146.1"]);
    assert!(
        show(&out).contains("Keyspace [nope] does not exist."),
        "{}",
        show(&out)
    );
    c.gyrectl_ok(&["cluster", "add"]);
    // RF 3 on 4 nodes: each old node now replicates about 3/4 of the ring.
    let out = c.gyrectl_ok(&[
        "cleanup",
        "gyre_stress",
        "--host",
        "127.0.146.1,127.0.146.2,127.0.146.3",
    ]);
    let (mut before, mut after) = (0, 0);
    for n in 1..=3 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("127.0.146.{n}: gyre_stress.base:")))
            .unwrap_or_else(|| panic!("no report of node {n}: {out}"));
        let sizes: Vec<u64> = line
            .split(": ")
            .nth(2)
            .expect("sizes")
            .trim_end_matches(" bytes")
            .split(" -> ")
            .map(|v| v.parse().expect("bytes"))
            .collect();
        assert!(sizes[1] < sizes[0], "node {n} did not shrink: {line}");
        before += sizes[0];
        after += sizes[1];
    }
    // Each gave up about a quarter (vnodes make it uneven per node).
    assert!(
        after < before * 17 / 20,
        "{before} -> {after} bytes:\n{out}"
    );
    assert!(out.contains("cleanup freed"), "{out}");
    for node in 1..=4 {
        validate(&c, node, "base", base, "QUORUM");
    }

    // The ring as nodetool shows it: 4 nodes x 16 tokens, all Up Normal;
    // each range of the keyspace with its 3 replicas.
    let ring = c.gyrectl_ok(&["ring", "--host", "127.0.146.2"]);
    assert_eq!(ring.matches("Up      Normal").count(), 64, "{ring}");
    let ranges = c.gyrectl_ok(&["describering", "gyre_stress", "--host", "127.0.146.2"]);
    let lines: Vec<&str> = ranges
        .lines()
        .filter(|l| l.contains("TokenRange("))
        .collect();
    assert_eq!(lines.len(), 64, "{ranges}");
    assert!(
        lines.iter().all(|l| l.matches("127.0.146.").count() == 3),
        "{ranges}"
    );
    // getendpoints agrees with the Python driver's token map.
    let ours = c.gyrectl_ok(&[
        "getendpoints",
        "gyre_stress",
        "base",
        "42",
        "--host",
        "127.0.146.3",
    ]);
    let mut ours: Vec<&str> = ours.lines().collect();
    ours.sort_unstable();
    assert_eq!(ours.len(), 3, "{ours:?}");
    let out = Command::new(python())
        .args(["-c", GETENDPOINTS_SCRIPT, "127.0.146.1"])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", show(&out));
    let driver = String::from_utf8_lossy(&out.stdout);
    assert_eq!(driver.trim(), ours.join(","), "driver vs getendpoints");
    let out = c.gyrectl(&[
        "getendpoints",
        "gyre_stress",
        "base",
        "x",
        "--host",
        "127.0.146.3",
    ]);
    assert!(
        show(&out).contains("\"x\" is not a valid bigint"),
        "{}",
        show(&out)
    );
}

/// The replicas of bigint key 42 of gyre_stress, from the driver's token map.
const GETENDPOINTS_SCRIPT: &str = r#"
import struct, sys
from cassandra.cluster import Cluster
cluster = Cluster([sys.argv[1]], protocol_version=4, connect_timeout=10)
cluster.connect()
tm = cluster.metadata.token_map
hosts = tm.get_replicas("gyre_stress", tm.token_class.from_key(struct.pack(">q", 42)))
print(",".join(sorted(h.address for h in hosts)))
"#;
