//! Requests on different streams run concurrently and are answered out of
//! order, each with its own stream id; the in-flight bound only delays.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::*;
use gyre_protocol::*;

#[tokio::test]
async fn hundred_streams_answered_in_reverse() {
    let server = TestServer::default().await;
    let mut c = Client::connect(server.addr).await;
    c.startup(false).await;
    // Later requests sleep less, so they finish first.
    for i in 0..100i16 {
        c.send(i, query(&format!("sleep {} tag{i}", (100 - i) * 3)))
            .await;
    }
    let mut order = Vec::new();
    for _ in 0..100 {
        let rf = c.recv().await;
        assert_eq!(single_text(&rf.response), format!("tag{}", rf.stream));
        order.push(rf.stream);
    }
    let unique: HashSet<i16> = order.iter().copied().collect();
    assert_eq!(unique.len(), 100);
    // Out of order: the last request sent is answered well before the first.
    let pos = |s: i16| order.iter().position(|&x| x == s).unwrap();
    assert!(pos(99) < pos(0), "order was {order:?}");
    server.stop().await;
}

#[tokio::test]
async fn in_flight_bound_applies_back_pressure_without_losing_requests() {
    let config = ServerConfig {
        max_in_flight_per_connection: 2,
        write_queue_frames: 2,
        ..Default::default()
    };
    let server = TestServer::start(config).await;
    let mut c = Client::connect(server.addr).await;
    c.startup(false).await;
    let start = std::time::Instant::now();
    for i in 0..8i16 {
        c.send(i, query(&format!("sleep 50 t{i}"))).await;
    }
    let mut seen = HashSet::new();
    for _ in 0..8 {
        let rf = c.recv().await;
        assert_eq!(single_text(&rf.response), format!("t{}", rf.stream));
        seen.insert(rf.stream);
    }
    assert_eq!(seen.len(), 8);
    // Two at a time: at least four rounds of 50 ms.
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(190),
        "{:?}",
        start.elapsed()
    );
    server.stop().await;
}
