//! A read with a row limit reads the SSTables in chunks (see
//! `LsmEngine::read_limited`), forward or from the end; its answer must
//! be the unlimited read's, cut at the limit. Random partitions spread over several SSTables and a
//! memtable, with overwrites that are older than what they overwrite,
//! row, range and partition deletions and expired TTLs, so that chunks
//! end inside runs of shadowed rows.

mod common;

use bytes::Bytes;
use gyre_common::{Cell, CellName, DecoratedKey, Deletion, Partition, Slice, SliceBound};
use gyre_storage::{
    finish_read, ClusteringFilter, LsmConfig, ReadFilter, StorageEngine, SyncMode, TableId,
};

const TABLE: TableId = TableId(uuid::Uuid::from_u128(0x11_41ed));
const NOW: i64 = 1_000_000;
const ROWS: u64 = 120;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ck(i: u64) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

fn bound(rng: &mut Rng) -> SliceBound {
    match rng.below(3) {
        0 => SliceBound::Unbounded,
        1 => SliceBound::Inclusive(ck(rng.below(ROWS))),
        _ => SliceBound::Exclusive(ck(rng.below(ROWS))),
    }
}

/// One random batch of changes to the partition.
fn batch(rng: &mut Rng, key: &DecoratedKey) -> Partition {
    let mut p = Partition::new(key.clone());
    for _ in 0..rng.below(40) + 1 {
        let row = ck(rng.below(ROWS));
        // Timestamps in a narrow band: newer SSTables often hold older
        // cells, so the merge must not trust the order of sources.
        let ts = 100 + rng.below(50) as i64;
        p = match rng.below(10) {
            0 => p.delete_row(row, Deletion::new(ts, NOW)),
            1 => p.set(
                row,
                CellName::simple("v"),
                Cell::expiring(ts, &b"gone"[..], 10, NOW - 100),
            ),
            2 => p.set(row, CellName::simple("v"), Cell::tombstone(ts, NOW)),
            3 if rng.below(4) == 0 => {
                let (a, b) = (rng.below(ROWS), rng.below(ROWS));
                p.delete_range(
                    Slice::new(
                        SliceBound::Inclusive(ck(a.min(b))),
                        SliceBound::Inclusive(ck(a.max(b))),
                    ),
                    Deletion::new(ts, NOW),
                )
            }
            4 if rng.below(20) == 0 => {
                p.delete_partition(Deletion::new(90 + rng.below(20) as i64, NOW))
            }
            _ => p.set(
                row,
                CellName::simple(if rng.below(3) == 0 { "w" } else { "v" }),
                Cell::live(ts, Bytes::from(format!("{ts}"))),
            ),
        };
    }
    p
}

#[test]
fn limited_reads_answer_as_the_unlimited_read_cut_at_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = common::engine_without_compaction(
        LsmConfig {
            sync: SyncMode::Periodic { period_ms: 1000 },
            ..LsmConfig::in_dir(dir.path())
        },
        TABLE,
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let keys: Vec<DecoratedKey> = (0..6u8).map(|k| DecoratedKey::new(vec![k])).collect();
    let mut checked = 0;
    for round in 0..8 {
        for key in &keys {
            for _ in 0..3 {
                engine.apply(TABLE, batch(&mut rng, key)).expect("apply");
            }
        }
        // Every round but the last ends in an SSTable; the last stays in
        // the memtable.
        if round < 7 {
            engine.flush(Some(TABLE)).expect("flush");
        }
        for key in &keys {
            for _ in 0..40 {
                let clustering =
                    ClusteringFilter::Slices(vec![Slice::new(bound(&mut rng), bound(&mut rng))]);
                let most = if rng.below(2) == 0 { 4 } else { 60 };
                let limit = 1 + rng.below(most) as usize;
                let unlimited = ReadFilter {
                    clustering,
                    reversed: rng.below(2) == 0,
                    ..ReadFilter::all()
                };
                let limited = ReadFilter {
                    limit: Some(limit),
                    ..unlimited.clone()
                };
                let want = engine
                    .read(TABLE, key, &unlimited, NOW)
                    .expect("read")
                    .and_then(|p| finish_read(p, &limited, NOW));
                let got = engine.read(TABLE, key, &limited, NOW).expect("read");
                assert_eq!(
                    got, want,
                    "round {round}, key {key:?}, limit {limit}, filter {unlimited:?}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 8 * 6 * 40);
    engine.close().expect("close");
}
