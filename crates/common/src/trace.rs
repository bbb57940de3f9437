//! Request tracing (Cassandra's `Tracing`): the events of one traced
//! request, on its coordinator and on every replica it asks, for
//! `system_traces.sessions` / `system_traces.events`.
//!
//! On the coordinator a [`TraceState`] rides in a task-local scope around
//! the request's future, so any layer below (query, coordinator, the
//! messenger that stamps the session id on internode requests) calls
//! [`event`] without the state being passed down; outside a traced request
//! [`event`] is one failed task-local lookup and never formats its text.
//! A replica serving a traced internode request builds a [`TraceState`]
//! for the session id the request carries and records into it directly.
//!
//! Events are kept with their session (at most [`MAX_EVENTS`]) and handed
//! to the process's [`TraceSink`] when the session ends; the node's sink
//! writes them to the tables asynchronously, off the request path.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// Events one session keeps on one node; later ones are dropped.
pub const MAX_EVENTS: usize = 256;

/// One row of `system_traces.events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    pub session_id: Uuid,
    /// A time-based UUID: the event's time and order.
    pub event_id: Uuid,
    pub activity: String,
    /// The node that recorded it.
    pub source: IpAddr,
    /// Microseconds since the session started on that node.
    pub source_elapsed: i32,
    pub thread: String,
}

/// One row of `system_traces.sessions`, written by the coordinator when
/// the request ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceSession {
    pub session_id: Uuid,
    pub client: IpAddr,
    pub command: String,
    pub coordinator: IpAddr,
    pub coordinator_port: i32,
    /// Microseconds the request took on the coordinator.
    pub duration: i32,
    pub parameters: Vec<(String, String)>,
    pub request: String,
    /// Milliseconds since the epoch.
    pub started_at: i64,
}

/// Where finished traces go: must not block (the node's sink queues them
/// for a writer task and drops what does not fit).
pub trait TraceSink: Send + Sync + 'static {
    fn events(&self, events: Vec<TraceEvent>);
    fn session(&self, session: TraceSession);
}

static SINK: OnceLock<Arc<dyn TraceSink>> = OnceLock::new();

/// Installs the process's sink (the node does at start-up). The first one
/// wins; without one, traces are dropped.
pub fn set_sink(sink: Arc<dyn TraceSink>) -> bool {
    SINK.set(sink).is_ok()
}

fn sink() -> Option<&'static Arc<dyn TraceSink>> {
    SINK.get()
}

struct Inner {
    id: Uuid,
    source: IpAddr,
    started: Instant,
    events: Mutex<Vec<TraceEvent>>,
}

/// One session's events on this node.
#[derive(Clone)]
pub struct TraceState(Arc<Inner>);

impl std::fmt::Debug for TraceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceState")
            .field("id", &self.0.id)
            .finish()
    }
}

tokio::task_local! {
    static CURRENT: TraceState;
}

impl TraceState {
    /// A session recorded by `source` (this node's address).
    pub fn new(id: Uuid, source: IpAddr) -> Self {
        TraceState(Arc::new(Inner {
            id,
            source,
            started: Instant::now(),
            events: Mutex::new(Vec::new()),
        }))
    }

    pub fn id(&self) -> Uuid {
        self.0.id
    }

    /// Microseconds since the session started here.
    pub fn elapsed_micros(&self) -> i32 {
        i32::try_from(self.0.started.elapsed().as_micros()).unwrap_or(i32::MAX)
    }

    /// Records one event.
    pub fn event(&self, activity: impl Into<String>) {
        let elapsed = self.elapsed_micros();
        let thread = std::thread::current().name().unwrap_or("worker").to_owned();
        let Ok(mut events) = self.0.events.lock() else {
            return;
        };
        if events.len() < MAX_EVENTS {
            events.push(TraceEvent {
                session_id: self.0.id,
                event_id: next_timeuuid(),
                activity: activity.into(),
                source: self.0.source,
                source_elapsed: elapsed,
                thread,
            });
        }
    }

    /// Hands the events recorded so far to the sink.
    pub fn flush(&self) {
        let events = match self.0.events.lock() {
            Ok(mut e) => std::mem::take(&mut *e),
            Err(_) => return,
        };
        if let (false, Some(sink)) = (events.is_empty(), sink()) {
            sink.events(events);
        }
    }

    /// Runs `fut` with this session as the task's current one, then
    /// flushes its events.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        let out = CURRENT.scope(self.clone(), fut).await;
        self.flush();
        out
    }
}

/// Records an event in the current task's session; `activity` is only
/// called when there is one.
#[inline]
pub fn event<S: Into<String>>(activity: impl FnOnce() -> S) {
    let _ = CURRENT.try_with(|t| t.event(activity()));
}

/// The current task's trace session, for requests sent on its behalf.
#[inline]
pub fn session_id() -> Option<Uuid> {
    CURRENT.try_with(|t| t.0.id).ok()
}

/// Hands a finished session's row to the sink.
pub fn finish_session(session: TraceSession) {
    if let Some(sink) = sink() {
        sink.session(session);
    }
}

/// 100 ns intervals between 1582-10-15 and 1970-01-01.
const UUID_EPOCH_OFFSET: u64 = 0x01B2_1DD2_1381_4000;

/// A version 1 UUID for now, strictly increasing within the process; the
/// node bits are random per process so nodes never collide.
pub fn next_timeuuid() -> Uuid {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static NODE: OnceLock<u64> = OnceLock::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now_ticks = (now.as_nanos() / 100) as u64 + UUID_EPOCH_OFFSET;
    let mut last = LAST.load(Ordering::Relaxed);
    let ticks = loop {
        let next = now_ticks.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    let node = *NODE.get_or_init(|| {
        // Random enough for distinct processes: the address of a fresh
        // allocation mixed with the pid and the start time.
        let b = Box::new(0u8);
        let addr = &*b as *const u8 as u64;
        let mixed = addr
            ^ (u64::from(std::process::id()) << 32)
            ^ u64::from(now.subsec_nanos()).rotate_left(17);
        // Clock sequence variant bits 10.
        (mixed & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000
    });
    let msb = ((ticks & 0xffff_ffff) << 32)
        | (((ticks >> 32) & 0xffff) << 16)
        | 0x1000
        | ((ticks >> 48) & 0x0fff);
    Uuid::from_u64_pair(msb, node & 0xbfff_ffff_ffff_ffff)
}

/// The unix milliseconds of a version 1 UUID made by [`next_timeuuid`].
pub fn timeuuid_millis(u: &Uuid) -> i64 {
    let (msb, _) = u.as_u64_pair();
    let ticks = ((msb & 0x0fff) << 48) | (((msb >> 16) & 0xffff) << 32) | (msb >> 32);
    (ticks.saturating_sub(UUID_EPOCH_OFFSET) / 10_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_follow_the_task_and_cost_nothing_outside() {
        let mut formatted = false;
        event(|| {
            formatted = true;
            "nobody"
        });
        assert!(!formatted, "no session: the text is never built");
        assert_eq!(session_id(), None);
        let id = next_timeuuid();
        let state = TraceState::new(id, "127.0.0.1".parse().expect("test"));
        let seen = state
            .clone()
            .scope(async {
                event(|| "one");
                tokio::task::yield_now().await;
                event(|| "two");
                session_id()
            })
            .await;
        assert_eq!(seen, Some(id));
    }

    #[test]
    fn timeuuids_increase_and_carry_the_time() {
        let a = next_timeuuid();
        let b = next_timeuuid();
        assert_eq!(a.get_version_num(), 1);
        assert!(b.as_u64_pair().0 != a.as_u64_pair().0);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("test")
            .as_millis() as i64;
        assert!((timeuuid_millis(&b) - ms).abs() < 5_000);
    }

    #[test]
    fn events_are_bounded() {
        let state = TraceState::new(next_timeuuid(), "127.0.0.1".parse().expect("test"));
        for i in 0..(MAX_EVENTS + 10) {
            state.event(format!("e{i}"));
        }
        assert_eq!(state.0.events.lock().expect("test").len(), MAX_EVENTS);
    }
}
