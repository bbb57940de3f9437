//! Request tracing (issue 17) on 3 real nodes: the Python driver's
//! `get_query_trace()` reads the coordinator's and the replicas' events
//! from `system_traces` (`tests/python/driver_tracing.py`); probabilistic
//! tracing set through `gyrectl settraceprobability`; cqlsh and gyresh
//! `TRACING ON` print a traced statement's events.

use std::time::Duration;

use gyre_tests::cluster::TestCluster;
use gyre_tests::cqlsh::{cqlsh_exec, gyresh_exec};

fn driver_phase(c: &TestCluster, phase: &str) {
    let addr = c.cql(1);
    gyre_tests::python::run_driver_script(
        "driver_tracing.py",
        &[
            addr.ip().to_string(),
            addr.port().to_string(),
            phase.to_string(),
        ],
        phase,
        || c.logs(),
    );
}

#[test]
fn traced_requests_reach_system_traces_from_every_replica() {
    let c = TestCluster::new(3, 125);
    c.up();
    for n in 1..=3 {
        let addr = c.cql(n);
        c.wait_until("CQL port open", Duration::from_secs(30), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }
    driver_phase(&c, "main");

    // Probabilistic tracing through the admin endpoint.
    let host = c.cql(1).ip().to_string();
    let bad = c.gyrectl(&["settraceprobability", "1.5", "--host", &host]);
    assert!(!bad.status.success(), "a probability over 1 was accepted");
    let out = c.gyrectl_ok(&["settraceprobability", "1", "--host", &host]);
    assert!(out.contains("trace probability set to 1"), "{out}");
    let out = c.gyrectl_ok(&["gettraceprobability", "--host", &host]);
    assert!(out.contains("current trace probability: 1"), "{out}");
    driver_phase(&c, "sampled");
    c.gyrectl_ok(&["settraceprobability", "0", "--host", &host]);
    driver_phase(&c, "unsampled");

    // cqlsh's TRACING ON prints the session and its events.
    let addr = c.cql(1);
    let out = cqlsh_exec(
        addr,
        "CONSISTENCY ALL; TRACING ON; SELECT v FROM tr.t WHERE k = 1;",
    );
    eprintln!("--- cqlsh ---\n{}{}", out.stdout, out.stderr);
    assert!(out.ok, "cqlsh failed:\n{}{}", out.stdout, out.stderr);
    for want in [
        "TRACING set to ON",
        "Tracing session: ",
        "Parsing SELECT v FROM tr.t WHERE k = 1",
        "READ_DIGEST message received from /127.0.125.1",
        "Read 1 rows",
        "Request complete",
        "source_elapsed",
    ] {
        assert!(
            out.stdout.contains(want),
            "cqlsh did not print {want}:\n{}",
            out.stdout
        );
    }

    // So does gyresh.
    let out = gyresh_exec(
        addr,
        "CONSISTENCY ALL; TRACING ON; SELECT v FROM tr.t WHERE k = 1; TRACING OFF; TRACING",
    );
    eprintln!("--- gyresh ---\n{}{}", out.stdout, out.stderr);
    assert!(out.ok, "gyresh failed:\n{}{}", out.stdout, out.stderr);
    for want in [
        "TRACING set to ON",
        "Tracing session: ",
        "Parsing SELECT v FROM tr.t WHERE k = 1",
        // The driver picks the coordinator.
        "READ_DIGEST message received from /127.0.125.",
        "Request complete",
        "TRACING set to OFF",
        "Tracing is OFF.",
    ] {
        assert!(
            out.stdout.contains(want),
            "gyresh did not print {want}:\n{}",
            out.stdout
        );
    }
}
