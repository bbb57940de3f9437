//! Failure detection with real processes: a killed node is convicted
//! within 15 s and rejoins with a higher generation; a paused node is
//! convicted, and after resuming recovers without a restart.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gyre_tests::cluster::TestCluster;

/// The bound for noticing a dead node.
const DETECTION: Duration = Duration::from_secs(15);

#[test]
fn killed_node_is_convicted_and_rejoins_with_higher_generation() {
    let c = TestCluster::new(3, 11);
    c.up();
    let before = c.view(1, 2).unwrap();

    c.gyrectl_ok(&["cluster", "kill", "2"]);
    let took = c.wait_until(
        "nodes 1 and 3 see node 2 DN",
        DETECTION + Duration::from_secs(5),
        || c.sees(1, 2, false) && c.sees(3, 2, false),
    );
    assert!(took < DETECTION, "took {took:?} to convict a killed node");
    let out = c.gyrectl_ok(&["status", "--host", "127.0.11.1", "--port", "9180"]);
    assert!(
        out.lines().any(|l| l.starts_with("DN  127.0.11.2:7000")),
        "{out}"
    );

    c.gyrectl_ok(&["cluster", "start", "2"]);
    c.wait_until(
        "every node sees node 2 UN again",
        Duration::from_secs(20),
        || (1..=3).all(|n| c.sees(n, 2, true)),
    );
    for obs in [1, 3] {
        let after = c.view(obs, 2).unwrap();
        assert!(
            after.generation > before.generation,
            "generation {} -> {}",
            before.generation,
            after.generation
        );
        assert_eq!(
            after.host_id, before.host_id,
            "host id must survive a restart"
        );
        assert_eq!(after.tokens, before.tokens, "tokens must survive a restart");
    }
}

#[test]
fn paused_node_is_convicted_then_recovers_without_restart() {
    let c = TestCluster::new(3, 12);
    c.up();
    let pid = c.pid(3).unwrap();
    let generation = c.view(1, 3).unwrap().generation;

    c.gyrectl_ok(&["cluster", "pause", "3"]);
    c.wait_until(
        "nodes 1 and 2 see node 3 DN",
        Duration::from_secs(20),
        || c.sees(1, 3, false) && c.sees(2, 3, false),
    );

    c.gyrectl_ok(&["cluster", "resume", "3"]);
    c.wait_until(
        "the cluster sees node 3 UN again, and node 3 sees it all UN",
        Duration::from_secs(20),
        || (1..=3).all(|obs| (1..=3).all(|t| c.sees(obs, t, true))),
    );
    // Node 3 itself convicts the others when it wakes (their heartbeats
    // stopped arriving while it was frozen): after it has gossiped for a
    // while on its own (ten more heartbeats), it must see everyone UP.
    let hb = c.view(3, 3).unwrap().heartbeat;
    c.wait_until(
        "node 3 gossips on and sees everyone UP",
        Duration::from_secs(20),
        || {
            c.view(3, 3).is_some_and(|me| me.heartbeat >= hb + 10)
                && (1..=3).all(|t| c.sees(3, t, true))
        },
    );
    assert_eq!(c.pid(3), Some(pid), "node 3 was restarted");
    assert_eq!(c.view(1, 3).unwrap().generation, generation);
}
