//! Shared test scaffolding: a scripted request handler, a server on an
//! ephemeral port and a raw-frame client.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gyre_protocol::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Answers by query text:
/// - `sleep <ms> <tag>`: waits, then one row with `<tag>`;
/// - `USE <ks>`: Set_keyspace;
/// - `keyspace`: one row with the connection's keyspace (or `none`);
/// - `panic`: panics; `invalid`: an Invalid error;
/// - `big <n>`: one row with an `n`-byte text value;
/// - anything else: one row echoing the text.
///
/// PREPARE returns the query bytes as id; EXECUTE and BATCH return Void.
pub struct TestHandler;

pub fn text_rows(values: Vec<String>) -> Response {
    let meta = RowsMetadata::new(vec![ColumnSpec::new(
        "test",
        "echo",
        "value",
        ColumnType::Varchar,
    )]);
    let rows = values
        .into_iter()
        .map(|v| vec![Some(Bytes::from(v))])
        .collect();
    Response::Result(CqlResult::Rows(Rows {
        metadata: meta,
        rows,
    }))
}

#[async_trait]
impl RequestHandler for TestHandler {
    async fn handle(&self, conn: &ConnectionState, request: HandlerRequest) -> Response {
        match request {
            HandlerRequest::Query(q) => {
                let words: Vec<&str> = q.query.split_whitespace().collect();
                match words.as_slice() {
                    ["sleep", ms, tag] => {
                        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
                        text_rows(vec![tag.to_string()])
                    }
                    ["USE", ks] => Response::Result(CqlResult::SetKeyspace(ks.to_string())),
                    ["keyspace"] => {
                        text_rows(vec![conn.keyspace().unwrap_or_else(|| "none".into())])
                    }
                    ["panic"] => panic!("handler asked to panic"),
                    ["invalid"] => Response::error(ErrorKind::Invalid, "invalid on purpose"),
                    ["big", n] => text_rows(vec!["x".repeat(n.parse().unwrap_or(0))]),
                    _ => text_rows(vec![q.query.clone()]),
                }
            }
            HandlerRequest::Prepare(p) => Response::Result(CqlResult::Prepared(Prepared {
                id: Bytes::from(p.query.into_bytes()),
                result_metadata_id: Bytes::from_static(b"meta"),
                metadata: PreparedMetadata::default(),
                result_metadata: RowsMetadata::empty(),
            })),
            HandlerRequest::Execute(_) | HandlerRequest::Batch(_) => Response::void(),
        }
    }
}

/// A running server; shuts down when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub events: EventSender,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let events = config.events.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            Server::run(listener, Arc::new(TestHandler), config, shutdown)
                .await
                .unwrap();
        });
        TestServer {
            addr,
            events,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn default() -> Self {
        Self::start(ServerConfig::default()).await
    }

    /// Shuts down and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A client that speaks raw frames.
pub struct Client {
    pub socket: TcpStream,
    buf: BytesMut,
    pub compression: Compression,
    /// The version of the envelopes this client sends and expects.
    pub version: ProtocolVersion,
    /// Set once v5 framing is on (after READY).
    deframer: Option<Deframer>,
    /// Frame lz4 compression once framing is on.
    pub frame_lz4: bool,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let socket = TcpStream::connect(addr).await.unwrap();
        socket.set_nodelay(true).unwrap();
        Client {
            socket,
            buf: BytesMut::new(),
            compression: Compression::None,
            version: ProtocolVersion::V4,
            deframer: None,
            frame_lz4: false,
        }
    }

    /// A client that speaks v5 (bare envelopes until its STARTUP).
    pub async fn connect_v5(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr).await;
        c.version = ProtocolVersion::V5;
        c
    }

    /// True once v5 framing is on.
    pub fn is_framed(&self) -> bool {
        self.deframer.is_some()
    }

    /// The bytes of `request`: a bare envelope, or v5 frames.
    pub fn encode(&self, stream: i16, request: Request) -> Vec<u8> {
        let mut rf = RequestFrame::new(stream, request);
        rf.version = self.version;
        let envelope = rf.to_frame(self.compression).to_bytes();
        if self.is_framed() {
            let mut out = BytesMut::new();
            encode_envelope(&envelope, self.frame_lz4, &mut out);
            out.to_vec()
        } else {
            envelope.to_vec()
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, stream: i16, request: Request) {
        let bytes = self.encode(stream, request);
        self.send_raw(&bytes).await;
    }

    /// The next raw frame, or `None` once the server closed the connection.
    pub async fn recv_frame(&mut self) -> Option<Frame> {
        loop {
            let decoded = match &mut self.deframer {
                Some(d) => d.decode(&mut self.buf),
                None => decode_frame(&mut self.buf, DEFAULT_MAX_FRAME_BYTES),
            };
            if let Some(f) = decoded.unwrap() {
                return Some(f);
            }
            let n = tokio::time::timeout(TIMEOUT, self.socket.read_buf(&mut self.buf))
                .await
                .expect("timed out waiting for a frame")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    pub async fn recv(&mut self) -> ResponseFrame {
        let frame = self.recv_frame().await.expect("connection closed");
        assert_eq!(frame.version, self.version.response_byte());
        ResponseFrame::decode(&frame, self.compression, DEFAULT_MAX_FRAME_BYTES).unwrap()
    }

    pub async fn request(&mut self, stream: i16, request: Request) -> Response {
        self.send(stream, request).await;
        let rf = self.recv().await;
        assert_eq!(rf.stream, stream);
        rf.response
    }

    /// STARTUP as the scylla driver sends it; with `lz4`, switches this
    /// client to compressed frames after READY.
    pub async fn startup(&mut self, lz4: bool) {
        let mut opts = BTreeMap::from([
            ("CQL_VERSION".to_string(), "4.0.0".to_string()),
            ("DRIVER_NAME".to_string(), "test".to_string()),
        ]);
        if lz4 {
            opts.insert("COMPRESSION".into(), "lz4".into());
        }
        assert_eq!(
            self.request(0, Request::Startup(opts)).await,
            Response::Ready
        );
        if self.version.is_v5() {
            self.frame_lz4 = lz4;
            self.deframer = Some(Deframer::new(lz4, DEFAULT_MAX_FRAME_BYTES));
        } else if lz4 {
            self.compression = Compression::Lz4;
        }
    }

    pub async fn query(&mut self, stream: i16, text: &str) -> Response {
        self.request(stream, query(text)).await
    }

    /// True once the server has closed the connection (EOF or reset).
    pub async fn is_closed(&mut self) -> bool {
        let mut scratch = [0u8; 1024];
        loop {
            match tokio::time::timeout(TIMEOUT, self.socket.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

pub fn query(text: &str) -> Request {
    Request::Query(Query {
        query: text.into(),
        params: QueryParameters::default(),
    })
}

/// The single text value of a one-row response.
pub fn single_text(response: &Response) -> String {
    match response {
        Response::Result(CqlResult::Rows(rows)) => {
            let v = rows.rows[0][0].as_ref().unwrap();
            String::from_utf8(v.to_vec()).unwrap()
        }
        other => panic!("expected rows, got {other:?}"),
    }
}

pub fn error_code(response: &Response) -> i32 {
    match response {
        Response::Error(e) => e.kind.code(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Asserts a fresh connection still gets a full STARTUP/QUERY exchange.
pub async fn assert_server_healthy(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    c.startup(false).await;
    assert_eq!(single_text(&c.query(3, "hello").await), "hello");
}
