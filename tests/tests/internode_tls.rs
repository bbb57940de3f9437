//! Internode mutual TLS (issue 15) with real processes: a 3-node
//! `gyrectl cluster up --tls` cluster gossips and replicates over TLS
//! (the Python driver writes at QUORUM and reads at QUORUM and ALL through
//! every node); a node whose certificate another CA signed, and a node
//! speaking plaintext, are refused by the cluster (logged), never join,
//! and the cluster never learns of them. Octet 136.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gyre_tests::cluster::{workspace_bin, TestCluster};
use gyre_tests::cqlsh;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

const OCTET: u8 = 136;

/// A `gyre` process outside the cluster's layout, killed on drop.
struct Outsider(Child);

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a node at 127.0.136.`last` with node 1's configuration (so the
/// same cluster name and seed) and `settings` on top.
fn outsider(c: &TestCluster, last: u8, settings: &[String]) -> Outsider {
    let ip = format!("127.0.{OCTET}.{last}");
    let dir = c.dir.path().join(format!("outsider{last}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = std::fs::File::create(dir.join("gyre.log")).expect("log");
    let mut cmd = Command::new(workspace_bin("gyre"));
    cmd.arg("--config")
        .arg(c.cluster_dir().join("node1/gyre.toml"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let mut all = vec![
        format!("network.listen_address={ip}"),
        format!("admin.listen_address={ip}"),
        format!("storage.data_dir={}", dir.join("data").display()),
        format!("storage.commitlog_dir={}", dir.join("commitlog").display()),
        // Its CQL port is not what this test is about.
        "client_encryption.enabled=false".to_string(),
    ];
    all.extend_from_slice(settings);
    for s in &all {
        cmd.arg("--set").arg(s);
    }
    Outsider(cmd.spawn().expect("starting gyre"))
}

/// A certificate for `ip` signed by a CA made here (not the cluster's).
fn foreign_certificate(dir: &Path, ip: &str) -> (PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Gyre local cluster CA");
    let ca = p.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    p.subject_alt_names
        .push(SanType::IpAddress(ip.parse().expect("ip")));
    let cert = p.signed_by(&key, &ca, &ca_key).expect("signed");
    let (crt, k) = (dir.join("rogue.crt"), dir.join("rogue.key"));
    std::fs::write(&crt, cert.pem()).expect("write");
    std::fs::write(&k, key.serialize_pem()).expect("write");
    (crt, k)
}

/// Lines of node `n`'s log that refuse a connection from `ip`.
fn refusals(c: &TestCluster, n: usize, ip: &str) -> usize {
    let log = std::fs::read_to_string(c.cluster_dir().join(format!("node{n}/gyre.log")))
        .unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("protocol error") && l.contains(ip) && l.contains("TLS"))
        .count()
}

fn knows(c: &TestCluster, observer: usize, ip: &str) -> bool {
    c.status(observer)
        .is_some_and(|s| s.endpoints.iter().any(|e| e.address.starts_with(ip)))
}

#[test]
fn tls_cluster_replicates_and_refuses_foreign_and_plaintext_nodes() {
    let c = TestCluster::new(3, OCTET);
    let prefix = format!("127.0.{OCTET}");
    c.gyrectl_ok(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--ip-prefix",
        &prefix,
        "--cluster-name",
        "test cluster",
        "--timeout-secs",
        "60",
        "--tls",
    ]);
    let conf = std::fs::read_to_string(c.cluster_dir().join("node1/gyre.toml")).expect("conf");
    assert!(conf.contains("internode_encryption = \"all\""), "{conf}");
    c.wait_until(
        "every node sees every other UP over TLS",
        Duration::from_secs(30),
        || (1..=3).all(|o| (1..=3).all(|t| c.sees(o, t, true))),
    );

    let ca = c.cluster_dir().join("tls/ca.crt");
    let python = gyre_tests::python::python_with_driver();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/internode_tls.py");
    let out = cqlsh::run(
        Command::new(&python)
            .arg(&script)
            .arg(&ca)
            .arg("9042")
            .args((1..=3).map(|n| c.cql(n).ip().to_string())),
    );
    eprintln!("{}{}", out.stdout, out.stderr);
    assert!(
        out.ok && out.stdout.contains("\nOK"),
        "internode_tls.py failed:\n{}{}\n{}",
        out.stdout,
        out.stderr,
        c.logs()
    );

    // A node with a certificate for its address from another CA (it has
    // the cluster's public CA certificate, so it would accept the
    // cluster), and a node with internode encryption off.
    let rogue_ip = format!("{prefix}.4");
    let plain_ip = format!("{prefix}.5");
    let (crt, key) = foreign_certificate(c.dir.path(), &rogue_ip);
    let _rogue = outsider(
        &c,
        4,
        &[
            format!("server_encryption.certificate={}", crt.display()),
            format!("server_encryption.private_key={}", key.display()),
        ],
    );
    let _plain = outsider(
        &c,
        5,
        &["server_encryption.internode_encryption=none".into()],
    );
    // The seed refuses each at the TLS handshake, again on every retry.
    c.wait_until(
        "the seed refuses both, twice",
        Duration::from_secs(30),
        || refusals(&c, 1, &rogue_ip) >= 2 && refusals(&c, 1, &plain_ip) >= 2,
    );
    let seed_log = std::fs::read_to_string(c.cluster_dir().join("node1/gyre.log")).expect("log");
    for l in seed_log
        .lines()
        .filter(|l| l.contains("protocol error"))
        .take(4)
    {
        eprintln!("seed: {l}");
    }
    let rogue_log =
        std::fs::read_to_string(c.dir.path().join("outsider4/gyre.log")).expect("rogue log");
    assert!(
        rogue_log.contains("handshake failed"),
        "the refused node does not say why:\n{rogue_log}"
    );
    for l in rogue_log
        .lines()
        .filter(|l| l.contains("handshake failed"))
        .take(2)
    {
        eprintln!("rogue: {l}");
    }
    // Both run, alone: the cluster never learned of them, nor they of it.
    for (n, ip) in [(4, &rogue_ip), (5, &plain_ip)] {
        let s = c.status(n).expect("the outsider answers /status");
        assert_eq!(s.endpoints.len(), 1, "{ip} joined: {:?}", s.endpoints);
        for observer in 1..=3 {
            assert!(!knows(&c, observer, ip), "node {observer} knows {ip}");
        }
    }
    // And the cluster still serves.
    assert!((1..=3).all(|o| (1..=3).all(|t| c.sees(o, t, true))));
}
