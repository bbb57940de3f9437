//! Gyre's CQL execution on one node: parsed statements run against the
//! schema and a [`DataAccess`] layer.
//!
//! What it is: [`QueryProcessor`] takes CQL text (or a [`gyre_cql::Parsed`]
//! statement) with bound values in their wire form and returns a
//! [`QueryResult`] or a [`QueryError`] that maps to a CQL error
//! ([`QueryError::to_cql_error`]). It executes keyspace and table DDL
//! (persisted through [`gyre_schema::SchemaStore`]), `USE`, `TRUNCATE`,
//! server-side `DESCRIBE`, `INSERT`, `UPDATE`, `DELETE` and `BATCH` (with
//! `USING TTL` / `TIMESTAMP`), and `SELECT` (and `SELECT DISTINCT`) with partition-key lookups
//! (`=`, `IN`), clustering slices, `ORDER BY`, `LIMIT`, `PER PARTITION
//! LIMIT`, `count(*)`, `writetime` / `ttl`, `token()` ranges, `ALLOW
//! FILTERING` (`=`, `IN`, ranges on any column), and paging (page size and
//! an opaque paging state) for both partition reads and token-ordered scans.
//! [`QueryProcessor::prepare`] types bind markers and result columns.
//!
//! Non-frozen sets, maps and lists are stored one cell per element (cell
//! paths), so `s = s + {..}`, `s = s - {..}`, `m[k] = v`, `l = l + [..]` and
//! `DELETE m[k]` touch only their elements. The engine has no column-level
//! deletion, so replacing or deleting a whole collection reads the stored
//! elements first and tombstones them.
//!
//! What it is not: no networking, no replication (the coordinator supplies
//! its own [`DataAccess`]; [`LocalData`] is this node's engine), no
//! lightweight transactions, counters, JSON, secondary indexes, user-defined
//! types or functions, no list prepend / index operations.
//!
//! Rows: an INSERT writes a row marker (a cell with an empty column name) so
//! that a row with only primary-key columns exists; UPDATE does not.
//! Writes take the client timestamp, else a monotonic microsecond clock;
//! expiry and deletion times come from the [`gyre_storage::Clock`] given.
//!
//! ```
//! use std::sync::Arc;
//! use gyre_query::{LocalData, QueryParams, QueryProcessor, QueryResult};
//! use gyre_storage::{LsmConfig, LsmEngine, SystemClock};
//!
//! let dir = tempfile::tempdir()?;
//! let engine = Arc::new(LsmEngine::open(LsmConfig::in_dir(dir.path()))?);
//! let qp = QueryProcessor::new(
//!     gyre_schema::Schema::new(),
//!     None,
//!     Arc::new(LocalData::new(engine)),
//!     Arc::new(SystemClock),
//! );
//! let p = QueryParams::default();
//! qp.execute("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}", &p)?;
//! qp.execute("CREATE TABLE ks.t (k int PRIMARY KEY, v text)", &p)?;
//! qp.execute("INSERT INTO ks.t (k, v) VALUES (1, 'one')", &p)?;
//! let QueryResult::Rows { rows, .. } = qp.execute("SELECT v FROM ks.t WHERE k = 1", &p)? else {
//!     panic!("rows expected")
//! };
//! assert_eq!(rows, vec![vec![Some(bytes::Bytes::from("one"))]]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod collections;
mod data;
mod describe;
mod error;
mod prepare;
mod processor;
mod select;
mod values;
mod write;

pub use crate::{
    data::{DataAccess, LocalData},
    error::{QueryError, Result},
    prepare::PreparedInfo,
    processor::{QueryParams, QueryProcessor, QueryResult, SchemaListener},
};
