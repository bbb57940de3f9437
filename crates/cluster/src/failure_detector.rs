//! Phi-accrual failure detector, as in Cassandra's `FailureDetector`.
//!
//! Each endpoint keeps a bounded window of heartbeat inter-arrival times.
//! Assuming exponentially distributed arrivals, `phi = elapsed / mean / ln 10`
//! (Cassandra's `PHI_FACTOR`); the endpoint is convicted when phi exceeds the
//! threshold. Intervals longer than `max_interval_ms` are not learned, so an
//! outage does not teach the detector to be patient.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// `1 / ln(10)`: converts the exponential model's `-ln(P)` into `-log10(P)`.
pub const PHI_FACTOR: f64 = 1.0 / std::f64::consts::LN_10;

#[derive(Clone, Debug, PartialEq)]
pub struct FailureDetectorConfig {
    /// Convict when phi exceeds this (Cassandra's `phi_convict_threshold`).
    pub phi_convict_threshold: f64,
    /// Samples kept per endpoint.
    pub window_size: usize,
    /// First sample of a new window (Cassandra: two gossip intervals).
    pub initial_interval_ms: u64,
    /// Longer intervals are ignored (Cassandra's `fd_max_interval_ms`).
    pub max_interval_ms: u64,
}

impl Default for FailureDetectorConfig {
    fn default() -> Self {
        Self {
            phi_convict_threshold: 8.0,
            window_size: 1000,
            initial_interval_ms: 2000,
            max_interval_ms: 2000,
        }
    }
}

#[derive(Clone, Debug)]
struct ArrivalWindow {
    last: u64,
    intervals: VecDeque<u64>,
    sum: u64,
}

impl ArrivalWindow {
    fn new(now: u64, cfg: &FailureDetectorConfig) -> Self {
        let mut w = Self {
            last: now,
            intervals: VecDeque::new(),
            sum: 0,
        };
        w.push(cfg.initial_interval_ms, cfg);
        w
    }

    fn push(&mut self, interval: u64, cfg: &FailureDetectorConfig) {
        if self.intervals.len() >= cfg.window_size.max(1) {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old;
            }
        }
        self.intervals.push_back(interval);
        self.sum += interval;
    }

    fn add(&mut self, now: u64, cfg: &FailureDetectorConfig) {
        let interval = now.saturating_sub(self.last);
        if interval <= cfg.max_interval_ms {
            self.push(interval, cfg);
        }
        self.last = self.last.max(now);
    }

    fn mean(&self) -> f64 {
        let n = self.intervals.len().max(1) as f64;
        (self.sum as f64 / n).max(1.0)
    }

    fn phi(&self, now: u64) -> f64 {
        PHI_FACTOR * now.saturating_sub(self.last) as f64 / self.mean()
    }
}

/// Per-endpoint phi-accrual detector; time is caller-supplied milliseconds.
#[derive(Clone, Debug)]
pub struct FailureDetector<K> {
    cfg: FailureDetectorConfig,
    windows: HashMap<K, ArrivalWindow>,
}

impl<K: Eq + Hash + Clone> FailureDetector<K> {
    pub fn new(cfg: FailureDetectorConfig) -> Self {
        Self {
            cfg,
            windows: HashMap::new(),
        }
    }

    pub fn config(&self) -> &FailureDetectorConfig {
        &self.cfg
    }

    /// Records a sign of life (a heartbeat or a newer version) from `ep`.
    pub fn report(&mut self, ep: &K, now: u64) {
        match self.windows.get_mut(ep) {
            Some(w) => w.add(now, &self.cfg),
            None => {
                self.windows
                    .insert(ep.clone(), ArrivalWindow::new(now, &self.cfg));
            }
        }
    }

    /// Current phi of `ep` (already scaled by [`PHI_FACTOR`]); `None` if never reported.
    pub fn phi(&self, ep: &K, now: u64) -> Option<f64> {
        self.windows.get(ep).map(|w| w.phi(now))
    }

    /// True when `ep` should be convicted (considered down) at `now`.
    pub fn interpret(&self, ep: &K, now: u64) -> bool {
        self.phi(ep, now)
            .is_some_and(|phi| phi > self.cfg.phi_convict_threshold)
    }

    /// Mean inter-arrival time learned for `ep`, in milliseconds.
    pub fn mean_interval(&self, ep: &K) -> Option<f64> {
        self.windows.get(ep).map(ArrivalWindow::mean)
    }

    /// Forgets `ep` (e.g. after a restart, to relearn its intervals).
    pub fn remove(&mut self, ep: &K) {
        self.windows.remove(ep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convicts_after_silence_and_recovers() {
        let mut fd = FailureDetector::new(FailureDetectorConfig::default());
        let ep = 1u32;
        assert!(!fd.interpret(&ep, 0));
        for t in 0..=100u64 {
            fd.report(&ep, t * 1000);
        }
        let last = 100_000;
        // Mean is ~1 s, so conviction needs 8 * ln(10) ~ 18.4 s of silence.
        assert!(!fd.interpret(&ep, last + 18_000));
        assert!(fd.interpret(&ep, last + 19_000));
        let phi = fd.phi(&ep, last + 10_000).expect("known endpoint");
        assert!((phi - 10_000.0 / fd.mean_interval(&ep).expect("known") * PHI_FACTOR).abs() < 1e-9);
        // The long gap is not learned; a resumed heartbeat clears the suspicion.
        fd.report(&ep, last + 30_000);
        assert!(!fd.interpret(&ep, last + 31_000));
        assert!(fd.mean_interval(&ep).expect("known") < 1100.0);
    }

    #[test]
    fn window_is_bounded() {
        let cfg = FailureDetectorConfig {
            window_size: 3,
            ..Default::default()
        };
        let mut fd = FailureDetector::new(cfg);
        for t in [0, 100, 200, 300, 400] {
            fd.report(&"a", t);
        }
        assert_eq!(fd.mean_interval(&"a"), Some(100.0));
        fd.remove(&"a");
        assert_eq!(fd.phi(&"a", 1000), None);
    }
}
