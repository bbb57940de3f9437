//! `POST /digest`: a digest of everything this node stores for one table,
//! so operators (and the chaos checker, through `gyrectl cluster digest`)
//! can tell whether replicas agree without reading every key through CQL.
//!
//! The digest folds, in token order, each partition's key and its merged
//! content as the engine returns it (the same per-partition digest that
//! digest reads compare), so two replicas that converged give the same
//! value whatever their SSTable layout. It covers the whole table, or the
//! token range (`start`, `end`] when given; compare nodes over ranges they
//! all replicate (the whole table when RF equals the node count).

use std::ops::Bound;
use std::time::{SystemTime, UNIX_EPOCH};

use gyre_common::Token;
use gyre_storage::{ReadFilter, ScanRequest, ScanStart, StorageEngine};
use serde::{Deserialize, Serialize};

use crate::node::Shared;

/// The request body.
#[derive(Debug, Serialize, Deserialize)]
pub struct DigestRequest {
    pub keyspace: String,
    pub table: String,
    /// Exclusive start token (default: the ring's start).
    #[serde(default)]
    pub start: Option<i64>,
    /// Inclusive end token (default: the ring's end).
    #[serde(default)]
    pub end: Option<i64>,
}

/// The answer: how much was digested and the digest (16 hex digits).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableDigest {
    pub keyspace: String,
    pub table: String,
    pub partitions: u64,
    pub rows: u64,
    pub digest: String,
}

/// Pages through the local table; the engine does the merging.
pub(crate) fn table_digest(shared: &Shared, req: &DigestRequest) -> Result<TableDigest, String> {
    let qp = shared.qp.get().ok_or("the node is still starting")?;
    let schema = qp.schema();
    let def = schema
        .table(&req.keyspace, &req.table)
        .ok_or_else(|| format!("unknown table {}.{}", req.keyspace, req.table))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    fold(shared.engine.as_ref(), def.id, req.start, req.end, now).map(
        |(partitions, rows, digest)| TableDigest {
            keyspace: req.keyspace.clone(),
            table: req.table.clone(),
            partitions,
            rows,
            digest: format!("{digest:016x}"),
        },
    )
}

fn fold(
    engine: &dyn StorageEngine,
    table: gyre_storage::TableId,
    start: Option<Token>,
    end: Option<Token>,
    now: i64,
) -> Result<(u64, u64, u64), String> {
    let mut request = ScanRequest {
        start: ScanStart::Token(start.map_or(Bound::Unbounded, Bound::Excluded)),
        end: end.map_or(Bound::Unbounded, Bound::Included),
        filter: ReadFilter::all(),
        max_rows: 1024,
        index: None,
    };
    let (mut partitions, mut rows) = (0u64, 0u64);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    loop {
        let page = engine
            .scan(table, &request, now)
            .map_err(|e| format!("scan failed: {e}"))?;
        for p in &page.partitions {
            partitions += 1;
            rows += p.rows.len() as u64;
            mix(&mut h, &p.key.key);
            mix(&mut h, &gyre_coordinator::digest(Some(p)).0.to_be_bytes());
        }
        match page.resume {
            Some(next) => request.start = next,
            None => return Ok((partitions, rows, h)),
        }
    }
}

/// FNV-1a over a length-prefixed field, so field boundaries count.
fn mix(h: &mut u64, bytes: &[u8]) {
    for b in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}
