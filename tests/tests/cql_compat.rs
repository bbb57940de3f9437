//! Issue 17's compatibility fixes on 3 real nodes through the Python
//! driver (`tests/python/driver_compat.py`): NetworkTopologyStrategy with
//! `replication_factor` (create, alter, DESCRIBE round trip), compression
//! disabled by `{}`, system tables paged with a page size of 1 and
//! filtered with ALLOW FILTERING range restrictions, and GROUP BY results
//! compared with a client-side computation.

use std::time::Duration;

use gyre_tests::cluster::TestCluster;

#[test]
fn driver_sees_cassandra_compatible_answers() {
    let c = TestCluster::new(3, 126);
    c.up();
    let addr = c.cql(1);
    c.wait_until("CQL port open", Duration::from_secs(30), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    gyre_tests::python::run_driver_script(
        "driver_compat.py",
        &[
            addr.ip().to_string(),
            addr.port().to_string(),
            "3".to_string(),
        ],
        "",
        || c.logs(),
    );
}
