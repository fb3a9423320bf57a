//! Brute-force protection through the real router: lockouts per client address, `X-Forwarded-For`
//! honoured only from trusted proxies, on an injected clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use moltbot_core::{Clock, ManualClock, SystemClock};
use serde_json::Value;

#[tokio::test]
async fn repeated_failures_lock_the_client_address_out() {
    let fake = fake().await;
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &fake.base_url(), "");
    cfg.auth.lockout_threshold = 3;
    cfg.auth.lockout_duration = Duration::from_secs(60);
    cfg.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let srv = start_config_clock(cfg, dir, Some(clock.clone())).await;
    let attempt = |xff: &'static str, credential: String| {
        srv.anon
            .get(srv.url("/v1/models"))
            .header("x-forwarded-for", xff)
            .bearer_auth(credential)
            .send()
    };
    let wrong = format!("mb_{}", "w".repeat(40));
    for _ in 0..3 {
        assert_eq!(attempt("203.0.113.1", wrong.clone()).await.unwrap().status(), 401);
    }
    // Locked out, even with a valid key; another client behind the same proxy is not.
    let r = attempt("203.0.113.1", srv.secret.clone()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_auth_failures");
    assert_eq!(
        attempt("203.0.113.2", srv.secret.clone()).await.unwrap().status(),
        200
    );
    // Missing credentials are not guesses and do not count.
    for _ in 0..5 {
        let r = srv
            .anon
            .get(srv.url("/v1/models"))
            .header("x-forwarded-for", "203.0.113.3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(
        attempt("203.0.113.3", srv.secret.clone()).await.unwrap().status(),
        200
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        attempt("203.0.113.1", srv.secret.clone()).await.unwrap().status(),
        200
    );
    srv.stop().await;
}

#[tokio::test]
async fn forwarded_for_from_untrusted_peers_is_ignored() {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| c.auth.lockout_threshold = 2).await;
    let wrong = format!("mb_{}", "w".repeat(40));
    for xff in ["198.51.100.1", "198.51.100.2"] {
        let r = srv
            .anon
            .get(srv.url("/v1/models"))
            .header("x-forwarded-for", xff)
            .bearer_auth(&wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Both failures were counted against the real peer (127.0.0.1), whatever the header claimed.
    let r = srv
        .http
        .get(srv.url("/v1/models"))
        .header("x-forwarded-for", "198.51.100.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    srv.stop().await;
}
