//! Internode mutual TLS over real loopback TCP (127.0.135.x): nodes of the
//! cluster CA talk (small and bulk messages); a peer with a certificate of
//! another CA, a plaintext peer, or a peer using another node's certificate
//! is refused at the handshake and nothing it sends reaches a handler.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gyre_net::{
    encode_frame, ConnectionClass, Frame, FrameKind, Handshake, Inbound, InternodeTls, Messenger,
    NetConfig, Priority, Verb,
};
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO: Verb = Verb(1);
const T: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(500);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A node certificate for `ip` (and its key), as PEM.
    fn node(&self, ip: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let ip: IpAddr = ip.parse().unwrap();
        p.subject_alt_names.push(SanType::IpAddress(ip));
        p.distinguished_name
            .push(DnType::CommonName, ip.to_string());
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn tls(cert: &(String, String), trusts: &Ca, verify_endpoint: bool) -> InternodeTls {
    InternodeTls::from_pem(
        cert.0.as_bytes(),
        cert.1.as_bytes(),
        trusts.cert.pem().as_bytes(),
        true,
        verify_endpoint,
    )
    .unwrap()
}

/// A messenger at `ip` whose ECHO handler answers and records the sender.
async fn node(ip: &str, tls: Option<InternodeTls>) -> (Messenger, Arc<Mutex<Vec<SocketAddr>>>) {
    let mut c = NetConfig::new(addr(&format!("{ip}:0")));
    c.cluster_name = "tls".into();
    c.reconnect_backoff_min = Duration::from_millis(10);
    c.reconnect_backoff_max = Duration::from_millis(100);
    c.handshake_timeout = Duration::from_secs(1);
    c.tls = tls;
    let m = Messenger::bind_tcp(c).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    m.register(ECHO, move |msg: Inbound| {
        log.lock().push(msg.from);
        if let Some(r) = msg.responder {
            let _ = r.respond(msg.payload);
        }
    });
    (m, seen)
}

async fn eventually<F: FnMut() -> bool>(what: &str, mut f: F) {
    let end = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < end, "not reached within {T:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ca_nodes_talk_and_others_are_refused() {
    let ca = Ca::new("cluster CA");
    let other = Ca::new("another CA");
    let (a, a_seen) = node("127.0.135.1", Some(tls(&ca.node("127.0.135.1"), &ca, true))).await;
    let (b, b_seen) = node("127.0.135.2", Some(tls(&ca.node("127.0.135.2"), &ca, true))).await;

    // Small and bulk (the large-message connection) both ways.
    let reply = a
        .request(b.local_addr(), ECHO, Bytes::from("hi"), T)
        .await
        .unwrap();
    assert_eq!(reply, "hi");
    let big = Bytes::from(vec![7u8; 2 << 20]);
    let reply = b
        .request_with(a.local_addr(), ECHO, big.clone(), T, Priority::Bulk)
        .await
        .unwrap();
    assert_eq!(reply, big);
    // Many in flight on one connection arrive intact (TLS records flushed).
    let mut pending = Vec::new();
    for i in 0..200u32 {
        let payload = Bytes::from(vec![(i % 251) as u8; (i as usize * 97) % 70_000]);
        pending.push((payload.clone(), a.request(b.local_addr(), ECHO, payload, T)));
    }
    for (sent, fut) in pending {
        assert_eq!(fut.await.unwrap(), sent);
    }
    let errors_before = b.stats().transport.protocol_errors;

    // A node with a certificate of another CA (for its own address): refused
    // by the node it dials, whose certificate it cannot verify either.
    let (rogue, rogue_seen) = node(
        "127.0.135.3",
        Some(tls(&other.node("127.0.135.3"), &other, true)),
    )
    .await;
    assert!(rogue
        .request(b.local_addr(), ECHO, Bytes::from("forged"), SHORT)
        .await
        .is_err());
    // Even trusting the cluster CA, its own certificate is refused.
    let (rogue2, _) = node(
        "127.0.135.4",
        Some(tls(&other.node("127.0.135.4"), &ca, true)),
    )
    .await;
    assert!(rogue2
        .request(b.local_addr(), ECHO, Bytes::from("forged"), SHORT)
        .await
        .is_err());
    // A cluster node does not talk to it either.
    assert!(b
        .request(rogue.local_addr(), ECHO, Bytes::from("x"), SHORT)
        .await
        .is_err());

    // A plaintext messenger, and a raw plaintext socket with a valid-looking
    // handshake and a request: refused.
    let (plain, _) = node("127.0.135.5", None).await;
    assert!(plain
        .request(b.local_addr(), ECHO, Bytes::from("forged"), SHORT)
        .await
        .is_err());
    raw_plaintext(b.local_addr(), "127.0.135.6").await;
    // And a TLS node cannot send to a plaintext one.
    assert!(b
        .request(plain.local_addr(), ECHO, Bytes::from("x"), SHORT)
        .await
        .is_err());

    // Another node's certificate (signed by the cluster CA, but for
    // 127.0.135.1): refused by endpoint verification in both directions.
    let (thief, thief_seen) =
        node("127.0.135.7", Some(tls(&ca.node("127.0.135.1"), &ca, true))).await;
    assert!(thief
        .request(b.local_addr(), ECHO, Bytes::from("forged"), SHORT)
        .await
        .is_err());
    assert!(b
        .request(thief.local_addr(), ECHO, Bytes::from("x"), SHORT)
        .await
        .is_err());

    eventually("the refusals are counted", || {
        b.stats().transport.protocol_errors >= errors_before + 4
    })
    .await;
    let from_b: Vec<_> = b_seen.lock().clone();
    assert!(
        from_b.iter().all(|f| *f == a.local_addr()),
        "a refused peer's message was delivered: {from_b:?}"
    );
    assert!(rogue_seen.lock().is_empty() && thief_seen.lock().is_empty());
    assert!(a_seen.lock().iter().all(|f| *f == b.local_addr()));

    // The cluster still works.
    assert_eq!(
        a.request(b.local_addr(), ECHO, Bytes::from("still"), T)
            .await
            .unwrap(),
        "still"
    );
    for m in [a, b, rogue, rogue2, plain, thief] {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_endpoint_verification_any_cluster_ca_certificate_is_admitted() {
    let ca = Ca::new("cluster CA");
    let other = Ca::new("another CA");
    // Certificates that name some other address.
    let (a, _) = node("127.0.135.11", Some(tls(&ca.node("10.0.0.1"), &ca, false))).await;
    let (b, b_seen) = node("127.0.135.12", Some(tls(&ca.node("10.0.0.2"), &ca, false))).await;
    assert_eq!(
        a.request(b.local_addr(), ECHO, Bytes::from("hi"), T)
            .await
            .unwrap(),
        "hi"
    );
    assert_eq!(b_seen.lock().as_slice(), &[a.local_addr()]);
    // The CA is still checked.
    let (rogue, _) = node(
        "127.0.135.13",
        Some(tls(&other.node("127.0.135.13"), &ca, false)),
    )
    .await;
    assert!(rogue
        .request(b.local_addr(), ECHO, Bytes::from("forged"), SHORT)
        .await
        .is_err());
    assert_eq!(b_seen.lock().len(), 1);
    for m in [a, b, rogue] {
        m.shutdown().await;
    }
}

#[test]
fn pem_problems_are_named() {
    let ca = Ca::new("cluster CA");
    let (cert, key) = ca.node("127.0.135.20");
    let ca_pem = ca.cert.pem();
    let err = |c: &str, k: &str, a: &str| {
        InternodeTls::from_pem(c.as_bytes(), k.as_bytes(), a.as_bytes(), true, true)
            .unwrap_err()
            .to_string()
    };
    assert!(err("junk", &key, &ca_pem).contains("certificate"));
    assert!(err(&cert, "", &ca_pem).contains("private key"));
    assert!(err(&cert, &key, "").contains("CA certificate"));
    let (_, other_key) = ca.node("127.0.135.21");
    assert!(err(&cert, &other_key, &ca_pem).contains("certificate and key"));
}

/// A plaintext connection from `from` with a handshake claiming its own
/// address and a request: the TLS listener closes it.
async fn raw_plaintext(to: SocketAddr, from: &str) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(addr(&format!("{from}:0"))).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    let hs = Handshake {
        host_id: uuid::Uuid::new_v4(),
        addr: addr(&format!("{from}:7000")),
        class: ConnectionClass::Small,
        cluster: "tls".into(),
    };
    let mut buf = BytesMut::new();
    encode_frame(
        &Frame {
            kind: FrameKind::Handshake,
            flags: 0,
            verb: Verb(0),
            id: 0,
            timeout: None,
            payload: hs.encode(),
        },
        &mut buf,
    );
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
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(T, s.read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "the TLS listener kept a plaintext peer open"
    );
}
