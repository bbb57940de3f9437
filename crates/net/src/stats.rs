use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::transport::{TransportStats, Verb};

/// Counters for one verb.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerbStats {
    /// Messages handed to the transport (requests, responses and one-way).
    pub sent: u64,
    /// Messages received and dispatched (requests, responses and one-way).
    pub received: u64,
    /// Messages lost here: fault rules, full queues, full handler channels, no handler.
    pub dropped: u64,
    /// Requests that got no response in time.
    pub timeouts: u64,
    /// Requests answered with an error by the peer.
    pub remote_errors: u64,
    /// Requests answered successfully; the latency fields cover these.
    pub completed: u64,
    pub latency_total_micros: u64,
    pub latency_max_micros: u64,
}

impl VerbStats {
    pub fn mean_latency(&self) -> Option<Duration> {
        (self.completed > 0)
            .then(|| Duration::from_micros(self.latency_total_micros / self.completed))
    }
}

/// A point-in-time copy of a messenger's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    pub verbs: BTreeMap<Verb, VerbStats>,
    pub transport: TransportStats,
    /// Requests currently waiting for a response.
    pub pending_requests: usize,
}

impl NetStats {
    pub fn verb(&self, verb: Verb) -> VerbStats {
        self.verbs.get(&verb).copied().unwrap_or_default()
    }

    /// Sum over all verbs.
    pub fn total(&self) -> VerbStats {
        self.verbs.values().fold(VerbStats::default(), |mut t, v| {
            t.sent += v.sent;
            t.received += v.received;
            t.dropped += v.dropped;
            t.timeouts += v.timeouts;
            t.remote_errors += v.remote_errors;
            t.completed += v.completed;
            t.latency_total_micros += v.latency_total_micros;
            t.latency_max_micros = t.latency_max_micros.max(v.latency_max_micros);
            t
        })
    }
}

#[derive(Default)]
pub(crate) struct StatsRecorder {
    verbs: Mutex<HashMap<Verb, VerbStats>>,
}

impl StatsRecorder {
    pub(crate) fn update(&self, verb: Verb, f: impl FnOnce(&mut VerbStats)) {
        f(self.verbs.lock().entry(verb).or_default());
    }

    pub(crate) fn latency(&self, verb: Verb, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.update(verb, |s| {
            s.completed += 1;
            s.latency_total_micros = s.latency_total_micros.saturating_add(micros);
            s.latency_max_micros = s.latency_max_micros.max(micros);
        });
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<Verb, VerbStats> {
        self.verbs.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }
}
