//! Authentication through the real router: API keys, access tokens (including forged ones), scopes,
//! owner isolation, key rotation, revocation within the cache TTL, and brute-force lockouts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use moltbot_core::{Clock, KeyLimits, ManualClock, Scope, SystemClock};
use moltbot_server::auth::jwt::{Claims, key_id};
use serde_json::{Value, json};

const SECRET: &str = "jwt-test-secret-0123456789abcdef0123456789";
const OLD_SECRET: &str = "jwt-old-secret-0123456789abcdef01234567890";

fn with_secret(
    secret: &'static str,
    previous: &'static [&'static str],
) -> impl FnOnce(&mut moltbot_config::Config) {
    move |c| {
        c.auth.jwt_secret = Some(secret.into());
        c.auth.jwt_previous_secrets = previous.iter().map(|s| (*s).into()).collect();
    }
}

async fn status_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
}

async fn models_with(srv: &TestServer, authorization: Option<&str>) -> (u16, String) {
    let mut req = srv.anon.get(srv.url("/v1/models"));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    status_code(req.send().await.unwrap()).await
}

async fn token(srv: &TestServer, secret: &str, body: Value) -> reqwest::Response {
    client(secret)
        .post(srv.url("/v1/auth/token"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn missing_malformed_unknown_revoked_and_expired_keys_are_401() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let r = srv.anon.get(srv.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let unknown = format!("mb_{}", "A".repeat(50));
    for bad in [
        "Basic dXNlcjpwYXNz".to_owned(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer sk-not-a-moltbot-key-0123456789".to_owned(),
        format!("Bearer {unknown}"),
        format!("Bearer {}x", srv.secret),
        "Bearer a.b".to_owned(),
    ] {
        assert_eq!(
            models_with(&srv, Some(&bad)).await,
            (401, "invalid_api_key".into()),
            "{bad}"
        );
    }
    // Lower-case scheme is fine.
    assert_eq!(
        models_with(&srv, Some(&format!("bearer {}", srv.secret))).await.0,
        200
    );

    let now = srv.state.clock.now_secs();
    let (expired, expired_secret) = moltbot_core::ApiKey::generate(
        "old",
        vec![Scope::Chat],
        KeyLimits::default(),
        now - 100,
        Some(now - 1),
    );
    srv.state.store.create_api_key(&expired).await.unwrap();
    let (revoked, revoked_secret) = create_key(&srv.state, &[Scope::Chat], KeyLimits::default()).await;
    srv.state.store.revoke_api_key(&revoked.id, now).await.unwrap();
    let r1 = client(&expired_secret)
        .get(srv.url("/v1/models"))
        .send()
        .await
        .unwrap();
    let r2 = client(&revoked_secret)
        .get(srv.url("/v1/models"))
        .send()
        .await
        .unwrap();
    let (b1, b2): (Value, Value) = (r1.json().await.unwrap(), r2.json().await.unwrap());
    assert_eq!(b1, b2, "an expired and a revoked key look the same to the client");
    assert_eq!(b1["error"]["code"], "invalid_api_key");

    // Public paths need nothing; unknown paths are not enumerable without credentials.
    for path in ["/health", "/ready", "/openapi.json"] {
        assert_eq!(
            srv.anon.get(srv.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        srv.anon.get(srv.url("/v1/nope")).send().await.unwrap().status(),
        401
    );
    assert_eq!(srv.get("/v1/nope").await.status(), 404);
    srv.stop().await;
}

#[tokio::test]
async fn tokens_are_issued_for_keys_and_work_like_them() {
    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let srv = start_with(&fake, "", with_secret(SECRET, &[])).await;
    let r = token(&srv, &srv.secret, json!({})).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 24 * 3600);
    let jwt = t["access_token"].as_str().unwrap().to_owned();
    let (s, body) = {
        let r = client(&jwt)
            .post(srv.url("/v1/chat/completions"))
            .json(&json!({"model": "gpt-test", "messages": [user("hi")]}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(s, 200, "{body}");
    // Usage is owned by the key the token was issued for.
    assert_eq!(
        srv.state.store.list_usage(&srv.key_id, 10).await.unwrap().len(),
        1
    );

    // Empty body, custom lifetime and narrowed scopes.
    let r = client(&srv.secret)
        .post(srv.url("/v1/auth/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let narrow: Value = token(
        &srv,
        &srv.secret,
        json!({"expires_in": 60, "scopes": ["conversations"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(narrow["expires_in"], 60);
    let narrow = narrow["access_token"].as_str().unwrap().to_owned();
    let r = client(&narrow)
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-test", "messages": [user("hi")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (403, "insufficient_scope".into()));

    // A token cannot mint tokens; lifetimes and scopes are bounded.
    assert_eq!(
        status_code(token(&srv, &jwt, json!({})).await).await,
        (403, "api_key_required".into())
    );
    assert_eq!(
        token(&srv, &srv.secret, json!({"expires_in": 30 * 86400}))
            .await
            .status(),
        400
    );
    let (chat_only, chat_secret) = create_key(&srv.state, &[Scope::Chat], KeyLimits::default()).await;
    assert_eq!(
        status_code(token(&srv, &chat_secret, json!({"scopes": ["admin"]})).await).await,
        (403, "insufficient_scope".into())
    );
    // Capped by the key's expiry.
    let now = srv.state.clock.now_secs();
    let update = moltbot_core::ApiKeyUpdate {
        expires_at: Some(Some(now + 100)),
        ..Default::default()
    };
    srv.state
        .store
        .update_api_key(&chat_only.id, &update)
        .await
        .unwrap();
    srv.state.auth.forget(&chat_only).await;
    let capped: Value = token(&srv, &chat_secret, json!({})).await.json().await.unwrap();
    assert!(capped["expires_in"].as_i64().unwrap() <= 100, "{capped}");
    srv.stop().await;
}

fn claims(sub: &str, now: i64) -> Claims {
    Claims {
        iss: "moltbot".into(),
        sub: sub.into(),
        scopes: vec![
            "chat".into(),
            "conversations".into(),
            "admin".into(),
            "metrics".into(),
        ],
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: "j".into(),
    }
}

fn sign(alg: Algorithm, kid: Option<String>, claims: &Claims, secret: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = kid;
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// A token with an arbitrary header, signed (or not) by hand.
fn raw(header: &Value, claims: &Claims, signature: Option<&str>) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(serde_json::to_vec(claims).unwrap())
    );
    let sig = match signature {
        Some(secret) => jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap(),
        None => String::new(),
    };
    format!("{input}.{sig}")
}

#[tokio::test]
async fn forged_tampered_and_mistimed_tokens_are_401_invalid_token() {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| {
        with_secret(SECRET, &[])(c);
        c.auth.lockout_threshold = 1000;
    })
    .await;
    let now = SystemClock.now_secs();
    let kid = Some(key_id(SECRET.as_bytes()));
    let good = sign(Algorithm::HS256, kid.clone(), &claims(&srv.key_id, now), SECRET);
    assert_eq!(
        models_with(&srv, Some(&format!("Bearer {good}"))).await.0,
        200,
        "a well-formed forgery with the real secret is valid"
    );

    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut other = claims("key_someone_else", now);
    other.exp = now + 99_999;
    parts[1] = B64.encode(serde_json::to_vec(&other).unwrap());
    let tampered = parts.join(".");

    let mut expired = claims(&srv.key_id, now - 7200);
    expired.exp = now - 3600;
    let mut not_yet = claims(&srv.key_id, now);
    not_yet.nbf = now + 3600;
    let mut future_iat = claims(&srv.key_id, now);
    future_iat.iat = now + 3600;
    let mut wrong_iss = claims(&srv.key_id, now);
    wrong_iss.iss = "someone-else".into();
    let c = claims(&srv.key_id, now);
    let cases = [
        ("tampered payload", tampered),
        ("expired", sign(Algorithm::HS256, kid.clone(), &expired, SECRET)),
        (
            "not yet valid",
            sign(Algorithm::HS256, kid.clone(), &not_yet, SECRET),
        ),
        (
            "issued in the future",
            sign(Algorithm::HS256, kid.clone(), &future_iat, SECRET),
        ),
        (
            "wrong issuer",
            sign(Algorithm::HS256, kid.clone(), &wrong_iss, SECRET),
        ),
        (
            "wrong secret",
            sign(
                Algorithm::HS256,
                kid.clone(),
                &c,
                "another-secret-0123456789abcdef012345",
            ),
        ),
        (
            "unknown kid",
            sign(Algorithm::HS256, Some("0011223344556677".into()), &c, SECRET),
        ),
        ("no kid", sign(Algorithm::HS256, None, &c, SECRET)),
        (
            "HS512 with the real secret",
            sign(Algorithm::HS512, kid.clone(), &c, SECRET),
        ),
        (
            "alg none",
            raw(&json!({"alg": "none", "typ": "JWT", "kid": kid}), &c, None),
        ),
        (
            "RS256 header, HMAC signature",
            raw(&json!({"alg": "RS256", "kid": kid}), &c, Some(SECRET)),
        ),
        (
            "ES256 header, HMAC signature",
            raw(&json!({"alg": "ES256", "kid": kid}), &c, Some(SECRET)),
        ),
        ("garbage", "eyJ.eyJ.sig".into()),
    ];
    let mut bodies = Vec::new();
    for (what, t) in cases {
        let r = srv
            .anon
            .get(srv.url("/v1/models"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_token", "{what}");
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "no hint at which part was wrong"
    );
    srv.stop().await;
}

#[tokio::test]
async fn scopes_are_enforced_per_route() {
    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let srv = start(&fake).await;
    let (_, chat_only) = create_key(&srv.state, &[Scope::Chat], KeyLimits::default()).await;
    let (_, conv_only) = create_key(&srv.state, &[Scope::Conversations], KeyLimits::default()).await;
    let chat = json!({"model": "gpt-test", "messages": [user("hi")]});
    let post = |secret: &str, path: &str, body: &Value| client(secret).post(srv.url(path)).json(body).send();
    assert_eq!(
        post(&chat_only, "/v1/chat/completions", &chat)
            .await
            .unwrap()
            .status(),
        200
    );
    let r = post(&chat_only, "/v1/conversations", &json!({})).await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_scope");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("conversations")
    );
    assert_eq!(
        post(&conv_only, "/v1/conversations", &json!({}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(&conv_only, "/v1/chat/completions", &chat)
            .await
            .unwrap()
            .status(),
        403
    );
    // Any valid key lists models.
    assert_eq!(
        client(&conv_only)
            .get(srv.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The admin API needs `admin` and lives on the admin listener only.
    let r = client(&chat_only)
        .get(srv.admin_url("/admin/api/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (403, "insufficient_scope".into()));
    assert_eq!(
        srv.http
            .get(srv.url("/admin/api/keys"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_key_sees_only_its_own_conversations() {
    let fake = fake_with(moltbot_testkit::Script::echo()).await;
    let srv = start(&fake).await;
    let (_, other) = create_key(&srv.state, &Scope::ALL, KeyLimits::default()).await;
    let conv: Value = srv
        .post("/v1/conversations", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let id = conv["id"].as_str().unwrap();
    let other = client(&other);
    for r in [
        other
            .get(srv.url(&format!("/v1/conversations/{id}")))
            .send()
            .await
            .unwrap(),
        other
            .get(srv.url(&format!("/v1/conversations/{id}/items")))
            .send()
            .await
            .unwrap(),
        other
            .delete(srv.url(&format!("/v1/conversations/{id}")))
            .send()
            .await
            .unwrap(),
        other
            .post(srv.url("/v1/chat/completions"))
            .json(&json!({"model": "gpt-test", "conversation": id, "messages": [user("steal")]}))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(status_code(r).await, (404, "conversation_not_found".into()));
    }
    assert_eq!(srv.get(&format!("/v1/conversations/{id}")).await.status(), 200);
    srv.stop().await;
}

#[tokio::test]
async fn rotated_secrets_keep_old_tokens_valid_until_removed() {
    let fake = fake().await;
    let srv = start_with(&fake, "", with_secret(OLD_SECRET, &[])).await;
    let old_token: Value = token(&srv, &srv.secret, json!({})).await.json().await.unwrap();
    let old_token = old_token["access_token"].as_str().unwrap().to_owned();
    let (secret, mut cfg) = (srv.secret.clone(), (*srv.state.config).clone());
    let mut srv = srv;
    srv.shutdown();
    let _ = (&mut srv.handle).await;
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());

    // Rotated: new secret active, old one kept for verification.
    with_secret(SECRET, &[OLD_SECRET])(&mut cfg);
    let mut srv = start_config(cfg.clone(), dir).await;
    srv.http = client(&secret);
    assert_eq!(
        models_with(&srv, Some(&format!("Bearer {old_token}"))).await.0,
        200
    );
    let new_token: Value = token(&srv, &secret, json!({})).await.json().await.unwrap();
    let new_token = new_token["access_token"].as_str().unwrap().to_owned();
    srv.shutdown();
    let _ = (&mut srv.handle).await;
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());

    // The old secret removed: old tokens die, new ones live.
    with_secret(SECRET, &[])(&mut cfg);
    let srv = start_config(cfg, dir).await;
    assert_eq!(
        models_with(&srv, Some(&format!("Bearer {old_token}"))).await,
        (401, "invalid_token".into())
    );
    assert_eq!(
        models_with(&srv, Some(&format!("Bearer {new_token}"))).await.0,
        200
    );
    srv.stop().await;
}

#[tokio::test]
async fn revocation_reaches_tokens_within_the_cache_ttl() {
    let fake = fake().await;
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &fake.base_url(), "");
    with_secret(SECRET, &[])(&mut cfg);
    cfg.auth.key_cache_ttl = Duration::from_secs(5);
    let srv = start_config_clock(cfg, dir, Some(clock.clone())).await;
    let (key, secret) = create_key(&srv.state, &[Scope::Chat], KeyLimits::default()).await;
    let t: Value = token(&srv, &secret, json!({})).await.json().await.unwrap();
    let bearer = format!("Bearer {}", t["access_token"].as_str().unwrap());
    assert_eq!(models_with(&srv, Some(&bearer)).await.0, 200);

    // Revoked by another replica (straight in the database): cached here for at most the TTL.
    srv.state
        .store
        .revoke_api_key(&key.id, clock.now_secs())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(4));
    assert_eq!(models_with(&srv, Some(&bearer)).await.0, 200, "still cached");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        models_with(&srv, Some(&bearer)).await,
        (401, "invalid_token".into())
    );
    assert_eq!(
        models_with(&srv, Some(&format!("Bearer {secret}"))).await,
        (401, "invalid_api_key".into())
    );

    // Revoked through this replica's admin API: at once.
    let (key2, secret2) = create_key(&srv.state, &[Scope::Chat], KeyLimits::default()).await;
    assert_eq!(models_with(&srv, Some(&format!("Bearer {secret2}"))).await.0, 200);
    let r = srv
        .http
        .delete(srv.admin_url(&format!("/admin/api/keys/{}", key2.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(models_with(&srv, Some(&format!("Bearer {secret2}"))).await.0, 401);
    srv.stop().await;
}
