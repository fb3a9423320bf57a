//! Cross-key rules, model checks, production refusals and warnings.

use super::{Dir, MODEL_A, assert_contains, env, env_opts, load_err, load_ok};
use crate::{Config, ConfigError, LoadOptions, LoadedConfig};

/// Loads `toml` as the config file (the temporary directory lives until loading is done).
fn models(toml: &str) -> Result<LoadedConfig, ConfigError> {
    let dir = Dir::new();
    Config::load(dir.with_file(toml))
}

#[track_caller]
fn models_ok(toml: &str) -> LoadedConfig {
    models(toml).unwrap_or_else(|e| panic!("expected the configuration to load, got: {e}"))
}

#[track_caller]
fn models_err(toml: &str) -> String {
    match models(toml) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

const TWO: &str = r#"
[[models]]
name = "a"
endpoint = "https://a.example/v1"
fallbacks = ["b"]
[[models]]
name = "b"
endpoint = "https://b.example/v1"
"#;

#[test]
fn model_defaults_and_inheritance() {
    let c = models_ok(&format!(
        "tokenizer = \"cl100k_base\"\n{TWO}tokenizer = \"o200k_base\"\n"
    ))
    .config;
    let (a, b) = (&c.models[0], &c.models[1]);
    assert_eq!(a.upstream_model.as_deref(), Some("a"));
    assert_eq!(a.tokenizer.as_deref(), Some("cl100k_base"));
    assert_eq!(b.tokenizer.as_deref(), Some("o200k_base"));
    assert_eq!(a.fallbacks, ["b"]);
    assert_eq!(a.max_tokens, 2048);
    assert_eq!(a.retry.max_attempts, 3);
    assert_eq!(c.model("b").map(|m| m.name.as_str()), Some("b"));
}

#[test]
fn model_sub_tables_parse() {
    let toml = format!(
        "{MODEL_A}api_keys = [\"k2\", \"k3\"]\napi_key = \"k1\"\ntemperature = 0.7\nkey_cooldown = \"90s\"\nalways_stream = true\n\
         [models.timeouts]\nconnect = \"250ms\"\n[models.retry]\nmax_attempts = 5\n\
         [models.circuit]\nopen_for = \"1m\"\n[models.limits]\nrequests_per_minute = 60\n"
    );
    let m = models_ok(&toml).config.models.remove(0);
    let keys: Vec<&str> = m.keys().iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["k1", "k2", "k3"]);
    assert_eq!(m.temperature, Some(0.7));
    assert_eq!(m.key_cooldown.as_secs(), 90);
    assert!(m.always_stream);
    assert_eq!(m.timeouts.connect.as_millis(), 250);
    assert_eq!(m.timeouts.total.as_secs(), 600);
    assert_eq!(m.retry.max_attempts, 5);
    assert_eq!(m.circuit.open_for.as_secs(), 60);
    assert_eq!(m.limits.requests_per_minute, Some(60));
    assert_eq!(m.limits.tokens_per_minute, None);
}

#[test]
fn fallbacks_must_exist_and_not_cycle() {
    let msg = models_err(&format!("{MODEL_A}fallbacks = [\"nope\"]\n"));
    assert_contains(
        &msg,
        "invalid value for \"models[0].fallbacks\": fallback \"nope\" of model \"a\" is not a configured model (in ",
    );
    let msg = models_err(&format!("{MODEL_A}fallbacks = [\"a\"]\n"));
    assert_contains(&msg, "model \"a\" lists itself as a fallback");
    let cycle = format!(
        "{TWO}fallbacks = [\"c\"]\n[[models]]\nname = \"c\"\nendpoint = \"https://c.example/v1\"\nfallbacks = [\"a\"]\n"
    );
    let msg = models_err(&cycle);
    assert_contains(&msg, "fallbacks form a cycle: a -> b -> c -> a");
    models_ok(TWO);
}

#[test]
fn model_checks() {
    let msg = models_err(&format!("{MODEL_A}{MODEL_A}"));
    assert_contains(
        &msg,
        "\"models[1].name\": model name \"a\" is already used by models[0]",
    );
    let msg = models_err("[[models]]\nname = \"x\"\n");
    assert_contains(
        &msg,
        "\"models[0].endpoint\": a remote model needs an endpoint (model \"x\")",
    );
    let msg = models_err("[[models]]\nendpoint = \"https://a.example/v1\"\n");
    assert_contains(&msg, "\"models[0].name\": every model needs a non-empty name");
    let msg = models_err(&format!("{MODEL_A}backend = \"local\"\n"));
    assert_contains(&msg, "\"models[0].model_path\": a local model needs model_path");
    let msg = models_err(&format!(
        "{MODEL_A}backend = \"local\"\nmodel_path = \"m.gguf\"\n"
    ));
    assert_contains(&msg, "\"models[0].endpoint\": a local model has no endpoint");
    let msg =
        models_err("[[models]]\nname = \"l\"\nbackend = \"local\"\nmodel_path = \"m.gguf\"\nparallel = 0\n");
    assert_contains(&msg, "\"models[0].parallel\": must be at least 1");
    let msg = models_err(&format!("{MODEL_A}[models.retry]\nmax_attempts = 0\n"));
    assert_contains(&msg, "\"models[0].retry.max_attempts\": must be at least 1");
    let msg = models_err(&format!("{MODEL_A}[models.circuit]\nfailure_threshold = 0\n"));
    assert_contains(
        &msg,
        "\"models[0].circuit.failure_threshold\": must be at least 1",
    );
    let msg = models_err(&format!("{MODEL_A}max_tokens = 9000\n"));
    assert_contains(
        &msg,
        "\"models[0].max_tokens\": 9000 is larger than context_window (8192)",
    );
    let msg = models_err(&format!("{MODEL_A}temperature = 3\n"));
    assert_contains(
        &msg,
        "\"models[0].temperature\": expected a number from 0 to 2, got 3",
    );
    let msg = models_err(&format!("{MODEL_A}tokenizer = \"gpt2\"\n"));
    assert_contains(
        &msg,
        "\"models[0].tokenizer\": expected one of \"o200k_base\", \"cl100k_base\", got \"gpt2\"",
    );
    let msg = models_err(&format!("{MODEL_A}[models.limits]\ntokens_per_minute = 0\n"));
    assert_contains(&msg, "must be at least 1 (omit it for no limit)");
}

#[test]
fn production_refuses_debug_listener() {
    let err = load_err(env_opts(&[
        ("MOLTBOT_PROFILE", "production"),
        ("MOLTBOT_DEBUG_ADDR", "127.0.0.1:5000"),
    ]));
    assert!(matches!(err, ConfigError::Rule(_)));
    assert_contains(
        &err.to_string(),
        "debug listener is refused in the production profile",
    );

    let mut opts = env_opts(&[("MOLTBOT_PROFILE", "production")]);
    opts.overrides.dev = true;
    let msg = load_err(opts).to_string();
    assert_contains(&msg, "debug listener is refused in the production profile");
    assert_contains(&msg, "--dev");

    let mut opts = LoadOptions::default();
    opts.overrides.dev = true;
    assert!(
        load_ok(opts).config.debug_addr.is_some(),
        "allowed in development"
    );
}

#[test]
fn production_requires_a_jwt_secret() {
    let msg = load_err(env_opts(&[("MOLTBOT_PROFILE", "production")])).to_string();
    assert_contains(&msg, "auth.jwt_secret is required in the production profile");
}

#[test]
fn production_refuses_a_short_jwt_secret() {
    let msg = load_err(env_opts(&[
        ("MOLTBOT_PROFILE", "production"),
        ("MOLTBOT_AUTH__JWT_SECRET", "too-short-secret"),
    ]))
    .to_string();
    assert_contains(&msg, "auth.jwt_secret is shorter than 32 bytes");
    assert_contains(&msg, "MOLTBOT_AUTH__JWT_SECRET");
    assert!(!msg.contains("too-short-secret"), "{msg}");
    let dev = load_ok(env_opts(&[("MOLTBOT_AUTH__JWT_SECRET", "too-short-secret")]));
    assert!(dev.warnings.iter().any(|w| w.contains("shorter than 32 bytes")));
}

#[test]
fn auth_and_limit_rules() {
    let msg = load_err(env_opts(&[("MOLTBOT_LIMITS__REQUESTS_PER_MINUTE", "0")])).to_string();
    assert_contains(&msg, "\"limits.requests_per_minute\": must be at least 1");
    let msg = load_err(env_opts(&[("MOLTBOT_AUTH__TOKEN_TTL", "30days")])).to_string();
    assert_contains(&msg, "longer than auth.max_token_ttl");
    let msg = load_err(env_opts(&[("MOLTBOT_AUTH__LOCKOUT_THRESHOLD", "0")])).to_string();
    assert_contains(&msg, "auth.lockout_threshold");
    let msg = load_err(env_opts(&[(
        "MOLTBOT_SERVER__CORS_ORIGINS",
        "[\"https://app.example.com/path\"]",
    )]))
    .to_string();
    assert_contains(&msg, "server.cors_origins[0]");
    let ok = load_ok(env_opts(&[
        ("MOLTBOT_SERVER__CORS_ORIGINS", "[\"https://app.example.com\"]"),
        ("MOLTBOT_LIMITS__DAILY_TOKENS", "5000000000"),
    ]))
    .config;
    assert_eq!(ok.server.cors_origins, ["https://app.example.com"]);
    assert_eq!(ok.limits.daily_tokens, Some(5_000_000_000));
}

#[test]
fn bootstrap_admin_key_comes_from_env_or_file() {
    let key = "mb_0123456789abcdef0123456789abcdef01234567";
    let loaded = load_ok(env_opts(&[("MOLTBOT_BOOTSTRAP_ADMIN_KEY", key)]));
    assert_eq!(loaded.bootstrap_admin_key.as_ref().map(|s| s.expose()), Some(key));
    assert_eq!(loaded.config, Config::default(), "not a config key");
    let dir = Dir::new();
    let path = dir.write("admin-key", &format!("{key}\n"));
    let mut opts = dir.opts();
    opts.env = env(&[("MOLTBOT_BOOTSTRAP_ADMIN_KEY_FILE", path.to_str().unwrap())]);
    assert_eq!(
        load_ok(opts).bootstrap_admin_key.as_ref().map(|s| s.expose()),
        Some(key)
    );
    let msg = load_err(env_opts(&[("MOLTBOT_BOOTSTRAP_ADMIN_KEY", "hunter2")])).to_string();
    assert_contains(&msg, "MOLTBOT_BOOTSTRAP_ADMIN_KEY: expected `mb_`");
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = load_err(env_opts(&[
        ("MOLTBOT_BOOTSTRAP_ADMIN_KEY", key),
        ("MOLTBOT_BOOTSTRAP_ADMIN_KEY_FILE", "/x"),
    ]))
    .to_string();
    assert_contains(&msg, "both set");
    assert!(load_ok(LoadOptions::default()).bootstrap_admin_key.is_none());
}

#[test]
fn production_warnings() {
    let dir = Dir::new();
    let mut opts = dir.with_file("[log]\nprompts = true\n");
    opts.env = env(&[
        ("MOLTBOT_PROFILE", "production"),
        ("MOLTBOT_AUTH__JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    ]);
    let warnings = load_ok(opts).warnings;
    for needle in ["admin_allow_cidrs", "log.prompts", "SQLite"] {
        assert!(
            warnings.iter().any(|w| w.contains(needle)),
            "no warning about {needle}: {warnings:?}"
        );
    }

    let quiet = load_ok(env_opts(&[
        ("MOLTBOT_PROFILE", "production"),
        ("MOLTBOT_SERVER__ADMIN_ALLOW_CIDRS", "10.0.0.0/8"),
        ("MOLTBOT_DATABASE_URL", "postgres://db/moltbot"),
        ("MOLTBOT_AUTH__JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    ]));
    assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);

    let short = load_ok(env_opts(&[("MOLTBOT_AUTH__JWT_SECRET", "short")])).warnings;
    assert!(
        short.iter().any(|w| w.contains("shorter than 32 bytes")),
        "{short:?}"
    );
}

#[test]
fn plain_http_to_remote_host_warns() {
    let toml = "[[models]]\nname = \"far\"\nendpoint = \"http://10.1.2.3:8000/v1\"\n\
                [[models]]\nname = \"near\"\nendpoint = \"http://localhost:11434/v1\"\n\
                [[models]]\nname = \"loop\"\nendpoint = \"http://[::1]:8000/v1\"\n";
    let warnings = models_ok(toml).warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_contains(
        &warnings[0],
        "models[0].endpoint: model \"far\" uses plain http://",
    );
}

#[test]
fn database_and_redis_urls() {
    let msg = load_err(env_opts(&[("MOLTBOT_DATABASE_URL", "mysql://root:hunter2@db/x")])).to_string();
    assert_contains(
        &msg,
        "invalid value for \"database_url\": expected a URL starting with sqlite:, postgres:// or postgresql://",
    );
    assert_contains(&msg, "MOLTBOT_DATABASE_URL");
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = load_err(env_opts(&[("MOLTBOT_REDIS_URL", "http://cache")])).to_string();
    assert_contains(
        &msg,
        "invalid value for \"redis_url\": expected a URL starting with redis:// or rediss://",
    );
    for ok in ["sqlite::memory:", "postgresql://u@h/d", "postgres://h/d"] {
        assert_eq!(
            load_ok(env_opts(&[("MOLTBOT_DATABASE_URL", ok)]))
                .config
                .database_url,
            ok
        );
    }
    let c = load_ok(env_opts(&[("MOLTBOT_REDIS_URL", "rediss://cache:6380")])).config;
    assert_eq!(c.redis_url.as_deref(), Some("rediss://cache:6380"));
}

#[test]
fn listeners_need_distinct_addresses() {
    let msg = load_err(env_opts(&[("MOLTBOT_ADMIN_ADDR", "127.0.0.1:18789")])).to_string();
    assert_contains(&msg, "chat_addr and admin_addr are both 127.0.0.1:18789");
    // Port 0 (tests) means "pick one", so equal addresses are fine.
    load_ok(env_opts(&[
        ("MOLTBOT_CHAT_ADDR", "127.0.0.1:0"),
        ("MOLTBOT_ADMIN_ADDR", "127.0.0.1:0"),
    ]));
}

#[test]
fn empty_secrets_and_zero_limits_are_refused() {
    let dir = Dir::new();
    let msg = load_err(dir.with_file("[auth]\njwt_secret = \"\"\n")).to_string();
    assert_contains(&msg, "\"auth.jwt_secret\": must not be empty");
    let msg = load_err(env_opts(&[("MOLTBOT_STORE__MAX_CONNECTIONS", "0")])).to_string();
    assert_contains(&msg, "\"store.max_connections\": must be at least 1");
    let msg = load_err(env_opts(&[("MOLTBOT_SERVER__REQUEST_TIMEOUT", "0s")])).to_string();
    assert_contains(&msg, "\"server.request_timeout\": must be longer than 0s");
}
