//! `rebuild SOURCE_DC` (admin `POST /rebuild`), as `nodetool rebuild`:
//! a node streams the ranges it replicates, in every keyspace (or one),
//! from the replicas of those ranges in the source datacenter. This is how
//! a datacenter added to a running cluster gets its data: its nodes start
//! with `auto_bootstrap = false` (NORMAL at once, empty), the keyspaces are
//! altered to replicate to it, then each of its nodes rebuilds from an
//! existing datacenter. Reads in the new datacenter at LOCAL_* levels miss
//! data until then, as in Cassandra.
//!
//! Per range, the source is one live natural replica in the source
//! datacenter (spread over them by the range's end token); a range none of
//! whose replicas lives there (a SimpleStrategy keyspace, or a keyspace
//! not replicated in that datacenter) is skipped and counted; a range whose
//! replicas there are all down fails the rebuild before anything streams.
//! The data travels through [`crate::streaming::stream_plan`] (operation
//! `rebuild`, shown by `GET /streams`), and is idempotent: a failed rebuild
//! is simply run again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use gyre_cluster::ReplicaPlan;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::http::Response;
use crate::membership::{is_alive, keyspaces};
use crate::node::Shared;
use crate::streaming::{stream_plan, Direction, StreamRange};

/// `POST /rebuild` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RebuildRequest {
    source_dc: String,
    #[serde(default)]
    keyspace: Option<String>,
}

/// What one keyspace's rebuild fetches.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct KeyspaceRebuild {
    pub keyspace: String,
    /// Ranges (of all the keyspace's tables together) fetched.
    pub ranges: usize,
    /// Distinct source nodes.
    pub sources: usize,
    /// Ranges this node replicates that no node of the source DC does.
    pub skipped: usize,
}

/// `GET /rebuild`: the last rebuild of this node.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RebuildStatus {
    pub source_dc: String,
    /// `streaming`, `done` or `failed: <why>`.
    pub state: String,
    pub keyspaces: Vec<KeyspaceRebuild>,
    /// Bytes received by this rebuild's sessions.
    pub bytes: u64,
    pub seconds: f64,
}

/// Per source: the ranges to pull, and what each keyspace contributes.
type Plan = (HashMap<SocketAddr, Vec<StreamRange>>, Vec<KeyspaceRebuild>);

/// The rebuild's plan, or why it cannot run (Cassandra's messages where it
/// has them).
fn plan(shared: &Shared, req: &RebuildRequest) -> Result<Plan, String> {
    let qp = shared.qp.get().ok_or("the node is still starting")?;
    let ring = shared.ring_view.read().clone();
    if !ring.is_normal(&shared.host_id) {
        return Err("Node is not in the ring as NORMAL; cannot rebuild".into());
    }
    let dcs: Vec<&str> = ring.topology().keys().copied().collect();
    if !dcs.contains(&req.source_dc.as_str()) {
        return Err(format!(
            "Provided datacenter '{}' is not a valid datacenter, available datacenters are: {}",
            req.source_dc,
            dcs.join(",")
        ));
    }
    let mut all = keyspaces(qp);
    if let Some(ks) = &req.keyspace {
        if !all.contains_key(ks) {
            return Err(format!("Keyspace [{ks}] does not exist."));
        }
        all.retain(|k, _| k == ks);
    }
    let alive = is_alive(shared);
    let me = shared.host_id;
    let mut out: HashMap<SocketAddr, Vec<StreamRange>> = HashMap::new();
    let mut report = Vec::new();
    for (ks, (strategy, tables)) in all {
        let rplan = ReplicaPlan::build(&ring, &strategy);
        let mut k = KeyspaceRebuild {
            keyspace: ks.clone(),
            ranges: 0,
            sources: 0,
            skipped: 0,
        };
        let mut sources = std::collections::BTreeSet::new();
        for r in rplan.ranges().iter().filter(|r| r.natural.contains(&me)) {
            let candidates: Vec<_> = r
                .natural
                .iter()
                .filter(|h| **h != me)
                .filter_map(|h| ring.node(h))
                .filter(|n| n.dc == req.source_dc)
                .collect();
            if candidates.is_empty() {
                k.skipped += 1;
                continue;
            }
            // Spread the ranges over the source DC's replicas.
            let first = (r.end as u64 % candidates.len() as u64) as usize;
            let Some(src) = (0..candidates.len())
                .map(|i| candidates[(first + i) % candidates.len()])
                .find(|n| alive(n.host_id))
            else {
                let down: Vec<String> = candidates.iter().map(|n| n.address.to_string()).collect();
                return Err(format!(
                    "unable to find a live source in {} for range ({}, {}] of keyspace {ks}: \
                     {} down",
                    req.source_dc,
                    r.start,
                    r.end,
                    down.join(", ")
                ));
            };
            sources.insert(src.address);
            k.ranges += 1;
            out.entry(src.address)
                .or_default()
                .extend(tables.iter().map(|t| StreamRange {
                    table: *t,
                    start: r.start,
                    end: r.end,
                }));
        }
        k.sources = sources.len();
        if k.ranges > 0 || k.skipped > 0 {
            report.push(k);
        }
    }
    Ok((out, report))
}

/// Starts a rebuild; 202, or 400 with why not.
fn start(shared: &Arc<Shared>, body: &[u8]) -> Response {
    let req: RebuildRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Response::text(400, format!("invalid rebuild request: {e}\n")),
    };
    if shared.membership.has_left() {
        return Response::text(400, "this node has left the ring\n");
    }
    let (plan, keyspaces) = {
        let mut slot = shared.membership.rebuild.lock();
        if slot.as_ref().is_some_and(|s| s.state == "streaming") {
            return Response::text(400, "Node is still rebuilding. Check nodetool netstats.\n");
        }
        let (plan, keyspaces) = match plan(shared, &req) {
            Ok(p) => p,
            Err(e) => return Response::text(400, format!("{e}\n")),
        };
        *slot = Some(RebuildStatus {
            source_dc: req.source_dc.clone(),
            state: "streaming".into(),
            keyspaces: keyspaces.clone(),
            bytes: 0,
            seconds: 0.0,
        });
        (plan, keyspaces)
    };
    let ranges: usize = keyspaces.iter().map(|k| k.ranges).sum();
    info!(
        source_dc = %req.source_dc,
        sources = plan.len(),
        ranges,
        "rebuild streaming starts"
    );
    let shared = shared.clone();
    let body = serde_json::to_vec_pretty(&*shared.membership.rebuild.lock());
    tokio::spawn(async move {
        let before = shared.streams.list().iter().map(|s| s.id).max();
        let t0 = Instant::now();
        let result = stream_plan(&shared, "rebuild", Direction::In, plan).await;
        let bytes = shared
            .streams
            .list()
            .iter()
            .filter(|s| s.operation == "rebuild" && Some(s.id) > before)
            .map(|s| s.bytes)
            .sum();
        let seconds = t0.elapsed().as_secs_f64();
        match &result {
            Ok(()) => info!(source_dc = %req.source_dc, bytes, seconds, "rebuild finished"),
            Err(e) => error!(source_dc = %req.source_dc, error = %e, "rebuild failed"),
        }
        if let Some(s) = shared.membership.rebuild.lock().as_mut() {
            s.state = match result {
                Ok(()) => "done".into(),
                Err(e) => format!("failed: {e}"),
            };
            s.bytes = bytes;
            s.seconds = seconds;
        }
    });
    match body {
        Ok(b) => Response::json(202, b),
        Err(e) => Response::text(500, e.to_string()),
    }
}

/// `POST /rebuild` and `GET /rebuild`.
pub(crate) fn admin(shared: &Arc<Shared>, method: &str, body: &[u8]) -> Response {
    match method {
        "POST" => start(shared, body),
        "GET" => match serde_json::to_vec_pretty(&*shared.membership.rebuild.lock()) {
            Ok(b) => Response::json(200, b),
            Err(e) => Response::text(500, e.to_string()),
        },
        _ => Response::text(405, "method not allowed\n"),
    }
}
