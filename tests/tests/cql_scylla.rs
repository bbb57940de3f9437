//! The Rust `scylla` driver (the version the tools use) against a real
//! 3-node cluster: all three nodes known from one contact point, prepared
//! statements with named markers, the paging iterator, `calculate_token`
//! equal to the server's `token()`, token-aware routing landing on a
//! replica, unpaged reads returning everything, and server errors arriving
//! as the right `DbError`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use gyre_tests::cluster::TestCluster;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::client::Compression;
use scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::SerializeRow;

#[derive(SerializeRow)]
struct Rec {
    // Declared in another order than the markers: matched by name.
    val: String,
    ck: i32,
    key: i32,
}

const SLOW_MACHINE: &[&str] = &[
    "--write-request-timeout-ms",
    "8000",
    "--read-request-timeout-ms",
    "8000",
    "--request-timeout-ms",
    "8000",
    "--phi-convict-threshold",
    "12",
];

const PARTITIONS: i32 = 4;
const PER_PARTITION: i32 = 300;

fn db_error(e: &ExecutionError) -> Option<&DbError> {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => Some(db),
        ExecutionError::PrepareError(PrepareError::AllAttemptsFailed {
            first_attempt: RequestAttemptError::DbError(db, _),
        }) => Some(db),
        _ => None,
    }
}

/// True when every node's `/status` shows one schema version for all nodes.
fn schema_settled(c: &TestCluster) -> bool {
    let mut versions = BTreeSet::new();
    for n in 1..=c.nodes {
        let Some(status) = c.status(n) else {
            return false;
        };
        for e in status.endpoints {
            versions.insert(e.schema);
        }
    }
    versions.len() == 1 && !versions.contains(&None)
}

async fn server_token(
    session: &Session,
    q: &scylla::statement::prepared::PreparedStatement,
    key: impl scylla::serialize::row::SerializeRow,
) -> i64 {
    let rows = session
        .execute_unpaged(q, key)
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (t,): (i64,) = rows.single_row().unwrap();
    t
}

async fn scenario(c: &TestCluster) {
    let t0 = Instant::now();
    let session: Session = SessionBuilder::new()
        .known_node(c.cql(1).to_string())
        .build()
        .await
        .unwrap();

    // All three nodes known, from one contact point.
    let want_ips: BTreeSet<IpAddr> = (1..=3).map(|n| c.cql(n).ip()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = session.get_cluster_state();
        let ips: BTreeSet<IpAddr> = state
            .get_nodes_info()
            .iter()
            .map(|n| n.address.ip())
            .collect();
        if ips == want_ips {
            let nodes = state.get_nodes_info();
            let ids: BTreeSet<_> = nodes.iter().map(|n| n.host_id).collect();
            assert_eq!(ids.len(), 3, "{nodes:?}");
            assert!(nodes.iter().all(|n| n.datacenter.as_deref() == Some("dc1")));
            assert!(nodes.iter().all(|n| n.is_connected()), "{nodes:?}");
            break;
        }
        assert!(Instant::now() < deadline, "driver knows {ips:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        session.refresh_metadata().await.unwrap();
    }
    eprintln!("3 nodes known after {:.2} s", t0.elapsed().as_secs_f64());

    // DDL (the driver waits for schema agreement itself).
    for ddl in [
        "CREATE KEYSPACE sc WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}",
        "CREATE KEYSPACE sc1 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE sc.t (k int, c int, v text, PRIMARY KEY (k, c))",
        "CREATE TABLE sc.comp (a int, b text, c int, v text, PRIMARY KEY ((a, b), c))",
        "CREATE TABLE sc1.kv (k text PRIMARY KEY, v int)",
    ] {
        session.query_unpaged(ddl, ()).await.unwrap();
    }
    assert!(session.await_schema_agreement().await.is_ok());
    // The driver asked one node; wait until every node sees every node on
    // the same schema version, so no schema gossip overlaps the writes.
    tokio::task::block_in_place(|| {
        c.wait_until(
            "schema settled on every node",
            Duration::from_secs(30),
            || schema_settled(c),
        )
    });
    session.refresh_metadata().await.unwrap();

    // Prepared statements with named markers, values matched by name.
    let ins = session
        .prepare("INSERT INTO sc.t (k, c, v) VALUES (:key, :ck, :val)")
        .await
        .unwrap();
    let names: Vec<&str> = ins
        .get_variable_col_specs()
        .iter()
        .map(|s| s.name())
        .collect();
    assert_eq!(names, ["key", "ck", "val"]);
    let t_ins = Instant::now();
    let writes = (0..PARTITIONS).flat_map(|k| (0..PER_PARTITION).map(move |c| (k, c)));
    futures::stream::iter(writes)
        .map(|(key, ck)| {
            let (session, ins) = (&session, &ins);
            async move {
                let rec = Rec {
                    val: format!("v{key}-{ck}"),
                    ck,
                    key,
                };
                session.execute_unpaged(ins, rec).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    eprintln!(
        "{} named-marker inserts in {:.2} s",
        PARTITIONS * PER_PARTITION,
        t_ins.elapsed().as_secs_f64()
    );
    let sel = session
        .prepare("SELECT v FROM sc.t WHERE c = :ck AND k = :key")
        .await
        .unwrap();
    let vals: HashMap<&str, i32> = [("key", 2), ("ck", 17)].into_iter().collect();
    let rows = session
        .execute_unpaged(&sel, &vals)
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (v,): (String,) = rows.single_row().unwrap();
    assert_eq!(v, "v2-17");

    // The paging iterator over the whole table, page size 100.
    let mut scan = session.prepare("SELECT k, c, v FROM sc.t").await.unwrap();
    scan.set_page_size(100);
    let rows: Vec<(i32, i32, String)> = session
        .execute_iter(scan.clone(), ())
        .await
        .unwrap()
        .rows_stream::<(i32, i32, String)>()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let total = (PARTITIONS * PER_PARTITION) as usize;
    assert_eq!(rows.len(), total);
    let unique: BTreeSet<(i32, i32)> = rows.iter().map(|(k, c, _)| (*k, *c)).collect();
    assert_eq!(unique.len(), total, "duplicate rows from the pager");
    assert!(rows.iter().all(|(k, c, v)| *v == format!("v{k}-{c}")));
    // Page by page: each page holds at most 100 rows.
    let mut state = PagingState::start();
    let (mut pages, mut seen) = (0, 0);
    loop {
        let (res, next) = session.execute_single_page(&scan, (), state).await.unwrap();
        let n = res.into_rows_result().unwrap().rows_num();
        assert!(n <= 100, "page of {n} rows");
        pages += 1;
        seen += n;
        match next {
            PagingStateResponse::HasMorePages { state: s } => state = s,
            PagingStateResponse::NoMorePages => break,
        }
    }
    assert_eq!(seen, total);
    assert!(pages >= total / 100, "{pages} pages");
    // A single partition, paged, in clustering order.
    let mut part = session
        .prepare("SELECT c FROM sc.t WHERE k = ?")
        .await
        .unwrap();
    part.set_page_size(100);
    let cs: Vec<(i32,)> = session
        .execute_iter(part, (1,))
        .await
        .unwrap()
        .rows_stream::<(i32,)>()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        cs.into_iter().map(|(c,)| c).collect::<Vec<_>>(),
        (0..PER_PARTITION).collect::<Vec<_>>()
    );
    // Unpaged: every row and no paging state (else the driver fails).
    let all = session
        .query_unpaged("SELECT k, c FROM sc.t", ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    assert_eq!(all.rows_num(), total);

    // calculate_token equals the server's token(); routing hits a replica.
    let ins_kv = session
        .prepare("INSERT INTO sc1.kv (k, v) VALUES (?, ?)")
        .await
        .unwrap();
    let tok_kv = session
        .prepare("SELECT token(k) FROM sc1.kv WHERE k = ?")
        .await
        .unwrap();
    let keys: Vec<String> = (0..40)
        .map(|i| format!("key-{i}"))
        .chain(["a", "é", "héllo wörld", "☃☃☃☃☃☃☃☃☃"].map(String::from))
        .collect();
    let state = session.get_cluster_state();
    let mut coordinators = BTreeSet::new();
    for (i, k) in keys.iter().enumerate() {
        let token = ins_kv.calculate_token(&(k, i as i32)).unwrap().unwrap();
        let replicas: Vec<_> = state
            .get_token_endpoints("sc1", "kv", token)
            .into_iter()
            .map(|(n, _)| n.host_id)
            .collect();
        assert_eq!(replicas.len(), 1, "RF 1: {replicas:?}");
        let res = session
            .execute_unpaged(&ins_kv, (k, i as i32))
            .await
            .unwrap();
        let coord = res.request_coordinator().node().host_id;
        assert_eq!(coord, replicas[0], "{k:?} was not sent to its replica");
        // token() is per row: ask once the row exists.
        assert_eq!(
            token.value(),
            server_token(&session, &tok_kv, (k,)).await,
            "token of {k:?}"
        );
        coordinators.insert(coord);
    }
    assert_eq!(coordinators.len(), 3, "keys did not spread over the nodes");
    let ins_comp = session
        .prepare("INSERT INTO sc.comp (a, b, c, v) VALUES (?, ?, ?, ?)")
        .await
        .unwrap();
    let tok_comp = session
        .prepare("SELECT token(a, b) FROM sc.comp WHERE a = ? AND b = ?")
        .await
        .unwrap();
    for (a, b) in [
        (1, "x"),
        (-7, "é"),
        (i32::MAX, "z"),
        (0, "long long long long"),
    ] {
        let token = ins_comp.calculate_token(&(a, b, 3, "v")).unwrap().unwrap();
        session
            .execute_unpaged(&ins_comp, (a, b, 3, "v"))
            .await
            .unwrap();
        assert_eq!(
            token.value(),
            server_token(&session, &tok_comp, (a, b)).await,
            "token of ({a}, {b:?})"
        );
    }

    // A second session with lz4 frame compression reads the same rows.
    let lz4: Session = SessionBuilder::new()
        .known_node(c.cql(2).to_string())
        .compression(Some(Compression::Lz4))
        .build()
        .await
        .unwrap();
    let rows: Vec<(i32, i32, String)> = lz4
        .execute_iter(scan.clone(), ())
        .await
        .unwrap()
        .rows_stream::<(i32, i32, String)>()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), total, "lz4 session");

    // Errors as DbError kinds.
    let e = session
        .query_unpaged("SELEC * FROM sc.t", ())
        .await
        .unwrap_err();
    assert!(matches!(db_error(&e), Some(DbError::SyntaxError)), "{e:?}");
    let e = session
        .query_unpaged("SELECT * FROM sc.nope", ())
        .await
        .unwrap_err();
    assert!(matches!(db_error(&e), Some(DbError::Invalid)), "{e:?}");
    let e = session
        .prepare("SELECT * FROM nope.t WHERE k = ?")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            PrepareError::AllAttemptsFailed {
                first_attempt: RequestAttemptError::DbError(DbError::Invalid, _)
            }
        ),
        "{e:?}"
    );
    // A bind value of the wrong type is refused by the driver itself.
    assert!(session.execute_unpaged(&ins, (1i64, 2, "x")).await.is_err());
    eprintln!("scylla scenario took {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn scylla_driver_against_three_nodes() {
    let c = TestCluster::new(3, 32);
    // Generous server timeouts and failure detection: the machine running
    // the tests may be loaded; the driver's own timeout is 30 s.
    c.up_with(SLOW_MACHINE);
    for n in 1..=3 {
        let addr = c.cql(n);
        c.wait_until(
            &format!("CQL port of node {n} open"),
            Duration::from_secs(30),
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), scenario(&c))
            .await
            .unwrap_or_else(|_| panic!("scylla scenario timed out\n{}", c.logs()));
    });
}
