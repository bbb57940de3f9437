//! `gyresh` and `gyre-stress` against a real node: the shell runs a script
//! and formats results as cqlsh does; the stress tool writes a population,
//! validates it, holds a fixed rate and writes a JSON report.
//!
//! Against a 3-node cluster at QUORUM (the coordinator serves any key from
//! any node), as the acceptance asks.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use gyre_tests::cluster::TestCluster;

/// Nodes in each test cluster (and the stress keyspace's RF).
const NODES: usize = 3;
/// Consistency level of the stress runs.
const CL: &str = "QUORUM";

/// `gyresh` / `gyre-stress`, next to the test executable's directory.
/// `cargo test --workspace` builds them (their packages have integration
/// tests); with `-p gyre-tests` alone, build them first with
/// `cargo build -p gyre-node -p gyrectl -p gyresh -p gyre-stress`.
fn tool(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo test --workspace`, or \
         `cargo build -p gyresh -p gyre-stress` first",
        bin.display()
    );
    bin
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    eprintln!(
        "$ {cmd:?} -> {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts the cluster and waits for node 1's CQL port.
fn start(octet: u8) -> TestCluster {
    let c = TestCluster::new(NODES, octet);
    c.up();
    let addr = c.cql(1);
    c.wait_until("CQL port open", Duration::from_secs(30), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    c
}

const SCRIPT: &str = "
CREATE KEYSPACE IF NOT EXISTS shell WITH replication =
    {'class': 'SimpleStrategy', 'replication_factor': 1};
USE shell;
-- every common type; a `;` inside a string must not end the statement
CREATE TABLE IF NOT EXISTS all_types (
  k int PRIMARY KEY,
  a ascii, b bigint, bl blob, bo boolean, d date, de decimal, db double,
  f float, i inet, s smallint, t text, tm time, ts timestamp, tu timeuuid,
  ti tinyint, u uuid, vi varint, l list<text>, st set<int>, m map<text, int>
);
INSERT INTO all_types (k, a, b, bl, bo, d, de, db, f, i, s, t, tm, ts, tu, ti, u, vi, l, st, m)
VALUES (1, 'asc', 9000000000, 0xcafe, true, '2024-01-02', 123.45, 3.5, 1.25,
        '10.0.0.1', 7, 'hello; world', '03:04:05.123456789', '2024-01-02 03:04:05+0000',
        50554d6e-29bb-11e5-b345-feff819cdc9f, 3, 550e8400-e29b-41d4-a716-446655440000,
        123456789012345678901234567890, ['x', 'y'], {1, 2}, {'a': 1});
INSERT INTO all_types (k, t) VALUES (2, 'two');
SELECT * FROM all_types WHERE k = 1;
SELECT k, t FROM all_types;
EXPAND ON
SELECT k, t, m FROM all_types WHERE k = 1;
EXPAND OFF
CONSISTENCY QUORUM
DESCRIBE TABLE all_types;
SOURCE '{sourced}'
";

#[test]
fn gyresh_runs_a_script_formats_like_cqlsh_and_reports_errors() {
    let c = start(30);
    let host = c.cql(1).ip().to_string();
    let gyresh = tool("gyresh");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("session.cql");
    let sourced = dir.path().join("sourced.cql");
    std::fs::write(
        &sourced,
        "INSERT INTO shell.all_types (k, t) VALUES (3, 'sourced row');\n\
         SELECT t FROM shell.all_types WHERE k = 3;\n",
    )
    .unwrap();
    let text = SCRIPT.replace("{sourced}", &sourced.display().to_string());
    std::fs::write(&script, text).unwrap();

    let out = run(Command::new(&gyresh).arg(&host).arg("-f").arg(&script));
    let text = stdout(&out);
    assert!(out.status.success(), "{}\n{}", stderr(&out), c.logs());
    for expected in [
        "asc",
        "9000000000",
        "0xcafe",
        "True",
        "2024-01-02",
        "123.45",
        "3.5",
        "1.25",
        "10.0.0.1",
        "hello; world",
        "03:04:05.123456789",
        "2024-01-02 03:04:05.000000+0000",
        "50554d6e-29bb-11e5-b345-feff819cdc9f",
        "550e8400-e29b-41d4-a716-446655440000",
        "123456789012345678901234567890",
        "['x', 'y']",
        "{1, 2}",
        "{'a': 1}",
        "(1 row,",
        "(2 rows,",
        // EXPAND ON
        "@ Row 1",
        " m | {'a': 1}",
        "Consistency level set to QUORUM.",
        // DESCRIBE, printed as CQL
        "CREATE TABLE shell.all_types (",
        // SOURCE ran the other file
        "sourced row",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // Aligned table: a header rule, and k=2's unset columns shown as null.
    assert!(text.lines().any(|l| l.starts_with("---+")), "{text}");
    assert!(text.contains("| two"), "{text}");

    // A syntax error: its CQL error name and position, exit status 1,
    // and nothing after it runs.
    let out = run(Command::new(&gyresh).arg(&host).args([
        "-k",
        "shell",
        "-e",
        "SELEC * FROM all_types; SELECT k FROM all_types;",
    ]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("SyntaxException"), "{err}");
    assert!(err.contains("line 1:"), "no position in {err}");
    assert!(!stdout(&out).contains("rows"), "ran past the error");

    // --continue-on-error runs the rest but still fails.
    let out = run(Command::new(&gyresh).arg(&host).args([
        "-k",
        "shell",
        "--continue-on-error",
        "-e",
        "SELECT nope FROM all_types; SELECT k FROM all_types WHERE k = 2;",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("InvalidRequest"), "{}", stderr(&out));
    assert!(stdout(&out).contains("(1 row,"), "{}", stdout(&out));

    // Every request goes to the node the shell was started on, as in
    // cqlsh (the driver's default would spread them over the nodes, and a
    // CL ONE read could miss the shell's own write).
    let node2 = c.cql(2).ip().to_string();
    let out = run(Command::new(&gyresh)
        .arg(&node2)
        .args(["-e", &"SELECT rpc_address FROM system.local;".repeat(6)]));
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text.matches(&node2).count(), 6, "{text}");
    for other in [1, 3] {
        assert!(!text.contains(&c.cql(other).ip().to_string()), "{text}");
    }
}

fn stress(host: &str, args: &[&str], json: &Path) -> (Output, serde_json::Value) {
    let rf = NODES.to_string();
    let out = run(Command::new(tool("gyre-stress"))
        .args(args)
        .args([
            "--hosts", host, "--cl", CL, "--rf", &rf, "--quiet", "--json",
        ])
        .arg(json));
    let report = std::fs::read_to_string(json)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (out, report)
}

#[test]
fn gyre_stress_writes_validates_and_holds_a_rate() {
    let c = start(31);
    let host = c.cql(1).ip().to_string();
    let dir = tempfile::tempdir().unwrap();

    // (b) write a population, then validate every key.
    let json = dir.path().join("write.json");
    let (out, w) = stress(&host, &["write", "--ops", "20000", "--drop"], &json);
    assert!(out.status.success(), "{}", c.logs());
    assert_eq!(w["ops"]["write"]["ops"], 20000, "{w}");
    assert_eq!(w["total"]["errors"], 0, "{w}");
    // (d) the report has the percentiles.
    for p in ["mean", "p50", "p95", "p99", "p999", "max"] {
        assert!(w["ops"]["write"]["latency_ms"][p].is_number(), "{p}: {w}");
    }
    assert!(w["cpu"]["user_s"].is_number(), "{w}");

    let json = dir.path().join("read.json");
    let (out, r) = stress(&host, &["read", "--validate", "--keys", "20000"], &json);
    assert!(out.status.success(), "{}", c.logs());
    assert!(stdout(&out).contains("20000 checked, 0 missing, 0 wrong"));
    assert_eq!(
        r["validation"],
        serde_json::json!({"checked": 20000, "missing": 0, "wrong": 0})
    );

    // Keys beyond the population are missing: reported, exit status 1.
    let json = dir.path().join("missing.json");
    let (out, r) = stress(&host, &["read", "--validate", "--keys", "20100"], &json);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(r["validation"]["missing"], 100, "{r}");

    // (c) open loop at 1000 ops/s for 5 s: exactly the schedule's 5000
    // ops are sent and complete, over the intended 5 s within 5%. The
    // achieved rate (over wall time, to the last reply) must not exceed
    // the request (a scheduler that ran ahead would); on a loaded machine
    // a slow server may stretch the run, so its lower bound is loose.
    let json = dir.path().join("rate.json");
    let (out, r) = stress(
        &host,
        &[
            "mixed",
            "--rate",
            "1000",
            "--duration",
            "5s",
            "--concurrency",
            "256",
            "--keys",
            "20000",
            "--ratio",
            "write=1,read=3",
        ],
        &json,
    );
    assert!(out.status.success(), "{}", c.logs());
    let rate = &r["rate"];
    assert_eq!(rate["scheduled_ops"], 5000, "{r}");
    assert_eq!(r["total"]["ops"], 5000, "{r}");
    let intended = rate["intended_s"].as_f64().unwrap();
    let scheduled_rate = 5000.0 / intended;
    assert!(
        (950.0..=1050.0).contains(&scheduled_rate),
        "completed ops over intended duration: {scheduled_rate}/s for 1000 requested"
    );
    let achieved = rate["achieved_ops_per_s"].as_f64().unwrap();
    eprintln!("achieved {achieved:.1} ops/s for 1000 requested");
    assert!(
        (500.0..=1050.0).contains(&achieved),
        "achieved {achieved} ops/s for 1000 requested"
    );
    assert!(r["ops"]["read"]["latency_ms"]["p99"].is_number(), "{r}");
    assert!(r["ops"]["write"]["latency_ms"]["p50"].is_number(), "{r}");

    // The built-in client (`--driver native`, what the Redis benchmark
    // uses): the same population written and validated through it, token
    // routed over every node; a wrong value is caught; an open-loop run
    // keeps its schedule.
    let native = |args: &[&str], name: &str| {
        let mut all = vec!["--driver", "native", "--keyspace", "native_ks"];
        all.extend_from_slice(args);
        stress(&host, &all, &dir.path().join(name))
    };
    let (out, w) = native(&["write", "--ops", "20000", "--drop"], "nw.json");
    assert!(out.status.success(), "{}\n{}", stderr(&out), c.logs());
    assert_eq!(w["ops"]["write"]["ops"], 20000, "{w}");
    assert_eq!(w["total"]["errors"], 0, "{w}");
    let (out, r) = native(&["read", "--validate", "--keys", "20000"], "nr.json");
    assert!(out.status.success(), "{}\n{}", stderr(&out), c.logs());
    assert_eq!(
        r["validation"],
        serde_json::json!({"checked": 20000, "missing": 0, "wrong": 0})
    );
    let (out, r) = native(
        &["read", "--validate", "--keys", "1000", "--value-size", "99"],
        "nwrong.json",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(r["validation"]["wrong"], 1000, "{r}");
    let (out, r) = native(
        &[
            "mixed",
            "--rate",
            "1000",
            "--duration",
            "3s",
            "--concurrency",
            "64",
            "--keys",
            "20000",
        ],
        "nrate.json",
    );
    assert!(out.status.success(), "{}", c.logs());
    assert_eq!(r["rate"]["scheduled_ops"], 3000, "{r}");
    assert_eq!(r["total"]["ops"], 3000, "{r}");
    assert_eq!(r["total"]["errors"], 0, "{r}");
}
