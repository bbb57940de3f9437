#![allow(clippy::unwrap_used)]
//! Deterministic simulations of gossip: N state machines, a virtual clock,
//! a seeded network with latency, drops and partitions.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use gyre_cluster::{
    AppStateKey, Endpoint, GossipConfig, GossipMessage, Gossiper, MembershipEvent, NodeStatus,
    TokenMetadata,
};
use gyre_common::Token;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STEP_MS: u64 = 10;

fn addr(i: usize) -> Endpoint {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7000))
}

struct SimNode {
    g: Gossiper,
    up: bool,
    next_tick: u64,
    tokens: Vec<Token>,
    generation: u64,
    events: Vec<MembershipEvent>,
}

struct Sim {
    now: u64,
    rng: StdRng,
    nodes: Vec<SimNode>,
    seeds: Vec<Endpoint>,
    /// (deliver_at, seq) -> (from, to, msg)
    queue: BTreeMap<(u64, u64), (usize, usize, GossipMessage)>,
    seq: u64,
    drop_prob: f64,
    /// Side of each node while partitioned; messages across sides are lost.
    partition: Option<Vec<u8>>,
    index: BTreeMap<Endpoint, usize>,
}

impl Sim {
    fn new(seed: u64, n: usize, seeds: &[usize], drop_prob: f64) -> Self {
        let mut sim = Sim {
            now: 0,
            rng: StdRng::seed_from_u64(seed),
            nodes: Vec::new(),
            seeds: seeds.iter().map(|&i| addr(i)).collect(),
            queue: BTreeMap::new(),
            seq: 0,
            drop_prob,
            partition: None,
            index: (0..n).map(|i| (addr(i), i)).collect(),
        };
        // Tokens as the node binary would pick them: allocated one by one.
        let mut tm = TokenMetadata::new();
        let mut all_tokens = Vec::new();
        for i in 0..n {
            let tokens = tm.allocate_tokens("dc1", 4, seed);
            let info = gyre_cluster::NodeInfo {
                host_id: uuid::Uuid::from_u128(i as u128 + 1),
                address: addr(i),
                dc: "dc1".into(),
                rack: "r1".into(),
            };
            tm.update_normal(info, &tokens).unwrap();
            all_tokens.push(tokens);
        }
        for (i, tokens) in all_tokens.into_iter().enumerate() {
            let g = sim.make_gossiper(i, 1, &tokens);
            let next_tick = sim.rng.gen_range(0..1000);
            sim.nodes.push(SimNode {
                g,
                up: true,
                next_tick,
                tokens,
                generation: 1,
                events: Vec::new(),
            });
        }
        sim
    }

    fn make_gossiper(&mut self, i: usize, generation: u64, tokens: &[Token]) -> Gossiper {
        let cfg = GossipConfig::new("sim", addr(i), self.seeds.clone());
        let mut g = Gossiper::new(cfg, generation, self.rng.gen(), self.now);
        g.set_local_state(AppStateKey::Dc, "dc1");
        g.set_local_state(AppStateKey::Rack, "r1");
        g.set_local_state(
            AppStateKey::HostId,
            uuid::Uuid::from_u128(i as u128 + 1).to_string(),
        );
        g.set_local_state(AppStateKey::NativeAddress, format!("10.1.0.{}:9042", i + 1));
        g.set_local_state(AppStateKey::ReleaseVersion, "0.1.0");
        g.set_tokens(tokens);
        g.set_status(NodeStatus::Normal);
        g
    }

    fn send(&mut self, from: usize, out: Vec<gyre_cluster::Outgoing>) {
        for o in out {
            let Some(&to) = self.index.get(&o.to) else {
                continue;
            };
            if self.rng.gen::<f64>() < self.drop_prob {
                continue;
            }
            let at = self.now + self.rng.gen_range(1..=30);
            self.seq += 1;
            self.queue.insert((at, self.seq), (from, to, o.msg));
        }
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.partition.as_ref().is_none_or(|p| p[a] == p[b])
    }

    /// Advances virtual time by one step: deliveries first, then ticks.
    fn step(&mut self) {
        self.now += STEP_MS;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (from, to, msg) = entry.remove();
            if !self.nodes[to].up || !self.reachable(from, to) {
                continue;
            }
            let now = self.now;
            let out = self.nodes[to].g.step(addr(from), msg, now);
            self.send(to, out);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].up && self.nodes[i].next_tick <= self.now {
                self.nodes[i].next_tick += 1000;
                let now = self.now;
                let out = self.nodes[i].g.tick(now);
                self.send(i, out);
            }
        }
        for n in &mut self.nodes {
            let ev = n.g.drain_events();
            n.events.extend(ev);
        }
    }

    fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `cond` holds; returns the elapsed virtual ms, or None at `limit_ms`.
    fn run_until(&mut self, limit_ms: u64, mut cond: impl FnMut(&Sim) -> bool) -> Option<u64> {
        let start = self.now;
        while self.now - start < limit_ms {
            if cond(self) {
                return Some(self.now - start);
            }
            self.step();
        }
        cond(self).then(|| self.now - start)
    }

    /// Does `i` see `j` UP with `j`'s current generation, NORMAL and its tokens?
    fn sees_up(&self, i: usize, j: usize) -> bool {
        let g = &self.nodes[i].g;
        let target = &self.nodes[j];
        g.is_alive(&addr(j))
            && g.endpoint_state(&addr(j)).is_some_and(|s| {
                s.generation == target.generation
                    && s.status() == Some(NodeStatus::Normal)
                    && s.tokens().as_deref() == Some(target.tokens.as_slice())
            })
    }

    fn sees_down(&self, i: usize, j: usize) -> bool {
        !self.nodes[i].g.is_alive(&addr(j))
    }

    fn converged(&self) -> bool {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        up.iter()
            .all(|&i| up.iter().all(|&j| i == j || self.sees_up(i, j)))
    }

    fn kill(&mut self, k: usize) {
        self.nodes[k].up = false;
    }

    fn restart(&mut self, k: usize) {
        let generation = self.nodes[k].generation + 1;
        let tokens = self.nodes[k].tokens.clone();
        let g = self.make_gossiper(k, generation, &tokens);
        let n = &mut self.nodes[k];
        n.g = g;
        n.generation = generation;
        n.up = true;
        n.next_tick = self.now + STEP_MS;
    }
}

/// Rounds (seconds) allowed for convergence: generous O(log N).
fn convergence_bound_ms(n: usize) -> u64 {
    let log2 = (n as f64).log2().ceil() as u64;
    (4 * log2 + 6) * 1000
}

fn check_convergence(seed: u64, n: usize, seeds: &[usize], drop_prob: f64) -> u64 {
    let mut sim = Sim::new(seed, n, seeds, drop_prob);
    let bound = convergence_bound_ms(n);
    let took = sim.run_until(bound, Sim::converged);
    let took =
        took.unwrap_or_else(|| panic!("seed {seed}: {n} nodes did not converge within {bound} ms"));
    // Every node saw every other join and come up exactly once.
    for (i, node) in sim.nodes.iter().enumerate() {
        let ups = node
            .events
            .iter()
            .filter(|e| matches!(e, MembershipEvent::Up(_)))
            .count();
        let joins = node
            .events
            .iter()
            .filter(|e| matches!(e, MembershipEvent::Joined { .. }))
            .count();
        assert_eq!((ups, joins), (n - 1, n - 1), "seed {seed} node {i}");
    }
    took
}

#[test]
fn five_nodes_one_seed_converge() {
    let mut worst = 0;
    for seed in 0..100 {
        worst = worst.max(check_convergence(seed, 5, &[0], 0.0));
    }
    eprintln!("5 nodes: worst convergence {worst} ms");
}

#[test]
fn twenty_nodes_two_seeds_converge_with_drops() {
    let mut worst = 0;
    for seed in 0..25 {
        worst = worst.max(check_convergence(seed, 20, &[0, 7], 0.05));
    }
    eprintln!("20 nodes: worst convergence {worst} ms");
}

/// Detection time bound: phi > 8 needs 8 * ln(10) ~ 18.4 mean intervals of
/// silence. Learned intervals are capped at 2 s (second-hand heartbeats in a
/// larger cluster arrive every 1-2 s), plus propagation slack: ~45 s.
const DETECT_BOUND_MS: u64 = (8.0 * std::f64::consts::LN_10 * 2000.0) as u64 + 8_000;

#[test]
fn killed_node_is_marked_down_then_restart_brings_it_back() {
    let mut worst_detect = 0;
    let mut best_detect = u64::MAX;
    for seed in 0..40 {
        let n = 6;
        let mut sim = Sim::new(seed, n, &[0, 3], 0.02);
        assert!(
            sim.run_until(30_000, Sim::converged).is_some(),
            "seed {seed}: no convergence"
        );
        sim.run_for(10_000);
        let victim = 1 + (seed as usize % (n - 1));
        sim.kill(victim);
        let others: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
        let took = sim
            .run_until(DETECT_BOUND_MS, |s| {
                others.iter().all(|&i| s.sees_down(i, victim))
            })
            .unwrap_or_else(|| panic!("seed {seed}: node {victim} not marked down"));
        worst_detect = worst_detect.max(took);
        best_detect = best_detect.min(took);
        // No false positives among the survivors.
        for &i in &others {
            for &j in &others {
                assert!(
                    i == j || sim.nodes[i].g.is_alive(&addr(j)),
                    "seed {seed}: {i} thinks {j} is down"
                );
            }
        }
        sim.run_for(5_000);
        sim.restart(victim);
        let back = sim.run_until(15_000, Sim::converged);
        assert!(
            back.is_some(),
            "seed {seed}: restarted node {victim} not back up"
        );
        for &i in &others {
            let restarted = sim.nodes[i].events.iter().any(|e| {
                matches!(e, MembershipEvent::Restarted { endpoint, generation: 2 } if *endpoint == addr(victim))
            });
            assert!(restarted, "seed {seed}: node {i} missed the restart");
            assert_eq!(
                sim.nodes[i]
                    .g
                    .endpoint_state(&addr(victim))
                    .map(|s| s.generation),
                Some(2)
            );
        }
    }
    eprintln!("kill detection: {best_detect}..{worst_detect} ms");
    // Not trigger-happy either: phi 8 cannot be reached in under ~10 s.
    assert!(best_detect >= 10_000, "detected too fast: {best_detect} ms");
}

fn check_partition(seed: u64) {
    let n = 8;
    let mut sim = Sim::new(seed, n, &[0, 4], 0.0);
    assert!(
        sim.run_until(30_000, Sim::converged).is_some(),
        "seed {seed}: no convergence"
    );
    sim.run_for(5_000);
    let side: Vec<u8> = (0..n).map(|i| u8::from(i >= n / 2)).collect();
    sim.partition = Some(side.clone());
    let split = sim.run_until(DETECT_BOUND_MS, |s| {
        (0..n).all(|i| {
            (0..n).all(|j| {
                i == j
                    || if side[i] == side[j] {
                        s.sees_up(i, j)
                    } else {
                        s.sees_down(i, j)
                    }
            })
        })
    });
    if split.is_none() {
        for i in 0..n {
            for j in (0..n).filter(|&j| j != i) {
                let g = &sim.nodes[i].g;
                eprintln!(
                    "{i}->{j}: alive {} phi {:?}",
                    g.is_alive(&addr(j)),
                    g.phi(&addr(j), sim.now)
                );
            }
        }
    }
    assert!(split.is_some(), "seed {seed}: partition not detected");
    // Each side keeps going (seeds on both sides, others gossip to live peers).
    sim.run_for(10_000);
    sim.partition = None;
    let healed = sim.run_until(20_000, Sim::converged);
    assert!(healed.is_some(), "seed {seed}: did not heal");
}

#[test]
fn partition_marks_other_side_down_and_heals() {
    for seed in 0..30 {
        check_partition(seed);
    }
}

/// Seed 23 once failed a 40 s bound: node 1 had learned a ~2 s mean interval
/// for node 4 from second-hand heartbeats, so phi 8 took ~37 s of silence.
#[test]
fn partition_seed_23_slow_second_hand_heartbeats() {
    check_partition(23);
}

#[test]
fn shutdown_is_seen_at_once() {
    for seed in 0..30 {
        let n = 5;
        let mut sim = Sim::new(seed, n, &[0], 0.0);
        assert!(sim.run_until(30_000, Sim::converged).is_some());
        sim.run_for(3_000);
        let leaver = 2;
        let now = sim.now;
        let out = sim.nodes[leaver].g.announce_shutdown(now);
        assert_eq!(out.len(), n - 1, "seed {seed}: announce to every live peer");
        sim.send(leaver, out);
        sim.kill(leaver);
        // Delivery latency is at most 30 ms.
        sim.run_for(50);
        for i in (0..n).filter(|&i| i != leaver) {
            assert!(
                sim.sees_down(i, leaver),
                "seed {seed}: {i} did not mark the leaver down"
            );
            let st = sim.nodes[i].g.endpoint_state(&addr(leaver)).unwrap();
            assert_eq!(st.status(), Some(NodeStatus::Shutdown));
        }
        // It stays down, and gossip does not resurrect it.
        sim.run_for(20_000);
        for i in (0..n).filter(|&i| i != leaver) {
            assert!(sim.sees_down(i, leaver));
        }
        // A restart (new generation) is accepted.
        sim.restart(leaver);
        assert!(
            sim.run_until(15_000, Sim::converged).is_some(),
            "seed {seed}: restart after shutdown"
        );
    }
}

#[test]
fn node_without_reachable_seed_keeps_trying_and_joins_later() {
    let n = 4;
    let mut sim = Sim::new(3, n, &[0], 0.0);
    sim.kill(0);
    sim.run_for(10_000);
    for i in 1..n {
        assert!(sim.nodes[i].g.waiting_for_seeds(), "node {i}");
        assert!(sim.nodes[i].g.rounds_without_live_seed() >= 9);
        assert!(sim.nodes[i].g.live_members().next().is_none());
    }
    sim.restart(0);
    assert!(sim.run_until(15_000, Sim::converged).is_some());
    for i in 1..n {
        assert!(!sim.nodes[i].g.waiting_for_seeds());
    }
}

#[test]
fn status_changes_propagate_as_events() {
    let mut sim = Sim::new(11, 5, &[0], 0.0);
    assert!(sim.run_until(30_000, Sim::converged).is_some());
    for n in &mut sim.nodes {
        n.events.clear();
    }
    sim.nodes[3].g.set_status(NodeStatus::Leaving);
    sim.nodes[3].g.set_local_state(AppStateKey::Load, "12345");
    sim.run_for(15_000);
    for i in [0, 1, 2, 4] {
        let ev = &sim.nodes[i].events;
        assert!(
            ev.contains(&MembershipEvent::StatusChanged {
                endpoint: addr(3),
                status: Some(NodeStatus::Leaving)
            }),
            "node {i}: {ev:?}"
        );
        assert!(ev.contains(&MembershipEvent::StateChanged {
            endpoint: addr(3),
            key: AppStateKey::Load,
            value: "12345".into()
        }));
        assert!(sim.nodes[i].g.is_alive(&addr(3)), "leaving nodes stay up");
    }
}

#[test]
fn removed_endpoint_is_quarantined() {
    let mut sim = Sim::new(5, 4, &[0], 0.0);
    assert!(sim.run_until(30_000, Sim::converged).is_some());
    sim.kill(3);
    let now = sim.now;
    for i in 0..3 {
        sim.nodes[i].g.remove_endpoint(addr(3), now);
    }
    sim.run_for(30_000);
    for i in 0..3 {
        assert!(
            sim.nodes[i].g.endpoint_state(&addr(3)).is_none(),
            "node {i} resurrected a removed endpoint"
        );
        assert!(sim.nodes[i]
            .events
            .contains(&MembershipEvent::Removed(addr(3))));
    }
}

#[test]
fn a_removal_reaches_a_peer_that_missed_it_and_outranks_the_old_state() {
    let mut sim = Sim::new(7, 4, &[0], 0.0);
    assert!(sim.run_until(30_000, Sim::converged).is_some());
    sim.run_for(10_000);
    sim.kill(3);
    assert!(sim
        .run_until(DETECT_BOUND_MS, |s| (0..3).all(|i| s.sees_down(i, 3)))
        .is_some());
    let host = sim.nodes[0]
        .g
        .endpoint_state(&addr(3))
        .and_then(|s| s.host_id())
        .expect("host id");
    // Only node 0 publishes the removal (the others missed the commit):
    // gossip carries it to them, and nobody's stale NORMAL state wins.
    let now = sim.now;
    assert!(sim.nodes[0].g.advertise_removed(addr(3), host, now));
    assert!(
        !sim.nodes[0].g.advertise_removed(addr(1), host, now),
        "alive"
    );
    sim.run_for(30_000);
    for i in 0..3 {
        let st = sim.nodes[i].g.endpoint_state(&addr(3)).expect("state");
        assert_eq!(st.status(), Some(NodeStatus::Removed), "node {i}");
        assert!(!sim.nodes[i].g.is_alive(&addr(3)));
    }
}
