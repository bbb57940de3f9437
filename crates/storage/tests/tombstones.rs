//! Tombstones and TTLs survive flush and compaction until gc grace and are
//! purged after it; deleted data never comes back.

use std::path::Path;
use std::sync::Arc;

use gyre_common::{lww, Cell, CellName, DecoratedKey, Deletion, Partition, Slice};
use gyre_storage::{
    CompactionOptions, LsmConfig, LsmEngine, ManualClock, ReadFilter, StorageEngine, SyncMode,
    TableId, TableOptions,
};

const TABLE: TableId = TableId(uuid::Uuid::from_u128(9));
const GC: u32 = 100;
const T0: i64 = 1_000_000;

fn open(dir: &Path, clock: Arc<ManualClock>) -> LsmEngine {
    let e = LsmEngine::open_with_clock(
        LsmConfig {
            sync: SyncMode::Periodic { period_ms: 100 },
            background_compaction: false,
            ..LsmConfig::in_dir(dir)
        },
        clock,
    )
    .expect("opens");
    e.create_table(
        TABLE,
        TableOptions {
            gc_grace_seconds: GC,
            compaction: CompactionOptions::None,
            ..Default::default()
        },
    )
    .expect("creates");
    e
}

fn key() -> DecoratedKey {
    DecoratedKey::new("k")
}

fn raw(e: &LsmEngine, now: i64) -> Option<Partition> {
    e.read(TABLE, &key(), &ReadFilter::all(), now)
        .expect("reads")
}

fn live_rows(e: &LsmEngine, now: i64) -> usize {
    raw(e, now).map_or(0, |p| lww::live_view(&p, now).rows.len())
}

#[test]
fn tombstones_live_until_gc_grace_then_purge_without_resurrection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), clock.clone());
    // Old data in one SSTable...
    let mut p = Partition::new(key());
    for r in 0..10u8 {
        p = p.set(vec![r], CellName::simple("v"), Cell::live(10, vec![r]));
    }
    e.apply(TABLE, p).expect("writes");
    e.flush(None).expect("flushes");
    // ...deleted at every level in a later one.
    let d = Deletion::new(20, T0);
    e.apply(
        TABLE,
        Partition::new(key())
            .set(vec![0], CellName::simple("v"), Cell::tombstone(20, T0))
            .delete_row(vec![1], d)
            .delete_range(
                Slice::new(
                    gyre_common::SliceBound::Inclusive(vec![2].into()),
                    gyre_common::SliceBound::Exclusive(vec![5].into()),
                ),
                d,
            ),
    )
    .expect("deletes");
    e.flush(None).expect("flushes");
    assert_eq!(live_rows(&e, T0), 5);

    // Before gc grace, compaction keeps the tombstones on disk.
    clock.advance(i64::from(GC) / 2);
    e.compact(TABLE).expect("compacts");
    let stats = e.table_stats(TABLE).expect("stats");
    assert_eq!(stats.sstable_count, 1);
    assert!(
        stats.tombstones_on_disk >= 3,
        "tombstones kept before gc grace: {stats:?}"
    );
    assert_eq!(live_rows(&e, clock_now(&clock)), 5);

    // After gc grace the tombstones and what they shadowed are gone.
    clock.advance(i64::from(GC));
    e.compact(TABLE).expect("compacts");
    let stats = e.table_stats(TABLE).expect("stats");
    assert_eq!(
        stats.tombstones_on_disk, 0,
        "tombstones purged after gc grace: {stats:?}"
    );
    let p = raw(&e, clock_now(&clock)).expect("live rows remain");
    assert_eq!(p.rows.len(), 5, "only live rows remain on disk");
    drop(e);
    let e = open(dir.path(), clock.clone());
    assert_eq!(
        live_rows(&e, clock_now(&clock)),
        5,
        "nothing comes back after a restart"
    );
}

#[test]
fn a_tombstone_is_kept_while_older_data_it_shadows_sits_outside_the_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), clock.clone());
    e.apply(
        TABLE,
        Partition::new(key()).delete_row(vec![1], Deletion::new(20, T0)),
    )
    .expect("deletes");
    e.flush(None).expect("flushes");
    // Older data the tombstone shadows arrives late and stays in the
    // memtable, outside the compaction.
    e.apply(
        TABLE,
        Partition::new(key()).set(vec![1], CellName::simple("v"), Cell::live(5, "older")),
    )
    .expect("writes older data");
    clock.advance(i64::from(GC) * 2);
    e.compact(TABLE).expect("compacts");
    assert_eq!(
        e.table_stats(TABLE).expect("stats").tombstones_on_disk,
        1,
        "tombstone kept"
    );
    assert_eq!(
        live_rows(&e, clock_now(&clock)),
        0,
        "deleted data never comes back"
    );
    // Once both meet in one compaction, both go.
    e.flush(None).expect("flushes");
    e.compact(TABLE).expect("compacts");
    assert_eq!(e.table_stats(TABLE).expect("stats").tombstones_on_disk, 0);
    assert_eq!(
        live_rows(&e, clock_now(&clock)),
        0,
        "deleted data never comes back"
    );
}

#[test]
fn ttl_cells_expire_then_become_tombstones_then_are_purged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), clock.clone());
    e.apply(
        TABLE,
        Partition::new(key()).set(
            vec![1],
            CellName::simple("v"),
            Cell::expiring(10, "short", 30, T0),
        ),
    )
    .expect("writes");
    e.apply(
        TABLE,
        Partition::new(key()).set(vec![2], CellName::simple("v"), Cell::live(10, "forever")),
    )
    .expect("writes");
    e.flush(None).expect("flushes");
    e.compact(TABLE).expect("compacts");
    assert_eq!(live_rows(&e, T0 + 29), 2);
    assert_eq!(live_rows(&e, T0 + 30), 1, "expired at its TTL");
    clock.set(T0 + 31);
    e.compact(TABLE).expect("compacts");
    assert_eq!(
        e.table_stats(TABLE).expect("stats").tombstones_on_disk,
        1,
        "expired cell kept as a tombstone"
    );
    clock.set(T0 + 31 + i64::from(GC));
    e.compact(TABLE).expect("compacts");
    assert_eq!(
        e.table_stats(TABLE).expect("stats").tombstones_on_disk,
        0,
        "purged after gc grace"
    );
    assert_eq!(live_rows(&e, clock_now(&clock)), 1);
}

fn clock_now(c: &ManualClock) -> i64 {
    use gyre_storage::Clock;
    c.now()
}
