//! Latency histograms, interval lines, error counts and the final report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::OpKind;

/// Histograms count microseconds, 1 µs to 60 s, 3 significant digits.
pub const MAX_LATENCY_US: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// One operation type's histograms: the current interval and the run.
struct OpHistograms {
    interval: Histogram<u64>,
    total: Histogram<u64>,
}

/// Shared by all workers: cheap to record into from many tasks.
pub struct Recorder {
    ops: BTreeMap<OpKind, Mutex<OpHistograms>>,
    errors: Mutex<BTreeMap<String, u64>>,
    error_count: AtomicU64,
    interval_errors: AtomicU64,
    /// Per op kind errors, indexed like `OpKind as usize`.
    kind_errors: [AtomicU64; 2],
    pub checked: AtomicU64,
    pub missing: AtomicU64,
    pub wrong: AtomicU64,
    /// Reads that found no row (without --validate this is not an error).
    pub not_found: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        let mut ops = BTreeMap::new();
        for k in [OpKind::Write, OpKind::Read] {
            ops.insert(
                k,
                Mutex::new(OpHistograms {
                    interval: new_histogram(),
                    total: new_histogram(),
                }),
            );
        }
        Self {
            ops,
            errors: Mutex::default(),
            error_count: AtomicU64::new(0),
            interval_errors: AtomicU64::new(0),
            kind_errors: [AtomicU64::new(0), AtomicU64::new(0)],
            checked: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
            not_found: AtomicU64::new(0),
        }
    }
}

fn kind_index(kind: OpKind) -> usize {
    match kind {
        OpKind::Write => 0,
        OpKind::Read => 1,
    }
}

impl Recorder {
    /// Records a completed operation's latency.
    pub fn record(&self, kind: OpKind, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        if let Some(m) = self.ops.get(&kind) {
            let mut h = m.lock().unwrap_or_else(|e| e.into_inner());
            h.interval.saturating_record(us);
            h.total.saturating_record(us);
        }
    }

    /// Counts a failed operation under its error kind; returns the total.
    pub fn error(&self, kind: OpKind, error_kind: &str) -> u64 {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(error_kind.to_string())
            .or_default() += 1;
        self.interval_errors.fetch_add(1, Ordering::Relaxed);
        self.kind_errors[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
        self.error_count.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn errors_total(&self) -> u64 {
        self.error_count.load(Ordering::Relaxed)
    }

    /// Operations completed so far (successes and errors).
    pub fn completed(&self) -> u64 {
        let ok: u64 = self
            .ops
            .values()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).total.len())
            .sum();
        ok + self.errors_total()
    }

    /// Ends an interval: returns its histograms per kind (reset here) and
    /// its error count.
    pub fn take_interval(&self) -> (BTreeMap<OpKind, Histogram<u64>>, u64) {
        let mut out = BTreeMap::new();
        for (k, m) in &self.ops {
            let mut h = m.lock().unwrap_or_else(|e| e.into_inner());
            let snapshot = h.interval.clone();
            h.interval.reset();
            out.insert(*k, snapshot);
        }
        (out, self.interval_errors.swap(0, Ordering::Relaxed))
    }

    /// The run's totals for a kind.
    pub fn total(&self, kind: OpKind) -> Histogram<u64> {
        self.ops
            .get(&kind)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).total.clone())
            .unwrap_or_else(new_histogram)
    }

    pub fn errors_of(&self, kind: OpKind) -> u64 {
        self.kind_errors[kind_index(kind)].load(Ordering::Relaxed)
    }

    pub fn errors_by_kind(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub min: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                mean: 0.0,
                p50: 0.0,
                p95: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                min: 0.0,
            };
        }
        Self {
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            min: ms(h.min()),
        }
    }
}

/// One progress line.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalLine {
    /// Seconds since the start of the measured run, at the interval's end.
    pub time_s: f64,
    pub ops: u64,
    pub ops_per_s: f64,
    pub errors: u64,
    pub latency_ms: Latency,
}

impl IntervalLine {
    pub fn new(
        time_s: f64,
        length: Duration,
        hists: &BTreeMap<OpKind, Histogram<u64>>,
        errors: u64,
    ) -> Self {
        let mut merged = new_histogram();
        for h in hists.values() {
            // Same bounds everywhere, so adding cannot fail.
            let _ = merged.add(h);
        }
        let ops = merged.len();
        Self {
            time_s,
            ops,
            ops_per_s: ops as f64 / length.as_secs_f64().max(1e-9),
            errors,
            latency_ms: Latency::of(&merged),
        }
    }

    pub const HEADER: &'static str =
        "  time(s)      ops/s   errors   p50(ms)   p95(ms)   p99(ms)  p999(ms)   max(ms)";

    pub fn render(&self) -> String {
        let l = &self.latency_ms;
        format!(
            "{:>9.1} {:>10.0} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            self.time_s, self.ops_per_s, self.errors, l.p50, l.p95, l.p99, l.p999, l.max
        )
    }
}

/// Totals of one operation type (or of all).
#[derive(Debug, Clone, Serialize)]
pub struct OpSummary {
    pub ops: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub latency_ms: Latency,
}

impl OpSummary {
    pub fn new(h: &Histogram<u64>, errors: u64, elapsed: Duration) -> Self {
        Self {
            ops: h.len(),
            errors,
            ops_per_s: h.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            latency_ms: Latency::of(h),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Validation {
    pub checked: u64,
    pub missing: u64,
    pub wrong: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    pub user_s: f64,
    pub system_s: f64,
    /// (user + system) / wall time, in percent of one core.
    pub percent_of_one_core: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    pub requested_ops_per_s: f64,
    /// Completed operations over the elapsed time (last completion).
    pub achieved_ops_per_s: f64,
    pub scheduled_ops: u64,
    /// How long the schedule itself lasts: scheduled_ops / requested.
    pub intended_s: f64,
}

/// The whole run, as printed and as written by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub hosts: Vec<String>,
    pub keyspace: String,
    pub table: String,
    pub consistency: String,
    pub concurrency: usize,
    pub connections: usize,
    pub keys: u64,
    pub distribution: String,
    pub value_size: usize,
    pub columns: usize,
    pub elapsed_s: f64,
    pub total: OpSummary,
    pub ops: BTreeMap<String, OpSummary>,
    pub errors: BTreeMap<String, u64>,
    pub not_found: u64,
    pub rate: Option<RateReport>,
    pub validation: Option<Validation>,
    pub cpu: Cpu,
    pub stopped_early: Option<String>,
    pub intervals: Vec<IntervalLine>,
}

impl Report {
    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "\nResults: {} on {} ({}.{}), CL {}, concurrency {}, {} keys ({}), {} x {} B values\n",
            self.mode,
            self.hosts.join(","),
            self.keyspace,
            self.table,
            self.consistency,
            self.concurrency,
            self.keys,
            self.distribution,
            self.columns,
            self.value_size
        ));
        s.push_str(&format!("  elapsed        {:.2} s\n", self.elapsed_s));
        let mut rows: Vec<(&str, &OpSummary)> =
            self.ops.iter().map(|(k, v)| (k.as_str(), v)).collect();
        if self.ops.len() > 1 {
            rows.push(("total", &self.total));
        }
        s.push_str(
            "  op            ops      ops/s   errors   mean(ms)  p50(ms)  p95(ms)  p99(ms) p999(ms)  max(ms)\n",
        );
        for (name, o) in rows {
            let l = &o.latency_ms;
            s.push_str(&format!(
                "  {name:<7} {:>10} {:>10.0} {:>8} {:>9.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}\n",
                o.ops, o.ops_per_s, o.errors, l.mean, l.p50, l.p95, l.p99, l.p999, l.max
            ));
        }
        if let Some(r) = &self.rate {
            s.push_str(&format!(
                "  rate           requested {:.0}/s, achieved {:.1}/s ({} ops scheduled)\n",
                r.requested_ops_per_s, r.achieved_ops_per_s, r.scheduled_ops
            ));
        }
        if self.errors.is_empty() {
            s.push_str("  errors         none\n");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            s.push_str(&format!("  errors         {}\n", list.join(", ")));
        }
        if self.not_found > 0 && self.validation.is_none() {
            s.push_str(&format!(
                "  not found      {} reads found no row\n",
                self.not_found
            ));
        }
        if let Some(v) = &self.validation {
            s.push_str(&format!(
                "  validation     {} checked, {} missing, {} wrong\n",
                v.checked, v.missing, v.wrong
            ));
        }
        s.push_str(&format!(
            "  client cpu     {:.2} s user, {:.2} s system ({:.0}% of one core)\n",
            self.cpu.user_s, self.cpu.system_s, self.cpu.percent_of_one_core
        ));
        if let Some(why) = &self.stopped_early {
            s.push_str(&format!("  stopped early: {why}\n"));
        }
        s
    }

    /// True if the run should exit non-zero.
    pub fn failed(&self) -> bool {
        self.stopped_early.is_some()
            || self
                .validation
                .as_ref()
                .is_some_and(|v| v.missing > 0 || v.wrong > 0 || v.checked == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_counts_and_intervals_reset() {
        let r = Recorder::default();
        for ms in 1..=100 {
            r.record(OpKind::Write, Duration::from_millis(ms));
        }
        r.record(OpKind::Read, Duration::from_micros(10));
        assert_eq!(r.error(OpKind::Read, "ReadTimeout"), 1);
        assert_eq!(r.completed(), 102);
        let (hists, errors) = r.take_interval();
        assert_eq!(errors, 1);
        let line = IntervalLine::new(1.0, Duration::from_secs(1), &hists, errors);
        assert_eq!(line.ops, 101);
        assert!(
            (line.latency_ms.p50 - 50.0).abs() < 0.5,
            "{:?}",
            line.latency_ms
        );
        assert!((line.latency_ms.max - 100.0).abs() < 0.5);
        let (again, errors) = r.take_interval();
        assert_eq!(errors, 0);
        assert!(again.values().all(|h| h.is_empty()));
        // Totals survive the interval reset.
        assert_eq!(r.total(OpKind::Write).len(), 100);
        assert_eq!(r.errors_of(OpKind::Read), 1);
        assert_eq!(r.errors_by_kind().get("ReadTimeout"), Some(&1));
    }

    #[test]
    fn latency_of_empty_is_zero() {
        assert_eq!(Latency::of(&new_histogram()).p99, 0.0);
    }

    #[test]
    fn report_json_has_percentiles_and_failure_rule() {
        let mut h = new_histogram();
        h.saturating_record(1500);
        let op = OpSummary::new(&h, 0, Duration::from_secs(1));
        let mut report = Report {
            mode: "read".into(),
            hosts: vec!["127.0.0.1".into()],
            keyspace: "ks".into(),
            table: "kv".into(),
            consistency: "ONE".into(),
            concurrency: 1,
            connections: 1,
            keys: 1,
            distribution: "seq".into(),
            value_size: 1,
            columns: 1,
            elapsed_s: 1.0,
            total: op.clone(),
            ops: BTreeMap::from([("read".to_string(), op)]),
            errors: BTreeMap::new(),
            not_found: 0,
            rate: None,
            validation: Some(Validation {
                checked: 1,
                missing: 0,
                wrong: 0,
            }),
            cpu: Cpu {
                user_s: 0.0,
                system_s: 0.0,
                percent_of_one_core: 0.0,
            },
            stopped_early: None,
            intervals: vec![],
        };
        let json = serde_json::to_value(&report).unwrap_or_default();
        assert_eq!(json["ops"]["read"]["latency_ms"]["p50"], 1.5);
        assert!(json["total"]["latency_ms"]["p99"].is_number());
        assert!(!report.failed());
        assert!(report.render().contains("1 checked, 0 missing, 0 wrong"));
        report.validation = Some(Validation {
            checked: 1,
            missing: 1,
            wrong: 0,
        });
        assert!(report.failed());
    }
}
