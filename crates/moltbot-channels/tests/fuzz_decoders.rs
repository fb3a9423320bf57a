//! Property-based fuzzing of every adapter's `handle` (stable Rust: proptest, no cargo-fuzz): arbitrary
//! bytes, and arbitrary JSON shaped like each platform's events, correctly signed so they reach the
//! decoder. `handle` must never panic and must always answer: a challenge, messages, an ignore, or a
//! 400/401 error. Each message that comes out has an event id and a chat id (the pipeline's keys).
//!
//! Cases per property: `PROPTEST_CASES` (default 256 here); CI runs the default.

use moltbot_channels::dingtalk::{DingtalkAdapter, DingtalkSettings};
use moltbot_channels::feishu::{FeishuAdapter, FeishuSettings};
use moltbot_channels::slack::{SlackAdapter, SlackSettings};
use moltbot_channels::telegram::{TelegramAdapter, TelegramSettings};
use moltbot_channels::wecom::{WecomAdapter, WecomSettings};
use moltbot_channels::{Adapter, Decoded, HttpRequest, Platform};
use proptest::prelude::*;
use serde_json::{Value, json};

const NOW: i64 = 1_700_000_000;

fn adapters() -> Vec<Box<dyn Adapter>> {
    let http = reqwest::Client::new();
    vec![
        Box::new(FeishuAdapter::new(
            "f",
            Platform::Feishu,
            FeishuSettings {
                app_id: "cli".into(),
                app_secret: "s".into(),
                verification_token: Some("vt".into()),
                encrypt_key: None,
                bot_id: None,
                api_base: String::new(),
            },
            http.clone(),
        )),
        Box::new(SlackAdapter::new(
            "s",
            SlackSettings {
                bot_token: "xoxb".into(),
                signing_secret: "ss".into(),
                bot_id: None,
                api_base: String::new(),
            },
            http.clone(),
        )),
        Box::new(TelegramAdapter::new(
            "t",
            TelegramSettings {
                bot_token: "1:abc".into(),
                secret_token: Some("st".into()),
                bot_id: Some("molt_bot".into()),
                api_base: String::new(),
            },
            http.clone(),
        )),
        Box::new(DingtalkAdapter::new(
            "d",
            DingtalkSettings {
                app_key: "k".into(),
                app_secret: "ds".into(),
                robot_code: None,
                api_base: String::new(),
            },
            http.clone(),
        )),
        Box::new(WecomAdapter::new(
            "w",
            WecomSettings {
                corp_id: "wx5823bf96d3bd56c7".into(),
                agent_id: "1".into(),
                app_secret: "s".into(),
                token: "QDG6eK".into(),
                encoding_aes_key: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C".into(),
                api_base: String::new(),
            },
            http,
        )),
    ]
}

/// The request each platform would send with `body`, authenticated.
fn authentic(a: &dyn Adapter, body: Vec<u8>) -> HttpRequest {
    let ts = NOW.to_string();
    match a.platform() {
        Platform::Slack => {
            let sig = moltbot_channels::slack::sign("ss", &ts, &body);
            HttpRequest::post(body)
                .with_header("x-slack-request-timestamp", &ts)
                .with_header("x-slack-signature", &sig)
        }
        Platform::Telegram => HttpRequest::post(body).with_header("x-telegram-bot-api-secret-token", "st"),
        Platform::Dingtalk => {
            let ms = (NOW * 1000).to_string();
            let sig = moltbot_channels::dingtalk::sign(&ms, "ds");
            HttpRequest::post(body)
                .with_header("timestamp", &ms)
                .with_header("sign", &sig)
        }
        Platform::Wecom => {
            // The signature covers the <Encrypt> element: sign whatever the fuzzer put between the tags.
            let text = String::from_utf8_lossy(&body).into_owned();
            let enc = text
                .split_once("<Encrypt>")
                .and_then(|(_, rest)| rest.split_once("</Encrypt>"))
                .map(|(e, _)| e.to_owned())
                .unwrap_or_default();
            let sig = moltbot_channels::wecom::msg_signature("QDG6eK", &ts, "n", &enc);
            HttpRequest::post(body)
                .with_query("msg_signature", &sig)
                .with_query("timestamp", &ts)
                .with_query("nonce", "n")
        }
        _ => HttpRequest::post(body),
    }
}

fn check(a: &dyn Adapter, req: &HttpRequest) {
    match a.handle(req, NOW) {
        Ok(Decoded::Messages { messages, ack }) => {
            assert!(ack.status < 300);
            for m in messages {
                assert!(!m.event_id.is_empty(), "{:?}: empty event id", a.platform());
                assert!(!m.chat_id.is_empty(), "{:?}: empty chat id", a.platform());
                assert_eq!(m.platform, a.platform());
            }
        }
        Ok(Decoded::Challenge(r) | Decoded::Ignore { ack: r, .. }) => assert!(r.status < 300),
        Err(_) => {}
    }
}

/// JSON values of limited depth: strings, numbers, booleans, nulls, arrays, objects with keys the
/// platforms use (so decoders get past their first checks).
fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("type"),
        Just("event"),
        Just("message"),
        Just("text"),
        Just("content"),
        Just("header"),
        Just("event_id"),
        Just("token"),
        Just("schema"),
        Just("chat"),
        Just("from"),
        Just("update_id"),
        Just("entities"),
        Just("msgtype"),
        Just("conversationType"),
        Just("msgId"),
        Just("conversationId"),
        Just("sessionWebhook"),
        Just("user"),
        Just("channel"),
        Just("ts"),
        Just("thread_ts"),
        Just("event_type"),
        Just("sender"),
        Just("mentions"),
        Just("chat_type"),
        Just("message_type"),
        Just("offset"),
        Just("length"),
        Just("id"),
        Just("challenge"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just("2.0".to_owned()),
            Just("im.message.receive_v1".to_owned()),
            Just("event_callback".to_owned()),
            Just("app_mention".to_owned()),
            Just("private".to_owned()),
            Just("text".to_owned()),
            Just("{\"text\":\"@_user_1 hi\"}".to_owned()),
            Just("vt".to_owned()),
            ".{0,12}"
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        for a in adapters() {
            check(a.as_ref(), &authentic(a.as_ref(), body.clone()));
            check(a.as_ref(), &HttpRequest::post(body.clone()));
        }
    }

    #[test]
    fn platform_shaped_json_never_panics(v in json_value()) {
        let body = serde_json::to_vec(&v).unwrap();
        for a in adapters() {
            check(a.as_ref(), &authentic(a.as_ref(), body.clone()));
        }
    }

    #[test]
    fn wecom_encrypted_arbitrary_xml_never_panics(
        inner in prop_oneof![
            ".{0,200}",
            proptest::collection::vec(prop_oneof![Just("<xml>"), Just("</xml>"), Just("<MsgType>text</MsgType>"),
                Just("<MsgType><![CDATA[event]]></MsgType>"), Just("<Content><![CDATA["), Just("]]></Content>"),
                Just("<MsgId>1</MsgId>"), Just("<FromUserName>u</FromUserName>"), Just("<AgentID>1</AgentID>"),
                Just("<CreateTime>x</CreateTime>"), Just("&amp;"), Just("<a><b></a>"), Just("你好")], 0..12)
                .prop_map(|parts| parts.concat()),
        ]
    ) {
        let a = adapters().pop().unwrap();
        let enc = moltbot_channels::wecom::encrypt("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", inner.as_bytes(), "wx5823bf96d3bd56c7").unwrap();
        let body = format!("<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><Encrypt>{enc}</Encrypt></xml>");
        check(a.as_ref(), &authentic(a.as_ref(), body.into_bytes()));
    }

    #[test]
    fn mutated_real_events_never_panic(field in 0usize..8, replacement in json_value()) {
        // Well-formed events with one field replaced by anything.
        let events = [
            json!({"schema": "2.0", "header": {"event_id": "e", "event_type": "im.message.receive_v1", "token": "vt"},
                   "event": {"sender": {"sender_type": "user", "sender_id": {"open_id": "ou"}},
                             "message": {"message_id": "m", "chat_id": "c", "chat_type": "group", "message_type": "text",
                                         "content": "{\"text\":\"@_user_1 hi\"}", "mentions": [{"key": "@_user_1", "id": {"open_id": "ou_b"}, "name": "b"}]}}}),
            json!({"type": "event_callback", "event_id": "Ev", "event": {"type": "app_mention", "channel": "C", "user": "U", "text": "<@B> hi", "ts": "1.2"}}),
            json!({"update_id": 1, "message": {"message_id": 2, "date": 0, "chat": {"id": 3, "type": "group"}, "from": {"id": 4, "is_bot": false, "first_name": "A"},
                   "text": "@molt_bot hi 😀", "entities": [{"type": "mention", "offset": 0, "length": 9}]}}),
            json!({"msgtype": "text", "text": {"content": "hi"}, "msgId": "m", "conversationId": "c", "conversationType": "2",
                   "isInAtList": true, "senderStaffId": "s", "sessionWebhook": "http://x", "sessionWebhookExpiredTime": 1}),
        ];
        // (WeCom's bodies are encrypted XML: the byte-level properties cover it.)
        for (a, mut ev) in adapters().into_iter().zip(events) {
            replace_nth(&mut ev, field, &replacement);
            check(a.as_ref(), &authentic(a.as_ref(), serde_json::to_vec(&ev).unwrap()));
        }
    }
}

/// Replace the `n`th value (depth first, modulo the count) in `v`.
fn replace_nth(v: &mut Value, n: usize, with: &Value) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, n: &mut usize, with: &Value) -> bool {
        if *n == 0 {
            *v = with.clone();
            return true;
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter_mut().any(|x| walk(x, n, with)),
            Value::Object(o) => o.values_mut().any(|x| walk(x, n, with)),
            _ => false,
        }
    }
    let mut n = n % count(v);
    walk(v, &mut n, with);
}
