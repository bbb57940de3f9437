//! Gyre's CQL execution on one node: parsed statements run against the
//! schema and a [`DataAccess`] layer.
//!
//! What it is: [`QueryProcessor`] takes CQL text (or a [`gyre_cql::Parsed`]
//! statement) with bound values in their wire form ([`Value`]: bytes, null
//! or unset) and returns a [`QueryResult`] or a [`QueryError`] that maps to a
//! CQL error ([`QueryError::to_cql_error`]). It executes keyspace and table
//! DDL (persisted through [`gyre_schema::SchemaStore`]), `USE`, `TRUNCATE`,
//! server-side `DESCRIBE`, `INSERT` (also `INSERT ... JSON` with `DEFAULT
//! NULL` / `DEFAULT UNSET`), `UPDATE`, `DELETE` and `BATCH` (with `USING
//! TTL` / `TIMESTAMP`), and `SELECT` (also `SELECT DISTINCT` and `SELECT
//! JSON`) with partition-key lookups (`=`, `IN`), clustering slices, `ORDER
//! BY`, `LIMIT`, `PER PARTITION LIMIT`, `writetime` / `ttl`, `token()`
//! ranges and selectors, `ALLOW FILTERING` (`=`, `IN`, ranges on any
//! column), and paging (page size and an opaque paging state) for both
//! partition reads and token-ordered scans. The aggregates `count`, `min`,
//! `max`, `sum` and `avg` fold every selected row into one, or into one row
//! per group with `GROUP BY` (partition key and a clustering prefix).
//! Multi-column relations `(c1, c2) > (1, 2)` slice clustering columns.
//! Cassandra's native functions (`now()`, `uuid()`, `currentTimestamp()`
//! and the other `current*()`, `toTimestamp`, `toDate`, `toUnixTimestamp`,
//! `dateOf`, `unixTimestampOf`, `minTimeuuid`, `maxTimeuuid`, `blobAsX` /
//! `xAsBlob` for every native type, `toJson`, `fromJson`) work as terms and
//! as selectors. An unset bound value leaves its column untouched in a
//! write and is refused in keys and `WHERE`; unset TTL, timestamp and
//! `LIMIT` mean their defaults. [`QueryProcessor::prepare`] types bind
//! markers and result columns; [`QueryProcessor::plan`] makes a
//! [`PreparedPlan`] of the common prepared statements (keyed INSERT,
//! UPDATE, DELETE and SELECT) that [`QueryProcessor::execute_plan`] runs
//! without planning again.
//!
//! Non-frozen sets, maps and lists are stored one cell per element (cell
//! paths), so `s = s + {..}`, `s = s - {..}`, `m[k] = v`, `l = l + [..]`,
//! `l = [..] + l` and `DELETE m[k]` touch only their elements. The engine
//! has no column-level deletion, so replacing or deleting a whole collection
//! reads the stored elements first and tombstones them; `l = l - [..]`,
//! `l[i] = v` and `DELETE l[i]` also read the stored list first, as in
//! Cassandra.
//!
//! User-defined types arrive resolved in the column types
//! ([`gyre_cql::CqlType::UserType`], by the schema), so values, bind
//! markers and result metadata (the protocol's UDT option) follow from
//! the column. A frozen UDT is one cell; a non-frozen one is a cell per
//! field (path: the field's position as a u16, as in Cassandra), so
//! `SET u.f = ?` and `DELETE u.f` touch one field and a whole value
//! writes every field (absent ones as tombstones) without a read.
//! `SELECT u.f` extracts a field after the read.
//!
//! What it is not: no networking, no replication (the coordinator supplies
//! its own [`DataAccess`]; [`LocalData`] is this node's engine).
//! Lightweight transactions (`IF ...`, conditional batches) are built in
//! `cas.rs` and run through [`DataAccess::cas`] (Paxos in a cluster); a
//! read at `SERIAL` / `LOCAL_SERIAL` is the data access's business. Refused
//! with an `INVALID` error: counters, materialized
//! views, user-defined functions and aggregates, `CAST`
//! in selections, terms (constants) as selectors outside function
//! arguments.
//!
//! Secondary indexes (`index.rs`): restrictions that an index of the table
//! serves (`=`, ranges on numeric, date and time columns, `CONTAINS`,
//! `CONTAINS KEY`, several ANDed) need no ALLOW FILTERING; without a
//! partition key the scan carries them as a
//! [`gyre_storage::sai::IndexQuery`], which engines answer from their
//! storage-attached indexes, and every row is checked against the
//! restrictions again after the read. Above ONE, each matched partition is
//! re-read at the consistency level (replica filtering protection: a
//! replica whose newer value no longer matches sends nothing for the row).
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
//! use futures::executor::block_on;
//! let p = QueryParams::default();
//! block_on(qp.execute("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}", &p))?;
//! block_on(qp.execute("CREATE TABLE ks.t (k int PRIMARY KEY, v text)", &p))?;
//! block_on(qp.execute("INSERT INTO ks.t (k, v) VALUES (1, 'one')", &p))?;
//! let QueryResult::Rows { rows, .. } = block_on(qp.execute("SELECT v FROM ks.t WHERE k = 1", &p))? else {
//!     panic!("rows expected")
//! };
//! assert_eq!(rows, vec![vec![Some(bytes::Bytes::from("one"))]]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cas;
mod collections;
mod data;
mod describe;
mod error;
mod functions;
mod guardrails;
mod index;
mod json;
mod plan;
mod prepare;
mod processor;
mod select;
mod values;
mod write;

pub use crate::{
    data::{CasDecide, CasResult, DataAccess, LocalData},
    error::{QueryError, Result},
    guardrails::{Guardrails, DEFAULT_MAX_MUTATION_SIZE},
    plan::PreparedPlan,
    prepare::PreparedInfo,
    processor::{DatacenterSource, QueryParams, QueryProcessor, QueryResult, SchemaListener},
};
/// A bound value: bytes, null or unset ([`QueryParams::values`]).
pub use gyre_protocol::Value;
