//! Start the real server on `127.0.0.1:0` against a fake upstream and a temporary SQLite database.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use moltbot_config::{Config, LoadOptions};
use moltbot_core::{ApiKey, Clock, KeyLimits, Scope};
use moltbot_server::auth::Auth;
use moltbot_server::{AppState, BoundAddrs, BuildOptions, Listeners};
use moltbot_testkit::{FakeConfig, FakeUpstream, Script};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const KEY: &str = "sk-test-SECRET-upstream-key-0123456789";

pub struct TestServer {
    pub addrs: BoundAddrs,
    pub state: AppState,
    /// Sends the test key (every scope) as `Authorization: Bearer`.
    pub http: reqwest::Client,
    /// Sends no credentials.
    pub anon: reqwest::Client,
    /// The test key's id (the owner of what it creates) and secret.
    pub key_id: String,
    pub secret: String,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.chat_addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.admin_addr)
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    pub async fn chat(&self, body: Value) -> (u16, Value) {
        let r = self.post("/v1/chat/completions", body).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A conversation's stored messages, oldest first (up to 100).
    pub async fn stored_messages(&self, conversation: &str) -> Vec<moltbot_core::StoredMessage> {
        let query = moltbot_core::ItemQuery {
            after: None,
            limit: 100,
            ascending: true,
        };
        let (items, _) = self
            .state
            .store
            .list_messages(conversation, &query)
            .await
            .expect("list messages");
        items
    }

    /// Trigger shutdown (like SIGTERM).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn stop(mut self) {
        self.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.handle).await;
    }
}

/// A config whose models all point at `fake`. `extra_toml` is appended (e.g. more `[[models]]`).
pub fn config(dir: &std::path::Path, fake_url: &str, extra_toml: &str) -> Config {
    let db = dir.join("moltbot.db");
    let toml = format!(
        r#"
chat_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
database_url = "sqlite://{db}"

[server]
shutdown_delay = "50ms"
shutdown_grace = "5s"
body_limit_bytes = 65536

[[models]]
name = "gpt-test"
endpoint = "{fake_url}"
api_key = "{KEY}"
upstream_model = "fake-model"
context_window = 4096
max_tokens = 1024
retry = {{ max_attempts = 2, base_delay = "10ms", max_delay = "50ms", retry_after_cap = "2s" }}
timeouts = {{ connect = "2s", first_byte = "3s", idle = "3s", total = "20s" }}
{extra_toml}
"#,
        db = db.display()
    );
    let path = dir.join("moltbot.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(LoadOptions {
        config_path: Some(path),
        env: BTreeMap::new(),
        dotenv_dir: None,
        overrides: Default::default(),
    })
    .expect("valid test config")
    .config
}

pub async fn fake() -> FakeUpstream {
    FakeUpstream::start(FakeConfig::default()).await
}

pub async fn fake_with(script: Script) -> FakeUpstream {
    FakeUpstream::start(FakeConfig {
        default_script: script,
        ..FakeConfig::default()
    })
    .await
}

pub async fn start(fake: &FakeUpstream) -> TestServer {
    start_with(fake, "", |_| {}).await
}

pub async fn start_with(
    fake: &FakeUpstream,
    extra_toml: &str,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &fake.base_url(), extra_toml);
    tweak(&mut cfg);
    start_config(cfg, dir).await
}

pub async fn start_config(cfg: Config, dir: tempfile::TempDir) -> TestServer {
    start_config_clock(cfg, dir, None).await
}

/// Like [`start_config`]; with `clock`, access control (token times, rate limits, lockouts, key cache)
/// runs on that clock instead of the system's.
pub async fn start_config_clock(
    cfg: Config,
    dir: tempfile::TempDir,
    clock: Option<Arc<dyn Clock>>,
) -> TestServer {
    let listeners = Listeners::bind(cfg.chat_addr, cfg.admin_addr, cfg.debug_addr)
        .await
        .unwrap()
        .with_metrics(cfg.metrics_addr)
        .await
        .unwrap();
    start_listeners_clock(cfg, dir, listeners, clock).await
}

/// Like [`start_config`], on listeners the test bound itself.
pub async fn start_listeners(cfg: Config, dir: tempfile::TempDir, listeners: Listeners) -> TestServer {
    start_listeners_clock(cfg, dir, listeners, None).await
}

async fn start_listeners_clock(
    cfg: Config,
    dir: tempfile::TempDir,
    listeners: Listeners,
    clock: Option<Arc<dyn Clock>>,
) -> TestServer {
    let addrs = listeners.addrs().unwrap();
    let mut state = moltbot_server::build_state(cfg, BuildOptions::default())
        .await
        .unwrap();
    if let Some(clock) = clock {
        let mut shared = state.to_shared();
        shared.auth = Arc::new(Auth::new(&shared.config, shared.store.clone(), clock.clone()));
        shared.clock = clock;
        state = moltbot_server::AppState::new(shared);
    }
    let (key, secret) = create_key(&state, &Scope::ALL, KeyLimits::default()).await;
    let (tx, rx) = oneshot::channel::<()>();
    let st = state.clone();
    let handle = tokio::spawn(async move {
        moltbot_server::serve(st, listeners, async { rx.await.unwrap_or(()) }, None).await
    });
    TestServer {
        addrs,
        state,
        http: client(&secret),
        anon: reqwest::Client::new(),
        key_id: key.id,
        secret,
        shutdown: Some(tx),
        handle,
        dir,
    }
}

/// A reqwest client that sends `Authorization: Bearer <credential>`.
pub fn client(credential: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {credential}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Store a new key (as `moltbot keys create` would) and return it with its secret.
pub async fn create_key(state: &AppState, scopes: &[Scope], limits: KeyLimits) -> (ApiKey, String) {
    let (key, secret) = ApiKey::generate("test", scopes.to_vec(), limits, state.clock.now_secs(), None);
    state.store.create_api_key(&key).await.unwrap();
    (key, secret)
}

pub fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// Parse an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| ev.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// An in-memory log sink for `moltbot_server::logging::subscriber`, to search captured logs for secrets.
#[derive(Clone, Default)]
pub struct Capture(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
