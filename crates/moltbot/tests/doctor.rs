//! `moltbot doctor` as a new user would run it: all good; a port taken by another process; an
//! upstream answering 429; a wrong key (401); an HTTPS upstream whose CA only `SSL_CERT_FILE` trusts.
//! Each run is the real binary against a real fake upstream.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

mod tls_front;

use moltbot_testkit::{FakeConfig, FakeUpstream, Script};
use serde_json::Value;
use tls_front::PrivateCa;

const BIN: &str = env!("CARGO_BIN_EXE_moltbot");
const KEY: &str = "sk-doctor-test-key-0123456789abcdef";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, upstream: &str, chat_port: u16) {
    let toml = format!(
        r#"
chat_addr = "127.0.0.1:{chat_port}"
admin_addr = "127.0.0.1:{admin}"
database_url = "sqlite://{db}"

[[models]]
name = "gpt-test"
endpoint = "{upstream}"
api_key = "{KEY}"
"#,
        admin = free_port(),
        db = dir.join("moltbot.db").display(),
    );
    std::fs::write(dir.join("moltbot.toml"), toml).unwrap();
}

fn moltbot(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

/// Run `doctor --json` off the async runtime (the fake upstream lives on it); (exit code, report).
async fn doctor(dir: &Path) -> (i32, Value) {
    doctor_with(dir, &[]).await
}

/// `doctor --json` with these environment variables set.
async fn doctor_with(dir: &Path, env: &[(&str, &Path)]) -> (i32, Value) {
    let mut cmd = moltbot(dir);
    cmd.args(["doctor", "--json"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(!text.contains(KEY), "the key leaked into the report");
    (out.status.code().unwrap_or(-1), report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:#}"))
}

fn failed(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn setup(script: Script) -> (FakeUpstream, tempfile::TempDir, u16) {
    let fake = FakeUpstream::start(FakeConfig {
        default_script: script,
        ..FakeConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), &fake.base_url(), port);
    let init = moltbot(dir.path()).arg("init-db").output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    (fake, dir, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn all_good() {
    let (fake, dir, port) = setup(Script::default()).await;
    let (code, report) = doctor(dir.path()).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    assert!(failed(&report).is_empty(), "{report:#}");
    for name in [
        "config",
        "trust store",
        "listener chat",
        "listener admin",
        "database",
        "cpu_backend",
        "backend gpt-test dns",
    ] {
        assert_eq!(check(&report, name)["verdict"], "pass", "{name}: {report:#}");
    }
    assert!(
        check(&report, "listener chat")["detail"]
            .as_str()
            .unwrap()
            .contains(&port.to_string())
    );
    assert!(
        check(&report, "database")["detail"]
            .as_str()
            .unwrap()
            .contains("schema version")
    );
    let api = check(&report, "backend gpt-test api");
    assert_eq!(api["verdict"], "pass", "{report:#}");
    assert!(api["detail"].as_str().unwrap().contains("authenticated"));
    // The key really was sent.
    let seen = fake.requests();
    assert!(
        seen.iter()
            .any(|r| r.path == "/v1/models" && r.bearer() == Some(KEY))
    );

    // The human-readable form says the same.
    let out = moltbot(dir.path()).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PASS  listener chat"), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn port_taken_names_the_process() {
    let (_fake, dir, port) = setup(Script::default()).await;
    let _held = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (code, report) = doctor(dir.path()).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(failed(&report), ["listener chat"]);
    let chat = check(&report, "listener chat");
    let detail = chat["detail"].as_str().unwrap();
    assert!(detail.contains("already in use"), "{detail}");
    assert!(
        detail.contains(&format!("pid {}", std::process::id())),
        "{detail}"
    );
    assert!(chat["fix"].as_str().unwrap().contains("chat_addr"));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_429_is_explained_as_rate_limiting() {
    let (_fake, dir, _) = setup(Script::status(429)).await;
    let (code, report) = doctor(dir.path()).await;
    assert_eq!(code, 1);
    assert_eq!(failed(&report), ["backend gpt-test api"]);
    let api = check(&report, "backend gpt-test api");
    assert!(api["detail"].as_str().unwrap().starts_with("429"), "{api}");
    let fix = api["fix"].as_str().unwrap();
    assert!(fix.contains("quota") && fix.contains("api_keys"), "{fix}");
    // DNS and TCP were fine: the problem is the platform's limit, not the network.
    assert_eq!(check(&report, "backend gpt-test tcp")["verdict"], "pass");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_is_explained_as_a_key_problem() {
    let (_fake, dir, _) = setup(Script::status_for_key(KEY, 401)).await;
    let (code, report) = doctor(dir.path()).await;
    assert_eq!(code, 1);
    assert_eq!(failed(&report), ["backend gpt-test api"]);
    let api = check(&report, "backend gpt-test api");
    assert!(api["detail"].as_str().unwrap().starts_with("401"), "{api}");
    assert!(api["fix"].as_str().unwrap().contains("api_key"), "{api}");
}

#[test]
fn invalid_config_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("moltbot.toml"), "chat_addr = \"nonsense\"\n").unwrap();
    let out = moltbot(dir.path()).args(["doctor", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failed(&report), ["config"]);
    assert!(
        check(&report, "config")["detail"]
            .as_str()
            .unwrap()
            .contains("chat_addr")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_is_checked_in_cluster_mode() {
    let (_fake, dir, _) = setup(Script::default()).await;
    let (_, report) = doctor(dir.path()).await;
    assert_eq!(check(&report, "redis")["verdict"], "skip", "{report:#}");
    // The shared test Redis answers; a port where nothing listens fails with the fix.
    let toml = dir.path().join("moltbot.toml");
    let base = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("redis_url = \"redis://127.0.0.1:6379\"\n{base}")).unwrap();
    let (_, report) = doctor(dir.path()).await;
    let redis = check(&report, "redis");
    assert_eq!(redis["verdict"], "pass", "{report:#}");
    assert!(
        redis["detail"].as_str().unwrap().starts_with("Redis 7."),
        "{redis}"
    );
    std::fs::write(
        &toml,
        format!("redis_url = \"redis://127.0.0.1:{}\"\n{base}", free_port()),
    )
    .unwrap();
    let (code, report) = doctor(dir.path()).await;
    assert_eq!(code, 1);
    let redis = check(&report, "redis");
    assert_eq!(redis["verdict"], "fail", "{report:#}");
    assert!(redis["fix"].as_str().unwrap().contains("redis_url"), "{redis}");
}

/// A fake Bot API whose getMe accepts one token.
async fn fake_telegram() -> String {
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(|axum::extract::Path(path): axum::extract::Path<String>| async move {
            if path == "bot1:good-token/getMe" {
                (
                    axum::http::StatusCode::OK,
                    axum::Json(serde_json::json!({"ok": true, "result": {"id": 1, "is_bot": true, "username": "molt_bot"}})),
                )
            } else {
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn channel_credentials_are_checked_against_the_platform() {
    let (_fake, dir, _) = setup(Script::default()).await;
    let tg = fake_telegram().await;
    let base = std::fs::read_to_string(dir.path().join("moltbot.toml")).unwrap();
    let with = |token: &str| {
        format!(
            "{base}\n[[channels]]\nplatform = \"telegram\"\naccount = \"support\"\nmode = \"polling\"\napi_base = \"{tg}\"\nbot_token = \"{token}\"\n\n[[hooks]]\nname = \"crm\"\ntoken = \"hook-token-0123456789\"\n"
        )
    };
    std::fs::write(dir.path().join("moltbot.toml"), with("1:good-token")).unwrap();
    let (code, report) = doctor(dir.path()).await;
    assert_eq!(code, 0, "{report:#}");
    let c = check(&report, "channel telegram/support");
    assert_eq!(c["verdict"], "pass");
    assert!(c["detail"].as_str().unwrap().contains("bot @molt_bot"), "{c}");
    assert_eq!(check(&report, "channel hook/crm")["verdict"], "pass");

    std::fs::write(dir.path().join("moltbot.toml"), with("1:revoked-token")).unwrap();
    let (code, report) = doctor(dir.path()).await;
    assert_eq!(code, 1);
    let c = check(&report, "channel telegram/support");
    assert_eq!(c["verdict"], "fail");
    assert!(!c.to_string().contains("revoked-token"), "the token leaked: {c}");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstreams_are_checked_against_the_system_trust_store() {
    let PrivateCa {
        fake,
        good,
        bad,
        dir,
        ca_file,
    } = PrivateCa::start().await;
    let trust = [("SSL_CERT_FILE", ca_file.as_path())];

    // The private CA's root in SSL_CERT_FILE: the upstream's certificate is trusted.
    write_config(
        dir.path(),
        &format!("https://localhost:{}/v1", good.port()),
        free_port(),
    );
    let init = moltbot(dir.path()).arg("init-db").output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let (_, report) = doctor_with(dir.path(), &trust).await;
    let store = check(&report, "trust store");
    assert_eq!(store["verdict"], "pass", "{report:#}");
    assert!(
        store["detail"]
            .as_str()
            .unwrap()
            .contains(", 1 from the system store"),
        "{report:#}"
    );
    assert_eq!(
        check(&report, "backend gpt-test tls")["verdict"],
        "pass",
        "{report:#}"
    );
    assert_eq!(
        check(&report, "backend gpt-test api")["verdict"],
        "pass",
        "{report:#}"
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path == "/v1/models" && r.bearer() == Some(KEY)),
        "the call went through the HTTPS front"
    );

    // A certificate from a CA nobody trusts: refused, and said so.
    write_config(
        dir.path(),
        &format!("https://localhost:{}/v1", bad.port()),
        free_port(),
    );
    let (code, report) = doctor_with(dir.path(), &trust).await;
    assert_ne!(code, 0, "{report:#}");
    let tls = check(&report, "backend gpt-test tls");
    assert_eq!(tls["verdict"], "fail", "{report:#}");
    assert!(
        tls["detail"].as_str().unwrap().contains("UnknownIssuer"),
        "{report:#}"
    );

    // A trust store file that is not there is named.
    let missing = dir.path().join("no-such-ca.pem");
    let (_, report) = doctor_with(dir.path(), &[("SSL_CERT_FILE", missing.as_path())]).await;
    let store = check(&report, "trust store");
    assert_eq!(store["verdict"], "warn", "{report:#}");
    assert!(
        store["detail"].as_str().unwrap().contains("no-such-ca.pem"),
        "{report:#}"
    );
}
