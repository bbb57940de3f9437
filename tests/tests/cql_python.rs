//! A real client against a real node: the DataStax Python driver
//! (`cassandra-driver`, from PyPI) runs `tests/python/driver_smoke.py`
//! against a single `gyre` process.
//!
//! The virtualenv is cached in `$HOME/.cache/gyre-venv` (or
//! `$GYRE_PYTHON_VENV`); the first run needs PyPI. When PyPI is unreachable
//! the test fails with a message saying so: it never skips silently.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gyre_tests::cluster::TestCluster;

fn run(cmd: &mut Command) -> (bool, String) {
    let o = gyre_tests::cqlsh::run(cmd);
    (o.ok, format!("{}{}", o.stdout, o.stderr))
}

use gyre_tests::python::python_with_driver;

#[test]
fn python_driver_against_a_single_node() {
    let python = python_with_driver();
    let c = TestCluster::new(1, 13);
    c.up();
    let addr = c.cql(1);
    c.wait_until("CQL port open", Duration::from_secs(30), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/driver_smoke.py");
    let (ok, out) = run(Command::new(&python)
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string()));
    eprintln!("{out}");
    assert!(
        ok,
        "driver_smoke.py failed:\n{out}\nnode logs:\n{}",
        c.logs()
    );
    assert!(out.contains("\nOK"), "script did not finish:\n{out}");
}

/// Runs one phase of `driver_cluster.py` against node 1 of `c`, at
/// `protocol` ("negotiate", "4" or "5").
fn cluster_phase(c: &TestCluster, python: &Path, phase: &str, state: &Path, protocol: &str) {
    let addr = c.cql(1);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/driver_cluster.py");
    let t0 = std::time::Instant::now();
    let (ok, out) = run(Command::new(python)
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(phase)
        .arg(state)
        .arg(protocol));
    eprintln!(
        "--- driver_cluster.py {phase} {protocol} ({:.1} s) ---\n{out}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        ok,
        "driver_cluster.py {phase} failed:\n{out}\nnode logs:\n{}",
        c.logs()
    );
    assert!(out.contains("\nOK"), "phase {phase} did not finish:\n{out}");
}

/// The acceptance run of issues 5 and 17 for the Python driver: a real
/// 3-node cluster, the driver contacting node 1 only. The main phase checks
/// discovery and tokens, DDL with schema agreement, simple / prepared /
/// batch statements, paging over 10K rows, every CQL type, token-aware
/// routing against Gyre's placement and the error classes; it runs with
/// default settings (the driver must negotiate protocol v5) and again at
/// v4 and v3. The v5 phase (protocol_version=5 given) checks what only v5 has:
/// per-request keyspaces, result metadata ids, multi-frame payloads. Then
/// nodes 2 and 3 are killed and QUORUM must raise `Unavailable`.
#[test]
fn python_driver_against_three_nodes() {
    let python = python_with_driver();
    let c = TestCluster::new(3, 50);
    // Generous server timeouts for a loaded machine, below the driver's own
    // 10 s request timeout so that server errors arrive as such.
    c.up_with(&[
        "--write-request-timeout-ms",
        "5000",
        "--read-request-timeout-ms",
        "5000",
        "--request-timeout-ms",
        "5000",
    ]);
    for n in 1..=3 {
        let addr = c.cql(n);
        c.wait_until(
            &format!("CQL port of node {n} open"),
            Duration::from_secs(30),
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        );
    }
    let state = c.dir.path().join("driver_cluster_state.json");
    cluster_phase(&c, &python, "main", &state, "negotiate");
    cluster_phase(&c, &python, "v5", &state, "5");
    cluster_phase(&c, &python, "main", &state, "4");
    cluster_phase(&c, &python, "main", &state, "3");

    c.gyrectl_ok(&["cluster", "kill", "2"]);
    c.gyrectl_ok(&["cluster", "kill", "3"]);
    for n in [2, 3] {
        c.wait_until(
            &format!("node 1 sees node {n} down"),
            Duration::from_secs(30),
            || c.sees(1, n, false),
        );
    }
    cluster_phase(&c, &python, "down", &state, "negotiate");
}
