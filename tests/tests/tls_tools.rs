//! gyresh and gyre-stress over TLS (`--ssl`, `--ssl-ca`) against a
//! `gyrectl cluster up --tls` node: served with the cluster's CA; refused
//! without TLS or without the CA (the node's certificate is then not
//! trusted). Octet 137.

use std::process::{Command, Output};

use gyre_tests::cluster::{workspace_bin, TestCluster};

fn show(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn gyresh_and_gyre_stress_speak_tls() {
    let c = TestCluster::new(1, 137);
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "1",
        "--ip-prefix",
        "127.0.137",
        "--cluster-name",
        "test cluster",
        "--timeout-secs",
        "60",
        "--tls",
    ]);
    let ca = c.cluster_dir().join("tls/ca.crt");
    let ca = ca.to_str().expect("utf-8 path");
    let host = c.cql(1).ip().to_string();
    let q = "SELECT release_version FROM system.local";
    let gyresh = |args: &[&str]| {
        let o = Command::new(workspace_bin("gyresh"))
            .args(args)
            .args([host.as_str(), "9042", "--connect-timeout", "3", "-e", q])
            .output()
            .expect("running gyresh");
        eprintln!("gyresh {args:?}: {}\n{}", o.status, show(&o));
        o
    };
    let o = gyresh(&["--ssl", "--ssl-ca", ca]);
    assert!(
        o.status.success() && show(&o).contains("5.0.0"),
        "gyresh --ssl failed:\n{}\n{}",
        show(&o),
        c.logs()
    );
    // --ssl-ca alone implies --ssl.
    assert!(gyresh(&["--ssl-ca", ca]).status.success());
    assert!(!gyresh(&[]).status.success(), "plaintext gyresh was served");
    // Without the cluster's CA the node's certificate is not trusted.
    assert!(
        !gyresh(&["--ssl"]).status.success(),
        "an untrusted certificate was accepted"
    );
    // The cqlshrc `cluster up --tls` writes gives host, port and TLS alone,
    // named with --cqlshrc or found at cqlsh's default place.
    let rc = c.cluster_dir().join("cqlshrc");
    let empty_home = c.cluster_dir().join("home-empty");
    let home = c.cluster_dir().join("home");
    std::fs::create_dir_all(&empty_home).expect("mkdir");
    std::fs::create_dir_all(home.join(".cassandra")).expect("mkdir");
    std::fs::copy(&rc, home.join(".cassandra/cqlshrc")).expect("copy cqlshrc");
    let from_rc = |home: &std::path::Path, args: &[&str]| {
        let o = Command::new(workspace_bin("gyresh"))
            .env("HOME", home)
            .args(args)
            .args(["--connect-timeout", "3", "-e", q])
            .output()
            .expect("running gyresh");
        eprintln!(
            "gyresh {args:?} (HOME {}): {}\n{}",
            home.display(),
            o.status,
            show(&o)
        );
        o
    };
    let rc = rc.to_str().expect("utf-8 path");
    for o in [
        from_rc(&empty_home, &["--cqlshrc", rc]),
        from_rc(&home, &[]),
    ] {
        assert!(
            o.status.success() && show(&o).contains("5.0.0"),
            "gyresh with the cqlshrc failed:\n{}",
            show(&o)
        );
    }
    // A cqlshrc naming the node without `ssl = true` speaks plaintext: refused.
    let plain = c.cluster_dir().join("cqlshrc-plain");
    std::fs::write(
        &plain,
        format!("[connection]\nhostname = {host}\nport = 9042\n"),
    )
    .expect("write");
    let plain = plain.to_str().expect("utf-8 path");
    assert!(!from_rc(&empty_home, &["--cqlshrc", plain]).status.success());

    let stress = |op: &str, args: &[&str]| {
        let o = Command::new(workspace_bin("gyre-stress"))
            .arg(op)
            .args([
                "--hosts", &host, "--ops", "300", "--keys", "300", "--rf", "1",
            ])
            .args(["--quiet", "--max-errors", "0"])
            .args(args)
            .output()
            .expect("running gyre-stress");
        eprintln!("gyre-stress {op} {args:?}: {}\n{}", o.status, show(&o));
        o
    };
    let o = stress("write", &["--ssl", "--ssl-ca", ca, "--driver", "scylla"]);
    assert!(
        o.status.success(),
        "gyre-stress write --ssl failed:\n{}",
        show(&o)
    );
    let o = stress("read", &["--ssl", "--ssl-ca", ca, "--driver", "scylla"]);
    assert!(
        o.status.success(),
        "gyre-stress read --ssl failed:\n{}",
        show(&o)
    );
    let o = stress("write", &["--ssl", "--ssl-ca", ca, "--driver", "native"]);
    assert!(
        !o.status.success() && show(&o).contains("does not speak TLS"),
        "{}",
        show(&o)
    );
    assert!(!stress("write", &["--driver", "scylla"]).status.success());
    // The cqlshrc gives gyre-stress the host, port and TLS (no --hosts).
    let o = Command::new(workspace_bin("gyre-stress"))
        .args(["write", "--cqlshrc", rc, "--ops", "100", "--keys", "100"])
        .args([
            "--rf",
            "1",
            "--quiet",
            "--max-errors",
            "0",
            "--driver",
            "scylla",
        ])
        .output()
        .expect("running gyre-stress");
    assert!(
        o.status.success(),
        "gyre-stress --cqlshrc failed:\n{}",
        show(&o)
    );
}
