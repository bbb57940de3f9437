//! The tokio server: one task per connection reading frames, and one writer
//! task per connection behind a bounded channel of responses, which it
//! encodes straight into one output buffer and writes once per batch.
//!
//! A request is polled once inline by the reader; only if it is still
//! pending is it handed to a task of its own. A v5 connection switches both
//! directions to v5 frames after READY: the reader's codec unpacks
//! envelopes from frames, the writer packs the responses of a batch into as
//! few frames as fit (`framing.rs`). Requests are bounded per
//! connection (the reader stops reading: back-pressure) and node-wide (a
//! short bounded wait queue, then Overloaded; see `limit.rs`). Only this
//! module touches sockets.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::budget::{BytesPermit, ClientBudgets, ClientGuard};
use crate::client_warn;
use crate::error::{Error, Result};
use crate::frame::{
    Compression, Frame, FrameCodec, ProtocolVersion, DEFAULT_MAX_FRAME_BYTES, HEADER_LEN,
};
use crate::framing::FrameWriter;
use crate::limit::{Admission, Overload, RequestLimiter};
use crate::metrics::ServerMetrics;
use crate::request::{Batch, Execute, Prepare, Query, Request, RequestFrame};
use crate::response::{CqlResult, ErrorKind, Event, EventType, Response, ResponseFrame};
use crate::tls::{Accepted, ServerTls};

/// The requests a [`RequestHandler`] answers; the server handles STARTUP,
/// OPTIONS, REGISTER and AUTH_RESPONSE itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerRequest {
    Query(Query),
    Prepare(Prepare),
    Execute(Execute),
    Batch(Batch),
}

/// Executes CQL requests for the server.
///
/// Called concurrently for requests on different streams of one connection
/// and across connections. Returning `Response::Result(CqlResult::SetKeyspace)`
/// makes the server record that keyspace on the connection.
#[async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    async fn handle(&self, conn: &ConnectionState, request: HandlerRequest) -> Response;
}

/// Checks the credentials of a connection when the node requires them
/// (Cassandra's `IAuthenticator` with SASL): STARTUP is then answered
/// AUTHENTICATE naming [`Authenticator::class_name`], and nothing but
/// AUTH_RESPONSE (and OPTIONS) is served until a token passes.
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug + 'static {
    /// The class AUTHENTICATE names, e.g.
    /// `org.apache.cassandra.auth.PasswordAuthenticator`.
    fn class_name(&self) -> String;

    /// Checks one AUTH_RESPONSE token; `Ok` carries the authenticated role
    /// (AUTH_SUCCESS follows), `Err` the message of the authentication
    /// error (0x0100) the client gets.
    async fn authenticate(
        &self,
        peer: SocketAddr,
        token: Option<&[u8]>,
    ) -> std::result::Result<String, String>;
}

/// Per-connection state visible to the handler.
#[derive(Debug)]
pub struct ConnectionState {
    id: u64,
    peer: SocketAddr,
    keyspace: Mutex<Option<String>>,
    user: Mutex<Option<String>>,
}

impl ConnectionState {
    /// A state detached from any socket, for driving a handler in tests.
    pub fn new(id: u64, peer: SocketAddr) -> Self {
        ConnectionState {
            id,
            peer,
            keyspace: Mutex::new(None),
            user: Mutex::new(None),
        }
    }

    /// The role this connection authenticated as; `None` without an
    /// authenticator (anonymous, like Cassandra's AllowAllAuthenticator).
    pub fn user(&self) -> Option<String> {
        self.user.lock().clone()
    }

    pub fn set_user(&self, user: impl Into<String>) {
        *self.user.lock() = Some(user.into());
    }

    /// Server-unique connection number.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The keyspace set by the last successful `USE`, if any.
    pub fn keyspace(&self) -> Option<String> {
        self.keyspace.lock().clone()
    }

    pub fn set_keyspace(&self, keyspace: impl Into<String>) {
        *self.keyspace.lock() = Some(keyspace.into());
    }
}

/// Pushes EVENT frames to every connection registered for their type.
///
/// Backed by a bounded broadcast channel: a connection that falls more than
/// the capacity behind loses the oldest events (logged) rather than
/// buffering without bound.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: broadcast::Sender<Arc<Event>>,
}

impl EventSender {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventSender { tx }
    }

    /// Queues `event` for registered connections; returns how many
    /// connections are listening (registered for any event type).
    pub fn send(&self, event: Event) -> usize {
        self.tx.send(Arc::new(event)).unwrap_or(0)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

impl Default for EventSender {
    fn default() -> Self {
        EventSender::new(1024)
    }
}

/// Server limits. Clone `events` before handing the config to
/// [`Server::run`] to push events later.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted frame body (and largest inflated lz4 body).
    pub max_frame_bytes: usize,
    /// Node-wide connection limit; further connections get an Overloaded
    /// error on their first frame and are closed.
    pub max_connections: usize,
    /// Connections from one client IP; further ones are refused like
    /// connections over `max_connections`.
    pub max_connections_per_ip: usize,
    /// Node-wide bytes of request frames read and not yet answered; when
    /// spent, connections stop reading until responses free some.
    pub max_request_bytes_in_flight: usize,
    /// The same budget per client IP, so one client cannot take it all.
    pub max_request_bytes_in_flight_per_ip: usize,
    /// A connection that has not completed STARTUP (and authentication)
    /// this long after it was opened is closed.
    pub startup_timeout: Duration,
    /// A connection that sends nothing this long, with no request in
    /// flight, is closed (`None`: never, Cassandra's default; drivers send
    /// heartbeats when idle).
    pub idle_timeout: Option<Duration>,
    /// Requests of one connection in flight (queued or executing) at once;
    /// when reached, the server stops reading that connection
    /// (back-pressure).
    pub max_in_flight_per_connection: usize,
    /// Node-wide: requests executing at once over all connections.
    pub max_concurrent_requests: usize,
    /// Node-wide: requests waiting for an execution slot; a request that
    /// finds the queue full is answered Overloaded (0x1001) at once.
    pub max_queued_requests: usize,
    /// How long a queued request waits for an execution slot before it is
    /// answered Overloaded.
    pub queue_timeout: Duration,
    /// Responses queued for a connection's writer.
    pub write_queue_frames: usize,
    /// How long `run` waits for connections to finish after shutdown.
    pub shutdown_grace: Duration,
    /// TLS on this port (`None`: plaintext only).
    pub tls: Option<ServerTls>,
    /// Where the node publishes events.
    pub events: EventSender,
    /// Where the server records what it measures.
    pub metrics: Arc<ServerMetrics>,
    /// Credentials required when set (see [`Authenticator`]).
    pub authenticator: Option<Arc<dyn Authenticator>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_connections: 4096,
            max_connections_per_ip: 1024,
            max_request_bytes_in_flight: 256 << 20,
            max_request_bytes_in_flight_per_ip: 64 << 20,
            startup_timeout: Duration::from_secs(10),
            idle_timeout: None,
            max_in_flight_per_connection: 1024,
            max_concurrent_requests: 1024,
            max_queued_requests: 4096,
            queue_timeout: Duration::from_secs(1),
            write_queue_frames: 1024,
            shutdown_grace: Duration::from_secs(5),
            tls: None,
            events: EventSender::default(),
            metrics: Arc::default(),
            authenticator: None,
        }
    }
}

/// The values advertised in SUPPORTED. Never `SCYLLA_*` or `TABLETS_*`
/// keys: they switch the scylla driver into shard-aware modes.
pub fn supported_options() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        ("CQL_VERSION".to_string(), vec!["3.4.7".to_string()]),
        ("COMPRESSION".to_string(), vec!["lz4".to_string()]),
        (
            "PROTOCOL_VERSIONS".to_string(),
            vec!["3/v3".to_string(), "4/v4".to_string(), "5/v5".to_string()],
        ),
    ])
}

/// Connections beyond the limit that may be answered at once; more are
/// dropped without a reply.
const MAX_REJECTING: usize = 64;
/// Frame limit while reading an over-limit connection's first frame.
const REJECT_MAX_FRAME: usize = 64 * 1024;
/// The writer stops draining its queue into one write at this many bytes.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// A writer keeps an output buffer up to this capacity between writes;
/// after a larger batch it starts a fresh one.
const WRITE_BUFFER_KEEP: usize = 1024 * 1024;

/// The CQL native-protocol server.
pub struct Server;

impl Server {
    /// Accepts connections on `listener` until `shutdown` completes, then
    /// closes connections and waits up to `config.shutdown_grace` for them.
    pub async fn run(
        listener: TcpListener,
        handler: Arc<dyn RequestHandler>,
        config: ServerConfig,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let config = Arc::new(config);
        let max_connections = config.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let conn_limit = Arc::new(Semaphore::new(max_connections));
        let reject_limit = Arc::new(Semaphore::new(MAX_REJECTING));
        let cancel = CancellationToken::new();
        let limiter = RequestLimiter::new(
            config.max_concurrent_requests,
            config.max_queued_requests,
            config.queue_timeout,
            config.metrics.clone(),
        );
        let budgets = ClientBudgets::new(
            config.max_connections_per_ip,
            config.max_request_bytes_in_flight,
            config.max_request_bytes_in_flight_per_ip,
        );
        let mut next_id = 0u64;
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "CQL server listening");
        }
        tokio::pin!(shutdown);
        loop {
            let (socket, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(e) = socket.set_nodelay(true) {
                debug!(%peer, error = %e, "set_nodelay failed");
            }
            let permit = match conn_limit.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    warn!(%peer, limit = max_connections, "connection limit reached, refusing connection");
                    if let Ok(p) = reject_limit.clone().try_acquire_owned() {
                        tokio::spawn(async move {
                            reject_connection(socket, "too many connections to this node").await;
                            drop(p);
                        });
                    }
                    continue;
                }
            };
            let Some(client) = budgets.connect(peer.ip()) else {
                warn!(%peer, limit = config.max_connections_per_ip, "per-client connection limit reached, refusing connection");
                if let Ok(p) = reject_limit.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        reject_connection(socket, "too many connections from this client address")
                            .await;
                        drop(p);
                    });
                }
                continue;
            };
            next_id += 1;
            let conn = Connection::new(
                next_id,
                peer,
                handler.clone(),
                config.clone(),
                limiter.clone(),
                client,
                cancel.clone(),
            );
            let tls = config.tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => {
                        let (rd, wr) = socket.into_split();
                        conn.run(rd, wr).await;
                    }
                    Some(tls) => {
                        // The handshake counts against the STARTUP deadline.
                        let deadline = conn.config.startup_timeout;
                        match tokio::time::timeout(deadline, tls.accept(socket)).await {
                            Ok(Ok(Accepted::Plain(socket))) => {
                                let (rd, wr) = socket.into_split();
                                conn.run(rd, wr).await;
                            }
                            Ok(Ok(Accepted::Tls(stream))) => {
                                let (rd, wr) = tokio::io::split(*stream);
                                conn.run(rd, wr).await;
                            }
                            Ok(Err(e)) => {
                                info!(%peer, error = %e, "TLS handshake failed; connection refused");
                            }
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
                drop(permit);
            });
        }
        info!("CQL server shutting down");
        cancel.cancel();
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(config.shutdown_grace, conn_limit.acquire_many(all))
            .await
            .is_err()
        {
            warn!("connections still open after the shutdown grace period");
        }
        Ok(())
    }
}

/// Answers an over-limit connection's first frame with Overloaded (or the
/// version error, so version-probing drivers get a meaningful answer).
async fn reject_connection(socket: TcpStream, why: &'static str) {
    let (rd, mut wr) = socket.into_split();
    let mut frames = FramedRead::new(rd, FrameCodec::new(REJECT_MAX_FRAME));
    let mut version = ProtocolVersion::V4;
    let reply = match tokio::time::timeout(Duration::from_secs(2), frames.next()).await {
        Ok(Some(Ok(frame))) => {
            version = frame.protocol_version();
            Some((frame.stream, overloaded(why)))
        }
        Ok(Some(Err(Error::FrameTooLarge { stream, .. }))) => Some((stream, overloaded(why))),
        Ok(Some(Err(e @ Error::UnsupportedVersion { stream, .. }))) => {
            Some((stream, Response::error(ErrorKind::Protocol, e.to_string())))
        }
        _ => None,
    };
    if let Some((stream, response)) = reply {
        let mut frame = ResponseFrame::new(stream, response);
        frame.version = version;
        let bytes = frame.to_frame(Compression::None).to_bytes();
        if wr.write_all(&bytes).await.is_ok() {
            let _ = wr.shutdown().await;
        }
    }
}

fn overloaded_request(reason: Overload) -> Response {
    Response::error(ErrorKind::Overloaded, reason.message())
}

fn overloaded(why: &str) -> Response {
    Response::error(ErrorKind::Overloaded, why)
}

fn protocol_error(message: impl Into<String>) -> Response {
    Response::error(ErrorKind::Protocol, message)
}

/// What the reader does after a frame.
enum Flow {
    Continue,
    /// READY of a v5 STARTUP is queued: decode v5 frames from now on.
    StartFraming {
        lz4: bool,
    },
    /// The byte stream cannot be trusted any more: flush and close.
    Close,
}

/// How a response goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// A bare envelope (v4; v5 before STARTUP completes), with v4 body
    /// compression.
    Plain {
        version: ProtocolVersion,
        compression: Compression,
    },
    /// v5 envelopes inside v5 frames, lz4-compressed per frame if `lz4`.
    Framed { lz4: bool },
}

impl Wire {
    const V4_PLAIN: Wire = Wire::Plain {
        version: ProtocolVersion::V4,
        compression: Compression::None,
    };
}

/// A response on its way to the connection's writer, which encodes it.
struct Outgoing {
    stream: i16,
    response: Response,
    /// The connection's wire format when the response was produced (READY
    /// and version errors go out as bare, uncompressed envelopes).
    wire: Wire,
    /// Warnings raised while executing the request (flag 0x08).
    warnings: Vec<String>,
    /// The trace session of a request the client asked to trace.
    tracing_id: Option<uuid::Uuid>,
}

type OutTx = mpsc::Sender<Outgoing>;

struct Connection {
    state: Arc<ConnectionState>,
    handler: Arc<dyn RequestHandler>,
    config: Arc<ServerConfig>,
    limiter: Arc<RequestLimiter>,
    /// This connection's share of its client's limits.
    client: ClientGuard,
    cancel: CancellationToken,
    in_flight: Arc<Semaphore>,
    started: bool,
    /// STARTUP was answered AUTHENTICATE and no token has passed yet.
    authenticating: bool,
    /// The version of the STARTUP; every later frame must have it.
    version: ProtocolVersion,
    wire: Wire,
    registered: HashSet<EventType>,
    events: Option<broadcast::Receiver<Arc<Event>>>,
}

impl Connection {
    fn new(
        id: u64,
        peer: SocketAddr,
        handler: Arc<dyn RequestHandler>,
        config: Arc<ServerConfig>,
        limiter: Arc<RequestLimiter>,
        client: ClientGuard,
        cancel: CancellationToken,
    ) -> Self {
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight_per_connection.max(1)));
        Connection {
            state: Arc::new(ConnectionState::new(id, peer)),
            handler,
            config,
            limiter,
            client,
            cancel,
            in_flight,
            started: false,
            authenticating: false,
            version: ProtocolVersion::V4,
            wire: Wire::V4_PLAIN,
            registered: HashSet::new(),
            events: None,
        }
    }

    /// Serves the connection over its read and write halves (a TCP
    /// socket's, or a TLS stream's).
    async fn run<R, W>(mut self, rd: R, wr: W)
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let id = self.state.id;
        let peer = self.state.peer;
        debug!(conn = id, %peer, "connection opened");
        let (tx, rx) = mpsc::channel::<Outgoing>(self.config.write_queue_frames.max(1));
        let writer = tokio::spawn(write_loop(
            wr,
            rx,
            id,
            self.config.max_frame_bytes,
            self.config.metrics.clone(),
        ));
        let mut frames = FramedRead::new(rd, FrameCodec::new(self.config.max_frame_bytes));
        let mut fatal = false;
        let startup_deadline = tokio::time::sleep(self.config.startup_timeout);
        tokio::pin!(startup_deadline);
        let idle = self.config.idle_timeout;
        let idle_deadline = tokio::time::sleep(idle.unwrap_or(Duration::MAX / 4));
        tokio::pin!(idle_deadline);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = &mut startup_deadline, if !self.started || self.authenticating => {
                    debug!(conn = id, %peer, "not started and authenticated within the deadline; closing");
                    break;
                }
                _ = &mut idle_deadline, if idle.is_some() => {
                    let limit = self.config.max_in_flight_per_connection.max(1);
                    if self.in_flight.available_permits() == limit {
                        debug!(conn = id, %peer, "idle timeout; closing");
                        break;
                    }
                    // Requests still running: the connection is not idle.
                    idle_deadline.as_mut().reset(tokio::time::Instant::now() + idle.unwrap_or_default());
                }
                event = next_event(&mut self.events) => self.on_event(event, &tx).await,
                frame = frames.next() => match frame {
                    None => break,
                    Some(Ok(frame)) => {
                        if let Some(idle) = idle {
                            idle_deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                        }
                        match self.on_frame(frame, &tx).await {
                        Flow::Continue => {}
                        Flow::StartFraming { lz4 } => frames.decoder_mut().enable_v5_framing(lz4),
                        Flow::Close => {
                            fatal = true;
                            break;
                        }
                    }},
                    Some(Err(e)) => {
                        self.on_stream_error(e, &tx).await;
                        fatal = true;
                        break;
                    }
                },
            }
        }
        // The writer ends once every in-flight request has sent its reply.
        drop(tx);
        if let Err(e) = writer.await {
            error!(conn = id, error = %e, "writer task failed");
        }
        if fatal {
            // Read what the client still sends so that closing does not
            // reset the connection and destroy the error reply in flight.
            let mut rd = frames.into_inner();
            let mut sink = tokio::io::sink();
            let drain = tokio::io::copy(&mut rd, &mut sink);
            tokio::select! {
                _ = self.cancel.cancelled() => {}
                _ = tokio::time::timeout(Duration::from_secs(1), drain) => {}
            }
        }
        debug!(conn = id, %peer, "connection closed");
    }

    async fn send(&self, tx: &OutTx, stream: i16, response: Response) {
        send_with(tx, stream, response, self.wire).await;
    }

    /// The wire for answers outside the connection's usual flow: framed
    /// once framing is on, else a bare uncompressed envelope.
    fn uncompressed_wire(&self) -> Wire {
        match self.wire {
            Wire::Framed { .. } => self.wire,
            Wire::Plain { version, .. } => Wire::Plain {
                version,
                compression: Compression::None,
            },
        }
    }

    async fn on_stream_error(&self, e: Error, tx: &OutTx) {
        let peer = self.state.peer;
        match e {
            Error::UnsupportedVersion { version, stream } if !self.started => {
                debug!(%peer, version, "unsupported protocol version");
                let response = protocol_error(e.to_string());
                send_with(tx, stream, response, Wire::V4_PLAIN).await;
            }
            Error::FrameTooLarge { stream, .. } => {
                warn!(%peer, error = %e, "closing connection");
                let response = protocol_error(e.to_string());
                send_with(tx, stream, response, self.uncompressed_wire()).await;
            }
            Error::Io(_) => debug!(%peer, error = %e, "connection read failed"),
            other => {
                // A corrupt v5 frame, an envelope version that changed
                // mid-connection, a bad compressed frame: nothing after it
                // can be trusted. Say why (on stream 0: the request's own
                // stream is unknown), then close.
                warn!(%peer, error = %other, "closing connection");
                let response = protocol_error(other.to_string());
                send_with(tx, 0, response, self.uncompressed_wire()).await;
            }
        }
    }

    async fn on_event(
        &mut self,
        event: std::result::Result<Arc<Event>, broadcast::error::RecvError>,
        tx: &OutTx,
    ) {
        match event {
            Ok(event) => {
                if self.registered.contains(&event.event_type()) {
                    self.send(tx, -1, Response::Event((*event).clone())).await;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    conn = self.state.id,
                    missed = n,
                    "connection fell behind on events"
                );
            }
            Err(broadcast::error::RecvError::Closed) => self.events = None,
        }
    }

    async fn on_frame(&mut self, frame: Frame, tx: &OutTx) -> Flow {
        let arrived = Instant::now();
        let frame_bytes = HEADER_LEN + frame.body.len();
        let stream = frame.stream;
        let version = frame.protocol_version();
        if frame.is_response() {
            let msg = format!(
                "expected a request frame (version 0x{:02x})",
                version.request_byte()
            );
            self.send(tx, stream, protocol_error(msg)).await;
            return Flow::Continue;
        }
        if !self.started {
            // Before STARTUP each frame is answered in its own version
            // (drivers probe versions with OPTIONS or STARTUP).
            self.version = version;
            if let Wire::Plain { compression, .. } = self.wire {
                self.wire = Wire::Plain {
                    version,
                    compression,
                };
            }
        } else if version != self.version {
            let msg = format!(
                "Invalid message version. Got {} but previous messages on this connection had version {}",
                version.number(),
                self.version.number()
            );
            self.send(tx, stream, protocol_error(msg)).await;
            return Flow::Continue;
        }
        // The frame is well delimited, so a bad body is answered and the
        // connection carries on.
        let compression = match self.wire {
            Wire::Plain { compression, .. } => compression,
            Wire::Framed { .. } => Compression::None,
        };
        let request = match RequestFrame::decode(&frame, compression, self.config.max_frame_bytes) {
            Ok(r) => r,
            Err(e) => {
                debug!(conn = self.state.id, stream, error = %e, "bad request");
                self.send(tx, stream, protocol_error(e.to_string())).await;
                return Flow::Continue;
            }
        };
        let traced = request.tracing;
        let handler_request = match request.request {
            Request::Options => {
                self.send(tx, stream, Response::Supported(supported_options()))
                    .await;
                return Flow::Continue;
            }
            Request::Startup(options) => {
                let response = self.startup(&options);
                // READY itself goes out uncompressed (and, in v5, as a bare
                // envelope): always legal, and robust for clients that only
                // switch after reading it.
                // v5 framing starts after READY or AUTHENTICATE (spec 2.3).
                let ready = matches!(response, Response::Ready | Response::Authenticate(_));
                send_with(tx, stream, response, self.uncompressed_wire()).await;
                if ready && self.version.is_v5() {
                    let lz4 = matches!(
                        self.wire,
                        Wire::Plain {
                            compression: Compression::Lz4,
                            ..
                        }
                    );
                    self.wire = Wire::Framed { lz4 };
                    return Flow::StartFraming { lz4 };
                }
                return Flow::Continue;
            }
            _ if !self.started => {
                let msg = format!("{:?} received before STARTUP", request.request.opcode());
                self.send(tx, stream, protocol_error(msg)).await;
                return Flow::Continue;
            }
            Request::AuthResponse(token) if self.authenticating => {
                let response = self.auth_response(token.as_deref()).await;
                self.send(tx, stream, response).await;
                return Flow::Continue;
            }
            _ if self.authenticating => {
                // Cassandra's ServerConnection wording.
                let msg = format!(
                    "Unexpected message {}, expecting SASL_RESPONSE",
                    format!("{:?}", request.request.opcode()).to_uppercase()
                );
                self.send(tx, stream, protocol_error(msg)).await;
                return Flow::Continue;
            }
            Request::Register(types) => {
                if self.events.is_none() {
                    self.events = Some(self.config.events.subscribe());
                }
                self.registered.extend(types);
                self.send(tx, stream, Response::Ready).await;
                return Flow::Continue;
            }
            Request::AuthResponse(_) => {
                self.send(
                    tx,
                    stream,
                    protocol_error("authentication is not enabled on this server"),
                )
                .await;
                return Flow::Continue;
            }
            Request::Query(q) => HandlerRequest::Query(q),
            Request::Prepare(p) => HandlerRequest::Prepare(p),
            Request::Execute(e) => HandlerRequest::Execute(e),
            Request::Batch(b) => HandlerRequest::Batch(b),
        };
        self.config.metrics.requests.fetch_add(1, Ordering::Relaxed);
        // Waiting here stops reading this connection: back-pressure instead
        // of an unbounded queue. The semaphore is never closed.
        let Ok(conn_permit) = self.in_flight.clone().acquire_owned().await else {
            return Flow::Close;
        };
        // So does waiting for the request-bytes budgets (node and client).
        let Some(bytes_permit) = self.client.acquire(frame_bytes).await else {
            return Flow::Close;
        };
        let admission = match self.limiter.admit() {
            Ok(a) => a,
            Err(reason) => {
                drop(conn_permit);
                debug!(conn = self.state.id, stream, "overloaded: request refused");
                self.send(tx, stream, overloaded_request(reason)).await;
                return Flow::Continue;
            }
        };
        let job = Job {
            handler: self.handler.clone(),
            state: self.state.clone(),
            metrics: self.config.metrics.clone(),
            tx: tx.clone(),
            stream,
            request: handler_request,
            tracing: traced,
            wire: self.wire,
            arrived,
            admission,
            _conn_permit: conn_permit,
            _bytes_permit: bytes_permit,
        };
        // Poll once here: a request that completes at once (its response
        // queued) costs no task. Polling with the reader's context only
        // means a spurious wake-up of the reader if the future registered
        // interest before going to its own task, which polls it afresh.
        let mut fut = Box::pin(job.run());
        let done = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_ready())).await;
        if done {
            self.config
                .metrics
                .completed_inline
                .fetch_add(1, Ordering::Relaxed);
        } else {
            tokio::spawn(fut);
        }
        Flow::Continue
    }

    fn startup(&mut self, options: &BTreeMap<String, String>) -> Response {
        if self.started {
            return protocol_error("STARTUP received twice on one connection");
        }
        let Some(cql_version) = options.get("CQL_VERSION") else {
            return protocol_error("Missing value CQL_VERSION in STARTUP message");
        };
        let major = cql_version
            .split('.')
            .next()
            .and_then(|m| m.trim().parse::<u32>().ok());
        if major.is_none_or(|m| m < 3) {
            return protocol_error(format!(
                "unsupported CQL_VERSION {cql_version:?}; 3.0.0 or later is required"
            ));
        }
        let mut compression = Compression::None;
        if let Some(c) = options.get("COMPRESSION") {
            if c.eq_ignore_ascii_case("lz4") {
                compression = Compression::Lz4;
            } else {
                return protocol_error(format!("Unknown compression algorithm: {c}"));
            }
        }
        self.wire = Wire::Plain {
            version: self.version,
            compression,
        };
        self.started = true;
        if let Some(a) = &self.config.authenticator {
            self.authenticating = true;
            debug!(conn = self.state.id, "authentication required");
            return Response::Authenticate(a.class_name());
        }
        debug!(
            conn = self.state.id,
            version = self.version.number(),
            ?compression,
            "connection ready"
        );
        Response::Ready
    }

    /// One AUTH_RESPONSE while authenticating: AUTH_SUCCESS or an
    /// authentication error (the client may try again on this connection,
    /// as with Cassandra).
    async fn auth_response(&mut self, token: Option<&[u8]>) -> Response {
        let Some(a) = self.config.authenticator.clone() else {
            return protocol_error("authentication is not enabled on this server");
        };
        match a.authenticate(self.state.peer, token).await {
            Ok(user) => {
                debug!(conn = self.state.id, %user, "authenticated");
                self.state.set_user(user);
                self.authenticating = false;
                Response::AuthSuccess(None)
            }
            Err(message) => {
                info!(conn = self.state.id, peer = %self.state.peer, %message, "authentication failed");
                Response::error(ErrorKind::AuthenticationError, message)
            }
        }
    }
}

async fn next_event(
    events: &mut Option<broadcast::Receiver<Arc<Event>>>,
) -> std::result::Result<Arc<Event>, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Queues a response for the writer. A send error means the writer died
/// with the socket; the reader will see the same on its side.
async fn send_with(tx: &OutTx, stream: i16, response: Response, wire: Wire) {
    let _ = tx
        .send(Outgoing {
            stream,
            response,
            wire,
            warnings: Vec::new(),
            tracing_id: None,
        })
        .await;
}

/// One request from admission to its queued response.
struct Job {
    handler: Arc<dyn RequestHandler>,
    state: Arc<ConnectionState>,
    metrics: Arc<ServerMetrics>,
    tx: OutTx,
    stream: i16,
    request: HandlerRequest,
    /// The client asked to trace it (frame flag 0x02).
    tracing: bool,
    wire: Wire,
    arrived: Instant,
    admission: Admission,
    /// Held until the response is queued: bounds the connection's requests.
    _conn_permit: OwnedSemaphorePermit,
    /// The request's bytes, held as long.
    _bytes_permit: BytesPermit,
}

impl Job {
    async fn run(self) {
        let Job {
            handler,
            state,
            metrics,
            tx,
            stream,
            request,
            tracing,
            wire,
            arrived,
            admission,
            _conn_permit,
            _bytes_permit,
        } = self;
        let slot = match admission {
            Admission::Run(slot) => slot,
            Admission::Wait(queued) => match queued.wait().await {
                Ok(slot) => slot,
                Err(reason) => {
                    debug!(
                        conn = state.id,
                        stream, "overloaded: request timed out in the queue"
                    );
                    send_with(&tx, stream, overloaded_request(reason), wire).await;
                    return;
                }
            },
        };
        let started = Instant::now();
        metrics.queue_wait.record(started - arrived);
        let (outcome, warnings, tracing_id) = client_warn::collect_traced(
            tracing,
            AssertUnwindSafe(handler.handle(&state, request)).catch_unwind(),
        )
        .await;
        metrics.execute.record(started.elapsed());
        // The execution slot is free once the handler is done; the
        // connection's permit stays until the response is queued.
        drop(slot);
        let response = outcome.unwrap_or_else(|_| {
            error!(conn = state.id, stream, "request handler panicked");
            Response::error(
                ErrorKind::ServerError,
                "internal error while executing the request",
            )
        });
        if let Response::Result(CqlResult::SetKeyspace(ks)) = &response {
            state.set_keyspace(ks.clone());
        }
        let _ = tx
            .send(Outgoing {
                stream,
                response,
                wire,
                warnings,
                tracing_id,
            })
            .await;
    }
}

/// A batch of fewer responses than this yields once before it is written.
const SMALL_BATCH: u64 = 8;

/// Encodes queued responses straight into one output buffer: every
/// response already queued (up to `WRITE_BATCH_BYTES`) joins the batch,
/// which then takes one write and one flush. On a v5 connection the
/// batch's envelopes share frames.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Outgoing>,
    conn: u64,
    max_frame: usize,
    metrics: Arc<ServerMetrics>,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut scratch = BytesMut::new();
    // Created by the first framed response; a connection's framing never
    // changes once on.
    let mut framer: Option<FrameWriter> = None;
    while let Some(first) = rx.recv().await {
        encode_outgoing(first, &mut buf, &mut scratch, &mut framer, conn, max_frame);
        let mut frames = 1u64;
        let mut yielded = false;
        while buf.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(more) => {
                    encode_outgoing(more, &mut buf, &mut scratch, &mut framer, conn, max_frame);
                    frames += 1;
                }
                // A small batch waits one turn of the scheduler: requests
                // completed together (a commitlog group, a burst of
                // replica acks) wake their tasks one by one, and this
                // writer, woken by the first, would otherwise run before
                // the rest and pay a write syscall for each.
                Err(_) if !yielded && frames < SMALL_BATCH => {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        if let Some(f) = &mut framer {
            f.finish(&mut buf);
        }
        let started = Instant::now();
        let written = match wr.write_all(&buf).await {
            Ok(()) => wr.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            debug!(conn, error = %e, "connection write failed");
            return;
        }
        metrics.socket_write.record(started.elapsed());
        metrics.write_batches.fetch_add(1, Ordering::Relaxed);
        metrics.frames_written.fetch_add(frames, Ordering::Relaxed);
        if buf.capacity() > WRITE_BUFFER_KEEP {
            buf = BytesMut::with_capacity(16 * 1024);
            scratch = BytesMut::new();
            if let Some(f) = &mut framer {
                f.shrink(WRITE_BUFFER_KEEP);
            }
        } else {
            buf.clear();
        }
    }
    let _ = wr.shutdown().await;
}

/// Appends one response to `buf`: a bare envelope, or an envelope in the
/// open v5 frame.
fn encode_outgoing(
    out: Outgoing,
    buf: &mut BytesMut,
    scratch: &mut BytesMut,
    framer: &mut Option<FrameWriter>,
    conn: u64,
    max_frame: usize,
) {
    match out.wire {
        Wire::Plain {
            version,
            compression,
        } => {
            if let Some(f) = framer {
                f.finish(buf);
            }
            encode_response(out, version, compression, buf, scratch, conn, max_frame);
        }
        Wire::Framed { lz4 } => {
            let f = framer.get_or_insert_with(|| FrameWriter::new(lz4));
            f.push(buf, |dst| {
                encode_response(
                    out,
                    ProtocolVersion::V5,
                    Compression::None,
                    dst,
                    scratch,
                    conn,
                    max_frame,
                )
            });
        }
    }
}

/// Appends one response envelope to `buf`; a response over the frame limit
/// is replaced by a ServerError on its stream.
fn encode_response(
    out: Outgoing,
    version: ProtocolVersion,
    compression: Compression,
    buf: &mut BytesMut,
    scratch: &mut BytesMut,
    conn: u64,
    max_frame: usize,
) {
    let Outgoing {
        stream,
        response,
        warnings,
        tracing_id,
        ..
    } = out;
    let start = buf.len();
    let mut frame = ResponseFrame::new(stream, response);
    frame.version = version;
    frame.warnings = warnings;
    frame.tracing_id = tracing_id;
    let body = frame.encode_into(compression, buf, scratch);
    if body > max_frame {
        warn!(conn, stream, bytes = body, "response over the frame limit");
        buf.truncate(start);
        let msg = format!("response of {body} bytes exceeds the frame limit");
        let mut frame = ResponseFrame::new(stream, Response::error(ErrorKind::ServerError, msg));
        frame.version = version;
        frame.encode_into(compression, buf, scratch);
    }
}
