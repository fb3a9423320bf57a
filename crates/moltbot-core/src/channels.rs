//! The channel pipeline's persistence: a durable queue of inbound chat-platform events whose
//! `(platform, account, event_id)` key is the dedupe authority, the conversation each chat maps to,
//! small per-account state (Telegram's update offset) and leases for work that must run once across
//! replicas (long polling, DingTalk Stream).

use async_trait::async_trait;
use serde_json::Value;

use crate::store::StoreResult;

/// Where an event is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelEventStatus {
    /// Waiting for (or held by) a worker.
    Queued,
    /// Answered (every reply chunk sent) or deliberately not answered (`ignored`).
    Done,
    /// Given up after the last attempt or a permanent error.
    Failed,
    /// Valid but not answered: group without a mention, not on the allowlist.
    Ignored,
}

impl ChannelEventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelEventStatus::Queued => "queued",
            ChannelEventStatus::Done => "done",
            ChannelEventStatus::Failed => "failed",
            ChannelEventStatus::Ignored => "ignored",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => ChannelEventStatus::Queued,
            "done" => ChannelEventStatus::Done,
            "failed" => ChannelEventStatus::Failed,
            "ignored" => ChannelEventStatus::Ignored,
            _ => return None,
        })
    }
}

/// An event to queue.
#[derive(Debug, Clone)]
pub struct NewChannelEvent {
    pub platform: String,
    pub account: String,
    /// The platform's event id (dedupe key within platform and account).
    pub event_id: String,
    /// Events with the same chat key are processed one at a time, oldest first.
    pub chat_key: String,
    /// The normalized message (JSON of `moltbot_channels::InboundMessage`).
    pub message: Value,
    /// `queued`, or `ignored` for events recorded only for dedupe and the console.
    pub status: ChannelEventStatus,
    pub now_ms: i64,
}

/// A queued (or finished) event.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelEvent {
    /// Time-ordered (UUIDv7) id; also the order within a chat.
    pub id: String,
    pub platform: String,
    pub account: String,
    pub event_id: String,
    pub chat_key: String,
    pub message: Value,
    pub status: ChannelEventStatus,
    /// Attempts started so far (claims).
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// The generated reply, kept once produced so a retry resends it instead of asking the model again.
    pub reply: Option<String>,
    /// Reply chunks already sent.
    pub chunks_sent: u32,
    pub conversation_id: Option<String>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// How a worker finished with a claimed event.
#[derive(Debug, Clone)]
pub enum ChannelOutcome {
    Done,
    /// Try again at `at_ms`.
    Retry {
        at_ms: i64,
        error: String,
    },
    Failed {
        error: String,
    },
}

/// Per platform account: counts and the last event, for the console.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub platform: String,
    pub account: String,
    pub queued: u64,
    pub done: u64,
    pub failed: u64,
    pub ignored: u64,
    pub last_event_ms: Option<i64>,
}

#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// Queue an event unless one with the same `(platform, account, event_id)` exists. One statement:
    /// the dedupe key and the queued event are the same row, so nothing can separate them. `true` if
    /// this call inserted it.
    async fn enqueue_channel_event(&self, event: &NewChannelEvent) -> StoreResult<bool>;

    /// Claim the next due event for `worker` until `lock_until_ms`: the oldest queued event of its chat
    /// whose time has come and that no live worker holds. Increments `attempts`.
    async fn claim_channel_event(
        &self,
        worker: &str,
        now_ms: i64,
        lock_until_ms: i64,
    ) -> StoreResult<Option<ChannelEvent>>;

    /// Remember the generated reply (and its conversation) of a claimed event. `false` if `worker` no
    /// longer holds it.
    async fn save_channel_reply(
        &self,
        id: &str,
        worker: &str,
        reply: &str,
        conversation_id: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<bool>;

    /// Record that the first `chunks_sent` chunks went out, extending the lock to `lock_until_ms`.
    async fn set_channel_progress(
        &self,
        id: &str,
        worker: &str,
        chunks_sent: u32,
        lock_until_ms: i64,
        now_ms: i64,
    ) -> StoreResult<bool>;

    /// Finish a claimed event. `false` if `worker` no longer holds it.
    async fn finish_channel_event(
        &self,
        id: &str,
        worker: &str,
        outcome: &ChannelOutcome,
        now_ms: i64,
    ) -> StoreResult<bool>;

    async fn get_channel_event(&self, id: &str) -> StoreResult<Option<ChannelEvent>>;

    /// Events of one account (or all), newest first.
    async fn list_channel_events(
        &self,
        platform: Option<&str>,
        account: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ChannelEvent>>;

    async fn channel_stats(&self) -> StoreResult<Vec<ChannelStats>>;

    /// Delete finished (done, failed, ignored) events created before `before_ms`; returns how many.
    async fn purge_channel_events(&self, before_ms: i64) -> StoreResult<u64>;

    /// The conversation a chat key maps to.
    async fn channel_conversation(&self, key: &str) -> StoreResult<Option<String>>;

    /// Map `key` to `conversation_id` unless it is mapped already; returns the mapping that holds.
    async fn bind_channel_conversation(
        &self,
        key: &str,
        conversation_id: &str,
        now_ms: i64,
    ) -> StoreResult<String>;

    /// Forget the mapping of `key` if it still points at `conversation_id` (that conversation was
    /// deleted); the chat's next message starts a new conversation.
    async fn unbind_channel_conversation(&self, key: &str, conversation_id: &str) -> StoreResult<()>;

    async fn get_channel_state(&self, name: &str) -> StoreResult<Option<String>>;

    async fn set_channel_state(&self, name: &str, value: &str, now_ms: i64) -> StoreResult<()>;

    /// Take or renew the lease `name` for `holder` until `now_ms + ttl_ms`: succeeds when it is free,
    /// expired or already held by `holder`.
    async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> StoreResult<bool>;

    /// Give the lease up (only if `holder` holds it).
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;

    /// Who holds `name` now, if anyone.
    async fn lease_holder(&self, name: &str, now_ms: i64) -> StoreResult<Option<String>>;
}
