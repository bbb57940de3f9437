//! Internode TLS, as Cassandra's `server_encryption_options` with
//! `internode_encryption: all`: every connection (messages and bulk) is
//! mutual TLS, both ends verified against the cluster's CA. With endpoint
//! verification (the default here, unlike Cassandra), a certificate must
//! also be valid for the address its holder speaks for: the connecting
//! side checks the listener's certificate against the address it dialled,
//! and the accepting side checks the dialler's certificate against the
//! listen address its handshake claims. So a node with a certificate of
//! another CA, or with the certificate of another node, is refused before
//! any message crosses.
//!
//! rustls with the ring provider (it builds with `cc` alone: no cmake).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::{Error, Result};

/// A node's internode TLS: its certificate and key, and the cluster CA.
#[derive(Clone)]
pub struct InternodeTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    verify_endpoint: bool,
}

impl std::fmt::Debug for InternodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternodeTls")
            .field("verify_endpoint", &self.verify_endpoint)
            .finish_non_exhaustive()
    }
}

fn tls(what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

impl InternodeTls {
    /// From PEM text: this node's certificate chain (leaf first) and key,
    /// and the CA that signs every node's certificate. With
    /// `require_client_auth`, a connecting peer must present a certificate
    /// of that CA (without it, a certificate offered is still verified);
    /// with `verify_endpoint`, certificates must be valid for the peer's
    /// address (an IP subject alternative name).
    pub fn from_pem(
        certificate_chain: &[u8],
        private_key: &[u8],
        ca: &[u8],
        require_client_auth: bool,
        verify_endpoint: bool,
    ) -> Result<Self> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certificate_chain)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| tls("certificate", &e))?;
        if chain.is_empty() {
            return Err(Error::Tls("certificate: no PEM certificate found".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(private_key).map_err(|e| tls("private key", &e))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| tls("CA certificate", &e))?;
            roots.add(cert).map_err(|e| tls("CA certificate", &e))?;
        }
        if roots.is_empty() {
            return Err(Error::Tls(
                "CA certificate: no PEM certificate found".into(),
            ));
        }
        let roots = Arc::new(roots);
        // ring rather than aws-lc-rs: see gyre-protocol's TLS.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
        let client_verifier = if require_client_auth {
            client_verifier
        } else {
            client_verifier.allow_unauthenticated()
        };
        let client_verifier = client_verifier
            .build()
            .map_err(|e| tls("client verifier", &e))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls("protocol versions", &e))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| tls("certificate and key", &e))?;
        // Connections live long and are not resumed: no tickets to send.
        server.send_tls13_tickets = 0;

        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| tls("server verifier", &e))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls("protocol versions", &e))?;
        let builder = if verify_endpoint {
            builder.with_webpki_verifier(server_verifier)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(server_verifier)))
        };
        let client = builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls("certificate and key", &e))?;
        Ok(InternodeTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            verify_endpoint,
        })
    }

    /// Whether certificates must be valid for their holder's address.
    pub fn verifies_endpoints(&self) -> bool {
        self.verify_endpoint
    }

    pub(crate) async fn accept(
        &self,
        socket: TcpStream,
        remote: SocketAddr,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>> {
        self.acceptor
            .accept(socket)
            .await
            .map_err(|e| Error::Handshake {
                peer: remote,
                reason: format!("TLS: {e}"),
            })
    }

    pub(crate) async fn connect(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::IpAddress(peer.ip().into());
        self.connector
            .connect(name, socket)
            .await
            .map_err(|e| Error::Handshake {
                peer,
                reason: format!("TLS: {e}"),
            })
    }

    /// Checks an accepted peer's certificate against the listen address
    /// its handshake claims. A peer without a certificate (client
    /// authentication not required) passes: the socket address check
    /// still holds it to its address.
    pub(crate) fn check_claim(
        &self,
        stream: &tokio_rustls::server::TlsStream<TcpStream>,
        claimed: IpAddr,
        remote: SocketAddr,
    ) -> Result<()> {
        if !self.verify_endpoint {
            return Ok(());
        }
        let Some(leaf) = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
        else {
            return Ok(());
        };
        let refuse = |e: &dyn std::fmt::Display| Error::Handshake {
            peer: remote,
            reason: format!("certificate is not valid for the claimed address {claimed}: {e}"),
        };
        let parsed = ParsedCertificate::try_from(leaf).map_err(|e| refuse(&e))?;
        rustls::client::verify_server_name(&parsed, &ServerName::IpAddress(claimed.into()))
            .map_err(|e| refuse(&e))
    }
}

/// Chain verification without the name check, for clusters whose node
/// certificates do not name their addresses
/// (`require_endpoint_verification = false`, Cassandra's default).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
