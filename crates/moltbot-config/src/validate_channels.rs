//! Rules of `[[channels]]`, `[[hooks]]`, `[pipeline]` and `[webhooks]`; fills in the computed
//! defaults (`channels[].mode`, DingTalk's `robot_code`, async hooks' `callback_secret`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::channel::{ChannelConfig, ChannelMode, ChannelPlatform, HookConfig, HookMode, decode_whsec};
use crate::validate::{Invalid, at_least_one, is_loopback, positive};
use crate::{Config, ConfigError, Profile};

/// Length of a WeCom EncodingAESKey.
const WECOM_AES_KEY_LEN: usize = 43;
/// Longest Telegram webhook secret token.
const TELEGRAM_SECRET_TOKEN_MAX: usize = 256;
/// Shortest recommended hook bearer token.
const MIN_HOOK_TOKEN_LEN: usize = 16;
/// Shortest allowed `pipeline.retention`.
const MIN_RETENTION: Duration = Duration::from_secs(60 * 60);

pub(crate) fn check(
    config: &mut Config,
    invalid: &Invalid<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let models: BTreeSet<String> = config.models.iter().map(|m| m.name.clone()).collect();
    let mut seen: BTreeMap<(ChannelPlatform, String), usize> = BTreeMap::new();
    for (i, channel) in config.channels.iter_mut().enumerate() {
        check_channel(i, channel, &models, invalid, warnings)?;
        if let Some(first) = seen.insert((channel.platform, channel.account.clone()), i) {
            return Err(invalid(
                &format!("channels[{i}].account"),
                format!(
                    "{} account \"{}\" is already defined by channels[{first}]",
                    channel.platform, channel.account
                ),
            ));
        }
        channel.mode = Some(channel.mode());
        if channel.platform == ChannelPlatform::DingTalk && channel.robot_code.is_none() {
            channel.robot_code.clone_from(&channel.app_key);
        }
    }
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, hook) in config.hooks.iter_mut().enumerate() {
        check_hook(i, hook, &models, invalid, warnings)?;
        if let Some(first) = names.insert(hook.name.clone(), i) {
            return Err(invalid(
                &format!("hooks[{i}].name"),
                format!("hook name \"{}\" is already used by hooks[{first}]", hook.name),
            ));
        }
        if hook.mode == HookMode::Async && hook.callback_secret.is_none() {
            hook.callback_secret.clone_from(&hook.secret);
        }
    }
    check_pipeline(config, invalid)?;
    check_webhooks(config, invalid, warnings)
}

/// `[a-z0-9_-]{1,max}`: a name that is part of a URL.
fn check_name(key: &str, value: &str, max: usize, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    let shape = format!("1 to {max} of a-z, 0-9, _ and -");
    if value.is_empty() {
        return Err(invalid(key, format!("is required: {shape}")));
    }
    if value.len() > max
        || !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(invalid(key, format!("expected {shape}, got {value:?}")));
    }
    Ok(())
}

fn check_model(
    key: &str,
    model: Option<&String>,
    models: &BTreeSet<String>,
    invalid: &Invalid<'_>,
) -> Result<(), ConfigError> {
    match model {
        Some(name) if !models.contains(name) => {
            let known = if models.is_empty() {
                "no models are configured".to_owned()
            } else {
                let quoted: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
                format!("configured: {}", quoted.join(", "))
            };
            Err(invalid(
                key,
                format!("\"{name}\" is not a configured model ({known})"),
            ))
        }
        _ => Ok(()),
    }
}

/// `a, b and c`.
fn list(items: &[&str]) -> String {
    match items {
        [] => "nothing".to_owned(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn check_channel(
    i: usize,
    c: &ChannelConfig,
    models: &BTreeSet<String>,
    invalid: &Invalid<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("channels[{i}].{k}");
    let platform = c.platform;
    check_name(&key("account"), &c.account, 32, invalid)?;
    let named = |message: String| format!("{message} ({platform} account \"{}\")", c.account);
    if let Some(mode) = c.mode
        && !platform.modes().contains(&mode)
    {
        let modes: Vec<String> = platform.modes().iter().map(|m| format!("\"{m}\"")).collect();
        let modes: Vec<&str> = modes.iter().map(String::as_str).collect();
        return Err(invalid(
            &key("mode"),
            named(format!(
                "{platform} supports {}, got \"{mode}\"",
                list(&modes).replace(" and ", " or ")
            )),
        ));
    }
    let mode = c.mode();
    let spec = platform.spec();
    let takes: Vec<&str> = spec
        .required
        .iter()
        .chain(spec.webhook_required)
        .chain(spec.optional)
        .copied()
        .collect();
    let credentials = c.credentials();
    for (name, value) in &credentials {
        let Some(value) = value else { continue };
        if !takes.contains(name) {
            return Err(invalid(
                &key(name),
                named(format!(
                    "{name} is not a {platform} setting ({platform} takes {}); remove it",
                    list(&takes)
                )),
            ));
        }
        if value.text().trim().is_empty() {
            return Err(invalid(&key(name), "must not be empty".to_owned()));
        }
    }
    let needed = spec.required.iter().map(|name| (*name, None)).chain(
        spec.webhook_required
            .iter()
            .filter(|_| mode == ChannelMode::Webhook)
            .map(|name| (*name, Some(mode))),
    );
    for (name, only_in) in needed {
        if credentials.iter().any(|(n, v)| *n == name && v.is_some()) {
            continue;
        }
        let secret = crate::key_doc(&format!("channels[].{name}")).is_some_and(|d| d.is_secret);
        let forms = if secret {
            format!(" (or {name}_file, {name}_command or {name}_env)")
        } else {
            String::new()
        };
        let when = only_in.map_or_else(String::new, |m| format!(" in {m} mode"));
        return Err(invalid(
            &key(name),
            named(format!("is required for {platform}{when}{forms}")),
        ));
    }
    if let Some(aes) = &c.encoding_aes_key {
        let aes = aes.expose();
        if aes.len() != WECOM_AES_KEY_LEN || !aes.bytes().all(|b| b.is_ascii_alphanumeric()) {
            // The value itself is never shown.
            return Err(invalid(
                &key("encoding_aes_key"),
                named(format!(
                    "expected {WECOM_AES_KEY_LEN} letters and digits (the EncodingAESKey of the callback settings), \
                     got {} characters",
                    aes.chars().count()
                )),
            ));
        }
    }
    if let Some(token) = &c.secret_token {
        let token = token.expose();
        if token.len() > TELEGRAM_SECRET_TOKEN_MAX
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                &key("secret_token"),
                named(format!(
                    "Telegram accepts 1 to {TELEGRAM_SECRET_TOKEN_MAX} of A-Z, a-z, 0-9, _ and - \
                     (e.g. `openssl rand -hex 32`)"
                )),
            ));
        }
        if mode != ChannelMode::Webhook {
            warnings.push(format!(
                "channels[{i}].secret_token: only used in webhook mode; ignored in {mode} mode ({platform} account \"{}\")",
                c.account
            ));
        }
    }
    check_model(&key("model"), c.model.as_ref(), models, invalid)?;
    at_least_one(&key("replies_per_minute"), c.replies_per_minute, invalid)?;
    if c.bot_id.as_ref().is_some_and(|b| b.trim().is_empty()) {
        return Err(invalid(
            &key("bot_id"),
            "must not be empty (omit it instead)".to_owned(),
        ));
    }
    for (field, entries) in [("allow_chats", &c.allow_chats), ("allow_users", &c.allow_users)] {
        if let Some(j) = entries.iter().position(|e| e.trim().is_empty()) {
            return Err(invalid(
                &key(&format!("{field}[{j}]")),
                "must not be empty".to_owned(),
            ));
        }
    }
    if let Some(base) = c
        .api_base
        .as_ref()
        .filter(|u| u.scheme() == "http" && !is_loopback(u))
    {
        warnings.push(format!(
            "channels[{i}].api_base: {platform} account \"{}\" uses plain http:// to {}; credentials and messages \
             travel unencrypted",
            c.account,
            base.host_str().unwrap_or_default()
        ));
    }
    Ok(())
}

fn check_hook(
    i: usize,
    h: &HookConfig,
    models: &BTreeSet<String>,
    invalid: &Invalid<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("hooks[{i}].{k}");
    check_name(&key("name"), &h.name, 64, invalid)?;
    let named = |message: String| format!("{message} (hook \"{}\")", h.name);
    match (&h.secret, &h.token) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                &key("token"),
                named(
                    "set either secret (callers sign requests, Standard Webhooks) or token (callers send a bearer \
                     token), not both"
                        .to_owned(),
                ),
            ));
        }
        (None, None) => {
            return Err(invalid(
                &key("secret"),
                named(
                    "a hook needs secret (a Standard Webhooks key `whsec_…` callers sign with, e.g. \
                     whsec_$(openssl rand -base64 32)) or token (a bearer token)"
                        .to_owned(),
                ),
            ));
        }
        (Some(secret), None) => {
            decode_whsec(secret.expose()).map_err(|m| invalid(&key("secret"), named(m)))?;
        }
        (None, Some(token)) => {
            if token.expose().trim().is_empty() {
                return Err(invalid(&key("token"), "must not be empty".to_owned()));
            }
            if token.expose().len() < MIN_HOOK_TOKEN_LEN {
                warnings.push(format!(
                    "hooks[{i}].token: hook \"{}\" has a token shorter than {MIN_HOOK_TOKEN_LEN} bytes; use a random one, \
                     e.g. `openssl rand -hex 24`",
                    h.name
                ));
            }
        }
    }
    if let Some(callback_secret) = &h.callback_secret {
        decode_whsec(callback_secret.expose()).map_err(|m| invalid(&key("callback_secret"), named(m)))?;
    }
    match h.mode {
        HookMode::Sync => {
            for (field, set) in [
                ("callback_url", h.callback_url.is_some()),
                ("callback_secret", h.callback_secret.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        &key(field),
                        named("is only used with mode = \"async\"".to_owned()),
                    ));
                }
            }
        }
        HookMode::Async => {
            let Some(url) = &h.callback_url else {
                return Err(invalid(
                    &key("callback_url"),
                    named("is required with mode = \"async\" (where the answer is POSTed)".to_owned()),
                ));
            };
            if h.callback_key().is_none() {
                return Err(invalid(
                    &key("callback_secret"),
                    named(
                        "is required with mode = \"async\" when the hook uses a token: callbacks are signed with a \
                         Standard Webhooks key (whsec_…)"
                            .to_owned(),
                    ),
                ));
            }
            if url.scheme() == "http" && !is_loopback(url) {
                warnings.push(format!(
                    "hooks[{i}].callback_url: hook \"{}\" sends answers over plain http:// to {}",
                    h.name,
                    url.host_str().unwrap_or_default()
                ));
            }
        }
    }
    check_model(&key("model"), h.model.as_ref(), models, invalid)
}

fn check_pipeline(config: &Config, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    let p = &config.pipeline;
    at_least_one("pipeline.workers", p.workers, invalid)?;
    at_least_one("pipeline.max_attempts", p.max_attempts, invalid)?;
    for (key, value) in [
        ("pipeline.lock_timeout", p.lock_timeout),
        ("pipeline.retry_base", p.retry_base),
        ("pipeline.retry_max", p.retry_max),
        ("pipeline.lease_ttl", p.lease_ttl),
        ("pipeline.poll_interval", p.poll_interval),
    ] {
        positive(key, value, invalid)?;
    }
    if p.retry_base > p.retry_max {
        return Err(invalid(
            "pipeline.retry_base",
            format!(
                "{} is longer than pipeline.retry_max ({})",
                humantime::format_duration(p.retry_base),
                humantime::format_duration(p.retry_max)
            ),
        ));
    }
    if p.retention < MIN_RETENTION {
        return Err(invalid(
            "pipeline.retention",
            format!(
                "must be at least 1h, got {}: platforms redeliver events for hours, and a dedupe key forgotten \
                 earlier answers a redelivered event twice",
                humantime::format_duration(p.retention)
            ),
        ));
    }
    Ok(())
}

fn check_webhooks(
    config: &Config,
    invalid: &Invalid<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let w = &config.webhooks;
    at_least_one("webhooks.workers", w.workers, invalid)?;
    for (key, value) in [
        ("webhooks.timeout", w.timeout),
        ("webhooks.first_retry", w.first_retry),
        ("webhooks.retry_for", w.retry_for),
    ] {
        positive(key, value, invalid)?;
    }
    if w.first_retry > w.retry_for {
        return Err(invalid(
            "webhooks.first_retry",
            format!(
                "{} is longer than webhooks.retry_for ({})",
                humantime::format_duration(w.first_retry),
                humantime::format_duration(w.retry_for)
            ),
        ));
    }
    if config.profile == Profile::Production && w.allow_private_targets {
        warnings.push(
            "production profile: webhooks.allow_private_targets = true lets webhook targets reach loopback and \
             private addresses (SSRF)"
                .to_owned(),
        );
    }
    Ok(())
}
