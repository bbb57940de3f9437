//! Range movements: which ranges a joining node fetches and from whom, and
//! which ranges a leaving node hands to whom (Cassandra's
//! `RangeStreamer` with strict sources and `getChangesForLeaving`).

use std::collections::BTreeMap;

use gyre_common::Token;

use crate::placement::ReplicationStrategy;
use crate::ring::{HostId, NodeInfo, TokenMetadata};

/// One range `(start, end]` to move, and the nodes at the other end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeMove {
    pub start: Token,
    pub end: Token,
    /// Bootstrap: the single source. Leave: every new owner.
    pub peers: Vec<HostId>,
}

/// `(prev, end]` ranges of a ring's tokens, in order.
fn ranges(tokens: &[Token]) -> Vec<(Token, Token)> {
    let Some(&last) = tokens.last() else {
        return Vec::new();
    };
    let mut prev = last;
    tokens
        .iter()
        .map(|&t| {
            let r = (prev, t);
            prev = t;
            r
        })
        .collect()
}

/// The ranges `joining` (with `tokens`) will replicate under `strategy`,
/// each with the replica to stream it from. With `strict`, that is the one
/// current replica that stops replicating the range (or, when none does,
/// because the keyspace has fewer nodes than its replication factor, any
/// live replica); a down strict source is an error naming it. Without
/// `strict`, any live current replica, preferring the strict one.
pub fn bootstrap_sources(
    tm: &TokenMetadata,
    strategy: &ReplicationStrategy,
    joining: &NodeInfo,
    tokens: &[Token],
    is_alive: &dyn Fn(HostId) -> bool,
    strict: bool,
) -> Result<Vec<RangeMove>, String> {
    let mut current = tm.clone();
    current.remove_node(joining.host_id);
    let mut future = current.clone();
    future
        .update_normal(joining.clone(), tokens)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (start, end) in ranges(&future.sorted_tokens()) {
        let new = strategy.natural_replicas(&future, end);
        if !new.contains(&joining.host_id) {
            continue;
        }
        let old = strategy.natural_replicas(&current, end);
        if old.is_empty() {
            continue;
        }
        let giving_up: Vec<HostId> = old.iter().filter(|h| !new.contains(h)).copied().collect();
        let source = if strict && giving_up.len() == 1 {
            let s = giving_up[0];
            if !is_alive(s) {
                let addr = current
                    .node(&s)
                    .map_or_else(|| s.to_string(), |n| n.address.ip().to_string());
                return Err(format!(
                    "A node required to move the data consistently is down (/{addr}). If you wish \
                     to move the data from a potentially inconsistent replica, restart the node \
                     with cluster.consistent_rangemovement = false (--consistent-rangemovement false)"
                ));
            }
            s
        } else {
            let preferred = giving_up.iter().chain(old.iter()).find(|h| is_alive(**h));
            match preferred {
                Some(h) => *h,
                None => {
                    return Err(format!(
                        "no live replica to stream range ({start}, {end}] from (replicas: {})",
                        names(&current, &old)
                    ))
                }
            }
        };
        out.push(RangeMove {
            start,
            end,
            peers: vec![source],
        });
    }
    Ok(out)
}

/// The ranges `leaving` replicates now, each with the nodes that will
/// replicate it once it has left and do not yet.
pub fn leave_targets(
    tm: &TokenMetadata,
    strategy: &ReplicationStrategy,
    leaving: HostId,
) -> Vec<RangeMove> {
    let mut after = tm.clone();
    after.remove_node(leaving);
    let mut out = Vec::new();
    for (start, end) in ranges(&tm.sorted_tokens()) {
        let old = strategy.natural_replicas(tm, end);
        if !old.contains(&leaving) {
            continue;
        }
        let peers: Vec<HostId> = strategy
            .natural_replicas(&after, end)
            .into_iter()
            .filter(|h| !old.contains(h))
            .collect();
        if !peers.is_empty() {
            out.push(RangeMove { start, end, peers });
        }
    }
    out
}

/// The ranges the dead node `replaced` replicates under `strategy`, each
/// with a live replica other than it and `me` (the replacement) to stream
/// from. A range no live replica holds is returned in the second list: its
/// data died with the node (RF 1, or every other replica down).
pub fn replace_sources(
    tm: &TokenMetadata,
    strategy: &ReplicationStrategy,
    replaced: HostId,
    me: HostId,
    is_alive: &dyn Fn(HostId) -> bool,
) -> (Vec<RangeMove>, Vec<(Token, Token)>) {
    let mut out = Vec::new();
    let mut lost = Vec::new();
    for (start, end) in ranges(&tm.sorted_tokens()) {
        let replicas = strategy.natural_replicas(tm, end);
        if !replicas.contains(&replaced) {
            continue;
        }
        match replicas
            .iter()
            .find(|h| **h != replaced && **h != me && is_alive(**h))
        {
            Some(h) => out.push(RangeMove {
                start,
                end,
                peers: vec![*h],
            }),
            None => lost.push((start, end)),
        }
    }
    (out, lost)
}

/// Why `leaving` may not leave: a keyspace would keep fewer nodes than its
/// replication factor (Cassandra's message), or it is the last node.
pub fn check_leave(
    tm: &TokenMetadata,
    keyspaces: &BTreeMap<String, ReplicationStrategy>,
    leaving: HostId,
) -> Result<(), String> {
    let normal = tm.normal_nodes().count();
    if normal <= 1 {
        return Err("no other normal nodes in the ring; decommission would be pointless".into());
    }
    let dc = tm.node(&leaving).map(|n| n.dc.clone()).unwrap_or_default();
    for (ks, strategy) in keyspaces {
        let (rf, n) = match strategy {
            ReplicationStrategy::Simple { rf } => (*rf, normal - 1),
            ReplicationStrategy::NetworkTopology { dcs } => {
                let rf = dcs.get(&dc).copied().unwrap_or(0);
                let in_dc = tm.normal_nodes().filter(|i| i.dc == dc).count();
                (rf, in_dc.saturating_sub(1))
            }
        };
        if rf > n {
            return Err(format!(
                "Not enough live nodes to maintain replication factor in keyspace {ks} (RF = {rf}, \
                 N = {n}). Perform a forceful decommission to ignore."
            ));
        }
    }
    Ok(())
}

fn names(tm: &TokenMetadata, hosts: &[HostId]) -> String {
    hosts
        .iter()
        .map(|h| {
            tm.node(h)
                .map_or_else(|| h.to_string(), |n| n.address.to_string())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn node(i: u8) -> NodeInfo {
        NodeInfo {
            host_id: uuid::Uuid::from_u128(i.into()),
            address: SocketAddr::from(([127, 0, 0, i], 7000)),
            dc: "dc1".into(),
            rack: "rack1".into(),
        }
    }

    fn ring(n: u8) -> TokenMetadata {
        let mut tm = TokenMetadata::new();
        for i in 1..=n {
            let tokens = tm.allocate_tokens("dc1", 8, u64::from(i));
            tm.update_normal(node(i), &tokens).expect("normal");
        }
        tm
    }

    #[test]
    fn joining_node_streams_each_range_from_the_replica_giving_it_up() {
        let tm = ring(4);
        let s = ReplicationStrategy::simple(3);
        let new = node(5);
        let tokens = tm.allocate_tokens("dc1", 8, 5);
        let moves = bootstrap_sources(&tm, &s, &new, &tokens, &|_| true, true).expect("moves");
        assert!(!moves.is_empty());
        let mut future = tm.clone();
        future.update_normal(new.clone(), &tokens).expect("future");
        for m in &moves {
            let old = s.natural_replicas(&tm, m.end);
            let now = s.natural_replicas(&future, m.end);
            assert!(now.contains(&new.host_id));
            assert_eq!(m.peers.len(), 1);
            assert!(old.contains(&m.peers[0]) && !now.contains(&m.peers[0]));
        }
        // The moved ranges cover exactly what the new node replicates: RF/N+1 of the ring.
        let covered: u128 = moves
            .iter()
            .map(|m| crate::ring::range_width(m.start, m.end))
            .sum();
        let share = covered as f64 / 2f64.powi(64);
        assert!(share > 0.3 && share < 0.9, "share {share}");
    }

    #[test]
    fn a_down_strict_source_is_named_and_the_override_picks_another() {
        let tm = ring(4);
        let s = ReplicationStrategy::simple(3);
        let new = node(5);
        let tokens = tm.allocate_tokens("dc1", 8, 5);
        let moves = bootstrap_sources(&tm, &s, &new, &tokens, &|_| true, true).expect("moves");
        let down = moves[0].peers[0];
        let alive = move |h: HostId| h != down;
        let err = bootstrap_sources(&tm, &s, &new, &tokens, &alive, true).expect_err("refused");
        let ip = tm.node(&down).expect("down").address.ip().to_string();
        assert!(err.contains(&format!("is down (/{ip})")), "{err}");
        let loose = bootstrap_sources(&tm, &s, &new, &tokens, &alive, false).expect("override");
        assert_eq!(loose.len(), moves.len());
        assert!(loose.iter().all(|m| m.peers[0] != down));
    }

    #[test]
    fn leaving_node_hands_every_range_to_its_new_owners() {
        let tm = ring(5);
        let s = ReplicationStrategy::simple(3);
        let leaving = node(2).host_id;
        let moves = leave_targets(&tm, &s, leaving);
        let mut after = tm.clone();
        after.remove_node(leaving);
        for m in &moves {
            for p in &m.peers {
                assert!(s.natural_replicas(&after, m.end).contains(p));
                assert!(!s.natural_replicas(&tm, m.end).contains(p));
            }
        }
        // Every range the node replicated gains exactly one new replica.
        assert!(moves.iter().all(|m| m.peers.len() == 1));
    }

    #[test]
    fn a_replacement_streams_every_range_of_the_dead_node_from_a_live_replica() {
        let tm = ring(4);
        let s = ReplicationStrategy::simple(3);
        let (dead, me) = (node(2).host_id, node(9).host_id);
        let alive = move |h: HostId| h != dead;
        let (moves, lost) = replace_sources(&tm, &s, dead, me, &alive);
        assert!(lost.is_empty());
        for m in &moves {
            let replicas = s.natural_replicas(&tm, m.end);
            assert!(replicas.contains(&dead) && replicas.contains(&m.peers[0]));
            assert_ne!(m.peers[0], dead);
        }
        // The dead node's share: about RF/N of the ring.
        let covered: u128 = moves
            .iter()
            .map(|m| crate::ring::range_width(m.start, m.end))
            .sum();
        let share = covered as f64 / 2f64.powi(64);
        assert!(share > 0.5 && share < 0.95, "share {share}");
        // RF 1: nobody else holds the dead node's ranges.
        let (moves, lost) = replace_sources(&tm, &ReplicationStrategy::simple(1), dead, me, &alive);
        assert!(moves.is_empty() && !lost.is_empty());
    }

    #[test]
    fn a_replacement_is_pending_exactly_where_the_dead_node_is_natural() {
        let mut tm = ring(4);
        let s = ReplicationStrategy::simple(3);
        let (dead, new) = (node(2).host_id, node(9));
        tm.add_replacing(new.clone(), dead).expect("replacing");
        assert!(tm.has_pending());
        for (t, _) in tm.ring().to_vec() {
            let natural = s.natural_replicas(&tm, t);
            let pending = tm.pending_replicas_for_token(&s, t);
            assert!(!natural.contains(&new.host_id), "reads never go to it");
            assert_eq!(pending.contains(&new.host_id), natural.contains(&dead));
        }
        // NORMAL with the dead node's tokens once it is gone.
        let tokens = tm.tokens_of(&dead).to_vec();
        assert!(tm.update_normal(new.clone(), &tokens).is_err());
        tm.remove_node(dead);
        tm.update_normal(new, &tokens).expect("normal");
        assert!(!tm.has_pending());
    }

    #[test]
    fn leave_refused_below_replication_factor_and_for_the_last_node() {
        let ks = BTreeMap::from([("ks".to_string(), ReplicationStrategy::simple(3))]);
        let err = check_leave(&ring(3), &ks, node(1).host_id).expect_err("refused");
        assert_eq!(
            err,
            "Not enough live nodes to maintain replication factor in keyspace ks (RF = 3, N = 2). \
             Perform a forceful decommission to ignore."
        );
        assert!(check_leave(&ring(4), &ks, node(1).host_id).is_ok());
        assert!(check_leave(&ring(1), &BTreeMap::new(), node(1).host_id).is_err());
    }
}
