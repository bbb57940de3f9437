//! Storage memory by component and the block cache on a real node:
//! `/metrics` shows the block cache's hits and misses and the memory of
//! memtables, bloom filters and SSTable indexes; `gyrectl info` prints them.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gyre_protocol::Consistency;
use gyre_tests::cluster::TestCluster;
use gyre_tests::cql_client::{CqlClient, Outcome};

/// The sum of a metric's samples whose labels start with `labels`.
fn metric(cluster: &TestCluster, name: &str, labels: &str) -> f64 {
    let body = gyre_node::http::get(cluster.admin(1), "/metrics", Duration::from_secs(10)).unwrap();
    let prefix = format!("{name}{labels}");
    body.lines()
        .filter(|l| l.starts_with(&prefix) && l[prefix.len()..].starts_with([' ', '{', ',', '}']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn block_cache_and_memory_components_are_reported() {
    let cluster = TestCluster::new(1, 175);
    cluster.up();
    let mut c = CqlClient::connect(cluster.cql(1)).unwrap();
    for cql in [
        "CREATE KEYSPACE mem WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE mem.kv (k int PRIMARY KEY, v text)",
    ] {
        let out = c.query(cql, Consistency::One).unwrap();
        assert!(matches!(out, Outcome::Done), "{cql}: {out:?}");
    }
    for k in 0..300 {
        let cql = format!("INSERT INTO mem.kv (k, v) VALUES ({k}, 'value {k}')");
        assert!(matches!(
            c.query(&cql, Consistency::One).unwrap(),
            Outcome::Done
        ));
    }
    let memtables = metric(
        &cluster,
        "gyre_storage_memory_bytes",
        "{component=\"memtables\"",
    );
    assert!(memtables > 0.0, "memtables hold the writes: {memtables}");
    let (status, body) = gyre_node::http::request(
        cluster.admin(1),
        "POST",
        "/flush",
        None,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");

    let hits_before = metric(&cluster, "gyre_block_cache_hits_total", "");
    let misses_before = metric(&cluster, "gyre_block_cache_misses_total", "");
    // Each key twice: the first read of a block misses, the second hits.
    for _ in 0..2 {
        for k in 0..300 {
            let rows = match c
                .query(
                    &format!("SELECT v FROM mem.kv WHERE k = {k}"),
                    Consistency::One,
                )
                .unwrap()
            {
                Outcome::Rows(r, _) => r,
                other => panic!("reading {k}: {other:?}"),
            };
            assert_eq!(rows.len(), 1, "row {k}");
        }
    }
    let hits = metric(&cluster, "gyre_block_cache_hits_total", "") - hits_before;
    let misses = metric(&cluster, "gyre_block_cache_misses_total", "") - misses_before;
    assert!(misses >= 1.0, "the first reads go to the file: {misses}");
    assert!(
        hits >= 300.0,
        "the second round of reads hits the cache: {hits} hits, {misses} misses"
    );
    assert!(metric(&cluster, "gyre_block_cache_capacity_bytes", "") == (32u64 << 20) as f64);
    for component in ["bloom_filters", "sstable_indexes", "block_cache"] {
        let v = metric(
            &cluster,
            "gyre_storage_memory_bytes",
            &format!("{{component=\"{component}\""),
        );
        assert!(v > 0.0, "{component}: {v}");
    }

    let info = cluster.gyrectl_ok(&["info", "--host", "127.0.175.1"]);
    eprintln!("{info}");
    for want in [
        "Memtables",
        "Bloom filters",
        "SSTable indexes",
        "Block cache",
        "mem.kv",
    ] {
        assert!(info.contains(want), "{want} missing from:\n{info}");
    }
    let bloom_line = info
        .lines()
        .find(|l| l.starts_with("Bloom filters"))
        .unwrap();
    assert!(!bloom_line.ends_with(": 0.00 KiB"), "{bloom_line}");
}
