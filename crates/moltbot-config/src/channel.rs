//! Chat platform accounts (`[[channels]]`) and generic inbound hooks (`[[hooks]]`).

use std::fmt;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::Secret;

/// A chat platform an account (`[[channels]]`) lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelPlatform {
    /// Feishu (China).
    Feishu,
    /// Lark (Feishu's international edition).
    Lark,
    /// DingTalk.
    DingTalk,
    /// WeCom (WeChat Work), a self-built application.
    WeCom,
    /// Telegram bot.
    Telegram,
    /// Slack app.
    Slack,
}

/// How an account's messages arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelMode {
    /// The platform POSTs events to `/channels/<platform>/<account>`.
    Webhook,
    /// Telegram: `getUpdates` long polling (no public URL needed).
    Polling,
    /// DingTalk: the robot's HTTP callback to `/channels/dingtalk/<account>`.
    Http,
    /// DingTalk: a Stream mode connection (no public URL needed).
    Stream,
}

/// What an account of a platform takes: modes (the first is the default) and credentials.
#[derive(Debug)]
pub(crate) struct PlatformSpec {
    pub(crate) modes: &'static [ChannelMode],
    /// Credentials that must be set.
    pub(crate) required: &'static [&'static str],
    /// Credentials that must be set in the `webhook` mode only.
    pub(crate) webhook_required: &'static [&'static str],
    /// Credentials that may be set.
    pub(crate) optional: &'static [&'static str],
}

const FEISHU: PlatformSpec = PlatformSpec {
    modes: &[ChannelMode::Webhook],
    required: &["app_id", "app_secret", "verification_token"],
    webhook_required: &[],
    optional: &["encrypt_key"],
};

const DINGTALK: PlatformSpec = PlatformSpec {
    modes: &[ChannelMode::Http, ChannelMode::Stream],
    required: &["app_key", "app_secret"],
    webhook_required: &[],
    optional: &["robot_code"],
};

const WECOM: PlatformSpec = PlatformSpec {
    modes: &[ChannelMode::Webhook],
    required: &["corp_id", "agent_id", "app_secret", "token", "encoding_aes_key"],
    webhook_required: &[],
    optional: &[],
};

const TELEGRAM: PlatformSpec = PlatformSpec {
    modes: &[ChannelMode::Webhook, ChannelMode::Polling],
    required: &["bot_token"],
    webhook_required: &["secret_token"],
    optional: &[],
};

const SLACK: PlatformSpec = PlatformSpec {
    modes: &[ChannelMode::Webhook],
    required: &["bot_token", "signing_secret"],
    webhook_required: &[],
    optional: &[],
};

impl ChannelPlatform {
    /// Every platform, in the order of the docs.
    pub const ALL: [ChannelPlatform; 6] = [
        ChannelPlatform::Feishu,
        ChannelPlatform::Lark,
        ChannelPlatform::DingTalk,
        ChannelPlatform::WeCom,
        ChannelPlatform::Telegram,
        ChannelPlatform::Slack,
    ];

    /// `feishu`, `lark`, `dingtalk`, `wecom`, `telegram` or `slack` (the TOML value and URL part).
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelPlatform::Feishu => "feishu",
            ChannelPlatform::Lark => "lark",
            ChannelPlatform::DingTalk => "dingtalk",
            ChannelPlatform::WeCom => "wecom",
            ChannelPlatform::Telegram => "telegram",
            ChannelPlatform::Slack => "slack",
        }
    }

    pub(crate) fn spec(self) -> &'static PlatformSpec {
        match self {
            ChannelPlatform::Feishu | ChannelPlatform::Lark => &FEISHU,
            ChannelPlatform::DingTalk => &DINGTALK,
            ChannelPlatform::WeCom => &WECOM,
            ChannelPlatform::Telegram => &TELEGRAM,
            ChannelPlatform::Slack => &SLACK,
        }
    }

    /// The modes an account of this platform may use; the first is the default.
    pub fn modes(self) -> &'static [ChannelMode] {
        self.spec().modes
    }

    /// The mode used when `mode` is not set.
    pub fn default_mode(self) -> ChannelMode {
        self.spec().modes[0]
    }
}

impl fmt::Display for ChannelPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ChannelMode {
    /// Every mode, in the order of the docs.
    pub const ALL: [ChannelMode; 4] = [
        ChannelMode::Webhook,
        ChannelMode::Polling,
        ChannelMode::Http,
        ChannelMode::Stream,
    ];

    /// `webhook`, `polling`, `http` or `stream`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelMode::Webhook => "webhook",
            ChannelMode::Polling => "polling",
            ChannelMode::Http => "http",
            ChannelMode::Stream => "stream",
        }
    }

    /// Whether the platform calls moltbot over HTTP (`webhook`, `http`); otherwise moltbot holds a
    /// long-lived connection (`polling`, `stream`) on one replica.
    pub fn is_inbound_http(self) -> bool {
        matches!(self, ChannelMode::Webhook | ChannelMode::Http)
    }
}

impl fmt::Display for ChannelMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[channels]]` entry: an account on a chat platform.
///
/// Credentials are plain fields; which ones an account needs depends on `platform` (checked when
/// loading; a credential of another platform is an error). After loading, `mode` is always `Some`
/// and a DingTalk account's `robot_code` is always `Some` (default: `app_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// The platform (required in TOML; the `Default` value is only a placeholder).
    pub platform: ChannelPlatform,
    /// Account name, `[a-z0-9_-]{1,32}`, unique per platform.
    pub account: String,
    /// The configured model that answers; `None` = the first configured model.
    pub model: Option<String>,
    /// How messages arrive; after loading always `Some` (see [`ChannelConfig::mode`]).
    pub mode: Option<ChannelMode>,
    /// Base URL of the platform API; `None` = the platform's public API.
    pub api_base: Option<Url>,
    /// Groups: answer only messages that mention the bot.
    pub require_mention: bool,
    /// Chat ids that are answered; empty = all.
    pub allow_chats: Vec<String>,
    /// Sender ids that are answered; empty = all.
    pub allow_users: Vec<String>,
    /// Groups: one conversation per sender instead of one per group.
    pub per_user_in_groups: bool,
    /// System prompt of this account's conversations.
    pub system_prompt: Option<String>,
    /// Most replies per minute in one chat (>= 1).
    pub replies_per_minute: u32,
    /// The bot's own id for mention detection (feishu open_id, slack user id, telegram username).
    pub bot_id: Option<String>,
    /// feishu/lark: App ID.
    pub app_id: Option<String>,
    /// feishu/lark: App Secret; dingtalk: AppSecret; wecom: the agent's Secret.
    pub app_secret: Option<Secret>,
    /// feishu/lark: Verification Token.
    pub verification_token: Option<Secret>,
    /// feishu/lark: Encrypt Key (optional).
    pub encrypt_key: Option<Secret>,
    /// dingtalk: AppKey (Client ID).
    pub app_key: Option<String>,
    /// dingtalk: robot code (defaults to `app_key`).
    pub robot_code: Option<String>,
    /// wecom: CorpID.
    pub corp_id: Option<String>,
    /// wecom: AgentId.
    pub agent_id: Option<String>,
    /// wecom: callback Token.
    pub token: Option<Secret>,
    /// wecom: callback EncodingAESKey (43 characters).
    pub encoding_aes_key: Option<Secret>,
    /// telegram, slack: bot token.
    pub bot_token: Option<Secret>,
    /// telegram: webhook secret token (required in webhook mode).
    pub secret_token: Option<Secret>,
    /// slack: Signing Secret.
    pub signing_secret: Option<Secret>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            platform: ChannelPlatform::Feishu,
            account: String::new(),
            model: None,
            mode: None,
            api_base: None,
            require_mention: true,
            allow_chats: Vec::new(),
            allow_users: Vec::new(),
            per_user_in_groups: false,
            system_prompt: None,
            replies_per_minute: 20,
            bot_id: None,
            app_id: None,
            app_secret: None,
            verification_token: None,
            encrypt_key: None,
            app_key: None,
            robot_code: None,
            corp_id: None,
            agent_id: None,
            token: None,
            encoding_aes_key: None,
            bot_token: None,
            secret_token: None,
            signing_secret: None,
        }
    }
}

/// A credential's value, as far as validation needs it.
pub(crate) enum Credential<'a> {
    Plain(&'a str),
    Secret(&'a Secret),
}

impl Credential<'_> {
    pub(crate) fn text(&self) -> &str {
        match self {
            Credential::Plain(s) => s,
            Credential::Secret(s) => s.expose(),
        }
    }
}

impl ChannelConfig {
    /// The effective mode (`mode`, or the platform's default).
    pub fn mode(&self) -> ChannelMode {
        self.mode.unwrap_or_else(|| self.platform.default_mode())
    }

    /// DingTalk's robot code: `robot_code`, or `app_key`.
    pub fn robot_code(&self) -> Option<&str> {
        self.robot_code.as_deref().or(self.app_key.as_deref())
    }

    /// `/channels/<platform>/<account>`: where the platform sends events (webhook and http modes).
    pub fn path(&self) -> String {
        format!("/channels/{}/{}", self.platform, self.account)
    }

    /// Every credential field by key name, with its value when set.
    pub(crate) fn credentials(&self) -> [(&'static str, Option<Credential<'_>>); 13] {
        fn plain(v: &Option<String>) -> Option<Credential<'_>> {
            v.as_deref().map(Credential::Plain)
        }
        fn secret(v: &Option<Secret>) -> Option<Credential<'_>> {
            v.as_ref().map(Credential::Secret)
        }
        [
            ("app_id", plain(&self.app_id)),
            ("app_secret", secret(&self.app_secret)),
            ("verification_token", secret(&self.verification_token)),
            ("encrypt_key", secret(&self.encrypt_key)),
            ("app_key", plain(&self.app_key)),
            ("robot_code", plain(&self.robot_code)),
            ("corp_id", plain(&self.corp_id)),
            ("agent_id", plain(&self.agent_id)),
            ("token", secret(&self.token)),
            ("encoding_aes_key", secret(&self.encoding_aes_key)),
            ("bot_token", secret(&self.bot_token)),
            ("secret_token", secret(&self.secret_token)),
            ("signing_secret", secret(&self.signing_secret)),
        ]
    }
}

/// How a generic hook answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookMode {
    /// The answer is the HTTP response.
    #[default]
    Sync,
    /// `202 Accepted` at once; the answer is POSTed to `callback_url`.
    Async,
}

/// One `[[hooks]]` entry: `POST /hooks/<name>` asks a model.
///
/// Exactly one of `secret` (Standard Webhooks signature) and `token` (bearer) is set. After loading,
/// an async hook with a `secret` always has `callback_secret` (default: `secret`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookConfig {
    /// Hook name, `[a-z0-9_-]{1,64}`, unique.
    pub name: String,
    /// Standard Webhooks signing key (`whsec_` + base64) of incoming requests.
    pub secret: Option<Secret>,
    /// Bearer token of incoming requests.
    pub token: Option<Secret>,
    /// The configured model that answers; `None` = the first configured model.
    pub model: Option<String>,
    /// Answer in the response or by callback.
    pub mode: HookMode,
    /// Async: where the answer is POSTed.
    pub callback_url: Option<Url>,
    /// Async: Standard Webhooks key (`whsec_` + base64) that signs callbacks.
    pub callback_secret: Option<Secret>,
    /// System prompt of this hook's requests.
    pub system_prompt: Option<String>,
}

impl Default for HookConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            secret: None,
            token: None,
            model: None,
            mode: HookMode::Sync,
            callback_url: None,
            callback_secret: None,
            system_prompt: None,
        }
    }
}

impl HookConfig {
    /// `/hooks/<name>`.
    pub fn path(&self) -> String {
        format!("/hooks/{}", self.name)
    }

    /// The key that signs callbacks: `callback_secret`, or `secret`.
    pub fn callback_key(&self) -> Option<&Secret> {
        self.callback_secret.as_ref().or(self.secret.as_ref())
    }
}

/// Prefix of a Standard Webhooks signing key.
pub const WHSEC_PREFIX: &str = "whsec_";
/// Fewest bytes a Standard Webhooks key must decode to (the spec recommends 24 to 64).
pub const MIN_WHSEC_BYTES: usize = 24;

/// The key bytes of a Standard Webhooks secret (`whsec_` + standard base64), or why it is not one.
/// The message never contains the value.
pub fn decode_whsec(value: &str) -> Result<Vec<u8>, String> {
    let Some(encoded) = value.strip_prefix(WHSEC_PREFIX) else {
        return Err(format!(
            "expected a Standard Webhooks key starting with \"{WHSEC_PREFIX}\""
        ));
    };
    let bytes =
        decode_base64(encoded).ok_or_else(|| format!("expected standard base64 after \"{WHSEC_PREFIX}\""))?;
    if bytes.len() < MIN_WHSEC_BYTES {
        return Err(format!(
            "the key is {} bytes; use at least {MIN_WHSEC_BYTES} random bytes",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Standard base64 (RFC 4648 §4) with optional padding; `None` if malformed.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    STANDARD_ANY_PAD.decode(text).ok()
}
