//! Built-in ACME against Debian's `pebble`: moltbot obtains a certificate through TLS-ALPN-01 (and
//! serves it again from its cache after a restart) and through HTTP-01, and the HTTPS listener then
//! serves a certificate that chains to pebble's root.
//!
//! Needs the Debian package `pebble` (it ships `pebble` and `pebble-challtestsrv`); without it these
//! tests fail, they do not skip.

mod common;
mod tls_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use moltbot_server::Listeners;
use serde_json::json;
use tls_support::*;
use tokio::net::TcpListener;

struct Pebble {
    _dns: tokio::process::Child,
    _pebble: tokio::process::Child,
    directory: String,
    /// The CA of pebble's own HTTPS certificate (for `tls.acme.ca_file`).
    https_ca_file: PathBuf,
    mgmt: SocketAddr,
    https_ca: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(program: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> tokio::process::Child {
    let out = std::fs::File::create(log).unwrap();
    tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}): the ACME tests need Debian's `pebble` package \
                 (apt-get install pebble), which provides pebble and pebble-challtestsrv"
            )
        })
}

/// Start pebble-challtestsrv (DNS only: every name is 127.0.0.1) and pebble, validating
/// HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
async fn pebble(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
    let dns = free_port();
    let dns_mgmt = free_port();
    let dns_addr = format!("127.0.0.1:{dns}");
    let dns_mgmt_addr = format!("127.0.0.1:{dns_mgmt}");
    let dns_child = spawn(
        "pebble-challtestsrv",
        &[
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            &dns_addr,
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &dns_mgmt_addr,
        ],
        &[],
        &dir.join("challtestsrv.log"),
    );
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], 1);
    let (cert_path, key_path) = (dir.join("pebble-cert.pem"), dir.join("pebble-key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let https_ca_file = dir.join("pebble-https-ca.pem");
    std::fs::write(&https_ca_file, ca.pem()).unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mgmt = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = json!({"pebble": {
        "listenAddress": listen.to_string(),
        "managementListenAddress": mgmt.to_string(),
        "certificate": cert_path,
        "privateKey": key_path,
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    let config_path = dir.join("pebble-config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let pebble_child = spawn(
        "pebble",
        &["-config", config_path.to_str().unwrap(), "-dnsserver", &dns_addr],
        &[("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_WFE_NONCEREJECT", "0")],
        &dir.join("pebble.log"),
    );
    let p = Pebble {
        _dns: dns_child,
        _pebble: pebble_child,
        directory: format!("https://{listen}/dir"),
        https_ca_file,
        mgmt,
        https_ca: ca.pem(),
    };
    let client = pebble_client(&p);
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(&p.directory).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "pebble did not start; see {}",
            dir.join("pebble.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p
}

fn pebble_client(p: &Pebble) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(p.https_ca.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// The root of the certificates pebble issues (it makes a new one at each start).
async fn pebble_root(p: &Pebble) -> String {
    pebble_client(p)
        .get(format!("https://{}/roots/0", p.mgmt))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

const ACME_HOST: &str = "moltbot.example.com";

/// Start moltbot with ACME on bound listeners (chat speaks TLS; optional HTTP-01 listener).
async fn start_acme(
    fake_url: &str,
    dir: tempfile::TempDir,
    cache: &Path,
    p: &Pebble,
    chat: TcpListener,
    http01: Option<TcpListener>,
) -> TestServer {
    let mut cfg = config(dir.path(), fake_url, "");
    cfg.tls.acme.domains = vec![ACME_HOST.to_owned()];
    cfg.tls.acme.contact = vec!["mailto:ops@example.com".to_owned()];
    cfg.tls.acme.directory_url = p.directory.clone();
    cfg.tls.acme.ca_file = Some(p.https_ca_file.display().to_string());
    cfg.tls.acme.cache_dir = cache.display().to_string();
    cfg.tls.acme.http01_addr = http01.as_ref().map(|l| l.local_addr().unwrap());
    let listeners = Listeners {
        chat,
        admin: bind().await,
        debug: None,
        metrics: None,
        http01,
    };
    start_listeners(cfg, dir, listeners).await
}

/// Wait until the HTTPS listener serves a certificate that chains to pebble's root.
async fn wait_for_acme_cert(p: &Pebble, chat: SocketAddr) -> String {
    let root = pebble_root(p).await;
    let client = https_client(&root, ACME_HOST, &[chat], None);
    let url = format!("https://{ACME_HOST}:{}/health", chat.port());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match client.get(&url).send().await {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                return peer_serial(&r);
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no pebble-issued certificate in time: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

#[tokio::test]
async fn acme_tls_alpn_01_against_pebble() {
    let fake = fake().await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("acme");
    let chat = bind().await;
    let chat_addr = chat.local_addr().unwrap();
    let p = pebble(work.path(), free_port(), chat_addr.port()).await;
    let srv = start_acme(
        &fake.base_url(),
        tempfile::tempdir().unwrap(),
        &cache,
        &p,
        chat,
        None,
    )
    .await;
    let serial = wait_for_acme_cert(&p, chat_addr).await;
    srv.stop().await;
    assert!(
        std::fs::read_dir(&cache).unwrap().count() >= 2,
        "account and certificate are cached"
    );

    // A restart serves the cached certificate (same serial) instead of ordering a new one; pebble
    // would validate the new order on the old port, where nothing listens now.
    let chat = bind().await;
    let chat_addr = chat.local_addr().unwrap();
    let srv = start_acme(
        &fake.base_url(),
        tempfile::tempdir().unwrap(),
        &cache,
        &p,
        chat,
        None,
    )
    .await;
    assert_eq!(wait_for_acme_cert(&p, chat_addr).await, serial);
    srv.stop().await;
}

#[tokio::test]
async fn acme_http_01_against_pebble() {
    let fake = fake().await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("acme");
    let chat = bind().await;
    let chat_addr = chat.local_addr().unwrap();
    let http01 = bind().await;
    let http01_addr = http01.local_addr().unwrap();
    let p = pebble(work.path(), http01_addr.port(), free_port()).await;
    let srv = start_acme(
        &fake.base_url(),
        tempfile::tempdir().unwrap(),
        &cache,
        &p,
        chat,
        Some(http01),
    )
    .await;
    wait_for_acme_cert(&p, chat_addr).await;
    // Everything but challenges is redirected to https.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{http01_addr}/v1/models?x=1"))
        .header("host", ACME_HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://{ACME_HOST}:{}/v1/models?x=1", chat_addr.port()).as_str()
    );
    let r = reqwest::get(format!("http://{http01_addr}/.well-known/acme-challenge/unknown"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    srv.stop().await;
}
