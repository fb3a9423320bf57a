//! Conversation memory: when a stored conversation outgrows its model's context, its oldest turns are
//! summarised into one compaction item instead of being dropped (docs/memory.md).
//!
//! This module is the pure part: the settings, what a compaction records, which messages it replaces,
//! the summarisation request, and how a summary re-enters the context. Running one (single flight,
//! the summary model, the conditional write) is `ChatService`'s (`service::compaction`).

use moltbot_api::ChatMessage;
use serde::{Deserialize, Serialize};

use crate::domain::{Role, StoredMessage};
use crate::service::stored_to_chat;
use crate::tokens::TokenCounter;

/// The summarisation instructions used when `memory.prompt` is not set.
pub const DEFAULT_PROMPT: &str = "You maintain the memory of a long conversation between a user and an AI \
assistant. The earliest part of the conversation no longer fits the assistant's context window and will be \
replaced by your summary. Write that summary so the assistant can continue as if it still saw every message: \
keep every fact, name, number, date, quantity, identifier, preference, decision, commitment and open \
question, say who stated what (user or assistant), and keep exact wording where it matters (code, \
commands, quotes). Merge the earlier summary, if one is given, with the new messages into one summary. Drop \
greetings and small talk. Write in the language of the conversation, in plain prose or short bullet points, \
without an introduction. Output only the summary.";

/// Introduces a summary in the context sent to the model.
pub const SUMMARY_HEADING: &str = "Summary of the earlier part of this conversation (older messages were \
compacted into it):";

/// Settings of conversation memory (`[memory]`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySettings {
    /// Compact automatically when a stored conversation's context passes `compact_at`.
    pub enabled: bool,
    /// Fraction of the prompt budget (the context window minus the tokens kept for the reply) above
    /// which a conversation is compacted before its next turn.
    pub compact_at: f32,
    /// The latest turns (a user message and everything after it) that automatic compaction keeps.
    pub keep_recent: u32,
    /// The model that writes summaries; `None` = the conversation's own model.
    pub summary_model: Option<String>,
    /// Most tokens a summary may have.
    pub summary_max_tokens: u32,
    /// The summarisation instructions (a system message).
    pub prompt: String,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            compact_at: 0.75,
            keep_recent: 4,
            summary_model: None,
            summary_max_tokens: 1024,
            prompt: DEFAULT_PROMPT.to_owned(),
        }
    }
}

/// What started a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompactionTrigger {
    /// The conversation passed `memory.compact_at` before a turn.
    Auto,
    /// `POST /v1/conversations/{id}/compact`.
    Manual,
}

impl CompactionTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            CompactionTrigger::Auto => "auto",
            CompactionTrigger::Manual => "manual",
        }
    }
}

/// What a compaction item (a stored summary) replaced. Kept with the item; the replaced messages stay
/// stored, marked `compacted_by` the item, and are no longer sent as context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// The items this summary replaced, oldest first: the earlier summary (when there was one), then
    /// the messages summarised this time.
    pub replaced_ids: Vec<String>,
    /// Messages this summary stands for, including those of the earlier summaries it absorbed.
    pub message_count: u32,
    /// The model that wrote it.
    pub model: String,
    pub trigger: CompactionTrigger,
    /// Prompt tokens of the context before the compaction.
    pub tokens_before: u32,
}

/// A stored conversation's context as compaction sees it.
#[derive(Debug, Default)]
pub struct ContextParts<'a> {
    /// System and developer messages: never compacted.
    pub instructions: Vec<&'a StoredMessage>,
    /// The summary in force (normally at most one).
    pub summaries: Vec<&'a StoredMessage>,
    /// Every other message, oldest first.
    pub turns: Vec<&'a StoredMessage>,
}

impl<'a> ContextParts<'a> {
    pub fn split(history: &'a [StoredMessage]) -> Self {
        let mut parts = ContextParts::default();
        for m in history {
            if m.compaction.is_some() {
                parts.summaries.push(m);
            } else if m.role.is_instruction() {
                parts.instructions.push(m);
            } else {
                parts.turns.push(m);
            }
        }
        parts
    }

    /// The messages a compaction keeping the latest `keep_recent` turns may replace: the turns before
    /// the `keep_recent`-th user message from the end (none when there are no more turns than that).
    pub fn compactable(&self, keep_recent: u32) -> &[&'a StoredMessage] {
        &self.turns[..keep_from(&self.turns, keep_recent)]
    }

    /// Messages the summaries in force stand for.
    pub fn summarised_count(&self) -> u32 {
        self.summaries
            .iter()
            .filter_map(|s| s.compaction.as_ref())
            .map(|c| c.message_count)
            .sum()
    }

    /// The context as the model sees it: instructions, the summary, then the turns.
    pub fn to_chat(&self) -> Vec<ChatMessage> {
        self.instructions
            .iter()
            .map(|m| stored_to_chat(m))
            .chain(self.summaries.iter().map(|m| summary_message(m)))
            .chain(self.turns.iter().map(|m| stored_to_chat(m)))
            .collect()
    }
}

/// Index of the first kept message: where the `keep_recent`-th user message from the end starts.
fn keep_from(turns: &[&StoredMessage], keep_recent: u32) -> usize {
    if keep_recent == 0 {
        return turns.len();
    }
    let mut users = 0;
    for (i, m) in turns.iter().enumerate().rev() {
        if m.role == Role::User {
            users += 1;
            if users == keep_recent {
                return i;
            }
        }
    }
    0
}

/// A summary as the model sees it: a system message after the instructions.
pub fn summary_message(m: &StoredMessage) -> ChatMessage {
    ChatMessage::text("system", format!("{SUMMARY_HEADING}\n\n{}", m.content))
}

/// One message as a transcript line of the summarisation request.
fn transcript_entry(m: &StoredMessage) -> String {
    let chat = stored_to_chat(m);
    let mut text = format!("{}: {}", m.role.as_str(), chat.text_content());
    if let Some(calls) = &chat.tool_calls {
        text.push_str(&format!("\n(tool calls: {calls})"));
    }
    text
}

const TRANSCRIPT_INTRO: &str = "Summarise the conversation below.";
const PREVIOUS_HEADING: &str = "Earlier summary (it replaced the messages before these):";
const MESSAGES_HEADING: &str = "Messages:";

/// The request that asks for a summary of `previous` summaries followed by `messages`.
pub fn summary_request(
    prompt: &str,
    previous: &[&StoredMessage],
    messages: &[&StoredMessage],
) -> Vec<ChatMessage> {
    let mut body = String::from(TRANSCRIPT_INTRO);
    for s in previous {
        body.push_str(&format!("\n\n{PREVIOUS_HEADING}\n{}", s.content));
    }
    body.push_str(&format!("\n\n{MESSAGES_HEADING}"));
    for m in messages {
        body.push_str("\n\n");
        body.push_str(&transcript_entry(m));
    }
    vec![
        ChatMessage::text("system", prompt.to_owned()),
        ChatMessage::text("user", body),
    ]
}

/// How many of `candidates` (a prefix, oldest first) fit a summarisation request of at most
/// `input_budget` prompt tokens.
pub fn fitting_prefix(
    tokens: &dyn TokenCounter,
    prompt: &str,
    previous: &[&StoredMessage],
    candidates: &[&StoredMessage],
    input_budget: usize,
) -> usize {
    let mut used = tokens.count_messages(&summary_request(prompt, previous, &[]));
    for (i, m) in candidates.iter().enumerate() {
        // The entry and the blank line before it.
        used += tokens.count_text(&transcript_entry(m)) + 1;
        if used > input_budget {
            return i;
        }
    }
    candidates.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageStatus;
    use crate::tokens::RoughCounter;

    fn stored(seq: i64, role: Role, content: &str) -> StoredMessage {
        StoredMessage {
            id: format!("msg_{seq}"),
            conversation_id: "conv_1".into(),
            seq,
            created_at: 0,
            role,
            content: content.into(),
            raw: None,
            status: MessageStatus::Completed,
            meta: Default::default(),
            compaction: None,
            compacted_by: None,
        }
    }

    fn conversation() -> Vec<StoredMessage> {
        let mut summary = stored(2, Role::System, "earlier facts");
        summary.compaction = Some(Compaction {
            replaced_ids: vec!["msg_0".into()],
            message_count: 6,
            model: "m".into(),
            trigger: CompactionTrigger::Auto,
            tokens_before: 100,
        });
        vec![
            stored(1, Role::System, "be brief"),
            summary,
            stored(3, Role::User, "u1"),
            stored(4, Role::Assistant, "a1"),
            stored(5, Role::User, "u2"),
            stored(6, Role::Assistant, "a2"),
            stored(7, Role::Tool, "t2"),
            stored(8, Role::Assistant, "a2b"),
            stored(9, Role::User, "u3"),
            stored(10, Role::Assistant, "a3"),
        ]
    }

    fn ids(ms: &[&StoredMessage]) -> Vec<i64> {
        ms.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn instructions_and_recent_turns_are_never_compactable() {
        let history = conversation();
        let parts = ContextParts::split(&history);
        assert_eq!(ids(&parts.instructions), [1]);
        assert_eq!(ids(&parts.summaries), [2]);
        assert_eq!(ids(parts.compactable(1)), [3, 4, 5, 6, 7, 8]);
        assert_eq!(
            ids(parts.compactable(2)),
            [3, 4],
            "a turn keeps its tool messages"
        );
        assert_eq!(ids(parts.compactable(3)), Vec::<i64>::new());
        assert_eq!(ids(parts.compactable(10)), Vec::<i64>::new());
        assert_eq!(ids(parts.compactable(0)).len(), 8, "0 keeps nothing");
        assert_eq!(parts.summarised_count(), 6);
    }

    #[test]
    fn the_summary_comes_after_the_instructions() {
        let history = conversation();
        let chat = ContextParts::split(&history).to_chat();
        assert_eq!(chat[0].text_content(), "be brief");
        assert_eq!(chat[1].role, "system");
        assert!(chat[1].text_content().starts_with(SUMMARY_HEADING));
        assert!(chat[1].text_content().ends_with("earlier facts"));
        assert_eq!(chat[2].text_content(), "u1");
        assert_eq!(chat.len(), history.len());
    }

    #[test]
    fn the_request_carries_the_earlier_summary_and_the_transcript() {
        let history = conversation();
        let parts = ContextParts::split(&history);
        let req = summary_request("PROMPT", &parts.summaries, parts.compactable(2));
        assert_eq!(req.len(), 2);
        assert_eq!(
            (req[0].role.as_str(), req[0].text_content().as_str()),
            ("system", "PROMPT")
        );
        let body = req[1].text_content();
        let earlier = body.find("earlier facts").unwrap();
        let u1 = body.find("user: u1").unwrap();
        assert!(earlier < u1, "{body}");
        assert!(body.contains("assistant: a1"));
        assert!(!body.contains("u2"), "kept turns are not summarised: {body}");
    }

    #[test]
    fn only_a_prefix_that_fits_is_summarised() {
        let history = conversation();
        let parts = ContextParts::split(&history);
        let all = parts.compactable(1);
        let counter = RoughCounter;
        let base = counter.count_messages(&summary_request("P", &parts.summaries, &[]));
        assert_eq!(
            fitting_prefix(&counter, "P", &parts.summaries, all, usize::MAX),
            all.len()
        );
        assert_eq!(fitting_prefix(&counter, "P", &parts.summaries, all, base), 0);
        let two = base + counter.count_text("user: u1") + counter.count_text("assistant: a1") + 2;
        assert_eq!(fitting_prefix(&counter, "P", &parts.summaries, all, two), 2);
    }
}
