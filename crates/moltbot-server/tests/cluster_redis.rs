//! Cluster mode: two replicas (two servers in this process, one SQLite database) share limits,
//! lockouts, WebSocket tickets, sign-outs and key revocations through a real Redis — the shared one on
//! 127.0.0.1:6379 under a random key prefix, or, for outages, a private `redis-server` this test starts
//! on a free port and kills.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use moltbot_config::{RedisFailure, Secret};
use moltbot_core::{KeyLimits, Scope};
use reqwest::header::COOKIE;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

fn prefix() -> String {
    format!("moltbot-test:{}:", hex::encode(rand::random::<[u8; 6]>()))
}

/// Two replicas on one database and one Redis (same JWT secret, as replicas have).
async fn pair(
    fake: &moltbot_testkit::FakeUpstream,
    redis_url: &str,
    prefix: &str,
    tweak: impl Fn(&mut moltbot_config::Config),
) -> (TestServer, TestServer) {
    let dir_a = tempfile::tempdir().unwrap();
    let db = dir_a.path().join("moltbot.db");
    let setup = |cfg: &mut moltbot_config::Config| {
        cfg.redis_url = Some(redis_url.to_owned());
        cfg.cluster.redis_key_prefix = prefix.to_owned();
        cfg.auth.jwt_secret = Some(Secret::new("cluster-test-secret-0123456789-abcdefghijklmnop"));
        cfg.limits.burst_window = Duration::from_secs(5);
        tweak(cfg);
    };
    let mut cfg_a = config(dir_a.path(), &fake.base_url(), "");
    setup(&mut cfg_a);
    let a = start_config(cfg_a, dir_a).await;
    let dir_b = tempfile::tempdir().unwrap();
    let mut cfg_b = config(dir_b.path(), &fake.base_url(), "");
    cfg_b.database_url = format!("sqlite://{}", db.display());
    setup(&mut cfg_b);
    let b = start_config(cfg_b, dir_b).await;
    wait_for(|| a.state.auth.cluster().unwrap().is_up() && b.state.auth.cluster().unwrap().is_up()).await;
    (a, b)
}

async fn wait_for(mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "condition not met within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Status codes of `n` GET /v1/models alternating between the replicas.
async fn hammer(a: &TestServer, b: &TestServer, secret: &str, n: usize) -> Vec<u16> {
    let c = client(secret);
    let mut out = Vec::new();
    for i in 0..n {
        let url = if i % 2 == 0 {
            a.url("/v1/models")
        } else {
            b.url("/v1/models")
        };
        out.push(c.get(url).send().await.unwrap().status().as_u16());
    }
    out
}

fn count(codes: &[u16], code: u16) -> usize {
    codes.iter().filter(|&&c| c == code).count()
}

const RPM_60: KeyLimits = KeyLimits {
    requests_per_minute: Some(60),
    tokens_per_minute: None,
    daily_tokens: None,
    concurrent_streams: None,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_replicas() {
    let fake = fake().await;
    let (a, b) = pair(&fake, SHARED_REDIS, &prefix(), |_| {}).await;
    // R = 60/min, burst window 5 s → B = 5. At most B + R·t pass in total (t ≈ the run time, well
    // under a second here, so at most one more); per-replica limits would let 2·B = 10 through.
    let (_, secret) = create_key(&a.state, &[Scope::Chat], RPM_60).await;
    let started = Instant::now();
    let codes = hammer(&a, &b, &secret, 20).await;
    let elapsed = started.elapsed().as_secs_f64();
    let passed = count(&codes, 200);
    let bound = 5 + (elapsed).ceil() as usize;
    assert!(
        (5..=bound).contains(&passed),
        "{passed} passed in {elapsed:.2} s: {codes:?}"
    );
    assert_eq!(passed + count(&codes, 429), 20, "{codes:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_add_up_across_replicas() {
    let fake = fake().await;
    let (a, b) = pair(&fake, SHARED_REDIS, &prefix(), |c| c.auth.lockout_threshold = 3).await;
    // 2 failures on A and 1 on B lock the address out on both.
    let bad = client("sk-moltbot-not-a-real-key-0000000000000000");
    for srv in [&a, &a, &b] {
        assert_eq!(bad.get(srv.url("/v1/models")).send().await.unwrap().status(), 401);
    }
    for srv in [&a, &b] {
        let r = bad.get(srv.url("/v1/models")).send().await.unwrap();
        assert_eq!(r.status(), 429);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_auth_failures");
    }
    // Even a valid key is refused from a locked-out address.
    assert_eq!(a.get("/v1/models").await.status(), 429);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_sign_outs_and_revocations_are_shared() {
    let fake = fake().await;
    let (a, b) = pair(&fake, SHARED_REDIS, &prefix(), |c| {
        c.auth.key_cache_ttl = Duration::from_secs(3600);
    })
    .await;

    // A WebSocket ticket issued by A is redeemed once, on B.
    let r = a.http.post(a.url("/v1/ws/ticket")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let ticket = t["ticket"].as_str().unwrap();
    let url = format!("ws://{}/v1/ws?ticket={ticket}", b.addrs.chat_addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("ticket accepted on B");
    ws.close(None).await.unwrap();
    match tokio_tungstenite::connect_async(&url).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("a used ticket must be refused, got {:?}", other.map(|_| ())),
    }

    // An admin session signed out on A is refused on B.
    let r = a
        .anon
        .post(a.admin_url("/admin/api/session"))
        .json(&json!({ "api_key": a.secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_b = |cookie: String| {
        let c = b
            .anon
            .get(b.admin_url("/admin/api/session"))
            .header(COOKIE, cookie);
        async move { c.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(on_b(cookie.clone()).await, 200);
    let r = a
        .anon
        .delete(a.admin_url("/admin/api/session"))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(on_b(cookie).await, 401);

    // A key revoked through A is refused by B at once, although B cached it for an hour.
    let (key, secret) = create_key(&a.state, &[Scope::Chat], KeyLimits::default()).await;
    let c = client(&secret);
    assert_eq!(c.get(b.url("/v1/models")).send().await.unwrap().status(), 200);
    let r = a
        .http
        .delete(a.admin_url(&format!("/admin/api/keys/{}", key.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let start = Instant::now();
    loop {
        let status = c.get(b.url("/v1/models")).send().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "B still accepts a revoked key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    a.stop().await;
    b.stop().await;
}

/// A private redis-server on a free port (killed on drop).
struct PrivateRedis {
    port: u16,
    child: Child,
}

impl PrivateRedis {
    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }

    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn metric(srv: &TestServer, name: &str) -> Option<f64> {
    let text = srv
        .http
        .get(srv.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_per_replica_and_recovers_without_restart() {
    let fake = fake().await;
    let mut redis = PrivateRedis::start();
    let (a, b) = pair(&fake, &redis.url(), &prefix(), |_| {}).await;
    assert_eq!(metric(&a, "moltbot_redis_up").await, Some(1.0));

    redis.kill();
    wait_for(|| !a.state.auth.cluster().unwrap().is_up() && !b.state.auth.cluster().unwrap().is_up()).await;
    // Policy "open": still served, limited per replica (each has its own burst of 5).
    let (_, secret) = create_key(&a.state, &[Scope::Chat], RPM_60).await;
    let started = Instant::now();
    let codes = hammer(&a, &b, &secret, 24).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "requests must not hang on a dead Redis"
    );
    let passed = count(&codes, 200);
    assert!(
        (10..=12).contains(&passed),
        "per-replica limits while Redis is down: {codes:?}"
    );
    assert_eq!(passed + count(&codes, 429), 24, "{codes:?}");
    assert_eq!(metric(&a, "moltbot_redis_up").await, Some(0.0));
    let ready: Value = a
        .anon
        .get(a.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["redis"], "degraded", "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");

    // Redis back on the same port: shared again, no restart.
    let _redis = PrivateRedis::start_on(redis.port);
    wait_for(|| a.state.auth.cluster().unwrap().is_up() && b.state.auth.cluster().unwrap().is_up()).await;
    let (_, secret) = create_key(&a.state, &[Scope::Chat], RPM_60).await;
    let started = Instant::now();
    let codes = hammer(&a, &b, &secret, 20).await;
    let bound = 5 + started.elapsed().as_secs_f64().ceil() as usize;
    assert!(
        (5..=bound).contains(&count(&codes, 200)),
        "shared again: {codes:?}"
    );
    assert_eq!(metric(&a, "moltbot_redis_up").await, Some(1.0));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_under_the_closed_policy_answers_503() {
    let fake = fake().await;
    let mut redis = PrivateRedis::start();
    let (a, b) = pair(&fake, &redis.url(), &prefix(), |c| {
        c.cluster.redis_failure = RedisFailure::Closed;
    })
    .await;
    let (_, secret) = create_key(&a.state, &[Scope::Chat], RPM_60).await;
    let c = client(&secret);
    assert_eq!(c.get(a.url("/v1/models")).send().await.unwrap().status(), 200);
    redis.kill();
    wait_for(|| !a.state.auth.cluster().unwrap().is_up()).await;
    let r = c.get(a.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "redis_unavailable", "{body}");
    // A key without a rate limit needs no decision from Redis.
    assert_eq!(a.get("/v1/models").await.status(), 200);

    let _redis = PrivateRedis::start_on(redis.port);
    wait_for(|| a.state.auth.cluster().unwrap().is_up()).await;
    assert_eq!(c.get(a.url("/v1/models")).send().await.unwrap().status(), 200);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_counters_and_token_debits_are_shared() {
    use moltbot_core::ratelimit::{InMemoryLimiter, Quota, RateLimiter};
    use moltbot_server::cluster::{RedisLimiter, Shared};
    use std::sync::Arc;

    let cfg = moltbot_config::ClusterConfig {
        redis_key_prefix: prefix(),
        ..Default::default()
    };
    let limiter = || {
        let shared = Shared::start(SHARED_REDIS, &cfg).unwrap();
        let local = InMemoryLimiter::new(Arc::new(moltbot_core::SystemClock));
        (shared.clone(), RedisLimiter::new(shared, local))
    };
    let ((sa, a), (sb, b)) = (limiter(), limiter());
    wait_for(|| sa.is_up() && sb.is_up()).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 60_000;
    // Daily token counters: seeded once (from the database), then added to by any replica.
    assert_eq!(a.counter_get("daily:k").await, None);
    assert_eq!(a.counter_seed("daily:k", 40, exp).await, 40);
    assert_eq!(b.counter_seed("daily:k", 99, exp).await, 40);
    assert_eq!(b.counter_add("daily:k", 2, exp).await, 42);
    assert_eq!(a.counter_get("daily:k").await, Some(42));
    // Tokens used on A (into debt) are waited out on B too.
    let q = Quota {
        per_minute: 1000,
        burst: 1000,
    };
    assert!(a.debit("tpm:k", q, 2500).await.allowed);
    let d = b.acquire("tpm:k", q, 1).await;
    assert!(!d.allowed);
    assert!(d.retry_after.unwrap() > Duration::from_secs(89), "{d:?}");
}
