//! Malformed input gets a Protocol error where the stream is known, or a
//! close; it never takes the server or other connections down.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gyre_protocol::*;
use tokio::io::AsyncWriteExt;

fn raw(version: u8, flags: u8, stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![version, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.push(opcode);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

#[tokio::test]
async fn bad_bodies_are_answered_and_the_connection_goes_on() {
    let server = TestServer::default().await;
    let mut c = Client::connect(server.addr).await;
    c.startup(false).await;
    let cases: Vec<(i16, Vec<u8>)> = vec![
        // Unknown opcode 0x04.
        (11, raw(4, 0, 11, 0x04, b"")),
        // A response opcode sent as a request.
        (12, raw(4, 0, 12, 0x02, b"")),
        // QUERY whose long string claims more bytes than the body has.
        (13, raw(4, 0, 13, 0x07, &[0, 0, 0, 50, b'x'])),
        // QUERY with an unknown consistency.
        (14, raw(4, 0, 14, 0x07, &[0, 0, 0, 1, b'x', 0, 0x20, 0])),
        // Compressed flag without negotiated compression.
        (15, raw(4, 0x01, 15, 0x07, &[0, 0, 0, 1, b'x'])),
        // Response direction bit on a request.
        (16, raw(0x84, 0, 16, 0x05, b"")),
        // REGISTER for an unknown event.
        (17, raw(4, 0, 17, 0x0B, &[0, 1, 0, 3, b'F', b'O', b'O'])),
        // EXECUTE with a truncated id.
        (18, raw(4, 0, 18, 0x0A, &[0, 9, 1])),
        // Custom payload flag with a garbage map.
        (19, raw(4, 0x04, 19, 0x07, &[0xFF, 0xFF])),
    ];
    for (stream, bytes) in cases {
        c.send_raw(&bytes).await;
        let rf = c.recv().await;
        assert_eq!(rf.stream, stream);
        assert_eq!(
            error_code(&rf.response),
            0x000A,
            "stream {stream}: {:?}",
            rf.response
        );
    }
    // Unsupported flags (tracing, warning bit, unknown high bits) are ignored.
    c.send_raw(&raw(4, 0x02 | 0x08 | 0x80, 20, 0x05, b"")).await;
    let rf = c.recv().await;
    assert_eq!(rf.stream, 20);
    assert!(matches!(rf.response, Response::Supported(_)));
    assert_eq!(single_text(&c.query(21, "still fine").await), "still fine");
    server.stop().await;
}

#[tokio::test]
async fn oversized_frame_gets_an_error_then_close() {
    let config = ServerConfig {
        max_frame_bytes: 1024,
        ..Default::default()
    };
    let server = TestServer::start(config).await;
    let mut c = Client::connect(server.addr).await;
    c.startup(false).await;
    let mut header = raw(4, 0, 33, 0x07, b"");
    header[5..9].copy_from_slice(&(10_000u32).to_be_bytes());
    c.send_raw(&header).await;
    let rf = c.recv().await;
    assert_eq!(rf.stream, 33);
    assert_eq!(error_code(&rf.response), 0x000A);
    assert!(c.is_closed().await);
    // Negative length too.
    let mut c = Client::connect(server.addr).await;
    let mut header = raw(4, 0, 34, 0x05, b"");
    header[5..9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    c.send_raw(&header).await;
    assert_eq!(error_code(&c.recv().await.response), 0x000A);
    assert!(c.is_closed().await);
    assert_server_healthy(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn lz4_bomb_is_refused() {
    let config = ServerConfig {
        max_frame_bytes: 4096,
        ..Default::default()
    };
    let server = TestServer::start(config).await;
    let mut c = Client::connect(server.addr).await;
    c.startup(true).await;
    // Claims to inflate to 1 GiB.
    let mut body = vec![0x40, 0, 0, 0];
    body.extend_from_slice(&lz4_compress(b"hello")[4..]);
    c.send_raw(&raw(4, 0x01, 40, 0x07, &body)).await;
    let rf = c.recv().await;
    assert_eq!(rf.stream, 40);
    assert_eq!(error_code(&rf.response), 0x000A);
    // Garbage lz4 block.
    c.send_raw(&raw(4, 0x01, 41, 0x07, &[0, 0, 0, 10, 0xFF, 0xFF, 0xFF]))
        .await;
    assert_eq!(error_code(&c.recv().await.response), 0x000A);
    assert_eq!(single_text(&c.query(42, "ok").await), "ok");
    server.stop().await;
}

#[tokio::test]
async fn garbage_and_truncated_frames_close_only_their_connection() {
    let server = TestServer::default().await;
    let mut bystander = Client::connect(server.addr).await;
    bystander.startup(false).await;

    // HTTP on the CQL port: 'G' is not a version.
    let mut c = Client::connect(server.addr).await;
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let frame = c.recv_frame().await.unwrap();
    assert_eq!(frame.version, 0x84);
    assert!(c.is_closed().await);

    // A truncated body followed by the client closing its side.
    let mut c = Client::connect(server.addr).await;
    let mut f = raw(4, 0, 1, 0x07, &[0; 100]);
    f.truncate(50);
    c.send_raw(&f).await;
    c.socket.shutdown().await.unwrap();
    assert!(c.is_closed().await);

    // A lone partial header, then a close.
    let mut c = Client::connect(server.addr).await;
    c.send_raw(&[4, 0]).await;
    c.socket.shutdown().await.unwrap();
    assert!(c.is_closed().await);

    assert_eq!(
        single_text(&bystander.query(9, "unaffected").await),
        "unaffected"
    );
    assert_server_healthy(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn fuzz_corpus_against_a_live_server() {
    let server = TestServer::default().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let mut c = Client::connect(server.addr).await;
        c.startup(false).await;
        c.send_raw(&bytes).await;
        c.socket.shutdown().await.unwrap();
        // Whatever the server answers, it must finish the connection.
        assert!(c.is_closed().await, "{}", path.display());
    }
    assert_server_healthy(server.addr).await;
    server.stop().await;
}
