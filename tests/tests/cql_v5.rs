//! Protocol v5 on a real node, over raw frames (so the test sees exactly
//! what the server answers): the keyspace of QUERY, PREPARE and BATCH,
//! the result metadata id of PREPARED and EXECUTE with METADATA_CHANGED,
//! `now_in_seconds` for TTL expiry, events on a framed connection, and a
//! corrupt frame answered with a protocol error and a close while the node
//! keeps serving.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gyre_protocol::{
    decode_frame, BatchStatement, BatchStatementKind, BatchType, Compression, Consistency,
    CqlResult, Deframer, EventType, Execute, FrameWriter, Prepare, Prepared, ProtocolVersion,
    Query, QueryParameters, Request, RequestFrame, Response, ResponseFrame, Value, Values,
    DEFAULT_MAX_FRAME_BYTES,
};
use gyre_tests::cluster::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(30);

struct Client {
    socket: TcpStream,
    buf: BytesMut,
    stream: i16,
    deframer: Option<Deframer>,
    lz4: bool,
    events: Vec<Response>,
}

impl Client {
    async fn connect(addr: SocketAddr, lz4: bool) -> Self {
        let socket = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            socket,
            buf: BytesMut::new(),
            stream: 0,
            deframer: None,
            lz4,
            events: Vec::new(),
        };
        let mut opts = BTreeMap::from([("CQL_VERSION".to_string(), "3.4.7".to_string())]);
        if lz4 {
            opts.insert("COMPRESSION".into(), "lz4".into());
        }
        assert_eq!(c.request(Request::Startup(opts)).await, Response::Ready);
        c.deframer = Some(Deframer::new(lz4, DEFAULT_MAX_FRAME_BYTES));
        c
    }

    fn encode(&self, stream: i16, request: Request) -> BytesMut {
        let mut rf = RequestFrame::new(stream, request);
        rf.version = ProtocolVersion::V5;
        let frame = rf.to_frame(Compression::None);
        let mut out = BytesMut::new();
        if self.deframer.is_some() {
            let mut w = FrameWriter::new(self.lz4);
            w.push(&mut out, |dst| frame.encode(dst));
            w.finish(&mut out);
        } else {
            frame.encode(&mut out);
        }
        out
    }

    /// The next response, or `None` once the server closed.
    async fn recv(&mut self) -> Option<ResponseFrame> {
        loop {
            let frame = match &mut self.deframer {
                Some(d) => d.decode(&mut self.buf).unwrap(),
                None => decode_frame(&mut self.buf, DEFAULT_MAX_FRAME_BYTES).unwrap(),
            };
            if let Some(f) = frame {
                assert_eq!(f.version, 0x85, "a v5 response");
                return Some(
                    ResponseFrame::decode(&f, Compression::None, DEFAULT_MAX_FRAME_BYTES).unwrap(),
                );
            }
            let n = tokio::time::timeout(TIMEOUT, self.socket.read_buf(&mut self.buf))
                .await
                .expect("timed out waiting for a response")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    async fn request(&mut self, request: Request) -> Response {
        self.stream += 1;
        let bytes = self.encode(self.stream, request);
        self.socket.write_all(&bytes).await.unwrap();
        loop {
            let rf = self.recv().await.expect("connection closed");
            if rf.stream == self.stream {
                return rf.response;
            }
            self.events.push(rf.response);
        }
    }

    async fn query_in(&mut self, text: &str, params: QueryParameters) -> Response {
        self.request(Request::Query(Query {
            query: text.into(),
            params,
        }))
        .await
    }

    async fn ok(&mut self, text: &str) {
        let r = self.query_in(text, QueryParameters::default()).await;
        assert!(!matches!(r, Response::Error(_)), "{text}: {r:?}");
    }
}

fn int(v: i32) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&v.to_be_bytes()))
}

fn rows(r: Response) -> gyre_protocol::Rows {
    match r {
        Response::Result(CqlResult::Rows(rows)) => rows,
        other => panic!("not rows: {other:?}"),
    }
}

fn now_secs() -> i32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_features_on_a_real_node() {
    let c = TestCluster::new(1, 53);
    c.up();
    for lz4 in [false, true] {
        let ks = if lz4 { "v5z" } else { "v5" };
        let mut cl = Client::connect(c.cql(1), lz4).await;
        let mut events = Client::connect(c.cql(1), lz4).await;
        assert_eq!(
            events
                .request(Request::Register(vec![EventType::SchemaChange]))
                .await,
            Response::Ready
        );
        cl.ok(&format!("CREATE KEYSPACE {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}}")).await;
        // The schema change reaches the registered connection as a framed
        // EVENT on stream -1.
        let ev = events.recv().await.expect("an event");
        assert_eq!(ev.stream, -1);
        assert!(matches!(ev.response, Response::Event(_)), "{ev:?}");

        // QUERY's keyspace: no USE, an unqualified table.
        let in_ks = |extra: QueryParameters| QueryParameters {
            keyspace: Some(ks.to_string()),
            ..extra
        };
        let r = cl
            .query_in(
                "CREATE TABLE t (k int PRIMARY KEY, v text)",
                in_ks(QueryParameters::default()),
            )
            .await;
        assert!(
            matches!(r, Response::Result(CqlResult::SchemaChange(_))),
            "{r:?}"
        );
        let now = now_secs();
        let r = cl
            .query_in(
                "INSERT INTO t (k, v) VALUES (1, 'one') USING TTL 100",
                in_ks(QueryParameters {
                    now_in_seconds: Some(now),
                    ..QueryParameters::default()
                }),
            )
            .await;
        assert_eq!(r, Response::void());
        let read_at = |at: i32| {
            in_ks(QueryParameters {
                now_in_seconds: Some(at),
                ..QueryParameters::default()
            })
        };
        let select = "SELECT v FROM t WHERE k = 1";
        assert_eq!(rows(cl.query_in(select, read_at(now)).await).rows.len(), 1);
        assert_eq!(
            rows(cl.query_in(select, read_at(now + 99)).await)
                .rows
                .len(),
            1
        );
        // At "now + 100 s" the row has expired.
        assert_eq!(
            rows(cl.query_in(select, read_at(now + 100)).await)
                .rows
                .len(),
            0
        );
        let r = cl.query_in(select, QueryParameters::default()).await;
        assert!(
            matches!(&r, Response::Error(e) if e.message.contains("No keyspace")),
            "{r:?}"
        );

        // PREPARE's keyspace and the result metadata id.
        let Response::Result(CqlResult::Prepared(Prepared {
            id,
            result_metadata_id,
            result_metadata,
            ..
        })) = cl
            .request(Request::Prepare(Prepare {
                query: "SELECT k, v FROM t WHERE k = ?".into(),
                keyspace: Some(ks.into()),
            }))
            .await
        else {
            panic!("not prepared")
        };
        assert_eq!(result_metadata_id.len(), 16);
        assert_eq!(result_metadata.columns.len(), 2);
        let execute = |meta: Bytes| {
            Request::Execute(Execute {
                id: id.clone(),
                result_metadata_id: Some(meta),
                params: QueryParameters {
                    values: Values::Positional(vec![int(1)]),
                    skip_metadata: true,
                    ..QueryParameters::default()
                },
            })
        };
        // The current id: no metadata, no change.
        let r = rows(cl.request(execute(result_metadata_id.clone())).await);
        assert!(r.metadata.no_metadata && r.metadata.new_metadata_id.is_none());
        assert_eq!(r.rows.len(), 1);
        // A stale id: METADATA_CHANGED with the current id and full specs.
        let r = rows(cl.request(execute(Bytes::from_static(b"stale"))).await);
        assert_eq!(r.metadata.new_metadata_id, Some(result_metadata_id.clone()));
        assert!(!r.metadata.no_metadata);
        assert_eq!(r.metadata.columns, result_metadata.columns);
        assert_eq!(r.rows.len(), 1);

        // BATCH's keyspace.
        let batch = Request::Batch(gyre_protocol::Batch {
            batch_type: BatchType::Logged,
            statements: (2..4)
                .map(|k| BatchStatement {
                    statement: BatchStatementKind::Query(format!(
                        "INSERT INTO t (k, v) VALUES ({k}, 'b')"
                    )),
                    values: Vec::new(),
                })
                .collect(),
            consistency: Consistency::One,
            serial_consistency: None,
            default_timestamp: None,
            keyspace: Some(ks.into()),
            now_in_seconds: None,
        });
        assert_eq!(cl.request(batch).await, Response::void());
        let all = rows(
            cl.query_in(&format!("SELECT k FROM {ks}.t"), QueryParameters::default())
                .await,
        );
        assert_eq!(all.rows.len(), 3, "two batch rows and the TTL'd one");

        // A large value: frames both ways span several v5 frames.
        let big = "x".repeat(300_000);
        let insert = match cl
            .request(Request::Prepare(Prepare {
                query: "INSERT INTO t (k, v) VALUES (?, ?)".into(),
                keyspace: Some(ks.into()),
            }))
            .await
        {
            Response::Result(CqlResult::Prepared(p)) => p.id,
            other => panic!("{other:?}"),
        };
        let r = cl
            .request(Request::Execute(Execute {
                id: insert,
                result_metadata_id: Some(Bytes::new()),
                params: QueryParameters {
                    values: Values::Positional(vec![
                        int(9),
                        Value::Bytes(Bytes::from(big.clone())),
                    ]),
                    ..QueryParameters::default()
                },
            }))
            .await;
        assert_eq!(r, Response::void());
        let r = rows(
            cl.query_in(
                &format!("SELECT v FROM {ks}.t WHERE k = 9"),
                QueryParameters::default(),
            )
            .await,
        );
        assert_eq!(r.rows[0][0].as_deref(), Some(big.as_bytes()));

        // A corrupt frame: a protocol error, then the connection closes.
        let mut bad = cl.encode(99, gyre_protocol::Request::Options);
        bad[0] ^= 0x01;
        cl.socket.write_all(&bad).await.unwrap();
        let rf = cl.recv().await.expect("an error before the close");
        assert!(
            matches!(&rf.response, Response::Error(e) if e.kind.code() == 0x000A && e.message.contains("CRC24")),
            "{rf:?}"
        );
        assert!(cl.recv().await.is_none(), "connection closed");
    }
    // The node still serves, v4 included.
    let mut v5 = Client::connect(c.cql(1), false).await;
    v5.ok("SELECT * FROM system.local").await;
    let mut s = TcpStream::connect(c.cql(1)).await.unwrap();
    let opts = BTreeMap::from([("CQL_VERSION".to_string(), "3.4.7".to_string())]);
    s.write_all(
        &RequestFrame::new(1, Request::Startup(opts))
            .to_frame(Compression::None)
            .to_bytes(),
    )
    .await
    .unwrap();
    let mut buf = BytesMut::new();
    let f = loop {
        if let Some(f) = decode_frame(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap() {
            break f;
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    };
    assert_eq!(f.version, 0x84);
    assert_eq!(f.opcode, 0x02, "READY");
}
