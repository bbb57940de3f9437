//! Last-write-wins: the one place where Gyre decides which version of data
//! wins. The memtable, reads that merge SSTables, compaction and the
//! coordinator's replica reconciliation all call these functions, so every
//! path gives the same answer.
//!
//! The rules are Cassandra's (`Cells.reconcile`, `DeletionTime`):
//! - the higher timestamp wins;
//! - on equal timestamps a tombstone beats an expiring cell, which beats a
//!   plain live cell (CASSANDRA-14592: an expiring cell is treated as the
//!   tombstone it will become, so the answer does not depend on the clock);
//!   between two tombstones or two expiring cells the later local deletion
//!   time wins; otherwise the greater value bytes win;
//! - a deletion at timestamp T shadows everything in its scope written at or
//!   before T.

use std::cmp::Ordering;

use crate::model::{Cell, CellValue, Deletion, LocalTime, Partition, Row};

/// Orders two versions of the same cell: `Greater` when `a` wins.
pub fn compare_cells(a: &Cell, b: &Cell) -> Ordering {
    if a.timestamp != b.timestamp {
        return a.timestamp.cmp(&b.timestamp);
    }
    let rank = |c: &Cell| match c.value {
        CellValue::Live(_) => 0,
        CellValue::Expiring { .. } => 1,
        CellValue::Tombstone { .. } => 2,
    };
    rank(a)
        .cmp(&rank(b))
        .then_with(|| a.local_deletion_time().cmp(&b.local_deletion_time()))
        .then_with(|| value_bytes(a).cmp(value_bytes(b)))
}

fn value_bytes(c: &Cell) -> &[u8] {
    match &c.value {
        CellValue::Live(v) | CellValue::Expiring { value: v, .. } => v,
        CellValue::Tombstone { .. } => &[],
    }
}

/// Returns the winning version of a cell.
pub fn reconcile<'a>(a: &'a Cell, b: &'a Cell) -> &'a Cell {
    if compare_cells(a, b) == Ordering::Less {
        b
    } else {
        a
    }
}

/// Keeps in `into` the winner of `into` and `other`.
pub fn reconcile_into(into: &mut Cell, other: Cell) {
    if compare_cells(&other, into) == Ordering::Greater {
        *into = other;
    }
}

/// True when deletion `a` wins over `b` for the same scope.
pub fn deletion_supersedes(a: &Deletion, b: &Deletion) -> bool {
    (a.timestamp, a.deleted_at) > (b.timestamp, b.deleted_at)
}

/// Merges `other` into `into`, cell by cell.
pub fn merge_rows(into: &mut Row, other: Row) {
    into.deletion = Deletion::max(into.deletion, other.deletion);
    for (name, cell) in other.cells {
        match into.cells.entry(name) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(cell);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                reconcile_into(e.get_mut(), cell)
            }
        }
    }
}

/// Merges `other` into `into`: deletions keep the strongest, rows and cells
/// reconcile. Shadowed data is kept; [`purge_shadowed`] removes it.
pub fn merge_partitions(into: &mut Partition, other: Partition) {
    into.deletion = Deletion::max(into.deletion, other.deletion);
    for rt in other.range_tombstones {
        if !into.range_tombstones.contains(&rt) {
            into.range_tombstones.push(rt);
        }
    }
    match (&mut into.static_row, other.static_row) {
        (_, None) => {}
        (slot @ None, Some(r)) => *slot = Some(r),
        (Some(a), Some(b)) => merge_rows(a, b),
    }
    if into.rows.is_empty() {
        into.rows = other.rows;
        return;
    }
    for (ck, row) in other.rows {
        match into.rows.entry(ck) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(row);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => merge_rows(e.get_mut(), row),
        }
    }
}

/// Removes everything a deletion in the partition shadows: cells and row
/// deletions under a newer row, range or partition deletion, range
/// tombstones under the partition deletion. Deletions themselves are kept.
pub fn purge_shadowed(p: &mut Partition) {
    let pdel = p.deletion;
    if let Some(pd) = pdel {
        p.range_tombstones
            .retain(|rt| !pd.shadows(rt.deletion.timestamp));
    }
    dedup_range_tombstones(p);
    if let Some(row) = &mut p.static_row {
        purge_row(row, pdel);
        if row.is_empty() {
            p.static_row = None;
        }
    }
    let rts = &p.range_tombstones;
    p.rows.retain(|ck, row| {
        let mut del = pdel;
        for rt in rts {
            if rt.slice.contains(ck) {
                del = Deletion::max(del, Some(rt.deletion));
            }
        }
        purge_row(row, del);
        !row.is_empty()
    });
}

fn dedup_range_tombstones(p: &mut Partition) {
    if p.range_tombstones.len() < 2 {
        return;
    }
    // A tombstone over the same slice as a stronger one adds nothing.
    let mut kept: Vec<crate::model::RangeTombstone> = Vec::with_capacity(p.range_tombstones.len());
    for rt in p.range_tombstones.drain(..) {
        match kept.iter_mut().find(|k| k.slice == rt.slice) {
            Some(k) => {
                if deletion_supersedes(&rt.deletion, &k.deletion) {
                    k.deletion = rt.deletion;
                }
            }
            None => kept.push(rt),
        }
    }
    p.range_tombstones = kept;
}

/// Drops from `row` what `outer` (the strongest deletion covering the row
/// from above) or the row's own deletion shadows.
fn purge_row(row: &mut Row, outer: Option<Deletion>) {
    if let (Some(o), Some(d)) = (outer, row.deletion) {
        if o.shadows(d.timestamp) {
            row.deletion = None;
        }
    }
    let effective = Deletion::max(outer, row.deletion);
    if let Some(d) = effective {
        row.cells.retain(|_, c| !d.shadows(c.timestamp));
    }
}

/// The partition as a client sees it at `now`: shadowed data, tombstones and
/// expired cells removed, rows without a live cell dropped.
pub fn live_view(p: &Partition, now: LocalTime) -> Partition {
    let mut out = p.clone();
    purge_shadowed(&mut out);
    out.deletion = None;
    out.range_tombstones.clear();
    let live_row = |r: &mut Row| {
        r.deletion = None;
        r.cells.retain(|_, c| c.is_live(now));
    };
    if let Some(r) = &mut out.static_row {
        live_row(r);
        if r.cells.is_empty() {
            out.static_row = None;
        }
    }
    out.rows.retain(|_, r| {
        live_row(r);
        !r.cells.is_empty()
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CellName, Slice};

    #[test]
    fn higher_timestamp_wins() {
        let a = Cell::live(2, "a");
        let b = Cell::live(1, "z");
        assert_eq!(reconcile(&a, &b), &a);
        assert_eq!(reconcile(&b, &a), &a);
    }

    #[test]
    fn equal_timestamp_tombstone_beats_live_and_expiring() {
        let live = Cell::live(5, "zzz");
        let exp = Cell::expiring(5, "zzz", 10, 100);
        let tomb = Cell::tombstone(5, 0);
        assert_eq!(reconcile(&live, &tomb), &tomb);
        assert_eq!(reconcile(&tomb, &exp), &tomb);
        assert_eq!(reconcile(&live, &exp), &exp);
    }

    #[test]
    fn equal_timestamp_greater_value_wins_either_order() {
        let a = Cell::live(5, "abc");
        let b = Cell::live(5, "abd");
        assert_eq!(reconcile(&a, &b), &b);
        assert_eq!(reconcile(&b, &a), &b);
    }

    #[test]
    fn deletion_shadows_equal_timestamp() {
        let p = Partition::with_key("k")
            .set("r1", CellName::simple("c"), Cell::live(10, "v"))
            .set("r2", CellName::simple("c"), Cell::live(11, "v"))
            .delete_range(Slice::prefix("r"), Deletion::new(10, 0));
        let v = live_view(&p, 0);
        assert_eq!(
            v.rows.keys().collect::<Vec<_>>(),
            vec![&bytes::Bytes::from("r2")]
        );
    }

    #[test]
    fn expired_cell_is_not_live() {
        let p = Partition::with_key("k").set(
            "r",
            CellName::simple("c"),
            Cell::expiring(1, "v", 10, 100),
        );
        assert_eq!(live_view(&p, 109).rows.len(), 1);
        assert!(live_view(&p, 110).rows.is_empty());
    }
}
