//! Slack: request signing (Slack's published example), decoding and normalization of Events API
//! requests (fixtures in the shapes of https://api.slack.com/events/message.im,
//! https://api.slack.com/events/app_mention, …), and chat.postMessage against a fake Slack on
//! 127.0.0.1.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use moltbot_channels::slack::{
    self, DEFAULT_API_BASE, Parsed, SIGNATURE_WINDOW_SECS, SlackAdapter, SlackSettings, parse_event,
};
use moltbot_channels::{
    Adapter, ChannelError, ChatType, Decoded, HttpRequest, InboundMessage, LengthUnit, Platform, SendError,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const SECRET: &str = "e5b0f4c8d2a19e7b3c6f8a0d4b2e9c17";
const BOT_TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";
const BOT: &str = "U0LAN0Z89";
/// "Now" for decode tests.
const NOW: i64 = 1_700_000_000;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/slack/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

fn settings(api_base: &str) -> SlackSettings {
    SlackSettings {
        bot_token: BOT_TOKEN.into(),
        signing_secret: SECRET.into(),
        bot_id: Some(BOT.into()),
        api_base: api_base.into(),
    }
}

fn adapter() -> SlackAdapter {
    SlackAdapter::new("main", settings(DEFAULT_API_BASE), reqwest::Client::new())
}

/// A request as Slack signs it, `skew` seconds away from [`NOW`].
fn signed(body: Vec<u8>, skew: i64) -> HttpRequest {
    let ts = (NOW + skew).to_string();
    let sig = slack::sign(SECRET, &ts, &body);
    HttpRequest::post(body)
        .with_header("content-type", "application/json")
        .with_header("x-slack-request-timestamp", &ts)
        .with_header("x-slack-signature", &sig)
}

fn decode(name: &str) -> Decoded {
    adapter().handle(&signed(fixture(name), 0), NOW).unwrap()
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

// ---------------------------------------------------------------------------------------------
// Signature
// ---------------------------------------------------------------------------------------------

/// Slack's worked example on https://api.slack.com/authentication/verifying-requests-from-slack
/// (a slash-command body; the construction is the same for Events API JSON). Checked
/// independently with Python's hmac:
///   python3 -c 'import hmac,hashlib; print("v0="+hmac.new(b"8f742231b10e8888abcd99yyyzzz85a5",
///     b"v0:1531420618:"+BODY, hashlib.sha256).hexdigest())'
const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const DOC_TIMESTAMP: &str = "1531420618";
const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const DOC_SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

#[test]
fn slack_documented_example_signs_and_verifies() {
    assert_eq!(
        slack::sign(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY.as_bytes()),
        DOC_SIGNATURE
    );
    assert!(slack::verify_signature(
        DOC_SECRET,
        DOC_TIMESTAMP,
        DOC_BODY.as_bytes(),
        DOC_SIGNATURE
    ));
    // Within the window of the documented timestamp, the whole check passes.
    let now = DOC_TIMESTAMP.parse::<i64>().unwrap() + 60;
    assert!(
        slack::check_signature(
            Some(DOC_TIMESTAMP),
            Some(DOC_SIGNATURE),
            DOC_BODY.as_bytes(),
            DOC_SECRET,
            now
        )
        .is_ok()
    );
    // One byte of the body, the timestamp, or the secret changed: refused.
    let body = DOC_BODY.replace("roadrunner", "roadrunnes");
    assert!(!slack::verify_signature(
        DOC_SECRET,
        DOC_TIMESTAMP,
        body.as_bytes(),
        DOC_SIGNATURE
    ));
    assert!(!slack::verify_signature(
        DOC_SECRET,
        "1531420619",
        DOC_BODY.as_bytes(),
        DOC_SIGNATURE
    ));
    assert!(!slack::verify_signature(
        "8f742231b10e8888abcd99yyyzzz85a6",
        DOC_TIMESTAMP,
        DOC_BODY.as_bytes(),
        DOC_SIGNATURE
    ));
    // Without the version prefix, or not hex: refused.
    assert!(!slack::verify_signature(
        DOC_SECRET,
        DOC_TIMESTAMP,
        DOC_BODY.as_bytes(),
        DOC_SIGNATURE.trim_start_matches("v0=")
    ));
    assert!(!slack::verify_signature(
        DOC_SECRET,
        DOC_TIMESTAMP,
        DOC_BODY.as_bytes(),
        "v0=zz"
    ));
}

#[test]
fn documented_example_is_stale_now() {
    // The same request replayed years later.
    assert!(matches!(
        slack::check_signature(
            Some(DOC_TIMESTAMP),
            Some(DOC_SIGNATURE),
            DOC_BODY.as_bytes(),
            DOC_SECRET,
            NOW
        ),
        Err(ChannelError::Unauthorized(_))
    ));
}

#[test]
fn window_is_five_minutes_either_way() {
    let body = fixture("message_im.json");
    let a = adapter();
    assert!(
        a.handle(&signed(body.clone(), -SIGNATURE_WINDOW_SECS), NOW)
            .is_ok()
    );
    assert!(
        a.handle(&signed(body.clone(), SIGNATURE_WINDOW_SECS), NOW)
            .is_ok()
    );
    for skew in [-SIGNATURE_WINDOW_SECS - 1, SIGNATURE_WINDOW_SECS + 1, -86_400] {
        assert!(
            matches!(
                a.handle(&signed(body.clone(), skew), NOW),
                Err(ChannelError::Unauthorized(_))
            ),
            "skew {skew} accepted"
        );
    }
}

#[test]
fn bad_or_missing_signature_is_unauthorized() {
    let a = adapter();
    let body = fixture("message_im.json");
    let ts = NOW.to_string();
    let wrong_secret = HttpRequest::post(body.clone())
        .with_header("x-slack-request-timestamp", &ts)
        .with_header("x-slack-signature", &slack::sign("another secret", &ts, &body));
    assert!(matches!(
        a.handle(&wrong_secret, NOW),
        Err(ChannelError::Unauthorized(_))
    ));

    // Signed for another timestamp than the header says.
    let moved = HttpRequest::post(body.clone())
        .with_header("x-slack-request-timestamp", &ts)
        .with_header(
            "x-slack-signature",
            &slack::sign(SECRET, &(NOW - 1).to_string(), &body),
        );
    assert!(matches!(
        a.handle(&moved, NOW),
        Err(ChannelError::Unauthorized(_))
    ));

    let unsigned = HttpRequest::post(body.clone()).with_header("x-slack-request-timestamp", &ts);
    assert!(matches!(
        a.handle(&unsigned, NOW),
        Err(ChannelError::Unauthorized(_))
    ));
    let no_ts =
        HttpRequest::post(body.clone()).with_header("x-slack-signature", &slack::sign(SECRET, &ts, &body));
    assert!(matches!(
        a.handle(&no_ts, NOW),
        Err(ChannelError::Unauthorized(_))
    ));

    // Signed, then the body changed (an extra space).
    let mut req = signed(body.clone(), 0);
    let mut tampered = body.clone();
    tampered.push(b' ');
    req.body = tampered.into();
    assert!(matches!(a.handle(&req, NOW), Err(ChannelError::Unauthorized(_))));

    // Unsigned garbage is refused as unauthorized, not parsed.
    assert!(matches!(
        a.handle(&HttpRequest::post(b"not json".to_vec()), NOW),
        Err(ChannelError::Unauthorized(_))
    ));
}

#[test]
fn empty_signing_secret_refuses_everything() {
    let mut s = settings(DEFAULT_API_BASE);
    s.signing_secret = String::new();
    let a = SlackAdapter::new("main", s, reqwest::Client::new());
    let body = fixture("message_im.json");
    let ts = NOW.to_string();
    let req = HttpRequest::post(body.clone())
        .with_header("x-slack-request-timestamp", &ts)
        .with_header("x-slack-signature", &slack::sign("", &ts, &body));
    assert!(matches!(a.handle(&req, NOW), Err(ChannelError::Unauthorized(_))));
}

proptest! {
    #[test]
    fn sign_round_trips_and_detects_tampering(
        ts in 0i64..4_000_000_000,
        secret in "[a-f0-9]{32}",
        other in "[a-f0-9]{32}",
        body in proptest::collection::vec(any::<u8>(), 0..512),
        flip in 3usize..67,
        byte in any::<usize>(),
    ) {
        let ts = ts.to_string();
        let sig = slack::sign(&secret, &ts, &body);
        prop_assert_eq!(sig.len(), 67);
        prop_assert!(slack::verify_signature(&secret, &ts, &body, &sig));
        if other != secret {
            prop_assert!(!slack::verify_signature(&other, &ts, &body, &sig));
        }
        let later = format!("{ts}0");
        prop_assert!(!slack::verify_signature(&secret, &later, &body, &sig));
        // One hex digit of the signature changed.
        let mut bytes = sig.clone().into_bytes();
        bytes[flip] = if bytes[flip] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(bytes).unwrap();
        prop_assert!(!slack::verify_signature(&secret, &ts, &body, &tampered));
        // One bit of the body changed.
        if !body.is_empty() {
            let mut changed = body.clone();
            let i = byte % changed.len();
            changed[i] ^= 1;
            prop_assert!(!slack::verify_signature(&secret, &ts, &changed, &sig));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

#[test]
fn url_verification_echoes_the_challenge() {
    match decode("url_verification.json") {
        Decoded::Challenge(reply) => {
            assert_eq!(reply.status, 200);
            assert_eq!(reply.content_type, "application/json");
            assert_eq!(
                serde_json::from_slice::<Value>(&reply.body).unwrap(),
                json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
            );
        }
        other => panic!("{other:?}"),
    }
    // Unsigned, it is refused like any request.
    assert!(matches!(
        adapter().handle(&HttpRequest::post(fixture("url_verification.json")), NOW),
        Err(ChannelError::Unauthorized(_))
    ));
}

#[test]
fn direct_message_is_normalized() {
    let m = one_message(decode("message_im.json"));
    assert_eq!(m.platform, Platform::Slack);
    assert_eq!(m.account, "main");
    assert_eq!(m.event_id, "Ev0PV52K21");
    assert_eq!(m.message_id, "1355517523.000005");
    assert_eq!(m.chat_id, "D024BE91L");
    assert_eq!(m.chat_type, ChatType::Direct);
    assert_eq!(m.sender_id, "U2147483697");
    assert_eq!(
        m.text, "Hello hello can you hear me? Is 2 < 3 && 5 > 4?",
        "entities decoded"
    );
    assert!(m.mentions_bot);
    assert_eq!(m.thread_id, None, "a top-level DM is answered top-level");
    assert_eq!(m.sent_at, 1_355_517_523);

    // In a DM thread, the reply goes to that thread.
    let mut v = fixture_json("message_im.json");
    v["event"]["thread_ts"] = json!("1355517500.000001");
    match parse_event("main", Some(BOT), &serde_json::to_vec(&v).unwrap()).unwrap() {
        Parsed::Message(m) => assert_eq!(m.thread_id.as_deref(), Some("1355517500.000001")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn app_mention_loses_the_mention_and_starts_a_thread() {
    let m = one_message(decode("app_mention.json"));
    assert_eq!(m.event_id, "Ev0LAN670R");
    assert_eq!(m.chat_id, "C0LAN2Q65");
    assert_eq!(m.chat_type, ChatType::Group);
    assert_eq!(m.sender_id, "U061F7AUR");
    assert_eq!(m.text, "What is the hour of the pearl, ?");
    assert!(m.mentions_bot);
    assert_eq!(m.thread_id.as_deref(), Some("1515449522.000016"), "its own ts");
    assert_eq!(m.sent_at, 1_515_449_522);
}

#[test]
fn app_mention_in_a_thread_stays_in_the_thread() {
    let m = one_message(decode("app_mention_thread.json"));
    assert_eq!(m.message_id, "1515449600.000200");
    assert_eq!(m.thread_id.as_deref(), Some("1515449522.000016"));
    assert_eq!(m.text, "and the hour of the river?");
    assert!(m.mentions_bot);
}

#[test]
fn channel_message_mentioning_the_bot_is_left_to_app_mention() {
    let reason = ignored(decode("message_channel_mention.json"));
    assert!(reason.contains("app_mention"), "{reason}");
    // Also when the bot id comes from the envelope's authorizations instead of the settings.
    let body = fixture("message_channel_mention.json");
    assert!(matches!(
        parse_event("main", None, &body).unwrap(),
        Parsed::Ignore(_)
    ));
    // The same mention in a DM is answered (there is no app_mention for DMs).
    let mut v = fixture_json("message_channel_mention.json");
    v["event"]["channel"] = json!("D024BE91L");
    v["event"]["channel_type"] = json!("im");
    match parse_event("main", Some(BOT), &serde_json::to_vec(&v).unwrap()).unwrap() {
        Parsed::Message(m) => {
            assert_eq!(m.chat_type, ChatType::Direct);
            assert_eq!(m.text, "What is the hour of the pearl, ?");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn channel_message_without_mention_is_a_group_message() {
    let m = one_message(decode("message_channel.json"));
    assert_eq!(m.chat_type, ChatType::Group);
    assert!(!m.mentions_bot);
    assert_eq!(m.text, "Anyone know when the river rises?");
    assert_eq!(m.thread_id.as_deref(), Some("1515449700.000300"));
    for channel_type in ["group", "mpim"] {
        let mut v = fixture_json("message_channel.json");
        v["event"]["channel_type"] = json!(channel_type);
        match parse_event("main", Some(BOT), &serde_json::to_vec(&v).unwrap()).unwrap() {
            Parsed::Message(m) => assert_eq!(m.chat_type, ChatType::Group),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn bot_messages_edits_and_own_messages_are_ignored() {
    let reason = ignored(decode("bot_message.json"));
    assert!(reason.contains("bot_message"), "{reason}");
    let reason = ignored(decode("message_changed.json"));
    assert!(reason.contains("message_changed"), "{reason}");

    // The bot's own message: no subtype, but the bot user (and a bot_id) on it.
    let mut v = fixture_json("message_im.json");
    v["event"]["user"] = json!(BOT);
    assert!(matches!(
        parse_event("main", Some(BOT), &serde_json::to_vec(&v).unwrap()).unwrap(),
        Parsed::Ignore(_)
    ));
    assert!(matches!(
        parse_event("main", None, &serde_json::to_vec(&v).unwrap()).unwrap(),
        Parsed::Ignore(_)
    ));
    let mut v = fixture_json("message_im.json");
    v["event"]["bot_id"] = json!("B0123456");
    assert!(matches!(
        parse_event("main", Some(BOT), &serde_json::to_vec(&v).unwrap()).unwrap(),
        Parsed::Ignore(_)
    ));
    // Another app mentioning the bot.
    let mut v = fixture_json("app_mention.json");
    v["event"]["bot_id"] = json!("B0123456");
    assert!(matches!(
        parse_event("main", Some(BOT), &serde_json::to_vec(&v).unwrap()).unwrap(),
        Parsed::Ignore(_)
    ));
}

#[test]
fn other_events_and_empty_text_are_ignored() {
    let mut v = fixture_json("message_im.json");
    v["event"] = json!({"type": "reaction_added", "user": "U2147483697", "reaction": "thumbsup",
        "item": {"type": "message", "channel": "D024BE91L", "ts": "1355517523.000005"},
        "event_ts": "1360782804.083113"});
    assert!(matches!(
        parse_event("main", Some(BOT), &serde_json::to_vec(&v).unwrap()).unwrap(),
        Parsed::Ignore(_)
    ));
    let mut v = fixture_json("app_mention.json");
    v["event"]["text"] = json!("<@U0LAN0Z89>  ");
    assert!(matches!(
        parse_event("main", Some(BOT), &serde_json::to_vec(&v).unwrap()).unwrap(),
        Parsed::Ignore(_)
    ));
    let rate = json!({"token": "x", "team_id": "T061EG9R6", "minute_rate_limited": 1518467820,
        "api_app_id": "A0MDYCDME", "type": "app_rate_limited"});
    assert!(matches!(
        parse_event("main", Some(BOT), &serde_json::to_vec(&rate).unwrap()).unwrap(),
        Parsed::Ignore(_)
    ));
}

#[test]
fn malformed_events_are_bad_requests() {
    let a = adapter();
    assert!(matches!(
        a.handle(&signed(b"not json".to_vec(), 0), NOW),
        Err(ChannelError::BadRequest(_))
    ));
    let mut v = fixture_json("message_im.json");
    v.as_object_mut().unwrap().remove("event_id");
    assert!(matches!(
        a.handle(&signed(serde_json::to_vec(&v).unwrap(), 0), NOW),
        Err(ChannelError::BadRequest(_))
    ));
    let mut v = fixture_json("message_im.json");
    v["event"].as_object_mut().unwrap().remove("ts");
    assert!(matches!(
        a.handle(&signed(serde_json::to_vec(&v).unwrap(), 0), NOW),
        Err(ChannelError::BadRequest(_))
    ));
}

#[test]
fn retries_carry_the_same_event_id() {
    // Slack's retry of an unacknowledged event: same body, retry headers. The event id (the
    // pipeline's dedupe key) is unchanged.
    let first = one_message(decode("app_mention.json"));
    let retry = signed(fixture("app_mention.json"), 2)
        .with_header("x-slack-retry-num", "1")
        .with_header("x-slack-retry-reason", "http_timeout");
    let again = one_message(adapter().handle(&retry, NOW).unwrap());
    assert_eq!(first.event_id, again.event_id);
    assert_eq!(first, again);
}

#[test]
fn chunks_are_4000_chars() {
    let limit = adapter().chunk_limit();
    assert_eq!(limit.max, 4000);
    assert_eq!(limit.unit, LengthUnit::Chars);
}

// ---------------------------------------------------------------------------------------------
// chat.postMessage, against a fake Slack
// ---------------------------------------------------------------------------------------------

type Answer = (u16, Vec<(&'static str, String)>, Value);

#[derive(Default)]
struct Fake {
    answers: Mutex<VecDeque<Answer>>,
    /// (Authorization header, body)
    calls: Mutex<Vec<(String, Value)>>,
}

impl Fake {
    fn push(&self, status: u16, headers: Vec<(&'static str, String)>, body: Value) {
        self.answers.lock().unwrap().push_back((status, headers, body));
    }
}

async fn fake_post_message(
    State(f): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    f.calls.lock().unwrap().push((auth, body));
    let answer = f.answers.lock().unwrap().pop_front();
    let (status, headers, body) = answer.unwrap_or((
        200,
        Vec::new(),
        json!({"ok": true, "channel": "C0LAN2Q65", "ts": "1515449700.000400"}),
    ));
    let mut resp = (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
    for (name, value) in headers {
        resp.headers_mut().insert(name, value.parse().unwrap());
    }
    resp
}

async fn start_fake() -> (Arc<Fake>, SlackAdapter) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/api/chat.postMessage", post(fake_post_message))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (
        fake,
        SlackAdapter::new("main", settings(&base), reqwest::Client::new()),
    )
}

fn message(name: &str) -> InboundMessage {
    one_message(decode(name))
}

#[tokio::test]
async fn reply_goes_into_the_thread_with_the_bot_token() {
    let (fake, a) = start_fake().await;
    a.send(&message("app_mention_thread.json"), "Dusk <!channel> & dawn", "k")
        .await
        .unwrap();
    let (auth, body) = fake.calls.lock().unwrap()[0].clone();
    assert_eq!(auth, format!("Bearer {BOT_TOKEN}"));
    assert_eq!(
        body,
        json!({
            "channel": "C0LAN2Q65",
            "text": "Dusk &lt;!channel&gt; &amp; dawn",
            "thread_ts": "1515449522.000016",
        })
    );
}

#[tokio::test]
async fn top_level_dm_reply_is_not_threaded_and_channel_reply_is() {
    let (fake, a) = start_fake().await;
    a.send(&message("message_im.json"), "Loud and clear.", "k")
        .await
        .unwrap();
    a.send(&message("app_mention.json"), "Noon.", "k").await.unwrap();
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(
        calls[0].1,
        json!({"channel": "D024BE91L", "text": "Loud and clear."})
    );
    assert_eq!(
        calls[1].1,
        json!({"channel": "C0LAN2Q65", "text": "Noon.", "thread_ts": "1515449522.000016"})
    );
}

#[tokio::test]
async fn http_429_retries_after_the_header() {
    let (fake, a) = start_fake().await;
    fake.push(
        429,
        vec![("retry-after", "30".into())],
        json!({"ok": false, "error": "ratelimited"}),
    );
    match a.send(&message("message_im.json"), "hi", "k").await {
        Err(SendError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn ok_false_errors_are_classified() {
    let (fake, a) = start_fake().await;
    let m = message("message_im.json");
    fake.push(200, Vec::new(), json!({"ok": false, "error": "ratelimited"}));
    assert!(matches!(
        a.send(&m, "hi", "k").await,
        Err(SendError::Retryable {
            retry_after: None,
            ..
        })
    ));
    fake.push(200, Vec::new(), json!({"ok": false, "error": "internal_error"}));
    assert!(matches!(
        a.send(&m, "hi", "k").await,
        Err(SendError::Retryable { .. })
    ));
    for error in [
        "invalid_auth",
        "channel_not_found",
        "not_in_channel",
        "msg_too_long",
    ] {
        fake.push(200, Vec::new(), json!({"ok": false, "error": error}));
        match a.send(&m, "hi", "k").await {
            Err(SendError::Permanent(msg)) => {
                assert!(msg.contains(error), "{msg}");
                assert!(!msg.contains(BOT_TOKEN));
            }
            other => panic!("{error}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn server_errors_retry() {
    let (fake, a) = start_fake().await;
    let m = message("message_im.json");
    fake.push(503, vec![("retry-after", "4".into())], json!("unavailable"));
    match a.send(&m, "hi", "k").await {
        Err(SendError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(4)))
        }
        other => panic!("{other:?}"),
    }
    fake.push(500, Vec::new(), json!("oops"));
    assert!(matches!(
        a.send(&m, "hi", "k").await,
        Err(SendError::Retryable { .. })
    ));
    fake.push(404, Vec::new(), json!("no such method"));
    assert!(matches!(
        a.send(&m, "hi", "k").await,
        Err(SendError::Permanent(_))
    ));
    assert!(!format!("{a:?}").contains("xoxb"));
}
