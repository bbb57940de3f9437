//! A running node: storage, persisted identity, gossip over the messenger,
//! the token ring it implies, and the admin endpoint.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use gyre_cluster::{
    AppStateKey, Endpoint, EndpointState, FailureDetectorConfig, GossipConfig, GossipMessage,
    Gossiper, HostId, MembershipEvent, NodeInfo, NodeStatus, Outgoing, TokenMetadata,
};
use gyre_common::Token;
use gyre_coordinator::{Coordinator, CoordinatorConfig, HintConfig, HintStore};
use gyre_net::{Inbound, Messenger, NetConfig, Priority, Verb};
use gyre_protocol::{Event, EventSender, StatusChangeType, TopologyChangeType};
use gyre_protocol::{Server, ServerConfig, ServerMetrics};
use gyre_query::QueryProcessor;
use gyre_schema::SchemaStore;
use gyre_storage::{LsmConfig, LsmEngine, StorageEngine, SystemClock};

use crate::config::{CommitFailurePolicy, EngineKind, StorageConfig};

/// Opens the configured storage engine (replaying its log) off the runtime.
async fn open_engine(cfg: &StorageConfig) -> Result<Arc<dyn StorageEngine>> {
    let cfg = cfg.clone();
    info!(engine = ?cfg.engine, data_dir = %cfg.data_dir.display(), commitlog_dir = %cfg.commitlog_dir.display(), "opening storage (replaying commitlog)");
    tokio::task::spawn_blocking(move || -> Result<Arc<dyn StorageEngine>> {
        match cfg.engine {
            EngineKind::Native => {
                let lsm = LsmConfig {
                    data_dir: cfg.data_dir.clone(),
                    commitlog_dir: cfg.commitlog_dir.clone(),
                    sync: cfg.sync_mode(),
                    auto_snapshot: cfg.auto_snapshot,
                    compaction_throughput_bytes_per_sec: cfg
                        .compaction_throughput_mb_per_sec
                        .saturating_mul(1 << 20),
                    concurrent_compactors: cfg.concurrent_compactors,
                    block_cache_bytes: cfg.block_cache_mb << 20,
                    memtable_flush_writers: cfg.memtable_flush_writers,
                    ..LsmConfig::default()
                };
                Ok(Arc::new(LsmEngine::open(lsm)?))
            }
            #[cfg(feature = "rocksdb")]
            EngineKind::Rocksdb => Ok(Arc::new(gyre_storage_rocksdb::RocksEngine::open(
                gyre_storage_rocksdb::RocksConfig {
                    sync: cfg.sync_mode(),
                    ..gyre_storage_rocksdb::RocksConfig::in_dir(cfg.data_dir.join("rocksdb"))
                },
            )?)),
            #[cfg(not(feature = "rocksdb"))]
            EngineKind::Rocksdb => Err(Error::Startup(
                "storage.engine = \"rocksdb\" needs a gyre binary built with `--features rocksdb`"
                    .into(),
            )),
        }
    })
    .await
    .map_err(|e| Error::Startup(format!("storage open task failed: {e}")))?
}
use parking_lot::{Mutex, RwLock};
use std::sync::OnceLock;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::admin;
use crate::config::NodeConfig;
use crate::cql::CqlHandler;
use crate::error::{Error, Result};
use crate::replication::{
    datacenter_source, register_schema_verbs, schema_listener, sync_loop, ClusterData,
    GossipLiveness, SchemaStrategies,
};
use crate::state::NodeState;

/// The messaging verb carrying [`GossipMessage`]s (JSON).
pub const GOSSIP_VERB: Verb = Verb(1);
/// Advertised as RELEASE_VERSION: the Cassandra version Gyre speaks like.
pub const RELEASE_VERSION: &str = "5.0.0";
/// The version of the empty schema (nil); gossiped SCHEMA is now the
/// loaded schema's digest.
pub const EMPTY_SCHEMA: Uuid = Uuid::nil();

/// How often LOAD (bytes on disk) is re-measured and gossiped.
const LOAD_PERIOD: Duration = Duration::from_secs(10);

/// State shared by the gossip task, the admin endpoint and start-up.
pub(crate) struct Shared {
    pub cfg: NodeConfig,
    pub host_id: HostId,
    pub local: Endpoint,
    pub messenger: Messenger,
    pub core: Mutex<Core>,
    /// A copy of `core.ring`, republished on every change, for the
    /// coordinator (which must not take the gossip lock per request).
    pub ring_view: Arc<RwLock<TokenMetadata>>,
    /// Who gossip sees UP, and since when the others are DOWN: published
    /// by the gossip task whenever membership or liveness changes, read
    /// without a lock by the coordinator for every replica of every request.
    pub liveness: Arc<ArcSwap<LivenessSnapshot>>,
    /// CQL events (STATUS_CHANGE, TOPOLOGY_CHANGE, SCHEMA_CHANGE) to clients.
    pub events: EventSender,
    /// What the CQL server measures (rendered in `/metrics`).
    pub cql_metrics: Arc<ServerMetrics>,
    /// The storage engine (the admin endpoint flushes and compacts it).
    pub engine: Arc<dyn StorageEngine>,
    /// The query processor (the admin endpoint skews its clock).
    pub qp: OnceLock<Arc<QueryProcessor>>,
    /// The coordinator's stage histograms (rendered in `/metrics`).
    pub coordinator_metrics: OnceLock<Arc<gyre_coordinator::CoordinatorMetrics>>,
    /// The hint store, when hints are enabled (for /metrics and /status).
    pub hint_store: OnceLock<Arc<HintStore>>,
    /// The coordinator (admin-started work such as repair uses it).
    pub coordinator: OnceLock<Coordinator>,
    /// Repair sessions started on this node (`/repair`).
    pub(crate) repairs: crate::repair::Repairs,
    /// The replica stage's counters (rendered in `/metrics`).
    pub replica_stage: OnceLock<Arc<gyre_coordinator::ReplicaStage>>,
    /// Streaming sessions (bootstrap, decommission) for `/streams`.
    pub(crate) streams: crate::streaming::Streams,
    /// Decommission state; `left` stops the node.
    pub(crate) membership: crate::membership::Membership,
    /// Request tracing: what to trace, and the trace writer's queue.
    pub(crate) tracer: Arc<crate::traces::Tracer>,
    start: Instant,
    pub rounds: AtomicU64,
    pub decode_errors: AtomicU64,
}

/// Liveness as gossip's failure detector last published it. Immutable:
/// the gossip task replaces the whole snapshot when something changes.
#[derive(Debug, Default)]
pub(crate) struct LivenessSnapshot {
    /// Hosts in the ring that the failure detector sees UP (this node too).
    pub live: HashSet<HostId>,
    /// When each host was last seen going DOWN (for the hint window).
    pub down_since: HashMap<HostId, Instant>,
}

/// The gossiper and what it implies, behind one lock so they never disagree.
pub(crate) struct Core {
    pub gossiper: Gossiper,
    pub ring: TokenMetadata,
    /// Host id each endpoint had in the ring, to remove it later.
    ring_hosts: HashMap<Endpoint, HostId>,
}

impl Shared {
    /// Milliseconds since start: the gossiper's clock (monotonic).
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Tells live peers this node is shutting down (so they mark it DOWN at
    /// once) and gives the announcement a bounded moment to leave: the
    /// messenger has no flush, but the messages are on the urgent
    /// connections already.
    async fn announce_shutdown(&self) {
        if self.membership.has_left() {
            // LEFT must stay this node's last word: `shutdown` would put
            // its tokens back in the peers' rings.
            return;
        }
        let out = {
            let mut core = self.core.lock();
            let now = self.now_ms();
            core.gossiper.announce_shutdown(now)
        };
        let peers = out.len();
        self.send(out);
        info!(peers, "announced shutdown");
        tokio::time::sleep(Duration::from_millis(self.cfg.gossip.shutdown_announce_ms)).await;
    }

    fn send(&self, out: Vec<Outgoing>) {
        for o in out {
            let payload = match serde_json::to_vec(&o.msg) {
                Ok(p) => Bytes::from(p),
                Err(e) => {
                    error!(error = %e, "cannot encode gossip message");
                    continue;
                }
            };
            // A peer that is down just loses the message: gossip retries every round.
            if let Err(e) =
                self.messenger
                    .send_oneway_with(o.to, GOSSIP_VERB, payload, Priority::Urgent)
            {
                debug!(to = %o.to, error = %e, "gossip send failed");
            }
        }
    }

    /// Publishes this node's ring status (BOOT, NORMAL, LEAVING, LEFT) with
    /// its tokens, and applies it to the local ring at once.
    pub(crate) fn set_ring_status(&self, status: NodeStatus, tokens: &[Token]) {
        self.set_local_ring_state(tokens, |g| g.set_status(status));
    }

    /// Publishes BOOT_REPLACE: this node joins in place of the dead `old`,
    /// with its tokens.
    pub(crate) fn set_replacing(&self, old: HostId, tokens: &[Token]) {
        self.set_local_ring_state(tokens, |g| g.set_replacing(old));
    }

    fn set_local_ring_state(&self, tokens: &[Token], set: impl FnOnce(&mut Gossiper)) {
        let ring = {
            let mut core = self.core.lock();
            core.gossiper.set_tokens(tokens);
            set(&mut core.gossiper);
            let displaced = core.sync_ring(self.local);
            self.drop_displaced(&mut core, displaced);
            self.publish_liveness(&core, &[]);
            core.ring.clone()
        };
        self.publish_ring(Some(ring));
    }

    /// Forgets the dead nodes whose tokens a finished replacement took
    /// over: out of gossip (quarantined, as Cassandra's replaced endpoints)
    /// and out of the ring; drivers hear REMOVED_NODE.
    fn drop_displaced(&self, core: &mut Core, displaced: Vec<Endpoint>) {
        let now = self.now_ms();
        for ep in displaced {
            let addr = core
                .gossiper
                .endpoint_state(&ep)
                .and_then(|s| s.native_address())
                .unwrap_or_else(|| SocketAddr::new(ep.ip(), self.cfg.network.cql_port));
            core.ring_hosts.remove(&ep);
            core.gossiper.remove_endpoint(ep, now);
            info!(endpoint = %ep, "replaced node removed from the ring");
            self.events.send(Event::TopologyChange {
                change: TopologyChangeType::RemovedNode,
                addr,
            });
        }
    }

    /// Marks `host` as leaving in this node's ring (a removal in progress:
    /// its ranges' new owners become pending replicas). False if unknown.
    pub(crate) fn mark_removing(&self, host: HostId) -> bool {
        let ring = {
            let mut core = self.core.lock();
            if core.ring.add_leaving(host).is_err() {
                return false;
            }
            core.ring.clone()
        };
        self.publish_ring(Some(ring));
        true
    }

    /// Takes a dead peer out of the ring for `removenode`: its gossip state
    /// says `removed` from now on (see `Gossiper::advertise_removed`), which
    /// every peer applies as it hears it, drivers get REMOVED_NODE.
    pub(crate) fn mark_removed(&self, ep: Endpoint, host: HostId) {
        let ring = {
            let mut core = self.core.lock();
            let now = self.now_ms();
            if !core.gossiper.advertise_removed(ep, host, now) {
                warn!(endpoint = %ep, "cannot publish the removal: unknown or alive");
            }
            self.absorb_events(&mut core)
        };
        self.publish_ring(ring);
    }

    pub(crate) fn set_local_state(&self, key: AppStateKey, value: String) {
        self.core.lock().gossiper.set_local_state(key, value);
    }

    /// Applies the gossiper's membership events to the ring and tells CQL
    /// clients about nodes going up or down. Returns the new ring when it
    /// changed: the caller publishes it in `ring_view` once `core` is
    /// released (never take the ring view's lock under `core`: readers of
    /// the ring view ask the failure detector, which takes `core`).
    fn absorb_events(&self, core: &mut Core) -> Option<TokenMetadata> {
        let mut changes = core.absorb_events();
        self.drop_displaced(core, std::mem::take(&mut changes.displaced));
        let ring = changes.ring_changed.then(|| core.ring.clone());
        for (ep, joined) in changes.topology {
            // Drivers key nodes by their CQL address.
            let addr = core
                .gossiper
                .endpoint_state(&ep)
                .and_then(|s| s.get(AppStateKey::NativeAddress))
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .unwrap_or_else(|| SocketAddr::new(ep.ip(), self.cfg.network.cql_port));
            let change = if joined {
                TopologyChangeType::NewNode
            } else {
                TopologyChangeType::RemovedNode
            };
            self.events.send(Event::TopologyChange { change, addr });
        }
        if changes.ring_changed || !changes.liveness.is_empty() {
            self.publish_liveness(core, &changes.liveness);
        }
        for (ep, up) in changes.liveness {
            let cql = core
                .gossiper
                .endpoint_state(&ep)
                .and_then(|s| s.get(AppStateKey::NativeAddress))
                .and_then(|a| a.parse::<SocketAddr>().ok());
            if let Some(addr) = cql {
                let change = if up {
                    StatusChangeType::Up
                } else {
                    StatusChangeType::Down
                };
                self.events.send(Event::StatusChange { change, addr });
            }
        }
        ring
    }

    /// Publishes a new liveness snapshot from the gossiper's view, after
    /// the hosts in `changes` went UP (true) or DOWN (false). Called under
    /// `core`; publishing takes no lock.
    fn publish_liveness(&self, core: &Core, changes: &[(Endpoint, bool)]) {
        let mut down_since = self.liveness.load().down_since.clone();
        let now = Instant::now();
        for (ep, up) in changes {
            if let Some(h) = core.ring_hosts.get(ep) {
                if *up {
                    down_since.remove(h);
                } else {
                    down_since.insert(*h, now);
                }
            }
        }
        let live: HashSet<HostId> = core
            .ring_hosts
            .iter()
            .filter(|(ep, _)| core.gossiper.is_alive(ep))
            .map(|(_, h)| *h)
            .chain(std::iter::once(self.host_id))
            .collect();
        // A host that moved is up at its new address whatever its old one did.
        down_since.retain(|h, _| !live.contains(h));
        self.liveness
            .store(Arc::new(LivenessSnapshot { live, down_since }));
    }

    fn publish_ring(&self, ring: Option<TokenMetadata>) {
        if let Some(r) = ring {
            // Remembered for a restart (see `state::SavedPeer`). Callers
            // hold neither `core` nor the ring view here.
            let natives: HashMap<Endpoint, SocketAddr> = {
                let core = self.core.lock();
                core.gossiper
                    .endpoint_states()
                    .filter_map(|(ep, st)| Some((*ep, st.native_address()?)))
                    .collect()
            };
            let peers: Vec<crate::state::SavedPeer> = r
                .normal_nodes()
                .filter(|n| n.host_id != self.host_id)
                .map(|n| crate::state::SavedPeer {
                    address: n.address,
                    host_id: n.host_id,
                    dc: n.dc.clone(),
                    rack: n.rack.clone(),
                    tokens: r.tokens_of(&n.host_id).to_vec(),
                    native: natives.get(&n.address).copied(),
                })
                .collect();
            *self.ring_view.write() = r;
            if let Err(e) = crate::state::save_peers(&self.cfg.storage.data_dir, &peers) {
                warn!(error = %e, "cannot save the ring's peers");
            }
        }
    }
}

/// What a batch of membership events changed.
#[derive(Default)]
struct Absorbed {
    ring_changed: bool,
    /// Endpoints that went UP (true) or DOWN (false), in order.
    liveness: Vec<(Endpoint, bool)>,
    /// Endpoints that joined (true) or left (false) the cluster.
    topology: Vec<(Endpoint, bool)>,
    /// Dead nodes whose tokens a replacement took over.
    displaced: Vec<Endpoint>,
}

impl Core {
    /// Applies membership events to the ring and logs them.
    fn absorb_events(&mut self) -> Absorbed {
        let mut out = Absorbed::default();
        for ev in self.gossiper.drain_events() {
            match &ev {
                MembershipEvent::Up(ep) => info!(endpoint = %ep, "peer UP"),
                MembershipEvent::Down(ep) => info!(endpoint = %ep, "peer DOWN"),
                MembershipEvent::Restarted {
                    endpoint,
                    generation,
                } => info!(%endpoint, generation, "peer restarted"),
                MembershipEvent::Joined { endpoint, .. } => {
                    info!(%endpoint, "peer discovered");
                }
                MembershipEvent::StatusChanged { endpoint, status } => {
                    info!(%endpoint, status = ?status, "peer status changed")
                }
                MembershipEvent::StateChanged { key, .. }
                    if !matches!(
                        key,
                        AppStateKey::Status
                            | AppStateKey::Tokens
                            | AppStateKey::HostId
                            | AppStateKey::Dc
                            | AppStateKey::Rack
                    ) =>
                {
                    // LOAD, SCHEMA and the like do not move the ring.
                    continue;
                }
                MembershipEvent::StateChanged { .. } => {}
                MembershipEvent::Removed(ep) => {
                    info!(endpoint = %ep, "peer removed");
                }
            }
            let ep = match ev {
                MembershipEvent::Joined { endpoint, .. }
                | MembershipEvent::Restarted { endpoint, .. }
                | MembershipEvent::StatusChanged { endpoint, .. }
                | MembershipEvent::StateChanged { endpoint, .. }
                | MembershipEvent::Removed(endpoint) => endpoint,
                MembershipEvent::Up(ep) => {
                    out.liveness.push((ep, true));
                    continue;
                }
                MembershipEvent::Down(ep) => {
                    out.liveness.push((ep, false));
                    continue;
                }
            };
            // Drivers hear NEW_NODE when a node becomes a normal member
            // (not while it joins) and REMOVED_NODE when it stops being one,
            // as Cassandra tells them.
            let was = self.normal_member(ep);
            let displaced = self.sync_ring(ep);
            out.displaced.extend(displaced);
            let is = self.normal_member(ep);
            if was != is {
                out.topology.push((ep, is));
            }
            out.ring_changed = true;
        }
        out
    }

    fn normal_member(&self, ep: Endpoint) -> bool {
        self.ring_hosts
            .get(&ep)
            .is_some_and(|h| self.ring.is_normal(h))
    }

    /// Re-derives `ep`'s ring membership from its gossip state. Returns the
    /// endpoints of dead nodes whose tokens `ep` took over as NORMAL (a
    /// finished replacement): the caller forgets them.
    fn sync_ring(&mut self, ep: Endpoint) -> Vec<Endpoint> {
        let mut displaced = Vec::new();
        let state = self.gossiper.endpoint_state(&ep).cloned();
        let wanted = state.as_ref().and_then(|s| ring_entry(ep, s));
        let old_host = self.ring_hosts.get(&ep).copied();
        match wanted {
            Some((info, tokens, status)) => {
                if !self.owns_host_id(ep, info.host_id, &mut displaced) {
                    return displaced;
                }
                if let Some(old) = old_host.filter(|h| *h != info.host_id) {
                    self.ring.remove_node(old);
                }
                let host = info.host_id;
                let res = match status {
                    NodeStatus::Bootstrapping => {
                        self.ring.remove_node(host);
                        self.ring.add_bootstrapping(info, &tokens)
                    }
                    NodeStatus::Replacing => {
                        let replaced = state.as_ref().and_then(|s| s.replacing());
                        self.ring.remove_node(host);
                        match replaced {
                            Some(old) => self.ring.add_replacing(info, old),
                            None => Err(gyre_cluster::Error::UnknownNode(host)),
                        }
                    }
                    NodeStatus::Leaving => self
                        .ring
                        .update_normal(info, &tokens)
                        .and_then(|_| self.ring.add_leaving(host)),
                    _ => self.take_over(info, &tokens, &mut displaced),
                };
                match res {
                    Ok(()) => {
                        self.ring_hosts.insert(ep, host);
                    }
                    Err(e) => warn!(endpoint = %ep, error = %e, "cannot place peer in the ring"),
                }
            }
            None => {
                let left = state.as_ref().is_none_or(|s| {
                    matches!(s.status(), Some(NodeStatus::Left | NodeStatus::Removed))
                });
                if left {
                    if let Some(h) = self.ring_hosts.remove(&ep) {
                        self.ring.remove_node(h);
                    }
                }
            }
        }
        displaced
    }

    /// Whether `ep` may place `host` in the ring when another endpoint
    /// claims the same host id: a node that moved (a pod rescheduled with
    /// its volume gets a new IP) keeps its host id and tokens at a new
    /// address. As Cassandra's host id collision: the endpoint that started
    /// last (larger generation) owns the id, and the other goes to
    /// `displaced` (out of gossip, ring entry kept for the owner). This
    /// node's own id is never given to another address.
    fn owns_host_id(&mut self, ep: Endpoint, host: HostId, displaced: &mut Vec<Endpoint>) -> bool {
        let local = self.gossiper.local_endpoint();
        if ep == local {
            return true;
        }
        let generation = |g: &Gossiper, e: &Endpoint| {
            if *e == local {
                Some(g.generation())
            } else {
                g.endpoint_state(e).map(|s| s.generation)
            }
        };
        let mine = self.gossiper.local_state().and_then(|s| s.host_id()) == Some(host);
        let other = if mine {
            Some(local)
        } else {
            self.ring_hosts
                .iter()
                .find(|(e, h)| **h == host && **e != ep)
                .map(|(e, _)| *e)
        };
        let Some(other) = other else {
            return true;
        };
        let ours = generation(&self.gossiper, &ep).unwrap_or(0);
        let theirs = generation(&self.gossiper, &other);
        let (winner, loser) = if !mine && theirs.is_none_or(|t| ours > t) {
            (ep, other)
        } else {
            (other, ep)
        };
        warn!(
            host_id = %host,
            "Host ID collision for {host} between {other} and {ep}; {winner} is the new owner"
        );
        if loser != local {
            self.ring_hosts.remove(&loser);
            if !displaced.contains(&loser) {
                displaced.push(loser);
            }
        }
        winner == ep
    }

    /// Makes `info` a normal member owning `tokens`. Tokens of another node
    /// go to `info` when that node is the one it replaced, or is down (a
    /// replacement whose BOOT_REPLACE this node missed): as in Cassandra,
    /// the dead owner loses them and, left without tokens, the ring.
    fn take_over(
        &mut self,
        info: NodeInfo,
        tokens: &[Token],
        displaced: &mut Vec<Endpoint>,
    ) -> std::result::Result<(), gyre_cluster::Error> {
        let me = info.host_id;
        let replaced: Option<HostId> = self
            .ring
            .replacing()
            .find(|(n, _)| **n == me)
            .map(|(_, o)| *o);
        loop {
            match self.ring.update_normal(info.clone(), tokens) {
                Err(gyre_cluster::Error::TokenConflict { token, owner }) => {
                    let addr = self.ring.node(&owner).map(|n| n.address);
                    let dead = addr.is_some_and(|a| !self.gossiper.is_alive(&a));
                    if replaced != Some(owner) && !dead {
                        return Err(gyre_cluster::Error::TokenConflict { token, owner });
                    }
                    self.ring.remove_node(owner);
                    displaced.extend(addr);
                }
                r => return r,
            }
        }
    }
}

/// What the ring should hold for an endpoint, if anything: NORMAL (and
/// gracefully shut down, which keeps its tokens), joining and leaving nodes
/// with a host id and tokens.
fn ring_entry(ep: Endpoint, s: &EndpointState) -> Option<(NodeInfo, Vec<Token>, NodeStatus)> {
    let status = s.status()?;
    if matches!(status, NodeStatus::Left | NodeStatus::Removed) {
        return None;
    }
    let tokens = s.tokens().filter(|t| !t.is_empty())?;
    let info = NodeInfo {
        host_id: s.host_id()?,
        address: ep,
        dc: s.dc().unwrap_or("dc1").to_string(),
        rack: s.rack().unwrap_or("rack1").to_string(),
    };
    Some((info, tokens, status))
}

/// Cassandra's refusal to restart a decommissioned node.
pub(crate) const DECOMMISSIONED: &str =
    "This node was decommissioned and will not rejoin the ring \
     unless all existing data is removed and the node is bootstrapped again";

/// A started node. Dropping it without [`Node::shutdown`] skips the
/// graceful parts (announcement, flush).
pub struct Node {
    pub(crate) shared: Arc<Shared>,
    engine: Arc<dyn StorageEngine>,
    stop: watch::Sender<bool>,
    /// Stops gossip and the CQL server only (shutdown, or a failed
    /// commitlog under `commit_failure_policy = "stop"`).
    transports: Arc<watch::Sender<bool>>,
    tasks: Vec<JoinHandle<()>>,
    admin_addr: SocketAddr,
    cql_addr: SocketAddr,
}

impl Node {
    /// Opens storage, joins the cluster and starts serving admin HTTP.
    pub async fn start(cfg: NodeConfig) -> Result<Node> {
        cfg.validate()?;
        let local = cfg.network.internode_addr();
        let data_dir = cfg.storage.data_dir.clone();
        // A decommissioned node's data belongs to the ring no more: a
        // restart (a container restarted before it was scaled away) must
        // not take its old tokens back.
        if NodeState::load_or_new(&data_dir)?.decommissioned {
            return Err(Error::Startup(DECOMMISSIONED.into()));
        }

        let engine = open_engine(&cfg.storage).await?;
        let data = Arc::new(ClusterData {
            engine: engine.clone(),
            coordinator: OnceLock::new(),
        });
        let qp = Arc::new(open_query_processor(engine.clone(), data.clone()).await?);

        let mut persisted = NodeState::load_or_new(&data_dir)?;
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        persisted.generation = persisted.next_generation(unix);
        persisted.save(&data_dir)?;
        let host_id = persisted.host_id;
        info!(%host_id, generation = persisted.generation, %local, "node identity");

        let mut net = NetConfig::new(local);
        net.cluster_name = cfg.cluster.name.clone();
        net.host_id = host_id;
        net.connect_timeout = Duration::from_millis(cfg.timeouts.connect_ms);
        net.tls = cfg.server_encryption.load()?;
        if let Some(tls) = &net.tls {
            info!(
                endpoint_verification = tls.verifies_endpoints(),
                "internode encryption: all"
            );
        }
        let messenger = Messenger::bind_tcp(net).await?;
        let inbound = messenger.register_channel(GOSSIP_VERB, 4096);

        let seeds = cfg.seed_addrs()?;
        let mut gcfg = GossipConfig::new(cfg.cluster.name.clone(), local, seeds.clone());
        gcfg.interval_ms = cfg.gossip.interval_ms;
        gcfg.failure_detector = FailureDetectorConfig {
            phi_convict_threshold: cfg.gossip.phi_convict_threshold,
            // Cassandra seeds a window with two intervals.
            initial_interval_ms: 2 * cfg.gossip.interval_ms,
            max_interval_ms: cfg.gossip.fd_max_interval_ms,
            ..FailureDetectorConfig::default()
        };
        let start = Instant::now();
        let mut gossiper = Gossiper::new(gcfg, persisted.generation, rand::random(), 0);
        gossiper.set_local_state(AppStateKey::Dc, cfg.cluster.datacenter.clone());
        gossiper.set_local_state(AppStateKey::Rack, cfg.cluster.rack.clone());
        gossiper.set_local_state(AppStateKey::HostId, host_id.to_string());
        gossiper.set_local_state(
            AppStateKey::NativeAddress,
            cfg.network.cql_addr().to_string(),
        );
        gossiper.set_local_state(AppStateKey::ReleaseVersion, RELEASE_VERSION);
        gossiper.set_local_state(AppStateKey::Schema, qp.schema().version().to_string());
        gossiper.set_local_state(AppStateKey::Load, dir_size(&data_dir).to_string());
        // A restart of a member: the ring as it was, before gossip confirms
        // it (a node serving on a partial ring would pick other replicas
        // than its peers do: a quorum of the wrong nodes).
        if persisted.bootstrapped && !persisted.tokens.is_empty() && !persisted.decommissioned {
            let saved = crate::state::load_peers(&data_dir);
            for p in &saved {
                gossiper.add_saved_endpoint(
                    p.address,
                    vec![
                        (AppStateKey::HostId, p.host_id.to_string()),
                        (AppStateKey::Dc, p.dc.clone()),
                        (AppStateKey::Rack, p.rack.clone()),
                        (AppStateKey::Tokens, gyre_cluster::encode_tokens(&p.tokens)),
                        (AppStateKey::Status, NodeStatus::Normal.as_str().to_string()),
                    ]
                    .into_iter()
                    .chain(
                        p.native
                            .map(|a| (AppStateKey::NativeAddress, a.to_string())),
                    )
                    .collect(),
                    0,
                );
            }
            if !saved.is_empty() {
                info!(peers = saved.len(), "ring loaded from peers.json");
            }
        }

        let server_cfg = ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            max_concurrent_requests: cfg.network.cql_max_concurrent_requests,
            max_queued_requests: cfg.network.cql_max_queued_requests,
            queue_timeout: Duration::from_millis(cfg.network.cql_queue_timeout_ms),
            max_frame_bytes: cfg.limits.native_transport_max_frame_size_mb << 20,
            max_connections_per_ip: cfg
                .limits
                .native_transport_max_concurrent_connections_per_ip,
            max_request_bytes_in_flight: cfg.limits.native_transport_max_request_data_in_flight_mb
                << 20,
            max_request_bytes_in_flight_per_ip: cfg
                .limits
                .native_transport_max_request_data_in_flight_per_ip_mb
                << 20,
            startup_timeout: Duration::from_millis(cfg.limits.native_transport_startup_timeout_ms),
            idle_timeout: (cfg.limits.native_transport_idle_timeout_ms > 0)
                .then(|| Duration::from_millis(cfg.limits.native_transport_idle_timeout_ms)),
            tls: cfg.client_encryption.load()?,
            ..ServerConfig::default()
        };
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            host_id,
            local,
            messenger: messenger.clone(),
            core: Mutex::new(Core {
                gossiper,
                ring: TokenMetadata::new(),
                ring_hosts: HashMap::new(),
            }),
            ring_view: Arc::new(RwLock::new(TokenMetadata::new())),
            liveness: Arc::new(ArcSwap::from_pointee(LivenessSnapshot {
                live: HashSet::from([host_id]),
                down_since: HashMap::new(),
            })),
            events: server_cfg.events.clone(),
            cql_metrics: server_cfg.metrics.clone(),
            engine: engine.clone(),
            qp: OnceLock::new(),
            coordinator_metrics: OnceLock::new(),
            hint_store: OnceLock::new(),
            coordinator: OnceLock::new(),
            repairs: crate::repair::Repairs::with_history(&data_dir),
            replica_stage: OnceLock::new(),
            tracer: Default::default(),
            streams: Default::default(),
            membership: Default::default(),
            start,
            rounds: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
        });
        // The saved peers into the ring now, before anything coordinates.
        let ring = {
            let mut core = shared.core.lock();
            shared.absorb_events(&mut core)
        };
        shared.publish_ring(ring);

        // The coordinator: replicas from the ring view, liveness from the
        // failure detector, strategies from the schema.
        let strategies = Arc::new(SchemaStrategies(OnceLock::new()));
        let _ = strategies.0.set(Arc::downgrade(&qp));
        let mut ccfg = CoordinatorConfig::new(host_id, cfg.cluster.datacenter.clone());
        ccfg.write_timeout = Duration::from_millis(cfg.timeouts.write_request_ms);
        ccfg.cas_contention_timeout = Duration::from_millis(cfg.timeouts.cas_contention_ms);
        ccfg.read_timeout = Duration::from_millis(cfg.timeouts.read_request_ms);
        ccfg.max_replica_requests = cfg.network.replica_max_concurrent_requests;
        ccfg.tombstone_failure_threshold = cfg.limits.tombstone_failure_threshold;
        let mut coordinator = Coordinator::new(
            ccfg,
            messenger,
            engine.clone(),
            shared.ring_view.clone(),
            strategies,
            Arc::new(GossipLiveness::new(&shared)),
        );
        if cfg.hints.enabled {
            let mib = |n: u64| n.saturating_mul(1 << 20);
            let hcfg = HintConfig {
                max_hint_window: Duration::from_millis(cfg.hints.max_hint_window_ms),
                max_file_bytes: mib(cfg.hints.max_file_size_mb),
                max_bytes_per_host: mib(cfg.hints.max_size_per_host_mb),
                max_total_bytes: mib(cfg.hints.max_total_size_mb),
            };
            let dir = data_dir.join("hints");
            let store = tokio::task::spawn_blocking(move || HintStore::open(dir, hcfg))
                .await
                .map_err(|e| Error::Startup(format!("hint store task failed: {e}")))?
                .map_err(|e| Error::Startup(format!("hint store: {e}")))?;
            let store = Arc::new(store);
            let _ = shared.hint_store.set(store.clone());
            coordinator = coordinator.with_hints(store);
        }
        coordinator.register_counter_handler();
        let _ = shared.coordinator_metrics.set(coordinator.metrics());
        let _ = shared.replica_stage.set(coordinator.replica_stage());
        let _ = data.coordinator.set(coordinator.clone());
        let _ = shared.coordinator.set(coordinator.clone());
        let _ = shared.qp.set(qp.clone());
        register_schema_verbs(&shared, &qp, &server_cfg.events);
        crate::streaming::register_verbs(&shared);
        crate::membership::register_verbs(&shared);
        crate::removenode::register_verbs(&shared);
        qp.set_schema_listener(schema_listener(Arc::downgrade(&shared)));
        qp.set_datacenters(datacenter_source(Arc::downgrade(&shared)));
        qp.set_guardrails(cfg.limits.guardrails());

        let (stop, stop_rx) = watch::channel(false);
        let (transports, transports_rx) = watch::channel(false);
        let transports = Arc::new(transports);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(gossip_loop(
            shared.clone(),
            inbound,
            transports_rx.clone(),
        )));
        tasks.push(tokio::spawn(storage_watch(
            shared.clone(),
            transports.clone(),
            stop_rx.clone(),
        )));

        let admin_addr = cfg.admin_addr();
        let listener = tokio::net::TcpListener::bind(admin_addr)
            .await
            .map_err(|source| Error::Io {
                context: format!("binding admin endpoint {admin_addr}"),
                source,
            })?;
        tasks.push(tokio::spawn(admin::serve(
            shared.clone(),
            listener,
            stop_rx.clone(),
        )));

        // Schema pulls and hint delivery run from the start: a joining
        // node needs the cluster's schema before it can stream.
        tasks.push(tokio::spawn(load_loop(
            shared.clone(),
            data_dir.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(sync_loop(
            shared.clone(),
            qp.clone(),
            coordinator,
            server_cfg.events.clone(),
            cfg.hints.throttle_kib_per_sec.saturating_mul(1024),
            stop_rx.clone(),
        )));

        // Cassandra's replace_address_first_boot: only until bootstrapped.
        let replace = cfg
            .cluster
            .replace_address
            .filter(|_| persisted.tokens.is_empty() || !persisted.bootstrapped);
        if let (Some(ip), None) = (cfg.cluster.replace_address, replace) {
            warn!(%ip, "cluster.replace_address ignored: this node has bootstrapped already");
        }
        let tokens = if let Some(ip) = replace {
            wait_for_ring(&shared, &seeds).await?;
            let (old, tokens) = crate::membership::replace_target(&shared, ip)
                .await
                .map_err(Error::Startup)?;
            persisted.tokens = tokens.clone();
            persisted.bootstrapped = false;
            persisted.save(&data_dir)?;
            let schema_wait = Duration::from_millis(cfg.gossip.seed_wait_ms.max(10_000));
            if !crate::membership::wait_schema_agreement(&shared, &qp, schema_wait).await {
                warn!("no schema agreement with the cluster before the replace; continuing");
            }
            crate::membership::replace(&shared, &qp, old, &tokens)
                .await
                .map_err(|e| Error::Startup(format!("replace failed: {e}")))?;
            persisted.bootstrapped = true;
            persisted.save(&data_dir)?;
            tokens
        } else {
            let mut joins_existing = false;
            let tokens = if persisted.tokens.is_empty() {
                let (tokens, existing) = choose_tokens(&shared, &seeds, &qp).await?;
                joins_existing = existing;
                persisted.tokens = tokens.clone();
                // Recorded before streaming: a restart resumes the bootstrap.
                persisted.bootstrapped = !(existing && cfg.cluster.auto_bootstrap);
                persisted.save(&data_dir)?;
                tokens
            } else {
                if persisted.tokens.len() != cfg.cluster.num_tokens {
                    warn!(
                        stored = persisted.tokens.len(),
                        configured = cfg.cluster.num_tokens,
                        "keeping the stored tokens; cluster.num_tokens only applies to new nodes"
                    );
                }
                persisted.tokens.clone()
            };
            if !persisted.bootstrapped {
                if !joins_existing {
                    // A resumed bootstrap: learn the ring again first.
                    wait_for_ring(&shared, &seeds).await?;
                }
                let schema_wait = Duration::from_millis(cfg.gossip.seed_wait_ms.max(10_000));
                if !crate::membership::wait_schema_agreement(&shared, &qp, schema_wait).await {
                    warn!("no schema agreement with the cluster before bootstrap; continuing");
                }
                if crate::membership::has_user_keyspaces(&qp) {
                    crate::membership::bootstrap(&shared, &qp, &tokens)
                        .await
                        .map_err(|e| Error::Startup(format!("bootstrap failed: {e}")))?;
                } else {
                    info!("the cluster has no keyspaces yet: nothing to stream");
                }
                persisted.bootstrapped = true;
                persisted.save(&data_dir)?;
            }
            tokens
        };
        shared.set_ring_status(NodeStatus::Normal, &tokens);
        info!(tokens = tokens.len(), "joined the ring as NORMAL");

        // CQL last: system.local must show the tokens chosen above.
        let cql_bind = cfg.network.cql_addr();
        let cql_listener = tokio::net::TcpListener::bind(cql_bind)
            .await
            .map_err(|source| Error::Io {
                context: format!("binding CQL port {cql_bind}"),
                source,
            })?;
        let cql_addr = cql_listener.local_addr().map_err(|source| Error::Io {
            context: "reading the CQL listener address".into(),
            source,
        })?;
        let auth = Arc::new(crate::auth::Auth::new(qp.clone(), cfg.auth.clone()));
        let mut server_cfg = server_cfg;
        if auth.authenticating() {
            server_cfg.authenticator =
                Some(Arc::new(crate::auth::PasswordAuthenticator(auth.clone())));
            tasks.push(tokio::spawn(
                auth.clone().setup_default_superuser(stop_rx.clone()),
            ));
        }
        // Traces of this node's requests (and of replicas' parts of other
        // nodes' traced requests) go to system_traces through this writer.
        gyre_common::trace::set_sink(Arc::new(crate::traces::SinkRef(shared.tracer.clone())));
        shared.tracer.start_writer(qp.clone());
        let handler = Arc::new(CqlHandler::new(
            qp,
            shared.clone(),
            auth,
            server_cfg.events.clone(),
        ));
        let mut cql_stop = transports_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = cql_stop.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = Server::run(cql_listener, handler, server_cfg, shutdown).await {
                error!(error = %e, "CQL server failed");
            }
        }));
        info!(%cql_addr, "serving CQL");
        Ok(Node {
            shared,
            engine,
            stop,
            transports,
            tasks,
            admin_addr,
            cql_addr,
        })
    }

    pub fn host_id(&self) -> HostId {
        self.shared.host_id
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where CQL clients connect (the bound port, if 0 was configured).
    pub fn cql_addr(&self) -> SocketAddr {
        self.cql_addr
    }

    /// Graceful stop: tells live peers this node is shutting down, stops
    /// gossip and messaging, then flushes memtables.
    pub async fn shutdown(self) -> Result<()> {
        self.shared.announce_shutdown().await;
        let _ = self.transports.send(true);
        let _ = self.stop.send(true);
        for t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                warn!("a background task did not stop in time");
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), self.shared.messenger.shutdown())
            .await
            .is_err()
        {
            warn!("messaging did not shut down in time");
        }
        let engine = self.engine;
        tokio::task::spawn_blocking(move || engine.flush(None))
            .await
            .map_err(|e| Error::Startup(format!("flush task failed: {e}")))??;
        info!("storage flushed; bye");
        Ok(())
    }
}

/// Acts on a failed commitlog as `storage.commit_failure_policy` says. The
/// engine already refuses writes; left in the ring, the node would still be
/// UP for its peers, which would keep sending it writes and read repairs
/// that fail only at their timeout. Stopping gossip (after announcing the
/// shutdown, so peers convict it at once) and the CQL server makes it DOWN:
/// coordinators hint its writes and read from the other replicas, as
/// Cassandra's default `stop` policy does.
async fn storage_watch(
    shared: Arc<Shared>,
    transports: Arc<watch::Sender<bool>>,
    mut stop: watch::Receiver<bool>,
) {
    let policy = shared.cfg.storage.commit_failure_policy;
    if policy == CommitFailurePolicy::Ignore {
        return;
    }
    let why = loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return,
        }
        if let Some(why) = shared.engine.failure() {
            break why;
        }
    };
    if policy == CommitFailurePolicy::Die {
        error!(error = %why, "commitlog failed; exiting (commit_failure_policy = \"die\")");
        std::process::exit(3);
    }
    error!(
        error = %why,
        "commitlog failed: stopping gossip and the CQL server (commit_failure_policy = \"stop\"); \
         the admin endpoint stays up; restart the node once its disk is fixed"
    );
    shared.announce_shutdown().await;
    let _ = transports.send(true);
}

/// Why a node whose storage engine serves no indexes (RocksDB) refuses
/// CREATE INDEX and indexed queries.
pub const INDEXES_NEED_NATIVE: &str = "Secondary indexes are not supported by this node's storage engine (storage.engine = \"rocksdb\"); they need the native engine (storage.engine = \"native\")";

/// Loads the persisted schema and builds the executor over `data`.
async fn open_query_processor(
    engine: Arc<dyn StorageEngine>,
    data: Arc<ClusterData>,
) -> Result<QueryProcessor> {
    tokio::task::spawn_blocking(move || -> Result<QueryProcessor> {
        let schema_err = |e: gyre_schema::SchemaError| Error::Startup(format!("schema: {e}"));
        let store = SchemaStore::open(engine.clone()).map_err(schema_err)?;
        let schema = store.load().map_err(schema_err)?;
        info!(version = %schema.version(), tables = schema.tables().len(), "schema loaded");
        let qp = QueryProcessor::new(schema, Some(store), data, Arc::new(SystemClock));
        if !engine.serves_indexes() {
            qp.refuse_indexes(INDEXES_NEED_NATIVE);
        }
        qp.ensure_tables()
            .map_err(|e| Error::Startup(format!("creating tables: {e}")))?;
        Ok(qp)
    })
    .await
    .map_err(|e| Error::Startup(format!("schema load task failed: {e}")))?
}

/// Resolves at SIGTERM or SIGINT: what the `gyre` binary (and the layer
/// ladder's node process) pass to [`run`].
pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

/// Runs a node until `signal` resolves, then shuts it down gracefully.
pub async fn run(cfg: NodeConfig, signal: impl Future<Output = ()>) -> Result<()> {
    let node = Node::start(cfg).await?;
    info!(admin = %node.admin_addr(), "node is up");
    let mut left = node.shared.membership.left.subscribe();
    tokio::select! {
        _ = signal => {}
        _ = left.wait_for(|l| *l) => info!("decommissioned: the node left the ring"),
    }
    info!("shutting down");
    node.shutdown().await
}

/// Waits (bounded by `gossip.seed_wait_ms`) until gossip taught this node
/// a ring with other members.
async fn wait_for_ring(shared: &Arc<Shared>, seeds: &[SocketAddr]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(shared.cfg.gossip.seed_wait_ms);
    loop {
        let known = {
            let core = shared.core.lock();
            core.ring
                .normal_nodes()
                .any(|n| n.host_id != shared.host_id)
                && !core.gossiper.waiting_for_seeds()
        };
        if known {
            tokio::time::sleep(Duration::from_millis(shared.cfg.gossip.interval_ms)).await;
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Startup(format!(
                "no seed reachable within {} ms (seeds: {seeds:?}); cannot resume the bootstrap",
                shared.cfg.gossip.seed_wait_ms
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// New tokens: alone if this is a seed that finds no ring, else balanced
/// against the ring learned from the seeds. Also says whether a ring of
/// other nodes existed (the node then joins a running cluster).
async fn choose_tokens(
    shared: &Arc<Shared>,
    seeds: &[SocketAddr],
    qp: &QueryProcessor,
) -> Result<(Vec<Token>, bool)> {
    let cfg = &shared.cfg;
    let i_am_seed = seeds.contains(&shared.local);
    let others = seeds.iter().any(|s| *s != shared.local);
    if others {
        // A seed only waits briefly: it may be the first node of the cluster.
        let wait = if i_am_seed {
            Duration::from_millis(cfg.gossip.seed_wait_ms.min(3 * cfg.gossip.interval_ms))
        } else {
            Duration::from_millis(cfg.gossip.seed_wait_ms)
        };
        let deadline = Instant::now() + wait;
        info!(?seeds, "learning the ring from the seeds");
        loop {
            let known = {
                let core = shared.core.lock();
                !core.ring.ring().is_empty() && !core.gossiper.waiting_for_seeds()
            };
            if known {
                // One more round so that states relayed by the seed settle.
                tokio::time::sleep(Duration::from_millis(cfg.gossip.interval_ms)).await;
                break;
            }
            if Instant::now() >= deadline {
                if i_am_seed {
                    info!("no ring learned from other seeds; starting a new ring");
                    break;
                }
                return Err(Error::Startup(format!(
                    "no seed reachable within {} ms (seeds: {seeds:?}); cannot choose tokens",
                    cfg.gossip.seed_wait_ms
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let existing = shared
        .core
        .lock()
        .ring
        .normal_nodes()
        .any(|n| n.host_id != shared.host_id);
    // As Cassandra: the joining node learns the schema before it picks
    // tokens, which are balanced for the replication of its keyspaces.
    if existing {
        let schema_wait = Duration::from_millis(cfg.gossip.seed_wait_ms.max(10_000));
        if !crate::membership::wait_schema_agreement(shared, qp, schema_wait).await {
            warn!("no schema agreement with the cluster before choosing tokens; continuing");
        }
    }
    let (strategy, source) = crate::membership::allocation_strategy(
        qp,
        &cfg.cluster.datacenter,
        cfg.cluster.allocate_tokens_for_local_replication_factor,
    );
    // The search takes up to seconds on large rings: on a copy of the ring,
    // off the core lock and the async workers.
    let ring = shared.core.lock().ring.clone();
    let ring_nodes = ring.normal_nodes().count();
    let seed = shared.host_id.as_u64_pair().0;
    let (dc, rack, num_tokens) = (
        cfg.cluster.datacenter.clone(),
        cfg.cluster.rack.clone(),
        cfg.cluster.num_tokens,
    );
    let replication = strategy.clone();
    let tokens = tokio::task::spawn_blocking(move || {
        ring.allocate_tokens_for_replication(&dc, &rack, num_tokens, seed, &replication)
    })
    .await
    .map_err(|e| Error::Startup(format!("token allocation task failed: {e}")))?;
    info!(
        tokens = tokens.len(),
        ring_nodes,
        replication = ?strategy,
        balanced_for = %source,
        "allocated tokens"
    );
    Ok((tokens, existing))
}

async fn gossip_loop(
    shared: Arc<Shared>,
    mut inbound: mpsc::Receiver<Inbound>,
    mut stop: watch::Receiver<bool>,
) {
    // Ticking faster than the interval keeps conviction timely; rounds still
    // happen once per interval (the gossiper schedules them).
    let tick_ms = (shared.cfg.gossip.interval_ms / 5).clamp(10, 100);
    let mut ticker = tokio::time::interval(Duration::from_millis(tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Rounds without a live seed at which to warn next (first miss, then every 10).
    let mut next_seed_warning = 1;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let out = {
                    let mut core = shared.core.lock();
                    let core = &mut *core;
                    let before = core.gossiper.local_state().map(|s| s.heartbeat);
                    let out = core.gossiper.tick(shared.now_ms());
                    if core.gossiper.local_state().map(|s| s.heartbeat) != before {
                        shared.rounds.fetch_add(1, Ordering::Relaxed);
                    }
                    let waiting = core.gossiper.rounds_without_live_seed();
                    if waiting == 0 {
                        next_seed_warning = 1;
                    } else if waiting >= next_seed_warning {
                        next_seed_warning = waiting + 10;
                        warn!(seeds = ?core.gossiper.config().seeds, rounds = waiting, "no seed reachable");
                    }
                    let ring = shared.absorb_events(core);
                    (out, ring)
                };
                let (out, ring) = out;
                shared.publish_ring(ring);
                shared.send(out);
            }
            msg = inbound.recv() => {
                let Some(msg) = msg else { return };
                let decoded: GossipMessage = match serde_json::from_slice(&msg.payload) {
                    Ok(m) => m,
                    Err(e) => {
                        shared.decode_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(from = %msg.from, error = %e, "undecodable gossip message");
                        continue;
                    }
                };
                let out = {
                    let mut core = shared.core.lock();
                    let core = &mut *core;
                    let out = core.gossiper.step(msg.from, decoded, shared.now_ms());
                    let ring = shared.absorb_events(core);
                    (out, ring)
                };
                let (out, ring) = out;
                shared.publish_ring(ring);
                shared.send(out);
            }
            _ = stop.changed() => return,
        }
    }
}

async fn load_loop(
    shared: Arc<Shared>,
    data_dir: std::path::PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOAD_PERIOD) => {}
            _ = stop.changed() => return,
        }
        let dir = data_dir.clone();
        if let Ok(bytes) = tokio::task::spawn_blocking(move || dir_size(&dir)).await {
            shared.set_local_state(AppStateKey::Load, bytes.to_string());
        }
    }
}

/// Bytes of all files under `dir` (best effort: unreadable entries count 0).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
