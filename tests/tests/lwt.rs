//! Lightweight transactions (issue 16) on real 3-node clusters with real
//! clients: the Python driver (`tests/python/lwt.py`: conditional INSERT /
//! UPDATE / DELETE / BATCH, `was_applied`, the rows returned when not
//! applied, SERIAL reads, refusals), cqlsh printing `[applied]` results,
//! and 8 clients doing read-modify-CAS increments of one register
//! (`GYRE_LWT_OPS` per client: 150 by default to keep CI short on a
//! loaded machine; the 300 with `GYRE_LWT_OPS=300`): the final
//! value equals the number of applied CAS operations (timed-out ones are indeterminate and
//! widen the bound); after a SIGKILL of every node the register reads the
//! same at SERIAL everywhere and CAS goes on from it.
//!
//! Counters: 8 clients incrementing over 3 nodes get exact totals.
//!
//! Uses the cached virtualenvs of `cql_python.rs` (`~/.cache/gyre-venv`)
//! and `cql_cqlsh.rs`; the first run needs PyPI.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gyre_tests::cluster::TestCluster;
use gyre_tests::cqlsh::{cqlsh, run};

/// The Python driver's venv, shared with the other driver tests.
fn python() -> PathBuf {
    gyre_tests::python::python_with_driver()
}

fn start(octet: u8) -> TestCluster {
    let c = TestCluster::new(3, octet);
    // Generous server timeouts for a loaded machine.
    c.up_with(&[
        "--write-request-timeout-ms",
        "5000",
        "--read-request-timeout-ms",
        "5000",
    ]);
    for node in 1..=3 {
        let addr = c.cql(node);
        c.wait_until("CQL port open", Duration::from_secs(30), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }
    c
}

fn script(c: &TestCluster, args: &[&str]) -> String {
    let addr = c.cql(1);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/lwt.py");
    let o = run(Command::new(python())
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(args));
    let out = format!("{}{}", o.stdout, o.stderr);
    eprintln!("--- lwt.py {args:?} ---\n{out}");
    assert!(
        o.ok,
        "lwt.py {args:?} failed:\n{out}\nnode logs:\n{}",
        c.logs()
    );
    assert!(
        out.contains("\nOK"),
        "lwt.py {args:?} did not finish:\n{out}"
    );
    out
}

#[test]
fn lwt_with_the_python_driver_and_cqlsh() {
    let c = start(85);
    script(&c, &["basic"]);

    // cqlsh prints [applied] results as Cassandra does.
    let cqlsh = cqlsh();
    let home = tempfile::tempdir().unwrap();
    let addr = c.cql(2);
    let o = run(Command::new(&cqlsh)
        .env("HOME", home.path())
        .env_remove("CQLSH_HOST")
        .env_remove("CQLSH_PORT")
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("-e")
        .arg(
            "INSERT INTO lwt.users (name, email, age) VALUES ('cy', 'cy@x', 5) IF NOT EXISTS; \
             INSERT INTO lwt.users (name, email, age) VALUES ('cy', 'cy@y', 6) IF NOT EXISTS; \
             UPDATE lwt.users SET age = 7 WHERE name = 'cy' IF age = 9;",
        ));
    eprintln!("--- cqlsh ---\n{}{}", o.stdout, o.stderr);
    assert!(o.ok, "cqlsh failed:\n{}{}", o.stdout, o.stderr);
    let lines: Vec<String> = o
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    let expect = [
        "[applied]",
        "True",
        "[applied] | name | age | email",
        "False | cy | 5 | cy@x",
        "[applied] | age",
        "False | 5",
    ];
    let got: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with('-') && !l.starts_with('('))
        .collect();
    assert_eq!(got, expect, "cqlsh output:\n{}", o.stdout);
}

#[test]
fn concurrent_cas_increments_lose_no_update() {
    let ops = std::env::var("GYRE_LWT_OPS").unwrap_or_else(|_| "150".into());
    let c = start(86);
    let hosts: Vec<String> = (1..=3).map(|n| c.cql(n).ip().to_string()).collect();
    let out = script(&c, &["register", &hosts.join(","), "8", &ops]);
    let final_value = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("final="))
        .unwrap_or_else(|| panic!("no final value in:\n{out}"))
        .to_owned();
    // SIGKILL every node: the data and the Paxos state come back from the
    // commitlogs, and the register goes on from the same value.
    for node in ["1", "2", "3"] {
        c.gyrectl_ok(&["cluster", "kill", node]);
    }
    for node in ["1", "2", "3"] {
        c.gyrectl_ok(&["cluster", "start", node]);
    }
    for node in 1..=3 {
        let addr = c.cql(node);
        c.wait_until("CQL port open", Duration::from_secs(60), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }
    for a in 1..=3 {
        for b in 1..=3 {
            if a != b {
                c.wait_until("peers up", Duration::from_secs(60), || c.sees(a, b, true));
            }
        }
    }
    script(&c, &["check", &hosts.join(","), &final_value]);
}

/// Counters (issue 16): refusals, and 8 clients x `GYRE_COUNTER_OPS`
/// (300 by default; the 1000 with `GYRE_COUNTER_OPS=1000`)
/// increments of a shared counter and of their own, spread over 3 nodes
/// with no faults: exact totals.
#[test]
fn counters_count_exactly() {
    let ops = std::env::var("GYRE_COUNTER_OPS").unwrap_or_else(|_| "300".into());
    let c = start(87);
    let hosts: Vec<String> = (1..=3).map(|n| c.cql(n).ip().to_string()).collect();
    script(&c, &["counters", &hosts.join(","), "8", &ops]);
}
