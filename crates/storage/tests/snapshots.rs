//! Snapshots: hard links that outlive compaction, TRUNCATE and DROP
//! (`auto_snapshot`), an existing tag refused, and a restore by copying a
//! snapshot into a new table's import directory and importing it live.

use std::path::{Path, PathBuf};

use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::{
    Error, LsmConfig, LsmEngine, ReadFilter, StorageEngine, SyncMode, TableId, TableOptions,
};

const OLD: TableId = TableId(uuid::Uuid::from_u128(0x5a9));
const NEW: TableId = TableId(uuid::Uuid::from_u128(0x5aa));

fn config(dir: &Path) -> LsmConfig {
    LsmConfig {
        sync: SyncMode::Periodic { period_ms: 50 },
        auto_snapshot: true,
        ..LsmConfig::in_dir(dir)
    }
}

fn options() -> TableOptions {
    TableOptions {
        name: "ks.t".into(),
        ..Default::default()
    }
}

fn write(engine: &LsmEngine, table: TableId, from: u32, to: u32) {
    for i in from..to {
        let p = Partition::new(DecoratedKey::new(format!("k{i}").into_bytes())).set(
            "r",
            CellName::simple("v"),
            Cell::live(1, format!("v{i}")),
        );
        engine.apply(table, p).expect("applies");
    }
}

fn count(engine: &LsmEngine, table: TableId, upto: u32) -> u32 {
    (0..upto)
        .filter(|i| {
            engine
                .read(
                    table,
                    &DecoratedKey::new(format!("k{i}").into_bytes()),
                    &ReadFilter::all(),
                    0,
                )
                .expect("reads")
                .is_some()
        })
        .count() as u32
}

fn copy_into(from: &Path, to: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(from).expect("lists") {
        let path: PathBuf = e.expect("entry").path();
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if name.starts_with("sst-") {
            std::fs::copy(&path, to.join(&name)).expect("copies");
            n += 1;
        }
    }
    n
}

#[test]
fn snapshot_survives_drop_and_restores_into_a_new_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = LsmEngine::open(config(dir.path())).expect("opens");
    engine.create_table(OLD, options()).expect("creates");
    write(&engine, OLD, 0, 300);
    engine.flush(Some(OLD)).expect("flushes");
    write(&engine, OLD, 300, 500);
    // The snapshot flushes first: the memtable's rows are in it too.
    let snap = engine.snapshot(OLD, "before-drop").expect("snapshots");
    assert_eq!((snap.name.as_str(), snap.files.len()), ("ks.t", 2));
    let again = engine
        .snapshot(OLD, "before-drop")
        .expect_err("the tag exists");
    assert!(matches!(again, Error::SnapshotExists(_)), "{again:?}");
    assert_eq!(again.to_string(), "Snapshot before-drop already exists.");
    for bad in ["../escape", "a/b", ""] {
        let e = engine.snapshot(OLD, bad).expect_err("a bad tag");
        assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e:?}");
    }
    // Compaction deletes the snapshotted files; the links keep the data.
    engine.compact(OLD).expect("compacts");
    engine.drop_table(OLD).expect("drops");
    let snaps = engine.list_snapshots().expect("lists");
    let tags: Vec<&str> = snaps.iter().map(|s| s.tag.as_str()).collect();
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(tags.contains(&"before-drop"));
    assert!(
        tags.iter()
            .any(|t| t.starts_with("dropped-") && t.ends_with("-ks.t")),
        "auto_snapshot before DROP: {tags:?}"
    );
    assert!(snaps.iter().all(|s| s.name == "ks.t" && s.table == OLD));

    // Restore: a new table (a new id, as CREATE TABLE gives), the snapshot's
    // files copied into its import directory, imported without a restart.
    engine.create_table(NEW, options()).expect("creates");
    let import_dir = engine.import_sstables(NEW).expect("nothing to import").dir;
    let snap = snaps
        .iter()
        .find(|s| s.tag == "before-drop")
        .expect("found");
    assert_eq!(copy_into(&snap.dir, &import_dir), 2);
    let report = engine.import_sstables(NEW).expect("imports");
    assert_eq!(report.files, 2);
    assert_eq!(count(&engine, NEW, 500), 500);
    write(&engine, NEW, 500, 510);
    drop(engine);
    let engine = LsmEngine::open(config(dir.path())).expect("reopens");
    assert_eq!(count(&engine, NEW, 510), 510);

    // Clearing: by tag, then all; the dropped table's directory goes with
    // its last snapshot.
    let removed = engine
        .clear_snapshots(Some("before-drop"), None)
        .expect("clears");
    assert_eq!(removed.len(), 1);
    assert_eq!(engine.list_snapshots().expect("lists").len(), 1);
    engine.clear_snapshots(None, None).expect("clears");
    assert!(engine.list_snapshots().expect("lists").is_empty());
    assert!(!dir.path().join("data").join(OLD.to_string()).exists());
}

#[test]
fn truncate_snapshots_first_when_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = LsmEngine::open(config(dir.path())).expect("opens");
    engine.create_table(OLD, options()).expect("creates");
    write(&engine, OLD, 0, 100);
    engine.truncate_table(OLD).expect("truncates");
    assert_eq!(count(&engine, OLD, 100), 0);
    let snaps = engine.list_snapshots().expect("lists");
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].tag.starts_with("truncated-"), "{:?}", snaps[0].tag);
    // Restore into the same table.
    let import_dir = engine.import_sstables(OLD).expect("nothing yet").dir;
    copy_into(&snaps[0].dir, &import_dir);
    engine.import_sstables(OLD).expect("imports");
    assert_eq!(count(&engine, OLD, 100), 100);
    drop(engine);
    // Without auto_snapshot, TRUNCATE takes none.
    let engine = LsmEngine::open(LsmConfig {
        auto_snapshot: false,
        ..config(dir.path())
    })
    .expect("reopens");
    engine.truncate_table(OLD).expect("truncates");
    assert_eq!(engine.list_snapshots().expect("lists").len(), 1);
}

#[test]
fn a_corrupt_file_refuses_the_whole_import() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = LsmEngine::open(config(dir.path())).expect("opens");
    engine.create_table(OLD, options()).expect("creates");
    write(&engine, OLD, 0, 100);
    let snap = engine.snapshot(OLD, "s").expect("snapshots");
    engine.create_table(NEW, options()).expect("creates");
    let import_dir = engine.import_sstables(NEW).expect("nothing yet").dir;
    copy_into(&snap.dir, &import_dir);
    std::fs::write(import_dir.join("sst-999.db"), b"not an sstable at all").expect("writes");
    let err = engine.import_sstables(NEW).expect_err("refused");
    assert!(err.to_string().contains("sst-999.db"), "{err}");
    assert_eq!(count(&engine, NEW, 100), 0, "nothing loaded");
    std::fs::remove_file(import_dir.join("sst-999.db")).expect("removes");
    engine.import_sstables(NEW).expect("imports");
    assert_eq!(count(&engine, NEW, 100), 100);
}
