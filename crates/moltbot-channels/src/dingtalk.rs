//! DingTalk (钉钉) robot of an enterprise-internal app, HTTP mode: DingTalk POSTs each message the
//! robot receives to `https://<host>/channels/dingtalk/<account>`, signed with the app's secret.
//! Stream mode (a WebSocket the bot opens, no public URL) lives in [`crate::dingtalk_stream`] and
//! shares [`parse_robot_message`].
//!
//! Protocol (open.dingtalk.com, "机器人接收消息" / receive-message):
//! - headers `timestamp` (unix milliseconds) and `sign` = Base64(HMAC-SHA256(key = AppSecret,
//!   message = timestamp + "\n" + AppSecret)); a timestamp more than one hour away from the
//!   current time is refused ("timestamp 与系统当前时间戳如果相差1小时以上，则认为是非法的请求").
//! - the body is the robot message JSON (`msgtype`, `text.content`, `msgId`, `conversationId`,
//!   `conversationType` "1" single chat / "2" group, `senderStaffId`, `isInAtList`,
//!   `sessionWebhook` and its expiry, …).
//!
//! Replies go to the message's `sessionWebhook` (no credentials needed, valid for about 90
//! minutes). Once it has expired, they go through the robot OpenAPI instead
//! (`/v1.0/robot/oToMessages/batchSend` for single chats, `/v1.0/robot/groupMessages/send` for
//! groups) with an access token from `/v1.0/oauth2/accessToken`, cached in a [`TokenCache`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::token::TokenCache;
use crate::{
    Adapter, ChannelError, ChatType, ChunkLimit, Decoded, HttpReply, HttpRequest, InboundMessage, LengthUnit,
    Platform, SendError, within_window,
};

/// DingTalk's OpenAPI (access token, robot messages, Stream gateway).
pub const DEFAULT_API_BASE: &str = "https://api.dingtalk.com";

/// How far a request's `timestamp` may be from now: one hour, DingTalk's documented rule.
pub const SIGN_WINDOW_MS: i64 = 60 * 60 * 1000;

/// The longest reply chunk, in UTF-8 bytes. A sessionWebhook text may hold 20,000 bytes, but the
/// robot API's `msgParam` (the fallback) is limited to 15,000 bytes and is itself a JSON string
/// (`{"content":"…"}`) whose escapes (`\n`, `\"`, `\\`) can double the size of the text. 5,000
/// bytes stays under both limits even for text that is all escapes, and keeps messages readable
/// on a phone.
pub const CHUNK_BYTES: usize = 5000;

/// A sessionWebhook this close to its expiry is treated as expired (the request could arrive late).
const WEBHOOK_EXPIRY_MARGIN_MS: i64 = 60_000;

/// Refresh the access token this long before DingTalk says it expires (it lives 7,200 s).
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

/// Upper bound for one OpenAPI / sessionWebhook call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `sessionWebhook` errcodes worth retrying: -1 "系统繁忙" (busy), 130101 "send too fast".
const RETRYABLE_ERRCODES: &[i64] = &[-1, 130101];

/// One configured DingTalk app robot.
#[derive(Debug, Clone)]
pub struct DingtalkSettings {
    /// AppKey, shown as "Client ID" in the developer console.
    pub app_key: String,
    /// AppSecret ("Client Secret"): signs HTTP-mode callbacks and authenticates API calls.
    pub app_secret: String,
    /// The robot's code for the robot API; the app key when unset (the usual case for an
    /// enterprise-internal app's robot).
    pub robot_code: Option<String>,
    /// OpenAPI base, [`DEFAULT_API_BASE`] unless testing or using a private deployment.
    pub api_base: String,
}

impl DingtalkSettings {
    pub(crate) fn base(&self) -> &str {
        let base = self.api_base.trim_end_matches('/');
        if base.is_empty() { DEFAULT_API_BASE } else { base }
    }
}

// ---------------------------------------------------------------------------------------------
// Signature
// ---------------------------------------------------------------------------------------------

fn mac(timestamp: &str, app_secret: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(app_secret.as_bytes());
    mac
}

/// DingTalk's signature of `timestamp`: Base64(HMAC-SHA256(app_secret, timestamp + "\n" +
/// app_secret)). (The custom group robot's webhook uses the same construction, URL-encoded; the
/// callback header is not URL-encoded.)
pub fn sign(timestamp: &str, app_secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(timestamp, app_secret).finalize().into_bytes())
}

/// Whether `signature` (Base64, as in the `sign` header) is DingTalk's signature of `timestamp`.
/// Constant-time.
pub fn verify_sign(timestamp: &str, signature: &str, app_secret: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    mac(timestamp, app_secret).verify_slice(&given).is_ok()
}

/// Check an HTTP-mode callback's `timestamp` and `sign` headers at `now_ms` (unix milliseconds).
pub fn check_signature(
    timestamp: Option<&str>,
    signature: Option<&str>,
    app_secret: &str,
    now_ms: i64,
) -> Result<(), ChannelError> {
    if app_secret.is_empty() {
        return Err(ChannelError::Unauthorized("no app_secret configured".into()));
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(ChannelError::Unauthorized(
            "missing timestamp or sign header".into(),
        ));
    };
    let timestamp = timestamp.trim();
    let Ok(ts) = timestamp.parse::<i64>() else {
        return Err(ChannelError::Unauthorized("timestamp is not a number".into()));
    };
    if !within_window(ts, now_ms, SIGN_WINDOW_MS) {
        return Err(ChannelError::Unauthorized(
            "timestamp more than one hour from now".into(),
        ));
    }
    if !verify_sign(timestamp, signature, app_secret) {
        return Err(ChannelError::Unauthorized("signature mismatch".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Robot message
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RobotMessage {
    msgtype: String,
    text: Option<TextBody>,
    msg_id: String,
    conversation_id: String,
    conversation_type: Value,
    sender_staff_id: Option<String>,
    sender_id: Option<String>,
    sender_nick: Option<String>,
    is_in_at_list: Option<bool>,
    at_users: Option<Vec<AtUser>>,
    chatbot_user_id: Option<String>,
    session_webhook: Option<String>,
    session_webhook_expired_time: Value,
    create_at: Value,
    robot_code: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TextBody {
    content: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AtUser {
    dingtalk_id: Option<String>,
}

/// What a send needs beyond the normalized fields; stored as [`InboundMessage::reply`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplyInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_webhook: Option<String>,
    /// Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_webhook_expired_time: Option<i64>,
    /// "1" single chat, "2" group.
    pub conversation_type: String,
    /// The sender's userId in the organization (needed for the single-chat fallback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_staff_id: Option<String>,
    /// The robot code DingTalk sent with the message, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub robot_code: Option<String>,
}

pub use crate::Parsed;

/// An integer that DingTalk sends as a JSON number or a string ("createAt" is documented as a
/// String and sent as a number).
fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Remove a leading `@name` mention (DingTalk normally strips the robot's own mention from
/// `text.content`; some clients leave it). Only called when the robot is the only one mentioned,
/// so a leading `@…` token can only be the robot. The mention ends at whitespace (DingTalk puts a
/// U+2005 four-per-em space after it).
fn strip_leading_mention(text: &str) -> &str {
    let text = text.trim();
    match text.strip_prefix('@') {
        Some(rest) => match rest.find(char::is_whitespace) {
            Some(i) => rest[i..].trim(),
            None => "",
        },
        None => text,
    }
}

/// Decode and normalize a robot message (the HTTP-mode body, or the `data` of a Stream-mode
/// `/v1.0/im/bot/messages/get` callback).
pub fn parse_robot_message(account: &str, body: &[u8]) -> Result<Parsed, ChannelError> {
    let msg: RobotMessage = serde_json::from_slice(body)
        .map_err(|e| ChannelError::BadRequest(format!("robot message is not JSON: {e}")))?;
    if msg.msg_id.is_empty() {
        return Err(ChannelError::BadRequest("robot message without msgId".into()));
    }
    if msg.conversation_id.is_empty() {
        return Err(ChannelError::BadRequest(
            "robot message without conversationId".into(),
        ));
    }
    let conversation_type = match &msg.conversation_type {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let chat_type = match conversation_type.as_str() {
        "1" => ChatType::Direct,
        "2" => ChatType::Group,
        other => return Ok(Parsed::Ignore(format!("conversationType {other:?}"))),
    };
    let sender_id = non_empty(&msg.sender_staff_id)
        .or(non_empty(&msg.sender_id))
        .unwrap_or_default()
        .to_owned();
    let bot_id = non_empty(&msg.chatbot_user_id);
    if let (Some(bot), Some(sender)) = (bot_id, non_empty(&msg.sender_id))
        && bot == sender
    {
        return Ok(Parsed::Ignore("the robot's own message".into()));
    }
    if msg.msgtype != "text" {
        return Ok(Parsed::Ignore(format!("msgtype {:?}", msg.msgtype)));
    }
    let at_users = msg.at_users.as_deref().unwrap_or_default();
    let bot_in_at_users =
        bot_id.is_some_and(|bot| at_users.iter().any(|u| non_empty(&u.dingtalk_id) == Some(bot)));
    let mentions_bot = match chat_type {
        // A single chat is addressed to the robot.
        ChatType::Direct => true,
        ChatType::Group => msg.is_in_at_list == Some(true) || bot_in_at_users,
    };
    let content = msg.text.as_ref().map(|t| t.content.as_str()).unwrap_or_default();
    let only_bot_mentioned = mentions_bot
        && at_users
            .iter()
            .all(|u| bot_id.is_some() && non_empty(&u.dingtalk_id) == bot_id);
    let text = if chat_type == ChatType::Group && only_bot_mentioned {
        strip_leading_mention(content)
    } else {
        content.trim()
    };
    if text.is_empty() {
        return Ok(Parsed::Ignore("empty text".into()));
    }
    let reply = ReplyInfo {
        session_webhook: non_empty(&msg.session_webhook).map(str::to_owned),
        session_webhook_expired_time: int_of(&msg.session_webhook_expired_time),
        conversation_type,
        sender_staff_id: non_empty(&msg.sender_staff_id).map(str::to_owned),
        robot_code: non_empty(&msg.robot_code).map(str::to_owned),
    };
    Ok(Parsed::Message(Box::new(InboundMessage {
        platform: Platform::Dingtalk,
        account: account.to_owned(),
        event_id: msg.msg_id.clone(),
        message_id: msg.msg_id,
        chat_id: msg.conversation_id,
        chat_type,
        sender_id,
        sender_name: non_empty(&msg.sender_nick).map(str::to_owned),
        text: text.to_owned(),
        mentions_bot,
        thread_id: None,
        sent_at: int_of(&msg.create_at).map(|ms| ms / 1000).unwrap_or(0),
        reply: serde_json::to_value(reply).unwrap_or(Value::Null),
    })))
}

/// The HTTP answer to a callback: `{"msgtype":"empty"}`, "received, no synchronous reply" (the
/// reply goes out later through the sessionWebhook).
pub fn ack() -> HttpReply {
    HttpReply::json(&json!({ "msgtype": "empty" }))
}

// ---------------------------------------------------------------------------------------------
// Adapter
// ---------------------------------------------------------------------------------------------

/// One DingTalk app robot (HTTP mode for [`Adapter::handle`]; [`Adapter::send`] serves both modes).
pub struct DingtalkAdapter {
    account: String,
    settings: DingtalkSettings,
    http: reqwest::Client,
    token: TokenCache,
}

impl std::fmt::Debug for DingtalkAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingtalkAdapter")
            .field("account", &self.account)
            .field("app_key", &self.settings.app_key)
            .field("api_base", &self.settings.api_base)
            .finish_non_exhaustive()
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn network(what: &str, e: reqwest::Error) -> SendError {
    // Without the URL: a sessionWebhook URL carries a session credential.
    SendError::retryable(format!("{what}: {}", e.without_url()))
}

/// How an OpenAPI call failed.
enum ApiFailure {
    /// The access token was refused: fetch a new one and try again.
    BadToken(String),
    Other(SendError),
}

impl DingtalkAdapter {
    pub fn new(account: &str, settings: DingtalkSettings, http: reqwest::Client) -> Self {
        DingtalkAdapter {
            account: account.to_owned(),
            settings,
            http,
            token: TokenCache::new(TOKEN_MARGIN),
        }
    }

    pub fn settings(&self) -> &DingtalkSettings {
        &self.settings
    }

    fn robot_code<'a>(&'a self, info: &'a ReplyInfo) -> &'a str {
        non_empty(&self.settings.robot_code)
            .or(non_empty(&info.robot_code))
            .unwrap_or(&self.settings.app_key)
    }

    async fn send_session_webhook(&self, url: &str, text: &str) -> Result<(), SendError> {
        let body = json!({ "msgtype": "text", "text": { "content": text } });
        let resp = self
            .http
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(|e| network("sessionWebhook", e))?;
        let status = resp.status();
        let wait = crate::retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| network("sessionWebhook", e))?;
        if status.as_u16() == 429 {
            return Err(SendError::Retryable {
                message: "sessionWebhook: HTTP 429".into(),
                retry_after: wait,
            });
        }
        if status.is_server_error() {
            return Err(SendError::Retryable {
                message: format!("sessionWebhook: HTTP {status}"),
                retry_after: wait,
            });
        }
        if !status.is_success() {
            return Err(SendError::Permanent(format!(
                "sessionWebhook: HTTP {status}: {}",
                crate::snippet(&bytes)
            )));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
            SendError::Permanent(format!("sessionWebhook: not JSON: {}", crate::snippet(&bytes)))
        })?;
        let errcode = v.get("errcode").and_then(int_of).unwrap_or(0);
        let errmsg = v.get("errmsg").and_then(Value::as_str).unwrap_or_default();
        match errcode {
            0 => Ok(()),
            c if RETRYABLE_ERRCODES.contains(&c) => Err(SendError::Retryable {
                message: format!("sessionWebhook: errcode {c}: {errmsg}"),
                retry_after: wait,
            }),
            c => Err(SendError::Permanent(format!(
                "sessionWebhook: errcode {c}: {errmsg}"
            ))),
        }
    }

    /// A new access token and its lifetime.
    async fn fetch_token(&self) -> Result<(String, Duration), SendError> {
        let url = format!("{}/v1.0/oauth2/accessToken", self.settings.base());
        let resp = self
            .http
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .json(&json!({
                "appKey": self.settings.app_key,
                "appSecret": self.settings.app_secret,
            }))
            .send()
            .await
            .map_err(|e| network("accessToken", e))?;
        let status = resp.status();
        let wait = crate::retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| network("accessToken", e))?;
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(SendError::Retryable {
                message: format!("accessToken: HTTP {status}"),
                retry_after: wait,
            });
        }
        if !status.is_success() {
            // Wrong AppKey/AppSecret, app disabled: retrying will not help.
            return Err(SendError::Permanent(format!(
                "accessToken: HTTP {status}: {}",
                crate::snippet(&bytes)
            )));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Token {
            access_token: String,
            expire_in: u64,
        }
        let token: Token = serde_json::from_slice(&bytes).map_err(|_| {
            SendError::Permanent(format!(
                "accessToken: unexpected answer: {}",
                crate::snippet(&bytes)
            ))
        })?;
        Ok((token.access_token, Duration::from_secs(token.expire_in)))
    }

    async fn call_api(&self, path: &str, token: &str, body: &Value) -> Result<Value, ApiFailure> {
        let url = format!("{}{path}", self.settings.base());
        let resp = self
            .http
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .header("x-acs-dingtalk-access-token", token)
            .json(body)
            .send()
            .await
            .map_err(|e| ApiFailure::Other(network(path, e)))?;
        let status = resp.status();
        let wait = crate::retry_after(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiFailure::Other(network(path, e)))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let code = v.get("code").and_then(Value::as_str).unwrap_or_default();
        let message = v.get("message").and_then(Value::as_str).unwrap_or_default();
        let what = format!("{path}: HTTP {status} {code}: {message}");
        let lower = code.to_ascii_lowercase();
        if status.as_u16() == 401 || code == "InvalidAuthentication" {
            return Err(ApiFailure::BadToken(what));
        }
        if status.as_u16() == 429
            || status.is_server_error()
            || lower.contains("qpslimit")
            || lower.contains("throttl")
        {
            return Err(ApiFailure::Other(SendError::Retryable {
                message: what,
                retry_after: wait,
            }));
        }
        Err(ApiFailure::Other(SendError::Permanent(what)))
    }

    /// Send through the robot OpenAPI (the sessionWebhook has expired).
    async fn send_via_api(&self, to: &InboundMessage, info: &ReplyInfo, text: &str) -> Result<(), SendError> {
        let robot_code = self.robot_code(info);
        let msg_param = json!({ "content": text }).to_string();
        let (path, body) = match to.chat_type {
            ChatType::Direct => {
                let Some(staff_id) = non_empty(&info.sender_staff_id) else {
                    return Err(SendError::Permanent(
                        "sessionWebhook expired and the sender has no staff id to message".into(),
                    ));
                };
                (
                    "/v1.0/robot/oToMessages/batchSend",
                    json!({
                        "robotCode": robot_code,
                        "userIds": [staff_id],
                        "msgKey": "sampleText",
                        "msgParam": msg_param,
                    }),
                )
            }
            ChatType::Group => (
                "/v1.0/robot/groupMessages/send",
                json!({
                    "robotCode": robot_code,
                    "openConversationId": to.chat_id,
                    "msgKey": "sampleText",
                    "msgParam": msg_param,
                }),
            ),
        };
        let mut last = String::new();
        for _ in 0..2 {
            let token = self.token.get(|| self.fetch_token()).await?;
            match self.call_api(path, &token, &body).await {
                Ok(answer) => return check_batch_answer(&answer),
                Err(ApiFailure::Other(e)) => return Err(e),
                Err(ApiFailure::BadToken(what)) => {
                    self.token.invalidate().await;
                    last = what;
                }
            }
        }
        Err(SendError::retryable(last))
    }
}

/// `oToMessages/batchSend` answers 200 with the users it could not message.
fn check_batch_answer(answer: &Value) -> Result<(), SendError> {
    let listed = |key: &str| {
        answer
            .get(key)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if listed("flowControlledStaffIdList") {
        return Err(SendError::retryable("robot API: recipient is flow-controlled"));
    }
    if listed("invalidStaffIdList") {
        return Err(SendError::Permanent(
            "robot API: recipient staff id is invalid".into(),
        ));
    }
    Ok(())
}

#[async_trait]
impl Adapter for DingtalkAdapter {
    fn platform(&self) -> Platform {
        Platform::Dingtalk
    }

    fn account(&self) -> &str {
        &self.account
    }

    fn handle(&self, req: &HttpRequest, now: i64) -> Result<Decoded, ChannelError> {
        if req.method != http::Method::POST {
            return Err(ChannelError::BadRequest("DingTalk callbacks are POST".into()));
        }
        check_signature(
            req.header("timestamp"),
            req.header("sign"),
            &self.settings.app_secret,
            now.saturating_mul(1000),
        )?;
        Ok(parse_robot_message(&self.account, &req.body)?.into_decoded(ack()))
    }

    fn chunk_limit(&self) -> ChunkLimit {
        ChunkLimit {
            max: CHUNK_BYTES,
            unit: LengthUnit::Bytes,
        }
    }

    async fn check_credentials(&self) -> Result<String, SendError> {
        self.fetch_token().await.map(|_| "access token issued".to_owned())
    }

    /// Through the message's sessionWebhook while it is valid, else through the robot API.
    /// DingTalk has no idempotency key on either path, so `_idempotency_key` is unused.
    async fn send(&self, to: &InboundMessage, text: &str, _idempotency_key: &str) -> Result<(), SendError> {
        let info: ReplyInfo = serde_json::from_value(to.reply.clone()).unwrap_or_default();
        let now_ms = unix_millis();
        if let Some(url) = non_empty(&info.session_webhook)
            && info
                .session_webhook_expired_time
                .is_none_or(|expiry| now_ms + WEBHOOK_EXPIRY_MARGIN_MS < expiry)
        {
            return self.send_session_webhook(url, text).await;
        }
        self.send_via_api(to, &info, text).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_mention_is_removed_up_to_whitespace() {
        assert_eq!(strip_leading_mention(" @机器人\u{2005}你好 "), "你好");
        assert_eq!(strip_leading_mention("@bot  what is 2+2"), "what is 2+2");
        assert_eq!(strip_leading_mention("@bot"), "");
        assert_eq!(strip_leading_mention("hello @bot"), "hello @bot");
    }

    #[test]
    fn integers_come_as_numbers_or_strings() {
        assert_eq!(int_of(&json!(1613630252678_i64)), Some(1613630252678));
        assert_eq!(int_of(&json!("1613630252678")), Some(1613630252678));
        assert_eq!(int_of(&json!(null)), None);
    }

    #[test]
    fn batch_answer_lists_decide_the_outcome() {
        assert!(check_batch_answer(&json!({"processQueryKey": "k"})).is_ok());
        assert!(matches!(
            check_batch_answer(&json!({"flowControlledStaffIdList": ["u"]})),
            Err(SendError::Retryable { .. })
        ));
        assert!(matches!(
            check_batch_answer(&json!({"invalidStaffIdList": ["u"]})),
            Err(SendError::Permanent(_))
        ));
    }
}
