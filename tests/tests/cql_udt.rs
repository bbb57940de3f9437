//! User-defined types (issue 17) on a 3-node cluster through the real
//! clients: the Python driver (`tests/python/driver_udt.py`) at protocol
//! v4 and v5 (every field type, nesting, collections, keys, simple and
//! prepared statements, JSON, field updates and selection, the driver's
//! UDT metadata and `register_user_type`, SCHEMA_CHANGE events for types,
//! DROP TYPE refusals, `system_schema.types` on every node), then cqlsh
//! (a UDT row, DESCRIBE TYPE) and gyresh (the scylla driver).

use std::time::Duration;

use gyre_tests::cluster::TestCluster;
use gyre_tests::cqlsh::{cqlsh_exec, gyresh_exec};

#[test]
fn user_defined_types_through_real_clients() {
    let c = TestCluster::new(3, 120);
    c.up();
    for n in 1..=3 {
        let addr = c.cql(n);
        c.wait_until(
            &format!("CQL port of node {n} open"),
            Duration::from_secs(30),
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        );
    }
    let hosts: Vec<String> = (1..=3).map(|n| c.cql(n).to_string()).collect();
    for protocol in ["4", "5"] {
        gyre_tests::python::run_driver_script(
            "driver_udt.py",
            &[vec![protocol.to_string()], hosts.clone()].concat(),
            &format!("at v{protocol}"),
            || c.logs(),
        );
    }

    // cqlsh prints a UDT row the driver wrote and describes the type,
    // from another node than the one the script started on.
    let addr = c.cql(2);
    let out = cqlsh_exec(
        addr,
        "SELECT home, history FROM udt_v4.people WHERE id = 2; \
             SELECT work.city FROM udt_v4.people WHERE id = 1; \
             DESCRIBE TYPE udt_v4.address; DESCRIBE TYPES; DESCRIBE KEYSPACE udt_v4",
    );
    eprintln!("--- cqlsh ---\n{}{}", out.stdout, out.stderr);
    assert!(out.ok, "cqlsh failed:\n{}{}", out.stdout, out.stderr);
    for want in [
        "{street: 's2', city: 'c2', zip: 2, country: null}",
        "[{street: 'h1', city: null, zip: 1, country: null}",
        "Capital City",
        "CREATE TYPE udt_v4.address (",
        "    country text",
        "everything",
    ] {
        assert!(
            out.stdout.contains(want),
            "cqlsh did not print {want}:\n{}",
            out.stdout
        );
    }

    // DESCRIBE KEYSPACE: each type before what uses it, types before tables.
    let ks = out
        .stdout
        .find("CREATE KEYSPACE udt_v4")
        .expect("DESCRIBE KEYSPACE printed the keyspace");
    let pos = |what: &str| {
        out.stdout[ks..]
            .find(what)
            .unwrap_or_else(|| panic!("DESCRIBE KEYSPACE did not print {what}:\n{}", out.stdout))
    };
    assert!(pos("CREATE TYPE udt_v4.address") < pos("CREATE TYPE udt_v4.everything"));
    assert!(pos("CREATE TYPE udt_v4.everything") < pos("CREATE TABLE udt_v4.people"));
    assert!(pos("home frozen<address>") < pos("CREATE TABLE udt_v4.people"));

    // gyresh (the scylla Rust driver) decodes UDT values too.
    let addr = c.cql(3);
    let out = gyresh_exec(addr, "SELECT home, pair FROM udt_v5.people WHERE id = 2; SELECT work.city FROM udt_v5.people WHERE id = 1;");
    eprintln!("--- gyresh ---\n{}{}", out.stdout, out.stderr);
    assert!(out.ok, "gyresh failed:\n{}{}", out.stdout, out.stderr);
    for want in ["s2", "c2", "pc", "Capital City"] {
        assert!(
            out.stdout.contains(want),
            "gyresh did not print {want}:\n{}",
            out.stdout
        );
    }
}
