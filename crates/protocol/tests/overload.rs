//! The node-wide request bound: past the execution slots and the wait
//! queue, requests are answered Overloaded (0x1001) on their own stream,
//! the connection stays usable, and the server serves normally at once
//! when the load is gone. Requests that complete on their first poll run
//! without a task.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use gyre_protocol::*;

const OVERLOADED: i32 = 0x1001;

fn limited(executing: usize, queued: usize, queue_timeout_ms: u64) -> ServerConfig {
    ServerConfig {
        max_concurrent_requests: executing,
        max_queued_requests: queued,
        queue_timeout: Duration::from_millis(queue_timeout_ms),
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn past_slots_and_queue_requests_are_overloaded_not_lost() {
    let config = limited(2, 2, 100);
    let metrics = config.metrics.clone();
    let server = TestServer::start(config).await;
    let mut c = Client::connect(server.addr).await;
    c.startup(false).await;
    // 2 execute (300 ms), 2 queue and time out after 100 ms, 6 find the
    // queue full.
    for i in 0..10i16 {
        c.send(i, query(&format!("sleep 300 t{i}"))).await;
    }
    let mut answers = HashMap::new();
    for _ in 0..10 {
        let rf = c.recv().await;
        assert!(answers.insert(rf.stream, rf.response).is_none());
    }
    let ok = answers
        .iter()
        .filter(|(s, r)| matches!(r, Response::Result(_)) && single_text(r) == format!("t{s}"))
        .count();
    let overloaded = answers
        .values()
        .filter(|r| matches!(r, Response::Error(e) if e.kind.code() == OVERLOADED))
        .count();
    assert_eq!((ok, overloaded), (2, 8), "{answers:?}");
    let m = metrics.snapshot();
    assert_eq!(m.overloaded_queue_full, 6);
    assert_eq!(m.overloaded_queue_timeout, 2);
    // The same connection works at once, and nothing is left queued.
    assert_eq!(single_text(&c.query(20, "hello").await), "hello");
    let m = metrics.snapshot();
    assert_eq!((m.executing, m.queued), (0, 0));
    assert_eq!(m.requests, 11);
    server.stop().await;
}

#[tokio::test]
async fn queued_requests_run_when_a_slot_frees_up() {
    let config = limited(1, 8, 5_000);
    let metrics = config.metrics.clone();
    let server = TestServer::start(config).await;
    let mut c = Client::connect(server.addr).await;
    c.startup(false).await;
    let started = Instant::now();
    for i in 0..4i16 {
        c.send(i, query(&format!("sleep 40 t{i}"))).await;
    }
    for _ in 0..4 {
        let rf = c.recv().await;
        assert_eq!(single_text(&rf.response), format!("t{}", rf.stream));
    }
    // One at a time.
    assert!(started.elapsed() >= Duration::from_millis(150));
    let m = metrics.snapshot();
    assert_eq!(m.overloaded(), 0);
    assert_eq!(m.queue_wait.count, 4);
    assert_eq!(m.execute.count, 4);
    // Three waited behind the first: at least 40, 80 and 120 ms.
    assert!(m.queue_wait.sum_seconds >= 0.2, "{:?}", m.queue_wait);
    server.stop().await;
}

#[tokio::test]
async fn many_connections_past_capacity_all_get_an_answer() {
    let config = limited(8, 16, 50);
    let metrics = config.metrics.clone();
    let server = TestServer::start(config).await;
    let mut tasks = Vec::new();
    for conn in 0..8 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.startup(conn % 2 == 0).await;
            for i in 0..64i16 {
                c.send(i, query(&format!("sleep 20 c{conn}s{i}"))).await;
            }
            let (mut ok, mut overloaded) = (0, 0);
            for _ in 0..64 {
                let rf = c.recv().await;
                match &rf.response {
                    Response::Error(e) => {
                        assert_eq!(e.kind.code(), OVERLOADED, "{e:?}");
                        overloaded += 1;
                    }
                    r => {
                        assert_eq!(single_text(r), format!("c{conn}s{}", rf.stream));
                        ok += 1;
                    }
                }
            }
            (ok, overloaded)
        }));
    }
    let (mut ok, mut overloaded) = (0, 0);
    for t in tasks {
        let (o, v) = t.await.unwrap();
        ok += o;
        overloaded += v;
    }
    assert_eq!(ok + overloaded, 8 * 64);
    assert!(ok >= 8, "ok {ok}, overloaded {overloaded}");
    assert!(overloaded > 0, "ok {ok}, overloaded {overloaded}");
    assert_eq!(metrics.snapshot().overloaded(), overloaded);
    assert_server_healthy(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn ready_requests_complete_inline_and_responses_are_batched() {
    let config = ServerConfig::default();
    let metrics = config.metrics.clone();
    let server = TestServer::start(config).await;
    let mut c = Client::connect(server.addr).await;
    c.startup(true).await;
    let before = metrics.snapshot();
    for i in 0..50i16 {
        c.send(i, query(&format!("echo {i}"))).await;
    }
    c.send(50, query("sleep 10 slow")).await;
    for _ in 0..51 {
        c.recv().await;
    }
    let after = metrics.snapshot();
    // The 50 echoes finish on their first poll; the sleep does not.
    assert_eq!(after.completed_inline - before.completed_inline, 50);
    assert_eq!(after.requests - before.requests, 51);
    assert_eq!(after.frames_written - before.frames_written, 51);
    assert!(after.write_batches - before.write_batches <= 51);
    assert!(after.socket_write.count >= 1);
    server.stop().await;
}
