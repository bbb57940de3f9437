//! The admin HTTP endpoint: `GET /status` (JSON; `GET /status/KEYSPACE`
//! with effective ownership for that keyspace), `GET /metrics`
//! (Prometheus text), `POST /faults` and `DELETE /faults` (messaging fault
//! rules, for chaos tests), `POST /flush` and `POST /compact` (every table),
//! `POST /clock` (write-timestamp offset in ms, for the chaos clock fault),
//! `POST /digest` (a digest of one table's local data; see `digest.rs`),
//! `POST`, `GET` and `DELETE /failpoints` (storage failpoints such as
//! `commitlog::fsync`, in binaries built with the `failpoints` feature),
//! and the snapshot routes of `snapshots.rs`: `POST /snapshot`,
//! `GET /snapshots`, `POST /snapshots/clear`, `POST /import`, and
//! `GET /compactionstats` (per table: pending work, the running merge),
//! `GET /indexbuilds` (secondary index builds over existing data),
//! `POST` / `GET /traceprobability` (the share of requests traced),
//! `POST` / `GET /rebuild` (stream this node's ranges from another
//! datacenter; see `rebuild.rs`).
//!
//! Every request passes [`guard`] first: the `Host` header must name an IP
//! literal or `localhost` (a DNS-rebinding page has its own domain there),
//! the bearer token must match when `admin.token` is set, POST and DELETE
//! must be `application/json` (a cross-site form cannot send that without
//! a CORS preflight, which this server never grants) with a JSON body, and
//! the fault-injection routes answer 403 unless
//! `admin.allow_fault_injection` is on.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use gyre_net::FaultRules;
use gyre_storage::failpoints;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::{self, Request, Response};
use crate::node::{Shared, GOSSIP_VERB};
use crate::status::{EndpointReport, StatusReport};

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, stop: watch::Receiver<bool>) {
    let handler = Arc::new(move |req: Request| route(&shared, req));
    http::serve(listener, handler, stop).await;
}

fn route(shared: &Arc<Shared>, req: Request) -> Response {
    if let Some(refused) = guard(&shared.cfg.admin, &req) {
        return refused;
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/status") => match serde_json::to_vec_pretty(&status(shared, None)) {
            Ok(body) => Response::json(200, body),
            Err(e) => Response::text(500, e.to_string()),
        },
        // `nodetool status KEYSPACE`: effective ownership for that keyspace.
        ("GET", p) if p.starts_with("/status/") => {
            let keyspace = &p["/status/".len()..];
            match effective_ownership(shared, Some(keyspace)) {
                Err(e) => Response::text(400, format!("{e}\n")),
                Ok(owns) => match serde_json::to_vec_pretty(&status(shared, Some(owns))) {
                    Ok(body) => Response::json(200, body),
                    Err(e) => Response::text(500, e.to_string()),
                },
            }
        }
        ("GET", "/metrics") => Response::text(200, metrics(shared)),
        ("POST", "/faults") => match serde_json::from_slice::<FaultRules>(&req.body) {
            Ok(rules) => match shared.messenger.set_faults(rules) {
                Ok(()) => {
                    tracing::warn!(rules = ?shared.messenger.faults(), "fault rules set");
                    Response::text(200, "ok\n")
                }
                Err(e) => Response::text(400, format!("{e}\n")),
            },
            Err(e) => Response::text(400, format!("invalid fault rules: {e}\n")),
        },
        ("DELETE", "/faults") => {
            shared.messenger.clear_faults();
            tracing::info!("fault rules cleared");
            Response::text(200, "ok\n")
        }
        ("GET", "/faults") => match serde_json::to_vec_pretty(&shared.messenger.faults()) {
            Ok(body) => Response::json(200, body),
            Err(e) => Response::text(500, e.to_string()),
        },
        // Storage operations, for chaos runs: run inline (they block this
        // admin request only; the admin server runs each request apart).
        ("POST", "/flush") => match shared.engine.flush(None) {
            Ok(()) => Response::text(200, "ok\n"),
            Err(e) => Response::text(500, format!("flush failed: {e}\n")),
        },
        ("POST", "/compact") => {
            let mut failed = Vec::new();
            for (t, _) in shared.engine.tables() {
                if let Err(e) = shared.engine.compact(t) {
                    failed.push(format!("{t}: {e}"));
                }
            }
            if failed.is_empty() {
                Response::text(200, "ok\n")
            } else {
                Response::text(500, format!("compaction failed: {}\n", failed.join("; ")))
            }
        }
        ("POST", "/clock") => {
            let text = String::from_utf8_lossy(&req.body);
            match text.trim().parse::<i64>() {
                Ok(ms) => match shared.qp.get() {
                    Some(qp) => {
                        qp.set_clock_offset(ms.saturating_mul(1000));
                        tracing::warn!(offset_ms = ms, "write clock offset set");
                        Response::text(200, "ok\n")
                    }
                    None => Response::text(503, "starting\n"),
                },
                Err(_) => Response::text(400, "body must be the offset in milliseconds\n"),
            }
        }
        ("POST", "/digest") => match serde_json::from_slice::<crate::DigestRequest>(&req.body) {
            Ok(r) => match crate::digest::table_digest(shared, &r) {
                Ok(d) => match serde_json::to_vec_pretty(&d) {
                    Ok(body) => Response::json(200, body),
                    Err(e) => Response::text(500, e.to_string()),
                },
                Err(e) => Response::text(400, format!("{e}\n")),
            },
            Err(e) => Response::text(400, format!("invalid digest request: {e}\n")),
        },
        // nodetool settraceprobability / gettraceprobability.
        ("POST", "/traceprobability") => match serde_json::from_slice::<f64>(&req.body) {
            Ok(p) => match shared.tracer.set_probability(p) {
                Ok(()) => {
                    tracing::info!(probability = p, "trace probability set");
                    Response::text(200, "ok\n")
                }
                Err(e) => Response::text(400, format!("{e}\n")),
            },
            Err(_) => Response::text(400, "the body must be a number between 0 and 1\n"),
        },
        ("GET", "/traceprobability") => Response::text(200, format!("{}\n", shared.tracer.probability())),
        // Snapshots: inline like flush (a snapshot flushes first).
        ("POST", "/snapshot") => crate::snapshots::take(shared, &req.body),
        ("GET", "/snapshots") => crate::snapshots::list(shared),
        ("POST", "/snapshots/clear") => crate::snapshots::clear(shared, &req.body),
        ("POST", "/import") => crate::snapshots::import(shared, &req.body),
        ("GET", "/indexbuilds") => {
            let names: std::collections::HashMap<_, _> =
                shared.engine.tables().into_iter().map(|(id, o)| (id, o.name)).collect();
            let builds: Vec<serde_json::Value> = shared
                .engine
                .index_builds()
                .into_iter()
                .map(|(id, b)| {
                    serde_json::json!({
                        "table": names.get(&id).cloned().unwrap_or_else(|| id.to_string()),
                        "index": b.index,
                        "sstables_total": b.sstables_total,
                        "sstables_done": b.sstables_done,
                        "done": b.done,
                    })
                })
                .collect();
            match serde_json::to_vec_pretty(&builds) {
                Ok(body) => Response::json(200, body),
                Err(e) => Response::text(500, e.to_string()),
            }
        }
        ("GET", "/info") => match serde_json::to_vec_pretty(&memory_info(shared)) {
            Ok(body) => Response::json(200, body),
            Err(e) => Response::text(500, e.to_string()),
        },
        ("GET", "/compactionstats") => match serde_json::to_vec_pretty(&compaction_stats(shared)) {
            Ok(body) => Response::json(200, body),
            Err(e) => Response::text(500, e.to_string()),
        },
        ("POST", "/repair") => match serde_json::from_slice::<crate::RepairRequest>(&req.body) {
            Ok(r) => match crate::repair::start(shared, r) {
                Ok(session) => match serde_json::to_vec_pretty(&session) {
                    Ok(body) => Response::json(202, body),
                    Err(e) => Response::text(500, e.to_string()),
                },
                Err(e) => Response::text(400, format!("{e}\n")),
            },
            Err(e) => Response::text(400, format!("invalid repair request: {e}\n")),
        },
        ("GET", "/repair") => match serde_json::to_vec_pretty(&shared.repairs.list()) {
            Ok(body) => Response::json(200, body),
            Err(e) => Response::text(500, e.to_string()),
        },
        // Membership (see membership.rs): /decommission, /removenode,
        // /streams, /cleanup, /ring, /describering, /getendpoints.
        (
            m,
            p @ ("/decommission" | "/removenode" | "/streams" | "/cleanup" | "/ring"
            | "/describering" | "/getendpoints"),
        ) => {
            crate::membership::admin(shared, m, p, &req.body)
        }
        (m, "/rebuild") => crate::rebuild::admin(shared, m, &req.body),
        ("POST", "/failpoints") => set_failpoint(&req.body),
        ("DELETE", "/failpoints") => {
            failpoints::clear();
            tracing::info!("failpoints cleared");
            Response::text(200, "ok\n")
        }
        ("GET", "/failpoints") => {
            let report = FailpointReport {
                enabled: failpoints::enabled(),
                failpoints: failpoints::list()
                    .into_iter()
                    .map(|(name, actions)| FailpointSpec { name, actions })
                    .collect(),
                commitlog_failed: shared.engine.failure(),
            };
            match serde_json::to_vec_pretty(&report) {
                Ok(body) => Response::json(200, body),
                Err(e) => Response::text(500, e.to_string()),
            }
        }
        (
            _,
            "/status" | "/metrics" | "/faults" | "/flush" | "/compact" | "/clock" | "/digest"
            | "/failpoints" | "/snapshot" | "/snapshots" | "/snapshots/clear" | "/import"
            | "/compactionstats" | "/repair" | "/indexbuilds" | "/traceprobability" | "/info",
        ) => Response::text(405, "method not allowed\n"),
        _ => Response::text(
            404,
            "not found; try /status, /metrics, /faults, /flush, /compact, /snapshots, /repair or /failpoints\n",
        ),
    }
}

/// Routes that inject faults: each can damage data (`/clock`), cut the node
/// off (`/faults`) or stop its writes (`/failpoints`).
const FAULT_ROUTES: [&str; 3] = ["/faults", "/clock", "/failpoints"];

/// Refuses a request that fails the endpoint's checks (see the module doc).
pub(crate) fn guard(cfg: &crate::config::AdminConfig, req: &Request) -> Option<Response> {
    if let Some(host) = &req.host {
        if !host_allowed(host) {
            tracing::warn!(%host, path = %req.path, "admin request refused: Host header");
            return Some(Response::text(
                403,
                "Host must be an IP address or localhost\n",
            ));
        }
    }
    if let Some(token) = &cfg.token {
        let given = req
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            tracing::warn!(path = %req.path, "admin request refused: missing or wrong token");
            return Some(Response::text(
                401,
                "missing or wrong bearer token (admin.token)\n",
            ));
        }
    }
    if req.method == "POST" || req.method == "DELETE" {
        let json = req.content_type.as_deref().is_some_and(|c| {
            c.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json {
            return Some(Response::text(
                415,
                "POST and DELETE need Content-Type: application/json\n",
            ));
        }
        if !req.body.iter().all(u8::is_ascii_whitespace)
            && serde_json::from_slice::<serde_json::Value>(&req.body).is_err()
        {
            return Some(Response::text(400, "the body must be JSON\n"));
        }
    }
    if FAULT_ROUTES.contains(&req.path.as_str()) && !cfg.allow_fault_injection {
        tracing::warn!(path = %req.path, "admin request refused: fault injection is off");
        return Some(Response::text(
            403,
            "fault injection is disabled on this node (admin.allow_fault_injection = false)\n",
        ));
    }
    None
}

/// `Host` without its port: an IP literal or `localhost`.
fn host_allowed(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.parse::<std::net::IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /info`: the storage engine's memory by component, engine-wide and
/// per named table (`gyrectl info`).
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct MemoryInfo {
    pub memtable_bytes: u64,
    pub bloom_filter_bytes: u64,
    pub index_bytes: u64,
    pub block_cache_bytes: u64,
    pub block_cache_capacity_bytes: u64,
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
    pub tables: Vec<TableMemory>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct TableMemory {
    pub table: String,
    pub memtable_bytes: u64,
    pub bloom_filter_bytes: u64,
    pub index_bytes: u64,
}

fn memory_info(shared: &Shared) -> MemoryInfo {
    let es = shared.engine.engine_stats();
    let mut tables: Vec<TableMemory> = named_table_stats(shared)
        .map(|(table, s)| TableMemory {
            table,
            memtable_bytes: s.memtable_bytes,
            bloom_filter_bytes: s.bloom_filter_bytes,
            index_bytes: s.index_bytes,
        })
        .collect();
    tables.sort_by(|a, b| a.table.cmp(&b.table));
    MemoryInfo {
        memtable_bytes: es.memtable_bytes,
        bloom_filter_bytes: es.bloom_filter_bytes,
        index_bytes: es.index_bytes,
        block_cache_bytes: es.block_cache_bytes,
        block_cache_capacity_bytes: es.block_cache_capacity_bytes,
        block_cache_hits: es.block_cache_hits,
        block_cache_misses: es.block_cache_misses,
        tables,
    }
}

/// `GET /compactionstats`: one entry per named table.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct CompactionStats {
    pub table: String,
    pub pending: bool,
    pub active: Option<gyre_storage::CompactionProgress>,
    pub sstables_per_level: Vec<usize>,
}

/// Each named table (`ks.t`) with its engine statistics.
fn named_table_stats(
    shared: &Shared,
) -> impl Iterator<Item = (String, gyre_storage::TableStats)> + '_ {
    shared
        .engine
        .tables()
        .into_iter()
        .filter(|(_, o)| !o.name.is_empty())
        .filter_map(|(id, o)| Some((o.name, shared.engine.table_stats(id).ok()?)))
}

fn compaction_stats(shared: &Shared) -> Vec<CompactionStats> {
    let mut out: Vec<CompactionStats> = named_table_stats(shared)
        .map(|(table, s)| CompactionStats {
            table,
            pending: s.compaction_pending,
            active: s.active_compaction,
            sstables_per_level: s.sstables_per_level,
        })
        .collect();
    out.sort_by(|a, b| a.table.cmp(&b.table));
    out
}

/// One failpoint: `POST /failpoints` takes it, `GET` lists them.
#[derive(serde::Serialize, serde::Deserialize)]
struct FailpointSpec {
    /// e.g. `commitlog::fsync` or `sstable::fsync` (see gyre-storage's docs).
    name: String,
    /// fail-rs actions: `return`, `off`, `50%return`, `1*return->off`, ...
    actions: String,
}

#[derive(serde::Serialize)]
struct FailpointReport {
    /// Whether this binary has failpoints compiled in.
    enabled: bool,
    failpoints: Vec<FailpointSpec>,
    /// Why the commitlog refuses writes, once a write or fsync failed.
    commitlog_failed: Option<String>,
}

fn set_failpoint(body: &[u8]) -> Response {
    if !failpoints::enabled() {
        // Setting it would silently do nothing: say so, so a chaos run fails.
        return Response::text(
            501,
            "this gyre binary was built without the `failpoints` feature \
             (cargo build --features gyre-node/failpoints)\n",
        );
    }
    let spec = match serde_json::from_slice::<FailpointSpec>(body) {
        Ok(s) => s,
        Err(e) => {
            return Response::text(
                400,
                format!("invalid failpoint, expected {{\"name\": .., \"actions\": ..}}: {e}\n"),
            )
        }
    };
    match failpoints::set(&spec.name, &spec.actions) {
        Ok(()) => {
            tracing::warn!(name = %spec.name, actions = %spec.actions, "failpoint set");
            Response::text(200, "ok\n")
        }
        Err(e) => Response::text(400, format!("invalid failpoint actions: {e}\n")),
    }
}

/// Effective ownership (nodetool's `Owns (effective)`): each node's share
/// of a keyspace's data, or why there is none.
pub(crate) enum Owns {
    Effective {
        keyspace: String,
        share: std::collections::BTreeMap<gyre_cluster::HostId, f64>,
    },
    Meaningless(String),
}

/// Cassandra's `StorageService.getEffectiveOwnership`: for `keyspace`, else
/// for the replication every non-system keyspace shares (`system_traces`'
/// when there is none). An unknown keyspace is an error.
pub(crate) fn effective_ownership(shared: &Shared, keyspace: Option<&str>) -> Result<Owns, String> {
    let Some(qp) = shared.qp.get() else {
        return Ok(Owns::Meaningless(
            "The node does not have its schema yet, probably still bootstrapping. \
             Effective ownership information is meaningless."
                .into(),
        ));
    };
    let schema = qp.schema();
    let name = match keyspace {
        Some(k) => {
            if !schema.keyspaces().contains_key(k) {
                return Err(format!("The keyspace {k}, does not exist"));
            }
            k.to_string()
        }
        None => {
            let mut user = schema
                .keyspaces()
                .iter()
                .filter(|(k, _)| !gyre_schema::is_system_keyspace(k));
            match user.next() {
                None => "system_traces".to_string(),
                Some((first, ks)) => {
                    if user.any(|(_, other)| other.replication != ks.replication) {
                        return Ok(Owns::Meaningless(
                            "Non-system keyspaces don't have the same replication settings, \
                             effective ownership information is meaningless"
                                .into(),
                        ));
                    }
                    first.clone()
                }
            }
        }
    };
    let Some(ks) = schema.keyspaces().get(&name) else {
        return Ok(Owns::Meaningless(format!(
            "The node does not have {name} yet, probably still bootstrapping. \
             Effective ownership information is meaningless."
        )));
    };
    let Some(strategy) = crate::replication::strategy_of(&ks.replication) else {
        return Ok(Owns::Meaningless(
            "Ownership values for keyspaces with LocalStrategy are meaningless".into(),
        ));
    };
    // Computed on a copy: the core lock is not held while walking the ring.
    let ring = shared.core.lock().ring.clone();
    let plan = gyre_cluster::ReplicaPlan::build(&ring, &strategy);
    let mut share = std::collections::BTreeMap::new();
    for r in plan.ranges() {
        let w = gyre_cluster::range_width(r.start, r.end) as f64 / 2f64.powi(64);
        for h in &r.natural {
            *share.entry(*h).or_insert(0.0) += w;
        }
    }
    Ok(Owns::Effective {
        keyspace: name,
        share,
    })
}

/// `GET /status`: the cluster as this node sees it, with effective
/// ownership for `owns` (computed by default as nodetool does).
pub(crate) fn status(shared: &Shared, owns: Option<Owns>) -> StatusReport {
    let owns =
        owns.unwrap_or_else(|| effective_ownership(shared, None).unwrap_or_else(Owns::Meaningless));
    let (ownership_keyspace, effective, ownership_note) = match owns {
        Owns::Effective { keyspace, share } => (Some(keyspace), share, None),
        Owns::Meaningless(note) => (None, Default::default(), Some(note)),
    };
    let core = shared.core.lock();
    let g = &core.gossiper;
    let ownership = core.ring.ownership();
    let endpoints = g
        .endpoint_states()
        // Removed nodes are no members at all (nodetool omits them).
        .filter(|(_, s)| s.status() != Some(gyre_cluster::NodeStatus::Removed))
        .map(|(ep, s)| {
            let host = s.host_id();
            EndpointReport {
                address: ep.to_string(),
                host_id: host.map(|h| h.to_string()),
                dc: s.dc().map(str::to_string),
                rack: s.rack().map(str::to_string),
                status: s.status().map(|st| st.as_str().to_string()),
                state: if g.is_alive(ep) { "UP" } else { "DOWN" }.to_string(),
                generation: s.generation,
                heartbeat: s.heartbeat,
                tokens: s.tokens().unwrap_or_default(),
                load: s.load(),
                ownership: host.and_then(|h| ownership.get(&h).copied()).unwrap_or(0.0),
                effective_ownership: host.and_then(|h| effective.get(&h).copied()),
                native_address: s.native_address().map(|a| a.to_string()),
                release_version: s.release_version().map(str::to_string),
                schema: s.schema().map(|u| u.to_string()),
                is_local: *ep == shared.local,
            }
        })
        .collect();
    let hints = shared
        .hint_store
        .get()
        .and_then(|s| s.pending().ok())
        .unwrap_or_default()
        .into_iter()
        .map(|h| crate::HintsReport {
            host_id: h.host.to_string(),
            files: h.files,
            bytes: h.bytes,
        })
        .collect();
    StatusReport {
        cluster_name: shared.cfg.cluster.name.clone(),
        host_id: shared.host_id.to_string(),
        address: shared.local.to_string(),
        generation: g.generation(),
        endpoints,
        hints,
        ownership_keyspace,
        ownership_note,
    }
}

fn metrics(shared: &Shared) -> String {
    let (up, down, rejected, ring_nodes) = {
        let core = shared.core.lock();
        (
            core.gossiper.live_members().count(),
            core.gossiper.unreachable_members().count(),
            core.gossiper.rejected_syns(),
            core.ring.normal_nodes().count(),
        )
    };
    let stats = shared.messenger.stats();
    let mut m = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(m, "{name}{labels} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    metric(
        "gyre_gossip_rounds_total",
        "counter",
        "Gossip rounds started by this node.",
        &one(shared.rounds.load(Ordering::Relaxed) as f64),
    );
    metric(
        "gyre_gossip_peers_up",
        "gauge",
        "Peers this node considers UP.",
        &one(up as f64),
    );
    metric(
        "gyre_gossip_peers_down",
        "gauge",
        "Known peers this node considers DOWN.",
        &one(down as f64),
    );
    metric(
        "gyre_gossip_rejected_syns_total",
        "counter",
        "Gossip SYNs rejected because they came from another cluster.",
        &one(rejected as f64),
    );
    metric(
        "gyre_gossip_decode_errors_total",
        "counter",
        "Gossip messages that could not be decoded.",
        &one(shared.decode_errors.load(Ordering::Relaxed) as f64),
    );
    metric(
        "gyre_ring_normal_nodes",
        "gauge",
        "Nodes in this node's token ring.",
        &one(ring_nodes as f64),
    );
    metric(
        "gyre_storage_commitlog_failed",
        "gauge",
        "1 once the commitlog failed a write or fsync and refuses writes until restart (reason: GET /failpoints or the log).",
        &one(f64::from(u8::from(shared.engine.failure().is_some()))),
    );
    let es = shared.engine.engine_stats();
    metric(
        "gyre_storage_commitlog_syncs_total",
        "counter",
        "Commitlog fsyncs.",
        &one(es.commitlog_syncs as f64),
    );
    metric(
        "gyre_storage_commitlog_records_total",
        "counter",
        "Records (writes) appended to the commitlog.",
        &one(es.commitlog_records as f64),
    );
    metric(
        "gyre_storage_commitlog_writes_per_sync",
        "gauge",
        "Writes per commitlog fsync since start (records / syncs): the group commit's batching.",
        &one(es.commitlog_records as f64 / es.commitlog_syncs.max(1) as f64),
    );
    metric(
        "gyre_storage_memory_bytes",
        "gauge",
        "Heap held by the storage engine, by component (memtables, SSTable bloom filters and block indexes, block cache).",
        &[
            ("{component=\"memtables\"}".to_string(), es.memtable_bytes as f64),
            ("{component=\"bloom_filters\"}".to_string(), es.bloom_filter_bytes as f64),
            ("{component=\"sstable_indexes\"}".to_string(), es.index_bytes as f64),
            ("{component=\"block_cache\"}".to_string(), es.block_cache_bytes as f64),
        ],
    );
    metric(
        "gyre_block_cache_capacity_bytes",
        "gauge",
        "Configured size of the block cache (storage.block_cache_mb).",
        &one(es.block_cache_capacity_bytes as f64),
    );
    metric(
        "gyre_block_cache_hits_total",
        "counter",
        "Point-read block lookups found in the block cache.",
        &one(es.block_cache_hits as f64),
    );
    metric(
        "gyre_block_cache_misses_total",
        "counter",
        "Point-read block lookups that went to the SSTable file.",
        &one(es.block_cache_misses as f64),
    );
    metric(
        "gyre_block_cache_hit_ratio",
        "gauge",
        "Block cache hits / lookups since start.",
        &one(es.block_cache_hits as f64
            / (es.block_cache_hits + es.block_cache_misses).max(1) as f64),
    );
    // Per table (named tables only: not the node's internal ones).
    let mut tables: Vec<(String, gyre_storage::TableStats)> = shared
        .engine
        .tables()
        .into_iter()
        .filter(|(_, o)| !o.name.is_empty())
        .filter_map(|(id, o)| {
            let name = o.name.replace('\\', "\\\\").replace('"', "\\\"");
            shared.engine.table_stats(id).ok().map(|s| (name, s))
        })
        .collect();
    tables.sort_by(|a, b| a.0.cmp(&b.0));
    let per_table = |f: &dyn Fn(&gyre_storage::TableStats) -> f64| -> Vec<(String, f64)> {
        tables
            .iter()
            .map(|(name, s)| (format!("{{table=\"{name}\"}}"), f(s)))
            .collect()
    };
    metric(
        "gyre_table_sstables",
        "gauge",
        "SSTables of a table, by compaction level.",
        &tables
            .iter()
            .flat_map(|(name, s)| {
                s.sstables_per_level
                    .iter()
                    .enumerate()
                    .map(move |(l, n)| (format!("{{table=\"{name}\",level=\"{l}\"}}"), *n as f64))
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "gyre_table_disk_bytes",
        "gauge",
        "Bytes of a table's SSTables.",
        &per_table(&|s| s.disk_bytes as f64),
    );
    metric(
        "gyre_table_compactions_total",
        "counter",
        "Compactions (merges) of a table since start.",
        &per_table(&|s| s.compactions as f64),
    );
    metric(
        "gyre_table_compacted_bytes_total",
        "counter",
        "Bytes written by a table's compactions since start.",
        &per_table(&|s| s.bytes_compacted as f64),
    );
    metric(
        "gyre_table_compaction_pending",
        "gauge",
        "1 while a table's compaction strategy has work to do.",
        &per_table(&|s| f64::from(u8::from(s.compaction_pending))),
    );
    metric(
        "gyre_table_expired_sstables_dropped_total",
        "counter",
        "SSTables deleted whole, without rewriting, because all their data expired.",
        &per_table(&|s| s.expired_sstables_dropped as f64),
    );
    metric(
        "gyre_table_expired_bytes_dropped_total",
        "counter",
        "Bytes of the SSTables deleted whole because all their data expired.",
        &per_table(&|s| s.expired_bytes_dropped as f64),
    );
    let verb_name = |v: gyre_net::Verb| {
        if v == GOSSIP_VERB {
            "gossip".to_string()
        } else {
            v.0.to_string()
        }
    };
    let per_verb = |f: &dyn Fn(&gyre_net::VerbStats) -> f64| -> Vec<(String, f64)> {
        stats
            .verbs
            .iter()
            .map(|(v, s)| (format!("{{verb=\"{}\"}}", verb_name(*v)), f(s)))
            .collect()
    };
    metric(
        "gyre_messages_sent_total",
        "counter",
        "Messages handed to the transport, by verb.",
        &per_verb(&|s| s.sent as f64),
    );
    metric(
        "gyre_messages_received_total",
        "counter",
        "Messages received, by verb.",
        &per_verb(&|s| s.received as f64),
    );
    metric(
        "gyre_messages_dropped_total",
        "counter",
        "Messages dropped (faults, full queues, no handler), by verb.",
        &per_verb(&|s| s.dropped as f64),
    );
    metric(
        "gyre_requests_timeouts_total",
        "counter",
        "Requests that got no response in time, by verb.",
        &per_verb(&|s| s.timeouts as f64),
    );
    metric(
        "gyre_requests_completed_total",
        "counter",
        "Requests answered successfully, by verb.",
        &per_verb(&|s| s.completed as f64),
    );
    metric(
        "gyre_request_latency_seconds_sum",
        "counter",
        "Total latency of completed requests, by verb.",
        &per_verb(&|s| s.latency_total_micros as f64 / 1e6),
    );
    metric(
        "gyre_request_latency_seconds_max",
        "gauge",
        "Largest latency of a completed request, by verb.",
        &per_verb(&|s| s.latency_max_micros as f64 / 1e6),
    );
    let t = stats.transport;
    for (name, help, v) in [
        (
            "connections_opened",
            "Outbound connections opened.",
            t.connections_opened,
        ),
        (
            "connect_failures",
            "Outbound connection attempts that failed.",
            t.connect_failures,
        ),
        (
            "inbound_connections",
            "Inbound connections accepted.",
            t.inbound_connections,
        ),
        (
            "protocol_errors",
            "Connections closed for malformed input.",
            t.protocol_errors,
        ),
        (
            "queue_full",
            "Sends refused because a queue was full.",
            t.queue_full,
        ),
        (
            "expired",
            "Queued messages dropped after their deadline.",
            t.expired,
        ),
    ] {
        metric(
            &format!("gyre_transport_{name}_total"),
            "counter",
            help,
            &one(v as f64),
        );
    }
    metric(
        "gyre_requests_pending",
        "gauge",
        "Requests waiting for a response.",
        &one(stats.pending_requests as f64),
    );
    shared.cql_metrics.render_prometheus("gyre_cql_", &mut m);
    if let Some(qp) = shared.qp.get() {
        gyre_common::metrics::render_histogram(
            &mut m,
            "gyre_query_plan_seconds",
            "Turning a write statement into mutations (checks, key and value encoding).",
            &qp.plan_metrics().snapshot(),
        );
    }
    if let Some(c) = shared.coordinator_metrics.get() {
        c.render_prometheus("gyre_coordinator_", &mut m);
    }
    if let Some(s) = shared.replica_stage.get() {
        s.render_prometheus("gyre_replica_", &mut m);
    }
    if let Some(h) = shared.hint_store.get() {
        render_hints(h, &mut m);
    }
    shared.repairs.render_prometheus(&mut m);
    for (name, help, v) in [
        (
            "gyre_trace_rows_written_total",
            "Trace rows written to system_traces.",
            &shared.tracer.written,
        ),
        (
            "gyre_trace_rows_failed_total",
            "Trace rows whose write failed.",
            &shared.tracer.failed,
        ),
        (
            "gyre_traces_dropped_total",
            "Finished traces dropped because the trace writer's queue was full.",
            &shared.tracer.dropped,
        ),
    ] {
        let v = v.load(Ordering::Relaxed);
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    m
}

fn render_hints(store: &gyre_coordinator::HintStore, m: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = store.stats();
    for (name, help, v) in [
        (
            "gyre_hints_stored_total",
            "Hints stored for replicas that missed a write.",
            s.stored.load(Relaxed),
        ),
        (
            "gyre_hints_delivered_total",
            "Hints delivered to their replica.",
            s.delivered.load(Relaxed),
        ),
        (
            "gyre_hints_torn_files_total",
            "Hint files whose torn tail was cut off.",
            s.torn_files.load(Relaxed),
        ),
    ] {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let _ = writeln!(
        m,
        "# HELP gyre_hints_dropped_total Hints not stored or not delivered, by reason.\n# TYPE gyre_hints_dropped_total counter"
    );
    for (reason, v) in [
        ("over_cap", s.dropped_over_cap.load(Relaxed)),
        ("overloaded", s.dropped_overloaded.load(Relaxed)),
        ("undeliverable", s.dropped_undeliverable.load(Relaxed)),
    ] {
        let _ = writeln!(m, "gyre_hints_dropped_total{{reason=\"{reason}\"}} {v}");
    }
    let _ = writeln!(
        m,
        "# HELP gyre_hints_pending_bytes Bytes of hints held, per target host.\n# TYPE gyre_hints_pending_bytes gauge"
    );
    for h in store.pending().unwrap_or_default() {
        let _ = writeln!(
            m,
            "gyre_hints_pending_bytes{{host=\"{}\"}} {}",
            h.host, h.bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_must_be_ip_literals_or_localhost() {
        for ok in [
            "127.0.0.1:9180",
            "127.0.0.1",
            "[::1]:9180",
            "localhost:9180",
            "LOCALHOST",
        ] {
            assert!(host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9180",
            "127.0.0.1.nip.io:9180",
            "",
        ] {
            assert!(!host_allowed(bad), "{bad}");
        }
    }
}
