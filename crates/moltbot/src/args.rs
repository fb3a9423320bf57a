//! Command-line arguments. Flags override every other configuration layer.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "moltbot", version, about = "Self-hosted conversational AI service", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Configuration file (default: ./moltbot.toml if present). Also MOLTBOT_CONFIG.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Dialog service address (chat_addr).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub chat_addr: Option<String>,
    /// Admin listener address (admin_addr).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub admin_addr: Option<String>,
    /// Debug listener address (debug_addr; development only).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub debug_addr: Option<String>,
    /// Database URL: sqlite://PATH or postgres://… (database_url).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis URL (redis_url).
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// development or production (profile).
    #[arg(long, global = true, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Development mode: enable the debug listener on 127.0.0.1:5000.
    #[arg(long, global = true)]
    pub dev: bool,
    /// text or json (log.format).
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the listeners (the default command).
    Serve(ServeArgs),
    /// Create or migrate the database (idempotent) and print the schema version. On a fresh database,
    /// create the first admin key (or take MOLTBOT_BOOTSTRAP_ADMIN_KEY / _FILE).
    InitDb(InitDbArgs),
    /// Manage API keys (offline, straight in the database; the admin API does the same online).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Exchange an API key for an access token (JWT), offline: the same as POST /v1/auth/token.
    Token(TokenArgs),
    /// Show or check the effective configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Check this installation like the troubleshooting guide would: config, ports, database,
    /// backends (DNS, TCP, TLS, key), model files, GPU, disk, secrets, clock. Non-zero exit on failure.
    Doctor(DoctorArgs),
    /// Fetch, verify, (optionally) quantize, smoke-test and register a local GGUF model.
    LoadModel(LoadModelArgs),
    /// Measure the local engine's prompt and generation tokens/s (a model file or a synthetic one).
    BenchEngine(BenchEngineArgs),
    /// Chat with a model from the terminal: against a running server (default) or in this process
    /// (--local). Replies stream; /help lists the commands; Ctrl-C cancels a reply, Ctrl-D leaves.
    Chat(ChatArgs),
    /// Probe a running server's readiness (container HEALTHCHECK, scripts): GET /ready on the dialog
    /// listener; exit 0 on a 2xx answer, 1 otherwise. Opens no database and loads no model.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// URL to probe (default: /ready on the configured dialog listener via loopback; https when
    /// tls.listeners includes dialog).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Give up after this long (humantime: 3s, 500ms).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Write the bound addresses as JSON to this file once ready.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Apply pending PostgreSQL migrations before serving.
    #[arg(long)]
    pub migrate: bool,
    /// Print a newly created bootstrap admin key even when stdout is not a terminal.
    #[arg(long)]
    pub print_admin_key: bool,
}

#[derive(Debug, Args, Default)]
pub struct InitDbArgs {
    /// Print a newly created bootstrap admin key even when stdout is not a terminal (it always goes
    /// to auth.bootstrap_key_file, mode 0600).
    #[arg(long)]
    pub print_admin_key: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print its secret (shown once).
    Create(KeysCreateArgs),
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id; tokens issued for it stop working within auth.key_cache_ttl.
    Revoke {
        /// The key id (`key_…`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    /// Who or what holds the key.
    #[arg(long)]
    pub name: String,
    /// Comma-separated: chat, conversations, admin, metrics.
    #[arg(long, default_value = "chat,conversations")]
    pub scopes: String,
    /// Requests per minute (default: limits.requests_per_minute).
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Tokens per minute (default: limits.tokens_per_minute).
    #[arg(long)]
    pub tpm: Option<u32>,
    /// Tokens per UTC day (default: limits.daily_tokens).
    #[arg(long)]
    pub daily_tokens: Option<u64>,
    /// Concurrent streams (default: limits.concurrent_streams).
    #[arg(long)]
    pub streams: Option<u32>,
    /// Lifetime such as 30d or 12h; default: no expiry.
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The API key; `-` reads it from standard input (keeps it out of the process list).
    #[arg(long, value_name = "KEY")]
    pub api_key: String,
    /// Token lifetime, e.g. 24h (default auth.token_ttl; capped by the key's expiry).
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
}

#[derive(Debug, Args, Default)]
pub struct DoctorArgs {
    /// Print the checks as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Do not hash local model files (large files take a while).
    #[arg(long)]
    pub no_checksums: bool,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration with every secret as ***.
    Show,
    /// Validate the configuration; exit non-zero with a precise message if it is invalid.
    Check,
}

#[derive(Debug, Args)]
pub struct LoadModelArgs {
    /// A GGUF file, a directory holding one, http(s)://…, s3://…, gs://… or az://…
    #[arg(long, value_name = "PATH|URL")]
    pub model_path: String,
    /// Expected SHA-256 of the downloaded file (hex).
    #[arg(long, value_name = "HEX", conflicts_with = "md5")]
    pub sha256: Option<String>,
    /// Expected MD5 of the downloaded file (hex).
    #[arg(long, value_name = "HEX")]
    pub md5: Option<String>,
    /// Quantize F32/F16/BF16 weights: 4bit (Q4_K_M), 8bit (Q8_0) or none.
    #[arg(long, default_value = "none", value_name = "4bit|8bit|none")]
    pub quantization: String,
    /// Default and maximum completion tokens.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: u32,
    /// Layers offloaded to the GPU (ignored with a warning when there is none).
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: u32,
    /// Context window per sequence (default: the model's training context, at most 4096).
    #[arg(long)]
    pub context: Option<u32>,
    /// Public model name (default: the file name without extension).
    #[arg(long)]
    pub name: Option<String>,
    /// Where downloads and quantized files go.
    #[arg(long, default_value = "models", value_name = "DIR")]
    pub models_dir: PathBuf,
    /// Skip the smoke generation.
    #[arg(long)]
    pub no_smoke: bool,
}

#[derive(Debug, Args)]
pub struct BenchEngineArgs {
    /// A random-weight llama model of this size: tiny, 270m, 1b, 3b or 8b (written to a temp file).
    #[arg(long, value_name = "SIZE", conflicts_with = "model")]
    pub synthetic: Option<String>,
    /// Weight type of the synthetic model: q8_0, f16 or f32.
    #[arg(long, default_value = "q8_0")]
    pub weights: String,
    /// A GGUF model file instead of a synthetic one.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// CPU threads (default: half the CPUs).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Layers offloaded to the GPU (999 = all).
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: u32,
    /// Prompt tokens.
    #[arg(long, default_value_t = 512)]
    pub prompt: usize,
    /// Generated tokens per stream.
    #[arg(long = "gen", default_value_t = 128)]
    pub gen_tokens: u32,
    /// Concurrent streams for the aggregate figure.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Also run the raw decode loop baseline over the same bindings.
    #[arg(long)]
    pub baseline: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Default)]
pub struct ChatArgs {
    /// The server's base URL (default: http://<chat_addr> of the configuration).
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    pub url: Option<String>,
    /// API key (default: the file auth.bootstrap_key_file, ./data/admin-key.txt). Never printed.
    #[arg(long, env = "MOLTBOT_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Run the configured models in this process (the local model first): no server, no HTTP.
    #[arg(long)]
    pub local: bool,
    /// Model to start with (default: the first local model with --local, else `default` if served,
    /// else the first one listed).
    #[arg(long)]
    pub model: Option<String>,
    /// Continue a stored conversation (`conv_…`).
    #[arg(long, value_name = "ID")]
    pub conversation: Option<String>,
}
