//! The node's side of request tracing: which requests are traced (the
//! client's tracing flag, or `settraceprobability`), and the writer that
//! stores finished sessions and events in `system_traces` with
//! Cassandra's one-day TTL.
//!
//! The request path only queues a finished session's rows with `try_send`
//! on a bounded channel (full: dropped and counted); one writer task per
//! node inserts them through the query processor at consistency ONE, as
//! ordinary replicated writes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gyre_common::trace::{TraceEvent, TraceSession, TraceSink};
use gyre_common::Consistency;
use gyre_protocol::{CqlValue, Value};
use gyre_query::{QueryParams, QueryProcessor};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Cassandra's trace TTL (`tracetype_query_ttl`): one day.
pub const TRACE_TTL_SECONDS: u32 = 86_400;

/// Finished records waiting for the writer; beyond, new ones are dropped.
const QUEUE: usize = 1024;

enum Record {
    Events(Vec<TraceEvent>),
    Session(TraceSession),
}

/// Decides what to trace and queues finished traces (the process's
/// [`TraceSink`]).
pub(crate) struct Tracer {
    /// The probability of tracing an untraced request, as f64 bits.
    probability: AtomicU64,
    tx: mpsc::Sender<Record>,
    rx: Mutex<Option<mpsc::Receiver<Record>>>,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records written, and failed writes.
    pub written: AtomicU64,
    pub failed: AtomicU64,
}

impl Default for Tracer {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Tracer {
            probability: AtomicU64::new(0f64.to_bits()),
            tx,
            rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

impl Tracer {
    pub fn probability(&self) -> f64 {
        f64::from_bits(self.probability.load(Ordering::Relaxed))
    }

    /// Sets the probability (checked: 0 to 1, nodetool's rule).
    pub fn set_probability(&self, p: f64) -> Result<(), String> {
        if !(0.0..=1.0).contains(&p) {
            return Err("Trace probability must be between 0 and 1".into());
        }
        self.probability.store(p.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Whether to trace a request the client did not ask to trace. With
    /// the default 0 this is one atomic load.
    pub fn sample(&self) -> bool {
        let p = self.probability();
        p > 0.0 && (p >= 1.0 || rand::random::<f64>() < p)
    }

    fn queue(&self, r: Record) {
        if self.tx.try_send(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts the writer (once; later calls do nothing).
    pub fn start_writer(self: &Arc<Self>, qp: Arc<QueryProcessor>) {
        let Some(rx) = self.rx.lock().take() else {
            return;
        };
        tokio::spawn(write_loop(self.clone(), qp, rx));
    }
}

impl TraceSink for Tracer {
    fn events(&self, events: Vec<TraceEvent>) {
        self.queue(Record::Events(events));
    }

    fn session(&self, session: TraceSession) {
        self.queue(Record::Session(session));
    }
}

/// A sink that forwards to the node's tracer (the process-wide sink is
/// set once; it holds the tracer through this).
pub(crate) struct SinkRef(pub Arc<Tracer>);

impl TraceSink for SinkRef {
    fn events(&self, events: Vec<TraceEvent>) {
        self.0.events(events)
    }

    fn session(&self, session: TraceSession) {
        self.0.session(session)
    }
}

fn bytes(v: CqlValue) -> Value {
    Value::Bytes(v.encode())
}

fn inet(ip: IpAddr) -> Value {
    bytes(CqlValue::Inet(ip))
}

async fn write_loop(tracer: Arc<Tracer>, qp: Arc<QueryProcessor>, mut rx: mpsc::Receiver<Record>) {
    let event_cql = format!(
        "INSERT INTO system_traces.events (session_id, event_id, activity, source, source_elapsed, source_port, thread) \
         VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL {TRACE_TTL_SECONDS}"
    );
    let session_cql = format!(
        "INSERT INTO system_traces.sessions (session_id, client, command, coordinator, coordinator_port, duration, parameters, request, started_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL {TRACE_TTL_SECONDS}"
    );
    let (event_stmt, session_stmt) =
        match (gyre_cql::parse(&event_cql), gyre_cql::parse(&session_cql)) {
            (Ok(e), Ok(s)) => (e, s),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "trace statements do not parse: tracing writes disabled");
                return;
            }
        };
    while let Some(record) = rx.recv().await {
        let rows: Vec<(&gyre_cql::Parsed, Vec<Value>)> = match record {
            Record::Events(events) => events
                .into_iter()
                .map(|e| {
                    (
                        &event_stmt,
                        vec![
                            bytes(CqlValue::Uuid(e.session_id)),
                            bytes(CqlValue::Timeuuid(e.event_id)),
                            bytes(CqlValue::Text(e.activity)),
                            inet(e.source),
                            bytes(CqlValue::Int(e.source_elapsed)),
                            bytes(CqlValue::Int(7000)),
                            bytes(CqlValue::Text(e.thread)),
                        ],
                    )
                })
                .collect(),
            Record::Session(s) => vec![(
                &session_stmt,
                vec![
                    bytes(CqlValue::Uuid(s.session_id)),
                    inet(s.client),
                    bytes(CqlValue::Text(s.command)),
                    inet(s.coordinator),
                    bytes(CqlValue::Int(s.coordinator_port)),
                    bytes(CqlValue::Int(s.duration)),
                    bytes(CqlValue::Map(
                        s.parameters
                            .into_iter()
                            .map(|(k, v)| (CqlValue::Text(k), CqlValue::Text(v)))
                            .collect(),
                    )),
                    bytes(CqlValue::Text(s.request)),
                    bytes(CqlValue::Timestamp(s.started_at)),
                ],
            )],
        };
        for (stmt, values) in rows {
            let params = QueryParams {
                values,
                consistency: Consistency::One,
                ..QueryParams::default()
            };
            match qp.execute_parsed(stmt, &params).await {
                Ok(_) => {
                    tracer.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracer.failed.fetch_add(1, Ordering::Relaxed);
                    debug!(error = %e, "writing a trace row failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_is_checked_and_sampled() {
        let t = Tracer::default();
        assert!(!t.sample(), "default 0: nothing traced");
        assert!(t.set_probability(1.5).is_err());
        assert!(t.set_probability(-0.1).is_err());
        t.set_probability(1.0).expect("test");
        assert!(t.sample());
        t.set_probability(0.0).expect("test");
        assert!(!t.sample());
    }

    #[test]
    fn a_full_queue_drops_instead_of_growing() {
        let t = Tracer::default();
        for _ in 0..(QUEUE + 10) {
            t.events(Vec::new());
        }
        assert_eq!(t.dropped.load(Ordering::Relaxed), 10);
    }
}
