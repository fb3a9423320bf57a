//! The key table: every configuration key, its environment variable, flag, default and type.
//!
//! This table is the schema: unknown-key detection, value checking, secret resolution
//! (every `Secret` key accepts `_file`/`_command`/`_env` variants), `docs/config.md` and
//! `moltbot.example.toml` are all driven by it. Tests make sure it matches [`crate::Config`].

use crate::types::TOKENIZERS;

/// The type of a key's value, as checked before typed extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Any string.
    String,
    /// `true` / `false`.
    Bool,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned integer (`usize`).
    Usize,
    /// Floating point number.
    F32,
    /// humantime duration string: `250ms`, `5s`, `1m`, `24h`.
    Duration,
    /// `IP:port`.
    SocketAddr,
    /// `http://` or `https://` model endpoint (normalised: a trailing `/chat/completions` or `/chat`
    /// is removed).
    HttpUrl,
    /// `http://` or `https://` URL, kept as given.
    Url,
    /// List of CIDR ranges (a bare IP means a single address).
    CidrList,
    /// List of strings.
    StringList,
    /// List of secret strings (plain values only).
    SecretList,
    /// Secret string; also settable via `<key>_file` / `<key>_command` / `<key>_env`.
    Secret,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// An array of tables (`[[models]]`, `[[channels]]`, `[[hooks]]`); TOML only.
    TableList,
}

impl ValueKind {
    /// What a value of this kind looks like, for error messages and docs.
    pub fn expected(self) -> String {
        match self {
            ValueKind::String | ValueKind::Secret => "a string".to_owned(),
            ValueKind::Bool => "true or false".to_owned(),
            ValueKind::U32 => "a whole number from 0 to 4294967295".to_owned(),
            ValueKind::Usize => "a whole number".to_owned(),
            ValueKind::F32 => "a number".to_owned(),
            ValueKind::Duration => "a duration like \"250ms\", \"5s\" or \"1m\"".to_owned(),
            ValueKind::SocketAddr => "host:port".to_owned(),
            ValueKind::HttpUrl | ValueKind::Url => "an http:// or https:// URL".to_owned(),
            ValueKind::CidrList => "a list of CIDR ranges like [\"10.0.0.0/8\"]".to_owned(),
            ValueKind::StringList | ValueKind::SecretList => "a list of strings".to_owned(),
            ValueKind::Enum(values) => {
                let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                format!("one of {}", quoted.join(", "))
            }
            ValueKind::TableList => "an array of tables".to_owned(),
        }
    }

    /// Short type name for the docs table.
    pub fn type_name(self) -> String {
        match self {
            ValueKind::String => "string".to_owned(),
            ValueKind::Secret => "secret".to_owned(),
            ValueKind::Bool => "bool".to_owned(),
            ValueKind::U32 | ValueKind::Usize => "integer".to_owned(),
            ValueKind::F32 => "number".to_owned(),
            ValueKind::Duration => "duration".to_owned(),
            ValueKind::SocketAddr => "IP:port".to_owned(),
            ValueKind::HttpUrl | ValueKind::Url => "URL".to_owned(),
            ValueKind::CidrList => "list of CIDRs".to_owned(),
            ValueKind::StringList => "list of strings".to_owned(),
            ValueKind::SecretList => "list of secrets".to_owned(),
            ValueKind::Enum(values) => values.join(" | "),
            ValueKind::TableList => "array of tables".to_owned(),
        }
    }

    /// Whether an environment value for this kind is kept as the raw string
    /// (rather than parsed like a figment value).
    pub(crate) fn is_stringly(self) -> bool {
        matches!(
            self,
            ValueKind::String
                | ValueKind::Secret
                | ValueKind::Duration
                | ValueKind::SocketAddr
                | ValueKind::HttpUrl
                | ValueKind::Url
                | ValueKind::Enum(_)
        )
    }
}

/// Documentation and schema of one key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// Dotted key path; `models[]` stands for every `[[models]]` entry (likewise `channels[]`, `hooks[]`).
    pub key: &'static str,
    /// Environment variable, `None` for keys that only TOML can set (arrays of tables).
    pub env: Option<&'static str>,
    /// Command-line flag, if any.
    pub flag: Option<&'static str>,
    /// Default, as shown in docs (`unset` = no value; text in parentheses = computed).
    pub default: &'static str,
    /// Value type.
    pub kind: ValueKind,
    /// Whether the value is a secret (never printed; `_file` / `_command` / `_env` variants).
    pub is_secret: bool,
    /// One-line description.
    pub description: &'static str,
}

const fn k(
    key: &'static str,
    env: Option<&'static str>,
    flag: Option<&'static str>,
    default: &'static str,
    kind: ValueKind,
    description: &'static str,
) -> KeyDoc {
    let is_secret = matches!(kind, ValueKind::Secret | ValueKind::SecretList);
    KeyDoc {
        key,
        env,
        flag,
        default,
        kind,
        is_secret,
        description,
    }
}

const PROFILES: &[&str] = &["development", "production"];
const REDIS_FAILURE: &[&str] = &["open", "closed"];
const LOG_FORMATS: &[&str] = &["text", "json"];
const BACKENDS: &[&str] = &["remote", "local"];
const POOLINGS: &[&str] = &["none", "mean", "cls", "last"];
/// Values of `channels[].platform` (the order of [`crate::ChannelPlatform::ALL`]).
pub(crate) const PLATFORMS: &[&str] = &["feishu", "lark", "dingtalk", "wecom", "telegram", "slack"];
/// Values of `channels[].mode` (the order of [`crate::ChannelMode::ALL`]).
pub(crate) const CHANNEL_MODES: &[&str] = &["webhook", "polling", "http", "stream"];
const HOOK_MODES: &[&str] = &["sync", "async"];

use ValueKind as V;

/// Every configuration key. Adding a `ValueKind::Secret` row is all a new secret needs.
#[rustfmt::skip]
pub const KEYS: &[KeyDoc] = &[
    k("profile", Some("MOLTBOT_PROFILE"), Some("--profile"), "development", V::Enum(PROFILES),
      "Deployment profile; chooses several defaults and turns on production checks."),
    k("chat_addr", Some("MOLTBOT_CHAT_ADDR"), Some("--chat-addr"),
      "127.0.0.1:18789 (development), 0.0.0.0:18789 (production)", V::SocketAddr,
      "Listener of the public OpenAI-compatible API."),
    k("admin_addr", Some("MOLTBOT_ADMIN_ADDR"), Some("--admin-addr"),
      "127.0.0.1:8080 (development), 0.0.0.0:8080 (production)", V::SocketAddr,
      "Listener of the admin API."),
    k("debug_addr", Some("MOLTBOT_DEBUG_ADDR"), Some("--debug-addr, --dev"), "unset", V::SocketAddr,
      "Debug listener; `--dev` sets it to 127.0.0.1:5000. Refused in the production profile."),
    k("metrics_addr", Some("MOLTBOT_METRICS_ADDR"), None, "unset", V::SocketAddr,
      "Own listener for `/metrics` only; unset = `/metrics` is served on the admin listener."),
    k("database_url", Some("MOLTBOT_DATABASE_URL"), Some("--database-url"), "sqlite://./data/moltbot.db",
      V::String, "Database: `sqlite:…`, `postgres://…` or `postgresql://…`."),
    k("database_password", Some("MOLTBOT_DATABASE_PASSWORD"), None, "unset", V::Secret,
      "Database password, injected into a postgres URL."),
    k("redis_url", Some("MOLTBOT_REDIS_URL"), Some("--redis-url"), "unset", V::String,
      "Optional Redis: `redis://…` or `rediss://…`."),
    k("tokenizer", Some("MOLTBOT_TOKENIZER"), None, "o200k_base", V::Enum(TOKENIZERS),
      "Default tokenizer encoding for remote models."),
    k("server.body_limit_bytes", Some("MOLTBOT_SERVER__BODY_LIMIT_BYTES"), None, "4194304", V::Usize,
      "Largest accepted request body in bytes."),
    k("server.request_timeout", Some("MOLTBOT_SERVER__REQUEST_TIMEOUT"), None, "5m", V::Duration,
      "Timeout of non-streaming requests."),
    k("server.shutdown_delay", Some("MOLTBOT_SERVER__SHUTDOWN_DELAY"), None, "5s", V::Duration,
      "On shutdown: time between failing readiness and closing the listeners."),
    k("server.shutdown_grace", Some("MOLTBOT_SERVER__SHUTDOWN_GRACE"), None, "25s", V::Duration,
      "On shutdown: how long in-flight requests may finish."),
    k("server.admin_allow_cidrs", Some("MOLTBOT_SERVER__ADMIN_ALLOW_CIDRS"), None, "[]", V::CidrList,
      "Networks allowed to reach the admin listener; empty = any (requests are still authenticated)."),
    k("server.debug_allow_cidrs", Some("MOLTBOT_SERVER__DEBUG_ALLOW_CIDRS"), None,
      "[\"127.0.0.0/8\",\"::1/128\"]", V::CidrList, "Networks allowed to reach the debug listener."),
    k("server.debug_requests", Some("MOLTBOT_SERVER__DEBUG_REQUESTS"), None, "100", V::Usize,
      "How many recent request summaries `/debug/requests` keeps (0 = none; kept only while the debug listener is on)."),
    k("server.trusted_proxies", Some("MOLTBOT_SERVER__TRUSTED_PROXIES"), None, "[]", V::CidrList,
      "Proxies whose X-Forwarded-For header is trusted."),
    k("server.cors_origins", Some("MOLTBOT_SERVER__CORS_ORIGINS"), None, "[]", V::StringList,
      "Origins allowed to call the API from a browser (CORS), e.g. [\"https://app.example.com\"]; empty = none."),
    k("server.ws_ping_interval", Some("MOLTBOT_SERVER__WS_PING_INTERVAL"), None, "20s", V::Duration,
      "WebSocket chat (`/v1/ws`): how often the server pings."),
    k("server.ws_idle_timeout", Some("MOLTBOT_SERVER__WS_IDLE_TIMEOUT"), None, "2m", V::Duration,
      "WebSocket chat: close a socket after this long without a frame from the client."),
    k("server.ws_send_timeout", Some("MOLTBOT_SERVER__WS_SEND_TIMEOUT"), None, "30s", V::Duration,
      "WebSocket chat: a client that accepts no data for this long is too slow; its turns are cancelled and the socket closed."),
    k("log.format", Some("MOLTBOT_LOG__FORMAT"), Some("--log-format"),
      "text (development), json (production)", V::Enum(LOG_FORMATS), "Log output format."),
    k("log.level", Some("MOLTBOT_LOG__LEVEL"), None, "info", V::String,
      "Log level or filter directives, e.g. `info,moltbot_llm=debug`."),
    k("log.prompts", Some("MOLTBOT_LOG__PROMPTS"), None, "false", V::Bool,
      "Log prompt and completion text (sensitive)."),
    k("store.record_exchanges", Some("MOLTBOT_STORE__RECORD_EXCHANGES"), None, "true", V::Bool,
      "Record request/response exchanges in the database."),
    k("store.max_connections", Some("MOLTBOT_STORE__MAX_CONNECTIONS"), None, "10", V::U32,
      "Database connection pool size."),
    k("store.busy_timeout", Some("MOLTBOT_STORE__BUSY_TIMEOUT"), None, "5s", V::Duration,
      "SQLite busy timeout."),
    k("store.idempotency_ttl", Some("MOLTBOT_STORE__IDEMPOTENCY_TTL"), None, "24h", V::Duration,
      "How long idempotency keys are remembered."),
    k("auth.jwt_secret", Some("MOLTBOT_AUTH__JWT_SECRET"), None, "unset", V::Secret,
      "Key that signs session tokens (at least 32 bytes recommended)."),
    k("auth.jwt_previous_secrets", Some("MOLTBOT_AUTH__JWT_PREVIOUS_SECRETS"), None, "[]", V::SecretList,
      "Earlier signing keys still accepted when verifying (rotation); plain values only."),
    k("auth.token_ttl", Some("MOLTBOT_AUTH__TOKEN_TTL"), None, "24h", V::Duration,
      "Default lifetime of access tokens from /v1/auth/token (capped by the key's expiry)."),
    k("auth.max_token_ttl", Some("MOLTBOT_AUTH__MAX_TOKEN_TTL"), None, "7days", V::Duration,
      "Longest access-token lifetime a client may request."),
    k("auth.clock_leeway", Some("MOLTBOT_AUTH__CLOCK_LEEWAY"), None, "30s", V::Duration,
      "Clock difference tolerated when checking a token's exp, nbf and iat."),
    k("auth.key_cache_ttl", Some("MOLTBOT_AUTH__KEY_CACHE_TTL"), None, "5s", V::Duration,
      "How long API key lookups are cached; a revocation takes effect on every replica within this."),
    k("auth.lockout_threshold", Some("MOLTBOT_AUTH__LOCKOUT_THRESHOLD"), None, "10", V::U32,
      "Failed authentications from one client address (within lockout_window) that lock it out."),
    k("auth.lockout_window", Some("MOLTBOT_AUTH__LOCKOUT_WINDOW"), None, "5m", V::Duration,
      "Window in which failed authentications are counted."),
    k("auth.lockout_duration", Some("MOLTBOT_AUTH__LOCKOUT_DURATION"), None, "15m", V::Duration,
      "How long a locked-out address gets 429."),
    k("auth.bootstrap_key_file", Some("MOLTBOT_AUTH__BOOTSTRAP_KEY_FILE"), None, "./data/admin-key.txt",
      V::String, "File (mode 0600) that receives the first admin key of a fresh database."),
    k("limits.requests_per_minute", Some("MOLTBOT_LIMITS__REQUESTS_PER_MINUTE"), None, "unset", V::U32,
      "Default requests per minute per API key (a key's own limit wins); unset = unlimited."),
    k("limits.tokens_per_minute", Some("MOLTBOT_LIMITS__TOKENS_PER_MINUTE"), None, "unset", V::U32,
      "Default tokens (prompt + completion) per minute per API key; unset = unlimited."),
    k("limits.daily_tokens", Some("MOLTBOT_LIMITS__DAILY_TOKENS"), None, "unset", V::Usize,
      "Default tokens per API key per UTC day; unset = unlimited."),
    k("limits.concurrent_streams", Some("MOLTBOT_LIMITS__CONCURRENT_STREAMS"), None, "unset", V::U32,
      "Default streaming responses open at once per API key; unset = unlimited."),
    k("limits.burst_window", Some("MOLTBOT_LIMITS__BURST_WINDOW"), None, "1m", V::Duration,
      "Burst B = rate × burst_window: with R per minute, at most B + R·t pass in t minutes."),
    k("admin.session_ttl", Some("MOLTBOT_ADMIN__SESSION_TTL"), None, "8h", V::Duration,
      "Lifetime of an admin console session (the `moltbot_admin` cookie); signing in again starts a new one."),
    k("cluster.redis_key_prefix", Some("MOLTBOT_CLUSTER__REDIS_KEY_PREFIX"), None, "moltbot:", V::String,
      "Prefix of every Redis key moltbot writes (several deployments can share one Redis)."),
    k("cluster.redis_failure", Some("MOLTBOT_CLUSTER__REDIS_FAILURE"), None, "open", V::Enum(REDIS_FAILURE),
      "When Redis is unreachable: `open` = per-replica limits in memory (metric `moltbot_redis_up` 0) or `closed` = 503 `redis_unavailable`."),
    k("cluster.redis_timeout", Some("MOLTBOT_CLUSTER__REDIS_TIMEOUT"), None, "250ms", V::Duration,
      "Budget of one Redis operation before the `redis_failure` policy applies."),
    k("engine.cpu_variant", Some("MOLTBOT_ENGINE__CPU_VARIANT"), None, "auto", V::String,
      "Portable builds: the llama.cpp CPU backend, `auto` (best that passes a probe) or a variant (`haswell`, `skylakex`, `x64`, …)."),
    k("engine.backends_dir", Some("MOLTBOT_ENGINE__BACKENDS_DIR"), None, "(backends/ beside the binary)", V::String,
      "Portable builds: the directory holding `libggml-cpu-*.so`."),
    k("tls.cert", Some("MOLTBOT_TLS__CERT"), None, "unset", V::String,
      "Certificate chain (PEM file, leaf first) for native TLS; needs `tls.key`. Reloaded without restart when the files change."),
    k("tls.key", Some("MOLTBOT_TLS__KEY"), None, "unset", V::String,
      "Private key (PEM file) of `tls.cert`."),
    k("tls.listeners", Some("MOLTBOT_TLS__LISTENERS"), None, "[\"dialog\",\"admin\"]", V::StringList,
      "Listeners that speak TLS when `tls.cert` or `tls.acme.domains` is set: any of dialog, admin, metrics, debug."),
    k("tls.reload_interval", Some("MOLTBOT_TLS__RELOAD_INTERVAL"), None, "10s", V::Duration,
      "How often `tls.cert`/`tls.key` are checked; a changed valid pair is swapped in, an invalid one keeps the old (also on SIGHUP)."),
    k("tls.acme.domains", Some("MOLTBOT_TLS__ACME__DOMAINS"), None, "[]", V::StringList,
      "Built-in ACME: domains of the certificate; non-empty = obtain and renew it (instead of `tls.cert`/`tls.key`)."),
    k("tls.acme.contact", Some("MOLTBOT_TLS__ACME__CONTACT"), None, "[]", V::StringList,
      "ACME account contacts, e.g. [\"mailto:ops@example.com\"]."),
    k("tls.acme.directory_url", Some("MOLTBOT_TLS__ACME__DIRECTORY_URL"), None, crate::types::LETS_ENCRYPT_DIRECTORY,
      V::HttpUrl, "ACME directory (default Let's Encrypt production)."),
    k("tls.acme.ca_file", Some("MOLTBOT_TLS__ACME__CA_FILE"), None, "unset", V::String,
      "Extra root CA (PEM) trusted for the connection to the ACME server (a private CA, or pebble in tests)."),
    k("tls.acme.cache_dir", Some("MOLTBOT_TLS__ACME__CACHE_DIR"), None, "data/acme", V::String,
      "ACME account key and certificates, kept across restarts (no reissue on restart)."),
    k("tls.acme.http01_addr", Some("MOLTBOT_TLS__ACME__HTTP01_ADDR"), None, "unset", V::SocketAddr,
      "Plain-HTTP listener (port 80 in production) for HTTP-01; redirects other paths to https. Unset = TLS-ALPN-01 on the HTTPS listener."),
    k("pipeline.workers", Some("MOLTBOT_PIPELINE__WORKERS"), None, "4", V::U32,
      "Channels and hooks: inbound events answered at once by this replica (>= 1)."),
    k("pipeline.lock_timeout", Some("MOLTBOT_PIPELINE__LOCK_TIMEOUT"), None, "2m", V::Duration,
      "An event claimed by a worker that died (or stopped renewing its claim) is retried after this."),
    k("pipeline.max_attempts", Some("MOLTBOT_PIPELINE__MAX_ATTEMPTS"), None, "8", V::U32,
      "Attempts to answer and deliver one event, including the first (>= 1); then it is marked failed."),
    k("pipeline.retry_base", Some("MOLTBOT_PIPELINE__RETRY_BASE"), None, "2s", V::Duration,
      "First delay before a failed event is retried (doubling, with jitter)."),
    k("pipeline.retry_max", Some("MOLTBOT_PIPELINE__RETRY_MAX"), None, "5m", V::Duration,
      "Longest delay between retries of an event (a platform's Retry-After may ask for more)."),
    k("pipeline.retention", Some("MOLTBOT_PIPELINE__RETENTION"), None, "7days", V::Duration,
      "How long dedupe keys and finished events are kept; longer than any platform's redelivery window (>= 1h)."),
    k("pipeline.lease_ttl", Some("MOLTBOT_PIPELINE__LEASE_TTL"), None, "15s", V::Duration,
      "Long-lived connections (Telegram polling, DingTalk Stream) run on the one replica holding this lease; another takes over after it lapses."),
    k("pipeline.poll_interval", Some("MOLTBOT_PIPELINE__POLL_INTERVAL"), None, "1s", V::Duration,
      "How often idle workers check the queue (events accepted on this replica wake them at once)."),
    k("webhooks.workers", Some("MOLTBOT_WEBHOOKS__WORKERS"), None, "2", V::U32,
      "Outbound event webhooks: deliveries in flight at once on this replica (>= 1)."),
    k("webhooks.timeout", Some("MOLTBOT_WEBHOOKS__TIMEOUT"), None, "10s", V::Duration,
      "Outbound webhooks: how long one delivery may take; a slower endpoint counts as failed."),
    k("webhooks.first_retry", Some("MOLTBOT_WEBHOOKS__FIRST_RETRY"), None, "5s", V::Duration,
      "Outbound webhooks: delay before the first retry of a failed delivery (then doubling, with jitter)."),
    k("webhooks.retry_for", Some("MOLTBOT_WEBHOOKS__RETRY_FOR"), None, "24h", V::Duration,
      "Outbound webhooks: a delivery is retried for this long after the event, then given up."),
    k("webhooks.allow_private_targets", Some("MOLTBOT_WEBHOOKS__ALLOW_PRIVATE_TARGETS"), None,
      "true (development), false (production)", V::Bool,
      "Outbound webhooks may go to loopback, private and link-local addresses (refused by default in production: SSRF)."),
    k("memory.enabled", Some("MOLTBOT_MEMORY__ENABLED"), None, "true", V::Bool,
      "Compact a stored conversation that outgrows its model's context: its oldest turns become a summary instead of being dropped (docs/memory.md)."),
    k("memory.compact_at", Some("MOLTBOT_MEMORY__COMPACT_AT"), None, "0.75", V::F32,
      "Compact before a turn whose prompt passes this fraction (0–1] of the budget (context window less the reply's tokens)."),
    k("memory.keep_recent", Some("MOLTBOT_MEMORY__KEEP_RECENT"), None, "4", V::U32,
      "Latest turns (a user message and what follows it) kept verbatim, never compacted (>= 1)."),
    k("memory.summary_model", Some("MOLTBOT_MEMORY__SUMMARY_MODEL"), None, "(the conversation's model)", V::String,
      "The configured model that writes summaries."),
    k("memory.summary_max_tokens", Some("MOLTBOT_MEMORY__SUMMARY_MAX_TOKENS"), None, "1024", V::U32,
      "Most tokens of a summary (>= 16; also capped by the summary model's max_tokens)."),
    k("memory.prompt", Some("MOLTBOT_MEMORY__PROMPT"), None, "(built in: keep facts, names, numbers, decisions)", V::String,
      "Summarisation instructions (a system message); the conversation follows as a transcript."),
    k("models", None, None, "[]", V::TableList,
      "Model definitions, one `[[models]]` table each (TOML only)."),
    k("models[].name", None, None, "(required)", V::String, "Public model name; unique."),
    k("models[].backend", None, None, "remote", V::Enum(BACKENDS),
      "`remote` (OpenAI-compatible HTTP) or `local` (a GGUF file run by llama.cpp in-process)."),
    k("models[].endpoint", None, None, "(required for remote)", V::HttpUrl,
      "Base URL such as `https://api.openai.com/v1`; a trailing `/chat/completions` or `/chat` is removed."),
    k("models[].api_key", None, None, "unset", V::Secret, "API key; omit for keyless local servers."),
    k("models[].api_keys", None, None, "[]", V::SecretList,
      "Extra API keys, used in turn after `api_key` (rotation); plain values only."),
    k("models[].upstream_model", None, None, "(the model's name)", V::String,
      "Model id sent upstream."),
    k("models[].max_tokens", None, None, "2048", V::U32,
      "Default output tokens, and the cap for explicit `max_tokens`."),
    k("models[].context_window", None, None, "8192", V::U32, "Context window in tokens."),
    k("models[].temperature", None, None, "unset", V::F32, "Default temperature (0–2)."),
    k("models[].top_p", None, None, "unset", V::F32, "Default top_p (0–1]."),
    k("models[].tokenizer", None, None, "(top-level tokenizer)", V::Enum(TOKENIZERS),
      "Tokenizer encoding of this model."),
    k("models[].fallbacks", None, None, "[]", V::StringList,
      "Models tried in order when this one fails; must exist, no cycles."),
    k("models[].key_cooldown", None, None, "1m", V::Duration,
      "How long a key that got 429 or 401 rests."),
    k("models[].always_stream", None, None, "false", V::Bool,
      "Remote: ask the upstream for a stream also for non-streaming clients (platforms that stream some models only; stalls caught by `timeouts.first_byte`/`idle`)."),
    k("models[].model_path", None, None, "(required for local)", V::String,
      "Local: GGUF file, or a directory holding exactly one; `context_window` is the context of each slot."),
    k("models[].gpu_layers", None, None, "0", V::U32,
      "Local: layers offloaded to the GPU (needs a `--features cuda` build; 999 = all)."),
    k("models[].parallel", None, None, "4", V::U32, "Local: sequences decoded together (batching slots)."),
    k("models[].threads", None, None, "(half the CPUs)", V::U32,
      "Local: CPU threads; more than idle cores makes generation much slower."),
    k("models[].batch_size", None, None, "512", V::U32, "Local: tokens per decode step."),
    k("models[].queue_capacity", None, None, "64", V::U32,
      "Local: requests waiting for a slot before 503 with `Retry-After`."),
    k("models[].chat_template", None, None, "(from the GGUF)", V::String,
      "Local: Jinja chat template overriding the GGUF's; without either, a plain transcript is used."),
    k("models[].pooling", None, None, "(from the GGUF)", V::Enum(POOLINGS),
      "Local: embeddings pooling, overriding the GGUF's `pooling_type`; a model with neither serves no embeddings."),
    k("models[].timeouts.connect", None, None, "5s", V::Duration, "Upstream connect timeout."),
    k("models[].timeouts.first_byte", None, None, "1m", V::Duration,
      "Timeout until the first byte of a streamed reply (a non-streaming client's whole JSON reply has `total`)."),
    k("models[].timeouts.idle", None, None, "1m", V::Duration, "Longest silence while streaming."),
    k("models[].timeouts.total", None, None, "10m", V::Duration, "Timeout of the whole upstream request."),
    k("models[].retry.max_attempts", None, None, "3", V::U32, "Attempts in total, including the first (>= 1)."),
    k("models[].retry.base_delay", None, None, "200ms", V::Duration, "First backoff delay."),
    k("models[].retry.max_delay", None, None, "10s", V::Duration, "Largest backoff delay."),
    k("models[].retry.retry_after_cap", None, None, "30s", V::Duration, "Longest `Retry-After` honoured."),
    k("models[].circuit.failure_threshold", None, None, "5", V::U32,
      "Consecutive failures that open the circuit (>= 1)."),
    k("models[].circuit.open_for", None, None, "30s", V::Duration,
      "How long an open circuit rejects requests before a trial."),
    k("models[].limits.requests_per_minute", None, None, "unset", V::U32, "Local request rate limit."),
    k("models[].limits.tokens_per_minute", None, None, "unset", V::U32, "Local token rate limit."),
    k("channels", None, None, "[]", V::TableList,
      "Chat platform accounts, one `[[channels]]` table each (TOML only); webhook URL `/channels/<platform>/<account>`."),
    k("channels[].platform", None, None, "(required)", V::Enum(PLATFORMS),
      "The chat platform; decides the credentials and modes the account takes (see Channels below)."),
    k("channels[].account", None, None, "(required)", V::String,
      "Account name: 1 to 32 of `a-z 0-9 _ -`, unique per platform; the last part of the webhook URL."),
    k("channels[].model", None, None, "(the first model)", V::String,
      "The configured model that answers."),
    k("channels[].mode", None, None, "(the platform's first mode)", V::Enum(CHANNEL_MODES),
      "How messages arrive: telegram `webhook` or `polling`; dingtalk `http` or `stream`; the others `webhook`."),
    k("channels[].api_base", None, None, "(the platform's public API)", V::Url,
      "Base URL of the platform's API, for private deployments and tests."),
    k("channels[].require_mention", None, None, "true", V::Bool,
      "In group chats, answer only messages that mention the bot (direct chats are always answered)."),
    k("channels[].allow_chats", None, None, "[]", V::StringList,
      "Chat ids that are answered; empty = every chat."),
    k("channels[].allow_users", None, None, "[]", V::StringList,
      "Sender ids that are answered; empty = everyone."),
    k("channels[].per_user_in_groups", None, None, "false", V::Bool,
      "In group chats, keep one conversation per sender instead of one shared by the group."),
    k("channels[].system_prompt", None, None, "unset", V::String,
      "System prompt put before every conversation of this account."),
    k("channels[].replies_per_minute", None, None, "20", V::U32,
      "Most replies per minute in one chat (>= 1)."),
    k("channels[].bot_id", None, None, "unset", V::String,
      "The bot's own id, for mention detection: feishu/lark open_id, slack user id, telegram username."),
    k("channels[].app_id", None, None, "unset", V::String, "feishu/lark: App ID (`cli_…`)."),
    k("channels[].app_secret", None, None, "unset", V::Secret,
      "feishu/lark: App Secret; dingtalk: AppSecret (Client Secret); wecom: the agent's Secret."),
    k("channels[].verification_token", None, None, "unset", V::Secret,
      "feishu/lark: Verification Token of the event subscription."),
    k("channels[].encrypt_key", None, None, "unset", V::Secret,
      "feishu/lark: Encrypt Key of the event subscription (optional; set it when encryption is on)."),
    k("channels[].app_key", None, None, "unset", V::String, "dingtalk: AppKey (Client ID)."),
    k("channels[].robot_code", None, None, "(app_key)", V::String,
      "dingtalk: the robot's code for sending messages."),
    k("channels[].corp_id", None, None, "unset", V::String, "wecom: the company's CorpID (`ww…`)."),
    k("channels[].agent_id", None, None, "unset", V::String, "wecom: the application's AgentId."),
    k("channels[].token", None, None, "unset", V::Secret, "wecom: Token of the callback (receive messages) settings."),
    k("channels[].encoding_aes_key", None, None, "unset", V::Secret,
      "wecom: EncodingAESKey of the callback settings (43 letters and digits)."),
    k("channels[].bot_token", None, None, "unset", V::Secret,
      "telegram: bot token from @BotFather; slack: Bot User OAuth Token (`xoxb-…`)."),
    k("channels[].secret_token", None, None, "unset", V::Secret,
      "telegram: webhook secret token (1 to 256 of `A-Z a-z 0-9 _ -`); required in webhook mode."),
    k("channels[].signing_secret", None, None, "unset", V::Secret, "slack: the app's Signing Secret."),
    k("hooks", None, None, "[]", V::TableList,
      "Generic inbound hooks, one `[[hooks]]` table each (TOML only): POST `/hooks/<name>` asks a model."),
    k("hooks[].name", None, None, "(required)", V::String,
      "Hook name: 1 to 64 of `a-z 0-9 _ -`, unique; the last part of the URL `/hooks/<name>`."),
    k("hooks[].secret", None, None, "unset", V::Secret,
      "Standard Webhooks signing key (`whsec_` + base64 of 24 or more bytes) that callers sign with; set this or `token`."),
    k("hooks[].token", None, None, "unset", V::Secret,
      "Bearer token callers send in `Authorization: Bearer …`; set this or `secret`."),
    k("hooks[].model", None, None, "(the first model)", V::String, "The configured model that answers."),
    k("hooks[].mode", None, None, "sync", V::Enum(HOOK_MODES),
      "`sync`: the answer is the HTTP response; `async`: 202 at once, the answer is POSTed to `callback_url`."),
    k("hooks[].callback_url", None, None, "(required for async)", V::Url,
      "Async hooks: where the answer is POSTed, signed per Standard Webhooks."),
    k("hooks[].callback_secret", None, None, "(secret)", V::Secret,
      "Async hooks: Standard Webhooks key (`whsec_…`) that signs callbacks."),
    k("hooks[].system_prompt", None, None, "unset", V::String,
      "System prompt put before every request of this hook."),
];

/// Suffixes of the indirect forms of a secret key: a file, a command, an environment variable.
pub(crate) const SECRET_SUFFIXES: &[&str] = &["_file", "_command", "_env"];

/// The key with this schema path (`models[].name` style).
pub fn key_doc(schema_path: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|d| d.key == schema_path)
}

/// Schema path of a secret key whose `_file`/`_command`/`_env` variant this is.
pub(crate) fn secret_variant(schema_path: &str) -> Option<(&'static KeyDoc, &'static str)> {
    SECRET_SUFFIXES.iter().find_map(|suffix| {
        let base = schema_path.strip_suffix(suffix)?;
        key_doc(base)
            .filter(|d| d.kind == ValueKind::Secret)
            .map(|d| (d, *suffix))
    })
}

/// Whether keys live below this schema path (`server`, `models[].retry`).
pub(crate) fn is_table(schema_path: &str) -> bool {
    let dotted = format!("{schema_path}.");
    KEYS.iter().any(|d| d.key.starts_with(&dotted))
}

/// Whether this schema path is an array of tables (`models`, `channels`, `hooks`).
pub(crate) fn is_table_list(schema_path: &str) -> bool {
    key_doc(schema_path).is_some_and(|d| d.kind == ValueKind::TableList)
}

/// Key docs whose kind is `Secret`: the keys secret resolution looks at.
pub(crate) fn secret_keys() -> impl Iterator<Item = &'static KeyDoc> {
    KEYS.iter().filter(|d| d.kind == ValueKind::Secret)
}

/// Closest known key in the same table, for "did you mean" hints.
pub(crate) fn suggest(schema_path: &str) -> Option<&'static str> {
    let (table, leaf) = match schema_path.rsplit_once('.') {
        Some((t, l)) => (Some(t), l),
        None => (None, schema_path),
    };
    KEYS.iter()
        .filter(|d| d.key.rsplit_once('.').map(|(t, _)| t) == table)
        .map(|d| {
            (
                d.key,
                edit_distance(leaf, d.key.rsplit('.').next().unwrap_or(d.key)),
            )
        })
        .filter(|(_, dist)| *dist <= 2)
        .min_by_key(|(_, dist)| *dist)
        .map(|(key, _)| key)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
