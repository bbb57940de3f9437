//! Connection start-up (cql-compat section 2): OPTIONS at any time,
//! STARTUP variants, lz4, keyspace tracking and request ordering rules.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use gyre_protocol::*;

fn startup(pairs: &[(&str, &str)]) -> Request {
    Request::Startup(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[tokio::test]
async fn options_before_and_after_startup() {
    let server = TestServer::default().await;
    let mut c = Client::connect(server.addr).await;
    let expected = BTreeMap::from([
        ("CQL_VERSION".to_string(), vec!["3.4.7".to_string()]),
        ("COMPRESSION".to_string(), vec!["lz4".to_string()]),
        (
            "PROTOCOL_VERSIONS".to_string(),
            vec!["3/v3".to_string(), "4/v4".to_string(), "5/v5".to_string()],
        ),
    ]);
    let Response::Supported(map) = c.request(5, Request::Options).await else {
        panic!("not SUPPORTED")
    };
    assert_eq!(map, expected);
    assert!(map
        .keys()
        .all(|k| !k.starts_with("SCYLLA") && !k.starts_with("TABLETS")));
    c.startup(false).await;
    assert_eq!(
        c.request(6, Request::Options).await,
        Response::Supported(expected)
    );
    server.stop().await;
}

#[tokio::test]
async fn requests_before_startup_are_protocol_errors() {
    let server = TestServer::default().await;
    let mut c = Client::connect(server.addr).await;
    assert_eq!(error_code(&c.query(1, "hello").await), 0x000A);
    assert_eq!(
        error_code(
            &c.request(2, Request::Register(vec![EventType::SchemaChange]))
                .await
        ),
        0x000A
    );
    // The connection survives and can still start.
    c.startup(false).await;
    assert_eq!(single_text(&c.query(3, "hello").await), "hello");
    // A second STARTUP is refused, the connection still works.
    assert_eq!(
        error_code(&c.request(4, startup(&[("CQL_VERSION", "3.0.0")])).await),
        0x000A
    );
    assert_eq!(
        error_code(&c.request(5, Request::AuthResponse(None)).await),
        0x000A
    );
    assert_eq!(single_text(&c.query(6, "still here").await), "still here");
    server.stop().await;
}

#[tokio::test]
async fn startup_accepts_cql_3_and_later_and_ignores_unknown_keys() {
    let server = TestServer::default().await;
    for version in ["3.0.0", "3.4.7", "4.0.0", "3"] {
        let mut c = Client::connect(server.addr).await;
        let r = c
            .request(
                0,
                startup(&[
                    ("CQL_VERSION", version),
                    ("DRIVER_NAME", "x"),
                    ("DRIVER_VERSION", "1"),
                    ("APPLICATION_NAME", "a"),
                    ("CLIENT_ID", "c"),
                ]),
            )
            .await;
        assert_eq!(r, Response::Ready, "CQL_VERSION {version}");
    }
    for bad in [
        startup(&[("CQL_VERSION", "2.0.0")]),
        startup(&[("CQL_VERSION", "abc")]),
        startup(&[]),
        startup(&[("CQL_VERSION", "3.4.7"), ("COMPRESSION", "snappy")]),
    ] {
        let mut c = Client::connect(server.addr).await;
        assert_eq!(error_code(&c.request(0, bad).await), 0x000A);
    }
    server.stop().await;
}

#[tokio::test]
async fn lz4_compressed_round_trip() {
    let server = TestServer::default().await;
    let mut c = Client::connect(server.addr).await;
    c.startup(true).await;
    // The client now compresses; check the reply is compressed on the wire.
    let text = "select something from somewhere ".repeat(50);
    c.send(7, query(&text)).await;
    let frame = c.recv_frame().await.unwrap();
    assert_eq!(frame.flags & flags::COMPRESSION, flags::COMPRESSION);
    let rf = ResponseFrame::decode(&frame, Compression::Lz4, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(rf.stream, 7);
    assert_eq!(single_text(&rf.response), text);
    // Uncompressed frames stay legal after negotiation.
    c.compression = Compression::None;
    c.send(8, query("plain")).await;
    c.compression = Compression::Lz4;
    assert_eq!(single_text(&c.recv().await.response), "plain");
    // A large result compresses too.
    assert_eq!(single_text(&c.query(9, "big 200000").await).len(), 200_000);
    server.stop().await;
}

#[tokio::test]
async fn use_sets_the_connection_keyspace() {
    let server = TestServer::default().await;
    let mut a = Client::connect(server.addr).await;
    let mut b = Client::connect(server.addr).await;
    a.startup(false).await;
    b.startup(false).await;
    assert_eq!(single_text(&a.query(1, "keyspace").await), "none");
    assert_eq!(
        a.query(2, "USE ks1").await,
        Response::Result(CqlResult::SetKeyspace("ks1".into()))
    );
    assert_eq!(single_text(&a.query(3, "keyspace").await), "ks1");
    assert_eq!(single_text(&b.query(1, "keyspace").await), "none");
    server.stop().await;
}

#[tokio::test]
async fn handler_panics_become_server_errors() {
    let server = TestServer::default().await;
    let mut c = Client::connect(server.addr).await;
    c.startup(false).await;
    assert_eq!(error_code(&c.query(1, "panic").await), 0x0000);
    assert_eq!(error_code(&c.query(2, "invalid").await), 0x2200);
    assert_eq!(single_text(&c.query(3, "alive").await), "alive");
    server.stop().await;
}

#[tokio::test]
async fn prepare_execute_batch_reach_the_handler() {
    let server = TestServer::default().await;
    let mut c = Client::connect(server.addr).await;
    c.startup(false).await;
    let Response::Result(CqlResult::Prepared(p)) = c
        .request(
            1,
            Request::Prepare(Prepare {
                query: "SELECT ?".into(),
                keyspace: None,
            }),
        )
        .await
    else {
        panic!("not prepared")
    };
    assert_eq!(&p.id[..], b"SELECT ?");
    let exec = Request::Execute(Execute {
        id: p.id,
        result_metadata_id: None,
        params: QueryParameters::default(),
    });
    assert_eq!(c.request(2, exec).await, Response::void());
    let batch = Request::Batch(Batch {
        batch_type: BatchType::Unlogged,
        statements: vec![BatchStatement {
            statement: BatchStatementKind::Query("INSERT".into()),
            values: vec![Value::Null],
        }],
        consistency: Consistency::LocalQuorum,
        serial_consistency: None,
        default_timestamp: Some(42),
        keyspace: None,
        now_in_seconds: None,
    });
    assert_eq!(c.request(3, batch).await, Response::void());
    server.stop().await;
}
