//! TLS on the CQL port (issue 15) with the Python driver: a TLS-only node
//! serves TLS clients and refuses plaintext ones (and keeps serving); a
//! node requiring client certificates refuses clients without one or with
//! one from another CA; an optional-TLS node serves both.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use gyre_tests::cluster::TestCluster;
use gyre_tests::cqlsh;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// A CA, a server certificate for `ip` and a client certificate signed by
/// it, and a client certificate of another CA, as PEM files.
fn pki(ip: IpAddr) -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, pem: String| {
        std::fs::write(dir.path().join(name), pem).expect("write pem");
    };
    let ca = |cn: &str| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.self_signed(&key).expect("self-signed");
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("Gyre test CA");
    write("ca.crt", ca_cert.pem());
    let leaf = |names: Vec<String>, signer: &rcgen::Certificate, signer_key: &KeyPair| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names).expect("params");
        p.subject_alt_names.push(SanType::IpAddress(ip));
        let cert = p.signed_by(&key, signer, signer_key).expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    let (cert, key) = leaf(vec!["localhost".into()], &ca_cert, &ca_key);
    write("node.crt", cert);
    write("node.key", key);
    let (cert, key) = leaf(vec!["client".into()], &ca_cert, &ca_key);
    write("client.crt", cert);
    write("client.key", key);
    let (rogue, rogue_key) = ca("Another CA");
    let (cert, key) = leaf(vec!["rogue".into()], &rogue, &rogue_key);
    write("rogue.crt", cert);
    write("rogue.key", key);
    Pki { dir }
}

fn check(c: &TestCluster, cases: serde_json::Value) {
    cqlsh::cqlsh();
    let python: PathBuf = cqlsh::venv_dir().join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/tls_check.py");
    let addr = c.cql(1);
    let out = cqlsh::run(
        Command::new(&python)
            .arg(&script)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(cases.to_string()),
    );
    eprintln!("{}{}", out.stdout, out.stderr);
    assert!(
        out.ok && out.stdout.contains("\nOK"),
        "tls_check.py failed:\n{}{}\nnode logs:\n{}",
        out.stdout,
        out.stderr,
        c.logs()
    );
}

fn up(c: &TestCluster, pki: &Pki, extra: &[&str]) {
    let cert = format!("client_encryption.certificate={}", pki.path("node.crt"));
    let key = format!("client_encryption.private_key={}", pki.path("node.key"));
    let ca = format!("client_encryption.ca_certificate={}", pki.path("ca.crt"));
    let mut args = vec![
        "--set",
        "client_encryption.enabled=true",
        "--set",
        &cert,
        "--set",
        &key,
        "--set",
        &ca,
    ];
    for e in extra {
        args.extend(["--set", e]);
    }
    c.up_with(&args);
}

#[test]
fn tls_only_node_serves_tls_clients_and_refuses_plaintext() {
    let c = TestCluster::new(1, 73);
    let pki = pki(c.cql(1).ip());
    up(&c, &pki, &[]);
    let ca = pki.path("ca.crt");
    check(
        &c,
        serde_json::json!([
            {"name": "tls", "tls": true, "ca": ca, "expect": "ok"},
            {"name": "plain", "tls": false, "expect": "refused"},
            // A client certificate of another CA is verified and refused
            // even when not required.
            {"name": "rogue", "tls": true, "ca": ca, "cert": pki.path("rogue.crt"),
             "key": pki.path("rogue.key"), "expect": "refused"},
            {"name": "tls-again", "tls": true, "ca": ca, "expect": "ok"},
        ]),
    );
}

#[test]
fn client_certificates_can_be_required() {
    let c = TestCluster::new(1, 74);
    let pki = pki(c.cql(1).ip());
    up(&c, &pki, &["client_encryption.require_client_auth=true"]);
    let ca = pki.path("ca.crt");
    check(
        &c,
        serde_json::json!([
            {"name": "no-cert", "tls": true, "ca": ca, "expect": "refused"},
            {"name": "rogue", "tls": true, "ca": ca, "cert": pki.path("rogue.crt"),
             "key": pki.path("rogue.key"), "expect": "refused"},
            {"name": "client", "tls": true, "ca": ca, "cert": pki.path("client.crt"),
             "key": pki.path("client.key"), "expect": "ok"},
        ]),
    );
}

#[test]
fn optional_tls_serves_both_on_one_port() {
    let c = TestCluster::new(1, 75);
    let pki = pki(c.cql(1).ip());
    up(&c, &pki, &["client_encryption.optional=true"]);
    let ca = pki.path("ca.crt");
    check(
        &c,
        serde_json::json!([
            {"name": "tls", "tls": true, "ca": ca, "expect": "ok"},
            {"name": "plain", "tls": false, "expect": "ok"},
        ]),
    );
}

/// `gyrectl cluster up --tls`: the cluster's CA signs every node's
/// certificate and cqlsh connects with the `cqlshrc` it writes; a
/// plaintext cqlsh is refused.
#[test]
fn gyrectl_tls_cluster_with_cqlsh() {
    let c = TestCluster::new(1, 76);
    let out = c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "1",
        "--ip-prefix",
        "127.0.76",
        "--cluster-name",
        "test cluster",
        "--timeout-secs",
        "60",
        "--tls",
    ]);
    assert!(out.contains("cqlsh --cqlshrc"), "{out}");
    let rc = c.cluster_dir().join("cqlshrc");
    let cqlsh = cqlsh::cqlsh();
    let q = "SELECT release_version FROM system.local";
    let tls = cqlsh::run(
        Command::new(&cqlsh)
            .arg("--cqlshrc")
            .arg(&rc)
            .args(["-e", q]),
    );
    assert!(
        tls.ok && tls.stdout.contains("5.0.0"),
        "cqlsh over TLS failed:\n{}{}\n{}",
        tls.stdout,
        tls.stderr,
        c.logs()
    );
    let addr = c.cql(1);
    let plain = cqlsh::run(
        Command::new(&cqlsh)
            .args([&addr.ip().to_string(), &addr.port().to_string()])
            .args(["--connect-timeout", "5", "-e", q]),
    );
    assert!(!plain.ok, "a plaintext cqlsh was served:\n{}", plain.stdout);
}
