//! The typed configuration.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::render::redact_url;
use crate::{ChannelConfig, ChannelPlatform, HookConfig, ModelConfig, Secret};

/// Default debug listener address (used by `--dev`).
pub const DEFAULT_DEBUG_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5000);
/// Default public chat port.
pub const DEFAULT_CHAT_PORT: u16 = 18789;
/// Default admin port.
pub const DEFAULT_ADMIN_PORT: u16 = 8080;
/// Tokenizer encodings that may be configured.
pub const TOKENIZERS: &[&str] = &["o200k_base", "cl100k_base"];

/// Deployment profile. Several defaults depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Local development: loopback listeners, text logs, debug listener allowed.
    #[default]
    Development,
    /// Production: listeners on all interfaces, JSON logs, debug listener refused.
    Production,
}

impl Profile {
    /// `"development"` or `"production"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Development => "development",
            Profile::Production => "production",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole, validated configuration. `Debug` hides secrets and URL passwords.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Deployment profile.
    pub profile: Profile,
    /// Public OpenAI-compatible listener.
    pub chat_addr: SocketAddr,
    /// Admin listener.
    pub admin_addr: SocketAddr,
    /// Debug listener; refused in production.
    pub debug_addr: Option<SocketAddr>,
    /// Own listener for `/metrics`; `None` = served on the admin listener.
    pub metrics_addr: Option<SocketAddr>,
    /// `sqlite:…`, `postgres://…` or `postgresql://…`.
    pub database_url: String,
    /// Database password, injected into a postgres URL by the store.
    pub database_password: Option<Secret>,
    /// `redis://…` or `rediss://…`.
    pub redis_url: Option<String>,
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// Storage.
    pub store: StoreConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Default per-key rate limits and quotas.
    pub limits: KeyLimitsConfig,
    /// Admin console.
    pub admin: AdminConfig,
    /// The local model engine (llama.cpp) as a whole.
    pub engine: EngineSettings,
    /// Several replicas sharing state through Redis (`[cluster]`).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Native TLS on the listeners (`[tls]`).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Models (`[[models]]` in TOML).
    pub models: Vec<ModelConfig>,
    /// Chat platform accounts (`[[channels]]` in TOML).
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    /// Generic inbound hooks (`[[hooks]]` in TOML).
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
    /// The inbound delivery pipeline of channels and hooks (`[pipeline]`).
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Outbound event webhooks (`[webhooks]`).
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Conversation memory: compaction of long stored conversations (`[memory]`).
    #[serde(default)]
    pub memory: crate::MemoryConfig,
    /// Default tokenizer encoding for remote models.
    pub tokenizer: String,
}

/// HTTP server settings (`[server]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Timeout of non-streaming requests.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Delay between failing readiness and closing listeners on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// How long in-flight requests may finish on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Networks allowed to reach the admin listener; empty = all.
    pub admin_allow_cidrs: Vec<IpNet>,
    /// Networks allowed to reach the debug listener.
    pub debug_allow_cidrs: Vec<IpNet>,
    /// How many recent request summaries the debug listener keeps.
    pub debug_requests: usize,
    /// Proxies whose `X-Forwarded-For` is trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed by CORS (`https://app.example.com`); empty = no cross-origin access.
    pub cors_origins: Vec<String>,
    /// WebSocket chat: interval of server pings.
    #[serde(with = "humantime_serde")]
    pub ws_ping_interval: Duration,
    /// WebSocket chat: close after this long without a frame from the client.
    #[serde(with = "humantime_serde")]
    pub ws_idle_timeout: Duration,
    /// WebSocket chat: longest a send may wait for a slow client before its turns are cancelled.
    #[serde(with = "humantime_serde")]
    pub ws_send_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(300),
            shutdown_delay: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(25),
            admin_allow_cidrs: Vec::new(),
            debug_allow_cidrs: vec![
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
                IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
            ],
            debug_requests: 100,
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            ws_ping_interval: Duration::from_secs(20),
            ws_idle_timeout: Duration::from_secs(120),
            ws_send_timeout: Duration::from_secs(30),
        }
    }
}

/// Logging (`[log]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Level or filter directives, e.g. `info` or `info,moltbot_llm=debug`.
    pub level: String,
    /// Log prompt and completion text.
    pub prompts: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
            prompts: false,
        }
    }
}

/// Storage (`[store]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Record request/response exchanges.
    pub record_exchanges: bool,
    /// Connection pool size.
    pub max_connections: u32,
    /// SQLite busy timeout.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// How long idempotency keys are remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            record_exchanges: true,
            max_connections: 10,
            busy_timeout: Duration::from_secs(5),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Authentication (`[auth]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Key that signs session tokens.
    pub jwt_secret: Option<Secret>,
    /// Earlier signing keys still accepted for verification (key rotation).
    pub jwt_previous_secrets: Vec<Secret>,
    /// Default lifetime of access tokens (capped by the key's expiry).
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Longest lifetime a client may ask for.
    #[serde(with = "humantime_serde")]
    pub max_token_ttl: Duration,
    /// Tolerated clock difference for `exp`, `nbf` and `iat`.
    #[serde(with = "humantime_serde")]
    pub clock_leeway: Duration,
    /// How long a looked-up API key is cached (a revocation elsewhere takes effect within this).
    #[serde(with = "humantime_serde")]
    pub key_cache_ttl: Duration,
    /// Failed authentications from one client address that trigger a lockout.
    pub lockout_threshold: u32,
    /// Window in which failures are counted.
    #[serde(with = "humantime_serde")]
    pub lockout_window: Duration,
    /// How long a locked-out address gets 429.
    #[serde(with = "humantime_serde")]
    pub lockout_duration: Duration,
    /// Where `init-db` / the first `serve` writes the bootstrap admin key (mode 0600).
    pub bootstrap_key_file: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_previous_secrets: Vec::new(),
            token_ttl: Duration::from_secs(24 * 60 * 60),
            max_token_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            clock_leeway: Duration::from_secs(30),
            key_cache_ttl: Duration::from_secs(5),
            lockout_threshold: 10,
            lockout_window: Duration::from_secs(5 * 60),
            lockout_duration: Duration::from_secs(15 * 60),
            bootstrap_key_file: "./data/admin-key.txt".to_owned(),
        }
    }
}

/// Default per-key limits (`[limits]`); a key's own limits take precedence. Unset = unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyLimitsConfig {
    /// Requests per minute per key.
    pub requests_per_minute: Option<u32>,
    /// Prompt + completion tokens per minute per key.
    pub tokens_per_minute: Option<u32>,
    /// Tokens per key per UTC day.
    pub daily_tokens: Option<u64>,
    /// Streaming responses open at once per key.
    pub concurrent_streams: Option<u32>,
    /// Burst: a fresh key may spend this much of its per-minute rate at once.
    #[serde(with = "humantime_serde")]
    pub burst_window: Duration,
}

impl Default for KeyLimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            daily_tokens: None,
            concurrent_streams: None,
            burst_window: Duration::from_secs(60),
        }
    }
}

/// Admin console (`[admin]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Lifetime of an admin console session (the `moltbot_admin` cookie).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

/// What replicas do when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisFailure {
    /// Keep serving with per-replica limits in memory (`moltbot_redis_up` 0, a warning).
    #[default]
    Open,
    /// Refuse rate-limited requests with 503 `redis_unavailable`.
    Closed,
}

/// Replicas sharing limits, lockouts, tickets and sign-outs through Redis (`[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Prefix of every Redis key.
    pub redis_key_prefix: String,
    /// Policy while Redis is unreachable.
    pub redis_failure: RedisFailure,
    /// Budget of one Redis operation.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_key_prefix: "moltbot:".to_owned(),
            redis_failure: RedisFailure::Open,
            redis_timeout: Duration::from_millis(250),
        }
    }
}

/// The local model engine (`[engine]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Portable builds: which llama.cpp CPU backend to load (`auto` or a variant name).
    pub cpu_variant: String,
    /// Portable builds: where the `libggml-cpu-*.so` modules are; `None` = `backends/` beside the binary.
    pub backends_dir: Option<String>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            cpu_variant: "auto".to_owned(),
            backends_dir: None,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(8 * 60 * 60),
        }
    }
}

/// The inbound delivery pipeline of channels and hooks (`[pipeline]`): events are stored, deduplicated,
/// claimed by workers, answered and delivered with retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Events answered at once by this replica.
    pub workers: u32,
    /// An event claimed by a worker that died is retried after this.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// Attempts per event, including the first.
    pub max_attempts: u32,
    /// First retry delay (doubling, with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How long dedupe keys and finished events are kept (>= 1h, longer than platforms' redelivery).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Lease of the replica that runs long-lived connections (Telegram polling, DingTalk Stream).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often idle workers check the queue.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            lock_timeout: Duration::from_secs(120),
            max_attempts: 8,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            lease_ttl: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Outbound event webhooks (`[webhooks]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Deliveries in flight at once on this replica.
    pub workers: u32,
    /// Timeout of one delivery.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Delay before the first retry (doubling, with jitter).
    #[serde(with = "humantime_serde")]
    pub first_retry: Duration,
    /// How long after the event a delivery is retried before it is given up.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// Whether targets may be loopback, private or link-local addresses (default: only in development).
    pub allow_private_targets: bool,
}

impl WebhooksConfig {
    /// The defaults of a profile (`allow_private_targets` only in development).
    pub fn defaults(profile: Profile) -> Self {
        Self {
            workers: 2,
            timeout: Duration::from_secs(10),
            first_retry: Duration::from_secs(5),
            retry_for: Duration::from_secs(24 * 60 * 60),
            allow_private_targets: profile == Profile::Development,
        }
    }
}

impl Default for WebhooksConfig {
    /// The development defaults.
    fn default() -> Self {
        Self::defaults(Profile::Development)
    }
}

/// Listener names that `tls.listeners` may contain.
pub const TLS_LISTENERS: &[&str] = &["dialog", "admin", "metrics", "debug"];

/// Native TLS (`[tls]`): a certificate from files (reloaded when they change) or from ACME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM), leaf first.
    pub cert: Option<String>,
    /// Private key (PEM) of `cert`.
    pub key: Option<String>,
    /// Listeners that speak TLS: any of `dialog`, `admin`, `metrics`, `debug`.
    pub listeners: Vec<String>,
    /// How often `cert`/`key` are checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Built-in ACME (`[tls.acme]`).
    pub acme: AcmeSettings,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            listeners: vec!["dialog".to_owned(), "admin".to_owned()],
            reload_interval: Duration::from_secs(10),
            acme: AcmeSettings::default(),
        }
    }
}

impl TlsConfig {
    /// Whether TLS is configured at all (files or ACME).
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || !self.acme.domains.is_empty()
    }

    /// Whether this listener (`dialog`, `admin`, `metrics`, `debug`) speaks TLS.
    pub fn on(&self, listener: &str) -> bool {
        self.enabled() && self.listeners.iter().any(|l| l == listener)
    }
}

/// Default ACME directory: Let's Encrypt production.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Built-in ACME (`[tls.acme]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeSettings {
    /// Domains of the certificate; non-empty turns ACME on.
    pub domains: Vec<String>,
    /// Account contacts (`mailto:…`).
    pub contact: Vec<String>,
    /// ACME directory URL.
    pub directory_url: String,
    /// Extra root CA (PEM) trusted for the connection to the ACME server.
    pub ca_file: Option<String>,
    /// Where the account key and certificates are cached across restarts.
    pub cache_dir: String,
    /// Plain-HTTP listener for HTTP-01 challenges (redirects everything else to https).
    pub http01_addr: Option<SocketAddr>,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            contact: Vec::new(),
            directory_url: LETS_ENCRYPT_DIRECTORY.to_owned(),
            ca_file: None,
            cache_dir: "data/acme".to_owned(),
            http01_addr: None,
        }
    }
}

impl Config {
    /// The built-in defaults for a profile (no models, channels or hooks).
    pub fn defaults(profile: Profile) -> Self {
        let (host, format) = match profile {
            Profile::Development => (IpAddr::V4(Ipv4Addr::LOCALHOST), LogFormat::Text),
            Profile::Production => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), LogFormat::Json),
        };
        Self {
            profile,
            chat_addr: SocketAddr::new(host, DEFAULT_CHAT_PORT),
            admin_addr: SocketAddr::new(host, DEFAULT_ADMIN_PORT),
            debug_addr: None,
            metrics_addr: None,
            database_url: "sqlite://./data/moltbot.db".to_owned(),
            database_password: None,
            redis_url: None,
            server: ServerConfig::default(),
            log: LogConfig {
                format,
                ..LogConfig::default()
            },
            store: StoreConfig::default(),
            auth: AuthConfig::default(),
            limits: KeyLimitsConfig::default(),
            admin: AdminConfig::default(),
            engine: EngineSettings::default(),
            cluster: ClusterConfig::default(),
            tls: TlsConfig::default(),
            models: Vec::new(),
            channels: Vec::new(),
            hooks: Vec::new(),
            pipeline: PipelineConfig::default(),
            webhooks: WebhooksConfig::defaults(profile),
            memory: crate::MemoryConfig::default(),
            tokenizer: TOKENIZERS[0].to_owned(),
        }
    }

    /// The channel account on this platform with this name.
    pub fn channel(&self, platform: ChannelPlatform, account: &str) -> Option<&ChannelConfig> {
        self.channels
            .iter()
            .find(|c| c.platform == platform && c.account == account)
    }

    /// The hook with this name.
    pub fn hook(&self, name: &str) -> Option<&HookConfig> {
        self.hooks.iter().find(|h| h.name == name)
    }

    /// The model with this public name.
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Whether the database is SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("profile", &self.profile)
            .field("chat_addr", &self.chat_addr)
            .field("admin_addr", &self.admin_addr)
            .field("debug_addr", &self.debug_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("database_url", &redact_url(&self.database_url))
            .field("database_password", &self.database_password)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("server", &self.server)
            .field("log", &self.log)
            .field("store", &self.store)
            .field("auth", &self.auth)
            .field("limits", &self.limits)
            .field("admin", &self.admin)
            .field("tls", &self.tls)
            .field("cluster", &self.cluster)
            .field("models", &self.models.iter().map(debug_model).collect::<Vec<_>>())
            .field(
                "channels",
                &self.channels.iter().map(debug_channel).collect::<Vec<_>>(),
            )
            .field("hooks", &self.hooks.iter().map(debug_hook).collect::<Vec<_>>())
            .field("pipeline", &self.pipeline)
            .field("webhooks", &self.webhooks)
            .field("memory", &self.memory)
            .field("tokenizer", &self.tokenizer)
            .finish()
    }
}

/// A URL with its password (userinfo or `password=` parameter) replaced by `***`, for `Debug`.
fn redacted(url: &Url) -> Url {
    Url::parse(&redact_url(url.as_str())).unwrap_or_else(|_| url.clone())
}

fn debug_model(m: &ModelConfig) -> ModelConfig {
    ModelConfig {
        endpoint: m.endpoint.as_ref().map(redacted),
        ..m.clone()
    }
}

fn debug_channel(c: &ChannelConfig) -> ChannelConfig {
    ChannelConfig {
        api_base: c.api_base.as_ref().map(redacted),
        ..c.clone()
    }
}

fn debug_hook(h: &HookConfig) -> HookConfig {
    HookConfig {
        callback_url: h.callback_url.as_ref().map(redacted),
        ..h.clone()
    }
}

impl Default for Config {
    /// The development defaults.
    fn default() -> Self {
        Self::defaults(Profile::Development)
    }
}
