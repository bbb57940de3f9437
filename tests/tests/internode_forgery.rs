//! A raw socket that forges a MUTATION on a real node's internode port
//! (issue 15): claiming another node's address it is refused and logged and
//! nothing is written; the same bytes sent honestly (from the address the
//! connection claims) are applied, so the forged payload was a valid write
//! and the refusal is what kept it out.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use gyre_common::{Cell, CellName, DecoratedKey, Partition};
use gyre_net::{encode_frame, ConnectionClass, Frame, FrameKind, Handshake, Verb};
use gyre_storage::{Mutation, TableId};
use gyre_tests::cluster::TestCluster;
use gyre_tests::cqlsh::gyresh_exec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Gyre's MUTATION verb (`gyre_coordinator::MUTATION`).
const MUTATION: Verb = Verb(0x0200);

fn row(key: i32, v: i32) -> Partition {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let ck = Bytes::new();
    Partition::new(DecoratedKey::new(Bytes::copy_from_slice(
        &key.to_be_bytes(),
    )))
    // The row marker, as an INSERT writes it, then the value.
    .set(
        ck.clone(),
        CellName::simple(Bytes::new()),
        Cell::live(ts, Bytes::new()),
    )
    .set(
        ck,
        CellName::simple(Bytes::from_static(b"v")),
        Cell::live(ts, Bytes::copy_from_slice(&v.to_be_bytes())),
    )
}

/// Connects from `from`, handshakes as `claimed` of `cluster`, sends one
/// MUTATION request, and reads until the node closes the connection or a
/// second passes (an admitted connection stays open: replies travel on
/// connections the node opens itself).
fn send_mutation(to: SocketAddr, from: &str, claimed: SocketAddr, cluster: &str, m: &Mutation) {
    let hs = Handshake {
        host_id: uuid::Uuid::new_v4(),
        addr: claimed,
        class: ConnectionClass::Small,
        cluster: cluster.into(),
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
            verb: MUTATION,
            id: 0x5eed_f00d,
            timeout: Some(Duration::from_secs(2)),
            payload: m.encoded().clone(),
        },
        &mut buf,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Bound to `from` first, as a node binds its outgoing connections
        // to its listen address.
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(from.parse().expect("ip"), 0))
            .expect("bind");
        let mut s = sock.connect(to).await.expect("connect");
        s.write_all(&buf).await.expect("send");
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut sink)).await;
    });
}

/// The rows of `key`, read at ALL (a row any replica holds shows).
fn read_all(c: &TestCluster, key: i32) -> String {
    let out = gyresh_exec(
        c.cql(1),
        &format!("CONSISTENCY ALL; SELECT v FROM forge.t WHERE k = {key}"),
    );
    format!("{}{}", out.stdout, out.stderr)
}

#[test]
fn a_forged_mutation_is_refused_and_writes_nothing() {
    let c = TestCluster::new(2, 173);
    c.up();
    let out = gyresh_exec(
        c.cql(1),
        "CREATE KEYSPACE forge WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}; \
         CREATE TABLE forge.t (k int PRIMARY KEY, v int); \
         SELECT id FROM system_schema.tables WHERE keyspace_name = 'forge' AND table_name = 't'",
    );
    let out = format!("{}{}", out.stdout, out.stderr);
    let id = out
        .split_whitespace()
        .find_map(|w| uuid::Uuid::parse_str(w).ok())
        .unwrap_or_else(|| panic!("no table id in:\n{out}"));
    let table = TableId(id);
    let node1: SocketAddr = c.internode(1).parse().expect("address");
    let node2: SocketAddr = c.internode(2).parse().expect("address");
    let cluster = "test cluster";

    // From 127.0.173.9, claiming to be node 2: refused, logged, not written.
    send_mutation(
        node1,
        "127.0.173.9",
        node2,
        cluster,
        &Mutation::new(table, row(1, 111)),
    );
    // Its own address but another cluster's name: refused too.
    let own: SocketAddr = "127.0.173.9:7000".parse().expect("address");
    send_mutation(
        node1,
        "127.0.173.9",
        own,
        "another",
        &Mutation::new(table, row(2, 222)),
    );
    c.wait_until("node 1 logs both refusals", Duration::from_secs(20), || {
        let logs = c.logs();
        logs.contains("peer claims address 127.0.173.2:7000 but connects from 127.0.173.9")
            && logs.contains("peer is of cluster \"another\"")
    });
    for key in [1, 2] {
        let out = read_all(&c, key);
        assert!(
            out.contains("(0 rows"),
            "forged row {key} was written:\n{out}"
        );
    }

    // Control: the same kind of write from the address it claims, with the
    // cluster's name, is admitted (without internode TLS the cluster name
    // and the source address are all a peer proves) and applied.
    send_mutation(
        node1,
        "127.0.173.9",
        own,
        cluster,
        &Mutation::new(table, row(3, 333)),
    );
    c.wait_until(
        "the honest write is applied",
        Duration::from_secs(20),
        || read_all(&c, 3).contains("333"),
    );
}
