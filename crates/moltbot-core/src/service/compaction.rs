//! Compaction as the service runs it: before a turn of a stored conversation whose context has passed
//! `memory.compact_at` of its budget, and on demand (`POST /v1/conversations/{id}/compact`). The pure
//! rules are in [`crate::memory`]; docs/memory.md describes the whole.
//!
//! Exactly once: in this process one compaction per conversation runs at a time (a request that finds
//! one running waits for it, then reads the compacted context); across replicas the store's
//! conditional write ([`crate::StoreTx::insert_compaction`]) lets one of two racing compactions commit
//! and the other roll back, after which the loser reads the winner's summary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use futures::StreamExt;
use moltbot_api::{ChatMessage, Usage};

use super::{Budget, ChatError, ChatService, ModelRoute};
use crate::backend::{BackendError, BackendEvent, BackendRequest};
use crate::domain::{Conversation, MessageStatus, NewMessage, Role, StoredMessage, UsageRecord};
use crate::memory::{
    Compaction, CompactionTrigger, ContextParts, MemorySettings, fitting_prefix, summary_request,
};
use crate::store::StoreError;

/// Compactions by trigger (`auto`, `manual`) and outcome (`ok`, `failed`, `conflict`).
pub const COMPACTIONS: &str = "moltbot_memory_compactions_total";

/// One lock per conversation being compacted in this process.
#[derive(Default)]
pub(super) struct Flights(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl Flights {
    fn lock_for(&self, conversation_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, lock| lock.strong_count() > 0);
        if let Some(lock) = map.get(conversation_id).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(conversation_id.to_owned(), Arc::downgrade(&lock));
        lock
    }
}

/// Options of a manual compaction.
#[derive(Debug, Clone, Default)]
pub struct CompactRequest {
    /// Latest turns to keep; `None` = `memory.keep_recent`.
    pub keep_recent: Option<u32>,
    /// The model that writes the summary; `None` = `memory.summary_model`, else the model of the
    /// conversation's latest reply.
    pub model: Option<String>,
    pub request_id: String,
}

/// What one compaction is asked to do.
struct Plan {
    keep_recent: u32,
    /// Most tokens of the summary.
    max_tokens: u32,
    trigger: CompactionTrigger,
    /// Prompt tokens of the context before.
    tokens_before: u32,
}

struct Summary {
    text: String,
    usage: Usage,
    backend: String,
}

fn count(trigger: CompactionTrigger, outcome: &'static str) {
    metrics::counter!(COMPACTIONS, "trigger" => trigger.as_str(), "outcome" => outcome).increment(1);
}

impl ChatService {
    /// Use these memory settings (the default: compaction on, with the documented defaults).
    pub fn with_memory(mut self, memory: MemorySettings) -> Self {
        self.memory = memory;
        self
    }

    pub fn memory(&self) -> &MemorySettings {
        &self.memory
    }

    /// A stored conversation's context for a turn, `instructions` first: compacted first when it has
    /// passed `memory.compact_at` of the budget. A compaction that fails leaves the context as it is
    /// (the caller trims it to the budget, dropping the oldest turns).
    pub(super) async fn conversation_context(
        &self,
        conv: &Conversation,
        route: &ModelRoute,
        budget: &Budget,
        instructions: Option<ChatMessage>,
        new: &[ChatMessage],
        request_id: &str,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        let mut history = self.store.context_messages(&conv.id, self.history_limit).await?;
        let over = |history: &[StoredMessage]| {
            self.over_threshold(route, budget, instructions.as_ref(), history, new)
        };
        if self.memory.enabled && over(&history).is_some() {
            let flight = self.flights.lock_for(&conv.id);
            let _running = flight.lock().await;
            // Another request may have compacted while this one waited.
            history = self.store.context_messages(&conv.id, self.history_limit).await?;
            if let Some(tokens_before) = over(&history) {
                let name = self.memory.summary_model.as_deref().unwrap_or(&route.name);
                let outcome = match self.models.get(name) {
                    Some(summarizer) => {
                        // A summary takes at most a quarter of the budget it is meant to relieve.
                        let cap = u32::try_from(budget.prompt_limit(route) / 4).unwrap_or(u32::MAX);
                        let plan = Plan {
                            keep_recent: self.memory.keep_recent,
                            max_tokens: self.summary_tokens(summarizer).min(cap).max(1),
                            trigger: CompactionTrigger::Auto,
                            tokens_before,
                        };
                        // Boxed: a turn's future stays small when it does not compact.
                        Box::pin(self.compact_history(conv, &history, summarizer, plan, request_id)).await
                    }
                    None => Err(ChatError::ModelNotFound(name.to_owned())),
                };
                match outcome {
                    Ok(_) => {
                        history = self.store.context_messages(&conv.id, self.history_limit).await?;
                    }
                    Err(ChatError::Store(StoreError::Conflict(_))) => {
                        count(CompactionTrigger::Auto, "conflict");
                        tracing::info!(moltbot.conversation.id = %conv.id,
                            "another replica compacted this conversation first; using its summary");
                        history = self.store.context_messages(&conv.id, self.history_limit).await?;
                    }
                    Err(e) => {
                        count(CompactionTrigger::Auto, "failed");
                        tracing::warn!(moltbot.conversation.id = %conv.id, model = name, error = %e,
                            "conversation compaction failed; trimming the oldest turns instead");
                    }
                }
            }
        }
        let parts = ContextParts::split(&history);
        Ok(instructions.into_iter().chain(parts.to_chat()).collect())
    }

    /// The prompt's tokens when they pass `memory.compact_at` of the budget and something can be
    /// compacted.
    fn over_threshold(
        &self,
        route: &ModelRoute,
        budget: &Budget,
        instructions: Option<&ChatMessage>,
        history: &[StoredMessage],
        new: &[ChatMessage],
    ) -> Option<u32> {
        let parts = ContextParts::split(history);
        if parts.compactable(self.memory.keep_recent).is_empty() {
            return None;
        }
        let prompt: Vec<ChatMessage> = instructions
            .cloned()
            .into_iter()
            .chain(parts.to_chat())
            .chain(new.iter().cloned())
            .collect();
        let used = route.tokens.count_messages(&prompt);
        let threshold = f64::from(self.memory.compact_at) * budget.prompt_limit(route) as f64;
        (used as f64 > threshold).then_some(u32::try_from(used).unwrap_or(u32::MAX))
    }

    /// Compact a conversation now, keeping its latest `keep_recent` turns (`memory.keep_recent` when
    /// not given). `InvalidRequest` naming `keep_recent` when there is nothing to compact, or `model`
    /// when no summary model can be chosen.
    pub async fn compact_conversation(
        &self,
        owner: &str,
        conversation_id: &str,
        req: CompactRequest,
    ) -> Result<StoredMessage, ChatError> {
        let conv = self
            .store
            .get_conversation(owner, conversation_id)
            .await?
            .ok_or_else(|| ChatError::ConversationNotFound(conversation_id.to_owned()))?;
        let keep_recent = req.keep_recent.unwrap_or(self.memory.keep_recent);
        let flight = self.flights.lock_for(&conv.id);
        let _running = flight.lock().await;
        let history = self.store.context_messages(&conv.id, self.history_limit).await?;
        let parts = ContextParts::split(&history);
        if parts.compactable(keep_recent).is_empty() {
            let turns = parts.turns.iter().filter(|m| m.role == Role::User).count();
            return Err(ChatError::invalid(
                "keep_recent",
                format!(
                    "Nothing to compact: the conversation has {turns} turn(s) and {} are kept (keep_recent).",
                    keep_recent
                ),
            ));
        }
        let name = req
            .model
            .or_else(|| self.memory.summary_model.clone())
            .or_else(|| {
                parts
                    .turns
                    .iter()
                    .rev()
                    .filter_map(|m| m.meta.model.as_deref())
                    .find(|name| self.models.get(name).is_some())
                    .map(str::to_owned)
            })
            .ok_or_else(|| {
                ChatError::invalid(
                    "model",
                    "No model has answered in this conversation and memory.summary_model is not set: pass \
                     `model`",
                )
            })?;
        let summarizer = self
            .models
            .get(&name)
            .ok_or_else(|| ChatError::ModelNotFound(name.clone()))?;
        let tokens_before = summarizer.tokens.count_messages(&parts.to_chat());
        let plan = Plan {
            keep_recent,
            max_tokens: self.summary_tokens(summarizer),
            trigger: CompactionTrigger::Manual,
            tokens_before: u32::try_from(tokens_before).unwrap_or(u32::MAX),
        };
        let outcome = self
            .compact_history(&conv, &history, summarizer, plan, &req.request_id)
            .await;
        match outcome {
            Ok(Some(item)) => Ok(item),
            Ok(None) => Err(ChatError::invalid("keep_recent", "Nothing to compact.")),
            Err(e) => {
                let conflict = matches!(e, ChatError::Store(StoreError::Conflict(_)));
                count(
                    CompactionTrigger::Manual,
                    if conflict { "conflict" } else { "failed" },
                );
                Err(e)
            }
        }
    }

    /// `memory.summary_max_tokens`, within what the summary model may write.
    fn summary_tokens(&self, summarizer: &ModelRoute) -> u32 {
        self.memory.summary_max_tokens.min(summarizer.max_tokens).max(1)
    }

    /// Summarise what `plan.keep_recent` allows (as much of it as the summary model takes) and store
    /// the summary with its usage. `None` when there is nothing to compact.
    async fn compact_history(
        &self,
        conv: &Conversation,
        history: &[StoredMessage],
        summarizer: &ModelRoute,
        plan: Plan,
        request_id: &str,
    ) -> Result<Option<StoredMessage>, ChatError> {
        let Plan {
            keep_recent,
            max_tokens,
            trigger,
            tokens_before,
        } = plan;
        let started = Instant::now();
        let parts = ContextParts::split(history);
        let candidates = parts.compactable(keep_recent);
        if candidates.is_empty() {
            return Ok(None);
        }
        let input_budget = summarizer.context_window.saturating_sub(max_tokens) as usize;
        let n = fitting_prefix(
            summarizer.tokens.as_ref(),
            &self.memory.prompt,
            &parts.summaries,
            candidates,
            input_budget,
        );
        if n == 0 {
            return Err(ChatError::ContextLength {
                param: None,
                message: format!(
                    "The oldest message does not fit the context of the summary model `{}`.",
                    summarizer.name
                ),
            });
        }
        let replaced = &candidates[..n];
        let request = summary_request(&self.memory.prompt, &parts.summaries, replaced);
        let summary = self
            .summarize(summarizer, request, max_tokens, request_id)
            .await?;
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let mut item = NewMessage::new(Role::System, summary.text, MessageStatus::Completed);
        item.meta.request_id = Some(request_id.to_owned());
        item.meta.usage = Some(summary.usage.clone());
        item.meta.latency_ms = Some(latency_ms);
        let compaction = Compaction {
            replaced_ids: parts
                .summaries
                .iter()
                .chain(replaced)
                .map(|m| m.id.clone())
                .collect(),
            message_count: parts.summarised_count() + u32::try_from(n).unwrap_or(u32::MAX),
            model: summarizer.name.clone(),
            trigger,
            tokens_before,
        };
        item.compaction = Some(compaction.clone());
        let now = self.clock.now_secs();
        let mut tx = self.store.begin().await?;
        let stored = tx.insert_compaction(&conv.id, &item, now).await?;
        tx.insert_usage(&UsageRecord {
            id: crate::ids::usage_id(),
            owner: conv.owner.clone(),
            conversation_id: Some(conv.id.clone()),
            request_id: Some(request_id.to_owned()),
            model: summarizer.name.clone(),
            backend: Some(summary.backend).filter(|b| !b.is_empty()),
            prompt_tokens: summary.usage.prompt_tokens,
            completion_tokens: summary.usage.completion_tokens,
            latency_ms,
            outcome: "ok".into(),
            created_at: now,
        })
        .await?;
        tx.commit().await?;
        count(trigger, "ok");
        tracing::info!(
            moltbot.conversation.id = %conv.id,
            trigger = trigger.as_str(),
            model = %summarizer.name,
            replaced = compaction.replaced_ids.len(),
            tokens_before,
            summary_tokens = summary.usage.completion_tokens,
            "conversation compacted"
        );
        Ok(Some(stored))
    }

    /// Ask `route` (with its fallbacks) for a summary and collect it.
    async fn summarize(
        &self,
        route: &ModelRoute,
        messages: Vec<ChatMessage>,
        max_tokens: u32,
        request_id: &str,
    ) -> Result<Summary, ChatError> {
        let prompt_tokens = u32::try_from(route.tokens.count_messages(&messages)).unwrap_or(u32::MAX);
        let request = BackendRequest {
            messages,
            max_tokens,
            request_id: request_id.to_owned(),
            ..BackendRequest::default()
        };
        let (backend, mut events) = self.open_with_fallback(route, request).await?;
        let mut text = String::new();
        let mut usage = None;
        while let Some(event) = events.next().await {
            match event? {
                BackendEvent::Delta {
                    content: Some(delta), ..
                } => text.push_str(&delta),
                BackendEvent::Usage(u) => usage = Some(u),
                _ => {}
            }
        }
        let text = text.trim().to_owned();
        if text.is_empty() {
            return Err(BackendError::Protocol("the summary model returned no text".into()).into());
        }
        // A summary far over its limit would crowd out the context it is meant to relieve (and a
        // system message is never trimmed): a model that ignores `max_tokens` fails the compaction.
        let written = route.tokens.count_text(&text);
        let allowed = max_tokens as usize + max_tokens as usize / 4 + 16;
        if written > allowed {
            return Err(BackendError::Protocol(format!(
                "the summary has about {written} tokens, more than the {max_tokens} asked for"
            ))
            .into());
        }
        let usage = usage.unwrap_or_else(|| {
            Usage::new(
                prompt_tokens,
                u32::try_from(route.tokens.count_text(&text)).unwrap_or(u32::MAX),
            )
        });
        Ok(Summary { text, usage, backend })
    }
}
