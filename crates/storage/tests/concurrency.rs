//! Many writers and readers at once while flushes and compactions run in
//! the background: a read never misses an acknowledged row, and a scan
//! never returns a row twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gyre_common::{lww, Cell, CellName, DecoratedKey, Partition};
use gyre_storage::{
    LsmConfig, LsmEngine, ReadFilter, ScanRequest, ScanStart, SizeTieredOptions, StorageEngine,
    SyncMode, TableId, TableOptions,
};

const TABLE: TableId = TableId(uuid::Uuid::from_u128(13));
const WRITERS: u64 = 4;
const PER_WRITER: u64 = 3_000;

fn key(i: u64) -> DecoratedKey {
    DecoratedKey::new(format!("k{i}").into_bytes())
}

#[test]
fn reads_see_every_acknowledged_row_during_flush_and_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(
        LsmEngine::open(LsmConfig {
            sync: SyncMode::Periodic { period_ms: 50 },
            // Tiny memtables: dozens of flushes and compactions in the run.
            memtable_space_bytes: 64 << 10,
            block_bytes: 1024,
            ..LsmConfig::in_dir(dir.path())
        })
        .expect("opens"),
    );
    engine
        .create_table(
            TABLE,
            TableOptions {
                compaction: gyre_storage::CompactionOptions::SizeTiered(SizeTieredOptions {
                    min_threshold: 2,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .expect("creates");
    // acked[w] = how many of writer w's keys are acknowledged.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (engine, acked) = (engine.clone(), acked.clone());
            s.spawn(move || {
                for n in 0..PER_WRITER {
                    let i = w * PER_WRITER + n;
                    let p = Partition::new(key(i)).set(
                        "r",
                        CellName::simple("v"),
                        Cell::live(1, i.to_string()),
                    );
                    engine.apply(TABLE, p).expect("applies");
                    acked[w as usize].store(n + 1, Ordering::Release);
                }
            });
        }
        for r in 0..2u64 {
            let (engine, acked) = (engine.clone(), acked.clone());
            s.spawn(move || {
                let mut x = r + 1;
                loop {
                    let done: u64 = acked.iter().map(|a| a.load(Ordering::Acquire)).sum();
                    if done == WRITERS * PER_WRITER {
                        break;
                    }
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let w = (x >> 33) % WRITERS;
                    let upto = acked[w as usize].load(Ordering::Acquire);
                    if upto == 0 {
                        continue;
                    }
                    let i = w * PER_WRITER + (x >> 7) % upto;
                    let got = engine
                        .read(TABLE, &key(i), &ReadFilter::all(), 0)
                        .expect("reads");
                    let p = got.unwrap_or_else(|| panic!("acknowledged key {i} missing"));
                    assert_eq!(lww::live_view(&p, 0).rows.len(), 1);
                }
            });
        }
    });
    let stats = engine.table_stats(TABLE).expect("stats");
    assert!(
        stats.bytes_flushed > 0,
        "flushes ran during the test: {stats:?}"
    );
    // A full scan returns each key exactly once.
    let mut seen = std::collections::HashSet::new();
    let mut start = ScanStart::Token(std::ops::Bound::Unbounded);
    loop {
        let page = engine
            .scan(
                TABLE,
                &ScanRequest {
                    start: start.clone(),
                    end: std::ops::Bound::Unbounded,
                    filter: ReadFilter::all(),
                    max_rows: 500,
                    index: None,
                },
                0,
            )
            .expect("scans");
        for p in page.partitions {
            assert!(seen.insert(p.key.key.clone()), "key returned twice");
        }
        match page.resume {
            Some(s) => start = s,
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, WRITERS * PER_WRITER);
}
