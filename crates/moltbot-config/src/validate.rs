//! Rules that span keys or need typed values; warnings for unsafe-but-allowed settings.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};

use crate::tree::Origins;
use crate::{BackendKind, Config, ConfigError, ModelConfig, Profile, Secret};

/// Minimum recommended length of `auth.jwt_secret` in bytes.
const MIN_JWT_SECRET_LEN: usize = 32;

pub(crate) fn validate(
    config: &mut Config,
    origins: &Origins,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let invalid =
        |key: &str, message: String| ConfigError::invalid(key, format!("{message}{}", origins.suffix(key)));

    if !["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| config.database_url.starts_with(p))
    {
        return Err(invalid(
            "database_url",
            format!(
                "expected a URL starting with sqlite:, postgres:// or postgresql://, got {}",
                url_scheme_only(&config.database_url)
            ),
        ));
    }
    if let Some(redis) = &config.redis_url
        && !redis.starts_with("redis://")
        && !redis.starts_with("rediss://")
    {
        return Err(invalid(
            "redis_url",
            format!(
                "expected a URL starting with redis:// or rediss://, got {}",
                url_scheme_only(redis)
            ),
        ));
    }
    if config.profile == Profile::Production
        && let Some(addr) = config.debug_addr
    {
        return Err(ConfigError::Rule(format!(
            "debug listener is refused in the production profile (debug_addr = {addr}, {}; profile {})",
            origins.describe("debug_addr"),
            origins.describe("profile"),
        )));
    }
    if config.profile == Profile::Production && config.auth.jwt_secret.is_none() {
        return Err(ConfigError::Rule(
            "auth.jwt_secret is required in the production profile, so that every replica verifies the same \
             tokens: set MOLTBOT_AUTH__JWT_SECRET, MOLTBOT_AUTH__JWT_SECRET_FILE or MOLTBOT_AUTH__JWT_SECRET_COMMAND \
             (at least 32 bytes)"
                .to_owned(),
        ));
    }
    if config.profile == Profile::Production
        && config
            .auth
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < MIN_JWT_SECRET_LEN)
    {
        return Err(ConfigError::Rule(format!(
            "auth.jwt_secret is shorter than {MIN_JWT_SECRET_LEN} bytes ({}); the production profile needs a \
             random secret of at least {MIN_JWT_SECRET_LEN} bytes, e.g. `openssl rand -base64 48`",
            origins.describe("auth.jwt_secret")
        )));
    }
    check_addrs(config, origins)?;
    check_auth(config, &invalid)?;
    check_tls(config, &invalid)?;

    non_empty_secret("database_password", config.database_password.as_ref(), &invalid)?;
    non_empty_secret("auth.jwt_secret", config.auth.jwt_secret.as_ref(), &invalid)?;
    for (i, secret) in config.auth.jwt_previous_secrets.iter().enumerate() {
        non_empty_secret(&format!("auth.jwt_previous_secrets[{i}]"), Some(secret), &invalid)?;
    }
    if config.server.body_limit_bytes == 0 {
        return Err(invalid(
            "server.body_limit_bytes",
            "must be at least 1".to_owned(),
        ));
    }
    positive("server.request_timeout", config.server.request_timeout, &invalid)?;
    positive(
        "server.ws_ping_interval",
        config.server.ws_ping_interval,
        &invalid,
    )?;
    positive("server.ws_idle_timeout", config.server.ws_idle_timeout, &invalid)?;
    positive("server.ws_send_timeout", config.server.ws_send_timeout, &invalid)?;
    if config.log.level.trim().is_empty() {
        return Err(invalid("log.level", "must not be empty".to_owned()));
    }
    if config.store.max_connections == 0 {
        return Err(invalid("store.max_connections", "must be at least 1".to_owned()));
    }

    let tokenizer = config.tokenizer.clone();
    for (i, model) in config.models.iter_mut().enumerate() {
        check_model(i, model, &invalid)?;
        model.tokenizer.get_or_insert_with(|| tokenizer.clone());
        model.upstream_model.get_or_insert_with(|| model.name.clone());
    }
    check_model_names(&config.models, &invalid)?;
    check_fallbacks(&config.models, &invalid)?;
    crate::validate_channels::check(config, &invalid, warnings)?;
    crate::memory::check(config, &invalid)?;

    warn(config, warnings);
    Ok(())
}

pub(crate) type Invalid<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn check_auth(config: &Config, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    let a = &config.auth;
    for (key, value) in [
        ("auth.token_ttl", a.token_ttl),
        ("auth.max_token_ttl", a.max_token_ttl),
        ("auth.key_cache_ttl", a.key_cache_ttl),
        ("auth.lockout_window", a.lockout_window),
        ("auth.lockout_duration", a.lockout_duration),
        ("limits.burst_window", config.limits.burst_window),
        ("admin.session_ttl", config.admin.session_ttl),
        ("cluster.redis_timeout", config.cluster.redis_timeout),
    ] {
        positive(key, value, invalid)?;
    }
    if a.token_ttl > a.max_token_ttl {
        return Err(invalid(
            "auth.token_ttl",
            format!(
                "{} is longer than auth.max_token_ttl ({})",
                humantime::format_duration(a.token_ttl),
                humantime::format_duration(a.max_token_ttl)
            ),
        ));
    }
    at_least_one("auth.lockout_threshold", a.lockout_threshold, invalid)?;
    if a.bootstrap_key_file.trim().is_empty() {
        return Err(invalid("auth.bootstrap_key_file", "must not be empty".to_owned()));
    }
    let l = &config.limits;
    for (key, value) in [
        ("limits.requests_per_minute", l.requests_per_minute),
        ("limits.tokens_per_minute", l.tokens_per_minute),
        ("limits.concurrent_streams", l.concurrent_streams),
    ] {
        if value == Some(0) {
            return Err(invalid(
                key,
                "must be at least 1 (omit it for no limit)".to_owned(),
            ));
        }
    }
    if l.daily_tokens == Some(0) {
        return Err(invalid(
            "limits.daily_tokens",
            "must be at least 1 (omit it for no limit)".to_owned(),
        ));
    }
    for (i, origin) in config.server.cors_origins.iter().enumerate() {
        let ok = origin == "*"
            || url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.path() == "/" && !origin.ends_with('/')
            });
        if !ok {
            return Err(invalid(
                &format!("server.cors_origins[{i}]"),
                format!("expected an origin like \"https://app.example.com\" (no path), got {origin:?}"),
            ));
        }
    }
    Ok(())
}

fn check_addrs(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
    let mut addrs: Vec<(&str, SocketAddr)> =
        vec![("chat_addr", config.chat_addr), ("admin_addr", config.admin_addr)];
    addrs.extend(config.debug_addr.map(|a| ("debug_addr", a)));
    addrs.extend(config.metrics_addr.map(|a| ("metrics_addr", a)));
    addrs.extend(config.tls.acme.http01_addr.map(|a| ("tls.acme.http01_addr", a)));
    for (i, (key_a, a)) in addrs.iter().enumerate() {
        for (key_b, b) in &addrs[i + 1..] {
            if a == b && a.port() != 0 {
                return Err(ConfigError::Rule(format!(
                    "{key_a} and {key_b} are both {a} ({}; {}); each listener needs its own address",
                    origins.describe(key_a),
                    origins.describe(key_b),
                )));
            }
        }
    }
    Ok(())
}

/// `[tls]`: a complete source (cert + key, or ACME domains, never both), known listener names, and
/// readable files (checked here so that `serve` fails at startup naming the path, not at the first
/// handshake).
fn check_tls(config: &Config, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    let tls = &config.tls;
    let acme = &tls.acme;
    match (&tls.cert, &tls.key) {
        (Some(_), None) => {
            return Err(invalid(
                "tls.key",
                "is required when tls.cert is set (the certificate's private key, PEM)".to_owned(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls.cert",
                "is required when tls.key is set (the certificate chain, PEM)".to_owned(),
            ));
        }
        _ => {}
    }
    if tls.cert.is_some() && !acme.domains.is_empty() {
        return Err(ConfigError::Rule(
            "tls.cert and tls.acme.domains are both set: use either certificate files (tls.cert/tls.key, e.g. from \
             certbot) or built-in ACME (tls.acme.domains), not both"
                .to_owned(),
        ));
    }
    for (i, name) in tls.listeners.iter().enumerate() {
        if !crate::types::TLS_LISTENERS.contains(&name.as_str()) {
            return Err(invalid(
                &format!("tls.listeners[{i}]"),
                format!("expected one of dialog, admin, metrics, debug, got {name:?}"),
            ));
        }
    }
    positive("tls.reload_interval", tls.reload_interval, invalid)?;
    if !tls.enabled() {
        if acme.http01_addr.is_some() {
            return Err(invalid(
                "tls.acme.http01_addr",
                "needs tls.acme.domains (the HTTP-01 listener only serves ACME challenges)".to_owned(),
            ));
        }
        return Ok(());
    }
    if tls.listeners.is_empty() {
        return Err(invalid(
            "tls.listeners",
            "must name at least one listener when TLS is configured".to_owned(),
        ));
    }
    for (i, domain) in acme.domains.iter().enumerate() {
        if domain.trim().is_empty() || domain.contains(['/', ':', ' ', '*']) {
            return Err(invalid(
                &format!("tls.acme.domains[{i}]"),
                format!(
                    "expected a DNS name like \"chat.example.com\" (no wildcard, scheme or port), got {domain:?}"
                ),
            ));
        }
    }
    for (i, contact) in acme.contact.iter().enumerate() {
        if !contact.starts_with("mailto:") {
            return Err(invalid(
                &format!("tls.acme.contact[{i}]"),
                format!("expected \"mailto:address\", got {contact:?}"),
            ));
        }
    }
    if !acme.domains.is_empty() && acme.cache_dir.trim().is_empty() {
        return Err(invalid("tls.acme.cache_dir", "must not be empty".to_owned()));
    }
    let files = [("tls.cert", tls.cert.as_ref()), ("tls.key", tls.key.as_ref())];
    let acme_ca = [(
        "tls.acme.ca_file",
        acme.ca_file.as_ref().filter(|_| !acme.domains.is_empty()),
    )];
    for (key, path) in files.into_iter().chain(acme_ca) {
        if let Some(path) = path
            && let Err(e) = std::fs::File::open(path)
        {
            return Err(invalid(key, format!("cannot read {path}: {e}")));
        }
    }
    Ok(())
}

fn non_empty_secret(key: &str, secret: Option<&Secret>, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    match secret {
        Some(s) if s.expose().is_empty() => Err(invalid(key, "must not be empty".to_owned())),
        _ => Ok(()),
    }
}

pub(crate) fn positive(key: &str, value: Duration, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(invalid(key, "must be longer than 0s".to_owned()))
    } else {
        Ok(())
    }
}

pub(crate) fn at_least_one(key: &str, value: u32, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    if value == 0 {
        Err(invalid(key, "must be at least 1".to_owned()))
    } else {
        Ok(())
    }
}

fn check_local(i: usize, m: &ModelConfig, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    let key = |k: &str| format!("models[{i}].{k}");
    if m.model_path.as_ref().is_none_or(|p| p.trim().is_empty()) {
        return Err(invalid(
            &key("model_path"),
            format!(
                "a local model needs model_path, a GGUF file (model \"{}\")",
                m.name
            ),
        ));
    }
    if m.endpoint.is_some() {
        return Err(invalid(
            &key("endpoint"),
            format!("a local model has no endpoint (model \"{}\")", m.name),
        ));
    }
    at_least_one(&key("parallel"), m.parallel, invalid)?;
    at_least_one(&key("batch_size"), m.batch_size, invalid)?;
    at_least_one(&key("queue_capacity"), m.queue_capacity, invalid)?;
    if let Some(t) = m.threads {
        at_least_one(&key("threads"), t, invalid)?;
    }
    Ok(())
}

fn check_model(i: usize, m: &ModelConfig, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    let key = |k: &str| format!("models[{i}].{k}");
    if m.name.trim().is_empty() {
        return Err(invalid(
            &key("name"),
            "every model needs a non-empty name".to_owned(),
        ));
    }
    let named = |message: String| format!("{message} (model \"{}\")", m.name);
    match m.backend {
        BackendKind::Remote if m.endpoint.is_none() => {
            return Err(invalid(
                &key("endpoint"),
                named("a remote model needs an endpoint".to_owned()),
            ));
        }
        BackendKind::Local => check_local(i, m, invalid)?,
        BackendKind::Remote => {}
    }
    non_empty_secret(&key("api_key"), m.api_key.as_ref(), invalid)?;
    for (j, secret) in m.api_keys.iter().enumerate() {
        non_empty_secret(&key(&format!("api_keys[{j}]")), Some(secret), invalid)?;
    }
    if m.upstream_model.as_ref().is_some_and(|u| u.trim().is_empty()) {
        return Err(invalid(&key("upstream_model"), "must not be empty".to_owned()));
    }
    at_least_one(&key("max_tokens"), m.max_tokens, invalid)?;
    at_least_one(&key("context_window"), m.context_window, invalid)?;
    if m.max_tokens > m.context_window {
        return Err(invalid(
            &key("max_tokens"),
            named(format!(
                "{} is larger than context_window ({})",
                m.max_tokens, m.context_window
            )),
        ));
    }
    if let Some(t) = m.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(invalid(
            &key("temperature"),
            format!("expected a number from 0 to 2, got {t}"),
        ));
    }
    if let Some(p) = m.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return Err(invalid(
            &key("top_p"),
            format!("expected a number above 0 and at most 1, got {p}"),
        ));
    }
    let t = &m.timeouts;
    for (name, value) in [
        ("connect", t.connect),
        ("first_byte", t.first_byte),
        ("idle", t.idle),
        ("total", t.total),
    ] {
        positive(&key(&format!("timeouts.{name}")), value, invalid)?;
    }
    at_least_one(&key("retry.max_attempts"), m.retry.max_attempts, invalid)?;
    if m.retry.base_delay > m.retry.max_delay {
        return Err(invalid(
            &key("retry.base_delay"),
            format!(
                "{} is longer than retry.max_delay ({})",
                humantime::format_duration(m.retry.base_delay),
                humantime::format_duration(m.retry.max_delay)
            ),
        ));
    }
    at_least_one(
        &key("circuit.failure_threshold"),
        m.circuit.failure_threshold,
        invalid,
    )?;
    for (name, limit) in [
        ("requests_per_minute", m.limits.requests_per_minute),
        ("tokens_per_minute", m.limits.tokens_per_minute),
    ] {
        if limit == Some(0) {
            return Err(invalid(
                &key(&format!("limits.{name}")),
                "must be at least 1 (omit it for no limit)".to_owned(),
            ));
        }
    }
    Ok(())
}

fn check_model_names(models: &[ModelConfig], invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, m) in models.iter().enumerate() {
        if let Some(first) = seen.insert(&m.name, i) {
            return Err(invalid(
                &format!("models[{i}].name"),
                format!("model name \"{}\" is already used by models[{first}]", m.name),
            ));
        }
    }
    Ok(())
}

fn check_fallbacks(models: &[ModelConfig], invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    let index: BTreeMap<&str, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();
    for (i, m) in models.iter().enumerate() {
        let key = format!("models[{i}].fallbacks");
        let mut seen = BTreeSet::new();
        for fallback in &m.fallbacks {
            if fallback == &m.name {
                return Err(invalid(
                    &key,
                    format!("model \"{}\" lists itself as a fallback", m.name),
                ));
            }
            if !index.contains_key(fallback.as_str()) {
                return Err(invalid(
                    &key,
                    format!(
                        "fallback \"{fallback}\" of model \"{}\" is not a configured model",
                        m.name
                    ),
                ));
            }
            if !seen.insert(fallback) {
                return Err(invalid(&key, format!("fallback \"{fallback}\" is listed twice")));
            }
        }
    }
    // Cycle detection (depth-first; 0 = unvisited, 1 = on the stack, 2 = done).
    let mut state = vec![0u8; models.len()];
    let mut stack = Vec::new();
    for start in 0..models.len() {
        if let Some(cycle) = find_cycle(start, models, &index, &mut state, &mut stack) {
            let first = index.get(cycle[0].as_str()).copied().unwrap_or(0);
            return Err(invalid(
                &format!("models[{first}].fallbacks"),
                format!("fallbacks form a cycle: {}", cycle.join(" -> ")),
            ));
        }
    }
    Ok(())
}

fn find_cycle(
    node: usize,
    models: &[ModelConfig],
    index: &BTreeMap<&str, usize>,
    state: &mut [u8],
    stack: &mut Vec<usize>,
) -> Option<Vec<String>> {
    match state[node] {
        2 => return None,
        1 => {
            let from = stack.iter().position(|n| *n == node).unwrap_or(0);
            let mut cycle: Vec<String> = stack[from..].iter().map(|n| models[*n].name.clone()).collect();
            cycle.push(models[node].name.clone());
            return Some(cycle);
        }
        _ => {}
    }
    state[node] = 1;
    stack.push(node);
    for fallback in &models[node].fallbacks {
        if let Some(next) = index.get(fallback.as_str())
            && let Some(cycle) = find_cycle(*next, models, index, state, stack)
        {
            return Some(cycle);
        }
    }
    stack.pop();
    state[node] = 2;
    None
}

fn warn(config: &Config, warnings: &mut Vec<String>) {
    let production = config.profile == Profile::Production;
    if production && config.server.admin_allow_cidrs.is_empty() {
        warnings.push(
            "production profile: the admin listener accepts connections from any address; \
             restrict it with server.admin_allow_cidrs"
                .to_owned(),
        );
    }
    if production && config.log.prompts {
        warnings.push(
            "production profile: log.prompts = true writes prompt and completion text to the logs".to_owned(),
        );
    }
    if production && config.is_sqlite() {
        warnings.push(
            "production profile: the database is SQLite; consider postgres:// for production".to_owned(),
        );
    }
    if config
        .auth
        .jwt_secret
        .as_ref()
        .is_some_and(|s| s.expose().len() < MIN_JWT_SECRET_LEN)
    {
        warnings.push(format!(
            "auth.jwt_secret is shorter than {MIN_JWT_SECRET_LEN} bytes"
        ));
    }
    for (i, m) in config.models.iter().enumerate() {
        if let Some(endpoint) = m
            .endpoint
            .as_ref()
            .filter(|u| u.scheme() == "http" && !is_loopback(u))
        {
            warnings.push(format!(
                "models[{i}].endpoint: model \"{}\" uses plain http:// to {}; API keys and prompts travel unencrypted",
                m.name,
                endpoint.host_str().unwrap_or_default()
            ));
        }
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}

/// Shows only the scheme of a URL-ish value, so a password in it is never echoed.
fn url_scheme_only(value: &str) -> String {
    match value.split_once(':') {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            format!("a URL with scheme \"{scheme}\"")
        }
        _ if value.contains('@') => "a value that is not a URL".to_owned(),
        _ => format!("{value:?}"),
    }
}
