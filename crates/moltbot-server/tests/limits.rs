//! Rate limits and quotas through the real router, on an injected clock: OpenAI's `x-ratelimit-*`
//! headers, 429 with `Retry-After`, the B + R·t bound, tokens per minute, the daily quota and its
//! reset, and concurrent streams.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use moltbot_core::{Clock, KeyLimits, ManualClock, Scope, SystemClock};
use moltbot_testkit::Script;
use serde_json::{Value, json};

/// 2026-01-01T12:00:00Z.
const NOON: i64 = 1_767_268_800_000;

async fn start_clocked(
    fake: &moltbot_testkit::FakeUpstream,
    tweak: impl FnOnce(&mut moltbot_config::Config),
) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOON));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &fake.base_url(), "");
    tweak(&mut cfg);
    let srv = start_config_clock(cfg, dir, Some(clock.clone())).await;
    (srv, clock)
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn requests_per_minute_follow_openai_conventions() {
    let fake = fake().await;
    let (srv, clock) = start_clocked(&fake, |_| {}).await;
    let limits = KeyLimits {
        requests_per_minute: Some(2),
        ..KeyLimits::default()
    };
    let (_, secret) = create_key(&srv.state, &[Scope::Chat], limits).await;
    let c = client(&secret);
    let r = c.get(srv.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "2");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "1");
    assert_eq!(header(&r, "x-ratelimit-reset-requests"), "30s");
    let r = c.get(srv.url("/v1/models")).send().await.unwrap();
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&r, "x-ratelimit-reset-requests"), "1m0s");

    let r = c.get(srv.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "30");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&r, "x-should-retry"), "", "an SDK may retry a rate limit");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");

    // Other keys are unaffected; the key recovers after Retry-After.
    assert_eq!(srv.get("/v1/models").await.status(), 200);
    clock.advance(Duration::from_millis(29_980));
    let r = c.get(srv.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "1", "rounded up, never 0");
    clock.advance(Duration::from_millis(20));
    assert_eq!(c.get(srv.url("/v1/models")).send().await.unwrap().status(), 200);
    srv.stop().await;
}

#[tokio::test]
async fn at_most_burst_plus_rate_times_t_pass_through_the_router() {
    let fake = fake().await;
    // R = 60 per minute, burst window 5 s → B = 5.
    let (srv, clock) = start_clocked(&fake, |c| {
        c.limits.requests_per_minute = Some(60);
        c.limits.burst_window = Duration::from_secs(5);
    })
    .await;
    let mut passed = 0;
    for _ in 0..10 {
        passed += u32::from(srv.get("/v1/models").await.status() == 200);
    }
    assert_eq!(passed, 5, "B at once");
    // Three requests every 500 ms for 10 s: R·t = 10 more, never more.
    for _ in 0..20 {
        clock.advance(Duration::from_millis(500));
        for _ in 0..3 {
            passed += u32::from(srv.get("/v1/models").await.status() == 200);
        }
    }
    assert_eq!(passed, 5 + 10);
    srv.stop().await;
}

fn chat_body(max_tokens: Option<u32>) -> Value {
    let mut body = json!({"model": "gpt-test", "messages": [user("hi")]});
    if let Some(m) = max_tokens {
        body["max_tokens"] = json!(m);
    }
    body
}

#[tokio::test]
async fn tokens_per_minute_are_prechecked_and_debited_from_usage() {
    let fake = fake_with(Script::text("ok").usage_tokens(60, 40)).await;
    let (srv, clock) = start_clocked(&fake, |_| {}).await;
    let limits = KeyLimits {
        tokens_per_minute: Some(150),
        ..KeyLimits::default()
    };
    let (_, secret) = create_key(&srv.state, &[Scope::Chat], limits).await;
    let c = client(&secret);
    let post = |m: Option<u32>| c.post(srv.url("/v1/chat/completions")).json(&chat_body(m)).send();

    // Larger than the whole bucket: never possible, so SDKs must not retry.
    let r = post(Some(500)).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-should-retry"), "false");
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "150");

    let r = post(Some(50)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "150");
    assert_eq!(
        header(&r, "x-ratelimit-remaining-tokens"),
        "150",
        "state at the pre-check"
    );
    // 100 tokens used: 50 left, so max_tokens 60 must wait, max_tokens 50 fits.
    let r = post(Some(60)).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), "50");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "tokens");
    assert_eq!(models_token_headers(&srv, &c).await, None::<String>);
    assert_eq!(post(Some(50)).await.unwrap().status(), 200);
    // Now in debt (200 used of 150): even 1 token waits until the debt is paid (20 s), then passes.
    assert_eq!(post(None).await.unwrap().status(), 429);
    clock.advance(Duration::from_secs(21));
    assert_eq!(post(None).await.unwrap().status(), 200);
    srv.stop().await;
}

/// Token limits do not apply to non-chat routes.
async fn models_token_headers(srv: &TestServer, c: &reqwest::Client) -> Option<String> {
    let r = c.get(srv.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.headers()
        .get("x-ratelimit-limit-tokens")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_daily_quota_is_429_insufficient_quota_and_resets_at_midnight_utc() {
    let fake = fake_with(Script::text("ok").usage_tokens(700, 300)).await;
    let (srv, clock) = start_clocked(&fake, |c| c.limits.daily_tokens = Some(1500)).await;
    // Usage records carry the service's (real) time: run the access-control clock from now too.
    clock.set_millis(SystemClock.now_millis());
    let day_ms = 86_400_000;
    let to_midnight = day_ms - clock.now_millis().rem_euclid(day_ms);
    let chat = || {
        srv.http
            .post(srv.url("/v1/chat/completions"))
            .json(&chat_body(None))
            .send()
    };
    assert_eq!(chat().await.unwrap().status(), 200);
    assert_eq!(
        chat().await.unwrap().status(),
        200,
        "1000 used < 1500: allowed, may overshoot"
    );
    let r = chat().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-should-retry"), "false");
    let reset = header(&r, "x-ratelimit-reset-tokens");
    let expected = moltbot_core::ratelimit::format_reset(Duration::from_millis(to_midnight as u64));
    assert_eq!(reset, expected);
    assert_eq!(header(&r, "retry-after"), "");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(body["error"]["type"], "insufficient_quota");

    // After a restart, today's count is seeded from the usage records: they hold all of it.
    let since = (clock.now_millis() - (day_ms - to_midnight)) / 1000;
    assert_eq!(
        srv.state
            .store
            .sum_usage_tokens(&srv.key_id, since)
            .await
            .unwrap(),
        2000
    );

    clock.advance(Duration::from_millis(to_midnight as u64 + 1000));
    assert_eq!(chat().await.unwrap().status(), 200, "a new UTC day");
    srv.stop().await;
}

#[tokio::test]
async fn concurrent_streams_are_limited_per_key() {
    let fake = fake_with(
        Script::text("a b c d")
            .chunks(4)
            .chunk_interval(Duration::from_secs(30)),
    )
    .await;
    let (srv, _clock) = start_clocked(&fake, |c| c.limits.concurrent_streams = Some(1)).await;
    let stream = json!({"model": "gpt-test", "stream": true, "messages": [user("hi")]});
    let open = srv.post("/v1/chat/completions", stream.clone()).await;
    assert_eq!(open.status(), 200, "headers arrive with the first chunk");
    let r = srv.post("/v1/chat/completions", stream.clone()).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent streams")
    );
    // Another key, and non-streaming requests of the same key, are not affected.
    let (_, other) = create_key(&srv.state, &[Scope::Chat], KeyLimits::default()).await;
    let r = client(&other)
        .post(srv.url("/v1/chat/completions"))
        .json(&stream)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    drop(open);
    srv.stop().await;
}
