//! Shared by the TLS test binaries: a test CA made with rcgen, HTTPS clients that trust only it,
//! and small waits.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use moltbot_config::Config;
use moltbot_server::tls::CertInfo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SerialNumber};
use tokio::net::TcpListener;

use crate::common::config;

pub const HOST: &str = "moltbot.test";

/// A CA made for one test.
pub struct TestCa {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "moltbot test CA");
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` with this serial: (cert PEM, key PEM).
    pub fn leaf(&self, names: &[&str], serial: u64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Serial as `CertInfo` prints it (hex bytes with colons).
pub fn serial_hex(serial: u64) -> String {
    let mut params = CertificateParams::new(vec!["x".to_owned()]).unwrap();
    params.serial_number = Some(SerialNumber::from(serial));
    let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
    CertInfo::of_der(cert.der()).unwrap().serial
}

/// A client that trusts only `ca_pem`, resolves `host` to `addr`, and keeps no pooled connections
/// (every request is a new handshake, so it sees the certificate served now).
pub fn https_client(
    ca_pem: &str,
    host: &str,
    addrs: &[SocketAddr],
    credential: Option<&str>,
) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    for a in addrs {
        b = b.resolve(host, *a);
    }
    if let Some(c) = credential {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {c}").parse().unwrap(),
        );
        b = b.default_headers(headers);
    }
    b.build().unwrap()
}

pub fn peer_serial(r: &reqwest::Response) -> String {
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().expect("tls info");
    CertInfo::of_der(info.peer_certificate().expect("peer certificate"))
        .unwrap()
        .serial
}

/// The serial served now: a new client each time, since an HTTP/2 connection would be reused.
pub async fn served_serial(client: impl Fn() -> reqwest::Client, url: &str) -> Option<String> {
    let r = client().get(url).send().await.ok()?;
    Some(peer_serial(&r))
}

pub fn write(path: &Path, text: &str) {
    // Like certbot: write a new file and rename it over the old one.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn tls_config(dir: &Path, fake_url: &str, cert: &Path, key: &Path) -> Config {
    let mut cfg = config(dir, fake_url, "");
    cfg.tls.cert = Some(cert.display().to_string());
    cfg.tls.key = Some(key.display().to_string());
    cfg.tls.reload_interval = Duration::from_millis(200);
    cfg
}

/// A loopback listener on an ephemeral port.
pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

pub async fn wait_ok(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => return r,
            other => {
                assert!(Instant::now() < deadline, "{url}: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

pub async fn wait_serial(client: impl Fn() -> reqwest::Client, url: &str, serial: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = served_serial(&client, url).await;
        if got.as_deref() == Some(serial) {
            return;
        }
        assert!(Instant::now() < deadline, "still serving {got:?}, want {serial}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
