//! Streaming: the data of token ranges moved between nodes when one joins
//! (it pulls its new ranges, [`fetch_range`]) or leaves (it pushes every
//! range it held to the new owners, [`push_range`]).
//!
//! Pulled ranges travel as SSTables (`cluster.stream_sstables`): for each
//! segment of a range the puller asks the source for an offer (STREAM_FILES:
//! the source flushes the table once per session and keeps the SSTables
//! holding tokens of the segment open), then for each file STREAM_CHUNK: a
//! file whose token span lies inside the segment comes whole, as chunks of
//! [`CHUNK_BYTES`] of its bytes with a CRC32. Other files come as a section
//! written by the receiver into a new SSTable: the run of data blocks lying
//! inside the segment as stored (windows of [`CHUNK_BYTES`] of blocks; each
//! block keeps its own checksum), and the partitions before and after that
//! run (the edges of the segment) as pages of partitions. The receiver
//! stages the files (`gyre_storage::stream`) and imports them once the
//! range is complete; a failure removes them.
//!
//! A leaving node gives each range by asking the new owner to pull it from
//! it (STREAM_PULL, answered once the range is in).
//!
//! The row path (`cluster.stream_sstables = false`, a receiver that cannot
//! pull files, engines without SSTables, a partition too
//! large for a section): a page is the encoded mutations of whole partitions
//! of the engine's merged scan (up to about [`PAGE_BYTES`]; a huge partition
//! is cut at a clustering key and resumed there) followed by a CRC32 of
//! everything before it, applied through the receiver's engine as mutations
//! (commitlog, then memtable; acknowledged once durable).
//!
//! Everything goes on the internode bulk connection. Every pulled run (row
//! pages, chunks of a file, raw blocks, section pages) goes through one
//! driver ([`drive`]). Flow control is bounded requests in flight: chunks
//! whose positions are known up front (a whole file's offsets, a run of
//! blocks' windows) travel up to [`WINDOW`] at once while the earlier ones
//! are written in order; pages that each name the next travel one ahead of
//! the one being written. The pusher sends the next page only once the
//! receiver acknowledged the previous one as durable. The driving side
//! paces itself with a token bucket (`cluster.stream_throughput_mb_per_sec`);
//! a failed request is asked again (same position) a few times before the
//! session fails. Re-streaming a range after a failure is idempotent (last
//! write wins).

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use gyre_common::{codec, DecoratedKey, Token};
use gyre_coordinator::RateLimiter;
use gyre_net::{Inbound, Priority, Verb};
use gyre_storage::stream::{IncomingSection, OutgoingFile, RawBlock, SsTableMeta, StreamReceiver};
use gyre_storage::{Mutation, ReadFilter, ScanRequest, ScanStart, StorageEngine, TableId};
use parking_lot::Mutex;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::node::Shared;

/// Asks a node for one page of a table's token range (pull).
pub const STREAM_PAGE: Verb = Verb(0x0400);
/// Gives a node one page to apply; answered once durable (push).
pub const STREAM_APPLY: Verb = Verb(0x0401);

/// Asks a source which SSTables hold one segment of a range (SSTable
/// streaming); the answer is an offer the chunks below refer to.
pub const STREAM_FILES: Verb = Verb(0x0410);
/// Asks a source for a chunk of a whole SSTable of an offer, or a page of
/// a section of one.
pub const STREAM_CHUNK: Verb = Verb(0x0411);
/// Tells a source the puller is done with an offer (its SSTables may go).
pub const STREAM_RELEASE: Verb = Verb(0x0412);

/// A leaving node asks a new owner to pull one range from it (so pushed
/// ranges travel as SSTables too); answered once the range is in.
pub const STREAM_PULL: Verb = Verb(0x0413);
/// How long a leaving node waits for a new owner to pull one range.
const PULL_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Bytes of a whole SSTable per chunk (a frame is at most 16 MiB).
const CHUNK_BYTES: usize = 4 << 20;
/// Bytes of partitions per section page (a page is under twice that).
const SECTION_BYTES: usize = 4 << 20;
/// A source's answer meaning "stream this segment row by row": its engine
/// has no SSTable files, or a partition is too large for a section.
const ROWS: &str = "stream by rows: ";
/// An offer nobody asked about for this long is dropped.
const OFFER_IDLE: Duration = Duration::from_secs(600);
/// At most this many offers are open on a source at once.
const MAX_OFFERS: usize = 256;

/// Target size of one page.
pub const PAGE_BYTES: usize = 1 << 20;
/// Rows per engine scan while filling a page.
const SCAN_ROWS: usize = 256;
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per page before the range fails.
const ATTEMPTS: u32 = 4;

/// A range `(start, end]` of one table to move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// SSTables received whole, and sections of SSTables received.
    #[serde(default)]
    pub whole_files: u64,
    #[serde(default)]
    pub sections: u64,
    /// Bytes of sections received as stored data blocks (not decoded).
    #[serde(default)]
    pub raw_bytes: u64,
    /// MiB/s over the session so far.
    pub rate_mib_per_sec: f64,
    /// `running`, `done` or `failed: <why>`.
    pub state: String,
}

/// One session's counters, updated as pages move.
pub struct Session {
    pub id: u64,
    /// Names the session to its sources (which flush a table once per
    /// session); random, so a restarted node never reuses one.
    nonce: u64,
    operation: &'static str,
    direction: &'static str,
    peer: String,
    ranges_total: u64,
    ranges_done: AtomicU64,
    partitions: AtomicU64,
    bytes: AtomicU64,
    whole_files: AtomicU64,
    sections: AtomicU64,
    raw_bytes: AtomicU64,
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
            whole_files: self.whole_files.load(Ordering::Relaxed),
            sections: self.sections.load(Ordering::Relaxed),
            raw_bytes: self.raw_bytes.load(Ordering::Relaxed),
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
            nonce: rand::random(),
            operation,
            direction,
            peer,
            ranges_total,
            ranges_done: AtomicU64::new(0),
            partitions: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            whole_files: AtomicU64::new(0),
            sections: AtomicU64::new(0),
            raw_bytes: AtomicU64::new(0),
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

/// Registers a streaming verb that only ring members may call and whose
/// answer is computed on a blocking thread (it reads SSTables).
fn register_blocking(
    shared: &Arc<Shared>,
    verb: Verb,
    what: &'static str,
    answer: impl Fn(&dyn StorageEngine, std::net::SocketAddr, &Bytes) -> Result<Bytes, String>
        + Send
        + Sync
        + 'static,
) {
    let s = shared.clone();
    let answer = Arc::new(answer);
    shared.messenger.register(verb, move |msg: Inbound| {
        let Some(responder) = msg.responder else {
            return;
        };
        if !known_peer(&s, msg.from) {
            let _ = responder.respond_error(format!("{} is not a ring member", msg.from));
            return;
        }
        let engine = s.engine.clone();
        let answer = answer.clone();
        tokio::task::spawn_blocking(move || {
            let sent = match answer(engine.as_ref(), msg.from, &msg.payload) {
                Ok(b) => responder.respond(b),
                Err(e) => responder.respond_error(e),
            };
            if let Err(e) = sent {
                debug!(error = %e, "could not answer a stream {what} request");
            }
        });
    });
}

/// Registers the replica side of streaming on the messenger.
pub(crate) fn register_verbs(shared: &Arc<Shared>) {
    register_blocking(shared, STREAM_PAGE, "page", |engine, _, payload| {
        let (table, start, end) = decode_request(payload)?;
        let (muts, resume) = read_page(engine, table, start, end)?;
        Ok(encode_page(&muts, resume.as_ref()))
    });
    register_blocking(shared, STREAM_FILES, "offer", |engine, from, payload| {
        open_offer(engine, from, payload)
    });
    register_blocking(shared, STREAM_CHUNK, "chunk", |_, from, payload| {
        read_chunk(from, payload)
    });
    let s = shared.clone();
    shared.messenger.register(STREAM_PULL, move |msg: Inbound| {
        let Some(responder) = msg.responder else {
            return;
        };
        if !known_peer(&s, msg.from) {
            let _ = responder.respond_error(format!("{} is not a ring member", msg.from));
            return;
        }
        let range = match decode_range(&msg.payload) {
            Ok(r) => r,
            Err(e) => {
                let _ = responder.respond_error(e);
                return;
            }
        };
        if !s.cfg.cluster.stream_sstables {
            let _ = responder.respond_error(format!("{ROWS}cluster.stream_sstables is false"));
            return;
        }
        let s = s.clone();
        tokio::spawn(async move {
            let session = s
                .streams
                .start("decommission", "in", msg.from.to_string(), 1);
            let throttle = Throttle::new(s.cfg.cluster.stream_throughput_mb_per_sec);
            let result = fetch_range(&s, msg.from, range, &session, &throttle).await;
            session.finish(&result);
            let sent = match result {
                Ok(()) => {
                    let mut out = session.bytes.load(Ordering::Relaxed).to_be_bytes().to_vec();
                    out.extend_from_slice(
                        &session.partitions.load(Ordering::Relaxed).to_be_bytes(),
                    );
                    responder.respond(Bytes::from(out))
                }
                Err(e) => responder.respond_error(e),
            };
            if let Err(e) = sent {
                debug!(error = %e, "could not answer a stream pull");
            }
        });
    });
    shared
        .messenger
        .register(STREAM_RELEASE, move |msg: Inbound| {
            let Some(id) = msg
                .payload
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
            else {
                return;
            };
            let id = u64::from_be_bytes(id);
            let mut offers = OFFERS.lock();
            if offers
                .open
                .get(&id)
                .is_some_and(|(_, o)| o.peer == msg.from)
            {
                offers.open.remove(&id);
            }
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

/// Why a streaming request did not give its answer.
enum Refused {
    /// The source says: stream this segment row by row.
    Rows,
    Failed(String),
}

impl From<String> for Refused {
    fn from(e: String) -> Self {
        Refused::Failed(e)
    }
}

impl Refused {
    /// For the row path, where no source answers "by rows".
    fn into_message(self) -> String {
        match self {
            Refused::Rows => "the source refused to stream rows".into(),
            Refused::Failed(e) => e,
        }
    }
}

/// One request to a source, asked again (same payload, so the same
/// position) after a failure, up to [`ATTEMPTS`] times. A source's "stream
/// by rows" answer is not retried.
async fn request(
    messenger: &gyre_net::Messenger,
    to: std::net::SocketAddr,
    verb: Verb,
    payload: Bytes,
) -> Result<Bytes, Refused> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match messenger
            .request_with(to, verb, payload.clone(), PAGE_TIMEOUT, Priority::Bulk)
            .await
        {
            Ok(b) => return Ok(b),
            Err(gyre_net::Error::Remote { message, .. }) if message.starts_with(ROWS) => {
                debug!(peer = %to, reason = %message, "source streams rows");
                return Err(Refused::Rows);
            }
            Err(e) => {
                warn!(peer = %to, attempt, error = %e, "stream request failed; retrying");
                last = e.to_string();
            }
        }
    }
    Err(Refused::Failed(format!(
        "streaming with {to} failed: {last}"
    )))
}

/// Chunks of one file a puller has asked for at once.
const WINDOW: usize = 4;

/// How the requests of a run follow each other.
enum Asks {
    /// Each reply names the next request (pages after a resume point): the
    /// next one travels while the previous reply is used.
    Chained(Bytes),
    /// Known up front (chunks at offsets): up to [`WINDOW`] travel at once.
    Known(Vec<Bytes>),
}

/// What a run's consumer makes of one reply: the work to do with it (it
/// runs while later requests travel; it hands the state back) and, in a
/// chained run, the next request.
type Step<'a, S> = (
    futures::future::BoxFuture<'a, Result<S, String>>,
    Option<Bytes>,
);

/// Requests in flight; dropped (the run ended or failed), they are aborted.
struct InFlight(std::collections::VecDeque<tokio::task::JoinHandle<Result<Bytes, Refused>>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// The session driver every pulled run goes through (row pages, section
/// pages, chunks of files, raw blocks): asks the source (with retries),
/// keeps the run's requests in flight, paces each reply through the
/// throttle and hands the replies, in order, to `consume`.
async fn drive<'a, S>(
    shared: &Shared,
    from: std::net::SocketAddr,
    verb: Verb,
    asks: Asks,
    throttle: &Throttle,
    mut state: S,
    mut consume: impl FnMut(S, Bytes) -> Result<Step<'a, S>, Refused>,
) -> Result<S, Refused> {
    let ask = |payload: Bytes| {
        let messenger = shared.messenger.clone();
        tokio::spawn(async move { request(&messenger, from, verb, payload).await })
    };
    let mut flight = InFlight(Default::default());
    let mut known = match asks {
        Asks::Chained(first) => {
            flight.0.push_back(ask(first));
            Vec::new().into_iter()
        }
        Asks::Known(all) => all.into_iter(),
    };
    loop {
        while flight.0.len() < WINDOW {
            match known.next() {
                Some(b) => flight.0.push_back(ask(b)),
                None => break,
            }
        }
        let Some(handle) = flight.0.front_mut() else {
            return Ok(state);
        };
        let reply = handle
            .await
            .map_err(|e| Refused::Failed(format!("stream request task failed: {e}")))??;
        flight.0.pop_front();
        throttle.pace(reply.len()).await;
        let (work, next) = consume(state, reply)?;
        if let Some(b) = next {
            flight.0.push_back(ask(b));
        }
        state = work.await?;
    }
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
    // A node's own start (bootstrap, replace) resumes where a killed one
    // stopped: the ranges received are recorded as they complete.
    let progress = (direction == Direction::In && matches!(operation, "bootstrap" | "replace"))
        .then(|| Progress::load(&shared.cfg.storage.data_dir, operation));
    let sessions = plan.into_iter().map(|(peer, ranges)| {
        let mut ranges = coalesce(ranges);
        if let Some(p) = &progress {
            let before = ranges.len();
            ranges.retain(|r| !p.has(r));
            if ranges.len() < before {
                info!(
                    %peer,
                    already = before - ranges.len(),
                    left = ranges.len(),
                    "resuming {operation}: ranges already received are skipped"
                );
            }
        }
        let throttle = &throttle;
        let progress = &progress;
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
                match (&result, progress) {
                    (Err(_), _) => break,
                    (Ok(()), Some(p)) => p.add(r),
                    (Ok(()), None) => {}
                }
            }
            session.finish(&result);
            result
        }
    });
    for r in futures::future::join_all(sessions).await {
        r?;
    }
    if let Some(p) = progress {
        p.clear();
    }
    Ok(())
}

/// The ranges a bootstrap (or replace) received so far, in
/// `<data_dir>/<operation>_ranges.json`, so that a restarted one skips them
/// (as Cassandra's `system.available_ranges`). Removed once the whole plan
/// is done. The data of a recorded range is durable: imported SSTables are
/// synced, applied rows acknowledged as durable.
struct Progress {
    path: std::path::PathBuf,
    done: Mutex<Vec<StreamRange>>,
}

impl Progress {
    fn load(data_dir: &std::path::Path, operation: &str) -> Progress {
        let path = data_dir.join(format!("{operation}_ranges.json"));
        let done = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "unreadable stream progress; streaming everything");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Progress {
            path,
            done: Mutex::new(done),
        }
    }

    fn has(&self, r: &StreamRange) -> bool {
        self.done.lock().contains(r)
    }

    fn add(&self, r: StreamRange) {
        let mut done = self.done.lock();
        done.push(r);
        let tmp = self.path.with_extension("json.tmp");
        let saved = serde_json::to_vec(&*done)
            .map_err(|e| e.to_string())
            .and_then(|b| std::fs::write(&tmp, b).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&tmp, &self.path).map_err(|e| e.to_string()));
        if let Err(e) = saved {
            // Only a resume would stream more than it needs.
            warn!(path = %self.path.display(), error = %e, "could not record stream progress");
        }
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Joins the ranges of a table that follow each other (`(a, b]` and
/// `(b, c]` make `(a, c]`): fewer, larger ranges, so more SSTables lie
/// inside one and travel whole.
fn coalesce(mut ranges: Vec<StreamRange>) -> Vec<StreamRange> {
    ranges.sort_by_key(|r| (r.table, r.start));
    let mut used = vec![false; ranges.len()];
    let mut out = Vec::new();
    for i in 0..ranges.len() {
        if used[i] {
            continue;
        }
        used[i] = true;
        let mut r = ranges[i];
        // `start == end` is the whole ring: nothing more joins it.
        while r.start != r.end {
            let next = (0..ranges.len())
                .find(|&j| !used[j] && ranges[j].table == r.table && ranges[j].start == r.end);
            let prev = (0..ranges.len())
                .find(|&j| !used[j] && ranges[j].table == r.table && ranges[j].end == r.start);
            match (next, prev) {
                (Some(j), _) => {
                    used[j] = true;
                    r.end = ranges[j].end;
                }
                (None, Some(j)) => {
                    used[j] = true;
                    r.start = ranges[j].start;
                }
                (None, None) => break,
            }
        }
        out.push(r);
    }
    out
}

/// Pulls `range` from `from` into the local engine: as SSTables (whole
/// files, or sections of files) imported once the range is complete, or as
/// rows applied through the engine where the source or this node has no
/// SSTable files (the RocksDB engine) or a partition is too large for a
/// section. A failure leaves nothing staged behind.
pub(crate) async fn fetch_range(
    shared: &Shared,
    from: std::net::SocketAddr,
    range: StreamRange,
    session: &Session,
    throttle: &Throttle,
) -> Result<(), String> {
    let engine = shared.engine.clone();
    let mut rx = match shared.cfg.cluster.stream_sstables {
        false => None,
        true => match engine.stream_receiver(range.table) {
            Ok(rx) => Some(rx),
            Err(gyre_storage::Error::Unsupported(_)) => None,
            Err(e) => return Err(e.to_string()),
        },
    };
    for (start, end) in segments(range.start, range.end) {
        if let Some(rx) = rx.as_mut() {
            match fetch_segment_files(
                shared,
                from,
                range.table,
                &start,
                &end,
                rx,
                session,
                throttle,
            )
            .await
            {
                Ok(()) => continue,
                Err(Refused::Rows) => {}
                Err(Refused::Failed(e)) => return Err(e),
            }
        }
        fetch_segment_rows(shared, from, range.table, start, end, session, throttle).await?;
    }
    if let Some(mut rx) = rx {
        if !rx.staged().is_empty() {
            let table = range.table;
            let report = blocking(move || {
                engine
                    .import_streamed(table, &mut rx)
                    .map_err(|e| e.to_string())
            })
            .await?;
            debug!(table = %table, files = report.files, bytes = report.bytes, "imported streamed SSTables");
        }
    }
    session.range_done();
    Ok(())
}

/// Pulls one segment as pages of rows and applies them.
async fn fetch_segment_rows(
    shared: &Shared,
    from: std::net::SocketAddr,
    table: TableId,
    start: ScanStart,
    end: Bound<Token>,
    session: &Session,
    throttle: &Throttle,
) -> Result<(), String> {
    let engine = shared.engine.as_ref();
    let first = encode_request(table, &start, &end);
    drive(
        shared,
        from,
        STREAM_PAGE,
        Asks::Chained(first),
        throttle,
        (),
        |(), reply| {
            let (muts, resume) = decode_page(&reply)?;
            session
                .bytes
                .fetch_add(reply.len() as u64, Ordering::Relaxed);
            session
                .partitions
                .fetch_add(muts.len() as u64, Ordering::Relaxed);
            // The next page travels while this one is applied: at most
            // two pages of a session are in this node's memory.
            let next = resume.map(|n| encode_request(table, &n, &end));
            Ok((apply_all(engine, muts).boxed(), next))
        },
    )
    .await
    .map_err(Refused::into_message)
}

fn encode_range(r: &StreamRange) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(r.table.0.as_bytes());
    codec::put_varint(&mut out, r.start);
    codec::put_varint(&mut out, r.end);
    Bytes::from(out)
}

fn decode_range(b: &Bytes) -> Result<StreamRange, String> {
    let id: [u8; 16] = b
        .get(..16)
        .and_then(|s| s.try_into().ok())
        .ok_or("short stream range")?;
    let rest = b.slice(16..);
    let mut r = codec::Reader::new(&rest);
    let e = |e: codec::DecodeError| e.to_string();
    Ok(StreamRange {
        table: TableId(uuid::Uuid::from_bytes(id)),
        start: r.varint().map_err(e)?,
        end: r.varint().map_err(e)?,
    })
}

/// Gives `range` to `to`: asks it to pull the range as SSTables
/// (STREAM_PULL), or pushes rows a page at a time when it cannot.
pub(crate) async fn push_range(
    shared: &Shared,
    to: std::net::SocketAddr,
    range: StreamRange,
    session: &Session,
    throttle: &Throttle,
) -> Result<(), String> {
    if shared.cfg.cluster.stream_sstables {
        match shared
            .messenger
            .request_with(
                to,
                STREAM_PULL,
                encode_range(&range),
                PULL_TIMEOUT,
                Priority::Bulk,
            )
            .await
        {
            Ok(b) if b.len() == 16 => {
                let n = |i: usize| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&b[i..i + 8]);
                    u64::from_be_bytes(a)
                };
                session.bytes.fetch_add(n(0), Ordering::Relaxed);
                session.partitions.fetch_add(n(8), Ordering::Relaxed);
                session.range_done();
                return Ok(());
            }
            Ok(_) => return Err(format!("bad answer from {to} to a stream pull")),
            Err(gyre_net::Error::Remote { message, .. }) if message.starts_with(ROWS) => {
                debug!(peer = %to, reason = %message, "pushing rows");
            }
            Err(e) => return Err(format!("streaming to {to} failed: {e}")),
        }
    }
    push_rows(shared, to, range, session, throttle).await
}

/// Reads `range` locally and pushes it to `to`, a page at a time.
async fn push_rows(
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
                request(&shared.messenger, to, STREAM_APPLY, page.clone())
                    .await
                    .map_err(Refused::into_message)?;
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

// ---- SSTable streaming ----

/// SSTables a source offered for one segment, kept (their files stay
/// readable even once compaction removed them) until the puller releases
/// the offer or it idles out.
struct Offer {
    peer: std::net::SocketAddr,
    table: TableId,
    end: Bound<Token>,
    files: Vec<OutgoingFile>,
}

struct Offers {
    next: u64,
    open: HashMap<u64, (Instant, Arc<Offer>)>,
    /// Tables flushed for a puller's session (peer, nonce): once each, so
    /// that a session of many ranges under writes does not cut a small
    /// SSTable per range. Writes after the flush reach the puller anyway
    /// (it is a pending replica since before streaming began).
    flushed: HashMap<(std::net::SocketAddr, u64), (Instant, Vec<TableId>)>,
}

static OFFERS: LazyLock<Mutex<Offers>> = LazyLock::new(|| {
    // Ids of a restarted source never match a stale puller's.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Mutex::new(Offers {
        next: seed,
        open: HashMap::new(),
        flushed: HashMap::new(),
    })
});

fn offer(id: u64, from: std::net::SocketAddr) -> Result<Arc<Offer>, String> {
    let mut offers = OFFERS.lock();
    match offers.open.get_mut(&id) {
        Some((used, o)) if o.peer == from => {
            *used = Instant::now();
            Ok(o.clone())
        }
        _ => Err(format!("no stream offer {id} for {from}")),
    }
}

/// Answers STREAM_FILES: flushes, picks the SSTables, opens an offer.
fn open_offer(
    engine: &dyn StorageEngine,
    from: std::net::SocketAddr,
    payload: &Bytes,
) -> Result<Bytes, String> {
    let nonce: [u8; 8] = payload
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or("short stream offer request")?;
    let nonce = u64::from_be_bytes(nonce);
    let (table, start, end) = decode_request(&payload.slice(8..))?;
    let first = {
        let mut offers = OFFERS.lock();
        offers
            .flushed
            .retain(|_, (used, _)| used.elapsed() < OFFER_IDLE);
        if offers.flushed.len() >= MAX_OFFERS && !offers.flushed.contains_key(&(from, nonce)) {
            return Err("too many streaming sessions; try again later".into());
        }
        let (used, tables) = offers
            .flushed
            .entry((from, nonce))
            .or_insert_with(|| (Instant::now(), Vec::new()));
        *used = Instant::now();
        let first = !tables.contains(&table);
        if first {
            tables.push(table);
        }
        first
    };
    if first {
        if let Err(e) = engine.flush(Some(table)) {
            let mut offers = OFFERS.lock();
            if let Some((_, tables)) = offers.flushed.get_mut(&(from, nonce)) {
                tables.retain(|t| *t != table);
            }
            return Err(e.to_string());
        }
    }
    let files = match engine.stream_files(table, &start, &end) {
        Ok(f) => f,
        Err(gyre_storage::Error::Unsupported(what)) => return Err(format!("{ROWS}{what}")),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    let mut offers = OFFERS.lock();
    offers
        .open
        .retain(|_, (used, _)| used.elapsed() < OFFER_IDLE);
    if offers.open.len() >= MAX_OFFERS {
        return Err(format!(
            "{} stream offers are open; try again later",
            offers.open.len()
        ));
    }
    offers.next = offers.next.wrapping_add(1);
    let id = offers.next;
    out.extend_from_slice(&id.to_be_bytes());
    codec::put_uvarint(&mut out, files.len() as u64);
    for f in &files {
        out.push(u8::from(f.whole));
        codec::put_uvarint(&mut out, f.bytes());
        codec::put_uvarint(&mut out, f.partitions());
        if !f.whole {
            // A section's run of blocks sent as stored, and the statistics
            // its receiver takes from this file's metadata.
            codec::put_uvarint(&mut out, f.raw_bytes());
            let meta = serde_json::to_vec(f.meta()).map_err(|e| e.to_string())?;
            codec::put_bytes(&mut out, &meta);
        }
    }
    let o = Offer {
        peer: from,
        table,
        end,
        files,
    };
    offers.open.insert(id, (Instant::now(), Arc::new(o)));
    Ok(Bytes::from(out))
}

/// One file of an offer, as the puller sees it.
#[derive(Debug, PartialEq)]
struct OfferedFile {
    whole: bool,
    bytes: u64,
    partitions: u64,
    /// A section's run of blocks sent as stored (0: none).
    raw_bytes: u64,
    /// A section's source metadata.
    meta: Option<Arc<SsTableMeta>>,
}

fn decode_offer(b: &Bytes) -> Result<(u64, Vec<OfferedFile>), String> {
    let e = |e: codec::DecodeError| e.to_string();
    let id: [u8; 8] = b
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or("short stream offer")?;
    let rest = b.slice(8..);
    let mut r = codec::Reader::new(&rest);
    let n = r.uvarint().map_err(e)?;
    let mut files = Vec::with_capacity(n.min(1 << 16) as usize);
    for _ in 0..n {
        let whole = r.u8().map_err(e)? != 0;
        let bytes = r.uvarint().map_err(e)?;
        let partitions = r.uvarint().map_err(e)?;
        let (raw_bytes, meta) = if whole {
            (0, None)
        } else {
            let raw = r.uvarint().map_err(e)?;
            let meta: SsTableMeta = serde_json::from_slice(&r.bytes().map_err(e)?)
                .map_err(|e| format!("stream offer metadata: {e}"))?;
            (raw, Some(Arc::new(meta)))
        };
        files.push(OfferedFile {
            whole,
            bytes,
            partitions,
            raw_bytes,
            meta,
        });
    }
    Ok((u64::from_be_bytes(id), files))
}

/// What a STREAM_CHUNK asks for.
#[derive(Debug, PartialEq)]
enum ChunkAt {
    /// Bytes of a whole file from this offset.
    Offset(u64),
    /// Partitions of a section from this position (its head when it has a
    /// raw run: up to the run).
    Section(ScanStart),
    /// The blocks of a section's raw run starting in its k-th window of
    /// [`CHUNK_BYTES`].
    Raw(u64),
    /// Partitions of a section after its raw run, from the run's end or
    /// a resume point.
    Tail(Option<ScanStart>),
}

fn encode_chunk_request(id: u64, file: usize, at: &ChunkAt) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    codec::put_uvarint(&mut out, file as u64);
    match at {
        ChunkAt::Offset(o) => {
            out.push(0);
            codec::put_uvarint(&mut out, *o);
        }
        ChunkAt::Section(s) => {
            out.push(1);
            put_start(&mut out, s);
        }
        ChunkAt::Raw(k) => {
            out.push(2);
            codec::put_uvarint(&mut out, *k);
        }
        ChunkAt::Tail(None) => out.push(3),
        ChunkAt::Tail(Some(s)) => {
            out.push(4);
            put_start(&mut out, s);
        }
    }
    Bytes::from(out)
}

fn decode_chunk_request(b: &Bytes) -> Result<(u64, usize, ChunkAt), String> {
    let e = |e: codec::DecodeError| e.to_string();
    let id: [u8; 8] = b
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or("short stream chunk request")?;
    let rest = b.slice(8..);
    let mut r = codec::Reader::new(&rest);
    let file = usize::try_from(r.uvarint().map_err(e)?).map_err(|e| e.to_string())?;
    let at = match r.u8().map_err(e)? {
        0 => ChunkAt::Offset(r.uvarint().map_err(e)?),
        1 => ChunkAt::Section(get_start(&mut r)?),
        2 => ChunkAt::Raw(r.uvarint().map_err(e)?),
        3 => ChunkAt::Tail(None),
        4 => ChunkAt::Tail(Some(get_start(&mut r)?)),
        _ => return Err("bad stream chunk request".into()),
    };
    Ok((u64::from_be_bytes(id), file, at))
}

/// Raw blocks as sent: each block's first position and its stored bytes,
/// then a CRC32 of all of it (each block also carries its own checksum,
/// checked by the receiver's writer).
fn encode_raw(blocks: &[RawBlock]) -> Bytes {
    let size: usize = blocks
        .iter()
        .map(|b| b.bytes.len() + b.key.key.len() + 32)
        .sum();
    let mut out = Vec::with_capacity(size + 16);
    codec::put_uvarint(&mut out, blocks.len() as u64);
    for b in blocks {
        out.extend_from_slice(&b.key.token.to_be_bytes());
        codec::put_bytes(&mut out, &b.key.key);
        match &b.clustering {
            None => out.push(0),
            Some(ck) => {
                out.push(1);
                codec::put_bytes(&mut out, ck);
            }
        }
        codec::put_bytes(&mut out, &b.bytes);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

fn decode_raw(b: &Bytes) -> Result<Vec<RawBlock>, String> {
    let body = check_chunk(b)?;
    let e = |e: codec::DecodeError| e.to_string();
    let mut r = codec::Reader::new(&body);
    let n = r.uvarint().map_err(e)?;
    let mut out = Vec::with_capacity(n.min(1 << 16) as usize);
    for _ in 0..n {
        let token = r.i64_be().map_err(e)?;
        let key = r.bytes().map_err(e)?;
        let clustering = match r.u8().map_err(e)? {
            0 => None,
            _ => Some(r.bytes().map_err(e)?),
        };
        out.push(RawBlock {
            key: DecoratedKey { token, key },
            clustering,
            bytes: r.bytes().map_err(e)?,
        });
    }
    Ok(out)
}

/// Largest reply of raw blocks (a frame is at most 16 MiB): a block this
/// large (one huge row) makes the segment go by rows.
const MAX_RAW_REPLY: usize = 3 * CHUNK_BYTES;

/// Reads one page of a section, handing each partition to the callback.
type SectionRead<'a> = Box<
    dyn FnOnce(
            &mut dyn FnMut(gyre_common::Partition) -> usize,
        ) -> gyre_storage::Result<Option<ScanStart>>
        + 'a,
>;

/// A page of a section's partitions, as [`encode_page`].
fn section_page(table: TableId, read: SectionRead<'_>) -> Result<Bytes, String> {
    let mut muts = Vec::new();
    let resume = read(&mut |p| {
        let m = Mutation::new(table, p);
        let n = m.encoded().len();
        muts.push(m.encoded().clone());
        n
    })
    .map_err(|e| match e {
        gyre_storage::Error::LimitExceeded(why) => format!("{ROWS}{why}"),
        e => e.to_string(),
    })?;
    Ok(encode_page(&muts, resume.as_ref()))
}

/// Answers STREAM_CHUNK: raw bytes and a CRC32 for a whole file, a page
/// (as [`encode_page`]) of a section's head or tail, or blocks of a
/// section's raw run.
fn read_chunk(from: std::net::SocketAddr, payload: &Bytes) -> Result<Bytes, String> {
    let (id, file, at) = decode_chunk_request(payload)?;
    let o = offer(id, from)?;
    let f = o
        .files
        .get(file)
        .ok_or_else(|| format!("stream offer {id} has no file {file}"))?;
    let section = |read: SectionRead<'_>| section_page(o.table, read);
    match at {
        ChunkAt::Offset(offset) if f.whole => {
            let mut buf = f
                .read_chunk(offset, CHUNK_BYTES)
                .map_err(|e| e.to_string())?;
            let crc = crc32fast::hash(&buf);
            buf.extend_from_slice(&crc.to_be_bytes());
            Ok(Bytes::from(buf))
        }
        ChunkAt::Offset(_) => Err(format!("file {file} of stream offer {id} is a section")),
        ChunkAt::Section(start) => section(Box::new(|take| {
            f.read_section(&start, &o.end, SECTION_BYTES, take)
        })),
        ChunkAt::Tail(start) => section(Box::new(|take| {
            f.read_tail(start.as_ref(), &o.end, SECTION_BYTES, take)
        })),
        ChunkAt::Raw(k) => {
            let blocks = f
                .read_raw(k, CHUNK_BYTES as u64)
                .map_err(|e| e.to_string())?;
            let size: usize = blocks.iter().map(|b| b.bytes.len()).sum();
            if size > MAX_RAW_REPLY {
                return Err(format!("{ROWS}a block run of {size} bytes is too large"));
            }
            Ok(encode_raw(&blocks))
        }
    }
}

fn check_chunk(b: &Bytes) -> Result<Bytes, String> {
    let n = b.len().checked_sub(4).ok_or("short stream chunk")?;
    let want = u32::from_be_bytes(b[n..].try_into().map_err(|_| "short stream chunk")?);
    let body = b.slice(..n);
    if crc32fast::hash(&body) != want {
        return Err("stream chunk checksum mismatch".into());
    }
    Ok(body)
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("stream file task failed: {e}"))?
}

/// Pulls one segment of a range as SSTables into `rx`; `Refused::Rows`
/// when the source asks for rows instead.
#[allow(clippy::too_many_arguments)]
async fn fetch_segment_files(
    shared: &Shared,
    from: std::net::SocketAddr,
    table: TableId,
    start: &ScanStart,
    end: &Bound<Token>,
    rx: &mut StreamReceiver,
    session: &Session,
    throttle: &Throttle,
) -> Result<(), Refused> {
    let mut req = session.nonce.to_be_bytes().to_vec();
    req.extend_from_slice(&encode_request(table, start, end));
    let reply = request(&shared.messenger, from, STREAM_FILES, Bytes::from(req)).await?;
    let (id, files) = decode_offer(&reply)?;
    let mut result = Ok(());
    for (i, f) in files.iter().enumerate() {
        let file = Pull {
            shared,
            from,
            id,
            index: i,
            session,
            throttle,
        };
        result = if f.whole {
            file.whole(f, rx).await
        } else {
            file.section(f, start, rx).await
        };
        if result.is_err() {
            break;
        }
    }
    // The source may let the SSTables go (an idle offer expires anyway).
    let _ = shared.messenger.send_oneway_with(
        from,
        STREAM_RELEASE,
        Bytes::copy_from_slice(&id.to_be_bytes()),
        Priority::Bulk,
    );
    result
}

/// One file of an offer being pulled.
struct Pull<'a> {
    shared: &'a Shared,
    from: std::net::SocketAddr,
    id: u64,
    index: usize,
    session: &'a Session,
    throttle: &'a Throttle,
}

impl Pull<'_> {
    fn ask(&self, at: &ChunkAt) -> Bytes {
        encode_chunk_request(self.id, self.index, at)
    }

    /// Receives a whole SSTable: up to [`WINDOW`] chunks travel while the
    /// earlier ones are written at their offsets.
    async fn whole(&self, file: &OfferedFile, rx: &mut StreamReceiver) -> Result<(), Refused> {
        let incoming = rx.whole_file().map_err(|e| e.to_string())?;
        let offsets: Vec<u64> = (0..file.bytes).step_by(CHUNK_BYTES).collect();
        let asks = offsets.iter().map(|o| self.ask(&ChunkAt::Offset(*o)));
        let total = file.bytes;
        let (incoming, _) = drive(
            self.shared,
            self.from,
            STREAM_CHUNK,
            Asks::Known(asks.collect()),
            self.throttle,
            (incoming, 0u64),
            |(mut incoming, at), reply| {
                let body = check_chunk(&reply)?;
                let want = (CHUNK_BYTES as u64).min(total - at);
                if body.len() as u64 != want {
                    let e = format!(
                        "a stream chunk at {at} of a file of {total} bytes has {} bytes",
                        body.len()
                    );
                    return Err(Refused::Failed(e));
                }
                self.session
                    .bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                let work = blocking(move || {
                    incoming.write_at(&body, at).map_err(|e| e.to_string())?;
                    Ok((incoming, at + want))
                });
                Ok((work.boxed(), None))
            },
        )
        .await?;
        let path = blocking(move || incoming.finish().map_err(|e| e.to_string())).await?;
        rx.add(path);
        self.session.whole_files.fetch_add(1, Ordering::Relaxed);
        self.session
            .partitions
            .fetch_add(file.partitions, Ordering::Relaxed);
        Ok(())
    }

    /// Receives a section into a new SSTable: its head as pages of
    /// partitions, its run of blocks as stored (up to [`WINDOW`] chunks
    /// in flight), its tail as pages again.
    async fn section(
        &self,
        file: &OfferedFile,
        start: &ScanStart,
        rx: &mut StreamReceiver,
    ) -> Result<(), Refused> {
        let mut sec = rx.section().map_err(|e| e.to_string())?;
        sec = self.pages(sec, ChunkAt::Section(start.clone())).await?;
        if file.raw_bytes > 0 {
            let meta = file
                .meta
                .clone()
                .ok_or_else(|| Refused::Failed("a stream offer without metadata".into()))?;
            let asks = (0..file.raw_bytes.div_ceil(CHUNK_BYTES as u64))
                .map(|k| self.ask(&ChunkAt::Raw(k)))
                .collect();
            sec = drive(
                self.shared,
                self.from,
                STREAM_CHUNK,
                Asks::Known(asks),
                self.throttle,
                sec,
                |mut sec, reply| {
                    let blocks = decode_raw(&reply)?;
                    for n in [&self.session.bytes, &self.session.raw_bytes] {
                        n.fetch_add(reply.len() as u64, Ordering::Relaxed);
                    }
                    let meta = meta.clone();
                    let session_partitions = &self.session.partitions;
                    let work = async move {
                        let (sec, n) = blocking(move || {
                            let n = sec.add_raw(&blocks, &meta).map_err(|e| e.to_string())?;
                            Ok((sec, n))
                        })
                        .await?;
                        session_partitions.fetch_add(n, Ordering::Relaxed);
                        Ok(sec)
                    };
                    Ok((work.boxed(), None))
                },
            )
            .await?;
            sec = self.pages(sec, ChunkAt::Tail(None)).await?;
        }
        if let Some(p) = blocking(move || sec.finish().map_err(|e| e.to_string())).await? {
            rx.add(p);
        }
        self.session.sections.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Pages of partitions of a section from `first` (a head or a tail)
    /// written into `sec`, the next page travelling while one is written.
    async fn pages(
        &self,
        sec: IncomingSection,
        first: ChunkAt,
    ) -> Result<IncomingSection, Refused> {
        let tail = matches!(first, ChunkAt::Tail(_));
        drive(
            self.shared,
            self.from,
            STREAM_CHUNK,
            Asks::Chained(self.ask(&first)),
            self.throttle,
            sec,
            |mut sec, reply| {
                let (muts, resume) = decode_page(&reply)?;
                self.session
                    .bytes
                    .fetch_add(reply.len() as u64, Ordering::Relaxed);
                self.session
                    .partitions
                    .fetch_add(muts.len() as u64, Ordering::Relaxed);
                let next = resume.map(|n| {
                    self.ask(&if tail {
                        ChunkAt::Tail(Some(n))
                    } else {
                        ChunkAt::Section(n)
                    })
                });
                let work = blocking(move || {
                    for m in muts {
                        sec.add(&m.into_update()).map_err(|e| e.to_string())?;
                    }
                    Ok(sec)
                });
                Ok((work.boxed(), next))
            },
        )
        .await
    }
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
    fn chunk_requests_and_raw_blocks_round_trip() {
        for at in [
            ChunkAt::Offset(7 << 20),
            ChunkAt::Section(ScanStart::Token(Bound::Excluded(-3))),
            ChunkAt::Raw(12),
            ChunkAt::Tail(None),
            ChunkAt::Tail(Some(ScanStart::After(DecoratedKey::new(
                Bytes::from_static(b"k"),
            )))),
        ] {
            let b = encode_chunk_request(41, 3, &at);
            assert_eq!(decode_chunk_request(&b).expect("decodes"), (41, 3, at));
        }
        let blocks = vec![
            RawBlock {
                key: DecoratedKey::new(Bytes::from_static(b"a")),
                clustering: None,
                bytes: Bytes::from_static(b"first block"),
            },
            RawBlock {
                key: DecoratedKey::new(Bytes::from_static(b"a")),
                clustering: Some(Bytes::from_static(b"ck")),
                bytes: Bytes::from_static(b"second"),
            },
        ];
        let wire = encode_raw(&blocks);
        let back = decode_raw(&wire).expect("decodes");
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].key, blocks[1].key);
        assert_eq!(back[1].clustering, blocks[1].clustering);
        assert_eq!(back[0].bytes, blocks[0].bytes);
        let mut bad = wire.to_vec();
        bad[12] ^= 1;
        let err = decode_raw(&Bytes::from(bad)).expect_err("corrupt");
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn adjacent_ranges_of_a_table_coalesce() {
        let t = TableId(uuid::Uuid::from_u128(1));
        let u = TableId(uuid::Uuid::from_u128(2));
        let r = |table, start, end| StreamRange { table, start, end };
        let got = coalesce(vec![
            r(t, 10, 20),
            r(u, 0, 10),
            r(t, 100, -50),
            r(t, 0, 10),
            r(t, 30, 40),
            r(t, -50, 0),
            r(u, 10, 20),
        ]);
        assert_eq!(got, vec![r(t, 100, 20), r(t, 30, 40), r(u, 0, 20)]);
        // Ranges covering the ring become the whole ring (two segments).
        let ring = coalesce(vec![r(t, 5, 9), r(t, 9, -3), r(t, -3, 5)]);
        assert_eq!(ring.len(), 1);
        assert_eq!(ring[0].start, ring[0].end);
    }

    #[test]
    fn wrapping_ranges_scan_in_two_segments() {
        assert_eq!(segments(1, 5).len(), 1);
        assert_eq!(segments(5, 1).len(), 2);
        assert_eq!(segments(5, 5).len(), 2);
    }
}
