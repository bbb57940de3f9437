//! Several datacenters (issue 13): real `gyre` processes started by
//! `gyrectl cluster up --nodes 6 --dcs 2 --racks 3` on 127.0.185.x, the
//! Python driver with a DC-aware, token-aware policy.
//!
//! `two_datacenters_then_a_third_by_rebuild`: keyspace
//! `NetworkTopologyStrategy {'dc1': 3, 'dc2': 3}`; writes and reads at
//! LOCAL_QUORUM and EACH_QUORUM; dc2 cut off (`cluster partition 1,2,3
//! 4,5,6`): LOCAL_QUORUM in dc1 keeps working, EACH_QUORUM is Unavailable;
//! healed; a third datacenter added (`cluster add --dc dc3 --count 3`,
//! which starts its nodes with `auto_bootstrap = false`), the keyspace
//! altered to replicate there (its nodes then hold nothing: checked at
//! LOCAL_ONE), `gyrectl rebuild dc1` on each dc3 node, then LOCAL_QUORUM
//! reads through dc3 return every row; then dc2 is removed (its nodes may
//! not leave while `dcks` replicates there: Cassandra's message; after an
//! ALTER KEYSPACE drops it they are decommissioned) and dc1 and dc3 still
//! read every row. `GYRE_DC_LONG=1` writes 10x rows.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gyre_tests::cluster::TestCluster;

const OCTET: u8 = 185;

fn python() -> PathBuf {
    gyre_tests::python::python_with_driver()
}

/// The driver side; argv: phase, contact point, local DC, row count.
const SCRIPT: &str = r#"
import sys, time
from cassandra import ConsistencyLevel as CL, Unavailable, WriteTimeout, ReadTimeout, OperationTimedOut
from cassandra.cluster import Cluster, ExecutionProfile, EXEC_PROFILE_DEFAULT
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy, FallthroughRetryPolicy
from cassandra.query import SimpleStatement

phase, contact, local_dc, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
profile = ExecutionProfile(
    load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=local_dc, used_hosts_per_remote_dc=0)),
    retry_policy=FallthroughRetryPolicy(),
    request_timeout=10,
)
cluster = Cluster([contact], execution_profiles={EXEC_PROFILE_DEFAULT: profile}, protocol_version=4)
session = cluster.connect()

def stmt(q, cl):
    return SimpleStatement(q, consistency_level=cl)

def write(k, cl):
    session.execute(stmt("INSERT INTO dcks.t (k, v) VALUES (%d, 'v%d')" % (k, k), cl))

def read(k, cl):
    rs = session.execute(stmt("SELECT v FROM dcks.t WHERE k = %d" % k, cl))
    row = rs.one()
    coordinator = rs.response_future._current_host
    assert coordinator.datacenter == local_dc, ("coordinator outside the local DC", coordinator, local_dc)
    return None if row is None else row.v

if phase == "load":
    dcs = sorted(set(h.datacenter for h in cluster.metadata.all_hosts()))
    assert dcs == ["dc1", "dc2"], dcs
    racks = sorted(set((h.datacenter, h.rack) for h in cluster.metadata.all_hosts()))
    assert len(racks) == 6, racks
    session.execute("CREATE KEYSPACE dcks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}")
    session.execute("CREATE TABLE dcks.t (k int PRIMARY KEY, v text)")
    for k in range(n):
        write(k, CL.LOCAL_QUORUM if k % 2 == 0 else CL.EACH_QUORUM)
    for k in range(n):
        cl = CL.EACH_QUORUM if k % 2 == 0 else CL.LOCAL_QUORUM
        assert read(k, cl) == "v%d" % k, (k, cl)
    print("loaded", n, flush=True)

elif phase == "cut":
    # Until the coordinators convict dc2, EACH_QUORUM times out instead.
    deadline = time.time() + 60
    seen = None
    k = n
    while time.time() < deadline:
        write(k, CL.LOCAL_QUORUM)
        assert read(k, CL.LOCAL_QUORUM) == "v%d" % k
        k += 1
        try:
            write(k, CL.EACH_QUORUM)
        except Unavailable as e:
            seen = e
            break
        except (WriteTimeout, OperationTimedOut):
            pass
        k += 1
        time.sleep(0.2)
    assert seen is not None, "EACH_QUORUM never answered Unavailable with dc2 cut off"
    print("each_quorum write:", type(seen).__name__, seen, flush=True)
    # Another coordinator may not have convicted dc2 yet: a timeout until it has.
    seen = None
    while seen is None and time.time() < deadline:
        try:
            read(0, CL.EACH_QUORUM)
            raise SystemExit("EACH_QUORUM read succeeded with dc2 cut off")
        except Unavailable as e:
            seen = e
        except (ReadTimeout, OperationTimedOut):
            time.sleep(0.2)
    assert seen is not None, "EACH_QUORUM read never answered Unavailable with dc2 cut off"
    print("each_quorum read:", type(seen).__name__, flush=True)
    # LOCAL_QUORUM keeps working: the earlier rows and new ones.
    for j in range(n, n + 50):
        write(j, CL.LOCAL_QUORUM)
    for j in list(range(0, n, 7)) + list(range(n, n + 50)):
        assert read(j, CL.LOCAL_QUORUM) == "v%d" % j, j
    print("local_quorum ok", flush=True)

elif phase == "alter":
    session.execute("ALTER KEYSPACE dcks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3, 'dc3': 3}")
    assert cluster.control_connection.wait_for_schema_agreement(wait_time=30)
    print("altered", flush=True)

elif phase == "empty":
    dcs = sorted(set(h.datacenter for h in cluster.metadata.all_hosts()))
    assert dcs == ["dc1", "dc2", "dc3"], dcs
    found = sum(1 for k in range(n) if read(k, CL.LOCAL_ONE) is not None)
    print("found before rebuild:", found, flush=True)
    assert found < n // 10, found

elif phase == "dropdc2":
    session.execute("ALTER KEYSPACE dcks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc3': 3}")
    assert cluster.control_connection.wait_for_schema_agreement(wait_time=30)
    print("dc2 dropped", flush=True)

elif phase == "dc3":
    missing = [k for k in range(n + 50) if read(k, CL.LOCAL_QUORUM) != "v%d" % k]
    assert not missing, ("rows missing in dc3", len(missing), missing[:10])
    print("dc3 reads every row:", n + 50, flush=True)

cluster.shutdown()
print("ok", flush=True)
"#;

fn run_phase(c: &TestCluster, phase: &str, contact: usize, dc: &str, rows: usize) -> String {
    let out = Command::new(python())
        .args([
            "-c",
            SCRIPT,
            phase,
            &c.cql(contact).ip().to_string(),
            dc,
            &rows.to_string(),
        ])
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("python {phase}:\n{stdout}");
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "ok"),
        "phase {phase} failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    stdout
}

/// Lines of `gyrectl status` per datacenter block: (dc, state codes).
fn status_blocks(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(dc) = line.strip_prefix("Datacenter: ") {
            out.push((dc.trim().to_string(), Vec::new()));
        } else if let Some((_, codes)) = out.last_mut() {
            let code = line.split_whitespace().next().unwrap_or("");
            if code.len() == 2 && code.chars().all(|c| c.is_ascii_uppercase()) {
                codes.push(code.to_string());
            }
        }
    }
    out
}

#[test]
fn two_datacenters_then_a_third_by_rebuild() {
    let long = std::env::var_os("GYRE_DC_LONG").is_some();
    let rows = if long { 3_000 } else { 300 };
    let c = TestCluster::new(9, OCTET);
    let prefix = format!("127.0.{OCTET}");
    let up = c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "6",
        "--dcs",
        "2",
        "--racks",
        "3",
        "--ip-prefix",
        &prefix,
        "--cluster-name",
        "dcs",
        "--timeout-secs",
        "120",
        "--",
        "--ring-delay-ms",
        "500",
    ]);
    let blocks = status_blocks(&up);
    assert_eq!(
        blocks,
        vec![
            ("dc1".to_string(), vec!["UN".to_string(); 3]),
            ("dc2".to_string(), vec!["UN".to_string(); 3]),
        ],
        "{up}"
    );
    let host = c.cql(1).ip().to_string();
    let status = c.gyrectl_ok(&["status", "--host", &host]);
    for rack in ["rack1", "rack2", "rack3"] {
        assert_eq!(status.matches(rack).count(), 2, "{status}");
    }
    let addr = c.cql(1);
    c.wait_until("CQL port open", Duration::from_secs(30), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });

    run_phase(&c, "load", 1, "dc1", rows);
    // Effective ownership, per datacenter: RF 3 of 3 nodes in each, so every
    // node holds all of dcks (300% per datacenter).
    let owns = c.gyrectl_ok(&["status", "dcks", "--host", &host]);
    assert!(owns.contains("Owns (effective)"), "{owns}");
    assert_eq!(owns.matches(" 100.0% ").count(), 6, "{owns}");

    c.gyrectl_ok(&["cluster", "partition", "1,2,3", "4,5,6"]);
    run_phase(&c, "cut", 2, "dc1", rows);
    c.gyrectl_ok(&["cluster", "heal"]);
    for n in 4..=6 {
        c.wait_until(
            &format!("node 1 sees node {n} UP again"),
            Duration::from_secs(60),
            || c.sees(1, n, true),
        );
    }

    // A datacenter with no member: its nodes do not bootstrap.
    let added = c.gyrectl_ok(&["cluster", "add", "--dc", "dc3", "--count", "3"]);
    assert!(added.contains("auto_bootstrap = false"), "{added}");
    let blocks = status_blocks(&added);
    assert_eq!(blocks.len(), 3, "{added}");
    assert_eq!(
        blocks[2],
        ("dc3".to_string(), vec!["UN".to_string(); 3]),
        "{added}"
    );
    run_phase(&c, "alter", 1, "dc1", rows);
    run_phase(&c, "empty", 7, "dc3", rows);

    let h7 = c.cql(7).ip().to_string();
    let out = c.gyrectl(&["rebuild", "dc9", "--host", &h7]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && text.contains(
                "Provided datacenter 'dc9' is not a valid datacenter, available datacenters \
                 are: dc1,dc2,dc3"
            ),
        "{text}"
    );
    let hosts: Vec<String> = (7..=9).map(|n| c.cql(n).ip().to_string()).collect();
    let rebuilt = c.gyrectl_ok(&["rebuild", "dc1", "--host", &hosts.join(",")]);
    assert_eq!(rebuilt.matches("rebuilt from dc1").count(), 3, "{rebuilt}");
    for h in &hosts {
        let line = rebuilt
            .lines()
            .find(|l| l.starts_with(&format!("{h}: dcks:")))
            .unwrap_or_else(|| panic!("no dcks line for {h}:\n{rebuilt}"));
        assert!(!line.starts_with(&format!("{h}: dcks: 0 ranges")), "{line}");
    }
    run_phase(&c, "dc3", 8, "dc3", rows);

    // Removing a datacenter (README): its nodes cannot leave while a
    // keyspace replicates there; once the keyspaces drop it, they can.
    let out = c.gyrectl(&["cluster", "decommission", "4"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && text.contains(
                "Not enough live nodes to maintain replication factor in keyspace dcks (RF = 3, \
                 N = 2)"
            ),
        "{text}"
    );
    run_phase(&c, "dropdc2", 1, "dc1", rows);
    for n in ["4", "5", "6"] {
        c.gyrectl_ok(&["cluster", "decommission", n]);
    }
    let status = c.gyrectl_ok(&["status", "--host", &host]);
    let dcs: Vec<String> = status_blocks(&status).into_iter().map(|b| b.0).collect();
    assert_eq!(dcs, vec!["dc1", "dc3"], "{status}");
    run_phase(&c, "dc3", 9, "dc3", rows);
    run_phase(&c, "dc3", 2, "dc1", rows);
}
