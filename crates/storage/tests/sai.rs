//! Storage-attached indexes through the LSM engine: index scans see
//! memtables and SSTables, follow overwrites, deletions and expiry, survive
//! flush, compaction and a restart, and an index added to a table that
//! already holds data is built over it.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use gyre_common::{Cell, CellName, DecoratedKey, Deletion, Partition};
use gyre_storage::sai::{IndexClause, IndexQuery, IndexSpec, IndexedPart, TermOp, TermOrder};
use gyre_storage::{
    CompactionOptions, LsmConfig, LsmEngine, ManualClock, ReadFilter, ScanRequest, ScanStart,
    StorageEngine, SyncMode, TableId, TableOptions,
};

const TABLE: TableId = TableId(uuid::Uuid::from_u128(18));
const NOW: i64 = 1_000_000;

fn spec() -> IndexSpec {
    IndexSpec {
        name: "by_v".into(),
        column: "v".into(),
        part: IndexedPart::Value,
        order: TermOrder::Signed,
        is_static: false,
        vector: None,
        text: Default::default(),
        key: None,
    }
}

fn options(indexed: bool) -> TableOptions {
    TableOptions {
        compaction: CompactionOptions::None,
        indexes: if indexed { vec![spec()] } else { vec![] },
        ..Default::default()
    }
}

fn open(dir: &Path, indexed: bool) -> LsmEngine {
    open_with(dir, options(indexed))
}

fn open_with(dir: &Path, options: TableOptions) -> LsmEngine {
    let e = LsmEngine::open_with_clock(
        LsmConfig {
            sync: SyncMode::Periodic { period_ms: 100 },
            background_compaction: false,
            ..LsmConfig::in_dir(dir)
        },
        Arc::new(ManualClock::new(NOW)),
    )
    .expect("opens");
    e.create_table(TABLE, options).expect("creates");
    e
}

fn key(k: u32) -> DecoratedKey {
    DecoratedKey::new(Bytes::copy_from_slice(&k.to_be_bytes()))
}

fn put(e: &LsmEngine, k: u32, c: u8, v: i32, ts: i64) {
    let p = Partition::new(key(k)).set(
        vec![c],
        CellName::simple("v"),
        Cell::live(ts, Bytes::copy_from_slice(&v.to_be_bytes())),
    );
    e.apply(TABLE, p).expect("applies");
}

/// (key, clustering) of the rows `v op` selects, scanned in pages of 3.
fn query(e: &LsmEngine, op: TermOp, now: i64) -> BTreeSet<(u32, u8)> {
    let mut out = BTreeSet::new();
    let mut start = ScanStart::Token(Bound::Unbounded);
    loop {
        let page = e
            .scan(
                TABLE,
                &ScanRequest {
                    start: start.clone(),
                    end: Bound::Unbounded,
                    filter: ReadFilter::all(),
                    max_rows: 3,
                    index: Some(IndexQuery {
                        clauses: vec![IndexClause {
                            index: "by_v".into(),
                            op: op.clone(),
                        }],
                        ann: None,
                    }),
                },
                now,
            )
            .expect("scans");
        for p in &page.partitions {
            let k = u32::from_be_bytes(p.key.key[..4].try_into().expect("4 bytes"));
            for (ck, row) in &p.rows {
                if row.cells.values().any(|c| c.is_live(now)) {
                    out.insert((k, ck[0]));
                }
            }
        }
        match page.resume {
            Some(next) => start = next,
            None => return out,
        }
    }
}

fn eq(v: i32) -> TermOp {
    TermOp::Eq(Bytes::copy_from_slice(&v.to_be_bytes()))
}

#[test]
fn index_scans_follow_the_data_through_flush_compaction_and_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = open(dir.path(), true);
    for k in 0..50u32 {
        for c in 0..2u8 {
            put(&e, k, c, (k % 5) as i32, 10);
        }
    }
    let want = |v: u32| -> BTreeSet<(u32, u8)> {
        (0..50u32)
            .filter(|k| k % 5 == v)
            .flat_map(|k| [(k, 0), (k, 1)])
            .collect()
    };
    assert_eq!(query(&e, eq(3), NOW), want(3), "from the memtable");
    e.flush(Some(TABLE)).expect("flushes");
    assert_eq!(query(&e, eq(3), NOW), want(3), "from an SSTable");

    // An overwrite in the memtable hides the SSTable's entry; a row
    // deletion and an expiring value are followed too.
    put(&e, 3, 0, 4, 20);
    let mut del = Partition::new(key(8));
    del.rows
        .entry(Bytes::from_static(&[1]))
        .or_default()
        .deletion = Some(Deletion::new(20, NOW));
    e.apply(TABLE, del).expect("deletes");
    let ttl = Partition::new(key(13)).set(
        vec![0],
        CellName::simple("v"),
        Cell::expiring(30, Bytes::copy_from_slice(&7i32.to_be_bytes()), 5, NOW),
    );
    e.apply(TABLE, ttl).expect("applies");
    let mut three = want(3);
    three.remove(&(3, 0));
    three.remove(&(8, 1));
    three.remove(&(13, 0));
    assert_eq!(query(&e, eq(3), NOW), three);
    assert_eq!(query(&e, eq(7), NOW), BTreeSet::from([(13, 0)]));
    assert_eq!(query(&e, eq(7), NOW + 5), BTreeSet::new(), "expired");
    let range = TermOp::Range {
        lo: Bound::Included(Bytes::copy_from_slice(&4i32.to_be_bytes())),
        hi: Bound::Unbounded,
    };
    let mut four_up = want(4);
    four_up.insert((3, 0));
    four_up.insert((13, 0));
    assert_eq!(query(&e, range.clone(), NOW), four_up);

    e.flush(Some(TABLE)).expect("flushes");
    e.compact(TABLE).expect("compacts");
    assert_eq!(query(&e, eq(3), NOW), three, "after compaction");
    e.close().expect("closes");
    drop(e);
    let e = open(dir.path(), true);
    assert_eq!(query(&e, eq(3), NOW), three, "after a restart");
    assert_eq!(query(&e, range, NOW), four_up, "after a restart");
}

#[test]
fn an_index_added_to_existing_data_is_built_over_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = open(dir.path(), false);
    for k in 0..300u32 {
        put(&e, k, 0, (k % 10) as i32, 10);
        if k == 150 {
            e.flush(Some(TABLE)).expect("flushes");
        }
    }
    e.create_table(TABLE, options(true))
        .expect("adds the index");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !e.index_builds().iter().all(|(_, b)| b.done) {
        assert!(
            std::time::Instant::now() < deadline,
            "index build did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let builds = e.index_builds();
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert_eq!(builds[0].1.sstables_done, builds[0].1.sstables_total);
    let want: BTreeSet<(u32, u8)> = (0..300u32)
        .filter(|k| k % 10 == 6)
        .map(|k| (k, 0))
        .collect();
    assert_eq!(query(&e, eq(6), NOW), want);
    // Without the index, the same request is a plain scan (callers filter).
    e.create_table(TABLE, options(false))
        .expect("drops the index");
    assert_eq!(query(&e, eq(6), NOW).len(), 300);
}

/// An ANN scan over part of the ring, alone and with another clause,
/// through memtable and SSTable graphs with overwritten vectors and cells
/// deleted: the rows returned are the live ones in range, and recall@10
/// against brute force stays high.
#[test]
fn ann_scans_rank_live_rows_within_a_range() {
    use gyre_storage::ann::Similarity;
    use gyre_storage::sai::{AnnQuery, VectorIndex};
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(dir.path(), false);
    let vec_spec = IndexSpec {
        name: "by_vec".into(),
        column: "vec".into(),
        part: IndexedPart::Value,
        order: TermOrder::Bytes,
        is_static: false,
        vector: Some(VectorIndex {
            dim: 4,
            similarity: Similarity::Euclidean,
        }),
        text: Default::default(),
        key: None,
    };
    e.create_table(
        TABLE,
        TableOptions {
            indexes: vec![spec(), vec_spec],
            ..options(false)
        },
    )
    .expect("adds the indexes");
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let raw = |v: &[f32]| Bytes::from(v.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>());
    // key -> (v, vector); a deleted vector leaves the row out.
    let mut model: BTreeMap<u32, (i32, Vec<f32>)> = BTreeMap::new();
    let mut write = |e: &LsmEngine, k: u32, ts: i64, model: &mut BTreeMap<u32, (i32, Vec<f32>)>| {
        let v: Vec<f32> = (0..4).map(|_| rnd()).collect();
        let p = Partition::new(key(k))
            .set(
                vec![0],
                CellName::simple("v"),
                Cell::live(ts, Bytes::copy_from_slice(&((k % 3) as i32).to_be_bytes())),
            )
            .set(vec![0], CellName::simple("vec"), Cell::live(ts, raw(&v)));
        e.apply(TABLE, p).expect("applies");
        model.insert(k, ((k % 3) as i32, v));
    };
    for k in 0..1500 {
        write(&e, k, 1, &mut model);
        if k == 800 {
            e.flush(Some(TABLE)).expect("flushes");
        }
    }
    for k in (0..1500).step_by(9) {
        write(&e, k, 2, &mut model);
    }
    for k in (5..1500).step_by(13) {
        let p =
            Partition::new(key(k)).set(vec![0], CellName::simple("vec"), Cell::tombstone(3, NOW));
        e.apply(TABLE, p).expect("deletes");
        model.remove(&k);
    }
    let mut tokens: Vec<i64> = (0..1500).map(|k| key(k).token).collect();
    tokens.sort();
    let (t1, t2) = (tokens[300], tokens[1200]);
    let in_range = |k: u32| {
        let t = key(k).token;
        t >= t1 && t <= t2
    };
    let mut hits = 0;
    let mut total = 0;
    for round in 0..40 {
        let q: Vec<f32> = (0..4).map(|_| rnd()).collect();
        let clause = round % 2 == 1;
        let page = e
            .scan(
                TABLE,
                &ScanRequest {
                    start: ScanStart::Token(Bound::Included(t1)),
                    end: Bound::Included(t2),
                    filter: ReadFilter::default(),
                    max_rows: 10,
                    index: Some(IndexQuery {
                        clauses: if clause {
                            vec![IndexClause {
                                index: "by_v".into(),
                                op: eq(1),
                            }]
                        } else {
                            vec![]
                        },
                        ann: Some(AnnQuery {
                            index: "by_vec".into(),
                            vector: raw(&q),
                            k: 10,
                        }),
                    }),
                },
                NOW,
            )
            .expect("scans");
        assert!(page.resume.is_none());
        let got: Vec<u32> = page
            .partitions
            .iter()
            .map(|p| u32::from_be_bytes(p.key.key[..4].try_into().expect("4 bytes")))
            .collect();
        assert_eq!(got.len(), 10, "round {round}");
        for k in &got {
            assert!(model.contains_key(k), "deleted vector returned: {k}");
            assert!(in_range(*k), "out of range: {k}");
            assert!(!clause || model[k].0 == 1, "clause not held: {k}");
        }
        let mut want: Vec<(f32, u32)> = model
            .iter()
            .filter(|(k, (v, _))| in_range(**k) && (!clause || *v == 1))
            .map(|(k, (_, vec))| (Similarity::Euclidean.score(&q, vec).expect("score"), *k))
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0));
        hits += want[..10].iter().filter(|(_, k)| got.contains(k)).count();
        total += 10;
    }
    let recall = hits as f64 / total as f64;
    assert!(recall >= 0.9, "recall@10 {recall}");
}

/// Index segments are written beside their SSTables and read back at
/// start-up: a restart builds none and answers as before (term and vector
/// indexes); a corrupt or missing component is rebuilt from the SSTable
/// and written again; a component whose SSTable is gone is removed.
#[test]
fn index_components_spare_a_rebuild_after_restart() {
    use gyre_storage::ann::Similarity;
    use gyre_storage::sai::{AnnQuery, VectorIndex};

    let dir = tempfile::tempdir().expect("tempdir");
    let vec_spec = IndexSpec {
        name: "by_vec".into(),
        column: "vec".into(),
        part: IndexedPart::Value,
        order: TermOrder::Bytes,
        is_static: false,
        vector: Some(VectorIndex {
            dim: 4,
            similarity: Similarity::Euclidean,
        }),
        text: Default::default(),
        key: None,
    };
    let both = TableOptions {
        indexes: vec![spec(), vec_spec],
        ..options(false)
    };
    let reopen = || open_with(dir.path(), both.clone());
    let e = reopen();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let raw = |v: &[f32]| Bytes::from(v.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>());
    // Two SSTables; the first past the size from which graphs are kept.
    for k in 0..4400u32 {
        let v: Vec<f32> = (0..4).map(|_| rnd()).collect();
        let p = Partition::new(key(k))
            .set(
                vec![0],
                CellName::simple("v"),
                Cell::live(1, Bytes::copy_from_slice(&((k % 7) as i32).to_be_bytes())),
            )
            .set(vec![0], CellName::simple("vec"), Cell::live(1, raw(&v)));
        e.apply(TABLE, p).expect("applies");
        if k == 4199 {
            e.flush(Some(TABLE)).expect("flushes");
        }
    }
    e.flush(Some(TABLE)).expect("flushes");
    let queries: Vec<Vec<f32>> = (0..10).map(|_| (0..4).map(|_| rnd()).collect()).collect();
    let ann = |e: &LsmEngine| -> Vec<Vec<u32>> {
        queries
            .iter()
            .map(|q| {
                let page = e
                    .scan(
                        TABLE,
                        &ScanRequest {
                            start: ScanStart::Token(Bound::Unbounded),
                            end: Bound::Unbounded,
                            filter: ReadFilter::default(),
                            max_rows: 10,
                            index: Some(IndexQuery {
                                clauses: vec![],
                                ann: Some(AnnQuery {
                                    index: "by_vec".into(),
                                    vector: raw(q),
                                    k: 10,
                                }),
                            }),
                        },
                        NOW,
                    )
                    .expect("scans");
                page.partitions
                    .iter()
                    .map(|p| u32::from_be_bytes(p.key.key[..4].try_into().expect("4 bytes")))
                    .collect()
            })
            .collect()
    };
    let want_eq: BTreeSet<(u32, u8)> = (0..4400).filter(|k| k % 7 == 2).map(|k| (k, 0)).collect();
    let want_ann = ann(&e);
    assert_eq!(query(&e, eq(2), NOW), want_eq);
    assert_eq!(e.index_segment_counts(TABLE).expect("stats"), (0, 0));
    e.close().expect("closes");
    drop(e);
    let components = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path().join("data").join(TABLE.to_string()))
            .expect("lists")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "sai"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(components().len(), 2, "one component per SSTable");

    // Restart: everything read from the components, nothing rebuilt.
    let e = reopen();
    assert_eq!(query(&e, eq(2), NOW), want_eq, "after a restart");
    assert_eq!(ann(&e), want_ann, "after a restart");
    assert_eq!(e.index_segment_counts(TABLE).expect("stats"), (4, 0));
    e.close().expect("closes");
    drop(e);

    // One component corrupt, the other missing, and a stray one.
    let files = components();
    let mut body = std::fs::read(&files[0]).expect("reads");
    let mid = body.len() / 2;
    body[mid] ^= 0x55;
    std::fs::write(&files[0], body).expect("writes");
    std::fs::remove_file(&files[1]).expect("removes");
    let stray = dir
        .path()
        .join("data")
        .join(TABLE.to_string())
        .join("sst-999.sai");
    std::fs::copy(&files[0], &stray).expect("copies");
    let e = reopen();
    assert!(
        !stray.exists(),
        "a component without its SSTable is removed"
    );
    assert_eq!(query(&e, eq(2), NOW), want_eq, "rebuilt");
    assert_eq!(ann(&e), want_ann, "rebuilt");
    assert_eq!(e.index_segment_counts(TABLE).expect("stats"), (0, 4));
    e.close().expect("closes");
    drop(e);
    // The rebuilt segments were written back.
    let e = reopen();
    assert_eq!(query(&e, eq(2), NOW), want_eq);
    assert_eq!(e.index_segment_counts(TABLE).expect("stats"), (4, 0));
    // Compaction writes its output's component and removes its inputs'.
    e.compact(TABLE).expect("compacts");
    assert_eq!(components().len(), 1);
    assert_eq!(ann(&e), want_ann, "after compaction");
}

/// A snapshot holds the SSTables' index components too, so a table
/// restored from it (`gyrectl refresh --from-snapshot`) loads its index
/// segments instead of rebuilding them from the data.
#[test]
fn snapshots_keep_index_components() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = open(dir.path(), true);
    for k in 0..40 {
        put(&e, k, 0, (k % 4) as i32, 1);
    }
    e.flush(Some(TABLE)).expect("flushes");
    for k in 40..60 {
        put(&e, k, 0, (k % 4) as i32, 1);
    }
    let eq = TermOp::Eq(Bytes::copy_from_slice(&2i32.to_be_bytes()));
    let want = query(&e, eq.clone(), NOW);
    assert_eq!(want.len(), 15);
    // The snapshot flushes the memtable first: two SSTables.
    let snap = e.snapshot(TABLE, "s").expect("snapshots");
    let components = snap.files.iter().filter(|f| f.ends_with(".sai")).count();
    assert_eq!((snap.files.len(), components), (4, 2), "{:?}", snap.files);
    e.truncate_table(TABLE).expect("truncates");
    assert!(query(&e, eq.clone(), NOW).is_empty());
    let report = e.restore_snapshot(TABLE, TABLE, "s").expect("restores");
    assert_eq!(report.files, 2);
    assert_eq!(query(&e, eq, NOW), want);
    assert_eq!(
        e.index_segment_counts(TABLE).expect("counts"),
        (2, 0),
        "segments loaded from the restored components, none rebuilt"
    );
}

/// SSTables imported without their components (or streamed: the same
/// import) get their index segments built in the background, not by the
/// first query.
#[test]
fn imported_sstables_get_segments_in_the_background() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = open(dir.path(), true);
    for k in 0..30 {
        put(&e, k, 0, (k % 3) as i32, 1);
    }
    let snap = e.snapshot(TABLE, "s").expect("snapshots");
    e.truncate_table(TABLE).expect("truncates");
    let import = e.import_sstables(TABLE).expect("nothing to import").dir;
    for f in snap.files.iter().filter(|f| f.ends_with(".db")) {
        std::fs::copy(snap.dir.join(f), import.join(f)).expect("copies");
    }
    assert_eq!(e.import_sstables(TABLE).expect("imports").files, 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while e.index_segment_counts(TABLE).expect("counts") != (0, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "no segment built: {:?}",
            e.index_segment_counts(TABLE)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let eq = TermOp::Eq(Bytes::copy_from_slice(&1i32.to_be_bytes()));
    assert_eq!(query(&e, eq, NOW).len(), 10);
}
