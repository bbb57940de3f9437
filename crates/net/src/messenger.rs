use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::faults::{FaultAction, FaultRules, FaultState};
use crate::frame::{FrameKind, FLAG_ERROR, FLAG_TRACED};
use crate::stats::{NetStats, StatsRecorder};
use crate::tcp::{NetConfig, TcpTransport};
use crate::transport::{Message, NodeAddr, Priority, SendOptions, Transport, Verb};

/// One-way messages queued longer than this are dropped instead of sent late.
const ONEWAY_TTL: Duration = Duration::from_secs(10);

/// A received request or one-way message, handed to the verb's [`Handler`].
#[derive(Debug)]
pub struct Inbound {
    pub from: NodeAddr,
    pub verb: Verb,
    pub payload: Bytes,
    /// `Some` for requests: answer through it. Dropping it unanswered sends
    /// the requester an error so it fails fast instead of timing out.
    pub responder: Option<Responder>,
    /// For a request: when its requester stops waiting, on this node's
    /// clock (the frame carries the time left, see [`crate::Frame::timeout`]).
    pub deadline: Option<Instant>,
    /// The trace session of a request sent on behalf of a traced client
    /// request ([`FLAG_TRACED`]): the replica records its events for it.
    pub trace_session: Option<uuid::Uuid>,
}

impl Inbound {
    /// True once the requester has given up on this request: answering it
    /// is wasted work.
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| d <= Instant::now())
    }

    /// Time left until the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// Receives messages for one verb. Runs on the network's receive task:
/// it must not block (hand work to a task or a channel).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, msg: Inbound);
}

impl<F: Fn(Inbound) + Send + Sync + 'static> Handler for F {
    fn handle(&self, msg: Inbound) {
        self(msg)
    }
}

/// Answers one request. Consumed by `respond`/`respond_error`.
#[derive(Debug)]
pub struct Responder {
    messenger: Weak<Inner>,
    to: NodeAddr,
    verb: Verb,
    id: u64,
    answered: bool,
    held: Option<Held>,
}

/// Something kept alive until a request is answered (see [`Responder::hold`]).
struct Held(#[allow(dead_code)] Box<dyn Send + Sync>);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl Responder {
    /// The node that sent the request.
    pub fn peer(&self) -> NodeAddr {
        self.to
    }

    /// Keeps `guard` until this request is answered (or dropped): e.g. a
    /// permit of a bounded stage, released however the handler finishes.
    pub fn hold(&mut self, guard: impl Send + Sync + 'static) {
        self.held = Some(Held(Box::new(guard)));
    }

    /// Drops the request without answering: for a request whose requester
    /// has already given up (past its deadline), where even an error
    /// response is wasted.
    pub fn abandon(mut self) {
        self.answered = true;
    }

    pub fn respond(mut self, payload: Bytes) -> Result<()> {
        self.answered = true;
        self.send(0, payload)
    }

    /// The requester's `request` returns [`Error::Remote`] with `message`.
    pub fn respond_error(mut self, message: impl Into<String>) -> Result<()> {
        self.answered = true;
        self.send(FLAG_ERROR, Bytes::from(message.into()))
    }

    fn send(&self, flags: u8, payload: Bytes) -> Result<()> {
        let inner = self.messenger.upgrade().ok_or(Error::Shutdown)?;
        let msg = Message {
            from: inner.local,
            kind: FrameKind::Response,
            flags,
            verb: self.verb,
            id: self.id,
            deadline: None,
            payload,
        };
        inner.send(self.to, msg, SendOptions::default())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            if let Err(e) = self.send(
                FLAG_ERROR,
                Bytes::from_static(b"request dropped without a response"),
            ) {
                debug!(peer = %self.to, error = %e, "could not send implicit error response");
            }
        }
    }
}

struct Pending {
    peer: NodeAddr,
    tx: oneshot::Sender<Result<Bytes>>,
}

/// Hashes request ids, which are already uniformly random: one multiply
/// spreads them over both the bucket bits and the tag bits of the table.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// One lock per shard, on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct PendingShard(Mutex<IdMap<Pending>>);

const PENDING_SHARDS: usize = 64;

/// Requests waiting for their response, by request id. Sharded by id so
/// that concurrent requests and responses rarely take the same lock.
struct PendingMap {
    shards: Box<[PendingShard]>,
}

impl PendingMap {
    fn new() -> Self {
        PendingMap {
            shards: (0..PENDING_SHARDS)
                .map(|_| PendingShard::default())
                .collect(),
        }
    }

    fn shard(&self, id: u64) -> &Mutex<IdMap<Pending>> {
        // The top bits: the table inside the shard indexes by the low ones.
        &self.shards[(id >> 58) as usize % PENDING_SHARDS].0
    }

    /// Registers a request under a fresh random id (never 0, which one-way
    /// messages carry) and returns the id. Random so that an id says nothing
    /// about other requests and cannot be guessed to forge a response.
    fn insert(&self, pending: Pending) -> u64 {
        let mut rng = rand::thread_rng();
        loop {
            let id: u64 = rng.gen();
            if id == 0 {
                continue;
            }
            let mut shard = self.shard(id).lock();
            if let std::collections::hash_map::Entry::Vacant(e) = shard.entry(id) {
                e.insert(pending);
                return id;
            }
        }
    }

    /// Takes the request `id` if `peer` sent it: ids are only unique per requester.
    fn take(&self, id: u64, peer: NodeAddr) -> Option<Pending> {
        let mut shard = self.shard(id).lock();
        if shard.get(&id).is_some_and(|p| p.peer == peer) {
            shard.remove(&id)
        } else {
            None
        }
    }

    fn remove(&self, id: u64) {
        self.shard(id).lock().remove(&id);
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    fn drain(&self) -> Vec<Pending> {
        self.shards
            .iter()
            .flat_map(|s| s.0.lock().drain().map(|(_, p)| p).collect::<Vec<_>>())
            .collect()
    }
}

/// The registered handlers. Read for every inbound request, written only when
/// a handler is registered, so readers load a snapshot and writers replace it.
#[derive(Clone, Default)]
struct Handlers {
    by_verb: HashMap<Verb, Arc<dyn Handler>>,
    fallback: Option<Arc<dyn Handler>>,
}

struct Inner {
    local: NodeAddr,
    transport: Arc<dyn Transport>,
    pending: PendingMap,
    handlers: ArcSwap<Handlers>,
    faults: FaultState,
    stats: StatsRecorder,
    shut: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.transport.shutdown();
    }
}

impl Inner {
    /// Outgoing path: fault rules, then the transport.
    fn send(self: &Arc<Self>, to: NodeAddr, msg: Message, opts: SendOptions) -> Result<()> {
        if self.shut.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let verb = msg.verb;
        match self.faults.decide(to) {
            FaultAction::Deliver => self.transmit(to, msg, opts),
            FaultAction::Drop => {
                // Like a lossy network: the sender does not learn about it.
                self.stats.dropped(verb);
                Ok(())
            }
            FaultAction::Delay(d) => {
                let inner = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    if let Some(inner) = inner.upgrade() {
                        if let Err(e) = inner.transmit(to, msg, opts) {
                            debug!(peer = %to, error = %e, "delayed send failed");
                        }
                    }
                });
                Ok(())
            }
        }
    }

    fn transmit(&self, to: NodeAddr, msg: Message, opts: SendOptions) -> Result<()> {
        let verb = msg.verb;
        match self.transport.send(to, msg, opts) {
            Ok(()) => {
                self.stats.sent(verb);
                Ok(())
            }
            Err(e) => {
                self.stats.dropped(verb);
                Err(e)
            }
        }
    }

    /// Incoming path: fault rules, then dispatch.
    fn receive(self: &Arc<Self>, msg: Message) {
        match self.faults.decide(msg.from) {
            FaultAction::Deliver => self.dispatch(msg),
            FaultAction::Drop => self.stats.dropped(msg.verb),
            FaultAction::Delay(d) => {
                let inner = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    if let Some(inner) = inner.upgrade() {
                        inner.dispatch(msg);
                    }
                });
            }
        }
    }

    fn dispatch(self: &Arc<Self>, msg: Message) {
        self.stats.received(msg.verb);
        match msg.kind {
            FrameKind::Response => match self.pending.take(msg.id, msg.from) {
                Some(p) => {
                    let result = if msg.flags & FLAG_ERROR != 0 {
                        Err(Error::Remote {
                            peer: msg.from,
                            message: String::from_utf8_lossy(&msg.payload).into_owned(),
                        })
                    } else {
                        Ok(msg.payload)
                    };
                    let _ = p.tx.send(result);
                }
                None => {
                    debug!(peer = %msg.from, id = msg.id, verb = %msg.verb, "late or unknown response")
                }
            },
            FrameKind::Request | FrameKind::OneWay => {
                let handler = {
                    let handlers = self.handlers.load();
                    handlers
                        .by_verb
                        .get(&msg.verb)
                        .or(handlers.fallback.as_ref())
                        .cloned()
                };
                let responder = (msg.kind == FrameKind::Request).then(|| Responder {
                    messenger: Arc::downgrade(self),
                    to: msg.from,
                    verb: msg.verb,
                    id: msg.id,
                    answered: false,
                    held: None,
                });
                let mut payload = msg.payload;
                let trace_session = if msg.flags & FLAG_TRACED != 0 && payload.len() >= 16 {
                    let id = payload.split_off(payload.len() - 16);
                    uuid::Uuid::from_slice(&id).ok()
                } else {
                    None
                };
                let inbound = Inbound {
                    from: msg.from,
                    verb: msg.verb,
                    payload,
                    trace_session,
                    responder,
                    deadline: msg.deadline.filter(|_| msg.kind == FrameKind::Request),
                };
                match handler {
                    Some(h) => h.handle(inbound),
                    None => {
                        warn!(peer = %msg.from, verb = %msg.verb, "no handler registered, dropping message");
                        self.stats.dropped(msg.verb);
                    }
                }
            }
            FrameKind::Handshake => {}
        }
    }
}

/// Removes a request's pending entry however `request` ends (incl.
/// cancellation), unless its response (or shutdown) already took it.
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
    taken: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if !self.taken {
            self.inner.pending.remove(self.id);
        }
    }
}

/// Internode messaging for one node: requests with matched responses and
/// timeouts, one-way messages, per-verb handlers, fault injection and stats.
/// Cheap to clone; all clones share one node.
#[derive(Clone, Debug)]
pub struct Messenger {
    inner: Arc<Inner>,
}

impl Messenger {
    /// Runs on top of any transport (TCP or the simulated network).
    pub fn new(transport: Arc<dyn Transport>) -> Result<Self> {
        let inner = Arc::new(Inner {
            local: transport.local_addr(),
            transport: transport.clone(),
            pending: PendingMap::new(),
            handlers: ArcSwap::from_pointee(Handlers::default()),
            faults: FaultState::new(),
            stats: StatsRecorder::default(),
            shut: AtomicBool::new(false),
        });
        // Weak so that dropping the last Messenger shuts the transport down.
        let weak = Arc::downgrade(&inner);
        transport.start(Arc::new(move |msg| {
            if let Some(inner) = weak.upgrade() {
                inner.receive(msg);
            }
        }))?;
        Ok(Messenger { inner })
    }

    /// Binds a TCP listener on `config.listen` and starts serving.
    pub async fn bind_tcp(config: NetConfig) -> Result<Self> {
        let transport = TcpTransport::bind(config).await?;
        Messenger::new(Arc::new(transport))
    }

    /// This node's internode address (with the real port if bound to port 0).
    pub fn local_addr(&self) -> NodeAddr {
        self.inner.local
    }

    /// Host id `peer` announced in its last handshake (TCP only).
    pub fn peer_host_id(&self, peer: NodeAddr) -> Option<uuid::Uuid> {
        self.inner.transport.peer_host_id(peer)
    }

    /// Sends a request and waits for its response, at most `timeout`.
    pub async fn request(
        &self,
        to: NodeAddr,
        verb: Verb,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        self.request_with(to, verb, payload, timeout, Priority::Normal)
            .await
    }

    pub async fn request_with(
        &self,
        to: NodeAddr,
        verb: Verb,
        payload: Bytes,
        timeout: Duration,
        priority: Priority,
    ) -> Result<Bytes> {
        let inner = &self.inner;
        if inner.shut.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let (tx, rx) = oneshot::channel();
        let id = inner.pending.insert(Pending { peer: to, tx });
        let mut guard = PendingGuard {
            inner,
            id,
            taken: false,
        };
        let start = Instant::now();
        let deadline = start + timeout;
        // A request made for a traced client request carries its session id
        // after the payload (a copy only then; untraced requests pay one
        // task-local lookup).
        let (flags, payload) = match gyre_common::trace::session_id() {
            None => (0, payload),
            Some(session) => {
                let mut p = bytes::BytesMut::with_capacity(payload.len() + 16);
                p.extend_from_slice(&payload);
                p.extend_from_slice(session.as_bytes());
                (FLAG_TRACED, p.freeze())
            }
        };
        let msg = Message {
            from: inner.local,
            kind: FrameKind::Request,
            flags,
            verb,
            id,
            deadline: Some(deadline),
            payload,
        };
        let opts = SendOptions {
            priority,
            expires_at: Some(deadline),
        };
        inner.send(to, msg, opts)?;
        let answer = tokio::time::timeout(timeout, rx).await;
        // Whoever sent on the channel removed the entry first.
        guard.taken = matches!(answer, Ok(Ok(_)));
        match answer {
            Ok(Ok(Ok(bytes))) => {
                inner.stats.latency(verb, start.elapsed());
                Ok(bytes)
            }
            Ok(Ok(Err(e))) => {
                inner.stats.remote_error(verb);
                Err(e)
            }
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => {
                inner.stats.timeout(verb);
                Err(Error::Timeout {
                    peer: to,
                    verb,
                    timeout,
                })
            }
        }
    }

    /// Fire-and-forget. `Ok` means queued; delivery is not confirmed.
    pub fn send_oneway(&self, to: NodeAddr, verb: Verb, payload: Bytes) -> Result<()> {
        self.send_oneway_with(to, verb, payload, Priority::Normal)
    }

    pub fn send_oneway_with(
        &self,
        to: NodeAddr,
        verb: Verb,
        payload: Bytes,
        priority: Priority,
    ) -> Result<()> {
        let msg = Message {
            from: self.inner.local,
            kind: FrameKind::OneWay,
            flags: 0,
            verb,
            id: 0,
            deadline: None,
            payload,
        };
        let opts = SendOptions {
            priority,
            expires_at: Some(Instant::now() + ONEWAY_TTL),
        };
        self.inner.send(to, msg, opts)
    }

    /// Routes requests and one-way messages of `verb` to `handler` (replacing any previous one).
    pub fn register(&self, verb: Verb, handler: impl Handler) {
        let handler: Arc<dyn Handler> = Arc::new(handler);
        self.inner.handlers.rcu(|h| {
            let mut h = Handlers::clone(h);
            h.by_verb.insert(verb, handler.clone());
            h
        });
    }

    /// Routes `verb` into a bounded channel. When the channel is full the
    /// message is dropped (counted), and a request gets an error response.
    pub fn register_channel(&self, verb: Verb, capacity: usize) -> mpsc::Receiver<Inbound> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let weak = Arc::downgrade(&self.inner);
        self.register(verb, move |msg: Inbound| {
            if let Err(e) = tx.try_send(msg) {
                if let Some(inner) = weak.upgrade() {
                    inner.stats.dropped(verb);
                }
                debug!(%verb, "handler channel full or closed, dropping message");
                drop(e);
            }
        });
        rx
    }

    /// Handles every verb without its own handler.
    pub fn set_fallback_handler(&self, handler: impl Handler) {
        let handler: Arc<dyn Handler> = Arc::new(handler);
        self.inner.handlers.rcu(|h| Handlers {
            fallback: Some(handler.clone()),
            ..Handlers::clone(h)
        });
    }

    pub fn unregister(&self, verb: Verb) {
        self.inner.handlers.rcu(|h| {
            let mut h = Handlers::clone(h);
            h.by_verb.remove(&verb);
            h
        });
    }

    /// Replaces the fault-injection rules; applies to messages sent or received from now on.
    pub fn set_faults(&self, rules: FaultRules) -> Result<()> {
        self.inner.faults.set(rules)
    }

    pub fn clear_faults(&self) {
        self.inner.faults.clear();
    }

    pub fn faults(&self) -> FaultRules {
        self.inner.faults.get()
    }

    pub fn stats(&self) -> NetStats {
        NetStats {
            verbs: self.inner.stats.snapshot(),
            transport: self.inner.transport.stats(),
            pending_requests: self.inner.pending.len(),
        }
    }

    /// Stops the node's networking: pending requests fail with
    /// [`Error::Shutdown`], connections close and the listener is released
    /// by the time this returns.
    pub async fn shutdown(&self) {
        self.inner.shut.store(true, Ordering::Release);
        self.inner.transport.shutdown();
        for p in self.inner.pending.drain() {
            let _ = p.tx.send(Err(Error::Shutdown));
        }
        self.inner.transport.wait_closed().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pending(peer: NodeAddr) -> (Pending, oneshot::Receiver<Result<Bytes>>) {
        let (tx, rx) = oneshot::channel();
        (Pending { peer, tx }, rx)
    }

    #[test]
    fn pending_ids_are_random_unique_and_matched_by_peer() {
        let a: NodeAddr = "127.0.0.1:7000".parse().unwrap();
        let b: NodeAddr = "127.0.0.2:7000".parse().unwrap();
        let map = PendingMap::new();
        let mut ids = std::collections::HashSet::new();
        let mut receivers = Vec::new();
        for _ in 0..10_000 {
            let (p, rx) = pending(a);
            let id = map.insert(p);
            assert_ne!(id, 0);
            assert!(ids.insert(id));
            receivers.push(rx);
        }
        assert_eq!(map.len(), 10_000);
        // Not a counter: consecutive ids are not neighbours.
        let mut sorted: Vec<u64> = ids.iter().copied().collect();
        sorted.sort_unstable();
        assert!(sorted.windows(2).all(|w| w[1] - w[0] > 1));

        let id = *ids.iter().next().unwrap();
        assert!(map.take(id, b).is_none(), "another peer cannot answer it");
        assert!(map.take(id, a).is_some());
        assert!(map.take(id, a).is_none(), "answered once");
        map.remove(*ids.iter().nth(1).unwrap());
        assert_eq!(map.len(), 9_998);
        assert_eq!(map.drain().len(), 9_998);
        assert_eq!(map.len(), 0);
    }

    #[tokio::test]
    async fn traced_requests_carry_the_session_id_and_nothing_else_changes() {
        use crate::transport::Verb;
        let net = crate::SimNetwork::new(1);
        let a = net.messenger("127.0.0.1:7000".parse().unwrap()).unwrap();
        let b = net.messenger("127.0.0.2:7000".parse().unwrap()).unwrap();
        let verb = Verb(999);
        b.register(verb, |msg: Inbound| {
            // Echo the payload; say which session the request carried.
            let mut answer = msg.payload.to_vec();
            if let Some(id) = msg.trace_session {
                answer.extend_from_slice(b"|");
                answer.extend_from_slice(id.to_string().as_bytes());
            }
            if let Some(r) = msg.responder {
                let _ = r.respond(Bytes::from(answer));
            }
        });
        let to = b.local_addr();
        let timeout = Duration::from_secs(5);
        let plain = a
            .request(to, verb, Bytes::from_static(b"hello"), timeout)
            .await
            .unwrap();
        assert_eq!(
            &plain[..],
            b"hello",
            "untraced: no session, payload as sent"
        );
        let id = gyre_common::trace::next_timeuuid();
        let state = gyre_common::trace::TraceState::new(id, "127.0.0.1".parse().unwrap());
        let traced = state
            .scope(a.request(to, verb, Bytes::from_static(b"hello"), timeout))
            .await
            .unwrap();
        assert_eq!(traced, Bytes::from(format!("hello|{id}")));
    }
}
