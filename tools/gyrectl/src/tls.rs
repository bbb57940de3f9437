//! Certificates for local clusters started with `cluster up --tls`: one
//! CA per cluster directory (`tls/ca.crt`, `tls/ca.key`, made once) and a
//! certificate per node for its address and `localhost`, signed by it,
//! next to the node's configuration. For development and tests: the CA
//! key sits unencrypted in the cluster directory.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

use crate::{io_err, Error, Result};

const CA_NAME: &str = "Gyre local cluster CA";

fn tls_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Cluster(format!("{what}: {e}"))
}

/// The cluster's CA: the certificate written once, and its key. The
/// certificate object is rebuilt from the same name and key each time, which
/// is all that signing needs (issuer name and key), so node certificates
/// made later verify against the `ca.crt` written first.
fn ca(cluster_dir: &Path) -> Result<(rcgen::Certificate, KeyPair)> {
    let dir = cluster_dir.join("tls");
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let key_path = dir.join("ca.key");
    let key = if key_path.exists() {
        let pem = fs::read_to_string(&key_path)
            .map_err(io_err(format!("reading {}", key_path.display())))?;
        KeyPair::from_pem(&pem).map_err(tls_err("CA key"))?
    } else {
        let key = KeyPair::generate().map_err(tls_err("CA key"))?;
        write_private(&key_path, &key.serialize_pem())?;
        key
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    let cert = params.self_signed(&key).map_err(tls_err("CA"))?;
    let cert_path = dir.join("ca.crt");
    if !cert_path.exists() {
        fs::write(&cert_path, cert.pem())
            .map_err(io_err(format!("writing {}", cert_path.display())))?;
    }
    Ok((cert, key))
}

/// The cluster CA's certificate, which every node trusts for internode
/// TLS and clients for the CQL port.
pub fn ca_path(cluster_dir: &Path) -> std::path::PathBuf {
    cluster_dir.join("tls").join("ca.crt")
}

/// Writes `node.crt` and `node.key` for a node at `ip` into `node_dir`.
pub fn issue_node_certificate(cluster_dir: &Path, node_dir: &Path, ip: IpAddr) -> Result<()> {
    let (ca, ca_key) = ca(cluster_dir)?;
    let key = KeyPair::generate().map_err(tls_err("node key"))?;
    let mut params =
        CertificateParams::new(vec!["localhost".to_string()]).map_err(tls_err("node"))?;
    params.subject_alt_names.push(SanType::IpAddress(ip));
    params
        .distinguished_name
        .push(DnType::CommonName, ip.to_string());
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(tls_err("node certificate"))?;
    let cert_path = node_dir.join("node.crt");
    fs::write(&cert_path, cert.pem())
        .map_err(io_err(format!("writing {}", cert_path.display())))?;
    write_private(&node_dir.join("node.key"), &key.serialize_pem())
}

/// A private key file readable by its owner only.
fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("writing {}", path.display())))?;
    f.write_all(pem.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_made_later_verify_against_the_first_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip: IpAddr = "127.0.0.9".parse().expect("ip");
        let (n1, n2) = (dir.path().join("n1"), dir.path().join("n2"));
        fs::create_dir_all(&n1).expect("dir");
        fs::create_dir_all(&n2).expect("dir");
        issue_node_certificate(dir.path(), &n1, ip).expect("first");
        let ca_pem = fs::read(dir.path().join("tls/ca.crt")).expect("ca");
        // A second run reloads the key and signs another node.
        issue_node_certificate(dir.path(), &n2, ip).expect("second");
        assert_eq!(ca_pem, fs::read(dir.path().join("tls/ca.crt")).expect("ca"));
        for n in [&n1, &n2] {
            let cert = fs::read(n.join("node.crt")).expect("cert");
            let key = fs::read(n.join("node.key")).expect("key");
            // The server accepts the pair, and a client trusting the CA
            // can be configured.
            gyre_protocol::ServerTls::from_pem(
                &cert,
                &key,
                None,
                gyre_protocol::ClientAuth::None,
                false,
            )
            .expect("a usable certificate");
        }
        gyre_protocol::tls_client_config(&ca_pem, None).expect("client config");
    }
}
