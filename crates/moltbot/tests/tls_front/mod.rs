//! An HTTPS front for the fake upstream, with a CA made for the test: what a model platform behind a
//! private CA looks like to moltbot.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use moltbot_testkit::{FakeConfig, FakeUpstream};

/// A fake upstream behind two HTTPS fronts: `good`'s certificate comes from a CA whose root is written to
/// `ca_file` (for `SSL_CERT_FILE`), `bad`'s from a CA nobody trusts; `dir` holds the file.
pub struct PrivateCa {
    pub fake: FakeUpstream,
    pub good: SocketAddr,
    pub bad: SocketAddr,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
}

impl PrivateCa {
    pub async fn start() -> Self {
        let fake = FakeUpstream::start(FakeConfig::default()).await;
        let trusted = test_ca("trusted test CA");
        let stranger = test_ca("stranger test CA");
        let good = https_front(&trusted, fake.addr()).await;
        let bad = https_front(&stranger, fake.addr()).await;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("private-ca.pem");
        std::fs::write(&ca_file, trusted.0.pem()).unwrap();
        Self {
            fake,
            good,
            bad,
            dir,
            ca_file,
        }
    }
}

/// A CA made for one test, named `name` (CAs of one test need distinct names, as real ones have):
/// (certificate, key).
pub fn test_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

/// An HTTPS front for `upstream` on a loopback port: a `localhost` certificate signed by `ca`, each
/// connection's bytes copied to the fake upstream after the handshake.
pub async fn https_front(ca: &(rcgen::Certificate, rcgen::KeyPair), upstream: SocketAddr) -> SocketAddr {
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca.0, &ca.1)
        .unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake (the untrusted case) ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}
