//! The node's side of replication: the coordinator wired to gossip (ring,
//! liveness), to the schema (replication strategies) and to the query layer
//! ([`ClusterData`]), plus schema exchange between nodes and hint delivery.
//!
//! Schema exchange: a DDL statement's rows are pushed to every node at once
//! ([`SCHEMA_PUSH`]); every node gossips its schema version, and a node that
//! sees a live peer with another version pulls that peer's whole schema
//! ([`SCHEMA_PULL`]) and merges it. Merging is last-write-wins per schema
//! cell, so concurrent changes converge to the same version everywhere.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use gyre_cluster::{AppStateKey, HostId, ReplicationStrategy};
use gyre_common::{DecoratedKey, LocalTime, Partition};
use gyre_coordinator::{
    Coordinator, CoordinatorError, Liveness, RateLimiter, SpeculativeRetry, StrategyProvider,
};
use gyre_net::{Inbound, Verb};
use gyre_protocol::{Consistency, ErrorKind, Event, EventSender, WriteType};
use gyre_query::{DataAccess, QueryError, QueryProcessor};
use gyre_schema::{Replication, SchemaRows};
use gyre_storage::{ReadFilter, ScanPage, ScanRequest, StorageEngine, TableId, TableOptions};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::node::{LivenessSnapshot, Shared};

/// A schema change's rows (JSON [`SchemaRows`]); answered (empty) once merged.
pub const SCHEMA_PUSH: Verb = Verb(0x0300);
/// Asks for the whole schema; the response is JSON [`SchemaRows`].
pub const SCHEMA_PULL: Verb = Verb(0x0301);

/// How often schema versions and pending hints are checked.
const SYNC_PERIOD: Duration = Duration::from_millis(250);
/// A peer that just answered a pull is not asked again before this.
const PULL_BACKOFF: Duration = Duration::from_secs(1);
/// How often this node's batchlog is checked for batches to replay.
const BATCHLOG_PERIOD: Duration = Duration::from_secs(10);
/// Hints of a host missing from the ring are only dropped once the ring had
/// time to be learned from gossip.
const HINT_GC_GRACE: Duration = Duration::from_secs(120);

/// A coordinator error as the CQL error it answers.
pub(crate) fn to_query_error(e: CoordinatorError) -> QueryError {
    let message = e.to_string();
    let kind = match e {
        CoordinatorError::Unavailable {
            consistency,
            required,
            alive,
        } => ErrorKind::Unavailable {
            consistency,
            required: required as i32,
            alive: alive as i32,
        },
        CoordinatorError::WriteTimeout {
            consistency,
            received,
            block_for,
            write_type,
        } => ErrorKind::WriteTimeout {
            consistency,
            received: received as i32,
            block_for: block_for as i32,
            write_type: match write_type {
                gyre_coordinator::WriteType::Simple => WriteType::Simple,
                gyre_coordinator::WriteType::Batch => WriteType::Batch,
                gyre_coordinator::WriteType::UnloggedBatch => WriteType::UnloggedBatch,
                gyre_coordinator::WriteType::Counter => WriteType::Counter,
                gyre_coordinator::WriteType::BatchLog => WriteType::BatchLog,
                gyre_coordinator::WriteType::Cas => WriteType::Cas,
                gyre_coordinator::WriteType::View => WriteType::View,
                gyre_coordinator::WriteType::Cdc => WriteType::Cdc,
            },
        },
        CoordinatorError::ReadTimeout {
            consistency,
            received,
            block_for,
            data_present,
        } => ErrorKind::ReadTimeout {
            consistency,
            received: received as i32,
            block_for: block_for as i32,
            data_present,
        },
        CoordinatorError::ReadFailure {
            consistency,
            received,
            block_for,
            failures,
            data_present,
        } => ErrorKind::ReadFailure {
            consistency,
            received: received as i32,
            block_for: block_for as i32,
            num_failures: failures.len() as i32,
            reasons: failures,
            data_present,
        },
        CoordinatorError::InvalidRequest(m) => return QueryError::Invalid(m),
        CoordinatorError::Storage(_) => return QueryError::Server(message),
    };
    QueryError::Cluster { kind, message }
}

/// The replication strategy of a schema keyspace (`None` for node-local
/// keyspaces, which are never coordinated).
pub(crate) fn strategy_of(r: &Replication) -> Option<ReplicationStrategy> {
    match r {
        Replication::Simple { replication_factor } => {
            Some(ReplicationStrategy::simple(*replication_factor as usize))
        }
        Replication::NetworkTopology(dcs) => Some(ReplicationStrategy::network_topology(
            dcs.iter().map(|(dc, rf)| (dc.clone(), *rf as usize)),
        )),
        Replication::Local => None,
    }
}

/// Strategies from the query processor's schema (weak: the processor owns
/// the data access that owns the coordinator).
pub(crate) struct SchemaStrategies(pub OnceLock<Weak<QueryProcessor>>);

impl StrategyProvider for SchemaStrategies {
    fn strategy(&self, table: TableId) -> Option<ReplicationStrategy> {
        let qp = self.0.get()?.upgrade()?;
        strategy_of(&qp.replication_of(table)?)
    }

    /// The schema epoch: every schema change (ALTER KEYSPACE among them)
    /// moves it, so cached replicas are rebuilt.
    fn version(&self, _table: TableId) -> Option<u64> {
        Some(self.0.get()?.upgrade()?.schema_epoch())
    }

    fn speculative_retry(&self, table: TableId) -> SpeculativeRetry {
        self.0
            .get()
            .and_then(Weak::upgrade)
            .and_then(|qp| qp.table_option(table, |o| o.speculative_retry.clone()))
            .and_then(|t| SpeculativeRetry::parse(&t))
            .unwrap_or_default()
    }
}

/// Liveness as this node's failure detector sees it: the snapshot that
/// the gossip task publishes on every change, read with no lock (neither
/// the ring view's nor gossip's) for every replica of every request.
pub(crate) struct GossipLiveness(Arc<ArcSwap<LivenessSnapshot>>);

impl GossipLiveness {
    pub(crate) fn new(shared: &Shared) -> Self {
        GossipLiveness(shared.liveness.clone())
    }
}

impl Liveness for GossipLiveness {
    fn is_alive(&self, host: HostId) -> bool {
        self.0.load().live.contains(&host)
    }

    fn down_for(&self, host: HostId) -> Option<Duration> {
        self.0.load().down_since.get(&host).map(|s| s.elapsed())
    }
}

/// [`DataAccess`] through the coordinator: reads and writes at the
/// client's consistency level across the replicas, awaited on the CQL
/// connection's task. Storage tables are created and dropped per node
/// (each node applies schema changes itself); TRUNCATE reaches every node.
pub(crate) struct ClusterData {
    pub engine: Arc<dyn StorageEngine>,
    pub coordinator: OnceLock<Coordinator>,
}

impl ClusterData {
    fn coordinator(&self) -> gyre_query::Result<&Coordinator> {
        self.coordinator
            .get()
            .ok_or_else(|| QueryError::Server("the node is still starting".into()))
    }
}

/// Runs `f` to completion from synchronous code: the schema listener, which
/// DDL calls on the blocking pool (schema changes are not on the data
/// path). On a runtime worker, where `block_on` would panic, it steps aside
/// first.
fn block_on<F: std::future::Future>(rt: &Handle, f: F) -> F::Output {
    let on_worker = std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("tokio-runtime-worker"));
    if on_worker {
        tokio::task::block_in_place(|| rt.block_on(f))
    } else {
        rt.block_on(f)
    }
}

#[async_trait::async_trait]
impl DataAccess for ClusterData {
    fn create_table(&self, table: TableId, options: TableOptions) -> gyre_query::Result<()> {
        Ok(self.engine.create_table(table, options)?)
    }

    fn drop_table(&self, table: TableId) -> gyre_query::Result<()> {
        Ok(self.engine.drop_table(table)?)
    }

    async fn truncate_table(&self, table: TableId) -> gyre_query::Result<()> {
        let c = self.coordinator()?;
        c.truncate(table).await.map_err(to_query_error)
    }

    async fn apply(
        &self,
        table: TableId,
        update: Partition,
        cl: Consistency,
    ) -> gyre_query::Result<()> {
        let c = self.coordinator()?;
        c.write(table, update, cl).await.map_err(to_query_error)
    }

    async fn apply_batch(
        &self,
        updates: Vec<(TableId, Partition)>,
        cl: Consistency,
        logged: bool,
    ) -> gyre_query::Result<()> {
        let c = self.coordinator()?;
        c.write_batch(updates, cl, logged)
            .await
            .map_err(to_query_error)
    }

    async fn read(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        _now: LocalTime,
        cl: Consistency,
    ) -> gyre_query::Result<Option<Partition>> {
        let c = self.coordinator()?;
        if cl.is_serial() {
            // A SERIAL read is a Paxos round (it finishes what is in progress).
            return c
                .serial_read(table, key, filter.clone(), cl)
                .await
                .map_err(to_query_error);
        }
        c.read(table, key, filter.clone(), cl)
            .await
            .map_err(to_query_error)
    }

    async fn apply_counter(
        &self,
        table: TableId,
        deltas: Partition,
        cl: Consistency,
    ) -> gyre_query::Result<()> {
        let c = self.coordinator()?;
        c.counter_write(table, deltas, cl)
            .await
            .map_err(to_query_error)
    }

    async fn cas(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        _now: LocalTime,
        serial: Consistency,
        commit: Consistency,
        decide: gyre_query::CasDecide<'_>,
    ) -> gyre_query::Result<gyre_query::CasResult> {
        let c = self.coordinator()?;
        let o = c
            .cas(table, key, filter.clone(), serial, commit, decide)
            .await
            .map_err(to_query_error)?;
        Ok(gyre_query::CasResult {
            applied: o.applied,
            current: o.current,
        })
    }

    async fn scan(
        &self,
        table: TableId,
        request: &ScanRequest,
        now: LocalTime,
        cl: Consistency,
    ) -> gyre_query::Result<ScanPage> {
        if cl.is_serial() {
            return Err(gyre_query::QueryError::Invalid(
                "SERIAL/LOCAL_SERIAL consistency may only be requested for one partition at a time"
                    .into(),
            ));
        }
        let c = self.coordinator()?;
        c.scan(table, request.clone(), now, cl)
            .await
            .map_err(to_query_error)
    }
}

/// Publishes a new local schema version in gossip.
fn advertise(shared: &Shared, version: uuid::Uuid) {
    shared.set_local_state(AppStateKey::Schema, version.to_string());
}

/// The cluster's datacenters for the query processor (NetworkTopologyStrategy's
/// `replication_factor`): this node's and those of the nodes in the ring.
pub(crate) fn datacenter_source(shared: Weak<Shared>) -> gyre_query::DatacenterSource {
    Box::new(move || {
        let Some(shared) = shared.upgrade() else {
            return Vec::new();
        };
        let mut dcs: Vec<String> = shared
            .ring_view
            .read()
            .nodes()
            .map(|n| n.dc.clone())
            .collect();
        dcs.push(shared.cfg.cluster.datacenter.clone());
        dcs.sort();
        dcs.dedup();
        dcs
    })
}

/// The listener the query processor calls after local DDL: advertise the
/// version, push the change's rows to every other node and wait (bounded by
/// the write timeout) until every live peer has merged them. Answering the
/// client only then closes a race the drivers cannot see: their schema
/// agreement check compares gossiped versions, which may all still show the
/// old schema for a moment, so a statement that follows the DDL on another
/// node could otherwise miss it. Peers that do not answer in time catch up
/// by pulling once they see our version.
pub(crate) fn schema_listener(shared: Weak<Shared>) -> gyre_query::SchemaListener {
    let rt = Handle::current();
    Box::new(move |rows: &SchemaRows, version| {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        advertise(&shared, version);
        let payload = match serde_json::to_vec(rows) {
            Ok(p) => Bytes::from(p),
            Err(e) => {
                warn!(error = %e, "cannot encode schema rows");
                return;
            }
        };
        let others: Vec<_> = shared
            .ring_view
            .read()
            .nodes()
            .map(|n| n.address)
            .filter(|a| *a != shared.local)
            .collect();
        let peers: Vec<_> = {
            let core = shared.core.lock();
            others
                .into_iter()
                .filter(|a| core.gossiper.is_alive(a))
                .collect()
        };
        if peers.is_empty() {
            return;
        }
        let timeout = Duration::from_millis(shared.cfg.timeouts.write_request_ms);
        let pushes = peers.into_iter().map(|to| {
            let (messenger, payload) = (shared.messenger.clone(), payload.clone());
            async move {
                if let Err(e) = messenger.request(to, SCHEMA_PUSH, payload, timeout).await {
                    debug!(%to, error = %e, "schema push not acknowledged; the peer will pull");
                }
            }
        });
        block_on(&rt, futures::future::join_all(pushes));
    })
}

/// Merges rows from a peer on the blocking pool, then advertises the new
/// version and tells CQL clients what changed.
async fn merge_from_peer(
    shared: &Arc<Shared>,
    qp: &Arc<QueryProcessor>,
    events: &EventSender,
    rows: SchemaRows,
) {
    let q = qp.clone();
    let res = tokio::task::spawn_blocking(move || q.merge_schema(rows)).await;
    match res {
        Ok(Ok(changes)) => {
            // Even a merge that changes nothing a client sees (an ALTER to
            // the same options) moves the version: advertise it, or the
            // drivers' schema agreement waits for this node in vain.
            advertise(shared, qp.schema_version());
            for c in changes {
                events.send(Event::SchemaChange(c));
            }
        }
        Ok(Err(e)) => warn!(error = %e, "could not merge a peer's schema"),
        Err(e) => warn!(error = %e, "schema merge task failed"),
    }
}

/// Registers the schema verbs: pushes are merged, pulls answered with the
/// whole schema.
pub(crate) fn register_schema_verbs(
    shared: &Arc<Shared>,
    qp: &Arc<QueryProcessor>,
    events: &EventSender,
) {
    let (s, q, ev) = (shared.clone(), qp.clone(), events.clone());
    let rt = Handle::current();
    shared.messenger.register(SCHEMA_PUSH, move |msg: Inbound| {
        let rows: SchemaRows = match serde_json::from_slice(&msg.payload) {
            Ok(r) => r,
            Err(e) => {
                warn!(from = %msg.from, error = %e, "undecodable schema push");
                return;
            }
        };
        let (s, q, ev) = (s.clone(), q.clone(), ev.clone());
        rt.spawn(async move {
            merge_from_peer(&s, &q, &ev, rows).await;
            // Acknowledged once merged (or found not newer), so the pusher
            // knows this node has the change.
            if let Some(responder) = msg.responder {
                if let Err(e) = responder.respond(Bytes::new()) {
                    debug!(error = %e, "could not acknowledge a schema push");
                }
            }
        });
    });
    let q = qp.clone();
    shared.messenger.register(SCHEMA_PULL, move |msg: Inbound| {
        let Some(responder) = msg.responder else {
            return;
        };
        let sent = match serde_json::to_vec(q.schema().rows()) {
            Ok(p) => responder.respond(Bytes::from(p)),
            Err(e) => responder.respond_error(e.to_string()),
        };
        if let Err(e) = sent {
            debug!(error = %e, "could not answer a schema pull");
        }
    });
}

/// Background duties: pull the schema from live peers that advertise a
/// different version, and deliver stored hints to live nodes (throttled).
pub(crate) async fn sync_loop(
    shared: Arc<Shared>,
    qp: Arc<QueryProcessor>,
    coordinator: Coordinator,
    events: EventSender,
    hint_throttle_bytes: u64,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let mut last_pull: HashMap<std::net::SocketAddr, Instant> = HashMap::new();
    let mut limiter = RateLimiter::new(
        hint_throttle_bytes.max(1),
        hint_throttle_bytes.max(1),
        Instant::now(),
    );
    let mut hints_running: Option<tokio::task::JoinHandle<RateLimiter>> = None;
    let mut next_batchlog = Instant::now() + BATCHLOG_PERIOD;
    // Cassandra: a batch is overdue after twice the write timeout.
    let batch_age = Duration::from_millis(shared.cfg.timeouts.write_request_ms.saturating_mul(2));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SYNC_PERIOD) => {}
            _ = stop.changed() => return,
        }
        // Schema: one pull per round, from a live peer that disagrees.
        let mine = qp.schema_version();
        let candidate = {
            let core = shared.core.lock();
            let candidate = core
                .gossiper
                .endpoint_states()
                .filter(|(ep, _)| **ep != shared.local && core.gossiper.is_alive(ep))
                .filter_map(|(ep, st)| st.schema().map(|v| (*ep, v)))
                .find(|(ep, v)| {
                    *v != mine
                        && last_pull
                            .get(ep)
                            .is_none_or(|t| t.elapsed() >= PULL_BACKOFF)
                })
                .map(|(ep, _)| ep);
            candidate
        };
        if let Some(ep) = candidate {
            last_pull.insert(ep, Instant::now());
            let timeout = Duration::from_millis(shared.cfg.timeouts.request_ms);
            match shared
                .messenger
                .request(ep, SCHEMA_PULL, Bytes::new(), timeout)
                .await
            {
                Ok(b) => match serde_json::from_slice::<SchemaRows>(&b) {
                    Ok(rows) => {
                        debug!(peer = %ep, "pulled schema");
                        merge_from_peer(&shared, &qp, &events, rows).await;
                    }
                    Err(e) => warn!(peer = %ep, error = %e, "undecodable schema from peer"),
                },
                Err(e) => debug!(peer = %ep, error = %e, "schema pull failed"),
            }
        }
        if Instant::now() >= next_batchlog {
            next_batchlog = Instant::now() + BATCHLOG_PERIOD;
            match coordinator.replay_batchlog(batch_age).await {
                Ok(0) => {}
                Ok(n) => info!(batches = n, "batchlog replayed"),
                Err(e) => warn!(error = %e, "batchlog replay failed"),
            }
        }
        // Hints: one delivery pass at a time, in the background.
        if let Some(h) = &hints_running {
            if !h.is_finished() {
                continue;
            }
        }
        if let Some(h) = hints_running.take() {
            if let Ok(l) = h.await {
                limiter = l;
            }
        }
        let c = coordinator.clone();
        let s = shared.clone();
        let mut l = limiter.clone();
        let gc = started.elapsed() > HINT_GC_GRACE;
        hints_running = Some(tokio::spawn(async move {
            deliver_all(&s, &c, &mut l, gc).await;
            l
        }));
    }
}

/// Delivers the hints of every live host that has some; drops those of
/// hosts no longer in the ring.
async fn deliver_all(shared: &Arc<Shared>, c: &Coordinator, limiter: &mut RateLimiter, gc: bool) {
    let hosts = match c.hinted_hosts() {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "cannot list hints");
            return;
        }
    };
    let liveness = GossipLiveness::new(shared);
    for host in hosts {
        let known = shared.ring_view.read().node(&host).is_some();
        if !known {
            if gc {
                info!(%host, "dropping hints of a node that left the ring");
                if let Err(e) = c.drop_hints(host) {
                    warn!(%host, error = %e, "cannot drop hints");
                }
            }
            continue;
        }
        if !liveness.is_alive(host) {
            continue;
        }
        match c.deliver_hints_throttled(host, limiter).await {
            Ok(0) => {}
            Ok(n) => info!(%host, delivered = n, "hints delivered"),
            Err(e) => warn!(%host, error = %e, "hint delivery failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_reads_the_latest_published_snapshot() {
        let (a, b) = (HostId::from_u128(1), HostId::from_u128(2));
        let snapshot = Arc::new(ArcSwap::from_pointee(LivenessSnapshot {
            live: [a, b].into_iter().collect(),
            down_since: Default::default(),
        }));
        let liveness = GossipLiveness(snapshot.clone());
        assert!(liveness.is_alive(a) && liveness.is_alive(b));
        assert_eq!(liveness.down_for(b), None);
        // Gossip publishes b DOWN: the next request sees it, no lock taken.
        let since = std::time::Instant::now();
        snapshot.store(Arc::new(LivenessSnapshot {
            live: [a].into_iter().collect(),
            down_since: [(b, since)].into_iter().collect(),
        }));
        assert!(liveness.is_alive(a) && !liveness.is_alive(b));
        assert!(liveness.down_for(b).is_some_and(|d| d <= since.elapsed()));
        assert!(!liveness.is_alive(HostId::from_u128(3)), "unknown host");
    }
}
