//! The chat service: validates a request, resolves the model to a chain of backends, assembles context
//! (stored history trimmed to the context budget), stores the user's messages, opens a generation with
//! fallback, and hands back a [`Turn`] whose recorder commits the reply.

mod budget;
mod compaction;
mod recorder;
mod registry;
mod validate;

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use moltbot_api::{ChatCompletionRequest, ChatMessage};

pub use budget::Budget;
pub use compaction::{COMPACTIONS, CompactRequest};
pub use recorder::{TurnOutcome, TurnRecorder};
pub use registry::{ModelRegistry, ModelRoute};
pub use validate::validate_request;

use crate::backend::{BackendError, BackendEvent, BackendRequest, EventStream};
use crate::clock::Clock;
use crate::domain::{MessageStatus, NewMessage, Role, StoredMessage};
use crate::history::{HistoryHash, stored_prefix_len};
use crate::store::{Store, StoreError, TurnOpen};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{message}")]
    InvalidRequest {
        param: Option<String>,
        message: String,
        code: Option<&'static str>,
    },
    #[error("The model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("Conversation `{0}` not found")]
    ConversationNotFound(String),
    #[error("Response `{0}` not found")]
    ResponseNotFound(String),
    #[error("{message}")]
    ContextLength { param: Option<String>, message: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChatError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ChatError::InvalidRequest {
            param: Some(param.into()),
            message: message.into(),
            code: None,
        }
    }
}

/// What the service needs to know about the caller and the request.
#[derive(Debug, Clone)]
pub struct TurnInput {
    /// Key id of the caller; `""` when authentication is not configured.
    pub owner: String,
    pub request: ChatCompletionRequest,
    /// A stored conversation to continue (body field or header).
    pub conversation: Option<String>,
    pub request_id: String,
    /// A system message for this turn only: first in the prompt, never stored (Responses
    /// `instructions`).
    pub instructions: Option<String>,
    /// Earlier context that is not stored again (a Responses `previous_response_id` chain): trimmed to
    /// the budget like stored history. Ignored when `conversation` is set.
    pub history: Option<Vec<ChatMessage>>,
    /// Whether a request without `conversation` may be grouped into a stored conversation by its
    /// history (Chat Completions' recording mode). `false` for the Responses API, whose record is the
    /// stored response.
    pub group: bool,
}

/// A started generation.
pub struct Turn {
    pub id: String,
    pub created: i64,
    /// The public model name the client asked for.
    pub model: String,
    /// The backend that is answering (after fallback).
    pub backend: String,
    pub conversation_id: Option<String>,
    pub events: EventStream,
    pub recorder: TurnRecorder,
}

pub struct ChatService {
    store: Arc<dyn Store>,
    models: Arc<ModelRegistry>,
    clock: Arc<dyn Clock>,
    record_exchanges: bool,
    /// How many stored messages are considered for context at most.
    history_limit: u32,
    /// Conversation memory (compaction, see `compaction`).
    memory: crate::memory::MemorySettings,
    flights: compaction::Flights,
}

impl ChatService {
    pub fn new(
        store: Arc<dyn Store>,
        models: Arc<ModelRegistry>,
        clock: Arc<dyn Clock>,
        record_exchanges: bool,
    ) -> Self {
        Self {
            store,
            models,
            clock,
            record_exchanges,
            history_limit: 500,
            memory: crate::memory::MemorySettings::default(),
            flights: compaction::Flights::default(),
        }
    }

    pub fn models(&self) -> &Arc<ModelRegistry> {
        &self.models
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Validate, assemble context, store the new messages and open a generation.
    pub async fn start(&self, input: TurnInput) -> Result<Turn, ChatError> {
        let started = Instant::now();
        validate_request(&input.request)?;
        let route = self
            .models
            .get(&input.request.model)
            .ok_or_else(|| ChatError::ModelNotFound(input.request.model.clone()))?
            .clone();
        let now = self.clock.now_secs();
        let owner = input.owner.clone();
        let req = &input.request;
        let explicit_max = req.max_completion_tokens.or(req.max_tokens);

        // 1. Work out the prompt and which messages are new.
        let instructions = input
            .instructions
            .as_ref()
            .map(|text| ChatMessage::text("system", text.clone()));
        let plan = match &input.conversation {
            Some(id) => {
                let conv = self
                    .store
                    .get_conversation(&owner, id)
                    .await?
                    .ok_or_else(|| ChatError::ConversationNotFound(id.clone()))?;
                let budget = Budget::for_route(&route, explicit_max)?;
                let history = self
                    .conversation_context(
                        &conv,
                        &route,
                        &budget,
                        instructions,
                        &req.messages,
                        &input.request_id,
                    )
                    .await?;
                let prompt = budget.trim_history(&route, history, &req.messages)?;
                Plan {
                    conversation: Some(conv.id),
                    create: false,
                    prompt,
                    new_from: None,
                    tip: None,
                }
            }
            None if input.history.is_some() || instructions.is_some() => {
                let history: Vec<ChatMessage> = instructions
                    .into_iter()
                    .chain(input.history.iter().flatten().cloned())
                    .collect();
                let budget = Budget::for_route(&route, explicit_max)?;
                let prompt = budget.trim_history(&route, history, &req.messages)?;
                Plan {
                    conversation: None,
                    create: false,
                    prompt,
                    new_from: None,
                    tip: None,
                }
            }
            None if self.record_exchanges && input.group => {
                let split = stored_prefix_len(&req.messages);
                let found = match split {
                    Some(n) => {
                        let tip = HistoryHash::of(&owner, &req.messages[..n]).to_hex();
                        self.store
                            .find_conversation_by_tip(&owner, &tip)
                            .await?
                            .map(|c| (c.id, n))
                    }
                    None => None,
                };
                let (conversation, create, new_from) = match found {
                    Some((id, n)) => (Some(id), false, n),
                    None => (None, true, 0),
                };
                let tip = HistoryHash::of(&owner, &req.messages);
                Plan {
                    conversation,
                    create,
                    prompt: req.messages.clone(),
                    new_from: Some(new_from),
                    tip: Some(tip),
                }
            }
            None => Plan {
                conversation: None,
                create: false,
                prompt: req.messages.clone(),
                new_from: None,
                tip: None,
            },
        };

        // The exact prompt size matters only when the prompt may crowd the output out of the context
        // window; otherwise it is counted later, and only if the backend reports no usage.
        let budget = Budget::for_route(&route, explicit_max)?;
        let bound = u32::try_from(route.tokens.max_messages(&plan.prompt)).unwrap_or(u32::MAX);
        let (prompt_tokens, max_tokens) = match budget.output_tokens_unconstrained(&route, bound) {
            Some(max) => (recorder::PromptTokens::Deferred(plan.prompt.clone()), max),
            None => {
                let exact = u32::try_from(route.tokens.count_messages(&plan.prompt)).unwrap_or(u32::MAX);
                (
                    recorder::PromptTokens::Counted(exact),
                    budget.output_tokens(&route, exact)?,
                )
            }
        };

        // 2. Store the new messages (in progress until the reply is committed).
        let new_messages: Vec<NewMessage> = match (&plan.conversation, plan.new_from, plan.create) {
            _ if (!self.record_exchanges || !input.group) && input.conversation.is_none() => Vec::new(),
            (_, Some(from), _) => req.messages[from..]
                .iter()
                .map(|m| chat_to_new(m, &input.request_id))
                .collect(),
            (Some(_), None, _) => req
                .messages
                .iter()
                .map(|m| chat_to_new(m, &input.request_id))
                .collect(),
            _ => Vec::new(),
        };
        let mut conversation_id = plan.conversation.clone();
        let mut pending_ids: Vec<String> = Vec::new();
        if plan.create || (conversation_id.is_some() && !new_messages.is_empty()) {
            // Ids are fixed before the write (grouped with other turns' writes, see `Store::open_turn`).
            pending_ids = new_messages.iter().map(|m| m.id.clone()).collect();
            let open = TurnOpen {
                owner: owner.clone(),
                conversation_id: conversation_id.take(),
                messages: new_messages,
                now,
            };
            conversation_id = Some(self.store.open_turn(open).await?);
        }

        let recorder = TurnRecorder::new(recorder::RecorderInit {
            store: self.store.clone(),
            clock: self.clock.clone(),
            owner,
            conversation_id: conversation_id.clone(),
            pending_ids,
            model: route.name.clone(),
            request_id: input.request_id.clone(),
            started,
            prompt_tokens,
            tip: plan.tip,
            tokens: route.tokens.clone(),
        });

        // 3. Open the generation, falling back along the chain before anything reaches the client.
        let base = BackendRequest {
            model: String::new(),
            messages: plan.prompt,
            max_tokens,
            use_max_completion_tokens: req.max_completion_tokens.is_some(),
            temperature: req.temperature,
            top_p: req.top_p,
            stop: req.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default(),
            seed: req.seed,
            user: req.user.clone(),
            tools: req.tools.clone(),
            tool_choice: req.tool_choice.clone(),
            response_format: req.response_format.clone(),
            extra: req.extra.clone(),
            request_id: input.request_id.clone(),
            stream: req.stream.unwrap_or(false),
        };
        match self.open_with_fallback(&route, base).await {
            Ok((backend, events)) => {
                let mut recorder = recorder;
                recorder.set_backend(&backend);
                Ok(Turn {
                    id: crate::ids::completion_id(),
                    created: now,
                    model: route.name.clone(),
                    backend,
                    conversation_id,
                    events,
                    recorder,
                })
            }
            Err(e) => {
                recorder.fail().await;
                Err(e)
            }
        }
    }

    async fn open_with_fallback(
        &self,
        route: &ModelRoute,
        mut base: BackendRequest,
    ) -> Result<(String, EventStream), ChatError> {
        let chain = self.models.chain(&route.name);
        let mut last: Option<BackendError> = None;
        for (i, r) in chain.iter().enumerate() {
            let is_last = i + 1 == chain.len();
            // The last step (the only one without fallbacks) takes the request instead of copying the prompt.
            let mut request = if is_last {
                std::mem::take(&mut base)
            } else {
                base.clone()
            };
            request.model = r.upstream_model.clone();
            request.temperature = request.temperature.or(r.temperature);
            request.top_p = request.top_p.or(r.top_p);
            request.max_tokens = request.max_tokens.min(r.max_tokens);
            match r.backend.chat(request).await {
                Ok(mut events) => match events.next().await {
                    Some(Err(e)) if e.should_fall_back() && !is_last => {
                        tracing::warn!(backend = r.backend.name(), error = %e, "backend failed before first token; falling back");
                        last = Some(e);
                    }
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(first)) => {
                        let rest =
                            futures::stream::once(async move { Ok::<BackendEvent, BackendError>(first) })
                                .chain(events);
                        return Ok((r.backend.name().to_owned(), Box::pin(rest)));
                    }
                    None => {
                        return Err(BackendError::Protocol(
                            "the backend ended the stream without output".into(),
                        )
                        .into());
                    }
                },
                Err(e) if e.should_fall_back() && !is_last => {
                    tracing::warn!(backend = r.backend.name(), error = %e, "backend unavailable; falling back");
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .unwrap_or_else(|| BackendError::Protocol("no backend configured".into()))
            .into())
    }
}

struct Plan {
    conversation: Option<String>,
    create: bool,
    prompt: Vec<ChatMessage>,
    /// Index into the client's messages from which messages are new (grouping mode).
    new_from: Option<usize>,
    tip: Option<HistoryHash>,
}

/// A stored message as the model sees it again.
pub fn stored_to_chat(m: &StoredMessage) -> ChatMessage {
    if let Some(raw) = &m.raw
        && let Ok(mut msg) = serde_json::from_value::<ChatMessage>(raw.clone())
    {
        if m.status == MessageStatus::Truncated || msg.content.is_none() && msg.tool_calls.is_none() {
            msg.content = Some(serde_json::Value::String(m.content.clone()));
        }
        return msg;
    }
    ChatMessage::text(m.role.as_str(), m.content.clone())
}

/// A client message as it is stored: text for search and display, the original JSON when it carries
/// more than text (content parts, tool calls, names).
pub fn chat_to_new(m: &ChatMessage, request_id: &str) -> NewMessage {
    let role = Role::parse(&m.role).unwrap_or(Role::User);
    let plain = matches!(m.content, Some(serde_json::Value::String(_)))
        && m.name.is_none()
        && m.tool_calls.is_none()
        && m.tool_call_id.is_none()
        && m.extra.is_empty();
    let mut n = NewMessage::new(role, m.text_content(), MessageStatus::InProgress);
    if !plain {
        n.raw = serde_json::to_value(m).ok();
    }
    n.meta.request_id = Some(request_id.to_owned());
    n
}
