//! A restarted member knows the ring before gossip has reached anyone
//! (Cassandra's `loadRingState`): 4 real nodes on 127.0.186.x, all killed,
//! node 1 started alone: it lists the other three DOWN with their tokens
//! (from `peers.json`) and computes RF 3 replica sets over all four nodes,
//! never over itself alone. Found by `gyrectl chaos --faults membership,..`:
//! after a kill-all, a node serving on the partial ring gossip had taught
//! it so far picked other replicas than its peers (a quorum of the wrong
//! nodes: a non-linearizable CAS history).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gyre_tests::cluster::TestCluster;

#[test]
fn a_restarted_node_knows_the_ring_before_its_peers_answer() {
    let c = TestCluster::new(4, 186);
    c.up();
    c.wait_until("node 1 sees every node UP", Duration::from_secs(30), || {
        (2..=4).all(|n| c.sees(1, n, true))
    });
    let tokens_before: Vec<usize> = (1..=4)
        .map(|n| c.view(1, n).unwrap().tokens.len())
        .collect();
    assert_eq!(tokens_before, vec![16; 4]);
    for n in 1..=4 {
        c.gyrectl_ok(&["cluster", "kill", &n.to_string()]);
    }
    c.gyrectl_ok(&["cluster", "start", "1"]);
    // Nobody else runs: only the saved ring can tell node 1 about them.
    for n in 2..=4 {
        let e = c
            .view(1, n)
            .unwrap_or_else(|| panic!("node 1 does not know node {n}\n{}", c.logs()));
        assert!(!e.is_up(), "node {n} seen UP while it is dead");
        assert!(e.is_normal(), "node {n}: {e:?}");
        assert_eq!(e.tokens.len(), 16, "node {n}");
    }
    let saved = std::fs::read_to_string(c.cluster_dir().join("node1/data/peers.json")).unwrap();
    let saved: Vec<serde_json::Value> = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved.len(), 3, "{saved:?}");
    assert!(saved.iter().all(|p| p["native"].is_string()), "{saved:?}");
    let log = std::fs::read_to_string(c.cluster_dir().join("node1/gyre.log")).unwrap();
    assert!(log.contains("ring loaded from peers.json peers=3"), "{log}");
    // The replica sets span the whole saved ring: a keyspace created
    // before the restart is not needed, the system ones are there.
    let ring = c.gyrectl_ok(&["ring", "--host", &c.cql(1).ip().to_string()]);
    assert_eq!(ring.matches("Down").count(), 48, "{ring}");
    assert_eq!(ring.matches("Up").count(), 16, "{ring}");
    // The others come back and are recognised as the same nodes.
    for n in 2..=4 {
        c.gyrectl_ok(&["cluster", "start", &n.to_string()]);
    }
    c.wait_until(
        "node 1 sees every node UP again",
        Duration::from_secs(60),
        || (2..=4).all(|n| c.sees(1, n, true)),
    );
    let status = c.status(1).unwrap();
    assert_eq!(status.endpoints.len(), 4, "{status:?}");
}
