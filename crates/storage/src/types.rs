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

/// Leveled compaction parameters (Cassandra's names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeveledOptions {
    /// Target size of one SSTable in levels 1 and up.
    pub sstable_size_bytes: u64,
    /// Each level holds this many times the bytes of the one before it.
    pub fanout: u32,
    /// Level 0 SSTables before they are merged into level 1.
    pub min_threshold: usize,
    /// Most level 0 SSTables in one compaction; beyond this many, level 0
    /// is backed up and compacts size-tiered within itself first.
    pub max_threshold: usize,
}

impl Default for LeveledOptions {
    fn default() -> Self {
        LeveledOptions {
            sstable_size_bytes: 160 << 20,
            fanout: 10,
            min_threshold: 4,
            max_threshold: 32,
        }
    }
}

/// Time-window compaction parameters (Cassandra's names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeWindowOptions {
    /// Length of one window in seconds (`compaction_window_size` times the
    /// `compaction_window_unit`; default one day).
    pub window_seconds: u64,
    /// Size-tiered parameters inside the newest window.
    pub size_tiered: SizeTieredOptions,
    /// Write timestamps per second (`timestamp_resolution`; Cassandra's
    /// default MICROSECONDS is 1,000,000).
    pub timestamps_per_second: u64,
}

impl Default for TimeWindowOptions {
    fn default() -> Self {
        TimeWindowOptions {
            window_seconds: 86_400,
            size_tiered: SizeTieredOptions::default(),
            timestamps_per_second: 1_000_000,
        }
    }
}

/// The compaction strategy of a table; [`crate::strategy`] holds the
/// planners.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class")]
pub enum CompactionOptions {
    SizeTiered(SizeTieredOptions),
    Leveled(LeveledOptions),
    TimeWindow(TimeWindowOptions),
    /// No background compaction (`'enabled': 'false'`); major compaction on
    /// request still works.
    None,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        CompactionOptions::SizeTiered(SizeTieredOptions::default())
    }
}

/// Options every Cassandra strategy accepts. Gyre honours `enabled`,
/// `min_threshold` and `max_threshold`; the others are accepted and ignored.
const COMMON_OPTIONS: &[&str] = &[
    "class",
    "enabled",
    "min_threshold",
    "max_threshold",
    "tombstone_threshold",
    "tombstone_compaction_interval",
    "unchecked_tombstone_compaction",
    "only_purge_repaired_tombstones",
    "log_all",
    "provide_overlapping_tombstones",
];
const SIZE_TIERED_OPTIONS: &[&str] = &["bucket_high", "bucket_low", "min_sstable_size"];
const LEVELED_OPTIONS: &[&str] = &[
    "sstable_size_in_mb",
    "fanout_size",
    "single_sstable_uplevel",
];
const TIME_WINDOW_OPTIONS: &[&str] = &[
    "compaction_window_unit",
    "compaction_window_size",
    "timestamp_resolution",
    "expired_sstable_check_frequency_seconds",
    "unsafe_aggressive_sstable_expiration",
];

impl CompactionOptions {
    /// Parses the CQL `compaction = {...}` map (the class fully qualified or
    /// not), refusing an unknown class or option, or a bad value, with
    /// Cassandra's message.
    pub fn from_cql(map: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        let class = map
            .get("class")
            .ok_or("Missing sub-option 'class' for the 'compaction' option.")?;
        let short = class
            .strip_prefix("org.apache.cassandra.db.compaction.")
            .unwrap_or(class);
        let (name, extra) = match short {
            "SizeTieredCompactionStrategy" => ("SizeTieredCompactionStrategy", SIZE_TIERED_OPTIONS),
            "LeveledCompactionStrategy" => ("LeveledCompactionStrategy", LEVELED_OPTIONS),
            "TimeWindowCompactionStrategy" => ("TimeWindowCompactionStrategy", TIME_WINDOW_OPTIONS),
            _ => {
                let full = if class.contains('.') {
                    class.clone()
                } else {
                    format!("org.apache.cassandra.db.compaction.{class}")
                };
                return Err(format!("Unable to find compaction strategy class '{full}'"));
            }
        };
        let unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| {
                // TWCS validates size-tiered options too, as Cassandra.
                let size_tiered =
                    name == "TimeWindowCompactionStrategy" && SIZE_TIERED_OPTIONS.contains(k);
                !(COMMON_OPTIONS.contains(k) || extra.contains(k) || size_tiered)
            })
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "Properties specified [{}] are not understood by {name}",
                unknown.join(", ")
            ));
        }
        let int = |key: &str, default: i64| -> Result<i64, String> {
            match map.get(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{v} is not a parsable int (base10) for {key}")),
            }
        };
        let float = |key: &str, default: f64| -> Result<f64, String> {
            match map.get(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{v} is not a parsable float for {key}")),
            }
        };
        let defaults = SizeTieredOptions::default();
        let min_threshold = int("min_threshold", defaults.min_threshold as i64)?;
        let max_threshold = int("max_threshold", defaults.max_threshold as i64)?;
        if min_threshold <= 1 {
            return Err(format!(
                "Min compaction threshold cannot be less than 2 (got {min_threshold})"
            ));
        }
        if max_threshold < min_threshold {
            return Err(format!(
                "Min compaction threshold (got {min_threshold}) cannot be greater than max compaction threshold (got {max_threshold})"
            ));
        }
        let bucket_low = float("bucket_low", defaults.bucket_low)?;
        let bucket_high = float("bucket_high", defaults.bucket_high)?;
        if !(bucket_low > 0.0 && bucket_low < bucket_high) {
            return Err(format!(
                "bucket_high value ({bucket_high}) is less than or equal bucket_low value ({bucket_low})"
            ));
        }
        let min_sstable_size = int("min_sstable_size", defaults.min_sstable_size as i64)?;
        if min_sstable_size < 0 {
            return Err(format!(
                "min_sstable_size must be non negative: {min_sstable_size}"
            ));
        }
        let size_tiered = SizeTieredOptions {
            min_threshold: min_threshold as usize,
            max_threshold: max_threshold as usize,
            bucket_low,
            bucket_high,
            min_sstable_size: min_sstable_size as u64,
        };
        let enabled = match map.get("enabled").map(|v| v.trim().to_ascii_lowercase()) {
            None => true,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                return Err(format!(
                    "enabled should either be 'true' or 'false', not {v}"
                ))
            }
        };
        let options = match name {
            "LeveledCompactionStrategy" => {
                let size = int("sstable_size_in_mb", 160)?;
                if size < 1 {
                    return Err(format!(
                        "sstable_size_in_mb must be larger than 0, but was {size}"
                    ));
                }
                let fanout = int("fanout_size", 10)?;
                if fanout < 1 || fanout > i64::from(u16::MAX) {
                    return Err(format!(
                        "fanout_size must be larger than 0, but was {fanout}"
                    ));
                }
                CompactionOptions::Leveled(LeveledOptions {
                    sstable_size_bytes: (size as u64) << 20,
                    fanout: fanout as u32,
                    min_threshold: size_tiered.min_threshold,
                    max_threshold: size_tiered.max_threshold,
                })
            }
            "TimeWindowCompactionStrategy" => {
                let unit = map
                    .get("compaction_window_unit")
                    .map_or("DAYS".to_string(), |u| u.trim().to_ascii_uppercase());
                let unit_secs = match unit.as_str() {
                    "MINUTES" => 60,
                    "HOURS" => 3600,
                    "DAYS" => 86_400,
                    _ => return Err(format!("{unit} is not valid for compaction_window_unit")),
                };
                let size = int("compaction_window_size", 1)?;
                if size < 1 {
                    return Err(format!(
                        "{size} must be greater than 1 for compaction_window_size"
                    ));
                }
                let resolution = map
                    .get("timestamp_resolution")
                    .map_or("MICROSECONDS".to_string(), |u| {
                        u.trim().to_ascii_uppercase()
                    });
                let timestamps_per_second = match resolution.as_str() {
                    "NANOSECONDS" => 1_000_000_000,
                    "MICROSECONDS" => 1_000_000,
                    "MILLISECONDS" => 1_000,
                    "SECONDS" => 1,
                    _ => {
                        return Err(format!(
                            "{resolution} is not valid for timestamp_resolution"
                        ))
                    }
                };
                CompactionOptions::TimeWindow(TimeWindowOptions {
                    window_seconds: unit_secs * size as u64,
                    size_tiered,
                    timestamps_per_second,
                })
            }
            _ => CompactionOptions::SizeTiered(size_tiered),
        };
        Ok(if enabled {
            options
        } else {
            CompactionOptions::None
        })
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
    /// The table's name for operators (`keyspace.table`): snapshots record
    /// it, so a snapshot of a dropped table still says what it held.
    pub name: String,
    /// The table's storage-attached indexes (see [`crate::sai`]).
    pub indexes: Vec<crate::sai::IndexSpec>,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            gc_grace_seconds: 864_000,
            compression: Compression::Lz4,
            compaction: CompactionOptions::default(),
            name: String::new(),
            indexes: Vec::new(),
        }
    }
}

/// What [`crate::StorageEngine::import_sstables`] loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// The directory it loaded from (where to copy SSTables first).
    pub dir: std::path::PathBuf,
    pub files: usize,
    pub bytes: u64,
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
    /// Only rows matching this index query (engines with indexes serve it
    /// from them; others may return more rows, which the caller filters).
    pub index: Option<crate::sai::IndexQuery>,
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
    /// Memtable bytes flushed (as budgeted) and the time flush threads
    /// spent writing them to SSTables, for the flush's throughput.
    pub memtable_bytes_flushed: u64,
    pub flush_micros: u64,
    pub bytes_compacted: u64,
    pub compactions: u64,
    /// Background compactions that failed (a full disk) and were undone;
    /// they run again after a doubling wait.
    pub compactions_failed: u64,
    /// SSTables per compaction level (index = level).
    pub sstables_per_level: Vec<usize>,
    /// SSTables deleted whole, without rewriting, because all their data
    /// had expired past gc grace (time-window strategy), and their bytes.
    pub expired_sstables_dropped: u64,
    pub expired_bytes_dropped: u64,
    /// Whether the table's compaction strategy has a task to run now (or
    /// running): false once compaction has settled.
    pub compaction_pending: bool,
    /// Estimated bytes compaction still has to rewrite before the table
    /// settles (see [`crate::strategy::CompactionStrategy::pending_bytes`]).
    pub pending_compaction_bytes: u64,
    /// The merge running now, if any.
    pub active_compaction: Option<CompactionProgress>,
    /// Heap bytes of the table's SSTable bloom filters and block indexes.
    pub bloom_filter_bytes: u64,
    pub index_bytes: u64,
}

/// How far a running merge has got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionProgress {
    /// The level its output goes to.
    pub level: u32,
    pub input_sstables: usize,
    pub input_bytes: u64,
    /// Partitions in the inputs (a partition in several inputs counts in
    /// each) and merged so far.
    pub partitions_total: u64,
    pub partitions_done: u64,
    pub bytes_written: u64,
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
    /// Heap bytes of every table's SSTable bloom filters and block indexes.
    pub bloom_filter_bytes: u64,
    pub index_bytes: u64,
    /// The block cache: bytes held, its capacity, lookups found and not.
    pub block_cache_bytes: u64,
    pub block_cache_capacity_bytes: u64,
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
}
