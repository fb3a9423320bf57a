//! DingTalk HTTP mode: signature, decoding and normalization of the robot message callback, and
//! sending through the sessionWebhook or the robot API against a fake DingTalk on 127.0.0.1.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use moltbot_channels::dingtalk::{
    self, DEFAULT_API_BASE, DingtalkAdapter, DingtalkSettings, Parsed, SIGN_WINDOW_MS, parse_robot_message,
};
use moltbot_channels::{
    Adapter, ChannelError, ChatType, Decoded, HttpRequest, InboundMessage, LengthUnit, Platform, SendError,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const SECRET: &str = "gR5u3ZkQmW8xVb2TnLp9YcHs4EaJd7Fq_-KoUiOt6MzXyNrSvBwCgDhIjAlPe0f1";
/// Unix seconds "now" for decode tests (the fixtures' createAt is 1613630252678).
const NOW: i64 = 1_613_630_253;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/dingtalk/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn settings(api_base: &str) -> DingtalkSettings {
    DingtalkSettings {
        app_key: "dingappkey123".into(),
        app_secret: SECRET.into(),
        robot_code: None,
        api_base: api_base.into(),
    }
}

fn adapter() -> DingtalkAdapter {
    DingtalkAdapter::new("main", settings(DEFAULT_API_BASE), reqwest::Client::new())
}

/// A request as DingTalk signs it, `skew_ms` away from [`NOW`].
fn signed(body: Vec<u8>, skew_ms: i64) -> HttpRequest {
    let ts = (NOW * 1000 + skew_ms).to_string();
    HttpRequest::post(body)
        .with_header("content-type", "application/json; charset=utf-8")
        .with_header("timestamp", &ts)
        .with_header("sign", &dingtalk::sign(&ts, SECRET))
}

fn one_message(decoded: Decoded) -> InboundMessage {
    match decoded {
        Decoded::Messages { mut messages, ack } => {
            assert_eq!(ack.status, 200);
            assert_eq!(
                serde_json::from_slice::<Value>(&ack.body).unwrap(),
                json!({"msgtype": "empty"})
            );
            assert_eq!(messages.len(), 1);
            messages.remove(0)
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Signature
// ---------------------------------------------------------------------------------------------

/// DingTalk publishes the construction (timestamp + "\n" + secret, HmacSHA256 keyed with the
/// secret, Base64; https://open.dingtalk.com/document/orgapp/receive-message and the custom
/// robot's "加签" docs with the secret "this is secret") but no output value. These were computed
/// once with Python's standard library:
///   python3 -c 'import hmac,hashlib,base64; ts,s="1577262236757","this is secret";
///     print(base64.b64encode(hmac.new(s.encode(),f"{ts}\n{s}".encode(),hashlib.sha256).digest()).decode())'
/// and the first cross-checked with OpenSSL:
///   printf '1577262236757\nthis is secret' | openssl dgst -sha256 -hmac 'this is secret' -binary | base64
/// (1577262236757 is the timestamp in the doc's header example.)
#[test]
fn sign_matches_independently_computed_vectors() {
    assert_eq!(
        dingtalk::sign("1577262236757", "this is secret"),
        "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM="
    );
    assert_eq!(
        dingtalk::sign("1613630252678", SECRET),
        "dCNg/OUJOx61CxDhG/eYvVBBAy0RUAm/Rds+qpKkaFE="
    );
    assert!(dingtalk::verify_sign(
        "1577262236757",
        "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM=",
        "this is secret"
    ));
    assert!(!dingtalk::verify_sign(
        "1577262236758",
        "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM=",
        "this is secret"
    ));
    assert!(!dingtalk::verify_sign(
        "1577262236757",
        "not base64!",
        "this is secret"
    ));
}

#[test]
fn window_is_one_hour_either_way() {
    let now_ms = NOW * 1000;
    let at = |ts: i64| {
        let ts = ts.to_string();
        dingtalk::check_signature(Some(&ts), Some(&dingtalk::sign(&ts, SECRET)), SECRET, now_ms)
    };
    assert!(at(now_ms - SIGN_WINDOW_MS).is_ok());
    assert!(at(now_ms + SIGN_WINDOW_MS).is_ok());
    assert!(matches!(
        at(now_ms - SIGN_WINDOW_MS - 1),
        Err(ChannelError::Unauthorized(_))
    ));
    assert!(matches!(
        at(now_ms + SIGN_WINDOW_MS + 1),
        Err(ChannelError::Unauthorized(_))
    ));
}

proptest! {
    #[test]
    fn sign_round_trips_and_detects_tampering(
        ts in 0i64..4_000_000_000_000,
        secret in "[A-Za-z0-9_-]{1,64}",
        other in "[A-Za-z0-9_-]{1,64}",
        flip in 0usize..44,
    ) {
        let ts = ts.to_string();
        let sig = dingtalk::sign(&ts, &secret);
        prop_assert!(dingtalk::verify_sign(&ts, &sig, &secret));
        // Another timestamp, another secret, a changed signature: all refused.
        let later = format!("{ts}1");
        prop_assert!(!dingtalk::verify_sign(&later, &sig, &secret));
        if other != secret {
            prop_assert!(!dingtalk::verify_sign(&ts, &sig, &other));
        }
        let mut bytes = sig.clone().into_bytes();
        let i = flip % 43; // the 44th character is '=' padding
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        prop_assert!(!dingtalk::verify_sign(&ts, &tampered, &secret));
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

#[test]
fn single_chat_text_is_normalized() {
    let m = one_message(
        adapter()
            .handle(&signed(fixture("single_text.json"), -800), NOW)
            .unwrap(),
    );
    assert_eq!(m.platform, Platform::Dingtalk);
    assert_eq!(m.account, "main");
    assert_eq!(m.event_id, "msgE4hWc5Hq2u7yX0lWk1AqzQ==");
    assert_eq!(m.message_id, m.event_id);
    assert_eq!(m.chat_id, "cidqJ0X2Bt8AEQ0r6y1Tz0F5w==");
    assert_eq!(m.chat_type, ChatType::Direct);
    assert_eq!(m.sender_id, "user123");
    assert_eq!(m.sender_name.as_deref(), Some("杨xx"));
    assert_eq!(m.text, "帮我总结一下今天的会议");
    assert!(m.mentions_bot, "a single chat is addressed to the robot");
    assert_eq!(m.thread_id, None);
    assert_eq!(m.sent_at, 1_613_630_252);
    assert_eq!(
        m.reply,
        json!({
            "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=xxxxx",
            "sessionWebhookExpiredTime": 1613635652738_i64,
            "conversationType": "1",
            "senderStaffId": "user123",
            "robotCode": "dingxxxxrobot",
        })
    );
}

#[test]
fn group_text_mentioning_the_robot_loses_the_mention() {
    let m = one_message(
        adapter()
            .handle(&signed(fixture("group_text_at_bot.json"), 0), NOW)
            .unwrap(),
    );
    assert_eq!(m.chat_type, ChatType::Group);
    assert_eq!(m.chat_id, "cid5DEAySu/Fk+mtMwii4NLYQ==");
    assert_eq!(m.sender_id, "manager4021");
    assert!(m.mentions_bot);
    assert_eq!(m.text, "今天北京天气怎么样？");
    assert_eq!(m.reply["conversationType"], "2");
}

#[test]
fn group_text_for_someone_else_keeps_its_mention() {
    let m = one_message(
        adapter()
            .handle(&signed(fixture("group_text_not_at_bot.json"), 0), NOW)
            .unwrap(),
    );
    assert_eq!(m.chat_type, ChatType::Group);
    assert!(!m.mentions_bot);
    assert_eq!(m.text, "@Alice 下午的评审改到三点");
    assert_eq!(m.sent_at, 1_613_630_252, "createAt as a string");
}

#[test]
fn mention_found_in_at_users_without_is_in_at_list() {
    let mut v: Value = serde_json::from_slice(&fixture("group_text_at_bot.json")).unwrap();
    v.as_object_mut().unwrap().remove("isInAtList");
    match parse_robot_message("main", &serde_json::to_vec(&v).unwrap()).unwrap() {
        Parsed::Message(m) => assert!(m.mentions_bot),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sender_without_staff_id_uses_sender_id() {
    let mut v: Value = serde_json::from_slice(&fixture("single_text.json")).unwrap();
    v.as_object_mut().unwrap().remove("senderStaffId");
    match parse_robot_message("main", &serde_json::to_vec(&v).unwrap()).unwrap() {
        Parsed::Message(m) => {
            assert_eq!(m.sender_id, "$:LWCP_v1:$Ff09GIxxxxx");
            assert!(m.reply.get("senderStaffId").is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn picture_is_ignored_and_acknowledged() {
    match adapter()
        .handle(&signed(fixture("picture.json"), 0), NOW)
        .unwrap()
    {
        Decoded::Ignore { reason, ack } => {
            assert!(reason.contains("picture"), "{reason}");
            assert_eq!(ack.status, 200);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn robot_own_message_and_empty_text_are_ignored() {
    let mut v: Value = serde_json::from_slice(&fixture("single_text.json")).unwrap();
    v["senderId"] = v["chatbotUserId"].clone();
    assert!(matches!(
        parse_robot_message("main", &serde_json::to_vec(&v).unwrap()).unwrap(),
        Parsed::Ignore(_)
    ));
    let mut v: Value = serde_json::from_slice(&fixture("group_text_at_bot.json")).unwrap();
    v["text"]["content"] = json!("@小助手 ");
    assert!(matches!(
        parse_robot_message("main", &serde_json::to_vec(&v).unwrap()).unwrap(),
        Parsed::Ignore(_)
    ));
}

#[test]
fn bad_signature_is_unauthorized() {
    let ts = (NOW * 1000).to_string();
    let req = HttpRequest::post(fixture("single_text.json"))
        .with_header("timestamp", &ts)
        .with_header("sign", &dingtalk::sign(&ts, "some other secret"));
    assert!(matches!(
        adapter().handle(&req, NOW),
        Err(ChannelError::Unauthorized(_))
    ));

    // Signed correctly for another timestamp than the header says.
    let req = HttpRequest::post(fixture("single_text.json"))
        .with_header("timestamp", &ts)
        .with_header("sign", &dingtalk::sign(&(NOW * 1000 - 1).to_string(), SECRET));
    assert!(matches!(
        adapter().handle(&req, NOW),
        Err(ChannelError::Unauthorized(_))
    ));

    let unsigned = HttpRequest::post(fixture("single_text.json")).with_header("timestamp", &ts);
    assert!(matches!(
        adapter().handle(&unsigned, NOW),
        Err(ChannelError::Unauthorized(_))
    ));
}

#[test]
fn stale_or_future_timestamp_is_unauthorized() {
    let hour = 3_600_000;
    let a = adapter();
    assert!(matches!(
        a.handle(&signed(fixture("single_text.json"), -hour - 1000), NOW),
        Err(ChannelError::Unauthorized(_))
    ));
    assert!(matches!(
        a.handle(&signed(fixture("single_text.json"), hour + 1000), NOW),
        Err(ChannelError::Unauthorized(_))
    ));
    assert!(
        a.handle(&signed(fixture("single_text.json"), -hour + 1000), NOW)
            .is_ok()
    );
}

#[test]
fn empty_secret_refuses_everything() {
    let mut s = settings(DEFAULT_API_BASE);
    s.app_secret = String::new();
    let a = DingtalkAdapter::new("main", s, reqwest::Client::new());
    let ts = (NOW * 1000).to_string();
    let req = HttpRequest::post(fixture("single_text.json"))
        .with_header("timestamp", &ts)
        .with_header("sign", &dingtalk::sign(&ts, ""));
    assert!(matches!(a.handle(&req, NOW), Err(ChannelError::Unauthorized(_))));
}

#[test]
fn malformed_body_is_bad_request_after_the_signature() {
    let a = adapter();
    assert!(matches!(
        a.handle(&signed(b"not json".to_vec(), 0), NOW),
        Err(ChannelError::BadRequest(_))
    ));
    assert!(matches!(
        a.handle(
            &signed(br#"{"msgtype":"text","text":{"content":"hi"}}"#.to_vec(), 0),
            NOW
        ),
        Err(ChannelError::BadRequest(_))
    ));
    // Unsigned garbage is refused as unauthorized, not parsed.
    assert!(matches!(
        a.handle(&HttpRequest::post(b"not json".to_vec()), NOW),
        Err(ChannelError::Unauthorized(_))
    ));
}

#[test]
fn chunks_are_5000_bytes() {
    let limit = adapter().chunk_limit();
    assert_eq!(limit.max, 5000);
    assert_eq!(limit.unit, LengthUnit::Bytes);
}

// ---------------------------------------------------------------------------------------------
// Sending, against a fake DingTalk
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Fake {
    token_fetches: AtomicU32,
    token_requests: Mutex<Vec<Value>>,
    /// Answer the token request with 400 (bad credentials).
    bad_credentials: Mutex<bool>,
    /// Tokens the robot API refuses as invalid.
    rejected_tokens: Mutex<HashSet<String>>,
    /// Answer the robot API with a QPS-limit error.
    qps_limited: Mutex<bool>,
    /// (path, token, body)
    api_calls: Mutex<Vec<(String, String, Value)>>,
    /// (mode, body)
    webhook_calls: Mutex<Vec<(String, Value)>>,
}

async fn fake_webhook(
    State(f): State<Arc<Fake>>,
    Path(mode): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    f.webhook_calls.lock().unwrap().push((mode.clone(), body));
    match mode.as_str() {
        "ok" => Json(json!({"errcode": 0, "errmsg": "ok"})).into_response(),
        "limited" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down").into_response(),
        "too-fast" => Json(json!({"errcode": 130101, "errmsg": "send too fast"})).into_response(),
        "boom" => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        "bad-param" => Json(json!({"errcode": 400105, "errmsg": "不支持的消息类型"})).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn fake_token(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    f.token_requests.lock().unwrap().push(body);
    if *f.bad_credentials.lock().unwrap() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": "invalidClientSecret", "message": "无效的clientSecret", "requestid": "r1"})),
        )
            .into_response();
    }
    let n = f.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({"accessToken": format!("tok-{n}"), "expireIn": 7200})).into_response()
}

async fn fake_robot(
    State(f): State<Arc<Fake>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Json(body): Json<Value>,
) -> Response {
    let token = headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    f.api_calls
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), token.clone(), body));
    if f.rejected_tokens.lock().unwrap().contains(&token) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": "InvalidAuthentication", "message": "不合法的access_token", "requestid": "r2"})),
        )
            .into_response();
    }
    if *f.qps_limited.lock().unwrap() {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"code": "Forbidden.AccessDenied.QpsLimitForApi", "message": "qps limit", "requestid": "r3"})),
        )
            .into_response();
    }
    Json(json!({"processQueryKey": "pqk-1", "invalidStaffIdList": [], "flowControlledStaffIdList": []}))
        .into_response()
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/session/{mode}", post(fake_webhook))
        .route("/v1.0/oauth2/accessToken", post(fake_token))
        .route("/v1.0/robot/oToMessages/batchSend", post(fake_robot))
        .route("/v1.0/robot/groupMessages/send", post(fake_robot))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, base)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The fixture's message with its sessionWebhook pointed at the fake (`mode`) and valid for
/// `valid_for_ms` more (negative: expired).
fn message(fixture_name: &str, base: &str, mode: &str, valid_for_ms: i64) -> InboundMessage {
    let mut v: Value = serde_json::from_slice(&fixture(fixture_name)).unwrap();
    v["sessionWebhook"] = json!(format!("{base}/session/{mode}"));
    v["sessionWebhookExpiredTime"] = json!(now_ms() + valid_for_ms);
    match parse_robot_message("main", &serde_json::to_vec(&v).unwrap()).unwrap() {
        Parsed::Message(m) => *m,
        other => panic!("{other:?}"),
    }
}

const HOUR_MS: i64 = 3_600_000;

#[tokio::test]
async fn reply_goes_to_the_session_webhook() {
    let (fake, base) = start_fake().await;
    let a = DingtalkAdapter::new("main", settings(&base), reqwest::Client::new());
    let to = message("group_text_at_bot.json", &base, "ok", HOUR_MS);
    a.send(&to, "北京今天晴，25°C", "k1").await.unwrap();
    let calls = fake.webhook_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].1,
        json!({"msgtype": "text", "text": {"content": "北京今天晴，25°C"}})
    );
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 0, "no token needed");
    assert!(fake.api_calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn expired_webhook_falls_back_to_the_robot_api_with_a_cached_token() {
    let (fake, base) = start_fake().await;
    let a = DingtalkAdapter::new("main", settings(&base), reqwest::Client::new());
    let to = message("single_text.json", &base, "ok", -1000);
    a.send(&to, "第一段", "k1").await.unwrap();
    a.send(&to, "第二段 \"quoted\"\nline", "k2").await.unwrap();

    assert!(
        fake.webhook_calls.lock().unwrap().is_empty(),
        "expired webhook not used"
    );
    assert_eq!(
        fake.token_fetches.load(Ordering::SeqCst),
        1,
        "token fetched once, then cached"
    );
    assert_eq!(
        fake.token_requests.lock().unwrap()[0],
        json!({"appKey": "dingappkey123", "appSecret": SECRET})
    );
    let calls = fake.api_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let (path, token, body) = &calls[1];
    assert_eq!(path, "/v1.0/robot/oToMessages/batchSend");
    assert_eq!(token, "tok-1");
    assert_eq!(body["robotCode"], "dingxxxxrobot", "the robotCode DingTalk sent");
    assert_eq!(body["userIds"], json!(["user123"]));
    assert_eq!(body["msgKey"], "sampleText");
    let param: Value = serde_json::from_str(body["msgParam"].as_str().unwrap()).unwrap();
    assert_eq!(param, json!({"content": "第二段 \"quoted\"\nline"}));
}

#[tokio::test]
async fn webhook_about_to_expire_is_not_used() {
    let (fake, base) = start_fake().await;
    let a = DingtalkAdapter::new("main", settings(&base), reqwest::Client::new());
    let to = message("single_text.json", &base, "ok", 10_000);
    a.send(&to, "hi", "k").await.unwrap();
    assert!(fake.webhook_calls.lock().unwrap().is_empty());
    assert_eq!(fake.api_calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn group_fallback_sends_to_the_open_conversation() {
    let (fake, base) = start_fake().await;
    let mut s = settings(&base);
    s.robot_code = Some("dingconfiguredrobot".into());
    let a = DingtalkAdapter::new("main", s, reqwest::Client::new());
    let to = message("group_text_at_bot.json", &base, "ok", -HOUR_MS);
    a.send(&to, "hello group", "k").await.unwrap();
    let calls = fake.api_calls.lock().unwrap().clone();
    let (path, _, body) = &calls[0];
    assert_eq!(path, "/v1.0/robot/groupMessages/send");
    assert_eq!(body["openConversationId"], "cid5DEAySu/Fk+mtMwii4NLYQ==");
    assert_eq!(
        body["robotCode"], "dingconfiguredrobot",
        "configured robot_code wins"
    );
    assert_eq!(body["msgKey"], "sampleText");
}

#[tokio::test]
async fn robot_code_defaults_to_the_app_key() {
    let (fake, base) = start_fake().await;
    let a = DingtalkAdapter::new("main", settings(&base), reqwest::Client::new());
    let to = message("group_text_at_bot.json", &base, "ok", -HOUR_MS);
    a.send(&to, "x", "k").await.unwrap();
    assert_eq!(fake.api_calls.lock().unwrap()[0].2["robotCode"], "dingappkey123");
}

#[tokio::test]
async fn a_refused_token_is_fetched_again() {
    let (fake, base) = start_fake().await;
    fake.rejected_tokens.lock().unwrap().insert("tok-1".into());
    let a = DingtalkAdapter::new("main", settings(&base), reqwest::Client::new());
    let to = message("group_text_at_bot.json", &base, "ok", -HOUR_MS);
    a.send(&to, "x", "k").await.unwrap();
    let tokens: Vec<String> = fake
        .api_calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.1.clone())
        .collect();
    assert_eq!(tokens, vec!["tok-1", "tok-2"]);

    // Both tokens refused: retryable, not a loop.
    fake.rejected_tokens
        .lock()
        .unwrap()
        .extend(["tok-2".into(), "tok-3".into(), "tok-4".into()]);
    let err = a.send(&to, "x", "k").await.unwrap_err();
    assert!(matches!(err, SendError::Retryable { .. }), "{err:?}");
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn webhook_errors_are_classified() {
    let (_fake, base) = start_fake().await;
    let a = DingtalkAdapter::new("main", settings(&base), reqwest::Client::new());
    let send = |mode: &'static str| {
        let to = message("single_text.json", &base, mode, HOUR_MS);
        let a = &a;
        async move { a.send(&to, "x", "k").await }
    };
    assert_eq!(
        send("limited").await,
        Err(SendError::Retryable {
            message: "sessionWebhook: HTTP 429".into(),
            retry_after: Some(Duration::from_secs(7)),
        })
    );
    assert!(
        matches!(send("too-fast").await, Err(SendError::Retryable { message, .. }) if message.contains("130101"))
    );
    assert!(matches!(send("boom").await, Err(SendError::Retryable { .. })));
    assert!(matches!(send("bad-param").await, Err(SendError::Permanent(m)) if m.contains("400105")));
    assert!(send("ok").await.is_ok());
}

#[tokio::test]
async fn api_errors_are_classified() {
    let (fake, base) = start_fake().await;
    let a = DingtalkAdapter::new("main", settings(&base), reqwest::Client::new());
    let to = message("group_text_at_bot.json", &base, "ok", -HOUR_MS);

    *fake.qps_limited.lock().unwrap() = true;
    assert!(matches!(
        a.send(&to, "x", "k").await,
        Err(SendError::Retryable { .. })
    ));
    *fake.qps_limited.lock().unwrap() = false;

    let b = DingtalkAdapter::new("other", settings(&base), reqwest::Client::new());
    *fake.bad_credentials.lock().unwrap() = true;
    assert!(matches!(b.send(&to, "x", "k").await, Err(SendError::Permanent(m)) if m.contains("accessToken")));
}

#[tokio::test]
async fn expired_single_chat_without_staff_id_is_permanent() {
    let (fake, base) = start_fake().await;
    let a = DingtalkAdapter::new("main", settings(&base), reqwest::Client::new());
    let mut to = message("single_text.json", &base, "ok", -HOUR_MS);
    to.reply.as_object_mut().unwrap().remove("senderStaffId");
    assert!(matches!(
        a.send(&to, "x", "k").await,
        Err(SendError::Permanent(_))
    ));
    assert!(fake.api_calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unreachable_dingtalk_is_retryable() {
    // A port nobody listens on: bind, note the port, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let a = DingtalkAdapter::new("main", settings(&base), reqwest::Client::new());
    let to = message("single_text.json", &base, "ok", HOUR_MS);
    assert!(matches!(
        a.send(&to, "x", "k").await,
        Err(SendError::Retryable { .. })
    ));
    let to = message("single_text.json", &base, "ok", -HOUR_MS);
    assert!(matches!(
        a.send(&to, "x", "k").await,
        Err(SendError::Retryable { .. })
    ));
}
