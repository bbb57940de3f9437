use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::faults::{FaultAction, FaultRules, FaultState};
use crate::frame::{FrameKind, FLAG_ERROR};
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
}

impl Responder {
    /// The node that sent the request.
    pub fn peer(&self) -> NodeAddr {
        self.to
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

struct Inner {
    local: NodeAddr,
    transport: Arc<dyn Transport>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    handlers: RwLock<HashMap<Verb, Arc<dyn Handler>>>,
    fallback: RwLock<Option<Arc<dyn Handler>>>,
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
                self.stats.update(verb, |s| s.dropped += 1);
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
                self.stats.update(verb, |s| s.sent += 1);
                Ok(())
            }
            Err(e) => {
                self.stats.update(verb, |s| s.dropped += 1);
                Err(e)
            }
        }
    }

    /// Incoming path: fault rules, then dispatch.
    fn receive(self: &Arc<Self>, msg: Message) {
        match self.faults.decide(msg.from) {
            FaultAction::Deliver => self.dispatch(msg),
            FaultAction::Drop => self.stats.update(msg.verb, |s| s.dropped += 1),
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
        self.stats.update(msg.verb, |s| s.received += 1);
        match msg.kind {
            FrameKind::Response => {
                let mut pending = self.pending.lock();
                // Match on the peer too: ids are only unique per requester.
                let ours = pending.get(&msg.id).is_some_and(|p| p.peer == msg.from);
                match ours.then(|| pending.remove(&msg.id)).flatten() {
                    Some(p) => {
                        drop(pending);
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
                }
            }
            FrameKind::Request | FrameKind::OneWay => {
                let handler = self.handlers.read().get(&msg.verb).cloned();
                let handler = handler.or_else(|| self.fallback.read().clone());
                let responder = (msg.kind == FrameKind::Request).then(|| Responder {
                    messenger: Arc::downgrade(self),
                    to: msg.from,
                    verb: msg.verb,
                    id: msg.id,
                    answered: false,
                });
                let inbound = Inbound {
                    from: msg.from,
                    verb: msg.verb,
                    payload: msg.payload,
                    responder,
                };
                match handler {
                    Some(h) => h.handle(inbound),
                    None => {
                        warn!(peer = %msg.from, verb = %msg.verb, "no handler registered, dropping message");
                        self.stats.update(msg.verb, |s| s.dropped += 1);
                    }
                }
            }
            FrameKind::Handshake => {}
        }
    }
}

/// Removes a request's pending entry however `request` ends (incl. cancellation).
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.lock().remove(&self.id);
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
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            handlers: RwLock::new(HashMap::new()),
            fallback: RwLock::new(None),
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
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        inner.pending.lock().insert(id, Pending { peer: to, tx });
        let _guard = PendingGuard { inner, id };
        let start = Instant::now();
        let msg = Message {
            from: inner.local,
            kind: FrameKind::Request,
            flags: 0,
            verb,
            id,
            payload,
        };
        let opts = SendOptions {
            priority,
            expires_at: Some(start + timeout),
        };
        inner.send(to, msg, opts)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(bytes))) => {
                inner.stats.latency(verb, start.elapsed());
                Ok(bytes)
            }
            Ok(Ok(Err(e))) => {
                inner.stats.update(verb, |s| s.remote_errors += 1);
                Err(e)
            }
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => {
                inner.stats.update(verb, |s| s.timeouts += 1);
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
        self.inner.handlers.write().insert(verb, Arc::new(handler));
    }

    /// Routes `verb` into a bounded channel. When the channel is full the
    /// message is dropped (counted), and a request gets an error response.
    pub fn register_channel(&self, verb: Verb, capacity: usize) -> mpsc::Receiver<Inbound> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let weak = Arc::downgrade(&self.inner);
        self.register(verb, move |msg: Inbound| {
            if let Err(e) = tx.try_send(msg) {
                if let Some(inner) = weak.upgrade() {
                    inner.stats.update(verb, |s| s.dropped += 1);
                }
                debug!(%verb, "handler channel full or closed, dropping message");
                drop(e);
            }
        });
        rx
    }

    /// Handles every verb without its own handler.
    pub fn set_fallback_handler(&self, handler: impl Handler) {
        *self.inner.fallback.write() = Some(Arc::new(handler));
    }

    pub fn unregister(&self, verb: Verb) {
        self.inner.handlers.write().remove(&verb);
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
            pending_requests: self.inner.pending.lock().len(),
        }
    }

    /// Stops the node's networking: pending requests fail with
    /// [`Error::Shutdown`], connections close and the listener is released
    /// by the time this returns.
    pub async fn shutdown(&self) {
        self.inner.shut.store(true, Ordering::Release);
        self.inner.transport.shutdown();
        let pending: Vec<Pending> = self.inner.pending.lock().drain().map(|(_, p)| p).collect();
        for p in pending {
            let _ = p.tx.send(Err(Error::Shutdown));
        }
        self.inner.transport.wait_closed().await;
    }
}
