//! Replica placement: Cassandra's SimpleStrategy and NetworkTopologyStrategy,
//! plus pending replicas while nodes join or leave.

use std::collections::{BTreeMap, BTreeSet};

use gyre_common::Token;
use serde::{Deserialize, Serialize};

use crate::ring::{HostId, TokenMetadata};

/// A keyspace's replication strategy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationStrategy {
    /// `rf` distinct nodes walking the ring clockwise, ignoring topology.
    Simple { rf: usize },
    /// Per-datacenter replication factors, spreading replicas over racks.
    NetworkTopology { dcs: BTreeMap<String, usize> },
}

impl ReplicationStrategy {
    pub fn simple(rf: usize) -> Self {
        Self::Simple { rf }
    }

    pub fn network_topology<S: Into<String>>(dcs: impl IntoIterator<Item = (S, usize)>) -> Self {
        Self::NetworkTopology {
            dcs: dcs.into_iter().map(|(d, rf)| (d.into(), rf)).collect(),
        }
    }

    /// Total configured replication factor.
    pub fn replication_factor(&self) -> usize {
        match self {
            Self::Simple { rf } => *rf,
            Self::NetworkTopology { dcs } => dcs.values().sum(),
        }
    }

    /// The natural replicas of `token` over the normal ring, primary first.
    pub fn natural_replicas(&self, tm: &TokenMetadata, token: Token) -> Vec<HostId> {
        match self {
            Self::Simple { rf } => simple_replicas(tm, token, *rf),
            Self::NetworkTopology { dcs } => nts_replicas(tm, token, dcs),
        }
    }
}

fn simple_replicas(tm: &TokenMetadata, token: Token, rf: usize) -> Vec<HostId> {
    let mut out: Vec<HostId> = Vec::with_capacity(rf);
    for (_, h) in tm.ring_walk(token) {
        if out.len() >= rf {
            break;
        }
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// Per-DC fill state, as in Cassandra 4's `DatacenterEndpoints`.
struct DcFill {
    /// Replicas still needed: min(rf, nodes in DC).
    left: usize,
    /// How many replicas may share an already-used rack: rf - racks.
    rack_repeats: isize,
}

/// Cassandra's `NetworkTopologyStrategy.calculateNaturalReplicas`: walk the
/// ring once; in each DC take nodes on racks not seen yet, and accept
/// `rf - racks` nodes on repeated racks in ring order. This yields the same
/// replica set as the older "skipped endpoints" formulation; the order is
/// ring order of acceptance.
fn nts_replicas(tm: &TokenMetadata, token: Token, dcs: &BTreeMap<String, usize>) -> Vec<HostId> {
    let topo = tm.topology();
    let mut fills: BTreeMap<&str, DcFill> = BTreeMap::new();
    for (dc, &rf) in dcs {
        let Some((count, racks)) = topo.get(dc.as_str()) else {
            continue;
        };
        if rf == 0 || *count == 0 {
            continue;
        }
        fills.insert(
            dc,
            DcFill {
                left: rf.min(*count),
                rack_repeats: rf as isize - racks.len() as isize,
            },
        );
    }
    let mut to_fill = fills.len();
    let mut out: Vec<HostId> = Vec::new();
    let mut seen_racks: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (_, h) in tm.ring_walk(token) {
        if to_fill == 0 {
            break;
        }
        let Some(info) = tm.node(&h) else { continue };
        let Some(fill) = fills.get_mut(info.dc.as_str()) else {
            continue;
        };
        if fill.left == 0 || out.contains(&h) {
            continue;
        }
        if !seen_racks.insert((info.dc.as_str(), info.rack.as_str())) {
            if fill.rack_repeats <= 0 {
                continue;
            }
            fill.rack_repeats -= 1;
        }
        out.push(h);
        fill.left -= 1;
        if fill.left == 0 {
            to_fill -= 1;
        }
    }
    out
}

/// The metadata views needed to compute pending replicas (Cassandra's
/// `calculatePendingRanges`, without moves): the ring once every leaving node
/// has gone, and that ring plus each joining node on its own.
struct PendingViews {
    all_left: Option<TokenMetadata>,
    joined: Vec<(HostId, TokenMetadata)>,
    /// Replacements (new, old): the new node is pending wherever the old
    /// one is a natural replica (same tokens, same place).
    replacing: Vec<(HostId, HostId)>,
}

impl PendingViews {
    fn new(tm: &TokenMetadata) -> Self {
        let mut all_left = tm.clone();
        let leaving: Vec<HostId> = tm.leaving().copied().collect();
        for h in &leaving {
            all_left.remove_node(*h);
        }
        let mut joined = Vec::new();
        for (h, tokens) in tm.bootstrapping() {
            let mut view = all_left.clone();
            view.remove_node(*h);
            if let Some(info) = tm.node(h) {
                if view.update_normal(info.clone(), tokens).is_ok() {
                    joined.push((*h, view));
                }
            }
        }
        Self {
            all_left: (!leaving.is_empty()).then_some(all_left),
            joined,
            replacing: tm.replacing().map(|(n, o)| (*n, *o)).collect(),
        }
    }

    fn pending(
        &self,
        strategy: &ReplicationStrategy,
        token: Token,
        current: &[HostId],
    ) -> Vec<HostId> {
        let mut out: Vec<HostId> = Vec::new();
        if let Some(all_left) = &self.all_left {
            for h in strategy.natural_replicas(all_left, token) {
                if !current.contains(&h) && !out.contains(&h) {
                    out.push(h);
                }
            }
        }
        for (h, view) in &self.joined {
            if !current.contains(h)
                && !out.contains(h)
                && strategy.natural_replicas(view, token).contains(h)
            {
                out.push(*h);
            }
        }
        for (new, old) in &self.replacing {
            if current.contains(old) && !current.contains(new) && !out.contains(new) {
                out.push(*new);
            }
        }
        out
    }
}

impl TokenMetadata {
    /// Natural replicas of `token` under `strategy`, primary first.
    pub fn replicas_for_token(&self, strategy: &ReplicationStrategy, token: Token) -> Vec<HostId> {
        strategy.natural_replicas(self, token)
    }

    /// Nodes that are not replicas of `token` now but will be once the
    /// current joins and leaves complete: writes must also go to them.
    pub fn pending_replicas_for_token(
        &self,
        strategy: &ReplicationStrategy,
        token: Token,
    ) -> Vec<HostId> {
        if !self.has_pending() {
            return Vec::new();
        }
        let current = strategy.natural_replicas(self, token);
        PendingViews::new(self).pending(strategy, token, &current)
    }
}

/// One range of a [`ReplicaPlan`]: tokens in `(start, end]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRange {
    pub start: Token,
    pub end: Token,
    pub natural: Vec<HostId>,
    pub pending: Vec<HostId>,
}

/// Natural and pending replicas precomputed per range for one strategy and
/// one ring version; rebuild it whenever the ring changes.
#[derive(Clone, Debug, Default)]
pub struct ReplicaPlan {
    ranges: Vec<PlannedRange>,
}

impl ReplicaPlan {
    pub fn build(tm: &TokenMetadata, strategy: &ReplicationStrategy) -> Self {
        // Every view's tokens are a subset of these, so within one of the
        // resulting ranges every view gives a constant answer.
        let mut bounds: BTreeSet<Token> = tm.ring().iter().map(|(t, _)| *t).collect();
        for (_, ts) in tm.bootstrapping() {
            bounds.extend(ts.iter().copied());
        }
        let views = tm.has_pending().then(|| PendingViews::new(tm));
        let mut ranges = Vec::with_capacity(bounds.len());
        let mut prev = bounds
            .iter()
            .next_back()
            .copied()
            .unwrap_or(gyre_common::MIN_TOKEN);
        for &end in &bounds {
            let natural = strategy.natural_replicas(tm, end);
            let pending = views
                .as_ref()
                .map(|v| v.pending(strategy, end, &natural))
                .unwrap_or_default();
            ranges.push(PlannedRange {
                start: prev,
                end,
                natural,
                pending,
            });
            prev = end;
        }
        Self { ranges }
    }

    fn range(&self, token: Token) -> Option<&PlannedRange> {
        if self.ranges.is_empty() {
            return None;
        }
        let i = self.ranges.partition_point(|r| r.end < token);
        self.ranges.get(if i == self.ranges.len() { 0 } else { i })
    }

    pub fn natural(&self, token: Token) -> &[HostId] {
        self.range(token).map_or(&[], |r| r.natural.as_slice())
    }

    pub fn pending(&self, token: Token) -> &[HostId] {
        self.range(token).map_or(&[], |r| r.pending.as_slice())
    }

    /// Natural replicas followed by pending ones.
    pub fn write_endpoints(&self, token: Token) -> Vec<HostId> {
        self.range(token).map_or_else(Vec::new, |r| {
            r.natural.iter().chain(&r.pending).copied().collect()
        })
    }

    pub fn ranges(&self) -> &[PlannedRange] {
        &self.ranges
    }
}
