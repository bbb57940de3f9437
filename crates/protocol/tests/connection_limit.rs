//! The node-wide connection limit: the (N+1)-th connection gets an
//! Overloaded error and is closed while N are open.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use gyre_protocol::*;

#[tokio::test]
async fn connection_over_the_limit_is_refused() {
    let config = ServerConfig {
        max_connections: 2,
        ..Default::default()
    };
    let server = TestServer::start(config).await;
    let mut a = Client::connect(server.addr).await;
    a.startup(false).await;
    let mut b = Client::connect(server.addr).await;
    b.startup(false).await;

    let mut c = Client::connect(server.addr).await;
    c.send(3, Request::Options).await;
    let rf = c.recv().await;
    assert_eq!(rf.stream, 3);
    assert_eq!(error_code(&rf.response), 0x1001, "Overloaded");
    assert!(c.is_closed().await);

    // The open ones are unaffected.
    assert_eq!(single_text(&a.query(1, "a").await), "a");
    assert_eq!(single_text(&b.query(1, "b").await), "b");

    // Closing one frees a slot.
    drop(a);
    let mut ok = false;
    for _ in 0..50 {
        let mut d = Client::connect(server.addr).await;
        d.send(0, Request::Options).await;
        if matches!(d.recv().await.response, Response::Supported(_)) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a slot was freed");
    server.stop().await;
}
