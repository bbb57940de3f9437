//! SSTable streaming between nodes (bootstrap, replace, removenode): the
//! sending side's view of the SSTables that hold a token range, and the
//! receiving side's staging of the files it gets before it imports them.
//!
//! An SSTable whose token span lies inside the streamed range travels whole:
//! its bytes are read in big chunks and written verbatim on the receiver,
//! with no decoding (as Cassandra's entire-SSTable streaming). Any other
//! SSTable sends the section of its partitions inside the range, and the
//! receiver writes it into a new SSTable of its own, so nothing goes through
//! the commitlog and the memtable. A section is mostly a run of data blocks
//! lying wholly inside the range (partitions are in token order, so the
//! range is a contiguous run of blocks, found through the index): those
//! blocks are copied as stored, checksums included, and the receiver only
//! reads their partition keys for its index and bloom filter
//! ([`crate::sstable::SsTableWriter::add_raw_block`]). Only the partitions
//! of the blocks at the run's two edges (the head and the tail) are decoded
//! and re-encoded. Either way the received files are imported like
//! `nodetool refresh` ones ([`crate::StorageEngine::import_streamed`]).
//!
//! Staged files live in the table's `streaming/` directory; a
//! [`StreamReceiver`] dropped before its files were imported (a failed
//! session, a full disk) removes them, and opening the engine removes any a
//! crash left.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gyre_common::{Partition, Token};

use crate::error::IoContext;
pub use crate::sstable::{RawBlock, SsTableMeta};
use crate::sstable::{SsTable, SsTableWriter};
use crate::types::{ClusteringFilter, Compression, ScanStart};
use crate::{Error, Result};

/// The subdirectory of a table directory where received files are staged.
pub const STREAMING_DIR: &str = "streaming";

/// One SSTable a source offers for a token range.
pub struct OutgoingFile {
    sst: Arc<SsTable>,
    /// True when every partition of it is inside the range: it is sent as
    /// its bytes.
    pub whole: bool,
    /// For a section: the run of blocks `a..b` whose partitions all lie
    /// inside the range, sent as stored. The partitions before block `a`
    /// (the head) and from block `b` on (the tail) are sent decoded.
    raw: Option<(usize, usize)>,
}

/// True when `token` is after `start`.
fn after_start(token: Token, start: &ScanStart) -> bool {
    match start {
        ScanStart::Token(Bound::Unbounded) => true,
        ScanStart::Token(Bound::Included(t)) => token >= *t,
        ScanStart::Token(Bound::Excluded(t)) => token > *t,
        ScanStart::After(k) | ScanStart::Within { key: k, .. } => token >= k.token,
    }
}

fn before_end(token: Token, end: &Bound<Token>) -> bool {
    match end {
        Bound::Unbounded => true,
        Bound::Included(t) => token <= *t,
        Bound::Excluded(t) => token < *t,
    }
}

/// The run of blocks of `sst` whose partitions all lie in `start..end`,
/// from a block starting with a partition header to one whose successor
/// starts with a header inside the range (or the last block): those are
/// copied as stored. `None` when there is no such block.
fn raw_run(sst: &SsTable, start: &ScanStart, end: &Bound<Token>) -> Option<(usize, usize)> {
    let n = sst.block_count();
    let token = |i: usize| sst.block_start(i).map(|(k, _)| k.token);
    let header = |i: usize| sst.block_start(i).is_some_and(|(_, h)| h);
    let first = partition_point(n, |i| token(i).is_some_and(|t| !after_start(t, start)));
    let a = (first..n).find(|&i| header(i))?;
    let b = if before_end(sst.meta.max_token, end) {
        n
    } else {
        let past = partition_point(n, |i| token(i).is_some_and(|t| before_end(t, end)));
        (a + 1..past).rev().find(|&i| header(i))?
    };
    (a < b).then_some((a, b))
}

/// The first `i` in `0..n` for which `pred` is false (`pred` true then false).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl OutgoingFile {
    /// The SSTables of `ssts` holding tokens of `start..end` (one segment
    /// of a range, never wrapping), whole when inside it.
    pub(crate) fn select(
        ssts: &[Arc<SsTable>],
        start: &ScanStart,
        end: &Bound<Token>,
    ) -> Vec<OutgoingFile> {
        ssts.iter()
            .filter(|s| s.meta.partition_count > 0)
            .filter(|s| after_start(s.meta.max_token, start) && before_end(s.meta.min_token, end))
            .map(|s| {
                let whole =
                    after_start(s.meta.min_token, start) && before_end(s.meta.max_token, end);
                OutgoingFile {
                    whole,
                    raw: if whole { None } else { raw_run(s, start, end) },
                    sst: s.clone(),
                }
            })
            .collect()
    }

    /// Bytes of the run of blocks sent as stored (0 for none).
    pub fn raw_bytes(&self) -> u64 {
        self.raw.map_or(0, |(a, b)| {
            self.sst.block_offset(b) - self.sst.block_offset(a)
        })
    }

    /// The metadata of the file (a receiver of raw blocks takes the
    /// statistics blocks do not carry from it).
    pub fn meta(&self) -> &SsTableMeta {
        &self.sst.meta
    }

    /// The blocks of the raw run starting in its `k`-th window of
    /// `chunk_bytes` (a block belongs to the window holding its start).
    pub fn read_raw(&self, k: u64, chunk_bytes: u64) -> Result<Vec<RawBlock>> {
        let Some((a, b)) = self.raw else {
            return Ok(Vec::new());
        };
        let base = self.sst.block_offset(a);
        let at = |k: u64| {
            k.checked_mul(chunk_bytes)
                .and_then(|o| o.checked_add(base))
                .map_or(b, |o| self.sst.block_at_or_after(o).clamp(a, b))
        };
        self.sst.read_raw_blocks(at(k), at(k.saturating_add(1)))
    }

    /// The file's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.sst.file_bytes
    }

    /// How many partitions the whole file holds.
    pub fn partitions(&self) -> u64 {
        self.sst.meta.partition_count
    }

    /// Up to `max` bytes of the file from `offset` (fewer at its end).
    pub fn read_chunk(&self, offset: u64, max: usize) -> Result<Vec<u8>> {
        let left = self.sst.file_bytes.saturating_sub(offset);
        let n = (max as u64).min(left) as usize;
        // Room for the caller's checksum without a reallocation.
        let mut buf = Vec::with_capacity(n + 8);
        buf.resize(n, 0);
        self.sst.read_raw_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Hands `take` the partitions of the file from `start` up to `end`,
    /// about `max_bytes` of them (as `take` counts them), and says where
    /// the next section starts. A partition is never cut: one larger than
    /// `max_bytes` is refused (the caller streams such a range row by row).
    /// With a raw run, this is the head: it stops before the run.
    pub fn read_section(
        &self,
        start: &ScanStart,
        end: &Bound<Token>,
        max_bytes: usize,
        take: impl FnMut(Partition) -> usize,
    ) -> Result<Option<ScanStart>> {
        let Some(from) = crate::engine::scan_start_bound(start) else {
            return Ok(None);
        };
        let it = self.sst.iter_from(&from, ClusteringFilter::all())?;
        let stop = self
            .raw
            .and_then(|(a, _)| self.sst.block_start(a))
            .map(|(k, _)| k.clone());
        Self::section_page(it, stop.as_ref(), end, max_bytes, take)
    }

    /// The tail after the raw run, as [`Self::read_section`]: from the
    /// run's end (`None`) or from a resume point it gave.
    pub fn read_tail(
        &self,
        start: Option<&ScanStart>,
        end: &Bound<Token>,
        max_bytes: usize,
        take: impl FnMut(Partition) -> usize,
    ) -> Result<Option<ScanStart>> {
        let Some((_, b)) = self.raw else {
            return Ok(None);
        };
        let it = match start {
            None => self.sst.iter_from_block(b, ClusteringFilter::all())?,
            Some(s) => match crate::engine::scan_start_bound(s) {
                Some(from) => self.sst.iter_from(&from, ClusteringFilter::all())?,
                None => return Ok(None),
            },
        };
        Self::section_page(it, None, end, max_bytes, take)
    }

    fn section_page(
        mut it: crate::sstable::SsTableIter<'_>,
        stop: Option<&gyre_common::DecoratedKey>,
        end: &Bound<Token>,
        max_bytes: usize,
        mut take: impl FnMut(Partition) -> usize,
    ) -> Result<Option<ScanStart>> {
        let mut total = 0;
        while let Some(p) = it.next_partition()? {
            if !before_end(p.key.token, end) || stop.is_some_and(|s| p.key >= *s) {
                return Ok(None);
            }
            let key = p.key.clone();
            let n = take(p);
            if n > max_bytes {
                return Err(Error::LimitExceeded(format!(
                    "a partition of {n} bytes is larger than a stream section"
                )));
            }
            total += n;
            if total >= max_bytes {
                return Ok(Some(ScanStart::After(key)));
            }
        }
        Ok(None)
    }
}

/// Unique names for staged files across the receivers of one process.
static STAGED: AtomicU64 = AtomicU64::new(0);

/// The receiving side of a table's stream: files staged, then imported.
pub struct StreamReceiver {
    pub(crate) dir: PathBuf,
    pub(crate) compression: Compression,
    pub(crate) block_bytes: usize,
    pub(crate) bloom_bits_per_key: usize,
    /// Complete files not imported yet.
    pub(crate) staged: Vec<PathBuf>,
}

impl StreamReceiver {
    pub(crate) fn new(
        table_dir: &Path,
        compression: Compression,
        block_bytes: usize,
        bloom_bits_per_key: usize,
    ) -> Result<Self> {
        let dir = table_dir.join(STREAMING_DIR);
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(StreamReceiver {
            dir,
            compression,
            block_bytes,
            bloom_bits_per_key,
            staged: Vec::new(),
        })
    }

    fn next_generation() -> u64 {
        // Distinct from every earlier run's leftovers too (they are removed
        // at start-up anyway).
        STAGED.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A whole SSTable arriving as bytes.
    pub fn whole_file(&mut self) -> Result<IncomingFile> {
        let g = Self::next_generation();
        let tmp = self.dir.join(format!("tmp-sst-{g}.db"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))?;
        Ok(IncomingFile {
            file: Some(file),
            tmp,
            path: crate::sstable::sstable_path(&self.dir, g),
        })
    }

    /// A section arriving as partitions, written into an SSTable here.
    pub fn section(&mut self) -> Result<IncomingSection> {
        let g = Self::next_generation();
        Ok(IncomingSection {
            writer: Some(SsTableWriter::create(
                &self.dir,
                g,
                self.compression,
                self.block_bytes,
                self.bloom_bits_per_key,
            )?),
            open: false,
        })
    }

    /// Records a complete file for the import.
    pub fn add(&mut self, path: PathBuf) {
        self.staged.push(path);
    }

    /// The complete files staged so far.
    pub fn staged(&self) -> &[PathBuf] {
        &self.staged
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        // Files still here were never imported (a failed session).
        for p in self.staged.drain(..) {
            let _ = fs::remove_file(p);
        }
    }
}

/// A whole SSTable being received.
pub struct IncomingFile {
    file: Option<File>,
    tmp: PathBuf,
    path: PathBuf,
}

impl IncomingFile {
    /// Writes a chunk at `offset`.
    pub fn write_at(&mut self, chunk: &[u8], offset: u64) -> Result<()> {
        let f = self.file.as_ref().ok_or(Error::Closed)?;
        f.write_all_at(chunk, offset)
            .ctx(|| format!("writing {}", self.tmp.display()))
    }

    /// Syncs and renames the file; checks it opens as an SSTable.
    pub fn finish(mut self) -> Result<PathBuf> {
        let mut f = self.file.take().ok_or(Error::Closed)?;
        f.flush()
            .ctx(|| format!("writing {}", self.tmp.display()))?;
        f.sync_all()
            .ctx(|| format!("syncing {}", self.tmp.display()))?;
        drop(f);
        SsTable::open(&self.tmp)?;
        fs::rename(&self.tmp, &self.path).ctx(|| format!("renaming {}", self.tmp.display()))?;
        Ok(self.path.clone())
    }
}

impl Drop for IncomingFile {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A section being written into a new SSTable (partitions in token order).
pub struct IncomingSection {
    writer: Option<SsTableWriter>,
    /// The last raw block ended inside a partition: only its next block
    /// may come.
    open: bool,
}

impl IncomingSection {
    pub fn add(&mut self, p: &Partition) -> Result<()> {
        self.check_closed()?;
        self.writer.as_mut().ok_or(Error::Closed)?.add(p)
    }

    /// Appends blocks copied as stored from an SSTable with metadata
    /// `source`; returns how many partitions they start.
    pub fn add_raw(&mut self, blocks: &[RawBlock], source: &SsTableMeta) -> Result<u64> {
        let w = self.writer.as_mut().ok_or(Error::Closed)?;
        let mut partitions = 0;
        for b in blocks {
            // A block continues a partition exactly when the last one
            // left it open.
            if self.open != b.clustering.is_some() {
                return Err(Error::Malformed(
                    "a streamed block does not follow the one before it".into(),
                ));
            }
            let info = w.add_raw_block(b, source)?;
            partitions += info.partitions;
            self.open = !info.ends_partition;
        }
        Ok(partitions)
    }

    fn check_closed(&self) -> Result<()> {
        if self.open {
            return Err(Error::Malformed(
                "a streamed section stops inside a partition".into(),
            ));
        }
        Ok(())
    }

    /// Finishes the SSTable; `None` when no partition came.
    pub fn finish(mut self) -> Result<Option<PathBuf>> {
        self.check_closed()?;
        let w = self.writer.take().ok_or(Error::Closed)?;
        if w.partition_count() == 0 {
            return Ok(None);
        }
        let sst = w.finish()?;
        Ok(Some(sst.path().to_path_buf()))
    }
}

/// Removes what a crash left in a table's staging directory.
pub(crate) fn clear_staging(table_dir: &Path) -> Result<()> {
    let dir = table_dir.join(STREAMING_DIR);
    if dir.is_dir() {
        fs::remove_dir_all(&dir).ctx(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}
