//! Conversation memory (`[memory]`): when and how stored conversations are compacted (docs/memory.md).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::validate::Invalid;
use crate::{Config, ConfigError};

/// Conversation memory (`[memory]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Compact stored conversations automatically when they outgrow `compact_at` of the budget.
    pub enabled: bool,
    /// Fraction (0–1] of the prompt budget (the context window less the reply's tokens) above which a
    /// conversation is compacted before its next turn.
    pub compact_at: f32,
    /// Latest turns (a user message and what follows it) automatic compaction never touches.
    pub keep_recent: u32,
    /// The model that writes summaries; unset = the conversation's own model.
    pub summary_model: Option<String>,
    /// Most tokens a summary may have.
    pub summary_max_tokens: u32,
    /// Summarisation instructions; unset = the built-in prompt.
    pub prompt: Option<String>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            compact_at: 0.75,
            keep_recent: 4,
            summary_model: None,
            summary_max_tokens: 1024,
            prompt: None,
        }
    }
}

/// Fewest tokens a summary may be given (`memory.summary_max_tokens`).
const MIN_SUMMARY_TOKENS: u32 = 16;

pub(crate) fn check(config: &Config, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    let m = &config.memory;
    if !(m.compact_at > 0.0 && m.compact_at <= 1.0) {
        return Err(invalid(
            "memory.compact_at",
            format!(
                "must be more than 0 and at most 1 (a fraction of the context budget), got {}",
                m.compact_at
            ),
        ));
    }
    if m.keep_recent == 0 {
        return Err(invalid(
            "memory.keep_recent",
            "must be at least 1: the latest turn is never compacted".to_owned(),
        ));
    }
    if m.summary_max_tokens < MIN_SUMMARY_TOKENS {
        return Err(invalid(
            "memory.summary_max_tokens",
            format!(
                "must be at least {MIN_SUMMARY_TOKENS}, got {}",
                m.summary_max_tokens
            ),
        ));
    }
    if m.prompt.as_ref().is_some_and(|p| p.trim().is_empty()) {
        return Err(invalid(
            "memory.prompt",
            "must not be empty (leave it unset for the built-in prompt)".to_owned(),
        ));
    }
    if let Some(name) = &m.summary_model {
        let models: BTreeSet<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
        if !models.contains(name.as_str()) {
            let known = if models.is_empty() {
                "no models are configured".to_owned()
            } else {
                let quoted: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
                format!("configured: {}", quoted.join(", "))
            };
            return Err(invalid(
                "memory.summary_model",
                format!("\"{name}\" is not a configured model ({known})"),
            ));
        }
    }
    Ok(())
}
