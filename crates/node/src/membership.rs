//! Joining and leaving a running cluster, as Cassandra 4 does it.
//!
//! Bootstrap ([`bootstrap`]): a new node whose seeds are an existing
//! cluster with keyspaces picks its tokens, checks that every range it
//! will replicate has a live source (the replica giving the range up, with
//! `cluster.consistent_rangemovement`), announces STATUS=BOOT with its
//! tokens (peers show it `UJ` and compute pending ranges: their writes go
//! to it too and wait for one more acknowledgement per pending replica,
//! reads never go to it), waits `cluster.ring_delay_ms` so that every
//! coordinator does so, pulls each range (see [`crate::streaming`]), and
//! only then turns NORMAL and starts serving CQL.
//!
//! Decommission ([`start_decommission`], admin `POST /decommission`): the
//! node announces LEAVING (`UL`; the ranges it gives up become pending on
//! their new owners), waits the ring delay, pushes every range it holds to
//! the nodes that take it over, delivers the hints it holds, announces
//! LEFT (peers drop it from the ring and tell drivers REMOVED_NODE), waits
//! for that to spread and stops the process.
//!
//! Replace ([`replace_target`], [`replace`]): a new node started with
//! `cluster.replace_address` takes a dead node's tokens, announces
//! BOOT_REPLACE (a pending replica of the dead node's ranges), streams them
//! from live replicas and turns NORMAL, which drops the dead node from
//! every ring. Cleanup (`POST /cleanup`) rewrites tables without the
//! ranges this node no longer replicates.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gyre_cluster::{
    bootstrap_sources, check_leave, leave_targets, replace_sources, HostId, NodeInfo, NodeStatus,
    RangeMove, ReplicationStrategy, TokenMetadata,
};
use gyre_common::{codec, Token};
use gyre_coordinator::Hint;
use gyre_net::{Inbound, Verb};
use gyre_query::QueryProcessor;
use gyre_storage::Mutation;
use gyre_storage::TableId;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::node::Shared;
use crate::replication::strategy_of;
use crate::streaming::{stream_plan, Direction, StreamRange};

/// Cassandra's refusal when another node is joining or leaving.
const CONCURRENT: &str = "Other bootstrapping/leaving/moving nodes detected, cannot bootstrap \
     while cluster.consistent_rangemovement is true";

/// Leave state of this node.
pub(crate) struct Membership {
    leaving: AtomicBool,
    /// Set once LEFT is announced: the node then stops (see [`crate::node::run`]).
    pub left: watch::Sender<bool>,
    /// What the last decommission did (`GET /decommission`).
    last: Mutex<Option<String>>,
    /// The removal this node coordinates (`removenode`), if any.
    pub removal: Mutex<Option<crate::removenode::RemovalStatus>>,
    /// Wakes a removal waiting for its streams (`removenode force`).
    pub force_removal: tokio::sync::Notify,
    /// The last `rebuild` of this node (see rebuild.rs).
    pub rebuild: Mutex<Option<crate::rebuild::RebuildStatus>>,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            leaving: AtomicBool::new(false),
            left: watch::channel(false).0,
            last: Mutex::new(None),
            removal: Mutex::new(None),
            force_removal: tokio::sync::Notify::new(),
            rebuild: Mutex::new(None),
        }
    }
}

impl Membership {
    pub fn has_left(&self) -> bool {
        *self.left.borrow()
    }
}

#[derive(Serialize)]
pub(crate) struct DecommissionReport {
    pub leaving: bool,
    pub left: bool,
    pub last: Option<String>,
}

pub(crate) fn report(shared: &Shared) -> DecommissionReport {
    DecommissionReport {
        leaving: shared.membership.leaving.load(Ordering::Relaxed),
        left: shared.membership.has_left(),
        last: shared.membership.last.lock().clone(),
    }
}

/// Replicated keyspaces and their tables.
pub(crate) fn keyspaces(
    qp: &QueryProcessor,
) -> BTreeMap<String, (ReplicationStrategy, Vec<TableId>)> {
    let schema = qp.schema();
    let mut out = BTreeMap::new();
    for (name, ks) in schema.keyspaces() {
        if let Some(s) = strategy_of(&ks.replication) {
            let tables = schema.tables_in(name).map(|t| t.id).collect();
            out.insert(name.clone(), (s, tables));
        }
    }
    out
}

/// The replication a new node's tokens are balanced for, and where it came
/// from: that of the cluster's keyspaces (not the system ones) replicated in
/// datacenter `dc`, the one with the highest factor there when they differ
/// (most of the data a node holds is that keyspace's); with none, Cassandra
/// 4's `allocate_tokens_for_local_replication_factor`: `default_rf` replicas
/// in `dc`.
pub(crate) fn allocation_strategy(
    qp: &QueryProcessor,
    dc: &str,
    default_rf: usize,
) -> (ReplicationStrategy, String) {
    let local_rf = |s: &ReplicationStrategy| match s {
        ReplicationStrategy::Simple { rf } => *rf,
        ReplicationStrategy::NetworkTopology { dcs } => dcs.get(dc).copied().unwrap_or(0),
    };
    let mut best: Option<(usize, String, ReplicationStrategy)> = None;
    for (name, (strategy, _)) in keyspaces(qp) {
        if gyre_schema::is_system_keyspace(&name) {
            continue;
        }
        let rf = local_rf(&strategy);
        if rf > 0 && best.as_ref().is_none_or(|(b, _, _)| rf > *b) {
            best = Some((rf, name, strategy));
        }
    }
    match best {
        Some((rf, name, ReplicationStrategy::NetworkTopology { .. })) => (
            ReplicationStrategy::network_topology([(dc, rf)]),
            format!("keyspace {name}"),
        ),
        Some((_, name, simple)) => (simple, format!("keyspace {name}")),
        None => (
            ReplicationStrategy::network_topology([(dc, default_rf)]),
            "cluster.allocate_tokens_for_local_replication_factor".into(),
        ),
    }
}

/// True when the cluster holds a keyspace of its users: a joining node
/// then has data to stream (a node of a cluster being formed does not).
pub(crate) fn has_user_keyspaces(qp: &QueryProcessor) -> bool {
    qp.schema()
        .keyspaces()
        .keys()
        .any(|k| !k.starts_with("system"))
}

/// Waits until every live peer gossips this node's schema version (the
/// sync loop pulls it meanwhile), at most `timeout`.
pub(crate) async fn wait_schema_agreement(
    shared: &Shared,
    qp: &QueryProcessor,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mine = qp.schema_version();
        let agreed = {
            let core = shared.core.lock();
            let g = &core.gossiper;
            let mut peers = g
                .endpoint_states()
                .filter(|(ep, st)| **ep != shared.local && g.is_alive(ep) && !st.is_dead_state())
                .peekable();
            peers.peek().is_some() && peers.all(|(_, st)| st.schema() == Some(mine))
        };
        if agreed {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn local_info(shared: &Shared) -> NodeInfo {
    NodeInfo {
        host_id: shared.host_id,
        address: shared.local,
        dc: shared.cfg.cluster.datacenter.clone(),
        rack: shared.cfg.cluster.rack.clone(),
    }
}

pub(crate) fn is_alive(shared: &Shared) -> impl Fn(HostId) -> bool {
    let live = shared.liveness.load_full();
    move |h| live.live.contains(&h)
}

/// Another node joining or leaving, unless this one.
pub(crate) fn other_movement(ring: &TokenMetadata, me: HostId) -> bool {
    ring.bootstrapping().any(|(h, _)| *h != me)
        || ring.leaving().any(|h| *h != me)
        || ring.replacing().any(|(h, _)| *h != me)
}

/// Waits until gossip sees every ring member up, at most max(2 s, four
/// gossip rounds): a node that just started has heard of its peers but not
/// yet from them, and must not take a live source for a dead one.
async fn settle_liveness(shared: &Shared) {
    let settle = Duration::from_millis((4 * shared.cfg.gossip.interval_ms).max(2000));
    let deadline = Instant::now() + settle;
    while Instant::now() < deadline {
        let alive = is_alive(shared);
        if shared.ring_view.read().nodes().all(|n| alive(n.host_id)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per source node: the ranges of each table to fetch from it.
fn bootstrap_plan(
    shared: &Shared,
    qp: &QueryProcessor,
    tokens: &[Token],
) -> Result<HashMap<SocketAddr, Vec<StreamRange>>, String> {
    let ring = shared.ring_view.read().clone();
    let me = local_info(shared);
    let alive = is_alive(shared);
    let strict = shared.cfg.cluster.consistent_rangemovement;
    let mut out: HashMap<SocketAddr, Vec<StreamRange>> = HashMap::new();
    for (ks, (strategy, tables)) in keyspaces(qp) {
        if tables.is_empty() {
            continue;
        }
        let moves = bootstrap_sources(&ring, &strategy, &me, tokens, &alive, strict)
            .map_err(|e| format!("keyspace {ks}: {e}"))?;
        add_moves(&mut out, &ring, &moves, &tables);
    }
    Ok(out)
}

/// Adds each move's range of every table to the plan of each of its peers.
fn add_moves(
    plan: &mut HashMap<SocketAddr, Vec<StreamRange>>,
    ring: &TokenMetadata,
    moves: &[RangeMove],
    tables: &[TableId],
) {
    for m in moves {
        for addr in m
            .peers
            .iter()
            .filter_map(|h| ring.node(h))
            .map(|n| n.address)
        {
            plan.entry(addr)
                .or_default()
                .extend(tables.iter().map(|t| StreamRange {
                    table: *t,
                    start: m.start,
                    end: m.end,
                }));
        }
    }
}

/// Streams this node's future ranges in before it turns NORMAL (see the
/// module docs). Errors leave the node out of service; the caller fails
/// the start, and a restart bootstraps again, skipping the ranges received
/// before (`<data_dir>/bootstrap_ranges.json`).
pub(crate) async fn bootstrap(
    shared: &Arc<Shared>,
    qp: &QueryProcessor,
    tokens: &[Token],
) -> Result<(), String> {
    let strict = shared.cfg.cluster.consistent_rangemovement;
    if strict && other_movement(&shared.ring_view.read(), shared.host_id) {
        return Err(CONCURRENT.into());
    }
    // Refuse before announcing anything when a source is down; but a node
    // that just (re)started learns who is up from gossip's echoes first.
    settle_liveness(shared).await;
    bootstrap_plan(shared, qp, tokens)?;
    shared.set_ring_status(NodeStatus::Bootstrapping, tokens);
    let delay = Duration::from_millis(shared.cfg.cluster.ring_delay_ms);
    info!(
        ring_delay_ms = delay.as_millis() as u64,
        "announced BOOT (joining); waiting for the ring to settle"
    );
    tokio::time::sleep(delay).await;
    let plan = bootstrap_plan(shared, qp, tokens)?;
    let total: usize = plan.values().map(Vec::len).sum();
    info!(
        sources = plan.len(),
        ranges = total,
        "bootstrap streaming starts"
    );
    let started = Instant::now();
    stream_plan(shared, "bootstrap", Direction::In, plan).await?;
    let bytes: u64 = shared.streams.list().iter().map(|s| s.bytes).sum();
    info!(
        secs = started.elapsed().as_secs_f64(),
        bytes, "bootstrap streaming finished"
    );
    Ok(())
}

/// The dead node a replacement (`cluster.replace_address`) takes over, and
/// its tokens; Cassandra's refusals for an unknown or live address.
pub(crate) async fn replace_target(
    shared: &Arc<Shared>,
    ip: IpAddr,
) -> Result<(HostId, Vec<Token>), String> {
    if ip == shared.local.ip() {
        return Err(format!(
            "Cannot replace_address /{ip}: it is this node's own address; start the \
             replacement on a new address"
        ));
    }
    let target = shared
        .ring_view
        .read()
        .normal_nodes()
        .find(|n| n.address.ip() == ip && n.host_id != shared.host_id)
        .map(|n| n.host_id);
    let Some(old) = target else {
        return Err(format!(
            "Cannot replace_address /{ip} because it doesn't exist in gossip"
        ));
    };
    // A live node answers gossip's echo within a round or two: give it a
    // few before believing it dead.
    let settle = Duration::from_millis((4 * shared.cfg.gossip.interval_ms).max(2000));
    let deadline = Instant::now() + settle;
    while Instant::now() < deadline {
        if is_alive(shared)(old) {
            return Err(LIVE_REPLACE.replace("{ip}", &ip.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tokens = shared.ring_view.read().tokens_of(&old).to_vec();
    if tokens.is_empty() {
        return Err(format!("Could not find tokens for /{ip} to replace"));
    }
    Ok((old, tokens))
}

/// Cassandra's refusal to replace a node that is up.
const LIVE_REPLACE: &str = "Cannot replace a live node /{ip}. Stop it first.";

/// Joins in place of the dead `old` with its `tokens`: announces
/// BOOT_REPLACE (peers make this node a pending replica of `old`'s ranges:
/// writes, never reads), waits the ring delay, streams each of those ranges
/// from a live replica. The caller then announces NORMAL, which takes the
/// tokens over and drops `old` from every ring.
pub(crate) async fn replace(
    shared: &Arc<Shared>,
    qp: &QueryProcessor,
    old: HostId,
    tokens: &[Token],
) -> Result<(), String> {
    let addr = shared
        .ring_view
        .read()
        .node(&old)
        .map(|n| n.address.ip().to_string())
        .unwrap_or_else(|| old.to_string());
    shared.set_replacing(old, tokens);
    let delay = Duration::from_millis(shared.cfg.cluster.ring_delay_ms);
    info!(
        replaced = %addr, %old,
        ring_delay_ms = delay.as_millis() as u64,
        "announced BOOT_REPLACE; waiting for the ring to settle"
    );
    tokio::time::sleep(delay).await;
    if is_alive(shared)(old) {
        return Err(LIVE_REPLACE.replace("{ip}", &addr));
    }
    let ring = shared.ring_view.read().clone();
    let alive = is_alive(shared);
    let mut plan: HashMap<SocketAddr, Vec<StreamRange>> = HashMap::new();
    for (ks, (strategy, tables)) in keyspaces(qp) {
        if tables.is_empty() {
            continue;
        }
        let (moves, lost) = replace_sources(&ring, &strategy, old, shared.host_id, &alive);
        for (start, end) in lost {
            warn!(
                keyspace = %ks, start, end,
                "replace: no live replica holds this range; its data is lost"
            );
        }
        add_moves(&mut plan, &ring, &moves, &tables);
    }
    let total: usize = plan.values().map(Vec::len).sum();
    info!(
        sources = plan.len(),
        ranges = total,
        "replace streaming starts"
    );
    let started = Instant::now();
    stream_plan(shared, "replace", Direction::In, plan).await?;
    info!(
        secs = started.elapsed().as_secs_f64(),
        "replace streaming finished"
    );
    Ok(())
}

/// Starts a decommission of this node, or says why it may not leave.
pub(crate) fn start_decommission(shared: &Arc<Shared>) -> Result<(), String> {
    let Some(qp) = shared.qp.get().cloned() else {
        return Err("the node is still starting".into());
    };
    let ring = shared.ring_view.read().clone();
    if !ring.is_normal(&shared.host_id) || shared.membership.has_left() {
        return Err("Node is not in the ring as NORMAL; cannot decommission".into());
    }
    if shared.membership.leaving.load(Ordering::Relaxed) {
        return Err("This node is already leaving".into());
    }
    if shared.cfg.cluster.consistent_rangemovement && other_movement(&ring, shared.host_id) {
        return Err(CONCURRENT.replace("bootstrap", "decommission"));
    }
    let strategies: BTreeMap<String, ReplicationStrategy> = keyspaces(&qp)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("system"))
        .map(|(k, (s, _))| (k, s))
        .collect();
    check_leave(&ring, &strategies, shared.host_id)?;
    if shared.membership.leaving.swap(true, Ordering::SeqCst) {
        return Err("This node is already leaving".into());
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let result = decommission(&shared, &qp).await;
        match &result {
            Ok(()) => {
                *shared.membership.last.lock() = Some("LEFT".into());
            }
            Err(e) => {
                error!(error = %e, "decommission failed; the node returns to NORMAL");
                *shared.membership.last.lock() = Some(format!("failed: {e}"));
                let tokens = shared.ring_view.read().tokens_of(&shared.host_id).to_vec();
                shared.set_ring_status(NodeStatus::Normal, &tokens);
                shared.membership.leaving.store(false, Ordering::SeqCst);
            }
        }
    });
    Ok(())
}

async fn decommission(shared: &Arc<Shared>, qp: &QueryProcessor) -> Result<(), String> {
    let tokens = shared.ring_view.read().tokens_of(&shared.host_id).to_vec();
    shared.set_ring_status(NodeStatus::Leaving, &tokens);
    let delay = Duration::from_millis(shared.cfg.cluster.ring_delay_ms);
    info!(
        ring_delay_ms = delay.as_millis() as u64,
        "announced LEAVING; waiting for the ring to settle"
    );
    tokio::time::sleep(delay).await;
    // The ring without the leaving state: who replicates what now.
    let ring = shared.ring_view.read().clone();
    let mut plan: HashMap<SocketAddr, Vec<StreamRange>> = HashMap::new();
    for (_, (strategy, tables)) in keyspaces(qp) {
        add_moves(
            &mut plan,
            &ring,
            &leave_targets(&ring, &strategy, shared.host_id),
            &tables,
        );
    }
    let alive = is_alive(shared);
    for addr in plan.keys() {
        let host = ring.nodes().find(|n| n.address == *addr).map(|n| n.host_id);
        if host.is_some_and(|h| !alive(h)) {
            return Err(format!(
                "node {addr}, a new owner of this node's ranges, is down; cannot decommission"
            ));
        }
    }
    // Memtables first: the data then streams from SSTables' snapshot
    // (reads see both anyway; this bounds what a crash mid-stream replays).
    let engine = shared.engine.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || engine.flush(None)).await {
        warn!(error = %e, "flush before decommission failed");
    }
    let total: usize = plan.values().map(Vec::len).sum();
    info!(
        targets = plan.len(),
        ranges = total,
        "decommission streaming starts"
    );
    stream_plan(shared, "decommission", Direction::Out, plan).await?;
    info!("decommission streaming finished; handing off hints");
    hand_off_hints(shared).await;
    // Remembered before LEFT goes out: a restart on this data is refused.
    let data_dir = &shared.cfg.storage.data_dir;
    crate::state::NodeState::load_or_new(data_dir)
        .and_then(|mut st| {
            st.decommissioned = true;
            st.save(data_dir)
        })
        .map_err(|e| format!("cannot record the decommission: {e}"))?;
    shared.set_ring_status(NodeStatus::Left, &tokens);
    info!("announced LEFT; stopping after the ring delay");
    // Give gossip time to spread LEFT before this node stops answering.
    tokio::time::sleep(delay.max(Duration::from_millis(4 * shared.cfg.gossip.interval_ms))).await;
    let _ = shared.membership.left.send(true);
    Ok(())
}

/// Hints handed to another node by a leaving one: stored there as hints.
pub const HINT_HANDOFF: Verb = Verb(0x0402);

/// One hint file's hints: count, then per hint target, write time and the
/// encoded mutation.
fn encode_hints(hints: &[Hint]) -> Bytes {
    let mut out = Vec::new();
    codec::put_uvarint(&mut out, hints.len() as u64);
    for h in hints {
        out.extend_from_slice(h.target.as_bytes());
        codec::put_varint(&mut out, h.write_time);
        codec::put_bytes(
            &mut out,
            Mutation::new(h.table, h.mutation.clone()).encoded(),
        );
    }
    Bytes::from(out)
}

fn decode_hints(b: &Bytes) -> Result<Vec<Hint>, String> {
    let e = |e: codec::DecodeError| e.to_string();
    let mut r = codec::Reader::new(b);
    let n = r.uvarint().map_err(e)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let mut id = [0u8; 16];
        for byte in &mut id {
            *byte = r.u8().map_err(e)?;
        }
        let write_time = r.varint().map_err(e)?;
        let m = Mutation::decode(&r.bytes().map_err(e)?).map_err(|e| e.to_string())?;
        out.push(Hint {
            target: HostId::from_bytes(id),
            table: m.table(),
            mutation: m.into_update(),
            write_time,
        });
    }
    Ok(out)
}

/// Stores hints a leaving ring member hands over.
pub(crate) fn register_verbs(shared: &Arc<Shared>) {
    let s = shared.clone();
    shared
        .messenger
        .register(HINT_HANDOFF, move |msg: Inbound| {
            let Some(responder) = msg.responder else {
                return;
            };
            let member = s.ring_view.read().nodes().any(|n| n.address == msg.from);
            let answer = match (member, s.hint_store.get()) {
                (false, _) => Err(format!("{} is not a ring member", msg.from)),
                (true, None) => Err("hints are disabled on this node".to_string()),
                (true, Some(store)) => decode_hints(&msg.payload)
                    .and_then(|h| store.store(&h).map_err(|e| e.to_string())),
            };
            let _ = match answer {
                Ok(_) => responder.respond(Bytes::new()),
                Err(e) => responder.respond_error(e),
            };
        });
}

/// Before leaving: delivers the hints of live targets, and hands those of
/// down targets to a live peer that keeps them as its own hints.
async fn hand_off_hints(shared: &Arc<Shared>) {
    let (Some(c), Some(store)) = (shared.coordinator.get(), shared.hint_store.get()) else {
        return;
    };
    let hosts = match c.hinted_hosts() {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "cannot list hints to hand off");
            return;
        }
    };
    let alive = is_alive(shared);
    let heir = shared
        .ring_view
        .read()
        .normal_nodes()
        .find(|n| n.host_id != shared.host_id && alive(n.host_id))
        .map(|n| n.address);
    for host in hosts {
        if alive(host) {
            match c.deliver_hints(host).await {
                Ok(n) => info!(%host, delivered = n, "hints delivered before leaving"),
                Err(e) => warn!(%host, error = %e, "hint delivery before leaving failed"),
            }
            continue;
        }
        let Some(heir) = heir else {
            warn!(%host, "no live node to hand hints to; they are lost with this node");
            continue;
        };
        let files = match store.replay_files(host) {
            Ok(f) => f,
            Err(e) => {
                warn!(%host, error = %e, "cannot list hint files");
                continue;
            }
        };
        for f in files {
            let sent = match store.read_file(&f) {
                Ok(hints) => shared
                    .messenger
                    .request(
                        heir,
                        HINT_HANDOFF,
                        encode_hints(&hints),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(_) => {
                    let _ = store.acknowledge(&f);
                }
                Err(e) => warn!(%host, %heir, error = %e, "hint hand-off failed"),
            }
        }
        info!(%host, %heir, "hints handed off");
    }
}

/// `POST /cleanup` body: one keyspace, or every keyspace of the users.
#[derive(Debug, Default, serde::Deserialize)]
struct CleanupRequest {
    #[serde(default)]
    keyspace: Option<String>,
}

/// What a cleanup freed, per table.
#[derive(Debug, Serialize)]
pub(crate) struct TableCleanup {
    pub keyspace: String,
    pub table: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// `nodetool cleanup`: rewrites each table of the keyspace(s) without the
/// partitions of ranges this node no longer replicates (after a join took
/// them over), through the engine's compaction (see
/// `StorageEngine::cleanup`). Refused, as Cassandra, for system keyspaces
/// and while the ring has pending ranges.
fn cleanup(shared: &Shared, body: &[u8]) -> Result<Vec<TableCleanup>, String> {
    let req: CleanupRequest = if body.is_empty() {
        CleanupRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| format!("invalid cleanup request: {e}"))?
    };
    let qp = shared.qp.get().ok_or("the node is still starting")?;
    let all = keyspaces(qp);
    let chosen: Vec<String> = match &req.keyspace {
        Some(ks) if ks.starts_with("system") => {
            return Err(format!(
                "Cleanup of the {ks} keyspace is neither necessary nor possible."
            ))
        }
        Some(ks) if !all.contains_key(ks) => {
            return Err(format!("Keyspace [{ks}] does not exist."))
        }
        Some(ks) => vec![ks.clone()],
        None => all
            .keys()
            .filter(|k| !k.starts_with("system"))
            .cloned()
            .collect(),
    };
    let ring = shared.ring_view.read().clone();
    if ring.has_pending() {
        return Err(
            "Node is involved in cluster membership changes. Not safe to run cleanup.".into(),
        );
    }
    let me = shared.host_id;
    let schema = qp.schema();
    let mut out = Vec::new();
    for ks in chosen {
        let Some((strategy, _)) = all.get(&ks) else {
            continue;
        };
        let plan = gyre_cluster::ReplicaPlan::build(&ring, strategy);
        let keep = |t: Token| plan.natural(t).contains(&me);
        for t in schema.tables_in(&ks) {
            let size = |id| shared.engine.table_stats(id).map(|s| s.disk_bytes);
            // Flushed first, so that before and after compare files.
            let before = shared
                .engine
                .flush(Some(t.id))
                .and_then(|()| size(t.id))
                .map_err(|e| e.to_string())?;
            shared
                .engine
                .cleanup(t.id, &keep)
                .map_err(|e| format!("cleanup of {ks}.{} failed: {e}", t.name))?;
            let after = size(t.id).map_err(|e| e.to_string())?;
            info!(keyspace = %ks, table = %t.name, before, after, "cleanup done");
            out.push(TableCleanup {
                keyspace: ks.clone(),
                table: t.name.clone(),
                bytes_before: before,
                bytes_after: after,
            });
        }
    }
    Ok(out)
}

/// The membership routes of the admin endpoint.
pub(crate) fn admin(
    shared: &Arc<Shared>,
    method: &str,
    path: &str,
    body: &[u8],
) -> crate::http::Response {
    use crate::http::Response;
    let json = |v: serde_json::Result<Vec<u8>>| match v {
        Ok(body) => Response::json(200, body),
        Err(e) => Response::text(500, e.to_string()),
    };
    match (method, path) {
        ("POST", "/decommission") => match start_decommission(shared) {
            Ok(()) => Response::text(202, "decommission started\n"),
            Err(e) => Response::text(400, format!("{e}\n")),
        },
        ("GET", "/decommission") => json(serde_json::to_vec_pretty(&report(shared))),
        ("POST", "/removenode") => crate::removenode::start(shared, body),
        ("GET", "/removenode") => json(serde_json::to_vec_pretty(
            &shared.membership.removal.lock().clone(),
        )),
        ("GET", "/streams") => json(serde_json::to_vec_pretty(&shared.streams.list())),
        ("GET", "/ring") => json(serde_json::to_vec_pretty(&crate::ring_info::ring(shared))),
        ("POST", "/describering") => match crate::ring_info::describe_ring(shared, body) {
            Ok(r) => json(serde_json::to_vec_pretty(&r)),
            Err(e) => Response::text(400, format!("{e}\n")),
        },
        ("POST", "/getendpoints") => match crate::ring_info::get_endpoints(shared, body) {
            Ok(r) => json(serde_json::to_vec_pretty(&r)),
            Err(e) => Response::text(400, format!("{e}\n")),
        },
        ("POST", "/cleanup") => match cleanup(shared, body) {
            Ok(report) => json(serde_json::to_vec_pretty(&report)),
            Err(e) => Response::text(400, format!("{e}\n")),
        },
        _ => Response::text(405, "method not allowed\n"),
    }
}
