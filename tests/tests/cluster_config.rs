//! The `gyre` binary refuses bad configuration with a message naming the key.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use gyre_tests::cluster::workspace_bin;

fn gyre_with(toml: &str, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gyre.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(workspace_bin("gyre"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn unknown_keys_and_invalid_values_are_rejected_by_name() {
    let (ok, msg) = gyre_with("[cluster]\nnum_tokenz = 16\n", &[]);
    assert!(!ok && msg.contains("num_tokenz"), "{msg}");

    let (ok, msg) = gyre_with("[storage]\ncommitlog_sync = \"sometimes\"\n", &[]);
    assert!(!ok && msg.contains("commitlog_sync"), "{msg}");

    let (ok, msg) = gyre_with("[cluster]\nnum_tokens = 0\n", &[]);
    assert!(!ok && msg.contains("cluster.num_tokens"), "{msg}");

    let (ok, msg) = gyre_with("", &["--gossip-interval-ms", "1"]);
    assert!(!ok && msg.contains("gossip.interval_ms"), "{msg}");

    let (ok, msg) = gyre_with("[gossip]\nphi_convict_threshold = 0.0\n", &[]);
    assert!(!ok && msg.contains("gossip.phi_convict_threshold"), "{msg}");
}

#[test]
fn the_template_and_overrides_are_accepted() {
    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/gyre.toml");
    let out = Command::new(workspace_bin("gyre"))
        .arg("--config")
        .arg(&template)
        .args([
            "--print-config",
            "--num-tokens",
            "8",
            "--seeds",
            "127.0.0.9",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("num_tokens = 8"), "{text}");
    assert!(text.contains("127.0.0.9"), "{text}");
}
