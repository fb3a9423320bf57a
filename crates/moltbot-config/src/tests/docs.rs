//! The key table, generated files and redaction.

use std::collections::BTreeSet;

use super::{Dir, env, load_ok};
use crate::keys::ValueKind;
use crate::render::{default_values, display_default};
use crate::{Config, KEYS, ModelConfig, Profile, config_markdown, example_toml};

const DOCS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md");
const EXAMPLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../moltbot.example.toml");

/// Compares a checked-in generated file, or rewrites it when `MOLTBOT_TEST_REGENERATE_DOCS` is set.
fn check_generated(path: &str, expected: &str) {
    if std::env::var_os("MOLTBOT_TEST_REGENERATE_DOCS").is_some() {
        std::fs::write(path, expected).expect("write generated file");
        return;
    }
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        actual == expected,
        "{path} is out of date with the key table in crates/moltbot-config; regenerate it with:\n    \
         MOLTBOT_TEST_REGENERATE_DOCS=1 cargo test -p moltbot-config"
    );
}

#[test]
fn docs_config_md_is_up_to_date() {
    check_generated(DOCS_PATH, &config_markdown());
}

#[test]
fn example_toml_is_up_to_date() {
    check_generated(EXAMPLE_PATH, &example_toml());
}

#[test]
fn example_toml_loads_and_validates() {
    let dir = Dir::new();
    let loaded = load_ok(dir.with_file(include_str!("../../../../moltbot.example.toml")));
    let c = loaded.config;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let names: Vec<&str> = c.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["gpt-4o-mini", "local", "gemma"]);
    assert_eq!(c.models[2].backend, crate::BackendKind::Local);
    assert_eq!(c.models[2].threads, Some(2));
    assert_eq!(c.models[0].fallbacks, ["local"]);
    assert_eq!(
        Config {
            models: Vec::new(),
            ..c
        },
        Config::default(),
        "commented defaults only"
    );
    // Every key is mentioned.
    let text = example_toml();
    for doc in KEYS.iter().filter(|d| d.kind != ValueKind::TableList) {
        let leaf = doc.key.rsplit('.').next().unwrap_or(doc.key);
        assert!(
            text.contains(&format!("{leaf} =")),
            "{} missing from the example",
            doc.key
        );
    }
}

#[test]
fn key_table_covers_every_config_field() {
    let documented: BTreeSet<&str> = KEYS
        .iter()
        .filter(|d| d.kind != ValueKind::TableList)
        .map(|d| d.key)
        .collect();
    let actual: BTreeSet<String> = default_values(Profile::Development).into_keys().collect();
    let actual: BTreeSet<&str> = actual.iter().map(String::as_str).collect();
    let undocumented: Vec<_> = actual.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&actual).collect();
    assert!(
        undocumented.is_empty(),
        "Config fields missing from KEYS: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "KEYS entries that are not Config fields: {stale:?}"
    );
    let unique: BTreeSet<&str> = KEYS.iter().map(|d| d.key).collect();
    assert_eq!(unique.len(), KEYS.len(), "duplicate KEYS entries");
}

#[test]
fn key_table_defaults_match_the_code() {
    let dev = default_values(Profile::Development);
    let prod = default_values(Profile::Production);
    for doc in KEYS
        .iter()
        .filter(|d| d.kind != ValueKind::TableList && !d.default.starts_with('('))
    {
        if doc.key == "profile" {
            assert_eq!(doc.default, display_default(&dev[doc.key]));
            continue;
        }
        if doc.kind == ValueKind::Duration {
            let documented = humantime::parse_duration(doc.default).ok();
            let actual = dev[doc.key]
                .as_str()
                .and_then(|s| humantime::parse_duration(s).ok());
            assert_eq!(documented, actual, "default of {}", doc.key);
            continue;
        }
        let (d, p) = (display_default(&dev[doc.key]), display_default(&prod[doc.key]));
        let expected = if d == p {
            d
        } else {
            format!("{d} (development), {p} (production)")
        };
        assert_eq!(doc.default, expected, "default of {}", doc.key);
    }
}

#[test]
fn key_table_env_names_follow_the_rule() {
    for doc in KEYS {
        let in_list = doc.kind == ValueKind::TableList || doc.key.contains("[]");
        let expected =
            (!in_list).then(|| format!("MOLTBOT_{}", doc.key.replace('.', "__").to_ascii_uppercase()));
        assert_eq!(doc.env.map(str::to_owned), expected, "env of {}", doc.key);
        assert_eq!(
            doc.is_secret,
            matches!(doc.kind, ValueKind::Secret | ValueKind::SecretList)
        );
    }
}

#[test]
fn redacted_output_hides_every_secret() {
    let dir = Dir::new();
    let key_file = dir.write("key", "sk-SECRET-FILE\n");
    let toml = format!(
        "database_url = \"postgres://moltbot:SECRET-DBURL@db/moltbot?sslmode=require&password=SECRET-Q\"\n\
         redis_url = \"redis://:SECRET-REDIS@cache:6379\"\n\
         [auth]\njwt_previous_secrets = [\"SECRET-OLD\"]\n\
         [[models]]\nname = \"a\"\nendpoint = \"https://a.example/v1\"\napi_key_file = {key_file:?}\n\
         api_keys = [\"SECRET-K2\"]\n"
    );
    let mut opts = dir.with_file(&toml);
    opts.env = env(&[
        ("MOLTBOT_DATABASE_PASSWORD", "SECRET-DBPW"),
        (
            "MOLTBOT_AUTH__JWT_SECRET_COMMAND",
            "echo SECRET-JWT-0123456789abcdef0123456789",
        ),
    ]);
    let config = load_ok(opts).config;
    assert_eq!(config.models[0].keys()[1].expose(), "SECRET-K2");
    let shown = config.redacted_toml();
    assert!(!shown.contains("SECRET"), "secret leaked:\n{shown}");
    assert!(!format!("{config:?}").contains("SECRET"));
    assert!(shown.contains("api_key = \"***\""), "{shown}");
    assert!(shown.contains("postgres://moltbot:***@db/moltbot"), "{shown}");
    let reparsed: toml::Table = toml::from_str(&shown).expect("redacted output is TOML");
    assert!(reparsed.contains_key("models"));
}

#[test]
fn redacted_output_of_defaults_loads_again() {
    let shown = Config::default().redacted_toml();
    let dir = Dir::new();
    let c = load_ok(dir.with_file(&shown)).config;
    assert_eq!(c, Config::default());
    assert!(ModelConfig::default().keys().is_empty());
}
