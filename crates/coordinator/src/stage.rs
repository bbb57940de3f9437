//! The replica stage: admission for the requests other coordinators send
//! this node as a replica (MUTATION, READ_DATA, READ_DIGEST, READ_RANGE).
//!
//! Two rules, checked before any work is done:
//! - a request already past its deadline is dropped unanswered: its
//!   coordinator has timed out, so applying or reading would be waste
//!   (Cassandra drops such messages too). The deadline comes with the
//!   request ([`gyre_net::Inbound::deadline`], relative to this node's
//!   clock, so skew between nodes does not matter);
//! - at most `max` replica requests run at once (a mutation counts until
//!   its answer is sent, i.e. until it is durable); beyond, the request is
//!   answered with an "overloaded" error at once, which the coordinator
//!   counts as a failed replica, instead of queueing without bound.
//!
//! Both are counted per verb, for `/metrics`. No lock: a counter of
//! requests in flight, released by a permit that the request's
//! [`gyre_net::Responder`] holds until it answers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use gyre_net::{Inbound, Verb};

use crate::messages::{MUTATION, READ_DATA, READ_DIGEST, READ_RANGE};

/// The verbs the stage admits, in the order of its counters.
pub const REPLICA_VERBS: [(Verb, &str); 4] = [
    (MUTATION, "mutation"),
    (READ_DATA, "read_data"),
    (READ_DIGEST, "read_digest"),
    (READ_RANGE, "read_range"),
];

/// Default bound on replica requests in flight on one node.
pub const DEFAULT_MAX_REPLICA_REQUESTS: usize = 4096;

/// Counters of one verb.
#[derive(Debug, Default)]
struct VerbCounters {
    /// Dropped unanswered because they arrived (or waited) past their deadline.
    expired: AtomicU64,
    /// Refused because the stage was full.
    overloaded: AtomicU64,
}

/// Counts of one verb at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageCounts {
    pub expired: u64,
    pub overloaded: u64,
}

/// Admission of replica requests (see the module documentation).
#[derive(Debug)]
pub struct ReplicaStage {
    max: usize,
    in_flight: Arc<AtomicUsize>,
    counters: [VerbCounters; REPLICA_VERBS.len()],
    other: VerbCounters,
}

/// One admitted request's place in the stage, given back when dropped.
#[derive(Debug)]
pub struct StagePermit(Arc<AtomicUsize>);

impl Drop for StagePermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ReplicaStage {
    /// A stage running at most `max` requests at once (at least one).
    pub fn new(max: usize) -> Self {
        ReplicaStage {
            max: max.max(1),
            in_flight: Arc::new(AtomicUsize::new(0)),
            counters: Default::default(),
            other: VerbCounters::default(),
        }
    }

    fn counters(&self, verb: Verb) -> &VerbCounters {
        REPLICA_VERBS
            .iter()
            .position(|(v, _)| *v == verb)
            .and_then(|i| self.counters.get(i))
            .unwrap_or(&self.other)
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Counts of `verb` so far.
    pub fn counts(&self, verb: Verb) -> StageCounts {
        let c = self.counters(verb);
        StageCounts {
            expired: c.expired.load(Ordering::Relaxed),
            overloaded: c.overloaded.load(Ordering::Relaxed),
        }
    }

    /// A place in the stage, or `None` when it is full.
    pub fn try_acquire(&self) -> Option<StagePermit> {
        let mut n = self.in_flight.load(Ordering::Acquire);
        loop {
            if n >= self.max {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                n,
                n + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(StagePermit(self.in_flight.clone())),
                Err(now) => n = now,
            }
        }
    }

    /// Lets `msg` in, or answers it here: `None` when it was past its
    /// deadline (dropped unanswered) or the stage is full (answered with
    /// an error). An admitted request's permit is held by its responder,
    /// so the place is given back once it is answered, however the
    /// handler finishes.
    pub fn admit(&self, verb: Verb, mut msg: Inbound) -> Option<Inbound> {
        let counters = self.counters(verb);
        if msg.is_expired() {
            counters.expired.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(from = %msg.from, %verb, "dropping a replica request past its deadline");
            if let Some(r) = msg.responder.take() {
                r.abandon();
            }
            return None;
        }
        let Some(permit) = self.try_acquire() else {
            counters.overloaded.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(from = %msg.from, %verb, max = self.max, "replica stage full, refusing a request");
            if let Some(r) = msg.responder.take() {
                if let Err(e) = r.respond_error(format!(
                    "overloaded: {} replica requests in flight",
                    self.max
                )) {
                    tracing::debug!(error = %e, "could not answer an overloaded request");
                }
            }
            return None;
        };
        match msg.responder.as_mut() {
            Some(r) => r.hold(permit),
            // A one-way message: nothing to hold the place until.
            None => drop(permit),
        }
        Some(msg)
    }

    /// Appends the stage's counters and gauges to `out` (Prometheus text).
    pub fn render_prometheus(&self, prefix: &str, out: &mut String) {
        use std::fmt::Write as _;
        for (name, help, get) in [
            (
                "dropped_expired_total",
                "Replica requests dropped unanswered because their coordinator's deadline had passed, by verb.",
                (|c: StageCounts| c.expired) as fn(StageCounts) -> u64,
            ),
            (
                "rejected_overloaded_total",
                "Replica requests refused because the replica stage was full, by verb.",
                |c: StageCounts| c.overloaded,
            ),
        ] {
            let _ = writeln!(out, "# HELP {prefix}{name} {help}\n# TYPE {prefix}{name} counter");
            for (verb, label) in REPLICA_VERBS {
                let _ = writeln!(
                    out,
                    "{prefix}{name}{{verb=\"{label}\"}} {}",
                    get(self.counts(verb))
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP {prefix}in_flight Replica requests running now.\n# TYPE {prefix}in_flight gauge\n{prefix}in_flight {}",
            self.in_flight()
        );
        let _ = writeln!(
            out,
            "# HELP {prefix}max_in_flight Bound on replica requests running at once.\n# TYPE {prefix}max_in_flight gauge\n{prefix}max_in_flight {}",
            self.max
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_given_back() {
        let stage = ReplicaStage::new(2);
        let a = stage.try_acquire();
        let b = stage.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(stage.try_acquire().is_none(), "full");
        assert_eq!(stage.in_flight(), 2);
        drop(a);
        assert_eq!(stage.in_flight(), 1);
        let c = stage.try_acquire();
        assert!(c.is_some());
        drop((b, c));
        assert_eq!(stage.in_flight(), 0);
        assert_eq!(ReplicaStage::new(0).max(), 1);
    }

    #[test]
    fn permits_hold_under_contention() {
        let stage = Arc::new(ReplicaStage::new(3));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (stage, peak) = (stage.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(p) = stage.try_acquire() {
                            peak.fetch_max(stage.in_flight(), Ordering::Relaxed);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(stage.in_flight(), 0);
    }

    fn inbound(deadline: Option<std::time::Instant>) -> Inbound {
        Inbound {
            from: "127.0.0.1:7000".parse().expect("address"),
            verb: READ_DATA,
            payload: bytes::Bytes::new(),
            responder: None,
            deadline,
            trace_session: None,
        }
    }

    #[test]
    fn admission_drops_expired_and_refuses_beyond_the_bound() {
        use std::time::{Duration, Instant};
        let stage = ReplicaStage::new(1);
        let past = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .unwrap_or_else(Instant::now);
        assert!(stage.admit(READ_DATA, inbound(Some(past))).is_none());
        let later = Instant::now() + Duration::from_secs(60);
        assert!(stage.admit(READ_DATA, inbound(Some(later))).is_some());
        assert!(stage.admit(READ_DATA, inbound(None)).is_some());
        assert_eq!(
            stage.counts(READ_DATA),
            StageCounts {
                expired: 1,
                overloaded: 0
            }
        );
        // A full stage refuses (the admitted requests above had no
        // responder, so their places were given back at once).
        let held = stage.try_acquire();
        assert!(stage.admit(READ_DIGEST, inbound(Some(later))).is_none());
        assert_eq!(stage.counts(READ_DIGEST).overloaded, 1);
        drop(held);
        assert_eq!(stage.in_flight(), 0);
    }

    #[test]
    fn renders_counters_per_verb() {
        let stage = ReplicaStage::new(8);
        stage
            .counters(MUTATION)
            .expired
            .fetch_add(2, Ordering::Relaxed);
        stage
            .counters(READ_RANGE)
            .overloaded
            .fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            stage.counts(MUTATION),
            StageCounts {
                expired: 2,
                overloaded: 0
            }
        );
        let mut out = String::new();
        stage.render_prometheus("gyre_replica_", &mut out);
        assert!(
            out.contains("gyre_replica_dropped_expired_total{verb=\"mutation\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("gyre_replica_rejected_overloaded_total{verb=\"read_range\"} 1"),
            "{out}"
        );
        assert!(out.contains("gyre_replica_max_in_flight 8"), "{out}");
    }
}
