//! `removenode`: taking a dead node out of the ring, as `nodetool
//! removenode` does. The node it is asked of coordinates: it refuses a live
//! node (Cassandra's message), then asks every live ring member
//! (REMOVE_PREPARE, itself included) to mark the dead node as leaving (its
//! ranges' new owners become pending replicas, so writes reach them) and to
//! stream, from the remaining live replicas, the ranges it will now
//! replicate; once all answered (or `removenode force`), it tells every
//! live member to forget the node (REMOVE_COMMIT: its gossip state turns
//! `removed`, with a version above anything it published, so a peer that
//! missed the commit learns it by gossip and none can gossip the node back;
//! out of the ring; drivers get REMOVED_NODE).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gyre_cluster::{leave_targets, HostId};
use gyre_net::{Inbound, Verb};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::http::Response;
use crate::membership::{is_alive, keyspaces, other_movement};
use crate::node::Shared;
use crate::streaming::{stream_plan, Direction, StreamRange};

/// Mark the host as leaving and stream the ranges this node gains.
pub const REMOVE_PREPARE: Verb = Verb(0x0403);
/// Forget the host.
pub const REMOVE_COMMIT: Verb = Verb(0x0404);

/// How long a member may take to stream its share of a removal.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RemoveMsg {
    host: HostId,
}

/// `POST /removenode` body: a host id, or `force` to finish a removal
/// without waiting for its streams.
#[derive(Debug, Deserialize)]
struct RemoveRequest {
    #[serde(default)]
    host_id: Option<String>,
    #[serde(default)]
    force: bool,
}

/// `GET /removenode`: the removal this node coordinates.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RemovalStatus {
    pub host_id: HostId,
    pub address: String,
    /// `streaming`, `done` or `failed: <why>`.
    pub state: String,
    /// Members that finished streaming their share.
    pub confirmed: Vec<String>,
}

fn set_state(shared: &Shared, f: impl FnOnce(&mut RemovalStatus)) {
    if let Some(s) = shared.membership.removal.lock().as_mut() {
        f(s);
    }
}

/// Starts a removal (or forces the running one); 202, or 400 with why not.
pub(crate) fn start(shared: &Arc<Shared>, body: &[u8]) -> Response {
    let req: RemoveRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Response::text(400, format!("invalid removenode request: {e}\n")),
    };
    if req.force {
        let running = shared
            .membership
            .removal
            .lock()
            .as_ref()
            .is_some_and(|s| s.state == "streaming");
        if !running {
            return Response::text(
                400,
                "No tokens to force removal on, call 'removenode' first\n",
            );
        }
        shared.membership.force_removal.notify_one();
        return Response::text(202, "forcing the removal\n");
    }
    match begin(shared, req.host_id.as_deref().unwrap_or("")) {
        Ok(()) => Response::text(202, "removal started\n"),
        Err(e) => Response::text(400, format!("{e}\n")),
    }
}

fn begin(shared: &Arc<Shared>, host: &str) -> Result<(), String> {
    let host: HostId = host
        .parse()
        .map_err(|_| format!("{host:?} is not a host id"))?;
    if host == shared.host_id {
        return Err("Cannot remove self".into());
    }
    let ring = shared.ring_view.read().clone();
    let Some(info) = ring.node(&host).cloned() else {
        return Err("Host ID not found.".into());
    };
    if is_alive(shared)(host) {
        return Err(format!(
            "Node /{} is alive and owns this ID. Use decommission command to remove it from the ring",
            info.address
        ));
    }
    if shared.cfg.cluster.consistent_rangemovement && other_movement(&ring, host) {
        return Err(
            "Other bootstrapping/leaving/moving nodes detected, cannot remove a node while \
             cluster.consistent_rangemovement is true"
                .into(),
        );
    }
    {
        let mut removal = shared.membership.removal.lock();
        if removal.as_ref().is_some_and(|s| s.state == "streaming") {
            return Err(
                "This node is already processing a removal. Wait for it to complete, \
                        or use 'removenode force' if this has failed."
                    .into(),
            );
        }
        *removal = Some(RemovalStatus {
            host_id: host,
            address: info.address.to_string(),
            state: "streaming".into(),
            confirmed: Vec::new(),
        });
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let result = coordinate(&shared, host, info.address).await;
        if let Err(e) = &result {
            warn!(%host, error = %e, "removenode failed");
        }
        set_state(&shared, |s| {
            s.state = match result {
                Ok(()) => "done".into(),
                Err(e) => format!("failed: {e}"),
            }
        });
    });
    Ok(())
}

async fn coordinate(shared: &Arc<Shared>, host: HostId, addr: SocketAddr) -> Result<(), String> {
    info!(%host, %addr, "removenode: asking every live member to stream its new ranges");
    let payload = Bytes::from(serde_json::to_vec(&RemoveMsg { host }).map_err(|e| e.to_string())?);
    let alive = is_alive(shared);
    let members: Vec<(HostId, SocketAddr)> = shared
        .ring_view
        .read()
        .normal_nodes()
        .filter(|n| n.host_id != host && alive(n.host_id))
        .map(|n| (n.host_id, n.address))
        .collect();
    let prepares = members.iter().map(|(h, a)| {
        let (shared, payload) = (shared.clone(), payload.clone());
        let (h, a) = (*h, *a);
        async move {
            let r = if h == shared.host_id {
                prepare(&shared, host).await
            } else {
                shared
                    .messenger
                    .request(a, REMOVE_PREPARE, payload, PREPARE_TIMEOUT)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            if r.is_ok() {
                set_state(&shared, |s| s.confirmed.push(a.to_string()));
            }
            r.map_err(|e| format!("{a}: {e}"))
        }
    });
    let all = futures::future::join_all(prepares);
    tokio::select! {
        results = all => {
            for r in results {
                r?;
            }
        }
        _ = shared.membership.force_removal.notified() => {
            warn!(%host, "removenode forced: not waiting for the remaining streams");
        }
    }
    for (h, a) in &members {
        if *h == shared.host_id {
            continue;
        }
        if let Err(e) = shared
            .messenger
            .request(*a, REMOVE_COMMIT, payload.clone(), Duration::from_secs(10))
            .await
        {
            warn!(peer = %a, error = %e, "removenode: a member did not confirm forgetting the node");
        }
    }
    shared.mark_removed(addr, host);
    info!(%host, %addr, "removenode: the node is out of the ring");
    Ok(())
}

/// This node's share: mark the host leaving, fetch the ranges it gains.
async fn prepare(shared: &Arc<Shared>, host: HostId) -> Result<(), String> {
    let qp = shared
        .qp
        .get()
        .cloned()
        .ok_or("the node is still starting")?;
    if !shared.mark_removing(host) {
        return Err(format!("host {host} is not a normal ring member here"));
    }
    let ring = shared.ring_view.read().clone();
    let me = shared.host_id;
    let alive = is_alive(shared);
    let mut plan: HashMap<SocketAddr, Vec<StreamRange>> = HashMap::new();
    for (ks, (strategy, tables)) in keyspaces(&qp) {
        for m in leave_targets(&ring, &strategy, host) {
            if !m.peers.contains(&me) {
                continue;
            }
            let old = strategy.natural_replicas(&ring, m.end);
            let source = old
                .iter()
                .find(|h| **h != host && **h != me && alive(**h))
                .and_then(|h| ring.node(h))
                .map(|n| n.address);
            let Some(source) = source else {
                // Only the removed node held it (RF 1, or every other
                // replica down): nothing can be streamed, as in Cassandra.
                warn!(
                    keyspace = %ks, start = m.start, end = m.end,
                    "removenode: no live replica holds this range; its data is lost"
                );
                continue;
            };
            for t in &tables {
                plan.entry(source).or_default().push(StreamRange {
                    table: *t,
                    start: m.start,
                    end: m.end,
                });
            }
        }
    }
    stream_plan(shared, "removenode", Direction::In, plan).await
}

pub(crate) fn register_verbs(shared: &Arc<Shared>) {
    let s = shared.clone();
    shared
        .messenger
        .register(REMOVE_PREPARE, move |msg: Inbound| {
            let Some(responder) = msg.responder else {
                return;
            };
            let member = s.ring_view.read().nodes().any(|n| n.address == msg.from);
            let req = serde_json::from_slice::<RemoveMsg>(&msg.payload);
            let s = s.clone();
            tokio::spawn(async move {
                let r = match (member, req) {
                    (false, _) => Err(format!("{} is not a ring member", msg.from)),
                    (_, Err(e)) => Err(format!("bad removal request: {e}")),
                    (true, Ok(m)) => prepare(&s, m.host).await,
                };
                let _ = match r {
                    Ok(()) => responder.respond(Bytes::new()),
                    Err(e) => responder.respond_error(e),
                };
            });
        });
    let s = shared.clone();
    shared
        .messenger
        .register(REMOVE_COMMIT, move |msg: Inbound| {
            let Some(responder) = msg.responder else {
                return;
            };
            let member = s.ring_view.read().nodes().any(|n| n.address == msg.from);
            let answer = match (member, serde_json::from_slice::<RemoveMsg>(&msg.payload)) {
                (false, _) => Err(format!("{} is not a ring member", msg.from)),
                (_, Err(e)) => Err(format!("bad removal request: {e}")),
                (true, Ok(m)) => {
                    let addr = s.ring_view.read().node(&m.host).map(|n| n.address);
                    if let Some(addr) = addr {
                        s.mark_removed(addr, m.host);
                        info!(host = %m.host, %addr, "removed from the ring (removenode)");
                    }
                    Ok(())
                }
            };
            let _ = match answer {
                Ok(()) => responder.respond(Bytes::new()),
                Err(e) => responder.respond_error(e),
            };
        });
}
