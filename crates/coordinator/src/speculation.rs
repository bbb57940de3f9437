//! Speculative retry: when a read's replicas are slower than usual, ask one
//! more. "Usual" is a percentile of recent replica read latencies, as
//! Cassandra's table option `speculative_retry` says (default `99p`).

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;

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

/// Recent replica read latencies (a sliding window of samples).
#[derive(Debug)]
pub struct LatencyWindow {
    samples: Mutex<VecDeque<Duration>>,
    capacity: usize,
}

/// Before any sample: wait this long before speculating.
const NO_DATA: Duration = Duration::from_millis(50);
/// Never speculate sooner than this: below it, noise rules.
const FLOOR: Duration = Duration::from_millis(2);

impl LatencyWindow {
    pub fn new(capacity: usize) -> Self {
        LatencyWindow {
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
        }
    }

    pub fn record(&self, d: Duration) {
        let mut s = self.samples.lock();
        if s.len() == self.capacity {
            s.pop_front();
        }
        s.push_back(d);
    }

    /// The `p`th percentile of the window (`None` while empty).
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut v: Vec<Duration> = self.samples.lock().iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
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

#[cfg(test)]
mod tests {
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
        assert_eq!(w.threshold(p99), Some(Duration::from_millis(99)));
        // The window slides: old slow samples leave.
        for _ in 0..100 {
            w.record(Duration::from_micros(100));
        }
        assert_eq!(w.threshold(p99), Some(FLOOR));
        assert_eq!(w.threshold(SpeculativeRetry::None), None);
    }
}
