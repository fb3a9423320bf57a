//! Feishu (飞书) and Lark, built to the event subscription v2 webhook
//! (<https://open.feishu.cn/document/server-docs/event-subscription-guide/event-subscription-configure-/request-url-configuration-case>,
//! <https://open.feishu.cn/document/server-docs/event-subscription-guide/event-subscription-configure-/encrypt-key-encryption-configuration-case>)
//! and the IM v1 message API.
//!
//! **Requests.** Feishu POSTs JSON to `https://<host>/channels/feishu/<account>` (Lark:
//! `/channels/lark/<account>`). With an Encrypt Key configured the body is `{"encrypt": "…"}`:
//! AES-256-CBC, key = SHA-256(Encrypt Key), the first 16 bytes of the base64-decoded data are the IV,
//! PKCS#7 padding. Event pushes then carry `X-Lark-Request-Timestamp`, `X-Lark-Request-Nonce` and
//! `X-Lark-Signature` = hex(SHA-256(timestamp + nonce + Encrypt Key + raw body)); the signature is
//! checked in constant time on the raw bytes *before* anything is decrypted, and the timestamp must be
//! within [`SIGNATURE_WINDOW_SECS`] of now. The URL-verification request Feishu sends when the Request
//! URL is saved carries no signature headers: an unsigned request is answered only if it decrypts
//! with the Encrypt Key to a `url_verification` whose Verification Token matches; an unsigned event
//! is refused. The Verification Token (`token` in v1 bodies and the URL check, `header.token` in v2
//! events) is checked, in constant time, whenever it is configured.
//!
//! **Events.** `im.message.receive_v1` with `message_type` `text` or `post` becomes an
//! [`InboundMessage`]; messages sent by apps (`sender_type` other than `user`, or the bot's own
//! open_id), other message types, empty texts and other events are acknowledged (`{}`) and ignored.
//! Mentions arrive as `@_user_N` placeholders with a `mentions` list. With `bot_id` (the bot's
//! open_id) set, the bot's placeholder is removed and decides `mentions_bot`; other people's become
//! `@Name`. Without `bot_id` the bot cannot be told apart from other mentioned users, so **any**
//! mention counts as mentioning the bot (with the `im:message.group_at_msg:readonly` scope Feishu only
//! delivers group messages that @mention the bot anyway) and every placeholder becomes `@Name`.
//!
//! **Replies.** A message in a topic thread (`thread_id`) is answered in that thread
//! (`POST /open-apis/im/v1/messages/{message_id}/reply`, `reply_in_thread: true`); a message that
//! replies to another one (`root_id` without a thread) is answered with a reply to it; anything else
//! gets a new message in the chat (`POST /open-apis/im/v1/messages?receive_id_type=chat_id`). Each
//! request carries `uuid` = the chunk's idempotency key (hashed when longer than 50 characters), so
//! Feishu drops a repeat within an hour. The tenant access token (2 h) is cached and refreshed 5
//! minutes before it expires, or at once when Feishu rejects it (the send is then tried once more).

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
    Platform, SendError, secure_eq, snippet, within_window,
};

/// Feishu's open platform.
pub const FEISHU_API_BASE: &str = "https://open.feishu.cn";
/// Lark's (international) open platform.
pub const LARK_API_BASE: &str = "https://open.larksuite.com";

/// How far `X-Lark-Request-Timestamp` may be from now, either way.
pub const SIGNATURE_WINDOW_SECS: i64 = 5 * 60;

/// Reply chunk length. Feishu accepts text message requests up to about 150 KB; long walls of text
/// are hard to read in a chat, so replies are split well below that.
pub const CHUNK_CHARS: usize = 4000;

/// The longest `uuid` (idempotency key) Feishu accepts.
pub const MAX_UUID_LEN: usize = 50;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Codes meaning the tenant access token is invalid or expired: fetch a new one and retry once.
const TOKEN_INVALID: &[i64] = &[99991661, 99991663, 99991668];
/// Codes meaning "slow down": 99991400 (API rate limit), 11232/11233 (message and per-chat send
/// frequency), 230020 (operation frequency limit).
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

// ------------------------------------------------------------------------------------------ crypto

/// SHA-256 of the Encrypt Key: the AES key.
fn aes_key(encrypt_key: &str) -> [u8; 32] {
    Sha256::digest(encrypt_key.as_bytes()).into()
}

/// Decrypt an `encrypt` field: base64(IV ‖ AES-256-CBC(plaintext)), key = SHA-256(Encrypt Key).
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

/// Encrypt with a given IV, as Feishu does: for tests and fakes that need a fixed output.
pub fn encrypt_with_iv(encrypt_key: &str, iv: [u8; 16], plaintext: &[u8]) -> String {
    let key = aes_key(encrypt_key);
    let mut out = iv.to_vec();
    out.extend(Aes256CbcEnc::new(&key.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext));
    STANDARD.encode(out)
}

/// Encrypt like Feishu does (a random IV first): for tests and fakes.
pub fn encrypt(encrypt_key: &str, plaintext: &[u8]) -> String {
    encrypt_with_iv(encrypt_key, rand::random(), plaintext)
}

/// `X-Lark-Signature`: hex(SHA-256(timestamp + nonce + Encrypt Key + raw body)).
pub fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(encrypt_key.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

/// Check an `X-Lark-Signature` in constant time (hex digits in either case).
pub fn verify_signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8], given: &str) -> bool {
    let expected = signature(timestamp, nonce, encrypt_key, body);
    secure_eq(given.trim().to_ascii_lowercase().as_bytes(), expected.as_bytes())
}

/// Feishu's `uuid` is at most [`MAX_UUID_LEN`] characters: a longer idempotency key is replaced by
/// a hash of it (40 hex digits), the same on every retry.
pub fn feishu_uuid(idempotency_key: &str) -> String {
    if idempotency_key.len() <= MAX_UUID_LEN {
        idempotency_key.to_owned()
    } else {
        hex::encode(&Sha256::digest(idempotency_key.as_bytes())[..20])
    }
}

// ----------------------------------------------------------------------------------------- parsing

#[derive(Deserialize)]
struct Mention {
    #[serde(default)]
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
}

/// The text of a `text` or `post` message's `content` (itself a JSON string); `None` for other types.
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
                v.as_object()?.values().find(|p| p.get("content").is_some())?
            };
            let str_of =
                |el: &Value, k: &str| el.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            let mut lines = Vec::new();
            let title = str_of(post, "title");
            if !title.is_empty() {
                lines.push(title);
            }
            for para in post.get("content")?.as_array()? {
                let mut line = String::new();
                for el in para.as_array().into_iter().flatten() {
                    match el.get("tag").and_then(Value::as_str) {
                        Some("text") | Some("md") | Some("code_block") => line.push_str(&str_of(el, "text")),
                        Some("a") => {
                            let (text, href) = (str_of(el, "text"), str_of(el, "href"));
                            line.push_str(&text);
                            if !href.is_empty() && href != text {
                                line.push_str(&format!(" ({href})"));
                            }
                        }
                        Some("at") => line.push_str(&str_of(el, "user_id")),
                        // Images, media, emoji, rules: nothing to read.
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

/// Apply mentions to `text`: the bot's placeholder removed (with one space next to it), other
/// people's written as `@Name`, `@_all` as `@all`. Returns the trimmed text and whether the bot was
/// mentioned. Without `bot_id` any mention in the text counts and none is removed (module docs).
fn resolve_mentions(text: &str, mentions: &[Mention], bot_id: Option<&str>) -> (String, bool) {
    let mut mentioned = false;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("@_") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        // The mention whose key starts here: `@_user_1` must not match the start of `@_user_10`.
        let found = mentions.iter().find(|m| {
            !m.key.is_empty()
                && tail.starts_with(m.key.as_str())
                && !tail[m.key.len()..].starts_with(|c: char| c.is_ascii_digit())
        });
        match found {
            Some(m) if bot_id.is_some() && m.id.open_id.as_deref() == bot_id => {
                mentioned = true;
                rest = &tail[m.key.len()..];
                match rest.strip_prefix(' ') {
                    Some(r) => rest = r,
                    None if out.ends_with(' ') => {
                        out.pop();
                    }
                    None => {}
                }
            }
            Some(m) => {
                mentioned |= bot_id.is_none();
                out.push('@');
                out.push_str(if m.name.is_empty() { "user" } else { &m.name });
                rest = &tail[m.key.len()..];
            }
            None if tail.starts_with("@_all") => {
                out.push_str("@all");
                rest = &tail["@_all".len()..];
            }
            None => {
                out.push_str("@_");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    (out.trim().to_owned(), mentioned)
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

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

// ----------------------------------------------------------------------------------------- adapter

pub struct FeishuAdapter {
    account: String,
    platform: Platform,
    settings: FeishuSettings,
    http: reqwest::Client,
    token: TokenCache,
}

impl FeishuAdapter {
    /// `platform` is [`Platform::Feishu`] or [`Platform::Lark`] (only the API host differs, and that is
    /// `settings.api_base`). Empty `verification_token`, `encrypt_key` and `bot_id` count as unset.
    pub fn new(
        account: &str,
        platform: Platform,
        mut settings: FeishuSettings,
        http: reqwest::Client,
    ) -> Self {
        settings.verification_token = non_empty(settings.verification_token);
        settings.encrypt_key = non_empty(settings.encrypt_key);
        settings.bot_id = non_empty(settings.bot_id);
        settings.api_base = settings.api_base.trim_end_matches('/').to_owned();
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

    /// `X-Lark-Signature` over the raw body, then the timestamp window.
    fn check_signature(&self, req: &HttpRequest, encrypt_key: &str, now: i64) -> Result<(), ChannelError> {
        let header = |name: &str| {
            req.header(name)
                .ok_or_else(|| ChannelError::Unauthorized(format!("missing {name}")))
        };
        let ts = header("x-lark-request-timestamp")?;
        let nonce = header("x-lark-request-nonce")?;
        let given = header("x-lark-signature")?;
        if !verify_signature(ts, nonce, encrypt_key, &req.body, given) {
            return Err(ChannelError::Unauthorized(
                "X-Lark-Signature does not match".into(),
            ));
        }
        let ts: i64 = ts
            .trim()
            .parse()
            .map_err(|_| ChannelError::Unauthorized("X-Lark-Request-Timestamp is not a number".into()))?;
        if !within_window(ts, now, SIGNATURE_WINDOW_SECS) {
            return Err(ChannelError::Unauthorized(
                "X-Lark-Request-Timestamp is more than 5 minutes from now".into(),
            ));
        }
        Ok(())
    }

    fn challenge(&self, body: &Value) -> Result<Decoded, ChannelError> {
        self.check_token(body.get("token").and_then(Value::as_str))?;
        let challenge = body
            .get("challenge")
            .and_then(Value::as_str)
            .ok_or_else(|| ChannelError::BadRequest("url_verification without `challenge`".into()))?;
        Ok(Decoded::Challenge(HttpReply::json(
            &json!({"challenge": challenge}),
        )))
    }

    /// A decrypted (or plain) body whose origin is established, up to the token check.
    fn dispatch(&self, body: &Value) -> Result<Decoded, ChannelError> {
        if !body.is_object() {
            return Err(ChannelError::BadRequest("body is not a JSON object".into()));
        }
        if body.get("type").and_then(Value::as_str) == Some("url_verification") {
            return self.challenge(body);
        }
        if body.get("schema").and_then(Value::as_str) == Some("2.0") {
            return self.decode_event(body);
        }
        // Schema 1.0 events (older subscriptions): verify the token, then ignore.
        self.check_token(body.get("token").and_then(Value::as_str))?;
        Ok(ignore(
            "schema 1.0 event (subscribe to im.message.receive_v1, schema 2.0)",
        ))
    }

    fn decode_event(&self, v: &Value) -> Result<Decoded, ChannelError> {
        let header = v
            .get("header")
            .filter(|h| h.is_object())
            .ok_or_else(|| ChannelError::BadRequest("event without `header`".into()))?;
        self.check_token(header.get("token").and_then(Value::as_str))?;
        let event_type = str_at(header, "/event_type");
        if event_type != "im.message.receive_v1" {
            return Ok(ignore(format!("event {event_type:?}")));
        }
        let event_id = str_at(header, "/event_id");
        if event_id.is_empty() {
            return Err(ChannelError::BadRequest("event without `header.event_id`".into()));
        }
        let sender_type = str_at(v, "/event/sender/sender_type");
        if sender_type != "user" {
            return Ok(ignore(format!("sent by sender_type {sender_type:?}")));
        }
        let sender_id = str_at(v, "/event/sender/sender_id/open_id");
        if self.settings.bot_id.as_deref() == Some(sender_id) {
            return Ok(ignore("the bot's own message"));
        }
        let msg = v
            .pointer("/event/message")
            .filter(|m| m.is_object())
            .ok_or_else(|| ChannelError::BadRequest("event without `event.message`".into()))?;
        let s = |k: &str| msg.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (message_id, chat_id) = (s("message_id"), s("chat_id"));
        if message_id.is_empty() || chat_id.is_empty() {
            return Err(ChannelError::BadRequest(
                "message without message_id or chat_id".into(),
            ));
        }
        let message_type = s("message_type");
        let Some(raw_text) = content_text(&message_type, &s("content")) else {
            return Ok(ignore(format!("{message_type:?} message")));
        };
        let mentions: Vec<Mention> = match msg.get("mentions") {
            None | Some(Value::Null) => Vec::new(),
            Some(m) => serde_json::from_value(m.clone())
                .map_err(|e| ChannelError::BadRequest(format!("`mentions`: {e}")))?,
        };
        let chat_type = if s("chat_type") == "p2p" {
            ChatType::Direct
        } else {
            ChatType::Group
        };
        let (text, mentioned) = resolve_mentions(&raw_text, &mentions, self.settings.bot_id.as_deref());
        if text.is_empty() {
            return Ok(ignore("empty text"));
        }
        // A topic thread is answered inside it; a reply chain (root_id only) with a reply to the message.
        let (thread_id, reply) = match (non_empty(Some(s("thread_id"))), non_empty(Some(s("root_id")))) {
            (Some(t), _) => (Some(t), json!({"reply_in_thread": true})),
            (None, Some(root)) => (Some(root), json!({"reply_in_thread": false})),
            (None, None) => (None, Value::Null),
        };
        let message = InboundMessage {
            platform: self.platform,
            account: self.account.clone(),
            event_id: event_id.to_owned(),
            message_id,
            chat_id,
            chat_type,
            sender_id: sender_id.to_owned(),
            sender_name: None,
            text,
            mentions_bot: mentioned || chat_type == ChatType::Direct,
            thread_id,
            sent_at: s("create_time")
                .parse::<i64>()
                .map(|ms| ms / 1000)
                .unwrap_or_default(),
            reply,
        };
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
                let retry_after = rate_limit_reset(resp.headers());
                let bytes = resp.bytes().await.unwrap_or_default();
                let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let code = v.get("code").and_then(Value::as_i64).unwrap_or(-1);
                match v.get("tenant_access_token").and_then(Value::as_str) {
                    Some(t) if code == 0 && !t.is_empty() => {
                        let ttl = v.get("expire").and_then(Value::as_u64).unwrap_or(7200);
                        Ok((t.to_owned(), Duration::from_secs(ttl)))
                    }
                    _ if status.is_server_error() || status.as_u16() == 429 || RATE_LIMITED.contains(&code) => {
                        Err(SendError::Retryable {
                            message: format!("tenant_access_token: HTTP {status}, code {code}"),
                            retry_after,
                        })
                    }
                    _ => Err(SendError::Permanent(format!(
                        "tenant_access_token refused (HTTP {status}, code {code}: {}); check app_id and app_secret",
                        v.get("msg")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .unwrap_or_else(|| snippet(&bytes))
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
        let req = if to.thread_id.is_some() {
            if to.message_id.is_empty()
                || !to
                    .message_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(SendError::Permanent(format!(
                    "cannot reply to message id {:?}",
                    to.message_id
                )));
            }
            let in_thread = to
                .reply
                .get("reply_in_thread")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let url = format!("{base}/open-apis/im/v1/messages/{}/reply", to.message_id);
            self.http.post(url).json(&json!({
                "msg_type": "text", "content": content, "reply_in_thread": in_thread, "uuid": uuid,
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
        let retry_after = rate_limit_reset(resp.headers());
        let bytes = resp.bytes().await.unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let code = v.get("code").and_then(Value::as_i64).unwrap_or(-1);
        let msg = v
            .get("msg")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| snippet(&bytes));
        if status.is_success() && code == 0 {
            return Ok(true);
        }
        if TOKEN_INVALID.contains(&code) {
            return Ok(false);
        }
        if status.as_u16() == 429 || RATE_LIMITED.contains(&code) {
            return Err(SendError::Retryable {
                message: format!("send: rate limited (HTTP {status}, code {code}: {msg})"),
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

/// How long Feishu asks us to wait: `x-ogw-ratelimit-reset` (seconds until the window resets), else
/// `Retry-After`.
fn rate_limit_reset(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get("x-ogw-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .or_else(|| crate::retry_after(headers))
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
        if !outer.is_object() {
            return Err(ChannelError::BadRequest("body is not a JSON object".into()));
        }
        let encrypted = outer.get("encrypt").and_then(Value::as_str);
        match (&self.settings.encrypt_key, encrypted) {
            (Some(key), Some(enc)) => {
                // Authenticate the raw bytes first; only the URL check Feishu makes when the Request URL
                // is saved comes unsigned, and it must decrypt to a url_verification with our token.
                let signed = [
                    "x-lark-request-timestamp",
                    "x-lark-request-nonce",
                    "x-lark-signature",
                ]
                .iter()
                .any(|h| req.headers.contains_key(*h));
                if signed {
                    self.check_signature(req, key, now)?;
                }
                let plain = decrypt(key, enc)?;
                let body: Value = serde_json::from_slice(&plain)
                    .map_err(|_| ChannelError::BadRequest("decrypted body is not JSON".into()))?;
                if !signed && body.get("type").and_then(Value::as_str) != Some("url_verification") {
                    return Err(ChannelError::Unauthorized(
                        "event without X-Lark-Signature".into(),
                    ));
                }
                self.dispatch(&body)
            }
            (Some(_), None) => Err(ChannelError::Unauthorized(
                "encrypt_key is configured but the body is not encrypted".into(),
            )),
            (None, Some(_)) => Err(ChannelError::BadRequest(
                "the body is encrypted but no encrypt_key is configured".into(),
            )),
            (None, None) if self.settings.verification_token.is_none() => Err(ChannelError::Unauthorized(
                "neither encrypt_key nor verification_token is configured".into(),
            )),
            (None, None) => self.dispatch(&outer),
        }
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

    /// Feishu's published Encrypt Key example ("test key" → "hello world"), from
    /// <https://open.feishu.cn/document/server-docs/event-subscription-guide/event-subscription-configure-/encrypt-key-encryption-configuration-case>.
    /// Also decrypted independently with `openssl enc -d -aes-256-cbc` (see tests/fixtures/feishu/gen.sh).
    #[test]
    fn official_test_key_example_decrypts_to_hello_world() {
        const ENC: &str = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=";
        assert_eq!(decrypt("test key", ENC).unwrap(), b"hello world");
        assert!(decrypt("test kez", ENC).is_err(), "a wrong key must not decrypt");
        // Encrypting with the example's IV gives the example back.
        let iv: [u8; 16] = STANDARD.decode(ENC).unwrap()[..16].try_into().unwrap();
        assert_eq!(encrypt_with_iv("test key", iv, b"hello world"), ENC);
    }

    #[test]
    fn malformed_ciphertexts_are_bad_requests() {
        for bad in ["", "not base64!", "AAAA", &STANDARD.encode([0u8; 40])] {
            assert!(
                matches!(decrypt("k", bad), Err(ChannelError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn signature_matches_an_independent_sha256() {
        // printf '%s' '1700000000nonce-1test key{"encrypt":"abc"}' | sha256sum
        let body = br#"{"encrypt":"abc"}"#;
        let sig = "fdc92a0dc5d4bf3902f7d6ce4441e6cab5129dccfad736c3c63864dfae48123c";
        assert_eq!(signature("1700000000", "nonce-1", "test key", body), sig);
        assert!(verify_signature("1700000000", "nonce-1", "test key", body, sig));
        assert!(verify_signature(
            "1700000000",
            "nonce-1",
            "test key",
            body,
            &sig.to_uppercase()
        ));
        assert!(!verify_signature("1700000001", "nonce-1", "test key", body, sig));
        assert!(!verify_signature(
            "1700000000",
            "nonce-1",
            "test key",
            body,
            &sig[..63]
        ));
    }

    fn mentions() -> Vec<Mention> {
        serde_json::from_value(json!([
            {"key": "@_user_1", "id": {"open_id": "ou_bot"}, "name": "Molt"},
            {"key": "@_user_10", "id": {"open_id": "ou_tom"}, "name": "Tom"},
        ]))
        .unwrap()
    }

    #[test]
    fn bot_mention_is_removed_and_others_named() {
        let m = mentions();
        let r = |t: &str| resolve_mentions(t, &m, Some("ou_bot"));
        assert_eq!(
            r("@_user_1 ask @_user_10 about it"),
            ("ask @Tom about it".into(), true)
        );
        assert_eq!(r("@_user_10 hi"), ("@Tom hi".into(), false));
        assert_eq!(r("ask @_user_1, please"), ("ask, please".into(), true));
        assert_eq!(r("hey @_user_1\nline two"), ("hey\nline two".into(), true));
        assert_eq!(
            r("keep  inner  spacing @_user_1"),
            ("keep  inner  spacing".into(), true)
        );
        assert_eq!(
            r("@_all meeting @_user_2"),
            ("@all meeting @_user_2".into(), false)
        );
        assert_eq!(r("email a@_b.c"), ("email a@_b.c".into(), false));
    }

    #[test]
    fn without_bot_id_any_mention_counts_and_none_is_removed() {
        let m = mentions();
        assert_eq!(
            resolve_mentions("@_user_1 ask @_user_10", &m, None),
            ("@Molt ask @Tom".into(), true)
        );
        assert_eq!(resolve_mentions("plain", &[], None), ("plain".into(), false));
    }

    #[test]
    fn post_content_becomes_lines_of_text() {
        let content = json!({"zh_cn": {"title": "T", "content": [
            [{"tag": "at", "user_id": "@_user_1"}, {"tag": "text", "text": " see "}, {"tag": "a", "text": "doc", "href": "https://x.test/d"}],
            [{"tag": "img", "image_key": "img_1"}, {"tag": "code_block", "language": "GO", "text": "x := 1"}],
        ]}})
        .to_string();
        assert_eq!(
            content_text("post", &content).as_deref(),
            Some("T\n@_user_1 see doc (https://x.test/d)\nx := 1")
        );
        assert_eq!(content_text("image", r#"{"image_key":"k"}"#), None);
        assert_eq!(content_text("text", "not json"), None);
    }

    #[test]
    fn long_idempotency_keys_are_hashed_to_fit() {
        assert_eq!(feishu_uuid("chev_1-0"), "chev_1-0");
        let fifty = "x".repeat(50);
        assert_eq!(feishu_uuid(&fifty), fifty);
        let long = "x".repeat(80);
        assert_eq!(feishu_uuid(&long).len(), 40);
        assert_eq!(feishu_uuid(&long), feishu_uuid(&long));
        assert_ne!(feishu_uuid(&long), feishu_uuid(&"y".repeat(80)));
    }

    proptest! {
        #[test]
        fn encrypt_decrypt_round_trips(key in ".{1,40}", data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let enc = encrypt(&key, &data);
            prop_assert_eq!(decrypt(&key, &enc).unwrap(), data);
        }

        #[test]
        fn fixed_iv_encryption_is_deterministic_and_reversible(
            key in ".{1,40}", iv in any::<[u8; 16]>(), data in ".{0,300}",
        ) {
            let a = encrypt_with_iv(&key, iv, data.as_bytes());
            prop_assert_eq!(&a, &encrypt_with_iv(&key, iv, data.as_bytes()));
            prop_assert_eq!(decrypt(&key, &a).unwrap(), data.as_bytes());
        }

        #[test]
        fn decrypt_never_panics(s in ".{0,200}", raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decrypt("k", &s);
            let _ = decrypt("k", &STANDARD.encode(raw));
        }

        #[test]
        fn resolve_mentions_never_panics(text in "(@_user_1|@_user_10|@_all|@_| |x|汉|\n){0,30}") {
            let (t, _) = resolve_mentions(&text, &mentions(), Some("ou_bot"));
            prop_assert!(!t.contains("@_user_1"));
        }
    }
}
