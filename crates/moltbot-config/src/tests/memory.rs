//! `[memory]`: conversation compaction settings.

use super::{Dir, MODEL_A, assert_contains, env_opts, load_err, load_ok};
use crate::{LoadOptions, MemoryConfig};

#[test]
fn memory_defaults_and_overrides() {
    let c = load_ok(LoadOptions::default()).config;
    assert_eq!(c.memory, MemoryConfig::default());
    assert!(c.memory.enabled);
    assert_eq!(c.memory.compact_at, 0.75);
    assert_eq!(c.memory.keep_recent, 4);
    assert_eq!(c.memory.summary_model, None);
    assert_eq!(c.memory.summary_max_tokens, 1024);
    assert_eq!(c.memory.prompt, None);

    let c = load_ok(env_opts(&[
        ("MOLTBOT_MEMORY__ENABLED", "false"),
        ("MOLTBOT_MEMORY__COMPACT_AT", "0.5"),
        ("MOLTBOT_MEMORY__KEEP_RECENT", "2"),
        ("MOLTBOT_MEMORY__SUMMARY_MAX_TOKENS", "300"),
        ("MOLTBOT_MEMORY__PROMPT", "Summarise."),
    ]))
    .config;
    assert!(!c.memory.enabled);
    assert_eq!(c.memory.compact_at, 0.5);
    assert_eq!(c.memory.keep_recent, 2);
    assert_eq!(c.memory.summary_max_tokens, 300);
    assert_eq!(c.memory.prompt.as_deref(), Some("Summarise."));

    let dir = Dir::new();
    let c = load_ok(dir.with_file(&format!(
        "[memory]\nsummary_model = \"a\"\ncompact_at = 1.0\n{MODEL_A}"
    )))
    .config;
    assert_eq!(c.memory.summary_model.as_deref(), Some("a"));
    assert_eq!(c.memory.compact_at, 1.0);
}

#[test]
fn memory_checks_name_the_key() {
    for (var, value, needle) in [
        (
            "MOLTBOT_MEMORY__COMPACT_AT",
            "0",
            "\"memory.compact_at\": must be more than 0 and at most 1",
        ),
        (
            "MOLTBOT_MEMORY__COMPACT_AT",
            "1.5",
            "\"memory.compact_at\": must be more than 0 and at most 1",
        ),
        ("MOLTBOT_MEMORY__COMPACT_AT", "-0.1", "\"memory.compact_at\""),
        (
            "MOLTBOT_MEMORY__KEEP_RECENT",
            "0",
            "\"memory.keep_recent\": must be at least 1",
        ),
        (
            "MOLTBOT_MEMORY__SUMMARY_MAX_TOKENS",
            "15",
            "\"memory.summary_max_tokens\": must be at least 16, got 15",
        ),
        (
            "MOLTBOT_MEMORY__PROMPT",
            "  ",
            "\"memory.prompt\": must not be empty",
        ),
        (
            "MOLTBOT_MEMORY__SUMMARY_MODEL",
            "nope",
            "\"memory.summary_model\": \"nope\" is not a configured model (no models are configured)",
        ),
        ("MOLTBOT_MEMORY__KEEP_RECENT", "many", "\"memory.keep_recent\""),
    ] {
        let err = load_err(env_opts(&[(var, value)])).to_string();
        assert_contains(&err, needle);
    }

    let dir = Dir::new();
    let err = load_err(dir.with_file(&format!("[memory]\nsummary_model = \"b\"\n{MODEL_A}"))).to_string();
    assert_contains(&err, "\"b\" is not a configured model (configured: \"a\")");
    let err = load_err(dir.with_file("[memory]\nkeep_recnt = 3\n")).to_string();
    assert_contains(&err, "memory.keep_recnt");
}
