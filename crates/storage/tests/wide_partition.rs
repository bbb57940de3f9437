//! A wide partition compacts in bounded memory: the merge streams rows, so
//! the heap grows by far less than the partition while it is rewritten.
//!
//! Heap is measured by a counting global allocator (every thread of this
//! test binary, the engine's included). The default partition is 64 MiB;
//! `GYRE_WIDE_PARTITION_MB=2048` runs the 2 GiB case (needs about
//! 3x that on disk: commitlog, inputs and output).

// The counting allocator.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use gyre_common::{Cell, CellName, DecoratedKey, Partition, Slice, SliceBound};
use gyre_storage::{ClusteringFilter, LsmConfig, ReadFilter, StorageEngine, SyncMode, TableId};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const TABLE: TableId = TableId(uuid::Uuid::from_u128(0x31de));
const ROW_VALUE: usize = 1000;

fn ck(i: u64) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

/// Incompressible (xorshift) bytes, so the SSTables are as big as the data.
fn value(i: u64, version: u8) -> Bytes {
    let mut x = (i << 8 | u64::from(version)) ^ 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(ROW_VALUE + 8);
    while v.len() < ROW_VALUE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(ROW_VALUE);
    Bytes::from(v)
}

fn vm_hwm_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn wide_partition_compacts_in_bounded_memory() {
    let mb: u64 = std::env::var("GYRE_WIDE_PARTITION_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rows = mb * 1024 * 1024 / (ROW_VALUE as u64 + 24);
    let dir = tempfile::tempdir().expect("tempdir");
    // Flushes in the background, compaction only on request.
    let engine = common::engine_without_compaction(
        LsmConfig {
            sync: SyncMode::Periodic { period_ms: 1000 },
            memtable_space_bytes: 8 << 20,
            compaction_throughput_bytes_per_sec: 0,
            ..LsmConfig::in_dir(dir.path())
        },
        TABLE,
    );
    let key = DecoratedKey::new(&b"wide"[..]);
    // Two interleaved passes (even rows, then odd rows, a tenth of them
    // overwritten by the second), so every input SSTable spans the whole
    // clustering range and the merge interleaves them row by row.
    for pass in 0..2u64 {
        let mut batch = Partition::new(key.clone());
        for i in (0..rows).filter(|i| i % 2 == pass || (pass == 1 && i % 20 == 0)) {
            batch = batch.set(
                ck(i),
                CellName::simple("v"),
                Cell::live(1 + pass as i64, value(i, pass as u8)),
            );
            if batch.rows.len() == 256 {
                engine.apply(TABLE, batch).expect("apply");
                batch = Partition::new(key.clone());
            }
        }
        if !batch.rows.is_empty() {
            engine.apply(TABLE, batch).expect("apply");
        }
        engine.flush(Some(TABLE)).expect("flush");
    }
    let before = engine.table_stats(TABLE).expect("stats");
    assert!(before.sstable_count >= 4, "{before:?}");

    // A page (LIMIT 100) of the partition, from its start and from its
    // middle, reads in chunks: about a page of rows in memory, not the
    // partition, and the right rows (the second pass winning).
    for (from, reversed) in [(None, false), (Some(rows / 2 + 1), false), (None, true)] {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let filter = ReadFilter {
            clustering: ClusteringFilter::Slices(vec![Slice::new(
                from.map_or(SliceBound::Unbounded, |f| SliceBound::Exclusive(ck(f))),
                SliceBound::Unbounded,
            )]),
            limit: Some(100),
            reversed,
            ..ReadFilter::all()
        };
        let p = engine
            .read(TABLE, &key, &filter, 0)
            .expect("read")
            .expect("partition");
        let growth = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        let first = match (from, reversed) {
            (_, true) => rows - 100,
            (Some(f), false) => f + 1,
            (None, false) => 0,
        };
        let got: Vec<Bytes> = p.rows.keys().cloned().collect();
        let want: Vec<Bytes> = (first..first + 100).map(ck).collect();
        assert_eq!(got, want, "a page from {from:?}, reversed {reversed}");
        for (i, row) in (first..).zip(p.rows.values()) {
            let cell = row.cells.get(&CellName::simple("v")).expect("cell");
            let v = if i % 2 == 1 || i % 20 == 0 { 1 } else { 0 };
            assert_eq!(cell.value_at(0), Some(&value(i, v)), "row {i}");
        }
        println!(
            "a page of 100 rows from {from:?}, reversed {reversed}: heap peak growth {:.2} MiB",
            growth as f64 / (1 << 20) as f64
        );
        assert!(
            growth < 16 << 20,
            "a page of 100 rows of a {mb} MiB partition grew the heap by {growth} bytes"
        );
    }

    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let hwm_before = vm_hwm_kib();
    engine.compact(TABLE).expect("compact");
    let peak_growth = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let after = engine.table_stats(TABLE).expect("stats");
    println!(
        "partition {mb} MiB ({rows} rows) in {} SSTables ({} bytes): heap peak growth during compaction {:.1} MiB; VmHWM {:?} -> {:?} KiB",
        before.sstable_count,
        before.disk_bytes,
        peak_growth as f64 / (1 << 20) as f64,
        hwm_before,
        vm_hwm_kib(),
    );
    assert_eq!(after.sstable_count, 1, "{after:?}");
    let bound = (mb << 20) / 4;
    assert!(
        (peak_growth as u64) < bound,
        "compacting a {mb} MiB partition grew the heap by {peak_growth} bytes (bound {bound})"
    );

    // Everything is there, the second pass winning where it overwrote.
    for i in [0, 1, 2, 19, 20, rows / 2, rows - 1] {
        let filter = ReadFilter {
            clustering: ClusteringFilter::Slices(vec![Slice::new(
                SliceBound::Inclusive(ck(i)),
                SliceBound::Inclusive(ck(i)),
            )]),
            ..ReadFilter::all()
        };
        let p = engine
            .read(TABLE, &key, &filter, 0)
            .expect("read")
            .expect("partition");
        let row = p.rows.get(&ck(i)).expect("row");
        let cell = row.cells.get(&CellName::simple("v")).expect("cell");
        let want = if i % 2 == 1 || i % 20 == 0 { 1 } else { 0 };
        assert_eq!(cell.value_at(0), Some(&value(i, want)), "row {i}");
    }
    let stats = after;
    assert!(stats.estimated_partitions >= 1);
    engine.close().expect("close");
}
