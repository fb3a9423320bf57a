//! Output: redacted effective configuration, `docs/config.md`, `moltbot.example.toml`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::channel::{ChannelConfig, ChannelMode, ChannelPlatform, HookConfig};
use crate::keys::{KEYS, KeyDoc, ValueKind};
use crate::secret::REDACTED;
use crate::{Config, ModelConfig, Profile};

impl Config {
    /// The effective configuration as TOML, with every secret (and any password inside
    /// `database_url` / `redis_url`) shown as `***`. For `moltbot config show`.
    pub fn redacted_toml(&self) -> String {
        let mut value = self.redacted_json();
        drop_nulls(&mut value);
        toml::to_string_pretty(&value)
            .unwrap_or_else(|e| format!("# could not render the configuration: {e}\n"))
    }

    /// The effective configuration as JSON, redacted like [`Config::redacted_toml`]; unset keys are
    /// `null`. For the admin console's settings page.
    pub fn redacted_json(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            for key in ["database_url", "redis_url"] {
                if let Some(Value::String(url)) = map.get_mut(key) {
                    *url = redact_url(url);
                }
            }
            for (list, key) in [
                ("models", "endpoint"),
                ("channels", "api_base"),
                ("hooks", "callback_url"),
            ] {
                if let Some(Value::Array(items)) = map.get_mut(list) {
                    for item in items {
                        if let Some(Value::String(url)) = item.get_mut(key) {
                            *url = redact_url(url);
                        }
                    }
                }
            }
        }
        value
    }
}

/// Replaces a password in a URL (userinfo or `password=` query parameter) with `***`.
pub(crate) fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return raw.to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some(REDACTED));
    }
    if url.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    REDACTED.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Leaf paths of the defaults (`models[]` paths from [`ModelConfig::default`], likewise
/// `channels[]` and `hooks[]`) and their values.
pub(crate) fn default_values(profile: Profile) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(Config::defaults(profile)).unwrap_or(Value::Null),
        &mut out,
    );
    let lists = [
        ("models", serde_json::to_value(ModelConfig::default())),
        ("channels", serde_json::to_value(ChannelConfig::default())),
        ("hooks", serde_json::to_value(HookConfig::default())),
    ];
    for (list, entry) in lists {
        flatten(&format!("{list}[]"), &entry.unwrap_or(Value::Null), &mut out);
        out.remove(list);
    }
    out
}

/// Flattens a value tree into leaf paths; arrays of tables become `key[]`.
pub(crate) fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            for item in items {
                flatten(&format!("{prefix}[]"), item, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

#[cfg(test)]
/// A default as the docs show it: `unset`, plain strings, JSON lists.
pub(crate) fn display_default(value: &Value) -> String {
    match value {
        Value::Null => "unset".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn toml_literal(value: &Value) -> String {
    match value {
        Value::String(s) => toml::Value::String(s.clone()).to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_literal).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

fn md_escape(text: &str) -> String {
    text.replace('|', "\\|")
}

fn code(text: &str) -> String {
    format!("`{text}`")
}

const REGENERATE: &str = "MOLTBOT_TEST_REGENERATE_DOCS=1 cargo test -p moltbot-config";

/// Renders `docs/config.md` from [`KEYS`].
pub fn config_markdown() -> String {
    let mut md = String::new();
    let _ = write!(
        md,
        "# moltbot configuration\n\n\
         <!-- Generated from crates/moltbot-config (config_markdown); do not edit by hand.\n     \
         Regenerate with: {REGENERATE} -->\n\n"
    );
    md.push_str(SOURCES_MD);
    md.push_str(
        "## Keys\n\n\
         Keys are dotted TOML paths; `models[]` means every `[[models]]` entry (likewise `channels[]`, \
         `hooks[]`). \
         A default in parentheses is computed.\n\n\
         | Key | Environment variable | Flag | Default | Type | Description |\n\
         |---|---|---|---|---|---|\n",
    );
    for doc in KEYS {
        let env = match doc.env {
            None => "— (TOML only)".to_owned(),
            Some(env) if doc.kind == ValueKind::Secret => {
                format!("{}, `…_FILE`, `…_COMMAND`, `…_ENV`", code(env))
            }
            Some(env) => code(env),
        };
        let flag = doc.flag.map_or_else(
            || "—".to_owned(),
            |f| f.split(", ").map(code).collect::<Vec<_>>().join(", "),
        );
        let default = if doc.default.starts_with('(') || doc.default == "unset" {
            doc.default.to_owned()
        } else {
            doc.default
                .split(", ")
                .map(|part| match part.split_once(" (") {
                    Some((value, rest)) => format!("{} ({rest}", code(value)),
                    None => code(part),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            code(doc.key),
            env,
            flag,
            md_escape(&default),
            md_escape(&doc.kind.type_name()),
            md_escape(doc.description)
        );
    }
    md.push('\n');
    md.push_str(SECRETS_MD);
    md.push_str(&channels_md());
    md.push_str(SEED_MD);
    md.push_str(VALIDATION_MD);
    md
}

const SOURCES_MD: &str = "## Sources and precedence

Lowest to highest; a later source overrides an earlier one key by key:

1. Built-in defaults. `chat_addr`, `admin_addr` and `log.format` depend on `profile`.
2. The TOML file: `--config PATH`, else `MOLTBOT_CONFIG` (environment, then `.env`), else
   `./moltbot.toml` if it exists. A file named explicitly that does not exist is an error.
3. `.env` in the working directory (read without changing the process environment).
4. The process environment.
5. Command-line flags.

Tables merge key by key; lists (`server.admin_allow_cidrs`, `[[models]]`, `[[channels]]`, …) are
replaced as a whole. `moltbot config show` prints the effective configuration with every secret as `***`.
See `moltbot.example.toml` for a commented example.

## Environment variables

`MOLTBOT_<KEY>`, with `__` between a table and its key: `MOLTBOT_LOG__FORMAT=json` sets
`log.format`. Values are parsed like figment values (`true`, `false`, numbers); keys whose type
is a string, address, URL or duration keep the raw text. Lists take `a,b` or `[a, b]`.
Models, channels and hooks can only be defined in the TOML file, since the environment cannot
express arrays of tables (the seed variables below define one model); their secrets can still come
from the environment with `K_env`.

Unknown keys are errors that name the key and where it was set, in the file and in the
environment alike. These names are reserved for tooling and ignored: `MOLTBOT_CONFIG`,
`MOLTBOT_TEST_*`, `MOLTBOT_BOOTSTRAP_*`.

";

const SECRETS_MD: &str = "## Secrets

Keys of type `secret` accept exactly one of four forms (two at once is an error):

| Form | TOML | Environment |
|---|---|---|
| value | `K = \"…\"` | `MOLTBOT_K=…` |
| file | `K_file = \"/run/secrets/…\"` | `MOLTBOT_K_FILE=/run/secrets/…` |
| command | `K_command = \"pass show …\"` | `MOLTBOT_K_COMMAND=pass show …` |
| environment variable | `K_env = \"NAME\"` | `MOLTBOT_K_ENV=NAME` |

- A file is read whole; one trailing newline is removed. Relative paths start from the working
  directory.
- A command runs with `sh -c`, stdin closed, stderr discarded, for at most 10 seconds; its stdout,
  trimmed, is the secret. A non-zero exit or a timeout is an error that names the key and the exit
  status; it never contains the command's output.
- An environment variable is named, not given: `bot_token_env = \"TELEGRAM_BOT_TOKEN\"` reads
  `TELEGRAM_BOT_TOKEN` from the process environment, else from `.env`; its value is used as is. An
  unset or empty variable is an error that names the key and the variable. This is how secrets of
  `[[models]]`, `[[channels]]` and `[[hooks]]` (TOML only) stay out of the file.
- A secret set in any form by a higher source replaces every form of it below.
- Secret lists (`auth.jwt_previous_secrets`, `models[].api_keys`) take plain values only.
- Secrets print as `***` everywhere (`Debug`, `Display`, `moltbot config show`).

";

const SEED_MD: &str = "## Seed variables (quick start)

Without any `[[models]]`, one model can be defined from plain (unprefixed) variables, read from
the environment or `.env` (environment wins):

| Variable | Meaning |
|---|---|
| `MODEL_ENDPOINT` | Defines a remote model named `default` with this endpoint. |
| `API_KEY` | Its API key (optional, for keyless local servers). |
| `API_KEY_FILE` / `API_KEY_COMMAND` | The key from a file / a command, as for other secrets. |
| `MODEL_NAME` | Its upstream model id (default `gpt-4o-mini`). |

`MODEL_ENDPOINT` (like every `models[].endpoint`) may be a base URL (`https://api.example.com/v1`)
or a full chat URL (`https://api.example.com/v1/chat/completions` or `…/v1/chat`); it is stored as
the base URL, with a trailing `/chat/completions` or `/chat` removed. If the file already defines a
model named `default`, the file's model wins and a warning says the seed variables are ignored.

";

const VALIDATION_MD: &str = "## Validation

Errors (moltbot does not start): unknown keys; values of the wrong type (the message names the key,
what was expected and where the value came from); a `database_url` not starting with `sqlite:`,
`postgres://` or `postgresql://`; a `redis_url` not starting with `redis://` or `rediss://`;
`debug_addr` (or `--dev`) or a missing `auth.jwt_secret`, or one shorter than 32 bytes, in the production
profile; two listeners on the same address; duplicate or
empty model names; a remote model without `endpoint`; a local model without `model_path` (or with an
`endpoint`); fallbacks that name unknown
models, the model itself, or form a cycle; zero timeouts, attempts or thresholds; a limit of 0 (omit it
instead); `auth.token_ttl` longer than `auth.max_token_ttl`; a `server.cors_origins` entry that is not an
origin; both `MOLTBOT_BOOTSTRAP_ADMIN_KEY` and `_FILE`, or a bootstrap key not shaped `mb_…`;
`tls.cert` without `tls.key` (or the reverse), an unreadable `tls.cert`, `tls.key` or `tls.acme.ca_file`
(the message names the path), both `tls.cert` and `tls.acme.domains`, an unknown name in
`tls.listeners`, a `tls.acme.contact` not starting with `mailto:`, or `tls.acme.http01_addr` without
`tls.acme.domains`; a `[[channels]]` entry without `platform`, with an `account` that is not 1 to 32 of
`a-z 0-9 _ -` or is used twice on one platform, a `mode` its platform does not support, a missing
credential of its platform or one of another platform, an `encoding_aes_key` that is not 43 letters and
digits, a `secret_token` Telegram would refuse, or a `model` that is not configured; a `[[hooks]]` entry
with a bad or repeated `name`, with both or neither of `secret` and `token`, a `secret` or
`callback_secret` that is not `whsec_` + base64 of at least 24 bytes, `mode = \"async\"` without
`callback_url` (or without a key to sign callbacks), `callback_url`/`callback_secret` on a sync hook, or
an unknown `model`; `pipeline.retry_base` longer than `pipeline.retry_max`; `pipeline.retention`
under 1h; `webhooks.first_retry` longer than `webhooks.retry_for`; `memory.compact_at` outside (0, 1],
`memory.keep_recent` of 0, `memory.summary_max_tokens` under 16, an empty `memory.prompt`, or a
`memory.summary_model` that is not configured.

Warnings (logged at startup): in production, an empty `server.admin_allow_cidrs`,
`log.prompts = true`, or a SQLite database; in development, an `auth.jwt_secret` shorter than
32 bytes; a model endpoint, channel `api_base` or hook `callback_url` using plain `http://` to a host
that is not loopback; in production, `webhooks.allow_private_targets = true`; a Telegram
`secret_token` in polling mode (unused); a hook `token` shorter than 16 bytes.
";

const CHANNELS_INTRO_MD: &str = "## Channels and hooks

Each `[[channels]]` table is one bot account on a chat platform. In the `webhook` and `http` modes
the platform sends events to `https://<host>/channels/<platform>/<account>` on the chat listener; in
the `polling` and `stream` modes moltbot holds the connection itself, on one replica at a time
(`pipeline.lease_ttl`), and needs no public URL. Events are stored, deduplicated and answered by the
pipeline (`[pipeline]`), with retries. Step-by-step platform setup: `docs/channels/<platform>.md`.

| Platform | Modes (first = default) | Required | Optional |
|---|---|---|---|
";

const CHANNELS_HOOKS_MD: &str = "
Every account also takes the general keys (`model`, `mode`, `api_base`, `require_mention`,
`allow_chats`, `allow_users`, `per_user_in_groups`, `system_prompt`, `replies_per_minute`, `bot_id`).
A credential of another platform is an error, so a key put in the wrong table is noticed. In group
chats an account answers only when mentioned (`require_mention`), and only allowed chats and senders
(`allow_chats`, `allow_users`; empty = all).

Each `[[hooks]]` table is a generic inbound hook: `POST /hooks/<name>` on the chat listener asks a
model. Callers authenticate with either a Standard Webhooks signature (`secret`, a `whsec_…` key) or
a bearer token (`token`). A `sync` hook answers in the response; an `async` hook answers `202` at
once and POSTs the answer to `callback_url`, signed per Standard Webhooks with `callback_secret`
(default: `secret`). A key can be made with `echo whsec_$(openssl rand -base64 32)`.

Examples (secrets from environment variables, see Secrets above):

```toml
";

/// The `[[channels]]` / `[[hooks]]` section of `docs/config.md`: what each platform takes.
fn channels_md() -> String {
    let mut md = String::from(CHANNELS_INTRO_MD);
    let codes = |items: &[&str]| {
        if items.is_empty() {
            "—".to_owned()
        } else {
            items.iter().map(|i| code(i)).collect::<Vec<_>>().join(", ")
        }
    };
    for platform in ChannelPlatform::ALL {
        let spec = platform.spec();
        let modes: Vec<&str> = spec.modes.iter().map(|m| m.as_str()).collect();
        let mut required = codes(spec.required);
        if !spec.webhook_required.is_empty() {
            let _ = write!(
                required,
                "; {} in {} mode",
                codes(spec.webhook_required),
                ChannelMode::Webhook
            );
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            code(platform.as_str()),
            codes(&modes),
            required,
            codes(spec.optional)
        );
    }
    md.push_str(CHANNELS_HOOKS_MD);
    md.push_str(EXAMPLE_CHANNELS.trim_start());
    md.push_str("```\n\n");
    md
}

/// Example accounts and hooks: in `docs/config.md`, and commented out at the end of
/// `moltbot.example.toml`. Tests load it.
pub(crate) const EXAMPLE_CHANNELS: &str = r#"
# Feishu (Lark: platform = "lark"); events to https://<host>/channels/feishu/main
[[channels]]
platform = "feishu"
account = "main"
app_id = "cli_a1b2c3d4e5f6a7b8"
app_secret_env = "FEISHU_APP_SECRET"
verification_token_env = "FEISHU_VERIFICATION_TOKEN"
encrypt_key_env = "FEISHU_ENCRYPT_KEY"

# DingTalk in Stream mode (no public URL needed)
[[channels]]
platform = "dingtalk"
account = "main"
mode = "stream"
app_key = "dingabcdefghijklmnop"
app_secret_env = "DINGTALK_APP_SECRET"

# WeCom self-built application; callback URL https://<host>/channels/wecom/main
[[channels]]
platform = "wecom"
account = "main"
corp_id = "ww0123456789abcdef"
agent_id = "1000002"
app_secret_env = "WECOM_SECRET"
token_env = "WECOM_TOKEN"
encoding_aes_key_env = "WECOM_ENCODING_AES_KEY"

# Telegram, webhook mode: setWebhook to https://<host>/channels/telegram/main with the secret_token
[[channels]]
platform = "telegram"
account = "main"
bot_id = "my_moltbot"
bot_token_env = "TELEGRAM_BOT_TOKEN"
secret_token_env = "TELEGRAM_SECRET_TOKEN"

# Slack; Event Subscriptions Request URL https://<host>/channels/slack/main
[[channels]]
platform = "slack"
account = "main"
bot_token_env = "SLACK_BOT_TOKEN"
signing_secret_env = "SLACK_SIGNING_SECRET"
allow_chats = ["C0123456789"]
replies_per_minute = 10

# A hook that answers in the response; callers sign requests with the Standard Webhooks key
[[hooks]]
name = "support"
secret_env = "SUPPORT_HOOK_SECRET"
system_prompt = "You answer support questions briefly."

# A hook that answers later: 202 at once, then the answer is POSTed (signed) to callback_url
[[hooks]]
name = "batch"
mode = "async"
token_env = "BATCH_HOOK_TOKEN"
callback_url = "https://example.com/moltbot/answers"
callback_secret_env = "BATCH_CALLBACK_SECRET"
"#;

/// Example literals for keys without a default, used in `moltbot.example.toml`.
fn example_literal(doc: &KeyDoc) -> Option<&'static str> {
    Some(match doc.key {
        "debug_addr" => "\"127.0.0.1:5000\"",
        "metrics_addr" => "\"127.0.0.1:9464\"",
        "redis_url" => "\"redis://127.0.0.1:6379\"",
        "tls.cert" => "\"/etc/letsencrypt/live/chat.example.com/fullchain.pem\"",
        "tls.key" => "\"/etc/letsencrypt/live/chat.example.com/privkey.pem\"",
        "tls.acme.ca_file" => "\"/etc/moltbot/acme-ca.pem\"",
        "tls.acme.http01_addr" => "\"0.0.0.0:80\"",
        "models[].temperature" => "0.7",
        "models[].top_p" => "1.0",
        "models[].limits.requests_per_minute" => "60",
        "models[].limits.tokens_per_minute" => "200000",
        "models[].upstream_model" => "\"gpt-4o-mini\"",
        "models[].tokenizer" => "\"o200k_base\"",
        "models[].model_path" => "\"models/gemma-3-270m-q4_k_m.gguf\"",
        "models[].threads" => "1",
        "engine.backends_dir" => "\"/opt/moltbot/backends\"",
        "models[].chat_template" => "\"{% for m in messages %}…{% endfor %}\"",
        "models[].pooling" => "\"mean\"",
        "limits.requests_per_minute" => "60",
        "limits.tokens_per_minute" => "100000",
        "limits.daily_tokens" => "2000000",
        "limits.concurrent_streams" => "4",
        "channels[].model" | "hooks[].model" => "\"gpt-4o-mini\"",
        "channels[].mode" => "\"webhook\"",
        "channels[].api_base" => "\"https://open.feishu.cn\"",
        "channels[].system_prompt" => "\"You are a helpful team assistant.\"",
        "channels[].bot_id" => "\"ou_0123456789abcdef\"",
        "channels[].app_id" => "\"cli_a1b2c3d4e5f6a7b8\"",
        "channels[].app_key" | "channels[].robot_code" => "\"dingabcdefghijklmnop\"",
        "channels[].corp_id" => "\"ww0123456789abcdef\"",
        "channels[].agent_id" => "\"1000002\"",
        "channels[].platform" => "\"feishu\"",
        "channels[].account" => "\"main\"",
        "hooks[].name" => "\"support\"",
        "hooks[].callback_url" => "\"https://example.com/moltbot/answers\"",
        "hooks[].system_prompt" => "\"You answer support questions briefly.\"",
        "memory.summary_model" => "\"gpt-4o-mini\"",
        "memory.prompt" => "\"Summarise the conversation; keep every fact, name, number and decision.\"",
        _ => return None,
    })
}

/// An environment variable name for the `_env` example of a secret: `auth.jwt_secret` →
/// `AUTH_JWT_SECRET`, `channels[].bot_token` → `CHANNEL_BOT_TOKEN`.
fn example_var(key: &str) -> String {
    let name = match key.split_once("[].") {
        Some((list, rest)) => format!("{}_{rest}", list.trim_end_matches('s')),
        None => key.to_owned(),
    };
    name.replace('.', "_").to_ascii_uppercase()
}

/// Keys of the first example model that are set (not commented out).
const EXAMPLE_MODEL: &[(&str, &str)] = &[
    ("models[].name", "\"gpt-4o-mini\""),
    ("models[].endpoint", "\"https://api.openai.com/v1\""),
    ("models[].fallbacks", "[\"local\"]"),
];

const EXAMPLE_SECOND_MODEL: &str = "
# A second model: a keyless local OpenAI-compatible server, used as the fallback above.
[[models]]
name = \"local\"
endpoint = \"http://127.0.0.1:11434/v1\"
upstream_model = \"llama3.1:8b\"
tokenizer = \"cl100k_base\"

# A third: a GGUF file run in-process by llama.cpp (see the README's \"Local models\").
[[models]]
name = \"gemma\"
backend = \"local\"
model_path = \"models/gemma-3-270m-q4_k_m.gguf\"
context_window = 4096
max_tokens = 512
threads = 2
";

/// Renders `moltbot.example.toml`: every key with its description, commented defaults and two
/// example models.
pub fn example_toml() -> String {
    let defaults = default_values(Profile::Development);
    let mut out = format!(
        "# moltbot example configuration.\n\
         # Generated from crates/moltbot-config (example_toml); regenerate with:\n\
         #   {REGENERATE}\n\
         # Every key is optional; commented lines show the defaults (development profile), or an\n\
         # example where a key has none.\n\
         # Precedence: defaults < this file < .env < environment (MOLTBOT_*) < flags. See docs/config.md.\n"
    );
    let mut table = String::new();
    for doc in KEYS {
        if doc.kind == ValueKind::TableList {
            if table.starts_with("models[]") {
                out.push_str(EXAMPLE_SECOND_MODEL);
                table.clear();
            }
            let title = match doc.key {
                "models" => "Models: one [[models]] table each (TOML only).",
                "channels" => {
                    "Channels: one [[channels]] table per chat platform account (TOML only); \
                     examples for every platform at the end."
                }
                _ => "Hooks: one [[hooks]] table each (TOML only); examples at the end.",
            };
            let _ = write!(out, "\n# ---- {title} ----\n");
            continue;
        }
        let (parent, leaf) = doc.key.rsplit_once('.').unwrap_or(("", doc.key));
        if parent != table {
            if table.starts_with("models[]") && !parent.starts_with("models[]") {
                out.push_str(EXAMPLE_SECOND_MODEL);
            }
            table = parent.to_owned();
            // The keys of an entry nobody configured are shown commented out, header included.
            let (header, comment) = match parent {
                "models[]" => ("[[models]]".to_owned(), ""),
                "channels[]" => ("[[channels]]".to_owned(), "# "),
                "hooks[]" => ("[[hooks]]".to_owned(), "# "),
                p => (format!("[{}]", p.replace("[]", "")), ""),
            };
            let _ = write!(out, "\n{comment}{header}\n");
        }
        let _ = write!(out, "\n# {}", doc.description);
        if doc.default == "(required)" {
            out.push_str(" Required.");
        } else if let Some(computed) = doc.default.strip_prefix('(') {
            let _ = write!(out, " Default: {}.", computed.trim_end_matches(')'));
        } else if doc.default.contains(" (") {
            let _ = write!(out, " Default: {}.", doc.default);
        }
        out.push('\n');
        let mut via: Vec<String> = Vec::new();
        via.extend(doc.env.map(|e| format!("env {e}")));
        via.extend(doc.flag.map(|f| format!("flag {f}")));
        if !via.is_empty() {
            let _ = writeln!(out, "# ({})", via.join("; "));
        }
        if let Some((_, literal)) = EXAMPLE_MODEL.iter().find(|(k, _)| *k == doc.key) {
            let _ = writeln!(out, "{leaf} = {literal}");
        } else if doc.kind == ValueKind::Secret {
            let _ = writeln!(out, "# {leaf} = \"…\"");
            let _ = writeln!(out, "# {leaf}_file = \"/run/secrets/{leaf}\"");
            let _ = writeln!(out, "# {leaf}_command = \"pass show moltbot/{leaf}\"");
            let _ = writeln!(out, "# {leaf}_env = \"{}\"", example_var(doc.key));
        } else {
            let value = defaults.get(doc.key).filter(|v| !v.is_null());
            let literal = match doc.kind {
                // The documented spelling ("24h"), not the serialized one ("1day").
                ValueKind::Duration => Some(toml_literal(&Value::String(doc.default.to_owned()))),
                _ => example_literal(doc)
                    .map(str::to_owned)
                    .or_else(|| value.map(toml_literal)),
            };
            if let Some(literal) = literal {
                let _ = writeln!(out, "# {leaf} = {literal}");
            }
        }
    }
    if table.starts_with("models[]") {
        out.push_str(EXAMPLE_SECOND_MODEL);
    }
    out.push_str("\n# ---- Examples of [[channels]] and [[hooks]] (uncomment and adapt). ----\n");
    for line in EXAMPLE_CHANNELS.lines() {
        match line {
            "" => out.push('\n'),
            l if l.starts_with('#') => {
                let _ = writeln!(out, "{l}");
            }
            l => {
                let _ = writeln!(out, "# {l}");
            }
        }
    }
    out
}
