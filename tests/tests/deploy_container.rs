//! The container image and a three-container cluster (README
//! "Deployment"), run only with `GYRE_CONTAINER_TESTS=1` (`.ci/run` sets it
//! when podman is installed; otherwise the test says SKIPPED).
//!
//! `scripts/build-image.sh` builds the image from this build's binaries
//! with no registry (a debootstrap minbase root imported with
//! `podman import`); then three containers of it run with
//! `--network host`, each node on its own loopback address (127.0.71.1-3;
//! no other test uses 127.0.71.x), data on named volumes, configured by
//! environment variables only. cqlsh (PyPI), gyresh and gyre-stress reach
//! the cluster; `podman kill` of one container shows it DN and QUORUM
//! writes and reads keep working; the container restarted on its volume
//! comes back UN with the same host id, and `gyre-stress read --validate`
//! at ALL finds every row. Then what scaling and rescheduling do: node 3's
//! container, stopped and started on its volume at a NEW address
//! (127.0.160.3, as a rescheduled pod gets a new IP), comes back UN with
//! the same host id and its data, and its old address leaves every node's
//! view; a 4th container (127.0.160.4) started with the seeds of the
//! running three bootstraps (data streamed to it, validated through it at
//! QUORUM and ONE), is decommissioned with `gyrectl decommission` in its
//! container (the README's Kubernetes scale-down) and leaves with its data
//! on the others (validated at ALL), and refuses to start again on that
//! volume. A separate one-node cluster (127.0.161.1) runs with
//! PasswordAuthenticator, client TLS and internode TLS set only through
//! the entrypoint's `GYRE_*` variables; gyresh and cqlsh log in over TLS.
//! It prints the image size and the time from `podman run` to the first
//! node answering CQL. Everything it creates (containers, volumes, image)
//! is removed at the end, also on failure.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use gyre_protocol::Consistency;
use gyre_tests::cluster::workspace_bin;
use gyre_tests::cql_client::CqlClient;
use gyre_tests::deploy::{poll, repo_root, run, run_ok, tools_or_skip};

const IMAGE: &str = "localhost/gyre-it";
const NODES: usize = 3;
/// Containers: the three, the 4th that joins and leaves, the secure one.
const CONTAINERS: usize = 5;
const SECURE: usize = 5;
const CLUSTER: &str = "container test";

/// Node addresses: 1-3 on 127.0.71.x; the 4th and node 3 once moved on
/// 127.0.160.x; the secure node on 127.0.161.1.
fn ip(node: usize) -> String {
    match node {
        4 => "127.0.160.4".into(),
        SECURE => "127.0.161.1".into(),
        n => format!("127.0.71.{n}"),
    }
}

/// Node 3's address after its reschedule.
const MOVED: &str = "127.0.160.3";

fn name(node: usize) -> String {
    format!("gyre-it-n{node}")
}

fn admin(node: usize) -> SocketAddr {
    admin_at(&ip(node))
}

fn admin_at(ip: &str) -> SocketAddr {
    format!("{ip}:9180").parse().unwrap()
}

fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc"]);
    c
}

/// Removes the containers, volumes and image, also when the test fails.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in 1..=CONTAINERS {
            let _ = podman()
                .args(["rm", "-f", "-v", "-t", "0", &name(n)])
                .output();
            let _ = podman().args(["volume", "rm", "-f", &name(n)]).output();
        }
        let version = env!("CARGO_PKG_VERSION");
        let _ = podman()
            .args([
                "rmi",
                "-f",
                &format!("{IMAGE}:latest"),
                &format!("{IMAGE}:{version}"),
            ])
            .output();
    }
}

/// `min(want, hard limit)`: podman cannot raise a limit above the hard one.
fn ulimit(flag: &str, want: u64) -> u64 {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -H{flag}"))
        .output()
        .unwrap();
    let hard = String::from_utf8_lossy(&out.stdout).trim().to_string();
    hard.parse().map_or(want, |h: u64| h.min(want))
}

/// `podman run` with the explicit limits runc needs here (it cannot set
/// podman's defaults, which exceed this machine's hard limits).
fn podman_run() -> Command {
    let nofile = ulimit("n", 1_048_576);
    let nproc = ulimit("u", 32_768);
    let mut c = podman();
    c.arg("run")
        .arg(format!("--ulimit=nofile={nofile}:{nofile}"))
        .arg(format!("--ulimit=nproc={nproc}:{nproc}"));
    c
}

fn start(node: usize) {
    start_at(node, &ip(node));
}

/// Starts node `node`'s container (on its volume) listening on `addr`.
fn start_at(node: usize, addr: &str) {
    run_ok(
        podman_run()
            .args(["-d", "--name", &name(node), "--network", "host"])
            // As the Kubernetes manifests run it: a read-only root.
            .arg("--read-only")
            .args(["-v", &format!("{}:/var/lib/gyre", name(node))])
            .args(["-e", &format!("GYRE_CLUSTER_NAME={CLUSTER}")])
            .args(["-e", &format!("GYRE_LISTEN_ADDRESS={addr}")])
            .args(["-e", &format!("GYRE_ADMIN_ADDRESS={addr}")])
            .args(["-e", &format!("GYRE_SEEDS={}", ip(1))])
            .args(["-e", "GYRE_NUM_TOKENS=16"])
            .args(["-e", "GYRE_DATACENTER=dc1"])
            .args(["-e", &format!("GYRE_RACK=rack{node}")])
            // A joining or leaving node waits this long for the ring to
            // settle (Cassandra's 30 s RING_DELAY by default).
            .args(["-e", "GYRE_RING_DELAY_MS=1000"])
            .arg(format!("{IMAGE}:latest")),
    );
}

fn logs(node: usize) -> String {
    let out = podman()
        .args(["logs", "--tail", "30", &name(node)])
        .output()
        .unwrap();
    format!(
        "--- {} ---\n{}{}",
        name(node),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn all_logs() -> String {
    (1..=CONTAINERS).map(logs).collect()
}

/// How `observer` sees `target`: Some(up) when it knows it as NORMAL.
fn sees(observer: usize, target: usize) -> Option<bool> {
    sees_at(&ip(observer), &ip(target))
}

/// [`sees`] by addresses.
fn sees_at(observer: &str, target: &str) -> Option<bool> {
    let e = view(observer, target)?;
    e.is_normal().then(|| e.is_up())
}

/// `target` as `observer`'s `/status` lists it (None: not listed, or
/// `observer` does not answer).
fn view(observer: &str, target: &str) -> Option<gyre_node::EndpointReport> {
    let r = gyrectl::fetch_status(admin_at(observer), Duration::from_secs(1)).ok()?;
    let addr = format!("{target}:7000");
    r.endpoints.into_iter().find(|e| e.address == addr)
}

/// Whether `observer` answers and no longer lists `target` at all.
fn forgot(observer: &str, target: &str) -> bool {
    gyrectl::fetch_status(admin_at(observer), Duration::from_secs(1)).is_ok_and(|r| {
        let addr = format!("{target}:7000");
        r.endpoints.iter().all(|e| e.address != addr)
    })
}

/// Whether `observer` answers and sees `target` out of the ring (LEFT, as
/// gossip keeps it for a while, or not listed).
fn left_ring(observer: &str, target: &str) -> bool {
    gyrectl::fetch_status(admin_at(observer), Duration::from_secs(1)).is_ok_and(|r| {
        let addr = format!("{target}:7000");
        r.endpoints
            .iter()
            .all(|e| e.address != addr || e.status.as_deref() == Some("LEFT"))
    })
}

fn host_id(node: usize) -> String {
    host_id_at(&ip(node))
}

fn host_id_at(ip: &str) -> String {
    gyrectl::fetch_status(admin_at(ip), Duration::from_secs(2))
        .unwrap()
        .host_id
}

fn wait(what: &str, timeout: Duration, cond: impl FnMut() -> bool) -> Duration {
    let took = poll(timeout, cond).unwrap_or_else(|| {
        panic!(
            "timed out after {timeout:?} waiting for {what}\n{}",
            all_logs()
        )
    });
    eprintln!("{what}: after {:.2} s", took.as_secs_f64());
    took
}

fn answers_cql(node: usize) -> bool {
    let addr: SocketAddr = format!("{}:9042", ip(node)).parse().unwrap();
    CqlClient::connect_with(addr, Duration::from_secs(2))
        .and_then(|mut c| c.query("SELECT release_version FROM system.local", Consistency::One))
        .is_ok_and(|o| matches!(o, gyre_tests::cql_client::Outcome::Rows(..)))
}

fn stress(args: &[&str]) -> String {
    let hosts = (1..=NODES).map(ip).collect::<Vec<_>>().join(",");
    stress_via(&hosts, args)
}

/// gyre-stress with `hosts` (comma-separated) as its contact points.
fn stress_via(hosts: &str, args: &[&str]) -> String {
    let (ok, out) = run(Command::new(workspace_bin("gyre-stress")).args(args).args([
        "--hosts",
        hosts,
        "--keyspace",
        "container_it",
        "--rf",
        "3",
    ]));
    assert!(ok, "gyre-stress {args:?} failed:\n{out}\n{}", all_logs());
    out
}

#[test]
fn three_containers_kill_restart_validate() {
    if std::env::var("GYRE_CONTAINER_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED three_containers_kill_restart_validate: set GYRE_CONTAINER_TESTS=1 to run \
             it (needs podman and runc: scripts/install-deploy-deps.sh)"
        );
        return;
    }
    if !tools_or_skip(
        "three_containers_kill_restart_validate",
        &["podman", "runc"],
    ) {
        return;
    }
    // One run per machine at a time (CI and a developer, say): runs share
    // the container names, the image tag and the addresses, and each
    // starts by removing the containers it finds.
    let _machine =
        gyre_tests::python::VenvLock::take(std::path::Path::new("/tmp/gyre-deploy-container"));
    let _cleanup = Cleanup;
    drop(Cleanup); // leftovers of an earlier, interrupted run

    // The image, from this build's binaries, without a registry.
    let bin_dir: PathBuf = workspace_bin("gyre").parent().unwrap().to_path_buf();
    let out = Command::new(repo_root().join("scripts/build-image.sh"))
        .args(["--profile", "debug", "--tag", IMAGE, "--bin-dir"])
        .arg(&bin_dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/build-image.sh failed:\n{text}"
    );
    let inspect = run_ok(podman().args([
        "image",
        "inspect",
        "--format",
        "{{.Size}}|{{.Config.User}}|{{.Config.Healthcheck.Test}}|{{.Config.Volumes}}|{{.Config.ExposedPorts}}",
        &format!("{IMAGE}:latest"),
    ]));
    let f: Vec<&str> = inspect.trim().split('|').collect();
    let size: u64 = f[0].parse().unwrap();
    eprintln!(
        "image {IMAGE}: {:.1} MB (debug binaries, stripped)",
        size as f64 / 1e6
    );
    assert_eq!(f[1], "gyre", "the image runs as gyre");
    assert!(f[2].contains("gyre-healthcheck"), "healthcheck: {}", f[2]);
    assert!(f[3].contains("/var/lib/gyre"), "volume: {}", f[3]);
    for port in ["7000/tcp", "9042/tcp", "9180/tcp"] {
        assert!(f[4].contains(port), "exposed ports: {}", f[4]);
    }

    // Every variable of the entrypoint reaches its key (the node prints
    // its effective configuration); a seed given by name is resolved.
    let printed = run_ok(
        podman_run()
            .args(["--rm", "--network", "host"])
            .args(["-e", "GYRE_CLUSTER_NAME=env check"])
            .args(["-e", "GYRE_SEEDS=localhost, 127.0.71.9:7100"])
            .args(["-e", "GYRE_NUM_TOKENS=8"])
            .args(["-e", "GYRE_DATACENTER=dc7"])
            .args(["-e", "GYRE_RACK=r7"])
            .args(["-e", "GYRE_LISTEN_ADDRESS=127.0.71.9"])
            .args(["-e", "GYRE_INTERNODE_PORT=7100"])
            .args(["-e", "GYRE_CQL_ADDRESS=127.0.71.8"])
            .args(["-e", "GYRE_CQL_PORT=9043"])
            .args(["-e", "GYRE_ADMIN_ADDRESS=127.0.71.7"])
            .args(["-e", "GYRE_ADMIN_PORT=9181"])
            .args(["-e", "GYRE_COMMITLOG_SYNC=batch"])
            .args(["-e", "GYRE_LOG_LEVEL=debug"])
            .args(["-e", "GYRE_AUTO_BOOTSTRAP=false"])
            .args(["-e", "GYRE_RING_DELAY_MS=1234"])
            .args(["-e", "GYRE_AUTHENTICATOR=PasswordAuthenticator"])
            .args(["-e", "GYRE_AUTHORIZER=CassandraAuthorizer"])
            .args(["-e", "GYRE_CLIENT_ENCRYPTION=false"])
            .args(["-e", "GYRE_CLIENT_ENCRYPTION_OPTIONAL=true"])
            .args(["-e", "GYRE_CLIENT_CERTIFICATE=/c/client.crt"])
            .args(["-e", "GYRE_CLIENT_PRIVATE_KEY=/c/client.key"])
            .args(["-e", "GYRE_CLIENT_CA_CERTIFICATE=/c/client-ca.crt"])
            .args(["-e", "GYRE_CLIENT_REQUIRE_CLIENT_AUTH=true"])
            .args(["-e", "GYRE_INTERNODE_ENCRYPTION=none"])
            .args(["-e", "GYRE_INTERNODE_CERTIFICATE=/c/node.crt"])
            .args(["-e", "GYRE_INTERNODE_PRIVATE_KEY=/c/node.key"])
            .args(["-e", "GYRE_INTERNODE_CA_CERTIFICATE=/c/ca.crt"])
            .args(["-e", "GYRE_INTERNODE_ENDPOINT_VERIFICATION=false"])
            .arg(format!("{IMAGE}:latest"))
            .arg("--print-config"),
    );
    for line in [
        "name = \"env check\"",
        "seeds = [\"127.0.0.1\", \"127.0.71.9:7100\"]",
        "num_tokens = 8",
        "datacenter = \"dc7\"",
        "rack = \"r7\"",
        "listen_address = \"127.0.71.9\"",
        "internode_port = 7100",
        "cql_address = \"127.0.71.8\"",
        "cql_port = 9043",
        "listen_address = \"127.0.71.7\"",
        "admin_port = 9181",
        "commitlog_sync = \"batch\"",
        "level = \"debug\"",
        "data_dir = \"/var/lib/gyre/data\"",
        "auto_bootstrap = false",
        "ring_delay_ms = 1234",
        "authenticator = \"PasswordAuthenticator\"",
        "authorizer = \"CassandraAuthorizer\"",
        "optional = true",
        "certificate = \"/c/client.crt\"",
        "private_key = \"/c/client.key\"",
        "ca_certificate = \"/c/client-ca.crt\"",
        "require_client_auth = true",
        "internode_encryption = \"none\"",
        "certificate = \"/c/node.crt\"",
        "private_key = \"/c/node.key\"",
        "ca_certificate = \"/c/ca.crt\"",
        "require_endpoint_verification = false",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no `{line}` in:\n{printed}"
        );
    }

    // A new node that is one of its seeds itself (pod 0 forming a cluster
    // before pod 1 is in DNS) waits for no other seed name (else this
    // would wait GYRE_SEED_WAIT_SECS, 600 s, and time out).
    let printed = run_ok(
        Command::new("timeout")
            .args(["60", "podman"])
            .args(podman_run().get_args())
            .args(["--rm", "--network", "host"])
            .args(["-e", "GYRE_SEEDS=127.0.71.9,gyre-nowhere.invalid"])
            .args(["-e", "GYRE_SEED_WAIT_SECS=600"])
            .args(["-e", "GYRE_LISTEN_ADDRESS=127.0.71.9"])
            .arg(format!("{IMAGE}:latest"))
            .arg("--print-config"),
    );
    assert!(
        printed.lines().any(|l| l == "seeds = [\"127.0.71.9\"]"),
        "{printed}"
    );

    // The secure one-node cluster starts now; it is checked at the end
    // (its default superuser appears after a delay).
    let tls_dir = tempfile::tempdir().unwrap();
    start_secure(tls_dir.path());

    // Node 1 (the seed): time from `podman run` to CQL.
    for n in 1..=4 {
        run_ok(podman().args(["volume", "create", &name(n)]));
    }
    let t0 = Instant::now();
    start(1);
    wait("node 1 answers CQL", Duration::from_secs(90), || {
        answers_cql(1)
    });
    eprintln!(
        "podman run -> CQL answered: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    for n in 2..=NODES {
        start(n);
        wait(&format!("node {n} UN"), Duration::from_secs(90), || {
            (1..=n).all(|o| (1..=n).all(|t| sees(o, t) == Some(true)))
        });
    }
    // The healthcheck, as podman would run it.
    run_ok(podman().args(["healthcheck", "run", &name(2)]));
    // The node runs as gyre, not root, in its container.
    let id = run_ok(podman().args(["exec", &name(1), "id", "-un"]));
    assert_eq!(id.trim(), "gyre");
    // gyrectl status inside the container.
    let status = run_ok(podman().args(["exec", &name(1), "gyrectl", "status", "--host", &ip(1)]));
    assert_eq!(status.matches("UN ").count(), NODES, "{status}");

    // Clients: cqlsh (PyPI), gyresh and gyre-stress.
    let cqlsh = gyre_tests::cqlsh::cqlsh();
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = run(Command::new(&cqlsh).env("HOME", home.path()).args([
        &ip(2),
        "9042",
        "-e",
        "SELECT cluster_name FROM system.local",
    ]));
    assert!(ok && out.contains(CLUSTER), "cqlsh:\n{out}");
    let (ok, out) = run(Command::new(workspace_bin("gyresh")).args([
        &ip(3),
        "-e",
        "SELECT peer FROM system.peers",
    ]));
    assert!(ok && out.contains("(2 rows"), "gyresh:\n{out}");
    let ops = ["--ops", "3000", "--concurrency", "16"];
    stress(&[&["write", "--cl", "QUORUM"][..], &ops[..]].concat());

    // Kill one container: DN, and QUORUM still works.
    let id3 = host_id(3);
    run_ok(podman().args(["kill", &name(3)]));
    wait("node 3 DN", Duration::from_secs(60), || {
        sees(1, 3) == Some(false) && sees(2, 3) == Some(false)
    });
    let status = run_ok(Command::new(workspace_bin("gyrectl")).args(["status", "--host", &ip(1)]));
    assert!(status.contains(&format!("DN  {}", ip(3))), "{status}");
    stress(&[&["write", "--cl", "QUORUM"][..], &ops[..]].concat());
    stress(&[&["read", "--validate", "--cl", "QUORUM"][..], &ops[..]].concat());

    // Restart it on its volume: UN again, same identity, every row there.
    run_ok(podman().args(["start", &name(3)]));
    wait("node 3 UN again", Duration::from_secs(90), || {
        (1..=NODES).all(|o| sees(o, 3) == Some(true))
    });
    assert_eq!(host_id(3), id3, "node 3 kept its host id (its volume)");
    // Hints replay to node 3; ALL then needs its answer for every key.
    wait("hints delivered to node 3", Duration::from_secs(60), || {
        (1..=2).all(|n| {
            gyrectl::fetch_status(admin(n), Duration::from_secs(1))
                .is_ok_and(|r| r.hints.iter().all(|h| h.bytes == 0))
        })
    });
    stress(&[&["read", "--validate", "--cl", "ALL"][..], &ops[..]].concat());

    reschedule_node_3(&ops);
    let hosts = format!("{},{},{MOVED}", ip(1), ip(2));
    scale_out_and_in(&hosts, &ops);
    secure_node_logins(tls_dir.path());

    // Graceful stop: SIGTERM, flush, exit 0; for node 1 by `podman stop`,
    // for node 2 by the Kubernetes preStop hook's command.
    run_ok(podman().args(["stop", "-t", "60", &name(1)]));
    assert_eq!(exit_code(1).as_deref(), Some("0"), "{}", logs(1));
    let statefulset =
        std::fs::read_to_string(repo_root().join("deploy/k8s/base/statefulset.yaml")).unwrap();
    let pre_stop = statefulset
        .lines()
        .find_map(|l| l.trim().strip_prefix("- kill -TERM 1"))
        .map(|rest| format!("kill -TERM 1{rest}"))
        .expect("the preStop command in deploy/k8s/base/statefulset.yaml");
    // The exec ends with the container (it kills what runs in it).
    let _ = run(podman().args(["exec", &name(2), "/bin/sh", "-c", &pre_stop]));
    wait(
        "node 2 exits after preStop",
        Duration::from_secs(60),
        || exit_code(2).is_some(),
    );
    assert_eq!(exit_code(2).as_deref(), Some("0"), "{}", logs(2));
}

/// A stopped container's exit code.
fn exit_code(node: usize) -> Option<String> {
    let out = podman()
        .args([
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &name(node),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, code) = text.trim().split_once(' ')?;
    (status == "exited").then(|| code.to_string())
}

/// What Kubernetes does when it reschedules a pod: the same volume, a new
/// IP. Node 3 must come back UN under its host id with its data, and its
/// old address must leave every node's view (Cassandra's host id
/// collision: the endpoint that started last owns the id).
fn reschedule_node_3(ops: &[&str]) {
    let id3 = host_id(3);
    // Drained as the preStop hook does, then gone; a new container of the
    // same volume starts at the new address.
    run_ok(podman().args(["stop", "-t", "60", &name(3)]));
    run_ok(podman().args(["rm", &name(3)]));
    start_at(3, MOVED);
    wait(
        "node 3 UN at its new address, the old one forgotten",
        Duration::from_secs(90),
        || {
            [ip(1), ip(2), MOVED.to_string()]
                .iter()
                .all(|o| sees_at(o, MOVED) == Some(true) && forgot(o, &ip(3)))
        },
    );
    assert_eq!(
        host_id_at(MOVED),
        id3,
        "node 3 kept its host id at its new address"
    );
    for o in [ip(1), ip(2)] {
        let e = view(&o, MOVED).unwrap();
        assert_eq!(
            e.host_id.as_deref(),
            Some(id3.as_str()),
            "{o} sees node 3's host id"
        );
    }
    // The ring as the moved node and the others see it: three nodes, UN.
    for o in [ip(1), MOVED.to_string()] {
        let status = run_ok(Command::new(workspace_bin("gyrectl")).args(["status", "--host", &o]));
        assert_eq!(status.matches("UN ").count(), NODES, "{status}");
        assert!(!status.contains(&format!("{}:7000", ip(3))), "{status}");
    }
    // Its data: every row, read at ALL (every replica answers), through
    // the moved node as the coordinator.
    stress_via(
        MOVED,
        &[
            &[
                "read",
                "--validate",
                "--driver",
                "native",
                "--coordinator-only",
                "--cl",
                "ALL",
            ][..],
            ops,
        ]
        .concat(),
    );
}

/// Scale out, then in: a 4th container started with the seeds of the
/// running three bootstraps (streams its ranges), serves reads at QUORUM
/// and ONE; `gyrectl decommission` in its container streams them back and
/// the node leaves; the others hold every row; the decommissioned volume
/// refuses to rejoin.
fn scale_out_and_in(hosts: &str, ops: &[&str]) {
    let new = ip(4);
    start(4);
    let live = [ip(1), ip(2), MOVED.to_string(), new.clone()];
    wait(
        "node 4 bootstrapped (UN everywhere)",
        Duration::from_secs(90),
        || live.iter().all(|o| sees_at(o, &new) == Some(true)) && answers_cql(4),
    );
    // The Kubernetes readiness probe: UN in its own view, and only its own
    // address counts.
    run_ok(podman().args(["exec", &name(4), "gyre-healthcheck", "--ready"]));
    let (ok, out) = run(podman().args([
        "exec",
        "-e",
        "GYRE_LISTEN_ADDRESS=127.0.160.99",
        &name(4),
        "gyre-healthcheck",
        "--ready",
    ]));
    assert!(!ok, "ready for an address that is not in the ring: {out}");
    // Its ranges came by streaming (bootstrap sessions with rows).
    let (code, body) =
        gyre_node::http::request(admin(4), "GET", "/streams", None, Duration::from_secs(5))
            .unwrap();
    assert_eq!(code, 200, "{body}");
    let sessions: Vec<gyre_node::SessionReport> = serde_json::from_str(&body).unwrap();
    let rows: u64 = sessions
        .iter()
        .filter(|s| s.operation == "bootstrap" && s.direction == "in")
        .map(|s| s.partitions)
        .sum();
    assert!(rows > 0, "node 4 streamed nothing: {sessions:?}");
    assert!(
        sessions.iter().all(|s| s.state == "done"),
        "streams: {sessions:?}"
    );
    eprintln!("node 4 received {rows} partitions by streaming");
    // Through node 4 as the only contact point: QUORUM, then ONE.
    stress_via(
        &new,
        &[
            &[
                "read",
                "--validate",
                "--driver",
                "native",
                "--coordinator-only",
                "--cl",
                "QUORUM",
            ][..],
            ops,
        ]
        .concat(),
    );
    stress_via(
        &new,
        &[
            &[
                "read",
                "--validate",
                "--driver",
                "native",
                "--coordinator-only",
                "--cl",
                "ONE",
            ][..],
            ops,
        ]
        .concat(),
    );

    // Scale in: decommission it from inside its container, as the README's
    // Kubernetes procedure does (`kubectl exec ... gyrectl decommission`).
    // The exec may end with the container, which stops once the node left.
    let _ = run(podman().args(["exec", &name(4), "gyrectl", "decommission", "--host", &new]));
    wait(
        "node 4 left the ring and exited",
        Duration::from_secs(120),
        || exit_code(4).is_some() && live[..3].iter().all(|o| left_ring(o, &new)),
    );
    assert_eq!(exit_code(4).as_deref(), Some("0"), "{}", logs(4));
    for o in &live[..3] {
        let status = run_ok(Command::new(workspace_bin("gyrectl")).args(["status", "--host", o]));
        assert_eq!(status.matches("UN ").count(), NODES, "{status}");
        assert!(!status.contains(&format!("{new}:7000")), "{status}");
    }
    stress_via(
        hosts,
        &[&["read", "--validate", "--cl", "ALL"][..], ops].concat(),
    );
    // A restart on the decommissioned volume (a pod restarted before it is
    // scaled away) is refused: it must not take its old tokens back.
    run_ok(podman().args(["start", &name(4)]));
    wait(
        "the decommissioned node refuses to start",
        Duration::from_secs(60),
        || exit_code(4).is_some_and(|c| c != "0"),
    );
    assert!(
        logs(4).contains("This node was decommissioned and will not rejoin the ring"),
        "{}",
        logs(4)
    );
    // Nothing of it came back (polled: a busy observer may miss one
    // 1-second status request).
    wait(
        "node 4 still out of every ring after the refused start",
        Duration::from_secs(20),
        || live[..3].iter().all(|o| left_ring(o, &new)),
    );
    for o in &live[..3] {
        let e = view(o, &new);
        assert!(
            e.as_ref()
                .is_none_or(|e| e.status.as_deref() == Some("LEFT")),
            "{o} sees node 4 as {e:?}"
        );
    }
}

/// A one-node cluster with logins, client TLS and internode TLS, set only
/// through the entrypoint's variables, the very ones of
/// `deploy/k8s/overlays/secure/config.yaml`, with the material of
/// `scripts/k8s-tls-secret.sh` mounted read-only where that overlay mounts
/// its Secret.
fn start_secure(dir: &std::path::Path) {
    let material = dir.join("tls");
    let out = run_ok(
        Command::new(repo_root().join("scripts/k8s-tls-secret.sh"))
            .arg("--out")
            .arg(&material)
            .args(["--ip", &ip(SECURE)]),
    );
    assert!(
        out.contains("kind: Secret") && out.contains("tls.key: "),
        "{out}"
    );
    // The container's user (uid 999) reads them, as the pods' fsGroup does.
    for f in ["", "ca.crt", "tls.crt", "tls.key"] {
        std::os::unix::fs::chown(material.join(f), Some(999), Some(999)).unwrap();
    }
    let overlay =
        std::fs::read_to_string(repo_root().join("deploy/k8s/overlays/secure/config.yaml"))
            .unwrap();
    let mut cmd = podman_run();
    cmd.args([
        "-d",
        "--name",
        &name(SECURE),
        "--network",
        "host",
        "--read-only",
    ])
    .args(["-v", &format!("{}:/etc/gyre/tls:ro", material.display())])
    .args(["-e", "GYRE_CLUSTER_NAME=secure"])
    .args(["-e", &format!("GYRE_LISTEN_ADDRESS={}", ip(SECURE))])
    .args(["-e", &format!("GYRE_ADMIN_ADDRESS={}", ip(SECURE))])
    .args(["-e", &format!("GYRE_SEEDS={}", ip(SECURE))]);
    let mut vars = 0;
    for line in overlay.lines() {
        if let Some((k, v)) = line.trim().split_once(": ") {
            if k.starts_with("GYRE_") {
                cmd.args(["-e", &format!("{k}={}", v.trim_matches('"'))]);
                vars += 1;
            }
        }
    }
    assert!(vars >= 8, "the secure overlay's variables: {overlay}");
    // The default superuser sooner than Cassandra's 10 s.
    run_ok(
        cmd.arg(format!("{IMAGE}:latest"))
            .args(["--superuser-setup-delay-ms", "500"]),
    );
}

fn secure_node_logins(dir: &std::path::Path) {
    let ca = dir.join("tls/ca.crt");
    let gyresh = |args: &[&str]| {
        run(Command::new(workspace_bin("gyresh"))
            .arg("--ssl-ca")
            .arg(&ca)
            .args(args)
            .args([&ip(SECURE), "-e", "LIST ROLES"]))
    };
    wait(
        "the secure node's superuser logs in over TLS",
        Duration::from_secs(60),
        || gyresh(&["-u", "cassandra", "-p", "cassandra"]).0,
    );
    let (ok, out) = gyresh(&["-u", "cassandra", "-p", "wrong"]);
    assert!(!ok, "a wrong password was accepted: {out}");
    let (ok, out) = gyresh(&[]);
    assert!(!ok, "a login is required: {out}");
    // Plaintext on the TLS-only port is refused.
    let (ok, out) = run(Command::new(workspace_bin("gyresh")).args([
        "-u",
        "cassandra",
        "-p",
        "cassandra",
        &ip(SECURE),
        "-e",
        "LIST ROLES",
    ]));
    assert!(!ok, "plaintext was served: {out}");
    // cqlsh (PyPI) with its SSL settings, as a user would.
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = run(Command::new(gyre_tests::cqlsh::cqlsh())
        .env("HOME", home.path())
        .env("SSL_CERTFILE", &ca)
        .env("SSL_VALIDATE", "true")
        .args([
            &ip(SECURE),
            "9042",
            "--ssl",
            "-u",
            "cassandra",
            "-p",
            "cassandra",
            "-e",
            "SELECT cluster_name FROM system.local",
        ]));
    assert!(ok && out.contains("secure"), "cqlsh over TLS:\n{out}");
    let status = run_ok(podman().args([
        "exec",
        &name(SECURE),
        "gyrectl",
        "status",
        "--host",
        &ip(SECURE),
    ]));
    assert_eq!(status.matches("UN ").count(), 1, "{status}");
    // Internode TLS is on (a one-node cluster has no peer to refuse).
    let out = podman().args(["logs", &name(SECURE)]).output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("internode encryption: all"), "{log}");
}
