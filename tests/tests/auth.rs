//! Authentication and permissions on a real 3-node cluster started with
//! `gyrectl cluster up --auth` (PasswordAuthenticator + CassandraAuthorizer),
//! through real clients:
//! - the DataStax Python driver (`tests/python/auth_check.py`): the default
//!   superuser `cassandra` logs in; no credentials and a wrong password get
//!   `AuthenticationFailed` with Cassandra's text; a role made through one
//!   node logs in through every node, reads the keyspace it has SELECT on
//!   and gets `Unauthorized` on INSERT and on another keyspace; LIST ROLES,
//!   LIST PERMISSIONS, the legacy USER statements; a dropped role cannot log
//!   in anywhere;
//! - cqlsh `-u -p` and gyresh `-u -p`, and both refused with a wrong
//!   password.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use gyre_tests::cluster::TestCluster;
use gyre_tests::cqlsh;

/// The Python driver's venv, shared with the other driver tests.
fn python() -> PathBuf {
    gyre_tests::python::python_with_driver()
}

fn tool(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build -p gyresh` first",
        bin.display()
    );
    bin
}

/// One v4 request frame on stream 1; returns the response's opcode and body.
fn roundtrip(s: &mut std::net::TcpStream, opcode: u8, body: &[u8]) -> (u8, Vec<u8>) {
    use std::io::{Read, Write};
    let mut f = vec![4, 0, 0, 1, opcode];
    f.extend_from_slice(&(body.len() as i32).to_be_bytes());
    f.extend_from_slice(body);
    s.write_all(&f).unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).unwrap();
    let len = i32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
    let mut out = vec![0; len];
    s.read_exact(&mut out).unwrap();
    (head[4], out)
}

/// The raw protocol: AUTHENTICATE after STARTUP, nothing else served
/// before AUTH_RESPONSE passes, a bad token is an authentication error
/// (0x0100) and the connection may try again.
fn raw_sasl_exchange(addr: std::net::SocketAddr) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut startup = vec![0, 1, 0, 11];
    startup.extend_from_slice(b"CQL_VERSION");
    startup.extend_from_slice(&[0, 5]);
    startup.extend_from_slice(b"3.0.0");
    let (op, body) = roundtrip(&mut s, 0x01, &startup);
    assert_eq!(op, 0x03, "AUTHENTICATE expected: {body:?}");
    assert!(
        String::from_utf8_lossy(&body).contains("org.apache.cassandra.auth.PasswordAuthenticator")
    );
    let mut query = Vec::new();
    let q = b"SELECT * FROM system.local";
    query.extend_from_slice(&(q.len() as i32).to_be_bytes());
    query.extend_from_slice(q);
    query.extend_from_slice(&[0, 1, 0]); // ONE, no flags
    let (op, body) = roundtrip(&mut s, 0x07, &query);
    assert_eq!(op, 0x00, "a QUERY before AUTH_RESPONSE must be refused");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("Unexpected message QUERY, expecting SASL_RESPONSE"),
        "{text}"
    );
    let token = |pw: &str| {
        let t = format!("\0cassandra\0{pw}");
        let mut b = (t.len() as i32).to_be_bytes().to_vec();
        b.extend_from_slice(t.as_bytes());
        b
    };
    let (op, body) = roundtrip(&mut s, 0x0F, &token("bad"));
    assert_eq!(op, 0x00);
    assert_eq!(&body[..4], &[0, 0, 1, 0], "error code 0x0100");
    assert!(String::from_utf8_lossy(&body)
        .contains("Provided username cassandra and/or password are incorrect"));
    let (op, _) = roundtrip(&mut s, 0x0F, &token("cassandra"));
    assert_eq!(op, 0x10, "AUTH_SUCCESS expected");
    let (op, body) = roundtrip(&mut s, 0x07, &query);
    assert_eq!(
        op,
        0x08,
        "RESULT expected: {}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn password_logins_roles_and_permissions_through_real_clients() {
    let python = python();
    let c = TestCluster::new(3, 81);
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--auth",
        "--nodes",
        "3",
        "--ip-prefix",
        "127.0.81",
        "--cluster-name",
        "auth test",
        "--timeout-secs",
        "60",
        "--",
        // Sooner than Cassandra's 10 s: the ring is settled once `up` returns.
        "--superuser-setup-delay-ms",
        "2000",
    ]);
    let hosts: Vec<String> = (1..=3).map(|n| c.cql(n).ip().to_string()).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/auth_check.py");
    let t0 = Instant::now();
    let out = Command::new(&python)
        .arg(&script)
        .args(&hosts)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("AUTH-CHECK PASSED"),
        "auth_check.py failed after {:?}:\n{text}\n{}",
        t0.elapsed(),
        c.logs()
    );

    raw_sasl_exchange(c.cql(2));

    // cqlsh -u -p.
    let cqlsh = cqlsh::cqlsh();
    let o = cqlsh::run(
        Command::new(&cqlsh)
            .args(["-u", "cassandra", "-p", "cassandra", &hosts[1], "9042"])
            .args(["-e", "LIST ROLES"]),
    );
    assert!(o.ok, "cqlsh -u -p failed:\n{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("cassandra") && o.stdout.contains("True"),
        "{}",
        o.stdout
    );
    let o = cqlsh::run(
        Command::new(&cqlsh)
            .args(["-u", "cassandra", "-p", "nope", &hosts[1], "9042"])
            .args(["-e", "SELECT * FROM system.local"]),
    );
    assert!(!o.ok, "{}", o.stdout);
    assert!(
        o.stderr
            .contains("Provided username cassandra and/or password are incorrect"),
        "{}",
        o.stderr
    );

    // gyresh -u -p.
    let gyresh = tool("gyresh");
    let o = cqlsh::run(
        Command::new(&gyresh)
            .args([&hosts[2], "-u", "cassandra", "-p", "cassandra"])
            .args(["-e", "SELECT k, v FROM authks1.t WHERE k = 1;"]),
    );
    assert!(o.ok && o.stdout.contains("one"), "{}{}", o.stdout, o.stderr);
    let o = cqlsh::run(
        Command::new(&gyresh)
            .arg(&hosts[2])
            .args(["-e", "SELECT * FROM system.local;"]),
    );
    assert!(!o.ok, "gyresh without credentials connected: {}", o.stdout);
    c.gyrectl_ok(&["cluster", "down"]);
}
