//! Storage faults on real nodes: a node whose disk fails fsync (the
//! `commitlog::fsync` failpoint, set through the admin endpoint) refuses
//! writes without crashing and, under the default `commit_failure_policy =
//! "stop"`, leaves the ring (gossip and CQL stop, admin stays) so the
//! cluster keeps answering QUORUM reads and writes without waiting on it;
//! after a restart every acknowledged write is there.
//!
//! Needs a `gyre` binary with the `failpoints` feature, which `cargo build
//! --workspace` / `cargo test --workspace` build (see tests/Cargo.toml).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gyre_protocol::{Consistency, ErrorKind};
use gyre_tests::cluster::TestCluster;
use gyre_tests::cql_client::{CqlClient, Outcome};

const WAIT: Duration = Duration::from_secs(60);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

fn client(c: &TestCluster, node: usize) -> CqlClient {
    CqlClient::connect(c.cql(node)).unwrap_or_else(|e| panic!("connect to node {node}: {e}"))
}

fn first_text(rows: &[Vec<Option<Bytes>>]) -> Option<String> {
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// An admin request to `node`; returns (status, body).
fn admin(
    c: &TestCluster,
    node: usize,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    gyre_node::http::request(
        c.admin(node),
        method,
        path,
        body.map(str::as_bytes),
        ADMIN_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{method} {path} on node {node}: {e}"))
}

fn failpoints(c: &TestCluster, node: usize) -> serde_json::Value {
    let (status, body) = admin(c, node, "GET", "/failpoints", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// DOWN in `observer`'s view, whatever its gossiped status (a node that
/// stopped on a failed commitlog announced "shutdown").
fn sees_down(c: &TestCluster, observer: usize, target: usize) -> bool {
    c.view(observer, target).is_some_and(|e| !e.is_up())
}

fn insert(cl: &mut CqlClient, k: u32, v: &str, level: Consistency) -> Outcome {
    cl.query(
        &format!("INSERT INTO ks.t (k, v) VALUES ({k}, '{v}')"),
        level,
    )
    .unwrap()
}

/// Asserts that a write at ALL fails because a replica cannot write.
fn assert_all_write_fails(cl: &mut CqlClient, k: u32) {
    match insert(cl, k, "never-acknowledged", Consistency::All) {
        Outcome::Error(e) => assert!(
            matches!(
                e.kind,
                ErrorKind::WriteTimeout { .. }
                    | ErrorKind::WriteFailure { .. }
                    | ErrorKind::Unavailable { .. }
            ),
            "ALL with a failed replica: unexpected error {:?}: {}",
            e.kind,
            e.message
        ),
        other => panic!("a write at ALL must fail while a replica's fsync fails, got {other:?}"),
    }
}

fn create_schema(c: &TestCluster) {
    let mut cl = client(c, 1);
    cl.query(
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}",
        Consistency::One,
    )
    .unwrap()
    .ok();
    cl.query(
        "CREATE TABLE ks.t (k int PRIMARY KEY, v text)",
        Consistency::One,
    )
    .unwrap()
    .ok();
    let q = "SELECT table_name FROM system_schema.tables WHERE keyspace_name = 'ks' AND table_name = 't'";
    for node in 1..=c.nodes {
        c.wait_until(&format!("node {node} knows ks.t"), WAIT, || {
            CqlClient::connect(c.cql(node))
                .and_then(|mut cl| cl.query(q, Consistency::One))
                .is_ok_and(|o| matches!(o, Outcome::Rows(rows, _) if !rows.is_empty()))
        });
    }
}

#[test]
fn a_node_whose_disk_fails_fsync_refuses_writes_and_loses_nothing() {
    let c = TestCluster::new(3, 25);
    // Batch sync: a write is acknowledged only once fsynced, so the first
    // write after the failpoint is set meets the failing fsync.
    c.up_with(&["--commitlog-sync", "batch"]);
    create_schema(&c);
    let mut n1 = client(&c, 1);
    let mut acked: BTreeMap<u32, String> = BTreeMap::new();
    for k in 0..20 {
        let v = format!("before-{k}");
        insert(&mut n1, k, &v, Consistency::Quorum).ok();
        acked.insert(k, v);
    }

    let (status, body) = admin(
        &c,
        3,
        "POST",
        "/failpoints",
        Some(r#"{"name": "commitlog::fsync", "actions": "return"}"#),
    );
    assert_eq!(
        status, 200,
        "setting the failpoint (is the gyre binary built with `failpoints`?): {body}"
    );
    assert_eq!(
        failpoints(&c, 3)["failpoints"][0]["name"],
        "commitlog::fsync"
    );

    // Node 3 cannot make the write durable, so ALL cannot succeed.
    assert_all_write_fails(&mut n1, 1000);
    c.wait_until("node 3 reports its failed commitlog", WAIT, || {
        failpoints(&c, 3)["commitlog_failed"]
            .as_str()
            .is_some_and(|e| e.contains("injected fsync failure"))
    });
    let (_, metrics) = admin(&c, 3, "GET", "/metrics", None);
    assert!(
        metrics.contains("gyre_storage_commitlog_failed 1"),
        "{metrics}"
    );

    // Policy "stop": node 3 announces its shutdown and stops gossip and
    // CQL, so its peers see it DOWN; the process (and its admin endpoint)
    // stays up.
    for other in [1, 2] {
        c.wait_until(
            &format!("{other} sees the failed node 3 down"),
            WAIT,
            || sees_down(&c, other, 3),
        );
    }
    c.wait_until("node 3 closes its CQL port", WAIT, || {
        CqlClient::connect(c.cql(3)).is_err()
    });
    assert!(!failpoints(&c, 3)["commitlog_failed"].is_null());

    // Regression (the chaos `fsync` fault): while node 3 stayed UP with a
    // failed commitlog, QUORUM reads that met its stale copy waited for read
    // repairs it could never apply and timed out. Now nothing waits on it:
    // every QUORUM write and read through either healthy node succeeds.
    for k in 20..60 {
        let v = format!("during-{k}");
        insert(&mut n1, k, &v, Consistency::Quorum).ok();
        acked.insert(k, v);
    }
    for node in [1, 2] {
        let mut cl = client(&c, node);
        for (k, want) in &acked {
            let out = cl
                .query(
                    &format!("SELECT v FROM ks.t WHERE k = {k}"),
                    Consistency::Quorum,
                )
                .unwrap();
            let Outcome::Rows(rows, _) = out else {
                panic!("QUORUM read of k={k} via node {node} with node 3 failed: {out:?}");
            };
            assert_eq!(
                first_text(&rows).as_ref(),
                Some(want),
                "k={k} via node {node}"
            );
        }
    }

    // Clearing the failpoint does not bring writes back: after a failed
    // fsync the node must restart.
    let (status, body) = admin(&c, 3, "DELETE", "/failpoints", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(failpoints(&c, 3)["failpoints"], serde_json::json!([]));
    assert_all_write_fails(&mut n1, 1001);

    c.gyrectl_ok(&["cluster", "kill", "3"]);
    for other in [1, 2] {
        c.wait_until(&format!("{other} sees 3 down"), WAIT, || {
            sees_down(&c, other, 3)
        });
    }
    c.gyrectl_ok(&["cluster", "start", "3"]);
    for other in 1..=3 {
        c.wait_until(&format!("{other} sees 3 up"), WAIT, || {
            c.sees(other, 3, true)
        });
    }
    assert!(failpoints(&c, 3)["commitlog_failed"].is_null());

    // Every acknowledged write reads back at ALL (retrying while node 3's
    // connections come back).
    let deadline = Instant::now() + WAIT;
    for (k, want) in &acked {
        let q = format!("SELECT v FROM ks.t WHERE k = {k}");
        loop {
            let got =
                CqlClient::connect(c.cql(1)).and_then(|mut cl| cl.query(&q, Consistency::All));
            match got {
                Ok(Outcome::Rows(rows, _)) => {
                    assert_eq!(
                        first_text(&rows).as_ref(),
                        Some(want),
                        "acknowledged k={k} lost"
                    );
                    break;
                }
                other => assert!(
                    Instant::now() < deadline,
                    "reading k={k} at ALL after the restart: {other:?}\n{}",
                    c.logs()
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // And node 3 takes writes again.
    let mut n1 = client(&c, 1);
    c.wait_until("a write at ALL succeeds after the restart", WAIT, || {
        matches!(
            insert(&mut n1, 2000, "after", Consistency::All),
            Outcome::Done
        )
    });
}
