//! `moltbot serve` against an upstream on `https://` whose certificate comes from a private CA: trusted
//! once the CA's root is in `SSL_CERT_FILE` (the process's one trust store, read before the first
//! upstream call), refused — and answered 502, not hung — when it is not.

mod tls_front;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tls_front::PrivateCa;

const BIN: &str = env!("CARGO_BIN_EXE_moltbot");
const ADMIN_KEY: &str = "mb_upstream_tls_test_key_0123456789abcdef";

/// A server killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `moltbot serve` on ephemeral ports with `endpoint` as its model and `ca_file` as SSL_CERT_FILE;
/// the dialog address once it is ready.
async fn serve(dir: &Path, endpoint: &str, ca_file: &Path) -> (Serve, String) {
    let ready = dir.join("ready.json");
    let child = Command::new(BIN)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SSL_CERT_FILE", ca_file)
        .env("MODEL_ENDPOINT", endpoint)
        .env("API_KEY", "sk-upstream")
        .env("MODEL_NAME", "fake-model")
        .env("MOLTBOT_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
        .env("MOLTBOT_SERVER__SHUTDOWN_DELAY", "10ms")
        .args([
            "serve",
            "--migrate",
            "--chat-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Serve(child);
    let started = Instant::now();
    while !ready.exists() {
        assert!(child.0.try_wait().unwrap().is_none(), "moltbot exited");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addrs: Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    (child, addrs["chat_addr"].as_str().unwrap().to_owned())
}

async fn chat(addr: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(ADMIN_KEY)
        .timeout(Duration::from_secs(30))
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": "hello over TLS"}]}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_behind_a_private_ca_is_trusted_through_ssl_cert_file() {
    let PrivateCa {
        fake,
        good,
        bad,
        dir,
        ca_file,
    } = PrivateCa::start().await;

    let (_server, addr) = serve(
        dir.path(),
        &format!("https://localhost:{}/v1", good.port()),
        &ca_file,
    )
    .await;
    let (status, body) = chat(&addr).await;
    assert_eq!(status, 200, "{body:#}");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{body:#}"
    );
    let seen = fake.requests();
    assert!(
        seen.iter()
            .any(|r| r.path == "/v1/chat/completions" && r.bearer() == Some("sk-upstream")),
        "the turn went through the HTTPS front: {seen:?}"
    );
    drop(_server);

    // The same trust store, an upstream certificate from a CA it does not hold: refused and answered.
    let before = fake.requests().len();
    let other = tempfile::tempdir().unwrap();
    let (_server, addr) = serve(
        other.path(),
        &format!("https://localhost:{}/v1", bad.port()),
        &ca_file,
    )
    .await;
    let (status, body) = chat(&addr).await;
    assert_eq!(status, 502, "{body:#}");
    assert!(body["error"]["message"].is_string(), "{body:#}");
    assert_eq!(
        fake.requests().len(),
        before,
        "nothing reached the upstream past the refused handshake"
    );
}
