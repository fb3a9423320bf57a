//! The seed variables `MODEL_ENDPOINT` / `API_KEY` / `MODEL_NAME` and endpoint normalisation.

use super::{Dir, MODEL_A, assert_contains, env, env_opts, load_err, load_ok};
use crate::{ConfigError, normalize_endpoint};

#[test]
fn seed_model_from_environment() {
    let loaded = load_ok(env_opts(&[
        ("MODEL_ENDPOINT", "https://api.example.com/v1"),
        ("API_KEY", "sk-env"),
    ]));
    let models = &loaded.config.models;
    assert_eq!(models.len(), 1);
    let m = &models[0];
    assert_eq!(m.name, "default");
    assert_eq!(
        m.endpoint.as_ref().map(|u| u.as_str()),
        Some("https://api.example.com/v1")
    );
    assert_eq!(m.upstream_model(), "gpt-4o-mini");
    let keys: Vec<&str> = m.keys().iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["sk-env"]);
    assert_eq!(m.tokenizer.as_deref(), Some("o200k_base"));
    assert_eq!(
        m.chat_completions_url().map(|u| u.to_string()).as_deref(),
        Some("https://api.example.com/v1/chat/completions")
    );
}

#[test]
fn seed_model_from_dotenv_with_environment_winning() {
    let dir = Dir::new();
    dir.write(
        ".env",
        "MODEL_ENDPOINT=http://127.0.0.1:8000/v1/chat/completions\nAPI_KEY=sk-dotenv\nMODEL_NAME=llama\n",
    );
    let m = load_ok(dir.opts()).config.models.remove(0);
    assert_eq!(
        m.endpoint.as_ref().map(|u| u.as_str()),
        Some("http://127.0.0.1:8000/v1")
    );
    assert_eq!(m.keys()[0].expose(), "sk-dotenv");
    assert_eq!(m.upstream_model(), "llama");

    let mut opts = dir.opts();
    opts.env = env(&[("API_KEY", "sk-env"), ("MODEL_NAME", "other")]);
    let m = load_ok(opts).config.models.remove(0);
    assert_eq!(m.keys()[0].expose(), "sk-env");
    assert_eq!(m.upstream_model(), "other");
    assert_eq!(
        m.endpoint.as_ref().map(|u| u.as_str()),
        Some("http://127.0.0.1:8000/v1")
    );
}

#[test]
fn seed_model_without_key_is_keyless() {
    let m = load_ok(env_opts(&[("MODEL_ENDPOINT", "http://localhost:11434/v1")]))
        .config
        .models
        .remove(0);
    assert!(m.keys().is_empty());
}

#[test]
fn seed_model_appends_to_file_models() {
    let dir = Dir::new();
    let mut opts = dir.with_file(MODEL_A);
    opts.env = env(&[("MODEL_ENDPOINT", "https://api.example.com/v1/chat")]);
    let names: Vec<String> = load_ok(opts).config.models.into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["a", "default"]);
}

#[test]
fn file_model_named_default_wins_with_warning() {
    let dir = Dir::new();
    let mut opts = dir.with_file("[[models]]\nname = \"default\"\nendpoint = \"https://file.example/v1\"\n");
    opts.env = env(&[
        ("MODEL_ENDPOINT", "https://env.example/v1"),
        ("API_KEY", "sk-env"),
    ]);
    let loaded = load_ok(opts);
    assert_eq!(loaded.config.models.len(), 1);
    assert_eq!(
        loaded.config.models[0].endpoint.as_ref().map(|u| u.as_str()),
        Some("https://file.example/v1")
    );
    assert!(loaded.config.models[0].keys().is_empty());
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("MODEL_ENDPOINT") && w.contains("\"default\""))
    );
}

#[test]
fn seed_key_from_file_and_command() {
    let dir = Dir::new();
    let key_file = dir.write("key", "sk-file\n");
    let m = load_ok(env_opts(&[
        ("MODEL_ENDPOINT", "https://api.example.com/v1"),
        ("API_KEY_FILE", key_file.to_str().unwrap_or_default()),
    ]))
    .config
    .models
    .remove(0);
    assert_eq!(m.keys()[0].expose(), "sk-file");

    let m = load_ok(env_opts(&[
        ("MODEL_ENDPOINT", "https://api.example.com/v1"),
        ("API_KEY_COMMAND", "echo sk-cmd"),
    ]))
    .config
    .models
    .remove(0);
    assert_eq!(m.keys()[0].expose(), "sk-cmd");

    let err = load_err(env_opts(&[
        ("MODEL_ENDPOINT", "https://api.example.com/v1"),
        ("API_KEY", "sk-a"),
        ("API_KEY_COMMAND", "echo sk-b"),
    ]));
    assert!(matches!(err, ConfigError::SecretConflict { .. }));
    let msg = err.to_string();
    assert_contains(&msg, "\"models[0].api_key\" is set more than once");
    assert_contains(&msg, "environment variable API_KEY)");
    assert_contains(&msg, "environment variable API_KEY_COMMAND)");
    assert!(!msg.contains("sk-a"));
}

#[test]
fn api_key_without_endpoint_warns() {
    let loaded = load_ok(env_opts(&[("API_KEY", "sk-x")]));
    assert!(loaded.config.models.is_empty());
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("MODEL_ENDPOINT is not"))
    );
}

#[test]
fn invalid_model_endpoint_names_variable() {
    let msg = load_err(env_opts(&[("MODEL_ENDPOINT", "api.example.com")])).to_string();
    assert_contains(
        &msg,
        "invalid value for \"models[0].endpoint\": expected an http:// or https:// URL",
    );
    assert_contains(&msg, "MODEL_ENDPOINT");
}

#[test]
fn endpoint_normalisation() {
    let cases = [
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("https://api.example.com/v1/", "https://api.example.com/v1"),
        ("https://api.example.com/v1/chat", "https://api.example.com/v1"),
        ("https://api.example.com/v1/chat/", "https://api.example.com/v1"),
        (
            "https://api.example.com/v1/chat/completions",
            "https://api.example.com/v1",
        ),
        ("http://127.0.0.1:8080/chat/completions", "http://127.0.0.1:8080/"),
        (
            "https://x.example/openai/deployments/d?api-version=1",
            "https://x.example/openai/deployments/d?api-version=1",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            normalize_endpoint(input).map(|u| u.to_string()),
            Ok(expected.to_owned()),
            "{input}"
        );
    }
    assert!(normalize_endpoint("ftp://x.example/v1").is_err());
    assert!(normalize_endpoint("/v1").is_err());

    let dir = Dir::new();
    let opts = dir
        .with_file("[[models]]\nname = \"a\"\nendpoint = \"https://api.example.com/v1/chat/completions\"\n");
    let m = load_ok(opts).config.models.remove(0);
    assert_eq!(
        m.endpoint.as_ref().map(|u| u.as_str()),
        Some("https://api.example.com/v1")
    );
    assert_eq!(
        m.chat_completions_url().map(String::from).as_deref(),
        Some("https://api.example.com/v1/chat/completions")
    );
}
