//! The short chaos run of `.ci/run`: 3 nodes, kill -9 and isolate-node
//! faults on Jepsen's schedule (healthy 10 s, fault 20 s) for about two
//! minutes under QUORUM register, monotonic-read and set workloads; then
//! heal, wait for hints and check every acknowledged write. The long run is
//! `gyrectl chaos --duration-secs 900` (README, "Chaos").
#![allow(clippy::unwrap_used)]

use gyre_tests::cluster::{workspace_bin, TestCluster};

#[test]
fn short_chaos_run_loses_no_acknowledged_write() {
    let c = TestCluster::new(3, 24);
    c.up();
    let report = c.dir.path().join("chaos.json");
    let dir = c.cluster_dir();
    let out = std::process::Command::new(workspace_bin("gyrectl"))
        .args(["chaos", "--dir"])
        .arg(&dir)
        .args([
            "--duration-secs",
            "100",
            "--faults",
            "kill,isolate",
            "--clients",
            "6",
            "--json",
        ])
        .arg(&report)
        .env("GYRE_BIN", workspace_bin("gyre"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "chaos run failed or found anomalies:\n{stdout}\n{}",
        c.logs()
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["anomalies"].as_array().map(Vec::len), Some(0));
    // The run did something under each fault.
    for phase in ["healthy", "kill", "isolate"] {
        let ok = r["phases"][phase]["ok"].as_u64().unwrap_or(0);
        assert!(
            ok > 100,
            "too few successful operations during {phase}: {ok}"
        );
    }
    assert!(
        r["final_state"]["registers"]
            .as_object()
            .map_or(0, |m| m.len())
            > 5,
        "registers were checked"
    );
}
