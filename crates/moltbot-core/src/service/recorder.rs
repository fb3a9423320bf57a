//! Committing a turn: the reply, its usage and the state of the user's messages, in one transaction,
//! before the client sees the end of the response. A recorder dropped without a commit (the client went
//! away mid-stream) stores exactly the text delivered so far, marked truncated.

use std::sync::Arc;
use std::time::Instant;

use moltbot_api::Usage;
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::domain::{MessageStatus, NewMessage, Role, TurnMeta, UsageRecord};
use crate::history::HistoryHash;
use crate::store::{Store, StoreError, TurnCommit};
use crate::tokens::TokenCounter;
use crate::webhooks::{MESSAGE_CREATED, MESSAGE_FAILED, OutboxEvent};

pub(super) struct RecorderInit {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub owner: String,
    pub conversation_id: Option<String>,
    pub pending_ids: Vec<String>,
    pub model: String,
    pub request_id: String,
    pub started: Instant,
    pub prompt_tokens: PromptTokens,
    pub tip: Option<HistoryHash>,
    pub tokens: Arc<dyn TokenCounter>,
}

/// The prompt's size, or the prompt itself when nothing needed its exact size before the reply (it is
/// counted only if the backend reports no usage).
pub(super) enum PromptTokens {
    Counted(u32),
    Deferred(Vec<moltbot_api::ChatMessage>),
}

impl RecorderInit {
    /// The turn stores nothing but its usage row (no conversation, no stored response): that row is
    /// written behind, without a transaction.
    fn usage_only(&self, outcome: &TurnOutcome) -> bool {
        self.conversation_id.is_none() && outcome.response.is_none()
    }

    fn prompt_tokens(&self) -> u32 {
        match &self.prompt_tokens {
            PromptTokens::Counted(n) => *n,
            PromptTokens::Deferred(prompt) => {
                u32::try_from(self.tokens.count_messages(prompt)).unwrap_or(u32::MAX)
            }
        }
    }
}

/// How a generation ended, as far as the client is concerned.
#[derive(Debug, Clone, Default)]
pub struct TurnOutcome {
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub tool_calls: Option<Value>,
    /// `true` when the client received only part of the reply.
    pub truncated: bool,
    /// A Responses API response to store in the same transaction (`store: true`).
    pub response: Option<crate::responses::ResponseRecord>,
}

pub struct TurnRecorder {
    init: Option<RecorderInit>,
    backend: String,
    delivered: String,
}

impl TurnRecorder {
    pub(super) fn new(init: RecorderInit) -> Self {
        Self {
            init: Some(init),
            backend: String::new(),
            delivered: String::new(),
        }
    }

    pub(super) fn set_backend(&mut self, backend: &str) {
        backend.clone_into(&mut self.backend);
    }

    /// Text that has been handed to the client's transport.
    pub fn push_text(&mut self, text: &str) {
        self.delivered.push_str(text);
    }

    pub fn delivered(&self) -> &str {
        &self.delivered
    }

    /// The backend's usage, or an estimate from the tokenizer when it sent none.
    pub fn usage_or_estimate(&self, usage: Option<Usage>) -> Usage {
        usage.unwrap_or_else(|| {
            let init = self.init.as_ref();
            let prompt = init.map_or(0, RecorderInit::prompt_tokens);
            let completion = init.map_or(0, |i| i.tokens.count_text(&self.delivered) as u32);
            Usage::new(prompt, completion)
        })
    }

    /// Store the reply and its usage. Call before the client receives the end of the response.
    pub async fn commit(mut self, outcome: TurnOutcome) -> Result<(), StoreError> {
        let Some(init) = self.init.take() else {
            return Ok(());
        };
        let usage = self.usage_or_estimate_with(&init, outcome.usage.clone());
        if init.usage_only(&outcome) {
            // Only the usage row, queued without waiting: nothing to cancel.
            queue_usage(&init, &self.backend, &usage, turn_result(&outcome));
            return Ok(());
        }
        let backend = std::mem::take(&mut self.backend);
        let delivered = std::mem::take(&mut self.delivered);
        // In its own task: a client that goes away while the reply is being committed drops this future
        // (the response body with it), and a cancelled commit would roll the whole turn back.
        run_to_completion(async move { write_turn(init, &backend, delivered, outcome, usage).await }).await
    }

    /// The generation failed before producing a reply: the user's messages are marked failed.
    pub async fn fail(mut self) {
        let Some(init) = self.init.take() else { return };
        let partial = std::mem::take(&mut self.delivered);
        let backend = std::mem::take(&mut self.backend);
        let write = async move { write_failure(init, &backend, partial).await };
        if let Err(e) = run_to_completion(write).await {
            tracing::error!(error = %e, "could not record a failed turn");
        }
    }

    fn usage_or_estimate_with(&self, init: &RecorderInit, usage: Option<Usage>) -> Usage {
        usage.unwrap_or_else(|| {
            Usage::new(
                init.prompt_tokens(),
                init.tokens.count_text(&self.delivered) as u32,
            )
        })
    }
}

impl Drop for TurnRecorder {
    fn drop(&mut self) {
        let Some(init) = self.init.take() else { return };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let usage = self.usage_or_estimate_with(&init, None);
        let backend = std::mem::take(&mut self.backend);
        let delivered = std::mem::take(&mut self.delivered);
        let outcome = TurnOutcome {
            truncated: true,
            ..Default::default()
        };
        handle.spawn(async move {
            if let Err(e) = write_turn(init, &backend, delivered, outcome, usage).await {
                tracing::error!(error = %e, "could not record a truncated turn");
            }
        });
    }
}

/// Run a store write in its own task so that it finishes even if the caller is dropped (outside a
/// runtime, inline). Spawned at the call, so the caller's future holds only the task's handle, not
/// the write's own (large) state: futures are moved whole, and a turn's are moved several times.
fn run_to_completion(
    write: impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
    let task = match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.spawn(write)),
        Err(_) => Err(Box::pin(write)),
    };
    async move {
        match task {
            Ok(spawned) => spawned
                .await
                .map_err(|e| StoreError::Database(format!("recording the turn: {e}")))?,
            Err(inline) => inline.await,
        }
    }
}

/// `ok`, or `cancelled` for a reply the client received only part of.
fn turn_result(outcome: &TurnOutcome) -> &'static str {
    if outcome.truncated { "cancelled" } else { "ok" }
}

/// Queue the usage row of a turn that stores nothing else (written behind, batched; see
/// `Store::record_usage`).
fn queue_usage(init: &RecorderInit, backend: &str, usage: &Usage, result: &str) {
    let now = init.clock.now_secs();
    init.store
        .record_usage(usage_record(init, backend, usage, result, now));
}

async fn write_turn(
    init: RecorderInit,
    backend: &str,
    content: String,
    outcome: TurnOutcome,
    usage: Usage,
) -> Result<(), StoreError> {
    let result = turn_result(&outcome);
    if init.usage_only(&outcome) {
        queue_usage(&init, backend, &usage, result);
        return Ok(());
    }
    let now = init.clock.now_secs();
    let latency_ms = init.started.elapsed().as_millis() as i64;
    let usage_row = usage_record(&init, backend, &usage, result, now);
    let Some(conv) = &init.conversation_id else {
        // A stored response without a conversation.
        let mut tx = init.store.begin().await?;
        tx.insert_usage(&usage_row).await?;
        if let Some(response) = &outcome.response {
            tx.insert_response(response).await?;
        }
        return tx.commit().await;
    };
    let status = if outcome.truncated {
        MessageStatus::Truncated
    } else {
        MessageStatus::Completed
    };
    let mut reply = NewMessage::new(Role::Assistant, content, status);
    if let Some(calls) = &outcome.tool_calls {
        reply.raw = Some(json!({"role": "assistant", "content": reply.content, "tool_calls": calls}));
    }
    // The webhook event commits with the reply (see `crate::webhooks`), unless nobody wants it.
    let event = init.store.wants_event(MESSAGE_CREATED).then(|| {
        let data = json!({
        "conversation_id": conv,
        "id": reply.id,
        "role": reply.role.as_str(),
        "status": status.as_str(),
        "owner": init.owner,
        "model": init.model,
        "backend": Some(backend).filter(|b| !b.is_empty()),
        "text": reply.content,
        "finish_reason": outcome.finish_reason,
        "usage": usage,
        "request_id": init.request_id,
        "created_at": now,
        });
        OutboxEvent::new(MESSAGE_CREATED, data, init.clock.now_millis())
    });
    let tip = init
        .tip
        .as_ref()
        .map(|tip| tip.push("assistant", &reply.content, None).to_hex());
    reply.meta = TurnMeta {
        model: Some(init.model.clone()),
        backend: Some(backend.to_owned()),
        finish_reason: outcome.finish_reason.clone(),
        usage: Some(usage),
        latency_ms: Some(latency_ms),
        request_id: Some(init.request_id.clone()),
    };
    let turn = TurnCommit {
        conversation_id: conv.clone(),
        reply,
        completed: init.pending_ids.clone(),
        event,
        tip,
        usage: usage_row,
    };
    match &outcome.response {
        // The common case: concurrent turns may share one transaction (group commit).
        None => init.store.commit_turn(turn).await,
        Some(response) => {
            let mut tx = init.store.begin().await?;
            turn.write(tx.as_mut()).await?;
            tx.insert_response(response).await?;
            tx.commit().await
        }
    }
}

/// The user's messages are marked failed; a reply that failed mid-stream is kept for the record, also
/// marked failed, so neither is ever sent as context again.
async fn write_failure(init: RecorderInit, backend: &str, partial: String) -> Result<(), StoreError> {
    let now = init.clock.now_secs();
    let mut tx = init.store.begin().await?;
    for id in &init.pending_ids {
        tx.set_message_status(id, MessageStatus::Failed).await?;
    }
    let mut reply_id = None;
    if let Some(conv) = init.conversation_id.as_ref().filter(|_| !partial.is_empty()) {
        let mut reply = NewMessage::new(Role::Assistant, partial.clone(), MessageStatus::Failed);
        reply.meta.model = Some(init.model.clone());
        reply.meta.backend = Some(backend.to_owned());
        reply.meta.request_id = Some(init.request_id.clone());
        tx.append_messages(conv, std::slice::from_ref(&reply), now)
            .await?;
        reply_id = Some(reply.id);
    }
    let data = json!({
        "conversation_id": init.conversation_id,
        "id": reply_id,
        "user_message_ids": init.pending_ids,
        "owner": init.owner,
        "model": init.model,
        "backend": Some(backend).filter(|b| !b.is_empty()),
        "text": partial,
        "request_id": init.request_id,
        "created_at": now,
    });
    tx.enqueue_event(&OutboxEvent::new(MESSAGE_FAILED, data, init.clock.now_millis()))
        .await?;
    let usage = Usage::new(init.prompt_tokens(), 0);
    tx.insert_usage(&usage_record(&init, backend, &usage, "error", now))
        .await?;
    tx.commit().await
}

fn usage_record(init: &RecorderInit, backend: &str, usage: &Usage, outcome: &str, now: i64) -> UsageRecord {
    UsageRecord {
        id: crate::ids::usage_id(),
        owner: init.owner.clone(),
        conversation_id: init.conversation_id.clone(),
        request_id: Some(init.request_id.clone()),
        model: init.model.clone(),
        backend: Some(backend.to_owned()).filter(|b| !b.is_empty()),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        latency_ms: init.started.elapsed().as_millis() as i64,
        outcome: outcome.into(),
        created_at: now,
    }
}
