//! Native TLS with certificate files: HTTPS on the dialog and admin listeners (own test CA made with
//! rcgen), HTTP/2 through ALPN, reload without restart when the files change, a broken replacement
//! keeping the old certificate, startup errors naming the file, and handshake timeouts.
//! ACME against pebble: `tls_acme.rs`.

mod common;
mod tls_support;

use std::time::{Duration, Instant};

use common::*;
use moltbot_config::Config;
use serde_json::json;
use tls_support::*;

#[tokio::test]
async fn https_on_dialog_and_admin_and_reload_without_restart() {
    let fake = fake().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (c1, k1) = ca.leaf(&[HOST], 1001);
    write(&cert_path, &c1);
    write(&key_path, &k1);
    let cfg = tls_config(dir.path(), &fake.base_url(), &cert_path, &key_path);
    let srv = start_config(cfg, dir).await;
    let chat = srv.addrs.chat_addr;
    let admin = srv.addrs.admin_addr;
    let client = https_client(&ca.pem(), HOST, &[chat], Some(&srv.secret));
    let chat_url = |p: &str| format!("https://{HOST}:{}{p}", chat.port());
    let admin_url = |p: &str| format!("https://{HOST}:{}{p}", admin.port());

    // Dialog over HTTPS, HTTP/2 through ALPN; HSTS because the request came over TLS.
    let r = wait_ok(&client, &chat_url("/v1/models")).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert!(r.headers().contains_key("strict-transport-security"));
    assert_eq!(peer_serial(&r), serial_hex(1001));
    let r = client
        .post(chat_url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-test", "messages": [user("hi")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // HTTP/1.1 still works.
    let h1 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve(HOST, chat)
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(chat_url("/health")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );

    // Plain HTTP to the TLS port fails.
    let plain = reqwest::Client::new();
    assert!(plain.get(format!("http://{chat}/health")).send().await.is_err());

    // An idle connection that never starts its handshake does not hold up others.
    let _idle = tokio::net::TcpStream::connect(chat).await.unwrap();
    assert_eq!(
        client.get(chat_url("/health")).send().await.unwrap().status(),
        200
    );

    // Admin over HTTPS: the session cookie is `Secure`.
    let admin_client = https_client(&ca.pem(), HOST, &[admin], None);
    let r = admin_client
        .post(admin_url("/admin/api/session"))
        .json(&json!({"api_key": srv.secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");

    // New files (new key, new serial) are served without restart.
    let (c2, k2) = ca.leaf(&[HOST], 1002);
    write(&key_path, &k2);
    write(&cert_path, &c2);
    let chat_client = || https_client(&ca.pem(), HOST, &[chat], None);
    let admin_client = || https_client(&ca.pem(), HOST, &[admin], None);
    wait_serial(chat_client, &chat_url("/health"), &serial_hex(1002)).await;
    let admin_serial = served_serial(admin_client, &admin_url("/health")).await;
    assert_eq!(admin_serial.as_deref(), Some(serial_hex(1002).as_str()));

    // A broken certificate keeps the old one and counts an error.
    write(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        served_serial(chat_client, &chat_url("/health")).await.as_deref(),
        Some(serial_hex(1002).as_str())
    );
    // A valid certificate whose key is not the one in tls.key also keeps the old pair.
    let (c3, _k3) = ca.leaf(&[HOST], 1003);
    write(&cert_path, &c3);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        served_serial(chat_client, &chat_url("/health")).await.as_deref(),
        Some(serial_hex(1002).as_str())
    );
    let metrics = https_client(&ca.pem(), HOST, &[admin], Some(&srv.secret))
        .get(admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let errors = metric(&metrics, "moltbot_tls_reload_errors_total");
    assert!(errors >= 2.0, "reload errors {errors}\n{metrics}");
    assert!(metric(&metrics, "moltbot_tls_cert_expiry_seconds") > 1.0e9);
    srv.stop().await;
}

#[tokio::test]
async fn tls_only_on_the_listeners_named() {
    let fake = fake().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (c, k) = ca.leaf(&[HOST], 7);
    write(&cert_path, &c);
    write(&key_path, &k);
    let mut cfg = tls_config(dir.path(), &fake.base_url(), &cert_path, &key_path);
    cfg.tls.listeners = vec!["dialog".to_owned()];
    let srv = start_config(cfg, dir).await;
    let client = https_client(&ca.pem(), HOST, &[srv.addrs.chat_addr], None);
    let url = format!("https://{HOST}:{}/health", srv.addrs.chat_addr.port());
    wait_ok(&client, &url).await;
    // Admin stays plain HTTP, and its cookie is not `Secure` there.
    let r = srv.anon.get(srv.admin_url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = srv
        .anon
        .post(srv.admin_url("/admin/api/session"))
        .json(&json!({"api_key": srv.secret}))
        .send()
        .await
        .unwrap();
    assert!(!r.headers()["set-cookie"].to_str().unwrap().contains("Secure"));
    srv.stop().await;
}

#[tokio::test]
async fn bad_tls_files_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let toml = |extra: &str| {
        let path = dir.path().join("m.toml");
        std::fs::write(&path, format!("database_url = \"sqlite::memory:\"\n{extra}")).unwrap();
        Config::load(moltbot_config::LoadOptions {
            config_path: Some(path),
            env: Default::default(),
            dotenv_dir: None,
            overrides: Default::default(),
        })
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let e = toml(&format!("[tls]\ncert = \"{}\"\n", missing.display()));
    assert!(e.contains("tls.key"), "{e}");
    let e = toml(&format!(
        "[tls]\ncert = \"{0}\"\nkey = \"{0}\"\n",
        missing.display()
    ));
    assert!(e.contains("tls.cert") && e.contains("missing.pem"), "{e}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let e = toml(&format!(
        "[tls]\ncert = \"{0}\"\nkey = \"{0}\"\n[tls.acme]\ndomains = [\"a.example\"]\n",
        garbage.display()
    ));
    assert!(e.contains("tls.acme.domains"), "{e}");
    let e = toml("[tls]\nlisteners = [\"dialog\", \"chat\"]\n");
    assert!(e.contains("tls.listeners[1]"), "{e}");

    // Readable but not a certificate: the server refuses to start and names the file.
    let mut cfg = Config::default();
    cfg.tls.cert = Some(garbage.display().to_string());
    cfg.tls.key = Some(garbage.display().to_string());
    let e = moltbot_server::tls::Tls::from_config(&cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("garbage.pem"), "{e}");
}

#[tokio::test]
async fn a_stalled_handshake_times_out_without_blocking_others() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (c, k) = ca.leaf(&[HOST], 9);
    write(&cert_path, &c);
    write(&key_path, &k);
    let mut cfg = Config::default();
    cfg.tls.cert = Some(cert_path.display().to_string());
    cfg.tls.key = Some(key_path.display().to_string());
    let tls = moltbot_server::tls::Tls::from_config(&cfg).unwrap().unwrap();
    let tcp = bind().await;
    let addr = tcp.local_addr().unwrap();
    let listener = tls
        .acceptor()
        .with_handshake_timeout(Duration::from_millis(300))
        .listen(tcp)
        .unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let listener = moltbot_server::tls::listener::ServeListener::Tls(listener);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // A client that connects and sends nothing holds no accept slot …
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client = https_client(&ca.pem(), HOST, &[addr], None);
    let r = client
        .get(format!("https://{HOST}:{}/", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    // … and is disconnected when the handshake timeout passes.
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await
    .expect("the server closes a stalled handshake");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.abort();
}
