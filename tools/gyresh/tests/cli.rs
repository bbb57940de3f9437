//! The binary's command line, without a server. (Also makes
//! `cargo test --workspace` build `gyresh`, which tests/tests/tools.rs
//! drives against a real node.)

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn help_lists_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_gyresh"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in ["--execute", "--file", "--keyspace", "--continue-on-error"] {
        assert!(text.contains(opt), "{opt} missing from\n{text}");
    }
}

#[test]
fn unreachable_server_is_an_error_not_a_hang() {
    // Port 1 on loopback: nothing listens, the connect is refused at once.
    let out = Command::new(env!("CARGO_BIN_EXE_gyresh"))
        .args(["127.0.0.1", "1", "-e", "SELECT 1;"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to 127.0.0.1:1"), "{err}");
}
