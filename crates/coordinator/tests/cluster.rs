//! The coordinator over a simulated 3-node network, RF 3, each node with
//! its own LSM engine.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gyre_cluster::{HostId, NodeInfo, ReplicationStrategy, TokenMetadata};
use gyre_common::{Cell, CellName, DecoratedKey, Partition, Timestamp};
use gyre_coordinator::{
    ConsistencyLevel, Coordinator, CoordinatorConfig, CoordinatorError, HintConfig, HintStore,
    WriteType,
};
use gyre_net::SimNetwork;
use gyre_storage::{
    LsmConfig, LsmEngine, ReadFilter, StorageEngine, SyncMode, TableId, TableOptions,
};
use parking_lot::{Mutex, RwLock};
use rand::{Rng, SeedableRng};

struct Node {
    host: HostId,
    addr: SocketAddr,
    engine: Arc<LsmEngine>,
    coord: Coordinator,
    hints: Arc<HintStore>,
}

struct Cluster {
    net: SimNetwork,
    nodes: Vec<Node>,
    down: Arc<Mutex<HashSet<HostId>>>,
    table: TableId,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(seed: u64, timeout: Duration) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let net = SimNetwork::new(seed);
        let table = TableId(uuid::Uuid::from_u128(42));
        let down: Arc<Mutex<HashSet<HostId>>> = Arc::default();
        let mut ring = TokenMetadata::new();
        let ids: Vec<(HostId, SocketAddr)> = (1..=3u128)
            .map(|i| {
                (
                    uuid::Uuid::from_u128(seed as u128 * 10 + i),
                    format!("10.0.0.{i}:7000").parse().unwrap(),
                )
            })
            .collect();
        for (i, (h, a)) in ids.iter().enumerate() {
            let info = NodeInfo {
                host_id: *h,
                address: *a,
                dc: "dc1".into(),
                rack: "r1".into(),
            };
            ring.update_normal(info, &[(i as i64 - 1) * 3_000_000_000_000_000_000])
                .unwrap();
        }
        let ring = Arc::new(RwLock::new(ring));
        let mut nodes = Vec::new();
        for (i, (host, addr)) in ids.into_iter().enumerate() {
            let mut cfg = LsmConfig::in_dir(dir.path().join(format!("n{i}")));
            cfg.sync = SyncMode::Periodic { period_ms: 1000 };
            cfg.background_compaction = false;
            let engine = Arc::new(LsmEngine::open(cfg).unwrap());
            engine.create_table(table, TableOptions::default()).unwrap();
            let hints = Arc::new(
                HintStore::open(dir.path().join(format!("h{i}")), HintConfig::default()).unwrap(),
            );
            let mut config = CoordinatorConfig::new(host, "dc1");
            config.write_timeout = timeout;
            config.read_timeout = timeout;
            let d = down.clone();
            let coord = Coordinator::new(
                config,
                net.messenger(addr).unwrap(),
                engine.clone(),
                ring.clone(),
                Arc::new(move |t: TableId| (t == table).then(|| ReplicationStrategy::simple(3))),
                Arc::new(move |h: HostId| !d.lock().contains(&h)),
            )
            .with_hints(hints.clone());
            nodes.push(Node {
                host,
                addr,
                engine,
                coord,
                hints,
            });
        }
        Cluster {
            net,
            nodes,
            down,
            table,
            _dir: dir,
        }
    }

    async fn stop(self) {
        for n in &self.nodes {
            n.coord.messenger().shutdown().await;
        }
    }

    fn local(&self, node: usize, key: &str) -> Option<Partition> {
        self.nodes[node]
            .engine
            .read(
                self.table,
                &DecoratedKey::new(key.to_string()),
                &ReadFilter::all(),
                0,
            )
            .unwrap()
    }
}

fn update(key: &str, ts: Timestamp, v: &str) -> Partition {
    Partition::with_key(key.to_string()).set(
        "row",
        CellName::simple("v"),
        Cell::live(ts, v.to_string()),
    )
}

fn cell_ts(p: &Option<Partition>) -> Option<Timestamp> {
    p.as_ref()?
        .rows
        .get(&bytes::Bytes::from("row"))?
        .cells
        .get(&CellName::simple("v"))
        .map(|c| c.timestamp)
}

const T: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_write_with_a_partitioned_node_succeeds_and_is_hinted() {
    let c = Cluster::start(1, T).await;
    c.net.isolate(c.nodes[2].addr);
    c.nodes[0]
        .coord
        .write(c.table, update("k", 10, "a"), ConsistencyLevel::Quorum)
        .await
        .unwrap();
    assert_eq!(cell_ts(&c.local(0, "k")), Some(10));
    assert_eq!(cell_ts(&c.local(1, "k")), Some(10));
    assert_eq!(c.local(2, "k"), None);
    // The timed-out replica gets a hint in the background.
    let target = c.nodes[2].host;
    let mut waited = 0;
    while c.nodes[0].hints.hosts().unwrap() != vec![target] {
        assert!(waited < 40, "no hint stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    c.net.heal();
    assert_eq!(c.nodes[0].coord.deliver_hints(target).await.unwrap(), 1);
    assert_eq!(cell_ts(&c.local(2, "k")), Some(10));
    assert!(c.nodes[0].hints.hosts().unwrap().is_empty());
    c.stop().await;
}

/// Repair: a replica that missed writes and a deletion (down, its hints
/// lost) gets exactly what it lacks from a repair of the coordinator's
/// ranges; repairing agreeing replicas finds nothing and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_brings_a_replica_that_missed_writes_and_a_deletion_back() {
    let c = Cluster::start(12, T).await;
    let third = c.nodes[2].host;
    let coord = &c.nodes[0].coord;
    coord
        .write(c.table, update("doomed", 1, "x"), ConsistencyLevel::All)
        .await
        .unwrap();
    c.down.lock().insert(third);
    for i in 0..200 {
        coord
            .write(
                c.table,
                update(&format!("k{i}"), 10, "v"),
                ConsistencyLevel::Quorum,
            )
            .await
            .unwrap();
    }
    let mut tomb = Partition::with_key("doomed".to_string());
    tomb.deletion = Some(gyre_common::Deletion::new(5, 0));
    coord
        .write(c.table, tomb, ConsistencyLevel::Quorum)
        .await
        .unwrap();
    // Its hints are lost: only repair can bring it back.
    for n in &c.nodes {
        n.hints.delete_host(third).unwrap();
    }
    c.down.lock().remove(&third);
    assert_eq!(c.local(2, "k7"), None);
    assert_eq!(cell_ts(&c.local(2, "doomed")), Some(1));

    let ranges = coord.repair_ranges(c.table, false).unwrap();
    assert!(!ranges.is_empty());
    let mut total = gyre_coordinator::RangeRepair::default();
    for (start, end) in &ranges {
        for (s, e) in coord.split_by_ring(*start, *end) {
            total.add(&coord.repair_range(c.table, s, e, 6).await.unwrap());
        }
    }
    assert!(total.mismatched_leaves > 0, "{total:?}");
    assert_eq!(total.partitions_differing, 201, "{total:?}");
    assert_eq!(
        total.mutations_sent, 201,
        "only the stale replica is written: {total:?}"
    );
    for i in 0..200 {
        assert_eq!(cell_ts(&c.local(2, &format!("k{i}"))), Some(10), "k{i}");
    }
    let doomed = c.local(2, "doomed");
    assert!(
        doomed
            .as_ref()
            .is_none_or(|p| gyre_common::lww::live_view(p, 0).rows.is_empty()),
        "the deletion reached it: {doomed:?}"
    );
    // Again: the replicas agree, nothing is read or sent.
    let mut again = gyre_coordinator::RangeRepair::default();
    for (start, end) in &ranges {
        again.add(&coord.repair_range(c.table, *start, *end, 6).await.unwrap());
    }
    assert_eq!(again.mismatched_leaves, 0, "{again:?}");
    assert_eq!((again.bytes_sent, again.bytes_received), (0, 0));
    assert!(again.partitions_compared >= 3 * 200);
    // A replica down: refused, naming it.
    c.down.lock().insert(third);
    let (s, e) = ranges[0];
    let err = coord.repair_range(c.table, s, e, 6).await.unwrap_err();
    assert!(err.to_string().contains(&third.to_string()), "{err}");
    c.stop().await;
}

/// Over-streaming: 3,000 partitions, 30 of them stale on one replica, a
/// shallow tree (about 60 partitions per leaf): with the refined slices
/// the coordinator reads about the two other replicas' copies of each
/// differing partition, where reading whole leaves read ~60 times that,
/// and the trees exchanged stay below twice the differing data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_reads_little_more_than_what_differs() {
    let c = Cluster::start(13, T).await;
    let third = c.nodes[2].host;
    let coord = &c.nodes[0].coord;
    for i in 0..3000 {
        coord
            .write(
                c.table,
                update(&format!("k{i}"), 10, "v"),
                ConsistencyLevel::All,
            )
            .await
            .unwrap();
    }
    c.down.lock().insert(third);
    for i in (0..3000).step_by(100) {
        coord
            .write(
                c.table,
                update(&format!("k{i}"), 20, "w"),
                ConsistencyLevel::Quorum,
            )
            .await
            .unwrap();
    }
    for n in &c.nodes {
        n.hints.delete_host(third).unwrap();
    }
    c.down.lock().remove(&third);
    let mut total = gyre_coordinator::RangeRepair::default();
    for (start, end) in coord.repair_ranges(c.table, false).unwrap() {
        for (s, e) in coord.split_by_ring(start, end) {
            total.add(&coord.repair_range(c.table, s, e, 4).await.unwrap());
        }
    }
    assert_eq!(total.partitions_differing, 30, "{total:?}");
    assert_eq!(total.mutations_sent, 30, "{total:?}");
    let differing: u64 = (0..3000)
        .step_by(100)
        .map(|i| c.local(0, &format!("k{i}")).unwrap().size_estimate() as u64)
        .sum();
    eprintln!("{total:?}; differing partitions: {differing} bytes");
    assert!(
        total.bytes_received <= 2 * differing,
        "read {} from other replicas for {differing} bytes of differing partitions: {total:?}",
        total.bytes_received,
    );
    // Trees: refined 4 leaves a step with only the differing versions,
    // ~9 bytes a leaf (one deep refinement of 16-byte leaves sent 89 KB).
    assert!(
        total.tree_bytes <= 2 * differing,
        "{} bytes of trees for {differing} bytes of differing partitions: {total:?}",
        total.tree_bytes,
    );
    for i in (0..3000).step_by(100) {
        assert_eq!(cell_ts(&c.local(2, &format!("k{i}"))), Some(20), "k{i}");
    }
    c.stop().await;
}

/// A hint that can never be delivered (its table was dropped) is discarded
/// and counted; it does not hold back the hints stored after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_for_a_dropped_table_are_discarded_without_blocking_the_rest() {
    let c = Cluster::start(11, T).await;
    let target = c.nodes[2].host;
    let gone = gyre_storage::TableId(uuid::Uuid::from_u128(0xdead));
    let hint = |table, key: &str, ts| gyre_coordinator::Hint {
        target,
        table,
        mutation: update(key, ts, "v"),
        write_time: ts,
    };
    let stored = c.nodes[0]
        .hints
        .store(&[
            hint(c.table, "before", 5),
            hint(gone, "lost", 6),
            hint(c.table, "after", 7),
        ])
        .unwrap();
    assert_eq!(stored, 3);
    assert_eq!(c.nodes[0].coord.deliver_hints(target).await.unwrap(), 2);
    assert_eq!(cell_ts(&c.local(2, "before")), Some(5));
    assert_eq!(cell_ts(&c.local(2, "after")), Some(7));
    let stats = c.nodes[0].hints.stats();
    assert_eq!(
        stats
            .dropped_undeliverable
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        stats.delivered.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert!(
        c.nodes[0].hints.hosts().unwrap().is_empty(),
        "file acknowledged"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_write_is_unavailable_with_a_node_marked_down() {
    let c = Cluster::start(2, T).await;
    c.down.lock().insert(c.nodes[2].host);
    let err = c.nodes[0]
        .coord
        .write(c.table, update("k", 1, "a"), ConsistencyLevel::All)
        .await
        .unwrap_err();
    match err {
        CoordinatorError::Unavailable {
            consistency,
            required,
            alive,
        } => assert_eq!(
            (consistency, required, alive),
            (ConsistencyLevel::All, 3, 2)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.local(0, "k"), None, "nothing sent when unavailable");
    // With every other replica down, ANY succeeds and the dead replicas
    // are hinted before the write returns.
    c.down.lock().insert(c.nodes[0].host);
    c.down.lock().insert(c.nodes[1].host);
    c.nodes[2]
        .coord
        .write(c.table, update("k2", 1, "a"), ConsistencyLevel::Any)
        .await
        .unwrap();
    let mut hinted = c.nodes[2].hints.hosts().unwrap();
    hinted.sort();
    let mut want = vec![c.nodes[0].host, c.nodes[1].host];
    want.sort();
    assert_eq!(hinted, want);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_counter_increment_applies_nothing() {
    let c = Cluster::start(12, T).await;
    for n in &c.nodes {
        n.coord.register_counter_handler();
    }
    let inc = |key: &str| {
        Partition::with_key(key.to_string()).set(
            "row",
            CellName::simple("c"),
            Cell::live(1, gyre_common::counter::delta_value(1)),
        )
    };
    c.down.lock().insert(c.nodes[2].host);
    // Led by the coordinator itself (a replica), and forwarded from a
    // node that sees the leader's replica set short: both refused before
    // any shard is written (before, the leader wrote its shard and then
    // answered Unavailable, so the client's "not applied" was wrong).
    for from in [0, 1] {
        let err = c.nodes[from]
            .coord
            .counter_write(c.table, inc("k"), ConsistencyLevel::All)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CoordinatorError::Unavailable { .. }),
            "{err:?}"
        );
    }
    for n in 0..3 {
        assert_eq!(c.local(n, "k"), None, "node {n} holds a shard");
    }
    c.nodes[0]
        .coord
        .counter_write(c.table, inc("k"), ConsistencyLevel::Quorum)
        .await
        .unwrap();
    assert!(c.local(0, "k").is_some());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_write_times_out_when_a_replica_drops_messages() {
    let c = Cluster::start(3, T).await;
    c.net.isolate(c.nodes[2].addr);
    let err = c.nodes[0]
        .coord
        .write(c.table, update("k", 1, "a"), ConsistencyLevel::All)
        .await
        .unwrap_err();
    match err {
        CoordinatorError::WriteTimeout {
            consistency,
            received,
            block_for,
            write_type,
        } => assert_eq!(
            (consistency, received, block_for, write_type),
            (ConsistencyLevel::All, 2, 3, WriteType::Simple)
        ),
        other => panic!("{other:?}"),
    }
    // Reads at ALL time out too, at QUORUM they succeed.
    let key = DecoratedKey::new("k");
    let err = c.nodes[0]
        .coord
        .read(c.table, &key, ReadFilter::all(), ConsistencyLevel::All)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoordinatorError::ReadTimeout { block_for: 3, .. }),
        "{err:?}"
    );
    let got = c.nodes[0]
        .coord
        .read(c.table, &key, ReadFilter::all(), ConsistencyLevel::Quorum)
        .await
        .unwrap();
    assert_eq!(cell_ts(&got), Some(1));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_read_repairs_a_stale_replica() {
    let c = Cluster::start(4, T).await;
    c.net.isolate(c.nodes[2].addr);
    c.nodes[0]
        .coord
        .write(c.table, update("k", 7, "new"), ConsistencyLevel::Quorum)
        .await
        .unwrap();
    c.net.heal();
    assert_eq!(c.local(2, "k"), None);
    // Node 3 coordinates: it reads its own (stale) data and a digest from
    // another replica, sees the mismatch and repairs itself before answering.
    let got = c.nodes[2]
        .coord
        .read(
            c.table,
            &DecoratedKey::new("k"),
            ReadFilter::all(),
            ConsistencyLevel::Quorum,
        )
        .await
        .unwrap();
    assert_eq!(cell_ts(&got), Some(7));
    assert_eq!(cell_ts(&c.local(2, "k")), Some(7));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_quorum_writes_survive_random_drops() {
    // GYRE_COORD_SEEDS=N runs more seeds (default 24).
    let seeds: u64 = std::env::var("GYRE_COORD_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let mut checked = 0;
    for seed in 0..seeds {
        let c = Cluster::start(100 + seed, Duration::from_millis(150)).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        c.net.set_drop_probability(rng.gen_range(0.02..0.15));
        let mut acked: BTreeMap<String, Timestamp> = BTreeMap::new();
        for i in 0..8i64 {
            let key = format!("k{}", rng.gen_range(0..4));
            let node = rng.gen_range(0..3);
            let ts = i + 1;
            let res = c.nodes[node]
                .coord
                .write(c.table, update(&key, ts, "v"), ConsistencyLevel::Quorum)
                .await;
            match res {
                Ok(()) => {
                    acked.insert(key, ts);
                }
                Err(CoordinatorError::WriteTimeout { .. }) => {}
                Err(e) => panic!("seed {seed}: unexpected {e:?}"),
            }
        }
        for (key, ts) in &acked {
            let mut got = None;
            for _attempt in 0..30 {
                let node = rng.gen_range(0..3);
                match c.nodes[node]
                    .coord
                    .read(
                        c.table,
                        &DecoratedKey::new(key.clone()),
                        ReadFilter::all(),
                        ConsistencyLevel::Quorum,
                    )
                    .await
                {
                    Ok(p) => {
                        got = Some(p);
                        break;
                    }
                    Err(CoordinatorError::ReadTimeout { .. }) => {}
                    Err(e) => panic!("seed {seed}: unexpected {e:?}"),
                }
            }
            let got = got.unwrap_or_else(|| panic!("seed {seed}: no read of {key} succeeded"));
            let seen = cell_ts(&got);
            assert!(
                seen >= Some(*ts),
                "seed {seed}: acknowledged write {key}@{ts} missing, read {seen:?}"
            );
            checked += 1;
        }
        c.stop().await;
    }
    assert!(
        checked > 24,
        "too few acknowledged writes checked: {checked}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_limit_short_read_is_protected_over_the_network() {
    let c = Cluster::start(5, T).await;
    let col = CellName::simple("v");
    let mut p = Partition::with_key("wide");
    for r in ["1", "2", "3", "4"] {
        p = p.set(r, col.clone(), Cell::live(1, "x"));
    }
    c.nodes[0]
        .coord
        .write(c.table, p, ConsistencyLevel::All)
        .await
        .unwrap();
    // Node 1 misses the deletion of rows 1 and 2.
    c.net.isolate(c.nodes[0].addr);
    let del = Partition::with_key("wide")
        .delete_row("1", gyre_common::Deletion::new(2, 0))
        .delete_row("2", gyre_common::Deletion::new(2, 0));
    c.nodes[1]
        .coord
        .write(c.table, del, ConsistencyLevel::Quorum)
        .await
        .unwrap();
    c.net.heal();
    let filter = ReadFilter {
        limit: Some(2),
        ..ReadFilter::all()
    };
    let got = c.nodes[0]
        .coord
        .read(
            c.table,
            &DecoratedKey::new("wide"),
            filter,
            ConsistencyLevel::All,
        )
        .await
        .unwrap()
        .unwrap();
    let live: Vec<bytes::Bytes> = gyre_common::lww::live_view(&got, 0)
        .rows
        .into_keys()
        .collect();
    assert_eq!(live, vec![bytes::Bytes::from("3"), bytes::Bytes::from("4")]);
    c.stop().await;
}

/// Live entries in a node's batchlog.
fn batchlog_entries(engine: &LsmEngine) -> usize {
    let request = gyre_storage::ScanRequest {
        start: gyre_storage::ScanStart::Token(std::ops::Bound::Unbounded),
        end: std::ops::Bound::Unbounded,
        filter: ReadFilter::all(),
        max_rows: 10_000,
        index: None,
    };
    let page = engine
        .scan(
            gyre_coordinator::BATCHLOG_TABLE,
            &request,
            i64::MAX / 2_000_000,
        )
        .unwrap();
    page.partitions
        .iter()
        .filter(|p| !gyre_common::lww::live_view(p, 0).rows.is_empty())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_batch_is_applied_and_then_leaves_the_batchlog() {
    let c = Cluster::start(7, T).await;
    let batch = vec![
        (c.table, update("b1", 10, "x")),
        (c.table, update("b2", 10, "y")),
    ];
    c.nodes[0]
        .coord
        .write_batch(batch, ConsistencyLevel::All, true)
        .await
        .unwrap();
    for n in 0..3 {
        assert_eq!(cell_ts(&c.local(n, "b1")), Some(10));
        assert_eq!(cell_ts(&c.local(n, "b2")), Some(10));
    }
    // The removals are one-way messages: poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: usize = c.nodes.iter().map(|n| batchlog_entries(&n.engine)).sum();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} batchlog entries left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_left_in_the_batchlog_is_replayed_in_full() {
    let c = Cluster::start(8, T).await;
    // Node 1 holds a batch whose coordinator died before applying it.
    let batch = vec![
        (c.table, update("r1", 20, "x")),
        (c.table, update("r2", 20, "y")),
    ];
    c.nodes[1].coord.store_in_batchlog(&batch).await.unwrap();
    assert_eq!(batchlog_entries(&c.nodes[1].engine), 1);
    // Too young to replay.
    assert_eq!(
        c.nodes[1]
            .coord
            .replay_batchlog(Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        c.nodes[1]
            .coord
            .replay_batchlog(Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    // Replayed at ONE: the other replicas' copies may still be in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for n in 0..3 {
        while cell_ts(&c.local(n, "r1")) != Some(20) || cell_ts(&c.local(n, "r2")) != Some(20) {
            assert!(
                std::time::Instant::now() < deadline,
                "node {n} lacks the replayed batch"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(batchlog_entries(&c.nodes[1].engine), 0);
    assert_eq!(
        c.nodes[1]
            .coord
            .replay_batchlog(Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_quorum_writes_survive_partitions_hints_and_scans() {
    // GYRE_COORD_SEEDS=N runs more seeds (default 12).
    let seeds: u64 = std::env::var("GYRE_COORD_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut checked = 0;
    for seed in 0..seeds {
        let c = Cluster::start(500 + seed, Duration::from_millis(150)).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        c.net.set_drop_probability(rng.gen_range(0.0..0.05));
        let mut acked: BTreeMap<String, Timestamp> = BTreeMap::new();
        for i in 0..12i64 {
            // The nemesis: isolate a node (the failure detector does not
            // know, so writes time out or get hinted) or heal.
            match rng.gen_range(0..4) {
                0 => c.net.isolate(c.nodes[rng.gen_range(0..3)].addr),
                1 => c.net.heal(),
                _ => {}
            }
            let key = format!("p{}", rng.gen_range(0..6));
            let node = rng.gen_range(0..3);
            let ts = i + 1;
            match c.nodes[node]
                .coord
                .write(c.table, update(&key, ts, "v"), ConsistencyLevel::Quorum)
                .await
            {
                Ok(()) => {
                    acked.insert(key, ts);
                }
                Err(CoordinatorError::WriteTimeout { .. }) => {}
                Err(e) => panic!("seed {seed}: unexpected {e:?}"),
            }
        }
        c.net.heal();
        c.net.set_drop_probability(0.0);
        // Hints written while nodes were cut off reach them now.
        for n in &c.nodes {
            for m in &c.nodes {
                if n.host != m.host {
                    n.coord.deliver_hints(m.host).await.unwrap();
                }
            }
        }
        // Every acknowledged write is seen by a QUORUM read, a QUORUM range
        // scan (read from every node), with its value or a later one.
        for (key, ts) in &acked {
            let node = rng.gen_range(0..3);
            let got = c.nodes[node]
                .coord
                .read(
                    c.table,
                    &DecoratedKey::new(key.clone()),
                    ReadFilter::all(),
                    ConsistencyLevel::Quorum,
                )
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: read of {key}: {e:?}"));
            let seen = cell_ts(&got);
            assert!(
                seen >= Some(*ts),
                "seed {seed}: acknowledged write {key}@{ts} missing, read {seen:?}"
            );
            checked += 1;
        }
        for n in &c.nodes {
            let request = gyre_storage::ScanRequest {
                start: gyre_storage::ScanStart::Token(std::ops::Bound::Unbounded),
                end: std::ops::Bound::Unbounded,
                filter: ReadFilter::all(),
                max_rows: 2,
                index: None,
            };
            // Small pages: the scan resumes across replicas' stops.
            let mut seen: BTreeMap<String, Timestamp> = BTreeMap::new();
            let mut req = request;
            loop {
                let page = n
                    .coord
                    .scan(c.table, req.clone(), 0, ConsistencyLevel::Quorum)
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed}: scan: {e:?}"));
                for p in &page.partitions {
                    let k = String::from_utf8(p.key.key.to_vec()).unwrap();
                    let ts = cell_ts(&Some(p.clone())).unwrap_or_default();
                    assert!(
                        seen.insert(k.clone(), ts).is_none(),
                        "seed {seed}: {k} scanned twice"
                    );
                }
                match page.resume {
                    Some(s) => req.start = s,
                    None => break,
                }
            }
            for (key, ts) in &acked {
                assert!(
                    seen.get(key).copied() >= Some(*ts),
                    "seed {seed}: scan misses {key}@{ts}: {seen:?}"
                );
            }
        }
        c.stop().await;
    }
    assert!(
        checked > 12,
        "too few acknowledged writes checked: {checked}"
    );
}

/// Regression (a deadlock found under load): the node's failure detector
/// takes the gossip lock, and the gossip task updates the ring while
/// holding it; so the coordinator must never ask for liveness while it
/// holds the ring lock. The liveness here checks exactly that, on every
/// request path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_is_never_asked_under_the_ring_lock() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let net = SimNetwork::new(77);
    let table = TableId(uuid::Uuid::from_u128(42));
    let mut ring = TokenMetadata::new();
    let mut addrs = Vec::new();
    for i in 1..=3u128 {
        let addr: SocketAddr = format!("10.0.1.{i}:7000").parse().unwrap();
        let info = NodeInfo {
            host_id: uuid::Uuid::from_u128(900 + i),
            address: addr,
            dc: "dc1".into(),
            rack: "r1".into(),
        };
        ring.update_normal(info, &[(i as i64 - 2) * 3_000_000_000_000_000_000])
            .unwrap();
        addrs.push((uuid::Uuid::from_u128(900 + i), addr));
    }
    let ring = Arc::new(RwLock::new(ring));
    let violations = Arc::new(AtomicUsize::new(0));
    let asked = Arc::new(AtomicUsize::new(0));
    let mut coords = Vec::new();
    for (i, (host, addr)) in addrs.iter().enumerate() {
        let mut cfg = LsmConfig::in_dir(dir.path().join(format!("n{i}")));
        cfg.sync = SyncMode::Periodic { period_ms: 1000 };
        let engine = Arc::new(LsmEngine::open(cfg).unwrap());
        engine.create_table(table, TableOptions::default()).unwrap();
        let (r, v, a) = (ring.clone(), violations.clone(), asked.clone());
        let coord = Coordinator::new(
            CoordinatorConfig::new(*host, "dc1"),
            net.messenger(*addr).unwrap(),
            engine,
            ring.clone(),
            Arc::new(move |t: TableId| (t == table).then(|| ReplicationStrategy::simple(3))),
            Arc::new(move |_h: HostId| {
                a.fetch_add(1, Ordering::Relaxed);
                // Requests run one at a time here: a held ring lock can
                // only be the coordinator's own.
                if r.try_write().is_none() {
                    v.fetch_add(1, Ordering::Relaxed);
                }
                true
            }),
        );
        coords.push(coord);
    }
    let c = &coords[0];
    c.write(table, update("a", 1, "x"), ConsistencyLevel::Quorum)
        .await
        .unwrap();
    c.write_batch(
        vec![(table, update("b", 1, "y")), (table, update("c", 1, "z"))],
        ConsistencyLevel::Quorum,
        true,
    )
    .await
    .unwrap();
    c.read(
        table,
        &DecoratedKey::new("a".to_string()),
        ReadFilter::all(),
        ConsistencyLevel::All,
    )
    .await
    .unwrap();
    let request = gyre_storage::ScanRequest {
        start: gyre_storage::ScanStart::Token(std::ops::Bound::Unbounded),
        end: std::ops::Bound::Unbounded,
        filter: ReadFilter::all(),
        max_rows: 10,
        index: None,
    };
    c.scan(table, request, 0, ConsistencyLevel::Quorum)
        .await
        .unwrap();
    c.truncate(table).await.unwrap();
    assert!(asked.load(Ordering::Relaxed) > 0, "liveness was consulted");
    assert_eq!(
        violations.load(Ordering::Relaxed),
        0,
        "liveness asked while the ring lock was held"
    );
    for c in &coords {
        c.messenger().shutdown().await;
    }
}

/// A replica drops mutations that arrive after their coordinator gave up
/// (the network here delays every message past the write timeout): they
/// are counted, never applied, and never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_drop_mutations_past_their_deadline() {
    let c = Cluster::start(9, T).await;
    c.net.set_delay(2 * T, 2 * T);
    // CL ONE: the coordinator's own replica answers in time.
    c.nodes[0]
        .coord
        .write(c.table, update("late", 10, "a"), ConsistencyLevel::One)
        .await
        .unwrap();
    assert_eq!(cell_ts(&c.local(0, "late")), Some(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for n in &c.nodes[1..] {
        let stage = n.coord.replica_stage();
        while stage.counts(gyre_coordinator::MUTATION).expired < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the late mutation was not dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stage.in_flight(), 0);
    }
    assert_eq!(c.local(1, "late"), None);
    assert_eq!(c.local(2, "late"), None);
    c.stop().await;
}

/// A strategy provider that says when its strategy changes, so the
/// coordinator caches replicas (as the node's schema-backed one does).
struct Versioned {
    table: TableId,
    rf: std::sync::atomic::AtomicUsize,
    version: std::sync::atomic::AtomicU64,
}

impl gyre_coordinator::StrategyProvider for Versioned {
    fn strategy(&self, t: TableId) -> Option<ReplicationStrategy> {
        let rf = self.rf.load(std::sync::atomic::Ordering::SeqCst);
        (t == self.table).then(|| ReplicationStrategy::simple(rf))
    }

    fn version(&self, _t: TableId) -> Option<u64> {
        Some(self.version.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Cached replicas follow the ring and the replication: a key written
/// while one node owns it, then again after a second node joins and takes
/// its range, lands on the new owner; after the replication factor goes to
/// 2 (a new strategy version), on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_replicas_follow_ring_and_replication_changes() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let net = SimNetwork::new(91);
    let table = TableId(uuid::Uuid::from_u128(42));
    let node = |i: u128| NodeInfo {
        host_id: uuid::Uuid::from_u128(950 + i),
        address: format!("10.0.2.{i}:7000").parse().unwrap(),
        dc: "dc1".into(),
        rack: "r1".into(),
    };
    let key = DecoratedKey::new("k".to_string());
    let mut ring = TokenMetadata::new();
    // Node 1 alone owns the whole ring.
    ring.update_normal(node(1), &[key.token.wrapping_add(1_000)])
        .unwrap();
    let ring = Arc::new(RwLock::new(ring));
    let strategies = Arc::new(Versioned {
        table,
        rf: 1.into(),
        version: 1.into(),
    });
    let mut engines = Vec::new();
    let mut coords = Vec::new();
    for i in 1..=2u128 {
        let mut cfg = LsmConfig::in_dir(dir.path().join(format!("n{i}")));
        cfg.sync = SyncMode::Periodic { period_ms: 1000 };
        let engine = Arc::new(LsmEngine::open(cfg).unwrap());
        engine.create_table(table, TableOptions::default()).unwrap();
        coords.push(Coordinator::new(
            CoordinatorConfig::new(node(i).host_id, "dc1"),
            net.messenger(node(i).address).unwrap(),
            engine.clone(),
            ring.clone(),
            strategies.clone(),
            Arc::new(|_h: HostId| true),
        ));
        engines.push(engine);
    }
    let ts_on = |e: &LsmEngine| cell_ts(&e.read(table, &key, &ReadFilter::all(), 0).unwrap());
    let c = &coords[0];
    c.write(table, update("k", 1, "a"), ConsistencyLevel::One)
        .await
        .unwrap();
    assert_eq!(ts_on(&engines[0]), Some(1));
    assert_eq!(ts_on(&engines[1]), None);
    // Node 2 joins with the key's token: it owns the key's range now.
    ring.write().update_normal(node(2), &[key.token]).unwrap();
    c.write(table, update("k", 2, "b"), ConsistencyLevel::One)
        .await
        .unwrap();
    assert_eq!(ts_on(&engines[1]), Some(2), "the new owner got the write");
    assert_eq!(ts_on(&engines[0]), Some(1), "the old owner did not");
    // Replication factor 2: both nodes are replicas.
    strategies.rf.store(2, Ordering::SeqCst);
    strategies.version.fetch_add(1, Ordering::SeqCst);
    c.write(table, update("k", 3, "c"), ConsistencyLevel::All)
        .await
        .unwrap();
    assert_eq!(ts_on(&engines[0]), Some(3));
    assert_eq!(ts_on(&engines[1]), Some(3));
    for c in &coords {
        c.messenger().shutdown().await;
    }
}

/// Which nodes hold a Paxos promise for `key` of `table`.
fn promised_on(c: &Cluster, key: &str) -> Vec<usize> {
    let mut state_key = c.table.0.as_bytes().to_vec();
    state_key.extend_from_slice(key.as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (0..c.nodes.len())
        .filter(|&i| {
            c.nodes[i]
                .engine
                .read(
                    gyre_coordinator::PAXOS_TABLE,
                    &DecoratedKey::new(state_key.clone()),
                    &ReadFilter::all(),
                    now,
                )
                .unwrap()
                .and_then(|p| p.rows.get(&bytes::Bytes::new()).cloned())
                .is_some_and(|r| r.cells.contains_key(&CellName::simple("promised")))
        })
        .collect()
}

/// An uncontended CAS asks a quorum (its own replica and one other) to
/// promise; with RF 3 its own replica accepts, then both others accept and
/// commit in one round trip (PAXOS_PROPOSE_COMMIT); with the replica it
/// asks silent (not known down), the round asks the third after a moment
/// and the CAS still succeeds well within the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_asks_a_quorum_first_and_the_others_when_one_stays_silent() {
    let c = Cluster::start(11, Duration::from_secs(2)).await;
    let key = DecoratedKey::new("a");
    let cas = |v: &'static str| {
        c.nodes[0].coord.cas(
            c.table,
            &key,
            ReadFilter::all(),
            ConsistencyLevel::Serial,
            ConsistencyLevel::Quorum,
            Box::new(move |_: Option<&Partition>, ts: Timestamp| Ok(Some(update("a", ts, v)))),
        )
    };
    // Conditions not met: a prepare only, which shows who was asked.
    let unmet = c.nodes[0]
        .coord
        .cas(
            c.table,
            &key,
            ReadFilter::all(),
            ConsistencyLevel::Serial,
            ConsistencyLevel::Quorum,
            Box::new(|_: Option<&Partition>, _: Timestamp| Ok(None)),
        )
        .await
        .unwrap();
    assert!(!unmet.applied);
    let asked = promised_on(&c, "a");
    assert_eq!(asked.len(), 2, "promises on {asked:?}");
    assert!(asked.contains(&0), "the coordinator's own replica first");
    assert!(cas("x").await.unwrap().applied);
    // Every replica gets the commit (one in the background).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (0..3).any(|i| c.local(i, "a").is_none()) {
        assert!(std::time::Instant::now() < deadline, "commit missing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The replica the prepare spared accepted (and committed) the proposal.
    assert_eq!(promised_on(&c, "a"), vec![0, 1, 2]);
    let other = asked[1];
    c.net.isolate(c.nodes[other].addr);
    let started = std::time::Instant::now();
    let out = cas("y").await.unwrap();
    assert!(out.applied);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let third = 3 - other;
    assert_eq!(
        cell_ts(&c.local(third, "a")),
        cell_ts(&c.local(0, "a")),
        "the third replica took the second CAS"
    );
    c.stop().await;
}
