//! `vector<T, n>` columns (issue 17) through the real Python driver
//! (`tests/python/driver_vector.py`) against a 3-node cluster (RF 1: the
//! driver and the shells reach the data through every node's coordinator;
//! the acceptance asks for 3 nodes), at
//! protocol v4 and v5: literals, bound values, reads decoded as lists, the
//! `VectorType(...)` custom type in result and prepared metadata, wrong
//! dimensions refused, and `system_schema` / driver schema metadata.
//!
//! Uses the driver venv of `cql_python.rs` (`$HOME/.cache/gyre-venv` or
//! `$GYRE_PYTHON_VENV`); it fails with a message when that is missing.

use std::time::Duration;

use gyre_tests::cluster::TestCluster;
use gyre_tests::cqlsh::{cqlsh_exec, gyresh_exec};

#[test]
fn python_driver_reads_and_writes_vectors() {
    let c = TestCluster::new(3, 164);
    c.up();
    for n in 1..=3 {
        let addr = c.cql(n);
        c.wait_until(
            &format!("CQL port of node {n} open"),
            Duration::from_secs(30),
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        );
    }
    let addr = c.cql(1);
    for protocol in ["4", "5"] {
        gyre_tests::python::run_driver_script(
            "driver_vector.py",
            &[
                addr.ip().to_string(),
                addr.port().to_string(),
                protocol.to_string(),
            ],
            &format!("at v{protocol}"),
            || c.logs(),
        );
    }

    // cqlsh prints the vectors the driver wrote, and DESCRIBE the types.
    let out = cqlsh_exec(
        addr,
        "SELECT v, j FROM vec_v4.t WHERE k = 1; SELECT t, l FROM vec_v4.var WHERE k = 1; \
             DESCRIBE TABLE vec_v4.var",
    );
    eprintln!("--- cqlsh ---\n{}{}", out.stdout, out.stderr);
    assert!(out.ok, "cqlsh failed:\n{}{}", out.stdout, out.stderr);
    for want in [
        "[1, 2.5, -3.25]",
        "[7, -8]",
        "['ab', '']",
        "[[1, 2], [], [3]]",
        "l vector<frozen<list<int>>, 3>",
        "t vector<text, 2>",
    ] {
        assert!(
            out.stdout.contains(want),
            "cqlsh did not print {want}:\n{}",
            out.stdout
        );
    }

    // gyresh (the scylla Rust driver) decodes them too. Not row 1 of `var`:
    // scylla 1.x reads an empty text element of a vector as a null one.
    let out = gyresh_exec(
        addr,
        "SELECT v, j FROM vec_v4.t WHERE k = 1; SELECT t, l FROM vec_v4.var WHERE k = 3;",
    );
    eprintln!("--- gyresh ---\n{}{}", out.stdout, out.stderr);
    assert!(out.ok, "gyresh failed:\n{}{}", out.stdout, out.stderr);
    for want in [
        "[1, 2.5, -3.25]",
        "[7, -8]",
        "['p', 'q']",
        "[[1], [2], [3]]",
    ] {
        assert!(
            out.stdout.contains(want),
            "gyresh did not print {want}:\n{}",
            out.stdout
        );
    }
}
