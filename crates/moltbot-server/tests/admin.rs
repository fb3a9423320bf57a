//! The admin API for keys (admin listener, `admin` scope), the `/metrics` guard, security headers and
//! CORS, and that no secret ever reaches the logs.

mod common;

use common::*;
use moltbot_core::{KeyLimits, Scope};
use serde_json::{Value, json};

#[tokio::test]
async fn admin_api_creates_lists_patches_and_revokes_keys() {
    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let srv = start(&fake).await;
    let keys = srv.admin_url("/admin/api/keys");
    let r = srv
        .http
        .post(&keys)
        .json(&json!({"name": "ci", "scopes": ["chat"], "requests_per_minute": 100, "expires_in": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let created: Value = r.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["scopes"], json!(["chat"]));
    assert_eq!(created["requests_per_minute"], 100);
    assert!(created["expires_at"].as_i64().unwrap() > created["created_at"].as_i64().unwrap());

    // The secret is shown once: never in listings or lookups, and only its hash is stored.
    let list: Value = srv.http.get(&keys).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&secret));
    let stored = srv.state.store.get_api_key(&id).await.unwrap().unwrap();
    assert_eq!(stored.secret_hash, moltbot_core::auth::hash_secret(&secret));

    let c = client(&secret);
    let chat = json!({"model": "gpt-test", "messages": [user("hi")]});
    assert_eq!(
        c.post(srv.url("/v1/chat/completions"))
            .json(&chat)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let one: Value = srv
        .http
        .get(format!("{keys}/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(one["last_used_at"].is_i64() || one["last_used_at"].is_null());

    let r = srv
        .http
        .patch(format!("{keys}/{id}"))
        .json(&json!({"scopes": ["conversations"], "requests_per_minute": null, "daily_tokens": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["scopes"], json!(["conversations"]));
    assert!(patched["requests_per_minute"].is_null());
    assert_eq!(patched["daily_tokens"], 5);
    assert_eq!(
        c.post(srv.url("/v1/chat/completions"))
            .json(&chat)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    for (body, param) in [
        (json!({"name": "x", "scopes": ["root"]}), "scopes"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "", "scopes": ["chat"]}), "name"),
        (
            json!({"name": "x", "scopes": ["chat"], "requests_per_minute": 0}),
            "requests_per_minute",
        ),
    ] {
        let r = srv.http.post(&keys).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["param"], param);
    }

    let r = srv.http.delete(format!("{keys}/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let revoked: Value = r.json().await.unwrap();
    assert!(revoked["revoked_at"].is_i64());
    assert_eq!(c.get(srv.url("/v1/models")).send().await.unwrap().status(), 401);
    assert_eq!(
        srv.http
            .delete(format!("{keys}/key_nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        srv.http
            .get(format!("{keys}/key_nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(srv.anon.get(&keys).send().await.unwrap().status(), 401);
    srv.stop().await;
}

#[tokio::test]
async fn metrics_need_the_metrics_scope_or_an_allowlisted_scraper() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let metrics = srv.admin_url("/metrics");
    assert_eq!(srv.anon.get(&metrics).send().await.unwrap().status(), 401);
    let (_, chat_only) = create_key(&srv.state, &[Scope::Chat], KeyLimits::default()).await;
    assert_eq!(
        client(&chat_only).get(&metrics).send().await.unwrap().status(),
        403
    );
    let (_, scraper) = create_key(&srv.state, &[Scope::Metrics], KeyLimits::default()).await;
    assert_eq!(client(&scraper).get(&metrics).send().await.unwrap().status(), 200);
    // A metrics key is no admin key.
    let r = client(&scraper)
        .get(srv.admin_url("/admin/api/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    srv.stop().await;

    let srv = start_with(&fake, "", |c| {
        c.server.admin_allow_cidrs = vec!["127.0.0.0/8".parse().unwrap()]
    })
    .await;
    let r = srv.anon.get(srv.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "a scraper inside the admin allowlist needs no key"
    );
    assert_eq!(
        srv.anon
            .get(srv.admin_url("/admin/api/keys"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    srv.stop().await;
}

#[tokio::test]
async fn security_headers_on_every_response_and_cors_only_for_configured_origins() {
    let fake = fake().await;
    let srv = start(&fake).await;
    for r in [
        srv.anon.get(srv.url("/health")).send().await.unwrap(),
        srv.anon.get(srv.url("/v1/models")).send().await.unwrap(),
        srv.get("/v1/models").await,
        srv.anon.get(srv.admin_url("/health")).send().await.unwrap(),
    ] {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        assert!(
            h.get("strict-transport-security").is_none(),
            "plain HTTP: no HSTS"
        );
        assert!(
            h.get("access-control-allow-origin").is_none(),
            "no CORS by default"
        );
    }
    let r = srv
        .anon
        .request(reqwest::Method::OPTIONS, srv.url("/v1/chat/completions"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    srv.stop().await;

    let srv = start_with(&fake, "", |c| {
        c.server.cors_origins = vec!["https://app.example".into()];
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let preflight = |origin: &'static str| {
        srv.anon
            .request(reqwest::Method::OPTIONS, srv.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let r = preflight("https://app.example").await.unwrap();
    assert!(r.status().is_success(), "preflight needs no credentials");
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = srv
        .http
        .get(srv.url("/v1/models"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    srv.stop().await;
}

#[tokio::test]
async fn secrets_and_tokens_never_reach_the_logs() {
    let cap = Capture::default();
    let writer = cap.clone();
    let sub = moltbot_server::logging::subscriber(true, "debug", move || writer.clone());
    let _guard = tracing::subscriber::set_default(sub);

    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let srv = start(&fake).await;
    let wrong_key = format!("mb_{}", "Z".repeat(44));
    let wrong_token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlY3JldA";
    let r = srv
        .anon
        .get(srv.url("/v1/models"))
        .bearer_auth(&wrong_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = srv
        .anon
        .get(srv.url("/v1/models"))
        .bearer_auth(wrong_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let t: Value = srv
        .http
        .post(srv.url("/v1/auth/token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = t["access_token"].as_str().unwrap().to_owned();
    let r = client(&jwt).get(srv.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let created: Value = srv
        .http
        .post(srv.admin_url("/admin/api/keys"))
        .json(&json!({"name": "n", "scopes": ["chat"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = created["secret"].as_str().unwrap().to_owned();
    let key_secret = srv.secret.clone();
    srv.stop().await;

    let text = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("authentication failed"), "failures are logged");
    for secret in [
        &key_secret,
        &wrong_key,
        &jwt,
        &new_secret,
        &wrong_token.to_owned(),
    ] {
        assert!(
            !text.contains(secret.as_str()),
            "a credential leaked into the logs"
        );
    }
    assert!(
        !text.contains(&wrong_key[..20]),
        "not even a prefix of a presented key"
    );
}
