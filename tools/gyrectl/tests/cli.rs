//! The `gyrectl` binary itself. (Having an integration test also makes
//! `cargo test --workspace` build the binary for the cluster tests.)

use std::process::Command;

#[test]
fn cluster_commands_need_a_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_gyrectl"))
        .args(["cluster", "status", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run gyrectl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster up"), "{err}");
}
