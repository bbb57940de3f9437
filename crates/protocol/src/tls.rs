//! TLS on the CQL port, as Cassandra's `client_encryption_options`: a PEM
//! certificate chain and key, optionally client certificates verified
//! against a CA (required, or accepted when offered), and an `optional`
//! mode that serves TLS and plaintext clients on one port by looking at
//! a connection's first byte (a TLS record starts 0x16; a CQL frame starts
//! with its version byte, 0x03 to 0x05).
//!
//! rustls with the ring provider; nothing here touches a socket beyond
//! the handshake, after which a connection is the same reader and writer
//! pair as a plaintext one.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A server's TLS: what [`crate::ServerConfig::tls`] holds.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    optional: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("optional", &self.optional)
            .finish_non_exhaustive()
    }
}

/// Client certificates: none asked, verified when offered, or required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

impl ServerTls {
    /// From PEM text: the certificate chain (leaf first), its private key,
    /// and the CA that signs client certificates (needed unless
    /// `client_auth` is `None`). With `optional`, plaintext clients are
    /// served on the same port.
    pub fn from_pem(
        certificate_chain: &[u8],
        private_key: &[u8],
        client_ca: Option<&[u8]>,
        client_auth: ClientAuth,
        optional: bool,
    ) -> Result<Self> {
        let tls = |what: &str, e: &dyn std::fmt::Display| Error::Tls(format!("{what}: {e}"));
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certificate_chain)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| tls("certificate", &e))?;
        if chain.is_empty() {
            return Err(Error::Tls("certificate: no PEM certificate found".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(private_key).map_err(|e| tls("private key", &e))?;
        // ring rather than aws-lc-rs: it builds with cc alone (no cmake, no
        // long C build in CI); rustls marks it deprecated only for lacking
        // post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls("protocol versions", &e))?;
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional | ClientAuth::Required => {
                let ca = client_ca.ok_or_else(|| {
                    Error::Tls("client certificates need a CA certificate to verify them".into())
                })?;
                let roots = roots_from_pem(ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if client_auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|e| tls("client verifier", &e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| tls("certificate and key", &e))?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            optional,
        })
    }

    /// Whether plaintext clients are served too.
    pub fn is_optional(&self) -> bool {
        self.optional
    }

    /// Decides how `socket` speaks: `Ok(None)` for a plaintext client of
    /// an optional port, the TLS stream after a completed handshake, or
    /// the handshake's error (a plaintext client on a TLS-only port fails
    /// here: its first bytes are not a TLS record).
    pub(crate) async fn accept(&self, socket: TcpStream) -> std::io::Result<Accepted> {
        if self.optional {
            let mut first = [0u8; 1];
            let n = socket.peek(&mut first).await?;
            if n == 0 || first[0] != TLS_HANDSHAKE {
                return Ok(Accepted::Plain(socket));
            }
        }
        let stream = self.acceptor.accept(socket).await?;
        Ok(Accepted::Tls(Box::new(stream)))
    }
}

/// A client's TLS configuration (for the drivers the tools use): server
/// certificates verified against `ca_pem` (host names and IP addresses
/// checked as usual), and a client certificate when the node requires one.
pub fn client_config(
    ca_pem: &[u8],
    client_cert: Option<(&[u8], &[u8])>,
) -> Result<Arc<rustls::ClientConfig>> {
    let tls = |what: &str, e: &dyn std::fmt::Display| Error::Tls(format!("{what}: {e}"));
    let roots = roots_from_pem(ca_pem)?;
    #[allow(deprecated)] // ring: see `ServerTls::from_pem`.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", &e))?
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| tls("client certificate", &e))?;
            let key =
                PrivateKeyDer::from_pem_slice(key).map_err(|e| tls("client private key", &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls("client certificate and key", &e))?
        }
    };
    Ok(Arc::new(config))
}

/// A client configuration from PEM files, for tools' `--ssl-ca`,
/// `--ssl-cert` and `--ssl-key`: the CA is required (no system store is
/// read; nodes' certificates come from the cluster's own CA).
pub fn client_config_from_files(
    ca: Option<&std::path::Path>,
    client_cert: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Arc<rustls::ClientConfig>> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::Tls(format!("{flag} {}: {e}", path.display())))
    };
    let ca = ca.ok_or_else(|| {
        Error::Tls(
            "TLS needs --ssl-ca FILE: the CA certificate (PEM) that signed the nodes' certificates"
                .into(),
        )
    })?;
    let ca = read("--ssl-ca", ca)?;
    let client = match client_cert {
        Some((cert, key)) => Some((read("--ssl-cert", cert)?, read("--ssl-key", key)?)),
        None => None,
    };
    client_config(
        &ca,
        client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
    )
}

/// The certificates of a PEM CA file as a root store (at least one).
fn roots_from_pem(ca_pem: &[u8]) -> Result<RootCertStore> {
    let bad = |e: &dyn std::fmt::Display| Error::Tls(format!("CA certificate: {e}"));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(
            "CA certificate: no PEM certificate found".into(),
        ));
    }
    Ok(roots)
}

/// A connection after [`ServerTls::accept`].
pub(crate) enum Accepted {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn pem_problems_are_named() {
        let (cert, key) = self_signed();
        let ok = ServerTls::from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            None,
            ClientAuth::None,
            true,
        )
        .expect("a valid certificate and key");
        assert!(ok.is_optional());
        let err = |r: Result<ServerTls>| r.expect_err("refused").to_string();
        let e = err(ServerTls::from_pem(
            b"not pem",
            key.as_bytes(),
            None,
            ClientAuth::None,
            false,
        ));
        assert!(e.contains("certificate"), "{e}");
        let e = err(ServerTls::from_pem(
            cert.as_bytes(),
            b"",
            None,
            ClientAuth::None,
            false,
        ));
        assert!(e.contains("private key"), "{e}");
        let e = err(ServerTls::from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            None,
            ClientAuth::Required,
            false,
        ));
        assert!(e.contains("CA certificate"), "{e}");
        // The key of another certificate does not fit.
        let (_, other_key) = self_signed();
        let e = err(ServerTls::from_pem(
            cert.as_bytes(),
            other_key.as_bytes(),
            None,
            ClientAuth::None,
            false,
        ));
        assert!(e.contains("certificate and key"), "{e}");
    }
}
