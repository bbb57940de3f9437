//! SSTables: immutable sorted files of partitions.
//!
//! One file per SSTable, `sst-<generation>.db`:
//!
//! ```text
//! [data block]...  [index] [bloom] [metadata] [footer: 64 bytes]
//! ```
//!
//! Data blocks hold records `[tag u8][len varint][body]`: a partition header
//! (key, partition deletion, range tombstones, static row), its rows in
//! clustering order, and an end marker. Blocks are cut only before a header
//! or a row, so every block starts at a record; each is stored as
//! `[len u32][crc32 u32][compression u8][payload]` and checked on every read.
//! The index has one entry per block: the block's first (partition,
//! clustering) position, so both point reads and clustering-slice reads of
//! wide partitions seek straight to the right block. The footer locates the
//! sections and carries its own checksum.
//!
//! A new SSTable is written under a temporary name, fsynced, renamed and its
//! directory fsynced, so a crash leaves either no file or a whole one.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use gyre_common::codec::{self, Reader};
use gyre_common::{CellValue, DecoratedKey, LocalTime, Partition, Timestamp, Token};
use serde::{Deserialize, Serialize};

use crate::block_cache::BlockCache;
use crate::bloom::Bloom;
use crate::commitlog::{fsync_dir_at, sync_all};
use crate::error::IoContext;
use crate::types::{ClusteringFilter, Compression};
use crate::{Error, Result};

/// Failpoint in front of the SSTable file and directory fsyncs of a flush or
/// compaction; see the crate docs.
pub const FSYNC_FAILPOINT: &str = "sstable::fsync";
/// Failpoint in front of every data block write of a flush or compaction:
/// `return` fails it as a full disk does (ENOSPC).
pub const WRITE_FAILPOINT: &str = "sstable::write";

const MAGIC: &[u8; 8] = b"GYRESST1";
const FORMAT_VERSION: u32 = 1;
const FOOTER_LEN: u64 = 64;
const BLOCK_HEADER: usize = 9;

const TAG_HEADER: u8 = 1;
const TAG_ROW: u8 = 2;
const TAG_END: u8 = 3;

/// What an SSTable's footer metadata records about its contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsTableMeta {
    pub format_version: u32,
    pub generation: u64,
    pub min_token: Token,
    pub max_token: Token,
    pub min_timestamp: Timestamp,
    pub max_timestamp: Timestamp,
    /// Earliest deletion time of any tombstone (or expiry), for purging.
    pub min_local_deletion_time: LocalTime,
    pub tombstone_count: u64,
    pub partition_count: u64,
    pub row_count: u64,
    pub cell_count: u64,
    pub data_bytes: u64,
    pub compression: Compression,
    /// Compaction level: 0 for flushes and non-leveled compactions, the
    /// leveled strategy's level otherwise.
    pub level: u32,
    /// Latest deletion time of any tombstone or expiring cell, and
    /// `LocalTime::MAX` when the SSTable holds a live cell without TTL
    /// (or was written before this field existed). Once it is below gc
    /// grace, everything in the SSTable is purgeable.
    #[serde(default = "max_local_time")]
    pub max_local_deletion_time: LocalTime,
}

impl SsTableMeta {
    fn note_timestamp(&mut self, ts: Timestamp) {
        self.min_timestamp = self.min_timestamp.min(ts);
        self.max_timestamp = self.max_timestamp.max(ts);
    }

    fn note_deletion(&mut self, timestamp: Timestamp, deleted_at: LocalTime) {
        self.tombstone_count += 1;
        self.note_timestamp(timestamp);
        self.min_local_deletion_time = self.min_local_deletion_time.min(deleted_at);
        self.max_local_deletion_time = self.max_local_deletion_time.max(deleted_at);
    }

    /// A cell: its write time, its local deletion time (tombstones and
    /// expiring cells), whether it is a tombstone.
    fn note_cell(&mut self, timestamp: Timestamp, ldt: Option<LocalTime>, tombstone: bool) {
        self.cell_count += 1;
        self.note_timestamp(timestamp);
        if let Some(ldt) = ldt {
            self.min_local_deletion_time = self.min_local_deletion_time.min(ldt);
        }
        self.max_local_deletion_time = self
            .max_local_deletion_time
            .max(ldt.unwrap_or(LocalTime::MAX));
        if tombstone {
            self.tombstone_count += 1;
        }
    }
}

fn max_local_time() -> LocalTime {
    LocalTime::MAX
}

#[derive(Clone, Debug)]
struct IndexEntry {
    key: DecoratedKey,
    /// The first row of the block, or `None` when it starts with a header.
    clustering: Option<Bytes>,
    offset: u64,
    len: u32,
}

impl IndexEntry {
    /// Orders the block's first position against (key, clustering).
    fn cmp_pos(&self, key: &DecoratedKey, ck: Option<&[u8]>) -> std::cmp::Ordering {
        self.key
            .cmp(key)
            .then_with(|| match (&self.clustering, ck) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (Some(a), Some(b)) => a.as_ref().cmp(b),
            })
    }
}

pub fn sstable_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("sst-{generation}.db"))
}

fn tmp_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("tmp-sst-{generation}.db"))
}

fn tmp_index_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("tmp-sst-{generation}.idx"))
}

/// Writes one SSTable from partitions given in (token, key) order.
///
/// Its memory does not grow with the output: index entries are spilled to a
/// side file as blocks are cut (and copied behind the data at the end), and
/// keys go into a bloom filter sized up front from [`Self::expect_keys`]
/// (or, without that, as two 64-bit hashes per key until the end).
pub struct SsTableWriter {
    dir: PathBuf,
    out: BufWriter<File>,
    block: Vec<u8>,
    block_first: Option<(DecoratedKey, Option<Bytes>)>,
    block_bytes: usize,
    /// Encoded index entries, spilled to `tmp-sst-<gen>.idx` (created with
    /// the first block).
    index_out: Option<BufWriter<File>>,
    index_entries: u64,
    /// A filter sized up front, when the number of keys is known.
    bloom: Option<Bloom>,
    /// Otherwise the keys' hashes, to size the filter at the end.
    key_hashes: Vec<(u64, u64)>,
    last_key: Option<DecoratedKey>,
    /// The partition begun by [`Self::begin_partition`] and not yet ended.
    open_partition: Option<DecoratedKey>,
    offset: u64,
    meta: SsTableMeta,
    bloom_bits_per_key: usize,
    scratch: Vec<u8>,
    /// Row spans of the partition [`Self::add_encoded`] is adding (kept
    /// for its allocation).
    spans: Vec<RowSpan>,
    finished: bool,
    /// Index segments built as partitions are added.
    sai: crate::sai::SegmentBuilder,
}

impl SsTableWriter {
    pub fn create(
        dir: &Path,
        generation: u64,
        compression: Compression,
        block_bytes: usize,
        bloom_bits_per_key: usize,
    ) -> Result<Self> {
        let path = tmp_path(dir, generation);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .ctx(|| format!("creating {}", path.display()))?;
        Ok(SsTableWriter {
            dir: dir.to_path_buf(),
            out: BufWriter::with_capacity(256 << 10, f),
            block: Vec::with_capacity(block_bytes * 2),
            block_first: None,
            block_bytes,
            index_out: None,
            index_entries: 0,
            bloom: None,
            key_hashes: Vec::new(),
            last_key: None,
            open_partition: None,
            offset: 0,
            meta: SsTableMeta {
                format_version: FORMAT_VERSION,
                generation,
                min_timestamp: Timestamp::MAX,
                max_timestamp: Timestamp::MIN,
                min_local_deletion_time: LocalTime::MAX,
                max_local_deletion_time: LocalTime::MIN,
                compression,
                ..Default::default()
            },
            bloom_bits_per_key,
            scratch: Vec::new(),
            spans: Vec::new(),
            finished: false,
            sai: Default::default(),
        })
    }

    /// Builds these storage-attached index segments along with the data.
    pub fn set_indexes(&mut self, specs: &[crate::sai::IndexSpec]) {
        self.sai = crate::sai::SegmentBuilder::new(specs);
    }

    pub fn partition_count(&self) -> u64 {
        self.meta.partition_count
    }

    /// Sizes the bloom filter for at most `n` partitions now, so that keys
    /// need not be kept until the end (more keys than that only raise the
    /// false-positive rate). Call before the first partition.
    pub fn expect_keys(&mut self, n: u64) {
        if self.meta.partition_count == 0 {
            self.bloom = Some(Bloom::with_capacity(
                n.min(usize::MAX as u64) as usize,
                self.bloom_bits_per_key,
            ));
        }
    }

    /// Sets the compaction level recorded in the metadata.
    pub fn set_level(&mut self, level: u32) {
        self.meta.level = level;
    }

    /// The token of the last partition added, if any.
    pub fn last_token(&self) -> Option<Token> {
        self.last_key.as_ref().map(|k| k.token)
    }

    /// Bytes written so far (for splitting compaction output).
    pub fn bytes_written(&self) -> u64 {
        self.offset + self.block.len() as u64
    }

    fn path(&self) -> PathBuf {
        tmp_path(&self.dir, self.meta.generation)
    }

    fn start_record(&mut self, key: &DecoratedKey, ck: Option<&Bytes>) -> Result<()> {
        if self.block.len() >= self.block_bytes {
            self.finish_block()?;
        }
        if self.block_first.is_none() {
            self.block_first = Some((key.clone(), ck.cloned()));
        }
        Ok(())
    }

    fn push_record(&mut self, tag: u8) {
        self.block.push(tag);
        codec::put_uvarint(&mut self.block, self.scratch.len() as u64);
        self.block.extend_from_slice(&self.scratch);
        self.scratch.clear();
    }

    fn finish_block(&mut self) -> Result<()> {
        let Some((key, clustering)) = self.block_first.take() else {
            return Ok(());
        };
        let (comp, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self.meta.compression {
            Compression::None => (0, self.block.as_slice().into()),
            Compression::Lz4 => (1, lz4_flex::compress_prepend_size(&self.block).into()),
            Compression::Zstd => {
                let mut v = (self.block.len() as u32).to_le_bytes().to_vec();
                let z =
                    zstd::bulk::compress(&self.block, 3).ctx(|| "compressing a block".into())?;
                v.extend_from_slice(&z);
                (2, v.into())
            }
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[comp]);
        crc.update(&payload);
        let mut head = [0u8; BLOCK_HEADER];
        head[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        head[8] = comp;
        let path = self.path();
        fail::fail_point!(WRITE_FAILPOINT, |_| Err(Error::io(
            format!("writing {}", path.display()),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        )));
        self.out
            .write_all(&head)
            .ctx(|| format!("writing {}", path.display()))?;
        self.out
            .write_all(&payload)
            .ctx(|| format!("writing {}", path.display()))?;
        let len = (BLOCK_HEADER + payload.len()) as u32;
        self.write_index_entry(&IndexEntry {
            key,
            clustering,
            offset: self.offset,
            len,
        })?;
        self.offset += u64::from(len);
        self.block.clear();
        Ok(())
    }

    /// Appends a block's index entry to the spilled index.
    fn write_index_entry(&mut self, entry: &IndexEntry) -> Result<()> {
        let mut e = Vec::with_capacity(32 + entry.key.key.len());
        encode_index_entry(&mut e, entry);
        let ipath = tmp_index_path(&self.dir, self.meta.generation);
        let index_out = match &mut self.index_out {
            Some(f) => f,
            None => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&ipath)
                    .ctx(|| format!("creating {}", ipath.display()))?;
                self.index_out.insert(BufWriter::with_capacity(64 << 10, f))
            }
        };
        index_out
            .write_all(&e)
            .ctx(|| format!("writing {}", ipath.display()))?;
        self.index_entries += 1;
        Ok(())
    }

    /// Appends a partition; partitions must come in strictly increasing order.
    pub fn add(&mut self, p: &Partition) -> Result<()> {
        self.begin_partition(p)?;
        for (ck, row) in &p.rows {
            self.write_row(&p.key, ck, row)?;
        }
        self.end_partition();
        Ok(())
    }

    fn note_deletion(&mut self, d: &gyre_common::Deletion) {
        self.meta.note_deletion(d.timestamp, d.deleted_at);
    }

    fn note_row(&mut self, row: &gyre_common::Row) {
        if let Some(d) = &row.deletion {
            self.note_deletion(d);
        }
        for c in row.cells.values() {
            self.meta.note_cell(
                c.timestamp,
                c.local_deletion_time(),
                matches!(c.value, CellValue::Tombstone { .. }),
            );
        }
    }

    /// Appends a partition given in its `codec::encode_partition` form (as
    /// the memtable keeps it) without decoding it into trees and encoding
    /// it again: the header record's body is that encoding's header and
    /// each row record's body is a row's bytes as they are, so only a scan
    /// (for the metadata's counts and the order checks) touches it. Writes
    /// nothing and returns `false` when the bytes are not canonical (rows
    /// or cells out of order, trailing bytes: they came from elsewhere) or
    /// indexes need decoded rows: the caller adds the decoded partition.
    pub fn add_encoded(&mut self, key: &DecoratedKey, enc: &Bytes) -> Result<bool> {
        if !self.sai.is_empty() {
            return Ok(false);
        }
        let mut meta = self.meta.clone();
        let mut rows = std::mem::take(&mut self.spans);
        rows.clear();
        let scanned = scan_encoded(enc, key, &mut meta, &mut rows);
        let Some(header_end) = scanned else {
            self.spans = rows;
            return Ok(false);
        };
        self.end_partition();
        if meta.partition_count == 0 {
            meta.min_token = key.token;
        }
        meta.max_token = key.token;
        meta.partition_count += 1;
        meta.row_count += rows.len() as u64;
        self.meta = meta;
        match &mut self.bloom {
            Some(b) => b.insert(key),
            None => self.key_hashes.push(crate::bloom::hashes(key)),
        }
        self.last_key = Some(key.clone());
        let res = (|| {
            self.start_record(key, None)?;
            self.push_raw(TAG_HEADER, &enc[..header_end]);
            for r in &rows {
                if self.block.len() >= self.block_bytes || self.block_first.is_none() {
                    self.start_record(key, Some(&enc.slice(r.ck.clone())))?;
                }
                self.push_raw(TAG_ROW, &enc[r.record.clone()]);
            }
            self.block.push(TAG_END);
            self.block.push(0);
            Ok(true)
        })();
        self.spans = rows;
        res
    }

    fn push_raw(&mut self, tag: u8, body: &[u8]) {
        self.block.push(tag);
        codec::put_uvarint(&mut self.block, body.len() as u64);
        self.block.extend_from_slice(body);
    }

    /// Starts a partition from its header (key, deletion, range tombstones,
    /// static row; `p.rows` is ignored): its rows follow through
    /// [`Self::add_row`], then [`Self::end_partition`]. Partitions must come
    /// in strictly increasing order. This is how compaction writes a wide
    /// partition without holding it.
    pub fn begin_partition(&mut self, p: &Partition) -> Result<()> {
        self.end_partition();
        if self.meta.partition_count == 0 {
            self.meta.min_token = p.key.token;
        }
        self.meta.max_token = p.key.token;
        self.meta.partition_count += 1;
        if let Some(d) = &p.deletion {
            self.note_deletion(d);
        }
        for rt in &p.range_tombstones {
            self.note_deletion(&rt.deletion);
        }
        if let Some(r) = &p.static_row {
            self.note_row(r);
        }
        match &mut self.bloom {
            Some(b) => b.insert(&p.key),
            None => self.key_hashes.push(crate::bloom::hashes(&p.key)),
        }
        if !self.sai.is_empty() && p.static_row.is_some() {
            let mut head = Partition::new(p.key.clone());
            head.static_row = p.static_row.clone();
            self.sai.add(&head);
        }
        self.last_key = Some(p.key.clone());

        self.start_record(&p.key, None)?;
        // Writes the header fields only.
        codec::put_partition_header(&mut self.scratch, p);
        self.push_record(TAG_HEADER);
        self.open_partition = Some(p.key.clone());
        Ok(())
    }

    /// Appends a row to the partition begun last, in clustering order.
    pub fn add_row(&mut self, ck: &Bytes, row: &gyre_common::Row) -> Result<()> {
        let Some(key) = self.open_partition.take() else {
            return Err(Error::Config("add_row outside a partition".into()));
        };
        let res = self.write_row(&key, ck, row);
        self.open_partition = Some(key);
        res
    }

    fn write_row(&mut self, key: &DecoratedKey, ck: &Bytes, row: &gyre_common::Row) -> Result<()> {
        self.meta.row_count += 1;
        self.note_row(row);
        if !self.sai.is_empty() {
            let mut one = Partition::new(key.clone());
            one.rows.insert(ck.clone(), row.clone());
            self.sai.add(&one);
        }
        self.start_record(key, Some(ck))?;
        codec::put_bytes(&mut self.scratch, ck);
        codec::put_row(&mut self.scratch, row);
        self.push_record(TAG_ROW);
        Ok(())
    }

    /// Ends the partition begun last (a no-op when none is open).
    pub fn end_partition(&mut self) {
        if self.open_partition.take().is_some() {
            self.block.push(TAG_END);
            self.block.push(0);
        }
    }

    /// Writes index, bloom filter, metadata and footer, syncs, and renames
    /// the file into place. Returns the opened SSTable.
    pub fn finish(mut self) -> Result<SsTable> {
        self.end_partition();
        self.finish_block()?;
        let path = self.path();
        let w = |out: &mut BufWriter<File>, b: &[u8]| {
            out.write_all(b)
                .ctx(|| format!("writing {}", path.display()))
        };
        self.meta.data_bytes = self.offset;

        // The index: its count, then the spilled entries copied through.
        let ipath = tmp_index_path(&self.dir, self.meta.generation);
        let ictx = || format!("reading {}", ipath.display());
        let mut head = Vec::new();
        codec::put_uvarint(&mut head, self.index_entries);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        w(&mut self.out, &head)?;
        let mut index_len = head.len() as u64;
        if let Some(out) = &mut self.index_out {
            use std::io::{Read, Seek};
            out.flush().ctx(ictx)?;
            let f = out.get_mut();
            f.seek(std::io::SeekFrom::Start(0)).ctx(ictx)?;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = f.read(&mut buf).ctx(ictx)?;
                if n == 0 {
                    break;
                }
                crc.update(&buf[..n]);
                w(&mut self.out, &buf[..n])?;
                index_len += n as u64;
            }
        }
        let index_crc = crc.finalize().to_le_bytes();
        w(&mut self.out, &index_crc)?;
        index_len += 4;
        let mut bloom = Vec::new();
        match self.bloom.take() {
            Some(b) => b.encode(&mut bloom),
            None => {
                Bloom::from_hashes(&self.key_hashes, self.bloom_bits_per_key).encode(&mut bloom)
            }
        }
        self.key_hashes = Vec::new();
        bloom.extend_from_slice(&crc32fast::hash(&bloom).to_le_bytes());
        let mut meta = serde_json::to_vec(&self.meta).map_err(|e| Error::Config(e.to_string()))?;
        meta.extend_from_slice(&crc32fast::hash(&meta).to_le_bytes());

        let index_off = self.offset;
        let bloom_off = index_off + index_len;
        let meta_off = bloom_off + bloom.len() as u64;
        w(&mut self.out, &bloom)?;
        w(&mut self.out, &meta)?;
        let mut footer = Vec::with_capacity(FOOTER_LEN as usize);
        footer.extend_from_slice(MAGIC);
        footer.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for (off, len) in [
            (index_off, index_len),
            (bloom_off, bloom.len() as u64),
            (meta_off, meta.len() as u64),
        ] {
            footer.extend_from_slice(&off.to_le_bytes());
            footer.extend_from_slice(&len.to_le_bytes());
        }
        footer.extend_from_slice(&crc32fast::hash(&footer).to_le_bytes());
        debug_assert_eq!(footer.len() as u64, FOOTER_LEN);
        w(&mut self.out, &footer)?;
        self.out
            .flush()
            .ctx(|| format!("writing {}", path.display()))?;
        sync_all(self.out.get_ref(), FSYNC_FAILPOINT)
            .ctx(|| format!("syncing {}", path.display()))?;
        let final_path = sstable_path(&self.dir, self.meta.generation);
        // The index component goes in place before the SSTable does.
        let segments = std::mem::take(&mut self.sai).finish_to_disk(&path, &final_path);
        fs::rename(&path, &final_path).ctx(|| format!("renaming {}", path.display()))?;
        if let Err(e) = fsync_dir_at(&self.dir, FSYNC_FAILPOINT) {
            // The caller keeps the data elsewhere and retries under a new
            // generation: a stray copy found on restart could outlive the
            // tombstones that later shadow it.
            let _ = fs::remove_file(&final_path);
            crate::sai::remove_component(&final_path);
            return Err(e);
        }
        self.finished = true;
        let _ = fs::remove_file(&ipath);
        let sst = SsTable::open(&final_path)?;
        sst.sai.insert_all(segments);
        Ok(sst)
    }
}

/// Where a row lies in a partition's encoding: its whole record body
/// (clustering and row) and its clustering key's bytes.
struct RowSpan {
    record: std::ops::Range<usize>,
    ck: std::ops::Range<usize>,
}

/// Scans a partition in its `codec::encode_partition` form for
/// [`SsTableWriter::add_encoded`]: notes its header's and rows' deletions
/// and cells in `meta` (not its partition and row counts), records its
/// rows' spans, and returns where its header ends. `None` when it is not
/// the canonical encoding of a partition with this key (what
/// `decode_partition` and `encode_partition` would not give back byte for
/// byte): undecodable, rows or cells not strictly ascending, bytes left.
fn scan_encoded(
    enc: &Bytes,
    key: &DecoratedKey,
    meta: &mut SsTableMeta,
    rows: &mut Vec<RowSpan>,
) -> Option<usize> {
    let mut r = Reader::new(enc);
    if r.i64_be().ok()? != key.token {
        return None;
    }
    let n = r.len().ok()?;
    let at = r.position();
    if enc[at..at + n] != key.key[..] {
        return None;
    }
    r.skip(n).ok()?;
    scan_opt_deletion(&mut r, meta)?;
    for _ in 0..r.uvarint().ok()? {
        for _ in 0..2 {
            match r.u8().ok()? {
                0 => {}
                1 | 2 => {
                    let n = r.len().ok()?;
                    r.skip(n).ok()?;
                }
                _ => return None,
            }
        }
        meta.note_deletion(r.varint().ok()?, r.varint().ok()?);
    }
    match r.u8().ok()? {
        0 => {}
        1 => scan_row(enc, &mut r, meta)?,
        _ => return None,
    }
    let header_end = r.position();
    let mut prev: Option<std::ops::Range<usize>> = None;
    for _ in 0..r.uvarint().ok()? {
        let start = r.position();
        let n = r.len().ok()?;
        let ck = r.position()..r.position() + n;
        r.skip(n).ok()?;
        if prev.is_some_and(|p| enc[p] >= enc[ck.clone()]) {
            return None;
        }
        scan_row(enc, &mut r, meta)?;
        rows.push(RowSpan {
            record: start..r.position(),
            ck: ck.clone(),
        });
        prev = Some(ck);
    }
    r.is_empty().then_some(header_end)
}

fn scan_opt_deletion(r: &mut Reader<'_>, meta: &mut SsTableMeta) -> Option<()> {
    match r.u8().ok()? {
        0 => Some(()),
        1 => {
            meta.note_deletion(r.varint().ok()?, r.varint().ok()?);
            Some(())
        }
        _ => None,
    }
}

/// A row's deletion and cells (`codec::put_row`), cells strictly ascending.
fn scan_row(enc: &Bytes, r: &mut Reader<'_>, meta: &mut SsTableMeta) -> Option<()> {
    scan_opt_deletion(r, meta)?;
    let mut prev: Option<(std::ops::Range<usize>, std::ops::Range<usize>)> = None;
    for _ in 0..r.uvarint().ok()? {
        let n = r.len().ok()?;
        let column = r.position()..r.position() + n;
        r.skip(n).ok()?;
        let n = r.len().ok()?;
        let path = r.position()..r.position() + n;
        r.skip(n).ok()?;
        if let Some((c, p)) = &prev {
            let ord = enc[c.clone()]
                .cmp(&enc[column.clone()])
                .then_with(|| enc[p.clone()].cmp(&enc[path.clone()]));
            if ord != std::cmp::Ordering::Less {
                return None;
            }
        }
        prev = Some((column, path));
        let timestamp = r.varint().ok()?;
        match r.u8().ok()? {
            0 => {
                let n = r.len().ok()?;
                r.skip(n).ok()?;
                meta.note_cell(timestamp, None, false);
            }
            1 => {
                u32::try_from(r.uvarint().ok()?).ok()?;
                let expires_at = r.varint().ok()?;
                let n = r.len().ok()?;
                r.skip(n).ok()?;
                meta.note_cell(timestamp, Some(expires_at), false);
            }
            2 => meta.note_cell(timestamp, Some(r.varint().ok()?), true),
            _ => return None,
        }
    }
    Some(())
}

impl Drop for SsTableWriter {
    fn drop(&mut self) {
        if !self.finished {
            // An abandoned write (error or crash-free abort) leaves nothing.
            let _ = fs::remove_file(self.path());
        }
        let _ = fs::remove_file(tmp_index_path(&self.dir, self.meta.generation));
    }
}

/// An open, immutable SSTable.
pub struct SsTable {
    path: PathBuf,
    /// From the file name (`sst-<generation>.db`): an imported SSTable's
    /// metadata keeps the generation it was written under elsewhere.
    generation: u64,
    file: File,
    /// Unique in the process: names its blocks in the block cache.
    uid: u64,
    index: Vec<IndexEntry>,
    /// Heap bytes of `index` (entries and the buffer their keys share).
    index_bytes: usize,
    bloom: Bloom,
    pub meta: SsTableMeta,
    pub file_bytes: u64,
    /// Its storage-attached index segments, by index name.
    pub sai: crate::sai::SegmentMap,
}

impl std::fmt::Debug for SsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsTable").field("path", &self.path).finish()
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl SsTable {
    pub fn open(path: &Path) -> Result<SsTable> {
        let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        let file_bytes = file
            .metadata()
            .ctx(|| format!("reading {}", path.display()))?
            .len();
        let corrupt = |offset: u64, detail: &str| Error::Corruption {
            file: path.to_path_buf(),
            offset,
            detail: detail.into(),
        };
        if file_bytes < FOOTER_LEN {
            return Err(corrupt(0, "file shorter than its footer"));
        }
        let footer_at = file_bytes - FOOTER_LEN;
        let mut footer = vec![0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut footer, footer_at)
            .ctx(|| format!("reading {}", path.display()))?;
        if &footer[..8] != MAGIC || crc32fast::hash(&footer[..60]).to_le_bytes() != footer[60..64] {
            return Err(corrupt(footer_at, "bad footer"));
        }
        let version = u32::from_le_bytes([footer[8], footer[9], footer[10], footer[11]]);
        if version != FORMAT_VERSION {
            return Err(corrupt(
                footer_at,
                &format!("unsupported format version {version}"),
            ));
        }
        let section = |i: usize, what: &str| -> Result<Bytes> {
            let off = le_u64(&footer[12 + i * 16..]);
            let len = le_u64(&footer[20 + i * 16..]);
            if len < 4 || off.checked_add(len).is_none_or(|end| end > footer_at) {
                return Err(corrupt(footer_at, &format!("{what} section out of bounds")));
            }
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, off)
                .ctx(|| format!("reading {}", path.display()))?;
            let body = len as usize - 4;
            if crc32fast::hash(&buf[..body]).to_le_bytes() != buf[body..] {
                return Err(corrupt(off, &format!("{what} checksum mismatch")));
            }
            buf.truncate(body);
            Ok(Bytes::from(buf))
        };
        let index_bytes = section(0, "index")?;
        let bloom_bytes = section(1, "bloom filter")?;
        let meta_bytes = section(2, "metadata")?;
        let meta: SsTableMeta = serde_json::from_slice(&meta_bytes)
            .map_err(|e| corrupt(footer_at, &format!("metadata: {e}")))?;
        let bloom = Bloom::decode(&bloom_bytes)
            .ok_or_else(|| corrupt(footer_at, "malformed bloom filter"))?;
        let index =
            decode_index(&index_bytes).map_err(|e| corrupt(footer_at, &format!("index: {e}")))?;
        let generation = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("sst-")?.strip_suffix(".db")?.parse().ok())
            .unwrap_or(meta.generation);
        static NEXT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let index_bytes = index_bytes.len() + index.capacity() * std::mem::size_of::<IndexEntry>();
        Ok(SsTable {
            path: path.to_path_buf(),
            generation,
            file,
            uid: NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            index,
            index_bytes,
            bloom,
            meta,
            file_bytes,
            sai: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raw bytes of the file at `offset` (whole-file streaming).
    pub fn read_raw_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .ctx(|| format!("reading {}", self.path.display()))
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Heap bytes of the bloom filter and of the block index.
    pub fn memory_bytes(&self) -> (usize, usize) {
        (self.bloom.memory_bytes(), self.index_bytes)
    }

    /// True when the SSTable may hold the partition.
    pub fn may_contain(&self, key: &DecoratedKey) -> bool {
        self.meta.partition_count > 0
            && key.token >= self.meta.min_token
            && key.token <= self.meta.max_token
            && self.bloom.may_contain(key)
    }

    fn read_block_cached(&self, i: usize, cache: Option<&BlockCache>) -> Result<Bytes> {
        let Some(cache) = cache else {
            return self.read_block(i);
        };
        if let Some(b) = cache.get(self.uid, i as u32) {
            return Ok(b);
        }
        let b = self.read_block(i)?;
        cache.insert(self.uid, i as u32, b.clone());
        Ok(b)
    }

    fn read_block(&self, i: usize) -> Result<Bytes> {
        let e = &self.index[i];
        let corrupt = |detail: &str| Error::Corruption {
            file: self.path.clone(),
            offset: e.offset,
            detail: detail.into(),
        };
        let mut buf = vec![0u8; e.len as usize];
        self.file
            .read_exact_at(&mut buf, e.offset)
            .ctx(|| format!("reading {}", self.path.display()))?;
        if buf.len() < BLOCK_HEADER {
            return Err(corrupt("short block"));
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if len + BLOCK_HEADER != buf.len() || crc32fast::hash(&buf[8..]) != crc {
            return Err(corrupt("block checksum mismatch"));
        }
        let payload = &buf[BLOCK_HEADER..];
        let data = match buf[8] {
            0 => {
                buf.drain(..BLOCK_HEADER);
                buf
            }
            1 => lz4_flex::decompress_size_prepended(payload)
                .map_err(|e| corrupt(&format!("lz4: {e}")))?,
            2 => {
                if payload.len() < 4 {
                    return Err(corrupt("short zstd block"));
                }
                let n =
                    u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
                zstd::bulk::decompress(&payload[4..], n)
                    .map_err(|e| corrupt(&format!("zstd: {e}")))?
            }
            c => return Err(corrupt(&format!("unknown compression {c}"))),
        };
        Ok(Bytes::from(data))
    }

    /// Index of the last block whose first position is at or before the
    /// given one.
    fn find_block(&self, key: &DecoratedKey, ck: Option<&[u8]>) -> usize {
        self.index
            .partition_point(|e| e.cmp_pos(key, ck) != std::cmp::Ordering::Greater)
            .saturating_sub(1)
    }

    fn corrupt_at(&self, block: usize, e: codec::DecodeError) -> Error {
        Error::Corruption {
            file: self.path.clone(),
            offset: self.index.get(block).map_or(0, |b| b.offset),
            detail: format!("block {block}: {e}"),
        }
    }

    /// Reads the part of a partition the filter selects.
    pub fn get(&self, key: &DecoratedKey, filter: &ClusteringFilter) -> Result<Option<Partition>> {
        self.get_with(key, filter, None)
    }

    /// A cursor just past `key`'s partition header, and the header (its
    /// deletion, range tombstones and static row); `None` when this
    /// SSTable does not hold the partition.
    fn find_header<'a>(
        &'a self,
        key: &DecoratedKey,
        cache: Option<&'a BlockCache>,
    ) -> Result<Option<(Cursor<'a>, Partition)>> {
        if !self.may_contain(key) || self.index.is_empty() {
            return Ok(None);
        }
        let mut cur = Cursor::with_cache(self, self.find_block(key, None), cache)?;
        loop {
            let Some((tag, body)) = cur.next()? else {
                return Ok(None);
            };
            if tag != TAG_HEADER {
                continue;
            }
            let mut r = Reader::new(&body);
            let token = r.i64_be().map_err(|e| self.corrupt_at(cur.block, e))?;
            let k = r.bytes().map_err(|e| self.corrupt_at(cur.block, e))?;
            match (token, k.as_ref()).cmp(&(key.token, key.key.as_ref())) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Equal => {
                    let part = codec::get_partition_header(&mut Reader::new(&body))
                        .map_err(|e| self.corrupt_at(cur.block, e))?;
                    return Ok(Some((cur, part)));
                }
            }
        }
    }

    /// [`Self::get`] through a block cache.
    pub fn get_with(
        &self,
        key: &DecoratedKey,
        filter: &ClusteringFilter,
        cache: Option<&BlockCache>,
    ) -> Result<Option<Partition>> {
        Ok(self
            .get_capped(key, filter, cache, None, usize::MAX)?
            .map(|(p, _)| p))
    }

    /// [`Self::get_with`] reading at most `max_rows` rows, only rows after
    /// `after` when given (a limited read continuing where its last chunk
    /// stopped). The partition's deletion, range tombstones and static row
    /// come with every call. True when more rows may follow the last one.
    pub fn get_capped(
        &self,
        key: &DecoratedKey,
        filter: &ClusteringFilter,
        cache: Option<&BlockCache>,
        after: Option<&[u8]>,
        max_rows: usize,
    ) -> Result<Option<(Partition, bool)>> {
        let Some((mut cur, mut part)) = self.find_header(key, cache)? else {
            return Ok(None);
        };
        // Wide partitions: jump to the block holding the first wanted row.
        let mut seek = filter.seek_key();
        if let Some(a) = after.filter(|a| *a > seek.as_ref()) {
            seek = Bytes::copy_from_slice(a);
        }
        if !seek.is_empty() {
            let target = self.find_block(key, Some(&seek));
            if target > cur.block {
                cur.jump(target)?;
            }
        }
        let more = self.read_rows(&mut cur, &mut part, filter, after, max_rows)?;
        Ok(Some((part, more)))
    }

    /// The reversed form of [`Self::get_capped`]: the last `max_rows` rows
    /// the filter selects (only rows before `before` when given), read
    /// block by block from the partition's end, so a reversed page of a
    /// wide partition holds about a page of rows. True when rows may come
    /// before the first one returned.
    pub fn get_capped_rev(
        &self,
        key: &DecoratedKey,
        filter: &ClusteringFilter,
        cache: Option<&BlockCache>,
        before: Option<&[u8]>,
        max_rows: usize,
    ) -> Result<Option<(Partition, bool)>> {
        let Some((mut cur, mut part)) = self.find_header(key, cache)? else {
            return Ok(None);
        };
        let (first, rows_from) = (cur.block, cur.pos);
        // The partition's last block, or the one holding `before`: every
        // row before it lies there or earlier.
        let mut block = match before {
            Some(b) => self.find_block(key, Some(b)),
            None => self
                .index
                .partition_point(|e| e.key <= *key)
                .saturating_sub(1),
        }
        .max(first);
        // Rows of the blocks read so far, last block first; each block's
        // rows in order.
        let mut blocks: Vec<Vec<(Bytes, Bytes)>> = Vec::new();
        let mut count = 0;
        loop {
            cur.jump(block)?;
            if block == first {
                cur.pos = rows_from;
            }
            let mut rows = Vec::new();
            while cur.pos < cur.data.len() {
                let Some((tag, body)) = cur.next()? else {
                    break;
                };
                if tag != TAG_ROW {
                    if block == first || tag == TAG_HEADER {
                        // The next partition starts here.
                        break;
                    }
                    continue;
                }
                let mut r = Reader::new(&body);
                let ck = r.bytes().map_err(|e| self.corrupt_at(cur.block, e))?;
                if filter.is_past_end(&ck) || before.is_some_and(|b| ck.as_ref() >= b) {
                    break;
                }
                if filter.contains(&ck) {
                    rows.push((ck, body.slice(r.position()..)));
                }
            }
            count += rows.len();
            blocks.push(rows);
            if count >= max_rows || block == first {
                break;
            }
            block -= 1;
        }
        let more = count >= max_rows && block > first || count > max_rows;
        let mut skip = count.saturating_sub(max_rows);
        for rows in blocks.into_iter().rev() {
            for (ck, body) in rows {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                let row = codec::get_row(&mut Reader::new(&body))
                    .map_err(|e| self.corrupt_at(block, e))?;
                part.rows.insert(ck, row);
            }
        }
        Ok(Some((part, more)))
    }

    /// Reads the partition's rows the filter selects (after `after`), at
    /// most `max_rows`; true when it stopped at that cap.
    fn read_rows(
        &self,
        cur: &mut Cursor<'_>,
        part: &mut Partition,
        filter: &ClusteringFilter,
        after: Option<&[u8]>,
        max_rows: usize,
    ) -> Result<bool> {
        while let Some((tag, body)) = cur.next()? {
            if tag != TAG_ROW {
                break;
            }
            let mut r = Reader::new(&body);
            let ck = r.bytes().map_err(|e| self.corrupt_at(cur.block, e))?;
            if filter.is_past_end(&ck) {
                break;
            }
            if after.is_some_and(|a| ck.as_ref() <= a) {
                continue;
            }
            if filter.contains(&ck) {
                let row = codec::get_row(&mut r).map_err(|e| self.corrupt_at(cur.block, e))?;
                part.rows.insert(ck, row);
                if part.rows.len() >= max_rows {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Streams the whole SSTable a row at a time (for compaction).
    pub fn row_iter(&self) -> Result<SsTableRowIter<'_>> {
        let cursor = if self.index.is_empty() {
            None
        } else {
            Some(Cursor::new(self, 0)?)
        };
        Ok(SsTableRowIter {
            sst: self,
            cursor,
            in_partition: false,
        })
    }

    /// Iterates partitions from `start` on, clipped to the filter.
    pub fn iter_from<'a>(
        &'a self,
        start: &std::ops::Bound<DecoratedKey>,
        filter: ClusteringFilter,
    ) -> Result<SsTableIter<'a>> {
        let (block, skip_until) = match start {
            std::ops::Bound::Unbounded => (0, None),
            std::ops::Bound::Included(k) | std::ops::Bound::Excluded(k) => {
                (self.find_block(k, None), Some(start.clone()))
            }
        };
        let cursor = if self.index.is_empty() {
            None
        } else {
            Some(Cursor::new(self, block)?)
        };
        Ok(SsTableIter {
            sst: self,
            cursor,
            skip_until,
            filter,
        })
    }
}

fn encode_index_entry(out: &mut Vec<u8>, e: &IndexEntry) {
    out.extend_from_slice(&e.key.token.to_be_bytes());
    codec::put_bytes(out, &e.key.key);
    match &e.clustering {
        None => out.push(0),
        Some(ck) => {
            out.push(1);
            codec::put_bytes(out, ck);
        }
    }
    codec::put_uvarint(out, e.offset);
    codec::put_uvarint(out, u64::from(e.len));
}

fn decode_index(b: &Bytes) -> codec::DecodeResult<Vec<IndexEntry>> {
    let mut r = Reader::new(b);
    let n = r.uvarint()?;
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let token = r.i64_be()?;
        let key = r.bytes()?;
        let clustering = match r.u8()? {
            0 => None,
            _ => Some(r.bytes()?),
        };
        let offset = r.uvarint()?;
        let len = r.uvarint()? as u32;
        out.push(IndexEntry {
            key: DecoratedKey { token, key },
            clustering,
            offset,
            len,
        });
    }
    Ok(out)
}

/// Walks records across blocks.
struct Cursor<'a> {
    sst: &'a SsTable,
    block: usize,
    data: Bytes,
    pos: usize,
    cache: Option<&'a BlockCache>,
}

impl<'a> Cursor<'a> {
    fn new(sst: &'a SsTable, block: usize) -> Result<Self> {
        Self::with_cache(sst, block, None)
    }

    fn with_cache(sst: &'a SsTable, block: usize, cache: Option<&'a BlockCache>) -> Result<Self> {
        Ok(Cursor {
            sst,
            block,
            data: sst.read_block_cached(block, cache)?,
            pos: 0,
            cache,
        })
    }

    fn jump(&mut self, block: usize) -> Result<()> {
        self.data = self.sst.read_block_cached(block, self.cache)?;
        self.block = block;
        self.pos = 0;
        Ok(())
    }

    /// The next record's tag and body; `None` at the end of the data.
    fn next(&mut self) -> Result<Option<(u8, Bytes)>> {
        while self.pos >= self.data.len() {
            if self.block + 1 >= self.sst.index.len() {
                return Ok(None);
            }
            self.jump(self.block + 1)?;
        }
        let mut r = Reader::at(&self.data, self.pos);
        let tag = r.u8().map_err(|e| self.sst.corrupt_at(self.block, e))?;
        let len = r.len().map_err(|e| self.sst.corrupt_at(self.block, e))?;
        let start = r.position();
        let body = self.data.slice(start..start + len);
        self.pos = start + len;
        Ok(Some((tag, body)))
    }
}

/// Partitions of an SSTable in order.
pub struct SsTableIter<'a> {
    sst: &'a SsTable,
    cursor: Option<Cursor<'a>>,
    skip_until: Option<std::ops::Bound<DecoratedKey>>,
    filter: ClusteringFilter,
}

impl SsTableIter<'_> {
    pub fn next_partition(&mut self) -> Result<Option<Partition>> {
        let Some(cur) = &mut self.cursor else {
            return Ok(None);
        };
        loop {
            let Some((tag, body)) = cur.next()? else {
                self.cursor = None;
                return Ok(None);
            };
            if tag != TAG_HEADER {
                continue;
            }
            let mut part = codec::get_partition_header(&mut Reader::new(&body))
                .map_err(|e| self.sst.corrupt_at(cur.block, e))?;
            let before_start = match &self.skip_until {
                Some(std::ops::Bound::Included(k)) => part.key < *k,
                Some(std::ops::Bound::Excluded(k)) => part.key <= *k,
                _ => false,
            };
            if before_start {
                continue;
            }
            self.skip_until = None;
            self.sst
                .read_rows(cur, &mut part, &self.filter, None, usize::MAX)?;
            return Ok(Some(part));
        }
    }
}

/// An SSTable read a row at a time: [`Self::next_header`] gives the next
/// partition's header (no rows), then [`Self::next_row`] its rows in
/// clustering order until `None`. Holds one block, whatever the width of
/// the partition.
pub struct SsTableRowIter<'a> {
    sst: &'a SsTable,
    cursor: Option<Cursor<'a>>,
    in_partition: bool,
}

impl SsTableRowIter<'_> {
    /// The next partition's header; rows of the current one not read yet
    /// are skipped.
    pub fn next_header(&mut self) -> Result<Option<Partition>> {
        let Some(cur) = &mut self.cursor else {
            return Ok(None);
        };
        loop {
            let Some((tag, body)) = cur.next()? else {
                self.cursor = None;
                return Ok(None);
            };
            if tag != TAG_HEADER {
                continue;
            }
            let part = codec::get_partition_header(&mut Reader::new(&body))
                .map_err(|e| self.sst.corrupt_at(cur.block, e))?;
            self.in_partition = true;
            return Ok(Some(part));
        }
    }

    /// The current partition's next row; `None` at its end.
    pub fn next_row(&mut self) -> Result<Option<(Bytes, gyre_common::Row)>> {
        if !self.in_partition {
            return Ok(None);
        }
        let Some(cur) = &mut self.cursor else {
            return Ok(None);
        };
        match cur.next()? {
            Some((TAG_ROW, body)) => {
                let mut r = Reader::new(&body);
                let ck = r.bytes().map_err(|e| self.sst.corrupt_at(cur.block, e))?;
                let row = codec::get_row(&mut r).map_err(|e| self.sst.corrupt_at(cur.block, e))?;
                Ok(Some((ck, row)))
            }
            Some((TAG_END, _)) => {
                self.in_partition = false;
                Ok(None)
            }
            Some((tag, _)) => Err(Error::Corruption {
                file: self.sst.path.clone(),
                offset: self.sst.index.get(cur.block).map_or(0, |b| b.offset),
                detail: format!("block {}: record {tag} inside a partition", cur.block),
            }),
            None => {
                self.cursor = None;
                self.in_partition = false;
                Ok(None)
            }
        }
    }
}

// ---- raw blocks (streaming a range of an SSTable without decoding it) ----

/// One data block as stored (header, checksum, payload) with its index
/// position: the unit streaming copies from one SSTable into another.
#[derive(Clone, Debug)]
pub struct RawBlock {
    pub key: DecoratedKey,
    /// The block's first row when it continues a partition, `None` when it
    /// starts with a partition header.
    pub clustering: Option<Bytes>,
    pub bytes: Bytes,
}

/// What [`SsTableWriter::add_raw_block`] found in a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawBlockInfo {
    pub partitions: u64,
    /// False when the block's last partition continues in the next block.
    pub ends_partition: bool,
}

impl SsTable {
    /// How many data blocks the file has.
    pub fn block_count(&self) -> usize {
        self.index.len()
    }

    /// Block `i`'s first key, and whether the block starts with that
    /// partition's header (rather than continuing it).
    pub fn block_start(&self, i: usize) -> Option<(&DecoratedKey, bool)> {
        self.index.get(i).map(|e| (&e.key, e.clustering.is_none()))
    }

    /// Where block `i` starts in the file (the data's end for `i` past the
    /// last block).
    pub fn block_offset(&self, i: usize) -> u64 {
        self.index.get(i).map_or(self.meta.data_bytes, |e| e.offset)
    }

    /// The first block starting at or after `offset`.
    pub fn block_at_or_after(&self, offset: u64) -> usize {
        self.index.partition_point(|e| e.offset < offset)
    }

    /// Blocks `first..end` as stored, read with one read.
    pub fn read_raw_blocks(&self, first: usize, end: usize) -> Result<Vec<RawBlock>> {
        let end = end.min(self.index.len());
        if first >= end {
            return Ok(Vec::new());
        }
        let base = self.index[first].offset;
        let total = self.block_offset(end) - base;
        let mut buf = vec![0u8; total as usize];
        self.read_raw_at(&mut buf, base)?;
        let buf = Bytes::from(buf);
        let mut out = Vec::with_capacity(end - first);
        for e in &self.index[first..end] {
            let at = (e.offset - base) as usize;
            let bytes = buf
                .get(at..at + e.len as usize)
                .map(|_| buf.slice(at..at + e.len as usize))
                .ok_or_else(|| Error::Corruption {
                    file: self.path.clone(),
                    offset: e.offset,
                    detail: "block beyond the data".into(),
                })?;
            out.push(RawBlock {
                key: e.key.clone(),
                clustering: e.clustering.clone(),
                bytes,
            });
        }
        Ok(out)
    }

    /// Iterates partitions from block `i`, which must start with a header.
    pub fn iter_from_block(&self, i: usize, filter: ClusteringFilter) -> Result<SsTableIter<'_>> {
        let cursor = if i < self.index.len() {
            Some(Cursor::new(self, i)?)
        } else {
            None
        };
        Ok(SsTableIter {
            sst: self,
            cursor,
            skip_until: None,
            filter,
        })
    }
}

/// A block's payload, uncompressed, once its checksum matched.
fn raw_block_payload(b: &RawBlock) -> std::result::Result<Vec<u8>, String> {
    let buf = &b.bytes;
    if buf.len() < BLOCK_HEADER {
        return Err("short block".into());
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len + BLOCK_HEADER != buf.len() || crc32fast::hash(&buf[8..]) != crc {
        return Err("block checksum mismatch".into());
    }
    let payload = &buf[BLOCK_HEADER..];
    match buf[8] {
        0 => Ok(payload.to_vec()),
        1 => lz4_flex::decompress_size_prepended(payload).map_err(|e| format!("lz4: {e}")),
        2 => {
            let n = payload
                .get(..4)
                .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize)
                .ok_or("short zstd block")?;
            zstd::bulk::decompress(&payload[4..], n).map_err(|e| format!("zstd: {e}"))
        }
        c => Err(format!("unknown compression {c}")),
    }
}

impl SsTableWriter {
    /// Appends a block copied as-is from another SSTable. Its checksum and
    /// record structure are checked and its partition keys read for the
    /// index and bloom filter, but no row is decoded: the statistics a
    /// block does not carry (timestamps, deletion times, tombstones, cells)
    /// come from `source`, the metadata of the file it was copied from
    /// (bounds stay conservative; counts are prorated by partitions).
    /// A block continuing a partition must follow the block before it.
    pub fn add_raw_block(&mut self, b: &RawBlock, source: &SsTableMeta) -> Result<RawBlockInfo> {
        let path = self.path();
        let corrupt = |detail: String| Error::Corruption {
            file: path.clone(),
            offset: self.offset,
            detail: format!("streamed block: {detail}"),
        };
        if !self.sai.is_empty() {
            return Err(Error::Unsupported(
                "raw blocks into an SSTable building index segments".into(),
            ));
        }
        let data = Bytes::from(raw_block_payload(b).map_err(corrupt)?);
        let mut keys: Vec<DecoratedKey> = Vec::new();
        let mut rows = 0u64;
        let mut r = Reader::new(&data);
        let mut first = true;
        let mut ends_partition = false;
        while r.position() < data.len() {
            let tag = r.u8().map_err(|e| corrupt(e.to_string()))?;
            let len = r.len().map_err(|e| corrupt(e.to_string()))?;
            let start = r.position();
            let body = data.slice(start..start + len);
            match tag {
                TAG_HEADER => {
                    let mut h = Reader::new(&body);
                    let token = h.i64_be().map_err(|e| corrupt(e.to_string()))?;
                    let key = h.bytes().map_err(|e| corrupt(e.to_string()))?;
                    let key = DecoratedKey {
                        token,
                        key: Bytes::copy_from_slice(&key),
                    };
                    let prev = keys.last().or(self.last_key.as_ref());
                    if first && (b.clustering.is_some() || key != b.key)
                        || prev.is_some_and(|p| *p >= key)
                    {
                        return Err(corrupt("partitions out of order".into()));
                    }
                    keys.push(key);
                    ends_partition = false;
                }
                TAG_ROW => {
                    if first
                        && (b.clustering.is_none()
                            || self.last_key.as_ref() != Some(&b.key)
                            || !self.block.is_empty())
                    {
                        return Err(corrupt("a row outside its partition".into()));
                    }
                    rows += 1;
                }
                TAG_END if first => {
                    return Err(corrupt("a block starting at a partition end".into()))
                }
                TAG_END => ends_partition = true,
                t => return Err(corrupt(format!("unknown record tag {t}"))),
            }
            first = false;
            r = Reader::at(&data, start + len);
        }
        // Whatever was added before ends in its own block.
        self.finish_block()?;
        let n = keys.len() as u64;
        let prorate = |x: u64| {
            (u128::from(x) * u128::from(n)).div_ceil(u128::from(source.partition_count.max(1)))
                as u64
        };
        let m = &mut self.meta;
        if let (Some(lo), Some(hi)) = (keys.first(), keys.last()) {
            if m.partition_count == 0 {
                m.min_token = lo.token;
            }
            m.max_token = hi.token;
        }
        m.partition_count += n;
        m.row_count += rows;
        m.cell_count += prorate(source.cell_count);
        m.tombstone_count += prorate(source.tombstone_count);
        m.min_timestamp = m.min_timestamp.min(source.min_timestamp);
        m.max_timestamp = m.max_timestamp.max(source.max_timestamp);
        m.min_local_deletion_time = m
            .min_local_deletion_time
            .min(source.min_local_deletion_time);
        m.max_local_deletion_time = m
            .max_local_deletion_time
            .max(source.max_local_deletion_time);
        self.out
            .write_all(&b.bytes)
            .ctx(|| format!("writing {}", path.display()))?;
        self.write_index_entry(&IndexEntry {
            key: b.key.clone(),
            clustering: b.clustering.clone(),
            offset: self.offset,
            len: b.bytes.len() as u32,
        })?;
        self.offset += b.bytes.len() as u64;
        for k in &keys {
            match &mut self.bloom {
                Some(bloom) => bloom.insert(k),
                None => self.key_hashes.push(crate::bloom::hashes(k)),
            }
        }
        if let Some(k) = keys.pop() {
            self.last_key = Some(k);
        }
        Ok(RawBlockInfo {
            partitions: n,
            ends_partition,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_common::{Cell, CellName, Deletion, Slice, SliceBound};

    /// Partitions of every shape, in ring order: rows of several cells,
    /// row, range and partition deletions, static rows, expiring cells,
    /// cell tombstones, a partition with no rows.
    fn partitions() -> Vec<Partition> {
        let mut out: Vec<Partition> = (0..400u32)
            .map(|i| {
                let mut p = Partition::with_key(format!("key{i}"));
                for r in 0..(i % 7) {
                    let ck = (r * 3).to_be_bytes().to_vec();
                    p = p
                        .set(
                            ck.clone(),
                            CellName::simple("a"),
                            Cell::live(i64::from(i), vec![r as u8; 40]),
                        )
                        .set(
                            ck.clone(),
                            CellName::element("m", format!("{r}")),
                            Cell::expiring(5, "x", 60, 1_000 + i64::from(i)),
                        );
                    if r == 2 {
                        p = p.set(ck.clone(), CellName::simple("b"), Cell::tombstone(9, 77));
                    }
                    if r == 4 {
                        p = p.delete_row(ck, Deletion::new(3, 50));
                    }
                }
                if i % 5 == 0 {
                    p = p.set_static(CellName::simple("s"), Cell::live(-4, "static"));
                }
                if i % 11 == 0 {
                    p = p.delete_range(
                        Slice::new(
                            SliceBound::Inclusive(Bytes::from_static(b"\0")),
                            SliceBound::Exclusive(Bytes::from_static(b"\x05")),
                        ),
                        Deletion::new(2, 40),
                    );
                }
                if i % 13 == 0 {
                    p = p.delete_partition(Deletion::new(1, 30));
                }
                p
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn write(dir: &Path, parts: &[Partition], encoded: bool) -> (Vec<u8>, SsTableMeta) {
        // Small blocks: cuts fall inside partitions too.
        let mut w = SsTableWriter::create(dir, 7, Compression::Lz4, 300, 10).expect("create");
        for p in parts {
            if encoded {
                let mut enc = Vec::new();
                codec::encode_partition(&mut enc, p);
                assert!(w.add_encoded(&p.key, &Bytes::from(enc)).expect("add"));
            } else {
                w.add(p).expect("add");
            }
        }
        let s = w.finish().expect("finish");
        (fs::read(s.path()).expect("read"), s.meta.clone())
    }

    /// Spliced records are the ones the decoded path writes, byte for
    /// byte, and the metadata counts the same.
    #[test]
    fn encoded_partitions_write_the_same_file_as_decoded_ones() {
        let parts = partitions();
        let (a, b) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let (decoded, meta_d) = write(a.path(), &parts, false);
        let (spliced, meta_s) = write(b.path(), &parts, true);
        assert_eq!(meta_s, meta_d);
        assert!(meta_d.tombstone_count > 0 && meta_d.row_count > 0);
        assert!(decoded == spliced, "the files differ");
        let sst = SsTable::open(&sstable_path(b.path(), 7)).expect("open");
        for p in &parts {
            let got = sst.get(&p.key, &ClusteringFilter::all()).expect("get");
            assert_eq!(got.as_ref(), Some(p));
        }
    }

    /// Bytes that are not what `encode_partition` gives (from elsewhere)
    /// are refused without writing anything, so the caller can decode them.
    #[test]
    fn non_canonical_encodings_are_refused() {
        let p = Partition::with_key("k")
            .set(vec![1u8], CellName::simple("a"), Cell::live(1, "x"))
            .set(vec![2u8], CellName::simple("a"), Cell::live(1, "y"));
        let row = |ck: u8, cells: &[&'static str]| {
            let mut out = Vec::new();
            codec::put_bytes(&mut out, &[ck]);
            let mut r = gyre_common::Row::default();
            for c in cells {
                r.cells.insert(CellName::simple(*c), Cell::live(1, "v"));
            }
            codec::put_row(&mut out, &r);
            out
        };
        let with_rows = |rows: &[Vec<u8>]| {
            let mut enc = Vec::new();
            codec::put_partition_header(&mut enc, &Partition::new(p.key.clone()));
            codec::put_uvarint(&mut enc, rows.len() as u64);
            for r in rows {
                enc.extend_from_slice(r);
            }
            Bytes::from(enc)
        };
        let mut good = Vec::new();
        codec::encode_partition(&mut good, &p);
        let mut trailing = good.clone();
        trailing.push(0);
        // A row of cells out of order cannot come from a BTreeMap.
        let mut unordered_cells = Vec::new();
        codec::put_bytes(&mut unordered_cells, &[1]);
        unordered_cells.push(0); // no row deletion
        codec::put_uvarint(&mut unordered_cells, 2);
        for c in ["b", "a"] {
            codec::put_cell(
                &mut unordered_cells,
                &CellName::simple(c),
                &Cell::live(1, "v"),
            );
        }
        let bad = [
            Bytes::from(trailing),
            Bytes::from(good[..good.len() - 1].to_vec()),
            with_rows(&[row(2, &["a"]), row(1, &["a"])]),
            with_rows(&[row(1, &["a"]), row(1, &["a"])]),
            with_rows(&[unordered_cells]),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w =
            SsTableWriter::create(dir.path(), 1, Compression::None, 4096, 10).expect("sstable");
        for enc in &bad {
            assert!(!w.add_encoded(&p.key, enc).expect("sstable"));
        }
        let other = DecoratedKey::new("other");
        assert!(!w
            .add_encoded(&other, &Bytes::from(good.clone()))
            .expect("sstable"));
        assert_eq!(w.partition_count(), 0);
        assert_eq!(w.bytes_written(), 0);
        assert!(w.add_encoded(&p.key, &Bytes::from(good)).expect("sstable"));
        let s = w.finish().expect("sstable");
        assert_eq!(
            s.get(&p.key, &ClusteringFilter::all()).expect("sstable"),
            Some(p)
        );
    }
}
