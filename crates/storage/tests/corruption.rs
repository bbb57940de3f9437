//! Damaged files are detected and reported, never served and never a panic.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_storage::{
    Error, LsmConfig, LsmEngine, ReadFilter, StorageEngine, SyncMode, TableId, TableOptions,
};

const TABLE: TableId = TableId(uuid::Uuid::from_u128(7));

fn config(dir: &Path, skip_corrupt: bool) -> LsmConfig {
    LsmConfig {
        sync: SyncMode::Batch,
        block_bytes: 512,
        skip_corrupt_commitlog: skip_corrupt,
        background_compaction: false,
        ..LsmConfig::in_dir(dir)
    }
}

fn row(i: u32) -> Partition {
    Partition::with_key(format!("key-{i}").into_bytes()).set(
        "r",
        CellName::simple("v"),
        Cell::live(1, format!("value-{i}")),
    )
}

fn present(engine: &LsmEngine, i: u32) -> bool {
    engine
        .read(
            TABLE,
            &DecoratedKey::new(format!("key-{i}").into_bytes()),
            &ReadFilter::all(),
            0,
        )
        .expect("read works")
        .is_some()
}

/// Writes `n` rows and closes the engine without flushing, leaving them in
/// the commitlog only.
fn write_unflushed(dir: &Path, n: u32) -> PathBuf {
    let engine = LsmEngine::open(config(dir, false)).expect("opens");
    engine
        .create_table(TABLE, TableOptions::default())
        .expect("creates");
    for i in 0..n {
        engine.apply(TABLE, row(i)).expect("applies");
    }
    drop(engine);
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.join("commitlog"))
        .expect("lists")
        .map(|e| e.expect("entry").path())
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// Where the `n`-th record of a segment ends, walking the
/// `[len][crc(len)][payload][crc]` framing after the 20-byte header.
fn record_end(data: &[u8], n: usize) -> usize {
    let mut off = 20usize;
    for _ in 0..n {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
        off += 12 + len;
    }
    off
}

#[test]
fn torn_commitlog_tail_is_truncated_and_the_rest_recovered() {
    // A crash mid-write cuts the last record short: in a file that grows
    // as it is written, the file ends there; in a segment allocated to its
    // full size, zeros follow.
    for zeroed in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let seg = write_unflushed(dir.path(), 100);
        let data = fs::read(&seg).expect("reads");
        let end = record_end(&data, 100);
        let f = OpenOptions::new().write(true).open(&seg).expect("open");
        if zeroed {
            std::os::unix::fs::FileExt::write_all_at(&f, &[0; 5], end as u64 - 5).expect("zeroes");
        } else {
            f.set_len(end as u64 - 5).expect("truncate");
        }
        drop(f);
        let engine =
            LsmEngine::open(config(dir.path(), false)).expect("recovers despite the torn tail");
        for i in 0..99 {
            assert!(present(&engine, i), "row {i} lost (zeroed: {zeroed})");
        }
        assert!(!present(&engine, 99), "the torn record must not appear");
    }
}

#[test]
fn corruption_inside_a_segment_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seg = write_unflushed(dir.path(), 100);
    // Flip a byte in the payload of record 50, in the middle of the segment:
    // walk the `[len][crc(len)][payload][crc]` framing to find it.
    let data = fs::read(&seg).expect("reads");
    let at = (record_end(&data, 50) + 10) as u64;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .expect("open");
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).expect("seek");
    std::io::Read::read_exact(&mut f, &mut b).expect("read");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&[b[0] ^ 0x5a]).expect("write");
    drop(f);
    match LsmEngine::open(config(dir.path(), false)) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert!(
                offset > 0 && offset <= at,
                "offset {offset} should point at the damaged record"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a corrupt segment must not be replayed silently"),
    }
    // The switch skips the damaged record and recovers the rest.
    let engine =
        LsmEngine::open(config(dir.path(), true)).expect("opens when skipping corrupt records");
    let recovered = (0..100).filter(|i| present(&engine, *i)).count();
    assert_eq!(recovered, 99, "exactly the damaged record is lost");
}

#[test]
fn flipped_byte_in_an_sstable_block_is_a_corruption_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = LsmEngine::open(config(dir.path(), false)).expect("opens");
    engine
        .create_table(TABLE, TableOptions::default())
        .expect("creates");
    for i in 0..500 {
        engine.apply(TABLE, row(i)).expect("applies");
    }
    engine.flush(None).expect("flushes");
    let sst = engine
        .sstable_paths(TABLE)
        .expect("paths")
        .pop()
        .expect("one sstable");
    drop(engine);
    // Damage the first data block.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&sst)
        .expect("open");
    f.seek(SeekFrom::Start(20)).expect("seek");
    f.write_all(&[0xff, 0x00, 0xff]).expect("write");
    drop(f);
    let engine =
        LsmEngine::open(config(dir.path(), false)).expect("opens: footer and index are intact");
    let mut corrupt = 0;
    let mut ok = 0;
    for i in 0..500 {
        match engine.read(
            TABLE,
            &DecoratedKey::new(format!("key-{i}").into_bytes()),
            &ReadFilter::all(),
            0,
        ) {
            Ok(Some(_)) => ok += 1,
            Ok(None) => panic!("row {i} silently missing"),
            Err(Error::Corruption { file, .. }) => {
                assert_eq!(file, sst);
                corrupt += 1;
            }
            Err(e) => panic!("wrong error: {e}"),
        }
    }
    assert!(corrupt > 0, "the damaged block must be detected");
    assert!(ok > 0, "other blocks stay readable");
}

#[test]
fn damaged_sstable_footer_fails_open_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = LsmEngine::open(config(dir.path(), false)).expect("opens");
    engine
        .create_table(TABLE, TableOptions::default())
        .expect("creates");
    engine.apply(TABLE, row(1)).expect("applies");
    engine.flush(None).expect("flushes");
    let sst = engine
        .sstable_paths(TABLE)
        .expect("paths")
        .pop()
        .expect("one sstable");
    drop(engine);
    let len = fs::metadata(&sst).expect("stat").len();
    OpenOptions::new()
        .write(true)
        .open(&sst)
        .expect("open")
        .set_len(len - 1)
        .expect("truncate");
    match LsmEngine::open(config(dir.path(), false)) {
        Err(Error::Corruption { file, .. }) => assert_eq!(file, sst),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a damaged SSTable must not be opened"),
    }
}
