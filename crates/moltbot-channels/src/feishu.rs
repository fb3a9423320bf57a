//! Feishu (飞书) and Lark, built to the event subscription v2 webhook
//! (<https://open.feishu.cn/document/server-docs/event-subscription-guide/event-subscription-configure-/request-url-configuration-case>)
//! and the IM v1 message API.
//!
//! **Requests.** Feishu POSTs JSON to `https://<host>/channels/feishu/<account>` (Lark:
//! `/channels/lark/<account>`). With an Encrypt Key configured the body is `{"encrypt": "…"}`:
//! AES-256-CBC, key = SHA-256(Encrypt Key), the first 16 bytes of the base64-decoded data are the IV,
//! PKCS#7 padding. Event pushes then carry `X-Lark-Request-Timestamp`, `X-Lark-Request-Nonce` and
//! `X-Lark-Signature` = hex(SHA-256(timestamp + nonce + Encrypt Key + raw body)), checked in constant
//! time. The URL-verification request Feishu sends when the Request URL is saved carries no signature
//! headers; it is answered only if its Verification Token matches. The Verification Token (`token`
//! in v1 bodies, `header.token` in v2) is checked whenever configured.
//!
//! **Events.** `im.message.receive_v1` with `message_type` `text` or `post` becomes an
//! [`InboundMessage`]; the app's own messages (`sender_type` `app`), other message types and other
//! events are acknowledged and ignored. Mentions arrive as `@_user_N` placeholders with a `mentions`
//! list: the bot's own placeholder is removed (the bot is `bot_id` — its open_id — when configured;
//! otherwise a mention without a `user_id`, which is how apps appear), other people's become `@Name`.
//!
//! **Replies.** In a thread (`thread_id`) or a group, the reply answers the message
//! (`POST /open-apis/im/v1/messages/{message_id}/reply`, in the thread when there is one); in a direct
//! chat it is a new message (`POST /open-apis/im/v1/messages?receive_id_type=chat_id`). Each request
//! carries `uuid` = the chunk's idempotency key (Feishu drops a repeat within an hour). The tenant access
//! token (2 h) is cached and refreshed 5 minutes before it expires, or at once when Feishu rejects it.

use std::time::Duration;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::token::TokenCache;
use crate::{
    Adapter, ChannelError, ChatType, ChunkLimit, Decoded, HttpReply, HttpRequest, InboundMessage, LengthUnit,
    Platform, SendError, secure_eq, within_window,
};

/// Feishu's open platform.
pub const FEISHU_API_BASE: &str = "https://open.feishu.cn";
/// Lark's (international) open platform.
pub const LARK_API_BASE: &str = "https://open.larksuite.com";

/// How far `X-Lark-Request-Timestamp` may be from now. Generous: a replay is harmless (events are
/// deduplicated by `event_id`), a clock difference should not drop messages.
pub const SIGNATURE_WINDOW_SECS: i64 = 60 * 60;

/// Reply chunk length. Feishu accepts text messages up to about 150 KB; long walls of text are hard
/// to read in a chat, so replies are split well below that.
pub const CHUNK_CHARS: usize = 4000;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Codes meaning the tenant access token is invalid or expired.
const TOKEN_INVALID: &[i64] = &[99991661, 99991663, 99991668, 99991664];
/// Codes meaning "slow down".
const RATE_LIMITED: &[i64] = &[99991400, 11232, 11233, 230020];

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// One Feishu or Lark app.
#[derive(Clone)]
pub struct FeishuSettings {
    pub app_id: String,
    pub app_secret: String,
    /// Verification Token (Events and Callbacks → Encryption Strategy).
    pub verification_token: Option<String>,
    /// Encrypt Key; when set, bodies are encrypted and event pushes signed.
    pub encrypt_key: Option<String>,
    /// The bot's open_id (`ou_…`), for mention detection.
    pub bot_id: Option<String>,
    /// [`FEISHU_API_BASE`] or [`LARK_API_BASE`] unless testing.
    pub api_base: String,
}

impl std::fmt::Debug for FeishuSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuSettings")
            .field("app_id", &self.app_id)
            .field("bot_id", &self.bot_id)
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of the Encrypt Key: the AES key.
fn aes_key(encrypt_key: &str) -> [u8; 32] {
    Sha256::digest(encrypt_key.as_bytes()).into()
}

/// Decrypt an `encrypt` field.
pub fn decrypt(encrypt_key: &str, encrypted_b64: &str) -> Result<Vec<u8>, ChannelError> {
    let data = STANDARD
        .decode(encrypted_b64.trim())
        .map_err(|_| ChannelError::BadRequest("`encrypt` is not base64".into()))?;
    if data.len() < 32 || data.len() % 16 != 0 {
        return Err(ChannelError::BadRequest("`encrypt` has the wrong length".into()));
    }
    let (iv, body) = data.split_at(16);
    let key = aes_key(encrypt_key);
    Aes256CbcDec::new(&key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(body)
        .map_err(|_| ChannelError::BadRequest("`encrypt` does not decrypt with the Encrypt Key".into()))
}

/// Encrypt like Feishu does (a random IV first): for tests and fakes.
pub fn encrypt(encrypt_key: &str, plaintext: &[u8]) -> String {
    let iv: [u8; 16] = rand::random();
    let key = aes_key(encrypt_key);
    let mut out = iv.to_vec();
    out.extend(Aes256CbcEnc::new(&key.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext));
    STANDARD.encode(out)
}

/// `X-Lark-Signature`: hex(SHA-256(timestamp + nonce + Encrypt Key + body)).
pub fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(encrypt_key.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

#[derive(Deserialize)]
struct Mention {
    key: String,
    #[serde(default)]
    id: MentionId,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct MentionId {
    #[serde(default)]
    open_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

/// The text of a `text` or `post` message's `content` (a JSON string).
fn content_text(message_type: &str, content: &str) -> Option<String> {
    let v: Value = serde_json::from_str(content).ok()?;
    match message_type {
        "text" => v.get("text")?.as_str().map(str::to_owned),
        "post" => {
            // `{"title": "…", "content": [[{"tag": "text", "text": "…"}, {"tag": "at", "user_id": "@_user_1"}], …]}`
            // (a locale wrapper such as `{"zh_cn": {…}}` is accepted too).
            let post = if v.get("content").is_some() {
                &v
            } else {
                v.as_object()?.values().next()?
            };
            let mut lines = Vec::new();
            if let Some(t) = post
                .get("title")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                lines.push(t.to_owned());
            }
            for para in post.get("content")?.as_array()? {
                let mut line = String::new();
                for el in para.as_array().into_iter().flatten() {
                    match el.get("tag").and_then(Value::as_str) {
                        Some("text") | Some("a") => {
                            line.push_str(el.get("text").and_then(Value::as_str).unwrap_or_default())
                        }
                        Some("at") => {
                            line.push_str(el.get("user_id").and_then(Value::as_str).unwrap_or_default())
                        }
                        _ => {}
                    }
                }
                lines.push(line);
            }
            Some(lines.join("\n"))
        }
        _ => None,
    }
}

/// Apply mentions to `text`: the bot's placeholder removed, others' replaced with `@Name`. Returns the
/// text and whether the bot was mentioned.
fn resolve_mentions(text: &str, mentions: &[Mention], bot_id: Option<&str>) -> (String, bool) {
    let mut out = text.to_owned();
    let mut mentioned = false;
    // Longest keys first: `@_user_10` must not be replaced as `@_user_1` + `0`.
    let mut sorted: Vec<&Mention> = mentions.iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.key.len()));
    for m in sorted {
        if !out.contains(&m.key) {
            continue;
        }
        let is_bot = match bot_id {
            Some(bot) => m.id.open_id.as_deref() == Some(bot),
            None => m.id.user_id.as_deref().is_none_or(str::is_empty),
        };
        if is_bot {
            mentioned = true;
            out = out.replace(&m.key, "");
        } else {
            out = out.replace(&m.key, &format!("@{}", m.name));
        }
    }
    // Removing a placeholder leaves doubled or edge spaces: collapse them line by line.
    let collapsed = out
        .lines()
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    (collapsed.trim().to_owned(), mentioned)
}

fn ack() -> HttpReply {
    HttpReply::json(&json!({}))
}

fn ignore(reason: impl Into<String>) -> Decoded {
    Decoded::Ignore {
        reason: reason.into(),
        ack: ack(),
    }
}

pub struct FeishuAdapter {
    account: String,
    platform: Platform,
    settings: FeishuSettings,
    http: reqwest::Client,
    token: TokenCache,
}

impl FeishuAdapter {
    /// `platform` is [`Platform::Feishu`] or [`Platform::Lark`] (only the default API host differs).
    pub fn new(account: &str, platform: Platform, settings: FeishuSettings, http: reqwest::Client) -> Self {
        FeishuAdapter {
            account: account.to_owned(),
            platform,
            settings,
            http,
            token: TokenCache::new(Duration::from_secs(300)),
        }
    }

    fn check_token(&self, given: Option<&str>) -> Result<(), ChannelError> {
        match &self.settings.verification_token {
            Some(expected) if !secure_eq(given.unwrap_or_default().as_bytes(), expected.as_bytes()) => Err(
                ChannelError::Unauthorized("verification token does not match".into()),
            ),
            _ => Ok(()),
        }
    }

    fn decode_event(&self, v: &Value) -> Result<Decoded, ChannelError> {
        let header = v
            .get("header")
            .ok_or_else(|| ChannelError::BadRequest("event without `header`".into()))?;
        self.check_token(header.get("token").and_then(Value::as_str))?;
        let event_type = header
            .get("event_type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if event_type != "im.message.receive_v1" {
            return Ok(ignore(format!("event {event_type}")));
        }
        // Replies and dedupe are keyed by these: an event without them cannot be handled.
        let event_id = header
            .get("event_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ChannelError::BadRequest("event without `header.event_id`".into()))?;
        let event = v
            .get("event")
            .ok_or_else(|| ChannelError::BadRequest("event without `event`".into()))?;
        let sender = event.get("sender").cloned().unwrap_or_default();
        if sender.get("sender_type").and_then(Value::as_str) != Some("user") {
            return Ok(ignore("not sent by a user"));
        }
        let msg = event
            .get("message")
            .ok_or_else(|| ChannelError::BadRequest("event without `event.message`".into()))?;
        let s = |k: &str| msg.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let chat_id = s("chat_id");
        if chat_id.is_empty() {
            return Err(ChannelError::BadRequest("message without `chat_id`".into()));
        }
        let message_type = s("message_type");
        let Some(raw_text) = content_text(&message_type, &s("content")) else {
            return Ok(ignore(format!("{message_type} message")));
        };
        let mentions: Vec<Mention> = msg
            .get("mentions")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| ChannelError::BadRequest(format!("`mentions`: {e}")))?
            .unwrap_or_default();
        let (text, mentions_bot) = resolve_mentions(&raw_text, &mentions, self.settings.bot_id.as_deref());
        let chat_type = if s("chat_type") == "p2p" {
            ChatType::Direct
        } else {
            ChatType::Group
        };
        let thread_id = [s("thread_id"), s("root_id")].into_iter().find(|t| !t.is_empty());
        let sender_id = sender
            .pointer("/sender_id/open_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let message = InboundMessage {
            platform: self.platform,
            account: self.account.clone(),
            event_id: event_id.to_owned(),
            message_id: s("message_id"),
            chat_id,
            chat_type,
            sender_id,
            sender_name: None,
            text,
            mentions_bot: mentions_bot || chat_type == ChatType::Direct,
            thread_id,
            sent_at: s("create_time")
                .parse::<i64>()
                .map(|ms| ms / 1000)
                .unwrap_or_default(),
            reply: Value::Null,
        };
        if message.chat_id.is_empty() || message.message_id.is_empty() {
            return Err(ChannelError::BadRequest(
                "message without chat_id or message_id".into(),
            ));
        }
        Ok(Decoded::Messages {
            messages: vec![message],
            ack: ack(),
        })
    }

    async fn tenant_token(&self) -> Result<String, SendError> {
        self.token
            .get(|| async {
                let url = format!(
                    "{}/open-apis/auth/v3/tenant_access_token/internal",
                    self.settings.api_base
                );
                let body = json!({"app_id": self.settings.app_id, "app_secret": self.settings.app_secret});
                let resp = self
                    .http
                    .post(url)
                    .timeout(REQUEST_TIMEOUT)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| SendError::retryable(format!("tenant_access_token: {}", e.without_url())))?;
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or_default();
                let code = v.get("code").and_then(Value::as_i64).unwrap_or(-1);
                match v.get("tenant_access_token").and_then(Value::as_str) {
                    Some(t) if code == 0 => {
                        let ttl = v.get("expire").and_then(Value::as_u64).unwrap_or(7200);
                        Ok((t.to_owned(), Duration::from_secs(ttl)))
                    }
                    _ if status.is_server_error() || status.as_u16() == 429 => Err(SendError::retryable(
                        format!("tenant_access_token: HTTP {status}"),
                    )),
                    _ => Err(SendError::Permanent(format!(
                        "tenant_access_token refused (code {code}: {}); check app_id and app_secret",
                        v.get("msg").and_then(Value::as_str).unwrap_or_default()
                    ))),
                }
            })
            .await
    }

    /// One API call; `Ok(true)` = sent, `Ok(false)` = the token was rejected (refresh and retry).
    async fn post_message(&self, to: &InboundMessage, text: &str, uuid: &str) -> Result<bool, SendError> {
        let token = self.tenant_token().await?;
        let content = json!({"text": text}).to_string();
        let base = &self.settings.api_base;
        let req = if to.thread_id.is_some() || to.chat_type == ChatType::Group {
            let url = format!("{base}/open-apis/im/v1/messages/{}/reply", to.message_id);
            self.http.post(url).json(&json!({
                "msg_type": "text", "content": content, "reply_in_thread": to.thread_id.is_some(), "uuid": uuid,
            }))
        } else {
            let url = format!("{base}/open-apis/im/v1/messages?receive_id_type=chat_id");
            self.http.post(url).json(&json!({
                "receive_id": to.chat_id, "msg_type": "text", "content": content, "uuid": uuid,
            }))
        };
        let resp = req
            .bearer_auth(token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| SendError::retryable(format!("send: {}", e.without_url())))?;
        let status = resp.status();
        let retry_after = ["x-ogw-ratelimit-reset", "retry-after"].iter().find_map(|h| {
            resp.headers()
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
        });
        let v: Value = resp.json().await.unwrap_or_default();
        let code = v.get("code").and_then(Value::as_i64).unwrap_or(-1);
        let msg = v.get("msg").and_then(Value::as_str).unwrap_or_default();
        if status.is_success() && code == 0 {
            return Ok(true);
        }
        if TOKEN_INVALID.contains(&code) {
            return Ok(false);
        }
        if status.as_u16() == 429 || RATE_LIMITED.contains(&code) {
            return Err(SendError::Retryable {
                message: format!("send: rate limited (HTTP {status}, code {code})"),
                retry_after,
            });
        }
        if status.is_server_error() {
            return Err(SendError::Retryable {
                message: format!("send: HTTP {status} (code {code}: {msg})"),
                retry_after,
            });
        }
        Err(SendError::Permanent(format!(
            "send: HTTP {status}, code {code}: {msg}"
        )))
    }
}

/// Feishu's idempotency key is at most 50 characters.
fn feishu_uuid(key: &str) -> String {
    if key.len() <= 50 {
        key.to_owned()
    } else {
        hex::encode(&Sha256::digest(key.as_bytes())[..20])
    }
}

#[async_trait]
impl Adapter for FeishuAdapter {
    fn platform(&self) -> Platform {
        self.platform
    }

    fn account(&self) -> &str {
        &self.account
    }

    fn handle(&self, req: &HttpRequest, now: i64) -> Result<Decoded, ChannelError> {
        let outer: Value = serde_json::from_slice(&req.body)
            .map_err(|_| ChannelError::BadRequest("body is not JSON".into()))?;
        let signed = req.header("x-lark-signature").is_some();
        let body: Value = match (
            outer.get("encrypt").and_then(Value::as_str),
            &self.settings.encrypt_key,
        ) {
            (Some(enc), Some(key)) => {
                let plain = decrypt(key, enc)?;
                serde_json::from_slice(&plain)
                    .map_err(|_| ChannelError::BadRequest("decrypted body is not JSON".into()))?
            }
            (Some(_), None) => {
                return Err(ChannelError::BadRequest(
                    "the body is encrypted but no encrypt_key is configured".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ChannelError::Unauthorized(
                    "encrypt_key is configured but the body is not encrypted".into(),
                ));
            }
            (None, None) => outer,
        };
        let is_challenge = body.get("type").and_then(Value::as_str) == Some("url_verification");
        if let Some(key) = &self.settings.encrypt_key {
            // Event pushes are signed; the URL check Feishu makes when the URL is saved is not.
            if signed || !is_challenge {
                let ts = req.header("x-lark-request-timestamp").unwrap_or_default();
                let nonce = req.header("x-lark-request-nonce").unwrap_or_default();
                let given = req.header("x-lark-signature").unwrap_or_default();
                let expected = signature(ts, nonce, key, &req.body);
                if !secure_eq(given.as_bytes(), expected.as_bytes()) {
                    return Err(ChannelError::Unauthorized(
                        "X-Lark-Signature does not match".into(),
                    ));
                }
                let ts: i64 = ts
                    .parse()
                    .map_err(|_| ChannelError::Unauthorized("bad X-Lark-Request-Timestamp".into()))?;
                if !within_window(ts, now, SIGNATURE_WINDOW_SECS) {
                    return Err(ChannelError::Unauthorized(
                        "X-Lark-Request-Timestamp is too far from now".into(),
                    ));
                }
            }
        } else if self.settings.verification_token.is_none() {
            return Err(ChannelError::Unauthorized(
                "neither encrypt_key nor verification_token is configured".into(),
            ));
        }
        if is_challenge {
            self.check_token(body.get("token").and_then(Value::as_str))?;
            let challenge = body
                .get("challenge")
                .and_then(Value::as_str)
                .ok_or_else(|| ChannelError::BadRequest("url_verification without `challenge`".into()))?;
            return Ok(Decoded::Challenge(HttpReply::json(
                &json!({"challenge": challenge}),
            )));
        }
        if body.get("schema").and_then(Value::as_str) == Some("2.0") {
            return self.decode_event(&body);
        }
        // Schema 1.0 events (older apps): verify the token, then ignore — subscribe to v2 events.
        self.check_token(body.get("token").and_then(Value::as_str))?;
        Ok(ignore(
            "schema 1.0 event (subscribe to im.message.receive_v1, schema 2.0)",
        ))
    }

    fn chunk_limit(&self) -> ChunkLimit {
        ChunkLimit {
            max: CHUNK_CHARS,
            unit: LengthUnit::Chars,
        }
    }

    async fn check_credentials(&self) -> Result<String, SendError> {
        self.token.invalidate().await;
        self.tenant_token()
            .await
            .map(|_| "tenant access token issued".to_owned())
    }

    async fn send(&self, to: &InboundMessage, text: &str, idempotency_key: &str) -> Result<(), SendError> {
        let uuid = feishu_uuid(idempotency_key);
        if self.post_message(to, text, &uuid).await? {
            return Ok(());
        }
        // The token was rejected (revoked, or expired early): fetch a new one and try once more.
        self.token.invalidate().await;
        if self.post_message(to, text, &uuid).await? {
            return Ok(());
        }
        self.token.invalidate().await;
        Err(SendError::retryable(
            "send: the tenant access token was rejected twice",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn official_test_key_example_decrypts_to_hello_world() {
        // Feishu's "Encrypt Key" documentation example: Encrypt Key `test key`, the ciphertext below,
        // plaintext `hello world`.
        let plain = decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap();
        assert_eq!(plain, b"hello world");
        assert!(decrypt("other key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").is_err_and(|_| true));
    }

    #[test]
    fn signature_matches_an_independent_sha256() {
        // `printf '%s' '1700000000nonce-1test key{"encrypt":"abc"}' | sha256sum`
        assert_eq!(
            signature("1700000000", "nonce-1", "test key", br#"{"encrypt":"abc"}"#),
            "fdc92a0dc5d4bf3902f7d6ce4441e6cab5129dccfad736c3c63864dfae48123c"
        );
    }

    #[test]
    fn mentions_resolve_with_and_without_bot_id() {
        let mentions: Vec<Mention> = serde_json::from_value(json!([
            {"key": "@_user_1", "id": {"open_id": "ou_bot"}, "name": "Molt"},
            {"key": "@_user_10", "id": {"open_id": "ou_tom", "user_id": "u10"}, "name": "Tom"},
        ]))
        .unwrap();
        let (t, m) = resolve_mentions("@_user_1 ask @_user_10 about it", &mentions, Some("ou_bot"));
        assert_eq!((t.as_str(), m), ("ask @Tom about it", true));
        let (t, m) = resolve_mentions("@_user_10 hi", &mentions, Some("ou_bot"));
        assert_eq!((t.as_str(), m), ("@Tom hi", false));
        // Without bot_id: the mention without a user_id (an app) is the bot.
        let (t, m) = resolve_mentions("@_user_1 hi", &mentions, None);
        assert_eq!((t.as_str(), m), ("hi", true));
    }

    #[test]
    fn long_idempotency_keys_are_hashed_to_50_characters() {
        assert_eq!(feishu_uuid("chev_1-0"), "chev_1-0");
        let long = "x".repeat(80);
        assert_eq!(feishu_uuid(&long).len(), 40);
        assert_ne!(feishu_uuid(&long), feishu_uuid(&"y".repeat(80)));
    }

    proptest! {
        #[test]
        fn encrypt_decrypt_round_trips(key in ".{1,40}", data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let enc = encrypt(&key, &data);
            prop_assert_eq!(decrypt(&key, &enc).unwrap(), data);
        }
    }
}
