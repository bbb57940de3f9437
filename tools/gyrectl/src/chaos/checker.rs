//! The checker: the history plus the final reads in, the anomalies out.
//!
//! - Registers: the value a final QUORUM (and ALL) read returns must come
//!   from a write that may have been applied, and if that write was
//!   acknowledged, no acknowledged write may be strictly later (invoked
//!   after it completed): that would be a lost acknowledged write. A key
//!   with an acknowledged write must not read as missing.
//! - Own keys (monotonic reads): a client's QUORUM reads of a key it alone
//!   writes never go backwards, and never return less than its own last
//!   acknowledged write.
//!
//! A write that timed out or failed is indeterminate, as in Jepsen: it may
//! take effect at any time after it was invoked, even after the client gave
//! up (a paused coordinator resumes and stamps it then), so it is never
//! "before" anything and reading it is never an anomaly.
//! - Sets: every acknowledged add is in the final set, and every element
//!   in it was added by some request.
//! - Replicas: after the final ALL reads (which repair), every node reads
//!   every register the same at ONE.
//! - Compare-and-set registers (lightweight transactions and SERIAL
//!   reads): each key's history is linearizable ([`super::linear`]).
//! - Counters: the final total lies between the acknowledged increments
//!   and those plus the ones whose outcome is unknown.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::history::{Op, OpKind, Outcome};
use super::linear::{self, Entry, RegOp, Verdict};

/// States the linearizability search may visit per key before it gives up
/// (each key's history is kept short by the workload, so a run should
/// never get near it).
pub const LINEAR_BUDGET: usize = 2_000_000;

/// One violation, with what was expected and what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: &'static str,
    pub key: String,
    pub expected: String,
    pub observed: String,
    /// When the violated expectation was established (ms since start).
    pub at_ms: u64,
}

/// The final reads, after healing and hint delivery.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FinalState {
    /// Register key -> (QUORUM read, ALL read).
    pub registers: BTreeMap<String, (Option<i64>, Option<i64>)>,
    /// Set key -> elements (read at ALL).
    pub sets: BTreeMap<String, BTreeSet<i64>>,
    /// Register key -> each node's ONE read.
    pub per_node: BTreeMap<String, Vec<Option<i64>>>,
    /// Table -> each node's digest of its local copy (`POST /digest`).
    pub digests: BTreeMap<String, Vec<String>>,
    /// Counter key -> its total (read at ALL).
    pub counters: BTreeMap<String, Option<i64>>,
}

/// One counter's final total beside what the history allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterStat {
    pub key: String,
    pub total: Option<i64>,
    /// The sum of acknowledged increments.
    pub acknowledged: i64,
    /// The sum of increments whose outcome is unknown.
    pub unknown: i64,
}

fn show(v: Option<i64>) -> String {
    v.map_or_else(|| "missing".into(), |v| v.to_string())
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Checks a history against the final state.
pub fn check(history: &[Op], fin: &FinalState) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut writes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut adds: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut own: BTreeMap<(usize, &str), Vec<&Op>> = BTreeMap::new();
    for op in history {
        match op.kind {
            OpKind::Write => writes.entry(&op.key).or_default().push(op),
            OpKind::SetAdd => adds.entry(&op.key).or_default().push(op),
            OpKind::OwnWrite | OpKind::OwnRead => {
                own.entry((op.client, &op.key)).or_default().push(op)
            }
            OpKind::CasRead | OpKind::Cas | OpKind::CounterAdd => {}
        }
    }
    for (key, (quorum, all)) in &fin.registers {
        let ws = writes.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        for (level, v) in [("QUORUM", *quorum), ("ALL", *all)] {
            check_register(key, level, v, ws, &mut out);
        }
    }
    for ((client, key), ops) in &own {
        check_own(*client, key, ops, &mut out);
    }
    for (key, elems) in &fin.sets {
        let ops = adds.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        for op in ops.iter().filter(|o| o.outcome.is_ok()) {
            if !elems.contains(&op.value) {
                out.push(Anomaly {
                    kind: "lost set add",
                    key: key.clone(),
                    expected: format!("element {} (acknowledged)", op.value),
                    observed: "absent".into(),
                    at_ms: ms(op.complete),
                });
            }
        }
        let attempted: BTreeSet<i64> = ops
            .iter()
            .filter(|o| o.outcome.maybe_applied())
            .map(|o| o.value)
            .collect();
        for e in elems.difference(&attempted) {
            out.push(Anomaly {
                kind: "phantom set element",
                key: key.clone(),
                expected: "only added elements".into(),
                observed: e.to_string(),
                at_ms: 0,
            });
        }
    }
    for (key, values) in &fin.per_node {
        let first = values.first().copied().flatten();
        if values.iter().any(|v| *v != first) {
            out.push(Anomaly {
                kind: "replicas disagree",
                key: key.clone(),
                expected: "the same value on every node (read at ONE)".into(),
                observed: values
                    .iter()
                    .map(|v| show(*v))
                    .collect::<Vec<_>>()
                    .join(" / "),
                at_ms: 0,
            });
        }
    }
    for c in counter_stats(history, fin) {
        let ok = c
            .total
            .is_some_and(|t| t >= c.acknowledged && t <= c.acknowledged + c.unknown)
            || (c.total.is_none() && c.acknowledged == 0);
        if !ok {
            out.push(Anomaly {
                kind: "counter out of bounds",
                key: c.key.clone(),
                expected: format!(
                    "{} acknowledged, up to {} more unknown",
                    c.acknowledged, c.unknown
                ),
                observed: show(c.total),
                at_ms: 0,
            });
        }
    }
    for (table, digests) in &fin.digests {
        if digests.iter().any(|d| Some(d) != digests.first()) {
            out.push(Anomaly {
                kind: "replica digests differ",
                key: table.clone(),
                expected: "the same table digest on every node".into(),
                observed: digests.join(" / "),
                at_ms: 0,
            });
        }
    }
    out
}

/// Each counter's total beside the increments of the history.
pub fn counter_stats(history: &[Op], fin: &FinalState) -> Vec<CounterStat> {
    fin.counters
        .iter()
        .map(|(key, total)| {
            let adds = history
                .iter()
                .filter(|o| o.kind == OpKind::CounterAdd && o.key == *key);
            let (mut acknowledged, mut unknown) = (0, 0);
            for a in adds {
                if a.outcome.is_ok() {
                    acknowledged += a.value;
                } else if a.outcome.maybe_applied() {
                    unknown += a.value;
                }
            }
            CounterStat {
                key: key.clone(),
                total: *total,
                acknowledged,
                unknown,
            }
        })
        .collect()
}

/// The linearizability check of every compare-and-set register: the
/// anomalies, and the keys whose search ran out of budget.
pub fn check_cas(history: &[Op]) -> (Vec<Anomaly>, Vec<String>) {
    let mut keys: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if matches!(op.kind, OpKind::CasRead | OpKind::Cas) {
            keys.entry(&op.key).or_default().push(op);
        }
    }
    let (mut out, mut unknown) = (Vec::new(), Vec::new());
    for (key, ops) in keys {
        let entries: Vec<Entry> = ops.iter().filter_map(|o| cas_entry(o)).collect();
        match linear::check(&entries, None, LINEAR_BUDGET) {
            Verdict::Linearizable => {}
            Verdict::Unknown { .. } => unknown.push(key.to_string()),
            Verdict::NotLinearizable {
                placed,
                required,
                stuck,
            } => {
                let (what, at) = entries.get(stuck).map_or((String::new(), 0), |e| {
                    (describe(&e.op), e.complete.map_or(0, ms))
                });
                out.push(Anomaly {
                    kind: "non-linearizable CAS history",
                    key: key.to_string(),
                    expected: format!("an order of all {required} acknowledged operations"),
                    observed: format!("at most {placed} ordered; none could place {what}"),
                    at_ms: at,
                });
            }
        }
    }
    (out, unknown)
}

/// An operation as the checker sees it; `None` for ones that say nothing
/// (an Unavailable write was never sent, a failed read saw nothing).
fn cas_entry(o: &Op) -> Option<Entry> {
    let complete = o.outcome.is_ok().then_some(o.complete);
    let op = match (o.kind, &o.outcome) {
        (OpKind::CasRead, Outcome::Ok(v)) => RegOp::Read(*v),
        (OpKind::Cas, outcome) if outcome.maybe_applied() => RegOp::Cas {
            cond: o.cond?,
            new: o.value,
            applied: if outcome.is_ok() { o.applied } else { None },
        },
        _ => return None,
    };
    // An acknowledged write without an `[applied]` column is unknown.
    let complete = match op {
        RegOp::Cas { applied: None, .. } => None,
        _ => complete,
    };
    Some(Entry {
        op,
        invoke: o.invoke,
        complete,
    })
}

fn describe(op: &RegOp) -> String {
    match op {
        RegOp::Read(v) => format!("a SERIAL read of {}", show(*v)),
        RegOp::Cas { cond, new, applied } => format!(
            "SET v = {new} {} ({})",
            cond.cql(),
            match applied {
                Some(true) => "applied",
                Some(false) => "not applied",
                None => "unknown",
            }
        ),
    }
}

fn check_register(key: &str, level: &str, v: Option<i64>, ws: &[&Op], out: &mut Vec<Anomaly>) {
    let last_acked = ws
        .iter()
        .filter(|w| w.outcome.is_ok())
        .max_by_key(|w| w.invoke);
    let Some(v) = v else {
        if let Some(a) = last_acked {
            out.push(Anomaly {
                kind: "lost write",
                key: key.into(),
                expected: format!("{} or later (acknowledged)", a.value),
                observed: format!("missing at {level}"),
                at_ms: ms(a.complete),
            });
        }
        return;
    };
    let Some(w) = ws
        .iter()
        .find(|w| w.value == v && w.outcome.maybe_applied())
    else {
        out.push(Anomaly {
            kind: "phantom value",
            key: key.into(),
            expected: "a value some write may have applied".into(),
            observed: format!("{v} at {level}"),
            at_ms: 0,
        });
        return;
    };
    // An acknowledged write invoked after an acknowledged `w` completed is
    // strictly later: last-write-wins must not have kept `w` over it (one
    // clock here). An indeterminate `w` may have been applied later still.
    if !w.outcome.is_ok() {
        return;
    }
    if let Some(a) = ws
        .iter()
        .filter(|a| a.outcome.is_ok() && a.invoke > w.complete)
        .max_by_key(|a| a.invoke)
    {
        out.push(Anomaly {
            kind: "stale value",
            key: key.into(),
            expected: format!("{} or later (acknowledged)", a.value),
            observed: format!("{v} at {level} (written before it)"),
            at_ms: ms(a.complete),
        });
    }
}

fn check_own(client: usize, key: &str, ops: &[&Op], out: &mut Vec<Anomaly>) {
    let mut ops: Vec<&&Op> = ops.iter().collect();
    ops.sort_by_key(|o| o.invoke);
    // Values of this client's indeterminate writes: they may surface late.
    let indeterminate: BTreeSet<i64> = ops
        .iter()
        .filter(|o| o.kind == OpKind::OwnWrite && !o.outcome.is_ok() && o.outcome.maybe_applied())
        .map(|o| o.value)
        .collect();
    let mut last_read: Option<i64> = None;
    let mut last_write: Option<i64> = None;
    // The previous read, when it saw a late indeterminate write: reading
    // that same value again is no news.
    let mut late: Option<Option<i64>> = None;
    let mut observed: BTreeSet<i64> = BTreeSet::new();
    for op in ops {
        match (&op.kind, &op.outcome) {
            (OpKind::OwnWrite, Outcome::Ok(_)) => last_write = last_write.max(Some(op.value)),
            (OpKind::OwnRead, Outcome::Ok(v)) => {
                let floor = last_read.max(last_write);
                // An indeterminate write seen for the first time may just
                // have taken effect, after later ones; once seen, it is
                // in effect like any other.
                let late_write =
                    v.is_some_and(|v| indeterminate.contains(&v) && !observed.contains(&v));
                let unchanged = late == Some(*v);
                if *v >= floor {
                    last_read = last_read.max(*v);
                } else if !unchanged && !late_write {
                    out.push(Anomaly {
                        kind: if *v < last_read {
                            "non-monotonic read"
                        } else {
                            "read missed own write"
                        },
                        key: format!("{key} (client {client})"),
                        expected: format!("{} or later", show(floor)),
                        observed: show(*v),
                        at_ms: ms(op.complete),
                    });
                }
                if let Some(v) = v {
                    observed.insert(*v);
                }
                late = (late_write || unchanged).then_some(*v);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn op(kind: OpKind, key: &str, value: i64, t: (u64, u64), outcome: Outcome) -> Op {
        Op {
            client: 0,
            kind,
            key: key.into(),
            value,
            invoke: Duration::from_millis(t.0),
            complete: Duration::from_millis(t.1),
            outcome,
            phase: "healthy".into(),
            cond: None,
            applied: None,
        }
    }

    fn fin_register(key: &str, v: Option<i64>) -> FinalState {
        FinalState {
            registers: BTreeMap::from([(key.to_string(), (v, v))]),
            ..Default::default()
        }
    }

    #[test]
    fn the_latest_acknowledged_write_or_a_concurrent_one_is_fine() {
        let h = vec![
            op(OpKind::Write, "r", 1, (0, 10), Outcome::Ok(None)),
            op(OpKind::Write, "r", 2, (20, 30), Outcome::Ok(None)),
            // Concurrent with 2 and timed out: may win.
            op(OpKind::Write, "r", 3, (25, 90), Outcome::Timeout),
        ];
        assert!(check(&h, &fin_register("r", Some(2))).is_empty());
        assert!(check(&h, &fin_register("r", Some(3))).is_empty());
        // A write the client gave up on may be applied after later ones
        // (a paused coordinator resumes and stamps it then).
        let h = vec![
            op(
                OpKind::Write,
                "r",
                1,
                (0, 8000),
                Outcome::Failed("timed out".into()),
            ),
            op(OpKind::Write, "r", 2, (8100, 8200), Outcome::Ok(None)),
        ];
        assert!(check(&h, &fin_register("r", Some(1))).is_empty());
    }

    #[test]
    fn an_older_value_missing_value_or_phantom_is_reported() {
        let h = vec![
            op(OpKind::Write, "r", 1, (0, 10), Outcome::Ok(None)),
            op(OpKind::Write, "r", 2, (20, 30), Outcome::Ok(None)),
            op(OpKind::Write, "r", 9, (40, 50), Outcome::Unavailable),
        ];
        let a = check(&h, &fin_register("r", Some(1)));
        assert_eq!(a.len(), 2, "{a:?}"); // at QUORUM and at ALL
        assert_eq!(a[0].kind, "stale value");
        assert_eq!(a[0].expected, "2 or later (acknowledged)");
        assert_eq!(check(&h, &fin_register("r", None))[0].kind, "lost write");
        // An Unavailable write was never sent: it cannot be the value.
        assert_eq!(
            check(&h, &fin_register("r", Some(9)))[0].kind,
            "phantom value"
        );
    }

    #[test]
    fn own_reads_never_go_backwards() {
        let h = vec![
            op(OpKind::OwnWrite, "m", 1, (0, 10), Outcome::Ok(None)),
            op(OpKind::OwnRead, "m", 0, (11, 12), Outcome::Ok(Some(1))),
            op(OpKind::OwnWrite, "m", 2, (13, 20), Outcome::Timeout),
            op(OpKind::OwnRead, "m", 0, (21, 22), Outcome::Ok(Some(2))),
            op(OpKind::OwnRead, "m", 0, (23, 24), Outcome::Ok(Some(1))),
            op(OpKind::OwnWrite, "m", 3, (25, 30), Outcome::Ok(None)),
            op(OpKind::OwnRead, "m", 0, (31, 32), Outcome::Ok(Some(2))),
            // A timed-out write surfacing late is not going backwards,
            // nor is reading it again.
            op(OpKind::OwnWrite, "m", 4, (33, 40), Outcome::Timeout),
            op(OpKind::OwnWrite, "m", 5, (41, 42), Outcome::Ok(None)),
            op(OpKind::OwnRead, "m", 0, (43, 44), Outcome::Ok(Some(5))),
            op(OpKind::OwnRead, "m", 0, (45, 46), Outcome::Ok(Some(4))),
            op(OpKind::OwnRead, "m", 0, (47, 48), Outcome::Ok(Some(4))),
            // But an old acknowledged value after a newer write is.
            op(OpKind::OwnWrite, "m", 6, (49, 50), Outcome::Ok(None)),
            op(OpKind::OwnRead, "m", 0, (51, 52), Outcome::Ok(Some(5))),
        ];
        let a = check(&h, &FinalState::default());
        let kinds: Vec<_> = a.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                "non-monotonic read",
                "read missed own write",
                "read missed own write"
            ],
            "{a:?}"
        );
    }

    #[test]
    fn cas_histories_and_counters() {
        use crate::chaos::linear::Cond;
        let cas = |cond, v, t, outcome, applied| Op {
            cond: Some(cond),
            applied,
            ..op(OpKind::Cas, "c0", v, t, outcome)
        };
        let ok = |v| Outcome::Ok(v);
        let mut h = vec![
            cas(Cond::NotExists, 1, (0, 10), ok(None), Some(true)),
            op(OpKind::CasRead, "c0", 0, (20, 30), ok(Some(1))),
            cas(Cond::Equals(1), 2, (40, 50), Outcome::Timeout, None),
            op(OpKind::CasRead, "c0", 0, (60, 70), ok(Some(2))),
            cas(Cond::Equals(2), 3, (80, 90), ok(None), Some(false)),
            // A read that failed says nothing.
            op(OpKind::CasRead, "c0", 0, (95, 99), Outcome::Timeout),
            op(OpKind::CounterAdd, "n0", 1, (0, 10), ok(None)),
            op(OpKind::CounterAdd, "n0", 1, (0, 10), Outcome::Timeout),
            op(OpKind::CounterAdd, "n0", 1, (0, 10), Outcome::Unavailable),
        ];
        let mut fin = FinalState {
            counters: BTreeMap::from([("n0".to_string(), Some(2))]),
            ..Default::default()
        };
        assert!(check(&h, &fin).is_empty());
        let (a, unchecked) = check_cas(&h);
        assert!(unchecked.is_empty());
        // The refused swap from 2 is the violation: the register held 2.
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].kind, "non-linearizable CAS history");
        assert!(a[0].observed.contains("IF v = 2 (not applied)"), "{a:?}");
        h[4].applied = Some(true);
        assert!(check_cas(&h).0.is_empty());
        // Counters: 1 acknowledged + 1 unknown allows 1 or 2, not 3 or 0.
        for (total, bad) in [(Some(1), false), (Some(3), true), (None, true)] {
            fin.counters.insert("n0".into(), total);
            let a = check(&h, &fin);
            assert_eq!(a.len(), usize::from(bad), "{total:?}: {a:?}");
        }
        let stats = counter_stats(&h, &fin);
        assert_eq!((stats[0].acknowledged, stats[0].unknown), (1, 1));
    }

    #[test]
    fn set_adds_and_replica_agreement() {
        let h = vec![
            op(OpKind::SetAdd, "s", 1, (0, 10), Outcome::Ok(None)),
            op(OpKind::SetAdd, "s", 2, (0, 10), Outcome::Timeout),
            op(OpKind::SetAdd, "s", 3, (0, 10), Outcome::Ok(None)),
        ];
        let fin = FinalState {
            sets: BTreeMap::from([("s".to_string(), BTreeSet::from([1, 2, 7]))]),
            per_node: BTreeMap::from([("r".to_string(), vec![Some(1), Some(1), None])]),
            digests: BTreeMap::from([
                ("sets".to_string(), vec!["a".into(), "a".into(), "b".into()]),
                (
                    "registers".to_string(),
                    vec!["c".into(), "c".into(), "c".into()],
                ),
            ]),
            ..Default::default()
        };
        let kinds: Vec<_> = check(&h, &fin).iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                "lost set add",
                "phantom set element",
                "replicas disagree",
                "replica digests differ"
            ]
        );
    }
}
