//! The `gyre` binary itself. (Having an integration test also makes
//! `cargo test --workspace` build the binary for the cluster tests.)

use std::process::Command;

#[test]
fn print_config_and_reject_unknown_flags() {
    let gyre = env!("CARGO_BIN_EXE_gyre");
    let out = Command::new(gyre)
        .args(["--print-config", "--cluster-name", "cli test"])
        .output()
        .expect("run gyre");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("name = \"cli test\""), "{text}");
    let out = Command::new(gyre)
        .arg("--no-such-flag")
        .output()
        .expect("run gyre");
    assert!(!out.status.success());
}
