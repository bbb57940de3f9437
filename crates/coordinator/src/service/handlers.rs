//! The replica side: other coordinators' MUTATION, READ_DATA,
//! READ_DIGEST, READ_RANGE, TRUNCATE and batchlog requests served from the
//! local engine.

use super::range::page_tombstones;
use super::*;

/// Serves other coordinators' requests from the local engine. Mutations and
/// reads run on the runtime's workers (a mutation is applied when it
/// arrives and answered once durable); TRUNCATE and the batchlog, which
/// wait for disk, run on the blocking pool. Mutations and reads pass the
/// replica `stage` first: dropped past their deadline, refused beyond its
/// bound.
pub(super) fn register_handlers(
    messenger: &Messenger,
    storage: Arc<dyn StorageEngine>,
    rt: Handle,
    metrics: Arc<CoordinatorMetrics>,
    stage: Arc<ReplicaStage>,
    tombstone_failure_threshold: usize,
) {
    use crate::error::check_tombstones;
    let st = stage.clone();
    let (s, r) = (storage.clone(), rt.clone());
    let local_ip = messenger.local_addr().ip();
    messenger.register(MUTATION, move |msg: Inbound| {
        let Some(msg) = st.admit(MUTATION, msg) else {
            return;
        };
        let Some(responder) = msg.responder else {
            return;
        };
        let trace = replica_trace(msg.trace_session, msg.from, local_ip, "MUTATION");
        // Decoded to validate it and find its key; the received bytes
        // themselves go to the commitlog and memtable (no re-encoding).
        let durable = match Mutation::decode(&msg.payload) {
            Ok(m) => {
                if let Some(t) = &trace {
                    t.event("Appending to commitlog");
                    t.event("Adding to memtable");
                }
                apply_local(s.as_ref(), &metrics, m)
            }
            Err(e) => {
                respond(responder, Err(e.to_string()), MUTATION);
                return;
            }
        };
        let from = msg.from.ip();
        r.spawn(async move {
            let res = durable.await.map(|()| Bytes::new());
            if let Some(t) = trace {
                t.event(format!("Enqueuing response to /{from}"));
                t.flush();
            }
            respond(responder, res.map_err(|e| e.to_string()), MUTATION);
        });
    });
    for (verb, want_digest, name) in [
        (READ_DATA, false, "READ_DATA"),
        (READ_DIGEST, true, "READ_DIGEST"),
    ] {
        let (s, st) = (storage.clone(), stage.clone());
        messenger.register(verb, move |msg: Inbound| {
            let Some(msg) = st.admit(verb, msg) else {
                return;
            };
            let Some(responder) = msg.responder else {
                return;
            };
            let trace = replica_trace(msg.trace_session, msg.from, local_ip, name);
            let res = decode_read(&msg.payload)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    if let Some(t) = &trace {
                        t.event("Executing single-partition query");
                    }
                    let p = s
                        .read(c.table, &c.key, &c.filter, c.now)
                        .map_err(|e| e.to_string())?;
                    let scanned = p.as_ref().map_or(0, |p| p.tombstones(c.now));
                    check_tombstones(tombstone_failure_threshold, c.table, scanned)?;
                    Ok(p)
                })
                .map(|p| {
                    if let Some(t) = &trace {
                        let rows = p.as_ref().map_or(0, |p| p.rows.len());
                        t.event(format!("Read {rows} rows"));
                    }
                    if want_digest {
                        Bytes::copy_from_slice(&digest(p.as_ref()).to_bytes())
                    } else {
                        encode_data(p.as_ref())
                    }
                });
            if let Some(t) = trace {
                t.event(format!("Enqueuing response to /{}", msg.from.ip()));
                t.flush();
            }
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
        let trace = replica_trace(msg.trace_session, msg.from, local_ip, "READ_RANGE");
        let res = decode_range(&msg.payload)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                if let Some(t) = &trace {
                    t.event("Executing range read");
                }
                let page = s
                    .scan(c.table, &c.request, c.now)
                    .map_err(|e| e.to_string())?;
                check_tombstones(
                    tombstone_failure_threshold,
                    c.table,
                    page_tombstones(&page, c.now),
                )?;
                Ok(page)
            })
            .map(|page| encode_page(&page));
        if let Some(t) = trace {
            t.event(format!("Enqueuing response to /{}", msg.from.ip()));
            t.flush();
        }
        respond(responder, res, READ_RANGE);
    });
    // Builds Merkle leaves by scanning a whole range: on the blocking pool.
    serve(messenger, REPAIR_TREE, &storage, &rt, |s, b| {
        let req = crate::repair::TreeRequest::decode(b.clone())?;
        super::repair::build_trees(s, &req).map(|t| crate::repair::TreeRequest::encode_reply(&t))
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
/// The replica's side of a traced request: a session for the id the
/// request carries, opened with its arrival (Cassandra's wording).
fn replica_trace(
    session: Option<uuid::Uuid>,
    from: std::net::SocketAddr,
    local_ip: std::net::IpAddr,
    verb: &str,
) -> Option<trace::TraceState> {
    let id = session?;
    let t = trace::TraceState::new(id, local_ip);
    t.event(format!("{verb} message received from /{}", from.ip()));
    Some(t)
}

pub(super) fn respond(
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
pub(super) fn serve(
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
