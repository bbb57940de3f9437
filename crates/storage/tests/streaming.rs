//! SSTable streaming between two engines: the files a source offers for a
//! token segment (whole when inside it, sections otherwise), received
//! through a `StreamReceiver` and imported; a failed receive leaves no file.

use std::ops::Bound;
use std::path::Path;

use gyre_common::{Cell, CellName, DecoratedKey, Partition, Token};
use gyre_storage::stream::{IncomingSection, OutgoingFile, STREAMING_DIR};
use gyre_storage::{
    LsmConfig, LsmEngine, ReadFilter, ScanStart, StorageEngine, SyncMode, TableId, TableOptions,
};

const T: TableId = TableId(uuid::Uuid::from_u128(0x57e));

fn engine(dir: &Path) -> LsmEngine {
    LsmEngine::open(LsmConfig {
        sync: SyncMode::Periodic { period_ms: 50 },
        ..LsmConfig::in_dir(dir)
    })
    .expect("opens")
}

fn options() -> TableOptions {
    TableOptions {
        name: "ks.t".into(),
        ..Default::default()
    }
}

fn key(i: u32) -> DecoratedKey {
    DecoratedKey::new(format!("k{i}").into_bytes())
}

fn write(e: &LsmEngine, keys: impl Iterator<Item = u32>) {
    for i in keys {
        let p =
            Partition::new(key(i)).set("r", CellName::simple("v"), Cell::live(1, format!("v{i}")));
        e.apply(T, p).expect("applies");
    }
}

fn read(e: &LsmEngine, i: u32) -> Option<Partition> {
    e.read(T, &key(i), &ReadFilter::all(), 0).expect("reads")
}

fn staged_files(root: &Path) -> Vec<String> {
    // Every file in a `streaming/` directory anywhere under the engine's.
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let path = e.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if d.file_name().is_some_and(|n| n == STREAMING_DIR) {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

/// Receives a section as a puller does: its head in pages of partitions,
/// its run of blocks as stored (in small windows), its tail in pages.
/// Returns how many pages and windows it took and how many partitions
/// came as stored blocks.
fn receive_section(
    f: &OutgoingFile,
    start: &ScanStart,
    end: &Bound<Token>,
    sec: &mut IncomingSection,
    check: impl Fn(&Partition),
) -> (usize, u64) {
    let mut steps = 0;
    let mut raw = 0;
    let page = |at: Option<ScanStart>, tail: bool, sec: &mut IncomingSection| {
        let mut got = Vec::new();
        let take = |p: Partition| {
            let n = p.key.key.len() + 64;
            got.push(p);
            n
        };
        let resume = if tail {
            f.read_tail(at.as_ref(), end, 2000, take)
        } else {
            f.read_section(
                at.as_ref().expect("a head starts somewhere"),
                end,
                2000,
                take,
            )
        }
        .expect("section page");
        for p in &got {
            check(p);
            sec.add(p).expect("adds");
        }
        resume
    };
    let mut at = Some(start.clone());
    while let Some(next) = page(at.take(), false, sec) {
        steps += 1;
        at = Some(next);
    }
    if f.raw_bytes() > 0 {
        for k in 0..f.raw_bytes().div_ceil(RAW_WINDOW) {
            let blocks = f.read_raw(k, RAW_WINDOW).expect("raw blocks");
            raw += sec.add_raw(&blocks, f.meta()).expect("adds blocks");
            steps += 1;
        }
        let mut at = None;
        while let Some(next) = page(at.take(), true, sec) {
            steps += 1;
            at = Some(next);
        }
    }
    (steps + 1, raw)
}

/// Bytes of raw blocks per window in these tests (small: many windows).
const RAW_WINDOW: u64 = 8_000;

#[test]
fn files_inside_a_segment_travel_whole_others_as_sections() {
    let src_dir = tempfile::tempdir().expect("tmp");
    let dst_dir = tempfile::tempdir().expect("tmp");
    let src = engine(src_dir.path());
    let dst = engine(dst_dir.path());
    src.create_table(T, options()).expect("creates");
    dst.create_table(T, options()).expect("creates");

    // Two SSTables over the whole ring, one holding only tokens above 0.
    write(&src, 0..300);
    src.flush(Some(T)).expect("flushes");
    write(&src, 300..600);
    src.flush(Some(T)).expect("flushes");
    write(&src, (600..900).filter(|i| key(*i).token > 0));
    src.flush(Some(T)).expect("flushes");

    let start = ScanStart::Token(Bound::Excluded(0));
    let end = Bound::Unbounded;
    let files = src.stream_files(T, &start, &end).expect("offers");
    assert_eq!(files.len(), 3);
    assert_eq!(
        files.iter().filter(|f| f.whole).count(),
        1,
        "one file inside"
    );

    let mut rx = dst.stream_receiver(T).expect("receiver");
    let mut sections = 0;
    for f in &files {
        if f.whole {
            let mut incoming = rx.whole_file().expect("file");
            let mut offset = 0;
            while offset < f.bytes() {
                // Small chunks: many writes at offsets.
                let chunk = f.read_chunk(offset, 1000).expect("chunk");
                assert!(!chunk.is_empty());
                incoming.write_at(&chunk, offset).expect("writes");
                offset += chunk.len() as u64;
            }
            rx.add(incoming.finish().expect("a valid SSTable"));
        } else {
            let mut sec = rx.section().expect("section");
            sections += receive_section(f, &start, &end, &mut sec, |p| {
                assert!(p.key.token > 0, "only the segment's partitions");
            })
            .0;
            if let Some(p) = sec.finish().expect("finishes") {
                rx.add(p);
            }
        }
    }
    assert!(sections > 4, "sections were paged ({sections} pages)");
    assert_eq!(rx.staged().len(), 3);
    let report = dst.import_streamed(T, &mut rx).expect("imports");
    assert_eq!(report.files, 3);
    assert!(rx.staged().is_empty());
    drop(rx);
    assert!(staged_files(dst_dir.path()).is_empty());

    let mut inside = 0;
    for i in 0..900 {
        let want = read(&src, i);
        let got = read(&dst, i);
        if key(i).token > 0 {
            assert_eq!(got, want, "k{i} streamed as it is on the source");
            inside += usize::from(want.is_some());
        } else {
            assert!(got.is_none(), "k{i} is outside the segment");
        }
    }
    assert!(inside > 300, "{inside} partitions inside the segment");
}

#[test]
fn a_failed_receive_leaves_no_file_behind() {
    let src_dir = tempfile::tempdir().expect("tmp");
    let dst_dir = tempfile::tempdir().expect("tmp");
    let src = engine(src_dir.path());
    src.create_table(T, options()).expect("creates");
    write(&src, 0..200);
    src.flush(Some(T)).expect("flushes");
    let files = src
        .stream_files(T, &ScanStart::Token(Bound::Unbounded), &Bound::Unbounded)
        .expect("offers");
    assert_eq!(files.len(), 1);
    assert!(files[0].whole);

    {
        let dst = engine(dst_dir.path());
        dst.create_table(T, options()).expect("creates");
        let mut rx = dst.stream_receiver(T).expect("receiver");
        // One complete file staged, one half received, one section begun.
        let mut a = rx.whole_file().expect("file");
        let all = files[0].read_chunk(0, usize::MAX).expect("whole file");
        a.write_at(&all, 0).expect("writes");
        rx.add(a.finish().expect("finishes"));
        let mut b = rx.whole_file().expect("file");
        b.write_at(&all[..all.len() / 2], 0).expect("writes");
        let mut s = rx.section().expect("section");
        s.add(&Partition::new(key(1))).expect("adds");
        let staged = staged_files(dst_dir.path());
        assert_eq!(staged.len(), 3, "{staged:?}");
        // A truncated file is refused, and removed.
        assert!(b.finish().is_err());
        drop(s);
        drop(rx);
        assert!(
            staged_files(dst_dir.path()).is_empty(),
            "the receiver cleans up"
        );

        // What a crash leaves is removed when the engine opens.
        let mut rx = dst.stream_receiver(T).expect("receiver");
        let mut c = rx.whole_file().expect("file");
        c.write_at(&all, 0).expect("writes");
        let staged = c.finish().expect("finishes");
        std::mem::forget(rx);
        assert!(staged.exists());
    }
    let dst = engine(dst_dir.path());
    assert!(staged_files(dst_dir.path()).is_empty(), "cleared on open");
    assert!(read(&dst, 1).is_none(), "nothing was imported");
}

#[test]
fn a_section_sends_its_inner_blocks_as_stored() {
    let src_dir = tempfile::tempdir().expect("tmp");
    let dst_dir = tempfile::tempdir().expect("tmp");
    let src = engine(src_dir.path());
    let dst = engine(dst_dir.path());
    src.create_table(T, options()).expect("creates");
    dst.create_table(T, options()).expect("creates");
    // Narrow partitions, wide ones spanning several blocks, deletions.
    for i in 0..2000u32 {
        let mut p =
            Partition::new(key(i)).set("r", CellName::simple("v"), Cell::live(7, format!("v{i}")));
        if i % 97 == 0 {
            for r in 0..400u32 {
                p = p.set(
                    format!("r{r:04}"),
                    CellName::simple("v"),
                    Cell::live(8, format!("wide {i} row {r} {}", "x".repeat(40))),
                );
            }
        }
        if i % 13 == 0 {
            p = p.set("d", CellName::simple("v"), Cell::tombstone(9, 1000));
        }
        src.apply(T, p).expect("applies");
    }
    src.flush(Some(T)).expect("flushes");

    // A segment in the middle of the ring: a head, a run, a tail.
    let (lo, hi) = (i64::MIN / 2, i64::MAX / 3);
    let start = ScanStart::Token(Bound::Excluded(lo));
    let end = Bound::Included(hi);
    let files = src.stream_files(T, &start, &end).expect("offers");
    assert_eq!(files.len(), 1);
    let f = &files[0];
    assert!(!f.whole);
    assert!(f.raw_bytes() > 0);

    // A damaged block is refused by the receiver.
    let mut rx = dst.stream_receiver(T).expect("receiver");
    {
        let mut sec = rx.section().expect("section");
        let mut blocks = f.read_raw(0, RAW_WINDOW).expect("raw blocks");
        assert!(!blocks.is_empty());
        let mut bad = blocks[0].bytes.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        blocks[0].bytes = bad.into();
        let err = sec.add_raw(&blocks, f.meta()).expect_err("corrupt block");
        assert!(err.to_string().contains("checksum"), "{err}");
        // A section stopping inside a partition is refused too.
        let mut sec = rx.section().expect("section");
        let wide = (0..)
            .map(|k| f.read_raw(k, RAW_WINDOW).expect("raw blocks"))
            .take_while(|b| !b.is_empty())
            .flatten()
            .collect::<Vec<_>>();
        let cut = wide
            .windows(2)
            .position(|w| w[1].clustering.is_some())
            .expect("a wide partition spans blocks");
        sec.add_raw(&wide[..=cut], f.meta()).expect("adds");
        assert!(sec.finish().is_err(), "stops inside a partition");
    }

    let mut sec = rx.section().expect("section");
    let (steps, raw) = receive_section(f, &start, &end, &mut sec, |p| {
        assert!(p.key.token > lo && p.key.token <= hi, "outside the segment");
    });
    assert!(steps > 6, "{steps} steps");
    rx.add(sec.finish().expect("finishes").expect("a file"));
    dst.import_streamed(T, &mut rx).expect("imports");

    let mut inside = 0;
    for i in 0..2000 {
        let t = key(i).token;
        let got = read(&dst, i);
        if t > lo && t <= hi {
            assert_eq!(got, read(&src, i), "k{i} as on the source");
            inside += 1;
        } else {
            assert!(got.is_none(), "k{i} is outside the segment");
        }
    }
    assert!(inside > 500, "{inside} partitions inside");
    assert!(
        raw > inside as u64 * 3 / 4,
        "most partitions came in stored blocks ({raw} of {inside})"
    );
    // A scan over the received table sees every partition once, in order.
    let scan = dst
        .scan(
            T,
            &gyre_storage::ScanRequest {
                start: ScanStart::Token(Bound::Unbounded),
                end: Bound::Unbounded,
                filter: ReadFilter::all(),
                max_rows: usize::MAX,
                index: None,
            },
            0,
        )
        .expect("scans");
    assert_eq!(scan.partitions.len(), inside);
}
