//! The coordinator on real nodes: consistency levels, Unavailable and
//! timeouts, hinted handoff, read repair, LWW tie rules, schema exchange
//! and range scans, each through a chosen node with Gyre's own CQL codec.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gyre_protocol::{Consistency, ErrorKind};
use gyre_tests::cluster::TestCluster;
use gyre_tests::cql_client::{CqlClient, Outcome};

const WAIT: Duration = Duration::from_secs(60);

fn client(c: &TestCluster, node: usize) -> CqlClient {
    CqlClient::connect(c.cql(node)).unwrap_or_else(|e| panic!("connect to node {node}: {e}"))
}

fn run(cl: &mut CqlClient, cql: &str, level: Consistency) -> Outcome {
    cl.query(cql, level).unwrap()
}

/// Polls `cql` on `node` until some row's first column equals `want`
/// (`None`: no rows); returns the time it took.
fn wait_for_value(
    c: &TestCluster,
    node: usize,
    cql: &str,
    level: Consistency,
    want: Option<&str>,
    timeout: Duration,
) -> Duration {
    c.wait_until(&format!("node {node}: {cql} = {want:?}"), timeout, || {
        let Ok(mut cl) = CqlClient::connect(c.cql(node)) else {
            return false;
        };
        match cl.query(cql, level) {
            Ok(Outcome::Rows(rows, _)) => first_text(&rows).as_deref() == want,
            _ => false,
        }
    })
}

fn first_text(rows: &[Vec<Option<Bytes>>]) -> Option<String> {
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn value_at(c: &TestCluster, node: usize, cql: &str, level: Consistency) -> Option<String> {
    first_text(&run(&mut client(c, node), cql, level).rows())
}

fn create_schema(c: &TestCluster, rf: usize) {
    let mut cl = client(c, 1);
    run(
        &mut cl,
        &format!(
            "CREATE KEYSPACE ks WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
        ),
        Consistency::One,
    )
    .ok();
    run(
        &mut cl,
        "CREATE TABLE ks.t (k int PRIMARY KEY, v text)",
        Consistency::One,
    )
    .ok();
    wait_for_table(c, "t", Duration::from_secs(10));
}

/// Waits until every running node knows table `ks.<table>`; returns how
/// long that took.
fn wait_for_table(c: &TestCluster, table: &str, timeout: Duration) -> Duration {
    let q = format!(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = 'ks' AND table_name = '{table}'"
    );
    let t0 = Instant::now();
    for node in 1..=c.nodes {
        let left = timeout.saturating_sub(t0.elapsed());
        wait_for_value(c, node, &q, Consistency::One, Some(table), left);
    }
    t0.elapsed()
}

fn kill_and_wait_down(c: &TestCluster, node: usize) {
    c.gyrectl_ok(&["cluster", "kill", &node.to_string()]);
    for other in (1..=c.nodes).filter(|n| *n != node) {
        c.wait_until(&format!("{other} sees {node} down"), WAIT, || {
            c.sees(other, node, false)
        });
    }
}

fn start_and_wait_up(c: &TestCluster, node: usize) {
    c.gyrectl_ok(&["cluster", "start", &node.to_string()]);
    for other in 1..=c.nodes {
        c.wait_until(&format!("{other} sees {node} up"), WAIT, || {
            c.sees(other, node, true)
        });
    }
}

#[test]
fn quorum_survives_a_dead_node_all_is_unavailable_and_hints_catch_it_up() {
    let c = TestCluster::new(3, 20);
    c.up();
    create_schema(&c, 3);
    let mut n1 = client(&c, 1);

    // Schema: a change on node 2 reaches the others within 2 s.
    let mut n2 = client(&c, 2);
    run(
        &mut n2,
        "CREATE TABLE ks.from2 (k int PRIMARY KEY)",
        Consistency::One,
    )
    .ok();
    let took = wait_for_table(&c, "from2", Duration::from_secs(10));
    assert!(took < Duration::from_secs(2), "schema took {took:?}");

    kill_and_wait_down(&c, 3);

    run(
        &mut n1,
        "INSERT INTO ks.t (k, v) VALUES (1, 'while-3-was-down')",
        Consistency::Quorum,
    )
    .ok();
    let t0 = Instant::now();
    match run(
        &mut n1,
        "INSERT INTO ks.t (k, v) VALUES (2, 'x')",
        Consistency::All,
    ) {
        Outcome::Error(e) => match e.kind {
            ErrorKind::Unavailable {
                consistency,
                required,
                alive,
            } => {
                assert_eq!(consistency, Consistency::All);
                assert_eq!((required, alive), (3, 2), "{}", e.message);
            }
            other => panic!("expected Unavailable, got {other:?}: {}", e.message),
        },
        other => panic!("ALL with a node down must fail, got {other:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "Unavailable is immediate"
    );

    // A schema change node 3 misses.
    run(
        &mut n1,
        "CREATE TABLE ks.while_down (k int PRIMARY KEY)",
        Consistency::One,
    )
    .ok();

    start_and_wait_up(&c, 3);
    // Its hints arrive, and node 3 answers a ONE read from its own data.
    wait_for_value(
        &c,
        3,
        "SELECT v FROM ks.t WHERE k = 1",
        Consistency::One,
        Some("while-3-was-down"),
        Duration::from_secs(30),
    );
    // And it caught up with the schema change it missed.
    wait_for_table(&c, "while_down", Duration::from_secs(10));
    let versions: HashSet<String> = (1..=3)
        .map(|n| {
            let rows = run(
                &mut client(&c, n),
                "SELECT schema_version FROM system.local",
                Consistency::One,
            )
            .rows();
            format!("{:?}", rows[0][0])
        })
        .collect();
    assert_eq!(versions.len(), 1, "schema versions differ: {versions:?}");
}

/// The admin endpoint's /metrics text of `node`.
fn metrics(c: &TestCluster, node: usize) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&c.admin(node), Duration::from_secs(5))
        .expect("admin port");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).ok();
    out
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A node down for long gets hints up to its cap (1 MiB here), then none
/// (counted); `gyrectl status` shows what is pending; once it is back the
/// hints are delivered and the store is empty.
#[test]
fn hints_for_a_down_node_stop_at_its_cap_and_drain_when_it_returns() {
    let c = TestCluster::new(3, 26);
    c.up_with(&["--hints-max-size-per-host-mb", "1"]);
    create_schema(&c, 3);
    kill_and_wait_down(&c, 3);
    let mut n1 = client(&c, 1);
    let big = "x".repeat(20_000);
    for k in 0..120 {
        let r = run(
            &mut n1,
            &format!("INSERT INTO ks.t (k, v) VALUES ({k}, '{big}')"),
            Consistency::One,
        );
        assert!(!matches!(r, Outcome::Error(_)), "write {k}: {r:?}");
    }
    let pending = c.status(1).expect("status").hints;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(
        pending[0].bytes <= (1 << 20) && pending[0].bytes > (1 << 19),
        "hints held up to the 1 MiB cap: {pending:?}"
    );
    let m = metrics(&c, 1);
    let dropped = metric(&m, "gyre_hints_dropped_total{reason=\"over_cap\"}");
    assert!(
        dropped >= 60.0,
        "writes over the cap are counted: {dropped}"
    );
    let admin = c.admin(1);
    let out = c.gyrectl_ok(&[
        "status",
        "--host",
        &admin.ip().to_string(),
        "--port",
        &admin.port().to_string(),
    ]);
    assert!(out.contains("Hints held by this node"), "{out}");

    start_and_wait_up(&c, 3);
    c.wait_until("hints delivered", Duration::from_secs(60), || {
        c.status(1).is_some_and(|s| s.hints.is_empty())
    });
    let delivered = metric(&metrics(&c, 1), "gyre_hints_delivered_total");
    assert!(delivered >= 40.0, "delivered {delivered}");
}

/// `gyrectl repair`: node 3 misses writes and a deletion while down (hints
/// off), the replicas' digests disagree; after a repair from node 1 they
/// agree, node 3 answers every row at ONE from its own data, and a second
/// repair finds nothing to send. With node 3 down, repair fails naming it.
#[test]
fn gyrectl_repair_makes_a_replica_that_missed_writes_agree() {
    const ROWS: usize = 300;
    let c = TestCluster::new(3, 27);
    c.up_with(&["--hints-enabled", "false"]);
    create_schema(&c, 3);
    let mut n1 = client(&c, 1);
    run(
        &mut n1,
        "INSERT INTO ks.t (k, v) VALUES (-1, 'doomed')",
        Consistency::All,
    )
    .ok();
    kill_and_wait_down(&c, 3);
    for k in 0..ROWS {
        let r = run(
            &mut n1,
            &format!("INSERT INTO ks.t (k, v) VALUES ({k}, 'v{k}')"),
            Consistency::One,
        );
        assert!(!matches!(r, Outcome::Error(_)), "write {k}: {r:?}");
    }
    run(&mut n1, "DELETE FROM ks.t WHERE k = -1", Consistency::One).ok();
    let admin = c.admin(1);
    let (host, port) = (admin.ip().to_string(), admin.port().to_string());
    // A replica down: repair refuses, naming it.
    let out = c.gyrectl(&["repair", "ks", "t", "--host", &host, "--port", &port]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is down"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start_and_wait_up(&c, 3);
    assert!(!c.gyrectl(&["cluster", "digest", "ks.t"]).status.success());

    let out = c.gyrectl_ok(&["repair", "ks", "t", "--host", &host, "--port", &port]);
    assert!(out.contains(" done in "), "{out}");
    c.gyrectl_ok(&["cluster", "digest", "ks.t"]);
    let rows = run(&mut client(&c, 3), "SELECT k FROM ks.t", Consistency::One).rows();
    assert_eq!(
        rows.len(),
        ROWS,
        "node 3 alone holds every row, not the deleted one"
    );
    // Agreeing replicas: nothing differs, nothing is sent.
    let out = c.gyrectl_ok(&["repair", "--host", &host, "--port", &port, "--pr"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("ks.t "))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[3], "0", "no mismatching leaves: {out}");
    assert_eq!(cols[5], "0", "no writes: {out}");
    let text = metrics(&c, 1);
    assert!(
        metric(&text, "gyre_repair_sessions_succeeded_total") >= 2.0,
        "{text}"
    );
    assert!(metric(&text, "gyre_repair_partitions_differing_total") >= ROWS as f64);
    // Bad input: clear errors.
    let out = c.gyrectl(&["repair", "nope", "--host", &host, "--port", &port]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown keyspace nope"));
}

/// A repair interrupted by killing a replica fails with an error naming
/// it (in the time the failure detector takes, not a request timeout), and
/// once the replica is back the same repair succeeds. Node 1's messages
/// are slowed so the session is still running when node 3 dies.
#[test]
fn a_repair_interrupted_by_a_dead_replica_fails_then_succeeds_when_rerun() {
    let c = TestCluster::new(3, 151);
    c.up_with(&["--hints-enabled", "false"]);
    create_schema(&c, 3);
    let mut n1 = client(&c, 1);
    kill_and_wait_down(&c, 2);
    for k in 0..200 {
        let r = run(
            &mut n1,
            &format!("INSERT INTO ks.t (k, v) VALUES ({k}, 'v{k}')"),
            Consistency::One,
        );
        assert!(!matches!(r, Outcome::Error(_)), "write {k}: {r:?}");
    }
    start_and_wait_up(&c, 2);
    let admin = c.admin(1);
    let (host, port) = (admin.ip().to_string(), admin.port().to_string());
    let slow = r#"{"all_peers": {"extra_latency_ms": 250}}"#;
    let (code, _) = gyre_node::http::request(
        admin,
        "POST",
        "/faults",
        Some(slow.as_bytes()),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(code, 200);
    let args = ["repair", "ks", "t", "--host", &host, "--port", &port];
    let started = Instant::now();
    let out = std::thread::scope(|s| {
        let repair = s.spawn(|| c.gyrectl(&args));
        c.wait_until("the repair session is running", WAIT, || {
            gyre_node::http::get(admin, "/repair", Duration::from_secs(2))
                .is_ok_and(|b| b.contains("\"running\""))
        });
        c.gyrectl_ok(&["cluster", "kill", "3"]);
        repair.join().unwrap()
    });
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    let third = c.cql(3).ip().to_string();
    assert!(err.contains(&third), "the error names node 3: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "failed in {:?}",
        started.elapsed()
    );
    gyre_node::http::request(admin, "DELETE", "/faults", None, Duration::from_secs(2)).unwrap();
    start_and_wait_up(&c, 3);
    let out = c.gyrectl_ok(&args);
    assert!(out.contains(" done in "), "{out}");
    c.gyrectl_ok(&["cluster", "digest", "ks.t"]);
}

/// Partitions (whole and with single rows deleted) of the tables of
/// [`a_deletion_a_replica_missed_is_repaired_and_not_resurrected_after_gc_grace`].
const TOMB_KEYS: i32 = 40;

/// `(partitions, rows)` node `node` stores for `ks.<table>` (its own copy,
/// tombstones included until compaction purges them), from `POST /digest`.
fn local_counts(c: &TestCluster, node: usize, table: &str) -> (u64, u64) {
    let body = format!(r#"{{"keyspace": "ks", "table": "{table}"}}"#);
    let (code, text) = gyre_node::http::request(
        c.admin(node),
        "POST",
        "/digest",
        Some(body.as_bytes()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(code, 200, "{text}");
    let d: gyre_node::TableDigest = serde_json::from_str(&text).unwrap();
    (d.partitions, d.rows)
}

/// `(k, c)` of every row a read of `ks.<table>` through `node` returns.
fn keys_at(c: &TestCluster, node: usize, table: &str, level: Consistency) -> Vec<(i32, i32)> {
    let int = |b: &Option<Bytes>| {
        let b = b.as_ref().expect("not null");
        i32::from_be_bytes(b[..4].try_into().unwrap())
    };
    let mut rows: Vec<(i32, i32)> = run(
        &mut client(c, node),
        &format!("SELECT k, c FROM ks.{table}"),
        level,
    )
    .rows()
    .iter()
    .map(|r| (int(&r[0]), int(&r[1])))
    .collect();
    rows.sort();
    rows
}

/// Issue 14's "deletions repaired": node 3 is down (hints off) while
/// partitions and single rows are deleted at ONE and QUORUM in two tables
/// it holds on disk. `kept` is repaired, `ctrl` is not. Then the grace
/// period passes (gc_grace_seconds lowered to 1 s, as if 10 days had gone
/// by) and every node flushes and compacts until nodes 1 and 2 have purged
/// their tombstones. `kept`: node 3 got the tombstones through repair and
/// purged them with the data, so reads at ALL and at ONE through every node
/// return only the survivors. `ctrl`, the control: node 3 never saw the
/// deletions, so once the others purge their tombstones its copy comes
/// back (a read at ALL returns the deleted rows and repairs them onto the
/// others) — the resurrection repair within gc_grace prevents. The
/// repair stays in `gyrectl repair_admin list` across a restart.
#[test]
fn a_deletion_a_replica_missed_is_repaired_and_not_resurrected_after_gc_grace() {
    let c = TestCluster::new(3, 166);
    c.up_with(&["--hints-enabled", "false"]);
    let mut n1 = client(&c, 1);
    run(
        &mut n1,
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}",
        Consistency::One,
    )
    .ok();
    for table in ["kept", "ctrl"] {
        run(
            &mut n1,
            &format!(
                "CREATE TABLE ks.{table} (k int, c int, v text, PRIMARY KEY (k, c)) \
                 WITH gc_grace_seconds = 3600"
            ),
            Consistency::One,
        )
        .ok();
        wait_for_table(&c, table, WAIT);
    }
    for table in ["kept", "ctrl"] {
        for k in 0..TOMB_KEYS {
            for ck in 0..2 {
                run(
                    &mut n1,
                    &format!("INSERT INTO ks.{table} (k, c, v) VALUES ({k}, {ck}, 'v')"),
                    Consistency::All,
                )
                .ok();
            }
        }
    }
    // The data on disk everywhere, as a replica's old SSTables would be.
    for node in 1..=3 {
        let (code, text) =
            gyre_node::http::request(c.admin(node), "POST", "/flush", None, WAIT).unwrap();
        assert_eq!(code, 200, "{text}");
    }
    kill_and_wait_down(&c, 3);
    // Partitions 0..10 deleted whole, rows (k, 1) of 10..20 deleted alone.
    for table in ["kept", "ctrl"] {
        for k in 0..20 {
            let (cql, level) = if k < 10 {
                (
                    format!("DELETE FROM ks.{table} WHERE k = {k}"),
                    Consistency::One,
                )
            } else {
                (
                    format!("DELETE FROM ks.{table} WHERE k = {k} AND c = 1"),
                    Consistency::Quorum,
                )
            };
            let r = run(&mut n1, &cql, level);
            assert!(!matches!(r, Outcome::Error(_)), "{cql}: {r:?}");
        }
    }
    let survivors: Vec<(i32, i32)> = (10..TOMB_KEYS)
        .flat_map(|k| [(k, 0), (k, 1)])
        .filter(|&(k, ck)| k >= 20 || ck == 0)
        .collect();
    start_and_wait_up(&c, 3);
    for table in ["kept", "ctrl"] {
        let digest = format!("ks.{table}");
        assert!(
            !c.gyrectl(&["cluster", "digest", &digest]).status.success(),
            "node 3 missed the deletions of {table}"
        );
    }
    let admin = c.admin(1);
    let (host, port) = (admin.ip().to_string(), admin.port().to_string());
    let out = c.gyrectl_ok(&["repair", "ks", "kept", "--host", &host, "--port", &port]);
    assert!(out.contains(" done in "), "{out}");
    c.gyrectl_ok(&["cluster", "digest", "ks.kept"]);
    let history = || {
        let out = c.gyrectl_ok(&["repair_admin", "list", "--host", &host, "--port", &port]);
        let line = out
            .lines()
            .find(|l| l.contains("ks.kept"))
            .map(str::to_owned);
        line.unwrap_or_else(|| panic!("no repair of ks.kept listed: {out}"))
    };
    let listed = history();
    assert!(listed.contains(" done "), "{listed}");

    // The grace period passes.
    for table in ["kept", "ctrl"] {
        run(
            &mut n1,
            &format!("ALTER TABLE ks.{table} WITH gc_grace_seconds = 1"),
            Consistency::One,
        )
        .ok();
    }
    let q = "SELECT gc_grace_seconds FROM system_schema.tables WHERE keyspace_name = 'ks'";
    for node in 1..=3 {
        c.wait_until(&format!("node {node} has gc_grace 1"), WAIT, || {
            let rows = run(&mut client(&c, node), q, Consistency::One).rows();
            rows.len() == 2
                && rows
                    .iter()
                    .all(|r| r[0].as_deref() == Some(&[0, 0, 0, 1][..]))
        });
    }
    // Flush and compact every node until the tombstones are purged: only
    // the survivors remain on nodes 1 and 2 (and on node 3 for `kept`).
    let want = ((TOMB_KEYS - 10) as u64, survivors.len() as u64);
    c.wait_until("tombstones purged by compaction", WAIT, || {
        for node in 1..=3 {
            for path in ["/flush", "/compact"] {
                let (code, text) =
                    gyre_node::http::request(c.admin(node), "POST", path, None, WAIT).unwrap();
                assert_eq!(code, 200, "{text}");
            }
        }
        (1..=3).all(|n| local_counts(&c, n, "kept") == want)
            && (1..=2).all(|n| local_counts(&c, n, "ctrl") == want)
    });
    // Node 3 kept its copy of what was deleted in `ctrl`: 40 partitions.
    assert_eq!(
        local_counts(&c, 3, "ctrl"),
        (TOMB_KEYS as u64, 2 * TOMB_KEYS as u64)
    );

    for node in 1..=3 {
        for level in [Consistency::All, Consistency::One] {
            assert_eq!(
                keys_at(&c, node, "kept", level),
                survivors,
                "kept through node {node} at {level:?}"
            );
        }
    }
    // The control: without repair the deleted rows come back.
    let all: Vec<(i32, i32)> = (0..TOMB_KEYS).flat_map(|k| [(k, 0), (k, 1)]).collect();
    assert_eq!(keys_at(&c, 3, "ctrl", Consistency::One), all);
    assert_eq!(keys_at(&c, 1, "ctrl", Consistency::All), all);

    // The repair history survives a restart of the node that ran it.
    kill_and_wait_down(&c, 1);
    start_and_wait_up(&c, 1);
    assert_eq!(history(), listed);
}

#[test]
fn quorum_read_repairs_a_stale_replica_and_ties_resolve_everywhere() {
    let c = TestCluster::new(3, 21);
    c.up_with(&["--hints-enabled", "false"]);
    create_schema(&c, 3);

    // Node 3 misses a write (no hints).
    kill_and_wait_down(&c, 3);
    run(
        &mut client(&c, 1),
        "INSERT INTO ks.t (k, v) VALUES (1, 'fresh')",
        Consistency::Quorum,
    )
    .ok();
    start_and_wait_up(&c, 3);
    let q1 = "SELECT v FROM ks.t WHERE k = 1";
    assert_eq!(
        value_at(&c, 3, q1, Consistency::One),
        None,
        "node 3 is stale"
    );
    // The replicas' digests (RF 3 on 3 nodes: every node holds it all).
    let digest = c.gyrectl(&["cluster", "digest", "ks.t"]);
    assert!(
        !digest.status.success(),
        "digest must tell the stale replica apart: {}",
        String::from_utf8_lossy(&digest.stdout)
    );
    // A QUORUM read coordinated by node 3 (itself one of the two replicas
    // asked) sees the mismatch, answers the fresh value and repairs node 3.
    assert_eq!(
        value_at(&c, 3, q1, Consistency::Quorum).as_deref(),
        Some("fresh")
    );
    assert_eq!(
        value_at(&c, 3, q1, Consistency::One).as_deref(),
        Some("fresh")
    );

    // Same timestamp, different values on different replicas: 'bbb' on
    // nodes 1 and 2, 'aaa' on nodes 2 (loses the tie there) and 3.
    kill_and_wait_down(&c, 3);
    run(
        &mut client(&c, 1),
        "INSERT INTO ks.t (k, v) VALUES (2, 'bbb') USING TIMESTAMP 1000",
        Consistency::Quorum,
    )
    .ok();
    start_and_wait_up(&c, 3);
    kill_and_wait_down(&c, 1);
    run(
        &mut client(&c, 2),
        "INSERT INTO ks.t (k, v) VALUES (2, 'aaa') USING TIMESTAMP 1000",
        Consistency::Quorum,
    )
    .ok();
    start_and_wait_up(&c, 1);
    let q2 = "SELECT v FROM ks.t WHERE k = 2";
    assert_eq!(
        value_at(&c, 1, q2, Consistency::One).as_deref(),
        Some("bbb")
    );
    assert_eq!(
        value_at(&c, 2, q2, Consistency::One).as_deref(),
        Some("bbb")
    );
    assert_eq!(
        value_at(&c, 3, q2, Consistency::One).as_deref(),
        Some("aaa")
    );
    for node in [3, 1, 2] {
        assert_eq!(
            value_at(&c, node, q2, Consistency::Quorum).as_deref(),
            Some("bbb"),
            "QUORUM via node {node}"
        );
    }
    assert_eq!(
        value_at(&c, 3, q2, Consistency::All).as_deref(),
        Some("bbb")
    );
    assert_eq!(
        value_at(&c, 3, q2, Consistency::One).as_deref(),
        Some("bbb")
    );
    // The range path resolves the same way.
    let rows = run(&mut client(&c, 3), "SELECT v FROM ks.t", Consistency::All).rows();
    let values: HashSet<String> = rows
        .iter()
        .filter_map(|r| {
            r[0].as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        })
        .collect();
    assert_eq!(values, HashSet::from(["fresh".into(), "bbb".into()]));
    // Whole rows read at ALL repair every cell: the replicas now agree.
    for k in [1, 2] {
        run(
            &mut client(&c, 2),
            &format!("SELECT * FROM ks.t WHERE k = {k}"),
            Consistency::All,
        )
        .rows();
    }
    let out = c.gyrectl_ok(&["cluster", "digest", "ks.t"]);
    assert!(out.contains("replicas agree"), "{out}");
}

#[test]
fn a_paused_replica_gives_write_and_read_timeouts() {
    let c = TestCluster::new(3, 22);
    c.up_with(&[
        "--write-request-timeout-ms",
        "1000",
        "--read-request-timeout-ms",
        "1000",
    ]);
    create_schema(&c, 3);
    let mut n1 = client(&c, 1);
    run(
        &mut n1,
        "INSERT INTO ks.t (k, v) VALUES (1, 'x')",
        Consistency::All,
    )
    .ok();

    c.gyrectl_ok(&["cluster", "pause", "3"]);
    // Node 3 is still believed alive for a few seconds (phi-accrual): ALL
    // waits for it and times out instead of hanging.
    let t0 = Instant::now();
    match run(
        &mut n1,
        "INSERT INTO ks.t (k, v) VALUES (2, 'y')",
        Consistency::All,
    ) {
        Outcome::Error(e) => match e.kind {
            ErrorKind::WriteTimeout {
                received,
                block_for,
                ..
            } => assert_eq!((received, block_for), (2, 3), "{}", e.message),
            other => panic!("expected WriteTimeout, got {other:?}: {}", e.message),
        },
        other => panic!("expected WriteTimeout, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let t0 = Instant::now();
    match run(&mut n1, "SELECT v FROM ks.t WHERE k = 1", Consistency::All) {
        Outcome::Error(e) => match e.kind {
            ErrorKind::ReadTimeout {
                received,
                block_for,
                ..
            } => {
                assert_eq!(block_for, 3, "{}", e.message);
                assert!(received < 3, "{}", e.message);
            }
            other => panic!("expected ReadTimeout, got {other:?}: {}", e.message),
        },
        other => panic!("expected ReadTimeout, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // QUORUM does not need node 3.
    assert_eq!(
        value_at(&c, 1, "SELECT v FROM ks.t WHERE k = 1", Consistency::Quorum).as_deref(),
        Some("x")
    );
    c.gyrectl_ok(&["cluster", "resume", "3"]);
}

#[test]
fn a_full_scan_at_quorum_returns_every_row_once() {
    const PARTITIONS: usize = 1_000;
    const ROWS: usize = 100;
    let c = TestCluster::new(3, 23);
    c.up();
    let mut n1 = client(&c, 1);
    // RF 2 of 3 nodes: consecutive ranges have different replica sets, so
    // the scan really walks the ring range by range.
    run(
        &mut n1,
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}",
        Consistency::One,
    )
    .ok();
    run(
        &mut n1,
        "CREATE TABLE ks.big (k int, c int, v text, PRIMARY KEY (k, c))",
        Consistency::One,
    )
    .ok();
    wait_for_table(&c, "big", Duration::from_secs(10));
    for k in 0..PARTITIONS {
        let mut batch = String::from("BEGIN UNLOGGED BATCH ");
        for r in 0..ROWS {
            batch.push_str(&format!(
                "INSERT INTO ks.big (k, c, v) VALUES ({k}, {r}, 'v');"
            ));
        }
        batch.push_str(" APPLY BATCH");
        run(&mut n1, &batch, Consistency::Quorum).ok();
    }
    // Scan through node 2 with small pages.
    let mut n2 = client(&c, 2);
    let mut seen = HashSet::new();
    let mut state = None;
    let mut pages = 0;
    loop {
        let out = n2
            .query_page(
                "SELECT k, c FROM ks.big",
                Consistency::Quorum,
                Vec::new(),
                Some(100),
                state.take(),
            )
            .unwrap();
        let Outcome::Rows(rows, next) = out else {
            panic!("scan failed: {out:?}");
        };
        pages += 1;
        for r in rows {
            let k = i32::from_be_bytes(r[0].as_deref().unwrap().try_into().unwrap());
            let ck = i32::from_be_bytes(r[1].as_deref().unwrap().try_into().unwrap());
            assert!(seen.insert((k, ck)), "row ({k}, {ck}) returned twice");
        }
        match next {
            Some(s) => state = Some(s),
            None => break,
        }
    }
    eprintln!("{} rows in {pages} pages", seen.len());
    assert_eq!(seen.len(), PARTITIONS * ROWS);
}

/// Regression (found by CI through gyre-stress): a DDL statement answered
/// by one node must be visible to the next statement on any other node.
/// The push used to be fire-and-forget, so `CREATE TABLE` sent to node 1
/// right after node 2 answered `CREATE KEYSPACE` failed with "Keyspace ...
/// does not exist" (drivers' schema agreement compares gossiped versions,
/// which can all still show the old schema and so cannot close this gap).
#[test]
fn ddl_answered_by_one_node_is_seen_at_once_by_the_others() {
    let c = TestCluster::new(3, 24);
    c.up();
    let mut clients: Vec<CqlClient> = (1..=3).map(|n| client(&c, n)).collect();
    for i in 0..15 {
        let (ddl, next) = (i % 3, (i + 1) % 3);
        let ks = format!("agree{i}");
        let out = run(
            &mut clients[ddl],
            &format!(
                "CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 3}}"
            ),
            Consistency::One,
        );
        assert!(matches!(out, Outcome::Done), "{ks}: {out:?}");
        let out = run(
            &mut clients[next],
            &format!("CREATE TABLE {ks}.t (k int PRIMARY KEY, v text)"),
            Consistency::One,
        );
        assert!(
            matches!(out, Outcome::Done),
            "CREATE TABLE {ks}.t on node {} right after CREATE KEYSPACE on node {}: {out:?}",
            next + 1,
            ddl + 1
        );
        let third = (i + 2) % 3;
        let out = run(
            &mut clients[third],
            &format!("INSERT INTO {ks}.t (k, v) VALUES (1, 'x')"),
            Consistency::All,
        );
        assert!(
            matches!(out, Outcome::Done),
            "INSERT on node {}: {out:?}",
            third + 1
        );
    }
}
