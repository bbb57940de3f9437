//! `cqlsh` 6.2 from PyPI against a real 3-node cluster: a `-f` script that
//! creates a keyspace and tables, inserts, selects, DESCRIBEs, reads
//! `system.local`, and round-trips a table through `COPY TO` / `COPY FROM`
//! (multi-process, token-range scans and prepared inserts); then `-e`
//! statements. No warning may be printed (versions, schema).
//!
//! The virtualenv is cached in `$HOME/.cache/gyre-venv-cqlsh` (or
//! `$GYRE_CQLSH_VENV`); the first run needs PyPI and fails saying so when it
//! is unreachable: it never skips silently.

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gyre_tests::cluster::TestCluster;
use gyre_tests::cqlsh::{cqlsh, run, Out};

fn cqlsh_cmd(cqlsh: &Path, c: &TestCluster, node: usize, home: &Path) -> Command {
    let addr = c.cql(node);
    let mut cmd = Command::new(cqlsh);
    // Its own HOME: no ~/.cassandra/cqlshrc of the machine's user applies.
    cmd.env("HOME", home)
        .env_remove("CQLSH_HOST")
        .env_remove("CQLSH_PORT")
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    cmd
}

/// Fails on anything that looks like a warning or an error in either stream.
fn assert_clean(what: &str, o: &Out, logs: impl Fn() -> String) {
    let both = format!("{}\n{}", o.stdout, o.stderr);
    for bad in [
        "Warning",
        "warning",
        "WARNING",
        "schema version mismatch",
        "Error",
        "Traceback",
    ] {
        assert!(
            !both.contains(bad),
            "{what}: output contains {bad:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
            o.stdout,
            o.stderr,
            logs()
        );
    }
    assert!(
        o.ok,
        "{what} failed\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        o.stdout,
        o.stderr,
        logs()
    );
}

/// The data rows of a cqlsh table print, trimmed, sorted (header, rule and
/// the `(N rows)` line removed).
fn data_rows(output: &str) -> Vec<String> {
    let lines: Vec<&str> = output.lines().collect();
    let Some(rule) = lines
        .iter()
        .position(|l| l.starts_with('-') && l.contains("-+-"))
    else {
        return Vec::new();
    };
    let mut rows: Vec<String> = lines[rule + 1..]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .filter(|l| !(l.starts_with('(') && l.ends_with("rows)")))
        .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>().join("|"))
        .collect();
    rows.sort();
    rows
}

const COLUMNS: &str = "k int, c int, v text, d double, ts timestamp, s set<text>, \
                       m map<text, int>, u uuid, b blob, bo boolean, de decimal, \
                       PRIMARY KEY (k, c)";

#[test]
fn cqlsh_against_three_nodes() {
    let t_start = Instant::now();
    let cqlsh = cqlsh();
    let c = TestCluster::new(3, 31);
    // Generous server timeouts and failure detection for a loaded machine
    // (cqlsh's own request timeout is 10 s).
    c.up_with(&[
        "--write-request-timeout-ms",
        "5000",
        "--read-request-timeout-ms",
        "5000",
        "--request-timeout-ms",
        "5000",
        "--phi-convict-threshold",
        "12",
    ]);
    for n in 1..=3 {
        let addr = c.cql(n);
        c.wait_until(
            &format!("CQL port of node {n} open"),
            Duration::from_secs(30),
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        );
    }
    let work = c.dir.path().join("cqlsh");
    std::fs::create_dir_all(&work).unwrap();
    let csv = work.join("t.csv");

    // 40 partitions x 5 rows, spread over the ring, with values that need
    // CSV quoting (commas, quotes, newlines) and non-ASCII text.
    const ROWS: usize = 200;
    let mut script = String::from(
        "CREATE KEYSPACE cq WITH replication = \
         {'class': 'SimpleStrategy', 'replication_factor': 3};\n\
         USE cq;\n",
    );
    writeln!(script, "CREATE TABLE t ({COLUMNS});").unwrap();
    writeln!(
        script,
        "CREATE TABLE t2 ({COLUMNS}) WITH comment = 'copy target';"
    )
    .unwrap();
    for i in 0..ROWS {
        let (k, cl) = (i / 5, i % 5);
        writeln!(
            script,
            "INSERT INTO t (k, c, v, d, ts, s, m, u, b, bo, de) VALUES ({k}, {cl}, \
             'v{i}, with ''quotes'' and é', {i}.25, '2024-05-{:02} 12:00:00+0000', \
             {{'a{i}', 'b'}}, {{'x': {i}}}, 0d9a7c43-bd62-4b07-9bd8-{:012x}, 0x{:04x}, {}, {i}.5);",
            1 + i % 28,
            i,
            i,
            i % 2 == 0
        )
        .unwrap();
    }
    script.push_str(
        "SELECT k, c, v FROM t WHERE k = 3;\n\
         DESCRIBE KEYSPACES;\n\
         DESCRIBE TABLE cq.t;\n\
         SELECT * FROM system.local;\n",
    );
    // Several worker processes (cqlsh uses cores - 1 by default, one on a
    // 2-core machine), small pages within each token range, small chunks.
    writeln!(
        script,
        "COPY cq.t TO '{}' WITH NUMPROCESSES = 3 AND PAGESIZE = 7;",
        csv.display()
    )
    .unwrap();
    writeln!(
        script,
        "COPY cq.t2 FROM '{}' WITH NUMPROCESSES = 3 AND CHUNKSIZE = 20;",
        csv.display()
    )
    .unwrap();
    script.push_str("SELECT count(*) FROM cq.t2;\n");
    let script_path = work.join("script.cql");
    std::fs::write(&script_path, &script).unwrap();

    let t0 = Instant::now();
    let o = run(cqlsh_cmd(&cqlsh, &c, 1, &work).arg("-f").arg(&script_path));
    eprintln!(
        "--- cqlsh -f ({:.1} s) ---\n{}\n--- stderr ---\n{}",
        t0.elapsed().as_secs_f64(),
        o.stdout,
        o.stderr
    );
    assert_clean("cqlsh -f", &o, || c.logs());
    let out = &o.stdout;
    // The SELECT of partition 3.
    for cl in 0..5 {
        let i = 15 + cl;
        assert!(
            out.contains(&format!("v{i}, with 'quotes' and é")),
            "row {i} missing from the SELECT:\n{out}"
        );
    }
    assert!(out.contains("(5 rows)"), "{out}");
    // DESCRIBE KEYSPACES lists the new and the system keyspaces.
    for ks in ["cq", "system", "system_schema"] {
        assert!(
            out.split_whitespace().any(|w| w == ks),
            "DESCRIBE KEYSPACES lacks {ks}:\n{out}"
        );
    }
    // DESCRIBE TABLE prints a CREATE TABLE that names every column.
    assert!(out.contains("CREATE TABLE cq.t ("), "{out}");
    for col in [
        "k int",
        "c int",
        "v text",
        "d double",
        "ts timestamp",
        "s set<text>",
        "m map<text, int>",
        "PRIMARY KEY (k, c)",
        "CLUSTERING ORDER BY (c ASC)",
    ] {
        assert!(out.contains(col), "DESCRIBE TABLE lacks {col:?}:\n{out}");
    }
    // system.local, printed as a table.
    assert!(
        out.contains("5.0.0") && out.contains("test cluster"),
        "{out}"
    );
    assert!(out.contains("Murmur3Partitioner"), "{out}");
    // COPY TO / FROM report their counts.
    assert!(out.contains("Using 3 child processes"), "{out}");
    assert!(
        out.contains(&format!("{ROWS} rows exported to 1 files")),
        "COPY TO did not export {ROWS} rows:\n{out}"
    );
    assert!(
        out.contains(&format!("{ROWS} rows imported from 1 files")),
        "COPY FROM did not import {ROWS} rows:\n{out}"
    );
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        csv_text.contains("\"v7, with 'quotes' and é\""),
        "{csv_text}"
    );

    // The copy holds exactly the same rows, read back through other nodes.
    let select = |node: usize, table: &str| {
        let o = run(cqlsh_cmd(&cqlsh, &c, node, &work)
            .arg("-e")
            .arg(format!("SELECT * FROM cq.{table}")));
        assert_clean(
            &format!("cqlsh -e SELECT {table} on node {node}"),
            &o,
            || c.logs(),
        );
        data_rows(&o.stdout)
    };
    let original = select(2, "t");
    let copy = select(3, "t2");
    assert_eq!(original.len(), ROWS, "{original:?}");
    assert_eq!(original, copy, "COPY FROM did not recreate the rows");

    // -e with several statements, and DESCRIBE of the copy.
    let o = run(cqlsh_cmd(&cqlsh, &c, 2, &work)
        .arg("-e")
        .arg("DESCRIBE TABLE cq.t2; SELECT release_version, cql_version FROM system.local"));
    assert_clean("cqlsh -e DESCRIBE", &o, || c.logs());
    assert!(o.stdout.contains("CREATE TABLE cq.t2 ("), "{}", o.stdout);
    assert!(o.stdout.contains("copy target"), "{}", o.stdout);
    assert!(o.stdout.contains("5.0.0"), "{}", o.stdout);

    // DESCRIBE CLUSTER, without and with a keyspace in use.
    let o = run(cqlsh_cmd(&cqlsh, &c, 1, &work)
        .arg("-e")
        .arg("DESCRIBE CLUSTER"));
    assert_clean("cqlsh -e DESCRIBE CLUSTER", &o, || c.logs());
    assert!(o.stdout.contains("Cluster: test cluster"), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("Partitioner: org.apache.cassandra.dht.Murmur3Partitioner"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("Range ownership"), "{}", o.stdout);
    let o = run(cqlsh_cmd(&cqlsh, &c, 1, &work).args(["-k", "cq", "-e", "DESCRIBE CLUSTER"]));
    assert_clean("cqlsh -k cq -e DESCRIBE CLUSTER", &o, || c.logs());
    assert!(o.stdout.contains("Range ownership:"), "{}", o.stdout);
    // One line per ring token (16 per node), each naming all three
    // replicas (RF 3).
    let ranges: Vec<&str> = o.stdout.lines().filter(|l| l.ends_with(":7000]")).collect();
    assert_eq!(ranges.len(), 48, "{}", o.stdout);
    assert!(
        ranges
            .iter()
            .all(|l| (1..=3).all(|n| l.contains(&format!("127.0.31.{n}:7000")))),
        "{}",
        o.stdout
    );

    // DESCRIBE KEYSPACE output recreates the keyspace: drop it, run the
    // output with -f, and DESCRIBE again gives the same text.
    let describe = || {
        let o = run(cqlsh_cmd(&cqlsh, &c, 3, &work)
            .arg("-e")
            .arg("DESCRIBE KEYSPACE cq"));
        assert_clean("cqlsh -e DESCRIBE KEYSPACE", &o, || c.logs());
        o.stdout
    };
    let before = describe();
    assert!(
        before.contains("CREATE KEYSPACE cq WITH replication"),
        "{before}"
    );
    assert!(before.contains("CREATE TABLE cq.t2 ("), "{before}");
    let o = run(cqlsh_cmd(&cqlsh, &c, 1, &work)
        .arg("-e")
        .arg("DROP KEYSPACE cq"));
    assert_clean("cqlsh -e DROP KEYSPACE", &o, || c.logs());
    let schema_file = work.join("schema.cql");
    std::fs::write(&schema_file, &before).unwrap();
    let o = run(cqlsh_cmd(&cqlsh, &c, 2, &work).arg("-f").arg(&schema_file));
    assert_clean("cqlsh -f <DESCRIBE output>", &o, || c.logs());
    assert_eq!(
        describe(),
        before,
        "DESCRIBE output did not recreate the schema"
    );
    eprintln!("cqlsh test took {:.1} s", t_start.elapsed().as_secs_f64());
}
