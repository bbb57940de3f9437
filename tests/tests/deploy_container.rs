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
//! at ALL finds every row. It prints the image size and the time from
//! `podman run` to the first node answering CQL. Everything it creates
//! (containers, volumes, image) is removed at the end, also on failure.
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
const CLUSTER: &str = "container test";

fn ip(node: usize) -> String {
    format!("127.0.71.{node}")
}

fn name(node: usize) -> String {
    format!("gyre-it-n{node}")
}

fn admin(node: usize) -> SocketAddr {
    format!("{}:9180", ip(node)).parse().unwrap()
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
        for n in 1..=NODES {
            let _ = podman().args(["rm", "-f", "-t", "0", &name(n)]).output();
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
    run_ok(
        podman_run()
            .args(["-d", "--name", &name(node), "--network", "host"])
            // As the Kubernetes manifests run it: a read-only root.
            .arg("--read-only")
            .args(["-v", &format!("{}:/var/lib/gyre", name(node))])
            .args(["-e", &format!("GYRE_CLUSTER_NAME={CLUSTER}")])
            .args(["-e", &format!("GYRE_LISTEN_ADDRESS={}", ip(node))])
            .args(["-e", &format!("GYRE_ADMIN_ADDRESS={}", ip(node))])
            .args(["-e", &format!("GYRE_SEEDS={}", ip(1))])
            .args(["-e", "GYRE_NUM_TOKENS=16"])
            .args(["-e", "GYRE_DATACENTER=dc1"])
            .args(["-e", &format!("GYRE_RACK=rack{node}")])
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
    (1..=NODES).map(logs).collect()
}

/// How `observer` sees `target`: Some(up) when it knows it as NORMAL.
fn sees(observer: usize, target: usize) -> Option<bool> {
    let r = gyrectl::fetch_status(admin(observer), Duration::from_secs(1)).ok()?;
    let addr = format!("{}:7000", ip(target));
    let e = r.endpoints.into_iter().find(|e| e.address == addr)?;
    e.is_normal().then(|| e.is_up())
}

fn host_id(node: usize) -> String {
    gyrectl::fetch_status(admin(node), Duration::from_secs(2))
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
    let (ok, out) = run(Command::new(workspace_bin("gyre-stress")).args(args).args([
        "--hosts",
        &hosts,
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
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no `{line}` in:\n{printed}"
        );
    }

    // Node 1 (the seed): time from `podman run` to CQL.
    for n in 1..=NODES {
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
