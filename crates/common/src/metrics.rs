//! Lock-free latency histograms over fixed buckets, rendered in the
//! Prometheus text format. Every layer of the request path records its
//! stage in one (queue wait, plan, coordinator, replica apply, durability
//! wait, socket write); the node's `/metrics` renders them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram buckets, in microseconds (a last bucket,
/// `+Inf`, takes the rest).
pub const BUCKET_BOUNDS_MICROS: [u64; 18] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

const BUCKETS: usize = BUCKET_BOUNDS_MICROS.len() + 1;

/// A latency histogram over fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKET_BOUNDS_MICROS.partition_point(|&b| b < micros);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket, as Prometheus wants them. Buckets are
    /// read one by one, so a snapshot taken while recording may be off by
    /// the samples recorded meanwhile.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS);
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = BUCKET_BOUNDS_MICROS
                .get(i)
                .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            buckets.push((le, cumulative));
        }
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, samples at or below it)`; the last bound
    /// is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// Appends `h` to `out` as the Prometheus histogram `name` (seconds).
pub fn render_histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (le, n) in &h.buckets {
        if le.is_infinite() {
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        } else {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
    }
    let _ = writeln!(
        out,
        "{name}_sum {}\n{name}_count {}",
        h.sum_seconds, h.count
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.record(Duration::from_micros(10));
        h.record(Duration::from_micros(25));
        h.record(Duration::from_micros(26));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets[0], (25e-6, 2));
        assert_eq!(s.buckets[1], (50e-6, 3));
        let at = |le: f64| s.buckets.iter().find(|b| b.0 == le).map(|b| b.1);
        assert_eq!(at(0.0025), Some(3));
        assert_eq!(at(0.005), Some(4));
        assert_eq!(at(10.0), Some(4));
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 5)));
        assert!(
            (s.sum_seconds - 60.003061).abs() < 1e-9,
            "{}",
            s.sum_seconds
        );
    }

    #[test]
    fn renders_cumulative_buckets() {
        let h = Histogram::default();
        h.record(Duration::from_micros(30));
        let mut out = String::new();
        render_histogram(&mut out, "x_seconds", "X.", &h.snapshot());
        assert!(out.contains("# TYPE x_seconds histogram"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.00005\"} 1"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 1"), "{out}");
        assert!(out.contains("x_seconds_count 1"), "{out}");
    }
}
