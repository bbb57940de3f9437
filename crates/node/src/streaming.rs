//! Streaming: the data of token ranges moved between nodes when one joins
//! (it pulls its new ranges, [`fetch_range`]) or leaves (it pushes every
//! range it held to the new owners, [`push_range`]).
//!
//! On the wire a page is the encoded mutations of whole partitions (up to
//! about [`PAGE_BYTES`]; a huge partition is cut at a clustering key and
//! resumed there) followed by a CRC32 of everything before it, sent on the
//! internode bulk connection. Flow control is bounded pages in flight per
//! range: the puller asks for the next page while it applies the previous
//! one (never more than two pages held), the pusher sends the next one only
//! once the receiver acknowledged the previous one as durable. The driving side paces itself with a token
//! bucket (`cluster.stream_throughput_mb_per_sec`); a failed page is asked
//! again (same resume point) a few times before the session fails.
//!
//! The receiver applies each partition through the storage engine as a
//! mutation (commitlog, then memtable; acknowledged once durable), not by
//! adopting SSTable files: every partition is atomic and durable on its own,
//! re-streaming a range after a failure is idempotent (last write wins), and
//! the engine needs no new entry point. The cost is that streamed data is
//! written twice (commitlog, then flush).

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gyre_common::{codec, DecoratedKey, Token};
use gyre_coordinator::RateLimiter;
use gyre_net::{Inbound, Priority, Verb};
use gyre_storage::{Mutation, ReadFilter, ScanRequest, ScanStart, StorageEngine, TableId};
use parking_lot::Mutex;
use serde::Serialize;
use tracing::{debug, warn};

use crate::node::Shared;

/// Asks a node for one page of a table's token range (pull).
pub const STREAM_PAGE: Verb = Verb(0x0400);
/// Gives a node one page to apply; answered once durable (push).
pub const STREAM_APPLY: Verb = Verb(0x0401);

/// Target size of one page.
pub const PAGE_BYTES: usize = 1 << 20;
/// Rows per engine scan while filling a page.
const SCAN_ROWS: usize = 256;
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per page before the range fails.
const ATTEMPTS: u32 = 4;

/// A range `(start, end]` of one table to move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StreamRange {
    pub table: TableId,
    pub start: Token,
    pub end: Token,
}

/// Progress of one streaming session (one peer, one direction).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct SessionReport {
    pub id: u64,
    /// What started it: `bootstrap` or `decommission`.
    pub operation: String,
    /// `in` (this node receives) or `out`.
    pub direction: String,
    pub peer: String,
    pub ranges_total: u64,
    pub ranges_done: u64,
    pub partitions: u64,
    pub bytes: u64,
    pub elapsed_secs: f64,
    /// MiB/s over the session so far.
    pub rate_mib_per_sec: f64,
    /// `running`, `done` or `failed: <why>`.
    pub state: String,
}

/// One session's counters, updated as pages move.
pub struct Session {
    pub id: u64,
    operation: &'static str,
    direction: &'static str,
    peer: String,
    ranges_total: u64,
    ranges_done: AtomicU64,
    partitions: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
    finished: Mutex<Option<(Duration, String)>>,
}

impl Session {
    pub fn finish(&self, result: &Result<(), String>) {
        let state = match result {
            Ok(()) => "done".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        *self.finished.lock() = Some((self.started.elapsed(), state));
    }

    pub fn range_done(&self) {
        self.ranges_done.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> SessionReport {
        let (elapsed, state) = self
            .finished
            .lock()
            .clone()
            .unwrap_or_else(|| (self.started.elapsed(), "running".into()));
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        SessionReport {
            id: self.id,
            operation: self.operation.into(),
            direction: self.direction.into(),
            peer: self.peer.clone(),
            ranges_total: self.ranges_total,
            ranges_done: self.ranges_done.load(Ordering::Relaxed),
            partitions: self.partitions.load(Ordering::Relaxed),
            bytes,
            elapsed_secs: secs,
            rate_mib_per_sec: if secs > 0.0 {
                bytes as f64 / secs / (1 << 20) as f64
            } else {
                0.0
            },
            state,
        }
    }
}

/// The sessions this node drove since it started (`GET /streams`, netstats).
#[derive(Default)]
pub struct Streams {
    next: AtomicU64,
    sessions: Mutex<Vec<Arc<Session>>>,
}

impl Streams {
    pub fn start(
        &self,
        operation: &'static str,
        direction: &'static str,
        peer: String,
        ranges_total: u64,
    ) -> Arc<Session> {
        let s = Arc::new(Session {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            operation,
            direction,
            peer,
            ranges_total,
            ranges_done: AtomicU64::new(0),
            partitions: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            finished: Mutex::new(None),
        });
        let mut all = self.sessions.lock();
        // Bounded: keep the latest 256 sessions.
        if all.len() >= 256 {
            all.remove(0);
        }
        all.push(s.clone());
        s
    }

    pub fn list(&self) -> Vec<SessionReport> {
        self.sessions.lock().iter().map(|s| s.report()).collect()
    }
}

/// The driving side's pace: one token bucket shared by an operation's sessions.
pub struct Throttle(Option<Mutex<RateLimiter>>);

impl Throttle {
    pub fn new(mib_per_sec: u64) -> Self {
        Throttle((mib_per_sec > 0).then(|| {
            let rate = mib_per_sec.saturating_mul(1 << 20);
            Mutex::new(RateLimiter::new(rate, rate / 4, Instant::now()))
        }))
    }

    async fn pace(&self, bytes: usize) {
        let wait = match &self.0 {
            Some(l) => l.lock().acquire(bytes as u64, Instant::now()),
            None => return,
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `(start, end]` as scan bounds, split where it wraps (`start >= end`).
fn segments(start: Token, end: Token) -> Vec<(ScanStart, Bound<Token>)> {
    if start < end {
        vec![(
            ScanStart::Token(Bound::Excluded(start)),
            Bound::Included(end),
        )]
    } else {
        vec![
            (ScanStart::Token(Bound::Excluded(start)), Bound::Unbounded),
            (ScanStart::Token(Bound::Unbounded), Bound::Included(end)),
        ]
    }
}

// ---- wire encoding ----

fn put_bound(out: &mut Vec<u8>, b: &Bound<Token>) {
    match b {
        Bound::Unbounded => out.push(0),
        Bound::Included(t) => {
            out.push(1);
            codec::put_varint(out, *t);
        }
        Bound::Excluded(t) => {
            out.push(2);
            codec::put_varint(out, *t);
        }
    }
}

fn get_bound(r: &mut codec::Reader<'_>) -> Result<Bound<Token>, String> {
    Ok(match r.u8().map_err(|e| e.to_string())? {
        0 => Bound::Unbounded,
        1 => Bound::Included(r.varint().map_err(|e| e.to_string())?),
        2 => Bound::Excluded(r.varint().map_err(|e| e.to_string())?),
        _ => return Err("bad token bound".into()),
    })
}

fn put_start(out: &mut Vec<u8>, s: &ScanStart) {
    match s {
        ScanStart::Token(b) => {
            out.push(0);
            put_bound(out, b);
        }
        ScanStart::After(k) => {
            out.push(1);
            codec::put_bytes(out, &k.key);
        }
        ScanStart::Within {
            key,
            after,
            returned,
        } => {
            out.push(2);
            codec::put_bytes(out, &key.key);
            codec::put_bytes(out, after);
            codec::put_uvarint(out, *returned as u64);
        }
    }
}

fn get_start(r: &mut codec::Reader<'_>) -> Result<ScanStart, String> {
    let e = |e: codec::DecodeError| e.to_string();
    Ok(match r.u8().map_err(e)? {
        0 => ScanStart::Token(get_bound(r)?),
        1 => ScanStart::After(DecoratedKey::new(r.bytes().map_err(e)?)),
        2 => ScanStart::Within {
            key: DecoratedKey::new(r.bytes().map_err(e)?),
            after: r.bytes().map_err(e)?,
            returned: usize::try_from(r.uvarint().map_err(e)?).map_err(|e| e.to_string())?,
        },
        _ => return Err("bad scan start".into()),
    })
}

/// A pull request: table, where to start, where the range ends.
fn encode_request(table: TableId, start: &ScanStart, end: &Bound<Token>) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(table.0.as_bytes());
    put_start(&mut out, start);
    put_bound(&mut out, end);
    Bytes::from(out)
}

fn decode_request(b: &Bytes) -> Result<(TableId, ScanStart, Bound<Token>), String> {
    let id: [u8; 16] = b
        .get(..16)
        .and_then(|s| s.try_into().ok())
        .ok_or("short stream request")?;
    let rest = b.slice(16..);
    let mut r = codec::Reader::new(&rest);
    let start = get_start(&mut r)?;
    let end = get_bound(&mut r)?;
    Ok((TableId(uuid::Uuid::from_bytes(id)), start, end))
}

/// Encoded mutations, the resume point, then a CRC32 of all of it.
fn encode_page(mutations: &[Bytes], resume: Option<&ScanStart>) -> Bytes {
    let mut out = Vec::with_capacity(mutations.iter().map(|m| m.len() + 4).sum::<usize>() + 64);
    codec::put_uvarint(&mut out, mutations.len() as u64);
    for m in mutations {
        codec::put_bytes(&mut out, m);
    }
    match resume {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_start(&mut out, s);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// A page's mutations and resume point, once its checksum matched.
fn decode_page(b: &Bytes) -> Result<(Vec<Mutation>, Option<ScanStart>), String> {
    let n = b.len().checked_sub(4).ok_or("short stream page")?;
    let want = u32::from_be_bytes(b[n..].try_into().map_err(|_| "short stream page")?);
    let body = b.slice(..n);
    if crc32fast::hash(&body) != want {
        return Err("stream page checksum mismatch".into());
    }
    let e = |e: codec::DecodeError| e.to_string();
    let mut r = codec::Reader::new(&body);
    let count = r.uvarint().map_err(e)?;
    let mut out = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let m = r.bytes().map_err(e)?;
        out.push(Mutation::decode(&m).map_err(|e| e.to_string())?);
    }
    let resume = match r.u8().map_err(e)? {
        0 => None,
        _ => Some(get_start(&mut r)?),
    };
    Ok((out, resume))
}

/// Reads about [`PAGE_BYTES`] of `table` from `start` to `end` from the
/// local engine: encoded mutations and where the next page starts.
fn read_page(
    engine: &dyn StorageEngine,
    table: TableId,
    start: ScanStart,
    end: Bound<Token>,
) -> Result<(Vec<Bytes>, Option<ScanStart>), String> {
    let now = unix_now();
    let mut request = ScanRequest {
        start,
        end,
        filter: ReadFilter::all(),
        max_rows: SCAN_ROWS,
        index: None,
    };
    let mut out = Vec::new();
    let mut size = 0;
    loop {
        let page = engine
            .scan(table, &request, now)
            .map_err(|e| e.to_string())?;
        for p in page.partitions {
            let m = Mutation::new(table, p);
            size += m.encoded().len();
            out.push(m.encoded().clone());
        }
        match page.resume {
            Some(next) if size < PAGE_BYTES => request.start = next,
            resume => return Ok((out, resume)),
        }
    }
}

/// Applies a page's mutations and waits until they are durable.
async fn apply_all(engine: &dyn StorageEngine, mutations: Vec<Mutation>) -> Result<(), String> {
    let writes: Vec<_> = mutations
        .into_iter()
        .map(|m| engine.apply_mutation(m))
        .collect();
    for r in futures::future::join_all(writes).await {
        r.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// True when `from` is a node of the ring (joining and leaving included):
/// streaming verbs answer nobody else.
fn known_peer(shared: &Shared, from: std::net::SocketAddr) -> bool {
    shared.ring_view.read().nodes().any(|n| n.address == from)
}

/// Registers the replica side of streaming on the messenger.
pub(crate) fn register_verbs(shared: &Arc<Shared>) {
    let s = shared.clone();
    shared.messenger.register(STREAM_PAGE, move |msg: Inbound| {
        let Some(responder) = msg.responder else {
            return;
        };
        if !known_peer(&s, msg.from) {
            let _ = responder.respond_error(format!("{} is not a ring member", msg.from));
            return;
        }
        let engine = s.engine.clone();
        tokio::task::spawn_blocking(move || {
            let answer = decode_request(&msg.payload)
                .and_then(|(table, start, end)| read_page(engine.as_ref(), table, start, end));
            let sent = match answer {
                Ok((muts, resume)) => responder.respond(encode_page(&muts, resume.as_ref())),
                Err(e) => responder.respond_error(e),
            };
            if let Err(e) = sent {
                debug!(error = %e, "could not answer a stream page request");
            }
        });
    });
    let s = shared.clone();
    shared
        .messenger
        .register(STREAM_APPLY, move |msg: Inbound| {
            let Some(responder) = msg.responder else {
                return;
            };
            if !known_peer(&s, msg.from) {
                let _ = responder.respond_error(format!("{} is not a ring member", msg.from));
                return;
            }
            let engine = s.engine.clone();
            tokio::spawn(async move {
                let done = match decode_page(&msg.payload) {
                    Ok((muts, _)) => apply_all(engine.as_ref(), muts).await,
                    Err(e) => Err(e),
                };
                let sent = match done {
                    Ok(()) => responder.respond(Bytes::new()),
                    Err(e) => responder.respond_error(e),
                };
                if let Err(e) = sent {
                    debug!(error = %e, "could not acknowledge a streamed page");
                }
            });
        });
}

/// Asks `from` for a page, retrying a failed request (same resume point).
async fn request_page(
    shared: &Shared,
    to: std::net::SocketAddr,
    verb: Verb,
    payload: Bytes,
) -> Result<Bytes, String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match shared
            .messenger
            .request_with(to, verb, payload.clone(), PAGE_TIMEOUT, Priority::Bulk)
            .await
        {
            Ok(b) => return Ok(b),
            Err(e) => {
                warn!(peer = %to, attempt, error = %e, "stream page failed; retrying");
                last = e.to_string();
            }
        }
    }
    Err(format!("streaming with {to} failed: {last}"))
}

/// Which way a plan's ranges travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Pulled from the peer and applied here (bootstrap, replace, removenode).
    In,
    /// Read here and pushed to the peer (decommission).
    Out,
}

/// Runs `plan`: one session per peer, the peers in parallel, each peer's
/// ranges in turn, under one throughput cap; the first failure of a
/// session ends it, and any failure fails the whole plan.
pub(crate) async fn stream_plan(
    shared: &Arc<Shared>,
    operation: &'static str,
    direction: Direction,
    plan: std::collections::HashMap<std::net::SocketAddr, Vec<StreamRange>>,
) -> Result<(), String> {
    let throttle = Throttle::new(shared.cfg.cluster.stream_throughput_mb_per_sec);
    let sessions = plan.into_iter().map(|(peer, ranges)| {
        let throttle = &throttle;
        async move {
            let dir = match direction {
                Direction::In => "in",
                Direction::Out => "out",
            };
            let session =
                shared
                    .streams
                    .start(operation, dir, peer.to_string(), ranges.len() as u64);
            let mut result = Ok(());
            for r in ranges {
                result = match direction {
                    Direction::In => fetch_range(shared, peer, r, &session, throttle).await,
                    Direction::Out => push_range(shared, peer, r, &session, throttle).await,
                };
                if result.is_err() {
                    break;
                }
            }
            session.finish(&result);
            result
        }
    });
    for r in futures::future::join_all(sessions).await {
        r?;
    }
    Ok(())
}

/// Pulls `range` from `from` and applies it locally.
pub(crate) async fn fetch_range(
    shared: &Shared,
    from: std::net::SocketAddr,
    range: StreamRange,
    session: &Session,
    throttle: &Throttle,
) -> Result<(), String> {
    for (start, end) in segments(range.start, range.end) {
        let first = encode_request(range.table, &start, &end);
        let mut reply = request_page(shared, from, STREAM_PAGE, first).await?;
        loop {
            throttle.pace(reply.len()).await;
            let (muts, resume) = decode_page(&reply)?;
            session
                .bytes
                .fetch_add(reply.len() as u64, Ordering::Relaxed);
            session
                .partitions
                .fetch_add(muts.len() as u64, Ordering::Relaxed);
            let engine = shared.engine.as_ref();
            match resume {
                // The next page travels while this one is applied: at most
                // two pages of a session are in this node's memory.
                Some(next) => {
                    let req = encode_request(range.table, &next, &end);
                    let (applied, fetched) = futures::join!(
                        apply_all(engine, muts),
                        request_page(shared, from, STREAM_PAGE, req)
                    );
                    applied?;
                    reply = fetched?;
                }
                None => {
                    apply_all(engine, muts).await?;
                    break;
                }
            }
        }
    }
    session.range_done();
    Ok(())
}

/// Reads `range` locally and pushes it to `to`, a page at a time.
pub(crate) async fn push_range(
    shared: &Shared,
    to: std::net::SocketAddr,
    range: StreamRange,
    session: &Session,
    throttle: &Throttle,
) -> Result<(), String> {
    for (mut start, end) in segments(range.start, range.end) {
        loop {
            let engine = shared.engine.clone();
            let (muts, resume) = tokio::task::spawn_blocking(move || {
                read_page(engine.as_ref(), range.table, start, end)
            })
            .await
            .map_err(|e| format!("stream read task failed: {e}"))??;
            let page = encode_page(&muts, None);
            throttle.pace(page.len()).await;
            if !muts.is_empty() {
                request_page(shared, to, STREAM_APPLY, page.clone()).await?;
            }
            session
                .bytes
                .fetch_add(page.len() as u64, Ordering::Relaxed);
            session
                .partitions
                .fetch_add(muts.len() as u64, Ordering::Relaxed);
            match resume {
                Some(next) => start = next,
                None => break,
            }
        }
    }
    session.range_done();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_common::{Cell, CellName, Partition};

    #[test]
    fn pages_round_trip_and_detect_corruption() {
        let table = TableId(uuid::Uuid::from_u128(9));
        let muts: Vec<Bytes> = (0..3)
            .map(|i| {
                let p = Partition::with_key(format!("k{i}")).set(
                    "r",
                    CellName::simple("v"),
                    Cell::live(i, "x"),
                );
                Mutation::new(table, p).encoded().clone()
            })
            .collect();
        let resume = ScanStart::After(DecoratedKey::new(Bytes::from_static(b"k1")));
        let page = encode_page(&muts, Some(&resume));
        let (back, r) = decode_page(&page).expect("decodes");
        assert_eq!(back.len(), 3);
        assert_eq!(back[2].encoded(), &muts[2]);
        assert_eq!(r, Some(resume));
        let mut bad = page.to_vec();
        bad[5] ^= 1;
        let err = decode_page(&Bytes::from(bad)).expect_err("corrupt");
        assert!(err.contains("checksum"), "{err}");

        let req = encode_request(
            table,
            &ScanStart::Token(Bound::Excluded(-5)),
            &Bound::Included(9),
        );
        let (t, s, e) = decode_request(&req).expect("request");
        assert_eq!(t, table);
        assert_eq!(s, ScanStart::Token(Bound::Excluded(-5)));
        assert_eq!(e, Bound::Included(9));
    }

    #[test]
    fn wrapping_ranges_scan_in_two_segments() {
        assert_eq!(segments(1, 5).len(), 1);
        assert_eq!(segments(5, 1).len(), 2);
        assert_eq!(segments(5, 5).len(), 2);
    }
}
