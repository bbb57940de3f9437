//! Tombstone thresholds (`limits.tombstone_warn_threshold` and
//! `tombstone_failure_threshold`, Cassandra's names) on three real nodes,
//! through the Python driver (`tests/python/tombstones.py`): a read over
//! more tombstones than the first gets the client warning, over the second
//! each replica refuses it and the client gets ReadFailure; the node keeps
//! serving.

use gyre_tests::cluster::TestCluster;
use gyre_tests::python::run_driver_script;

#[test]
fn reads_over_tombstones_warn_then_fail() {
    let c = TestCluster::new(3, 172);
    c.up_with(&[
        "--set",
        "limits.tombstone_warn_threshold=20",
        "--set",
        "limits.tombstone_failure_threshold=100",
    ]);
    let hosts: Vec<String> = (1..=3).map(|n| c.cql(n).ip().to_string()).collect();
    run_driver_script("tombstones.py", &hosts, "3 nodes", || c.logs());
    // Each replica logs why it refused, in Cassandra's words.
    assert!(
        c.logs()
            .contains("Scanned over 100 tombstones during query on table"),
        "no replica logged the abort:\n{}",
        c.logs()
    );
}
