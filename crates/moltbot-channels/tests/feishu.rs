//! Feishu / Lark: URL verification (plain and encrypted), signed encrypted events, normalization of
//! fixtures shaped like the official examples, and replies through a fake Open API over real HTTP
//! (tenant token caching and refresh, 429 with the rate-limit reset header, 5xx, permanent errors,
//! the `uuid` idempotency key, thread replies).

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use moltbot_channels::feishu::{FeishuAdapter, FeishuSettings, encrypt, signature};
use moltbot_channels::{
    Adapter, ChannelError, ChatType, Decoded, HttpRequest, InboundMessage, Platform, SendError,
};
use serde_json::{Value, json};

const TOKEN: &str = "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV";
const KEY: &str = "encrypt-key-for-tests";
const NOW: i64 = 1_700_000_000;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/feishu/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn adapter(encrypt_key: Option<&str>, api_base: &str) -> FeishuAdapter {
    FeishuAdapter::new(
        "main",
        Platform::Feishu,
        FeishuSettings {
            app_id: "cli_test".into(),
            app_secret: "app-secret".into(),
            verification_token: Some(TOKEN.into()),
            encrypt_key: encrypt_key.map(str::to_owned),
            bot_id: Some("ou_bot_open_id".into()),
            api_base: api_base.into(),
        },
        reqwest::Client::new(),
    )
}

/// An encrypted, signed push of `plain`, as Feishu sends it.
fn signed(plain: &[u8], ts: i64) -> HttpRequest {
    let body = serde_json::to_vec(&json!({"encrypt": encrypt(KEY, plain)})).unwrap();
    let sig = signature(&ts.to_string(), "nonce-42", KEY, &body);
    HttpRequest::post(body)
        .with_header("x-lark-request-timestamp", &ts.to_string())
        .with_header("x-lark-request-nonce", "nonce-42")
        .with_header("x-lark-signature", &sig)
}

fn messages(d: Decoded) -> Vec<InboundMessage> {
    match d {
        Decoded::Messages { messages, ack } => {
            assert_eq!(ack.status, 200);
            messages
        }
        other => panic!("expected messages, got {other:?}"),
    }
}

#[test]
fn url_verification_plain_and_encrypted() {
    let plain = adapter(None, "");
    match plain
        .handle(&HttpRequest::post(fixture("url_verification.json")), NOW)
        .unwrap()
    {
        Decoded::Challenge(r) => assert_eq!(
            serde_json::from_slice::<Value>(&r.body).unwrap(),
            json!({"challenge": "ajls384kdjx98XX"})
        ),
        other => panic!("{other:?}"),
    }
    let wrong = br#"{"challenge": "x", "token": "not-the-token", "type": "url_verification"}"#;
    assert!(matches!(
        plain.handle(&HttpRequest::post(&wrong[..]), NOW),
        Err(ChannelError::Unauthorized(_))
    ));

    // With an Encrypt Key the check is encrypted and carries no signature headers.
    let enc = adapter(Some(KEY), "");
    let body =
        serde_json::to_vec(&json!({"encrypt": encrypt(KEY, &fixture("url_verification.json"))})).unwrap();
    assert!(matches!(
        enc.handle(&HttpRequest::post(body), NOW).unwrap(),
        Decoded::Challenge(_)
    ));
}

#[test]
fn signed_encrypted_group_event_is_normalized() {
    let a = adapter(Some(KEY), "");
    let m = messages(
        a.handle(&signed(&fixture("group_text_mention.json"), NOW - 5), NOW)
            .unwrap(),
    );
    assert_eq!(m.len(), 1);
    let m = &m[0];
    assert_eq!(m.platform, Platform::Feishu);
    assert_eq!(m.event_id, "5e3702a84e847582be8db7fb73283c02");
    assert_eq!(m.message_id, "om_5ce6d572455d361153b7cb51da133945");
    assert_eq!(m.chat_id, "oc_5ce6d572455d361153b7xx51da133945");
    assert_eq!(m.chat_type, ChatType::Group);
    assert_eq!(m.sender_id, "ou_84aad35d084aa403a838cf73ee18467");
    assert_eq!(m.text, "what did @Tom decide?");
    assert!(m.mentions_bot);
    assert_eq!(m.thread_id, None);
    assert_eq!(m.sent_at, 1_609_073_151);
}

#[test]
fn forged_stale_and_unsigned_events_are_refused() {
    let a = adapter(Some(KEY), "");
    let mut req = signed(&fixture("p2p_text.json"), NOW);
    req = req.with_header("x-lark-signature", &"0".repeat(64));
    assert!(
        matches!(a.handle(&req, NOW), Err(ChannelError::Unauthorized(_))),
        "bad signature"
    );
    let stale = signed(&fixture("p2p_text.json"), NOW - 2 * 3600);
    assert!(
        matches!(a.handle(&stale, NOW), Err(ChannelError::Unauthorized(_))),
        "stale timestamp"
    );
    let unsigned = serde_json::to_vec(&json!({"encrypt": encrypt(KEY, &fixture("p2p_text.json"))})).unwrap();
    assert!(
        matches!(
            a.handle(&HttpRequest::post(unsigned), NOW),
            Err(ChannelError::Unauthorized(_))
        ),
        "event without signature"
    );
    assert!(
        matches!(
            a.handle(&HttpRequest::post(fixture("p2p_text.json")), NOW),
            Err(ChannelError::Unauthorized(_))
        ),
        "plain body with encrypt_key"
    );
    let other_key = {
        let body = serde_json::to_vec(&json!({"encrypt": encrypt("another key", &fixture("p2p_text.json"))}))
            .unwrap();
        let sig = signature(&NOW.to_string(), "n", KEY, &body);
        HttpRequest::post(body)
            .with_header("x-lark-request-timestamp", &NOW.to_string())
            .with_header("x-lark-request-nonce", "n")
            .with_header("x-lark-signature", &sig)
    };
    assert!(
        matches!(a.handle(&other_key, NOW), Err(ChannelError::BadRequest(_))),
        "wrong cipher key"
    );
    assert!(matches!(
        a.handle(&HttpRequest::post(&b"not json"[..]), NOW),
        Err(ChannelError::BadRequest(_))
    ));
    // Token-only apps: the token inside the event must match.
    let plain = adapter(None, "");
    let forged = String::from_utf8(fixture("p2p_text.json"))
        .unwrap()
        .replace(TOKEN, "forged");
    assert!(matches!(
        plain.handle(&HttpRequest::post(forged), NOW),
        Err(ChannelError::Unauthorized(_))
    ));
}

#[test]
fn direct_post_thread_and_ignored_messages() {
    let a = adapter(None, "");
    let d = &messages(
        a.handle(&HttpRequest::post(fixture("p2p_text.json")), NOW)
            .unwrap(),
    )[0];
    assert_eq!(
        (d.chat_type, d.text.as_str(), d.mentions_bot),
        (ChatType::Direct, "hello bot", true)
    );

    let p = &messages(
        a.handle(&HttpRequest::post(fixture("thread_post.json")), NOW)
            .unwrap(),
    )[0];
    assert_eq!(p.text, "Release\nsummarise the notes\nplease");
    assert!(p.mentions_bot);
    assert_eq!(p.thread_id.as_deref(), Some("omt_thread_1"));

    assert!(matches!(
        a.handle(&HttpRequest::post(fixture("image.json")), NOW).unwrap(),
        Decoded::Ignore { .. }
    ));
    let from_app = String::from_utf8(fixture("p2p_text.json"))
        .unwrap()
        .replace(r#""sender_type": "user""#, r#""sender_type": "app""#);
    assert!(matches!(
        a.handle(&HttpRequest::post(from_app), NOW).unwrap(),
        Decoded::Ignore { .. }
    ));
    let other_event = String::from_utf8(fixture("p2p_text.json"))
        .unwrap()
        .replace("im.message.receive_v1", "im.chat.member.bot.added_v1");
    assert!(matches!(
        a.handle(&HttpRequest::post(other_event), NOW).unwrap(),
        Decoded::Ignore { .. }
    ));
}

// ------------------------------------------------------------------------------------ fake API

/// A scripted answer to a message call: HTTP status, Feishu code (0 = succeed), an extra header.
type Scripted = (u16, i64, Option<(&'static str, &'static str)>);

#[derive(Default)]
struct Api {
    token_fetches: usize,
    /// (path, body) of message calls that succeeded.
    sent: Vec<(String, Value)>,
    /// Scripted answers for the next message calls: (HTTP status, code, extra header).
    script: Vec<Scripted>,
}

async fn fake_api() -> (String, Arc<Mutex<Api>>) {
    let api = Arc::new(Mutex::new(Api::default()));
    let a1 = api.clone();
    let a2 = api.clone();
    let message = move |path: String, headers: HeaderMap, body: Value| {
        let api = a2.clone();
        async move {
            let mut api = api.lock().unwrap();
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let current = format!("Bearer t-{}", api.token_fetches);
            if auth != current {
                return (
                    StatusCode::BAD_REQUEST,
                    HeaderMap::new(),
                    Json(json!({"code": 99991663, "msg": "Invalid access token"})),
                );
            }
            if !api.script.is_empty() {
                let (status, code, header) = api.script.remove(0);
                let mut h = HeaderMap::new();
                if let Some((k, v)) = header {
                    h.insert(k, v.parse().unwrap());
                }
                if code != 0 {
                    return (
                        StatusCode::from_u16(status).unwrap(),
                        h,
                        Json(json!({"code": code, "msg": "scripted"})),
                    );
                }
            }
            api.sent.push((path, body));
            (
                StatusCode::OK,
                HeaderMap::new(),
                Json(json!({"code": 0, "msg": "success", "data": {}})),
            )
        }
    };
    let m1 = message.clone();
    let app = axum::Router::new()
        .route(
            "/open-apis/auth/v3/tenant_access_token/internal",
            axum::routing::post(move |Json(body): Json<Value>| {
                let api = a1.clone();
                async move {
                    assert_eq!(body, json!({"app_id": "cli_test", "app_secret": "app-secret"}));
                    let mut api = api.lock().unwrap();
                    api.token_fetches += 1;
                    Json(json!({"code": 0, "msg": "ok", "tenant_access_token": format!("t-{}", api.token_fetches), "expire": 7200}))
                }
            }),
        )
        .route(
            "/open-apis/im/v1/messages",
            axum::routing::post(move |h: HeaderMap, Json(b): Json<Value>| m1("/messages".into(), h, b)),
        )
        .route(
            "/open-apis/im/v1/messages/{id}/reply",
            axum::routing::post(move |axum::extract::Path(id): axum::extract::Path<String>, h: HeaderMap, Json(b): Json<Value>| {
                message(format!("/messages/{id}/reply"), h, b)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, api)
}

#[tokio::test]
async fn replies_use_the_cached_token_uuid_and_thread_replies() {
    let (base, api) = fake_api().await;
    let a = adapter(None, &base);
    let direct = &messages(
        a.handle(&HttpRequest::post(fixture("p2p_text.json")), NOW)
            .unwrap(),
    )[0];
    let thread = &messages(
        a.handle(&HttpRequest::post(fixture("thread_post.json")), NOW)
            .unwrap(),
    )[0];
    a.send(direct, "hi Alice", "chev_1-0").await.unwrap();
    a.send(thread, "the summary", "chev_2-0").await.unwrap();
    let api = api.lock().unwrap();
    assert_eq!(api.token_fetches, 1, "one token for both sends");
    let (path, body) = &api.sent[0];
    assert_eq!(path, "/messages");
    assert_eq!(body["receive_id"], "oc_p2p_1");
    assert_eq!(body["uuid"], "chev_1-0");
    assert_eq!(
        serde_json::from_str::<Value>(body["content"].as_str().unwrap()).unwrap(),
        json!({"text": "hi Alice"})
    );
    let (path, body) = &api.sent[1];
    assert_eq!(path, "/messages/om_post_1/reply");
    assert_eq!(
        (body["reply_in_thread"].as_bool(), body["uuid"].as_str()),
        (Some(true), Some("chev_2-0"))
    );
}

#[tokio::test]
async fn rejected_token_is_refreshed_and_failures_are_classified() {
    let (base, api) = fake_api().await;
    let a = adapter(None, &base);
    let to = &messages(
        a.handle(&HttpRequest::post(fixture("p2p_text.json")), NOW)
            .unwrap(),
    )[0];
    a.send(to, "first", "k1").await.unwrap();
    // Feishu revokes the token: the next call is refused once, a new token is fetched, the send goes.
    api.lock().unwrap().token_fetches += 10;
    a.send(to, "second", "k2").await.unwrap();
    assert_eq!(api.lock().unwrap().sent.len(), 2);

    api.lock().unwrap().script = vec![(429, 99991400, Some(("x-ogw-ratelimit-reset", "7")))];
    match a.send(to, "x", "k3").await {
        Err(SendError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(7)))
        }
        other => panic!("{other:?}"),
    }
    api.lock().unwrap().script = vec![(503, 1, None)];
    assert!(matches!(
        a.send(to, "x", "k4").await,
        Err(SendError::Retryable { .. })
    ));
    api.lock().unwrap().script = vec![(400, 230002, None)];
    assert!(
        matches!(a.send(to, "x", "k5").await, Err(SendError::Permanent(_))),
        "bot not in the chat"
    );
}

#[tokio::test]
async fn bad_app_credentials_are_permanent() {
    let app = axum::Router::new().route(
        "/open-apis/auth/v3/tenant_access_token/internal",
        axum::routing::post(|| async {
            Json(json!({"code": 10014, "msg": "app secret invalid"})).into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let a = adapter(None, &base);
    let to = &messages(
        a.handle(&HttpRequest::post(fixture("p2p_text.json")), NOW)
            .unwrap(),
    )[0];
    match a.send(to, "x", "k").await {
        Err(SendError::Permanent(m)) => assert!(m.contains("10014") && !m.contains("app-secret"), "{m}"),
        other => panic!("{other:?}"),
    }
}
