//! Token counting for context budgeting. Remote models use a real BPE tokenizer (tiktoken encodings in
//! `moltbot-llm`); the local engine uses the model's own vocabulary.

use moltbot_api::ChatMessage;

pub trait TokenCounter: Send + Sync + 'static {
    /// Tokens in a piece of text.
    fn count_text(&self, text: &str) -> usize;

    /// An upper bound of [`count_text`](Self::count_text) that is cheap to compute, for deciding whether
    /// a prompt can need an exact count at all. Exact by default.
    fn max_text(&self, text: &str) -> usize {
        self.count_text(text)
    }

    /// Tokens a list of messages costs as a prompt, including per-message framing
    /// (OpenAI's accounting: 3 per message, 1 for a name, 3 to prime the reply).
    fn count_messages(&self, messages: &[ChatMessage]) -> usize {
        frame_messages(messages, |t| self.count_text(t))
    }

    /// An upper bound of [`count_messages`](Self::count_messages) from [`max_text`](Self::max_text).
    fn max_messages(&self, messages: &[ChatMessage]) -> usize {
        frame_messages(messages, |t| self.max_text(t))
    }
}

fn frame_messages(messages: &[ChatMessage], count: impl Fn(&str) -> usize) -> usize {
    let mut total = 3;
    for m in messages {
        total += 3 + count(&m.role);
        match &m.content {
            Some(serde_json::Value::String(s)) => total += count(s),
            Some(_) => total += count(&m.text_content()),
            None => {}
        }
        if let Some(name) = &m.name {
            total += 1 + count(name);
        }
        if let Some(calls) = &m.tool_calls {
            total += count(&calls.to_string());
        }
    }
    total
}

/// Counts whitespace-separated words and every non-ASCII character as one token each: a stand-in for
/// tests and for models whose tokenizer is unknown. It overcounts rather than undercounts CJK text.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoughCounter;

impl TokenCounter for RoughCounter {
    fn count_text(&self, text: &str) -> usize {
        let words = text.split_whitespace().filter(|w| w.is_ascii()).count();
        let wide = text.chars().filter(|c| !c.is_ascii()).count();
        words + wide
    }
}
