//! Prepared statements on a real node, over raw protocol frames (so the
//! test sees exactly what the server answers, with no driver re-preparing
//! behind its back): a statement whose table is altered or dropped is
//! answered UNPREPARED, as Cassandra does, and re-preparing it gives the new
//! result metadata; an INSERT without its whole primary key is refused at
//! PREPARE.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gyre_protocol::{
    decode_frame, CqlResult, ErrorKind, Execute, Query, QueryParameters, Request, RequestFrame,
    Response, ResponseFrame, Value, DEFAULT_MAX_FRAME_BYTES,
};
use gyre_tests::cluster::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(30);

struct Client {
    socket: TcpStream,
    buf: BytesMut,
    stream: i16,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let socket = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            socket,
            buf: BytesMut::new(),
            stream: 0,
        };
        let opts = BTreeMap::from([("CQL_VERSION".to_string(), "3.0.0".to_string())]);
        assert_eq!(c.request(Request::Startup(opts)).await, Response::Ready);
        c
    }

    async fn request(&mut self, request: Request) -> Response {
        self.stream += 1;
        let bytes = RequestFrame::new(self.stream, request)
            .to_frame(gyre_protocol::Compression::None)
            .to_bytes();
        self.socket.write_all(&bytes).await.unwrap();
        loop {
            if let Some(f) = decode_frame(&mut self.buf, DEFAULT_MAX_FRAME_BYTES).unwrap() {
                let rf = ResponseFrame::decode(
                    &f,
                    gyre_protocol::Compression::None,
                    DEFAULT_MAX_FRAME_BYTES,
                )
                .unwrap();
                if rf.stream == self.stream {
                    return rf.response;
                }
                continue; // an event
            }
            let n = tokio::time::timeout(TIMEOUT, self.socket.read_buf(&mut self.buf))
                .await
                .expect("timed out waiting for a response")
                .unwrap();
            assert!(n > 0, "connection closed");
        }
    }

    async fn query(&mut self, text: &str) -> Response {
        self.request(Request::Query(Query {
            query: text.into(),
            params: QueryParameters::default(),
        }))
        .await
    }

    async fn ok(&mut self, text: &str) {
        let r = self.query(text).await;
        assert!(!matches!(r, Response::Error(_)), "{text}: {r:?}");
    }

    async fn prepare(&mut self, text: &str) -> Response {
        self.request(Request::Prepare(gyre_protocol::Prepare {
            query: text.into(),
            keyspace: None,
        }))
        .await
    }

    async fn execute(&mut self, id: &Bytes, values: Vec<Value>) -> Response {
        self.request(Request::Execute(Execute {
            id: id.clone(),
            result_metadata_id: None,
            params: QueryParameters {
                values: gyre_protocol::Values::Positional(values),
                skip_metadata: true,
                ..QueryParameters::default()
            },
        }))
        .await
    }
}

fn prepared(r: Response) -> (Bytes, Vec<String>) {
    let Response::Result(CqlResult::Prepared(p)) = r else {
        panic!("not PREPARED: {r:?}")
    };
    let cols = p
        .result_metadata
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    (p.id, cols)
}

fn int(v: i32) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&v.to_be_bytes()))
}

fn error_message(r: &Response) -> String {
    match r {
        Response::Error(e) => e.message.clone(),
        other => panic!("not an error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_table_changes() {
    let c = TestCluster::new(1, 14);
    c.up();
    let mut cl = Client::connect(c.cql(1)).await;
    cl.ok("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}").await;
    cl.ok("CREATE TABLE ks.t (k int, c int, v text, PRIMARY KEY (k, c))")
        .await;
    cl.ok("INSERT INTO ks.t (k, c, v) VALUES (1, 1, 'one')")
        .await;

    let (id, cols) = prepared(cl.prepare("SELECT * FROM ks.t WHERE k = ?").await);
    assert_eq!(cols, ["k", "c", "v"]);
    let r = cl.execute(&id, vec![int(1)]).await;
    assert!(matches!(r, Response::Result(CqlResult::Rows(_))), "{r:?}");

    // Another node's statements would be unaffected; this table changed.
    cl.ok("ALTER TABLE ks.t ADD extra int").await;
    let r = cl.execute(&id, vec![int(1)]).await;
    let Response::Error(gyre_protocol::CqlError { kind, .. }) = &r else {
        panic!("EXECUTE after ALTER answered {r:?}, not UNPREPARED")
    };
    assert!(
        matches!(kind, ErrorKind::Unprepared { id: got } if *got == id),
        "{r:?}"
    );
    let (id2, cols) = prepared(cl.prepare("SELECT * FROM ks.t WHERE k = ?").await);
    assert_eq!(id2, id, "the id is the query's digest");
    assert_eq!(cols, ["k", "c", "extra", "v"]);
    let r = cl.execute(&id, vec![int(1)]).await;
    assert!(matches!(r, Response::Result(CqlResult::Rows(_))), "{r:?}");

    // A change to another table leaves it prepared.
    cl.ok("CREATE TABLE ks.other (k int PRIMARY KEY)").await;
    let r = cl.execute(&id, vec![int(1)]).await;
    assert!(matches!(r, Response::Result(CqlResult::Rows(_))), "{r:?}");

    cl.ok("DROP TABLE ks.t").await;
    let r = cl.execute(&id, vec![int(1)]).await;
    assert!(
        matches!(&r, Response::Error(e) if matches!(e.kind, ErrorKind::Unprepared { .. })),
        "EXECUTE after DROP answered {r:?}"
    );

    // PREPARE refuses what EXECUTE would always refuse.
    cl.ok("CREATE TABLE ks.w (k int, c int, s int static, v int, PRIMARY KEY (k, c))")
        .await;
    for (bad, text) in [
        (
            "INSERT INTO ks.w (c, v) VALUES (?, ?)",
            "Some partition key parts are missing: k",
        ),
        (
            "INSERT INTO ks.w (k, v) VALUES (?, ?)",
            "Some clustering keys are missing: c",
        ),
        (
            "INSERT INTO ks.w (k, c, v) VALUES (?, ?, ?, ?)",
            "Unmatched column names/values",
        ),
    ] {
        let msg = error_message(&cl.prepare(bad).await);
        assert!(msg.contains(text), "{bad}: {msg}");
    }
    // Static columns alone need no clustering key.
    prepared(cl.prepare("INSERT INTO ks.w (k, s) VALUES (?, ?)").await);
}
