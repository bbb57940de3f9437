//! One node driven well past its capacity: 4,096 requests in flight over
//! 16 connections (raw protocol frames, each answer immediately replaced
//! by a new request on its stream) for a few seconds, with the node's
//! request limits set low and group commit (a write holds its execution
//! slot until its fsync; in periodic mode writes finish on their first
//! poll and never fill the slots) so the overload path is certain to run. Every
//! request must be answered with a result, Overloaded (0x1001) or a
//! server timeout, on a connection that stays open; afterwards nothing is
//! left executing or queued, every stage histogram of the request path
//! counted the acknowledged writes, and the node answers a normal request
//! at once. Performance is not asserted.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gyre_protocol::{
    decode_frame, CqlResult, Execute, Prepare, Query, QueryParameters, Request, RequestFrame,
    Response, ResponseFrame, Value, Values, DEFAULT_MAX_FRAME_BYTES,
};
use gyre_tests::cluster::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 16;
const IN_FLIGHT_PER_CONNECTION: i16 = 256;
const LOAD: Duration = Duration::from_secs(4);
/// No answer this long after a request means the node lost it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    ok: u64,
    overloaded: u64,
    timeouts: u64,
}

/// A raw protocol v4 connection (uncompressed).
struct Conn {
    socket: TcpStream,
    inbuf: BytesMut,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let socket = TcpStream::connect(addr).await.unwrap();
        socket.set_nodelay(true).unwrap();
        let mut c = Conn {
            socket,
            inbuf: BytesMut::new(),
        };
        let opts = [("CQL_VERSION".to_string(), "3.4.7".to_string())].into();
        match c.request(0, Request::Startup(opts)).await {
            Response::Ready => c,
            other => panic!("STARTUP answered {other:?}"),
        }
    }

    async fn send(&mut self, frames: &[u8]) -> std::io::Result<()> {
        self.socket.write_all(frames).await
    }

    /// The next response, `Err` on a closed connection or no answer.
    async fn recv(&mut self) -> Result<ResponseFrame, String> {
        loop {
            match decode_frame(&mut self.inbuf, DEFAULT_MAX_FRAME_BYTES) {
                Ok(Some(frame)) => {
                    return ResponseFrame::decode(
                        &frame,
                        gyre_protocol::Compression::None,
                        DEFAULT_MAX_FRAME_BYTES,
                    )
                    .map_err(|e| format!("bad response frame: {e}"))
                }
                Ok(None) => {}
                Err(e) => return Err(format!("bad frame: {e}")),
            }
            match tokio::time::timeout(ANSWER_TIMEOUT, self.socket.read_buf(&mut self.inbuf)).await
            {
                Err(_) => return Err(format!("no answer within {ANSWER_TIMEOUT:?}")),
                Ok(Err(e)) => return Err(format!("connection broken: {e}")),
                Ok(Ok(0)) => return Err("connection closed by the node".into()),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn request(&mut self, stream: i16, request: Request) -> Response {
        let bytes = encode(stream, request);
        self.send(&bytes).await.unwrap();
        let rf = self.recv().await.unwrap();
        assert_eq!(rf.stream, stream);
        rf.response
    }
}

fn encode(stream: i16, request: Request) -> Bytes {
    RequestFrame::new(stream, request)
        .to_frame(gyre_protocol::Compression::None)
        .to_bytes()
}

fn query(text: &str) -> Request {
    Request::Query(Query {
        query: text.into(),
        params: QueryParameters::default(),
    })
}

fn insert(id: &Bytes, key: i32) -> Request {
    Request::Execute(Execute {
        id: id.clone(),
        result_metadata_id: None,
        params: QueryParameters {
            values: Values::Positional(vec![
                Value::Bytes(Bytes::copy_from_slice(&key.to_be_bytes())),
                Value::Bytes(Bytes::from(vec![b'v'; 100])),
            ]),
            ..QueryParameters::default()
        },
    })
}

/// Keeps `IN_FLIGHT_PER_CONNECTION` requests in flight until `stop_at`,
/// then collects the outstanding answers.
async fn load_connection(
    addr: SocketAddr,
    conn_no: usize,
    id: Bytes,
    stop_at: Instant,
) -> Result<Counts, String> {
    let mut c = Conn::open(addr).await;
    let mut key = (conn_no as i32) << 20;
    let mut out = BytesMut::new();
    for stream in 1..=IN_FLIGHT_PER_CONNECTION {
        key += 1;
        out.extend_from_slice(&encode(stream, insert(&id, key)));
    }
    c.send(&out).await.map_err(|e| e.to_string())?;
    out.clear();
    let mut outstanding = IN_FLIGHT_PER_CONNECTION as usize;
    let mut counts = Counts::default();
    while outstanding > 0 {
        let rf = c.recv().await?;
        outstanding -= 1;
        match &rf.response {
            Response::Result(_) => counts.ok += 1,
            Response::Error(e) => match e.kind.code() {
                0x1001 => counts.overloaded += 1,
                0x1100 | 0x1200 => counts.timeouts += 1,
                _ => return Err(format!("unexpected error on stream {}: {e:?}", rf.stream)),
            },
            other => return Err(format!("unexpected response {other:?}")),
        }
        if Instant::now() < stop_at {
            key += 1;
            out.extend_from_slice(&encode(rf.stream, insert(&id, key)));
            outstanding += 1;
        }
        // Answers that arrived together are replaced with one write.
        if !out.is_empty() && !has_complete_frame(&c.inbuf) {
            c.send(&out)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            out.clear();
        }
    }
    Ok(counts)
}

fn has_complete_frame(buf: &[u8]) -> bool {
    buf.len() >= 9 && buf.len() - 9 >= u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

fn proc_status(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

#[test]
fn node_past_capacity_answers_overloaded_and_recovers_at_once() {
    let t0 = Instant::now();
    let c = TestCluster::new(1, 40);
    c.up_with(&[
        "--commitlog-sync",
        "group",
        "--cql-max-concurrent-requests",
        "128",
        "--cql-max-queued-requests",
        "512",
        "--cql-queue-timeout-ms",
        "100",
    ]);
    let addr = c.cql(1);
    let pid = c.pid(1).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (total, recovered_after) = rt.block_on(async {
        let mut s = Conn::open(addr).await;
        let ddl = [
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            "CREATE TABLE ks.t (k int PRIMARY KEY, v text)",
        ];
        for (i, q) in ddl.into_iter().enumerate() {
            let r = s.request(i as i16 + 1, query(q)).await;
            assert!(matches!(r, Response::Result(_)), "{q}: {r:?}");
        }
        let id = match s
            .request(
                3,
                Request::Prepare(Prepare {
                    query: "INSERT INTO ks.t (k, v) VALUES (?, ?)".into(),
                    keyspace: None,
                }),
            )
            .await
        {
            Response::Result(CqlResult::Prepared(p)) => p.id,
            other => panic!("PREPARE answered {other:?}"),
        };

        let stop_at = Instant::now() + LOAD;
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|n| tokio::spawn(load_connection(addr, n, id.clone(), stop_at)))
            .collect();
        let mut total = Counts::default();
        for t in tasks {
            let counts = t.await.unwrap().unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
            total.ok += counts.ok;
            total.overloaded += counts.overloaded;
            total.timeouts += counts.timeouts;
        }
        let load_ended = Instant::now();
        eprintln!(
            "load: {total:?} in {:.1} s; node threads {}, VmRSS {}, VmHWM {}",
            (load_ended - (stop_at - LOAD)).as_secs_f64(),
            proc_status(pid, "Threads:"),
            proc_status(pid, "VmRSS:"),
            proc_status(pid, "VmHWM:"),
        );

        // At once afterwards: a normal request on a new connection, polled
        // until a deadline (it should succeed the first time).
        let deadline = load_ended + Duration::from_secs(5);
        let mut attempts = 0;
        let recovered_after = loop {
            attempts += 1;
            let mut probe = Conn::open(addr).await;
            match probe.request(1, query("SELECT v FROM ks.t WHERE k = 1")).await {
                Response::Result(CqlResult::Rows(_)) => break load_ended.elapsed(),
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "no normal answer after the load: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        eprintln!("recovered: first success after {recovered_after:?} ({attempts} attempts)");
        (total, recovered_after)
    });

    let metrics = gyre_node::http::get(c.admin(1), "/metrics", Duration::from_secs(5)).unwrap();
    let reported_overloaded = metric(&metrics, "gyre_cql_overloaded_total{reason=\"queue_full\"}")
        + metric(
            &metrics,
            "gyre_cql_overloaded_total{reason=\"queue_timeout\"}",
        );
    eprintln!(
        "metrics: overloaded {reported_overloaded}, queue wait count {}, completed inline {}",
        metric(&metrics, "gyre_cql_queue_wait_seconds_count"),
        metric(&metrics, "gyre_cql_requests_completed_inline_total"),
    );
    assert!(total.ok > 0, "{total:?}");
    assert!(total.overloaded > 0, "not past capacity: {total:?}");
    assert_eq!(reported_overloaded, total.overloaded as f64);
    assert_eq!(metric(&metrics, "gyre_cql_requests_executing"), 0.0);
    assert_eq!(metric(&metrics, "gyre_cql_requests_queued"), 0.0);
    assert!(recovered_after < Duration::from_secs(5));
    // Every stage of the request path counted every acknowledged write.
    for stage in [
        "gyre_cql_execute_seconds_count",
        "gyre_query_plan_seconds_count",
        "gyre_coordinator_write_seconds_count",
        "gyre_coordinator_replica_apply_seconds_count",
        "gyre_coordinator_durability_wait_seconds_count",
        "gyre_storage_commitlog_records_total",
    ] {
        let n = metric(&metrics, stage);
        assert!(n >= total.ok as f64, "{stage} = {n} < {} writes", total.ok);
    }
    // Responses are written in batches; writes share fsyncs.
    assert!(metric(&metrics, "gyre_cql_socket_write_seconds_count") > 0.0);
    assert!(metric(&metrics, "gyre_storage_commitlog_writes_per_sync") >= 1.0);
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}
