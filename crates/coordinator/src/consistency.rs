//! Consistency levels: how many replicas must answer, which ones count, and
//! whether enough are alive to try (Cassandra's `ConsistencyLevel`).

use std::collections::BTreeMap;

use gyre_cluster::{HostId, ReplicationStrategy};

use crate::error::{CoordinatorError, Result};

/// A replica of the key being coordinated, with the datacenter it lives in
/// (LOCAL_* and EACH_QUORUM count per datacenter).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Replica {
    pub host: HostId,
    pub dc: String,
}

impl Replica {
    pub fn new(host: HostId, dc: impl Into<String>) -> Self {
        Replica {
            host,
            dc: dc.into(),
        }
    }
}

/// CQL consistency levels: the one type shared with the protocol crate.
pub use gyre_common::Consistency as ConsistencyLevel;

fn quorum_for(rf: usize) -> usize {
    rf / 2 + 1
}

/// Replication factor of `dc`; a SimpleStrategy has no datacenters, so its
/// whole factor stands in (as Cassandra's `localQuorumFor` does).
fn rf_in_dc(strategy: &ReplicationStrategy, dc: &str) -> usize {
    match strategy {
        ReplicationStrategy::Simple { rf } => *rf,
        ReplicationStrategy::NetworkTopology { dcs } => dcs.get(dc).copied().unwrap_or(0),
    }
}

/// What a consistency level asks of the coordinator: how many replicas
/// answer, which ones count, and which levels a read or write may use.
pub trait ConsistencyRules {
    /// Responses needed from the natural replicas (pending ones add to it on writes).
    fn block_for(&self, strategy: &ReplicationStrategy, local_dc: &str) -> usize;

    /// EACH_QUORUM's quorum in every datacenter that holds replicas.
    fn per_dc_block_for(&self, strategy: &ReplicationStrategy) -> BTreeMap<String, usize>;

    /// True when a response from a replica in `dc` counts toward this level.
    fn counts(&self, local_dc: &str, dc: &str) -> bool;

    /// Fails with `Unavailable` when too few of the replicas are alive to
    /// reach the level. `pending` are live pending replicas of a write (they
    /// raise the bar by their number, and count as alive).
    fn assure_sufficient_live(
        &self,
        strategy: &ReplicationStrategy,
        local_dc: &str,
        live: &[Replica],
        pending: &[Replica],
    ) -> Result<()>;

    /// Levels a plain write may use: serial levels need a conditional update.
    fn validate_for_write(&self) -> Result<()>;

    /// Levels a read may use: ANY is for writes only. SERIAL and
    /// LOCAL_SERIAL read as QUORUM and LOCAL_QUORUM (there is no Paxos yet).
    fn validate_for_read(&self) -> Result<()>;

    /// Picks the replicas a read contacts: `block_for` live ones (local DC
    /// first for datacenter-local levels, a quorum per DC for EACH_QUORUM),
    /// keeping the given order (the caller's proximity order) otherwise.
    fn filter_for_read(
        &self,
        strategy: &ReplicationStrategy,
        local_dc: &str,
        live: &[Replica],
    ) -> Result<Vec<Replica>>;
}

impl ConsistencyRules for ConsistencyLevel {
    fn block_for(&self, strategy: &ReplicationStrategy, local_dc: &str) -> usize {
        match self {
            ConsistencyLevel::Any | ConsistencyLevel::One | ConsistencyLevel::LocalOne => 1,
            ConsistencyLevel::Two => 2,
            ConsistencyLevel::Three => 3,
            ConsistencyLevel::Quorum | ConsistencyLevel::Serial => {
                quorum_for(strategy.replication_factor())
            }
            ConsistencyLevel::All => strategy.replication_factor(),
            ConsistencyLevel::LocalQuorum | ConsistencyLevel::LocalSerial => {
                quorum_for(rf_in_dc(strategy, local_dc))
            }
            ConsistencyLevel::EachQuorum => match strategy {
                ReplicationStrategy::Simple { rf } => quorum_for(*rf),
                ReplicationStrategy::NetworkTopology { .. } => {
                    self.per_dc_block_for(strategy).values().sum()
                }
            },
        }
    }

    fn per_dc_block_for(&self, strategy: &ReplicationStrategy) -> BTreeMap<String, usize> {
        match strategy {
            ReplicationStrategy::NetworkTopology { dcs } => dcs
                .iter()
                .filter(|(_, rf)| **rf > 0)
                .map(|(dc, rf)| (dc.clone(), quorum_for(*rf)))
                .collect(),
            ReplicationStrategy::Simple { .. } => BTreeMap::new(),
        }
    }

    fn counts(&self, local_dc: &str, dc: &str) -> bool {
        !self.is_datacenter_local() || dc == local_dc
    }

    fn assure_sufficient_live(
        &self,
        strategy: &ReplicationStrategy,
        local_dc: &str,
        live: &[Replica],
        pending: &[Replica],
    ) -> Result<()> {
        // A hint satisfies ANY, so it never lacks replicas.
        if *self == ConsistencyLevel::Any {
            return Ok(());
        }
        if is_per_dc(*self, strategy) {
            for (dc, need) in self.per_dc_block_for(strategy) {
                let pend = pending.iter().filter(|r| r.dc == dc).count();
                let alive = live.iter().chain(pending).filter(|r| r.dc == dc).count();
                if alive < need + pend {
                    return Err(unavailable(*self, need + pend, alive));
                }
            }
            return Ok(());
        }
        let counted = |r: &&Replica| self.counts(local_dc, &r.dc);
        let required = self.block_for(strategy, local_dc) + pending.iter().filter(counted).count();
        let alive = live.iter().chain(pending).filter(counted).count();
        if alive < required {
            return Err(unavailable(*self, required, alive));
        }
        Ok(())
    }

    fn validate_for_write(&self) -> Result<()> {
        if self.is_serial() {
            return Err(CoordinatorError::InvalidRequest(format!(
                "{self} is only supported for conditional updates"
            )));
        }
        Ok(())
    }

    fn validate_for_read(&self) -> Result<()> {
        if *self == ConsistencyLevel::Any {
            return Err(CoordinatorError::InvalidRequest(
                "ANY consistency level is only supported for writes".into(),
            ));
        }
        Ok(())
    }

    fn filter_for_read(
        &self,
        strategy: &ReplicationStrategy,
        local_dc: &str,
        live: &[Replica],
    ) -> Result<Vec<Replica>> {
        self.validate_for_read()?;
        self.assure_sufficient_live(strategy, local_dc, live, &[])?;
        if is_per_dc(*self, strategy) {
            let mut out = Vec::new();
            for (dc, need) in self.per_dc_block_for(strategy) {
                out.extend(live.iter().filter(|r| r.dc == dc).take(need).cloned());
            }
            return Ok(out);
        }
        let need = self.block_for(strategy, local_dc);
        let mut ordered: Vec<&Replica> = live.iter().filter(|r| r.dc == local_dc).collect();
        if !self.is_datacenter_local() {
            ordered.extend(live.iter().filter(|r| r.dc != local_dc));
        }
        Ok(ordered.into_iter().take(need).cloned().collect())
    }
}

/// True when EACH_QUORUM applies per datacenter (only meaningful with
/// NetworkTopologyStrategy; with SimpleStrategy it is plain QUORUM).
fn is_per_dc(cl: ConsistencyLevel, strategy: &ReplicationStrategy) -> bool {
    cl == ConsistencyLevel::EachQuorum
        && matches!(strategy, ReplicationStrategy::NetworkTopology { .. })
}

fn unavailable(cl: ConsistencyLevel, required: usize, alive: usize) -> CoordinatorError {
    CoordinatorError::Unavailable {
        consistency: cl,
        required,
        alive,
    }
}

/// Counts acknowledgements toward a level, per datacenter where it matters.
#[derive(Clone, Debug)]
pub(crate) struct AckCounter {
    cl: ConsistencyLevel,
    local_dc: String,
    /// Per-DC requirement for EACH_QUORUM, else one entry under "".
    needed: BTreeMap<String, usize>,
    got: BTreeMap<String, usize>,
    per_dc: bool,
}

impl AckCounter {
    /// `pending` replicas raise the requirement in their datacenter.
    pub(crate) fn new(
        cl: ConsistencyLevel,
        strategy: &ReplicationStrategy,
        local_dc: &str,
        pending: &[Replica],
    ) -> Self {
        let per_dc = is_per_dc(cl, strategy);
        let needed = if per_dc {
            let mut m = cl.per_dc_block_for(strategy);
            for r in pending {
                if let Some(n) = m.get_mut(&r.dc) {
                    *n += 1;
                }
            }
            m
        } else {
            // ANY is met by any ack or hint, pending replicas or not.
            let pend = if cl == ConsistencyLevel::Any {
                0
            } else {
                pending
                    .iter()
                    .filter(|r| cl.counts(local_dc, &r.dc))
                    .count()
            };
            BTreeMap::from([(String::new(), cl.block_for(strategy, local_dc) + pend)])
        };
        AckCounter {
            cl,
            local_dc: local_dc.to_string(),
            needed,
            got: BTreeMap::new(),
            per_dc,
        }
    }

    /// Records one response from a replica in `dc`.
    pub(crate) fn add(&mut self, dc: &str) {
        if self.per_dc {
            if self.needed.contains_key(dc) {
                *self.got.entry(dc.to_string()).or_default() += 1;
            }
        } else if self.cl.counts(&self.local_dc, dc) {
            *self.got.entry(String::new()).or_default() += 1;
        }
    }

    /// Records a response that counts regardless of where it came from (a
    /// stored hint for ANY).
    pub(crate) fn add_any(&mut self) {
        *self.got.entry(String::new()).or_default() += 1;
    }

    pub(crate) fn satisfied(&self) -> bool {
        self.needed
            .iter()
            .all(|(dc, n)| self.got.get(dc).copied().unwrap_or(0) >= *n)
    }

    pub(crate) fn block_for(&self) -> usize {
        self.needed.values().sum()
    }

    /// Counted responses, capped per DC at what is needed there.
    pub(crate) fn received(&self) -> usize {
        self.needed
            .iter()
            .map(|(dc, n)| self.got.get(dc).copied().unwrap_or(0).min(*n))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsistencyLevel::*;

    const ALL_LEVELS: [ConsistencyLevel; 11] = [
        Any,
        One,
        Two,
        Three,
        Quorum,
        All,
        LocalOne,
        LocalQuorum,
        EachQuorum,
        Serial,
        LocalSerial,
    ];

    fn nts() -> ReplicationStrategy {
        ReplicationStrategy::network_topology([("dc1", 3), ("dc2", 2)])
    }

    fn replicas(dc1: usize, dc2: usize) -> Vec<Replica> {
        (0..dc1)
            .map(|_| Replica::new(HostId::new_v4(), "dc1"))
            .chain((0..dc2).map(|_| Replica::new(HostId::new_v4(), "dc2")))
            .collect()
    }

    #[test]
    fn block_for_simple_rf3() {
        let s = ReplicationStrategy::simple(3);
        let want = [1, 1, 2, 3, 2, 3, 1, 2, 2, 2, 2];
        for (cl, w) in ALL_LEVELS.iter().zip(want) {
            assert_eq!(cl.block_for(&s, "dc1"), w, "{cl}");
        }
    }

    #[test]
    fn block_for_nts_3_2() {
        let s = nts();
        // Hand-computed: total RF 5 -> quorum 3; dc1 quorum 2, dc2 quorum 2.
        let from_dc1 = [1, 1, 2, 3, 3, 5, 1, 2, 4, 3, 2];
        let from_dc2 = [1, 1, 2, 3, 3, 5, 1, 2, 4, 3, 2];
        for (i, cl) in ALL_LEVELS.iter().enumerate() {
            assert_eq!(cl.block_for(&s, "dc1"), from_dc1[i], "{cl} dc1");
            assert_eq!(cl.block_for(&s, "dc2"), from_dc2[i], "{cl} dc2");
        }
        // A DC without replicas: LOCAL_QUORUM needs one it can never have.
        assert_eq!(LocalQuorum.block_for(&s, "dc3"), 1);
    }

    #[test]
    fn unavailable_counts_local_replicas_only_for_local_levels() {
        let s = nts();
        // dc1 has 1 live of 3, dc2 has 2 live of 2.
        let live = replicas(1, 2);
        assert!(Quorum.assure_sufficient_live(&s, "dc1", &live, &[]).is_ok());
        match LocalQuorum.assure_sufficient_live(&s, "dc1", &live, &[]) {
            Err(CoordinatorError::Unavailable {
                consistency,
                required,
                alive,
            }) => {
                assert_eq!((consistency, required, alive), (LocalQuorum, 2, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(LocalQuorum
            .assure_sufficient_live(&s, "dc2", &live, &[])
            .is_ok());
        assert!(LocalOne
            .assure_sufficient_live(&s, "dc1", &live, &[])
            .is_ok());
        match EachQuorum.assure_sufficient_live(&s, "dc2", &live, &[]) {
            Err(CoordinatorError::Unavailable {
                required, alive, ..
            }) => assert_eq!((required, alive), (2, 1)),
            other => panic!("{other:?}"),
        }
        match All.assure_sufficient_live(&s, "dc1", &live, &[]) {
            Err(CoordinatorError::Unavailable {
                required, alive, ..
            }) => assert_eq!((required, alive), (5, 3)),
            other => panic!("{other:?}"),
        }
        assert!(Any.assure_sufficient_live(&s, "dc1", &[], &[]).is_ok());
        assert!(One.assure_sufficient_live(&s, "dc1", &[], &[]).is_err());
    }

    #[test]
    fn pending_replicas_raise_the_bar() {
        let s = ReplicationStrategy::simple(3);
        let live = replicas(2, 0);
        let pending = replicas(0, 0);
        assert!(Quorum
            .assure_sufficient_live(&s, "dc1", &live, &pending)
            .is_ok());
        let pending = replicas(1, 0);
        // Needs 2 + 1 pending = 3; alive 2 + 1 pending = 3.
        assert!(Quorum
            .assure_sufficient_live(&s, "dc1", &live, &pending)
            .is_ok());
        let c = AckCounter::new(Quorum, &s, "dc1", &pending);
        assert_eq!(c.block_for(), 3);
    }

    #[test]
    fn ack_counter_per_dc() {
        let s = nts();
        let mut c = AckCounter::new(EachQuorum, &s, "dc1", &[]);
        for _ in 0..3 {
            c.add("dc1");
        }
        assert!(!c.satisfied());
        assert_eq!(c.received(), 2);
        c.add("dc2");
        c.add("dc2");
        assert!(c.satisfied());
        let mut l = AckCounter::new(LocalQuorum, &s, "dc1", &[]);
        l.add("dc2");
        l.add("dc2");
        assert!(!l.satisfied());
        l.add("dc1");
        l.add("dc1");
        assert!(l.satisfied());
    }

    #[test]
    fn read_and_write_validation() {
        assert!(Any.validate_for_read().is_err());
        assert!(Serial.validate_for_write().is_err());
        assert!(Serial.validate_for_read().is_ok());
        let s = nts();
        let live = replicas(3, 2);
        let picked = LocalQuorum.filter_for_read(&s, "dc2", &live).expect("ok");
        assert_eq!(picked.len(), 2);
        assert!(picked.iter().all(|r| r.dc == "dc2"));
        let picked = Quorum.filter_for_read(&s, "dc2", &live).expect("ok");
        assert_eq!(picked.len(), 3);
        assert_eq!(picked.iter().filter(|r| r.dc == "dc2").count(), 2);
        let picked = EachQuorum.filter_for_read(&s, "dc1", &live).expect("ok");
        assert_eq!(picked.len(), 4);
    }
}
