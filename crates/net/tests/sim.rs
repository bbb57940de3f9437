//! A cluster inside one process over the simulated network.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gyre_net::{Error, FaultRules, Inbound, Messenger, SimNetwork, Verb};

const ECHO: Verb = Verb(1);
const T: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(150);

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 7000))
}

fn cluster(net: &SimNetwork, n: u8) -> Vec<Messenger> {
    (1..=n)
        .map(|i| {
            let m = net.messenger(addr(i)).unwrap();
            m.register(ECHO, |msg: Inbound| {
                let _ = msg.responder.unwrap().respond(msg.payload);
            });
            m
        })
        .collect()
}

async fn ok(from: &Messenger, to: &Messenger) -> bool {
    from.request(to.local_addr(), ECHO, Bytes::from("p"), T)
        .await
        .is_ok()
}

async fn cut(from: &Messenger, to: &Messenger) -> bool {
    matches!(
        from.request(to.local_addr(), ECHO, Bytes::from("p"), SHORT)
            .await,
        Err(Error::Timeout { .. })
    )
}

#[tokio::test]
async fn requests_flow_between_all_nodes() {
    let net = SimNetwork::new(1);
    let nodes = cluster(&net, 3);
    for a in &nodes {
        for b in &nodes {
            assert!(ok(a, b).await);
        }
    }
    let mut rx = nodes[1].register_channel(Verb(5), 4);
    nodes[0]
        .send_oneway(addr(2), Verb(5), Bytes::from("x"))
        .unwrap();
    let m = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    assert_eq!(m.from, addr(1));
    assert_eq!(nodes[0].stats().verb(ECHO).completed, 3);
}

#[tokio::test]
async fn partition_isolate_and_heal() {
    let net = SimNetwork::new(2);
    let n = cluster(&net, 3);
    net.partition(addr(1), addr(2));
    assert!(cut(&n[0], &n[1]).await);
    assert!(cut(&n[1], &n[0]).await);
    assert!(ok(&n[0], &n[2]).await && ok(&n[2], &n[1]).await);
    net.heal_pair(addr(1), addr(2));
    assert!(ok(&n[0], &n[1]).await);

    net.isolate(addr(3));
    assert!(cut(&n[0], &n[2]).await);
    assert!(cut(&n[2], &n[1]).await);
    net.partition_sets(&[addr(1)], &[addr(2)]);
    net.heal();
    assert!(ok(&n[0], &n[2]).await && ok(&n[2], &n[1]).await && ok(&n[0], &n[1]).await);
    assert!(net.stats().dropped >= 4);
}

#[tokio::test]
async fn seeded_drops_and_delays() {
    let net = SimNetwork::new(3);
    let n = cluster(&net, 2);
    let mut rx = n[1].register_channel(Verb(6), 1000);
    net.set_drop_probability(0.5);
    for _ in 0..200 {
        n[0].send_oneway(addr(2), Verb(6), Bytes::new()).unwrap();
    }
    // Every message is either dropped or delivered; the same seed gives the same split.
    let end = Instant::now() + T;
    while net.stats().delivered + net.stats().dropped < 200 {
        assert!(Instant::now() < end);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut got = 0;
    while rx.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(got as u64, net.stats().delivered);
    assert!((50..150).contains(&got), "{got}");

    net.set_drop_probability(0.0);
    let d = Duration::from_millis(40);
    net.set_delay(d, d);
    let start = Instant::now();
    assert!(ok(&n[0], &n[1]).await);
    assert!(start.elapsed() >= d * 2);
}

#[tokio::test]
async fn node_restart_and_fault_rules() {
    let net = SimNetwork::new(4);
    let n = cluster(&net, 2);
    n[1].shutdown().await;
    assert!(cut(&n[0], &n[1]).await);
    let restarted = cluster_node(&net, 2);
    assert!(ok(&n[0], &restarted).await);

    // The messenger's own fault rules work over the simulation as over TCP.
    n[0].set_faults(FaultRules::partition([addr(2)])).unwrap();
    assert!(cut(&n[0], &restarted).await);
    assert!(cut(&restarted, &n[0]).await);
    n[0].clear_faults();
    assert!(ok(&restarted, &n[0]).await);
    assert!(matches!(
        n[1].request(addr(1), ECHO, Bytes::new(), T).await,
        Err(Error::Shutdown)
    ));
}

fn cluster_node(net: &SimNetwork, i: u8) -> Messenger {
    let m = net.messenger(addr(i)).unwrap();
    m.register(ECHO, |msg: Inbound| {
        let _ = msg.responder.unwrap().respond(msg.payload);
    });
    m
}
