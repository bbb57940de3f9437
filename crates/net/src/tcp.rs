use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::frame::{
    decode_frame, encode_frame, encode_parts, encoded_len, ConnectionClass, Frame, FrameKind,
    Handshake, DEFAULT_MAX_FRAME_SIZE,
};
use crate::tls::InternodeTls;
use crate::transport::{
    InboundSink, Message, NodeAddr, Priority, SendOptions, Transport, TransportStats, Verb,
};

/// Settings of the TCP transport.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Listen address; outgoing connections bind their local side to its IP
    /// so peers see this node's address (one loopback IP per node in tests).
    pub listen: SocketAddr,
    pub host_id: Uuid,
    /// Only peers of this cluster are admitted (both ways, at the handshake).
    pub cluster_name: String,
    /// Largest frame accepted or sent; bigger incoming frames close the connection.
    pub max_frame_size: usize,
    /// Payloads above this many bytes use the large-message connection.
    pub large_message_threshold: usize,
    /// Messages queued per connection before sends fail with `QueueFull`.
    pub queue_capacity: usize,
    /// Bytes queued per connection before sends fail with `QueueFull`
    /// (a single message larger than this is still accepted into an empty queue).
    pub queue_max_bytes: usize,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// Mutual TLS on every connection (`None`: plaintext).
    pub tls: Option<InternodeTls>,
}

impl NetConfig {
    pub fn new(listen: SocketAddr) -> Self {
        NetConfig {
            listen,
            host_id: Uuid::new_v4(),
            cluster_name: String::new(),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            large_message_threshold: 64 * 1024,
            queue_capacity: 4096,
            queue_max_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            reconnect_backoff_min: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_secs(2),
            tls: None,
        }
    }
}

#[derive(Default)]
struct Counters {
    connections_opened: AtomicU64,
    connect_failures: AtomicU64,
    inbound_connections: AtomicU64,
    protocol_errors: AtomicU64,
    queue_full: AtomicU64,
    expired: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Queued {
    frame: Frame,
    /// The request's deadline: the frame's timeout is what is left of it when written.
    deadline: Option<Instant>,
    expires_at: Option<Instant>,
    size: usize,
}

/// The bounded queue in front of one outbound connection. The channel itself
/// is unbounded; the count and byte limits are enforced here, on enqueue.
struct OutQueue {
    tx: mpsc::UnboundedSender<Queued>,
    len: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

type OutboundMap = HashMap<(SocketAddr, ConnectionClass), Arc<OutQueue>>;

struct Shared {
    config: NetConfig,
    local: SocketAddr,
    token: CancellationToken,
    tasks: TaskTracker,
    sink: OnceLock<InboundSink>,
    /// Every send looks its queue up here, so it is a snapshot that only
    /// changes when a connection is first used; `outbound_open` serializes those changes.
    outbound: ArcSwap<OutboundMap>,
    outbound_open: Mutex<()>,
    /// Host ids from handshakes, by listen address; a restarted peer overwrites its entry.
    peer_ids: Mutex<HashMap<SocketAddr, Uuid>>,
    counters: Counters,
}

/// Internode messaging over TCP: one listener, and up to three outbound
/// connections per peer (urgent, small, large). Connections are one-way, as
/// in Cassandra: a node sends on the connections it opened and receives on
/// the ones it accepted, so responses travel on the responder's own outbound
/// connection.
pub struct TcpTransport {
    shared: Arc<Shared>,
    listener: Mutex<Option<TcpListener>>,
}

impl TcpTransport {
    /// Binds the listener. Use port 0 for an ephemeral port; [`Transport::local_addr`] tells the real one.
    pub async fn bind(config: NetConfig) -> Result<Self> {
        let socket = match config.listen {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // A restarted node must be able to take its port back while old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(config.listen)?;
        let listener = socket.listen(1024)?;
        let local = listener.local_addr()?;
        info!(%local, host_id = %config.host_id, "internode listener bound");
        Ok(TcpTransport {
            shared: Arc::new(Shared {
                config,
                local,
                token: CancellationToken::new(),
                tasks: TaskTracker::new(),
                sink: OnceLock::new(),
                outbound: ArcSwap::from_pointee(HashMap::new()),
                outbound_open: Mutex::new(()),
                peer_ids: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
            listener: Mutex::new(Some(listener)),
        })
    }

    pub fn host_id(&self) -> Uuid {
        self.shared.config.host_id
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.shared.token.cancel();
    }
}

#[async_trait]
impl Transport for TcpTransport {
    fn local_addr(&self) -> NodeAddr {
        self.shared.local
    }

    fn start(&self, sink: InboundSink) -> Result<()> {
        if self.shared.sink.set(sink).is_err() {
            return Err(Error::Malformed("transport started twice".into()));
        }
        let listener = self.listener.lock().take().ok_or(Error::Shutdown)?;
        self.shared
            .tasks
            .spawn(accept_loop(self.shared.clone(), listener));
        Ok(())
    }

    fn send(&self, to: NodeAddr, msg: Message, opts: SendOptions) -> Result<()> {
        let shared = &self.shared;
        if shared.token.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let size = encoded_len(msg.payload.len());
        if size > shared.config.max_frame_size {
            return Err(Error::PayloadTooLarge {
                size,
                max: shared.config.max_frame_size,
            });
        }
        let class = match opts.priority {
            Priority::Bulk => ConnectionClass::Large,
            _ if msg.payload.len() > shared.config.large_message_threshold => {
                ConnectionClass::Large
            }
            Priority::Urgent => ConnectionClass::Urgent,
            Priority::Normal => ConnectionClass::Small,
        };
        let outbound = shared.outbound.load();
        let opened;
        let queue = match outbound.get(&(to, class)) {
            Some(q) => q,
            None => {
                opened = open_queue(shared, to, class)?;
                &opened
            }
        };
        let prev_len = queue.len.fetch_add(1, Ordering::AcqRel);
        let prev_bytes = queue.bytes.fetch_add(size, Ordering::AcqRel);
        if prev_len >= shared.config.queue_capacity
            || (prev_bytes > 0 && prev_bytes + size > shared.config.queue_max_bytes)
        {
            queue.len.fetch_sub(1, Ordering::AcqRel);
            queue.bytes.fetch_sub(size, Ordering::AcqRel);
            bump(&shared.counters.queue_full);
            return Err(Error::QueueFull { peer: to });
        }
        let item = Queued {
            frame: msg.to_frame(Instant::now()),
            deadline: msg.deadline,
            expires_at: opts.expires_at,
            size,
        };
        queue.tx.send(item).map_err(|_| Error::Shutdown)
    }

    fn shutdown(&self) {
        self.shared.token.cancel();
        let _open = self.shared.outbound_open.lock();
        self.shared.outbound.store(Arc::new(HashMap::new()));
    }

    async fn wait_closed(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            connections_opened: get(&c.connections_opened),
            connect_failures: get(&c.connect_failures),
            inbound_connections: get(&c.inbound_connections),
            protocol_errors: get(&c.protocol_errors),
            queue_full: get(&c.queue_full),
            expired: get(&c.expired),
            network_dropped: 0,
        }
    }

    fn peer_host_id(&self, peer: NodeAddr) -> Option<Uuid> {
        self.shared.peer_ids.lock().get(&peer).copied()
    }
}

/// The queue to `peer` on connection `class`, created with its connection
/// task on first use.
fn open_queue(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    class: ConnectionClass,
) -> Result<Arc<OutQueue>> {
    let _open = shared.outbound_open.lock();
    if shared.token.is_cancelled() {
        return Err(Error::Shutdown);
    }
    let current = shared.outbound.load_full();
    if let Some(q) = current.get(&(peer, class)) {
        return Ok(q.clone());
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let len = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let conn = Outbound {
        shared: shared.clone(),
        peer,
        class,
        rx,
        held: VecDeque::new(),
        len: len.clone(),
        bytes: bytes.clone(),
    };
    shared.tasks.spawn(conn.run());
    let queue = Arc::new(OutQueue { tx, len, bytes });
    let mut map = OutboundMap::clone(&current);
    map.insert((peer, class), queue.clone());
    shared.outbound.store(Arc::new(map));
    Ok(queue)
}

/// Reads frames until one is complete. Used for handshakes.
async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Frame> {
    loop {
        if let Some(frame) = decode_frame(buf, max)? {
            return Ok(frame);
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(if buf.is_empty() {
                Error::Io(std::io::ErrorKind::UnexpectedEof.into())
            } else {
                Error::Truncated
            });
        }
    }
}

/// Admits an inbound peer: of this cluster, and speaking from the address
/// it claims (nodes bind their outgoing connections to their listen
/// address), so one peer cannot pose as another. Without TLS this is the
/// check that keeps a stray process from sending as a replica.
fn check_peer(config: &NetConfig, hello: &Handshake, remote: SocketAddr) -> Result<()> {
    if hello.cluster != config.cluster_name {
        return Err(Error::Handshake {
            peer: remote,
            reason: format!(
                "peer is of cluster {:?}, this node of {:?}",
                hello.cluster, config.cluster_name
            ),
        });
    }
    if hello.addr.ip().to_canonical() != remote.ip().to_canonical() {
        return Err(Error::Handshake {
            peer: remote,
            reason: format!(
                "peer claims address {} but connects from {}",
                hello.addr,
                remote.ip()
            ),
        });
    }
    Ok(())
}

fn handshake_frame(hs: &Handshake) -> BytesMut {
    let mut buf = BytesMut::new();
    let frame = Frame {
        kind: FrameKind::Handshake,
        flags: 0,
        verb: Verb(0),
        id: 0,
        timeout: None,
        payload: hs.encode(),
    };
    encode_frame(&frame, &mut buf);
    buf
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.token.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, remote)) => {
                bump(&shared.counters.inbound_connections);
                let s = shared.clone();
                shared.tasks.spawn(async move {
                    let result = tokio::select! {
                        _ = s.token.cancelled() => Ok(()),
                        r = serve_inbound(&s, stream, remote) => r,
                    };
                    match result {
                        Ok(()) => debug!(%remote, "inbound connection closed"),
                        Err(e) if e.is_protocol_error() => {
                            bump(&s.counters.protocol_errors);
                            error!(%remote, error = %e, "protocol error, closing inbound connection");
                        }
                        Err(e) => debug!(%remote, error = %e, "inbound connection failed"),
                    }
                });
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_inbound(shared: &Shared, stream: TcpStream, remote: SocketAddr) -> Result<()> {
    stream.set_nodelay(true)?;
    let Some(tls) = &shared.config.tls else {
        return serve_stream(shared, stream, remote, |_, _| Ok(())).await;
    };
    // A plaintext peer, or one whose certificate the cluster CA did not
    // sign, fails here, before anything it sends is read.
    let stream = tokio::time::timeout(shared.config.handshake_timeout, tls.accept(stream, remote))
        .await
        .map_err(|_| Error::Handshake {
            peer: remote,
            reason: "TLS handshake timed out".into(),
        })??;
    serve_stream(shared, stream, remote, |s, hello| {
        tls.check_claim(s, hello.addr.ip(), remote)
    })
    .await
}

/// Serves one inbound connection after its TLS handshake, if any: the
/// peer's handshake frame (checked by [`check_peer`] and `check_tls`),
/// then its messages.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut stream: S,
    remote: SocketAddr,
    check_tls: impl FnOnce(&S, &Handshake) -> Result<()>,
) -> Result<()> {
    let max = shared.config.max_frame_size;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let first = tokio::time::timeout(
        shared.config.handshake_timeout,
        read_frame(&mut stream, &mut buf, max),
    )
    .await
    .map_err(|_| Error::Handshake {
        peer: remote,
        reason: "timed out".into(),
    })??;
    if first.kind != FrameKind::Handshake {
        return Err(Error::Handshake {
            peer: remote,
            reason: format!("expected a handshake, got {:?}", first.kind),
        });
    }
    let hello = Handshake::decode(&first.payload)?;
    check_peer(&shared.config, &hello, remote)?;
    check_tls(&stream, &hello)?;
    let reply = Handshake {
        host_id: shared.config.host_id,
        addr: shared.local,
        class: hello.class,
        cluster: shared.config.cluster_name.clone(),
    };
    stream.write_all(&handshake_frame(&reply)).await?;
    stream.flush().await?;
    let from = hello.addr;
    shared.peer_ids.lock().insert(from, hello.host_id);
    debug!(%remote, peer = %from, host_id = %hello.host_id, class = ?hello.class, "inbound connection established");
    let sink = shared.sink.get().ok_or(Error::Shutdown)?.clone();
    // When the buffered bytes arrived: a request's deadline counts from
    // there, so the time spent handling the frames before it in the same
    // read counts against it.
    let mut received = Instant::now();
    loop {
        while let Some(frame) = decode_frame(&mut buf, max)? {
            if frame.kind == FrameKind::Handshake {
                return Err(Error::Malformed("second handshake on a connection".into()));
            }
            sink(Message::from_frame(from, frame, received));
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return if buf.is_empty() {
                Ok(())
            } else {
                Err(Error::Truncated)
            };
        }
        received = Instant::now();
    }
}

/// Payloads up to this size are copied into the connection's write buffer.
const COPY_LIMIT: usize = 16 * 1024;
/// Bytes gathered before a connection writes, if that many are queued.
const MAX_BATCH: usize = 256 * 1024;

/// Buffers written with one vectored write: a [`Buf`] over a list of chunks.
#[derive(Default)]
struct WriteBatch {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl WriteBatch {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.chunks.push_back(chunk);
        }
    }
}

impl Buf for WriteBatch {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| c.as_ref())
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.chunks) {
            *slot = std::io::IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let n = cnt.min(front.len());
            front.advance(n);
            self.remaining -= n;
            cnt -= n;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }
}

/// Goes to the back of the worker's run queue once. Unlike
/// `tokio::task::yield_now`, it is not deferred until the runtime has polled
/// the I/O driver: that would cost an `epoll_wait` per batch.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// An outbound connection after both handshakes.
enum Connected {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Why a connected session ended.
enum SessionEnd {
    Shutdown,
    Disconnected(Error),
}

/// The task owning one outbound connection: connects lazily, reconnects
/// with backoff, writes queued frames in order, drops expired ones.
struct Outbound {
    shared: Arc<Shared>,
    peer: SocketAddr,
    class: ConnectionClass,
    rx: mpsc::UnboundedReceiver<Queued>,
    /// Frames taken off the channel but not yet written.
    held: VecDeque<Queued>,
    len: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Outbound {
    async fn run(mut self) {
        let token = self.shared.token.clone();
        let min = self.shared.config.reconnect_backoff_min;
        let max = self.shared.config.reconnect_backoff_max;
        let mut backoff = min;
        loop {
            // Connect only when there is something to send: an idle dead peer costs nothing.
            self.drop_expired();
            if self.held.is_empty() {
                let next = tokio::select! {
                    _ = token.cancelled() => return,
                    m = self.rx.recv() => m,
                };
                match next {
                    Some(q) => self.held.push_back(q),
                    None => return,
                }
            }
            let connected = tokio::select! {
                _ = token.cancelled() => return,
                r = self.connect() => r,
            };
            match connected {
                Ok(stream) => {
                    bump(&self.shared.counters.connections_opened);
                    backoff = min;
                    let end = match stream {
                        Connected::Plain(s) => {
                            let (rd, wr) = s.into_split();
                            self.session(rd, wr).await
                        }
                        Connected::Tls(s) => {
                            let (rd, wr) = tokio::io::split(*s);
                            self.session(rd, wr).await
                        }
                    };
                    match end {
                        SessionEnd::Shutdown => return,
                        SessionEnd::Disconnected(e) => {
                            debug!(peer = %self.peer, class = ?self.class, error = %e, "outbound connection lost")
                        }
                    }
                }
                Err(e) => {
                    bump(&self.shared.counters.connect_failures);
                    if e.is_protocol_error() {
                        warn!(peer = %self.peer, class = ?self.class, error = %e, "handshake failed");
                    } else {
                        debug!(peer = %self.peer, class = ?self.class, error = %e, "connect failed");
                    }
                    let jitter = rand::thread_rng().gen_range(0..=backoff.as_micros() as u64 / 4);
                    let wait = backoff + Duration::from_micros(jitter);
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(max);
                }
            }
        }
    }

    fn release(&self, q: &Queued) {
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(q.size, Ordering::AcqRel);
    }

    /// Pulls everything queued and drops what nobody waits for any more.
    fn drop_expired(&mut self) {
        while let Ok(q) = self.rx.try_recv() {
            self.held.push_back(q);
        }
        let now = Instant::now();
        let mut kept = VecDeque::with_capacity(self.held.len());
        while let Some(q) = self.held.pop_front() {
            if q.expires_at.is_some_and(|t| t <= now) {
                self.release(&q);
                bump(&self.shared.counters.expired);
            } else {
                kept.push_back(q);
            }
        }
        self.held = kept;
    }

    async fn connect(&self) -> Result<Connected> {
        let cfg = &self.shared.config;
        let socket = match self.peer {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        let local_ip = self.shared.local.ip();
        if !local_ip.is_unspecified() && local_ip.is_ipv4() == self.peer.is_ipv4() {
            socket.bind(SocketAddr::new(local_ip, 0))?;
        }
        let mut stream = tokio::time::timeout(cfg.connect_timeout, socket.connect(self.peer))
            .await
            .map_err(|_| Error::Io(std::io::ErrorKind::TimedOut.into()))??;
        stream.set_nodelay(true)?;
        let peer = self.peer;
        match &cfg.tls {
            None => {
                self.hello(&mut stream).await?;
                Ok(Connected::Plain(stream))
            }
            Some(tls) => {
                // The listener's certificate is checked against the
                // address dialled (with endpoint verification).
                let mut stream =
                    tokio::time::timeout(cfg.handshake_timeout, tls.connect(stream, peer))
                        .await
                        .map_err(|_| Error::Handshake {
                            peer,
                            reason: "TLS handshake timed out".into(),
                        })??;
                // With TLS 1.3 the listener judges this node's certificate
                // after the client side is done: a refusal arrives as an
                // alert on the first read.
                self.hello(&mut stream).await.map_err(|e| match e {
                    Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                        Error::Handshake {
                            peer,
                            reason: format!("TLS: {io}"),
                        }
                    }
                    e => e,
                })?;
                Ok(Connected::Tls(Box::new(stream)))
            }
        }
    }

    /// Gyre's handshake on a connected stream: this node's hello, the
    /// peer's reply (of this cluster).
    async fn hello<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut S) -> Result<()> {
        let cfg = &self.shared.config;
        let hello = Handshake {
            host_id: cfg.host_id,
            addr: self.shared.local,
            class: self.class,
            cluster: cfg.cluster_name.clone(),
        };
        let peer = self.peer;
        let handshake = async {
            stream.write_all(&handshake_frame(&hello)).await?;
            stream.flush().await?;
            let mut buf = BytesMut::new();
            let reply = read_frame(stream, &mut buf, cfg.max_frame_size).await?;
            if reply.kind != FrameKind::Handshake {
                return Err(Error::Handshake {
                    peer,
                    reason: format!("expected a handshake reply, got {:?}", reply.kind),
                });
            }
            let reply = Handshake::decode(&reply.payload)?;
            if reply.cluster != cfg.cluster_name {
                return Err(Error::Handshake {
                    peer,
                    reason: format!(
                        "peer is of cluster {:?}, this node of {:?}",
                        reply.cluster, cfg.cluster_name
                    ),
                });
            }
            Ok(reply)
        };
        let reply = tokio::time::timeout(cfg.handshake_timeout, handshake)
            .await
            .map_err(|_| Error::Handshake {
                peer,
                reason: "timed out".into(),
            })??;
        debug!(%peer, host_id = %reply.host_id, class = ?self.class, "outbound connection established");
        self.shared.peer_ids.lock().insert(peer, reply.host_id);
        Ok(())
    }

    async fn session<R, W>(&mut self, mut rd: R, mut wr: W) -> SessionEnd
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let token = self.shared.token.clone();
        let mut out = BytesMut::with_capacity(64 * 1024);
        let mut probe = [0u8; 64];
        // Whether the last write carried several frames: then the connection
        // is busy, and waiting one scheduling round before the next write
        // lets it carry more. A lone request in flight is written at once.
        let mut busy = false;
        loop {
            if !self.held.is_empty() {
                let written = tokio::select! {
                    _ = token.cancelled() => return SessionEnd::Shutdown,
                    r = self.write_held(&mut wr, &mut out) => r,
                };
                match written {
                    Ok(frames) => busy = frames > 1,
                    Err(e) => return SessionEnd::Disconnected(e),
                }
            }
            // Biased: notice a closed socket before writing new messages into it.
            tokio::select! {
                biased;
                _ = token.cancelled() => return SessionEnd::Shutdown,
                // The peer never writes after the handshake; a readable socket means it closed.
                r = rd.read(&mut probe) => {
                    return SessionEnd::Disconnected(match r {
                        Ok(0) => Error::Io(std::io::ErrorKind::UnexpectedEof.into()),
                        Ok(_) => Error::Malformed("peer wrote on an outbound connection".into()),
                        Err(e) => Error::Io(e),
                    });
                }
                m = self.rx.recv() => match m {
                    Some(q) => {
                        self.held.push_back(q);
                        if busy {
                            // Let the tasks that are ready to run queue their
                            // messages too, so that one write carries them all.
                            YieldOnce(false).await;
                        }
                        while let Ok(q) = self.rx.try_recv() {
                            self.held.push_back(q);
                        }
                    }
                    None => return SessionEnd::Shutdown,
                },
            }
        }
    }

    /// Writes every held frame: all of them in one batch (up to
    /// [`MAX_BATCH`] bytes), handed to the socket with vectored writes, so
    /// a connection makes one system call for many messages. Small frames are
    /// copied into one buffer; big payloads go out from their own buffer.
    /// Returns how many frames it wrote.
    async fn write_held<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        out: &mut BytesMut,
    ) -> Result<usize> {
        let now = Instant::now();
        let mut batch = WriteBatch::default();
        let mut frames = 0;
        while let Some(mut q) = self.held.pop_front() {
            self.release(&q);
            if q.expires_at.is_some_and(|t| t <= now) {
                bump(&self.shared.counters.expired);
                continue;
            }
            q.frame.timeout = q.deadline.map(|d| d.saturating_duration_since(now));
            frames += 1;
            if q.frame.payload.len() <= COPY_LIMIT {
                encode_frame(&q.frame, out);
            } else {
                let (header, trailer) = encode_parts(&q.frame);
                out.extend_from_slice(&header);
                batch.push(out.split().freeze());
                batch.push(q.frame.payload);
                out.extend_from_slice(&trailer);
            }
            if out.len() + batch.remaining() >= MAX_BATCH {
                batch.push(out.split().freeze());
                wr.write_all_buf(&mut batch).await?;
            }
        }
        batch.push(out.split().freeze());
        if batch.has_remaining() {
            wr.write_all_buf(&mut batch).await?;
        }
        // TLS may hold the last record's bytes until flushed (a no-op on TCP).
        wr.flush().await?;
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn write_batch_is_a_buf_over_its_chunks() {
        let mut b = WriteBatch::default();
        b.push(Bytes::from_static(b"abc"));
        b.push(Bytes::new());
        b.push(Bytes::from_static(b"de"));
        b.push(Bytes::from_static(b"fghi"));
        assert_eq!(b.remaining(), 9);
        let mut slices = [std::io::IoSlice::new(&[]); 2];
        assert_eq!(b.chunks_vectored(&mut slices), 2);
        assert_eq!((&*slices[0], &*slices[1]), (&b"abc"[..], &b"de"[..]));
        b.advance(4);
        assert_eq!((b.remaining(), b.chunk()), (5, &b"e"[..]));
        b.advance(1);
        assert_eq!(b.chunk(), b"fghi");
        assert_eq!(b.copy_to_bytes(4), "fghi");
        assert!(!b.has_remaining());
        assert_eq!(b.chunk(), b"");
    }
}
