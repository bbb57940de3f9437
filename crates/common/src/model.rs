//! The data model as bytes: cells, deletions and partition updates.
//!
//! Values, clustering keys and partition keys are opaque bytes here; the CQL
//! layer encodes them. Clustering keys must be *byte-comparable* (their byte
//! order is the CQL order, DESC columns already inverted) and *prefix-free per
//! component*, so that "every row whose key starts with this clustering
//! prefix" is a byte-prefix test (see [`SliceBound`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::lww;
use crate::token::{token_of, Token};

/// Write timestamp in microseconds since the Unix epoch (client-chosen).
pub type Timestamp = i64;

/// Server-local time in seconds since the Unix epoch: TTL expiry and the
/// moment a tombstone was written, for gc grace.
pub type LocalTime = i64;

/// Identifies one cell in a row: the column and, for non-frozen collections,
/// the element's path under that column (empty for simple columns).
///
/// The CQL layer stores the primary-key liveness of a row (the "row marker"
/// that an INSERT writes) as a cell with an empty column name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellName {
    pub column: Bytes,
    pub path: Bytes,
}

impl CellName {
    pub fn simple(column: impl Into<Bytes>) -> Self {
        CellName {
            column: column.into(),
            path: Bytes::new(),
        }
    }

    pub fn element(column: impl Into<Bytes>, path: impl Into<Bytes>) -> Self {
        CellName {
            column: column.into(),
            path: path.into(),
        }
    }
}

/// What a cell holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CellValue {
    /// A live value that never expires.
    Live(Bytes),
    /// A value written with a TTL: it reads as a tombstone from `expires_at`.
    Expiring {
        value: Bytes,
        ttl: u32,
        expires_at: LocalTime,
    },
    /// A deleted cell; `deleted_at` is the local time of the deletion, from
    /// which gc grace is counted.
    Tombstone { deleted_at: LocalTime },
}

/// One versioned cell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub timestamp: Timestamp,
    pub value: CellValue,
}

impl Cell {
    pub fn live(timestamp: Timestamp, value: impl Into<Bytes>) -> Self {
        Cell {
            timestamp,
            value: CellValue::Live(value.into()),
        }
    }

    /// A value written at `now` with `ttl` seconds to live.
    pub fn expiring(
        timestamp: Timestamp,
        value: impl Into<Bytes>,
        ttl: u32,
        now: LocalTime,
    ) -> Self {
        Cell {
            timestamp,
            value: CellValue::Expiring {
                value: value.into(),
                ttl,
                expires_at: now + i64::from(ttl),
            },
        }
    }

    pub fn tombstone(timestamp: Timestamp, deleted_at: LocalTime) -> Self {
        Cell {
            timestamp,
            value: CellValue::Tombstone { deleted_at },
        }
    }

    /// True while the cell holds a value at `now`.
    pub fn is_live(&self, now: LocalTime) -> bool {
        match &self.value {
            CellValue::Live(_) => true,
            CellValue::Expiring { expires_at, .. } => now < *expires_at,
            CellValue::Tombstone { .. } => false,
        }
    }

    /// The value, when the cell is live at `now`.
    pub fn value_at(&self, now: LocalTime) -> Option<&Bytes> {
        match &self.value {
            CellValue::Live(v) => Some(v),
            CellValue::Expiring {
                value, expires_at, ..
            } if now < *expires_at => Some(value),
            _ => None,
        }
    }

    /// The local time from which this cell counts as deleted: the deletion
    /// time of a tombstone, the expiry of an expiring cell, none for a plain
    /// live cell. Cassandra calls this `localDeletionTime`.
    pub fn local_deletion_time(&self) -> Option<LocalTime> {
        match &self.value {
            CellValue::Live(_) => None,
            CellValue::Expiring { expires_at, .. } => Some(*expires_at),
            CellValue::Tombstone { deleted_at } => Some(*deleted_at),
        }
    }

    /// Turns an expired cell into the tombstone it stands for, so that
    /// compaction can drop the value while keeping the deletion. As in
    /// Cassandra the tombstone dates from the write (expiry minus TTL): every
    /// replica expires the cell on its own, so gc grace need not wait for a
    /// deletion to spread.
    pub fn expired_to_tombstone(&self, now: LocalTime) -> Option<Cell> {
        match &self.value {
            CellValue::Expiring {
                expires_at, ttl, ..
            } if now >= *expires_at => Some(Cell {
                timestamp: self.timestamp,
                value: CellValue::Tombstone {
                    deleted_at: *expires_at - i64::from(*ttl),
                },
            }),
            _ => None,
        }
    }

    /// Approximate heap footprint, for memtable accounting.
    pub fn size_estimate(&self) -> usize {
        let v = match &self.value {
            CellValue::Live(v) | CellValue::Expiring { value: v, .. } => v.len(),
            CellValue::Tombstone { .. } => 0,
        };
        v + 40
    }
}

/// A deletion: everything in its scope written at or before `timestamp` is
/// deleted. `deleted_at` is the local time of the deletion, for gc grace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Deletion {
    pub timestamp: Timestamp,
    pub deleted_at: LocalTime,
}

impl Deletion {
    pub fn new(timestamp: Timestamp, deleted_at: LocalTime) -> Self {
        Deletion {
            timestamp,
            deleted_at,
        }
    }

    /// True when this deletion shadows data written at `ts`.
    #[inline]
    pub fn shadows(&self, ts: Timestamp) -> bool {
        ts <= self.timestamp
    }

    /// The deletion that wins when two cover the same scope.
    pub fn max(a: Option<Deletion>, b: Option<Deletion>) -> Option<Deletion> {
        match (a, b) {
            (None, x) | (x, None) => x,
            (Some(a), Some(b)) => Some(if lww::deletion_supersedes(&b, &a) {
                b
            } else {
                a
            }),
        }
    }
}

/// One end of a clustering slice.
///
/// Bounds are clustering *prefixes*: `Inclusive(p)` as an end bound includes
/// every key that starts with `p`; `Exclusive(p)` as a start bound excludes
/// them. This is how `DELETE ... WHERE ck1 = x` covers all rows under `x`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SliceBound {
    Unbounded,
    Inclusive(Bytes),
    Exclusive(Bytes),
}

/// A clustering slice `[start, end]` with prefix-aware bounds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slice {
    pub start: SliceBound,
    pub end: SliceBound,
}

impl Slice {
    pub const ALL: Slice = Slice {
        start: SliceBound::Unbounded,
        end: SliceBound::Unbounded,
    };

    pub fn new(start: SliceBound, end: SliceBound) -> Self {
        Slice { start, end }
    }

    /// Every row whose clustering key starts with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let p = prefix.into();
        Slice {
            start: SliceBound::Inclusive(p.clone()),
            end: SliceBound::Inclusive(p),
        }
    }

    /// True when the slice's start is after (or at) some key.
    pub fn after_start(&self, key: &[u8]) -> bool {
        match &self.start {
            SliceBound::Unbounded => true,
            SliceBound::Inclusive(p) => key >= p.as_ref(),
            SliceBound::Exclusive(p) => key > p.as_ref() && !key.starts_with(p),
        }
    }

    pub fn before_end(&self, key: &[u8]) -> bool {
        match &self.end {
            SliceBound::Unbounded => true,
            SliceBound::Inclusive(p) => key <= p.as_ref() || key.starts_with(p),
            SliceBound::Exclusive(p) => key < p.as_ref(),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.after_start(key) && self.before_end(key)
    }

    /// True when the slice can hold no key at all.
    pub fn is_empty(&self) -> bool {
        ends_before(&self.end, &self.start)
    }

    /// The smallest key the slice may contain, for seeking.
    pub fn seek_key(&self) -> &[u8] {
        match &self.start {
            SliceBound::Unbounded => &[],
            SliceBound::Inclusive(p) | SliceBound::Exclusive(p) => p,
        }
    }

    /// True when some key may lie in both slices.
    pub fn intersects(&self, other: &Slice) -> bool {
        !ends_before(&self.end, &other.start) && !ends_before(&other.end, &self.start)
    }
}

/// True when no key is both before-or-at `end` and after-or-at `start`.
fn ends_before(end: &SliceBound, start: &SliceBound) -> bool {
    use SliceBound::*;
    match (end, start) {
        (Unbounded, _) | (_, Unbounded) => false,
        // Keys < e against keys >= s.
        (Exclusive(e), Inclusive(s)) => e <= s,
        // Keys < e against keys > s outside prefix s: every key between s
        // and e starts with s when e does.
        (Exclusive(e), Exclusive(s)) => e <= s || e.starts_with(s),
        // Keys <= e or under prefix e, against keys >= s.
        (Inclusive(e), Inclusive(s)) => s > e && !s.starts_with(e),
        (Inclusive(e), Exclusive(s)) => (s > e && !s.starts_with(e)) || e.starts_with(s),
    }
}

/// A deletion of every row in a clustering slice.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeTombstone {
    pub slice: Slice,
    pub deletion: Deletion,
}

/// A partition key with its token; partitions are ordered by (token, key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecoratedKey {
    pub token: Token,
    pub key: Bytes,
}

impl DecoratedKey {
    pub fn new(key: impl Into<Bytes>) -> Self {
        let key = key.into();
        DecoratedKey {
            token: token_of(&key),
            key,
        }
    }
}

impl Ord for DecoratedKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.token
            .cmp(&other.token)
            .then_with(|| self.key.cmp(&other.key))
    }
}

impl PartialOrd for DecoratedKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A row: an optional row deletion and its cells in name order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub deletion: Option<Deletion>,
    pub cells: BTreeMap<CellName, Cell>,
}

impl Row {
    pub fn is_empty(&self) -> bool {
        self.deletion.is_none() && self.cells.is_empty()
    }

    /// True when some cell is live at `now`.
    pub fn is_live(&self, now: LocalTime) -> bool {
        self.cells.values().any(|c| c.is_live(now))
    }

    pub fn size_estimate(&self) -> usize {
        self.cells
            .iter()
            .map(|(n, c)| n.column.len() + n.path.len() + c.size_estimate())
            .sum::<usize>()
            + 32
    }
}

/// Partition contents, or a change to them: the unit of a mutation, of a
/// memtable entry and of a read result. Rows are keyed by clustering bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub key: DecoratedKey,
    pub deletion: Option<Deletion>,
    pub range_tombstones: Vec<RangeTombstone>,
    pub static_row: Option<Row>,
    pub rows: BTreeMap<Bytes, Row>,
}

impl Partition {
    pub fn new(key: DecoratedKey) -> Self {
        Partition {
            key,
            deletion: None,
            range_tombstones: Vec::new(),
            static_row: None,
            rows: BTreeMap::new(),
        }
    }

    /// An empty update for the partition with these key bytes.
    pub fn with_key(key: impl Into<Bytes>) -> Self {
        Self::new(DecoratedKey::new(key))
    }

    /// Sets a cell (builder style, for tests and the CQL layer).
    pub fn set(mut self, clustering: impl Into<Bytes>, name: CellName, cell: Cell) -> Self {
        self.rows
            .entry(clustering.into())
            .or_default()
            .cells
            .insert(name, cell);
        self
    }

    pub fn set_static(mut self, name: CellName, cell: Cell) -> Self {
        self.static_row
            .get_or_insert_with(Row::default)
            .cells
            .insert(name, cell);
        self
    }

    pub fn delete_row(mut self, clustering: impl Into<Bytes>, deletion: Deletion) -> Self {
        let row = self.rows.entry(clustering.into()).or_default();
        row.deletion = Deletion::max(row.deletion, Some(deletion));
        self
    }

    pub fn delete_range(mut self, slice: Slice, deletion: Deletion) -> Self {
        self.range_tombstones
            .push(RangeTombstone { slice, deletion });
        self
    }

    pub fn delete_partition(mut self, deletion: Deletion) -> Self {
        self.deletion = Deletion::max(self.deletion, Some(deletion));
        self
    }

    /// True when the partition holds nothing: no deletion, no rows.
    pub fn is_empty(&self) -> bool {
        self.deletion.is_none()
            && self.range_tombstones.is_empty()
            && self.static_row.as_ref().is_none_or(Row::is_empty)
            && self.rows.is_empty()
    }

    /// Tombstones a read of this partition walks over, counted as
    /// Cassandra's `tombstone_warn_threshold` / `tombstone_failure_threshold`
    /// count them: each deleted or expired cell, each row deletion and each
    /// range tombstone (the partition deletion itself is one marker, not
    /// counted).
    pub fn tombstones(&self, now: LocalTime) -> usize {
        let row = |r: &Row| {
            usize::from(r.deletion.is_some()) + r.cells.values().filter(|c| !c.is_live(now)).count()
        };
        self.range_tombstones.len()
            + self.static_row.as_ref().map_or(0, row)
            + self.rows.values().map(row).sum::<usize>()
    }

    /// Every cell with its row, static row first: for validation and stats.
    pub fn cells(&self) -> impl Iterator<Item = (&CellName, &Cell)> {
        self.static_row
            .iter()
            .chain(self.rows.values())
            .flat_map(|r| r.cells.iter())
    }

    /// Approximate heap footprint, for memtable accounting.
    pub fn size_estimate(&self) -> usize {
        self.key.key.len()
            + 64
            + self.range_tombstones.len() * 64
            + self.static_row.as_ref().map_or(0, Row::size_estimate)
            + self
                .rows
                .iter()
                .map(|(k, r)| k.len() + r.size_estimate())
                .sum::<usize>()
    }

    /// Greatest and least write timestamps of everything in the partition.
    pub fn timestamp_range(&self) -> Option<(Timestamp, Timestamp)> {
        let deletions = self
            .deletion
            .iter()
            .chain(self.range_tombstones.iter().map(|rt| &rt.deletion))
            .chain(
                self.static_row
                    .iter()
                    .chain(self.rows.values())
                    .filter_map(|r| r.deletion.as_ref()),
            )
            .map(|d| d.timestamp);
        let cells = self.cells().map(|(_, c)| c.timestamp);
        deletions.chain(cells).fold(None, |acc, ts| match acc {
            None => Some((ts, ts)),
            Some((lo, hi)) => Some((lo.min(ts), hi.max(ts))),
        })
    }
}
