//! Write timestamps chosen by the coordinator when the client sends none.

use std::sync::atomic::{AtomicI64, Ordering};

use gyre_common::Timestamp;

/// Wall-clock source in microseconds since the Unix epoch.
pub trait MicrosClock: Send + Sync {
    fn now_micros(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemMicrosClock;

impl MicrosClock for SystemMicrosClock {
    fn now_micros(&self) -> Timestamp {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }
}

/// Hands out strictly increasing timestamps: the clock's microsecond, or one
/// more than the last one given when the clock has not moved (or moved back),
/// so two writes through one coordinator never tie under LWW.
#[derive(Debug)]
pub struct TimestampGenerator<C> {
    clock: C,
    last: AtomicI64,
}

impl<C: MicrosClock> TimestampGenerator<C> {
    pub fn new(clock: C) -> Self {
        TimestampGenerator {
            clock,
            last: AtomicI64::new(i64::MIN),
        }
    }

    pub fn next(&self) -> Timestamp {
        let now = self.clock.now_micros();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Fixed(AtomicI64);
    impl MicrosClock for Fixed {
        fn now_micros(&self) -> Timestamp {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn strictly_increasing_within_a_microsecond_and_backwards_clock() {
        let clock = Arc::new(Fixed(AtomicI64::new(1_000)));
        struct Shared(Arc<Fixed>);
        impl MicrosClock for Shared {
            fn now_micros(&self) -> Timestamp {
                self.0.now_micros()
            }
        }
        let g = TimestampGenerator::new(Shared(clock.clone()));
        assert_eq!(g.next(), 1_000);
        assert_eq!(g.next(), 1_001);
        assert_eq!(g.next(), 1_002);
        clock.0.store(500, Ordering::SeqCst);
        assert_eq!(g.next(), 1_003);
        clock.0.store(5_000, Ordering::SeqCst);
        assert_eq!(g.next(), 5_000);
    }

    #[test]
    fn unique_across_threads() {
        let g = Arc::new(TimestampGenerator::new(SystemMicrosClock));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..10_000).map(|_| g.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().expect("thread"));
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
