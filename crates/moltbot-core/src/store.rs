//! The persistence boundary. Handlers and services never see SQL: they call these methods with domain
//! types. Implementations live in `moltbot-store` (SQLite and PostgreSQL) and share one conformance suite.

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::auth::{ApiKey, ApiKeyUpdate};
use crate::domain::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness race (e.g. two writers appending to one conversation); the caller may retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The schema is older than this binary and migrations were not allowed to run.
    #[error("database schema is out of date: {0}")]
    SchemaOutOfDate(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The database cannot be reached (connection refused or lost, no connection within the pool's
    /// timeout, the server shutting down): the same request may succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store:
    crate::channels::ChannelStore
    + crate::webhooks::WebhookStore
    + crate::responses::ResponseStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// A cheap round trip, for `/ready`.
    async fn ping(&self) -> StoreResult<()>;

    async fn schema_status(&self) -> StoreResult<SchemaStatus>;

    /// Apply pending migrations (idempotent). Migrations applied by a newer binary are ignored.
    async fn migrate(&self) -> StoreResult<SchemaStatus>;

    /// Begin a transaction; dropped without `commit` it rolls back.
    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>>;

    async fn get_conversation(&self, owner: &Owner, id: &str) -> StoreResult<Option<Conversation>>;

    /// Replace the metadata; `None` if the conversation does not exist for this owner.
    async fn update_conversation_metadata(
        &self,
        owner: &Owner,
        id: &str,
        metadata: Map<String, Value>,
    ) -> StoreResult<Option<Conversation>>;

    /// Delete a conversation and its messages. `false` if there was none.
    async fn delete_conversation(&self, owner: &Owner, id: &str) -> StoreResult<bool>;

    /// List or search conversations with their summaries, newest activity first; returns the page and
    /// whether more follow. An `after` that names no matching-owner conversation is `NotFound`.
    async fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> StoreResult<(Vec<ConversationSummary>, bool)>;

    /// One conversation's summary; `owner: None` finds it whoever owns it (admin).
    async fn conversation_summary(
        &self,
        owner: Option<&Owner>,
        id: &str,
    ) -> StoreResult<Option<ConversationSummary>>;

    /// The conversation whose stored history hashes to `tip_hash` (see [`crate::history`]).
    async fn find_conversation_by_tip(
        &self,
        owner: &Owner,
        tip_hash: &str,
    ) -> StoreResult<Option<Conversation>>;

    /// Items of a conversation, with cursor pagination. Returns the page and whether more follow.
    async fn list_messages(
        &self,
        conversation_id: &str,
        query: &ItemQuery,
    ) -> StoreResult<(Vec<StoredMessage>, bool)>;

    /// The most recent `limit` messages usable as context (completed or truncated), oldest first,
    /// plus every instruction (system/developer) message regardless of age. Messages replaced by a
    /// compaction (`compacted_by`) are left out; the compaction items in force are included.
    async fn context_messages(&self, conversation_id: &str, limit: u32) -> StoreResult<Vec<StoredMessage>>;

    async fn get_message(
        &self,
        conversation_id: &str,
        message_id: &str,
    ) -> StoreResult<Option<StoredMessage>>;

    async fn delete_message(&self, conversation_id: &str, message_id: &str) -> StoreResult<bool>;

    async fn get_idempotency(&self, owner: &Owner, key: &str) -> StoreResult<Option<IdempotencyRecord>>;

    /// Claim a key: insert a record without a response. `false` if the key already exists.
    async fn claim_idempotency(
        &self,
        owner: &Owner,
        key: &str,
        request_hash: &str,
        now: i64,
    ) -> StoreResult<bool>;

    /// Store the response for a claimed key.
    async fn complete_idempotency(
        &self,
        owner: &Owner,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()>;

    /// Forget a claimed key (the first request failed before producing anything worth replaying).
    async fn release_idempotency(&self, owner: &Owner, key: &str) -> StoreResult<()>;

    /// Delete idempotency records created before `before`; returns how many.
    async fn purge_idempotency(&self, before: i64) -> StoreResult<u64>;

    /// Mark messages still `in_progress` that were created before `before` as `failed`: turns whose
    /// process died mid-generation (a clean shutdown or a failed turn settles its own). Returns how many.
    async fn fail_stale_messages(&self, before: i64) -> StoreResult<u64>;

    /// Usage records of an owner (newest first), for accounting and tests.
    async fn list_usage(&self, owner: &Owner, limit: u32) -> StoreResult<Vec<UsageRecord>>;

    /// Prompt + completion tokens an owner used since `since` (daily quotas).
    async fn sum_usage_tokens(&self, owner: &Owner, since: i64) -> StoreResult<u64>;

    /// Usage records aggregated by day, key or model (see [`UsageRow`] for the order).
    async fn aggregate_usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>>;

    /// Store a new API key. A duplicate id or secret hash is a `Conflict`.
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()>;

    /// Store `key` only if this database never had a bootstrap key nor any other key: `false` (and
    /// nothing stored) otherwise. Safe against concurrent callers: exactly one can win.
    async fn bootstrap_api_key(&self, key: &ApiKey) -> StoreResult<bool>;

    /// Every key, revoked ones included, oldest first.
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>>;

    /// The key whose secret hashes to `secret_hash` (the caller still compares in constant time).
    async fn get_api_key_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiKey>>;

    /// Change a key's name, scopes, limits or expiry; `None` if there is no such key.
    async fn update_api_key(&self, id: &str, update: &ApiKeyUpdate) -> StoreResult<Option<ApiKey>>;

    /// Revoke a key (idempotent: the first revocation time is kept). `false` if there is no such key.
    async fn revoke_api_key(&self, id: &str, now: i64) -> StoreResult<bool>;

    /// Record that a key was used at `now`.
    async fn touch_api_key(&self, id: &str, now: i64) -> StoreResult<()>;

    /// How many keys exist, revoked ones included.
    async fn count_api_keys(&self) -> StoreResult<u64>;

    /// Register a local model, replacing an earlier registration of the same name.
    async fn upsert_model(&self, model: &crate::RegisteredModel) -> StoreResult<()>;

    /// Registered local models, by name.
    async fn list_models(&self) -> StoreResult<Vec<crate::RegisteredModel>>;

    async fn get_model(&self, name: &str) -> StoreResult<Option<crate::RegisteredModel>>;

    /// Whether a registration was removed.
    async fn delete_model(&self, name: &str) -> StoreResult<bool>;

    /// Queue the usage record of a request that stores nothing else: written in batches shortly
    /// after (write-behind); reads of usage through this store see it at once.
    fn record_usage(&self, usage: UsageRecord);

    /// Write every queued usage record now (graceful shutdown; readers do it themselves).
    async fn flush(&self) -> StoreResult<()>;

    /// Commit a finished turn's writes in one transaction. An implementation may write turns that
    /// finish at the same time in one transaction (group commit): each caller still learns its own
    /// outcome, and returns only once its turn is durable.
    async fn commit_turn(&self, turn: TurnCommit) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        turn.write(tx.as_mut()).await?;
        tx.commit().await
    }

    /// Store a turn's new user messages (in a new conversation, with its `conversation.created` event,
    /// when `turn.conversation_id` is `None`) in one transaction; returns the conversation's id. Grouped
    /// like [`Store::commit_turn`] where the implementation does so.
    async fn open_turn(&self, turn: TurnOpen) -> StoreResult<String> {
        let mut tx = self.begin().await?;
        let id = turn.write(tx.as_mut()).await?;
        tx.commit().await?;
        Ok(id)
    }
}

/// The start of a turn: the user's new messages, stored before the reply is generated.
#[derive(Debug, Clone)]
pub struct TurnOpen {
    pub owner: String,
    /// `None`: a new conversation (no metadata).
    pub conversation_id: Option<String>,
    pub messages: Vec<NewMessage>,
    pub now: i64,
}

impl TurnOpen {
    /// The turn's statements, one by one, in `tx` (the reference for grouped writes).
    pub async fn write(&self, tx: &mut dyn StoreTx) -> StoreResult<String> {
        let id = match &self.conversation_id {
            Some(id) => id.clone(),
            None => {
                tx.create_conversation(&self.owner, Map::new(), self.now)
                    .await?
                    .id
            }
        };
        if !self.messages.is_empty() {
            tx.append_messages(&id, &self.messages, self.now).await?;
        }
        Ok(id)
    }
}

/// A finished turn of a stored conversation: the reply, the user's messages it completes, its
/// `message.created` event, the conversation's new history hash and the usage row.
#[derive(Debug, Clone)]
pub struct TurnCommit {
    pub conversation_id: String,
    pub reply: NewMessage,
    /// The user's messages of this turn (pending until now), set to `completed`.
    pub completed: Vec<String>,
    /// `None` when no subscription wants `message.created` ([`crate::webhooks::EventGate`]).
    pub event: Option<crate::webhooks::OutboxEvent>,
    pub tip: Option<String>,
    pub usage: UsageRecord,
}

impl TurnCommit {
    /// The turn's statements, one by one, in `tx` (the reference for grouped writes).
    pub async fn write(&self, tx: &mut dyn StoreTx) -> StoreResult<()> {
        let now = self.usage.created_at;
        tx.append_messages(&self.conversation_id, std::slice::from_ref(&self.reply), now)
            .await?;
        for id in &self.completed {
            tx.set_message_status(id, MessageStatus::Completed).await?;
        }
        if let Some(event) = &self.event {
            tx.enqueue_event(event).await?;
        }
        if let Some(tip) = &self.tip {
            tx.set_conversation_tip(&self.conversation_id, tip).await?;
        }
        tx.insert_usage(&self.usage).await
    }
}

/// Writes that must land together (a turn's messages, its usage, later a webhook outbox row).
#[async_trait]
pub trait StoreTx: Send {
    async fn create_conversation(
        &mut self,
        owner: &Owner,
        metadata: Map<String, Value>,
        now: i64,
    ) -> StoreResult<Conversation>;

    /// Append messages with consecutive sequence numbers (unique per conversation).
    async fn append_messages(
        &mut self,
        conversation_id: &str,
        messages: &[NewMessage],
        now: i64,
    ) -> StoreResult<Vec<StoredMessage>>;

    async fn set_message_status(&mut self, message_id: &str, status: MessageStatus) -> StoreResult<()>;

    /// Store a compaction: append `summary` (whose `compaction` lists the items it replaces) and mark
    /// each replaced item `compacted_by` it. `Conflict` when any of them is gone or compacted already
    /// (a concurrent compaction won): the caller rolls back, so a compaction is stored once or not at
    /// all.
    async fn insert_compaction(
        &mut self,
        conversation_id: &str,
        summary: &NewMessage,
        now: i64,
    ) -> StoreResult<StoredMessage>;

    /// Remember the hash of the conversation's history, for grouping client-sent history.
    async fn set_conversation_tip(&mut self, conversation_id: &str, tip_hash: &str) -> StoreResult<()>;

    async fn insert_usage(&mut self, usage: &UsageRecord) -> StoreResult<()>;

    /// Write an outbound webhook event to the outbox: it is dispatched only if this transaction
    /// commits (see [`crate::webhooks`]).
    async fn enqueue_event(&mut self, event: &crate::webhooks::OutboxEvent) -> StoreResult<()>;

    /// Revoke an API key in this transaction (so its `key.revoked` event commits with it). `true` if
    /// this call revoked it; `false` if there is no such key or it was revoked already (the first
    /// revocation time is kept).
    async fn revoke_api_key(&mut self, id: &str, now: i64) -> StoreResult<bool>;

    /// Store a Responses API response (committed with the turn that produced it).
    async fn insert_response(&mut self, response: &crate::responses::ResponseRecord) -> StoreResult<()>;

    async fn commit(self: Box<Self>) -> StoreResult<()>;
}
