#![allow(clippy::unwrap_used)]
//! Ring, token allocation, replica placement and pending replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use gyre_cluster::{HostId, NodeInfo, ReplicaPlan, ReplicationStrategy, TokenMetadata};
use gyre_common::{token_of, Token};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn host(i: u8) -> HostId {
    HostId::from_u128(u128::from(i) + 1)
}

fn info(i: u8, dc: &str, rack: &str) -> NodeInfo {
    NodeInfo {
        host_id: host(i),
        address: SocketAddr::from(([10, 0, 0, i], 7000)),
        dc: dc.to_string(),
        rack: rack.to_string(),
    }
}

/// A, B, C own tokens 100, 200, 300.
fn abc() -> TokenMetadata {
    let mut tm = TokenMetadata::new();
    tm.update_normal(info(0, "dc1", "r1"), &[100]).unwrap();
    tm.update_normal(info(1, "dc1", "r1"), &[200]).unwrap();
    tm.update_normal(info(2, "dc1", "r1"), &[300]).unwrap();
    tm
}

#[test]
fn primary_owner_wraps() {
    let tm = abc();
    let (a, b, c) = (host(0), host(1), host(2));
    assert_eq!(tm.primary_owner(5), Some(a));
    assert_eq!(tm.primary_owner(100), Some(a));
    assert_eq!(tm.primary_owner(101), Some(b));
    assert_eq!(tm.primary_owner(300), Some(c));
    assert_eq!(tm.primary_owner(301), Some(a));
    assert_eq!(tm.primary_owner(i64::MIN), Some(a));
    assert_eq!(tm.primary_owner(i64::MAX), Some(a));
    assert_eq!(
        tm.primary_owner(token_of(b"k")),
        tm.primary_owner(token_of(b"k"))
    );
    assert_eq!(TokenMetadata::new().primary_owner(0), None);
}

#[test]
fn token_conflicts_are_rejected() {
    let mut tm = abc();
    assert!(tm.update_normal(info(9, "dc1", "r1"), &[200]).is_err());
    assert!(tm
        .add_bootstrapping(info(9, "dc1", "r1"), &[300, 5])
        .is_err());
    assert!(tm.add_bootstrapping(info(0, "dc1", "r1"), &[5]).is_err());
    // Re-announcing a node's own tokens is fine.
    tm.update_normal(info(1, "dc1", "r1"), &[200, 250]).unwrap();
    assert_eq!(tm.primary_owner(220), Some(host(1)));
    assert_eq!(tm.remove_node(host(1)).map(|n| n.host_id), Some(host(1)));
    assert_eq!(tm.primary_owner(150), Some(host(2)));
}

#[test]
fn simple_strategy_walks_clockwise() {
    let tm = abc();
    let s = ReplicationStrategy::simple(2);
    let (a, b, c) = (host(0), host(1), host(2));
    assert_eq!(tm.replicas_for_token(&s, 15), vec![a, b]);
    assert_eq!(tm.replicas_for_token(&s, 150), vec![b, c]);
    assert_eq!(tm.replicas_for_token(&s, 250), vec![c, a]);
    assert_eq!(tm.replicas_for_token(&s, 350), vec![a, b]);
    // More replicas than nodes: every node once.
    assert_eq!(
        tm.replicas_for_token(&ReplicationStrategy::simple(5), 150),
        vec![b, c, a]
    );
    // Vnodes of the same node are skipped.
    let mut tm = abc();
    tm.update_normal(info(0, "dc1", "r1"), &[100, 150]).unwrap();
    assert_eq!(
        tm.replicas_for_token(&ReplicationStrategy::simple(3), 120),
        vec![a, b, c]
    );
}

/// Ring: 10 A(dc1,r1) 20 B(dc1,r1) 30 C(dc2,r1) 40 D(dc1,r2) 50 E(dc2,r1) 60 F(dc1,r1).
fn two_dc() -> TokenMetadata {
    let mut tm = TokenMetadata::new();
    tm.update_normal(info(0, "dc1", "r1"), &[10]).unwrap();
    tm.update_normal(info(1, "dc1", "r1"), &[20]).unwrap();
    tm.update_normal(info(2, "dc2", "r1"), &[30]).unwrap();
    tm.update_normal(info(3, "dc1", "r2"), &[40]).unwrap();
    tm.update_normal(info(4, "dc2", "r1"), &[50]).unwrap();
    tm.update_normal(info(5, "dc1", "r1"), &[60]).unwrap();
    tm
}

#[test]
fn network_topology_hand_worked() {
    let tm = two_dc();
    let [a, b, c, d, e, f] = [0, 1, 2, 3, 4, 5].map(host);
    let nts = |x: usize, y: usize| ReplicationStrategy::network_topology([("dc1", x), ("dc2", y)]);
    // dc1 has racks r1, r2: B (rack r1 again) is skipped for D (new rack r2).
    assert_eq!(tm.replicas_for_token(&nts(2, 1), 5), vec![a, c, d]);
    // rf 3 > 2 racks: one rack repeat is allowed, taken in ring order.
    assert_eq!(tm.replicas_for_token(&nts(3, 1), 5), vec![a, b, c, d]);
    // Starting at 15: B(r1), C, D(r2); dc2 rf 2 takes E too.
    assert_eq!(tm.replicas_for_token(&nts(2, 2), 15), vec![b, c, d, e]);
    // Starting at 45: E, F(r1), A (r1 repeat, rejected), ..., D (r2).
    assert_eq!(tm.replicas_for_token(&nts(2, 1), 45), vec![e, f, d]);
    // rf larger than the DC: all of its nodes.
    assert_eq!(tm.replicas_for_token(&nts(0, 5), 45), vec![e, c]);
    assert_eq!(tm.replicas_for_token(&nts(9, 0), 1).len(), 4);
    // Unknown DC is ignored.
    let s = ReplicationStrategy::network_topology([("dc9", 3), ("dc2", 1)]);
    assert_eq!(tm.replicas_for_token(&s, 1), vec![c]);
}

/// Independent re-implementation of the older formulation
/// (per-DC walk, skipped endpoints used once all racks are seen).
fn brute_nts(tm: &TokenMetadata, token: Token, dcs: &BTreeMap<String, usize>) -> BTreeSet<HostId> {
    let ring = tm.ring();
    let start = ring.iter().position(|(t, _)| *t >= token).unwrap_or(0);
    let walk: Vec<HostId> = (0..ring.len())
        .map(|k| ring[(start + k) % ring.len()].1)
        .collect();
    let mut out = BTreeSet::new();
    for (dc, &rf) in dcs {
        let members: BTreeSet<HostId> = tm
            .normal_nodes()
            .filter(|n| &n.dc == dc)
            .map(|n| n.host_id)
            .collect();
        let racks: BTreeSet<&str> = tm
            .normal_nodes()
            .filter(|n| &n.dc == dc)
            .map(|n| n.rack.as_str())
            .collect();
        let want = rf.min(members.len());
        let mut chosen: Vec<HostId> = Vec::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut skipped: Vec<HostId> = Vec::new();
        for h in &walk {
            if chosen.len() >= want {
                break;
            }
            if !members.contains(h) || chosen.contains(h) || skipped.contains(h) {
                continue;
            }
            let rack = tm.node(h).unwrap().rack.as_str();
            if seen.len() == racks.len() {
                chosen.push(*h);
            } else if seen.contains(rack) {
                skipped.push(*h);
            } else {
                chosen.push(*h);
                seen.insert(rack);
                if seen.len() == racks.len() {
                    for s in &skipped {
                        if chosen.len() < want {
                            chosen.push(*s);
                        }
                    }
                }
            }
        }
        out.extend(chosen);
    }
    out
}

fn random_two_dc_ring(rng: &mut StdRng) -> TokenMetadata {
    let mut tm = TokenMetadata::new();
    let mut i = 0u8;
    for dc in ["dc1", "dc2"] {
        let racks = rng.gen_range(1..=3);
        for _ in 0..rng.gen_range(1..=7) {
            let rack = format!("r{}", rng.gen_range(0..racks));
            let tokens: Vec<Token> = (0..rng.gen_range(1..=4)).map(|_| rng.gen()).collect();
            tm.update_normal(info(i, dc, &rack), &tokens).unwrap();
            i += 1;
        }
    }
    tm
}

#[test]
fn network_topology_matches_brute_force_on_random_rings() {
    for seed in 0..150 {
        let mut rng = StdRng::seed_from_u64(seed);
        let tm = random_two_dc_ring(&mut rng);
        let dcs: BTreeMap<String, usize> = [
            ("dc1".to_string(), rng.gen_range(0..=4)),
            ("dc2".to_string(), rng.gen_range(0..=4)),
        ]
        .into();
        let strategy = ReplicationStrategy::NetworkTopology { dcs: dcs.clone() };
        let plan = ReplicaPlan::build(&tm, &strategy);
        for _ in 0..50 {
            let token: Token = rng.gen();
            let got = tm.replicas_for_token(&strategy, token);
            let set: BTreeSet<HostId> = got.iter().copied().collect();
            assert_eq!(set.len(), got.len(), "seed {seed}: duplicate replicas");
            assert_eq!(
                set,
                brute_nts(&tm, token, &dcs),
                "seed {seed} token {token}"
            );
            assert_eq!(
                plan.natural(token),
                got.as_slice(),
                "seed {seed}: cached plan differs"
            );
            assert!(plan.pending(token).is_empty());
            // The primary replica is the first eligible node clockwise.
            let eligible = |h: &HostId| dcs.get(&tm.node(h).unwrap().dc).is_some_and(|rf| *rf > 0);
            let first = tm.ring_walk(token).map(|(_, h)| h).find(eligible);
            assert_eq!(got.first().copied(), first, "seed {seed}");
        }
    }
}

/// The largest deviation of a node's replicated ownership from the mean
/// the replication-aware allocator must stay within (the issue asks for
/// ±25%), and which the primary-range allocator exceeds on every ring below
/// (measured: at most 0.102 against 0.196 .. 0.605).
const BOUND: f64 = 0.15;

fn max_deviation(tm: &TokenMetadata) -> f64 {
    let own = tm.ownership();
    let mean = 1.0 / own.len() as f64;
    own.values()
        .map(|o| (o - mean).abs() / mean)
        .fold(0.0, f64::max)
}

#[test]
fn allocation_keeps_ownership_balanced() {
    for seed in 0..5u64 {
        let mut tm = TokenMetadata::new();
        for i in 0..10u8 {
            let tokens = tm.allocate_tokens("dc1", 16, seed);
            assert_eq!(tokens.len(), 16);
            assert_eq!(tokens, tm.allocate_tokens("dc1", 16, seed), "deterministic");
            tm.update_normal(info(i, "dc1", "r1"), &tokens).unwrap();
            let dev = max_deviation(&tm);
            assert!(
                dev <= 0.25,
                "seed {seed}: {} nodes, max deviation {dev:.3}",
                i + 1
            );
        }
        let total: f64 = tm.ownership().values().sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
}

#[test]
fn random_tokens_are_not_balanced() {
    // The property the allocator provides does not hold by chance.
    let mut failures = 0;
    for seed in 0..5u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tm = TokenMetadata::new();
        let mut worst: f64 = 0.0;
        for i in 0..10u8 {
            let tokens: Vec<Token> = (0..16).map(|_| rng.gen()).collect();
            tm.update_normal(info(i, "dc1", "r1"), &tokens).unwrap();
            worst = worst.max(max_deviation(&tm));
        }
        if worst > 0.25 {
            failures += 1;
        }
    }
    assert!(
        failures >= 4,
        "random tokens passed too often ({failures}/5 failed)"
    );
}

#[test]
fn allocation_balances_per_datacenter() {
    let mut tm = TokenMetadata::new();
    for i in 0..12u8 {
        let dc = if i % 2 == 0 { "dc1" } else { "dc2" };
        let tokens = tm.allocate_tokens(dc, 8, 42);
        tm.update_normal(info(i, dc, "r1"), &tokens).unwrap();
    }
    for dc in ["dc1", "dc2"] {
        let own = tm.ownership_in_dc(dc);
        assert_eq!(own.len(), 6);
        let mean = 1.0 / 6.0;
        for o in own.values() {
            assert!((o - mean).abs() / mean <= 0.25, "{dc}: {own:?}");
        }
    }
}

#[test]
fn pending_replicas_for_a_join() {
    let mut tm = abc();
    let d = info(3, "dc1", "r1");
    tm.add_bootstrapping(d.clone(), &[150]).unwrap();
    let s = ReplicationStrategy::simple(2);
    let (a, b, c, dh) = (host(0), host(1), host(2), host(3));
    // Natural replicas ignore the joining node.
    assert_eq!(tm.replicas_for_token(&s, 120), vec![b, c]);
    // After the join D owns (100,150] and is second replica of (300,100].
    assert_eq!(tm.pending_replicas_for_token(&s, 120), vec![dh]);
    assert_eq!(tm.pending_replicas_for_token(&s, 50), vec![dh]);
    assert_eq!(tm.pending_replicas_for_token(&s, 170), Vec::<HostId>::new());
    assert_eq!(tm.pending_replicas_for_token(&s, 250), Vec::<HostId>::new());
    let plan = ReplicaPlan::build(&tm, &s);
    assert_eq!(plan.write_endpoints(120), vec![b, c, dh]);
    assert_eq!(plan.write_endpoints(50), vec![a, b, dh]);
    assert_eq!(plan.write_endpoints(170), vec![b, c]);
    // Once the join completes nothing is pending and D is natural.
    tm.update_normal(d, &[150]).unwrap();
    assert!(!tm.has_pending());
    assert_eq!(tm.replicas_for_token(&s, 120), vec![dh, b]);
    assert!(tm.pending_replicas_for_token(&s, 120).is_empty());
}

#[test]
fn pending_replicas_for_a_leave() {
    let mut tm = abc();
    tm.add_leaving(host(2)).unwrap();
    let s = ReplicationStrategy::simple(2);
    let (a, b, c) = (host(0), host(1), host(2));
    assert_eq!(tm.replicas_for_token(&s, 250), vec![c, a]);
    assert_eq!(tm.pending_replicas_for_token(&s, 250), vec![b]);
    assert_eq!(tm.pending_replicas_for_token(&s, 150), vec![a]);
    assert!(tm.pending_replicas_for_token(&s, 50).is_empty());
    let plan = ReplicaPlan::build(&tm, &s);
    assert_eq!(plan.pending(250), &[b]);
    assert_eq!(plan.pending(150), &[a]);
    assert!(plan.pending(50).is_empty());
    assert!(tm.add_leaving(host(9)).is_err());
}

#[test]
fn replica_plan_matches_uncached_with_random_joins_and_leaves() {
    for seed in 0..40 {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let mut tm = random_two_dc_ring(&mut rng);
        let normal: Vec<HostId> = tm.normal_nodes().map(|n| n.host_id).collect();
        if normal.len() > 2 {
            tm.add_leaving(normal[rng.gen_range(0..normal.len())])
                .unwrap();
        }
        for j in 0..rng.gen_range(0..3u8) {
            let tokens: Vec<Token> = (0..3).map(|_| rng.gen()).collect();
            tm.add_bootstrapping(info(100 + j, "dc1", "r0"), &tokens)
                .unwrap();
        }
        let strategy = ReplicationStrategy::network_topology([("dc1", 2), ("dc2", 2)]);
        let plan = ReplicaPlan::build(&tm, &strategy);
        for _ in 0..40 {
            let t: Token = rng.gen();
            assert_eq!(
                plan.natural(t),
                tm.replicas_for_token(&strategy, t).as_slice(),
                "seed {seed}"
            );
            assert_eq!(
                plan.pending(t),
                tm.pending_replicas_for_token(&strategy, t).as_slice(),
                "seed {seed}"
            );
        }
    }
}

/// Largest relative deviation from the mean of a node's share of the data
/// under `strategy` (computed with the real placement), over the nodes of
/// `dc` (every node when `None`).
fn replicated_deviation(
    tm: &TokenMetadata,
    strategy: &ReplicationStrategy,
    dc: Option<&str>,
) -> f64 {
    let plan = ReplicaPlan::build(tm, strategy);
    let mut own: BTreeMap<HostId, f64> = tm
        .normal_nodes()
        .filter(|n| dc.is_none_or(|d| n.dc == d))
        .map(|n| (n.host_id, 0.0))
        .collect();
    for r in plan.ranges() {
        let w = (i128::from(r.end) - i128::from(r.start)).rem_euclid(1i128 << 64);
        let w = if w == 0 { 1u128 << 64 } else { w as u128 };
        for h in &r.natural {
            if let Some(o) = own.get_mut(h) {
                *o += w as f64 / (1u128 << 64) as f64;
            }
        }
    }
    let mean = own.values().sum::<f64>() / own.len() as f64;
    own.values()
        .map(|o| (o - mean).abs() / mean)
        .fold(0.0, f64::max)
}

/// Grows a ring node by node (`placement(i)` gives node i's dc and rack),
/// each new node's 16 tokens from the replication-aware allocator
/// (`aware`) or the primary one; the worst replicated deviation seen on
/// the rings `measure` accepts. With seed 0 the ring
/// starts empty (a cluster formed as `cluster up` does: evenly spaced
/// tokens for the first node); with other seeds its first `random` nodes
/// hold random tokens drawn from the seed (a cluster made otherwise), so
/// that seeds give different rings to grow.
fn grow(
    nodes: u8,
    seed: u64,
    strategy: &ReplicationStrategy,
    placement: impl Fn(u8) -> (&'static str, &'static str),
    aware: bool,
    measure: impl Fn(&TokenMetadata) -> bool,
) -> f64 {
    let random = if seed == 0 { 0 } else { 3 };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tm = TokenMetadata::new();
    let mut worst: f64 = 0.0;
    for i in 0..nodes {
        let (dc, rack) = placement(i);
        let tokens = if i < random {
            (0..16).map(|_| rng.gen()).collect()
        } else if aware {
            tm.allocate_tokens_for_replication(dc, rack, 16, seed, strategy)
        } else {
            tm.allocate_tokens(dc, 16, seed)
        };
        assert_eq!(tokens.len(), 16);
        tm.update_normal(info(i, dc, rack), &tokens).unwrap();
        let topo = tm.topology();
        if measure(&tm) {
            for dc in topo.keys() {
                let scope = matches!(strategy, ReplicationStrategy::NetworkTopology { .. });
                worst = worst.max(replicated_deviation(&tm, strategy, scope.then_some(*dc)));
            }
        }
    }
    worst
}

#[test]
fn replication_aware_allocation_balances_simple_strategy() {
    // 1 -> 10 nodes of 16 tokens at SimpleStrategy RF 3, four seeds: the
    // worst deviation of a node's share of the data from the mean once the
    // ring holds 4+ nodes.
    let rf3 = ReplicationStrategy::simple(3);
    let one_dc = |_| ("dc1", "r1");
    let mut primary_fails = 0;
    for seed in 0..4u64 {
        let from_4 = |tm: &TokenMetadata| tm.normal_nodes().count() >= 4;
        let aware = grow(10, seed, &rf3, one_dc, true, from_4);
        let primary = grow(10, seed, &rf3, one_dc, false, from_4);
        println!("seed {seed}: replication-aware {aware:.3}, primary-range {primary:.3}");
        assert!(
            aware <= BOUND,
            "seed {seed}: replication-aware worst {aware:.3}"
        );
        if primary > BOUND {
            primary_fails += 1;
        }
    }
    assert_eq!(primary_fails, 4, "the primary allocator passed the bound");
    // Deterministic for a given ring and seed.
    let mut tm = TokenMetadata::new();
    for i in 0..5u8 {
        let t = tm.allocate_tokens_for_replication("dc1", "r1", 16, 7, &rf3);
        assert_eq!(
            t,
            tm.allocate_tokens_for_replication("dc1", "r1", 16, 7, &rf3)
        );
        tm.update_normal(info(i, "dc1", "r1"), &t).unwrap();
    }
}

#[test]
fn replication_aware_allocation_balances_each_datacenter_over_racks() {
    // NetworkTopologyStrategy {dc1: 3, dc2: 3}, nodes alternating between
    // the datacenters, on one rack or spread over three racks in each: every
    // datacenter is balanced on its own (with three racks, replicas are on
    // distinct racks). Measured with 6 and 9 nodes per datacenter: with
    // racks of unequal size no allocation can balance (a lone node on its
    // rack holds every range).
    let nts = ReplicationStrategy::network_topology([("dc1", 3), ("dc2", 3)]);
    const RACKS: [&str; 3] = ["r1", "r2", "r3"];
    for racks in [1usize, 3] {
        let spread = |i: u8| {
            let dc = if i.is_multiple_of(2) { "dc1" } else { "dc2" };
            (dc, RACKS[usize::from(i / 2) % racks])
        };
        let full_racks =
            |tm: &TokenMetadata| tm.topology().values().all(|(n, _)| *n >= 6 && *n % 3 == 0);
        let mut primary_fails = 0;
        for seed in 0..3u64 {
            let aware = grow(18, seed, &nts, spread, true, full_racks);
            let primary = grow(18, seed, &nts, spread, false, full_racks);
            println!(
                "{racks} rack(s), seed {seed}: replication-aware {aware:.3}, primary-range {primary:.3}"
            );
            assert!(
                aware <= BOUND,
                "seed {seed}: replication-aware worst {aware:.3}"
            );
            if primary > BOUND {
                primary_fails += 1;
            }
        }
        assert_eq!(primary_fails, 3, "the primary allocator passed the bound");
    }
}

#[test]
fn replication_aware_allocation_falls_back_when_replication_is_moot() {
    // Below RF nodes everything is held everywhere; RF 1 is primary
    // ownership: both use the primary allocator, as does a first node.
    let mut tm = TokenMetadata::new();
    let rf3 = ReplicationStrategy::simple(3);
    for i in 0..3u8 {
        let t = tm.allocate_tokens_for_replication("dc1", "r1", 16, 1, &rf3);
        assert_eq!(t, tm.allocate_tokens("dc1", 16, 1), "node {i}");
        tm.update_normal(info(i, "dc1", "r1"), &t).unwrap();
    }
    let rf1 = ReplicationStrategy::network_topology([("dc1", 1)]);
    assert_eq!(
        tm.allocate_tokens_for_replication("dc1", "r1", 16, 1, &rf1),
        tm.allocate_tokens("dc1", 16, 1)
    );
    // A datacenter the keyspace does not replicate to: primary, per DC.
    assert_eq!(
        tm.allocate_tokens_for_replication("dc2", "r1", 16, 1, &rf1),
        tm.allocate_tokens("dc2", 16, 1)
    );
    // A ring too large to search in reasonable time (4 nodes of 512 tokens).
    let mut big = TokenMetadata::new();
    let mut rng = StdRng::seed_from_u64(9);
    for i in 0..4u8 {
        let t: Vec<Token> = (0..512).map(|_| rng.gen()).collect();
        big.update_normal(info(i, "dc1", "r1"), &t).unwrap();
    }
    assert_eq!(
        big.allocate_tokens_for_replication("dc1", "r1", 512, 1, &rf3),
        big.allocate_tokens("dc1", 512, 1)
    );
}
