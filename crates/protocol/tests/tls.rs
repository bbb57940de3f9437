//! TLS on the server: a TLS client (rustls, configured by
//! `tls_client_config`) gets the same answers as a plaintext one; a
//! TLS-only port drops plaintext clients; an optional port serves both.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gyre_protocol::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

async fn server(pki: &Pki, optional: bool) -> TestServer {
    let tls = ServerTls::from_pem(
        pki.cert.as_bytes(),
        pki.key.as_bytes(),
        None,
        ClientAuth::None,
        optional,
    )
    .unwrap();
    TestServer::start(ServerConfig {
        tls: Some(tls),
        ..ServerConfig::default()
    })
    .await
}

/// OPTIONS over TLS: the SUPPORTED frame's opcode.
async fn options_over_tls(pki: &Pki, addr: std::net::SocketAddr) -> u8 {
    let config = tls_client_config(pki.ca.as_bytes(), None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let frame = RequestFrame::new(1, Request::Options)
        .to_frame(Compression::None)
        .to_bytes();
    tls.write_all(&frame).await.unwrap();
    let mut header = [0u8; 9];
    tokio::time::timeout(TIMEOUT, tls.read_exact(&mut header))
        .await
        .unwrap()
        .unwrap();
    header[4]
}

const SUPPORTED: u8 = 0x06;

#[tokio::test]
async fn tls_only_serves_tls_and_drops_plaintext() {
    let pki = pki();
    let server = server(&pki, false).await;
    assert_eq!(options_over_tls(&pki, server.addr).await, SUPPORTED);
    let mut plain = Client::connect(server.addr).await;
    plain
        .send_raw(
            &RequestFrame::new(1, Request::Options)
                .to_frame(Compression::None)
                .to_bytes(),
        )
        .await;
    assert!(plain.is_closed().await, "a plaintext client was served");
    // The server keeps serving TLS clients.
    assert_eq!(options_over_tls(&pki, server.addr).await, SUPPORTED);
    server.stop().await;
}

#[tokio::test]
async fn optional_tls_serves_both() {
    let pki = pki();
    let server = server(&pki, true).await;
    assert_eq!(options_over_tls(&pki, server.addr).await, SUPPORTED);
    let mut plain = Client::connect(server.addr).await;
    plain.startup(false).await;
    assert_eq!(
        plain.request(2, Request::Options).await,
        Response::Supported(supported_options())
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_refuses_the_server() {
    let pki = pki();
    let other = pki_other();
    let server = server(&pki, false).await;
    let config = tls_client_config(other.as_bytes(), None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());
    server.stop().await;
}

fn pki_other() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.self_signed(&key).unwrap().pem()
}
