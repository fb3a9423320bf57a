//! WeCom self-built app callbacks: WeCom's published crypto example, decoding and normalization of
//! encrypted callbacks, and sending app messages against a fake WeCom API on 127.0.0.1.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use moltbot_channels::wecom::{
    self, CHUNK_BYTES, DEFAULT_API_BASE, Parsed, TIMESTAMP_WINDOW_SECS, WecomAdapter, WecomSettings,
    parse_message,
};
use moltbot_channels::{
    Adapter, ChannelError, ChatType, Decoded, HttpReply, HttpRequest, InboundMessage, LengthUnit, Platform,
    SendError,
};
use proptest::prelude::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// WeCom's published example
// ---------------------------------------------------------------------------------------------
//
// From WeCom's "加解密方案说明" (https://developer.work.weixin.qq.com/document/path/90968) and the
// samples of its official crypto libraries (WXBizMsgCrypt, weworkapi_* Sample files): a company
// with CorpID wx5823bf96d3bd56c7, callback Token QDG6eK and EncodingAESKey jWmYm7qr…B2C.
// 1. URL check: GET ?msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659589
//    &nonce=263014780&echostr=P9nAzCzy…qQ==
// 2. Message: POST ?msg_signature=477715d11cdb4164915debcba66cb864d751f3e6&timestamp=1409659813
//    &nonce=1372623149 with the envelope in fixtures/wecom/official_post.xml (AgentID 218).
// The plaintexts were cross-checked outside Rust with Python's hashlib and `openssl enc -d
// -aes-256-cbc -nopad`: echostr → "1616140317555161061" (padding 7), the message → the text
// "hello" from "mycreate" (padding 30, which only 32-byte-block PKCS#7 allows).

const OFFICIAL_CORP: &str = "wx5823bf96d3bd56c7";
const OFFICIAL_TOKEN: &str = "QDG6eK";
const OFFICIAL_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const OFFICIAL_ECHOSTR: &str =
    "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
const OFFICIAL_GET_SIGNATURE: &str = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3";
const OFFICIAL_POST_SIGNATURE: &str = "477715d11cdb4164915debcba66cb864d751f3e6";
const OFFICIAL_POST_PLAIN: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n\
<FromUserName><![CDATA[mycreate]]></FromUserName>\n\
<CreateTime>1409659813</CreateTime>\n\
<MsgType><![CDATA[text]]></MsgType>\n\
<Content><![CDATA[hello]]></Content>\n\
<MsgId>4561255354251345929</MsgId>\n\
<AgentID>218</AgentID>\n\
</xml>";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/wecom/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `Encrypt` value of the official POST example.
fn official_encrypt() -> String {
    let xml = fixture("official_post.xml");
    let start = xml.find("<Encrypt><![CDATA[").unwrap() + "<Encrypt><![CDATA[".len();
    let end = xml[start..].find("]]>").unwrap() + start;
    xml[start..end].to_owned()
}

fn official_adapter(agent_id: &str) -> WecomAdapter {
    WecomAdapter::new(
        "main",
        WecomSettings {
            corp_id: OFFICIAL_CORP.into(),
            agent_id: agent_id.into(),
            app_secret: "unused".into(),
            token: OFFICIAL_TOKEN.into(),
            encoding_aes_key: OFFICIAL_KEY.into(),
            api_base: DEFAULT_API_BASE.into(),
        },
        reqwest::Client::new(),
    )
}

#[test]
fn official_url_check_signature_and_plaintext() {
    assert_eq!(
        wecom::msg_signature(OFFICIAL_TOKEN, "1409659589", "263014780", OFFICIAL_ECHOSTR),
        OFFICIAL_GET_SIGNATURE
    );
    let (plain, receiveid) = wecom::decrypt(OFFICIAL_KEY, OFFICIAL_ECHOSTR).unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), "1616140317555161061");
    assert_eq!(receiveid, OFFICIAL_CORP);
}

#[test]
fn official_message_signature_and_plaintext() {
    let encrypt = official_encrypt();
    assert_eq!(
        wecom::msg_signature(OFFICIAL_TOKEN, "1409659813", "1372623149", &encrypt),
        OFFICIAL_POST_SIGNATURE
    );
    let (plain, receiveid) = wecom::decrypt(OFFICIAL_KEY, &encrypt).unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), OFFICIAL_POST_PLAIN);
    assert_eq!(receiveid, OFFICIAL_CORP);
}

/// Encryption reproduces WeCom's ciphertexts byte for byte given the same 16 random bytes (the
/// example's were ASCII: recovered with the same openssl command as above).
#[test]
fn encryption_reproduces_the_official_ciphertexts() {
    assert_eq!(
        wecom::encrypt_with_random(
            OFFICIAL_KEY,
            *b"c41b64491c2468d0",
            b"1616140317555161061",
            OFFICIAL_CORP
        )
        .unwrap(),
        OFFICIAL_ECHOSTR
    );
    assert_eq!(
        wecom::encrypt_with_random(
            OFFICIAL_KEY,
            *b"0960688932c47ef1",
            OFFICIAL_POST_PLAIN.as_bytes(),
            OFFICIAL_CORP
        )
        .unwrap(),
        official_encrypt()
    );
}

#[test]
fn official_url_check_through_the_adapter() {
    let req = HttpRequest::default()
        .with_query("msg_signature", OFFICIAL_GET_SIGNATURE)
        .with_query("timestamp", "1409659589")
        .with_query("nonce", "263014780")
        .with_query("echostr", OFFICIAL_ECHOSTR);
    assert_eq!(
        official_adapter("218").handle(&req, 1_409_659_589).unwrap(),
        Decoded::Challenge(HttpReply::text("1616140317555161061"))
    );
    // A `+` turned into a space by a form-style query decoder still verifies.
    let spaced = HttpRequest::default()
        .with_query("msg_signature", OFFICIAL_GET_SIGNATURE)
        .with_query("timestamp", "1409659589")
        .with_query("nonce", "263014780")
        .with_query("echostr", &OFFICIAL_ECHOSTR.replace('+', " "));
    assert!(matches!(
        official_adapter("218").handle(&spaced, 1_409_659_589),
        Ok(Decoded::Challenge(_))
    ));
}

#[test]
fn official_message_through_the_adapter() {
    let req = HttpRequest::post(fixture("official_post.xml"))
        .with_query("msg_signature", OFFICIAL_POST_SIGNATURE)
        .with_query("timestamp", "1409659813")
        .with_query("nonce", "1372623149");
    let m = one_message(official_adapter("218").handle(&req, 1_409_659_820).unwrap());
    assert_eq!(m.platform, Platform::Wecom);
    assert_eq!(m.event_id, "4561255354251345929");
    assert_eq!(m.sender_id, "mycreate");
    assert_eq!(m.chat_id, "mycreate");
    assert_eq!(m.text, "hello");
    assert_eq!(m.sent_at, 1_409_659_813);
    assert_eq!(m.reply, json!({"agent_id": "218"}));

    // The same request, for an adapter configured as another app of the company, is not answered.
    match official_adapter("1000002").handle(&req, 1_409_659_820).unwrap() {
        Decoded::Ignore { reason, ack } => {
            assert!(reason.contains("218"), "{reason}");
            assert_eq!(ack, HttpReply::empty());
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

fn encoding_aes_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+/]{43}"
}

proptest! {
    #[test]
    fn encrypt_then_decrypt_gives_the_message_back(
        key in encoding_aes_key(),
        msg in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            // Message lengths that are multiples of 32, and ones that with the 20-byte header
            // fill whole blocks (then, for an empty receiveid, a full 32-byte block of padding).
            (0usize..8).prop_flat_map(|k| proptest::collection::vec(any::<u8>(), k * 32)),
            (0usize..8).prop_flat_map(|k| proptest::collection::vec(any::<u8>(), k * 32 + 12)),
        ],
        receiveid in "[a-z0-9]{0,24}",
    ) {
        let ct = wecom::encrypt(&key, &msg, &receiveid).unwrap();
        let raw = base64_len(&ct);
        prop_assert_eq!(raw % 32, 0, "padded to 32-byte blocks");
        prop_assert!(raw > 20 + msg.len() + receiveid.len());
        prop_assert!(raw <= 20 + msg.len() + receiveid.len() + 32);
        let (plain, id) = wecom::decrypt(&key, &ct).unwrap();
        prop_assert_eq!(plain, msg);
        prop_assert_eq!(id, receiveid);
    }

    #[test]
    fn signature_covers_every_part(
        token in "[A-Za-z0-9]{1,32}",
        ts in 0u64..4_000_000_000,
        nonce in "[0-9]{1,12}",
        encrypt in "[A-Za-z0-9+/=]{1,64}",
    ) {
        let ts = ts.to_string();
        let sig = wecom::msg_signature(&token, &ts, &nonce, &encrypt);
        prop_assert_eq!(sig.len(), 40);
        prop_assert!(wecom::verify_signature(&token, &ts, &nonce, &encrypt, &sig));
        prop_assert!(wecom::verify_signature(&token, &ts, &nonce, &encrypt, &sig.to_uppercase()));
        prop_assert!(!wecom::verify_signature(&(token.clone() + "x"), &ts, &nonce, &encrypt, &sig));
        prop_assert!(!wecom::verify_signature(&token, &(ts.clone() + "1"), &nonce, &encrypt, &sig));
        prop_assert!(!wecom::verify_signature(&token, &ts, &(nonce.clone() + "1"), &encrypt, &sig));
        prop_assert!(!wecom::verify_signature(&token, &ts, &nonce, &(encrypt.clone() + "A"), &sig));
        // Order-independent by construction: the same four strings in any roles sign alike.
        prop_assert_eq!(wecom::msg_signature(&encrypt, &nonce, &ts, &token), sig);
    }
}

fn base64_len(b64: &str) -> usize {
    let pad = b64.bytes().rev().take_while(|&b| b == b'=').count();
    b64.len() / 4 * 3 - pad
}

// ---------------------------------------------------------------------------------------------
// Decoding our own fixtures
// ---------------------------------------------------------------------------------------------

const CORP: &str = "ww1a2b3c4d5e6f7a8b";
const AGENT: &str = "1000002";
const SECRET: &str = "Xq3vK9sT1mWcE5nB7yHf2LpRzD8aJ4uG6oNiQ0kVtYs";
const TOKEN: &str = "hT7kPz2Qw9";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// Unix seconds "now" for decode tests (the fixtures' CreateTime is 1717000000…).
const NOW: i64 = 1_717_000_003;

fn settings(api_base: &str) -> WecomSettings {
    WecomSettings {
        corp_id: CORP.into(),
        agent_id: AGENT.into(),
        app_secret: SECRET.into(),
        token: TOKEN.into(),
        encoding_aes_key: KEY.into(),
        api_base: api_base.into(),
    }
}

fn adapter() -> WecomAdapter {
    WecomAdapter::new("main", settings(DEFAULT_API_BASE), reqwest::Client::new())
}

fn envelope(encrypt: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><AgentID><![CDATA[{AGENT}]]></AgentID>\
         <Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
}

/// A POST as WeCom sends it: `plain` encrypted for `receiveid`, signed with `token`, sent at `ts`.
fn callback(plain: &str, receiveid: &str, token: &str, ts: i64) -> HttpRequest {
    let encrypt = wecom::encrypt(KEY, plain.as_bytes(), receiveid).unwrap();
    let ts = ts.to_string();
    HttpRequest::post(envelope(&encrypt))
        .with_header("content-type", "text/xml")
        .with_query(
            "msg_signature",
            &wecom::msg_signature(token, &ts, "1372623149", &encrypt),
        )
        .with_query("timestamp", &ts)
        .with_query("nonce", "1372623149")
}

fn signed(plain: &str) -> HttpRequest {
    callback(plain, CORP, TOKEN, NOW)
}

fn one_message(decoded: Decoded) -> InboundMessage {
    match decoded {
        Decoded::Messages { mut messages, ack } => {
            assert_eq!(ack, HttpReply::empty(), "200 with an empty body");
            assert_eq!(ack.status, 200);
            assert_eq!(messages.len(), 1);
            messages.remove(0)
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

fn ignored(decoded: Decoded) -> String {
    match decoded {
        Decoded::Ignore { reason, ack } => {
            assert_eq!(ack, HttpReply::empty());
            reason
        }
        other => panic!("expected Ignore, got {other:?}"),
    }
}

#[test]
fn text_message_is_normalized() {
    let m = one_message(adapter().handle(&signed(&fixture("text.xml")), NOW).unwrap());
    assert_eq!(m.platform, Platform::Wecom);
    assert_eq!(m.account, "main");
    assert_eq!(m.event_id, "7381234567890123456");
    assert_eq!(m.message_id, "7381234567890123456");
    assert_eq!(m.chat_id, "ZhangSan");
    assert_eq!(m.chat_type, ChatType::Direct);
    assert_eq!(m.sender_id, "ZhangSan");
    assert_eq!(m.sender_name, None);
    assert_eq!(m.text, "帮我写一封请假邮件，明天 <下午> 有事");
    assert!(m.mentions_bot, "an app message is addressed to the app");
    assert_eq!(m.thread_id, None);
    assert_eq!(m.sent_at, 1_717_000_000);
    assert_eq!(m.reply, json!({"agent_id": "1000002"}));
}

#[test]
fn text_without_msg_id_uses_sender_and_time() {
    let xml = fixture("text.xml").replace("<MsgId>7381234567890123456</MsgId>", "");
    let m = one_message(adapter().handle(&signed(&xml), NOW).unwrap());
    assert_eq!(m.event_id, "ZhangSan:1717000000");
    // Stable across WeCom's retries of the same message.
    let again = one_message(adapter().handle(&signed(&xml), NOW + 10).unwrap());
    assert_eq!(again.event_id, m.event_id);
}

#[test]
fn non_text_messages_and_events_are_ignored() {
    let a = adapter();
    let reason = ignored(a.handle(&signed(&fixture("image.xml")), NOW).unwrap());
    assert!(reason.contains("image"), "{reason}");
    let reason = ignored(a.handle(&signed(&fixture("voice.xml")), NOW).unwrap());
    assert!(reason.contains("voice"), "{reason}");
    let reason = ignored(a.handle(&signed(&fixture("event_enter_agent.xml")), NOW).unwrap());
    assert!(reason.contains("enter_agent"), "{reason}");
    let reason = ignored(a.handle(&signed(&fixture("event_menu_pic.xml")), NOW).unwrap());
    assert!(reason.contains("pic_sysphoto"), "{reason}");
    let blank = fixture("text.xml").replace("帮我写一封请假邮件，明天 <下午> 有事", " \n ");
    assert_eq!(ignored(a.handle(&signed(&blank), NOW).unwrap()), "empty text");
}

#[test]
fn bad_signature_is_unauthorized() {
    let a = adapter();
    let wrong_token = callback(&fixture("text.xml"), CORP, "another-token", NOW);
    assert!(matches!(
        a.handle(&wrong_token, NOW),
        Err(ChannelError::Unauthorized(_))
    ));

    // A valid signature over a different Encrypt than the body's.
    let good = signed(&fixture("text.xml"));
    let other = signed(&fixture("image.xml"));
    let mut swapped = good.clone();
    swapped.body = other.body.clone();
    assert!(matches!(
        a.handle(&swapped, NOW),
        Err(ChannelError::Unauthorized(_))
    ));

    // Missing parameters.
    let mut unsigned = good.clone();
    unsigned.query.retain(|(k, _)| k != "msg_signature");
    assert!(matches!(
        a.handle(&unsigned, NOW),
        Err(ChannelError::Unauthorized(_))
    ));
    let mut no_nonce = good.clone();
    no_nonce.query.retain(|(k, _)| k != "nonce");
    assert!(matches!(
        a.handle(&no_nonce, NOW),
        Err(ChannelError::Unauthorized(_))
    ));

    // The URL check with a tampered echostr.
    let echostr = wecom::encrypt(KEY, b"8391212121", CORP).unwrap();
    let sig = wecom::msg_signature(TOKEN, &NOW.to_string(), "42", &echostr);
    let check = |echo: &str| {
        HttpRequest::default()
            .with_query("msg_signature", &sig)
            .with_query("timestamp", &NOW.to_string())
            .with_query("nonce", "42")
            .with_query("echostr", echo)
    };
    assert_eq!(
        a.handle(&check(&echostr), NOW).unwrap(),
        Decoded::Challenge(HttpReply::text("8391212121"))
    );
    let tampered = format!("A{}", &echostr[1..]);
    assert!(matches!(
        a.handle(&check(&tampered), NOW),
        Err(ChannelError::Unauthorized(_))
    ));
}

#[test]
fn payload_for_another_corp_is_unauthorized() {
    let req = callback(&fixture("text.xml"), "wwsomeothercorp0000", TOKEN, NOW);
    assert!(
        matches!(adapter().handle(&req, NOW), Err(ChannelError::Unauthorized(m)) if m.contains("CorpID"))
    );
    let req = callback(&fixture("text.xml"), "", TOKEN, NOW);
    assert!(matches!(
        adapter().handle(&req, NOW),
        Err(ChannelError::Unauthorized(_))
    ));
}

#[test]
fn timestamp_window() {
    let a = adapter();
    let at = |ts: i64| a.handle(&callback(&fixture("text.xml"), CORP, TOKEN, ts), NOW);
    assert!(at(NOW - TIMESTAMP_WINDOW_SECS).is_ok());
    assert!(at(NOW + TIMESTAMP_WINDOW_SECS).is_ok());
    assert!(matches!(
        at(NOW - TIMESTAMP_WINDOW_SECS - 1),
        Err(ChannelError::Unauthorized(_))
    ));
    assert!(matches!(
        at(NOW + TIMESTAMP_WINDOW_SECS + 1),
        Err(ChannelError::Unauthorized(_))
    ));
    let mut not_a_number = signed(&fixture("text.xml"));
    for (k, v) in &mut not_a_number.query {
        if k == "timestamp" {
            *v = "yesterday".into();
        }
    }
    assert!(matches!(
        a.handle(&not_a_number, NOW),
        Err(ChannelError::Unauthorized(_))
    ));
}

/// A request signed correctly over `encrypt` (the signature does not care what it holds).
fn signed_envelope(body: String, encrypt: &str) -> HttpRequest {
    let ts = NOW.to_string();
    HttpRequest::post(body)
        .with_query("msg_signature", &wecom::msg_signature(TOKEN, &ts, "7", encrypt))
        .with_query("timestamp", &ts)
        .with_query("nonce", "7")
}

#[test]
fn garbage_is_bad_request() {
    let a = adapter();
    let bad = |req: HttpRequest| matches!(a.handle(&req, NOW), Err(ChannelError::BadRequest(_)));

    assert!(bad(signed_envelope("not xml at all <".into(), "x")));
    assert!(bad(signed_envelope(
        "<xml><ToUserName>a</ToUserName></xml>".into(),
        ""
    )));
    // Encrypt that is not Base64, or not whole AES blocks.
    assert!(bad(signed_envelope(
        envelope("!!!not base64!!!"),
        "!!!not base64!!!"
    )));
    assert!(bad(signed_envelope(
        envelope("AAAAAAAAAAAAAAAAAAAA"),
        "AAAAAAAAAAAAAAAAAAAA"
    )));
    // Whole blocks that do not decrypt to WeCom's layout (the padding byte is wrong for random
    // bytes with overwhelming probability; these 64 bytes are checked to be).
    let junk = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkrLw==";
    assert!(bad(signed_envelope(envelope(junk), junk)));
    // Decrypts, but the message inside is not XML.
    let not_xml = wecom::encrypt(KEY, b"{\"json\": true}", CORP).unwrap();
    assert!(bad(signed_envelope(envelope(&not_xml), &not_xml)));
    // XML without MsgType or FromUserName.
    let no_type = wecom::encrypt(KEY, b"<xml><FromUserName>u</FromUserName></xml>", CORP).unwrap();
    assert!(bad(signed_envelope(envelope(&no_type), &no_type)));
    let no_from = wecom::encrypt(
        KEY,
        b"<xml><MsgType>text</MsgType><Content>hi</Content></xml>",
        CORP,
    )
    .unwrap();
    assert!(bad(signed_envelope(envelope(&no_from), &no_from)));
    // A GET without echostr; another method.
    let mut get = signed_envelope(String::new(), "");
    get.method = http::Method::GET;
    assert!(bad(get));
    let mut put = signed(&fixture("text.xml"));
    put.method = http::Method::PUT;
    assert!(bad(put));
}

#[test]
fn misconfigured_account_refuses_everything() {
    for change in [
        (|s: &mut WecomSettings| s.token.clear()) as fn(&mut WecomSettings),
        |s| s.corp_id.clear(),
        |s| s.encoding_aes_key.clear(),
        |s| s.encoding_aes_key.truncate(42),
    ] {
        let mut s = settings(DEFAULT_API_BASE);
        change(&mut s);
        let a = WecomAdapter::new("main", s.clone(), reqwest::Client::new());
        // Signed as well as the configuration allows.
        let encrypt = wecom::encrypt(KEY, fixture("text.xml").as_bytes(), CORP).unwrap();
        let ts = NOW.to_string();
        let req = HttpRequest::post(envelope(&encrypt))
            .with_query(
                "msg_signature",
                &wecom::msg_signature(&s.token, &ts, "1", &encrypt),
            )
            .with_query("timestamp", &ts)
            .with_query("nonce", "1");
        assert!(
            matches!(a.handle(&req, NOW), Err(ChannelError::Unauthorized(_))),
            "{s:?}"
        );
    }
}

#[test]
fn parse_message_is_usable_alone() {
    match parse_message("acct", "", &fixture("text.xml")).unwrap() {
        Parsed::Message(m) => {
            assert_eq!(m.account, "acct");
            assert_eq!(m.reply, json!({"agent_id": "1000002"}));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn debug_output_hides_secrets() {
    let s = settings(DEFAULT_API_BASE);
    let shown = format!("{s:?} {:?}", adapter());
    assert!(shown.contains(CORP) && shown.contains(AGENT), "{shown}");
    for secret in [SECRET, TOKEN, KEY] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[test]
fn chunks_are_2048_bytes() {
    let limit = adapter().chunk_limit();
    assert_eq!(limit.max, 2048);
    assert_eq!(CHUNK_BYTES, 2048);
    assert_eq!(limit.unit, LengthUnit::Bytes);
    assert_eq!(adapter().platform(), Platform::Wecom);
    assert_eq!(adapter().account(), "main");
}

// ---------------------------------------------------------------------------------------------
// Sending, against a fake WeCom API
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Fake {
    token_fetches: AtomicU32,
    /// The gettoken query strings.
    token_queries: Mutex<Vec<Vec<(String, String)>>>,
    /// errcode for gettoken (0: issue `tok-N`).
    token_errcode: Mutex<i64>,
    /// Tokens message/send refuses, with the errcode it answers.
    rejected_tokens: Mutex<HashSet<String>>,
    rejected_errcode: Mutex<i64>,
    /// What message/send answers when the token is good: ("ok" | "45009" | "45009-wait" | "429" |
    /// "500" | "40003").
    mode: Mutex<String>,
    /// (access_token, body)
    sends: Mutex<Vec<(String, Value)>>,
}

async fn fake_gettoken(State(f): State<Arc<Fake>>, Query(q): Query<Vec<(String, String)>>) -> Response {
    f.token_queries.lock().unwrap().push(q);
    let code = *f.token_errcode.lock().unwrap();
    if code != 0 {
        return Json(json!({
            "errcode": code,
            "errmsg": format!("invalid credential, hint: [1717000000_1_x], more info at https://open.work.weixin.qq.com/devtool/query?e={code}"),
        }))
        .into_response();
    }
    let n = f.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({"errcode": 0, "errmsg": "ok", "access_token": format!("tok-{n}"), "expires_in": 7200}))
        .into_response()
}

async fn fake_send(
    State(f): State<Arc<Fake>>,
    Query(q): Query<Vec<(String, String)>>,
    Json(body): Json<Value>,
) -> Response {
    let token = q
        .iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    f.sends.lock().unwrap().push((token.clone(), body));
    if f.rejected_tokens.lock().unwrap().contains(&token) {
        let code = *f.rejected_errcode.lock().unwrap();
        // WeCom's errmsg does not echo the token; this fake does, to check it is scrubbed.
        return Json(json!({"errcode": code, "errmsg": format!("access_token expired: {token}")}))
            .into_response();
    }
    let mode = f.mode.lock().unwrap().clone();
    match mode.as_str() {
        "45009" => Json(json!({"errcode": 45009, "errmsg": "api freq out of limit"})).into_response(),
        "45009-wait" => (
            [("retry-after", "30")],
            Json(json!({"errcode": 45009, "errmsg": "api freq out of limit"})),
        )
            .into_response(),
        "429" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down").into_response(),
        "500" => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        "40003" => Json(json!({"errcode": 40003, "errmsg": "invalid userid"})).into_response(),
        _ => Json(json!({"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": "msg-1"})).into_response(),
    }
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    *fake.rejected_errcode.lock().unwrap() = 42001;
    let app = Router::new()
        .route("/cgi-bin/gettoken", get(fake_gettoken))
        .route("/cgi-bin/message/send", post(fake_send))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, base)
}

fn inbound() -> InboundMessage {
    match parse_message("main", AGENT, &fixture("text.xml")).unwrap() {
        Parsed::Message(m) => *m,
        other => panic!("{other:?}"),
    }
}

fn set_mode(fake: &Fake, mode: &str) {
    *fake.mode.lock().unwrap() = mode.to_owned();
}

/// No error message carries a credential.
fn assert_no_secrets(e: &SendError) {
    let shown = format!("{e} {e:?}");
    for secret in [SECRET, "tok-1", "tok-2", "tok-3", "access_token="] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[tokio::test]
async fn sends_a_text_app_message_with_a_cached_token() {
    let (fake, base) = start_fake().await;
    let a = WecomAdapter::new("main", settings(&base), reqwest::Client::new());
    let to = inbound();
    a.send(&to, "第一段", "k1").await.unwrap();
    a.send(&to, "第二段 \"quoted\"\nline", "k2").await.unwrap();

    assert_eq!(
        fake.token_fetches.load(Ordering::SeqCst),
        1,
        "token fetched once, then cached"
    );
    let q = fake.token_queries.lock().unwrap()[0].clone();
    assert!(q.contains(&("corpid".into(), CORP.into())), "{q:?}");
    assert!(q.contains(&("corpsecret".into(), SECRET.into())), "{q:?}");

    let sends = fake.sends.lock().unwrap().clone();
    assert_eq!(sends.len(), 2);
    let (token, body) = &sends[1];
    assert_eq!(token, "tok-1");
    assert_eq!(
        *body,
        json!({
            "touser": "ZhangSan",
            "msgtype": "text",
            "agentid": 1000002,
            "text": {"content": "第二段 \"quoted\"\nline"},
            "enable_duplicate_check": 1,
            "duplicate_check_interval": 1800,
        })
    );
    assert!(body["agentid"].is_u64(), "agentid is a JSON number");
}

#[tokio::test]
async fn agent_id_falls_back_to_the_message() {
    let (fake, base) = start_fake().await;
    let mut s = settings(&base);
    s.agent_id = String::new();
    let a = WecomAdapter::new("main", s, reqwest::Client::new());
    a.send(&inbound(), "x", "k").await.unwrap();
    assert_eq!(fake.sends.lock().unwrap()[0].1["agentid"], json!(1000002));

    let mut s = settings(&base);
    s.agent_id = "not-a-number".into();
    let a = WecomAdapter::new("main", s, reqwest::Client::new());
    assert!(matches!(
        a.send(&inbound(), "x", "k").await,
        Err(SendError::Permanent(_))
    ));
}

#[tokio::test]
async fn expired_token_is_refreshed_once() {
    let (fake, base) = start_fake().await;
    let a = WecomAdapter::new("main", settings(&base), reqwest::Client::new());
    let to = inbound();
    a.send(&to, "x", "k").await.unwrap();
    // WeCom expires tok-1 early (42001): the next send fetches tok-2 and goes through.
    fake.rejected_tokens.lock().unwrap().insert("tok-1".into());
    a.send(&to, "y", "k").await.unwrap();
    let tokens: Vec<String> = fake.sends.lock().unwrap().iter().map(|s| s.0.clone()).collect();
    assert_eq!(tokens, vec!["tok-1", "tok-1", "tok-2"]);
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 2);

    // 40014 (invalid access_token) is treated the same way.
    *fake.rejected_errcode.lock().unwrap() = 40014;
    fake.rejected_tokens.lock().unwrap().insert("tok-2".into());
    a.send(&to, "z", "k").await.unwrap();
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 3);

    // Every token refused: retryable after one refresh, not a loop.
    fake.rejected_tokens
        .lock()
        .unwrap()
        .extend(["tok-3".into(), "tok-4".into(), "tok-5".into()]);
    let err = a.send(&to, "w", "k").await.unwrap_err();
    assert!(matches!(err, SendError::Retryable { .. }), "{err:?}");
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 4);
    assert_no_secrets(&err);
    assert!(!format!("{err}").contains("tok-4"));
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retryable() {
    let (fake, base) = start_fake().await;
    let a = WecomAdapter::new("main", settings(&base), reqwest::Client::new());
    let to = inbound();

    set_mode(&fake, "45009");
    let err = a.send(&to, "x", "k").await.unwrap_err();
    assert!(
        matches!(&err, SendError::Retryable { message, retry_after: None } if message.contains("45009")),
        "{err:?}"
    );
    assert_no_secrets(&err);

    set_mode(&fake, "45009-wait");
    let err = a.send(&to, "x", "k").await.unwrap_err();
    assert!(
        matches!(&err, SendError::Retryable { retry_after: Some(d), .. } if *d == Duration::from_secs(30)),
        "{err:?}"
    );

    set_mode(&fake, "429");
    assert_eq!(
        a.send(&to, "x", "k").await,
        Err(SendError::Retryable {
            message: "message/send: HTTP 429 Too Many Requests".into(),
            retry_after: Some(Duration::from_secs(7)),
        })
    );

    set_mode(&fake, "500");
    let err = a.send(&to, "x", "k").await.unwrap_err();
    assert!(matches!(&err, SendError::Retryable { .. }), "{err:?}");
    assert_no_secrets(&err);

    set_mode(&fake, "ok");
    assert!(a.send(&to, "x", "k").await.is_ok());
    assert_eq!(
        fake.token_fetches.load(Ordering::SeqCst),
        1,
        "none of these dropped the token"
    );
}

#[tokio::test]
async fn invalid_user_is_permanent() {
    let (fake, base) = start_fake().await;
    let a = WecomAdapter::new("main", settings(&base), reqwest::Client::new());
    set_mode(&fake, "40003");
    let err = a.send(&inbound(), "x", "k").await.unwrap_err();
    assert!(
        matches!(&err, SendError::Permanent(m) if m.contains("40003") && m.contains("invalid userid")),
        "{err:?}"
    );
    assert_no_secrets(&err);
}

#[tokio::test]
async fn bad_credentials_are_permanent_and_not_shown() {
    let (fake, base) = start_fake().await;
    *fake.token_errcode.lock().unwrap() = 40001;
    let a = WecomAdapter::new("main", settings(&base), reqwest::Client::new());
    let err = a.send(&inbound(), "x", "k").await.unwrap_err();
    assert!(
        matches!(&err, SendError::Permanent(m) if m.contains("gettoken") && m.contains("40001")),
        "{err:?}"
    );
    assert_no_secrets(&err);
    assert!(fake.sends.lock().unwrap().is_empty());

    // A busy gettoken (-1) is worth retrying.
    *fake.token_errcode.lock().unwrap() = -1;
    let err = a.send(&inbound(), "x", "k").await.unwrap_err();
    assert!(matches!(&err, SendError::Retryable { .. }), "{err:?}");
}

#[tokio::test]
async fn unreachable_wecom_is_retryable_without_the_url() {
    // A port nobody listens on: bind, note the port, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let a = WecomAdapter::new("main", settings(&base), reqwest::Client::new());
    let err = a.send(&inbound(), "x", "k").await.unwrap_err();
    assert!(matches!(&err, SendError::Retryable { .. }), "{err:?}");
    assert_no_secrets(&err);
    assert!(!format!("{err:?}").contains("corpsecret"), "{err:?}");
}
