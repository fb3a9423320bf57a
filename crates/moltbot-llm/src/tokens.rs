//! [`TiktokenCounter`]: real BPE token counts for OpenAI-style models.

use std::sync::{Arc, OnceLock};

use moltbot_core::TokenCounter;
use tiktoken_rs::CoreBPE;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    #[error("unknown tokenizer encoding {0:?} (expected o200k_base or cl100k_base)")]
    Unknown(String),
}

/// Counts tokens with a tiktoken encoding. Each encoding is loaded once per process, on the first exact
/// count (building the tables takes time and tens of megabytes, which a gateway whose upstreams
/// report usage never needs: prompts are bounded by their byte length first, see
/// [`TokenCounter::max_text`]). Clones share the tables.
#[derive(Clone)]
pub struct TiktokenCounter {
    encoding: &'static str,
    cell: &'static Loaded,
    load: LoadFn,
}

impl std::fmt::Debug for TiktokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiktokenCounter")
            .field("encoding", &self.encoding)
            .finish()
    }
}

type LoadFn = fn() -> Result<CoreBPE, String>;
type Loaded = OnceLock<Result<Arc<CoreBPE>, String>>;
static O200K: Loaded = OnceLock::new();
static CL100K: Loaded = OnceLock::new();

impl TiktokenCounter {
    /// `o200k_base` or `cl100k_base`.
    pub fn new(encoding: &str) -> Result<Self, TokenizerError> {
        let (name, cell, load): (&'static str, &'static Loaded, LoadFn) = match encoding {
            "o200k_base" => ("o200k_base", &O200K, || {
                tiktoken_rs::o200k_base().map_err(|e| e.to_string())
            }),
            "cl100k_base" => ("cl100k_base", &CL100K, || {
                tiktoken_rs::cl100k_base().map_err(|e| e.to_string())
            }),
            other => return Err(TokenizerError::Unknown(other.to_owned())),
        };
        Ok(Self {
            encoding: name,
            cell,
            load,
        })
    }

    /// The loaded tables (waiting for the background load if needed).
    fn bpe(&self) -> Result<&Arc<CoreBPE>, &String> {
        self.cell.get_or_init(|| (self.load)().map(Arc::new)).as_ref()
    }

    /// The encoding OpenAI uses for a model name: `cl100k_base` for GPT-4 / GPT-3.5 and embeddings,
    /// `o200k_base` otherwise (GPT-4o, o-series, GPT-4.1 and later, and unknown models).
    pub fn encoding_for_model(model: &str) -> &'static str {
        let m = model.rsplit('/').next().unwrap_or(model);
        let legacy = (m.starts_with("gpt-4") && !m.starts_with("gpt-4o") && !m.starts_with("gpt-4."))
            || m.starts_with("gpt-3.5")
            || m.starts_with("text-embedding-");
        if legacy { "cl100k_base" } else { "o200k_base" }
    }

    pub fn encoding(&self) -> &'static str {
        self.encoding
    }
}

impl TokenCounter for TiktokenCounter {
    fn count_text(&self, text: &str) -> usize {
        match self.bpe() {
            Ok(bpe) => bpe.encode_ordinary(text).len(),
            // The tables ship inside the binary, so this does not happen; overcount rather than fail.
            Err(_) => moltbot_core::RoughCounter.count_text(text),
        }
    }

    /// Byte-level BPE: every token covers at least one byte of UTF-8.
    fn max_text(&self, text: &str) -> usize {
        text.len()
    }
}

#[cfg(test)]
mod tests {
    use moltbot_api::ChatMessage;

    use super::*;

    #[test]
    fn counts_english_and_chinese() {
        for enc in ["o200k_base", "cl100k_base"] {
            let c = TiktokenCounter::new(enc).unwrap();
            assert_eq!(c.count_text(""), 0);
            assert_eq!(c.count_text("hello world"), 2);
            let zh = "你好，世界。今天天气很好。";
            let n = c.count_text(zh);
            // chars/4 would say 3; real BPE needs far more for CJK.
            assert!(n >= 8, "{enc}: {n}");
            assert!(n > zh.chars().count() / 4 * 2);
            let english = "The weather is very nice today.";
            assert!(c.count_text(english) <= english.len() / 3);
        }
    }

    #[test]
    fn messages_include_framing_and_clones_share() {
        let c = TiktokenCounter::new("o200k_base").unwrap();
        let msgs = [ChatMessage::text("user", "hello world")];
        assert_eq!(c.count_messages(&msgs), 3 + 3 + 1 + 2);
        let c2 = c.clone();
        assert!(Arc::ptr_eq(c.bpe().unwrap(), c2.bpe().unwrap()));
        assert!(Arc::ptr_eq(
            c.bpe().unwrap(),
            TiktokenCounter::new("o200k_base").unwrap().bpe().unwrap()
        ));
    }

    #[test]
    fn unknown_encoding_and_model_mapping() {
        assert_eq!(
            TiktokenCounter::new("p99k").unwrap_err(),
            TokenizerError::Unknown("p99k".into())
        );
        assert_eq!(TiktokenCounter::encoding_for_model("gpt-4o-mini"), "o200k_base");
        assert_eq!(TiktokenCounter::encoding_for_model("gpt-4-turbo"), "cl100k_base");
        assert_eq!(TiktokenCounter::encoding_for_model("gpt-4.1"), "o200k_base");
        assert_eq!(
            TiktokenCounter::encoding_for_model("openai/gpt-3.5-turbo"),
            "cl100k_base"
        );
        assert_eq!(TiktokenCounter::encoding_for_model("llama-3"), "o200k_base");
    }
}
