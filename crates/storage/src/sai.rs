//! Storage-attached secondary indexes (SAI): every node indexes the data it
//! holds, one index segment per SSTable and per index, plus an in-memory
//! index per memtable.
//!
//! A segment is built while its SSTable is written (flush or compaction),
//! so it always covers exactly that SSTable's data: there is no separate
//! index log and no index that can lag its table. A segment maps *terms*
//! (indexed values, in an order-preserving encoding) to the rows that hold
//! a version of that value in the SSTable. Entries are candidates: a query
//! reads each candidate row through the normal merged read and keeps it
//! only if the merged, live row still matches, so overwritten values,
//! deletions and expired TTLs never show (and stale entries cost a read,
//! never a wrong answer).
//!
//! Segments are also stored in a component file beside their SSTable
//! (see "Index components on disk" below) and read back after a restart.
//! SSTables that have no usable segment for an index (imported, streamed,
//! a corrupt component, or written before the index existed) get one built
//! from their data: in the background when an index is created (the index
//! is then "building" and queries are refused), lazily on first use
//! otherwise.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use gyre_common::{DecoratedKey, LocalTime, Partition, Row};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::ann::{self, Graph, Similarity};

/// Which part of a column's cells an index holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IndexedPart {
    /// The value of a simple (or frozen) column.
    Value,
    /// The cell paths of a non-frozen collection: map keys, set elements.
    Keys,
    /// The cell values of a non-frozen list or map.
    Values,
    /// A map's (key, value) pairs.
    Entries,
}

/// How terms sort, so that range predicates are a range of terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TermOrder {
    /// Unsigned byte order (text, blobs, dates, uuids for equality).
    Bytes,
    /// Big-endian two's complement integers of one width (int, bigint,
    /// timestamp, time, smallint, tinyint).
    Signed,
    /// IEEE floats (float, double).
    Float,
}

/// One index of a table, as the engine sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IndexSpec {
    pub name: String,
    pub column: String,
    pub part: IndexedPart,
    pub order: TermOrder,
    /// A static column: its entries stand for the whole partition.
    #[serde(default)]
    pub is_static: bool,
    /// A vector index (`vector<float, n>`): an ANN graph per segment and
    /// memtable instead of sorted terms.
    #[serde(default)]
    pub vector: Option<VectorIndex>,
    /// How text terms are analysed (SAI's text options).
    #[serde(default)]
    pub text: TextAnalysis,
    /// An index on a primary key column: its terms come from the keys,
    /// not from cells (`column` names the key column).
    #[serde(default)]
    pub key: Option<KeyPart>,
}

/// Which primary key component a key-column index holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyPart {
    /// Component `n` of a composite partition key; terms are the raw
    /// component values (ordered by the spec's `order`), one entry per
    /// partition standing for all its rows.
    Partition(usize),
    /// A clustering column: the layouts of the clustering key's components
    /// up to and including it (to find it in the byte-comparable key).
    /// Terms, and the values of queries on it, are the column's ascending
    /// byte-comparable encoding, so every range is a range of terms.
    Clustering(Vec<KeyLayout>),
}

/// How one component of a byte-comparable clustering key is laid out
/// (the schema's key encoding: `gyre_schema::encoding`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyLayout {
    /// A DESC column: its bytes are the ascending encoding inverted.
    pub desc: bool,
    pub shape: KeyShape,
}

/// The shape of one encoded clustering value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyShape {
    /// A fixed number of bytes (integers, floats, date, boolean, uuids).
    Fixed(usize),
    /// Bytes with 0x00 escaped as 0x00 0xFF, ended by 0x00 0x00.
    Escaped,
    /// A 4-byte length header, then the bytes.
    Varint,
    /// A sign marker, exponent and digits ended by a terminator.
    Decimal,
    /// Frozen list, set (one shape) or map (key, value): per element 0x01
    /// then the element, then 0x00.
    Elements(Vec<KeyShape>),
    /// Tuple or user type: per field 0x02 and the value, or 0x01 (null),
    /// then 0x00.
    Fields(Vec<KeyShape>),
}

impl KeyShape {
    /// The position just past a value of this shape starting at `pos`.
    fn skip(&self, b: &[u8], mut pos: usize, invert: bool) -> Option<usize> {
        let at = |i: usize| b.get(i).map(|x| if invert { !*x } else { *x });
        match self {
            KeyShape::Fixed(n) => (pos + n <= b.len()).then_some(pos + n),
            KeyShape::Escaped => loop {
                let x = at(pos)?;
                pos += 1;
                if x != 0 {
                    continue;
                }
                match at(pos)? {
                    0 => return Some(pos + 1),
                    0xff => pos += 1,
                    _ => return None,
                }
            },
            KeyShape::Varint => {
                let h = [at(pos)?, at(pos + 1)?, at(pos + 2)?, at(pos + 3)?];
                let header = u32::from_be_bytes(h);
                let len = if header >= 0x8000_0000 {
                    header - 0x8000_0000
                } else {
                    0x7fff_ffff - header
                } as usize;
                let end = pos + 4 + len;
                (end <= b.len()).then_some(end)
            }
            KeyShape::Decimal => {
                let marker = at(pos)?;
                pos += 1;
                if marker == 0x80 {
                    return Some(pos);
                }
                // A negative value has every byte after its marker inverted.
                let flip = marker == 0x40;
                pos += 8;
                loop {
                    let x = at(pos)?;
                    pos += 1;
                    if (if flip { !x } else { x }) == 0 {
                        return Some(pos);
                    }
                }
            }
            KeyShape::Elements(shapes) => loop {
                let x = at(pos)?;
                pos += 1;
                match x {
                    0 => return Some(pos),
                    1 => {
                        for s in shapes {
                            pos = s.skip(b, pos, invert)?;
                        }
                    }
                    _ => return None,
                }
            },
            KeyShape::Fields(shapes) => {
                let mut i = 0;
                loop {
                    let x = at(pos)?;
                    pos += 1;
                    match x {
                        0 => return Some(pos),
                        1 => i += 1,
                        2 => {
                            pos = shapes.get(i)?.skip(b, pos, invert)?;
                            i += 1;
                        }
                        _ => return None,
                    }
                }
            }
        }
    }
}

impl KeyPart {
    /// The value this index holds for a partition key (raw bytes), if it
    /// is a partition key index.
    pub fn partition_value(&self, key: &[u8]) -> Option<Vec<u8>> {
        let KeyPart::Partition(n) = self else {
            return None;
        };
        let mut rest = key;
        for i in 0.. {
            let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
            let value = rest.get(2..2 + len)?;
            if i == *n {
                return Some(value.to_vec());
            }
            rest = rest.get(3 + len..)?;
        }
        None
    }

    /// The term of a clustering key (the column's ascending encoding), if
    /// this is a clustering column index and the key reaches that column.
    pub fn clustering_term(&self, ck: &[u8]) -> Option<Vec<u8>> {
        let KeyPart::Clustering(layouts) = self else {
            return None;
        };
        let (last, before) = layouts.split_last()?;
        let mut pos = 0;
        for l in before {
            pos = l.shape.skip(ck, pos, l.desc)?;
        }
        let end = last.shape.skip(ck, pos, last.desc)?;
        let mut t = ck[pos..end].to_vec();
        if last.desc {
            t.iter_mut().for_each(|b| *b = !*b);
        }
        Some(t)
    }
}

/// SAI's text options (Cassandra 5.0's `case_sensitive`, `normalize`,
/// `ascii`): how a text value is analysed before it is indexed and before a
/// query value is looked up, so that both sides meet on the same term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TextAnalysis {
    /// `case_sensitive: false`: terms are lower-cased.
    #[serde(default)]
    pub case_insensitive: bool,
    /// `normalize: true`: terms are in Unicode NFC.
    #[serde(default)]
    pub normalize: bool,
    /// `ascii: true`: accents and other combining marks are folded away
    /// (compatibility decomposition, marks dropped: `é` → `e`, `ﬁ` → `fi`).
    #[serde(default)]
    pub ascii: bool,
}

impl TextAnalysis {
    /// Whether terms are the values' bytes unchanged.
    pub fn is_identity(&self) -> bool {
        !(self.case_insensitive || self.normalize || self.ascii)
    }

    /// The analysed form of a text value (bytes that are not UTF-8 are
    /// kept as they are). Idempotent.
    pub fn analyze(&self, raw: &[u8]) -> Vec<u8> {
        use unicode_normalization::char::is_combining_mark;
        use unicode_normalization::UnicodeNormalization;
        if self.is_identity() {
            return raw.to_vec();
        }
        let Ok(s) = std::str::from_utf8(raw) else {
            return raw.to_vec();
        };
        let mut s: String = if self.normalize {
            s.nfc().collect()
        } else {
            s.to_owned()
        };
        if self.case_insensitive {
            s = s.to_lowercase();
        }
        if self.ascii {
            s = s.nfkd().filter(|c| !is_combining_mark(*c)).nfc().collect();
        }
        s.into_bytes()
    }
}

/// What a vector index compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VectorIndex {
    pub dim: usize,
    pub similarity: Similarity,
}

/// A predicate on one index. Values are the column's (or element's) raw
/// CQL bytes; the engine maps them to terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TermOp {
    Eq(Bytes),
    /// Any of these values (`IN`).
    In(Vec<Bytes>),
    Range {
        lo: Bound<Bytes>,
        hi: Bound<Bytes>,
    },
}

/// One conjunct of an index query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexClause {
    pub index: String,
    pub op: TermOp,
}

/// An index query: rows matching every clause. Carried by a
/// [`crate::ScanRequest`]; engines without indexes may ignore it (the
/// query layer filters the rows again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexQuery {
    pub clauses: Vec<IndexClause>,
    /// `ORDER BY v ANN OF [..] LIMIT k`: the range's k rows (among those
    /// matching the clauses) closest to the vector, instead of a page in
    /// token order. The answer is complete (no resume position).
    pub ann: Option<AnnQuery>,
}

/// The vector part of an index query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnQuery {
    pub index: String,
    /// The query vector's raw CQL bytes (big-endian floats).
    pub vector: Bytes,
    pub k: usize,
}

/// The most rows an ANN query may ask for (Cassandra's LIMIT cap).
pub const MAX_ANN_K: usize = 1000;

impl IndexSpec {
    /// The term of a raw value: bytes whose unsigned order is the CQL order.
    pub fn term(&self, raw: &[u8]) -> Vec<u8> {
        if matches!(self.key, Some(KeyPart::Clustering(_))) {
            // Given in the key encoding already.
            return raw.to_vec();
        }
        match self.order {
            TermOrder::Bytes => self.text.analyze(raw),
            TermOrder::Signed => {
                let mut v = raw.to_vec();
                if let Some(b) = v.first_mut() {
                    *b ^= 0x80;
                }
                v
            }
            TermOrder::Float => {
                let mut v = raw.to_vec();
                if v.first().is_some_and(|b| b & 0x80 != 0) {
                    for b in &mut v {
                        *b = !*b;
                    }
                } else if let Some(b) = v.first_mut() {
                    *b ^= 0x80;
                }
                v
            }
        }
    }

    /// The raw values this index holds for a row's cells: every cell with a
    /// value (live or expiring; `now` given: only those live then).
    pub fn row_values(&self, row: &Row, now: Option<LocalTime>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let col = self.column.as_bytes();
        for (name, cell) in &row.cells {
            if name.column.as_ref() != col {
                continue;
            }
            let value = match now {
                Some(now) => cell.value_at(now),
                None => match &cell.value {
                    gyre_common::CellValue::Live(v)
                    | gyre_common::CellValue::Expiring { value: v, .. } => Some(v),
                    gyre_common::CellValue::Tombstone { .. } => None,
                },
            };
            let Some(value) = value else { continue };
            match self.part {
                IndexedPart::Value if name.path.is_empty() => out.push(value.to_vec()),
                IndexedPart::Keys if !name.path.is_empty() => out.push(name.path.to_vec()),
                IndexedPart::Values if !name.path.is_empty() => out.push(value.to_vec()),
                IndexedPart::Entries if !name.path.is_empty() => {
                    out.push(entry_value(&name.path, value))
                }
                _ => {}
            }
        }
        out
    }

    fn terms_of(&self, row: &Row) -> Vec<Vec<u8>> {
        self.row_values(row, None)
            .iter()
            .map(|v| self.term(v))
            .collect()
    }

    /// Index entries of a partition (as written to an SSTable or memtable).
    /// Keys are copied: the partition's `Bytes` may share a whole decoded
    /// buffer (a mutation, a memtable entry) that must not outlive it.
    fn entries(&self, p: &Partition, out: &mut Vec<Entry>) {
        let mut key: Option<DecoratedKey> = None;
        let mut own_key = || {
            key.get_or_insert_with(|| DecoratedKey {
                token: p.key.token,
                key: Bytes::copy_from_slice(&p.key.key),
            })
            .clone()
        };
        match &self.key {
            Some(kp @ KeyPart::Partition(_)) => {
                if let Some(v) = kp.partition_value(&p.key.key) {
                    out.push((self.term(&v), own_key(), None));
                }
                return;
            }
            Some(kp @ KeyPart::Clustering(_)) => {
                for ck in p.rows.keys() {
                    if let Some(t) = kp.clustering_term(ck) {
                        out.push((t, own_key(), Some(Bytes::copy_from_slice(ck))));
                    }
                }
                return;
            }
            None => {}
        }
        if self.is_static {
            if let Some(r) = &p.static_row {
                for t in self.terms_of(r) {
                    out.push((t, own_key(), None));
                }
            }
            return;
        }
        for (ck, row) in &p.rows {
            for t in self.terms_of(row) {
                out.push((t, own_key(), Some(Bytes::copy_from_slice(ck))));
            }
        }
    }
}

/// The raw value an `entries()` index holds for a map entry (and what an
/// `m[key] = value` predicate is given): the key, length-prefixed, then
/// the value.
pub fn entry_value(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + value.len() + 4);
    v.extend_from_slice(&(key.len() as u32).to_be_bytes());
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

/// A range of terms: (low bound, high bound).
type TermRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

impl TermOp {
    /// The ranges of terms this predicate selects.
    fn term_ranges(&self, spec: &IndexSpec) -> Vec<TermRange> {
        let map = |b: &Bound<Bytes>| match b {
            Bound::Included(v) => Bound::Included(spec.term(v)),
            Bound::Excluded(v) => Bound::Excluded(spec.term(v)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let point = |v: &Bytes| {
            let t = spec.term(v);
            (Bound::Included(t.clone()), Bound::Included(t))
        };
        match self {
            TermOp::Eq(v) => vec![point(v)],
            TermOp::In(vs) => vs.iter().map(point).collect(),
            TermOp::Range { lo, hi } => vec![(map(lo), map(hi))],
        }
    }

    fn matches_term(&self, spec: &IndexSpec, term: &[u8]) -> bool {
        self.term_ranges(spec)
            .into_iter()
            .any(|(lo, hi)| in_range(term, &lo, &hi))
    }
}

impl IndexSpec {
    /// Whether an entry of this index stands for a whole partition (a
    /// static column's, a partition key component's).
    pub fn partition_level(&self) -> bool {
        self.is_static || matches!(self.key, Some(KeyPart::Partition(_)))
    }
}

impl TermOp {
    /// Whether a merged row, read at `now`, satisfies the predicate.
    pub fn matches_row(&self, spec: &IndexSpec, row: &Row, now: LocalTime) -> bool {
        spec.row_values(row, Some(now))
            .iter()
            .any(|v| self.matches_term(spec, &spec.term(v)))
    }
}

fn in_range(term: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    let above = match lo {
        Bound::Included(l) => term >= l.as_slice(),
        Bound::Excluded(l) => term > l.as_slice(),
        Bound::Unbounded => true,
    };
    let below = match hi {
        Bound::Included(h) => term <= h.as_slice(),
        Bound::Excluded(h) => term < h.as_slice(),
        Bound::Unbounded => true,
    };
    above && below
}

/// Encodes an optional index query (for the coordinator's range messages).
pub fn put_index_query(out: &mut Vec<u8>, q: Option<&IndexQuery>) {
    use gyre_common::codec;
    let Some(q) = q else {
        out.push(0);
        return;
    };
    // 1: clauses only; 3: clauses, then the ANN part.
    out.push(if q.ann.is_some() { 3 } else { 1 });
    codec::put_uvarint(out, q.clauses.len() as u64);
    let bound = |out: &mut Vec<u8>, b: &Bound<Bytes>| match b {
        Bound::Unbounded => out.push(0),
        Bound::Included(v) => {
            out.push(1);
            codec::put_bytes(out, v);
        }
        Bound::Excluded(v) => {
            out.push(2);
            codec::put_bytes(out, v);
        }
    };
    for c in &q.clauses {
        codec::put_bytes(out, c.index.as_bytes());
        match &c.op {
            TermOp::Eq(v) => {
                out.push(0);
                codec::put_bytes(out, v);
            }
            TermOp::In(vs) => {
                out.push(2);
                codec::put_uvarint(out, vs.len() as u64);
                for v in vs {
                    codec::put_bytes(out, v);
                }
            }
            TermOp::Range { lo, hi } => {
                out.push(1);
                bound(out, lo);
                bound(out, hi);
            }
        }
    }
    if let Some(a) = &q.ann {
        codec::put_bytes(out, a.index.as_bytes());
        codec::put_bytes(out, &a.vector);
        codec::put_uvarint(out, a.k as u64);
    }
}

/// Decodes what [`put_index_query`] wrote.
pub fn get_index_query(
    r: &mut gyre_common::codec::Reader<'_>,
) -> gyre_common::codec::DecodeResult<Option<IndexQuery>> {
    use gyre_common::codec::DecodeError;
    let bad = |r: &gyre_common::codec::Reader<'_>, what| DecodeError {
        offset: r.position(),
        what,
    };
    let with_ann = match r.u8()? {
        0 => return Ok(None),
        1 => false,
        3 => true,
        _ => return Err(bad(r, "bad index query flag")),
    };
    let n = r.uvarint()?;
    if n > 64 {
        return Err(bad(r, "too many index clauses"));
    }
    let mut clauses = Vec::new();
    for _ in 0..n {
        let index = String::from_utf8(r.bytes()?.to_vec())
            .map_err(|_| bad(r, "index name is not UTF-8"))?;
        let bound = |r: &mut gyre_common::codec::Reader<'_>| -> gyre_common::codec::DecodeResult<Bound<Bytes>> {
            Ok(match r.u8()? {
                0 => Bound::Unbounded,
                1 => Bound::Included(r.bytes()?),
                2 => Bound::Excluded(r.bytes()?),
                _ => return Err(bad(r, "bad index bound")),
            })
        };
        let op = match r.u8()? {
            0 => TermOp::Eq(r.bytes()?),
            2 => {
                let n = r.uvarint()?;
                if n > 65_536 {
                    return Err(bad(r, "too many IN values"));
                }
                let mut vs = Vec::new();
                for _ in 0..n {
                    vs.push(r.bytes()?);
                }
                TermOp::In(vs)
            }
            1 => TermOp::Range {
                lo: bound(r)?,
                hi: bound(r)?,
            },
            _ => return Err(bad(r, "bad index operator")),
        };
        clauses.push(IndexClause { index, op });
    }
    let ann = if with_ann {
        let index = String::from_utf8(r.bytes()?.to_vec())
            .map_err(|_| bad(r, "index name is not UTF-8"))?;
        let vector = r.bytes()?;
        let k = r.uvarint()?;
        if k == 0 || k > MAX_ANN_K as u64 {
            return Err(bad(r, "bad ANN limit"));
        }
        Some(AnnQuery {
            index,
            vector,
            k: k as usize,
        })
    } else {
        None
    };
    Ok(Some(IndexQuery { clauses, ann }))
}

/// (term, partition, clustering key; `None` for a static column's entry,
/// which stands for the whole partition).
type Entry = (Vec<u8>, DecoratedKey, Option<Bytes>);

/// The index of one SSTable for one index: entries sorted by term, then
/// position.
#[derive(Debug, Default)]
pub struct Segment {
    /// The index it was built for (a segment of a dropped index whose
    /// name was reused does not serve the new one).
    spec: Option<IndexSpec>,
    entries: Vec<Entry>,
    /// A vector index's graph over the segment's rows (its `entries` stay
    /// empty).
    ann: Option<AnnRows>,
}

/// An ANN graph and the row of each of its nodes.
#[derive(Debug)]
pub struct AnnRows {
    graph: Graph,
    rows: Vec<(DecoratedKey, Bytes)>,
    /// Rows are in partition order (a segment's; a memtable's only by
    /// chance).
    sorted: bool,
}

impl AnnRows {
    fn new(v: &VectorIndex) -> AnnRows {
        AnnRows {
            graph: Graph::new(v.dim, v.similarity, ann::Params::default()),
            rows: Vec::new(),
            sorted: true,
        }
    }

    /// The nodes of the candidate rows, when this source's rows are in
    /// partition order (a segment's are: the SSTable's order) and there
    /// are few enough candidates that looking each up beats testing every
    /// row. Candidates come from [`candidates`], within the scan's range.
    fn candidate_nodes(&self, c: &Candidates) -> Option<Vec<u32>> {
        if !self.sorted || c.0.len() >= self.rows.len() {
            return None;
        }
        let mut nodes = Vec::new();
        // Candidates come in partition order too: each search starts where
        // the last one ended and gallops forward, so the walk stays local
        // (a binary search over the whole segment missed the cache at
        // every step: most of a restricted query's time).
        let mut at = 0usize;
        for (key, cks) in &c.0 {
            let mut step = 1usize;
            let mut lo = at;
            while at + step < self.rows.len() && self.rows[at + step].0 < *key {
                lo = at + step;
                step *= 2;
            }
            let hi = (at + step).min(self.rows.len());
            let first = lo + self.rows[lo..hi].partition_point(|(k, _)| k < key);
            at = first;
            for (i, (k, ck)) in self.rows.iter().enumerate().skip(first) {
                if k != key {
                    break;
                }
                if cks.as_ref().is_none_or(|set| set.contains(ck)) {
                    nodes.push(i as u32);
                }
            }
        }
        Some(nodes)
    }

    /// Adds a row's vector (a zero vector under cosine, or a malformed
    /// one, cannot be placed and is left out, as it has no similarity).
    fn add(&mut self, raw: &[u8], key: DecoratedKey, ck: Bytes) {
        let Some(v) = ann::decode_vector(raw, self.graph.dim()) else {
            return;
        };
        if self.graph.insert(&v).is_some() {
            self.sorted &= self.rows.last().is_none_or(|(last, _)| *last <= key);
            self.rows.push((key, ck));
        }
    }

    /// This graph's best `k` rows passing `allowed`, and whether there
    /// may be more (the search was cut at `k`). A search that passes few
    /// rows scans them exactly; otherwise the graph answers as calibrated
    /// on its data ([`Graph::nearest`]: a graph search, its candidate
    /// list widened by how selective the filter is, or a scan when that
    /// is cheaper).
    fn search(
        &self,
        q: &[f32],
        k: usize,
        allowed: &dyn Fn(&DecoratedKey, &Bytes) -> bool,
        filter: Option<&Candidates>,
    ) -> (Vec<(f32, DecoratedKey, Bytes)>, bool) {
        // The rows passing: looked up from the other clauses' candidates
        // when they are few (testing each of this source's rows against
        // them costs more than scoring the few that pass), else each row
        // tested.
        let (ok, passing) = match filter.and_then(|c| self.candidate_nodes(c)) {
            Some(nodes) => {
                if nodes.len() <= EXACT_SCAN.max(k) {
                    let found = self.graph.exact(q, k, nodes.iter().copied());
                    return self.answer(found, k, nodes.len());
                }
                let mut ok = vec![false; self.rows.len()];
                for n in &nodes {
                    ok[*n as usize] = true;
                }
                (ok, nodes.len())
            }
            None => {
                let ok: Vec<bool> = self.rows.iter().map(|(key, ck)| allowed(key, ck)).collect();
                let passing = ok.iter().filter(|b| **b).count();
                (ok, passing)
            }
        };
        if passing == 0 {
            return (Vec::new(), false);
        }
        let found = if passing <= EXACT_SCAN.max(k) {
            let nodes = ok
                .iter()
                .enumerate()
                .filter(|(_, b)| **b)
                .map(|(i, _)| i as u32);
            self.graph.exact(q, k, nodes)
        } else {
            self.graph.nearest(q, k, &|i| ok[i as usize], passing)
        };
        self.answer(found, k, passing)
    }

    /// Rows of the nodes found, and whether the source may hold more.
    fn answer(
        &self,
        found: Vec<ann::Scored>,
        k: usize,
        passing: usize,
    ) -> (Vec<(f32, DecoratedKey, Bytes)>, bool) {
        let more = found.len() >= k && passing > k;
        let out = found
            .into_iter()
            .map(|s| {
                let (key, ck) = &self.rows[s.node as usize];
                (s.score, key.clone(), ck.clone())
            })
            .collect();
        (out, more)
    }
}

/// Below this many rows passing a filter, an ANN source is scanned exactly.
const EXACT_SCAN: usize = 512;

impl Segment {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn lookup<'a>(
        &'a self,
        lo: &Bound<Vec<u8>>,
        hi: &'a Bound<Vec<u8>>,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let start = match lo {
            Bound::Included(l) => self.entries.partition_point(|e| e.0 < *l),
            Bound::Excluded(l) => self.entries.partition_point(|e| e.0 <= *l),
            Bound::Unbounded => 0,
        };
        self.entries[start..].iter().take_while(move |e| match hi {
            Bound::Included(h) => e.0 <= *h,
            Bound::Excluded(h) => e.0 < *h,
            Bound::Unbounded => true,
        })
    }
}

/// Builds the segments of one SSTable as its partitions are written.
#[derive(Debug, Default)]
pub struct SegmentBuilder {
    specs: Vec<IndexSpec>,
    entries: Vec<Vec<Entry>>,
}

impl SegmentBuilder {
    pub fn new(specs: &[IndexSpec]) -> Self {
        SegmentBuilder {
            specs: specs.to_vec(),
            entries: specs.iter().map(|_| Vec::new()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn add(&mut self, p: &Partition) {
        for (spec, out) in self.specs.iter().zip(&mut self.entries) {
            spec.entries(p, out);
        }
    }

    pub fn finish(self) -> HashMap<String, Arc<Segment>> {
        self.specs
            .into_iter()
            .zip(self.entries)
            .map(|(spec, mut entries)| {
                if let Some(v) = &spec.vector {
                    // In write order (token order): the graph's nodes.
                    let mut rows = AnnRows::new(v);
                    for (raw, key, ck) in entries {
                        if let Some(ck) = ck {
                            rows.add(&raw, key, ck);
                        }
                    }
                    rows.graph.calibrate();
                    let seg = Segment {
                        spec: Some(spec.clone()),
                        entries: Vec::new(),
                        ann: Some(rows),
                    };
                    return (spec.name, Arc::new(seg));
                }
                entries.sort();
                entries.dedup();
                let seg = Segment {
                    spec: Some(spec.clone()),
                    entries,
                    ann: None,
                };
                (spec.name, Arc::new(seg))
            })
            .collect()
    }
}

/// The segments attached to one SSTable, by index name.
#[derive(Debug, Default)]
pub struct SegmentMap {
    segments: RwLock<HashMap<String, Arc<Segment>>>,
    /// Whether the SSTable's component file was read (or found missing or
    /// corrupt); held while it is read or written.
    disk: Mutex<bool>,
    /// Segments read from the component file, and built from the data.
    pub loaded: std::sync::atomic::AtomicU64,
    pub rebuilt: std::sync::atomic::AtomicU64,
}

impl SegmentMap {
    pub fn get(&self, index: &str) -> Option<Arc<Segment>> {
        self.segments.read().get(index).cloned()
    }

    pub fn insert_all(&self, segments: HashMap<String, Arc<Segment>>) {
        self.segments.write().extend(segments);
    }

    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.segments.write().retain(|k, _| keep(k));
    }

    /// The segment for `spec`, if one built for that very index is here.
    fn get_for(&self, spec: &IndexSpec) -> Option<Arc<Segment>> {
        self.get(&spec.name)
            .filter(|s| s.spec.as_ref().is_none_or(|x| x == spec))
    }
}

/// The in-memory index of one memtable: sorted terms, and for vector
/// indexes a graph grown with every write.
#[derive(Debug, Default)]
pub struct MemIndex {
    terms: Mutex<HashMap<String, BTreeSet<Entry>>>,
    graphs: Mutex<HashMap<String, Arc<RwLock<AnnRows>>>>,
}

impl MemIndex {
    pub fn add(&self, specs: &[IndexSpec], p: &Partition) {
        if specs.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        for spec in specs {
            buf.clear();
            spec.entries(p, &mut buf);
            if buf.is_empty() {
                continue;
            }
            if let Some(v) = &spec.vector {
                let graph = self
                    .graphs
                    .lock()
                    .entry(spec.name.clone())
                    .or_insert_with(|| Arc::new(RwLock::new(AnnRows::new(v))))
                    .clone();
                let mut g = graph.write();
                for (raw, key, ck) in buf.drain(..) {
                    if let Some(ck) = ck {
                        g.add(&raw, key, ck);
                    }
                }
                continue;
            }
            let mut g = self.terms.lock();
            let set = g.entry(spec.name.clone()).or_default();
            set.extend(buf.drain(..));
        }
    }

    fn graph(&self, index: &str) -> Option<Arc<RwLock<AnnRows>>> {
        self.graphs.lock().get(index).cloned()
    }

    fn collect(
        &self,
        index: &str,
        lo: &Bound<Vec<u8>>,
        hi: &Bound<Vec<u8>>,
        into: &mut Candidates,
        within: &dyn Fn(&DecoratedKey) -> bool,
    ) {
        let g = self.terms.lock();
        let Some(set) = g.get(index) else { return };
        let start = match lo {
            Bound::Included(l) => Bound::Included((l.clone(), min_key(), None)),
            Bound::Excluded(l) => {
                // Past every entry of term `l`: the next term's first entry.
                let mut next = l.clone();
                next.push(0);
                Bound::Included((next, min_key(), None))
            }
            Bound::Unbounded => Bound::Unbounded,
        };
        for e in set.range((start, Bound::Unbounded)) {
            let past = match hi {
                Bound::Included(h) => e.0 > *h,
                Bound::Excluded(h) => e.0 >= *h,
                Bound::Unbounded => false,
            };
            if past {
                break;
            }
            if within(&e.1) {
                into.add(&e.1, e.2.as_ref());
            }
        }
    }
}

fn min_key() -> DecoratedKey {
    DecoratedKey {
        token: i64::MIN,
        key: Bytes::new(),
    }
}

/// Candidate rows by partition: `None` means every row of the partition.
#[derive(Debug, Default)]
pub struct Candidates(pub BTreeMap<DecoratedKey, Option<BTreeSet<Bytes>>>);

impl Candidates {
    fn add(&mut self, key: &DecoratedKey, ck: Option<&Bytes>) {
        let slot = self
            .0
            .entry(key.clone())
            .or_insert_with(|| Some(BTreeSet::new()));
        match (slot, ck) {
            (Some(set), Some(ck)) => {
                set.insert(ck.clone());
            }
            (slot, _) => *slot = None,
        }
    }

    /// Keeps what both sides have.
    fn intersect(self, other: Candidates) -> Candidates {
        let mut out = BTreeMap::new();
        let mut other = other.0;
        for (k, mine) in self.0 {
            let Some(theirs) = other.remove(&k) else {
                continue;
            };
            let both = match (mine, theirs) {
                (None, x) | (x, None) => x,
                (Some(a), Some(b)) => {
                    let i: BTreeSet<Bytes> = a.intersection(&b).cloned().collect();
                    if i.is_empty() {
                        continue;
                    }
                    Some(i)
                }
            };
            out.insert(k, both);
        }
        Candidates(out)
    }
}

/// Collects the candidates of a query from memtable indexes and segments.
/// `segment_of` gives each SSTable's segment for an index (building it if
/// needed). Returns `None` when a clause names an unknown index.
pub(crate) fn candidates<'a>(
    specs: &[IndexSpec],
    query: &IndexQuery,
    memtables: impl Iterator<Item = &'a MemIndex> + Clone,
    segments: &dyn Fn(&IndexSpec) -> crate::Result<Vec<Arc<Segment>>>,
    within: &dyn Fn(&DecoratedKey) -> bool,
) -> crate::Result<Option<Candidates>> {
    let mut acc: Option<Candidates> = None;
    for clause in &query.clauses {
        let Some(spec) = specs.iter().find(|s| s.name == clause.index) else {
            return Ok(None);
        };
        let ranges = clause.op.term_ranges(spec);
        let mut c = Candidates::default();
        for (lo, hi) in &ranges {
            for m in memtables.clone() {
                m.collect(&spec.name, lo, hi, &mut c, within);
            }
        }
        for seg in segments(spec)? {
            for (lo, hi) in &ranges {
                for e in seg.lookup(lo, hi) {
                    if within(&e.1) {
                        c.add(&e.1, e.2.as_ref());
                    }
                }
            }
        }
        acc = Some(match acc {
            None => c,
            Some(a) => a.intersect(c),
        });
    }
    Ok(acc)
}

/// The candidates of an ANN query: every memtable's and segment's best
/// `k` rows passing `allowed`, by partition (stale versions included: the
/// caller scores the merged, live rows). Also, for each source that may
/// hold more passing rows than it returned, the score of the last one it
/// returned: while the caller's k-th live score is not above it, that
/// source may hide better live rows behind stale ones.
pub(crate) fn ann_candidates<'a>(
    spec: &IndexSpec,
    query: &[f32],
    k: usize,
    memtables: impl Iterator<Item = &'a MemIndex>,
    segments: &[Arc<Segment>],
    allowed: &dyn Fn(&DecoratedKey, &Bytes) -> bool,
    filter: Option<&Candidates>,
) -> (BTreeMap<DecoratedKey, BTreeSet<Bytes>>, Vec<f32>) {
    let mut out: BTreeMap<DecoratedKey, BTreeSet<Bytes>> = BTreeMap::new();
    let mut more = Vec::new();
    let mut take = |(found, m): (Vec<(f32, DecoratedKey, Bytes)>, bool)| {
        if m {
            if let Some(last) = found.last() {
                more.push(last.0);
            }
        }
        for (_, key, ck) in found {
            out.entry(key).or_default().insert(ck);
        }
    };
    for m in memtables {
        if let Some(g) = m.graph(&spec.name) {
            take(g.read().search(query, k, allowed, filter));
        }
    }
    for seg in segments {
        if let Some(rows) = &seg.ann {
            take(rows.search(query, k, allowed, filter));
        }
    }
    (out, more)
}

/// The score of a merged row's live vector against the query (`None`: no
/// live vector, or one that has no similarity).
pub fn vector_score(spec: &IndexSpec, row: &Row, now: LocalTime, query: &[f32]) -> Option<f32> {
    let v = spec.vector.as_ref()?;
    let raw = spec.row_values(row, Some(now)).into_iter().next()?;
    let vec = ann::decode_vector(&raw, v.dim)?;
    v.similarity.score(query, &vec)
}

impl Candidates {
    /// Whether the row `(key, ck)` is among the candidates.
    pub fn holds(&self, key: &DecoratedKey, ck: &Bytes) -> bool {
        match self.0.get(key) {
            Some(None) => true,
            Some(Some(cks)) => cks.contains(ck),
            None => false,
        }
    }
}

/// Keeps the rows of a merged partition that satisfy every clause (for a
/// static column's index: the partition's rows when its static row does).
pub(crate) fn retain_matching(
    specs: &[IndexSpec],
    query: &IndexQuery,
    p: &mut Partition,
    now: LocalTime,
) {
    let mut row_clauses = Vec::new();
    for clause in &query.clauses {
        let Some(spec) = specs.iter().find(|s| s.name == clause.index) else {
            continue;
        };
        if let Some(kp @ KeyPart::Partition(_)) = &spec.key {
            // Decided by the key: the partition, static row included, or nothing.
            let ok = kp
                .partition_value(&p.key.key)
                .is_some_and(|v| clause.op.matches_term(spec, &spec.term(&v)));
            if !ok {
                p.rows.clear();
                p.static_row = None;
                return;
            }
            continue;
        }
        if spec.is_static {
            let ok = p
                .static_row
                .as_ref()
                .is_some_and(|r| clause.op.matches_row(spec, r, now));
            if !ok {
                p.rows.clear();
                p.static_row = None;
                return;
            }
        } else {
            row_clauses.push((spec, &clause.op));
        }
    }
    if !row_clauses.is_empty() {
        p.rows.retain(|ck, r| {
            row_clauses.iter().all(|(s, op)| match &s.key {
                Some(kp) => kp
                    .clustering_term(ck)
                    .is_some_and(|t| op.matches_term(s, &t)),
                None => op.matches_row(s, r, now),
            })
        });
        // A row-level match says nothing about the partition's static row.
        p.static_row = None;
    }
}

/// Progress of building one index over a table's existing SSTables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexBuild {
    pub index: String,
    pub sstables_total: usize,
    pub sstables_done: usize,
    pub done: bool,
}

// ---------------------------------------------------------------------------
// Index components on disk
//
// Each SSTable's segments are also written to a component file beside it,
// `sst-<generation>.sai`, before the SSTable is renamed into place (so a
// visible SSTable written with indexes has its component), and removed
// with it. At start-up a segment is read from there instead of being
// rebuilt from the data. The file names the SSTable it belongs to by
// length and a checksum of its last bytes (index, bloom filter, metadata,
// footer), since a generation can be reused once the newest SSTable is
// gone; a missing, foreign or corrupt component is rebuilt from the data
// (with a log line) and written again.
//
// ```text
// "GYRESAI1" [version u32] [sstable length u64] [sstable tail crc32 u32]
// [segments uvarint] ([spec json bytes] [segment bytes])...  [crc32 u32]
// ```

const COMPONENT_MAGIC: &[u8; 8] = b"GYRESAI1";
const COMPONENT_VERSION: u32 = 1;
/// The bytes at the end of an SSTable its component's identity covers.
const IDENTITY_TAIL: u64 = 4096;

/// The index component file of an SSTable file (`sst-N.db` → `sst-N.sai`).
pub fn component_path(sstable: &std::path::Path) -> std::path::PathBuf {
    sstable.with_extension("sai")
}

/// Removes an SSTable's index component, if it has one (a leftover is
/// harmless: it no longer matches any SSTable and is removed at start-up).
pub fn remove_component(sstable: &std::path::Path) {
    let p = component_path(sstable);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %p.display(), error = %e, "removing an index component"),
    }
}

/// (length, crc32 of the last bytes) of an SSTable file.
fn identity(data: &std::path::Path) -> std::io::Result<(u64, u32)> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(data)?;
    let len = f.metadata()?.len();
    let n = len.min(IDENTITY_TAIL);
    let mut tail = vec![0u8; n as usize];
    f.read_exact_at(&mut tail, len - n)?;
    Ok((len, crc32fast::hash(&tail)))
}

fn put_key(out: &mut Vec<u8>, key: &DecoratedKey) {
    out.extend_from_slice(&key.token.to_be_bytes());
    gyre_common::codec::put_bytes(out, &key.key);
}

fn get_key(
    r: &mut gyre_common::codec::Reader<'_>,
) -> gyre_common::codec::DecodeResult<DecoratedKey> {
    let token = r.i64_be()?;
    // Copied: a slice would keep the whole file's buffer alive.
    let key = Bytes::copy_from_slice(&r.bytes()?);
    Ok(DecoratedKey { token, key })
}

impl Segment {
    fn encode(&self, out: &mut Vec<u8>) {
        use gyre_common::codec::{put_bytes, put_uvarint};
        match &self.ann {
            None => {
                out.push(0);
                put_uvarint(out, self.entries.len() as u64);
                for (term, key, ck) in &self.entries {
                    put_bytes(out, term);
                    put_key(out, key);
                    match ck {
                        None => out.push(0),
                        Some(ck) => {
                            out.push(1);
                            put_bytes(out, ck);
                        }
                    }
                }
            }
            Some(rows) => {
                out.push(1);
                put_uvarint(out, rows.rows.len() as u64);
                for (key, ck) in &rows.rows {
                    put_key(out, key);
                    put_bytes(out, ck);
                }
                rows.graph.encode(out);
            }
        }
    }

    fn decode(
        spec: &IndexSpec,
        r: &mut gyre_common::codec::Reader<'_>,
    ) -> gyre_common::codec::DecodeResult<Segment> {
        let bad = |r: &gyre_common::codec::Reader<'_>, what| gyre_common::codec::DecodeError {
            offset: r.position(),
            what,
        };
        match (r.u8()?, &spec.vector) {
            (0, None) => {
                let n = r.len()?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let term = r.bytes()?.to_vec();
                    let key = get_key(r)?;
                    let ck = match r.u8()? {
                        0 => None,
                        _ => Some(Bytes::copy_from_slice(&r.bytes()?)),
                    };
                    entries.push((term, key, ck));
                }
                if !entries.is_sorted() {
                    return Err(bad(r, "index entries out of order"));
                }
                Ok(Segment {
                    spec: Some(spec.clone()),
                    entries,
                    ann: None,
                })
            }
            (1, Some(v)) => {
                let n = r.len()?;
                let mut rows = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = get_key(r)?;
                    let ck = Bytes::copy_from_slice(&r.bytes()?);
                    rows.push((key, ck));
                }
                let graph = Graph::decode(r, v.similarity)?;
                if graph.len() != rows.len() || graph.dim() != v.dim {
                    return Err(bad(r, "vector index does not fit its rows"));
                }
                Ok(Segment {
                    spec: Some(spec.clone()),
                    entries: Vec::new(),
                    ann: Some(AnnRows {
                        sorted: rows.is_sorted_by(|a, b| a.0 <= b.0),
                        graph,
                        rows,
                    }),
                })
            }
            _ => Err(bad(r, "segment kind does not fit its index")),
        }
    }
}

/// Writes the component of the SSTable whose data is (so far) in `data`
/// and whose final path is `sstable`: to a temporary file, synced, then
/// renamed into place. The caller syncs the directory.
fn write_component(
    data: &std::path::Path,
    sstable: &std::path::Path,
    segments: &[Arc<Segment>],
) -> std::io::Result<()> {
    use std::io::Write;
    let (len, crc) = identity(data)?;
    let mut out = Vec::new();
    out.extend_from_slice(COMPONENT_MAGIC);
    out.extend_from_slice(&COMPONENT_VERSION.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    let with_spec: Vec<(&IndexSpec, &Arc<Segment>)> = segments
        .iter()
        .filter_map(|s| Some((s.spec.as_ref()?, s)))
        .collect();
    gyre_common::codec::put_uvarint(&mut out, with_spec.len() as u64);
    let mut body = Vec::new();
    for (spec, seg) in with_spec {
        let json = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
        gyre_common::codec::put_bytes(&mut out, &json);
        body.clear();
        seg.encode(&mut body);
        gyre_common::codec::put_bytes(&mut out, &body);
    }
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    let name = sstable
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = sstable
        .with_file_name(format!("tmp-{name}"))
        .with_extension("sai");
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        std::fs::rename(&tmp, component_path(sstable))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Why a component could not be used.
#[derive(Debug)]
enum ComponentError {
    Missing,
    Unusable(String),
}

/// Reads the segments of `sst`'s component that belong to one of `specs`.
fn read_component(
    sst: &crate::sstable::SsTable,
    specs: &[IndexSpec],
) -> Result<HashMap<String, Arc<Segment>>, ComponentError> {
    let path = component_path(sst.path());
    let body = match std::fs::read(&path) {
        Ok(b) => Bytes::from(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ComponentError::Missing),
        Err(e) => return Err(ComponentError::Unusable(e.to_string())),
    };
    let unusable = |why: &str| ComponentError::Unusable(why.to_string());
    if body.len() < 28 || &body[..8] != COMPONENT_MAGIC {
        return Err(unusable("not an index component"));
    }
    let (head, sum) = body.split_at(body.len() - 4);
    if crc32fast::hash(head).to_le_bytes() != sum {
        return Err(unusable("checksum mismatch"));
    }
    if body[8..12] != COMPONENT_VERSION.to_le_bytes() {
        return Err(unusable("unsupported version"));
    }
    let (len, crc) = identity(sst.path()).map_err(|e| unusable(&e.to_string()))?;
    if body[12..20] != len.to_le_bytes() || body[20..24] != crc.to_le_bytes() {
        return Err(unusable("written for another SSTable"));
    }
    let head = body.slice(24..body.len() - 4);
    let mut r = gyre_common::codec::Reader::new(&head);
    let mut out = HashMap::new();
    let res = (|| -> gyre_common::codec::DecodeResult<()> {
        let n = r.uvarint()?;
        for _ in 0..n {
            let json = r.bytes()?;
            let seg = r.bytes()?;
            let Ok(stored) = serde_json::from_slice::<IndexSpec>(&json) else {
                continue;
            };
            // Only segments of the table's current indexes, as defined now.
            if !specs.contains(&stored) {
                continue;
            }
            let seg = Segment::decode(&stored, &mut gyre_common::codec::Reader::new(&seg))?;
            out.insert(stored.name.clone(), Arc::new(seg));
        }
        Ok(())
    })();
    res.map_err(|e| unusable(&e.to_string()))?;
    Ok(out)
}

impl SegmentBuilder {
    /// Finishes the segments of an SSTable written to `data` that will be
    /// renamed to `sstable`, and writes its component file first. A
    /// component that cannot be written is only logged: the segments are
    /// rebuilt from the data when the SSTable is next opened.
    pub fn finish_to_disk(
        self,
        data: &std::path::Path,
        sstable: &std::path::Path,
    ) -> HashMap<String, Arc<Segment>> {
        if self.is_empty() {
            return HashMap::new();
        }
        let segs = self.finish();
        let list: Vec<Arc<Segment>> = segs.values().cloned().collect();
        if let Err(e) = write_component(data, sstable, &list) {
            tracing::warn!(path = %sstable.display(), error = %e, "writing an index component");
        }
        segs
    }
}

/// An SSTable's segment for `spec` (one of the table's `specs`): the one
/// attached to it, else the one in its component file, else one built
/// from its data (written back to the component so the next start-up
/// need not build it again).
pub(crate) fn segment_of(
    sst: &crate::sstable::SsTable,
    spec: &IndexSpec,
    specs: &[IndexSpec],
) -> crate::Result<Arc<Segment>> {
    use std::sync::atomic::Ordering;
    if let Some(seg) = sst.sai.get_for(spec) {
        return Ok(seg);
    }
    // Held through a build too: a second caller waits for the first
    // one's segment instead of building it again.
    let mut checked = sst.sai.disk.lock();
    {
        if !*checked {
            *checked = true;
            match read_component(sst, specs) {
                Ok(segs) => {
                    sst.sai
                        .loaded
                        .fetch_add(segs.len() as u64, Ordering::Relaxed);
                    // Segments built meanwhile (a flush's) win: same data.
                    let mut map = sst.sai.segments.write();
                    for (name, seg) in segs {
                        map.entry(name).or_insert(seg);
                    }
                }
                Err(ComponentError::Missing) => {
                    tracing::info!(sstable = %sst.path().display(), "no index component: index segments are rebuilt from the SSTable");
                }
                Err(ComponentError::Unusable(why)) => {
                    tracing::warn!(sstable = %sst.path().display(), %why, "index component unusable: index segments are rebuilt from the SSTable");
                }
            }
        }
        // (Also when another thread read the component meanwhile.)
        if let Some(seg) = sst.sai.get_for(spec) {
            return Ok(seg);
        }
    }
    let mut b = SegmentBuilder::new(std::slice::from_ref(spec));
    let mut it = sst.iter_from(&Bound::Unbounded, crate::types::ClusteringFilter::all())?;
    while let Some(p) = it.next_partition()? {
        b.add(&p);
    }
    let segs = b.finish();
    let seg = segs.get(&spec.name).cloned().unwrap_or_default();
    sst.sai.insert_all(segs);
    sst.sai.rebuilt.fetch_add(1, Ordering::Relaxed);
    tracing::info!(sstable = %sst.path().display(), index = %spec.name, "index segment built from the SSTable");
    // Written back with every segment of a current index the SSTable has.
    let list: Vec<Arc<Segment>> = specs.iter().filter_map(|s| sst.sai.get_for(s)).collect();
    if sst.path().exists() {
        let res = write_component(sst.path(), sst.path(), &list).and_then(|()| {
            let dir = sst.path().parent().unwrap_or(std::path::Path::new("."));
            std::fs::File::open(dir)?.sync_all()
        });
        if let Err(e) = res {
            tracing::warn!(sstable = %sst.path().display(), error = %e, "writing an index component");
        }
    }
    drop(checked);
    Ok(seg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_common::{Cell, CellName};

    #[test]
    fn text_analysis_folds_case_accents_and_forms() {
        let all = TextAnalysis {
            case_insensitive: true,
            normalize: true,
            ascii: true,
        };
        let a = |s: &str| String::from_utf8(all.analyze(s.as_bytes())).expect("UTF-8");
        assert_eq!(a("Crème Brûlée"), "creme brulee");
        assert_eq!(a("cre\u{300}me"), "creme");
        assert_eq!(a("ＡＢＣ ﬁ"), "abc fi");
        assert_eq!(a(&a("Zoë")), a("Zoë"), "idempotent");
        let lower = TextAnalysis {
            case_insensitive: true,
            ..Default::default()
        };
        assert_eq!(lower.analyze("Crème".as_bytes()), "crème".as_bytes());
        let nfc = TextAnalysis {
            normalize: true,
            ..Default::default()
        };
        assert_eq!(nfc.analyze("e\u{301}".as_bytes()), "é".as_bytes());
        assert_eq!(TextAnalysis::default().analyze(b"Ab"), b"Ab");
        assert_eq!(
            all.analyze(&[0xff, 0x41]),
            vec![0xff, 0x41],
            "not UTF-8: unchanged"
        );
    }

    fn spec(order: TermOrder) -> IndexSpec {
        IndexSpec {
            name: "i".into(),
            column: "v".into(),
            part: IndexedPart::Value,
            order,
            is_static: false,
            vector: None,
            text: Default::default(),
            key: None,
        }
    }

    /// Key column indexes take their terms from the keys: a component of
    /// a composite partition key (one entry per partition) and a
    /// clustering column (one per row).
    #[test]
    fn key_column_indexes_read_terms_from_keys() {
        let by_b = IndexSpec {
            name: "by_b".into(),
            key: Some(KeyPart::Partition(1)),
            ..spec(TermOrder::Signed)
        };
        // Clustering (c int, d text): the index is on d.
        let by_d = IndexSpec {
            name: "by_d".into(),
            order: TermOrder::Bytes,
            key: Some(KeyPart::Clustering(vec![
                KeyLayout {
                    desc: false,
                    shape: KeyShape::Fixed(4),
                },
                KeyLayout {
                    desc: true,
                    shape: KeyShape::Escaped,
                },
            ])),
            ..spec(TermOrder::Bytes)
        };
        let text = |t: &[u8]| {
            let mut v = t.to_vec();
            v.extend([0, 0]);
            v
        };
        let ck = |c: i32, d: &[u8]| {
            let mut v = (c ^ i32::MIN).to_be_bytes().to_vec();
            v.extend(text(d).iter().map(|b| !b));
            Bytes::from(v)
        };
        let specs = [by_b.clone(), by_d.clone()];
        let mut b = SegmentBuilder::new(&specs);
        let mut parts = Vec::new();
        for a in 0..6i32 {
            let key =
                gyre_common::compose_partition_key(&[&a.to_be_bytes(), &(a % 2).to_be_bytes()]);
            let mut p = Partition::with_key(Bytes::from(key));
            for c in 0..3 {
                let d: &[u8] = if c == a % 3 { b"x" } else { b"y" };
                p.rows.insert(ck(c, d), Row::default());
            }
            b.add(&p);
            parts.push(p);
        }
        let segs = b.finish();
        let mem = MemIndex::default();
        let query = |clauses: Vec<IndexClause>| IndexQuery { clauses, ann: None };
        let find = |q: &IndexQuery| {
            candidates(
                &specs,
                q,
                std::iter::once(&mem),
                &|s| Ok(vec![segs[&s.name].clone()]),
                &|_| true,
            )
            .expect("ok")
            .expect("known indexes")
        };
        let b_is_1 = IndexClause {
            index: "by_b".into(),
            op: TermOp::Eq(Bytes::copy_from_slice(&1i32.to_be_bytes())),
        };
        let d_is_x = IndexClause {
            index: "by_d".into(),
            op: TermOp::Eq(Bytes::from(text(b"x"))),
        };
        let c = find(&query(vec![b_is_1.clone()]));
        assert_eq!(c.0.len(), 3, "partitions 1, 3, 5");
        assert!(c.0.values().all(Option::is_none), "whole partitions");
        let both = query(vec![b_is_1, d_is_x]);
        let c = find(&both);
        assert_eq!(
            c.0.values()
                .map(|v| v.as_ref().map_or(0, |s| s.len()))
                .sum::<usize>(),
            3
        );
        for p in &parts {
            let mut p = p.clone();
            retain_matching(&specs, &both, &mut p, 0);
            let a = i32::from_be_bytes(p.key.key[2..6].try_into().expect("4 bytes"));
            let want: Vec<Bytes> = if a % 2 == 1 {
                vec![ck(a % 3, b"x")]
            } else {
                vec![]
            };
            assert_eq!(
                p.rows.keys().cloned().collect::<Vec<_>>(),
                want,
                "partition {a}"
            );
        }
    }

    #[test]
    fn terms_sort_like_cql_values() {
        let s = spec(TermOrder::Signed);
        let ints = [-5i32, -1, 0, 3, 1000];
        let terms: Vec<_> = ints.iter().map(|i| s.term(&i.to_be_bytes())).collect();
        assert!(terms.windows(2).all(|w| w[0] < w[1]));
        let f = spec(TermOrder::Float);
        let floats = [-2.5f64, -0.1, 0.0, 0.5, 7.0];
        let terms: Vec<_> = floats.iter().map(|x| f.term(&x.to_be_bytes())).collect();
        assert!(terms.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn segment_lookup_and_candidates() {
        let s = spec(TermOrder::Signed);
        let mut b = SegmentBuilder::new(std::slice::from_ref(&s));
        for k in 0..10i32 {
            let mut p = Partition::with_key(Bytes::copy_from_slice(&k.to_be_bytes()));
            let mut row = Row::default();
            row.cells.insert(
                CellName::simple("v"),
                Cell::live(1, Bytes::copy_from_slice(&(k % 3).to_be_bytes())),
            );
            p.rows.insert(Bytes::from_static(b"c"), row);
            b.add(&p);
        }
        let segs = b.finish();
        let seg = segs["i"].clone();
        let q = IndexQuery {
            clauses: vec![IndexClause {
                index: "i".into(),
                op: TermOp::Eq(Bytes::copy_from_slice(&1i32.to_be_bytes())),
            }],
            ann: None,
        };
        let mem = MemIndex::default();
        let c = candidates(
            std::slice::from_ref(&s),
            &q,
            std::iter::once(&mem),
            &|_| Ok(vec![seg.clone()]),
            &|_| true,
        )
        .expect("ok")
        .expect("known index");
        assert_eq!(c.0.len(), 3); // 1, 4, 7
        let range = IndexQuery {
            clauses: vec![IndexClause {
                index: "i".into(),
                op: TermOp::Range {
                    lo: Bound::Excluded(Bytes::copy_from_slice(&0i32.to_be_bytes())),
                    hi: Bound::Unbounded,
                },
            }],
            ann: None,
        };
        let c = candidates(
            std::slice::from_ref(&s),
            &range,
            std::iter::once(&mem),
            &|_| Ok(vec![seg.clone()]),
            &|_| true,
        )
        .expect("ok")
        .expect("known index");
        assert_eq!(c.0.len(), 6);
        let any = IndexQuery {
            clauses: vec![IndexClause {
                index: "i".into(),
                op: TermOp::In(vec![
                    Bytes::copy_from_slice(&0i32.to_be_bytes()),
                    Bytes::copy_from_slice(&2i32.to_be_bytes()),
                ]),
            }],
            ann: None,
        };
        let c = candidates(
            std::slice::from_ref(&s),
            &any,
            std::iter::once(&mem),
            &|_| Ok(vec![seg.clone()]),
            &|_| true,
        )
        .expect("ok")
        .expect("known index");
        assert_eq!(c.0.len(), 7); // 0, 3, 6, 9 and 2, 5, 8
    }
}
