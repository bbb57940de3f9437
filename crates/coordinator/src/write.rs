//! The write path as a state machine, free of sockets and timers: the
//! caller sends the mutation to every target, feeds acknowledgements and the
//! timeout in, and stores hints for the targets it reports.
//! (Cassandra's `AbstractWriteResponseHandler` and its per-DC variants.)

use std::collections::HashSet;

use gyre_cluster::{HostId, ReplicationStrategy};

use crate::consistency::{AckCounter, ConsistencyLevel, ConsistencyRules, Replica};
use crate::error::{CoordinatorError, Result, WriteType};

/// How a write ended.
#[derive(Debug)]
pub enum WriteOutcome {
    Success,
    /// A `CoordinatorError::WriteTimeout`.
    Timeout(CoordinatorError),
}

impl WriteOutcome {
    pub fn into_result(self) -> Result<()> {
        match self {
            WriteOutcome::Success => Ok(()),
            WriteOutcome::Timeout(e) => Err(e),
        }
    }
}

/// Tracks one write to the natural and pending replicas of a key.
#[derive(Debug)]
pub struct WriteTracker {
    cl: ConsistencyLevel,
    write_type: WriteType,
    targets: Vec<Replica>,
    acked: HashSet<HostId>,
    counter: AckCounter,
    outcome_reported: bool,
}

impl WriteTracker {
    /// `natural` and `pending` are every replica of the key (dead ones
    /// included: they become hint targets); liveness was checked by
    /// [`ConsistencyLevel::assure_sufficient_live`] before.
    pub fn new(
        cl: ConsistencyLevel,
        strategy: &ReplicationStrategy,
        local_dc: &str,
        natural: Vec<Replica>,
        pending: Vec<Replica>,
        write_type: WriteType,
    ) -> Result<Self> {
        cl.validate_for_write()?;
        let counter = AckCounter::new(cl, strategy, local_dc, &pending);
        let mut targets = natural;
        targets.extend(pending);
        Ok(WriteTracker {
            cl,
            write_type,
            targets,
            acked: HashSet::new(),
            counter,
            outcome_reported: false,
        })
    }

    pub fn targets(&self) -> &[Replica] {
        &self.targets
    }

    pub fn block_for(&self) -> usize {
        self.counter.block_for()
    }

    pub fn received(&self) -> usize {
        self.counter.received()
    }

    pub fn is_complete(&self) -> bool {
        self.counter.satisfied()
    }

    /// Records an acknowledgement; returns `Success` the first time the
    /// level is reached. Duplicates and unknown senders are ignored.
    pub fn ack(&mut self, from: HostId) -> Option<WriteOutcome> {
        let Some(r) = self.targets.iter().find(|r| r.host == from) else {
            tracing::debug!(%from, "write ack from a host that is not a target");
            return None;
        };
        if !self.acked.insert(from) {
            return None;
        }
        let dc = r.dc.clone();
        self.counter.add(&dc);
        self.check()
    }

    /// Records that a hint for `target` was durably stored: under ANY that
    /// is enough to succeed even when no replica is alive.
    pub fn hint_stored(&mut self, target: HostId) -> Option<WriteOutcome> {
        if self.cl == ConsistencyLevel::Any && self.targets.iter().any(|r| r.host == target) {
            self.counter.add_any();
            return self.check();
        }
        None
    }

    fn check(&mut self) -> Option<WriteOutcome> {
        if !self.outcome_reported && self.counter.satisfied() {
            self.outcome_reported = true;
            return Some(WriteOutcome::Success);
        }
        None
    }

    /// The deadline passed: success if the level was reached, else a
    /// `WriteTimeout` carrying what was received.
    pub fn timeout(&mut self) -> WriteOutcome {
        self.outcome_reported = true;
        if self.counter.satisfied() {
            WriteOutcome::Success
        } else {
            WriteOutcome::Timeout(CoordinatorError::WriteTimeout {
                consistency: self.cl,
                received: self.counter.received(),
                block_for: self.counter.block_for(),
                write_type: self.write_type,
            })
        }
    }

    /// Targets that have not acknowledged (yet): once the write completes or
    /// times out, these need a hint.
    pub fn hint_targets(&self) -> Vec<HostId> {
        self.targets
            .iter()
            .filter(|r| !self.acked.contains(&r.host))
            .map(|r| r.host)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsistencyLevel::*;

    fn three() -> Vec<Replica> {
        (0..3)
            .map(|_| Replica::new(HostId::new_v4(), "dc1"))
            .collect()
    }

    fn tracker(cl: ConsistencyLevel, r: &[Replica]) -> WriteTracker {
        WriteTracker::new(
            cl,
            &ReplicationStrategy::simple(3),
            "dc1",
            r.to_vec(),
            vec![],
            WriteType::Simple,
        )
        .expect("valid")
    }

    #[test]
    fn quorum_succeeds_on_second_ack_and_hints_the_third() {
        let r = three();
        let mut t = tracker(Quorum, &r);
        assert!(t.ack(r[0].host).is_none());
        assert!(t.ack(r[0].host).is_none(), "duplicate ignored");
        assert!(matches!(t.ack(r[2].host), Some(WriteOutcome::Success)));
        assert!(t.ack(r[1].host).is_none(), "reported once");
        assert_eq!(t.hint_targets(), Vec::<HostId>::new());
        let mut t = tracker(Quorum, &r);
        t.ack(r[0].host);
        t.ack(r[1].host);
        assert_eq!(t.hint_targets(), vec![r[2].host]);
    }

    #[test]
    fn all_times_out_with_counts() {
        let r = three();
        let mut t = tracker(All, &r);
        t.ack(r[0].host);
        t.ack(r[1].host);
        match t.timeout() {
            WriteOutcome::Timeout(CoordinatorError::WriteTimeout {
                consistency,
                received,
                block_for,
                write_type,
            }) => {
                assert_eq!(
                    (consistency, received, block_for, write_type),
                    (All, 2, 3, WriteType::Simple)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.hint_targets(), vec![r[2].host]);
    }

    #[test]
    fn any_succeeds_on_a_stored_hint() {
        let r = three();
        let mut t = tracker(Any, &r);
        assert!(matches!(
            t.hint_stored(r[1].host),
            Some(WriteOutcome::Success)
        ));
        assert_eq!(t.hint_targets().len(), 3);
        let mut one = tracker(One, &r);
        assert!(
            one.hint_stored(r[1].host).is_none(),
            "hints only count for ANY"
        );
    }

    #[test]
    fn pending_replica_must_ack_too() {
        let r = three();
        let p = Replica::new(HostId::new_v4(), "dc1");
        let mut t = WriteTracker::new(
            Quorum,
            &ReplicationStrategy::simple(3),
            "dc1",
            r.clone(),
            vec![p.clone()],
            WriteType::Simple,
        )
        .expect("valid");
        assert_eq!(t.block_for(), 3);
        t.ack(r[0].host);
        assert!(t.ack(r[1].host).is_none());
        assert!(matches!(t.ack(p.host), Some(WriteOutcome::Success)));
    }

    #[test]
    fn local_quorum_ignores_remote_acks() {
        let s = ReplicationStrategy::network_topology([("dc1", 3), ("dc2", 2)]);
        let r: Vec<Replica> = ["dc1", "dc1", "dc1", "dc2", "dc2"]
            .iter()
            .map(|dc| Replica::new(HostId::new_v4(), *dc))
            .collect();
        let mut t = WriteTracker::new(LocalQuorum, &s, "dc1", r.clone(), vec![], WriteType::Batch)
            .expect("valid");
        assert!(t.ack(r[3].host).is_none());
        assert!(t.ack(r[4].host).is_none());
        assert!(t.ack(r[0].host).is_none());
        assert!(matches!(t.ack(r[1].host), Some(WriteOutcome::Success)));
    }

    #[test]
    fn serial_write_is_invalid() {
        let r = three();
        assert!(matches!(
            WriteTracker::new(
                Serial,
                &ReplicationStrategy::simple(3),
                "dc1",
                r,
                vec![],
                WriteType::Simple
            ),
            Err(CoordinatorError::InvalidRequest(_))
        ));
    }
}
