//! Protocol v5 against the real server: negotiation (v5 without the beta
//! flag, READY as a bare envelope, frames afterwards), self-contained and
//! multi-frame payloads both ways, lz4 per frame, the v5 message fields;
//! and framing abuse (bad CRC24, bad CRC32, envelope lengths past the
//! limit, a multi-frame payload cut short, garbage): a clear ERROR where
//! the server can still speak, a closed connection, and a healthy server.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use gyre_protocol::*;
use tokio::io::AsyncWriteExt;

async fn v5_client(addr: std::net::SocketAddr, lz4: bool) -> Client {
    let mut c = Client::connect_v5(addr).await;
    // OPTIONS before STARTUP is a bare v5 envelope.
    let Response::Supported(map) = c.request(1, Request::Options).await else {
        panic!("not SUPPORTED")
    };
    assert_eq!(map["PROTOCOL_VERSIONS"], ["3/v3", "4/v4", "5/v5"]);
    c.startup(lz4).await;
    assert!(c.is_framed());
    c
}

#[tokio::test]
async fn v5_without_beta_flag_is_served_framed() {
    let server = TestServer::default().await;
    for lz4 in [false, true] {
        let mut c = v5_client(server.addr, lz4).await;
        assert_eq!(single_text(&c.query(2, "hello").await), "hello");
        // OPTIONS after STARTUP is framed too.
        assert!(matches!(
            c.request(3, Request::Options).await,
            Response::Supported(_)
        ));
        // Several envelopes in one frame, answered (maybe in one frame).
        let mut envelopes = BytesMut::new();
        for s in 10..20i16 {
            let mut rf = RequestFrame::new(s, common::query(&format!("q{s}")));
            rf.version = ProtocolVersion::V5;
            envelopes.extend_from_slice(&rf.to_frame(Compression::None).to_bytes());
        }
        let mut out = BytesMut::new();
        encode_envelope(&envelopes, lz4, &mut out);
        c.send_raw(&out).await;
        let mut seen = Vec::new();
        for _ in 10..20 {
            let rf = c.recv().await;
            assert_eq!(single_text(&rf.response), format!("q{}", rf.stream));
            seen.push(rf.stream);
        }
        seen.sort();
        assert_eq!(seen, (10..20).collect::<Vec<_>>());
    }
    assert_server_healthy(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn multi_frame_payloads_both_ways() {
    let server = TestServer::default().await;
    for lz4 in [false, true] {
        let mut c = v5_client(server.addr, lz4).await;
        // A request larger than one frame (the echo comes back as large).
        let text = format!("echo {}", "y".repeat(300_000));
        let response = c.query(2, &text).await;
        assert_eq!(single_text(&response), text);
        // A large response after small ones, in one batch.
        c.send(3, common::query("small")).await;
        c.send(4, common::query("big 400000")).await;
        c.send(5, common::query("after")).await;
        let mut got = std::collections::BTreeMap::new();
        for _ in 0..3 {
            let rf = c.recv().await;
            got.insert(rf.stream, single_text(&rf.response).len());
        }
        assert_eq!(got[&3], 5);
        assert_eq!(got[&4], 400_000);
        assert_eq!(got[&5], 5);
    }
    server.stop().await;
}

#[tokio::test]
async fn v5_message_fields_reach_the_handler() {
    let server = TestServer::default().await;
    for lz4 in [false, true] {
        v5_message_fields(&server, lz4).await;
    }
    server.stop().await;
}

async fn v5_message_fields(server: &TestServer, lz4: bool) {
    let mut c = v5_client(server.addr, lz4).await;
    let Response::Result(CqlResult::Prepared(p)) = c
        .request(
            2,
            Request::Prepare(Prepare {
                query: "SELECT ?".into(),
                keyspace: Some("ks".into()),
            }),
        )
        .await
    else {
        panic!("not prepared")
    };
    assert_eq!(&p.result_metadata_id[..], b"meta");
    let exec = Request::Execute(Execute {
        id: p.id,
        result_metadata_id: Some(p.result_metadata_id),
        params: QueryParameters {
            keyspace: Some("ignored".into()),
            now_in_seconds: Some(5),
            ..QueryParameters::default()
        },
    });
    assert_eq!(c.request(3, exec).await, Response::void());
    let batch = Request::Batch(Batch {
        batch_type: BatchType::Logged,
        statements: vec![],
        consistency: Consistency::One,
        serial_consistency: None,
        default_timestamp: None,
        keyspace: Some("ks".into()),
        now_in_seconds: Some(7),
    });
    assert_eq!(c.request(4, batch).await, Response::void());
}

#[tokio::test]
async fn v4_envelope_on_a_v5_connection_is_refused() {
    let server = TestServer::default().await;
    let mut c = Client::connect_v5(server.addr).await;
    c.startup(false).await;
    // A v4 envelope inside a valid frame: answered, connection kept.
    let envelope = RequestFrame::new(2, common::query("x"))
        .to_frame(Compression::None)
        .to_bytes();
    let mut out = BytesMut::new();
    encode_envelope(&envelope, false, &mut out);
    c.send_raw(&out).await;
    let rf = c.recv().await;
    assert_eq!(error_code(&rf.response), 0x000A);
    assert_eq!(single_text(&c.query(3, "still").await), "still");
    server.stop().await;
}

/// Sends `bytes` on a fresh framed connection; expects a protocol ERROR
/// containing `needle` (when given) and then a close.
async fn abuse(server: &TestServer, lz4: bool, bytes: &[u8], needle: Option<&str>) {
    let mut c = v5_client(server.addr, lz4).await;
    c.send_raw(bytes).await;
    if let Some(needle) = needle {
        let rf = c.recv().await;
        let Response::Error(e) = &rf.response else {
            panic!("expected an error, got {:?}", rf.response)
        };
        assert_eq!(e.kind.code(), 0x000A, "{e}");
        assert!(e.message.contains(needle), "{e}");
    }
    assert!(c.is_closed().await, "connection closed");
}

fn framed_query(lz4: bool, stream: i16, text: &str) -> BytesMut {
    let mut rf = RequestFrame::new(stream, common::query(text));
    rf.version = ProtocolVersion::V5;
    let mut out = BytesMut::new();
    encode_envelope(&rf.to_frame(Compression::None).to_bytes(), lz4, &mut out);
    out
}

#[tokio::test]
async fn corrupt_frames_get_an_error_and_a_close() {
    let server = TestServer::default().await;
    for lz4 in [false, true] {
        let hlen = if lz4 { 5 } else { 3 };
        // Bad CRC24: a flipped bit in the header, or in the CRC itself.
        let mut bad = framed_query(lz4, 2, "x");
        bad[0] ^= 0x01;
        abuse(&server, lz4, &bad, Some("CRC24 mismatch")).await;
        let mut bad = framed_query(lz4, 2, "x");
        bad[hlen] ^= 0x80;
        abuse(&server, lz4, &bad, Some("CRC24 mismatch")).await;
        // Bad CRC32: a flipped bit in the payload, or in the trailer.
        let mut bad = framed_query(lz4, 2, "some query text");
        bad[hlen + 3 + 2] ^= 0x10;
        abuse(&server, lz4, &bad, Some("CRC32 mismatch")).await;
        let mut bad = framed_query(lz4, 2, "x");
        let last = bad.len() - 1;
        bad[last] ^= 0xFF;
        abuse(&server, lz4, &bad, Some("CRC32 mismatch")).await;
        // Garbage after a valid frame: the valid one is answered first.
        let mut c = v5_client(server.addr, lz4).await;
        let mut bytes = framed_query(lz4, 2, "first");
        bytes.extend_from_slice(b"\xde\xad\xbe\xef garbage that is no frame at all");
        c.send_raw(&bytes).await;
        assert_eq!(single_text(&c.recv().await.response), "first");
        let rf = c.recv().await;
        assert_eq!(error_code(&rf.response), 0x000A);
        assert!(c.is_closed().await);
    }
    // An lz4 frame whose compressed payload does not inflate.
    let mut payload = BytesMut::new();
    payload.put_slice(&[0xFF; 40]);
    let mut bad = BytesMut::new();
    let header: u64 = 40 | (100 << 17) | (1 << 34);
    bad.put_slice(&header.to_le_bytes()[..5]);
    bad.put_slice(&crc24(&bad[..5]).to_le_bytes()[..3]);
    bad.put_slice(&payload);
    bad.put_u32_le(crc32(&payload));
    abuse(&server, true, &bad, Some("lz4")).await;
    assert_server_healthy(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn envelope_lengths_past_the_limit_are_refused() {
    let server = TestServer::start(ServerConfig {
        max_frame_bytes: 4096,
        ..ServerConfig::default()
    })
    .await;
    for lz4 in [false, true] {
        // One self-contained frame announcing a 1 MiB envelope.
        let mut envelope = vec![0x05, 0, 0, 9, 0x07];
        envelope.extend_from_slice(&(1u32 << 20).to_be_bytes());
        envelope.extend_from_slice(&[0; 100]);
        let mut out = BytesMut::new();
        encode_segment(&envelope, true, lz4, &mut out);
        abuse(&server, lz4, &out, Some("exceeds the limit")).await;
        // The same announced in the first of several frames: refused before
        // the rest is accumulated.
        let mut out = BytesMut::new();
        encode_segment(&envelope, false, lz4, &mut out);
        abuse(&server, lz4, &out, Some("exceeds the limit")).await;
        // A negative envelope length.
        let mut envelope = vec![0x05, 0, 0, 9, 0x07, 0xFF, 0xFF, 0xFF, 0xFF];
        envelope.extend_from_slice(&[0; 8]);
        let mut out = BytesMut::new();
        encode_segment(&envelope, true, lz4, &mut out);
        abuse(&server, lz4, &out, Some("exceeds the limit")).await;
        // A self-contained frame that ends inside its envelope.
        let mut envelope = vec![0x05, 0, 0, 9, 0x07, 0, 0, 0, 50];
        envelope.extend_from_slice(&[0; 8]);
        let mut out = BytesMut::new();
        encode_segment(&envelope, true, lz4, &mut out);
        abuse(&server, lz4, &out, Some("ends inside an envelope")).await;
    }
    assert_server_healthy(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn multi_frame_payload_cut_short() {
    let server = TestServer::default().await;
    for lz4 in [false, true] {
        // The first of three frames of a large query, then EOF: the server
        // closes without answering (there is no request to answer).
        let text = format!("echo {}", "z".repeat(300_000));
        let mut rf = RequestFrame::new(2, common::query(&text));
        rf.version = ProtocolVersion::V5;
        let envelope = rf.to_frame(Compression::None).to_bytes();
        let mut first = BytesMut::new();
        encode_segment(&envelope[..MAX_PAYLOAD], false, lz4, &mut first);
        let mut c = v5_client(server.addr, lz4).await;
        c.send_raw(&first).await;
        c.socket.shutdown().await.unwrap();
        assert!(c.is_closed().await);
        // The first frame, then a self-contained frame: an error.
        let mut bytes = first.clone();
        bytes.extend_from_slice(&framed_query(lz4, 3, "interloper"));
        abuse(&server, lz4, &bytes, Some("inside a multi-frame envelope")).await;
        // A frame cut in its payload, then EOF.
        let full = framed_query(lz4, 2, "a query that is cut");
        let mut c = v5_client(server.addr, lz4).await;
        c.send_raw(&full[..full.len() - 6]).await;
        c.socket.shutdown().await.unwrap();
        assert!(c.is_closed().await);
    }
    assert_server_healthy(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn random_bytes_after_startup_never_hurt_the_server() {
    let server = TestServer::default().await;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..40 {
        let mut bytes = Vec::new();
        for _ in 0..(16 + round * 37) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8);
        }
        let lz4 = round % 2 == 0;
        let mut c = v5_client(server.addr, lz4).await;
        c.send_raw(&bytes).await;
        let _ = c.socket.shutdown().await;
        assert!(c.is_closed().await);
    }
    // Random bytes that carry valid frame headers (so the payload CRC is
    // what catches them).
    for round in 0..20u8 {
        let lz4 = round % 2 == 1;
        let mut payload = Bytes::from(vec![round; 64]).to_vec();
        payload[0] = 0x05;
        let mut out = BytesMut::new();
        encode_segment(&payload, true, lz4, &mut out);
        let mut c = v5_client(server.addr, lz4).await;
        c.send_raw(&out).await;
        assert!(c.is_closed().await);
    }
    assert_server_healthy(server.addr).await;
    server.stop().await;
}
