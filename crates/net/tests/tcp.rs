//! Messaging over real loopback TCP. Every test uses its own 127.0.x.y addresses.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gyre_net::{
    encode_frame, ConnectionClass, Error, FaultRules, Frame, FrameKind, Handshake, Inbound,
    Messenger, NetConfig, Priority, Verb, FRAME_HEADER_LEN, PROTOCOL_VERSION,
};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ECHO: Verb = Verb(1);
const WHO: Verb = Verb(2);
const HOLD: Verb = Verb(3);
const BULK: Verb = Verb(4);
const T: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(300);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config(a: SocketAddr) -> NetConfig {
    let mut c = NetConfig::new(a);
    c.reconnect_backoff_min = Duration::from_millis(10);
    c.reconnect_backoff_max = Duration::from_millis(200);
    c
}

/// A node with ECHO (payload back) and WHO (the sender's address back) handlers.
async fn node(listen: &str) -> Messenger {
    serve(Messenger::bind_tcp(config(addr(listen))).await.unwrap())
}

fn serve(m: Messenger) -> Messenger {
    m.register(ECHO, |msg: Inbound| {
        let _ = msg.responder.unwrap().respond(msg.payload);
    });
    m.register(WHO, |msg: Inbound| {
        let _ = msg
            .responder
            .unwrap()
            .respond(Bytes::from(msg.from.to_string()));
    });
    m
}

/// Polls `f` until it returns `Some`, failing the test after `deadline`.
async fn eventually<T, F, Fut>(deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "condition not reached within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_between_three_nodes() {
    let nodes = [
        node("127.0.1.1:0").await,
        node("127.0.1.2:0").await,
        node("127.0.1.3:0").await,
    ];
    let mut oneways = nodes[0].register_channel(Verb(9), 16);
    for from in &nodes {
        for to in &nodes {
            let reply = from
                .request(to.local_addr(), ECHO, Bytes::from("ping"), T)
                .await
                .unwrap();
            assert_eq!(reply, "ping");
            // The receiver sees the sender's listen address, not an ephemeral port on 127.0.0.1.
            let who = from
                .request(to.local_addr(), WHO, Bytes::new(), T)
                .await
                .unwrap();
            assert_eq!(who, from.local_addr().to_string());
        }
    }
    nodes[2]
        .send_oneway(nodes[0].local_addr(), Verb(9), Bytes::from("hello"))
        .unwrap();
    let got = tokio::time::timeout(T, oneways.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.from, &got.payload[..]),
        (nodes[2].local_addr(), &b"hello"[..])
    );
    assert!(got.responder.is_none());

    let stats = nodes[0].stats();
    let echo = stats.verb(ECHO);
    assert_eq!(echo.completed, 3);
    assert!(echo.sent >= 3 && echo.received >= 3, "{echo:?}");
    assert!(echo.latency_total_micros > 0 && echo.mean_latency().is_some());
    assert_eq!(stats.pending_requests, 0);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_responses_are_matched() {
    let a = node("127.0.2.1:0").await;
    let b = node("127.0.2.2:0").await;
    let mut held = b.register_channel(HOLD, 16);
    // Answer the three requests in reverse arrival order.
    tokio::spawn(async move {
        let mut msgs = Vec::new();
        while msgs.len() < 3 {
            msgs.push(held.recv().await.unwrap());
        }
        for m in msgs.into_iter().rev() {
            let reply = [&m.payload[..], b"-done"].concat();
            m.responder.unwrap().respond(Bytes::from(reply)).unwrap();
        }
    });
    let to = b.local_addr();
    let (x, y, z) = tokio::join!(
        a.request(to, HOLD, Bytes::from("x"), T),
        a.request(to, HOLD, Bytes::from("y"), T),
        a.request(to, HOLD, Bytes::from("z"), T),
    );
    assert_eq!(
        (x.unwrap(), y.unwrap(), z.unwrap()),
        ("x-done".into(), "y-done".into(), "z-done".into())
    );

    // Many concurrent requests over one connection all find their own answer.
    let futs = (0..200).map(|i| {
        let a = a.clone();
        async move {
            a.request(to, ECHO, Bytes::from(i.to_string()), T)
                .await
                .unwrap()
                == i.to_string()
        }
    });
    assert!(futures_all(futs).await);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_sizes_pipelined_on_one_connection_arrive_intact() {
    let a = node("127.0.12.1:0").await;
    let b = node("127.0.12.2:0").await;
    let to = b.local_addr();
    // Small frames are copied into the write buffer, those above 16 KiB are
    // written from their own buffer in the same vectored write; all stay on
    // the small-message connection (below the 64 KiB large threshold).
    let sizes = [0usize, 7, 16 * 1024, 16 * 1024 + 1, 40_000, 3, 60_000, 100];
    let futs = (0..400).map(|i| {
        let a = a.clone();
        let size = sizes[i % sizes.len()];
        let payload = Bytes::from((0..size).map(|j| (i * 31 + j) as u8).collect::<Vec<_>>());
        async move { a.request(to, ECHO, payload.clone(), T).await.unwrap() == payload }
    });
    assert!(futures_all(futs).await);
    let stats = a.stats();
    assert_eq!(stats.transport.connections_opened, 1);
    assert_eq!(stats.pending_requests, 0);
    a.shutdown().await;
    b.shutdown().await;
}

async fn futures_all(
    futs: impl Iterator<Item = impl std::future::Future<Output = bool> + Send + 'static>,
) -> bool {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut ok = true;
    for h in handles {
        ok &= h.await.unwrap();
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_errors_and_limits() {
    let a = node("127.0.3.1:0").await;
    let b = node("127.0.3.2:0").await;
    let parked = Arc::new(Mutex::new(Vec::new()));
    let p = parked.clone();
    // Keep the responder alive without answering.
    b.register(HOLD, move |m: Inbound| p.lock().push(m));
    let to = b.local_addr();

    let start = Instant::now();
    let err = a
        .request(to, HOLD, Bytes::from("x"), SHORT)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(start.elapsed() >= SHORT);
    assert_eq!(a.stats().verb(HOLD).timeouts, 1);
    assert_eq!(a.stats().pending_requests, 0);
    // The late answer is ignored.
    eventually(T, || async { (parked.lock().len() == 1).then_some(()) }).await;
    let late = parked.lock().pop().unwrap();
    late.responder
        .unwrap()
        .respond(Bytes::from("late"))
        .unwrap();

    // A handler that drops the responder, and a verb without handler, fail fast.
    b.register(Verb(7), |m: Inbound| drop(m));
    let err = a.request(to, Verb(7), Bytes::new(), T).await.unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err}");
    let err = a.request(to, Verb(99), Bytes::new(), T).await.unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err}");
    assert_eq!(a.stats().verb(Verb(99)).remote_errors, 1);

    // Nobody listens there: the request times out.
    let err = a
        .request(addr("127.0.3.9:9"), ECHO, Bytes::new(), SHORT)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");

    // Too big for a frame.
    let huge = Bytes::from(vec![0u8; gyre_net::DEFAULT_MAX_FRAME_SIZE]);
    let err = a.request(to, ECHO, huge, T).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_send_queue_fails_fast_and_counts() {
    let mut cfg = config(addr("127.0.4.1:0"));
    cfg.queue_capacity = 4;
    let a = Messenger::bind_tcp(cfg).await.unwrap();
    // Nothing listens at the peer, so nothing leaves the queue.
    let dead = addr("127.0.4.9:9");
    let results: Vec<_> = (0..10)
        .map(|_| a.send_oneway(dead, ECHO, Bytes::from("x")))
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    assert!(results
        .iter()
        .skip(4)
        .all(|r| matches!(r, Err(Error::QueueFull { .. }))));
    let stats = a.stats();
    assert_eq!(stats.transport.queue_full, 6);
    assert_eq!(stats.verb(ECHO).dropped, 6);
    // Other classes have their own queue.
    a.send_oneway_with(dead, ECHO, Bytes::from("x"), Priority::Urgent)
        .unwrap();
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_peer_restart() {
    let a = node("127.0.5.1:0").await;
    let b = node("127.0.5.2:0").await;
    let b_addr = b.local_addr();
    assert_eq!(
        a.request(b_addr, ECHO, Bytes::from("1"), T).await.unwrap(),
        "1"
    );
    let old_id = a.peer_host_id(b_addr).expect("host id from handshake");
    b.shutdown().await;
    drop(b);

    let err = a
        .request(b_addr, ECHO, Bytes::from("2"), SHORT)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");

    // Same address, new process state (new host id).
    let b2 = node(&b_addr.to_string()).await;
    let reply = eventually(T, || async {
        a.request(b_addr, ECHO, Bytes::from("3"), SHORT).await.ok()
    })
    .await;
    assert_eq!(reply, "3");
    let new_id = a.peer_host_id(b_addr).expect("host id from handshake");
    assert_ne!(old_id, new_id);
    // And the restarted node can reach back.
    assert_eq!(
        b2.request(a.local_addr(), ECHO, Bytes::from("4"), T)
            .await
            .unwrap(),
        "4"
    );
    let t = a.stats().transport;
    // Whether a connect attempt failed while b was down depends on when a noticed the close.
    assert!(t.connections_opened >= 2, "{t:?}");
    a.shutdown().await;
    b2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_payloads_do_not_block_small_messages() {
    let a = node("127.0.6.1:0").await;
    let b = node("127.0.6.2:0").await;
    b.register(BULK, |m: Inbound| {
        let _ = m
            .responder
            .unwrap()
            .respond(Bytes::from(m.payload.len().to_string()));
    });
    let to = b.local_addr();
    let order = Arc::new(Mutex::new(Vec::new()));
    let big = Bytes::from(vec![7u8; 8 << 20]);
    let mut bulk_tasks = Vec::new();
    for i in 0..3 {
        let (a, big, order) = (a.clone(), big.clone(), order.clone());
        bulk_tasks.push(tokio::spawn(async move {
            let r = a
                .request_with(to, BULK, big, Duration::from_secs(20), Priority::Bulk)
                .await;
            order.lock().push(format!("bulk{i}"));
            r
        }));
    }
    // Wait until all three big requests are queued on the wire, then send a small one.
    eventually(T, || async {
        (a.stats().verb(BULK).sent == 3).then_some(())
    })
    .await;
    assert_eq!(
        a.request(to, ECHO, Bytes::from("small"), T).await.unwrap(),
        "small"
    );
    order.lock().push("small".to_string());
    for t in bulk_tasks {
        assert_eq!(t.await.unwrap().unwrap(), (8 << 20).to_string());
    }
    let order = order.lock().clone();
    // On a single FIFO connection the small request would finish after 24 MiB of bulk data.
    assert_eq!(
        order.iter().position(|s| s == "small"),
        Some(0),
        "{order:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rules_on_tcp() {
    let a = node("127.0.7.1:0").await;
    let b = node("127.0.7.2:0").await;
    let c = node("127.0.7.3:0").await;
    let (aa, ba, ca) = (a.local_addr(), b.local_addr(), c.local_addr());
    assert!(a.request(ba, ECHO, Bytes::new(), T).await.is_ok());

    // Partition a from b, as the admin endpoint would set it.
    let json = format!(r#"{{"peers": {{"{ba}": {{"drop_all": true}}}}}}"#);
    a.set_faults(serde_json::from_str(&json).unwrap()).unwrap();
    assert!(matches!(
        a.request(ba, ECHO, Bytes::new(), SHORT).await,
        Err(Error::Timeout { .. })
    ));
    // Incoming from b is dropped at a too.
    assert!(matches!(
        b.request(aa, ECHO, Bytes::new(), SHORT).await,
        Err(Error::Timeout { .. })
    ));
    assert!(a.request(ca, ECHO, Bytes::new(), T).await.is_ok());
    assert!(a.stats().verb(ECHO).dropped >= 2);

    a.clear_faults();
    assert!(a.request(ba, ECHO, Bytes::new(), T).await.is_ok());
    assert!(b.request(aa, ECHO, Bytes::new(), T).await.is_ok());

    a.set_faults(
        FaultRules::default()
            .with_drop_probability(1.0)
            .with_seed(1),
    )
    .unwrap();
    assert!(matches!(
        a.request(ca, ECHO, Bytes::new(), SHORT).await,
        Err(Error::Timeout { .. })
    ));

    let delay = Duration::from_millis(100);
    a.set_faults(FaultRules::default().with_extra_latency(delay))
        .unwrap();
    let start = Instant::now();
    assert!(a.request(ca, ECHO, Bytes::new(), T).await.is_ok());
    // Delayed on the way out and on the way back in.
    assert!(start.elapsed() >= delay * 2, "{:?}", start.elapsed());
    assert!(a
        .set_faults(FaultRules::default().with_drop_probability(2.0))
        .is_err());
    a.clear_faults();
    assert_eq!(a.faults(), FaultRules::default());
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// Writes `bytes` on a fresh connection and expects the node to close it.
async fn expect_closed(to: SocketAddr, handshake_first: bool, bytes: &[u8]) {
    let mut s = TcpStream::connect(to).await.unwrap();
    if handshake_first {
        let hs = Handshake {
            host_id: uuid::Uuid::new_v4(),
            addr: addr("127.0.8.77:7000"),
            class: ConnectionClass::Small,
            cluster: String::new(),
        };
        let mut buf = BytesMut::new();
        encode_frame(&handshake(hs), &mut buf);
        s.write_all(&buf).await.unwrap();
    }
    s.write_all(bytes).await.unwrap();
    let mut sink = Vec::new();
    // EOF (or a reset) within the deadline; a handshake reply may come first.
    let r = tokio::time::timeout(T, s.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "connection was not closed");
}

fn handshake(hs: Handshake) -> Frame {
    Frame {
        kind: FrameKind::Handshake,
        flags: 0,
        verb: Verb(0),
        id: 0,
        timeout: None,
        payload: hs.encode(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_that_connection() {
    let a = node("127.0.8.1:0").await;
    let b = node("127.0.8.2:0").await;
    let to = b.local_addr();
    assert!(a.request(to, ECHO, Bytes::new(), T).await.is_ok());

    let request = Frame {
        kind: FrameKind::Request,
        flags: 0,
        verb: ECHO,
        id: 1,
        timeout: Some(Duration::from_secs(1)),
        payload: Bytes::from("hello"),
    };
    let mut bad_crc = BytesMut::new();
    encode_frame(&request, &mut bad_crc);
    bad_crc[FRAME_HEADER_LEN] ^= 0x55;
    let mut bad_version = BytesMut::new();
    encode_frame(&request, &mut bad_version);
    bad_version[4] = PROTOCOL_VERSION + 1;

    expect_closed(to, false, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    expect_closed(to, false, &[0xff, 0xff, 0xff, 0xff, PROTOCOL_VERSION, 0, 0]).await;
    expect_closed(to, false, &bad_version).await;
    expect_closed(to, true, &bad_crc).await;
    expect_closed(to, true, &[0x7f, 0xff, 0xff, 0xff]).await;
    // A request before any handshake.
    let mut early = BytesMut::new();
    encode_frame(&request, &mut early);
    expect_closed(to, false, &early).await;

    eventually(T, || async {
        (b.stats().transport.protocol_errors >= 6).then_some(())
    })
    .await;
    // The node keeps serving its real peers, on the existing and on new connections.
    assert!(a.request(to, ECHO, Bytes::new(), T).await.is_ok());
    let c = node("127.0.8.3:0").await;
    assert!(c.request(to, ECHO, Bytes::new(), T).await.is_ok());
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// A request frame carries the time its requester still waits; the
/// receiver sees it as a deadline on its own clock. A request delayed past
/// it arrives expired; one-way messages have none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carry_their_deadline() {
    const SEEN: Verb = Verb(20);
    const ABANDON: Verb = Verb(21);
    let a = node("127.0.13.1:0").await;
    let b = node("127.0.13.2:0").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let held = Arc::new(());
    let h = held.clone();
    b.register(SEEN, move |msg: Inbound| {
        let _ = tx.send((msg.deadline, msg.is_expired()));
        if let Some(mut r) = msg.responder {
            r.hold(h.clone());
            let _ = r.respond(Bytes::new());
        }
    });
    b.register(ABANDON, |msg: Inbound| {
        if let Some(r) = msg.responder {
            r.abandon();
        }
    });
    let sent = Instant::now();
    a.request(b.local_addr(), SEEN, Bytes::new(), Duration::from_secs(2))
        .await
        .unwrap();
    let (deadline, expired) = rx.recv().await.unwrap();
    let deadline = deadline.expect("a request has a deadline");
    assert!(!expired);
    let expected = sent + Duration::from_secs(2);
    // Off by the transit time (same clock here) and the microsecond cut.
    assert!(
        deadline + Duration::from_millis(1) >= expected
            && deadline <= expected + Duration::from_millis(500),
        "deadline {:?} vs expected {:?}",
        deadline.saturating_duration_since(sent),
        expected - sent
    );
    // What the responder held is released once it answered (the handler
    // keeps one more reference).
    eventually(T, || async {
        (Arc::strong_count(&held) == 2).then_some(())
    })
    .await;

    a.send_oneway(b.local_addr(), SEEN, Bytes::new()).unwrap();
    let (deadline, expired) = rx.recv().await.unwrap();
    assert_eq!((deadline, expired), (None, false));

    // Delayed on arrival past its timeout: the handler sees it expired.
    b.set_faults(FaultRules::default().with_extra_latency(Duration::from_millis(300)))
        .unwrap();
    let r = a
        .request(
            b.local_addr(),
            SEEN,
            Bytes::new(),
            Duration::from_millis(100),
        )
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    let (deadline, expired) = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    assert!(deadline.is_some() && expired);
    b.clear_faults();

    // An abandoned request gets no answer at all (not even an error).
    let r = a
        .request(b.local_addr(), ABANDON, Bytes::new(), SHORT)
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// A raw connection from `from` that handshakes as `claimed` of `cluster`
/// and sends an ECHO request, then waits for the node to close it or the
/// deadline.
async fn raw_echo(to: SocketAddr, from: &str, claimed: &str, cluster: &str) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(addr(&format!("{from}:0"))).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    let hs = Handshake {
        host_id: uuid::Uuid::new_v4(),
        addr: addr(claimed),
        class: ConnectionClass::Small,
        cluster: cluster.into(),
    };
    let mut buf = BytesMut::new();
    encode_frame(&handshake(hs), &mut buf);
    encode_frame(
        &Frame {
            kind: FrameKind::Request,
            flags: 0,
            verb: ECHO,
            id: 7,
            timeout: Some(Duration::from_secs(1)),
            payload: Bytes::from("forged"),
        },
        &mut buf,
    );
    s.write_all(&buf).await.unwrap();
    // A refused connection is closed; an admitted one stays open (replies
    // go on connections the node opens), so this waits out SHORT.
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(SHORT, s.read_to_end(&mut sink)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_must_speak_from_their_address_and_cluster() {
    let mut cfg = config(addr("127.0.8.31:0"));
    cfg.cluster_name = "alpha".into();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let n = Messenger::bind_tcp(cfg).await.unwrap();
    let log = seen.clone();
    n.register(ECHO, move |msg: Inbound| {
        log.lock().push(msg.from);
    });
    let to = n.local_addr();

    // Claims another node's address: refused, nothing delivered.
    raw_echo(to, "127.0.8.32", "127.0.8.33:7000", "alpha").await;
    // Its own address, another cluster: refused.
    raw_echo(to, "127.0.8.34", "127.0.8.34:7000", "beta").await;
    eventually(T, || async {
        (n.stats().transport.protocol_errors >= 2).then_some(())
    })
    .await;
    assert!(
        seen.lock().is_empty(),
        "forged messages were delivered: {:?}",
        seen.lock()
    );

    // The honest form of the same connection is admitted and delivered.
    raw_echo(to, "127.0.8.35", "127.0.8.35:7000", "alpha").await;
    eventually(T, || async { (!seen.lock().is_empty()).then_some(()) }).await;
    assert_eq!(seen.lock()[0], addr("127.0.8.35:7000"));

    // Real messengers of the cluster talk; one of another cluster cannot.
    let mut good = config(addr("127.0.8.36:0"));
    good.cluster_name = "alpha".into();
    let good = serve(Messenger::bind_tcp(good).await.unwrap());
    let mut other = config(addr("127.0.8.37:0"));
    other.cluster_name = "beta".into();
    let other = serve(Messenger::bind_tcp(other).await.unwrap());
    let mut alpha2 = config(addr("127.0.8.38:0"));
    alpha2.cluster_name = "alpha".into();
    let alpha2 = serve(Messenger::bind_tcp(alpha2).await.unwrap());
    assert!(good
        .request(alpha2.local_addr(), WHO, Bytes::new(), T)
        .await
        .is_ok());
    assert!(other
        .request(alpha2.local_addr(), WHO, Bytes::new(), SHORT)
        .await
        .is_err());
    for m in [n, good, other, alpha2] {
        m.shutdown().await;
    }
}
