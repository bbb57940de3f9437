//! The coordinator service: the state machines of this crate driven over
//! gyre-net, with the local storage engine as one of the replicas. This
//! module holds the service, its configuration and what every path shares
//! (replica planning, liveness, proximity); each concern has its own file:
//! [`write`], [`read`], [`range`], [`batch`], [`hints`] delivery,
//! [`repair`], and the replica side in [`handlers`].

mod batch;
mod counter;
mod handlers;
mod hints;
mod paxos;
mod range;
mod read;
mod repair;
mod routes;
mod write;

pub use paxos::CasOutcome;
pub use repair::RangeRepair;

use handlers::register_handlers;
use write::live;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use gyre_cluster::{HostId, ReplicationStrategy, TokenMetadata};
use gyre_common::{DecoratedKey, LocalTime, Partition, Token};
use gyre_net::{Inbound, Messenger};
use gyre_storage::{
    live_row_count, Clock, Mutation, ReadFilter, ScanPage, ScanRequest, ScanStart, StorageEngine,
    SystemClock, TableId,
};
use parking_lot::RwLock;
use std::ops::Bound;
use tokio::runtime::Handle;
use tokio::time::{timeout_at, Instant};

use crate::consistency::{ConsistencyLevel, ConsistencyRules, Replica};
use crate::error::{CoordinatorError, Result, WriteType};
use crate::hints::{Hint, HintStore};
use crate::messages::{
    decode_data, decode_digest, decode_page, decode_range, decode_read, decode_table, encode_data,
    encode_page, encode_range, encode_read, encode_table, RangeCommand, ReadCommand, BATCH_REMOVE,
    BATCH_STORE, MUTATION, READ_DATA, READ_DIGEST, READ_RANGE, REPAIR_TREE, TRUNCATE,
};
use crate::metrics::{apply_local, CoordinatorMetrics};
use crate::range::{append_partition, merge_range_pages, min_end, past_end, start_token};
use crate::read::{digest, ReadAction, ReadResponse, ReadTracker};
use crate::speculation::{HostLatencies, LatencyWindow, SpeculativeRetry};
use crate::stage::{ReplicaStage, DEFAULT_MAX_REPLICA_REQUESTS};
use crate::timestamp::{SystemMicrosClock, TimestampGenerator};
use crate::write::{WriteOutcome, WriteTracker};
use crate::{batchlog, messages};
use gyre_common::trace;

/// Who is up, as the failure detector sees it.
pub trait Liveness: Send + Sync {
    fn is_alive(&self, host: HostId) -> bool;
    /// How long `host` has been down, for the hint window (`None`: unknown,
    /// taken as just now).
    fn down_for(&self, _host: HostId) -> Option<Duration> {
        None
    }
}

impl<F: Fn(HostId) -> bool + Send + Sync> Liveness for F {
    fn is_alive(&self, host: HostId) -> bool {
        self(host)
    }
}

/// The replication strategy of a table's keyspace (from the schema).
pub trait StrategyProvider: Send + Sync {
    fn strategy(&self, table: TableId) -> Option<ReplicationStrategy>;
    /// A number that changes whenever `table`'s strategy may have (e.g. a
    /// schema version), so the coordinator can cache replicas per ring
    /// version and strategy version; `None` (the default) caches nothing.
    fn version(&self, _table: TableId) -> Option<u64> {
        None
    }
    /// The table's `speculative_retry` option.
    fn speculative_retry(&self, _table: TableId) -> SpeculativeRetry {
        SpeculativeRetry::default()
    }
}

impl<F: Fn(TableId) -> Option<ReplicationStrategy> + Send + Sync> StrategyProvider for F {
    fn strategy(&self, table: TableId) -> Option<ReplicationStrategy> {
        self(table)
    }
}

/// Coordinator settings.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// This node's host id (it must be in the token metadata).
    pub host_id: HostId,
    /// This node's datacenter.
    pub dc: String,
    /// Cassandra's `write_request_timeout` (2 s).
    pub write_timeout: Duration,
    /// Cassandra's `read_request_timeout` (5 s).
    pub read_timeout: Duration,
    /// Replica requests from other coordinators running at once; beyond,
    /// they are answered "overloaded" (see [`ReplicaStage`]).
    pub max_replica_requests: usize,
    /// Cassandra's `cas_contention_timeout` (1 s): how long a lightweight
    /// transaction retries under contention before a CAS WriteTimeout.
    pub cas_contention_timeout: Duration,
    /// Cassandra's `tombstone_failure_threshold` (100,000): a read that walks
    /// over more tombstones on a replica fails there (ReadFailure,
    /// READ_TOO_MANY_TOMBSTONES) instead of answering.
    pub tombstone_failure_threshold: usize,
}

impl CoordinatorConfig {
    pub fn new(host_id: HostId, dc: impl Into<String>) -> Self {
        CoordinatorConfig {
            host_id,
            dc: dc.into(),
            write_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
            max_replica_requests: DEFAULT_MAX_REPLICA_REQUESTS,
            cas_contention_timeout: Duration::from_secs(1),
            tombstone_failure_threshold: DEFAULT_TOMBSTONE_FAILURE_THRESHOLD,
        }
    }
}

/// Cassandra's default `tombstone_failure_threshold`.
pub const DEFAULT_TOMBSTONE_FAILURE_THRESHOLD: usize = 100_000;

/// Hint writes in flight at most (see `Inner::hint_permits`).
const MAX_HINT_WRITES_IN_FLIGHT: usize = 128;

struct Target {
    replica: Replica,
    addr: SocketAddr,
    alive: bool,
}

struct Inner {
    config: CoordinatorConfig,
    messenger: Messenger,
    storage: Arc<dyn StorageEngine>,
    ring: Arc<RwLock<TokenMetadata>>,
    strategies: Arc<dyn StrategyProvider>,
    liveness: Arc<dyn Liveness>,
    hints: Option<Arc<HintStore>>,
    /// Bounds the hint writes in flight (each fsyncs on the blocking pool):
    /// past it a hint is not stored (counted), as when the store is full.
    hint_permits: Arc<tokio::sync::Semaphore>,
    clock: Arc<dyn Clock>,
    timestamps: TimestampGenerator<SystemMicrosClock>,
    runtime: Handle,
    /// Recent remote replica read latencies, for speculative retry.
    latency: LatencyWindow,
    /// Per replica, a moving average of its read latency (microseconds),
    /// to send data requests to the fastest (Cassandra's dynamic snitch).
    host_latency: HostLatencies,
    metrics: Arc<CoordinatorMetrics>,
    /// Admission of other coordinators' requests to this replica.
    stage: Arc<ReplicaStage>,
    /// This replica's Paxos state locks (see [`crate::paxos`]).
    paxos: Arc<crate::paxos::PaxosReplica>,
    /// Per-counter locks of this node as a counter leader (sharded).
    counter_locks: Vec<parking_lot::Mutex<()>>,
    /// Replicas per table for the current ring and strategy versions.
    routes: routes::RouteCache,
}

/// Serves client reads and writes at a consistency level over the cluster,
/// and answers other coordinators' MUTATION / READ_DATA / READ_DIGEST
/// requests from the local engine. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("host_id", &self.inner.config.host_id)
            .finish_non_exhaustive()
    }
}

enum Event {
    WriteAck(HostId, bool),
    Read(HostId, Option<ReadResponse>),
    RepairAck(HostId, bool),
}

type Inflight = FuturesUnordered<BoxFuture<'static, Event>>;

fn join_error(e: tokio::task::JoinError) -> CoordinatorError {
    tracing::error!(error = %e, "storage task failed");
    CoordinatorError::Storage(gyre_storage::Error::Closed)
}

impl Coordinator {
    /// Builds the coordinator and registers its verb handlers on
    /// `messenger`. Must be called inside a Tokio runtime.
    pub fn new(
        config: CoordinatorConfig,
        messenger: Messenger,
        storage: Arc<dyn StorageEngine>,
        ring: Arc<RwLock<TokenMetadata>>,
        strategies: Arc<dyn StrategyProvider>,
        liveness: Arc<dyn Liveness>,
    ) -> Self {
        let runtime = Handle::current();
        if let Err(e) = batchlog::create_table(storage.as_ref()) {
            tracing::error!(error = %e, "cannot create the batchlog table; logged batches will fail");
        }
        if let Err(e) = crate::paxos::create_table(storage.as_ref()) {
            tracing::error!(error = %e, "cannot create the system.paxos table; lightweight transactions will fail");
        }
        let metrics = Arc::new(CoordinatorMetrics::default());
        let stage = Arc::new(ReplicaStage::new(config.max_replica_requests));
        let paxos = Arc::new(crate::paxos::PaxosReplica::default());
        paxos::register_handlers(&messenger, storage.clone(), paxos.clone(), stage.clone());
        register_handlers(
            &messenger,
            storage.clone(),
            runtime.clone(),
            metrics.clone(),
            stage.clone(),
            config.tombstone_failure_threshold,
        );
        Coordinator {
            inner: Arc::new(Inner {
                config,
                messenger,
                storage,
                ring,
                strategies,
                liveness,
                hints: None,
                hint_permits: Arc::new(tokio::sync::Semaphore::new(MAX_HINT_WRITES_IN_FLIGHT)),
                clock: Arc::new(SystemClock),
                timestamps: TimestampGenerator::new(SystemMicrosClock),
                runtime,
                latency: LatencyWindow::new(1000),
                host_latency: Default::default(),
                metrics,
                stage,
                paxos,
                counter_locks: (0..256).map(|_| parking_lot::Mutex::new(())).collect(),
                routes: routes::RouteCache::default(),
            }),
        }
    }

    /// Stores hints for replicas that miss writes in `store`. Call before
    /// cloning the coordinator.
    pub fn with_hints(mut self, store: Arc<HintStore>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.hints = Some(store),
            None => tracing::error!("with_hints called on a shared coordinator; ignored"),
        }
        self
    }

    /// The clock giving "now" (seconds) to reads, for TTL expiry. Call
    /// before cloning the coordinator.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.clock = clock,
            None => tracing::error!("with_clock called on a shared coordinator; ignored"),
        }
        self
    }

    /// A fresh write timestamp (strictly increasing on this coordinator).
    pub fn next_timestamp(&self) -> gyre_common::Timestamp {
        self.inner.timestamps.next()
    }

    /// Where requests spend their time (for `/metrics`).
    pub fn metrics(&self) -> Arc<CoordinatorMetrics> {
        self.inner.metrics.clone()
    }

    /// Admission of replica requests (its counters are in `/metrics`).
    pub fn replica_stage(&self) -> Arc<ReplicaStage> {
        self.inner.stage.clone()
    }

    pub fn messenger(&self) -> &Messenger {
        &self.inner.messenger
    }

    fn local(&self) -> HostId {
        self.inner.config.host_id
    }

    fn dc(&self) -> &str {
        &self.inner.config.dc
    }

    /// Orders replicas for a read: this node first (no network hop), then
    /// this datacenter, then by recent latency (unknown counts as fast so
    /// that every replica gets measured).
    fn by_proximity(&self, live: &mut [&Target]) {
        let lat = self.inner.host_latency.snapshot();
        let of = |t: &Target| HostLatencies::get(&lat, t.replica.host).unwrap_or(0.0);
        live.sort_by(|a, b| {
            let key = |t: &Target| (t.replica.host != self.local(), t.replica.dc != self.dc());
            key(a).cmp(&key(b)).then(of(a).total_cmp(&of(b)))
        });
    }

    fn record_latency(&self, host: HostId, d: Duration) {
        self.inner.host_latency.record(host, d);
    }

    /// Natural and pending replicas of `token` with their addresses.
    fn plan(
        &self,
        table: TableId,
        token: Token,
    ) -> Result<(ReplicationStrategy, Vec<Target>, Vec<Target>)> {
        if let Some(routes) = self.routes(table)? {
            let (mut natural, mut pending) = routes.targets(token);
            self.set_liveness(&mut natural);
            self.set_liveness(&mut pending);
            return Ok((routes.strategy.clone(), natural, pending));
        }
        let strategy =
            self.inner.strategies.strategy(table).ok_or_else(|| {
                CoordinatorError::InvalidRequest(format!("unknown table {table}"))
            })?;
        let (mut natural, mut pending) = {
            let ring = self.inner.ring.read();
            let to_targets = |hosts: Vec<HostId>| -> Vec<Target> {
                hosts
                    .into_iter()
                    .filter_map(|h| {
                        let Some(info) = ring.node(&h) else {
                            tracing::warn!(host = %h, "replica missing from token metadata");
                            return None;
                        };
                        Some(Target {
                            replica: Replica::new(h, info.dc.clone()),
                            addr: info.address,
                            alive: false,
                        })
                    })
                    .collect()
            };
            (
                to_targets(ring.replicas_for_token(&strategy, token)),
                to_targets(ring.pending_replicas_for_token(&strategy, token)),
            )
        };
        // Liveness is asked with the ring lock released: the failure
        // detector has locks of its own (taking them under this one could
        // deadlock with the gossip task, which updates the ring).
        self.set_liveness(&mut natural);
        self.set_liveness(&mut pending);
        Ok((strategy, natural, pending))
    }

    fn set_liveness(&self, targets: &mut [Target]) {
        for t in targets {
            let h = t.replica.host;
            t.alive = h == self.local() || self.inner.liveness.is_alive(h);
        }
    }

    /// Truncates `table` on every node of the ring; as in Cassandra, every
    /// node must be up (else `Unavailable` at ALL) and answer in time.
    pub async fn truncate(&self, table: TableId) -> Result<()> {
        let nodes: Vec<(HostId, SocketAddr)> = {
            let ring = self.inner.ring.read();
            ring.nodes().map(|n| (n.host_id, n.address)).collect()
        };
        let alive = nodes
            .iter()
            .filter(|(h, _)| *h == self.local() || self.inner.liveness.is_alive(*h))
            .count();
        if alive < nodes.len() {
            return Err(CoordinatorError::Unavailable {
                consistency: ConsistencyLevel::All,
                required: nodes.len(),
                alive,
            });
        }
        let storage = self.inner.storage.clone();
        self.inner
            .runtime
            .spawn_blocking(move || storage.truncate_table(table))
            .await
            .map_err(join_error)??;
        let mut acks = FuturesUnordered::new();
        for (h, addr) in nodes.into_iter().filter(|(h, _)| *h != self.local()) {
            let messenger = self.inner.messenger.clone();
            let timeout = self.inner.config.write_timeout;
            acks.push(async move {
                (
                    h,
                    messenger
                        .request(addr, TRUNCATE, encode_table(table), timeout)
                        .await,
                )
            });
        }
        let total = acks.len() + 1;
        let mut received = 1;
        while let Some((h, res)) = acks.next().await {
            match res {
                Ok(_) => received += 1,
                Err(e) => tracing::warn!(host = %h, error = %e, "truncate not acknowledged"),
            }
        }
        if received < total {
            return Err(CoordinatorError::WriteTimeout {
                consistency: ConsistencyLevel::All,
                received,
                block_for: total,
                write_type: WriteType::Simple,
            });
        }
        Ok(())
    }
}
