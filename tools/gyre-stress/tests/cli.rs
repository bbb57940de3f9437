//! The binary's command line, without a server. (Also makes
//! `cargo test --workspace` build `gyre-stress`, which tests/tests/tools.rs
//! drives against a real node.)

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn help_lists_the_modes() {
    let out = Command::new(env!("CARGO_BIN_EXE_gyre-stress"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["write", "read", "mixed", "--rate", "--validate", "--json"] {
        assert!(text.contains(word), "{word} missing from\n{text}");
    }
}

#[test]
fn bad_arguments_exit_with_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_gyre-stress");
    let out = Command::new(bin)
        .args(["write", "--validate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--validate applies to `read`"));
    let out = Command::new(bin)
        .args(["read", "--dist", "gauss"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unreachable_server_is_an_error_not_a_hang() {
    let out = Command::new(env!("CARGO_BIN_EXE_gyre-stress"))
        .args(["write", "--ops", "1", "--hosts", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to 127.0.0.1:1"), "{err}");
}
