//! cql-compat section 1: any version but 3, 4 and 5 gets an ERROR marked 0x84 with
//! the request's stream id, code 0x000A and the text drivers look for, and
//! the connection is closed.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Buf, Bytes};
use common::*;

async fn probe(addr: std::net::SocketAddr, version: u8, opcode: u8, stream: [u8; 2]) {
    let mut c = Client::connect(addr).await;
    // A STARTUP body as the Python driver sends it; OPTIONS has none.
    let body: &[u8] = if opcode == 0x01 {
        b"\x00\x01\x00\x0bCQL_VERSION\x00\x053.4.7"
    } else {
        b""
    };
    let mut frame = vec![version, 0x00, stream[0], stream[1], opcode];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    c.send_raw(&frame).await;

    // Read the raw reply: our own decoder would reject it before STARTUP.
    let reply = c.recv_frame().await.expect("an error frame before close");
    assert_eq!(reply.version, 0x84, "version byte");
    assert_eq!(reply.flags, 0);
    assert_eq!(reply.stream.to_be_bytes(), stream, "stream id echoed");
    assert_eq!(reply.opcode, 0x00, "ERROR opcode");
    let mut body: Bytes = reply.body.clone();
    assert_eq!(body.get_i32(), 0x000A);
    let len = body.get_u16() as usize;
    let message = String::from_utf8(body[..len].to_vec()).unwrap();
    assert!(
        message.contains("unsupported protocol version"),
        "{message}"
    );
    assert_eq!(
        message,
        format!(
            "Invalid or unsupported protocol version ({}); supported versions are (3/v3, 4/v4, 5/v5)",
            version & 0x7F
        )
    );
    assert!(
        c.is_closed().await,
        "connection closed after the version error"
    );
}

#[tokio::test]
async fn other_versions_get_the_v4_error_and_a_close() {
    let server = TestServer::default().await;
    for version in [0x42u8, 0x41, 0x06, 0x02, 0x01] {
        for opcode in [0x01u8, 0x05] {
            probe(server.addr, version, opcode, [0x12, 0x34]).await;
            probe(server.addr, version, opcode, [0x00, 0x00]).await;
        }
    }
    // The Python driver then falls back to v5 (or v4), which works.
    assert_server_healthy(server.addr).await;
    server.stop().await;
}

/// v3, as Cassandra 4.0 still serves it: answers marked 0x83, PREPARED
/// without partition key indexes.
#[tokio::test]
async fn v3_is_served_as_v3() {
    let server = TestServer::default().await;
    let mut c = Client::connect(server.addr).await;
    c.version = gyre_protocol::ProtocolVersion::V3;
    c.startup(false).await;
    assert!(!c.is_framed());
    assert_eq!(single_text(&c.query(2, "hello").await), "hello");
    let r = c
        .request(
            3,
            gyre_protocol::Request::Prepare(gyre_protocol::Prepare {
                query: "SELECT ?".into(),
                keyspace: None,
            }),
        )
        .await;
    assert!(
        matches!(
            r,
            gyre_protocol::Response::Result(gyre_protocol::CqlResult::Prepared(_))
        ),
        "{r:?}"
    );
    // A v4 frame on the v3 connection is refused, the connection goes on.
    let mut rf = gyre_protocol::RequestFrame::new(4, query("x"));
    rf.version = gyre_protocol::ProtocolVersion::V4;
    c.send_raw(&rf.to_frame(gyre_protocol::Compression::None).to_bytes())
        .await;
    let reply = c.recv_frame().await.expect("an answer");
    assert_eq!(reply.opcode, 0x00, "ERROR");
    assert_eq!(single_text(&c.query(5, "still").await), "still");
    server.stop().await;
}
