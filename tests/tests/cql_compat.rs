//! Issue 17's compatibility fixes on 3 real nodes through the Python
//! driver (`tests/python/driver_compat.py`): NetworkTopologyStrategy with
//! `replication_factor` (create, alter, DESCRIBE round trip), compression
//! disabled by `{}`, system tables paged with a page size of 1 and
//! filtered with ALLOW FILTERING range restrictions, and GROUP BY results
//! compared with a client-side computation.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gyre_tests::cluster::TestCluster;

#[test]
fn driver_sees_cassandra_compatible_answers() {
    let python = gyre_tests::python::python_with_driver();
    let c = TestCluster::new(3, 126);
    c.up();
    let addr = c.cql(1);
    c.wait_until("CQL port open", Duration::from_secs(30), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/driver_compat.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("3")
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- driver_compat.py ---\n{text}");
    assert!(
        out.status.success() && text.contains("\nOK"),
        "driver_compat.py failed:\n{text}\nnode logs:\n{}",
        c.logs()
    );
}
