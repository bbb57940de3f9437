//! `ALTER KEYSPACE system_auth` (issue 15): allowed, as in Cassandra
//! (`system` and `system_schema` refused), so roles can live on several
//! nodes: with RF 3, a role logs in through the other nodes while any one
//! node is down (with system_auth's default RF 1 it lives on one node, and
//! stopping that node makes it unknown). `gyrectl repair system_auth`
//! copies the roles written before the change to the new replicas.
//! Octet 138.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gyre_tests::cluster::TestCluster;
use gyre_tests::cqlsh;

fn script(c: &TestCluster, args: &[String]) {
    let python = gyre_tests::python::python_with_driver();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/auth_rf.py");
    let out = cqlsh::run(Command::new(&python).arg(&path).args(args));
    eprintln!("{}{}", out.stdout, out.stderr);
    assert!(
        out.ok && out.stdout.contains("OK"),
        "auth_rf.py {args:?} failed:\n{}{}\n{}",
        out.stdout,
        out.stderr,
        c.logs()
    );
}

#[test]
fn roles_survive_a_node_loss_with_system_auth_at_rf_3() {
    let c = TestCluster::new(3, 138);
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--auth",
        "--nodes",
        "3",
        "--ip-prefix",
        "127.0.138",
        "--cluster-name",
        "auth rf",
        "--timeout-secs",
        "60",
        "--",
        "--superuser-setup-delay-ms",
        "1000",
        // No credentials cache: every login reads the role from replicas.
        "--set",
        "auth.credentials_validity_ms=0",
    ]);
    let host = |n: usize| c.cql(n).ip().to_string();
    let mut alter = vec!["alter".to_string()];
    alter.extend((1..=3).map(host));
    script(&c, &alter);
    // The superuser was written at RF 1: repair copies it to the new
    // replicas (Cassandra's advice after raising system_auth's RF).
    let out = c.gyrectl_ok(&[
        "repair",
        "system_auth",
        "--host",
        &host(1),
        "--port",
        "9180",
    ]);
    eprintln!("{out}");
    script(&c, &["create".to_string(), host(1)]);
    for down in 1..=3 {
        c.gyrectl_ok(&["cluster", "stop", &down.to_string()]);
        let mut login = vec!["login".to_string()];
        login.extend((1..=3).filter(|n| *n != down).map(host));
        script(&c, &login);
        c.gyrectl_ok(&["cluster", "start", &down.to_string()]);
        c.wait_until("every node UP again", Duration::from_secs(30), || {
            (1..=3).all(|o| (1..=3).all(|t| c.sees(o, t, true)))
        });
    }
}
