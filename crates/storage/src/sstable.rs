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

/// Writes one SSTable from partitions given in (token, key) order.
pub struct SsTableWriter {
    dir: PathBuf,
    out: BufWriter<File>,
    block: Vec<u8>,
    block_first: Option<(DecoratedKey, Option<Bytes>)>,
    block_bytes: usize,
    index: Vec<IndexEntry>,
    keys: Vec<DecoratedKey>,
    offset: u64,
    meta: SsTableMeta,
    bloom_bits_per_key: usize,
    scratch: Vec<u8>,
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
            index: Vec::new(),
            keys: Vec::new(),
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

    /// Sets the compaction level recorded in the metadata.
    pub fn set_level(&mut self, level: u32) {
        self.meta.level = level;
    }

    /// The token of the last partition added, if any.
    pub fn last_token(&self) -> Option<Token> {
        self.keys.last().map(|k| k.token)
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
        self.index.push(IndexEntry {
            key,
            clustering,
            offset: self.offset,
            len,
        });
        self.offset += u64::from(len);
        self.block.clear();
        Ok(())
    }

    /// Appends a partition; partitions must come in strictly increasing order.
    pub fn add(&mut self, p: &Partition) -> Result<()> {
        if self.meta.partition_count == 0 {
            self.meta.min_token = p.key.token;
        }
        self.meta.max_token = p.key.token;
        self.meta.partition_count += 1;
        self.meta.row_count += p.rows.len() as u64;
        if let Some((lo, hi)) = p.timestamp_range() {
            self.meta.min_timestamp = self.meta.min_timestamp.min(lo);
            self.meta.max_timestamp = self.meta.max_timestamp.max(hi);
        }
        let deletions = p.deletion.iter().count()
            + p.range_tombstones.len()
            + p.static_row
                .iter()
                .chain(p.rows.values())
                .filter(|r| r.deletion.is_some())
                .count();
        self.meta.tombstone_count += deletions as u64;
        for d in p
            .deletion
            .iter()
            .chain(p.range_tombstones.iter().map(|r| &r.deletion))
            .chain(
                p.static_row
                    .iter()
                    .chain(p.rows.values())
                    .filter_map(|r| r.deletion.as_ref()),
            )
        {
            self.meta.min_local_deletion_time = self.meta.min_local_deletion_time.min(d.deleted_at);
            self.meta.max_local_deletion_time = self.meta.max_local_deletion_time.max(d.deleted_at);
        }
        for (_, c) in p.cells() {
            self.meta.cell_count += 1;
            let ldt = c.local_deletion_time();
            if let Some(ldt) = ldt {
                self.meta.min_local_deletion_time = self.meta.min_local_deletion_time.min(ldt);
            }
            self.meta.max_local_deletion_time = self
                .meta
                .max_local_deletion_time
                .max(ldt.unwrap_or(LocalTime::MAX));
            if matches!(c.value, CellValue::Tombstone { .. }) {
                self.meta.tombstone_count += 1;
            }
        }
        self.keys.push(p.key.clone());
        if !self.sai.is_empty() {
            self.sai.add(p);
        }

        self.start_record(&p.key, None)?;
        codec::put_partition_header(&mut self.scratch, p);
        self.push_record(TAG_HEADER);
        for (ck, row) in &p.rows {
            self.start_record(&p.key, Some(ck))?;
            codec::put_bytes(&mut self.scratch, ck);
            codec::put_row(&mut self.scratch, row);
            self.push_record(TAG_ROW);
        }
        self.block.push(TAG_END);
        self.block.push(0);
        Ok(())
    }

    /// Writes index, bloom filter, metadata and footer, syncs, and renames
    /// the file into place. Returns the opened SSTable.
    pub fn finish(mut self) -> Result<SsTable> {
        self.finish_block()?;
        let path = self.path();
        let w = |out: &mut BufWriter<File>, b: &[u8]| {
            out.write_all(b)
                .ctx(|| format!("writing {}", path.display()))
        };
        self.meta.data_bytes = self.offset;

        let mut index = Vec::new();
        codec::put_uvarint(&mut index, self.index.len() as u64);
        for e in &self.index {
            index.extend_from_slice(&e.key.token.to_be_bytes());
            codec::put_bytes(&mut index, &e.key.key);
            match &e.clustering {
                None => index.push(0),
                Some(ck) => {
                    index.push(1);
                    codec::put_bytes(&mut index, ck);
                }
            }
            codec::put_uvarint(&mut index, e.offset);
            codec::put_uvarint(&mut index, u64::from(e.len));
        }
        index.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
        let mut bloom = Vec::new();
        Bloom::build(self.keys.iter(), self.bloom_bits_per_key).encode(&mut bloom);
        bloom.extend_from_slice(&crc32fast::hash(&bloom).to_le_bytes());
        let mut meta = serde_json::to_vec(&self.meta).map_err(|e| Error::Config(e.to_string()))?;
        meta.extend_from_slice(&crc32fast::hash(&meta).to_le_bytes());

        let index_off = self.offset;
        let bloom_off = index_off + index.len() as u64;
        let meta_off = bloom_off + bloom.len() as u64;
        w(&mut self.out, &index)?;
        w(&mut self.out, &bloom)?;
        w(&mut self.out, &meta)?;
        let mut footer = Vec::with_capacity(FOOTER_LEN as usize);
        footer.extend_from_slice(MAGIC);
        footer.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for (off, len) in [
            (index_off, index.len()),
            (bloom_off, bloom.len()),
            (meta_off, meta.len()),
        ] {
            footer.extend_from_slice(&off.to_le_bytes());
            footer.extend_from_slice(&(len as u64).to_le_bytes());
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
        fs::rename(&path, &final_path).ctx(|| format!("renaming {}", path.display()))?;
        if let Err(e) = fsync_dir_at(&self.dir, FSYNC_FAILPOINT) {
            // The caller keeps the data elsewhere and retries under a new
            // generation: a stray copy found on restart could outlive the
            // tombstones that later shadow it.
            let _ = fs::remove_file(&final_path);
            return Err(e);
        }
        self.finished = true;
        let sst = SsTable::open(&final_path)?;
        sst.sai.insert_all(std::mem::take(&mut self.sai).finish());
        Ok(sst)
    }
}

impl Drop for SsTableWriter {
    fn drop(&mut self) {
        if !self.finished {
            // An abandoned write (error or crash-free abort) leaves nothing.
            let _ = fs::remove_file(self.path());
        }
    }
}

/// An open, immutable SSTable.
pub struct SsTable {
    path: PathBuf,
    /// From the file name (`sst-<generation>.db`): an imported SSTable's
    /// metadata keeps the generation it was written under elsewhere.
    generation: u64,
    file: File,
    index: Vec<IndexEntry>,
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
        Ok(SsTable {
            path: path.to_path_buf(),
            generation,
            file,
            index,
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

    /// True when the SSTable may hold the partition.
    pub fn may_contain(&self, key: &DecoratedKey) -> bool {
        self.meta.partition_count > 0
            && key.token >= self.meta.min_token
            && key.token <= self.meta.max_token
            && self.bloom.may_contain(key)
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
        if !self.may_contain(key) || self.index.is_empty() {
            return Ok(None);
        }
        let mut cur = Cursor::new(self, self.find_block(key, None))?;
        // Find the partition's header.
        let mut part = loop {
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
                    break codec::get_partition_header(&mut Reader::new(&body))
                        .map_err(|e| self.corrupt_at(cur.block, e))?;
                }
            }
        };
        // Wide partitions: jump to the block holding the first wanted row.
        let seek = filter.seek_key();
        if !seek.is_empty() {
            let target = self.find_block(key, Some(&seek));
            if target > cur.block {
                cur.jump(target)?;
            }
        }
        self.read_rows(&mut cur, &mut part, filter)?;
        Ok(Some(part))
    }

    fn read_rows(
        &self,
        cur: &mut Cursor<'_>,
        part: &mut Partition,
        filter: &ClusteringFilter,
    ) -> Result<()> {
        while let Some((tag, body)) = cur.next()? {
            if tag != TAG_ROW {
                break;
            }
            let mut r = Reader::new(&body);
            let ck = r.bytes().map_err(|e| self.corrupt_at(cur.block, e))?;
            if filter.is_past_end(&ck) {
                break;
            }
            if filter.contains(&ck) {
                let row = codec::get_row(&mut r).map_err(|e| self.corrupt_at(cur.block, e))?;
                part.rows.insert(ck, row);
            }
        }
        Ok(())
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
}

impl<'a> Cursor<'a> {
    fn new(sst: &'a SsTable, block: usize) -> Result<Self> {
        Ok(Cursor {
            sst,
            block,
            data: sst.read_block(block)?,
            pos: 0,
        })
    }

    fn jump(&mut self, block: usize) -> Result<()> {
        self.data = self.sst.read_block(block)?;
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
            self.sst.read_rows(cur, &mut part, &self.filter)?;
            return Ok(Some(part));
        }
    }
}
