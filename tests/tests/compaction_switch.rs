//! ALTER TABLE switching the compaction strategy STCS -> LCS -> STCS on a
//! live node under a write load, with flushes forcing compactions under
//! each strategy: every acknowledged row is read back, before and after a
//! restart of the node.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gyre_protocol::Consistency;
use gyre_tests::cluster::TestCluster;
use gyre_tests::cql_client::{CqlClient, Outcome};

const WRITERS: i64 = 3;

/// A per-table metric of the node's /metrics (0 when absent).
fn metric(cluster: &TestCluster, name: &str) -> f64 {
    let body = gyre_node::http::get(cluster.admin(1), "/metrics", Duration::from_secs(10)).unwrap();
    let prefix = format!("{name}{{table=\"sw.kv\"");
    body.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn flush(cluster: &TestCluster) {
    let (status, body) = gyre_node::http::request(
        cluster.admin(1),
        "POST",
        "/flush",
        None,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
}

/// Flushes until the table has done `n` more compactions (and `also`
/// holds), failing after two minutes.
fn compact_some(cluster: &TestCluster, n: f64, what: &str, also: &dyn Fn() -> bool) {
    let start = metric(cluster, "gyre_table_compactions_total");
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(cluster, "gyre_table_compactions_total") < start + n || !also() {
        assert!(Instant::now() < deadline, "no compactions under {what}");
        flush(cluster);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check_all(cluster: &TestCluster, acked: &[i64]) {
    let mut c = CqlClient::connect(cluster.cql(1)).unwrap();
    for &k in acked {
        let rows = match c
            .query(
                &format!("SELECT v FROM sw.kv WHERE k = {k}"),
                Consistency::One,
            )
            .unwrap()
        {
            Outcome::Rows(r, _) => r,
            other => panic!("reading {k}: {other:?}"),
        };
        assert_eq!(rows.len(), 1, "acknowledged row {k} is missing");
        assert_eq!(
            rows[0][0].as_deref(),
            Some(format!("value {k}").as_bytes()),
            "row {k}"
        );
    }
}

#[test]
fn switching_strategies_under_load_loses_no_acknowledged_row() {
    let cluster = TestCluster::new(1, 61);
    cluster.up();
    let mut c = CqlClient::connect(cluster.cql(1)).unwrap();
    let mut exec = |cql: &str| {
        c.query(cql, Consistency::One).unwrap().ok();
    };
    exec("CREATE KEYSPACE sw WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
    exec("CREATE TABLE sw.kv (k int PRIMARY KEY, v text) WITH compaction = {'class': 'SizeTieredCompactionStrategy', 'min_threshold': 2}");

    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (stop, acked, cluster) = (&stop, &acked, &cluster);
            s.spawn(move || {
                let mut c = CqlClient::connect(cluster.cql(1)).unwrap();
                let mut k = w * 1_000_000;
                while !stop.load(Ordering::Acquire) {
                    let cql = format!("INSERT INTO sw.kv (k, v) VALUES ({k}, 'value {k}')");
                    if let Ok(Outcome::Done) = c.query(&cql, Consistency::One) {
                        acked.lock().unwrap().push(k);
                    }
                    k += 1;
                }
            });
        }
        compact_some(&cluster, 2.0, "size-tiered", &|| true);
        exec("ALTER TABLE sw.kv WITH compaction = {'class': 'LeveledCompactionStrategy', 'sstable_size_in_mb': 1}");
        let leveled = || {
            let body = gyre_node::http::get(cluster.admin(1), "/metrics", Duration::from_secs(10))
                .unwrap();
            body.lines().any(|l| {
                l.starts_with("gyre_table_sstables{table=\"sw.kv\",level=\"1\"}")
                    && !l.ends_with(" 0")
            })
        };
        compact_some(&cluster, 2.0, "leveled", &leveled);
        exec("ALTER TABLE sw.kv WITH compaction = {'class': 'SizeTieredCompactionStrategy', 'min_threshold': 2}");
        compact_some(&cluster, 2.0, "size-tiered again", &|| true);
        stop.store(true, Ordering::Release);
    });
    let stats = cluster.gyrectl_ok(&["compactionstats", "--host", "127.0.61.1"]);
    assert!(
        stats.contains("pending tasks:") && stats.contains("sw.kv"),
        "{stats}"
    );
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() > 100, "the load wrote {} rows", acked.len());
    eprintln!("{} acknowledged rows", acked.len());
    check_all(&cluster, &acked);
    cluster.gyrectl_ok(&["cluster", "stop", "1"]);
    cluster.gyrectl_ok(&["cluster", "start", "1"]);
    check_all(&cluster, &acked);
}
