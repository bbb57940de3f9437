//! Range reads: which token ranges one request covers, and how the pages
//! several replicas returned for the same range become one answer.
//!
//! Each replica stops at its own `max_rows`, so where two replicas disagree
//! they stop at different places. The merged page is only complete up to
//! the earliest place a replica stopped (the "cut"): everything after it is
//! dropped and read again from there.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use gyre_common::{lww, DecoratedKey, Partition, Token};
use gyre_storage::{ScanPage, ScanStart};

use crate::read::repair_diff;

/// Where a scan position sits, for ordering: (token, key, clustering)
/// where `None` past a component means "after all of them".
#[derive(Debug, PartialEq, Eq)]
struct Pos<'a> {
    token: Token,
    /// `None`: after every key of this token.
    key: Option<&'a Bytes>,
    /// `None`: after every row of this key.
    after: Option<&'a Bytes>,
}

fn pos(s: &ScanStart) -> Pos<'_> {
    match s {
        ScanStart::Token(Bound::Unbounded) => Pos {
            token: Token::MIN,
            key: Some(&EMPTY),
            after: Some(&EMPTY),
        },
        ScanStart::Token(Bound::Included(t)) => Pos {
            token: *t,
            key: Some(&EMPTY),
            after: Some(&EMPTY),
        },
        ScanStart::Token(Bound::Excluded(t)) => Pos {
            token: *t,
            key: None,
            after: None,
        },
        ScanStart::After(k) => Pos {
            token: k.token,
            key: Some(&k.key),
            after: None,
        },
        ScanStart::Within { key, after, .. } => Pos {
            token: key.token,
            key: Some(&key.key),
            after: Some(after),
        },
    }
}

static EMPTY: Bytes = Bytes::from_static(b"");

/// `None` sorts after every `Some`.
fn cmp_last<T: Ord>(a: Option<T>, b: Option<T>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => a.cmp(&b),
    }
}

fn cmp_pos(a: &Pos<'_>, b: &Pos<'_>) -> Ordering {
    a.token
        .cmp(&b.token)
        .then_with(|| cmp_last(a.key, b.key))
        .then_with(|| cmp_last(a.after, b.after))
}

/// The part of `p` at or before `cut` (`None`: all of it).
fn clip(p: Partition, cut: &ScanStart) -> Option<Partition> {
    let c = pos(cut);
    let key_cmp = p
        .key
        .token
        .cmp(&c.token)
        .then_with(|| cmp_last(Some(&p.key.key), c.key));
    match key_cmp {
        Ordering::Less => Some(p),
        Ordering::Greater => None,
        Ordering::Equal => match c.after {
            None => Some(p),
            Some(after) => {
                let mut p = p;
                p.rows.retain(|ck, _| ck <= after);
                Some(p)
            }
        },
    }
}

/// The merged answer of one range request.
#[derive(Debug, Default)]
pub(crate) struct MergedRange {
    /// Reconciled partitions in token order, up to the cut.
    pub partitions: Vec<Partition>,
    /// Where the answer stops short of the requested range's end (the
    /// earliest place a replica stopped); `None`: the range is complete.
    pub cut: Option<ScanStart>,
    /// Per replica (index into the input), the mutation bringing it up to
    /// date with the answer.
    pub repairs: Vec<(usize, Vec<Partition>)>,
}

/// Reconciles the pages replicas returned for one range request.
pub(crate) fn merge_range_pages(pages: Vec<ScanPage>) -> MergedRange {
    let cut = pages
        .iter()
        .filter_map(|p| p.resume.as_ref())
        .min_by(|a, b| cmp_pos(&pos(a), &pos(b)))
        .cloned();
    let clipped: Vec<Vec<Partition>> = pages
        .into_iter()
        .map(|page| {
            page.partitions
                .into_iter()
                .filter_map(|p| match &cut {
                    Some(c) => clip(p, c),
                    None => Some(p),
                })
                .collect()
        })
        .collect();
    let mut merged: BTreeMap<DecoratedKey, Partition> = BTreeMap::new();
    for parts in &clipped {
        for p in parts {
            match merged.get_mut(&p.key) {
                Some(into) => lww::merge_partitions(into, p.clone()),
                None => {
                    merged.insert(p.key.clone(), p.clone());
                }
            }
        }
    }
    let mut repairs = Vec::new();
    if clipped.len() > 1 {
        for (i, parts) in clipped.iter().enumerate() {
            let mine: BTreeMap<&DecoratedKey, &Partition> =
                parts.iter().map(|p| (&p.key, p)).collect();
            let diffs: Vec<Partition> = merged
                .values()
                .filter_map(|m| repair_diff(m, mine.get(&m.key).copied()))
                .collect();
            if !diffs.is_empty() {
                repairs.push((i, diffs));
            }
        }
    }
    MergedRange {
        partitions: merged.into_values().collect(),
        cut,
        repairs,
    }
}

/// Whether a scan that has reached `start` has nothing left before `end`.
pub(crate) fn past_end(start: &ScanStart, end: &Bound<Token>) -> bool {
    let p = pos(start);
    match end {
        Bound::Unbounded => false,
        Bound::Included(e) => p.token > *e || (p.token == *e && p.key.is_none()),
        Bound::Excluded(e) => p.token >= *e,
    }
}

/// The smaller of two range ends.
pub(crate) fn min_end(a: Bound<Token>, b: Bound<Token>) -> Bound<Token> {
    let key = |x: &Bound<Token>| match x {
        // (token, 0 for excluded < 1 for included)
        Bound::Excluded(t) => (Some(*t), 0),
        Bound::Included(t) => (Some(*t), 1),
        Bound::Unbounded => (None, 0),
    };
    let (ka, kb) = (key(&a), key(&b));
    match (ka.0, kb.0) {
        (None, _) => b,
        (_, None) => a,
        _ if ka <= kb => a,
        _ => b,
    }
}

/// The first token a scan from `start` may return, and whether it is
/// excluded.
pub(crate) fn start_token(start: &ScanStart) -> (Token, bool) {
    match start {
        ScanStart::Token(Bound::Unbounded) => (Token::MIN, false),
        ScanStart::Token(Bound::Included(t)) => (*t, false),
        ScanStart::Token(Bound::Excluded(t)) => (*t, true),
        ScanStart::After(k) => (k.token, false),
        ScanStart::Within { key, .. } => (key.token, false),
    }
}

/// Appends `p` to `out`, merging it into the last partition when it is the
/// same key (a page that resumed inside a partition).
pub(crate) fn append_partition(out: &mut Vec<Partition>, p: Partition) {
    match out.last_mut() {
        Some(last) if last.key == p.key => lww::merge_partitions(last, p),
        _ => out.push(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_common::{Cell, CellName};

    fn part(key: &str, rows: &[(&str, i64)]) -> Partition {
        let mut p = Partition::with_key(Bytes::copy_from_slice(key.as_bytes()));
        for (ck, ts) in rows {
            p = p.set(
                Bytes::copy_from_slice(ck.as_bytes()),
                CellName::simple("v"),
                Cell::live(*ts, "x"),
            );
        }
        p
    }

    fn sorted(mut v: Vec<Partition>) -> Vec<Partition> {
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    #[test]
    fn agreeing_complete_pages_merge_without_repairs() {
        let ps = sorted(vec![part("a", &[("1", 1)]), part("b", &[("1", 1)])]);
        let m = merge_range_pages(vec![
            ScanPage {
                partitions: ps.clone(),
                resume: None,
            },
            ScanPage {
                partitions: ps.clone(),
                resume: None,
            },
        ]);
        assert_eq!(m.partitions, ps);
        assert!(m.cut.is_none());
        assert!(m.repairs.is_empty());
    }

    #[test]
    fn answer_stops_at_the_earliest_replica_stop_and_repairs_the_rest() {
        let ps = sorted(vec![
            part("a", &[("1", 1)]),
            part("b", &[("1", 1)]),
            part("c", &[("1", 1)]),
        ]);
        // Replica 0 stopped after its first partition; replica 1 lacks it
        // and returned the other two.
        let first = ps[0].clone();
        let m = merge_range_pages(vec![
            ScanPage {
                partitions: vec![first.clone()],
                resume: Some(ScanStart::After(first.key.clone())),
            },
            ScanPage {
                partitions: ps[1..].to_vec(),
                resume: None,
            },
        ]);
        assert_eq!(m.partitions, vec![first.clone()]);
        assert_eq!(m.cut, Some(ScanStart::After(first.key.clone())));
        assert_eq!(m.repairs, vec![(1, vec![first])]);
    }

    #[test]
    fn a_cut_inside_a_partition_keeps_rows_up_to_it() {
        let p = part("a", &[("1", 1), ("2", 1), ("3", 1)]);
        let m = merge_range_pages(vec![
            ScanPage {
                partitions: vec![part("a", &[("1", 1), ("2", 1)])],
                resume: Some(ScanStart::Within {
                    key: p.key.clone(),
                    after: Bytes::from_static(b"2"),
                    returned: 2,
                }),
            },
            ScanPage {
                partitions: vec![p.clone()],
                resume: None,
            },
        ]);
        assert_eq!(m.partitions, vec![part("a", &[("1", 1), ("2", 1)])]);
        assert!(m.repairs.is_empty());
    }

    #[test]
    fn newer_cells_win_and_stale_replicas_get_them() {
        let m = merge_range_pages(vec![
            ScanPage {
                partitions: vec![part("a", &[("1", 5)])],
                resume: None,
            },
            ScanPage {
                partitions: vec![part("a", &[("1", 9)])],
                resume: None,
            },
        ]);
        assert_eq!(m.partitions, vec![part("a", &[("1", 9)])]);
        assert_eq!(m.repairs, vec![(0, vec![part("a", &[("1", 9)])])]);
    }

    #[test]
    fn range_ends() {
        assert!(past_end(
            &ScanStart::Token(Bound::Excluded(5)),
            &Bound::Included(5)
        ));
        assert!(!past_end(
            &ScanStart::Token(Bound::Included(5)),
            &Bound::Included(5)
        ));
        assert!(past_end(
            &ScanStart::Token(Bound::Included(5)),
            &Bound::Excluded(5)
        ));
        assert!(!past_end(
            &ScanStart::Token(Bound::Excluded(5)),
            &Bound::Unbounded
        ));
        assert_eq!(
            min_end(Bound::Included(3), Bound::Unbounded),
            Bound::Included(3)
        );
        assert_eq!(
            min_end(Bound::Included(3), Bound::Excluded(3)),
            Bound::Excluded(3)
        );
        assert_eq!(
            min_end(Bound::Included(9), Bound::Included(3)),
            Bound::Included(3)
        );
    }
}
