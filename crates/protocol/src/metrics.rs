//! What the server measures: counters, gauges and latency histograms, all
//! plain atomics (fixed buckets), so recording takes no lock.
//!
//! The node renders a [`ServerMetrics::snapshot`] in its Prometheus
//! `/metrics`; keep a clone of `ServerConfig::metrics` to read it.

use std::sync::atomic::{AtomicU64, Ordering};

pub use gyre_common::metrics::{Histogram, HistogramSnapshot, BUCKET_BOUNDS_MICROS};

/// The server's metrics, shared by every connection.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// From a request's arrival (its frame decoded) to the start of its
    /// execution: waiting for a node-wide execution slot.
    pub(crate) queue_wait: Histogram,
    /// The handler's execution time.
    pub(crate) execute: Histogram,
    /// One socket write (and flush) of a batch of responses.
    pub(crate) socket_write: Histogram,
    pub(crate) requests: AtomicU64,
    pub(crate) completed_inline: AtomicU64,
    pub(crate) overloaded_queue_full: AtomicU64,
    pub(crate) overloaded_queue_timeout: AtomicU64,
    pub(crate) executing: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) write_batches: AtomicU64,
    pub(crate) frames_written: AtomicU64,
}

/// [`ServerMetrics`] read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerMetricsSnapshot {
    /// Requests handed to the request handler's path (QUERY, PREPARE,
    /// EXECUTE, BATCH), including those answered Overloaded.
    pub requests: u64,
    /// Requests whose handler finished on its first poll, without a task.
    pub completed_inline: u64,
    /// Answered Overloaded because the wait queue was full.
    pub overloaded_queue_full: u64,
    /// Answered Overloaded after waiting the whole queue timeout.
    pub overloaded_queue_timeout: u64,
    /// Requests executing now.
    pub executing: u64,
    /// Requests waiting for an execution slot now.
    pub queued: u64,
    /// Socket writes of response batches.
    pub write_batches: u64,
    /// Frames written (responses and events).
    pub frames_written: u64,
    pub queue_wait: HistogramSnapshot,
    pub execute: HistogramSnapshot,
    pub socket_write: HistogramSnapshot,
}

impl ServerMetricsSnapshot {
    /// Every Overloaded answer for the node-wide request limit.
    pub fn overloaded(&self) -> u64 {
        self.overloaded_queue_full + self.overloaded_queue_timeout
    }
}

impl ServerMetrics {
    pub fn snapshot(&self) -> ServerMetricsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerMetricsSnapshot {
            requests: get(&self.requests),
            completed_inline: get(&self.completed_inline),
            overloaded_queue_full: get(&self.overloaded_queue_full),
            overloaded_queue_timeout: get(&self.overloaded_queue_timeout),
            executing: get(&self.executing),
            queued: get(&self.queued),
            write_batches: get(&self.write_batches),
            frames_written: get(&self.frames_written),
            queue_wait: self.queue_wait.snapshot(),
            execute: self.execute.snapshot(),
            socket_write: self.socket_write.snapshot(),
        }
    }

    /// Renders the metrics in the Prometheus text format, every name
    /// prefixed with `prefix` (e.g. `gyre_cql_`).
    pub fn render_prometheus(&self, prefix: &str, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.snapshot();
        let mut scalar = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {prefix}{name} {help}\n# TYPE {prefix}{name} {kind}\n{prefix}{name} {v}"
            );
        };
        scalar(
            "requests_total",
            "counter",
            "CQL requests (QUERY, PREPARE, EXECUTE, BATCH) received.",
            s.requests,
        );
        scalar(
            "requests_completed_inline_total",
            "counter",
            "CQL requests whose handler finished on its first poll (no task spawned).",
            s.completed_inline,
        );
        scalar(
            "requests_executing",
            "gauge",
            "CQL requests executing now (bounded node-wide).",
            s.executing,
        );
        scalar(
            "requests_queued",
            "gauge",
            "CQL requests waiting for an execution slot now (bounded).",
            s.queued,
        );
        scalar(
            "write_batches_total",
            "counter",
            "Socket writes of batched CQL responses.",
            s.write_batches,
        );
        scalar(
            "frames_written_total",
            "counter",
            "CQL response and event frames written.",
            s.frames_written,
        );
        let name = format!("{prefix}overloaded_total");
        let _ = writeln!(
            out,
            "# HELP {name} CQL requests answered Overloaded (0x1001), by reason.\n# TYPE {name} counter\n\
             {name}{{reason=\"queue_full\"}} {}\n{name}{{reason=\"queue_timeout\"}} {}",
            s.overloaded_queue_full, s.overloaded_queue_timeout
        );
        for (stage, help, h) in [
            (
                "queue_wait",
                "From a CQL request's arrival to the start of its execution.",
                &s.queue_wait,
            ),
            (
                "execute",
                "Execution of a CQL request by the request handler.",
                &s.execute,
            ),
            (
                "socket_write",
                "One socket write of a batch of CQL responses.",
                &s.socket_write,
            ),
        ] {
            gyre_common::metrics::render_histogram(
                out,
                &format!("{prefix}{stage}_seconds"),
                help,
                h,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn prometheus_text_has_every_family() {
        let m = ServerMetrics::default();
        m.queue_wait.record(Duration::from_micros(300));
        m.overloaded_queue_full.fetch_add(2, Ordering::Relaxed);
        let mut out = String::new();
        m.render_prometheus("gyre_cql_", &mut out);
        for needle in [
            "gyre_cql_requests_total 0",
            "gyre_cql_overloaded_total{reason=\"queue_full\"} 2",
            "gyre_cql_queue_wait_seconds_bucket{le=\"0.0005\"} 1",
            "gyre_cql_queue_wait_seconds_bucket{le=\"+Inf\"} 1",
            "gyre_cql_queue_wait_seconds_count 1",
            "# TYPE gyre_cql_socket_write_seconds histogram",
            "gyre_cql_execute_seconds_sum 0",
        ] {
            assert!(out.contains(needle), "{needle} missing in\n{out}");
        }
    }
}
