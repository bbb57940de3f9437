//! Gyre's coordinator: the node that receives a client request and makes
//! the key's replicas serve it at the requested consistency level.
//!
//! The core is pure state machines, tested without sockets or clocks:
//! - [`ConsistencyLevel`]: how many replicas must answer (`block_for`) given
//!   the replication strategy and the coordinator's datacenter, which
//!   answers count (LOCAL_* only local ones, EACH_QUORUM per datacenter), and
//!   [`ConsistencyLevel::assure_sufficient_live`] (`Unavailable`).
//! - [`WriteTracker`]: acknowledgements and the timeout in, `Success` or
//!   `WriteTimeout` out, and the replicas that need a hint.
//! - [`ReadTracker`]: one data request and digest requests, full data on a
//!   digest mismatch, reconciliation through [`gyre_common::lww`], per-replica
//!   repair mutations ([`repair_diff`]), blocking read repair and short-read
//!   protection for row limits.
//! - [`TimestampGenerator`]: strictly increasing microsecond timestamps.
//! - [`HintStore`]: CRC-framed, fsynced hint files per target host, with a
//!   hint window, ordered replay and deletion on acknowledgement;
//!   [`RateLimiter`] throttles their delivery.
//!
//! [`Coordinator`] runs these over [`gyre_net::Messenger`] against a local
//! [`gyre_storage::StorageEngine`]: verbs [`MUTATION`] (its response is the
//! acknowledgement), [`READ_DATA`], [`READ_DIGEST`], [`READ_RANGE`] and
//! [`TRUNCATE`]; when the coordinator is itself a replica it reads and
//! writes its engine directly. Writes to replicas that are down, fail or
//! time out are hinted. Replicas come from a shared
//! [`gyre_cluster::TokenMetadata`] (which also maps host ids to addresses
//! and datacenters), liveness from a [`Liveness`] (the failure detector),
//! strategies and `speculative_retry` from a [`StrategyProvider`] (the
//! schema).
//!
//! Partition reads contact the replicas their level needs and, when those
//! are slower than the table's `speculative_retry` (default: the 99th
//! percentile of recent replica reads), one more ([`SpeculativeRetry`]).
//! Range reads ([`Coordinator::scan`]) walk the ring in token order, one
//! request per run of vnode ranges with the same replicas, reconcile the
//! replicas' pages up to where the first of them stopped, repair the stale
//! ones, and resume exactly there.
//!
//! Lightweight transactions ([`Coordinator::cas`],
//! [`Coordinator::serial_read`]) run Paxos over [`PAXOS_PREPARE`] (which
//! carries the read, and may carry the commit of a proposal the proposer
//! finished), [`PAXOS_PROPOSE`] and [`PAXOS_COMMIT`] (awaited at the
//! statement's consistency level only) or, when the coordinator's own
//! replica and any other make a quorum, [`PAXOS_PROPOSE_COMMIT`] (accept
//! and apply in one round trip once the own replica accepted), with each
//! replica's Paxos state in the internal `system.paxos` table
//! ([`PAXOS_TABLE`]). Counter increments ([`Coordinator::counter_write`])
//! go to a leader replica over [`COUNTER_MUTATION`], which writes its
//! per-host shard and replicates it.
//!
//! What it is not: a schema (table ids and strategies are inputs). Logged
//! batches go through a batchlog
//! on two other nodes first ([`Coordinator::write_batch`],
//! [`Coordinator::replay_batchlog`]). Hints are delivered when
//! the caller asks ([`Coordinator::deliver_hints`]), typically when gossip
//! sees the node come back.
//!
//! ```
//! use gyre_cluster::ReplicationStrategy;
//! use gyre_coordinator::{ConsistencyLevel, ConsistencyRules};
//!
//! let nts = ReplicationStrategy::network_topology([("dc1", 3), ("dc2", 2)]);
//! assert_eq!(ConsistencyLevel::Quorum.block_for(&nts, "dc1"), 3);
//! assert_eq!(ConsistencyLevel::LocalQuorum.block_for(&nts, "dc1"), 2);
//! assert_eq!(ConsistencyLevel::EachQuorum.block_for(&nts, "dc1"), 4);
//! ```

mod batchlog;
mod consistency;
mod error;
mod hints;
mod messages;
mod metrics;
mod paxos;
mod range;
mod read;
mod repair;
mod service;
mod speculation;
mod stage;
mod timestamp;
mod write;

pub use batchlog::BATCHLOG_TABLE;
pub use consistency::{ConsistencyLevel, ConsistencyRules, Replica};
pub use error::{
    CoordinatorError, Result, WriteType, INDEX_NOT_AVAILABLE, READ_TOO_MANY_TOMBSTONES,
};
pub use hints::{Hint, HintConfig, HintFileId, HintReplay, HintStore, RateLimiter};
pub use messages::{
    BATCH_REMOVE, BATCH_STORE, COUNTER_MUTATION, MUTATION, MUTATION_ACK, PAXOS_COMMIT,
    PAXOS_PREPARE, PAXOS_PROPOSE, PAXOS_PROPOSE_COMMIT, READ_DATA, READ_DIGEST, READ_RANGE,
    REPAIR_TREE, TRUNCATE,
};
pub use metrics::CoordinatorMetrics;
pub use paxos::{Ballot, PAXOS_TABLE};
pub use read::{digest, repair_diff, Digest, ReadAction, ReadResponse, ReadTracker};
pub use repair::{MerkleLeaves, TreeRequest, TreeSlice, MAX_DEPTH as MAX_REPAIR_DEPTH};
pub use service::{
    CasOutcome, Coordinator, CoordinatorConfig, Liveness, RangeRepair, StrategyProvider,
    DEFAULT_TOMBSTONE_FAILURE_THRESHOLD,
};
pub use speculation::{LatencyWindow, SpeculativeRetry};
pub use stage::{
    ReplicaStage, StageCounts, StagePermit, DEFAULT_MAX_REPLICA_REQUESTS, REPLICA_VERBS,
};
pub use timestamp::{MicrosClock, SystemMicrosClock, TimestampGenerator};
pub use write::{WriteOutcome, WriteTracker};
