//! Gyre's schema: the model of keyspaces, tables and columns shared by the
//! coordinator and the CQL layer.
//!
//! What it is:
//! - the model ([`KeyspaceDef`], [`TableDef`], [`ColumnDef`], options) with
//!   Cassandra's structural checks;
//! - user-defined types (`types.rs`): CREATE/ALTER/DROP TYPE, stored as
//!   `RowKey::Type` rows and resolved into every column's type
//!   ([`gyre_cql::CqlType::UserType`]) when the schema is derived;
//! - [`statement_to_change`]: CREATE/ALTER/DROP KEYSPACE, TABLE, INDEX and TYPE from the
//!   [`gyre_cql`] syntax tree to a [`SchemaChange`], with Cassandra's errors;
//! - [`Schema`]: the whole schema, derived from timestamped [`SchemaRows`]
//!   (like Cassandra's `system_schema` tables) that merge by last-write-wins,
//!   so concurrent changes converge on every node in any order; a content
//!   digest as the schema [`Schema::version`]; built-in system keyspaces;
//! - `to_cql` on [`KeyspaceDef`] and [`TableDef`]: the CQL `DESCRIBE` shows;
//! - [`SchemaStore`]: the rows persisted in the node's own
//!   [`gyre_storage::StorageEngine`], whose LWW merges them;
//! - key encoding ([`encode_partition_key`], [`encode_clustering`]): partition keys as drivers serialize them and
//!   byte-comparable clustering keys per CQL type.
//!
//! What it is not: no networking (callers ship [`SchemaRows`] between nodes),
//! no functions or views (secondary indexes are
//! [`IndexDef`]s of their table, `RowKey::Index` rows), no value parsing
//! beyond key encoding.
//!
//! ```
//! use gyre_schema::{statement_to_change, Schema};
//!
//! let mut schema = Schema::new();
//! for (ts, cql) in [
//!     (1, "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"),
//!     (2, "CREATE TABLE ks.t (k int, c text, v blob, PRIMARY KEY (k, c)) WITH CLUSTERING ORDER BY (c DESC)"),
//! ] {
//!     let stmt = gyre_cql::parse_statement(cql).unwrap();
//!     let change = statement_to_change(&stmt, &schema, None).unwrap().expect("a change");
//!     schema.apply_change(change, ts).unwrap();
//! }
//! assert_eq!(schema.table("ks", "t").unwrap().clustering().len(), 1);
//! ```

mod ddl;
mod describe;
mod encoding;
mod error;
mod index;
mod md5;
mod model;
mod rows;
mod schema;
mod store;
mod types;

pub use crate::md5::md5;
pub use crate::{
    ddl::{statement_to_change, statement_to_change_in},
    encoding::{
        decode_clustering, decode_clustering_key, encode_clustering, encode_clustering_key,
        encode_partition_key,
    },
    error::{Result, SchemaError},
    index::{IndexDef, SAI_CLASS},
    model::{
        ClusteringOrder, ColumnDef, ColumnKind, DroppedColumn, KeyspaceDef, Replication, TableDef,
        TableOptions,
    },
    rows::{CellVersion, RowKey, SchemaPartition, SchemaRow, SchemaRows},
    schema::{
        built_in_replicated_tables, is_replicated_system_keyspace, is_system_keyspace,
        system_auth_tables, system_traces_tables, Schema, SchemaChange, TableAlteration,
        SYSTEM_KEYSPACES,
    },
    store::{SchemaStore, SCHEMA_TABLE_ID},
    types::{dependency_order, type_to_cql, KeyspaceTypes},
};
