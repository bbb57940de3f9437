//! Compaction strategies: pure planners that look at a table's SSTables
//! (their sizes, levels, token ranges and timestamps) and choose the next
//! compaction task. They do no I/O and read no clock; the LSM engine's
//! executor runs the task (merge, split, install, delete) and calls the
//! planner again until it has nothing to do. That makes every strategy a
//! state machine a test can drive with simulated SSTables.
//!
//! - [`SizeTiered`]: Cassandra's STCS buckets of similar-sized SSTables.
//! - [`Leveled`]: LCS. Level 0 takes flushes; levels 1 and up are runs of
//!   non-overlapping SSTables of `sstable_size_bytes`, each level `fanout`
//!   times larger than the one before. Level 0 merges into level 1 once it
//!   holds `min_threshold` SSTables; beyond `max_threshold` it compacts
//!   size-tiered within itself first. A level over its size sends one
//!   SSTable (the one overlapping the fewest bytes below, relative to its
//!   own size) into the next level.
//! - [`TimeWindow`]: TWCS. SSTables are grouped into windows by their newest
//!   write; the newest window compacts size-tiered, an older window into one
//!   SSTable. SSTables whose data has all expired past gc grace, and that
//!   shadow nothing older elsewhere, are dropped whole without rewriting.
//!
//! Levels are recorded in each SSTable's metadata. The leveled planner does
//! not trust them blindly: an SSTable of level 1 or up that overlaps another
//! of its level (imported from a snapshot, or left from an interrupted
//! switch) is treated as level 0.

use std::collections::BTreeMap;
use std::fmt::Debug;

use gyre_common::{LocalTime, Timestamp, Token};

use crate::types::{CompactionOptions, LeveledOptions, SizeTieredOptions, TimeWindowOptions};

/// What a planner sees of one SSTable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsTableInfo {
    pub generation: u64,
    pub bytes: u64,
    pub level: u32,
    pub min_token: Token,
    pub max_token: Token,
    pub min_timestamp: Timestamp,
    pub max_timestamp: Timestamp,
    /// See [`crate::sstable::SsTableMeta::max_local_deletion_time`].
    pub max_local_deletion_time: LocalTime,
}

impl SsTableInfo {
    /// Whether the SSTable's token range meets `[lo, hi]` (a shared token
    /// counts: two partitions may share one).
    pub fn overlaps(&self, lo: Token, hi: Token) -> bool {
        self.min_token <= hi && lo <= self.max_token
    }
}

/// The rest of what a planner needs: time, and the memtables' data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanContext {
    pub now: LocalTime,
    /// Deletions before this time are past gc grace.
    pub gc_before: LocalTime,
    /// The oldest timestamp in the table's memtables (`Timestamp::MAX` when
    /// they are empty).
    pub memtable_min_timestamp: Timestamp,
}

/// A compaction for the executor to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompactionTask {
    /// Merge these SSTables, writing the output at `level`, split into
    /// SSTables of about `max_output_bytes` (one output when `None`).
    Merge {
        inputs: Vec<u64>,
        level: u32,
        max_output_bytes: Option<u64>,
    },
    /// Delete these SSTables whole: all their data has expired past gc
    /// grace and shadows nothing elsewhere.
    DropExpired { inputs: Vec<u64> },
}

impl CompactionTask {
    pub fn inputs(&self) -> &[u64] {
        match self {
            CompactionTask::Merge { inputs, .. } | CompactionTask::DropExpired { inputs } => inputs,
        }
    }
}

/// A compaction strategy: chooses the next task from the SSTable set.
pub trait CompactionStrategy: Send + Sync + Debug {
    /// Cassandra's class name of the strategy.
    fn name(&self) -> &'static str;

    /// The next background task, or `None` when the table is as the
    /// strategy wants it.
    fn next_task(&self, sstables: &[SsTableInfo], ctx: &PlanContext) -> Option<CompactionTask>;

    /// Bytes the strategy still has to compact before the table is as it
    /// wants it (like RocksDB's `estimate-pending-compaction-bytes`): the
    /// default counts the inputs of the next task only.
    fn pending_bytes(&self, sstables: &[SsTableInfo], ctx: &PlanContext) -> u64 {
        self.next_task(sstables, ctx).map_or(0, |t| {
            sstables
                .iter()
                .filter(|s| t.inputs().contains(&s.generation))
                .map(|s| s.bytes)
                .sum()
        })
    }

    /// A major compaction (`nodetool compact`): every SSTable merged.
    fn major_task(&self, sstables: &[SsTableInfo]) -> Option<CompactionTask> {
        if sstables.is_empty() {
            return None;
        }
        Some(CompactionTask::Merge {
            inputs: sstables.iter().map(|s| s.generation).collect(),
            level: 0,
            max_output_bytes: None,
        })
    }
}

/// The planner for a table's options.
pub fn strategy_for(options: &CompactionOptions) -> Box<dyn CompactionStrategy> {
    match options {
        CompactionOptions::SizeTiered(o) => Box::new(SizeTiered(o.clone())),
        CompactionOptions::Leveled(o) => Box::new(Leveled(o.clone())),
        CompactionOptions::TimeWindow(o) => Box::new(TimeWindow(o.clone())),
        CompactionOptions::None => Box::new(Disabled),
    }
}

/// No background compaction (`'enabled': 'false'`).
#[derive(Debug)]
pub struct Disabled;

impl CompactionStrategy for Disabled {
    fn name(&self) -> &'static str {
        "SizeTieredCompactionStrategy"
    }

    fn next_task(&self, _: &[SsTableInfo], _: &PlanContext) -> Option<CompactionTask> {
        None
    }
}

/// Cassandra's size-tiered compaction.
#[derive(Debug)]
pub struct SizeTiered(pub SizeTieredOptions);

impl CompactionStrategy for SizeTiered {
    fn name(&self) -> &'static str {
        "SizeTieredCompactionStrategy"
    }

    fn next_task(&self, sstables: &[SsTableInfo], _: &PlanContext) -> Option<CompactionTask> {
        plan_size_tiered(&self.0, sstables).map(|inputs| CompactionTask::Merge {
            inputs,
            level: 0,
            max_output_bytes: None,
        })
    }
}

/// Cassandra's size-tiered buckets: SSTables within [low, high] times a
/// bucket's average size (or all below `min_sstable_size`) share a bucket;
/// a bucket with at least `min_threshold` members is compacted, smallest
/// average first, at most `max_threshold` at a time.
pub fn plan_size_tiered(o: &SizeTieredOptions, sstables: &[SsTableInfo]) -> Option<Vec<u64>> {
    let mut sorted: Vec<&SsTableInfo> = sstables.iter().collect();
    sorted.sort_by_key(|c| (c.bytes, c.generation));
    let mut buckets: Vec<(f64, Vec<&SsTableInfo>)> = Vec::new();
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

/// The deepest level the leveled strategy fills.
pub const MAX_LEVEL: u32 = 8;

/// Cassandra's leveled compaction.
#[derive(Debug)]
pub struct Leveled(pub LeveledOptions);

impl Leveled {
    /// The bytes a level may hold: `sstable_size * fanout^level`.
    pub fn capacity(&self, level: u32) -> u64 {
        let mut c = self.0.sstable_size_bytes.max(1);
        for _ in 0..level {
            c = c.saturating_mul(u64::from(self.0.fanout.max(1)));
        }
        c
    }

    /// The SSTables of each level (index = level), with SSTables of level 1
    /// or up that overlap another of their level moved to level 0; each
    /// level above 0 is sorted by token.
    pub fn levels<'a>(&self, sstables: &'a [SsTableInfo]) -> Vec<Vec<&'a SsTableInfo>> {
        let mut levels: Vec<Vec<&SsTableInfo>> = vec![Vec::new(); MAX_LEVEL as usize + 1];
        for s in sstables {
            levels[s.level.min(MAX_LEVEL) as usize].push(s);
        }
        let mut demoted = Vec::new();
        for level in levels.iter_mut().skip(1) {
            level.sort_by_key(|s| (s.min_token, s.max_token, s.generation));
            let mut kept: Vec<&SsTableInfo> = Vec::with_capacity(level.len());
            for s in level.drain(..) {
                match kept.last() {
                    Some(prev) if s.min_token <= prev.max_token => demoted.push(s),
                    _ => kept.push(s),
                }
            }
            *level = kept;
        }
        levels[0].extend(demoted);
        levels[0].sort_by_key(|s| s.generation);
        levels
    }

    fn merge_into(&self, inputs: Vec<u64>, level: u32) -> CompactionTask {
        CompactionTask::Merge {
            inputs,
            level,
            max_output_bytes: Some(self.0.sstable_size_bytes),
        }
    }
}

fn overlapping<'a>(level: &[&'a SsTableInfo], lo: Token, hi: Token) -> Vec<&'a SsTableInfo> {
    level
        .iter()
        .filter(|s| s.overlaps(lo, hi))
        .copied()
        .collect()
}

impl CompactionStrategy for Leveled {
    fn name(&self) -> &'static str {
        "LeveledCompactionStrategy"
    }

    fn next_task(&self, sstables: &[SsTableInfo], _: &PlanContext) -> Option<CompactionTask> {
        let levels = self.levels(sstables);
        let l0 = &levels[0];
        // Level 0 backed up: merging it all into level 1 at once would be
        // one huge compaction, so it compacts size-tiered within itself.
        if l0.len() > self.0.max_threshold {
            let o = SizeTieredOptions {
                min_threshold: self.0.min_threshold,
                max_threshold: self.0.max_threshold,
                ..Default::default()
            };
            let l0_infos: Vec<SsTableInfo> = l0.iter().map(|s| (*s).clone()).collect();
            if let Some(inputs) = plan_size_tiered(&o, &l0_infos) {
                return Some(CompactionTask::Merge {
                    inputs,
                    level: 0,
                    max_output_bytes: None,
                });
            }
        }
        // The level most over its size sends one SSTable down.
        let mut worst: Option<(f64, usize)> = None;
        for (i, level) in levels
            .iter()
            .enumerate()
            .skip(1)
            .take(MAX_LEVEL as usize - 1)
        {
            let bytes: u64 = level.iter().map(|s| s.bytes).sum();
            let score = bytes as f64 / self.capacity(i as u32) as f64;
            if score > 1.0 && worst.is_none_or(|(w, _)| score > w) {
                worst = Some((score, i));
            }
        }
        if let Some((_, i)) = worst {
            let next = &levels[i + 1];
            // RocksDB's "min overlapping ratio": the least rewriting below
            // per byte moved down; the oldest first among equals.
            let pick = levels[i].iter().min_by(|a, b| {
                let ratio = |s: &SsTableInfo| {
                    let below: u64 = overlapping(next, s.min_token, s.max_token)
                        .iter()
                        .map(|o| o.bytes)
                        .sum();
                    below as f64 / s.bytes.max(1) as f64
                };
                ratio(a)
                    .total_cmp(&ratio(b))
                    .then(a.max_timestamp.cmp(&b.max_timestamp))
                    .then(a.generation.cmp(&b.generation))
            })?;
            let mut inputs = vec![pick.generation];
            inputs.extend(
                overlapping(next, pick.min_token, pick.max_token)
                    .iter()
                    .map(|s| s.generation),
            );
            return Some(self.merge_into(inputs, i as u32 + 1));
        }
        // Level 0 into level 1, oldest flushes first.
        let l0_bytes: u64 = l0.iter().map(|s| s.bytes).sum();
        if !l0.is_empty()
            && (l0.len() >= self.0.min_threshold.max(1) || l0_bytes >= self.0.sstable_size_bytes)
        {
            let chosen: Vec<&SsTableInfo> = l0
                .iter()
                .take(self.0.max_threshold.max(2))
                .copied()
                .collect();
            let lo = chosen.iter().map(|s| s.min_token).min()?;
            let hi = chosen.iter().map(|s| s.max_token).max()?;
            let mut inputs: Vec<u64> = chosen.iter().map(|s| s.generation).collect();
            inputs.extend(overlapping(&levels[1], lo, hi).iter().map(|s| s.generation));
            return Some(self.merge_into(inputs, 1));
        }
        None
    }

    /// Level 0 (once it would trigger a merge) plus every level's bytes
    /// over its capacity; what spills from one level is counted again at
    /// the next, as RocksDB estimates it.
    fn pending_bytes(&self, sstables: &[SsTableInfo], _: &PlanContext) -> u64 {
        let levels = self.levels(sstables);
        let l0_bytes: u64 = levels[0].iter().map(|s| s.bytes).sum();
        let mut pending = 0;
        let mut incoming = 0;
        if !levels[0].is_empty()
            && (levels[0].len() >= self.0.min_threshold.max(1)
                || l0_bytes >= self.0.sstable_size_bytes)
        {
            pending += l0_bytes;
            incoming = l0_bytes;
        }
        for (i, level) in levels.iter().enumerate().skip(1) {
            let bytes = level.iter().map(|s| s.bytes).sum::<u64>() + incoming;
            incoming = bytes.saturating_sub(self.capacity(i as u32));
            if i < MAX_LEVEL as usize {
                pending += incoming;
            }
        }
        pending
    }

    /// Everything merged into one run, at the first level it fits in.
    fn major_task(&self, sstables: &[SsTableInfo]) -> Option<CompactionTask> {
        if sstables.is_empty() {
            return None;
        }
        let total: u64 = sstables.iter().map(|s| s.bytes).sum();
        let level = (1..MAX_LEVEL)
            .find(|l| self.capacity(*l) >= total)
            .unwrap_or(MAX_LEVEL);
        Some(self.merge_into(sstables.iter().map(|s| s.generation).collect(), level))
    }
}

/// The SSTables that may be deleted whole: everything in them expired or
/// was deleted before `gc_before`, and their newest write is older than
/// the oldest write of every overlapping SSTable that stays and of the
/// memtables (so none of their tombstones still shadows something).
pub fn fully_expired(sstables: &[SsTableInfo], ctx: &PlanContext) -> Vec<u64> {
    let (candidates, staying): (Vec<&SsTableInfo>, Vec<&SsTableInfo>) = sstables
        .iter()
        .partition(|s| s.max_local_deletion_time < ctx.gc_before);
    candidates
        .into_iter()
        .filter(|c| {
            let oldest_elsewhere = staying
                .iter()
                .filter(|s| s.overlaps(c.min_token, c.max_token))
                .map(|s| s.min_timestamp)
                .fold(ctx.memtable_min_timestamp, Timestamp::min);
            c.max_timestamp < oldest_elsewhere
        })
        .map(|c| c.generation)
        .collect()
}

/// Cassandra's time-window compaction.
#[derive(Debug)]
pub struct TimeWindow(pub TimeWindowOptions);

impl TimeWindow {
    /// The window (its start, in seconds) of an SSTable's newest write.
    pub fn window_of(&self, s: &SsTableInfo) -> i64 {
        let per_second = self.0.timestamps_per_second.clamp(1, i64::MAX as u64) as i64;
        let secs = s.max_timestamp.div_euclid(per_second);
        let w = self.0.window_seconds.max(1) as i64;
        secs.div_euclid(w) * w
    }
}

impl CompactionStrategy for TimeWindow {
    fn name(&self) -> &'static str {
        "TimeWindowCompactionStrategy"
    }

    fn next_task(&self, sstables: &[SsTableInfo], ctx: &PlanContext) -> Option<CompactionTask> {
        let expired = fully_expired(sstables, ctx);
        if !expired.is_empty() {
            return Some(CompactionTask::DropExpired { inputs: expired });
        }
        let mut windows: BTreeMap<i64, Vec<SsTableInfo>> = BTreeMap::new();
        for s in sstables {
            windows
                .entry(self.window_of(s))
                .or_default()
                .push(s.clone());
        }
        let newest = *windows.keys().next_back()?;
        for (w, members) in windows.iter().rev() {
            let inputs = if *w == newest {
                plan_size_tiered(&self.0.size_tiered, members)
            } else if members.len() >= 2 {
                let mut m = members.clone();
                m.sort_by_key(|s| (s.bytes, s.generation));
                Some(
                    m.iter()
                        .take(self.0.size_tiered.max_threshold.max(2))
                        .map(|s| s.generation)
                        .collect(),
                )
            } else {
                None
            };
            if let Some(inputs) = inputs {
                return Some(CompactionTask::Merge {
                    inputs,
                    level: 0,
                    max_output_bytes: None,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sst(generation: u64, mb: u64) -> SsTableInfo {
        SsTableInfo {
            generation,
            bytes: mb << 20,
            level: 0,
            min_token: i64::MIN,
            max_token: i64::MAX,
            min_timestamp: 0,
            max_timestamp: 0,
            max_local_deletion_time: LocalTime::MAX,
        }
    }

    const CTX: PlanContext = PlanContext {
        now: 1_000_000,
        gc_before: 1_000_000,
        memtable_min_timestamp: Timestamp::MAX,
    };

    #[test]
    fn size_tiered_waits_for_four_similar() {
        let o = SizeTieredOptions::default();
        let three = [sst(1, 100), sst(2, 100), sst(3, 100)];
        assert_eq!(plan_size_tiered(&o, &three), None);
        let five = [
            sst(1, 100),
            sst(2, 110),
            sst(3, 95),
            sst(4, 1000),
            sst(5, 105),
        ];
        let mut got = plan_size_tiered(&o, &five).expect("plans");
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3, 5]);
    }

    #[test]
    fn small_sstables_share_a_bucket() {
        let o = SizeTieredOptions::default();
        let got =
            plan_size_tiered(&o, &[sst(1, 1), sst(2, 10), sst(3, 3), sst(4, 40)]).expect("plans");
        assert_eq!(got.len(), 4);
    }

    /// A simulated table: tasks are "executed" by replacing their inputs
    /// with outputs of the merged size (no purging) split as asked, token
    /// ranges spread evenly, so the strategies can be driven as state
    /// machines.
    struct Sim {
        sstables: Vec<SsTableInfo>,
        next_gen: u64,
        written: u64,
        flushed: u64,
    }

    impl Sim {
        fn new() -> Self {
            Sim {
                sstables: Vec::new(),
                next_gen: 1,
                written: 0,
                flushed: 0,
            }
        }

        fn flush(&mut self, bytes: u64, ts: Timestamp, ldt: LocalTime) {
            let g = self.next_gen;
            self.next_gen += 1;
            self.flushed += bytes;
            self.written += bytes;
            self.sstables.push(SsTableInfo {
                generation: g,
                bytes,
                level: 0,
                min_token: i64::MIN,
                max_token: i64::MAX,
                min_timestamp: ts,
                max_timestamp: ts,
                max_local_deletion_time: ldt,
            });
        }

        fn run(&mut self, task: &CompactionTask) {
            let inputs: Vec<SsTableInfo> = self
                .sstables
                .iter()
                .filter(|s| task.inputs().contains(&s.generation))
                .cloned()
                .collect();
            assert_eq!(inputs.len(), task.inputs().len(), "inputs exist: {task:?}");
            self.sstables
                .retain(|s| !task.inputs().contains(&s.generation));
            let CompactionTask::Merge {
                level,
                max_output_bytes,
                ..
            } = task
            else {
                return;
            };
            let total: u64 = inputs.iter().map(|s| s.bytes).sum();
            let lo = inputs.iter().map(|s| s.min_token).min().expect("inputs");
            let hi = inputs.iter().map(|s| s.max_token).max().expect("inputs");
            let n = max_output_bytes.map_or(1, |m| total.div_ceil(m).max(1));
            let span = (hi as i128 - lo as i128) / n as i128;
            for i in 0..n {
                let g = self.next_gen;
                self.next_gen += 1;
                let a = lo as i128 + span * i as i128 + i128::from(i > 0);
                let b = if i + 1 == n {
                    hi as i128
                } else {
                    lo as i128 + span * (i as i128 + 1)
                };
                self.written += total / n;
                self.sstables.push(SsTableInfo {
                    generation: g,
                    bytes: total / n,
                    level: *level,
                    min_token: a as i64,
                    max_token: b as i64,
                    min_timestamp: inputs.iter().map(|s| s.min_timestamp).min().expect("in"),
                    max_timestamp: inputs.iter().map(|s| s.max_timestamp).max().expect("in"),
                    max_local_deletion_time: inputs
                        .iter()
                        .map(|s| s.max_local_deletion_time)
                        .max()
                        .expect("in"),
                });
            }
        }

        /// Runs tasks until the strategy is satisfied; returns how many.
        fn settle(&mut self, s: &dyn CompactionStrategy, ctx: &PlanContext) -> usize {
            let mut n = 0;
            while let Some(t) = s.next_task(&self.sstables, ctx) {
                self.run(&t);
                n += 1;
                assert!(n < 10_000, "the strategy never settles");
            }
            n
        }
    }

    fn leveled(mb: u64, fanout: u32) -> Leveled {
        Leveled(LeveledOptions {
            sstable_size_bytes: mb << 20,
            fanout,
            ..Default::default()
        })
    }

    #[test]
    fn leveled_keeps_levels_non_overlapping_and_within_size() {
        let s = leveled(1, 4);
        let mut sim = Sim::new();
        for i in 0..300 {
            sim.flush(256 << 10, i, LocalTime::MAX);
            sim.settle(&s, &CTX);
            let levels = s.levels(&sim.sstables);
            assert!(levels[0].len() < 4, "level 0 drains: {}", levels[0].len());
            let recorded: usize = sim.sstables.iter().filter(|x| x.level > 0).count();
            let kept: usize = levels.iter().skip(1).map(Vec::len).sum();
            assert_eq!(recorded, kept, "no level overlaps itself");
            for (l, level) in levels.iter().enumerate().skip(1) {
                let bytes: u64 = level.iter().map(|x| x.bytes).sum();
                assert!(bytes <= s.capacity(l as u32), "level {l} over its size");
            }
        }
        assert!(s.levels(&sim.sstables)[2].len() > 1, "reaches level 2");
        let wa = sim.written as f64 / sim.flushed as f64;
        assert!(wa < 40.0, "write amplification {wa}");
    }

    #[test]
    fn leveled_pending_bytes_falls_to_zero_as_compaction_settles() {
        let s = leveled(1, 4);
        let mut sim = Sim::new();
        for i in 0..40 {
            sim.flush(512 << 10, i, LocalTime::MAX);
        }
        // 20 MiB in level 0: all of it pending, and what spills past
        // level 1 (4 MiB) counts again there; level 2 (16 MiB) holds it.
        let pending = s.pending_bytes(&sim.sstables, &CTX);
        assert_eq!(pending, (20 + 16) << 20);
        let mut last = pending;
        while let Some(t) = s.next_task(&sim.sstables, &CTX) {
            sim.run(&t);
            let now = s.pending_bytes(&sim.sstables, &CTX);
            assert!(now <= last + (1 << 20), "pending grows: {last} -> {now}");
            last = now;
        }
        assert_eq!(s.pending_bytes(&sim.sstables, &CTX), 0, "settled");
    }

    #[test]
    fn leveled_level0_backlog_compacts_size_tiered() {
        let s = leveled(1, 10);
        let mut sim = Sim::new();
        for i in 0..40 {
            sim.flush(100 << 10, i, LocalTime::MAX);
        }
        let t = s.next_task(&sim.sstables, &CTX).expect("a task");
        let CompactionTask::Merge { inputs, level, .. } = &t else {
            panic!("a merge: {t:?}")
        };
        assert_eq!(
            (*level, inputs.len()),
            (0, 32),
            "size-tiered within level 0"
        );
        sim.settle(&s, &CTX);
        assert!(s.levels(&sim.sstables)[0].is_empty());
    }

    #[test]
    fn leveled_demotes_overlapping_sstables_of_a_level() {
        let s = leveled(1, 10);
        let mut a = sst(1, 1);
        a.level = 1;
        let mut b = sst(2, 1);
        b.level = 1;
        let both = [a, b];
        let levels = s.levels(&both);
        assert_eq!((levels[0].len(), levels[1].len()), (1, 1));
    }

    #[test]
    fn switching_strategies_settles_both_ways() {
        let st = SizeTiered(SizeTieredOptions {
            min_sstable_size: 0,
            ..Default::default()
        });
        let lcs = leveled(1, 4);
        let mut sim = Sim::new();
        for i in 0..50 {
            sim.flush(512 << 10, i, LocalTime::MAX);
            sim.settle(&st, &CTX);
        }
        sim.settle(&lcs, &CTX);
        let before: u64 = sim.sstables.iter().map(|s| s.bytes).sum();
        assert!(s_levels_ok(&lcs, &sim.sstables));
        for i in 50..60 {
            sim.flush(512 << 10, i, LocalTime::MAX);
            sim.settle(&st, &CTX);
        }
        sim.settle(&lcs, &CTX);
        assert!(s_levels_ok(&lcs, &sim.sstables));
        let after: u64 = sim.sstables.iter().map(|s| s.bytes).sum();
        assert_eq!(after, before + 10 * (512 << 10), "no bytes lost");
    }

    fn s_levels_ok(s: &Leveled, sstables: &[SsTableInfo]) -> bool {
        let levels = s.levels(sstables);
        levels[0].len() < s.0.min_threshold
            && sstables.iter().filter(|x| x.level > 0).count()
                == levels.iter().skip(1).map(Vec::len).sum::<usize>()
    }

    #[test]
    fn leveled_major_compaction_picks_a_level_that_fits() {
        let s = leveled(1, 10);
        let t = s.major_task(&[sst(1, 5), sst(2, 20)]).expect("a task");
        assert_eq!(
            t,
            CompactionTask::Merge {
                inputs: vec![1, 2],
                level: 2,
                max_output_bytes: Some(1 << 20)
            }
        );
    }

    fn twcs(window_seconds: u64) -> TimeWindow {
        TimeWindow(TimeWindowOptions {
            window_seconds,
            ..Default::default()
        })
    }

    #[test]
    fn time_window_compacts_old_windows_into_one() {
        let s = twcs(3600);
        let mut sim = Sim::new();
        // Three hours of flushes, four an hour.
        for h in 0..3i64 {
            for q in 0..4i64 {
                sim.flush(1 << 20, (h * 3600 + q * 900) * 1_000_000, LocalTime::MAX);
            }
        }
        sim.settle(&s, &CTX);
        let mut windows: Vec<i64> = sim.sstables.iter().map(|x| s.window_of(x)).collect();
        windows.sort_unstable();
        assert_eq!(windows, vec![0, 3600, 7200], "one SSTable per window");
    }

    #[test]
    fn time_window_drops_expired_sstables_whole() {
        let s = twcs(60);
        let mut sim = Sim::new();
        // Written at t = 0..10 s with a TTL expiring at 100 + i.
        for i in 0..10i64 {
            sim.flush(1 << 20, i * 1_000_000, 100 + i);
        }
        // Live data written later overlaps but is newer: it is not shadowed.
        sim.flush(1 << 20, 50_000_000, LocalTime::MAX);
        let ctx = |t| PlanContext {
            now: t,
            gc_before: t,
            memtable_min_timestamp: Timestamp::MAX,
        };
        assert!(fully_expired(&sim.sstables, &ctx(100)).is_empty());
        assert_eq!(fully_expired(&sim.sstables, &ctx(105)).len(), 5);
        let t = s.next_task(&sim.sstables, &ctx(200)).expect("a task");
        assert_eq!(
            t,
            CompactionTask::DropExpired {
                inputs: (1..=10).collect()
            }
        );
        sim.run(&t);
        assert_eq!(sim.sstables.len(), 1);
        assert_eq!(sim.written, sim.flushed, "nothing rewritten");
    }

    #[test]
    fn expired_sstable_that_may_shadow_older_data_stays() {
        let mut old_live = sst(1, 1);
        old_live.min_timestamp = 5;
        old_live.max_timestamp = 5;
        let mut expired = sst(2, 1);
        expired.min_timestamp = 10;
        expired.max_timestamp = 10;
        expired.max_local_deletion_time = 0;
        assert!(fully_expired(&[old_live.clone(), expired.clone()], &CTX).is_empty());
        // Disjoint token ranges: nothing to shadow.
        old_live.max_token = 0;
        expired.min_token = 1;
        assert_eq!(fully_expired(&[old_live, expired.clone()], &CTX), vec![2]);
        // Older data in a memtable counts too.
        let ctx = PlanContext {
            memtable_min_timestamp: 3,
            ..CTX
        };
        assert!(fully_expired(&[expired], &ctx).is_empty());
    }
}
