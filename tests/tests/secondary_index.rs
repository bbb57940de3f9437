//! Secondary indexes (issue 18) through the DataStax Python driver on a
//! real 3-node cluster at RF 3, QUORUM: `tests/python/driver_index.py`.
//!
//! `GYRE_INDEX_ROWS` sets the rows of the table indexed after the fact
//! (default 3000; the acceptance uses 100000).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gyre_tests::cluster::TestCluster;

/// The Python driver's venv, shared with the other driver tests.
fn python() -> PathBuf {
    gyre_tests::python::python_with_driver()
}

fn phase(c: &TestCluster, python: &Path, phase: &str, state: &Path) -> std::process::Child {
    let addr = c.cql(1);
    let admins = (1..=c.nodes)
        .map(|n| c.admin(n).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/driver_index.py");
    Command::new(python)
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(phase)
        .arg(state)
        .arg(admins)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running python")
}

fn finish(c: &TestCluster, name: &str, child: std::process::Child) {
    let out = child.wait_with_output().expect("python output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- driver_index.py {name} ---\n{text}");
    assert!(
        out.status.success() && text.contains("\nOK"),
        "driver_index.py {name} failed:\n{text}\nnode logs:\n{}",
        c.logs()
    );
}

#[test]
fn secondary_indexes_through_the_python_driver() {
    let python = python();
    let c = TestCluster::new(3, 110);
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
    let state = c.dir.path().join("index_state.json");
    finish(&c, "main", phase(&c, &python, "main", &state));

    // Node 3 is killed while indexed values are overwritten and deleted at
    // QUORUM, then restarted: its index comes back from its commitlog and
    // SSTables, hints fill in what it missed.
    let churn = phase(&c, &python, "churn", &state);
    std::thread::sleep(Duration::from_secs(2));
    c.gyrectl_ok(&["cluster", "kill", "3"]);
    c.wait_until("node 1 sees node 3 down", Duration::from_secs(30), || {
        c.sees(1, 3, false)
    });
    c.gyrectl_ok(&["cluster", "start", "3"]);
    c.wait_until("node 1 sees node 3 up", Duration::from_secs(60), || {
        c.sees(1, 3, true)
    });
    finish(&c, "churn", churn);
    finish(&c, "verify", phase(&c, &python, "verify", &state));
    let stats = c.gyrectl_ok(&["indexstats", "--host", &c.admin(1).ip().to_string()]);
    assert!(stats.contains("churn_v"), "{stats}");
}
