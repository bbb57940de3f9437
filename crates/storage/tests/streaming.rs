//! SSTable streaming between two engines: the files a source offers for a
//! token segment (whole when inside it, sections otherwise), received
//! through a `StreamReceiver` and imported; a failed receive leaves no file.

use std::ops::Bound;
use std::path::Path;

use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::stream::STREAMING_DIR;
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
            let mut at = start.clone();
            loop {
                let mut got = Vec::new();
                let resume = f
                    .read_section(&at, &end, 2000, |p| {
                        let n = p.key.key.len() + 64;
                        got.push(p);
                        n
                    })
                    .expect("section page");
                for p in &got {
                    assert!(p.key.token > 0, "only the segment's partitions");
                    sec.add(p).expect("adds");
                }
                sections += 1;
                match resume {
                    Some(next) => at = next,
                    None => break,
                }
            }
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
