//! The RocksDB compaction filter really drops records: shadowed data at
//! once, tombstones and expired cells once past gc grace, while reads stay
//! what the data model says.
#![cfg(feature = "rocksdb")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use gyre_common::{Cell, CellName, DecoratedKey, Deletion, Partition, Slice};
use gyre_storage::{
    live_row_count, ManualClock, ReadFilter, StorageEngine, SyncMode, TableId, TableOptions,
};
use gyre_storage_rocksdb::{RocksConfig, RocksEngine};

const START: i64 = 1_000_000;
const GC_GRACE: u32 = 10;
const TTL: u32 = 5;

fn key(i: u32) -> DecoratedKey {
    DecoratedKey::new(format!("p{i}"))
}

fn col() -> CellName {
    CellName::simple("v")
}

fn live_rows(e: &RocksEngine, t: TableId, i: u32, now: i64) -> usize {
    e.read(t, &key(i), &ReadFilter::all(), now)
        .unwrap()
        .map_or(0, |p| live_row_count(&p, now))
}

/// Live rows per partition: p0-9 deleted, p10-19 lose 3 of 5 rows, p20-24
/// range-deleted, p30 has only cell tombstones, p40-49 hold one TTL cell.
fn expected(i: u32, ttl_alive: bool) -> usize {
    match i {
        0..=9 | 20..=24 | 30 => 0,
        10..=19 => 2,
        40..=49 => usize::from(ttl_alive),
        _ => 5,
    }
}

#[test]
fn compaction_drops_shadowed_expired_and_gc_able_data() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let config = RocksConfig {
        sync: SyncMode::Periodic { period_ms: 50 },
        ..RocksConfig::in_dir(dir.path())
    };
    let e = RocksEngine::open_with_clock(config.clone(), clock.clone()).unwrap();
    let t = TableId::random();
    e.create_table(
        t,
        TableOptions {
            gc_grace_seconds: GC_GRACE,
            ..TableOptions::default()
        },
    )
    .unwrap();
    let ts = START * 1_000;
    for i in 0..40 {
        let mut p = Partition::new(key(i));
        for r in 0..5 {
            p = p.set(format!("r{r}"), col(), Cell::live(ts, "x".repeat(100)));
        }
        e.apply(t, p).unwrap();
    }
    for i in 40..50 {
        let p = Partition::new(key(i)).set("r0", col(), Cell::expiring(ts, "x", TTL, START));
        e.apply(t, p).unwrap();
    }
    // The deletions land in later SSTables than the data they shadow.
    e.flush(Some(t)).unwrap();
    let del = Deletion::new(ts + 1, START);
    for i in 0..10 {
        e.apply(t, Partition::new(key(i)).delete_partition(del))
            .unwrap();
    }
    for i in 10..20 {
        let mut p = Partition::new(key(i));
        for r in 0..3 {
            p = p.delete_row(format!("r{r}"), del);
        }
        e.apply(t, p).unwrap();
    }
    for i in 20..25 {
        e.apply(t, Partition::new(key(i)).delete_range(Slice::ALL, del))
            .unwrap();
    }
    let mut p = Partition::new(key(30));
    for r in 0..5 {
        p = p.set(format!("r{r}"), col(), Cell::tombstone(ts + 1, START));
    }
    e.apply(t, p).unwrap();
    e.flush(Some(t)).unwrap();

    // 40 x 5 rows, 10 TTL rows, 10 partition and 5 range deletion headers.
    assert_eq!(e.record_count(t).unwrap(), 225);
    let check = |e: &RocksEngine, now: i64, ttl_alive: bool| {
        for i in 0..50 {
            assert_eq!(live_rows(e, t, i, now), expected(i, ttl_alive), "p{i}");
        }
    };
    check(&e, START, true);

    // Within gc grace: shadowed rows go, every tombstone stays.
    e.compact(t).unwrap();
    assert_eq!(
        e.record_count(t).unwrap(),
        10 + 50 + 5 + 70 + 5 + 10,
        "headers of p0-9, rows of p10-19, header of p20-24, live rows, \
         p30's tombstones, TTL cells"
    );
    check(&e, START, true);

    // Past gc grace and TTL: tombstones and expired cells go as well.
    clock.advance(i64::from(GC_GRACE + TTL) + 1);
    let now = START + i64::from(GC_GRACE + TTL) + 1;
    e.compact(t).unwrap();
    assert_eq!(
        e.record_count(t).unwrap(),
        70 + 20,
        "only live rows and p10-19's two live rows are left"
    );
    check(&e, now, false);

    drop(e);
    let e = RocksEngine::open_with_clock(config, clock).unwrap();
    assert_eq!(e.record_count(t).unwrap(), 90);
    check(&e, now, false);
}
