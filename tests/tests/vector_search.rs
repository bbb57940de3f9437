//! Vector (ANN) search (issue 18) through the DataStax Python driver on a
//! real 3-node cluster at RF 3, QUORUM: `tests/python/driver_ann.py`
//! compares `ORDER BY v ANN OF [..] LIMIT k` with a brute force (recall@10
//! floor 0.9) in memtables, after flush, overwrites, deletes and
//! compaction, with another indexed predicate and with the partition key
//! given, and checks Cassandra's refusals.
//!
//! `GYRE_ANN_ROWS` / `GYRE_ANN_DIM` size the main table (default 1200 rows
//! of 16 dimensions).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gyre_tests::cluster::TestCluster;

#[test]
fn ann_search_through_the_python_driver() {
    let python = gyre_tests::python::python_with_driver();
    let c = TestCluster::new(3, 130);
    c.up_with(&[
        "--write-request-timeout-ms",
        "10000",
        "--read-request-timeout-ms",
        "10000",
        "--request-timeout-ms",
        "10000",
    ]);
    for n in 1..=3 {
        let addr = c.cql(n);
        c.wait_until(
            &format!("CQL port of node {n} open"),
            Duration::from_secs(30),
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        );
    }
    let addr = c.cql(1);
    let admins = (1..=c.nodes)
        .map(|n| c.admin(n).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/driver_ann.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(admins)
        .output()
        .expect("running python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- driver_ann.py ---\n{text}");
    assert!(
        out.status.success() && text.contains("\nOK"),
        "driver_ann.py failed:\n{text}\nnode logs:\n{}",
        c.logs()
    );
}
