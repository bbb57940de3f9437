//! A linearizability checker for one compare-and-set register, after Wing
//! and Gong's search with Lowe's memoisation (what Knossos does for
//! Jepsen): find an order of the operations that respects real time (an
//! operation that completed before another was invoked comes first) and in
//! which every acknowledged result is what a single register would have
//! answered.
//!
//! An operation whose outcome is unknown (timed out, connection lost) may
//! take effect at any point after its invocation, or never: it has no
//! completion time, so it never constrains the order of others, and the
//! search may leave it out. A failed read is simply dropped.

use std::collections::HashSet;
use std::time::Duration;

/// The condition of a conditional write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Cond {
    /// `IF EXISTS`
    Exists,
    /// `IF NOT EXISTS`
    NotExists,
    /// `IF v = x`
    Equals(i64),
}

impl Cond {
    /// The CQL `IF` clause.
    pub fn cql(self) -> String {
        match self {
            Cond::Exists => "IF EXISTS".into(),
            Cond::NotExists => "IF NOT EXISTS".into(),
            Cond::Equals(x) => format!("IF v = {x}"),
        }
    }

    fn holds(self, state: Option<i64>) -> bool {
        match self {
            Cond::Exists => state.is_some(),
            Cond::NotExists => state.is_none(),
            Cond::Equals(x) => state == Some(x),
        }
    }
}

/// What an operation did, with its acknowledged result where it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// A read that returned this value (`None`: no row).
    Read(Option<i64>),
    /// A conditional write of `new`; `applied` is the acknowledged
    /// `[applied]` column, `None` when the outcome is unknown.
    Cas {
        cond: Cond,
        new: i64,
        applied: Option<bool>,
    },
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub op: RegOp,
    pub invoke: Duration,
    /// `None` when the outcome is unknown.
    pub complete: Option<Duration>,
}

impl Entry {
    /// Whether every linearization must contain it.
    fn required(&self) -> bool {
        self.complete.is_some()
    }

    /// The register after this operation takes effect on `state`, or
    /// `None` when its acknowledged result contradicts `state`.
    fn step(&self, state: Option<i64>) -> Option<Option<i64>> {
        match self.op {
            RegOp::Read(v) => (v == state).then_some(state),
            RegOp::Cas {
                cond,
                new,
                applied: Some(true),
            } => cond.holds(state).then_some(Some(new)),
            RegOp::Cas {
                cond,
                applied: Some(false),
                ..
            } => (!cond.holds(state)).then_some(state),
            // Unknown outcome: it can only matter by having applied.
            RegOp::Cas {
                cond,
                new,
                applied: None,
            } => cond.holds(state).then_some(Some(new)),
        }
    }
}

/// The checker's answer for one register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order exists. `placed` acknowledged operations of `required`
    /// could be ordered at best; `stuck` is the index (in the input) of an
    /// acknowledged operation none of those orders could place next.
    NotLinearizable {
        placed: usize,
        required: usize,
        stuck: usize,
    },
    /// The search visited `budget` states without an answer.
    Unknown {
        budget: usize,
    },
}

struct Frame {
    done: Vec<u64>,
    state: Option<i64>,
    placed: usize,
    /// The first position not placed.
    lo: usize,
    /// Next candidate (position in `order`) to try from this frame.
    next: usize,
}

fn is_set(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

/// Checks one register's history, starting from `init`, visiting at most
/// `budget` distinct (operations placed, value) states.
pub fn check(entries: &[Entry], init: Option<i64>, budget: usize) -> Verdict {
    // Failed reads say nothing.
    let mut order: Vec<usize> = (0..entries.len())
        .filter(|&i| !matches!(entries[i].op, RegOp::Read(_)) || entries[i].required())
        .collect();
    order.sort_by_key(|&i| entries[i].invoke);
    let n = order.len();
    let required = order.iter().filter(|&&i| entries[i].required()).count();
    let words = n.div_ceil(64).max(1);
    // Unknown operations with the same effect are interchangeable: the
    // search only ever places the earliest unplaced one of a kind (once
    // invoked, an unknown operation stays a candidate for good), which
    // keeps it from trying every subset of pending timeouts.
    let mut prev_same = vec![None; n];
    for p in 0..n {
        let e = &entries[order[p]];
        if !e.required() {
            prev_same[p] = (0..p)
                .rev()
                .find(|&q| entries[order[q]].op == e.op && !entries[order[q]].required());
        }
    }
    let mut seen: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    let mut stack = vec![Frame {
        done: vec![0; words],
        state: init,
        placed: 0,
        lo: 0,
        next: 0,
    }];
    let mut best = (0usize, usize::MAX);
    while let Some(top) = stack.last_mut() {
        if top.placed == required {
            return Verdict::Linearizable;
        }
        // Candidates: operations not yet placed that were invoked before
        // every unplaced acknowledged operation completed. Sorted by
        // invocation, so they form a prefix of the unplaced ones.
        let mut horizon = Duration::MAX;
        let mut chosen = None;
        for (p, &i) in order.iter().enumerate().skip(top.lo) {
            let e = &entries[i];
            if e.invoke > horizon {
                break;
            }
            if is_set(&top.done, p) {
                continue;
            }
            if let Some(c) = e.complete {
                horizon = horizon.min(c);
            }
            if p < top.next || prev_same[p].is_some_and(|q| !is_set(&top.done, q)) {
                continue;
            }
            if let Some(state) = e.step(top.state) {
                chosen = Some((p, state));
                break;
            }
        }
        let Some((p, state)) = chosen else {
            // Nothing more from this state: note how far it got, back off.
            if top.placed >= best.0 {
                let stuck = order
                    .iter()
                    .enumerate()
                    .filter(|(p, &i)| !is_set(&top.done, *p) && entries[i].required())
                    .min_by_key(|(_, &i)| entries[i].complete)
                    .map_or(usize::MAX, |(_, &i)| i);
                best = (top.placed, stuck);
            }
            stack.pop();
            continue;
        };
        top.next = p + 1;
        let mut done = top.done.clone();
        done[p / 64] |= 1 << (p % 64);
        let placed = top.placed + usize::from(entries[order[p]].required());
        if seen.insert((done.clone(), state)) {
            if seen.len() > budget {
                return Verdict::Unknown { budget };
            }
            let mut lo = top.lo;
            while lo < n && is_set(&done, lo) {
                lo += 1;
            }
            stack.push(Frame {
                done,
                state,
                placed,
                lo,
                next: 0,
            });
        }
    }
    Verdict::NotLinearizable {
        placed: best.0,
        required,
        stuck: best.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: usize = 1_000_000;

    fn e(op: RegOp, invoke: u64, complete: Option<u64>) -> Entry {
        Entry {
            op,
            invoke: Duration::from_millis(invoke),
            complete: complete.map(Duration::from_millis),
        }
    }
    fn read(v: Option<i64>, t: (u64, u64)) -> Entry {
        e(RegOp::Read(v), t.0, Some(t.1))
    }
    fn cas(cond: Cond, new: i64, applied: Option<bool>, t: (u64, Option<u64>)) -> Entry {
        e(RegOp::Cas { cond, new, applied }, t.0, t.1)
    }
    fn write(new: i64, t: (u64, u64)) -> Entry {
        cas(Cond::Exists, new, Some(true), (t.0, Some(t.1)))
    }

    #[test]
    fn sequential_and_concurrent_histories_pass() {
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(10))),
            read(Some(0), (11, 12)),
            cas(Cond::Equals(0), 1, Some(true), (13, Some(20))),
            cas(Cond::Equals(0), 2, Some(false), (21, Some(22))),
            read(Some(1), (23, 24)),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
        // Two concurrent writes, reads that see either order.
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(1))),
            write(1, (10, 50)),
            write(2, (10, 50)),
            read(Some(1), (20, 30)),
            read(Some(2), (60, 70)),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
        // A read concurrent with a write may see the old or the new value.
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(1))),
            write(1, (10, 50)),
            read(Some(0), (20, 60)),
            read(Some(1), (30, 40)),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
    }

    #[test]
    fn unknown_outcomes_may_apply_late_or_never() {
        // A timed-out CAS whose value shows up long after the client gave
        // up, and one that never shows up.
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(1))),
            cas(Cond::Equals(0), 3, None, (5, None)),
            cas(Cond::Equals(0), 4, None, (6, None)),
            read(Some(0), (100, 101)),
            read(Some(3), (200, 201)),
            read(Some(3), (300, 301)),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
        // A failed read constrains nothing (it is dropped).
        let h = vec![
            cas(Cond::NotExists, 7, Some(true), (0, Some(1))),
            e(RegOp::Read(None), 2, None),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_caught() {
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(10))),
            write(1, (20, 30)),
            read(Some(0), (40, 50)),
        ];
        assert_eq!(
            check(&h, None, B),
            Verdict::NotLinearizable {
                placed: 2,
                required: 3,
                stuck: 2
            }
        );
    }

    #[test]
    fn two_applied_swaps_from_one_value_are_caught() {
        // The lost-update shape: both swaps see 0 and both apply.
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(1))),
            cas(Cond::Equals(0), 1, Some(true), (10, Some(20))),
            cas(Cond::Equals(0), 2, Some(true), (10, Some(20))),
        ];
        assert!(matches!(
            check(&h, None, B),
            Verdict::NotLinearizable { .. }
        ));
        // ... also when a third, unknown operation could only make it
        // work by applying before it was invoked.
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(1))),
            cas(Cond::Equals(0), 1, Some(true), (10, Some(20))),
            cas(Cond::Equals(0), 2, Some(true), (10, Some(20))),
            cas(Cond::Equals(1), 0, None, (30, None)),
        ];
        assert!(matches!(
            check(&h, None, B),
            Verdict::NotLinearizable { .. }
        ));
        // Had it been invoked in time, it would explain the history.
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(1))),
            cas(Cond::Equals(0), 1, Some(true), (10, Some(20))),
            cas(Cond::Equals(0), 2, Some(true), (10, Some(20))),
            cas(Cond::Equals(1), 0, None, (12, None)),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
    }

    #[test]
    fn phantoms_and_wrong_refusals_are_caught() {
        // A value nobody wrote.
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(1))),
            read(Some(9), (5, 6)),
        ];
        assert!(matches!(
            check(&h, None, B),
            Verdict::NotLinearizable { .. }
        ));
        // A swap refused although the register held its expected value.
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(1))),
            cas(Cond::Equals(0), 1, Some(false), (5, Some(6))),
        ];
        assert!(matches!(
            check(&h, None, B),
            Verdict::NotLinearizable { .. }
        ));
        // IF NOT EXISTS applied twice.
        let h = vec![
            cas(Cond::NotExists, 0, Some(true), (0, Some(1))),
            cas(Cond::NotExists, 1, Some(true), (5, Some(6))),
        ];
        assert!(matches!(
            check(&h, None, B),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_long_concurrent_history_is_decided_within_budget() {
        // 100 rounds of 8 clients: 8 concurrent reads, then 8 concurrent
        // swaps from the value read, of which one applies and the others
        // are refused, except that every tenth round one times out (and
        // never applied): linearizable.
        let mut h = vec![cas(Cond::NotExists, 0, Some(true), (0, Some(1)))];
        let mut v = 0i64;
        for round in 0..100u64 {
            let t = 10 + round * 100;
            let new = (v + 1 + (round % 3) as i64) % 5;
            for c in 0..8u64 {
                h.push(read(Some(v), (t + c, t + 40 + c)));
                let swap = (t + 50 + c, Some(t + 90 - c));
                h.push(match c {
                    0 => cas(Cond::Equals(v), new, Some(true), swap),
                    1 if round % 10 == 0 => cas(Cond::Equals(v), new, None, (swap.0, None)),
                    _ => cas(Cond::Equals(v), (new + 1) % 5, Some(false), swap),
                });
            }
            v = new;
        }
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
        // And one read of a value never written, in the middle of it, is
        // found (the search must rule out every order of the unknown swaps
        // pending by then).
        let at = (h.len() / 2..h.len())
            .find(|&i| matches!(h[i].op, RegOp::Read(_)))
            .unwrap_or(1);
        h[at].op = RegOp::Read(Some(77));
        assert!(matches!(
            check(&h, None, B),
            Verdict::NotLinearizable { .. }
        ));
    }
}
