//! REGISTER and server-pushed EVENT frames on stream -1.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use gyre_protocol::*;

#[tokio::test]
async fn registered_connections_receive_their_events_on_stream_minus_one() {
    let server = TestServer::default().await;
    let mut listener = Client::connect(server.addr).await;
    listener.startup(true).await;
    let register = Request::Register(vec![EventType::SchemaChange, EventType::StatusChange]);
    assert_eq!(listener.request(1, register).await, Response::Ready);

    let mut other = Client::connect(server.addr).await;
    other.startup(false).await;

    let addr = "127.0.0.2:9042".parse().unwrap();
    // Not registered for topology: must not arrive.
    server.events.send(Event::TopologyChange {
        change: TopologyChangeType::NewNode,
        addr,
    });
    let schema = Event::SchemaChange(SchemaChange {
        change: SchemaChangeType::Created,
        target: SchemaChangeTarget::Table {
            keyspace: "ks".into(),
            name: "t".into(),
        },
    });
    assert!(server.events.send(schema.clone()) >= 1);
    let status = Event::StatusChange {
        change: StatusChangeType::Down,
        addr,
    };
    server.events.send(status.clone());

    let rf = listener.recv().await;
    assert_eq!(rf.stream, -1);
    assert_eq!(rf.response, Response::Event(schema));
    let rf = listener.recv().await;
    assert_eq!(rf.stream, -1);
    assert_eq!(rf.response, Response::Event(status));

    // Requests keep working alongside events.
    assert_eq!(single_text(&listener.query(2, "after").await), "after");

    // The unregistered connection got nothing: its next frame is its reply.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(single_text(&other.query(5, "quiet").await), "quiet");
    server.stop().await;
}
