//! Mutations over the configured limits are rejected before anything is
//! written, and truncate/drop remove data for good.

use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::{Error, LsmConfig, LsmEngine, ReadFilter, StorageEngine, TableId, TableOptions};

const TABLE: TableId = TableId(uuid::Uuid::from_u128(11));

fn engine(dir: &std::path::Path) -> LsmEngine {
    let e = LsmEngine::open(LsmConfig {
        max_value_bytes: 1024,
        ..LsmConfig::in_dir(dir)
    })
    .expect("opens");
    e.create_table(TABLE, TableOptions::default())
        .expect("creates");
    e
}

#[test]
fn oversized_values_and_keys_are_rejected_before_writing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = engine(dir.path());
    let before = e.engine_stats().commitlog_bytes_written;
    let big_value =
        Partition::with_key("k").set("r", CellName::simple("v"), Cell::live(1, vec![0u8; 1025]));
    assert!(
        matches!(e.apply(TABLE, big_value), Err(Error::LimitExceeded(m)) if m.contains("1025"))
    );
    let big_key =
        Partition::with_key(vec![1u8; 65_536]).set("r", CellName::simple("v"), Cell::live(1, "x"));
    assert!(matches!(
        e.apply(TABLE, big_key),
        Err(Error::LimitExceeded(_))
    ));
    let empty_key =
        Partition::with_key(Vec::<u8>::new()).set("r", CellName::simple("v"), Cell::live(1, "x"));
    assert!(matches!(
        e.apply(TABLE, empty_key),
        Err(Error::LimitExceeded(_))
    ));
    drop(e);
    let e = engine(dir.path());
    assert!(e
        .read(TABLE, &DecoratedKey::new("k"), &ReadFilter::all(), 0)
        .expect("reads")
        .is_none());
    let _ = before;
}

#[test]
fn unknown_table_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = engine(dir.path());
    let other = TableId::random();
    let p = Partition::with_key("k").set("r", CellName::simple("v"), Cell::live(1, "x"));
    assert!(matches!(e.apply(other, p), Err(Error::UnknownTable(t)) if t == other));
}

#[test]
fn truncate_and_drop_remove_data_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = engine(dir.path());
    let k = DecoratedKey::new("k");
    let w = |e: &LsmEngine, v: &str| {
        e.apply(
            TABLE,
            Partition::with_key("k").set("r", CellName::simple("v"), Cell::live(1, v.to_string())),
        )
        .expect("writes")
    };
    w(&e, "flushed");
    e.flush(None).expect("flushes");
    w(&e, "in-memtable");
    e.truncate_table(TABLE).expect("truncates");
    assert!(e
        .read(TABLE, &k, &ReadFilter::all(), 0)
        .expect("reads")
        .is_none());
    drop(e);
    let e = engine(dir.path());
    assert!(
        e.read(TABLE, &k, &ReadFilter::all(), 0)
            .expect("reads")
            .is_none(),
        "truncated data must not come back from the commitlog"
    );
    w(&e, "after");
    e.drop_table(TABLE).expect("drops");
    assert!(matches!(
        e.read(TABLE, &k, &ReadFilter::all(), 0),
        Err(Error::UnknownTable(_))
    ));
    drop(e);
    let e = engine(dir.path());
    assert!(
        e.read(TABLE, &k, &ReadFilter::all(), 0)
            .expect("reads")
            .is_none(),
        "a re-created table starts empty"
    );
}
