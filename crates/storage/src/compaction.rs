//! Compaction: merging sorted partition streams, and the purge rules.
//!
//! The merge is shared by reads, scans and compaction; which SSTables a
//! compaction merges is the strategies' business ([`crate::strategy`]).

use gyre_common::{lww, CellValue, DecoratedKey, Deletion, LocalTime, Partition, Row, Timestamp};

use crate::Result;

/// One input to a merge: a sorted stream of partitions.
pub type Source<'a> = Box<dyn FnMut() -> Result<Option<Partition>> + 'a>;

/// Merges sorted partition streams into one sorted stream, reconciling
/// partitions with the same key.
pub struct MergeIter<'a> {
    sources: Vec<Source<'a>>,
    heads: Vec<Option<Partition>>,
    primed: bool,
}

impl<'a> MergeIter<'a> {
    pub fn new(sources: Vec<Source<'a>>) -> Self {
        let heads = sources.iter().map(|_| None).collect();
        MergeIter {
            sources,
            heads,
            primed: false,
        }
    }

    pub fn next_partition(&mut self) -> Result<Option<Partition>> {
        if !self.primed {
            for (i, s) in self.sources.iter_mut().enumerate() {
                self.heads[i] = s()?;
            }
            self.primed = true;
        }
        let Some(min) = self.heads.iter().flatten().map(|p| &p.key).min().cloned() else {
            return Ok(None);
        };
        let mut out: Option<Partition> = None;
        for i in 0..self.heads.len() {
            if self.heads[i].as_ref().is_some_and(|p| p.key == min) {
                let p = self.heads[i].take().expect("checked above");
                self.heads[i] = (self.sources[i])()?;
                match &mut out {
                    None => out = Some(p),
                    Some(acc) => lww::merge_partitions(acc, p),
                }
            }
        }
        Ok(out)
    }
}

/// Merges SSTables row by row: [`Self::next_partition`] gives the next
/// partition's merged header (deletion, range tombstones, static row; no
/// rows), then [`Self::next_row`] its merged rows in clustering order. Only
/// one row per input is held, so a partition of any width merges in
/// bounded memory.
pub struct RowMerge<'a> {
    sources: Vec<crate::sstable::SsTableRowIter<'a>>,
    /// Each source's next partition header.
    heads: Vec<Option<Partition>>,
    /// Sources whose header was taken: refilled once their rows are done.
    refill: Vec<usize>,
    /// Sources holding the current partition, with their next row.
    active: Vec<(usize, Option<(bytes::Bytes, Row)>)>,
    primed: bool,
}

impl<'a> RowMerge<'a> {
    pub fn new(sources: Vec<crate::sstable::SsTableRowIter<'a>>) -> Self {
        let heads = sources.iter().map(|_| None).collect();
        RowMerge {
            sources,
            heads,
            refill: Vec::new(),
            active: Vec::new(),
            primed: false,
        }
    }

    pub fn next_partition(&mut self) -> Result<Option<Partition>> {
        if !self.primed {
            for (i, s) in self.sources.iter_mut().enumerate() {
                self.heads[i] = s.next_header()?;
            }
            self.primed = true;
        }
        self.active.clear();
        // Sources of the last partition skip whatever rows were not read.
        for i in std::mem::take(&mut self.refill) {
            self.heads[i] = self.sources[i].next_header()?;
        }
        let Some(min) = self.heads.iter().flatten().map(|p| &p.key).min().cloned() else {
            return Ok(None);
        };
        let mut out: Option<Partition> = None;
        for i in 0..self.heads.len() {
            if self.heads[i].as_ref().is_some_and(|p| p.key == min) {
                let p = self.heads[i].take().expect("checked above");
                self.refill.push(i);
                let first = self.sources[i].next_row()?;
                self.active.push((i, first));
                match &mut out {
                    None => out = Some(p),
                    Some(acc) => lww::merge_partitions(acc, p),
                }
            }
        }
        Ok(out)
    }

    /// The current partition's next row, merged across sources.
    pub fn next_row(&mut self) -> Result<Option<(bytes::Bytes, Row)>> {
        let Some(min) = self
            .active
            .iter()
            .filter_map(|(_, r)| r.as_ref().map(|(ck, _)| ck))
            .min()
            .cloned()
        else {
            return Ok(None);
        };
        let mut out: Option<Row> = None;
        for (i, slot) in &mut self.active {
            if slot.as_ref().is_some_and(|(ck, _)| *ck == min) {
                let (_, row) = slot.take().expect("checked above");
                *slot = self.sources[*i].next_row()?;
                match &mut out {
                    None => out = Some(row),
                    Some(acc) => lww::merge_rows(acc, row),
                }
            }
        }
        Ok(out.map(|r| (min, r)))
    }
}

/// Rewrites a merged partition for compaction output: drops shadowed data,
/// turns expired cells into tombstones, and purges deletions older than gc
/// grace whose timestamp is below `max_purgeable` (the oldest write that
/// data outside this compaction may hold for the key; a deletion at or above
/// it may still shadow something there, so it stays).
pub fn compact_partition(
    mut p: Partition,
    now: LocalTime,
    gc_before: LocalTime,
    max_purgeable: Timestamp,
) -> Option<Partition> {
    lww::purge_shadowed(&mut p);
    let purgeable = |d: &Deletion| d.deleted_at < gc_before && d.timestamp < max_purgeable;
    if p.deletion.as_ref().is_some_and(purgeable) {
        p.deletion = None;
    }
    p.range_tombstones.retain(|rt| !purgeable(&rt.deletion));
    let fix_row = |r: &mut Row| {
        if r.deletion.as_ref().is_some_and(purgeable) {
            r.deletion = None;
        }
        r.cells.retain(|_, c| {
            if let Some(t) = c.expired_to_tombstone(now) {
                *c = t;
            }
            match c.value {
                CellValue::Tombstone { deleted_at } => {
                    !purgeable(&Deletion::new(c.timestamp, deleted_at))
                }
                _ => true,
            }
        });
    };
    if let Some(r) = &mut p.static_row {
        fix_row(r);
        if r.is_empty() {
            p.static_row = None;
        }
    }
    p.rows.retain(|_, r| {
        fix_row(r);
        !r.is_empty()
    });
    if p.is_empty() {
        None
    } else {
        Some(p)
    }
}

/// The least timestamp another source may hold for `key`.
pub fn min_timestamp_outside<'a>(
    key: &DecoratedKey,
    others: impl Iterator<Item = &'a crate::sstable::SsTable>,
    memtable_min: Timestamp,
) -> Timestamp {
    others
        .filter(|s| s.may_contain(key))
        .map(|s| s.meta.min_timestamp)
        .fold(memtable_min, Timestamp::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purges_only_past_gc_grace_and_below_max_purgeable() {
        use gyre_common::{Cell, CellName};
        let p = Partition::with_key("k")
            .set("a", CellName::simple("c"), Cell::tombstone(10, 100))
            .set("b", CellName::simple("c"), Cell::tombstone(10, 200));
        let out = compact_partition(p.clone(), 300, 150, i64::MAX).expect("keeps b");
        assert_eq!(out.rows.len(), 1);
        // Older data elsewhere (timestamp 5) may be shadowed: keep everything.
        let out = compact_partition(p, 300, 150, 5).expect("keeps both");
        assert_eq!(out.rows.len(), 2);
    }
}
