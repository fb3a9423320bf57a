//! Layers, precedence, environment parsing, unknown keys, type errors, profile defaults.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Dir, assert_contains, env, env_opts, load_err, load_ok};
use crate::{CliOverrides, Config, ConfigError, LoadOptions, LogFormat, Profile};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

#[test]
fn no_sources_gives_development_defaults() {
    let loaded = load_ok(LoadOptions::default());
    assert_eq!(loaded.config, Config::defaults(Profile::Development));
    assert!(loaded.sources.is_empty());
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.chat_addr, addr("127.0.0.1:18789"));
    assert_eq!(loaded.config.server.body_limit_bytes, 4_194_304);
    assert_eq!(loaded.config.store.idempotency_ttl, Duration::from_secs(86_400));
}

#[test]
fn each_layer_overrides_the_one_below() {
    let dir = Dir::new();
    // Default file lookup: moltbot.toml in the working directory.
    dir.write(
        "moltbot.toml",
        "chat_addr = \"127.0.0.1:1001\"\n[log]\nlevel = \"file\"\nprompts = true\n",
    );
    let only_file = load_ok(dir.opts());
    assert_eq!(only_file.config.chat_addr, addr("127.0.0.1:1001"));
    assert_eq!(only_file.config.log.level, "file");
    assert!(only_file.config.log.prompts);
    assert_eq!(
        only_file.config.admin_addr,
        addr("127.0.0.1:8080"),
        "untouched keys keep defaults"
    );

    dir.write(
        ".env",
        "MOLTBOT_CHAT_ADDR=127.0.0.1:1002\nMOLTBOT_LOG__LEVEL=dotenv\n",
    );
    let with_dotenv = load_ok(dir.opts());
    assert_eq!(with_dotenv.config.chat_addr, addr("127.0.0.1:1002"));
    assert_eq!(with_dotenv.config.log.level, "dotenv");
    assert!(with_dotenv.config.log.prompts, "tables merge key by key");
    assert_eq!(with_dotenv.sources.len(), 2);
    assert!(with_dotenv.sources[0].ends_with("moltbot.toml") && with_dotenv.sources[1].ends_with(".env"));

    let mut opts = dir.opts();
    opts.env = env(&[
        ("MOLTBOT_CHAT_ADDR", "127.0.0.1:1003"),
        ("MOLTBOT_LOG__LEVEL", "env"),
    ]);
    let with_env = load_ok(opts.clone());
    assert_eq!(with_env.config.chat_addr, addr("127.0.0.1:1003"));
    assert_eq!(with_env.config.log.level, "env");

    opts.overrides.chat_addr = Some("127.0.0.1:1004".to_owned());
    let with_flag = load_ok(opts);
    assert_eq!(with_flag.config.chat_addr, addr("127.0.0.1:1004"));
    assert_eq!(with_flag.config.log.level, "env");
}

#[test]
fn every_flag_overrides_environment() {
    let overrides = CliOverrides {
        chat_addr: Some("127.0.0.1:2001".to_owned()),
        admin_addr: Some("127.0.0.1:2002".to_owned()),
        debug_addr: Some("127.0.0.1:2003".to_owned()),
        database_url: Some("postgres://db/moltbot".to_owned()),
        redis_url: Some("redis://cache:6379".to_owned()),
        profile: Some("development".to_owned()),
        dev: false,
        log_format: Some("json".to_owned()),
    };
    let mut opts = env_opts(&[
        ("MOLTBOT_PROFILE", "production"),
        ("MOLTBOT_ADMIN_ADDR", "127.0.0.1:3002"),
        ("MOLTBOT_DATABASE_URL", "sqlite::memory:"),
        ("MOLTBOT_LOG__FORMAT", "text"),
    ]);
    opts.overrides = overrides;
    let c = load_ok(opts).config;
    assert_eq!(c.profile, Profile::Development);
    assert_eq!(c.chat_addr, addr("127.0.0.1:2001"));
    assert_eq!(c.admin_addr, addr("127.0.0.1:2002"));
    assert_eq!(c.debug_addr, Some(addr("127.0.0.1:2003")));
    assert_eq!(c.database_url, "postgres://db/moltbot");
    assert_eq!(c.redis_url.as_deref(), Some("redis://cache:6379"));
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn dev_flag_enables_debug_listener_unless_set() {
    let mut opts = LoadOptions::default();
    opts.overrides.dev = true;
    assert_eq!(
        load_ok(opts.clone()).config.debug_addr,
        Some(addr("127.0.0.1:5000"))
    );
    opts.env = env(&[("MOLTBOT_DEBUG_ADDR", "127.0.0.1:5999")]);
    assert_eq!(load_ok(opts).config.debug_addr, Some(addr("127.0.0.1:5999")));
}

#[test]
fn config_path_sources() {
    let dir = Dir::new();
    let missing = dir.0.path().join("nope.toml");
    let opts = LoadOptions {
        config_path: Some(missing.clone()),
        ..LoadOptions::default()
    };
    let err = load_err(opts).to_string();
    assert_contains(&err, "does not exist");
    assert_contains(&err, "--config");

    let err = load_err(env_opts(&[(
        "MOLTBOT_CONFIG",
        missing.to_str().unwrap_or_default(),
    )]))
    .to_string();
    assert_contains(&err, "MOLTBOT_CONFIG");

    let other = dir.write("other.toml", "[log]\nlevel = \"warn\"\n");
    let c = load_ok(env_opts(&[(
        "MOLTBOT_CONFIG",
        other.to_str().unwrap_or_default(),
    )]))
    .config;
    assert_eq!(c.log.level, "warn");

    // --config wins over MOLTBOT_CONFIG, which wins over ./moltbot.toml.
    dir.write("moltbot.toml", "[log]\nlevel = \"error\"\n");
    let mut opts = dir.opts();
    assert_eq!(load_ok(opts.clone()).config.log.level, "error");
    opts.env = env(&[("MOLTBOT_CONFIG", other.to_str().unwrap_or_default())]);
    assert_eq!(load_ok(opts.clone()).config.log.level, "warn");
    opts.config_path = Some(dir.write("third.toml", "[log]\nlevel = \"trace\"\n"));
    assert_eq!(load_ok(opts).config.log.level, "trace");

    // Without a working directory no default file is looked for.
    assert!(load_ok(LoadOptions::default()).sources.is_empty());
}

#[test]
fn env_nesting_and_value_parsing() {
    let c = load_ok(env_opts(&[
        ("MOLTBOT_LOG__FORMAT", "json"),
        ("MOLTBOT_LOG__PROMPTS", "true"),
        ("MOLTBOT_LOG__LEVEL", "123"),
        ("MOLTBOT_STORE__MAX_CONNECTIONS", "20"),
        ("MOLTBOT_SERVER__REQUEST_TIMEOUT", "30s"),
        ("MOLTBOT_SERVER__BODY_LIMIT_BYTES", "1024"),
        ("MOLTBOT_SERVER__ADMIN_ALLOW_CIDRS", "10.0.0.0/8, 192.168.1.1"),
        ("MOLTBOT_SERVER__TRUSTED_PROXIES", "[172.16.0.0/12, \"::1/128\"]"),
        ("MOLTBOT_AUTH__JWT_SECRET", "12345678901234567890123456789012"),
        ("MOLTBOT_AUTH__JWT_PREVIOUS_SECRETS", "old1,old2"),
    ]))
    .config;
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.log.prompts);
    assert_eq!(c.log.level, "123", "string keys keep the raw text");
    assert_eq!(c.store.max_connections, 20);
    assert_eq!(c.server.request_timeout, Duration::from_secs(30));
    assert_eq!(c.server.body_limit_bytes, 1024);
    let cidrs: Vec<String> = c
        .server
        .admin_allow_cidrs
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(cidrs, ["10.0.0.0/8", "192.168.1.1/32"]);
    assert_eq!(c.server.trusted_proxies.len(), 2);
    assert_eq!(
        c.auth.jwt_secret.as_ref().map(|s| s.expose()),
        Some("12345678901234567890123456789012")
    );
    let previous: Vec<&str> = c.auth.jwt_previous_secrets.iter().map(|s| s.expose()).collect();
    assert_eq!(previous, ["old1", "old2"]);
}

#[test]
fn unknown_key_in_file_is_named() {
    let dir = Dir::new();
    let opts = dir.with_file("[log]\nformt = \"json\"\n");
    let err = load_err(opts);
    assert!(matches!(err, ConfigError::UnknownKey { .. }));
    let msg = err.to_string();
    assert_contains(&msg, "unknown configuration key \"log.formt\" (in ");
    assert_contains(&msg, "moltbot.toml");
    assert_contains(&msg, "did you mean \"log.format\"?");

    let msg = load_err(dir.with_file(&format!("{}nmae = \"x\"\n", super::MODEL_A))).to_string();
    assert_contains(&msg, "unknown configuration key \"models[0].nmae\"");
    let msg = load_err(dir.with_file("[surver]\nx = 1\n")).to_string();
    assert_contains(&msg, "unknown configuration key \"surver\"");
    let msg = load_err(dir.with_file("[models.timeouts]\nconnect = \"1s\"\n")).to_string();
    assert_contains(&msg, "invalid value for \"models\"");
}

#[test]
fn unknown_key_in_environment_is_named() {
    let msg = load_err(env_opts(&[("MOLTBOT_LOG__FORMT", "json")])).to_string();
    assert_eq!(
        msg,
        "unknown configuration key \"log.formt\" (from environment variable MOLTBOT_LOG__FORMT); \
         did you mean \"log.format\"?"
    );
    let dir = Dir::new();
    dir.write(".env", "MOLTBOT_NOPE=1\n");
    let msg = load_err(dir.opts()).to_string();
    assert_contains(&msg, "unknown configuration key \"nope\" (from MOLTBOT_NOPE in ");
    assert_contains(&msg, ".env)");

    let msg = load_err(env_opts(&[("MOLTBOT_MODELS", "[]")])).to_string();
    assert_contains(&msg, "models can only be configured in the TOML file");
    let msg = load_err(env_opts(&[("MOLTBOT_LOG", "{format=json}")])).to_string();
    assert_contains(&msg, "MOLTBOT_LOG__<KEY>");
}

#[test]
fn reserved_and_foreign_names_are_ignored() {
    let c = load_ok(env_opts(&[
        ("MOLTBOT_TEST_REGENERATE_DOCS", "1"),
        ("MOLTBOT_TEST_ANYTHING", "x"),
        ("MOLTBOT_BOOTSTRAP_ADMIN_TOKEN", "x"),
        ("PATH", "/bin"),
        ("RUST_LOG", "debug"),
    ]))
    .config;
    assert_eq!(c, Config::default());
}

#[test]
fn invalid_values_name_key_expectation_and_origin() {
    let msg = load_err(env_opts(&[("MOLTBOT_CHAT_ADDR", "abc")])).to_string();
    assert_eq!(
        msg,
        "invalid value for \"chat_addr\": expected host:port, got \"abc\" \
         (from environment variable MOLTBOT_CHAT_ADDR)"
    );
    let mut opts = LoadOptions::default();
    opts.overrides.admin_addr = Some("localhost".to_owned());
    assert_contains(
        &load_err(opts).to_string(),
        "\"admin_addr\": expected host:port, got \"localhost\" (from flag --admin-addr)",
    );

    let dir = Dir::new();
    let msg = load_err(dir.with_file("[server]\nrequest_timeout = \"soon\"\n")).to_string();
    assert_contains(
        &msg,
        "invalid value for \"server.request_timeout\": expected a duration",
    );
    assert_contains(&msg, "got \"soon\" (in ");
    let msg = load_err(dir.with_file("[store]\nbusy_timeout = 5\n")).to_string();
    assert_contains(
        &msg,
        "\"store.busy_timeout\": expected a duration like \"250ms\", \"5s\" or \"1m\", got 5",
    );
    let msg = load_err(dir.with_file("[[models]]\nname = \"a\"\nendpoint = \"not a url\"\n")).to_string();
    assert_contains(
        &msg,
        "invalid value for \"models[0].endpoint\": expected an http:// or https:// URL",
    );
    let msg = load_err(env_opts(&[("MOLTBOT_PROFILE", "staging")])).to_string();
    assert_contains(
        &msg,
        "\"profile\": expected one of \"development\", \"production\", got \"staging\"",
    );
    let msg = load_err(env_opts(&[("MOLTBOT_LOG__PROMPTS", "yes")])).to_string();
    assert_contains(&msg, "\"log.prompts\": expected true or false, got \"yes\"");
    let msg = load_err(env_opts(&[("MOLTBOT_STORE__MAX_CONNECTIONS", "-1")])).to_string();
    assert_contains(&msg, "\"store.max_connections\": expected a whole number");
    let msg = load_err(env_opts(&[(
        "MOLTBOT_SERVER__ADMIN_ALLOW_CIDRS",
        "10.0.0.0/8,nope",
    )]))
    .to_string();
    assert_contains(&msg, "got \"nope\" in entry 2");
    let msg = load_err(dir.with_file("server = 3\n")).to_string();
    assert_contains(&msg, "invalid value for \"server\": expected a table, got 3");
}

#[test]
fn toml_syntax_errors_do_not_echo_the_line() {
    let dir = Dir::new();
    let msg = load_err(dir.with_file("[auth]\njwt_secret = \"hunter2-unterminated\n")).to_string();
    assert_contains(&msg, "could not parse");
    assert_contains(&msg, "line 2");
    assert!(!msg.contains("hunter2"), "{msg}");
    dir.write(".env", "MOLTBOT_AUTH__JWT_SECRET='hunter2\n");
    let msg = load_err(dir.opts()).to_string();
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn defaults_depend_on_profile() {
    const JWT: (&str, &str) = ("MOLTBOT_AUTH__JWT_SECRET", "0123456789abcdef0123456789abcdef");
    let prod = load_ok(env_opts(&[("MOLTBOT_PROFILE", "production"), JWT])).config;
    assert_eq!(prod.profile, Profile::Production);
    assert_eq!(prod.chat_addr, addr("0.0.0.0:18789"));
    assert_eq!(prod.admin_addr, addr("0.0.0.0:8080"));
    assert_eq!(prod.log.format, LogFormat::Json);

    let dev = load_ok(LoadOptions::default()).config;
    assert_eq!(dev.chat_addr, addr("127.0.0.1:18789"));
    assert_eq!(dev.admin_addr, addr("127.0.0.1:8080"));
    assert_eq!(dev.log.format, LogFormat::Text);

    // A profile from a flag picks the defaults; explicit values still win.
    let mut opts = env_opts(&[("MOLTBOT_LOG__FORMAT", "text"), JWT]);
    opts.overrides.profile = Some("production".to_owned());
    let c = load_ok(opts).config;
    assert_eq!(c.chat_addr, addr("0.0.0.0:18789"));
    assert_eq!(c.log.format, LogFormat::Text);
}
