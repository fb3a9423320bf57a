//! Grouping client-sent history into stored conversations.
//!
//! Clients of a stateless chat API resend the whole history every turn. To record each exchange once,
//! moltbot keeps, per conversation, a hash chain over the history it has stored (the *tip*). A request
//! whose messages up to its last assistant message hash to a stored tip continues that conversation,
//! and only the messages after that point are stored. Editing any earlier message changes the hash, so
//! an edited history starts a new conversation instead of corrupting an old one.

use moltbot_api::ChatMessage;
use sha2::{Digest, Sha256};

/// The running hash of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryHash([u8; 32]);

impl HistoryHash {
    /// The hash of an empty history owned by `owner`.
    pub fn start(owner: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"moltbot-history-v1\0");
        h.update(owner.as_bytes());
        Self(h.finalize().into())
    }

    /// Extend the chain by one message (role, text content and tool-call id are what a client resends).
    pub fn push(&self, role: &str, text: &str, tool_call_id: Option<&str>) -> Self {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(role.as_bytes());
        h.update([0]);
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
        h.update(tool_call_id.unwrap_or("").as_bytes());
        Self(h.finalize().into())
    }

    pub fn push_message(&self, m: &ChatMessage) -> Self {
        self.push(&m.role, &m.text_content(), m.tool_call_id.as_deref())
    }

    pub fn of(owner: &str, messages: &[ChatMessage]) -> Self {
        messages.iter().fold(Self::start(owner), |h, m| h.push_message(m))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Where a client-sent history splits into an already-stored prefix and new messages: the index just
/// after the last assistant message, if there is one.
pub fn stored_prefix_len(messages: &[ChatMessage]) -> Option<usize> {
    messages
        .iter()
        .rposition(|m| m.role == "assistant")
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
        pairs.iter().map(|(r, t)| ChatMessage::text(r, *t)).collect()
    }

    #[test]
    fn chain_is_incremental_and_owner_scoped() {
        let m = msgs(&[("user", "hi"), ("assistant", "hello")]);
        let whole = HistoryHash::of("k1", &m);
        let stepwise = HistoryHash::of("k1", &m[..1]).push("assistant", "hello", None);
        assert_eq!(whole, stepwise);
        assert_ne!(whole, HistoryHash::of("k2", &m));
    }

    #[test]
    fn edits_change_the_hash() {
        let a = HistoryHash::of("", &msgs(&[("user", "hi"), ("assistant", "hello")]));
        let b = HistoryHash::of("", &msgs(&[("user", "hi"), ("assistant", "hellO")]));
        let c = HistoryHash::of("", &msgs(&[("user", "hih"), ("assistant", "ello")]));
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn prefix_ends_after_last_assistant() {
        let m = msgs(&[("system", "s"), ("user", "a"), ("assistant", "b"), ("user", "c")]);
        assert_eq!(stored_prefix_len(&m), Some(3));
        assert_eq!(stored_prefix_len(&m[..2]), None);
    }
}
