//! `gyrectl cluster up` starts real nodes that find each other quickly;
//! `/status`, `/metrics`, `/faults` and `gyrectl status` report them.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use gyre_tests::cluster::TestCluster;

#[test]
fn three_nodes_converge_and_report() {
    let c = TestCluster::new(3, 10);
    let t0 = Instant::now();
    let out = c.up();
    let took = t0.elapsed();
    eprintln!("cluster up took {:.2} s", took.as_secs_f64());
    assert!(
        took < Duration::from_secs(10),
        "3 nodes took {took:?} to see each other UP/NORMAL\n{}",
        c.logs()
    );
    assert!(out.contains("cqlsh 127.0.10.1 9042"), "{out}");
    for obs in 1..=3 {
        for target in 1..=3 {
            assert!(
                c.sees(obs, target, true),
                "node {obs} does not see {target} UN"
            );
        }
    }

    // Idempotent: a second `up` notices the running cluster.
    let again = c.up();
    assert!(again.contains("already running"), "{again}");

    // nodetool-style status: three UN lines.
    let status = c.gyrectl_ok(&["status", "--host", "127.0.10.2", "--port", "9180"]);
    let un = status.lines().filter(|l| l.starts_with("UN ")).count();
    assert_eq!(un, 3, "{status}");
    assert!(status.contains("Datacenter: dc1"), "{status}");

    // /status JSON: every node, with identity, tokens and ownership.
    let body = gyre_node::http::get(c.admin(1), "/status", Duration::from_secs(2)).unwrap();
    let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(raw["cluster_name"], "test cluster");
    let r = c.status(1).unwrap();
    assert_eq!(r.address, "127.0.10.1:7000");
    assert_eq!(r.endpoints.len(), 3);
    let mut hosts: Vec<_> = r
        .endpoints
        .iter()
        .map(|e| e.host_id.clone().unwrap())
        .collect();
    hosts.dedup();
    assert_eq!(hosts.len(), 3);
    let owned: f64 = r.endpoints.iter().map(|e| e.ownership).sum();
    assert!((owned - 1.0).abs() < 1e-6, "ownership sums to {owned}");
    for e in &r.endpoints {
        assert_eq!(e.tokens.len(), 16, "{e:?}");
        assert_eq!(e.dc.as_deref(), Some("dc1"));
        assert_eq!(e.rack.as_deref(), Some("rack1"));
        assert!(e
            .release_version
            .as_deref()
            .is_some_and(|v| v.starts_with('5')));
        assert!(e.schema.is_some() && e.load.is_some() && e.generation > 0);
        assert!(e.ownership > 0.2, "unbalanced ring: {e:?}");
    }
    assert_eq!(
        r.endpoints[1].native_address.as_deref(),
        Some("127.0.10.2:9042")
    );

    // Ownership as nodetool shows it. No keyspace of users: effective
    // ownership of system_traces (RF 2), which sums to 200%.
    let status = c.gyrectl_ok(&["status", "--host", "127.0.10.1"]);
    assert!(status.contains("Owns (effective)"), "{status}");
    assert_sums(&status, 200.0);
    let cql = |stmt: &str| {
        let out = gyre_tests::cqlsh::gyresh_exec(c.cql(1), stmt);
        assert!(out.ok, "{stmt}: {}{}", out.stdout, out.stderr);
    };
    // Every non-system keyspace replicated alike: effective for them.
    cql("CREATE KEYSPACE own3 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}");
    let status = c.gyrectl_ok(&["status", "--host", "127.0.10.1"]);
    assert!(status.contains("Owns (effective)"), "{status}");
    assert_eq!(status.matches(" 100.0% ").count(), 3, "{status}");
    // Replicated differently: primary shares and nodetool's note ...
    cql("CREATE KEYSPACE own1 WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 1}");
    let status = c.gyrectl_ok(&["status", "--host", "127.0.10.1"]);
    assert!(!status.contains("(effective)"), "{status}");
    assert!(
        status.contains(
            "Note: Non-system keyspaces don't have the same replication settings, \
             effective ownership information is meaningless"
        ),
        "{status}"
    );
    assert_sums(&status, 100.0);
    // ... unless a keyspace is named.
    let status = c.gyrectl_ok(&["status", "own1", "--host", "127.0.10.1"]);
    assert!(
        status.contains("Owns (effective)") && !status.contains("Note:"),
        "{status}"
    );
    assert_sums(&status, 100.0);
    let out = c.gyrectl(&["status", "nosuch", "--host", "127.0.10.1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("The keyspace nosuch, does not exist"),
        "{err}"
    );
    let status = c.gyrectl_ok(&["status", "system", "--host", "127.0.10.1"]);
    assert!(
        status.contains("Note: Ownership values for keyspaces with LocalStrategy are meaningless"),
        "{status}"
    );

    // /metrics: Prometheus text with gossip rounds and per-verb counters.
    let metrics = gyre_node::http::get(c.admin(2), "/metrics", Duration::from_secs(2)).unwrap();
    let rounds: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gyre_gossip_rounds_total "))
        .expect("gossip rounds metric")
        .parse()
        .unwrap();
    assert!(rounds >= 1.0, "{metrics}");
    assert!(metrics.contains("gyre_gossip_peers_up 2"), "{metrics}");
    assert!(
        metrics.contains("gyre_messages_sent_total{verb=\"gossip\"}"),
        "{metrics}"
    );

    // /faults: set, read back, reject garbage, clear.
    let rules = r#"{"peers": {"127.0.10.3:7000": {"drop_all": true}}}"#;
    let (code, _) = gyre_node::http::request(
        c.admin(1),
        "POST",
        "/faults",
        Some(rules.as_bytes()),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(code, 200);
    let now = gyre_node::http::get(c.admin(1), "/faults", Duration::from_secs(2)).unwrap();
    assert!(now.contains("127.0.10.3:7000"), "{now}");
    let (code, _) = gyre_node::http::request(
        c.admin(1),
        "POST",
        "/faults",
        Some(b"{\"bogus\": 1}"),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(code, 400);
    let (code, _) = gyre_node::http::request(
        c.admin(1),
        "DELETE",
        "/faults",
        None,
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(code, 200);
    let now = gyre_node::http::get(c.admin(1), "/faults", Duration::from_secs(2)).unwrap();
    assert!(!now.contains("127.0.10.3:7000"), "{now}");

    // Graceful shutdown of everything: SIGTERM, announce, flush, exit.
    c.gyrectl_ok(&["cluster", "down"]);
    for n in 1..=3 {
        let log =
            std::fs::read_to_string(c.cluster_dir().join(format!("node{n}/gyre.log"))).unwrap();
        assert!(
            log.contains("storage flushed"),
            "node {n} did not flush:\n{log}"
        );
    }
}

/// The `Owns` percentages of `gyrectl status` output add up to `total`.
fn assert_sums(status: &str, total: f64) {
    let sum: f64 = status
        .lines()
        .filter(|l| l.starts_with("UN  "))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_suffix('%')))
        .map(|p| p.parse::<f64>().unwrap())
        .sum();
    assert!(
        (sum - total).abs() < 0.5,
        "Owns sums to {sum}%, not {total}%:\n{status}"
    );
}
