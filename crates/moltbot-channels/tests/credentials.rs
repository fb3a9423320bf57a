//! `check_credentials` (what `moltbot doctor` runs) for every platform against one fake Open API over
//! real HTTP: the right credentials get the platform's answer, wrong ones a permanent error that
//! names the platform's complaint and never the secret.

use std::collections::HashMap;

use axum::Json;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use moltbot_channels::dingtalk::{DingtalkAdapter, DingtalkSettings};
use moltbot_channels::feishu::{FeishuAdapter, FeishuSettings};
use moltbot_channels::slack::{SlackAdapter, SlackSettings};
use moltbot_channels::telegram::{TelegramAdapter, TelegramSettings};
use moltbot_channels::wecom::{WecomAdapter, WecomSettings};
use moltbot_channels::{Adapter, Platform, SendError};
use serde_json::{Value, json};

const GOOD: &str = "good-secret-123";

async fn fake() -> String {
    let app = axum::Router::new()
        .route(
            "/open-apis/auth/v3/tenant_access_token/internal",
            axum::routing::post(|Json(b): Json<Value>| async move {
                if b["app_secret"] == GOOD {
                    Json(json!({"code": 0, "msg": "ok", "tenant_access_token": "t-1", "expire": 7200}))
                } else {
                    Json(json!({"code": 10014, "msg": "app secret invalid"}))
                }
            }),
        )
        .route(
            "/cgi-bin/gettoken",
            axum::routing::get(|Query(q): Query<HashMap<String, String>>| async move {
                if q.get("corpsecret").map(String::as_str) == Some(GOOD) {
                    Json(json!({"errcode": 0, "errmsg": "ok", "access_token": "w-1", "expires_in": 7200}))
                } else {
                    Json(json!({"errcode": 40001, "errmsg": "invalid credential"}))
                }
            }),
        )
        .route(
            "/v1.0/oauth2/accessToken",
            axum::routing::post(|Json(b): Json<Value>| async move {
                if b["appSecret"] == GOOD {
                    (StatusCode::OK, Json(json!({"accessToken": "d-1", "expireIn": 7200})))
                } else {
                    (StatusCode::BAD_REQUEST, Json(json!({"code": "invalidClientSecret", "message": "bad"})))
                }
            }),
        )
        .route(
            "/bot{token}/getMe",
            axum::routing::post(|axum::extract::Path(token): axum::extract::Path<String>| async move {
                if token == format!("1:{GOOD}") {
                    (StatusCode::OK, Json(json!({"ok": true, "result": {"id": 1, "is_bot": true, "username": "molt_bot"}})))
                } else {
                    (StatusCode::UNAUTHORIZED, Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})))
                }
            }),
        )
        .route(
            "/api/auth.test",
            axum::routing::post(|h: HeaderMap| async move {
                if h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {GOOD}")) {
                    Json(json!({"ok": true, "user": "moltbot", "user_id": "UBOT", "team": "Acme"}))
                } else {
                    Json(json!({"ok": false, "error": "invalid_auth"}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn adapters(base: &str, secret: &str) -> Vec<Box<dyn Adapter>> {
    let http = reqwest::Client::new();
    vec![
        Box::new(FeishuAdapter::new(
            "f",
            Platform::Feishu,
            FeishuSettings {
                app_id: "cli".into(),
                app_secret: secret.into(),
                verification_token: Some("vt".into()),
                encrypt_key: None,
                bot_id: None,
                api_base: base.into(),
            },
            http.clone(),
        )),
        Box::new(WecomAdapter::new(
            "w",
            WecomSettings {
                corp_id: "wx1".into(),
                agent_id: "1".into(),
                app_secret: secret.into(),
                token: "t".into(),
                encoding_aes_key: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C".into(),
                api_base: base.into(),
            },
            http.clone(),
        )),
        Box::new(DingtalkAdapter::new(
            "d",
            DingtalkSettings {
                app_key: "k".into(),
                app_secret: secret.into(),
                robot_code: None,
                api_base: base.into(),
            },
            http.clone(),
        )),
        Box::new(TelegramAdapter::new(
            "t",
            TelegramSettings {
                bot_token: format!("1:{secret}"),
                secret_token: None,
                bot_id: None,
                api_base: base.into(),
            },
            http.clone(),
        )),
        Box::new(SlackAdapter::new(
            "s",
            SlackSettings {
                bot_token: secret.into(),
                signing_secret: "ss".into(),
                bot_id: None,
                api_base: format!("{base}/api"),
            },
            http,
        )),
    ]
}

#[tokio::test]
async fn right_credentials_pass_and_wrong_ones_are_named_without_the_secret() {
    let base = fake().await;
    let want = [
        "tenant access token issued",
        "access token issued",
        "access token issued",
        "bot @molt_bot",
        "bot moltbot (UBOT) in team Acme",
    ];
    for (a, want) in adapters(&base, GOOD).iter().zip(want) {
        assert_eq!(a.check_credentials().await.unwrap(), want, "{:?}", a.platform());
    }
    for a in adapters(&base, "wrong-secret-xyz") {
        match a.check_credentials().await {
            Err(SendError::Permanent(m)) => {
                assert!(!m.contains("wrong-secret-xyz"), "{:?} leaks: {m}", a.platform())
            }
            other => panic!("{:?}: {other:?}", a.platform()),
        }
    }
}
