//! Feishu / Lark: URL verification (plain and encrypted), signed encrypted events checked against
//! fixtures made with openssl and sha256sum (tests/fixtures/feishu/gen.sh), normalization of fixtures
//! shaped like the official examples, and replies through a fake Open API over real HTTP (tenant token
//! caching, refresh margin and refresh on rejection, 429 with the rate-limit reset header, 5xx,
//! permanent errors, the `uuid` idempotency key, thread and reply-chain replies).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use moltbot_channels::feishu::{
    FEISHU_API_BASE, FeishuAdapter, FeishuSettings, LARK_API_BASE, SIGNATURE_WINDOW_SECS, decrypt, encrypt,
    encrypt_with_iv, signature,
};
use moltbot_channels::{
    Adapter, ChannelError, ChatType, Decoded, HttpRequest, InboundMessage, LengthUnit, Platform, SendError,
};
use serde_json::{Value, json};

const TOKEN: &str = "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV";
/// The Encrypt Key gen.sh used for the encrypted fixtures.
const KEY: &str = "encrypt-key-for-tests";
const BOT: &str = "ou_bot_open_id";
const NOW: i64 = 1_700_000_000;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/feishu/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn fixture_str(name: &str) -> String {
    String::from_utf8(fixture(name)).unwrap()
}

fn settings(encrypt_key: Option<&str>, bot_id: Option<&str>, api_base: &str) -> FeishuSettings {
    FeishuSettings {
        app_id: "cli_test".into(),
        app_secret: "app-secret".into(),
        verification_token: Some(TOKEN.into()),
        encrypt_key: encrypt_key.map(str::to_owned),
        bot_id: bot_id.map(str::to_owned),
        api_base: api_base.into(),
    }
}

fn adapter(encrypt_key: Option<&str>, api_base: &str) -> FeishuAdapter {
    FeishuAdapter::new(
        "main",
        Platform::Feishu,
        settings(encrypt_key, Some(BOT), api_base),
        reqwest::Client::new(),
    )
}

/// An encrypted, signed push of `plain` made with this crate's own functions, as Feishu sends it.
fn signed(plain: &[u8], ts: i64) -> HttpRequest {
    let body = serde_json::to_vec(&json!({"encrypt": encrypt(KEY, plain)})).unwrap();
    let sig = signature(&ts.to_string(), "nonce-42", KEY, &body);
    HttpRequest::post(body)
        .with_header("x-lark-request-timestamp", &ts.to_string())
        .with_header("x-lark-request-nonce", "nonce-42")
        .with_header("x-lark-signature", &sig)
}

/// gen.sh's signed push (body and headers made with openssl and sha256sum).
fn signed_fixture() -> HttpRequest {
    let h: Value = serde_json::from_slice(&fixture("signed_p2p_headers.json")).unwrap();
    let mut req = HttpRequest::post(fixture("signed_p2p_body.json"));
    for name in [
        "x-lark-request-timestamp",
        "x-lark-request-nonce",
        "x-lark-signature",
    ] {
        req = req.with_header(name, h[name].as_str().unwrap());
    }
    req
}

fn messages(d: Decoded) -> Vec<InboundMessage> {
    match d {
        Decoded::Messages { messages, ack } => {
            assert_eq!(
                (ack.status, ack.content_type, ack.body.as_slice()),
                (200, "application/json", &b"{}"[..])
            );
            messages
        }
        other => panic!("expected messages, got {other:?}"),
    }
}

fn one(a: &FeishuAdapter, req: &HttpRequest) -> InboundMessage {
    let mut m = messages(a.handle(req, NOW).unwrap());
    assert_eq!(m.len(), 1);
    m.pop().unwrap()
}

fn ignored(d: Result<Decoded, ChannelError>) -> String {
    match d {
        Ok(Decoded::Ignore { reason, ack }) => {
            assert_eq!((ack.status, ack.body.as_slice()), (200, &b"{}"[..]));
            reason
        }
        other => panic!("expected Ignore, got {other:?}"),
    }
}

fn unauthorized(d: Result<Decoded, ChannelError>, why: &str) {
    assert!(matches!(d, Err(ChannelError::Unauthorized(_))), "{why}: {d:?}");
}

fn challenge_of(d: Decoded) -> Value {
    match d {
        Decoded::Challenge(r) => {
            assert_eq!((r.status, r.content_type), (200, "application/json"));
            serde_json::from_slice(&r.body).unwrap()
        }
        other => panic!("expected a challenge, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------ handle()

#[test]
fn url_verification_plain_and_encrypted() {
    let plain = adapter(None, "");
    assert_eq!(
        challenge_of(
            plain
                .handle(&HttpRequest::post(fixture("url_verification.json")), NOW)
                .unwrap()
        ),
        json!({"challenge": "ajls384kdjx98XX"})
    );
    let wrong = br#"{"challenge": "x", "token": "not-the-token", "type": "url_verification"}"#;
    unauthorized(plain.handle(&HttpRequest::post(&wrong[..]), NOW), "wrong token");
    let missing = br#"{"challenge": "x", "type": "url_verification"}"#;
    unauthorized(plain.handle(&HttpRequest::post(&missing[..]), NOW), "no token");

    // The encrypted URL check (made by openssl) carries no signature headers and is answered.
    let enc = adapter(Some(KEY), "");
    assert_eq!(
        challenge_of(
            enc.handle(
                &HttpRequest::post(fixture("url_verification_encrypted.json")),
                NOW
            )
            .unwrap()
        ),
        json!({"challenge": "ajls384kdjx98XX"})
    );
    // Encrypted but with another token: refused.
    let other = serde_json::to_vec(&json!({"encrypt": encrypt(KEY, &wrong[..])})).unwrap();
    unauthorized(
        enc.handle(&HttpRequest::post(other), NOW),
        "encrypted check, wrong token",
    );
    // A plain check while an Encrypt Key is configured: Feishu would have encrypted it.
    unauthorized(
        enc.handle(&HttpRequest::post(fixture("url_verification.json")), NOW),
        "plain check with encrypt_key",
    );
    // Signed as well (some deployments sign it): the signature is then checked.
    assert!(matches!(
        enc.handle(&signed(&fixture("url_verification.json"), NOW), NOW),
        Ok(Decoded::Challenge(_))
    ));
    let forged =
        signed(&fixture("url_verification.json"), NOW).with_header("x-lark-signature", &"a".repeat(64));
    unauthorized(enc.handle(&forged, NOW), "signed check, bad signature");

    // Encrypt Key only (no Verification Token): knowing the key is enough.
    let key_only = FeishuAdapter::new(
        "main",
        Platform::Feishu,
        FeishuSettings {
            verification_token: None,
            ..settings(Some(KEY), Some(BOT), "")
        },
        reqwest::Client::new(),
    );
    assert!(matches!(
        key_only.handle(
            &HttpRequest::post(fixture("url_verification_encrypted.json")),
            NOW
        ),
        Ok(Decoded::Challenge(_))
    ));
}

#[test]
fn openssl_fixtures_match_this_implementation() {
    // gen.sh encrypted url_verification.json with IV 00..0f: decrypt gives the file back, and
    // encrypting the file with the same IV gives gen.sh's output byte for byte.
    let body: Value = serde_json::from_slice(&fixture("url_verification_encrypted.json")).unwrap();
    let enc = body["encrypt"].as_str().unwrap();
    assert_eq!(decrypt(KEY, enc).unwrap(), fixture("url_verification.json"));
    let iv: [u8; 16] = std::array::from_fn(|i| i as u8);
    assert_eq!(encrypt_with_iv(KEY, iv, &fixture("url_verification.json")), enc);
    let raw = base64::engine::general_purpose::STANDARD.decode(enc).unwrap();
    assert_eq!(&raw[..16], &iv[..], "the IV leads the data");

    // The signature sha256sum computed over the raw body.
    let h: Value = serde_json::from_slice(&fixture("signed_p2p_headers.json")).unwrap();
    assert_eq!(
        signature(
            h["x-lark-request-timestamp"].as_str().unwrap(),
            h["x-lark-request-nonce"].as_str().unwrap(),
            KEY,
            &fixture("signed_p2p_body.json")
        ),
        h["x-lark-signature"].as_str().unwrap()
    );
}

#[test]
fn signed_encrypted_fixture_is_accepted_within_five_minutes() {
    let a = adapter(Some(KEY), "");
    let req = signed_fixture();
    let m = one(&a, &req);
    assert_eq!(
        (m.event_id.as_str(), m.chat_id.as_str(), m.text.as_str()),
        ("ev-p2p-1", "oc_p2p_1", "hello bot")
    );
    // The fixture is signed at NOW: accepted up to 5 minutes either way, refused beyond.
    assert_eq!(SIGNATURE_WINDOW_SECS, 300);
    for now in [NOW - 300, NOW + 300] {
        assert!(a.handle(&req, now).is_ok(), "now = {now}");
    }
    for now in [NOW - 301, NOW + 301, NOW + 3600] {
        unauthorized(a.handle(&req, now), "stale timestamp");
    }
    // Any change to the signed parts is refused.
    unauthorized(
        a.handle(
            &signed_fixture().with_header("x-lark-request-nonce", "other"),
            NOW,
        ),
        "changed nonce",
    );
    unauthorized(
        a.handle(
            &signed_fixture().with_header("x-lark-request-timestamp", "1700000001"),
            NOW,
        ),
        "changed timestamp",
    );
    let mut body = fixture("signed_p2p_body.json");
    body.insert(1, b' ');
    let mut tampered = signed_fixture();
    tampered.body = body.into();
    unauthorized(a.handle(&tampered, NOW), "changed body");
    // Another Encrypt Key signs differently.
    let other = FeishuAdapter::new(
        "main",
        Platform::Feishu,
        settings(Some("another key"), Some(BOT), ""),
        reqwest::Client::new(),
    );
    unauthorized(other.handle(&signed_fixture(), NOW), "another encrypt key");
}

#[test]
fn forged_stale_unsigned_and_garbage_requests_are_refused() {
    let a = adapter(Some(KEY), "");
    let p2p = fixture("p2p_text.json");
    unauthorized(
        a.handle(
            &signed(&p2p, NOW).with_header("x-lark-signature", &"0".repeat(64)),
            NOW,
        ),
        "bad signature",
    );
    unauthorized(a.handle(&signed(&p2p, NOW - 301), NOW), "stale timestamp");
    unauthorized(a.handle(&signed(&p2p, NOW + 301), NOW), "future timestamp");
    let mut no_ts = signed(&p2p, NOW);
    no_ts.headers.remove("x-lark-request-timestamp");
    unauthorized(a.handle(&no_ts, NOW), "signature without timestamp");
    let unsigned = serde_json::to_vec(&json!({"encrypt": encrypt(KEY, &p2p)})).unwrap();
    unauthorized(
        a.handle(&HttpRequest::post(unsigned), NOW),
        "event without signature",
    );
    unauthorized(
        a.handle(&HttpRequest::post(p2p.clone()), NOW),
        "plain body with encrypt_key",
    );
    // Correctly signed, but encrypted with another key: cannot be decrypted.
    let other_key = {
        let body = serde_json::to_vec(&json!({"encrypt": encrypt("another key", &p2p)})).unwrap();
        let sig = signature(&NOW.to_string(), "n", KEY, &body);
        HttpRequest::post(body)
            .with_header("x-lark-request-timestamp", &NOW.to_string())
            .with_header("x-lark-request-nonce", "n")
            .with_header("x-lark-signature", &sig)
    };
    assert!(matches!(
        a.handle(&other_key, NOW),
        Err(ChannelError::BadRequest(_))
    ));
    // Signed and decryptable, but the Verification Token inside is wrong.
    let wrong_token = fixture_str("p2p_text.json").replace(TOKEN, "forged-token");
    unauthorized(
        a.handle(&signed(wrong_token.as_bytes(), NOW), NOW),
        "wrong token in a signed event",
    );

    // Garbage.
    let plain = adapter(None, "");
    for body in [
        &b"not json"[..],
        b"",
        b"[1,2]",
        b"\"str\"",
        br#"{"schema":"2.0"}"#,
        br#"{"schema":"2.0","header":{"event_type":"im.message.receive_v1","token":"rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV"}}"#,
    ] {
        assert!(
            matches!(
                plain.handle(&HttpRequest::post(body), NOW),
                Err(ChannelError::BadRequest(_))
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(matches!(
        plain.handle(&HttpRequest::post(r#"{"encrypt":"AAAA"}"#), NOW),
        Err(ChannelError::BadRequest(_))
    ));
    // Token-only apps: the token inside the event must match.
    unauthorized(
        plain.handle(
            &HttpRequest::post(fixture_str("p2p_text.json").replace(TOKEN, "forged")),
            NOW,
        ),
        "wrong token",
    );
    let no_token = fixture_str("p2p_text.json").replace(&format!(r#""token": "{TOKEN}", "#), "");
    assert!(!no_token.contains(TOKEN));
    unauthorized(plain.handle(&HttpRequest::post(no_token), NOW), "no token");
    // Neither secret configured: nothing can be verified, everything is refused.
    let open = FeishuAdapter::new(
        "main",
        Platform::Feishu,
        FeishuSettings {
            verification_token: Some(String::new()),
            encrypt_key: Some(String::new()),
            ..settings(None, None, "")
        },
        reqwest::Client::new(),
    );
    unauthorized(
        open.handle(&HttpRequest::post(fixture("p2p_text.json")), NOW),
        "no secrets configured",
    );
}

#[test]
fn group_text_with_bot_and_other_mention_is_normalized() {
    let a = adapter(Some(KEY), "");
    let m = one(&a, &signed(&fixture("group_text_mention.json"), NOW - 5));
    assert_eq!(m.platform, Platform::Feishu);
    assert_eq!(m.account, "main");
    assert_eq!(m.event_id, "5e3702a84e847582be8db7fb73283c02");
    assert_eq!(m.message_id, "om_5ce6d572455d361153b7cb51da133945");
    assert_eq!(m.chat_id, "oc_5ce6d572455d361153b7xx51da133945");
    assert_eq!(m.chat_type, ChatType::Group);
    assert_eq!(m.sender_id, "ou_84aad35d084aa403a838cf73ee18467");
    assert_eq!(m.text, "what did @Tom decide?");
    assert!(m.mentions_bot);
    assert_eq!(m.thread_id, None);
    assert_eq!(m.reply, Value::Null);
    assert_eq!(m.sent_at, 1_609_073_151);

    // Only another person mentioned: not for the bot.
    let tom_only = fixture_str("group_text_mention.json").replace(
        r#"@_user_1 what did @_user_2 decide?"#,
        r#"what did @_user_2 decide?"#,
    );
    let m = one(&adapter(None, ""), &HttpRequest::post(tom_only.clone()));
    assert_eq!(
        (m.text.as_str(), m.mentions_bot),
        ("what did @Tom decide?", false)
    );

    // Without bot_id any mention counts as mentioning the bot, and every mention is written as @Name.
    let no_bot_id = FeishuAdapter::new(
        "main",
        Platform::Feishu,
        settings(None, None, ""),
        reqwest::Client::new(),
    );
    let m = one(&no_bot_id, &HttpRequest::post(fixture("group_text_mention.json")));
    assert_eq!(
        (m.text.as_str(), m.mentions_bot),
        ("@moltbot what did @Tom decide?", true)
    );
    let m = one(&no_bot_id, &HttpRequest::post(tom_only));
    assert!(m.mentions_bot, "documented: without bot_id any mention counts");
    let none = fixture_str("group_text_mention.json")
        .replace(r#"@_user_1 what did @_user_2 decide?"#, "no mentions");
    let m = one(&no_bot_id, &HttpRequest::post(none));
    assert!(!m.mentions_bot);
}

#[test]
fn direct_text_post_thread_and_reply_chain() {
    let a = adapter(None, "");
    let d = one(&a, &HttpRequest::post(fixture("p2p_text.json")));
    assert_eq!(
        (d.chat_type, d.text.as_str(), d.mentions_bot, d.sender_id.as_str()),
        (ChatType::Direct, "hello bot", true, "ou_alice")
    );
    assert_eq!((d.thread_id.as_deref(), d.sent_at), (None, 1_609_073_151));

    let p = one(&a, &HttpRequest::post(fixture("thread_post.json")));
    assert_eq!(
        p.text,
        "Release\nsummarise the notes (https://example.com)\nplease"
    );
    assert!(p.mentions_bot);
    assert_eq!(p.chat_type, ChatType::Group);
    assert_eq!(p.thread_id.as_deref(), Some("omt_thread_1"));
    assert_eq!(p.reply, json!({"reply_in_thread": true}));

    let r = one(&a, &HttpRequest::post(fixture("group_reply_chain.json")));
    assert_eq!(
        (r.text.as_str(), r.thread_id.as_deref()),
        ("and what about tomorrow?", Some("om_root_9"))
    );
    assert_eq!(r.reply, json!({"reply_in_thread": false}));

    // Lark: same wire format, the platform is carried through.
    let lark = FeishuAdapter::new(
        "intl",
        Platform::Lark,
        settings(None, Some(BOT), LARK_API_BASE),
        reqwest::Client::new(),
    );
    assert_eq!(lark.platform(), Platform::Lark);
    let l = one(&lark, &HttpRequest::post(fixture("p2p_text.json")));
    assert_eq!((l.platform, l.account.as_str()), (Platform::Lark, "intl"));
    assert_ne!(FEISHU_API_BASE, LARK_API_BASE);

    let limit = a.chunk_limit();
    assert_eq!((limit.max, limit.unit), (4000, LengthUnit::Chars));
}

#[test]
fn non_text_own_empty_and_other_events_are_ignored() {
    let a = adapter(None, "");
    let r = ignored(a.handle(&HttpRequest::post(fixture("image.json")), NOW));
    assert!(r.contains("image"), "{r}");
    let r = ignored(a.handle(&HttpRequest::post(fixture("bot_own_message.json")), NOW));
    assert!(r.contains("app"), "{r}");
    // The bot's own open_id, whatever the sender_type says.
    let own = fixture_str("p2p_text.json").replace("ou_alice", BOT);
    ignored(a.handle(&HttpRequest::post(own), NOW));
    let r = ignored(a.handle(&HttpRequest::post(fixture("unknown_event.json")), NOW));
    assert!(r.contains("im.chat.member.bot.added_v1"), "{r}");
    ignored(a.handle(&HttpRequest::post(fixture("event_v1.json")), NOW));
    // A bare mention of the bot: nothing to answer.
    let bare =
        fixture_str("group_reply_chain.json").replace("@_user_1 and what about tomorrow?", " @_user_1 ");
    assert_eq!(ignored(a.handle(&HttpRequest::post(bare), NOW)), "empty text");
    // Unsupported message types in general.
    for t in ["file", "audio", "sticker", "interactive", "share_chat"] {
        let body = fixture_str("p2p_text.json")
            .replace(r#""message_type": "text""#, &format!(r#""message_type": "{t}""#));
        ignored(a.handle(&HttpRequest::post(body), NOW));
    }
    // A v1 event with a forged token is refused, not ignored.
    let v1 = fixture_str("event_v1.json").replace(TOKEN, "forged");
    unauthorized(a.handle(&HttpRequest::post(v1), NOW), "v1 wrong token");
    // Ignored events are still verified.
    let forged = fixture_str("unknown_event.json").replace(TOKEN, "forged");
    unauthorized(
        a.handle(&HttpRequest::post(forged), NOW),
        "unknown event, wrong token",
    );
}

// ------------------------------------------------------------------------------------ fake API

/// A scripted answer to the next message call: HTTP status, Feishu code, an extra header.
type Scripted = (u16, i64, Option<(&'static str, &'static str)>);

#[derive(Default)]
struct Api {
    /// Tokens handed out; the latest is the valid one.
    token_fetches: usize,
    /// `expire` returned with each token.
    expire: u64,
    /// Every message call: (path, body, answered with success).
    calls: Vec<(String, Value, bool)>,
    /// Scripted answers for the next message calls (after the token check).
    script: Vec<Scripted>,
}

impl Api {
    fn sent(&self) -> Vec<&(String, Value, bool)> {
        self.calls.iter().filter(|c| c.2).collect()
    }
}

async fn fake_api() -> (String, Arc<Mutex<Api>>) {
    let api = Arc::new(Mutex::new(Api {
        expire: 7200,
        ..Api::default()
    }));
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
            let (status, h, answer) = if auth != current || api.token_fetches == 0 {
                (
                    StatusCode::BAD_REQUEST,
                    HeaderMap::new(),
                    json!({"code": 99991663, "msg": "Invalid access token for authorization. Please make a request with token attached."}),
                )
            } else if !api.script.is_empty() {
                let (status, code, header) = api.script.remove(0);
                let mut h = HeaderMap::new();
                if let Some((k, v)) = header {
                    h.insert(k, v.parse().unwrap());
                }
                (
                    StatusCode::from_u16(status).unwrap(),
                    h,
                    json!({"code": code, "msg": "scripted"}),
                )
            } else {
                (
                    StatusCode::OK,
                    HeaderMap::new(),
                    json!({"code": 0, "msg": "success", "data": {"message_id": "om_sent"}}),
                )
            };
            let ok = status == StatusCode::OK && answer["code"] == 0;
            api.calls.push((path, body, ok));
            (status, h, Json(answer))
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
                    Json(json!({"code": 0, "msg": "ok", "tenant_access_token": format!("t-{}", api.token_fetches), "expire": api.expire}))
                }
            }),
        )
        .route(
            "/open-apis/im/v1/messages",
            axum::routing::post(
                move |axum::extract::Query(q): axum::extract::Query<Vec<(String, String)>>,
                      h: HeaderMap,
                      Json(b): Json<Value>| {
                    assert_eq!(q, vec![("receive_id_type".to_owned(), "chat_id".to_owned())]);
                    m1("/messages".into(), h, b)
                },
            ),
        )
        .route(
            "/open-apis/im/v1/messages/{id}/reply",
            axum::routing::post(move |Path(id): Path<String>, h: HeaderMap, Json(b): Json<Value>| {
                message(format!("/messages/{id}/reply"), h, b)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, api)
}

fn inbound(a: &FeishuAdapter, name: &str) -> InboundMessage {
    one(a, &HttpRequest::post(fixture(name)))
}

fn content_of(body: &Value) -> Value {
    serde_json::from_str(body["content"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn replies_go_to_the_chat_thread_or_message_with_cached_token_and_uuid() {
    let (base, api) = fake_api().await;
    // A trailing slash on api_base is tolerated.
    let a = adapter(None, &format!("{base}/"));
    let direct = inbound(&a, "p2p_text.json");
    let group = inbound(&a, "group_text_mention.json");
    let thread = inbound(&a, "thread_post.json");
    let chain = inbound(&a, "group_reply_chain.json");
    a.send(&direct, "hi Alice", "chev_1-0").await.unwrap();
    a.send(&group, "Tom decided yes", "chev_2-0").await.unwrap();
    a.send(&thread, "the summary", "chev_3-0").await.unwrap();
    a.send(&chain, "tomorrow too", "chev_4-0").await.unwrap();
    let api = api.lock().unwrap();
    assert_eq!(api.token_fetches, 1, "one token for every send");
    let sent = api.sent();
    assert_eq!(sent.len(), 4);

    let (path, body, _) = sent[0];
    assert_eq!(path, "/messages");
    assert_eq!(
        (
            body["receive_id"].as_str(),
            body["msg_type"].as_str(),
            body["uuid"].as_str()
        ),
        (Some("oc_p2p_1"), Some("text"), Some("chev_1-0"))
    );
    assert_eq!(content_of(body), json!({"text": "hi Alice"}));

    let (path, body, _) = sent[1];
    assert_eq!(
        path, "/messages",
        "a group message outside a thread: a new message in the chat"
    );
    assert_eq!(body["receive_id"], "oc_5ce6d572455d361153b7xx51da133945");
    assert_eq!(body["uuid"], "chev_2-0");

    let (path, body, _) = sent[2];
    assert_eq!(path, "/messages/om_post_1/reply");
    assert_eq!(
        (
            body["reply_in_thread"].as_bool(),
            body["uuid"].as_str(),
            body["msg_type"].as_str()
        ),
        (Some(true), Some("chev_3-0"), Some("text"))
    );
    assert_eq!(content_of(body), json!({"text": "the summary"}));
    assert!(body.get("receive_id").is_none());

    let (path, body, _) = sent[3];
    assert_eq!(path, "/messages/om_reply_2/reply");
    assert_eq!(body["reply_in_thread"], false);
}

#[tokio::test]
async fn token_is_refreshed_within_five_minutes_of_expiry() {
    let (base, api) = fake_api().await;
    // Tokens that live 5 minutes are already inside the refresh margin: every send fetches anew.
    api.lock().unwrap().expire = 300;
    let a = adapter(None, &base);
    let to = inbound(&a, "p2p_text.json");
    a.send(&to, "one", "k1").await.unwrap();
    a.send(&to, "two", "k2").await.unwrap();
    assert_eq!(api.lock().unwrap().token_fetches, 2);
    // Tokens that live longer than the margin are reused.
    api.lock().unwrap().expire = 301 + 60;
    a.send(&to, "three", "k3").await.unwrap();
    a.send(&to, "four", "k4").await.unwrap();
    assert_eq!(api.lock().unwrap().token_fetches, 3);
}

#[tokio::test]
async fn rejected_token_is_refreshed_once_and_the_uuid_kept() {
    let (base, api) = fake_api().await;
    let a = adapter(None, &base);
    let to = inbound(&a, "p2p_text.json");
    a.send(&to, "first", "k1").await.unwrap();
    // Feishu rejects the (still cached) token once: a new one is fetched and the send repeated with the
    // same uuid.
    api.lock().unwrap().script = vec![(400, 99991663, None)];
    a.send(&to, "second", "k2").await.unwrap();
    {
        let api = api.lock().unwrap();
        assert_eq!(api.token_fetches, 2);
        let tail: Vec<_> = api.calls[1..]
            .iter()
            .map(|(_, b, ok)| (b["uuid"].as_str().unwrap().to_owned(), *ok))
            .collect();
        assert_eq!(tail, vec![("k2".into(), false), ("k2".into(), true)]);
    }
    // Each of the token-invalid codes triggers the refresh.
    for code in [99991661, 99991668] {
        api.lock().unwrap().script = vec![(400, code, None)];
        a.send(&to, "again", "k3").await.unwrap();
    }
    assert_eq!(api.lock().unwrap().token_fetches, 4);
    // Rejected again after the refresh: give up for now (retryable), do not loop.
    api.lock().unwrap().script = vec![(400, 99991663, None), (400, 99991663, None)];
    assert!(matches!(
        a.send(&to, "x", "k4").await,
        Err(SendError::Retryable { .. })
    ));
    assert_eq!(api.lock().unwrap().token_fetches, 5);
}

#[tokio::test]
async fn rate_limits_server_errors_and_permanent_errors_are_classified() {
    let (base, api) = fake_api().await;
    let a = adapter(None, &base);
    let to = inbound(&a, "p2p_text.json");

    api.lock().unwrap().script = vec![(429, 99991400, Some(("x-ogw-ratelimit-reset", "7")))];
    match a.send(&to, "x", "k1").await {
        Err(SendError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("{other:?}"),
    }
    api.lock().unwrap().script = vec![(429, 99991400, Some(("retry-after", "3")))];
    match a.send(&to, "x", "k2").await {
        Err(SendError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3)))
        }
        other => panic!("{other:?}"),
    }
    // The rate-limit code under HTTP 400, no header.
    api.lock().unwrap().script = vec![(400, 99991400, None)];
    assert!(matches!(
        a.send(&to, "x", "k3").await,
        Err(SendError::Retryable {
            retry_after: None,
            ..
        })
    ));
    api.lock().unwrap().script = vec![(500, 1, None)];
    assert!(matches!(
        a.send(&to, "x", "k4").await,
        Err(SendError::Retryable { .. })
    ));
    api.lock().unwrap().script = vec![(503, 1, None)];
    assert!(matches!(
        a.send(&to, "x", "k5").await,
        Err(SendError::Retryable { .. })
    ));
    api.lock().unwrap().script = vec![(400, 230002, None)];
    match a.send(&to, "x", "k6").await {
        Err(SendError::Permanent(m)) => assert!(m.contains("230002"), "bot not in the chat: {m}"),
        other => panic!("{other:?}"),
    }
    api.lock().unwrap().script = vec![(200, 230001, None)];
    assert!(matches!(
        a.send(&to, "x", "k7").await,
        Err(SendError::Permanent(_))
    ));
    let api = api.lock().unwrap();
    assert_eq!(
        api.token_fetches, 1,
        "errors other than token-invalid keep the token"
    );
    assert!(api.sent().is_empty());
}

#[tokio::test]
async fn long_idempotency_keys_are_hashed_to_a_stable_uuid() {
    let (base, api) = fake_api().await;
    let a = adapter(None, &base);
    let to = inbound(&a, "p2p_text.json");
    let long = format!("chev_{}-17", "9".repeat(60));
    api.lock().unwrap().script = vec![(500, 1, None)];
    assert!(a.send(&to, "x", &long).await.is_err());
    a.send(&to, "x", &long).await.unwrap();
    let api = api.lock().unwrap();
    let uuids: Vec<&str> = api
        .calls
        .iter()
        .map(|(_, b, _)| b["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(uuids.len(), 2);
    assert_eq!(uuids[0], uuids[1], "the retry carries the same uuid");
    assert!(uuids[0].len() <= 50 && uuids[0] != long);
}

#[tokio::test]
async fn bad_app_credentials_are_permanent_and_unreachable_api_is_retryable() {
    let app = axum::Router::new().route(
        "/open-apis/auth/v3/tenant_access_token/internal",
        axum::routing::post(|| async { Json(json!({"code": 10014, "msg": "app secret invalid"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let a = adapter(None, &base);
    let to = inbound(&a, "p2p_text.json");
    match a.send(&to, "x", "k").await {
        Err(SendError::Permanent(m)) => assert!(m.contains("10014") && !m.contains("app-secret"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        a.check_credentials().await,
        Err(SendError::Permanent(_))
    ));

    // Nothing listening: a network error, worth retrying.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let a = adapter(None, &closed);
    assert!(matches!(
        a.send(&to, "x", "k").await,
        Err(SendError::Retryable { .. })
    ));
}
