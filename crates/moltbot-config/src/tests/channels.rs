//! `[[channels]]`, `[[hooks]]`, `[pipeline]`, `[webhooks]` and the `_env` secret form.

use std::time::Duration;

use super::{Dir, MODEL_A, assert_contains, env, env_opts, load_err, load_ok};
use crate::keys::{CHANNEL_MODES, PLATFORMS};
use crate::render::EXAMPLE_CHANNELS;
use crate::{
    ChannelMode, ChannelPlatform, Config, ConfigError, HookMode, LoadOptions, LoadedConfig, Profile, Secret,
    decode_whsec,
};

/// A Standard Webhooks key of 32 bytes (0, 1, …, 31).
const WHSEC: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The example key of the Standard Webhooks specification (24 bytes).
const WHSEC_SPEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// WeCom's documented sample EncodingAESKey (43 characters).
const WECOM_AES: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

const FEISHU: &str = r#"
[[channels]]
platform = "feishu"
account = "main"
app_id = "cli_a1b2c3"
app_secret = "feishu-app-secret"
verification_token = "feishu-verification"
encrypt_key = "feishu-encrypt"
bot_id = "ou_bot"
"#;

const DINGTALK: &str = r#"
[[channels]]
platform = "dingtalk"
account = "ops"
app_key = "dingkey"
app_secret = "ding-secret"
"#;

const WECOM: &str = r#"
[[channels]]
platform = "wecom"
account = "corp"
corp_id = "ww0123"
agent_id = "1000002"
app_secret = "wecom-secret"
token = "wecom-token"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
"#;

const TELEGRAM: &str = r#"
[[channels]]
platform = "telegram"
account = "tg"
bot_token = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
secret_token = "tg_secret-Token1"
"#;

const SLACK: &str = r#"
[[channels]]
platform = "slack"
account = "team"
bot_token = "xoxb-slack-token"
signing_secret = "slack-signing"
"#;

/// Each platform's complete example and its platform.
const ALL: [(ChannelPlatform, &str); 5] = [
    (ChannelPlatform::Feishu, FEISHU),
    (ChannelPlatform::DingTalk, DINGTALK),
    (ChannelPlatform::WeCom, WECOM),
    (ChannelPlatform::Telegram, TELEGRAM),
    (ChannelPlatform::Slack, SLACK),
];

fn load(toml: &str) -> Result<LoadedConfig, ConfigError> {
    let dir = Dir::new();
    Config::load(dir.with_file(toml))
}

#[track_caller]
fn ok(toml: &str) -> LoadedConfig {
    load(toml).unwrap_or_else(|e| panic!("expected the configuration to load, got: {e}\n{toml}"))
}

#[track_caller]
fn err(toml: &str) -> String {
    match load(toml) {
        Ok(_) => panic!("expected an error for:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

fn exposed(secret: Option<&Secret>) -> Option<&str> {
    secret.map(Secret::expose)
}

/// `toml` without its line setting `key`.
fn without(toml: &str, key: &str) -> String {
    let prefix = format!("{key} =");
    let lines: Vec<&str> = toml.lines().filter(|l| !l.starts_with(&prefix)).collect();
    assert_ne!(lines.len(), toml.lines().count(), "{key} not in {toml}");
    lines.join("\n") + "\n"
}

#[test]
fn platform_and_mode_names_match_the_key_table() {
    let names: Vec<&str> = ChannelPlatform::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(names, PLATFORMS);
    let modes: Vec<&str> = ChannelMode::ALL.iter().map(|m| m.as_str()).collect();
    assert_eq!(modes, CHANNEL_MODES);
    for p in ChannelPlatform::ALL {
        assert_eq!(serde_json::to_value(p).ok(), Some(p.as_str().into()));
        assert!(p.modes().contains(&p.default_mode()));
    }
}

#[test]
fn every_platform_parses_with_its_credentials() {
    let all: String = ALL.iter().map(|(_, toml)| *toml).collect();
    let c = ok(&format!("{MODEL_A}{all}")).config;
    assert_eq!(c.channels.len(), 5);

    let f = c.channel(ChannelPlatform::Feishu, "main").expect("feishu");
    assert_eq!(f.app_id.as_deref(), Some("cli_a1b2c3"));
    assert_eq!(exposed(f.app_secret.as_ref()), Some("feishu-app-secret"));
    assert_eq!(
        exposed(f.verification_token.as_ref()),
        Some("feishu-verification")
    );
    assert_eq!(exposed(f.encrypt_key.as_ref()), Some("feishu-encrypt"));
    assert_eq!(f.bot_id.as_deref(), Some("ou_bot"));
    assert_eq!(f.mode, Some(ChannelMode::Webhook));
    assert_eq!(f.path(), "/channels/feishu/main");

    let d = c.channel(ChannelPlatform::DingTalk, "ops").expect("dingtalk");
    assert_eq!(d.mode, Some(ChannelMode::Http), "dingtalk defaults to http");
    assert_eq!(d.app_key.as_deref(), Some("dingkey"));
    assert_eq!(
        d.robot_code.as_deref(),
        Some("dingkey"),
        "robot_code defaults to app_key"
    );
    assert_eq!(exposed(d.app_secret.as_ref()), Some("ding-secret"));

    let w = c.channel(ChannelPlatform::WeCom, "corp").expect("wecom");
    assert_eq!(w.corp_id.as_deref(), Some("ww0123"));
    assert_eq!(w.agent_id.as_deref(), Some("1000002"));
    assert_eq!(exposed(w.token.as_ref()), Some("wecom-token"));
    assert_eq!(exposed(w.encoding_aes_key.as_ref()), Some(WECOM_AES));

    let t = c.channel(ChannelPlatform::Telegram, "tg").expect("telegram");
    assert_eq!(t.mode(), ChannelMode::Webhook);
    assert_eq!(exposed(t.secret_token.as_ref()), Some("tg_secret-Token1"));

    let s = c.channel(ChannelPlatform::Slack, "team").expect("slack");
    assert_eq!(exposed(s.bot_token.as_ref()), Some("xoxb-slack-token"));
    assert_eq!(exposed(s.signing_secret.as_ref()), Some("slack-signing"));

    // Lark is Feishu's twin; the same account name may be used on another platform.
    let lark = FEISHU.replace("\"feishu\"", "\"lark\"");
    let c = ok(&format!("{FEISHU}{lark}")).config;
    assert_eq!(c.channels[1].platform, ChannelPlatform::Lark);
    assert_eq!(c.channels[1].account, "main");
    assert!(c.channel(ChannelPlatform::Lark, "main").is_some());
}

#[test]
fn channel_defaults_and_general_keys() {
    let c = ok(SLACK).config;
    let s = &c.channels[0];
    assert!(s.require_mention);
    assert!(!s.per_user_in_groups);
    assert_eq!(s.replies_per_minute, 20);
    assert!(s.allow_chats.is_empty() && s.allow_users.is_empty());
    assert_eq!(s.model, None, "None = the first model");
    assert_eq!(s.system_prompt, None);
    assert_eq!(s.api_base, None);

    let toml = format!(
        "{MODEL_A}[[models]]\nname = \"b\"\nendpoint = \"https://b.example/v1\"\n{SLACK}\
         model = \"b\"\nrequire_mention = false\nper_user_in_groups = true\nreplies_per_minute = 3\n\
         allow_chats = [\"C1\", \"C2\"]\nallow_users = [\"U1\"]\nsystem_prompt = \"Be brief.\"\n\
         api_base = \"http://127.0.0.1:9/api/\"\n"
    );
    let loaded = ok(&toml);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = &loaded.config.channels[0];
    assert_eq!(s.model.as_deref(), Some("b"));
    assert!(!s.require_mention);
    assert!(s.per_user_in_groups);
    assert_eq!(s.replies_per_minute, 3);
    assert_eq!(s.allow_chats, ["C1", "C2"]);
    assert_eq!(s.allow_users, ["U1"]);
    assert_eq!(s.system_prompt.as_deref(), Some("Be brief."));
    assert_eq!(
        s.api_base.as_ref().map(url::Url::as_str),
        Some("http://127.0.0.1:9/api/"),
        "kept as given"
    );

    // Explicit modes.
    let polling = ok(&format!(
        "{}mode = \"polling\"\n",
        without(TELEGRAM, "secret_token")
    ))
    .config;
    assert_eq!(polling.channels[0].mode, Some(ChannelMode::Polling));
    let stream = ok(&format!("{DINGTALK}mode = \"stream\"\nrobot_code = \"robot\"\n")).config;
    assert_eq!(stream.channels[0].mode(), ChannelMode::Stream);
    assert_eq!(stream.channels[0].robot_code(), Some("robot"));
}

#[test]
fn documented_examples_load() {
    let names = [
        "FEISHU_APP_SECRET",
        "FEISHU_VERIFICATION_TOKEN",
        "FEISHU_ENCRYPT_KEY",
        "DINGTALK_APP_SECRET",
        "WECOM_SECRET",
        "WECOM_TOKEN",
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_SECRET_TOKEN",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "BATCH_HOOK_TOKEN",
    ];
    let mut vars: Vec<(&str, &str)> = names.iter().map(|n| (*n, "value_of-the-secret0")).collect();
    vars.extend([
        ("WECOM_ENCODING_AES_KEY", WECOM_AES),
        ("SUPPORT_HOOK_SECRET", WHSEC),
        ("BATCH_CALLBACK_SECRET", WHSEC_SPEC),
    ]);
    let dir = Dir::new();
    let mut opts = dir.with_file(&format!("{MODEL_A}{EXAMPLE_CHANNELS}"));
    opts.env = env(&vars);
    let loaded = load_ok(opts);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    let platforms: Vec<&str> = c.channels.iter().map(|ch| ch.platform.as_str()).collect();
    assert_eq!(platforms, ["feishu", "dingtalk", "wecom", "telegram", "slack"]);
    assert_eq!(exposed(c.channels[2].encoding_aes_key.as_ref()), Some(WECOM_AES));
    assert_eq!(c.channels[1].mode, Some(ChannelMode::Stream));
    let hook = c.hook("batch").expect("batch hook");
    assert_eq!(hook.mode, HookMode::Async);
    assert_eq!(exposed(hook.callback_secret.as_ref()), Some(WHSEC_SPEC));
    assert_eq!(exposed(c.hooks[0].secret.as_ref()), Some(WHSEC));

    // The example file carries the same blocks, commented out.
    let example = crate::example_toml();
    assert_contains(&example, "# [[channels]]\n# platform = \"telegram\"\n");
    assert_contains(&example, "# secret_token_env = \"TELEGRAM_SECRET_TOKEN\"\n");
}

#[test]
fn required_credentials_of_each_platform() {
    for (platform, toml) in ALL {
        ok(toml);
        for name in platform
            .spec()
            .required
            .iter()
            .chain(platform.spec().webhook_required)
        {
            let msg = err(&without(toml, name));
            assert_contains(
                &msg,
                &format!("invalid value for \"channels[0].{name}\": is required for {platform}"),
            );
        }
    }
    let msg = err(&without(WECOM, "token"));
    assert_contains(&msg, "(or token_file, token_command or token_env)");
    assert_contains(&msg, "(wecom account \"corp\")");
    assert_contains(&msg, "moltbot.toml)");
    let msg = err(&without(FEISHU, "app_id"));
    assert!(!msg.contains("app_id_file"), "app_id is not a secret: {msg}");
    let msg = err(&without(TELEGRAM, "secret_token"));
    assert_contains(&msg, "is required for telegram in webhook mode");
    // Optional ones.
    ok(&without(FEISHU, "encrypt_key"));
    ok(&format!(
        "{}mode = \"polling\"\n",
        without(TELEGRAM, "secret_token")
    ));
}

#[test]
fn credentials_of_another_platform_are_refused() {
    let all = [
        "app_id",
        "app_secret",
        "verification_token",
        "encrypt_key",
        "app_key",
        "robot_code",
        "corp_id",
        "agent_id",
        "token",
        "encoding_aes_key",
        "bot_token",
        "secret_token",
        "signing_secret",
    ];
    for (platform, toml) in ALL {
        let spec = platform.spec();
        for name in all {
            if spec.required.contains(&name)
                || spec.webhook_required.contains(&name)
                || spec.optional.contains(&name)
            {
                continue;
            }
            let msg = err(&format!("{toml}{name} = \"x\"\n"));
            assert_contains(
                &msg,
                &format!("invalid value for \"channels[0].{name}\": {name} is not a {platform} setting"),
            );
        }
    }
    let msg = err(&format!("{FEISHU}signing_secret = \"s\"\n"));
    assert_contains(
        &msg,
        "(feishu takes app_id, app_secret, verification_token and encrypt_key); remove it",
    );
    // Also through the indirect forms.
    let msg = err(&format!("{SLACK}app_secret_command = \"echo x\"\n"));
    assert_contains(
        &msg,
        "\"channels[0].app_secret\": app_secret is not a slack setting",
    );
    // A misspelling is an unknown key with a hint.
    let msg = err(&format!("{FEISHU}signing_secrt = \"s\"\n"));
    assert_contains(&msg, "unknown configuration key \"channels[0].signing_secrt\"");
    assert_contains(&msg, "did you mean \"channels[].signing_secret\"?");
}

#[test]
fn channel_field_checks() {
    let msg = err("[[channels]]\naccount = \"main\"\n");
    assert_contains(
        &msg,
        "invalid value for \"channels[0].platform\": is required: one of \"feishu\", \"lark\", \"dingtalk\", \
         \"wecom\", \"telegram\", \"slack\" (in ",
    );
    let msg = err(&FEISHU.replace("\"feishu\"", "\"whatsapp\""));
    assert_contains(&msg, "\"channels[0].platform\": expected one of \"feishu\"");
    assert_contains(&msg, "got \"whatsapp\"");

    let msg = err(&without(FEISHU, "account"));
    assert_contains(
        &msg,
        "\"channels[0].account\": is required: 1 to 32 of a-z, 0-9, _ and -",
    );
    for bad in ["Main", "a b", "x/y", &"a".repeat(33)] {
        let msg = err(&FEISHU.replace("\"main\"", &format!("{bad:?}")));
        assert_contains(
            &msg,
            "\"channels[0].account\": expected 1 to 32 of a-z, 0-9, _ and -, got",
        );
    }
    ok(&FEISHU.replace("\"main\"", &format!("{:?}", "a-b_9".repeat(6) + "xy")));
    let msg = err(&format!("{FEISHU}{SLACK}{FEISHU}"));
    assert_contains(
        &msg,
        "\"channels[2].account\": feishu account \"main\" is already defined by channels[0]",
    );

    let msg = err(&format!("{TELEGRAM}mode = \"stream\"\n"));
    assert_contains(
        &msg,
        "\"channels[0].mode\": telegram supports \"webhook\" or \"polling\", got \"stream\" (telegram account \"tg\")",
    );
    let msg = err(&format!("{SLACK}mode = \"polling\"\n"));
    assert_contains(
        &msg,
        "\"channels[0].mode\": slack supports \"webhook\", got \"polling\"",
    );
    let msg = err(&format!("{DINGTALK}mode = \"webhook\"\n"));
    assert_contains(&msg, "dingtalk supports \"http\" or \"stream\"");
    let msg = err(&format!("{FEISHU}mode = \"pull\"\n"));
    assert_contains(
        &msg,
        "\"channels[0].mode\": expected one of \"webhook\", \"polling\", \"http\", \"stream\"",
    );

    let msg = err(&WECOM.replace(WECOM_AES, "short-key"));
    assert_contains(
        &msg,
        "\"channels[0].encoding_aes_key\": expected 43 letters and digits (the EncodingAESKey of the callback \
         settings), got 9 characters",
    );
    assert!(!msg.contains("short-key"), "{msg}");
    let msg = err(&WECOM.replace(WECOM_AES, &format!("{}+", &WECOM_AES[..42])));
    assert_contains(
        &msg,
        "\"channels[0].encoding_aes_key\": expected 43 letters and digits",
    );

    let msg = err(&TELEGRAM.replace("tg_secret-Token1", "no spaces allowed"));
    assert_contains(
        &msg,
        "\"channels[0].secret_token\": Telegram accepts 1 to 256 of A-Z, a-z, 0-9, _ and -",
    );
    assert!(!msg.contains("no spaces"), "{msg}");
    let msg = err(&TELEGRAM.replace("tg_secret-Token1", &"a".repeat(257)));
    assert_contains(&msg, "\"channels[0].secret_token\": Telegram accepts");
    let msg = err(&TELEGRAM.replace("tg_secret-Token1", ""));
    assert_contains(&msg, "\"channels[0].secret_token\": must not be empty");
    let msg = err(&FEISHU.replace("cli_a1b2c3", " "));
    assert_contains(&msg, "\"channels[0].app_id\": must not be empty");

    let msg = err(&format!("{MODEL_A}{SLACK}model = \"nope\"\n"));
    assert_contains(
        &msg,
        "\"channels[0].model\": \"nope\" is not a configured model (configured: \"a\")",
    );
    let msg = err(&format!("{SLACK}model = \"nope\"\n"));
    assert_contains(&msg, "(no models are configured)");

    let msg = err(&format!("{SLACK}replies_per_minute = 0\n"));
    assert_contains(&msg, "\"channels[0].replies_per_minute\": must be at least 1");
    let msg = err(&format!("{SLACK}replies_per_minute = -1\n"));
    assert_contains(
        &msg,
        "\"channels[0].replies_per_minute\": expected a whole number",
    );
    let msg = err(&format!("{SLACK}allow_users = [\"U1\", \"\"]\n"));
    assert_contains(&msg, "\"channels[0].allow_users[1]\": must not be empty");
    let msg = err(&format!("{SLACK}bot_id = \"\"\n"));
    assert_contains(&msg, "\"channels[0].bot_id\": must not be empty");
    let msg = err(&format!("{SLACK}api_base = \"ftp://slack.example\"\n"));
    assert_contains(
        &msg,
        "\"channels[0].api_base\": expected an http:// or https:// URL",
    );
    let msg = err(&format!("{SLACK}require_mention = \"yes\"\n"));
    assert_contains(&msg, "\"channels[0].require_mention\": expected true or false");
    let msg = err("channels = { platform = \"slack\" }\n");
    assert_contains(
        &msg,
        "invalid value for \"channels\": expected an array of tables ([[channels]])",
    );
}

#[test]
fn channel_warnings() {
    let warnings = ok(&format!("{TELEGRAM}mode = \"polling\"\n")).warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_contains(
        &warnings[0],
        "channels[0].secret_token: only used in webhook mode; ignored in polling mode",
    );
    let warnings = ok(&format!("{SLACK}api_base = \"http://slack.internal/api\"\n")).warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_contains(
        &warnings[0],
        "channels[0].api_base: slack account \"team\" uses plain http://",
    );
}

fn hook(extra: &str) -> String {
    format!("[[hooks]]\nname = \"ci\"\n{extra}")
}

#[test]
fn hooks_parse_with_defaults() {
    let toml = format!(
        "{MODEL_A}{}{}",
        hook(&format!("secret = \"{WHSEC}\"\n")),
        "[[hooks]]\nname = \"batch-jobs_2\"\ntoken = \"0123456789abcdef0123\"\nmode = \"async\"\n\
         model = \"a\"\ncallback_url = \"https://example.com/cb?x=1\"\n\
         callback_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nsystem_prompt = \"Summarise.\"\n"
    );
    let loaded = ok(&toml);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    let sync = &c.hooks[0];
    assert_eq!(sync.mode, HookMode::Sync);
    assert_eq!(exposed(sync.secret.as_ref()), Some(WHSEC));
    assert_eq!(sync.token, None);
    assert_eq!(sync.model, None);
    assert_eq!(sync.callback_secret, None, "sync hooks sign nothing");
    assert_eq!(sync.path(), "/hooks/ci");
    let batch = c.hook("batch-jobs_2").expect("async hook");
    assert_eq!(batch.mode, HookMode::Async);
    assert_eq!(exposed(batch.token.as_ref()), Some("0123456789abcdef0123"));
    assert_eq!(batch.model.as_deref(), Some("a"));
    assert_eq!(
        batch.callback_url.as_ref().map(url::Url::as_str),
        Some("https://example.com/cb?x=1")
    );
    assert_eq!(exposed(batch.callback_key()), Some(WHSEC_SPEC));
    assert_eq!(batch.system_prompt.as_deref(), Some("Summarise."));

    // An async hook with a secret signs callbacks with it unless callback_secret is set.
    let c = ok(&hook(&format!(
        "secret = \"{WHSEC}\"\nmode = \"async\"\ncallback_url = \"https://example.com/cb\"\n"
    )))
    .config;
    assert_eq!(exposed(c.hooks[0].callback_secret.as_ref()), Some(WHSEC));
}

#[test]
fn hook_checks() {
    let msg = err(&hook(""));
    assert_contains(
        &msg,
        "\"hooks[0].secret\": a hook needs secret (a Standard Webhooks key `whsec_…` callers sign with",
    );
    let msg = err(&hook(&format!(
        "secret = \"{WHSEC}\"\ntoken = \"0123456789abcdef\"\n"
    )));
    assert_contains(&msg, "\"hooks[0].token\": set either secret");
    assert_contains(&msg, "not both (hook \"ci\")");

    let msg = err(&hook("secret = \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"));
    assert_contains(
        &msg,
        "\"hooks[0].secret\": expected a Standard Webhooks key starting with \"whsec_\"",
    );
    assert!(!msg.contains("MfKQ9r8"), "{msg}");
    let msg = err(&hook("secret = \"whsec_not base64!\"\n"));
    assert_contains(
        &msg,
        "\"hooks[0].secret\": expected standard base64 after \"whsec_\"",
    );
    let msg = err(&hook("secret = \"whsec_AAECAwQFBgcICQoLDA0ODw==\"\n"));
    assert_contains(
        &msg,
        "\"hooks[0].secret\": the key is 16 bytes; use at least 24 random bytes",
    );
    let msg = err(&hook("token = \"\"\n"));
    assert_contains(&msg, "\"hooks[0].token\": must not be empty");

    let msg = err(&hook(&format!("secret = \"{WHSEC}\"\nmode = \"async\"\n")));
    assert_contains(
        &msg,
        "\"hooks[0].callback_url\": is required with mode = \"async\"",
    );
    let msg = err(&hook(&format!(
        "secret = \"{WHSEC}\"\ncallback_url = \"https://example.com/cb\"\n"
    )));
    assert_contains(
        &msg,
        "\"hooks[0].callback_url\": is only used with mode = \"async\" (hook \"ci\")",
    );
    let msg = err(&hook(&format!(
        "secret = \"{WHSEC}\"\ncallback_secret = \"{WHSEC}\"\n"
    )));
    assert_contains(
        &msg,
        "\"hooks[0].callback_secret\": is only used with mode = \"async\"",
    );
    let msg = err(&hook(
        "token = \"0123456789abcdef\"\nmode = \"async\"\ncallback_url = \"https://example.com/cb\"\n",
    ));
    assert_contains(
        &msg,
        "\"hooks[0].callback_secret\": is required with mode = \"async\" when the hook uses a token",
    );
    let msg = err(&hook(
        "token = \"0123456789abcdef\"\nmode = \"async\"\ncallback_url = \"https://example.com/cb\"\n\
         callback_secret = \"whsec_\"\n",
    ));
    assert_contains(&msg, "\"hooks[0].callback_secret\": the key is 0 bytes");
    let msg = err(&hook(&format!(
        "secret = \"{WHSEC}\"\nmode = \"async\"\ncallback_url = \"mailto:x@example.com\"\n"
    )));
    assert_contains(
        &msg,
        "\"hooks[0].callback_url\": expected an http:// or https:// URL",
    );
    let msg = err(&hook(&format!("secret = \"{WHSEC}\"\nmode = \"later\"\n")));
    assert_contains(&msg, "\"hooks[0].mode\": expected one of \"sync\", \"async\"");
    let msg = err(&hook(&format!("secret = \"{WHSEC}\"\nmodel = \"gpt\"\n")));
    assert_contains(&msg, "\"hooks[0].model\": \"gpt\" is not a configured model");

    let msg = err("[[hooks]]\ntoken = \"0123456789abcdef\"\n");
    assert_contains(
        &msg,
        "\"hooks[0].name\": is required: 1 to 64 of a-z, 0-9, _ and -",
    );
    let msg = err("[[hooks]]\nname = \"CI\"\ntoken = \"0123456789abcdef\"\n");
    assert_contains(
        &msg,
        "\"hooks[0].name\": expected 1 to 64 of a-z, 0-9, _ and -, got \"CI\"",
    );
    let twice = hook("token = \"0123456789abcdef\"\n");
    let msg = err(&format!("{twice}{twice}"));
    assert_contains(
        &msg,
        "\"hooks[1].name\": hook name \"ci\" is already used by hooks[0]",
    );
    let msg = err(&format!(
        "{}secrte = \"x\"\n",
        hook("token = \"0123456789abcdef\"\n")
    ));
    assert_contains(&msg, "unknown configuration key \"hooks[0].secrte\"");

    let warnings = ok(&hook("token = \"short\"\n")).warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_contains(
        &warnings[0],
        "hooks[0].token: hook \"ci\" has a token shorter than 16 bytes",
    );
    let warnings = ok(&hook(&format!(
        "secret = \"{WHSEC}\"\nmode = \"async\"\ncallback_url = \"http://10.0.0.5/cb\"\n"
    )))
    .warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_contains(
        &warnings[0],
        "hooks[0].callback_url: hook \"ci\" sends answers over plain http://",
    );
}

#[test]
fn whsec_keys_decode() {
    assert_eq!(decode_whsec(WHSEC), Ok((0u8..32).collect::<Vec<u8>>()));
    assert_eq!(decode_whsec(WHSEC_SPEC).map(|k| k.len()), Ok(24));
    // Padding is optional.
    assert_eq!(
        decode_whsec(WHSEC.trim_end_matches('=')),
        Ok((0u8..32).collect::<Vec<u8>>())
    );
    for bad in [
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8==",
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=",
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8A=",
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh-_",
    ] {
        assert!(decode_whsec(bad).is_err(), "{bad}");
    }
}

#[test]
fn tables_cannot_come_from_the_environment() {
    for (var, list) in [
        ("MOLTBOT_CHANNELS", "channels"),
        ("MOLTBOT_HOOKS__NAME", "hooks"),
        ("MOLTBOT_MODELS", "models"),
    ] {
        let msg = load_err(env_opts(&[(var, "x")])).to_string();
        assert_contains(
            &msg,
            &format!("{list} can only be configured in the TOML file ([[{list}]])"),
        );
    }
}

#[test]
fn pipeline_and_webhooks_defaults_and_overrides() {
    let c = load_ok(LoadOptions::default()).config;
    let p = &c.pipeline;
    assert_eq!(p.workers, 4);
    assert_eq!(p.lock_timeout, Duration::from_secs(120));
    assert_eq!(p.max_attempts, 8);
    assert_eq!(p.retry_base, Duration::from_secs(2));
    assert_eq!(p.retry_max, Duration::from_secs(300));
    assert_eq!(p.retention, Duration::from_secs(7 * 86_400));
    assert_eq!(p.lease_ttl, Duration::from_secs(15));
    assert_eq!(p.poll_interval, Duration::from_secs(1));
    let w = &c.webhooks;
    assert_eq!(w.workers, 2);
    assert_eq!(w.timeout, Duration::from_secs(10));
    assert_eq!(w.first_retry, Duration::from_secs(5));
    assert_eq!(w.retry_for, Duration::from_secs(86_400));
    assert!(w.allow_private_targets, "allowed in development");
    assert!(c.channels.is_empty() && c.hooks.is_empty());

    const JWT: (&str, &str) = ("MOLTBOT_AUTH__JWT_SECRET", "0123456789abcdef0123456789abcdef");
    let prod = load_ok(env_opts(&[("MOLTBOT_PROFILE", "production"), JWT])).config;
    assert!(!prod.webhooks.allow_private_targets, "refused in production");
    assert_eq!(Config::defaults(Profile::Production).webhooks, prod.webhooks);

    let c = load_ok(env_opts(&[
        ("MOLTBOT_PIPELINE__WORKERS", "16"),
        ("MOLTBOT_PIPELINE__RETENTION", "30days"),
        ("MOLTBOT_PIPELINE__LEASE_TTL", "30s"),
        ("MOLTBOT_WEBHOOKS__RETRY_FOR", "3days"),
        ("MOLTBOT_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "false"),
    ]))
    .config;
    assert_eq!(c.pipeline.workers, 16);
    assert_eq!(c.pipeline.retention, Duration::from_secs(30 * 86_400));
    assert_eq!(c.pipeline.lease_ttl, Duration::from_secs(30));
    assert_eq!(c.webhooks.retry_for, Duration::from_secs(3 * 86_400));
    assert!(!c.webhooks.allow_private_targets);

    let dir = Dir::new();
    let c = load_ok(dir.with_file(
        "[pipeline]\nmax_attempts = 3\nretry_base = \"500ms\"\n[webhooks]\ntimeout = \"3s\"\nworkers = 8\n",
    ))
    .config;
    assert_eq!(c.pipeline.max_attempts, 3);
    assert_eq!(c.pipeline.retry_base, Duration::from_millis(500));
    assert_eq!(c.webhooks.timeout, Duration::from_secs(3));
    assert_eq!(c.webhooks.workers, 8);

    let warnings = load_ok(env_opts(&[
        ("MOLTBOT_PROFILE", "production"),
        ("MOLTBOT_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        JWT,
    ]))
    .warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("webhooks.allow_private_targets = true")),
        "{warnings:?}"
    );
}

#[test]
fn pipeline_and_webhooks_checks() {
    for (var, value, needle) in [
        (
            "MOLTBOT_PIPELINE__WORKERS",
            "0",
            "\"pipeline.workers\": must be at least 1",
        ),
        (
            "MOLTBOT_PIPELINE__MAX_ATTEMPTS",
            "0",
            "\"pipeline.max_attempts\": must be at least 1",
        ),
        (
            "MOLTBOT_PIPELINE__LOCK_TIMEOUT",
            "0s",
            "\"pipeline.lock_timeout\": must be longer than 0s",
        ),
        (
            "MOLTBOT_PIPELINE__LEASE_TTL",
            "0s",
            "\"pipeline.lease_ttl\": must be longer than 0s",
        ),
        (
            "MOLTBOT_PIPELINE__POLL_INTERVAL",
            "0s",
            "\"pipeline.poll_interval\": must be longer than 0s",
        ),
        (
            "MOLTBOT_PIPELINE__RETRY_BASE",
            "10m",
            "\"pipeline.retry_base\": 10m is longer than pipeline.retry_max (5m)",
        ),
        (
            "MOLTBOT_PIPELINE__RETENTION",
            "59m",
            "\"pipeline.retention\": must be at least 1h, got 59m",
        ),
        (
            "MOLTBOT_PIPELINE__RETENTION",
            "soon",
            "\"pipeline.retention\": expected a duration",
        ),
        (
            "MOLTBOT_WEBHOOKS__WORKERS",
            "0",
            "\"webhooks.workers\": must be at least 1",
        ),
        (
            "MOLTBOT_WEBHOOKS__TIMEOUT",
            "0s",
            "\"webhooks.timeout\": must be longer than 0s",
        ),
        (
            "MOLTBOT_WEBHOOKS__FIRST_RETRY",
            "2days",
            "\"webhooks.first_retry\": 2days is longer than webhooks.retry_for (1day)",
        ),
        (
            "MOLTBOT_WEBHOOKS__ALLOW_PRIVATE_TARGETS",
            "maybe",
            "\"webhooks.allow_private_targets\": expected true or false",
        ),
    ] {
        let msg = load_err(env_opts(&[(var, value)])).to_string();
        assert_contains(&msg, needle);
        assert_contains(&msg, var);
    }
    load_ok(env_opts(&[("MOLTBOT_PIPELINE__RETENTION", "1h")]));
    let msg = load_err(env_opts(&[("MOLTBOT_PIPELINE__WORKRS", "1")])).to_string();
    assert_contains(&msg, "did you mean \"pipeline.workers\"?");
}

#[test]
fn secret_from_named_environment_variable() {
    // Top level, through the environment: MOLTBOT_K_ENV names the variable.
    let c = load_ok(env_opts(&[
        ("MOLTBOT_DATABASE_PASSWORD_ENV", "PGPASSWORD_T1"),
        ("PGPASSWORD_T1", "pw-from-named-var"),
    ]))
    .config;
    assert_eq!(exposed(c.database_password.as_ref()), Some("pw-from-named-var"));

    // In TOML tables and arrays of tables; the environment wins over .env.
    let dir = Dir::new();
    dir.write(
        ".env",
        &format!("SLACK_TOKEN_T2=xoxb-dotenv\nSLACK_SIGNING_T2=signing-dotenv\nHOOK_KEY_T2={WHSEC}\n"),
    );
    let toml = format!(
        "[auth]\njwt_secret_env = \"JWT_T2\"\n{MODEL_A}api_key_env = \"MODEL_KEY_T2\"\n\
         [[channels]]\nplatform = \"slack\"\naccount = \"team\"\nbot_token_env = \"SLACK_TOKEN_T2\"\n\
         signing_secret_env = \" SLACK_SIGNING_T2 \"\n\
         [[hooks]]\nname = \"ci\"\nsecret_env = \"HOOK_KEY_T2\"\n"
    );
    dir.write("moltbot.toml", &toml);
    let mut opts = dir.opts();
    opts.env = env(&[
        ("JWT_T2", "jwt-0123456789abcdef0123456789abcdef"),
        ("MODEL_KEY_T2", "sk-env"),
        ("SLACK_TOKEN_T2", "xoxb-env"),
    ]);
    let loaded = load_ok(opts);
    let c = &loaded.config;
    assert_eq!(
        exposed(c.auth.jwt_secret.as_ref()),
        Some("jwt-0123456789abcdef0123456789abcdef")
    );
    assert_eq!(c.models[0].keys()[0].expose(), "sk-env");
    assert_eq!(
        exposed(c.channels[0].bot_token.as_ref()),
        Some("xoxb-env"),
        "environment wins"
    );
    assert_eq!(
        exposed(c.channels[0].signing_secret.as_ref()),
        Some("signing-dotenv"),
        "then .env"
    );
    assert_eq!(exposed(c.hooks[0].secret.as_ref()), Some(WHSEC));
    let shown = c.redacted_toml();
    for value in ["xoxb-env", "signing-dotenv", "sk-env", "jwt-0123", "whsec_"] {
        assert!(!shown.contains(value), "{value} leaked:\n{shown}");
    }
    assert!(!shown.contains("_env"), "resolved forms are gone:\n{shown}");
}

#[test]
fn named_environment_variable_errors() {
    let e = load_err(env_opts(&[(
        "MOLTBOT_AUTH__JWT_SECRET_ENV",
        "NOT_SET_ANYWHERE_T3",
    )]));
    assert!(matches!(e, ConfigError::Secret { .. }));
    let msg = e.to_string();
    assert_contains(
        &msg,
        "could not resolve secret \"auth.jwt_secret\": jwt_secret_env names environment variable \
         NOT_SET_ANYWHERE_T3, which is not set (or empty) in the environment or .env \
         (from environment variable MOLTBOT_AUTH__JWT_SECRET_ENV)",
    );
    let msg = load_err(env_opts(&[
        ("MOLTBOT_AUTH__JWT_SECRET_ENV", "EMPTY_T3"),
        ("EMPTY_T3", ""),
    ]))
    .to_string();
    assert_contains(&msg, "EMPTY_T3, which is not set (or empty)");

    let msg = err(&format!(
        "{}bot_token_env = \"MISSING_T3\"\n",
        without(SLACK, "bot_token")
    ));
    assert_contains(
        &msg,
        "could not resolve secret \"channels[0].bot_token\": bot_token_env names environment variable MISSING_T3",
    );
    assert_contains(&msg, "moltbot.toml)");
    let msg = err(&format!(
        "{}bot_token_env = \"$(whoami)\"\n",
        without(SLACK, "bot_token")
    ));
    assert_contains(
        &msg,
        "expected the name of an environment variable (letters, digits and _), got \"$(whoami)\"",
    );
    let msg = err(&format!("{SLACK}bot_token_env = \"X\"\n"));
    assert_contains(
        &msg,
        "secret \"channels[0].bot_token\" is set more than once: bot_token (in ",
    );
    assert_contains(&msg, "and bot_token_env (in ");
    let msg = err(&format!("{}bot_token_env = 3\n", without(SLACK, "bot_token")));
    assert_contains(&msg, "\"channels[0].bot_token_env\": expected a string");

    // A higher layer replaces every form of a secret below it.
    let dir = Dir::new();
    let mut opts = dir.with_file("[auth]\njwt_secret_env = \"NOT_SET_T3\"\n");
    opts.env = env(&[("MOLTBOT_AUTH__JWT_SECRET", "jwt-direct")]);
    let c = load_ok(opts).config;
    assert_eq!(exposed(c.auth.jwt_secret.as_ref()), Some("jwt-direct"));
}

#[test]
fn channel_and_hook_secrets_are_redacted() {
    let toml = format!(
        "{MODEL_A}{}api_base = \"https://user:SECRET-URL@feishu.example/\"\n{}{}\
         callback_url = \"https://u:SECRET-CB@example.com/cb\"\ncallback_secret = \"{WHSEC}\"\n",
        FEISHU.replace("feishu-", "SECRET-"),
        SLACK
            .replace("xoxb-slack-token", "SECRET-SLACK")
            .replace("slack-signing", "SECRET-SIGN"),
        hook("token = \"SECRET-HOOK-TOKEN-0123\"\nmode = \"async\"\n"),
    );
    let c = ok(&toml).config;
    let shown = c.redacted_toml();
    assert!(!shown.contains("SECRET"), "secret leaked:\n{shown}");
    assert!(!shown.contains(WHSEC), "secret leaked:\n{shown}");
    assert!(!format!("{c:?}").contains("SECRET"));
    assert!(!format!("{c:?}").contains(&WHSEC[6..]));
    let json = c.redacted_json();
    assert_eq!(json["channels"][0]["app_secret"], "***");
    assert_eq!(json["channels"][0]["verification_token"], "***");
    assert_eq!(json["channels"][0]["app_id"], "cli_a1b2c3", "ids are not secret");
    assert_eq!(
        json["channels"][0]["api_base"],
        "https://user:***@feishu.example/"
    );
    assert_eq!(json["channels"][1]["bot_token"], "***");
    assert_eq!(json["channels"][1]["signing_secret"], "***");
    assert_eq!(json["channels"][1]["mode"], "webhook");
    assert_eq!(json["hooks"][0]["token"], "***");
    assert_eq!(json["hooks"][0]["callback_secret"], "***");
    assert_eq!(json["hooks"][0]["callback_url"], "https://u:***@example.com/cb");
    assert_eq!(json["pipeline"]["retention"], "7days");
    let reparsed: toml::Table = toml::from_str(&shown).expect("redacted output is TOML");
    assert!(reparsed.contains_key("channels") && reparsed.contains_key("hooks"));
}
