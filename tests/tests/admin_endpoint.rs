//! The admin endpoint's guards on a real node: fault injection off refuses
//! `/clock` and `/faults` with 403, a foreign `Host` (DNS rebinding) is
//! refused, POST needs `application/json` and a JSON body, and with
//! `admin.token` set every request needs the bearer token (which gyrectl
//! sends from `GYRE_ADMIN_TOKEN`).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use gyre_tests::cluster::TestCluster;

const TOKEN: &str = "admin-test-token-0123456789";

/// One raw HTTP request (own headers, unlike gyre_node::http's client);
/// returns the status code and body.
fn raw(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("malformed response {out:?}"));
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[test]
fn admin_endpoint_refuses_faults_foreign_hosts_non_json_and_missing_tokens() {
    // gyrectl (run by TestCluster) sends the token from this variable.
    std::env::set_var("GYRE_ADMIN_TOKEN", TOKEN);
    let c = TestCluster::new(1, 80);
    c.up_with(&["--allow-fault-injection", "false", "--admin-token", TOKEN]);
    let a = c.admin(1);
    let host = format!("Host: {a}");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let json = "Content-Type: application/json";

    // Allowed: the right host, token and content type.
    let (code, body) = raw(a, &format!("GET /status HTTP/1.1\r\n{host}\r\n{auth}"), "");
    assert_eq!(code, 200, "{body}");
    let (code, body) = raw(
        a,
        &format!("GET /status HTTP/1.1\r\nHost: localhost:9180\r\n{auth}"),
        "",
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = raw(
        a,
        &format!("POST /flush HTTP/1.1\r\n{host}\r\n{auth}\r\n{json}"),
        "{}",
    );
    assert_eq!(code, 200, "{body}");

    // Fault injection is off: /clock, /faults and /failpoints answer 403.
    for (method, path, body) in [
        ("POST", "/clock", "5000"),
        ("POST", "/faults", r#"{"rules": []}"#),
        ("GET", "/faults", ""),
        (
            "POST",
            "/failpoints",
            r#"{"name": "commitlog::fsync", "actions": "return"}"#,
        ),
    ] {
        let (code, text) = raw(
            a,
            &format!("{method} {path} HTTP/1.1\r\n{host}\r\n{auth}\r\n{json}"),
            body,
        );
        assert_eq!(code, 403, "{method} {path}: {text}");
        assert!(text.contains("allow_fault_injection"), "{text}");
    }

    // A page on another domain resolving to this address (DNS rebinding).
    let (code, text) = raw(
        a,
        &format!("GET /status HTTP/1.1\r\nHost: evil.example:9180\r\n{auth}"),
        "",
    );
    assert_eq!(code, 403, "{text}");

    // No token, a wrong one.
    let (code, _) = raw(a, &format!("GET /status HTTP/1.1\r\n{host}"), "");
    assert_eq!(code, 401);
    let (code, _) = raw(
        a,
        &format!("GET /metrics HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {TOKEN}x"),
        "",
    );
    assert_eq!(code, 401);

    // A form post (what a browser sends cross-site without a preflight),
    // and a JSON content type over a body that is not JSON.
    let (code, text) = raw(
        a,
        &format!(
            "POST /flush HTTP/1.1\r\n{host}\r\n{auth}\r\nContent-Type: application/x-www-form-urlencoded"
        ),
        "a=b",
    );
    assert_eq!(code, 415, "{text}");
    let (code, text) = raw(a, &format!("POST /flush HTTP/1.1\r\n{host}\r\n{auth}"), "");
    assert_eq!(code, 415, "{text}");
    let (code, text) = raw(
        a,
        &format!("POST /snapshot HTTP/1.1\r\n{host}\r\n{auth}\r\n{json}"),
        "tag=x",
    );
    assert_eq!(code, 400, "{text}");

    // gyrectl, with the token from the environment, still operates it.
    let out = c.gyrectl_ok(&["status", "--host", "127.0.80.1", "--port", "9180"]);
    assert!(out.contains("UN"), "{out}");
    c.gyrectl_ok(&["cluster", "down"]);
}
