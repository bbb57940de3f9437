//! The conformance suite every [`StorageEngine`] must pass.
//!
//! The model test applies random sequences of writes, TTL writes, deletions
//! at every level, flushes, compactions, restarts and clock moves to an
//! engine and to a plain in-memory model (a `BTreeMap` of partitions merged
//! by the same LWW rule), and compares every read and every paged scan as a
//! client would see it. Engines call [`run_model_test`] from their own test
//! files with a function that opens them; failures shrink to a short
//! sequence, which should be pinned as a plain test with [`run_ops`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use gyre_common::{
    lww, Cell, CellName, DecoratedKey, Deletion, LocalTime, Partition, Slice, SliceBound, Timestamp,
};
use proptest::prelude::*;

use crate::engine::finish_read;
use crate::{
    ClusteringFilter, ColumnFilter, CompactionOptions, LeveledOptions, ManualClock, ReadFilter,
    ScanRequest, ScanStart, SizeTieredOptions, StorageEngine, TableId, TableOptions,
    TimeWindowOptions,
};

/// Opens an engine over a directory with the given clock. Called again on
/// the same directory to restart it.
pub type Opener = dyn Fn(&Path, Arc<ManualClock>) -> crate::Result<Box<dyn StorageEngine>>;

/// Gc grace of the tables the suite creates: short, so purging is exercised.
pub const GC_GRACE: u32 = 10;
const START_TIME: LocalTime = 1_000_000;

/// One step of a model test.
#[derive(Clone, Debug)]
pub enum Op {
    Write {
        key: u8,
        row: Option<(u8, u8)>,
        column: u8,
        path: Option<u8>,
        value: u8,
        ts_skew: u16,
        ttl: Option<u8>,
    },
    DeleteCell {
        key: u8,
        row: Option<(u8, u8)>,
        column: u8,
        ts_skew: u16,
    },
    DeleteRow {
        key: u8,
        row: (u8, u8),
        ts_skew: u16,
    },
    DeleteRange {
        key: u8,
        start: BoundSpec,
        end: BoundSpec,
        ts_skew: u16,
    },
    DeletePartition {
        key: u8,
        ts_skew: u16,
    },
    Flush,
    Compact,
    Restart,
    AdvanceTime(u8),
    /// Switches the table to [`compaction_choice`] of this (ALTER TABLE on
    /// a live table).
    SetCompaction(u8),
    Read {
        key: u8,
        filter: FilterSpec,
    },
    Scan {
        page: u8,
        filter: FilterSpec,
    },
}

/// A clustering bound over the two-component keys the suite uses.
#[derive(Clone, Debug)]
pub enum BoundSpec {
    Unbounded,
    Inclusive(Vec<u8>),
    Exclusive(Vec<u8>),
}

impl BoundSpec {
    fn to_bound(&self) -> SliceBound {
        match self {
            BoundSpec::Unbounded => SliceBound::Unbounded,
            BoundSpec::Inclusive(b) => SliceBound::Inclusive(Bytes::copy_from_slice(b)),
            BoundSpec::Exclusive(b) => SliceBound::Exclusive(Bytes::copy_from_slice(b)),
        }
    }
}

/// A read filter in terms of the suite's small key space.
#[derive(Clone, Debug)]
pub struct FilterSpec {
    pub slices: Option<Vec<(BoundSpec, BoundSpec)>>,
    pub names: Option<Vec<(u8, u8)>>,
    pub columns: Option<Vec<u8>>,
    pub limit: Option<u8>,
    pub reversed: bool,
}

impl FilterSpec {
    pub fn all() -> Self {
        FilterSpec {
            slices: None,
            names: None,
            columns: None,
            limit: None,
            reversed: false,
        }
    }

    fn to_filter(&self) -> ReadFilter {
        let clustering = if let Some(names) = &self.names {
            ClusteringFilter::Names(names.iter().map(|r| ck(*r)).collect())
        } else if let Some(slices) = &self.slices {
            let mut v: Vec<Slice> = slices
                .iter()
                .map(|(s, e)| Slice::new(s.to_bound(), e.to_bound()))
                .filter(|s| !s.is_empty())
                .collect();
            if v.is_empty() {
                v.push(Slice::ALL);
            }
            v.truncate(1);
            ClusteringFilter::Slices(v)
        } else {
            ClusteringFilter::all()
        };
        let columns = match &self.columns {
            None => ColumnFilter::All,
            Some(c) => ColumnFilter::Columns(c.iter().map(|c| column(*c)).collect::<BTreeSet<_>>()),
        };
        ReadFilter {
            clustering,
            columns,
            limit: self.limit.map(usize::from),
            reversed: self.reversed,
        }
    }
}

fn pk(k: u8) -> DecoratedKey {
    DecoratedKey::new(vec![b'k', k])
}

/// Clustering keys of two one-byte components: prefix-free per component.
fn ck((a, b): (u8, u8)) -> Bytes {
    Bytes::from(vec![a, b])
}

fn column(c: u8) -> Bytes {
    Bytes::from(vec![b'c', c])
}

/// How many strategies [`compaction_choice`] picks from.
pub const COMPACTION_CHOICES: u8 = 3;

/// A compaction strategy for the suite, tuned to act on its tiny tables:
/// size-tiered (0), leveled with 2 KiB SSTables and fanout 2 (1), or
/// time-window with 1 s windows of the suite's millisecond timestamps (2).
pub fn compaction_choice(n: u8) -> CompactionOptions {
    let size_tiered = SizeTieredOptions {
        min_threshold: 2,
        ..Default::default()
    };
    match n % COMPACTION_CHOICES {
        0 => CompactionOptions::SizeTiered(size_tiered),
        1 => CompactionOptions::Leveled(LeveledOptions {
            sstable_size_bytes: 2 << 10,
            fanout: 2,
            min_threshold: 2,
            max_threshold: 4,
        }),
        // The suite's timestamps are the clock in milliseconds: each
        // clock move starts a new window.
        _ => CompactionOptions::TimeWindow(TimeWindowOptions {
            window_seconds: 1,
            size_tiered,
            timestamps_per_second: 1_000,
        }),
    }
}

fn table_options(compaction: u8) -> TableOptions {
    TableOptions {
        gc_grace_seconds: GC_GRACE,
        compaction: compaction_choice(compaction),
        ..Default::default()
    }
}

/// The suite's table id, fixed so restarts find it.
pub fn table_id() -> TableId {
    TableId(uuid::Uuid::from_u128(
        0x6779_7265_0000_0000_0000_0000_0000_0001,
    ))
}

struct Harness<'a> {
    opener: &'a Opener,
    dir: tempfile_dir::Dir,
    clock: Arc<ManualClock>,
    engine: Option<Box<dyn StorageEngine>>,
    model: BTreeMap<DecoratedKey, Partition>,
}

/// A tiny self-cleaning temp dir (the suite avoids a tempfile dependency).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let n: u64 = rand::random();
            let p =
                std::env::temp_dir().join(format!("gyre-conformance-{}-{n:x}", std::process::id()));
            let _ = std::fs::create_dir_all(&p);
            Dir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl<'a> Harness<'a> {
    fn new(opener: &'a Opener, compaction: u8) -> Self {
        let dir = tempfile_dir::Dir::new();
        let clock = Arc::new(ManualClock::new(START_TIME));
        let engine = opener(dir.path(), clock.clone()).expect("engine opens");
        engine
            .create_table(table_id(), table_options(compaction))
            .expect("table created");
        Harness {
            opener,
            dir,
            clock,
            engine: Some(engine),
            model: BTreeMap::new(),
        }
    }

    fn engine(&self) -> &dyn StorageEngine {
        self.engine.as_deref().expect("engine is open")
    }

    fn now(&self) -> LocalTime {
        use crate::Clock;
        self.clock.now()
    }

    /// Write timestamps follow the clock, with a skew window shorter than gc
    /// grace: a purged tombstone can then never meet a later write it would
    /// have shadowed (Cassandra's documented zombie case, not a bug).
    fn ts(&self, skew: u16) -> Timestamp {
        self.now() * 1_000 + i64::from(skew % 5_000)
    }

    fn apply(&mut self, update: Partition) {
        self.engine()
            .apply(table_id(), update.clone())
            .expect("apply succeeds");
        match self.model.get_mut(&update.key) {
            Some(p) => lww::merge_partitions(p, update),
            None => {
                self.model.insert(update.key.clone(), update);
            }
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now();
        match op {
            Op::Write {
                key,
                row,
                column: c,
                path,
                value,
                ts_skew,
                ttl,
            } => {
                let ts = self.ts(*ts_skew);
                let v = vec![*value; 1 + (*value as usize % 7)];
                let cell = match ttl {
                    Some(t) => Cell::expiring(ts, v, u32::from(*t % 20) + 1, now),
                    None => Cell::live(ts, v),
                };
                let name = match path {
                    Some(p) => CellName::element(column(*c), vec![*p]),
                    None => CellName::simple(column(*c)),
                };
                let u = Partition::new(pk(*key));
                let u = match row {
                    Some(r) => u.set(ck(*r), name, cell),
                    None => u.set_static(name, cell),
                };
                self.apply(u);
            }
            Op::DeleteCell {
                key,
                row,
                column: c,
                ts_skew,
            } => {
                let cell = Cell::tombstone(self.ts(*ts_skew), now);
                let u = Partition::new(pk(*key));
                let u = match row {
                    Some(r) => u.set(ck(*r), CellName::simple(column(*c)), cell),
                    None => u.set_static(CellName::simple(column(*c)), cell),
                };
                self.apply(u);
            }
            Op::DeleteRow { key, row, ts_skew } => {
                let d = Deletion::new(self.ts(*ts_skew), now);
                self.apply(Partition::new(pk(*key)).delete_row(ck(*row), d));
            }
            Op::DeleteRange {
                key,
                start,
                end,
                ts_skew,
            } => {
                let slice = Slice::new(start.to_bound(), end.to_bound());
                if !slice.is_empty() {
                    let d = Deletion::new(self.ts(*ts_skew), now);
                    self.apply(Partition::new(pk(*key)).delete_range(slice, d));
                }
            }
            Op::DeletePartition { key, ts_skew } => {
                let d = Deletion::new(self.ts(*ts_skew), now);
                self.apply(Partition::new(pk(*key)).delete_partition(d));
            }
            Op::Flush => self
                .engine()
                .flush(Some(table_id()))
                .expect("flush succeeds"),
            Op::Compact => self
                .engine()
                .compact(table_id())
                .expect("compaction succeeds"),
            Op::Restart => {
                self.engine = None;
                let e = (self.opener)(self.dir.path(), self.clock.clone()).expect("engine reopens");
                self.engine = Some(e);
            }
            Op::AdvanceTime(s) => self.clock.advance(i64::from(*s % 30) + 1),
            Op::SetCompaction(n) => self
                .engine()
                .create_table(table_id(), table_options(*n))
                .expect("strategy switched"),
            Op::Read { key, filter } => self.check_read(*key, filter)?,
            Op::Scan { page, filter } => self.check_scan(usize::from(*page % 7) + 1, filter)?,
        }
        Ok(())
    }

    fn model_read(
        &self,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
    ) -> Option<Partition> {
        let p = self.model.get(key)?;
        finish_read(crate::memtable::clip(p, &filter.clustering), filter, now)
    }

    fn check_read(&self, key: u8, spec: &FilterSpec) -> Result<(), TestCaseError> {
        let now = self.now();
        let filter = spec.to_filter();
        let key = pk(key);
        let got = self
            .engine()
            .read(table_id(), &key, &filter, now)
            .map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
        let want = self.model_read(&key, &filter, now);
        let live =
            |p: Option<Partition>| p.map(|p| lww::live_view(&p, now)).filter(|p| !p.is_empty());
        prop_assert_eq!(live(got), live(want), "read of {:?} with {:?}", key, filter);
        Ok(())
    }

    fn check_scan(&self, page: usize, spec: &FilterSpec) -> Result<(), TestCaseError> {
        let now = self.now();
        let mut filter = spec.to_filter();
        filter.reversed = false;
        let mut got: Vec<Partition> = Vec::new();
        let mut start = ScanStart::Token(Bound::Unbounded);
        for _ in 0..10_000 {
            let req = ScanRequest {
                start: start.clone(),
                end: Bound::Unbounded,
                filter: filter.clone(),
                max_rows: page,
                index: None,
            };
            let res = self
                .engine()
                .scan(table_id(), &req, now)
                .map_err(|e| TestCaseError::fail(format!("scan failed: {e}")))?;
            for p in res.partitions {
                let p = lww::live_view(&p, now);
                if p.is_empty() {
                    continue;
                }
                match got.last_mut() {
                    // A partition cut by the page size continues on the next page.
                    Some(last) if last.key == p.key => last.rows.extend(p.rows),
                    _ => got.push(p),
                }
            }
            match res.resume {
                Some(s) => start = s,
                None => break,
            }
        }
        let want: Vec<Partition> = self
            .model
            .keys()
            .filter_map(|k| self.model_read(k, &filter, now))
            .map(|p| lww::live_view(&p, now))
            .filter(|p| !p.is_empty())
            .collect();
        prop_assert_eq!(got, want, "scan with page {} and {:?}", page, filter);
        Ok(())
    }

    fn check_all(&self) -> Result<(), TestCaseError> {
        for k in 0..KEYS {
            self.check_read(k, &FilterSpec::all())?;
        }
        self.check_scan(4, &FilterSpec::all())
    }
}

const KEYS: u8 = 6;

fn row_strategy() -> impl Strategy<Value = (u8, u8)> + Clone {
    (0u8..3, 0u8..3)
}

fn bound_strategy() -> impl Strategy<Value = BoundSpec> + Clone {
    let key = prop_oneof![
        (0u8..3).prop_map(|a| vec![a]),
        row_strategy().prop_map(|(a, b)| vec![a, b]),
    ];
    prop_oneof![
        Just(BoundSpec::Unbounded),
        key.clone().prop_map(BoundSpec::Inclusive),
        key.prop_map(BoundSpec::Exclusive),
    ]
}

fn filter_strategy() -> impl Strategy<Value = FilterSpec> {
    (
        prop::option::of(prop::collection::vec(
            (bound_strategy(), bound_strategy()),
            1..2,
        )),
        prop::option::weighted(0.2, prop::collection::vec(row_strategy(), 1..4)),
        prop::option::weighted(0.3, prop::collection::vec(0u8..3, 1..3)),
        prop::option::weighted(0.3, 1u8..4),
        any::<bool>(),
    )
        .prop_map(|(slices, names, columns, limit, reversed)| FilterSpec {
            slices,
            names,
            columns,
            limit,
            reversed,
        })
}

/// One random operation, weighted toward writes.
pub fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0u8..KEYS;
    let row = prop::option::weighted(0.9, row_strategy());
    prop_oneof![
        30 => (key.clone(), row.clone(), 0u8..3, prop::option::weighted(0.2, 0u8..3), any::<u8>(), any::<u16>(), prop::option::weighted(0.15, any::<u8>()))
            .prop_map(|(key, row, column, path, value, ts_skew, ttl)| Op::Write { key, row, column, path, value, ts_skew, ttl }),
        5 => (key.clone(), row, 0u8..3, any::<u16>()).prop_map(|(key, row, column, ts_skew)| Op::DeleteCell { key, row, column, ts_skew }),
        5 => (key.clone(), row_strategy(), any::<u16>()).prop_map(|(key, row, ts_skew)| Op::DeleteRow { key, row, ts_skew }),
        4 => (key.clone(), bound_strategy(), bound_strategy(), any::<u16>())
            .prop_map(|(key, start, end, ts_skew)| Op::DeleteRange { key, start, end, ts_skew }),
        2 => (key.clone(), any::<u16>()).prop_map(|(key, ts_skew)| Op::DeletePartition { key, ts_skew }),
        4 => Just(Op::Flush),
        2 => Just(Op::Compact),
        2 => Just(Op::Restart),
        4 => any::<u8>().prop_map(Op::AdvanceTime),
        1 => (0..COMPACTION_CHOICES).prop_map(Op::SetCompaction),
        10 => (key, filter_strategy()).prop_map(|(key, filter)| Op::Read { key, filter }),
        2 => (any::<u8>(), filter_strategy()).prop_map(|(page, filter)| Op::Scan { page, filter }),
    ]
}

/// Runs one operation sequence against a fresh engine and the model,
/// checking every read, then every key and a full scan at the end. The
/// table starts size-tiered.
pub fn run_ops(opener: &Opener, ops: &[Op]) -> Result<(), TestCaseError> {
    run_ops_with_compaction(opener, 0, ops)
}

/// [`run_ops`] with the table starting on [`compaction_choice`]`(compaction)`.
pub fn run_ops_with_compaction(
    opener: &Opener,
    compaction: u8,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut h = Harness::new(opener, compaction);
    let at = |phase: String| move |e: TestCaseError| TestCaseError::fail(format!("{phase}: {e}"));
    for (i, op) in ops.iter().enumerate() {
        h.step(op).map_err(at(format!("step {i} ({op:?})")))?;
    }
    h.check_all().map_err(at("after the sequence".into()))?;
    // What survives a flush, a compaction past gc grace and a restart must
    // read the same: deleted data never comes back.
    h.step(&Op::Flush)?;
    h.clock.advance(i64::from(GC_GRACE) + 1);
    h.step(&Op::Compact)?;
    h.check_all()
        .map_err(at("after flush and compaction past gc grace".into()))?;
    h.step(&Op::Restart)?;
    h.check_all().map_err(at("after a final restart".into()))
}

/// The property test: `cases` random sequences of up to `max_ops` steps,
/// each case on a table with a compaction strategy picked at random
/// (switched mid-sequence now and then).
/// `GYRE_CONFORMANCE_CASES` overrides the number of cases.
pub fn run_model_test(opener: &Opener, cases: u32, max_ops: usize) {
    let cases = std::env::var("GYRE_CONFORMANCE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let input = (
        0..COMPACTION_CHOICES,
        prop::collection::vec(op_strategy(), 1..max_ops),
    );
    let result = runner.run(&input, |(compaction, ops)| {
        run_ops_with_compaction(opener, compaction, &ops)
    });
    if let Err(e) = result {
        panic!("conformance model test failed: {e}");
    }
}
