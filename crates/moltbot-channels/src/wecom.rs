//! WeCom (企业微信) self-built app (自建应用), callback mode: WeCom sends the messages users write to
//! the app to `https://<host>/channels/wecom/<account>`, encrypted, and moltbot answers through the
//! app message API.
//!
//! Protocol (developer.work.weixin.qq.com, "回调配置" /document/path/90930, "加解密方案说明"
//! /document/path/90968, "接收消息与事件" /document/path/90238):
//! - every callback carries the query parameters `msg_signature`, `timestamp`, `nonce`;
//!   `msg_signature` = hex SHA-1 of the Token, `timestamp`, `nonce` and the encrypted payload,
//!   sorted lexicographically and concatenated ([`msg_signature`]);
//! - the payload is AES-256-CBC with key = Base64Decode(EncodingAESKey + "="), IV = the key's first
//!   16 bytes, PKCS#7 padding to 32-byte blocks, over `random(16) ‖ len(msg) as u32 BE ‖ msg ‖
//!   receiveid`, Base64-encoded; for a self-built app the receiveid is the CorpID ([`decrypt`]);
//! - the URL check (when the callback URL is saved in the admin console) is a `GET` with `echostr`
//!   (an encrypted random number): the answer is its plaintext, nothing else;
//! - messages are `POST`ed as `<xml><ToUserName/><AgentID/><Encrypt/></xml>`; the decrypted
//!   `Encrypt` is the message XML (`MsgType`, `Content`, `MsgId`, `FromUserName`, `CreateTime`, …).
//!   WeCom waits 5 s for an answer and retries up to three times; an empty `200` is the
//!   acknowledgement (the reply is sent later through the API).
//!
//! Replies go through `POST /cgi-bin/message/send?access_token=…` ("发送应用消息",
//! /document/path/90236) with an access token from `GET /cgi-bin/gettoken` (/document/path/91039),
//! cached in a [`TokenCache`]. The access token rides in the URL: URLs never go into errors or logs.

use std::time::Duration;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::token::TokenCache;
use crate::{
    Adapter, ChannelError, ChatType, ChunkLimit, Decoded, HttpReply, HttpRequest, InboundMessage, LengthUnit,
    Platform, SendError, secure_eq, within_window,
};

/// WeCom's server API (gettoken, message/send).
pub const DEFAULT_API_BASE: &str = "https://qyapi.weixin.qq.com";

/// How far a callback's `timestamp` may be from now, in seconds. WeCom's `timestamp` is the time it
/// sent the request (in the documented example it equals the message's `CreateTime`), and it
/// retries a request it got no answer to within seconds, so an honest request is always close to
/// the current time. WeCom documents no limit; one hour refuses old captured requests while
/// tolerating clock skew and delayed deliveries. Within the window, a replayed message is caught by
/// the `MsgId` dedupe.
pub const TIMESTAMP_WINDOW_SECS: i64 = 60 * 60;

/// The longest reply chunk: a text message's `content` may hold 2048 bytes ("最长不超过2048个字节").
pub const CHUNK_BYTES: usize = 2048;

/// `duplicate_check_interval` for `message/send`: WeCom drops a message identical to one sent to
/// the same user within this many seconds (its maximum, 4 hours, is 14400). It makes a reply chunk
/// that is sent again after a lost answer arrive once.
pub const DUPLICATE_CHECK_INTERVAL_SECS: u64 = 1800;

/// Refresh the access token this long before WeCom says it expires (it lives 7,200 s).
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

/// Upper bound for one API call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// errcodes meaning the access token is not (or no longer) valid: 40001 invalid credential, 40014
/// invalid access_token, 42001 access_token expired.
const TOKEN_ERRCODES: &[i64] = &[40001, 40014, 42001];

/// errcodes worth retrying later: -1 system busy, 45009 API call frequency limit, 45011 API called
/// too often, 45033 too many concurrent calls.
const RETRYABLE_ERRCODES: &[i64] = &[-1, 45009, 45011, 45033];

/// The PKCS#7 block size WeCom pads to (32, not AES's 16).
const PAD_BLOCK: usize = 32;

/// One configured WeCom self-built app.
#[derive(Clone)]
pub struct WecomSettings {
    /// 企业ID (CorpID): the receiveid of every callback, and `corpid` for gettoken.
    pub corp_id: String,
    /// The app's AgentId.
    pub agent_id: String,
    /// The app's Secret (for gettoken).
    pub app_secret: String,
    /// The callback Token (signs callbacks).
    pub token: String,
    /// The callback EncodingAESKey (43 characters).
    pub encoding_aes_key: String,
    /// API base, [`DEFAULT_API_BASE`] unless testing or using a private deployment.
    pub api_base: String,
}

impl std::fmt::Debug for WecomSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &str| if s.is_empty() { "<empty>" } else { "<redacted>" };
        f.debug_struct("WecomSettings")
            .field("corp_id", &self.corp_id)
            .field("agent_id", &self.agent_id)
            .field("app_secret", &set(&self.app_secret))
            .field("token", &set(&self.token))
            .field("encoding_aes_key", &set(&self.encoding_aes_key))
            .field("api_base", &self.api_base)
            .finish()
    }
}

impl WecomSettings {
    fn base(&self) -> &str {
        let base = self.api_base.trim_end_matches('/');
        if base.is_empty() { DEFAULT_API_BASE } else { base }
    }
}

// ---------------------------------------------------------------------------------------------
// Crypto
// ---------------------------------------------------------------------------------------------

/// WeCom's `msg_signature`: hex SHA-1 of `token`, `timestamp`, `nonce` and `encrypt` sorted
/// lexicographically and concatenated.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut sha = Sha1::new();
    for p in parts {
        sha.update(p.as_bytes());
    }
    hex::encode(sha.finalize())
}

/// Whether `signature` is the `msg_signature` of the other four. Constant-time.
pub fn verify_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str, signature: &str) -> bool {
    let expected = msg_signature(token, timestamp, nonce, encrypt);
    secure_eq(
        expected.as_bytes(),
        signature.trim().to_ascii_lowercase().as_bytes(),
    )
}

/// The AES key of an EncodingAESKey: Base64Decode(EncodingAESKey + "="), 32 bytes. The 43rd
/// character carries two bits beyond the key, which WeCom's keys do not keep zero (the documented
/// example's key ends in `C`), so they are ignored rather than refused.
fn aes_key(encoding_aes_key: &str) -> Result<[u8; 32], String> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key = encoding_aes_key.trim();
    if key.len() != 43 {
        return Err(format!("EncodingAESKey must be 43 characters, not {}", key.len()));
    }
    let bytes = LENIENT
        .decode(format!("{key}="))
        .map_err(|_| "EncodingAESKey is not Base64".to_owned())?;
    bytes
        .try_into()
        .map_err(|_| "EncodingAESKey does not decode to 32 bytes".to_owned())
}

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// Decrypt a WeCom payload (`Encrypt`, `echostr`): the message and the receiveid it was encrypted
/// for (the CorpID for a self-built app; the caller compares it).
pub fn decrypt(encoding_aes_key: &str, ciphertext_b64: &str) -> Result<(Vec<u8>, String), ChannelError> {
    let bad = |m: &str| ChannelError::BadRequest(format!("WeCom payload: {m}"));
    let key = aes_key(encoding_aes_key).map_err(ChannelError::BadRequest)?;
    let ct = STANDARD
        .decode(ciphertext_b64.trim())
        .map_err(|_| bad("not Base64"))?;
    if ct.is_empty() || ct.len() % 16 != 0 {
        return Err(bad("length is not a multiple of the AES block"));
    }
    let mut plain = Aes256CbcDec::new_from_slices(&key, &key[..16])
        .expect("32-byte key, 16-byte IV")
        .decrypt_padded_vec_mut::<NoPadding>(&ct)
        .map_err(|_| bad("cannot decrypt"))?;
    let pad = usize::from(*plain.last().unwrap_or(&0));
    if !(1..=PAD_BLOCK).contains(&pad)
        || pad > plain.len()
        || plain[plain.len() - pad..].iter().any(|&b| usize::from(b) != pad)
    {
        return Err(bad("bad padding"));
    }
    plain.truncate(plain.len() - pad);
    if plain.len() < 20 {
        return Err(bad("too short"));
    }
    let len = u32::from_be_bytes([plain[16], plain[17], plain[18], plain[19]]) as usize;
    let rest = &plain[20..];
    if len > rest.len() {
        return Err(bad("message length exceeds the payload"));
    }
    let (msg, receiveid) = rest.split_at(len);
    let receiveid = std::str::from_utf8(receiveid)
        .map_err(|_| bad("receiveid is not UTF-8"))?
        .to_owned();
    Ok((msg.to_vec(), receiveid))
}

/// Encrypt `msg` for `receiveid` the way WeCom does, with these 16 "random" leading bytes
/// (reproducible output for tests).
pub fn encrypt_with_random(
    encoding_aes_key: &str,
    random: [u8; 16],
    msg: &[u8],
    receiveid: &str,
) -> Result<String, ChannelError> {
    let key = aes_key(encoding_aes_key).map_err(ChannelError::BadRequest)?;
    let len = u32::try_from(msg.len()).map_err(|_| ChannelError::BadRequest("message too long".into()))?;
    let mut plain = Vec::with_capacity(20 + msg.len() + receiveid.len() + PAD_BLOCK);
    plain.extend_from_slice(&random);
    plain.extend_from_slice(&len.to_be_bytes());
    plain.extend_from_slice(msg);
    plain.extend_from_slice(receiveid.as_bytes());
    let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
    plain.resize(plain.len() + pad, pad as u8);
    let ct = Aes256CbcEnc::new_from_slices(&key, &key[..16])
        .expect("32-byte key, 16-byte IV")
        .encrypt_padded_vec_mut::<NoPadding>(&plain);
    Ok(STANDARD.encode(ct))
}

/// Encrypt `msg` for `receiveid` the way WeCom does (tests, fake WeCom servers). Fails only for an
/// invalid EncodingAESKey.
pub fn encrypt(encoding_aes_key: &str, msg: &[u8], receiveid: &str) -> Result<String, ChannelError> {
    encrypt_with_random(encoding_aes_key, rand::random(), msg, receiveid)
}

// ---------------------------------------------------------------------------------------------
// Callback XML
// ---------------------------------------------------------------------------------------------

/// The POST body around the encrypted message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Envelope {
    #[serde(rename = "Encrypt")]
    encrypt: Option<String>,
}

/// The decrypted message or event (only the fields moltbot reads).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CallbackMessage {
    #[serde(rename = "FromUserName")]
    from_user_name: Option<String>,
    #[serde(rename = "CreateTime")]
    create_time: Option<String>,
    #[serde(rename = "MsgType")]
    msg_type: Option<String>,
    #[serde(rename = "Content")]
    content: Option<String>,
    #[serde(rename = "MsgId")]
    msg_id: Option<String>,
    #[serde(rename = "AgentID")]
    agent_id: Option<String>,
    #[serde(rename = "Event")]
    event: Option<String>,
}

fn trimmed(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

pub use crate::Parsed;

/// Decode and normalize a decrypted callback message (the plaintext of `Encrypt`). Messages for
/// another app than `agent_id` (when both are known) are ignored.
pub fn parse_message(account: &str, agent_id: &str, xml: &str) -> Result<Parsed, ChannelError> {
    let msg: CallbackMessage = quick_xml::de::from_str(xml)
        .map_err(|e| ChannelError::BadRequest(format!("WeCom message is not XML: {e}")))?;
    let msg_type = trimmed(&msg.msg_type).unwrap_or_default();
    if msg_type.is_empty() {
        return Err(ChannelError::BadRequest("WeCom message without MsgType".into()));
    }
    let Some(from) = trimmed(&msg.from_user_name) else {
        return Err(ChannelError::BadRequest(
            "WeCom message without FromUserName".into(),
        ));
    };
    let message_agent = trimmed(&msg.agent_id);
    let configured_agent = agent_id.trim();
    if let Some(theirs) = message_agent
        && !configured_agent.is_empty()
        && theirs != configured_agent
    {
        return Ok(Parsed::Ignore(format!(
            "message for AgentID {theirs}, this account is AgentID {configured_agent}"
        )));
    }
    if msg_type != "text" {
        let what = match trimmed(&msg.event) {
            Some(event) if msg_type == "event" => format!("event {event:?}"),
            _ => format!("MsgType {msg_type:?}"),
        };
        return Ok(Parsed::Ignore(what));
    }
    let text = msg.content.as_deref().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(Parsed::Ignore("empty text".into()));
    }
    let create_time = trimmed(&msg.create_time).unwrap_or_default();
    let event_id = match trimmed(&msg.msg_id) {
        Some(id) => id.to_owned(),
        None => format!("{from}:{create_time}"),
    };
    Ok(Parsed::Message(Box::new(InboundMessage {
        platform: Platform::Wecom,
        account: account.to_owned(),
        message_id: event_id.clone(),
        event_id,
        // An app message is a one-to-one conversation between the user and the app.
        chat_id: from.to_owned(),
        chat_type: ChatType::Direct,
        sender_id: from.to_owned(),
        sender_name: None,
        text: text.to_owned(),
        mentions_bot: true,
        thread_id: None,
        sent_at: create_time.parse().unwrap_or(0),
        reply: json!({ "agent_id": message_agent.unwrap_or(configured_agent) }),
    })))
}

// ---------------------------------------------------------------------------------------------
// Adapter
// ---------------------------------------------------------------------------------------------

/// One WeCom self-built app.
pub struct WecomAdapter {
    account: String,
    settings: WecomSettings,
    http: reqwest::Client,
    token: TokenCache,
}

impl std::fmt::Debug for WecomAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WecomAdapter")
            .field("account", &self.account)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A network error, without its URL (it carries the secret or the access token).
fn network(what: &str, e: reqwest::Error) -> SendError {
    SendError::retryable(format!("{what}: {}", e.without_url()))
}

/// WeCom's JSON answer (`errcode` 0 on success).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ApiAnswer {
    errcode: i64,
    errmsg: String,
    access_token: String,
    expires_in: u64,
    invaliduser: String,
}

/// How a `message/send` call failed.
enum ApiFailure {
    /// The access token was refused: fetch a new one and try again.
    BadToken(String),
    Other(SendError),
}

impl WecomAdapter {
    pub fn new(account: &str, settings: WecomSettings, http: reqwest::Client) -> Self {
        WecomAdapter {
            account: account.to_owned(),
            settings,
            http,
            token: TokenCache::new(TOKEN_MARGIN),
        }
    }

    pub fn settings(&self) -> &WecomSettings {
        &self.settings
    }

    /// Remove the secrets from text WeCom sent back (errmsg, bodies), in case it echoes them.
    fn scrub(&self, text: &str, token: Option<&str>) -> String {
        let mut s: String = text.chars().take(300).collect();
        for secret in [Some(self.settings.app_secret.as_str()), token]
            .into_iter()
            .flatten()
        {
            if !secret.is_empty() {
                s = s.replace(secret, "<redacted>");
            }
        }
        s
    }

    /// Send an API request; the HTTP-level failures classified, the JSON answer otherwise.
    async fn call(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> Result<(ApiAnswer, Option<Duration>), SendError> {
        let resp = req
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| network(what, e))?;
        let status = resp.status();
        let wait = crate::retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| network(what, e))?;
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(SendError::Retryable {
                message: format!("{what}: HTTP {status}"),
                retry_after: wait,
            });
        }
        let body = || self.scrub(&String::from_utf8_lossy(&bytes), token);
        if !status.is_success() {
            return Err(SendError::Permanent(format!("{what}: HTTP {status}: {}", body())));
        }
        let answer: ApiAnswer = serde_json::from_slice(&bytes)
            .map_err(|_| SendError::Permanent(format!("{what}: unexpected answer: {}", body())))?;
        Ok((answer, wait))
    }

    /// A new access token and its lifetime.
    async fn fetch_token(&self) -> Result<(String, Duration), SendError> {
        let req = self
            .http
            .get(format!("{}/cgi-bin/gettoken", self.settings.base()))
            .query(&[
                ("corpid", self.settings.corp_id.as_str()),
                ("corpsecret", self.settings.app_secret.as_str()),
            ]);
        let (answer, wait) = self.call("gettoken", req, None).await?;
        if answer.errcode != 0 {
            let what = format!(
                "gettoken: errcode {}: {}",
                answer.errcode,
                self.scrub(&answer.errmsg, None)
            );
            // 40001 here is a wrong Secret, 40013 a wrong CorpID: retrying cannot help.
            return Err(if RETRYABLE_ERRCODES.contains(&answer.errcode) {
                SendError::Retryable {
                    message: what,
                    retry_after: wait,
                }
            } else {
                SendError::Permanent(what)
            });
        }
        if answer.access_token.is_empty() {
            return Err(SendError::Permanent(
                "gettoken: no access_token in the answer".into(),
            ));
        }
        let ttl = if answer.expires_in == 0 {
            7200
        } else {
            answer.expires_in
        };
        Ok((answer.access_token, Duration::from_secs(ttl)))
    }

    async fn send_once(&self, token: &str, body: &Value, touser: &str) -> Result<(), ApiFailure> {
        let req = self
            .http
            .post(format!("{}/cgi-bin/message/send", self.settings.base()))
            .query(&[("access_token", token)])
            .json(body);
        let (answer, wait) = self
            .call("message/send", req, Some(token))
            .await
            .map_err(ApiFailure::Other)?;
        let what = || {
            format!(
                "message/send: errcode {}: {}",
                answer.errcode,
                self.scrub(&answer.errmsg, Some(token))
            )
        };
        match answer.errcode {
            0 if answer.invaliduser.split('|').any(|u| u == touser) => Err(ApiFailure::Other(
                SendError::Permanent(format!("message/send: invalid user {touser}")),
            )),
            0 => Ok(()),
            c if TOKEN_ERRCODES.contains(&c) => Err(ApiFailure::BadToken(what())),
            c if RETRYABLE_ERRCODES.contains(&c) => Err(ApiFailure::Other(SendError::Retryable {
                message: what(),
                retry_after: wait,
            })),
            _ => Err(ApiFailure::Other(SendError::Permanent(what()))),
        }
    }
}

/// The `200` with an empty body that acknowledges a callback.
pub fn ack() -> HttpReply {
    HttpReply::empty()
}

#[async_trait]
impl Adapter for WecomAdapter {
    fn platform(&self) -> Platform {
        Platform::Wecom
    }

    fn account(&self) -> &str {
        &self.account
    }

    fn handle(&self, req: &HttpRequest, now: i64) -> Result<Decoded, ChannelError> {
        let s = &self.settings;
        if s.token.is_empty() || s.corp_id.is_empty() {
            return Err(ChannelError::Unauthorized(
                "no token or corp_id configured".into(),
            ));
        }
        if let Err(m) = aes_key(&s.encoding_aes_key) {
            return Err(ChannelError::Unauthorized(format!(
                "encoding_aes_key misconfigured: {m}"
            )));
        }
        let (Some(signature), Some(timestamp), Some(nonce)) = (
            req.query_param("msg_signature"),
            req.query_param("timestamp"),
            req.query_param("nonce"),
        ) else {
            return Err(ChannelError::Unauthorized(
                "missing msg_signature, timestamp or nonce".into(),
            ));
        };
        let Ok(ts) = timestamp.trim().parse::<i64>() else {
            return Err(ChannelError::Unauthorized("timestamp is not a number".into()));
        };
        if !within_window(ts, now, TIMESTAMP_WINDOW_SECS) {
            return Err(ChannelError::Unauthorized(
                "timestamp more than one hour from now".into(),
            ));
        }
        let get = req.method == http::Method::GET;
        let encrypted = if get {
            // Base64 has no spaces: one here is a `+` that a form-style decoder turned into a
            // space (WeCom percent-encodes it, but a proxy may not).
            req.query_param("echostr")
                .ok_or_else(|| ChannelError::BadRequest("URL check without echostr".into()))?
                .trim()
                .replace(' ', "+")
        } else if req.method == http::Method::POST {
            let body = std::str::from_utf8(&req.body)
                .map_err(|_| ChannelError::BadRequest("body is not UTF-8".into()))?;
            let envelope: Envelope = quick_xml::de::from_str(body)
                .map_err(|e| ChannelError::BadRequest(format!("body is not WeCom XML: {e}")))?;
            envelope
                .encrypt
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .ok_or_else(|| ChannelError::BadRequest("body without Encrypt".into()))?
        } else {
            return Err(ChannelError::BadRequest("WeCom callbacks are GET or POST".into()));
        };
        if !verify_signature(&s.token, timestamp, nonce, &encrypted, signature) {
            return Err(ChannelError::Unauthorized("msg_signature mismatch".into()));
        }
        let (plain, receiveid) = decrypt(&s.encoding_aes_key, &encrypted)?;
        if !secure_eq(receiveid.as_bytes(), s.corp_id.trim().as_bytes()) {
            return Err(ChannelError::Unauthorized(
                "payload encrypted for another CorpID".into(),
            ));
        }
        let plain = String::from_utf8(plain)
            .map_err(|_| ChannelError::BadRequest("decrypted payload is not UTF-8".into()))?;
        if get {
            return Ok(Decoded::Challenge(HttpReply::text(plain)));
        }
        Ok(parse_message(&self.account, &s.agent_id, &plain)?.into_decoded(ack()))
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

    /// A text app message to the sender. WeCom has no idempotency key; its duplicate check
    /// (identical content to the same user within [`DUPLICATE_CHECK_INTERVAL_SECS`]) stands in for
    /// one, so `_idempotency_key` is unused.
    async fn send(&self, to: &InboundMessage, text: &str, _idempotency_key: &str) -> Result<(), SendError> {
        let agent = match self.settings.agent_id.trim() {
            "" => to
                .reply
                .get("agent_id")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            a => a,
        };
        let Ok(agentid) = agent.parse::<u64>() else {
            return Err(SendError::Permanent(format!(
                "agent_id {agent:?} is not a number"
            )));
        };
        let body = json!({
            "touser": to.sender_id,
            "msgtype": "text",
            "agentid": agentid,
            "text": { "content": text },
            "enable_duplicate_check": 1,
            "duplicate_check_interval": DUPLICATE_CHECK_INTERVAL_SECS,
        });
        let mut last = String::new();
        for _ in 0..2 {
            let token = self.token.get(|| self.fetch_token()).await?;
            match self.send_once(&token, &body, &to.sender_id).await {
                Ok(()) => return Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    #[test]
    fn key_with_nonzero_trailing_bits_is_accepted() {
        let key = aes_key(KEY).unwrap();
        assert_eq!(key[0], 0x8d);
        assert!(aes_key(&KEY[..42]).is_err());
        assert!(aes_key(&format!("{}!", &KEY[..42])).is_err());
    }

    #[test]
    fn padding_fills_whole_32_byte_blocks() {
        // 16 + 4 + 12 + 0 = 32 bytes of plaintext: a whole block of padding (32) follows.
        let ct = encrypt_with_random(KEY, [7; 16], b"twelve bytes", "").unwrap();
        assert_eq!(STANDARD.decode(&ct).unwrap().len(), 64);
        assert_eq!(
            decrypt(KEY, &ct).unwrap(),
            (b"twelve bytes".to_vec(), String::new())
        );
        // 33 bytes: padded to 64.
        let ct = encrypt_with_random(KEY, [7; 16], b"thirteen byte", "").unwrap();
        assert_eq!(STANDARD.decode(&ct).unwrap().len(), 64);
    }

    #[test]
    fn inconsistent_padding_is_refused() {
        let key = aes_key(KEY).unwrap();
        let mut plain = vec![0u8; 64];
        plain[19] = 4;
        plain[60..].copy_from_slice(&[1, 9, 9, 4]); // last byte 4, but not four 4s
        let ct = Aes256CbcEnc::new_from_slices(&key, &key[..16])
            .unwrap()
            .encrypt_padded_vec_mut::<NoPadding>(&plain);
        let err = decrypt(KEY, &STANDARD.encode(ct)).unwrap_err();
        assert!(matches!(err, ChannelError::BadRequest(m) if m.contains("padding")));
    }

    #[test]
    fn length_beyond_the_payload_is_refused() {
        let key = aes_key(KEY).unwrap();
        let mut plain = vec![0u8; 32];
        plain[19] = 200;
        plain.extend_from_slice(&[32; 32]);
        let ct = Aes256CbcEnc::new_from_slices(&key, &key[..16])
            .unwrap()
            .encrypt_padded_vec_mut::<NoPadding>(&plain);
        assert!(matches!(
            decrypt(KEY, &STANDARD.encode(ct)),
            Err(ChannelError::BadRequest(m)) if m.contains("length")
        ));
    }
}
