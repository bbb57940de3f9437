//! Lock-free latency histograms over fixed buckets, rendered in the
//! Prometheus text format. Every layer of the request path records its
//! stage in one (queue wait, plan, coordinator, replica apply, durability
//! wait, socket write); the node's `/metrics` renders them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Records the time from its creation to its drop in a [`Histogram`]: put
/// at the top of an async function, it times every way out of it.
#[must_use = "the timer records when dropped"]
pub struct Timer<'a> {
    histogram: &'a Histogram,
    started: std::time::Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.record(self.started.elapsed());
    }
}

impl Histogram {
    /// A timer recording into this histogram when dropped.
    pub fn start_timer(&self) -> Timer<'_> {
        Timer {
            histogram: self,
            started: std::time::Instant::now(),
        }
    }

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

/// Sub-buckets per power of two in a [`WindowedHistogram`]: a value is
/// known to within 1/8 (12.5%).
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Largest value a [`WindowedHistogram`] tells apart (µs, about 134 s);
/// larger ones count as it.
const WINDOWED_MAX_MICROS: u64 = (1 << 27) - 1;
const WINDOWED_BUCKETS: usize = windowed_index(WINDOWED_MAX_MICROS) + 1;

/// The bucket of `micros` (log-linear: exact below [`SUB`], then `SUB`
/// buckets per power of two).
const fn windowed_index(micros: u64) -> usize {
    let v = if micros > WINDOWED_MAX_MICROS {
        WINDOWED_MAX_MICROS
    } else {
        micros
    };
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    (SUB * shift as u64 + (v >> shift)) as usize
}

/// The largest value (µs) in bucket `i`.
const fn windowed_upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let mantissa = i - SUB * shift;
    ((mantissa + 1) << shift) - 1
}

#[derive(Debug)]
struct Window {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
}

impl Window {
    fn new() -> Self {
        Window {
            buckets: (0..WINDOWED_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }

    fn clear(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
    }
}

/// Percentiles of the recent samples, without a lock: two fine-grained
/// log-linear histograms (values to within 12.5%), one taking samples and
/// the other holding the previous ones; once the current one has
/// `per_window` samples, the older is cleared and takes its place. So a
/// percentile covers the last `per_window` to `2 × per_window` samples.
///
/// Recording is two atomic additions; a percentile walks both windows
/// (a few hundred atomic loads). Samples recorded during a swap may land in
/// the window being cleared and be lost: this is a statistic.
#[derive(Debug)]
pub struct WindowedHistogram {
    windows: [Window; 2],
    /// Which window takes samples (only its low bit matters).
    current: AtomicUsize,
    per_window: u64,
}

impl WindowedHistogram {
    pub fn new(per_window: u64) -> Self {
        WindowedHistogram {
            windows: [Window::new(), Window::new()],
            current: AtomicUsize::new(0),
            per_window: per_window.max(1),
        }
    }

    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let cur = self.current.load(Ordering::Acquire);
        let w = &self.windows[cur & 1];
        w.buckets[windowed_index(micros)].fetch_add(1, Ordering::Relaxed);
        // Exactly one recorder sees the count reach the window's size.
        if w.count.fetch_add(1, Ordering::AcqRel) + 1 == self.per_window {
            self.windows[(cur + 1) & 1].clear();
            self.current.store(cur.wrapping_add(1), Ordering::Release);
        }
    }

    /// Samples currently counted (both windows).
    pub fn len(&self) -> u64 {
        self.windows
            .iter()
            .map(|w| w.count.load(Ordering::Relaxed))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `p`th percentile (0 < p ≤ 100) of the recent samples, as the
    /// upper bound of its bucket (`None` while empty).
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut counts = [0u64; WINDOWED_BUCKETS];
        let mut total = 0u64;
        for w in &self.windows {
            for (c, b) in counts.iter_mut().zip(w.buckets.iter()) {
                let n = b.load(Ordering::Relaxed);
                *c += n;
                total += n;
            }
        }
        if total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * total as f64).ceil().clamp(1.0, total as f64) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(windowed_upper(i)));
            }
        }
        Some(Duration::from_micros(WINDOWED_MAX_MICROS))
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
    fn windowed_buckets_are_contiguous_and_within_an_eighth() {
        let mut last = None;
        for v in (0..5_000u64).chain((13..27).map(|s| (1u64 << s) + 3)) {
            let i = windowed_index(v);
            assert!(windowed_upper(i) >= v, "{v} above its bucket {i}");
            if i > 0 {
                assert!(windowed_upper(i - 1) < v, "{v} fits bucket {}", i - 1);
            }
            assert!(windowed_upper(i) - v <= v / 8, "{v}: {}", windowed_upper(i));
            if let Some(l) = last {
                assert!(i >= l);
            }
            last = Some(i);
        }
        assert_eq!(windowed_index(u64::MAX), WINDOWED_BUCKETS - 1);
        assert_eq!(windowed_upper(WINDOWED_BUCKETS - 1), WINDOWED_MAX_MICROS);
    }

    #[test]
    fn windowed_percentiles_cover_the_recent_samples() {
        let h = WindowedHistogram::new(100);
        assert_eq!(h.percentile(99.0), None);
        for us in 1..=100 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.percentile(50.0), Some(Duration::from_micros(51)));
        assert_eq!(h.percentile(100.0), Some(Duration::from_micros(103)));
        // The first window is full: it becomes the previous one and still counts.
        assert_eq!(h.len(), 100);
        for _ in 0..99 {
            h.record(Duration::from_millis(10));
        }
        assert_eq!(h.len(), 199);
        assert_eq!(h.percentile(1.0), Some(Duration::from_micros(2)));
        // One more fills the second window: the first (fast samples) is gone.
        h.record(Duration::from_millis(10));
        assert_eq!(h.len(), 100);
        let p1 = h.percentile(1.0).expect("samples");
        assert!(p1 >= Duration::from_millis(10) && p1 <= Duration::from_micros(11_250));
    }

    #[test]
    fn windowed_histogram_records_concurrently() {
        let h = std::sync::Arc::new(WindowedHistogram::new(1_000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(Duration::from_micros(100 + i % 100));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let n = h.len();
        assert!((1_000..=2_100).contains(&n), "{n}");
        let p = h.percentile(99.0).expect("samples");
        assert!(
            p >= Duration::from_micros(190) && p <= Duration::from_micros(230),
            "{p:?}"
        );
    }

    #[test]
    fn a_timer_records_once_when_dropped() {
        let h = Histogram::default();
        drop(h.start_timer());
        assert_eq!(h.snapshot().count, 1);
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
