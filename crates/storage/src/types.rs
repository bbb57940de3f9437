//! The request and option types of the engine trait.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Bound;

use bytes::Bytes;
use gyre_common::{DecoratedKey, Partition, Slice, Token};
use serde::{Deserialize, Serialize};

/// A table's stable identity (a uuid, as Cassandra's table id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId(pub uuid::Uuid);

impl TableId {
    pub fn random() -> Self {
        TableId(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Block compression of SSTables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[default]
    Lz4,
    Zstd,
}

/// Size-tiered compaction parameters (Cassandra's names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SizeTieredOptions {
    pub min_threshold: usize,
    pub max_threshold: usize,
    pub bucket_low: f64,
    pub bucket_high: f64,
    pub min_sstable_size: u64,
}

impl Default for SizeTieredOptions {
    fn default() -> Self {
        SizeTieredOptions {
            min_threshold: 4,
            max_threshold: 32,
            bucket_low: 0.5,
            bucket_high: 1.5,
            min_sstable_size: 50 << 20,
        }
    }
}

/// The compaction strategy of a table. Leveled and time-window strategies
/// slot in as further variants with their own planner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class")]
pub enum CompactionOptions {
    SizeTiered(SizeTieredOptions),
    /// No background compaction; major compaction on request still works.
    None,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        CompactionOptions::SizeTiered(SizeTieredOptions::default())
    }
}

/// Per-table storage options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableOptions {
    /// Seconds a tombstone is kept before compaction may purge it.
    pub gc_grace_seconds: u32,
    pub compression: Compression,
    pub compaction: CompactionOptions,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            gc_grace_seconds: 864_000,
            compression: Compression::Lz4,
            compaction: CompactionOptions::default(),
        }
    }
}

/// Which rows of a partition to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusteringFilter {
    /// Rows inside any of these slices (sorted, non-overlapping).
    Slices(Vec<Slice>),
    /// Exactly these rows.
    Names(BTreeSet<Bytes>),
}

impl ClusteringFilter {
    pub fn all() -> Self {
        ClusteringFilter::Slices(vec![Slice::ALL])
    }

    pub fn contains(&self, ck: &[u8]) -> bool {
        match self {
            ClusteringFilter::Slices(s) => s.iter().any(|s| s.contains(ck)),
            ClusteringFilter::Names(n) => n.contains(ck),
        }
    }

    /// True when a range tombstone over `slice` may matter to the read.
    pub fn intersects(&self, slice: &Slice) -> bool {
        match self {
            ClusteringFilter::Slices(s) => s.iter().any(|s| s.intersects(slice)),
            ClusteringFilter::Names(n) => n.iter().any(|k| slice.contains(k)),
        }
    }

    /// The smallest clustering key the filter can select.
    pub fn seek_key(&self) -> Bytes {
        match self {
            ClusteringFilter::Slices(s) => s
                .iter()
                .map(|s| Bytes::copy_from_slice(s.seek_key()))
                .min()
                .unwrap_or_default(),
            ClusteringFilter::Names(n) => n.iter().next().cloned().unwrap_or_default(),
        }
    }

    /// True when no row past `ck` can be selected (for early stop).
    pub fn is_past_end(&self, ck: &[u8]) -> bool {
        match self {
            ClusteringFilter::Slices(s) => s.iter().all(|s| !s.before_end(ck)),
            ClusteringFilter::Names(n) => {
                n.iter().next_back().is_none_or(|last| ck > last.as_ref())
            }
        }
    }
}

/// Which cells of the selected rows to return.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ColumnFilter {
    #[default]
    All,
    /// Only these columns (every cell path under them).
    Columns(BTreeSet<Bytes>),
}

impl ColumnFilter {
    pub fn contains(&self, column: &[u8]) -> bool {
        match self {
            ColumnFilter::All => true,
            ColumnFilter::Columns(c) => c.contains(column),
        }
    }
}

/// What a partition read returns.
///
/// The result is reconciled and clipped, but still carries tombstones that
/// fall in the selection, so the coordinator can reconcile replicas. A row
/// counts as live when a selected cell is live; the CQL layer selects the
/// row-marker column (empty name) to keep rows alive that an INSERT wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFilter {
    pub clustering: ClusteringFilter,
    pub columns: ColumnFilter,
    /// At most this many live rows (from the end when `reversed`).
    pub limit: Option<usize>,
    pub reversed: bool,
}

impl Default for ReadFilter {
    fn default() -> Self {
        ReadFilter {
            clustering: ClusteringFilter::all(),
            columns: ColumnFilter::All,
            limit: None,
            reversed: false,
        }
    }
}

impl ReadFilter {
    pub fn all() -> Self {
        Self::default()
    }
}

/// Where a range scan starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanStart {
    /// The start of a token range (Cassandra ranges are start-exclusive).
    Token(Bound<Token>),
    /// Just after this partition.
    After(DecoratedKey),
    /// Inside a partition, after a clustering key (a resumed page), with
    /// the live rows of that partition already returned (for the
    /// per-partition limit).
    Within {
        key: DecoratedKey,
        after: Bytes,
        returned: usize,
    },
}

/// A page of a token-ordered scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRequest {
    pub start: ScanStart,
    /// The last token of the range (inclusive when `Included`).
    pub end: Bound<Token>,
    /// Per-partition filter; its `limit` is the per-partition limit.
    pub filter: ReadFilter,
    /// Stop once this many live rows were returned (a partition without
    /// clustering rows counts as one row when it has live static cells).
    pub max_rows: usize,
}

/// A page of scan results and where to resume, if there is more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    pub partitions: Vec<Partition>,
    pub resume: Option<ScanStart>,
}

/// Sizes and counters of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableStats {
    pub sstable_count: usize,
    pub disk_bytes: u64,
    pub memtable_bytes: u64,
    pub estimated_partitions: u64,
    pub tombstones_on_disk: u64,
    /// Bytes written by flushes and compactions since the engine started.
    pub bytes_flushed: u64,
    pub bytes_compacted: u64,
    pub compactions: u64,
}

/// Engine-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub commitlog_bytes_written: u64,
    pub commitlog_syncs: u64,
    /// Records appended to the commitlog: divided by `commitlog_syncs`, the
    /// writes each group fsync carried.
    pub commitlog_records: u64,
    pub memtable_bytes: u64,
    pub tables: usize,
}
