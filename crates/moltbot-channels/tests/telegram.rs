//! Telegram: the webhook secret token, decoding and normalization of Bot API updates (fixtures in
//! the shapes of https://core.telegram.org/bots/api#update), and sendMessage / getUpdates /
//! deleteWebhook against a fake Bot API on 127.0.0.1.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use moltbot_channels::telegram::{
    self, DEFAULT_API_BASE, Parsed, SECRET_TOKEN_HEADER, TelegramAdapter, TelegramSettings, parse_update,
};
use moltbot_channels::{
    Adapter, ChannelError, ChatType, Decoded, HttpRequest, InboundMessage, LengthUnit, Platform, SendError,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const TOKEN: &str = "123456789:AAE-test_token-0123456789abcdefghijk";
const SECRET: &str = "s3cr3t_T0ken-for-the-webhook";
const BOT: &str = "moltbot_test_bot";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/telegram/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

fn settings(api_base: &str) -> TelegramSettings {
    TelegramSettings {
        bot_token: TOKEN.into(),
        secret_token: Some(SECRET.into()),
        bot_id: Some(BOT.into()),
        api_base: api_base.into(),
    }
}

fn adapter() -> TelegramAdapter {
    TelegramAdapter::new("main", settings(DEFAULT_API_BASE), reqwest::Client::new())
}

fn webhook(body: Vec<u8>) -> HttpRequest {
    HttpRequest::post(body)
        .with_header("content-type", "application/json")
        .with_header(SECRET_TOKEN_HEADER, SECRET)
}

fn decode(name: &str) -> Decoded {
    adapter().handle(&webhook(fixture(name)), 0).unwrap()
}

fn one_message(decoded: Decoded) -> InboundMessage {
    match decoded {
        Decoded::Messages { mut messages, ack } => {
            assert_eq!(ack.status, 200);
            assert!(ack.body.is_empty());
            assert_eq!(messages.len(), 1);
            messages.remove(0)
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

fn ignored(decoded: Decoded) -> String {
    match decoded {
        Decoded::Ignore { reason, ack } => {
            assert_eq!(ack.status, 200);
            reason
        }
        other => panic!("expected Ignore, got {other:?}"),
    }
}

fn parse(v: &Value, s: &TelegramSettings) -> Parsed {
    parse_update("main", s, &serde_json::to_vec(v).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Secret token
// ---------------------------------------------------------------------------------------------

#[test]
fn secret_token_must_match_exactly() {
    let a = adapter();
    let body = fixture("private_text.json");
    assert!(a.handle(&webhook(body.clone()), 0).is_ok());

    let missing = HttpRequest::post(body.clone());
    assert!(matches!(
        a.handle(&missing, 0),
        Err(ChannelError::Unauthorized(_))
    ));

    for wrong in [
        "",
        "s3cr3t_T0ken-for-the-webhoo",
        "s3cr3t_T0ken-for-the-webhookX",
        "S3CR3T_T0KEN-FOR-THE-WEBHOOK",
    ] {
        let req = HttpRequest::post(body.clone()).with_header(SECRET_TOKEN_HEADER, wrong);
        assert!(
            matches!(a.handle(&req, 0), Err(ChannelError::Unauthorized(_))),
            "{wrong:?} accepted"
        );
    }
}

#[test]
fn no_configured_secret_refuses_every_webhook() {
    for secret in [None, Some(String::new())] {
        let mut s = settings(DEFAULT_API_BASE);
        s.secret_token = secret;
        let a = TelegramAdapter::new("main", s, reqwest::Client::new());
        let req = HttpRequest::post(fixture("private_text.json")).with_header(SECRET_TOKEN_HEADER, "");
        assert!(matches!(a.handle(&req, 0), Err(ChannelError::Unauthorized(_))));
        let req = HttpRequest::post(fixture("private_text.json"));
        assert!(matches!(a.handle(&req, 0), Err(ChannelError::Unauthorized(_))));
    }
}

#[test]
fn secret_is_checked_before_the_body_is_read() {
    let req = HttpRequest::post(b"not json".to_vec()).with_header(SECRET_TOKEN_HEADER, "wrong");
    assert!(matches!(
        adapter().handle(&req, 0),
        Err(ChannelError::Unauthorized(_))
    ));
    assert!(matches!(
        adapter().handle(&webhook(b"not json".to_vec()), 0),
        Err(ChannelError::BadRequest(_))
    ));
    assert!(matches!(
        adapter().handle(&webhook(br#"{"message":{}}"#.to_vec()), 0),
        Err(ChannelError::BadRequest(_))
    ));
    let get = HttpRequest {
        method: http::Method::GET,
        ..webhook(fixture("private_text.json"))
    };
    assert!(matches!(
        adapter().handle(&get, 0),
        Err(ChannelError::BadRequest(_))
    ));
}

proptest! {
    #[test]
    fn secret_token_compare(token in "[A-Za-z0-9_-]{1,256}", other in "[A-Za-z0-9_-]{0,256}") {
        prop_assert!(telegram::check_secret_token(Some(&token), Some(&token)).is_ok());
        if other != token {
            prop_assert!(telegram::check_secret_token(Some(&other), Some(&token)).is_err());
        }
        prop_assert!(telegram::check_secret_token(None, Some(&token)).is_err());
        prop_assert!(telegram::check_secret_token(Some(&token), None).is_err());
        let longer = format!("{token}x");
        prop_assert!(telegram::check_secret_token(Some(&longer), Some(&token)).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

#[test]
fn private_text_is_direct_and_addressed_to_the_bot() {
    let m = one_message(decode("private_text.json"));
    assert_eq!(m.platform, Platform::Telegram);
    assert_eq!(m.account, "main");
    assert_eq!(m.event_id, "10000");
    assert_eq!(m.message_id, "1365");
    assert_eq!(m.chat_id, "1111111");
    assert_eq!(m.chat_type, ChatType::Direct);
    assert_eq!(m.sender_id, "1111111");
    assert_eq!(m.sender_name.as_deref(), Some("alice_l"));
    assert_eq!(m.text, "What's the weather like on Mars?");
    assert!(m.mentions_bot);
    assert_eq!(m.thread_id, None);
    assert_eq!(m.sent_at, 1_441_645_532);
}

#[test]
fn group_mention_is_removed() {
    let m = one_message(decode("group_mention.json"));
    assert_eq!(m.chat_type, ChatType::Group);
    assert_eq!(m.chat_id, "-1001234567890");
    assert_eq!(m.sender_id, "2222222");
    assert_eq!(
        m.sender_name.as_deref(),
        Some("Bob"),
        "first name without a username"
    );
    assert!(m.mentions_bot);
    assert_eq!(m.text, "summarize the thread above please");
}

#[test]
fn mention_after_emoji_uses_utf16_offsets() {
    // "🎉🎉 Congrats team! " is 18 characters but 20 UTF-16 units; the entity says 20.
    let v = fixture_json("group_emoji_mention.json");
    assert_eq!(v["message"]["entities"][0]["offset"], 20);
    let m = one_message(decode("group_emoji_mention.json"));
    assert!(m.mentions_bot);
    assert_eq!(m.text, "🎉🎉 Congrats team! write a haiku about it 🚀");
}

#[test]
fn command_for_the_bot_keeps_the_command() {
    let m = one_message(decode("group_bot_command.json"));
    assert!(m.mentions_bot);
    assert_eq!(m.text, "/summary last 20 messages");
}

#[test]
fn forum_topic_message_carries_its_thread() {
    let m = one_message(decode("forum_topic.json"));
    assert_eq!(m.chat_id, "-1009876543210");
    assert_eq!(m.thread_id.as_deref(), Some("42"));
    assert_eq!(m.text, "what changed in v2?");
    assert!(m.mentions_bot);

    // Without the mention, the topic-creation message (created by the bot) that Telegram puts in
    // reply_to_message is not a reply to the bot.
    let mut v = fixture_json("forum_topic.json");
    v["message"]["text"] = json!("what changed in v2?");
    v["message"].as_object_mut().unwrap().remove("entities");
    match parse(&v, &settings(DEFAULT_API_BASE)) {
        Parsed::Message(m) => {
            assert!(!m.mentions_bot);
            assert_eq!(m.thread_id.as_deref(), Some("42"));
        }
        other => panic!("{other:?}"),
    }

    // message_thread_id outside a topic (a reply thread in a plain group) is not a thread.
    let mut v = fixture_json("group_mention.json");
    v["message"]["message_thread_id"] = json!(2000);
    match parse(&v, &settings(DEFAULT_API_BASE)) {
        Parsed::Message(m) => assert_eq!(m.thread_id, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reply_to_the_bot_counts_as_a_mention() {
    let m = one_message(decode("reply_to_bot.json"));
    assert_eq!(m.chat_type, ChatType::Group);
    assert!(m.mentions_bot);
    assert_eq!(m.text, "and in Celsius?");

    // Without bot_id, the bot is recognized by the numeric id in its token.
    let mut s = settings(DEFAULT_API_BASE);
    s.bot_id = None;
    match parse(&fixture_json("reply_to_bot.json"), &s) {
        Parsed::Message(m) => assert!(m.mentions_bot),
        other => panic!("{other:?}"),
    }

    // A reply to another bot is not a mention.
    let mut v = fixture_json("reply_to_bot.json");
    v["message"]["reply_to_message"]["from"] =
        json!({"id": 999, "is_bot": true, "first_name": "X", "username": "x_bot"});
    match parse(&v, &settings(DEFAULT_API_BASE)) {
        Parsed::Message(m) => assert!(!m.mentions_bot),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mention_of_someone_else_is_kept() {
    let m = one_message(decode("group_no_mention.json"));
    assert!(!m.mentions_bot);
    assert_eq!(m.text, "@alice_l did you push the fix?");
}

#[test]
fn without_bot_id_mentions_are_not_recognized() {
    let mut s = settings(DEFAULT_API_BASE);
    s.bot_id = None;
    match parse(&fixture_json("group_mention.json"), &s) {
        Parsed::Message(m) => {
            assert!(!m.mentions_bot);
            assert_eq!(m.text, "@moltbot_test_bot summarize the thread above please");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn edits_photos_bots_and_other_updates_are_ignored() {
    let reason = ignored(decode("edited_message.json"));
    assert!(reason.contains("edited_message"), "{reason}");
    let reason = ignored(decode("photo.json"));
    assert!(reason.contains("photo"), "{reason}");
    let reason = ignored(decode("bot_sender.json"));
    assert!(reason.contains("bot"), "{reason}");
    let reason = ignored(decode("callback_query.json"));
    assert!(reason.contains("callback_query"), "{reason}");
    let reason = ignored(decode("channel_post.json"));
    assert!(reason.contains("channel_post"), "{reason}");
}

#[test]
fn mention_alone_is_empty_and_ignored() {
    let mut v = fixture_json("group_mention.json");
    v["message"]["text"] = json!("@moltbot_test_bot");
    assert!(matches!(
        parse(&v, &settings(DEFAULT_API_BASE)),
        Parsed::Ignore(_)
    ));
}

#[test]
fn anonymous_admin_speaks_as_the_group() {
    let mut v = fixture_json("group_mention.json");
    v["message"]["from"] =
        json!({"id": 1087968824, "is_bot": true, "first_name": "Group", "username": "GroupAnonymousBot"});
    v["message"]["sender_chat"] = v["message"]["chat"].clone();
    match parse(&v, &settings(DEFAULT_API_BASE)) {
        Parsed::Message(m) => {
            assert_eq!(m.sender_id, "-1001234567890");
            assert_eq!(m.sender_name.as_deref(), Some("Moltbot testers"));
            assert!(m.mentions_bot);
        }
        other => panic!("{other:?}"),
    }
    v["message"]["is_automatic_forward"] = json!(true);
    assert!(matches!(
        parse(&v, &settings(DEFAULT_API_BASE)),
        Parsed::Ignore(_)
    ));
}

#[test]
fn chunks_are_4096_utf16_units() {
    let limit = adapter().chunk_limit();
    assert_eq!(limit.max, 4096);
    assert_eq!(limit.unit, LengthUnit::Utf16);
}

// ---------------------------------------------------------------------------------------------
// Bot API, against a fake server
// ---------------------------------------------------------------------------------------------

/// A scripted answer: status, headers, JSON body.
type Answer = (u16, Vec<(&'static str, String)>, Value);

#[derive(Default)]
struct Fake {
    /// Answers to give, in order; `{"ok":true,"result":true}` when empty.
    answers: Mutex<VecDeque<Answer>>,
    /// (path segment with the token, method, body)
    calls: Mutex<Vec<(String, String, Value)>>,
}

impl Fake {
    fn push(&self, status: u16, headers: Vec<(&'static str, String)>, body: Value) {
        self.answers.lock().unwrap().push_back((status, headers, body));
    }

    fn calls(&self) -> Vec<(String, String, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

async fn fake_method(
    State(f): State<Arc<Fake>>,
    Path((bot, method)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    f.calls.lock().unwrap().push((bot, method, body));
    let answer = f.answers.lock().unwrap().pop_front();
    let (status, headers, body) = answer.unwrap_or((200, Vec::new(), json!({"ok": true, "result": true})));
    let mut resp = (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
    for (name, value) in headers {
        resp.headers_mut().insert(name, value.parse().unwrap());
    }
    resp
}

async fn start_fake() -> (Arc<Fake>, TelegramAdapter) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/{bot}/{method}", post(fake_method))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let adapter = TelegramAdapter::new("main", settings(&base), reqwest::Client::new());
    (fake, adapter)
}

fn message(name: &str) -> InboundMessage {
    one_message(decode(name))
}

#[tokio::test]
async fn send_in_private_chat_is_plain_text() {
    let (fake, a) = start_fake().await;
    fake.push(
        200,
        Vec::new(),
        json!({"ok": true, "result": {"message_id": 1366}}),
    );
    a.send(&message("private_text.json"), "Cold: about -60 °C.", "k1")
        .await
        .unwrap();
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    let (bot, method, body) = &calls[0];
    assert_eq!(bot, &format!("bot{TOKEN}"));
    assert_eq!(method, "sendMessage");
    assert_eq!(body, &json!({"chat_id": 1111111, "text": "Cold: about -60 °C."}));
}

#[tokio::test]
async fn send_in_group_topic_replies_in_the_topic() {
    let (fake, a) = start_fake().await;
    a.send(&message("forum_topic.json"), "Faster startup.", "k1")
        .await
        .unwrap();
    let (_, _, body) = &fake.calls()[0];
    assert_eq!(
        body,
        &json!({
            "chat_id": -1009876543210_i64,
            "text": "Faster startup.",
            "message_thread_id": 42,
            "reply_parameters": {"message_id": 57, "allow_sending_without_reply": true},
        })
    );
}

#[tokio::test]
async fn too_many_requests_uses_retry_after_from_the_body() {
    let (fake, a) = start_fake().await;
    fake.push(
        429,
        Vec::new(),
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3",
               "parameters": {"retry_after": 3}}),
    );
    match a.send(&message("group_mention.json"), "hi", "k").await {
        Err(SendError::Retryable { retry_after, message }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
            assert!(message.contains("429"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Only the header: it is used.
    fake.push(
        429,
        vec![("retry-after", "11".into())],
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests"}),
    );
    match a.send(&message("group_mention.json"), "hi", "k").await {
        Err(SendError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(11)))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_errors_retry_and_client_errors_do_not() {
    let (fake, a) = start_fake().await;
    let m = message("group_mention.json");
    fake.push(
        500,
        Vec::new(),
        json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}),
    );
    assert!(matches!(
        a.send(&m, "hi", "k").await,
        Err(SendError::Retryable {
            retry_after: None,
            ..
        })
    ));
    fake.push(502, Vec::new(), json!("bad gateway"));
    assert!(matches!(
        a.send(&m, "hi", "k").await,
        Err(SendError::Retryable { .. })
    ));
    fake.push(
        400,
        Vec::new(),
        json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
    );
    match a.send(&m, "hi", "k").await {
        Err(SendError::Permanent(msg)) => assert!(msg.contains("chat not found"), "{msg}"),
        other => panic!("{other:?}"),
    }
    fake.push(
        403,
        Vec::new(),
        json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
    );
    assert!(matches!(
        a.send(&m, "hi", "k").await,
        Err(SendError::Permanent(_))
    ));
    fake.push(
        400,
        Vec::new(),
        json!({"ok": false, "error_code": 400,
               "description": "Bad Request: group chat was upgraded to a supergroup chat",
               "parameters": {"migrate_to_chat_id": -1001234567899_i64}}),
    );
    match a.send(&m, "hi", "k").await {
        Err(SendError::Permanent(msg)) => assert!(msg.contains("-1001234567899"), "{msg}"),
        other => panic!("{other:?}"),
    }
    fake.push(
        401,
        Vec::new(),
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
    );
    match a.send(&m, "hi", "k").await {
        Err(SendError::Permanent(msg)) => {
            assert!(msg.contains("bot_token"), "{msg}");
            assert!(!msg.contains(TOKEN), "the token leaked: {msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn network_errors_retry_without_leaking_the_token() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let a = TelegramAdapter::new("main", settings(&base), reqwest::Client::new());
    match a.send(&message("private_text.json"), "hi", "k").await {
        Err(SendError::Retryable { message, .. }) => {
            assert!(!message.contains(TOKEN), "the token leaked: {message}");
            assert!(!message.contains("AAE-test"), "the token leaked: {message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{a:?}").contains("AAE-test"));
}

#[tokio::test]
async fn get_updates_returns_messages_and_the_next_offset() {
    let (fake, a) = start_fake().await;
    fake.push(200, Vec::new(), fixture_json("get_updates.json"));
    let (messages, next) = a.get_updates(Some(20001), 25).await.unwrap();
    // The photo and the edit are skipped, but the offset moves past all four updates.
    assert_eq!(next, Some(20005));
    let ids: Vec<&str> = messages.iter().map(|m| m.event_id.as_str()).collect();
    assert_eq!(ids, ["20001", "20004"]);
    assert_eq!(messages[1].text, "summarize the thread above please");
    let (bot, method, body) = &fake.calls()[0];
    assert_eq!(bot, &format!("bot{TOKEN}"));
    assert_eq!(method, "getUpdates");
    assert_eq!(
        body,
        &json!({"offset": 20001, "timeout": 25, "allowed_updates": ["message"]})
    );

    // Only non-text updates: no messages, the offset still advances.
    fake.push(
        200,
        Vec::new(),
        json!({"ok": true, "result": [
            {"update_id": 20005, "edited_message": fixture_json("edited_message.json")["edited_message"]},
            {"update_id": 20006, "message": fixture_json("photo.json")["message"]},
        ]}),
    );
    let (messages, next) = a.get_updates(Some(20005), 25).await.unwrap();
    assert!(messages.is_empty());
    assert_eq!(next, Some(20007));

    // Nothing new: no offset to store. The first call sends no offset.
    fake.push(200, Vec::new(), json!({"ok": true, "result": []}));
    let (messages, next) = a.get_updates(None, 0).await.unwrap();
    assert!(messages.is_empty());
    assert_eq!(next, None);
    let (_, _, body) = fake.calls().pop().unwrap();
    assert!(body.get("offset").is_none());
}

#[tokio::test]
async fn malformed_update_is_skipped_but_passed() {
    let (fake, a) = start_fake().await;
    fake.push(
        200,
        Vec::new(),
        json!({"ok": true, "result": [
            {"update_id": 30001, "message": {"text": "no chat, no id"}},
            {"update_id": 30002, "message": fixture_json("private_text.json")["message"]},
        ]}),
    );
    let (messages, next) = a.get_updates(Some(30001), 1).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].event_id, "30002");
    assert_eq!(next, Some(30003));
}

#[tokio::test]
async fn get_updates_conflict_with_a_webhook_is_permanent() {
    let (fake, a) = start_fake().await;
    fake.push(
        409,
        Vec::new(),
        json!({"ok": false, "error_code": 409,
               "description": "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"}),
    );
    match a.get_updates(None, 25).await {
        Err(SendError::Permanent(msg)) => {
            assert!(msg.contains("409"), "{msg}");
            assert!(msg.contains("webhook"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    fake.push(
        429,
        Vec::new(),
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 5",
               "parameters": {"retry_after": 5}}),
    );
    assert!(matches!(
        a.get_updates(None, 25).await,
        Err(SendError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_secs(5)
    ));
}

#[tokio::test]
async fn delete_webhook_calls_the_bot_api() {
    let (fake, a) = start_fake().await;
    a.delete_webhook().await.unwrap();
    let (bot, method, body) = &fake.calls()[0];
    assert_eq!(bot, &format!("bot{TOKEN}"));
    assert_eq!(method, "deleteWebhook");
    assert_eq!(body, &json!({"drop_pending_updates": false}));
    fake.push(
        401,
        Vec::new(),
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
    );
    assert!(matches!(a.delete_webhook().await, Err(SendError::Permanent(_))));
}
