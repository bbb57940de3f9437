//! The node-wide bound on executing requests.
//!
//! At most `max_executing` requests run at once over all connections. A
//! request that finds them all taken joins a FIFO wait queue of at most
//! `max_queued` entries and waits there at most `queue_timeout`; a request
//! that finds the queue full, or times out in it, is answered Overloaded
//! (0x1001), as Cassandra answers OverloadedException. Nothing queues
//! without bound: the reader of a connection never waits here, so one
//! connection's slow requests do not stall its fast ones, and the
//! per-connection in-flight limit still bounds each connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::ServerMetrics;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overload {
    /// The wait queue was full on arrival.
    QueueFull,
    /// No execution slot freed up within the queue timeout.
    QueueTimeout,
}

impl Overload {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Overload::QueueFull => {
                "Server is in overloaded state. Cannot accept more requests at this point"
            }
            Overload::QueueTimeout => {
                "Server is in overloaded state: the request waited too long to be executed"
            }
        }
    }
}

/// An admitted request (see [`RequestLimiter::admit`]).
pub(crate) enum Admission {
    /// A slot was free: execute now.
    Run(ExecPermit),
    /// Every slot is taken: wait in the queue ([`QueueSlot::wait`]).
    Wait(QueueSlot),
}

pub(crate) struct RequestLimiter {
    slots: Arc<Semaphore>,
    max_queued: usize,
    queued: AtomicUsize,
    queue_timeout: Duration,
    metrics: Arc<ServerMetrics>,
}

impl RequestLimiter {
    pub(crate) fn new(
        max_executing: usize,
        max_queued: usize,
        queue_timeout: Duration,
        metrics: Arc<ServerMetrics>,
    ) -> Arc<Self> {
        Arc::new(RequestLimiter {
            slots: Arc::new(Semaphore::new(
                max_executing.clamp(1, Semaphore::MAX_PERMITS),
            )),
            max_queued,
            queued: AtomicUsize::new(0),
            queue_timeout,
            metrics,
        })
    }

    /// Takes a slot if one is free, else a place in the queue if there is
    /// one; refuses when the queue is full too. Never waits. The semaphore
    /// hands freed slots to queued waiters first, so a newcomer cannot
    /// overtake the queue.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Admission, Overload> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Admission::Run(ExecPermit::new(permit, &self.metrics)));
        }
        let joined = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < self.max_queued).then_some(q + 1)
            })
            .is_ok();
        if !joined {
            self.metrics
                .overloaded_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return Err(Overload::QueueFull);
        }
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        Ok(Admission::Wait(QueueSlot {
            limiter: self.clone(),
        }))
    }
}

/// A place in the wait queue; leaving it (by any path) frees the place.
pub(crate) struct QueueSlot {
    limiter: Arc<RequestLimiter>,
}

impl QueueSlot {
    /// Waits for an execution slot, at most the queue timeout.
    pub(crate) async fn wait(self) -> Result<ExecPermit, Overload> {
        let l = &self.limiter;
        match tokio::time::timeout(l.queue_timeout, l.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(ExecPermit::new(permit, &l.metrics)),
            // The semaphore is never closed; treat it as a timeout anyway.
            Ok(Err(_)) | Err(_) => {
                l.metrics
                    .overloaded_queue_timeout
                    .fetch_add(1, Ordering::Relaxed);
                Err(Overload::QueueTimeout)
            }
        }
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.limiter.queued.fetch_sub(1, Ordering::AcqRel);
        self.limiter.metrics.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An execution slot, held until the request's response is queued.
pub(crate) struct ExecPermit {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<ServerMetrics>,
}

impl ExecPermit {
    fn new(permit: OwnedSemaphorePermit, metrics: &Arc<ServerMetrics>) -> Self {
        metrics.executing.fetch_add(1, Ordering::Relaxed);
        ExecPermit {
            _permit: permit,
            metrics: metrics.clone(),
        }
    }
}

impl Drop for ExecPermit {
    fn drop(&mut self) {
        self.metrics.executing.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::time::Instant;

    use super::*;

    fn limiter(executing: usize, queued: usize, timeout_ms: u64) -> Arc<RequestLimiter> {
        RequestLimiter::new(
            executing,
            queued,
            Duration::from_millis(timeout_ms),
            Arc::new(ServerMetrics::default()),
        )
    }

    fn run(a: Result<Admission, Overload>) -> ExecPermit {
        match a {
            Ok(Admission::Run(p)) => p,
            _ => panic!("expected a free slot"),
        }
    }

    fn wait(a: Result<Admission, Overload>) -> QueueSlot {
        match a {
            Ok(Admission::Wait(q)) => q,
            _ => panic!("expected a queue place"),
        }
    }

    #[tokio::test]
    async fn slots_then_queue_then_refusal() {
        let l = limiter(2, 1, 5_000);
        let p1 = run(l.admit());
        let _p2 = run(l.admit());
        let q = wait(l.admit());
        assert!(matches!(l.admit(), Err(Overload::QueueFull)));
        let m = l.metrics.snapshot();
        assert_eq!((m.executing, m.queued, m.overloaded_queue_full), (2, 1, 1));
        // A freed slot goes to the queued request, not to a newcomer.
        let waiter = tokio::spawn(q.wait());
        drop(p1);
        let p3 = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(p3.is_ok());
        assert!(matches!(l.admit(), Ok(Admission::Wait(_))));
        let m = l.metrics.snapshot();
        assert_eq!((m.executing, m.queued), (2, 0));
    }

    #[tokio::test]
    async fn a_queued_request_times_out_and_frees_its_place() {
        let l = limiter(1, 1, 30);
        let _p = run(l.admit());
        let started = Instant::now();
        let outcome = wait(l.admit()).wait().await;
        assert!(matches!(outcome, Err(Overload::QueueTimeout)));
        assert!(started.elapsed() >= Duration::from_millis(30));
        let m = l.metrics.snapshot();
        assert_eq!((m.queued, m.overloaded_queue_timeout), (0, 1));
        // Its place is free again.
        assert!(matches!(l.admit(), Ok(Admission::Wait(_))));
    }

    #[tokio::test]
    async fn no_queue_refuses_at_once_and_slots_come_back() {
        let l = limiter(1, 0, 1_000);
        let p = run(l.admit());
        assert!(matches!(l.admit(), Err(Overload::QueueFull)));
        drop(p);
        let _p = run(l.admit());
        let m = l.metrics.snapshot();
        assert_eq!((m.executing, m.overloaded()), (1, 1));
    }

    #[tokio::test]
    async fn many_contenders_never_exceed_the_bounds() {
        let l = limiter(4, 8, 2_000);
        let peak = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let mut refused = 0;
        for _ in 0..64 {
            let permit_or_slot = l.admit();
            let (peak, running) = (peak.clone(), running.clone());
            let fut = async move {
                let _permit = match permit_or_slot {
                    Ok(Admission::Run(p)) => p,
                    Ok(Admission::Wait(q)) => q.wait().await.ok()?,
                    Err(_) => return None,
                };
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Some(())
            };
            tasks.push(tokio::spawn(fut));
        }
        let mut done = 0;
        for t in tasks {
            match t.await.unwrap() {
                Some(()) => done += 1,
                None => refused += 1,
            }
        }
        // 4 ran at once and 8 queued; the other 52 were refused on arrival.
        assert_eq!(done, 12);
        assert_eq!(refused, 52);
        assert!(peak.load(Ordering::SeqCst) <= 4);
        let m = l.metrics.snapshot();
        assert_eq!((m.executing, m.queued, m.overloaded()), (0, 0, 52));
    }
}
