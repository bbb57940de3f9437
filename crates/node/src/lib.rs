//! The Gyre node: what the `gyre` binary runs.
//!
//! - [`config`]: `conf/gyre.toml` ([`NodeConfig`], one strict section per
//!   concern) plus command-line [`Overrides`]; errors name the bad key.
//! - [`Node`]: opens the [`gyre_storage::LsmEngine`] (replaying the
//!   commitlog), loads or creates the persisted host id, gossip generation
//!   and tokens (`<data_dir>/node_state.json`), joins gossip over the
//!   [`gyre_net::Messenger`] (verb [`GOSSIP_VERB`], JSON, urgent priority),
//!   keeps a [`gyre_cluster::TokenMetadata`] in step with membership
//!   events, and serves the admin endpoint. [`Node::shutdown`] announces the
//!   shutdown to peers and flushes storage.
//! - Admin HTTP (`admin.listen_address`, 127.0.0.1 by default, and
//!   `network.admin_port`; Host, content-type, optional bearer token and
//!   fault-injection checks first): `GET /status` ([`StatusReport`]
//!   JSON), `GET /metrics` (Prometheus text, per-table compaction state
//!   included), `POST`/`DELETE /faults` (JSON [`gyre_net::FaultRules`]),
//!   the snapshot routes (`POST /snapshot`, `GET /snapshots`,
//!   `POST /snapshots/clear`, `POST /import`, bodies [`SnapshotRequest`])
//!   and `GET /compactionstats` ([`CompactionStats`]).
//! - [`http`]: the tiny HTTP/1.1 server and blocking client behind it, also
//!   used by `gyrectl` and the integration tests.
//!
//! - CQL (`network.cql_address:cql_port`): the native protocol server of
//!   `gyre-protocol` over a `gyre-query` [`gyre_query::QueryProcessor`] on
//!   local storage (single-node data path, no coordinator yet), with
//!   prepared statements (MD5 ids, bounded cache) and the virtual `system`
//!   and `system_schema` tables drivers read.
//! - `auth`: logins (`auth.authenticator`), roles in the replicated
//!   `system_auth` tables, permissions checked on every statement
//!   (`auth.authorizer`), as Cassandra's PasswordAuthenticator,
//!   CassandraRoleManager and CassandraAuthorizer.
//!
//! - [`membership`](crate::membership) and `streaming`: a node joining a
//!   running cluster (BOOT, ring delay, streaming its ranges, NORMAL) and
//!   leaving it (`POST /decommission`: LEAVING, streaming, hints handed
//!   off, LEFT, stop), replacing a dead node (`cluster.replace_address`:
//!   BOOT_REPLACE, streaming, NORMAL with its tokens), `removenode`
//!   (`removenode.rs`) and `POST /cleanup`; `GET /streams` shows the
//!   streaming sessions.

mod admin;
mod auth;
pub use admin::{CompactionStats, MemoryInfo, TableMemory};
mod bench;
pub mod config;
mod cql;
mod digest;
mod error;
pub mod http;
mod membership;
mod node;
mod rebuild;
mod removenode;
mod repair;
mod replication;
mod ring_info;
mod snapshots;
mod state;
mod status;
mod streaming;
mod system_tables;
mod traces;

pub use config::{NodeConfig, Overrides};
pub use digest::{DigestRequest, TableDigest};
pub use error::{Error, Result};
/// Storage failpoint names and control (feature `failpoints`).
pub use gyre_storage::failpoints;
pub use node::{run, shutdown_signal, Node, EMPTY_SCHEMA, GOSSIP_VERB, RELEASE_VERSION};
pub use repair::{RepairRequest, RepairSession, TableRepair};
pub use snapshots::SnapshotRequest;
pub use state::NodeState;
pub use status::{EndpointReport, HintsReport, StatusReport};
pub use streaming::SessionReport;
