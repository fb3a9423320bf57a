//! `--local`: the server's own chat service in this process (the same store, model registry and
//! backends `serve` builds, local llama.cpp models included), without HTTP or authentication. Turns
//! are stored like the server stores them, with the owner `""` (no key).

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use moltbot_api::ChatCompletionRequest;
use moltbot_config::Config;
use moltbot_core::assemble::ReplyCollector;
use moltbot_core::{
    BackendEvent, ChatError, ChatService, ItemQuery, Store, StoreError, TurnInput, TurnOutcome,
};
use moltbot_server::error::ApiError;

use super::{Ending, Exchange, Failure, Item, Reply};

/// Marks the routes of local models (config `backend = "local"`, registered and the embedded default).
const LOCAL_OWNER: &str = "moltbot-local";

pub struct Local {
    chat: Arc<ChatService>,
    store: Arc<dyn Store>,
}

impl Local {
    /// Open the store and start every configured model, exactly as `serve` does.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let state = moltbot_server::build_state(config, moltbot_server::BuildOptions::default()).await?;
        Ok(Self {
            chat: state.chat.clone(),
            store: state.store.clone(),
        })
    }

    pub fn models(&self) -> Vec<String> {
        self.chat.models().iter().map(|r| r.name.clone()).collect()
    }

    /// The first local model, if any is configured.
    pub fn first_local_model(&self) -> Option<String> {
        self.chat
            .models()
            .iter()
            .find(|r| r.owned_by == LOCAL_OWNER)
            .map(|r| r.name.clone())
    }

    pub async fn history(&self, conversation: &str) -> Result<Vec<Item>, Failure> {
        let mut items = Vec::new();
        let mut query = ItemQuery {
            after: None,
            limit: 100,
            ascending: true,
        };
        loop {
            let (page, has_more) = self
                .store
                .list_messages(conversation, &query)
                .await
                .map_err(|e| store_failure(&e))?;
            for m in &page {
                items.push(Item {
                    role: m.role.as_str().to_owned(),
                    text: m.content.clone(),
                    status: m.status.api_status().to_owned(),
                });
            }
            match page.last() {
                Some(last) if has_more => query.after = Some(last.id.clone()),
                _ => return Ok(items),
            }
        }
    }

    /// Generate one reply. On `cancel`, the text shown so far is stored, marked truncated — what the
    /// server does when a streaming client goes away. Usage queued for a turn stored nowhere else is
    /// written before returning (this process may exit right after).
    pub async fn send(
        &self,
        ex: Exchange<'_>,
        cancel: impl Future<Output = ()>,
        out: &mut dyn FnMut(&str),
    ) -> Reply {
        let reply = self.generate(ex, cancel, out).await;
        if let Err(e) = self.store.flush().await {
            eprintln!("error: could not store the usage record: {e}");
        }
        reply
    }

    async fn generate(
        &self,
        ex: Exchange<'_>,
        cancel: impl Future<Output = ()>,
        out: &mut dyn FnMut(&str),
    ) -> Reply {
        tokio::pin!(cancel);
        let input = TurnInput {
            owner: String::new(),
            request: ChatCompletionRequest {
                model: ex.model.to_owned(),
                messages: ex.messages.to_vec(),
                stream: Some(true),
                ..Default::default()
            },
            conversation: ex.conversation.map(str::to_owned),
            request_id: moltbot_core::ids::request_id(),
            instructions: None,
            history: None,
            group: true,
        };
        let mut reply = Reply {
            conversation: ex.conversation.map(str::to_owned),
            text: String::new(),
            ending: Ending::Cancelled,
        };
        let turn = tokio::select! {
            biased;
            () = &mut cancel => return reply,
            t = self.chat.start(input) => t,
        };
        let turn = match turn {
            Ok(t) => t,
            Err(ChatError::Store(e)) => return reply.failed(store_failure(&e)),
            Err(e) => return reply.failed(api_failure(&ApiError::from(e))),
        };
        reply.conversation = turn.conversation_id.clone();
        let mut events = turn.events;
        let mut recorder = turn.recorder;
        let mut collected = ReplyCollector::default();
        loop {
            let ev = tokio::select! {
                biased;
                () = &mut cancel => {
                    drop(events);
                    let truncated = TurnOutcome { truncated: true, ..Default::default() };
                    if let Err(e) = recorder.commit(truncated).await {
                        eprintln!("error: could not store the cancelled reply: {e}");
                    }
                    return reply;
                }
                ev = events.next() => ev,
            };
            match ev {
                Some(Ok(ev)) => {
                    collected.absorb(&ev);
                    if let BackendEvent::Delta {
                        content: Some(text), ..
                    } = &ev
                    {
                        recorder.push_text(text);
                        out(text);
                        reply.text.push_str(text);
                    }
                }
                Some(Err(e)) => {
                    recorder.fail().await;
                    return reply.failed(api_failure(&ApiError::Backend(e)));
                }
                None => break,
            }
        }
        drop(events);
        let usage = recorder.usage_or_estimate(collected.usage.clone());
        let reason = collected.finish_reason.clone().unwrap_or_else(|| "stop".into());
        let outcome = TurnOutcome {
            finish_reason: Some(reason.clone()),
            usage: Some(usage),
            tool_calls: collected.tool_calls_value(),
            truncated: false,
            response: None,
        };
        if let Err(e) = recorder.commit(outcome).await {
            return reply.failed(store_failure(&e));
        }
        reply.ending = Ending::Finished(reason);
        reply
    }
}

/// The OpenAI error the server would have answered with.
fn api_failure(e: &ApiError) -> Failure {
    Failure::from_envelope(Some(e.status().as_u16()), e.envelope(None))
}

/// In this process the operator sees the database's own error (the server would hide it in a 500).
fn store_failure(e: &StoreError) -> Failure {
    Failure {
        status: None,
        message: format!("database error: {e}"),
        code: None,
    }
}
