//! Compaction: merging SSTables, and the strategies that choose which.
//!
//! A strategy only plans (which SSTables to merge); the merge itself, with
//! its purging rules, is shared. Size-tiered is the one strategy so far;
//! leveled and time-window planners would be further variants of
//! [`CompactionOptions`] with their own `plan` function.

use gyre_common::{lww, CellValue, DecoratedKey, Deletion, LocalTime, Partition, Row, Timestamp};

use crate::types::{CompactionOptions, SizeTieredOptions};
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

/// What the planner sees of an SSTable.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub generation: u64,
    pub bytes: u64,
}

/// Chooses SSTables for a background compaction, if any should run.
pub fn plan(options: &CompactionOptions, sstables: &[Candidate]) -> Option<Vec<u64>> {
    match options {
        CompactionOptions::SizeTiered(o) => plan_size_tiered(o, sstables),
        CompactionOptions::None => None,
    }
}

/// Cassandra's size-tiered buckets: SSTables within [low, high] times a
/// bucket's average size (or all below `min_sstable_size`) share a bucket;
/// a bucket with at least `min_threshold` members is compacted, smallest
/// average first, at most `max_threshold` at a time.
pub fn plan_size_tiered(o: &SizeTieredOptions, sstables: &[Candidate]) -> Option<Vec<u64>> {
    let mut sorted = sstables.to_vec();
    sorted.sort_by_key(|c| c.bytes);
    let mut buckets: Vec<(f64, Vec<Candidate>)> = Vec::new();
    for c in sorted {
        let size = c.bytes as f64;
        let fit = buckets.iter_mut().find(|(avg, _)| {
            (size > avg * o.bucket_low && size < avg * o.bucket_high)
                || (c.bytes < o.min_sstable_size && *avg < o.min_sstable_size as f64)
        });
        match fit {
            Some((avg, members)) => {
                *avg = (*avg * members.len() as f64 + size) / (members.len() + 1) as f64;
                members.push(c);
            }
            None => buckets.push((size, vec![c])),
        }
    }
    buckets
        .into_iter()
        .filter(|(_, m)| m.len() >= o.min_threshold.max(2))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, m)| {
            m.iter()
                .take(o.max_threshold.max(2))
                .map(|c| c.generation)
                .collect()
        })
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

    fn c(generation: u64, mb: u64) -> Candidate {
        Candidate {
            generation,
            bytes: mb << 20,
        }
    }

    #[test]
    fn size_tiered_waits_for_four_similar() {
        let o = SizeTieredOptions::default();
        assert_eq!(
            plan_size_tiered(&o, &[c(1, 100), c(2, 100), c(3, 100)]),
            None
        );
        let mut got =
            plan_size_tiered(&o, &[c(1, 100), c(2, 110), c(3, 95), c(4, 1000), c(5, 105)])
                .expect("plans");
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3, 5]);
    }

    #[test]
    fn small_sstables_share_a_bucket() {
        let o = SizeTieredOptions::default();
        let got = plan_size_tiered(&o, &[c(1, 1), c(2, 10), c(3, 3), c(4, 40)]).expect("plans");
        assert_eq!(got.len(), 4);
    }

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
