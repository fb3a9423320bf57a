//! Admin console sessions (cookie + CSRF), the live overview, backends, settings and webhooks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use moltbot_core::{Clock, KeyLimits, ManualClock, Scope, SystemClock};
use moltbot_testkit::Script;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

const SESSION: &str = "/admin/api/session";

/// A signed-in console: the cookie header value and the CSRF token.
struct Console {
    cookie: String,
    csrf: String,
    set_cookie: String,
    body: Value,
}

async fn sign_in_with(s: &TestServer, api_key: &str) -> reqwest::Response {
    s.anon
        .post(s.admin_url(SESSION))
        .json(&json!({ "api_key": api_key }))
        .send()
        .await
        .unwrap()
}

async fn sign_in(s: &TestServer) -> Console {
    let r = sign_in_with(s, &s.secret).await;
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    Console {
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        set_cookie,
        body,
    }
}

fn token(c: &Console) -> &str {
    c.cookie.strip_prefix("moltbot_admin=").unwrap()
}

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie() {
    let fake = fake().await;
    let s = start(&fake).await;
    let c = sign_in(&s).await;
    assert!(c.cookie.starts_with("moltbot_admin="), "{}", c.set_cookie);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(c.set_cookie.contains(attr), "{attr} missing in {}", c.set_cookie);
    }
    assert!(!c.set_cookie.contains("Secure"), "plain HTTP: {}", c.set_cookie);
    assert_eq!(c.body["object"], "admin_session");
    assert_eq!(c.body["key"]["id"], s.key_id.as_str());
    assert_eq!(c.body["key"]["name"], "test");
    let exp = c.body["expires_at"].as_i64().unwrap();
    let now = SystemClock.now_secs();
    assert!((now + 28_790..=now + 28_810).contains(&exp), "{exp}");
    assert_eq!(c.csrf.len(), 64);
    // The secret is in no header or body of the answer.
    assert!(!c.set_cookie.contains(&s.secret));
    assert!(!c.body.to_string().contains(&s.secret));

    // GET returns the same session (a reloaded page gets its CSRF token back).
    let r = s
        .anon
        .get(s.admin_url(SESSION))
        .header(COOKIE, &c.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), c.body);
    // Without the cookie: 401.
    let r = s.anon.get(s.admin_url(SESSION)).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn secure_cookie_behind_a_tls_proxy() {
    let fake = fake().await;
    let s = start_with(&fake, "", |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let r = s
        .anon
        .post(s.admin_url(SESSION))
        .header("x-forwarded-proto", "https")
        .json(&json!({ "api_key": s.secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
}

#[tokio::test]
async fn wrong_key_401_non_admin_403_and_failures_count_toward_the_lockout() {
    let fake = fake().await;
    let s = start_with(&fake, "", |c| c.auth.lockout_threshold = 3).await;
    let (_, chat_only) = create_key(&s.state, &[Scope::Chat], KeyLimits::default()).await;
    let r = sign_in_with(&s, &chat_only).await;
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert_eq!(error_code(r).await, (403, "insufficient_scope".into()));

    let r = sign_in_with(&s, "mb_wrong_key_0123456789abcdefghijklmnop").await;
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert_eq!(error_code(r).await, (401, "invalid_api_key".into()));
    let r = s
        .anon
        .post(s.admin_url(SESSION))
        .json(&json!({ "api_key": "" }))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "api_key");
    sign_in_with(&s, "not-a-key").await;
    sign_in_with(&s, "mb_another_wrong_key_abcdefghijklmnopqrstu").await;
    // Three failures: locked out, even with the right key now.
    let r = sign_in_with(&s, &s.secret).await;
    assert_eq!(error_code(r).await, (429, "too_many_auth_failures".into()));
}

#[tokio::test]
async fn cookie_authenticates_reads_and_unsafe_methods_need_the_csrf_token() {
    let fake = fake().await;
    let s = start(&fake).await;
    let c = sign_in(&s).await;
    let keys = s.admin_url("/admin/api/keys");

    let r = s.anon.get(&keys).header(COOKIE, &c.cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");

    let new_key = json!({ "name": "from-console", "scopes": ["chat"] });
    let r = s
        .anon
        .post(&keys)
        .header(COOKIE, &c.cookie)
        .json(&new_key)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "csrf_token_invalid".into()));
    let r = s
        .anon
        .post(&keys)
        .header(COOKIE, &c.cookie)
        .header("x-csrf-token", "0".repeat(64))
        .json(&new_key)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "csrf_token_invalid".into()));
    let r = s
        .anon
        .post(&keys)
        .header(COOKIE, &c.cookie)
        .header("x-csrf-token", &c.csrf)
        .json(&new_key)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["name"], "from-console");

    // A Bearer request needs no CSRF token (and ignores a cookie).
    let r = s
        .http
        .post(&keys)
        .header(COOKIE, "moltbot_admin=garbage")
        .json(&json!({ "name": "from-cli", "scopes": ["chat"] }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    // A forged cookie is refused.
    let r = s
        .anon
        .get(&keys)
        .header(COOKIE, format!("{}x", c.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "invalid_session".into()));
}

#[tokio::test]
async fn sign_out_invalidates_the_session_even_when_the_cookie_is_replayed() {
    let fake = fake().await;
    let s = start(&fake).await;
    let c = sign_in(&s).await;
    let other = sign_in(&s).await;
    // DELETE is unsafe: CSRF token required.
    let r = s
        .anon
        .delete(s.admin_url(SESSION))
        .header(COOKIE, &c.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "csrf_token_invalid".into()));
    let r = s
        .anon
        .delete(s.admin_url(SESSION))
        .header(COOKIE, &c.cookie)
        .header("x-csrf-token", &c.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("moltbot_admin=;"), "{set_cookie}");
    assert!(set_cookie.contains("Max-Age=0"), "{set_cookie}");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"object": "admin_session.deleted"})
    );
    for path in [SESSION, "/admin/api/keys"] {
        let r = s
            .anon
            .get(s.admin_url(path))
            .header(COOKIE, &c.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, (401, "invalid_session".into()), "{path}");
    }
    // Another session of the same key is unaffected.
    let r = s
        .anon
        .get(s.admin_url("/admin/api/keys"))
        .header(COOKIE, &other.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Revoking the key ends its sessions.
    let r = s
        .http
        .delete(s.admin_url(&format!("/admin/api/keys/{}", s.key_id)))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = s
        .anon
        .get(s.admin_url("/admin/api/keys"))
        .header(COOKIE, &other.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "invalid_session".into()));
}

#[tokio::test]
async fn sessions_expire_after_session_ttl() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &fake.base_url(), "[admin]\nsession_ttl = \"10m\"\n");
    cfg.auth.key_cache_ttl = Duration::from_secs(3600);
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let s = start_config_clock(cfg, dir, Some(clock.clone() as Arc<dyn Clock>)).await;
    let c = sign_in(&s).await;
    assert!(c.set_cookie.contains("Max-Age=600"), "{}", c.set_cookie);
    let get = || {
        s.anon
            .get(s.admin_url("/admin/api/keys"))
            .header(COOKIE, &c.cookie)
            .send()
    };
    clock.advance(Duration::from_secs(599));
    assert_eq!(get().await.unwrap().status(), 200);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        error_code(get().await.unwrap()).await,
        (401, "invalid_session".into())
    );
}

#[tokio::test]
async fn the_session_cookie_is_not_a_bearer_token_and_not_accepted_on_the_dialog_listener() {
    let fake = fake().await;
    let s = start(&fake).await;
    let c = sign_in(&s).await;
    let as_bearer = client(token(&c));
    let r = as_bearer.get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(error_code(r).await, (401, "invalid_token".into()));
    let r = as_bearer
        .get(s.admin_url("/admin/api/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "invalid_token".into()));
    // The cookie itself means nothing to the dialog listener.
    let r = s
        .anon
        .get(s.url("/v1/models"))
        .header(COOKIE, &c.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "missing_api_key".into()));
    // And an access token is no session cookie.
    let r = s.post("/v1/auth/token", json!({})).await;
    assert_eq!(r.status(), 200);
    let access: Value = r.json().await.unwrap();
    let access = access["access_token"].as_str().unwrap();
    let r = s
        .anon
        .get(s.admin_url("/admin/api/keys"))
        .header(COOKIE, format!("moltbot_admin={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "invalid_session".into()));
}

#[tokio::test]
async fn overview_counts_requests_errors_and_tokens_of_the_dialog_listener() {
    let fake = fake().await;
    let s = start(&fake).await;
    for i in 0..5 {
        let (status, _) = s
            .chat(json!({"model": "gpt-test", "messages": [user(&format!("hi {i}"))]}))
            .await;
        assert_eq!(status, 200);
    }
    fake.set_default(Script::status(500));
    let (status, _) = s
        .chat(json!({"model": "gpt-test", "messages": [user("fail")]}))
        .await;
    assert_eq!(status, 502);
    fake.set_default(Script::default());

    let c = sign_in(&s).await;
    let r = s
        .anon
        .get(s.admin_url("/admin/api/overview"))
        .header(COOKIE, &c.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let o: Value = r.json().await.unwrap();
    assert_eq!(o["interval_seconds"], 10);
    let series = o["series"].as_array().unwrap();
    assert_eq!(series.len(), 360);
    let ts: Vec<i64> = series.iter().map(|p| p["t"].as_i64().unwrap()).collect();
    assert!(
        ts.windows(2).all(|w| w[1] - w[0] == 10),
        "oldest first, 10 s apart"
    );
    let sum = |field: &str| series.iter().map(|p| p[field].as_u64().unwrap()).sum::<u64>();
    assert!(sum("requests") >= 6, "{}", sum("requests"));
    assert!(sum("errors") >= 1);
    assert!(sum("tokens") > 0);
    let busy = series.iter().find(|p| p["requests"].as_u64() > Some(0)).unwrap();
    assert!(busy["p50_ms"].as_f64().is_some() && busy["p95_ms"].as_f64().is_some());
    let totals = &o["totals"];
    assert!(totals["requests_per_second"].as_f64().unwrap() > 0.0);
    assert!(totals["error_rate"].as_f64().unwrap() > 0.0);
    assert!(totals["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(totals["active_streams"], 0);
    assert_eq!(
        o["backends"],
        json!([{"name": "gpt-test", "kind": "remote", "healthy": true, "circuit": "closed"}])
    );
}

#[tokio::test]
async fn backends_list_counters_and_a_test_prompt_through_one_backend() {
    let fake = fake().await;
    let s = start(&fake).await;
    let (status, _) = s
        .chat(json!({"model": "gpt-test", "messages": [user("hello")]}))
        .await;
    assert_eq!(status, 200);
    fake.set_default(Script::status(500));
    let (status, _) = s
        .chat(json!({"model": "gpt-test", "messages": [user("fail")]}))
        .await;
    assert_eq!(status, 502);
    fake.set_default(Script::text("pong from the fake"));

    let r = s
        .http
        .get(s.admin_url("/admin/api/backends"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let b = &list["data"][0];
    assert_eq!(b["name"], "gpt-test");
    assert_eq!(b["kind"], "remote");
    assert_eq!(b["models"], json!(["gpt-test"]));
    assert_eq!(b["circuit"], "closed");
    assert_eq!(b["healthy"], true);
    assert_eq!((b["requests"].as_u64(), b["errors"].as_u64()), (Some(2), Some(1)));
    assert!(b["p50_ms"].as_f64().is_some());
    let recent = b["recent_errors"].as_array().unwrap();
    assert_eq!(recent.len(), 1);
    assert!(recent[0]["message"].as_str().unwrap().contains("500"));
    assert!(recent[0]["at"].as_i64().unwrap() > 0);

    let before = fake.chat_requests().len();
    let r = s
        .http
        .post(s.admin_url("/admin/api/backends/gpt-test/test"))
        .json(&json!({"prompt": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(t["reply"], "pong from the fake");
    assert!(t["error"].is_null());
    assert!(t["latency_ms"].as_u64().is_some());
    let sent = fake.chat_requests();
    assert_eq!(sent.len(), before + 1);
    let body = &sent[before].body;
    assert_eq!(body["model"], "fake-model");
    assert!(body["max_tokens"].as_u64().unwrap() <= 16, "{body}");

    // A failing backend: ok false with the reason, still 200.
    fake.set_default(Script::status(500));
    let r = s
        .http
        .post(s.admin_url("/admin/api/backends/gpt-test/test"))
        .json(&json!({"prompt": "ping"}))
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["ok"], false);
    assert!(t["error"].as_str().unwrap().contains("500"), "{t}");

    let r = s
        .http
        .post(s.admin_url("/admin/api/backends/nope/test"))
        .json(&json!({"prompt": "ping"}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "backend_not_found");
    assert_eq!(body["error"]["param"], "name");
    let r = s
        .http
        .post(s.admin_url("/admin/api/backends/gpt-test/test"))
        .json(&json!({"prompt": "  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "prompt");
}

#[tokio::test]
async fn settings_are_redacted_and_webhooks_empty() {
    let fake = fake().await;
    let s = start(&fake).await;
    let c = sign_in(&s).await;
    let r = s
        .anon
        .get(s.admin_url("/admin/api/settings"))
        .header(COOKIE, &c.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(KEY), "the upstream API key leaked: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["profile"], "development");
    assert_eq!(v["config"]["models"][0]["name"], "gpt-test");
    assert_eq!(v["config"]["models"][0]["api_key"], "***");
    assert_eq!(v["config"]["admin"]["session_ttl"], "8h");

    let r = s
        .http
        .get(s.admin_url("/admin/api/webhooks"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"object": "list", "data": []})
    );

    // Non-admin keys get 403 on every console endpoint.
    let (_, chat_only) = create_key(&s.state, &[Scope::Chat], KeyLimits::default()).await;
    let chat = client(&chat_only);
    for path in [
        "/admin/api/settings",
        "/admin/api/webhooks",
        "/admin/api/overview",
        "/admin/api/backends",
    ] {
        let r = chat.get(s.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
}
