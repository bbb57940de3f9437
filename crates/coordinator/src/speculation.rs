//! Speculative retry: when a read's replicas are slower than usual, ask one
//! more. "Usual" is a percentile of recent replica read latencies, as
//! Cassandra's table option `speculative_retry` says (default `99p`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use gyre_cluster::HostId;
use gyre_common::metrics::WindowedHistogram;

/// A table's `speculative_retry` policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SpeculativeRetry {
    /// Never ask an extra replica.
    None,
    /// Ask one extra replica right away.
    Always,
    /// Ask once a read takes longer than this percentile of recent reads.
    Percentile(f64),
    /// Ask once a read takes longer than this.
    Fixed(Duration),
}

impl Default for SpeculativeRetry {
    fn default() -> Self {
        SpeculativeRetry::Percentile(99.0)
    }
}

impl SpeculativeRetry {
    /// Parses Cassandra's forms: `NONE`, `ALWAYS`, `99p`, `99PERCENTILE`,
    /// `50ms`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim().to_ascii_lowercase();
        let pct = |n: &str| {
            n.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| *p > 0.0 && *p < 100.0)
                .map(SpeculativeRetry::Percentile)
        };
        match t.as_str() {
            "none" => Some(SpeculativeRetry::None),
            "always" => Some(SpeculativeRetry::Always),
            _ => {
                if let Some(n) = t.strip_suffix("percentile") {
                    pct(n)
                } else if let Some(n) = t.strip_suffix("ms") {
                    n.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|ms| *ms >= 0.0)
                        .map(|ms| SpeculativeRetry::Fixed(Duration::from_secs_f64(ms / 1000.0)))
                } else if let Some(n) = t.strip_suffix('p') {
                    pct(n)
                } else {
                    None
                }
            }
        }
    }
}

/// Recent replica read latencies: the last `capacity` to `2 × capacity`
/// samples in a lock-free windowed histogram (percentiles to within 12.5%,
/// rounded up), so that recording a response takes no lock and computing
/// a threshold sorts nothing.
#[derive(Debug)]
pub struct LatencyWindow {
    samples: WindowedHistogram,
}

/// Before any sample: wait this long before speculating.
const NO_DATA: Duration = Duration::from_millis(50);
/// Never speculate sooner than this: below it, noise rules.
const FLOOR: Duration = Duration::from_millis(2);

impl LatencyWindow {
    pub fn new(capacity: usize) -> Self {
        LatencyWindow {
            samples: WindowedHistogram::new(capacity as u64),
        }
    }

    pub fn record(&self, d: Duration) {
        self.samples.record(d);
    }

    /// The `p`th percentile of the window, rounded up to its bucket's
    /// bound (`None` while empty).
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        self.samples.percentile(p)
    }

    /// How long a read may wait before an extra replica is asked (`None`:
    /// never).
    pub fn threshold(&self, policy: SpeculativeRetry) -> Option<Duration> {
        match policy {
            SpeculativeRetry::None => None,
            SpeculativeRetry::Always => Some(Duration::ZERO),
            SpeculativeRetry::Fixed(d) => Some(d),
            SpeculativeRetry::Percentile(p) => {
                Some(self.percentile(p).map_or(NO_DATA, |d| d.max(FLOOR)))
            }
        }
    }
}

/// Per replica, an exponentially weighted moving average of its read
/// latency (µs, an `f64` in an atomic): a snapshot map, extended (copied)
/// only when a host is first measured, so that recording and ordering
/// replicas take no lock.
#[derive(Default)]
pub(crate) struct HostLatencies {
    by_host: ArcSwap<HashMap<HostId, Arc<AtomicU64>>>,
}

pub(crate) type LatencyMap = Arc<HashMap<HostId, Arc<AtomicU64>>>;

impl HostLatencies {
    /// Weight of a new sample in the average.
    const ALPHA: f64 = 0.2;

    pub(crate) fn record(&self, host: HostId, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        if let Some(avg) = self.by_host.load().get(&host) {
            // Never fails: the closure always answers Some.
            let _ = avg.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let old = f64::from_bits(bits);
                Some(((1.0 - Self::ALPHA) * old + Self::ALPHA * us).to_bits())
            });
            return;
        }
        // First sample of this host: the only time the map is copied.
        self.by_host.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.entry(host)
                .or_insert_with(|| Arc::new(AtomicU64::new(us.to_bits())));
            m
        });
    }

    pub(crate) fn snapshot(&self) -> LatencyMap {
        self.by_host.load_full()
    }

    pub(crate) fn get(map: &LatencyMap, host: HostId) -> Option<f64> {
        map.get(&host)
            .map(|a| f64::from_bits(a.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_cassandra_forms() {
        assert_eq!(
            SpeculativeRetry::parse("99p"),
            Some(SpeculativeRetry::Percentile(99.0))
        );
        assert_eq!(
            SpeculativeRetry::parse("95PERCENTILE"),
            Some(SpeculativeRetry::Percentile(95.0))
        );
        assert_eq!(
            SpeculativeRetry::parse("50ms"),
            Some(SpeculativeRetry::Fixed(Duration::from_millis(50)))
        );
        assert_eq!(
            SpeculativeRetry::parse("NONE"),
            Some(SpeculativeRetry::None)
        );
        assert_eq!(
            SpeculativeRetry::parse("ALWAYS"),
            Some(SpeculativeRetry::Always)
        );
        assert_eq!(SpeculativeRetry::parse("fast"), None);
        assert_eq!(SpeculativeRetry::parse("100p"), None);
    }

    #[test]
    fn threshold_follows_the_window() {
        let w = LatencyWindow::new(100);
        let p99 = SpeculativeRetry::Percentile(99.0);
        assert_eq!(w.threshold(p99), Some(NO_DATA));
        for ms in 1..=100 {
            w.record(Duration::from_millis(ms));
        }
        // The 99th of 100 samples is 99 ms; the histogram rounds it up by
        // less than an eighth.
        let t = w.threshold(p99).unwrap();
        assert!(
            t >= Duration::from_millis(99) && t <= Duration::from_micros(99_000 * 9 / 8),
            "{t:?}"
        );
        let median = w.percentile(50.0).unwrap();
        assert!(
            median >= Duration::from_millis(50) && median <= Duration::from_micros(50_000 * 9 / 8),
            "{median:?}"
        );
        // The window slides: old slow samples leave.
        for _ in 0..100 {
            w.record(Duration::from_micros(100));
        }
        assert_eq!(w.threshold(p99), Some(FLOOR));
        assert_eq!(w.threshold(SpeculativeRetry::None), None);
        assert_eq!(w.threshold(SpeculativeRetry::Always), Some(Duration::ZERO));
        let fixed = SpeculativeRetry::Fixed(Duration::from_millis(7));
        assert_eq!(w.threshold(fixed), Some(Duration::from_millis(7)));
    }

    #[test]
    fn host_latencies_are_moving_averages() {
        let lat = HostLatencies::default();
        let (a, b) = (HostId::from_u128(1), HostId::from_u128(2));
        assert_eq!(HostLatencies::get(&lat.snapshot(), a), None);
        lat.record(a, Duration::from_micros(1_000));
        let before = lat.snapshot();
        lat.record(a, Duration::from_micros(2_000));
        lat.record(b, Duration::from_micros(500));
        let now = lat.snapshot();
        let avg = HostLatencies::get(&now, a).unwrap();
        assert!((avg - 1_200.0).abs() < 1e-6, "{avg}");
        assert_eq!(HostLatencies::get(&now, b), Some(500.0));
        // An older snapshot shares the averages of the hosts it knew.
        assert!((HostLatencies::get(&before, a).unwrap() - 1_200.0).abs() < 1e-6);
        assert_eq!(HostLatencies::get(&before, b), None);
    }
}
