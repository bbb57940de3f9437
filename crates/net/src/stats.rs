use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

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

/// Live counters of one verb, updated without locks.
#[derive(Default)]
struct VerbCounters {
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    timeouts: AtomicU64,
    remote_errors: AtomicU64,
    completed: AtomicU64,
    latency_total_micros: AtomicU64,
    latency_max_micros: AtomicU64,
}

impl VerbCounters {
    fn snapshot(&self) -> VerbStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VerbStats {
            sent: get(&self.sent),
            received: get(&self.received),
            dropped: get(&self.dropped),
            timeouts: get(&self.timeouts),
            remote_errors: get(&self.remote_errors),
            completed: get(&self.completed),
            latency_total_micros: get(&self.latency_total_micros),
            latency_max_micros: get(&self.latency_max_micros),
        }
    }
}

/// Verbs per page of [`StatsRecorder`]: a verb is a `u16`, so 256 pages
/// of 256 cover them all.
const PAGE: usize = 256;

type Page = [VerbCounters; PAGE];

/// Per-verb counters of a messenger. Every message bumps a few of them, so
/// there is no lock: verbs index a two-level table whose pages are allocated
/// on first use (at most 256 pages of 16 KiB, whatever verbs peers send).
pub(crate) struct StatsRecorder {
    pages: Box<[OnceLock<Box<Page>>]>,
}

impl Default for StatsRecorder {
    fn default() -> Self {
        StatsRecorder {
            pages: (0..PAGE).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl StatsRecorder {
    /// The counters of `verb`.
    fn verb(&self, verb: Verb) -> &VerbCounters {
        let v = usize::from(verb.0);
        let page = self.pages[v / PAGE]
            .get_or_init(|| Box::new(std::array::from_fn(|_| VerbCounters::default())));
        &page[v % PAGE]
    }

    pub(crate) fn sent(&self, verb: Verb) {
        self.verb(verb).sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, verb: Verb) {
        self.verb(verb).received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, verb: Verb) {
        self.verb(verb).dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn timeout(&self, verb: Verb) {
        self.verb(verb).timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remote_error(&self, verb: Verb) {
        self.verb(verb)
            .remote_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn latency(&self, verb: Verb, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let c = self.verb(verb);
        c.completed.fetch_add(1, Ordering::Relaxed);
        // Saturating: the total only overflows after ~584,000 years of latency.
        let _ = c
            .latency_total_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(micros))
            });
        c.latency_max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// Every verb with at least one non-zero counter.
    pub(crate) fn snapshot(&self) -> BTreeMap<Verb, VerbStats> {
        let mut out = BTreeMap::new();
        for (p, page) in self.pages.iter().enumerate() {
            let Some(page) = page.get() else { continue };
            for (i, c) in page.iter().enumerate() {
                let s = c.snapshot();
                if s != VerbStats::default() {
                    // p < 256 and i < 256, so the verb fits in a u16.
                    out.insert(Verb(((p * PAGE) + i) as u16), s);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counters_by_verb() {
        let r = StatsRecorder::default();
        assert!(r.snapshot().is_empty());
        r.sent(Verb(3));
        r.sent(Verb(3));
        r.dropped(Verb(u16::MAX));
        r.latency(Verb(3), Duration::from_micros(10));
        r.latency(Verb(3), Duration::from_micros(30));
        let snap = r.snapshot();
        assert_eq!(snap.len(), 2);
        let v3 = snap[&Verb(3)];
        assert_eq!((v3.sent, v3.completed), (2, 2));
        assert_eq!((v3.latency_total_micros, v3.latency_max_micros), (40, 30));
        assert_eq!(snap[&Verb(u16::MAX)].dropped, 1);
    }
}
