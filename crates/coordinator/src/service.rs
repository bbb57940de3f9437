//! The coordinator service: the state machines of this crate driven over
//! gyre-net, with the local storage engine as one of the replicas.

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
    BATCH_STORE, MUTATION, READ_DATA, READ_DIGEST, READ_RANGE, TRUNCATE,
};
use crate::metrics::{apply_local, CoordinatorMetrics};
use crate::range::{append_partition, merge_range_pages, min_end, past_end, start_token};
use crate::read::{digest, ReadAction, ReadResponse, ReadTracker};
use crate::speculation::{HostLatencies, LatencyWindow, SpeculativeRetry};
use crate::stage::{ReplicaStage, DEFAULT_MAX_REPLICA_REQUESTS};
use crate::timestamp::{SystemMicrosClock, TimestampGenerator};
use crate::write::{WriteOutcome, WriteTracker};
use crate::{batchlog, messages};

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
}

impl CoordinatorConfig {
    pub fn new(host_id: HostId, dc: impl Into<String>) -> Self {
        CoordinatorConfig {
            host_id,
            dc: dc.into(),
            write_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
            max_replica_requests: DEFAULT_MAX_REPLICA_REQUESTS,
        }
    }
}

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
        let metrics = Arc::new(CoordinatorMetrics::default());
        let stage = Arc::new(ReplicaStage::new(config.max_replica_requests));
        register_handlers(
            &messenger,
            storage.clone(),
            runtime.clone(),
            metrics.clone(),
            stage.clone(),
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
                clock: Arc::new(SystemClock),
                timestamps: TimestampGenerator::new(SystemMicrosClock),
                runtime,
                latency: LatencyWindow::new(1000),
                host_latency: Default::default(),
                metrics,
                stage,
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

    /// Sends `m` to one replica (this node: applied now, on this worker,
    /// since commitlog buffer and memtable are CPU work; the future only
    /// awaits durability). Remote replicas get the encoding made once for
    /// every replica. True once acknowledged.
    fn send_mutation(
        &self,
        host: HostId,
        addr: SocketAddr,
        m: &Mutation,
    ) -> BoxFuture<'static, bool> {
        if host == self.local() {
            let durable = apply_local(self.inner.storage.as_ref(), &self.inner.metrics, m.clone());
            return async move {
                match durable.await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "local mutation failed");
                        false
                    }
                }
            }
            .boxed();
        }
        let messenger = self.inner.messenger.clone();
        let timeout = self.inner.config.write_timeout;
        let payload = m.encoded().clone();
        async move {
            match messenger.request(addr, MUTATION, payload, timeout).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(%host, error = %e, "mutation not acknowledged");
                    false
                }
            }
        }
        .boxed()
    }

    fn send_read(
        &self,
        host: HostId,
        addr: SocketAddr,
        cmd: ReadCommand,
        want_digest: bool,
    ) -> BoxFuture<'static, Event> {
        if host == self.local() {
            // Read inline: memtables and page-cached SSTables are CPU work.
            let resp = match self
                .inner
                .storage
                .read(cmd.table, &cmd.key, &cmd.filter, cmd.now)
            {
                Ok(p) if want_digest => Some(ReadResponse::Digest(digest(p.as_ref()))),
                Ok(p) => Some(ReadResponse::Data(p)),
                Err(e) => {
                    tracing::warn!(error = %e, "local read failed");
                    None
                }
            };
            return futures::future::ready(Event::Read(host, resp)).boxed();
        }
        let messenger = self.inner.messenger.clone();
        let timeout = self.inner.config.read_timeout;
        let payload = encode_read(&cmd);
        let verb = if want_digest { READ_DIGEST } else { READ_DATA };
        async move {
            let resp = match messenger.request(addr, verb, payload, timeout).await {
                Ok(b) if want_digest => decode_digest(&b).map(ReadResponse::Digest),
                Ok(b) => match decode_data(&b) {
                    Ok(p) => Some(ReadResponse::Data(p)),
                    Err(e) => {
                        tracing::warn!(%host, error = %e, "malformed read response");
                        None
                    }
                },
                Err(e) => {
                    tracing::debug!(%host, error = %e, "read request failed");
                    None
                }
            };
            Event::Read(host, resp)
        }
        .boxed()
    }

    /// Stores a hint for `target` if there is a hint store and the target
    /// is inside the hint window. True when stored.
    async fn hint(&self, target: HostId, table: TableId, mutation: Partition) -> bool {
        let Some(store) = self.inner.hints.clone() else {
            return false;
        };
        let down_for = self.inner.liveness.down_for(target).unwrap_or_default();
        let hint = Hint {
            target,
            table,
            mutation,
            write_time: self.inner.timestamps.next(),
        };
        let task = self
            .inner
            .runtime
            .spawn_blocking(move || store.store_for_down_host(hint, down_for));
        match task.await {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                tracing::error!(%target, error = %e, "could not store hint");
                false
            }
            Err(e) => {
                join_error(e);
                false
            }
        }
    }

    /// Writes `update` to every replica of its key and waits for `cl`.
    pub async fn write(
        &self,
        table: TableId,
        update: Partition,
        cl: ConsistencyLevel,
    ) -> Result<()> {
        self.write_with_type(table, update, cl, WriteType::Simple)
            .await
    }

    pub async fn write_with_type(
        &self,
        table: TableId,
        update: Partition,
        cl: ConsistencyLevel,
        write_type: WriteType,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let res = self.write_unmeasured(table, update, cl, write_type).await;
        self.inner.metrics.write.record(started.elapsed());
        res
    }

    async fn write_unmeasured(
        &self,
        table: TableId,
        update: Partition,
        cl: ConsistencyLevel,
        write_type: WriteType,
    ) -> Result<()> {
        cl.validate_for_write()?;
        let (strategy, natural, pending) = self.plan(table, update.key.token)?;
        let live = |ts: &[Target]| -> Vec<Replica> {
            ts.iter()
                .filter(|t| t.alive)
                .map(|t| t.replica.clone())
                .collect()
        };
        cl.assure_sufficient_live(&strategy, self.dc(), &live(&natural), &live(&pending))?;
        // Fast path: this node is the only replica (and none is pending):
        // apply and await durability, no tracker, timer or task.
        if pending.is_empty() {
            if let [only] = natural.as_slice() {
                if only.replica.host == self.local() {
                    let durable = apply_local(
                        self.inner.storage.as_ref(),
                        &self.inner.metrics,
                        Mutation::new(table, update),
                    );
                    return Ok(durable.await?);
                }
            }
        }
        let mut tracker = WriteTracker::new(
            cl,
            &strategy,
            self.dc(),
            natural.iter().map(|t| t.replica.clone()).collect(),
            pending.iter().map(|t| t.replica.clone()).collect(),
            write_type,
        )?;
        let deadline = Instant::now() + self.inner.config.write_timeout;
        // Encoded once: the same bytes go to every replica's commitlog.
        let m = Mutation::new(table, update);
        let inflight: Inflight = FuturesUnordered::new();
        let mut dead = Vec::new();
        for t in natural.iter().chain(&pending) {
            let host = t.replica.host;
            if t.alive {
                inflight.push(
                    self.send_mutation(host, t.addr, &m)
                        .map(move |ok| Event::WriteAck(host, ok))
                        .boxed(),
                );
            } else {
                dead.push(host);
            }
        }
        let mut inflight = inflight;
        for host in dead {
            if self.hint(host, table, m.update().clone()).await {
                tracker.hint_stored(host);
            }
        }
        while !tracker.is_complete() {
            match timeout_at(deadline, inflight.next()).await {
                Ok(Some(Event::WriteAck(host, true))) => {
                    tracker.ack(host);
                }
                Ok(Some(Event::WriteAck(host, false))) => {
                    if self.hint(host, table, m.update().clone()).await {
                        tracker.hint_stored(host);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let outcome = if tracker.is_complete() {
            WriteOutcome::Success
        } else {
            tracker.timeout()
        };
        if let WriteOutcome::Timeout(e) = &outcome {
            tracing::debug!(error = %e, "write timed out");
        }
        // Replicas still owing an answer: hint those that fail or time out.
        if !inflight.is_empty() {
            let this = self.clone();
            tokio::spawn(async move {
                while let Some(ev) = inflight.next().await {
                    if let Event::WriteAck(host, false) = ev {
                        this.hint(host, table, m.update().clone()).await;
                    }
                }
            });
        }
        outcome.into_result()
    }

    /// Reads one partition at `cl`: digest reads, full reads and blocking
    /// read repair on a mismatch, short-read protection with a row limit.
    /// The result is in storage read-result form (tombstones in the
    /// selection kept; `gyre_common::lww::live_view` gives the client view).
    pub async fn read(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: ReadFilter,
        cl: ConsistencyLevel,
    ) -> Result<Option<Partition>> {
        let started = std::time::Instant::now();
        let res = self.read_unmeasured(table, key, filter, cl).await;
        self.inner.metrics.read.record(started.elapsed());
        res
    }

    async fn read_unmeasured(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: ReadFilter,
        cl: ConsistencyLevel,
    ) -> Result<Option<Partition>> {
        cl.validate_for_read()?;
        let (strategy, natural, _) = self.plan(table, key.token)?;
        let mut live: Vec<&Target> = natural.iter().filter(|t| t.alive).collect();
        // Proximity: this node first (no network hop), then its DC.
        self.by_proximity(&mut live);
        let live_replicas: Vec<Replica> = live.iter().map(|t| t.replica.clone()).collect();
        let contacted = cl.filter_for_read(&strategy, self.dc(), &live_replicas)?;
        let now = self.inner.clock.now();
        // Fast path: one replica asked, and it is this node (CL ONE /
        // LOCAL_ONE on a replica): no tracker, timer, digest or task.
        if let [only] = contacted.as_slice() {
            if only.host == self.local() {
                return Ok(self.inner.storage.read(table, key, &filter, now)?);
            }
        }
        let addr_of = |h: HostId| natural.iter().find(|t| t.replica.host == h).map(|t| t.addr);
        let mut tracker =
            ReadTracker::new(cl, &strategy, self.dc(), contacted, filter.clone(), now)?;
        let cmd = ReadCommand {
            table,
            key: key.clone(),
            filter,
            now,
        };
        let mut inflight: Inflight = FuturesUnordered::new();
        let data = tracker.data_replica();
        if let Some(a) = addr_of(data) {
            inflight.push(self.send_read(data, a, cmd.clone(), false));
        }
        for h in tracker.digest_replicas() {
            if let Some(a) = addr_of(h) {
                inflight.push(self.send_read(h, a, cmd.clone(), true));
            }
        }
        let started = Instant::now();
        let deadline = started + self.inner.config.read_timeout;
        // Speculative retry: a live replica not asked yet, asked once the
        // read is slower than the table's threshold.
        let policy = self.inner.strategies.speculative_retry(table);
        let mut spare = live
            .iter()
            .find(|t| {
                !tracker.digest_replicas().contains(&t.replica.host) && t.replica.host != data
            })
            .map(|t| (t.replica.clone(), t.addr));
        let mut speculate_at = self
            .inner
            .latency
            .threshold(policy)
            .filter(|_| spare.is_some())
            .map(|d| started + d);
        let result = loop {
            let wake = speculate_at.map_or(deadline, |s| s.min(deadline));
            let action = match timeout_at(wake, inflight.next()).await {
                Err(_) if Instant::now() < deadline => {
                    speculate_at = None;
                    if let Some((r, a)) = spare.take() {
                        let h = r.host;
                        if tracker.speculate(r) {
                            tracing::debug!(host = %h, "speculative read");
                            inflight.push(self.send_read(h, a, cmd.clone(), false));
                        }
                    }
                    continue;
                }
                Ok(Some(Event::Read(h, Some(resp)))) => {
                    if h != self.local() {
                        self.inner.latency.record(started.elapsed());
                        self.record_latency(h, started.elapsed());
                    }
                    tracker.on_response(h, resp)
                }
                Ok(Some(Event::RepairAck(h, true))) => tracker.repair_acked(h),
                Ok(Some(_)) => ReadAction::Wait,
                Ok(None) | Err(_) => break tracker.timeout(),
            };
            match action {
                ReadAction::Wait => {}
                ReadAction::Done(p) => break Ok(p),
                ReadAction::RequestData(reqs) => {
                    for (h, f) in reqs {
                        if let Some(a) = addr_of(h) {
                            let c = ReadCommand {
                                filter: f,
                                ..cmd.clone()
                            };
                            inflight.push(self.send_read(h, a, c, false));
                        }
                    }
                }
                ReadAction::Repair(repairs) => {
                    for (h, m) in repairs {
                        if let Some(a) = addr_of(h) {
                            tracing::debug!(host = %h, "sending read repair");
                            inflight.push(
                                self.send_mutation(h, a, &Mutation::new(table, m))
                                    .map(move |ok| Event::RepairAck(h, ok))
                                    .boxed(),
                            );
                        }
                    }
                    if let Some(answer) = tracker.answer() {
                        break Ok(answer);
                    }
                }
            }
        };
        // Let outstanding repairs go out even though the answer is known.
        if !inflight.is_empty() {
            tokio::spawn(async move { while inflight.next().await.is_some() {} });
        }
        result
    }

    /// Reads a page of a token range at `cl`: walks the ring from
    /// `request.start` in token order, asks each range's replicas (as many
    /// as `cl` needs) for a page, reconciles their answers, repairs the
    /// replicas that were behind, and goes on to the next range until
    /// `request.max_rows` live rows are collected or `request.end` is
    /// reached. The resume position continues exactly where the answer
    /// stops.
    pub async fn scan(
        &self,
        table: TableId,
        request: ScanRequest,
        now: LocalTime,
        cl: ConsistencyLevel,
    ) -> Result<ScanPage> {
        let started = std::time::Instant::now();
        let res = self.scan_unmeasured(table, request, now, cl).await;
        self.inner.metrics.range.record(started.elapsed());
        res
    }

    async fn scan_unmeasured(
        &self,
        table: TableId,
        request: ScanRequest,
        now: LocalTime,
        cl: ConsistencyLevel,
    ) -> Result<ScanPage> {
        cl.validate_for_read()?;
        let strategy =
            self.inner.strategies.strategy(table).ok_or_else(|| {
                CoordinatorError::InvalidRequest(format!("unknown table {table}"))
            })?;
        let mut out: Vec<Partition> = Vec::new();
        let mut live = 0usize;
        let mut start = request.start.clone();
        loop {
            if past_end(&start, &request.end) {
                return Ok(ScanPage {
                    partitions: out,
                    resume: None,
                });
            }
            let (group_end, targets) = self.plan_range(&strategy, &start);
            let end = min_end(group_end, request.end);
            let sub = ScanRequest {
                start: start.clone(),
                end,
                filter: request.filter.clone(),
                max_rows: request.max_rows.saturating_sub(live).max(1),
            };
            let page = self
                .scan_replicas(table, &strategy, cl, targets, sub, now)
                .await?;
            for p in page.partitions {
                live += live_row_count(&p, now);
                append_partition(&mut out, p);
            }
            let next = match page.resume {
                Some(cut) => cut,
                None => match end {
                    Bound::Unbounded => {
                        return Ok(ScanPage {
                            partitions: out,
                            resume: None,
                        })
                    }
                    Bound::Included(t) => ScanStart::Token(Bound::Excluded(t)),
                    Bound::Excluded(t) => ScanStart::Token(Bound::Included(t)),
                },
            };
            if live >= request.max_rows {
                let resume = (!past_end(&next, &request.end)).then_some(next);
                return Ok(ScanPage {
                    partitions: out,
                    resume,
                });
            }
            start = next;
        }
    }

    /// The end of the ring segment a scan from `start` asks in one request
    /// (consecutive vnode ranges with the same replicas; with as many
    /// replicas as nodes, the whole rest of the ring) and its replicas.
    fn plan_range(
        &self,
        strategy: &ReplicationStrategy,
        start: &ScanStart,
    ) -> (Bound<Token>, Vec<Target>) {
        let ring = self.inner.ring.read();
        let tokens = ring.ring();
        let (t, excluded) = start_token(start);
        let first = if excluded {
            tokens.partition_point(|(x, _)| *x <= t)
        } else {
            tokens.partition_point(|(x, _)| *x < t)
        };
        let replicas_of = |tok: Token| -> Vec<HostId> {
            let mut r = ring.replicas_for_token(strategy, tok);
            r.sort();
            r
        };
        let (end, hosts) = if tokens.is_empty() {
            (Bound::Unbounded, Vec::new())
        } else if first == tokens.len() {
            // Past the last token: the wrap-around range, owned like the first.
            (Bound::Unbounded, replicas_of(tokens[0].0))
        } else {
            let hosts = replicas_of(tokens[first].0);
            let mut i = first;
            while i + 1 < tokens.len() && replicas_of(tokens[i + 1].0) == hosts {
                i += 1;
            }
            let end = if i + 1 == tokens.len() && replicas_of(tokens[0].0) == hosts {
                Bound::Unbounded
            } else {
                Bound::Included(tokens[i].0)
            };
            (end, hosts)
        };
        let mut targets: Vec<Target> = hosts
            .into_iter()
            .filter_map(|h| {
                let info = ring.node(&h)?;
                Some(Target {
                    replica: Replica::new(h, info.dc.clone()),
                    addr: info.address,
                    alive: false,
                })
            })
            .collect();
        drop(ring);
        self.set_liveness(&mut targets);
        (end, targets)
    }

    /// One range request to the replicas `cl` needs, reconciled, with the
    /// stale ones repaired before answering.
    async fn scan_replicas(
        &self,
        table: TableId,
        strategy: &ReplicationStrategy,
        cl: ConsistencyLevel,
        targets: Vec<Target>,
        request: ScanRequest,
        now: LocalTime,
    ) -> Result<ScanPage> {
        let mut live: Vec<&Target> = targets.iter().filter(|t| t.alive).collect();
        self.by_proximity(&mut live);
        let live_replicas: Vec<Replica> = live.iter().map(|t| t.replica.clone()).collect();
        let contacted = cl.filter_for_read(strategy, self.dc(), &live_replicas)?;
        let block_for = contacted.len();
        let addr_of = |h: HostId| targets.iter().find(|t| t.replica.host == h).map(|t| t.addr);
        let cmd = RangeCommand {
            table,
            request,
            now,
        };
        let mut inflight: FuturesUnordered<BoxFuture<'static, (HostId, Option<ScanPage>)>> =
            FuturesUnordered::new();
        for r in &contacted {
            if let Some(a) = addr_of(r.host) {
                inflight.push(self.send_range(r.host, a, cmd.clone()));
            }
        }
        let deadline = Instant::now() + self.inner.config.read_timeout;
        let mut pages: Vec<(HostId, ScanPage)> = Vec::new();
        while pages.len() < block_for {
            match timeout_at(deadline, inflight.next()).await {
                Ok(Some((h, Some(p)))) => pages.push((h, p)),
                Ok(Some((_, None))) => {}
                Ok(None) | Err(_) => {
                    return Err(CoordinatorError::ReadTimeout {
                        consistency: cl,
                        received: pages.len(),
                        block_for,
                        data_present: !pages.is_empty(),
                    })
                }
            }
        }
        let hosts: Vec<HostId> = pages.iter().map(|(h, _)| *h).collect();
        let merged = merge_range_pages(pages.into_iter().map(|(_, p)| p).collect());
        let mut repairs: Inflight = FuturesUnordered::new();
        for (i, muts) in merged.repairs {
            let h = hosts[i];
            let Some(a) = addr_of(h) else { continue };
            for m in muts {
                tracing::debug!(host = %h, "range read repair");
                repairs.push(
                    self.send_mutation(h, a, &Mutation::new(table, m))
                        .map(move |ok| Event::RepairAck(h, ok))
                        .boxed(),
                );
            }
        }
        // Blocking read repair: the answer is only given once the replicas
        // that were behind hold it (or the timeout passed; then they are
        // repaired by the next read).
        while let Ok(Some(_)) = timeout_at(deadline, repairs.next()).await {}
        Ok(ScanPage {
            partitions: merged.partitions,
            resume: merged.cut,
        })
    }

    fn send_range(
        &self,
        host: HostId,
        addr: SocketAddr,
        cmd: RangeCommand,
    ) -> BoxFuture<'static, (HostId, Option<ScanPage>)> {
        if host == self.local() {
            // Inline, like point reads: a page is bounded by its row limit.
            let page = match self.inner.storage.scan(cmd.table, &cmd.request, cmd.now) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "local range read failed");
                    None
                }
            };
            return futures::future::ready((host, page)).boxed();
        }
        let messenger = self.inner.messenger.clone();
        let timeout = self.inner.config.read_timeout;
        let payload = encode_range(&cmd);
        async move {
            match messenger.request(addr, READ_RANGE, payload, timeout).await {
                Ok(b) => match decode_page(&b) {
                    Ok(p) => (host, Some(p)),
                    Err(e) => {
                        tracing::warn!(%host, error = %e, "malformed range response");
                        (host, None)
                    }
                },
                Err(e) => {
                    tracing::debug!(%host, error = %e, "range request failed");
                    (host, None)
                }
            }
        }
        .boxed()
    }

    /// Applies a batch of mutations at `cl`. A logged batch is first stored
    /// in the batchlog of up to two other live nodes of this datacenter
    /// (this node's own when it is alone), so that it is applied in full
    /// eventually even if this coordinator dies half-way; its entries are
    /// removed once every mutation reached `cl`.
    pub async fn write_batch(
        &self,
        mutations: Vec<(TableId, Partition)>,
        cl: ConsistencyLevel,
        logged: bool,
    ) -> Result<()> {
        if !logged || mutations.len() <= 1 {
            let wt = if logged {
                WriteType::Batch
            } else {
                WriteType::UnloggedBatch
            };
            return self.write_all(mutations, cl, wt).await;
        }
        cl.validate_for_write()?;
        let id = uuid::Uuid::new_v4();
        let payload = messages::encode_batch(id, &mutations);
        let ts = self.inner.timestamps.next();
        let holders = self.batchlog_holders();
        let timeout = self.inner.config.write_timeout;
        if holders.is_empty() {
            batchlog::store_deferred(self.inner.storage.as_ref(), id, payload.clone(), ts).await?;
        } else {
            // The holders store it at this coordinator's timestamp, so the
            // removal (a later timestamp from here) always shadows it.
            let mut msg = ts.to_be_bytes().to_vec();
            msg.extend_from_slice(&payload);
            let msg = Bytes::from(msg);
            let mut acks = FuturesUnordered::new();
            for addr in &holders {
                let m = self.inner.messenger.clone();
                let (addr, p) = (*addr, msg.clone());
                acks.push(async move { m.request(addr, BATCH_STORE, p, timeout).await });
            }
            let mut received = 0;
            while let Some(r) = acks.next().await {
                match r {
                    Ok(_) => received += 1,
                    Err(e) => tracing::debug!(error = %e, "batchlog store failed"),
                }
            }
            if received < holders.len() {
                return Err(CoordinatorError::WriteTimeout {
                    consistency: ConsistencyLevel::One,
                    received,
                    block_for: holders.len(),
                    write_type: WriteType::BatchLog,
                });
            }
        }
        self.write_all(mutations, cl, WriteType::Batch).await?;
        // Applied: forget the batch (best effort; a leftover is replayed,
        // which is harmless: mutations are idempotent).
        let remove_ts = self.inner.timestamps.next();
        if holders.is_empty() {
            let removed =
                batchlog::remove_deferred(self.inner.storage.as_ref(), id, remove_ts).await;
            if let Err(e) = removed {
                tracing::debug!(error = %e, "batchlog remove failed");
            }
        } else {
            let mut body = id.as_bytes().to_vec();
            body.extend_from_slice(&remove_ts.to_be_bytes());
            for addr in holders {
                if let Err(e) =
                    self.inner
                        .messenger
                        .send_oneway(addr, BATCH_REMOVE, Bytes::from(body.clone()))
                {
                    tracing::debug!(%addr, error = %e, "batchlog remove not sent");
                }
            }
        }
        Ok(())
    }

    /// Writes every mutation concurrently; the first failure is the answer.
    async fn write_all(
        &self,
        mutations: Vec<(TableId, Partition)>,
        cl: ConsistencyLevel,
        write_type: WriteType,
    ) -> Result<()> {
        let mut writes: FuturesUnordered<_> = mutations
            .into_iter()
            .map(|(t, p)| self.write_with_type(t, p, cl, write_type))
            .collect();
        let mut first_err = None;
        while let Some(r) = writes.next().await {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Up to two live nodes of this datacenter other than this one, for a
    /// logged batch's batchlog.
    fn batchlog_holders(&self) -> Vec<SocketAddr> {
        let candidates: Vec<(HostId, SocketAddr)> = self
            .inner
            .ring
            .read()
            .nodes()
            .filter(|n| n.host_id != self.local() && n.dc == self.dc())
            .map(|n| (n.host_id, n.address))
            .collect();
        let mut v: Vec<(HostId, SocketAddr)> = candidates
            .into_iter()
            .filter(|(h, _)| self.inner.liveness.is_alive(*h))
            .collect();
        // A different pair per batch spreads the load.
        let shift = (self.inner.timestamps.next() as usize) % v.len().max(1);
        v.rotate_left(shift);
        v.into_iter().take(2).map(|(_, a)| a).collect()
    }

    /// Stores a batch in this node's own batchlog without applying it:
    /// what a batchlog holder does for another coordinator. For tests of
    /// the replay path.
    #[doc(hidden)]
    pub async fn store_in_batchlog(
        &self,
        mutations: &[(TableId, Partition)],
    ) -> Result<uuid::Uuid> {
        let id = uuid::Uuid::new_v4();
        let payload = messages::encode_batch(id, mutations);
        let ts = self.inner.timestamps.next();
        batchlog::store_deferred(self.inner.storage.as_ref(), id, payload, ts).await?;
        Ok(id)
    }

    /// Replays this node's batchlog entries older than `older_than`
    /// (Cassandra: twice the write timeout): their coordinator did not
    /// remove them, so it may have died before applying them. Each is
    /// written at ONE (replicas that miss it get hints) and removed once
    /// written. Returns the number of batches replayed.
    pub async fn replay_batchlog(&self, older_than: Duration) -> Result<usize> {
        let now = self.inner.timestamps.next();
        let before = now - older_than.as_micros() as i64;
        let storage = self.inner.storage.clone();
        let due = self
            .inner
            .runtime
            .spawn_blocking(move || batchlog::due(storage.as_ref(), before))
            .await
            .map_err(join_error)??;
        let mut replayed = 0;
        for (id, written, payload) in due {
            let mutations = match messages::decode_batch(&payload) {
                Ok((_, m)) => m,
                Err(e) => {
                    tracing::error!(%id, error = %e, "undecodable batchlog entry; dropped");
                    Vec::new()
                }
            };
            // Tables dropped since are skipped.
            let mutations: Vec<_> = mutations
                .into_iter()
                .filter(|(t, _)| self.inner.strategies.strategy(*t).is_some())
                .collect();
            if let Err(e) = self
                .write_all(mutations, ConsistencyLevel::One, WriteType::Batch)
                .await
            {
                tracing::warn!(%id, error = %e, "batchlog replay failed; will retry");
                continue;
            }
            let ts = self.inner.timestamps.next().max(written + 1);
            let storage = self.inner.storage.clone();
            self.inner
                .runtime
                .spawn_blocking(move || batchlog::remove(storage.as_ref(), id, ts))
                .await
                .map_err(join_error)??;
            tracing::info!(%id, "replayed a batch from the batchlog");
            replayed += 1;
        }
        Ok(replayed)
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

    /// Delivers `host`'s hints in order, deleting each file once all of it
    /// was acknowledged; stops at the first failure (the rest stays).
    /// Returns the number delivered. Throttling (see
    /// [`crate::RateLimiter`]) and scheduling are the caller's.
    pub async fn deliver_hints(&self, host: HostId) -> Result<usize> {
        self.deliver(host, None).await
    }

    /// [`Coordinator::deliver_hints`] at the pace `limiter` allows
    /// (its units are bytes of encoded mutation).
    pub async fn deliver_hints_throttled(
        &self,
        host: HostId,
        limiter: &mut crate::hints::RateLimiter,
    ) -> Result<usize> {
        self.deliver(host, Some(limiter)).await
    }

    /// Hosts that have hints waiting.
    pub fn hinted_hosts(&self) -> Result<Vec<HostId>> {
        match &self.inner.hints {
            Some(store) => store.hosts(),
            None => Ok(Vec::new()),
        }
    }

    /// Drops every hint for `host` (it left the cluster).
    pub fn drop_hints(&self, host: HostId) -> Result<usize> {
        match &self.inner.hints {
            Some(store) => store.delete_host(host),
            None => Ok(0),
        }
    }

    async fn deliver(
        &self,
        host: HostId,
        mut limiter: Option<&mut crate::hints::RateLimiter>,
    ) -> Result<usize> {
        let Some(store) = self.inner.hints.clone() else {
            return Ok(0);
        };
        let addr = self
            .inner
            .ring
            .read()
            .node(&host)
            .map(|n| n.address)
            .ok_or_else(|| CoordinatorError::InvalidRequest(format!("unknown host {host}")))?;
        let s = store.clone();
        let files = self
            .inner
            .runtime
            .spawn_blocking(move || s.replay(host)?.collect::<Result<Vec<_>>>())
            .await
            .map_err(join_error)??;
        let mut delivered = 0;
        for (id, hints) in files {
            for h in hints {
                if let Some(l) = limiter.as_deref_mut() {
                    let wait =
                        l.acquire(h.mutation.size_estimate() as u64, std::time::Instant::now());
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                if !self
                    .send_mutation(host, addr, &Mutation::new(h.table, h.mutation))
                    .await
                {
                    return Ok(delivered);
                }
                delivered += 1;
            }
            store.acknowledge(&id)?;
        }
        Ok(delivered)
    }
}

/// Serves other coordinators' requests from the local engine. Mutations and
/// reads run on the runtime's workers (a mutation is applied when it
/// arrives and answered once durable); TRUNCATE and the batchlog, which
/// wait for disk, run on the blocking pool. Mutations and reads pass the
/// replica `stage` first: dropped past their deadline, refused beyond its
/// bound.
fn register_handlers(
    messenger: &Messenger,
    storage: Arc<dyn StorageEngine>,
    rt: Handle,
    metrics: Arc<CoordinatorMetrics>,
    stage: Arc<ReplicaStage>,
) {
    let st = stage.clone();
    let (s, r) = (storage.clone(), rt.clone());
    messenger.register(MUTATION, move |msg: Inbound| {
        let Some(msg) = st.admit(MUTATION, msg) else {
            return;
        };
        let Some(responder) = msg.responder else {
            return;
        };
        // Decoded to validate it and find its key; the received bytes
        // themselves go to the commitlog and memtable (no re-encoding).
        let durable = match Mutation::decode(&msg.payload) {
            Ok(m) => apply_local(s.as_ref(), &metrics, m),
            Err(e) => {
                respond(responder, Err(e.to_string()), MUTATION);
                return;
            }
        };
        r.spawn(async move {
            let res = durable.await.map(|()| Bytes::new());
            respond(responder, res.map_err(|e| e.to_string()), MUTATION);
        });
    });
    for (verb, want_digest) in [(READ_DATA, false), (READ_DIGEST, true)] {
        let (s, st) = (storage.clone(), stage.clone());
        messenger.register(verb, move |msg: Inbound| {
            let Some(msg) = st.admit(verb, msg) else {
                return;
            };
            let Some(responder) = msg.responder else {
                return;
            };
            let res = decode_read(&msg.payload)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    s.read(c.table, &c.key, &c.filter, c.now)
                        .map_err(|e| e.to_string())
                })
                .map(|p| {
                    if want_digest {
                        Bytes::copy_from_slice(&digest(p.as_ref()).to_bytes())
                    } else {
                        encode_data(p.as_ref())
                    }
                });
            respond(responder, res, verb);
        });
    }
    let s = storage.clone();
    messenger.register(READ_RANGE, move |msg: Inbound| {
        let Some(msg) = stage.admit(READ_RANGE, msg) else {
            return;
        };
        let Some(responder) = msg.responder else {
            return;
        };
        let res = decode_range(&msg.payload)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                s.scan(c.table, &c.request, c.now)
                    .map_err(|e| e.to_string())
            })
            .map(|page| encode_page(&page));
        respond(responder, res, READ_RANGE);
    });
    serve(messenger, TRUNCATE, &storage, &rt, |s, b| {
        let t = decode_table(b).map_err(|e| e.to_string())?;
        s.truncate_table(t).map_err(|e| e.to_string())?;
        Ok(Bytes::new())
    });
    // Payload: the coordinator's timestamp, then the encoded batch.
    let (s, r) = (storage.clone(), rt.clone());
    messenger.register(BATCH_STORE, move |msg: Inbound| {
        let Some(responder) = msg.responder else {
            return;
        };
        let b = &msg.payload;
        let ts = b
            .get(..8)
            .and_then(|x| <[u8; 8]>::try_from(x).ok())
            .map(i64::from_be_bytes);
        let id = b.get(8..24).and_then(|x| uuid::Uuid::from_slice(x).ok());
        let (Some(ts), Some(id)) = (ts, id) else {
            respond(responder, Err("malformed batch".to_string()), BATCH_STORE);
            return;
        };
        let durable = batchlog::store_deferred(s.as_ref(), id, b.slice(8..), ts);
        r.spawn(async move {
            let res = durable.await.map(|()| Bytes::new());
            respond(responder, res.map_err(|e| e.to_string()), BATCH_STORE);
        });
    });
    let (s, r) = (storage.clone(), rt.clone());
    messenger.register(BATCH_REMOVE, move |msg: Inbound| {
        let b = &msg.payload;
        let (Some(id), Some(ts)) = (
            b.get(..16).and_then(|x| uuid::Uuid::from_slice(x).ok()),
            b.get(16..24)
                .and_then(|x| <[u8; 8]>::try_from(x).ok())
                .map(i64::from_be_bytes),
        ) else {
            tracing::warn!(from = %msg.from, "malformed batchlog remove");
            return;
        };
        let durable = batchlog::remove_deferred(s.as_ref(), id, ts);
        r.spawn(async move {
            if let Err(e) = durable.await {
                tracing::warn!(error = %e, "batchlog remove failed");
            }
        });
    });
}

/// Sends a handler's answer (or its error) back to the requester.
fn respond(
    responder: gyre_net::Responder,
    res: std::result::Result<Bytes, String>,
    verb: gyre_net::Verb,
) {
    let sent = match res {
        Ok(b) => responder.respond(b),
        Err(e) => responder.respond_error(e),
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, ?verb, "could not answer a request");
    }
}

/// Answers `verb` requests on the blocking pool (handlers must not block
/// the network task) with `f`'s payload, or its error.
fn serve(
    messenger: &Messenger,
    verb: gyre_net::Verb,
    storage: &Arc<dyn StorageEngine>,
    rt: &Handle,
    f: impl Fn(&dyn StorageEngine, &Bytes) -> std::result::Result<Bytes, String>
        + Clone
        + Send
        + Sync
        + 'static,
) {
    let (s, r) = (storage.clone(), rt.clone());
    messenger.register(verb, move |msg: Inbound| {
        let Some(responder) = msg.responder else {
            return;
        };
        let (s, f) = (s.clone(), f.clone());
        r.spawn_blocking(move || respond(responder, f(s.as_ref(), &msg.payload), verb));
    });
}
