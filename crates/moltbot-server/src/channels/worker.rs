//! Channel workers: claim an event, answer it in the chat's conversation, send the reply in chunks,
//! finish it. Every step is recorded on the event so a retry — here or on another replica — resumes
//! where the last attempt stopped: the reply is generated once, sent chunks are not sent again.

use std::time::Duration;

use futures::StreamExt;
use moltbot_api::ChatCompletionRequest;
use moltbot_channels::{ChatType, InboundMessage, Platform, SendError, chunk};
use moltbot_core::assemble::ReplyCollector;
use moltbot_core::channels::{ChannelEvent, ChannelOutcome};
use moltbot_core::{BackendEvent, ChatError, MessageStatus, NewMessage, Role, Turn, TurnInput};
use serde_json::{Map, json};
use tokio_util::sync::CancellationToken;

use super::Account;
use crate::state::AppState;

/// Longest wait for one platform API call before it counts as a temporary failure.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn run(state: AppState, index: u32, stop: CancellationToken) {
    let worker = format!("{}#{index}", state.channels.instance);
    let settings = state.channels.settings.clone();
    let lock_ms = settings.lock_timeout.as_millis() as i64;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let now = state.clock.now_millis();
        match state.store.claim_channel_event(&worker, now, now + lock_ms).await {
            Ok(Some(event)) => process(&state, &worker, event).await,
            Ok(None) => {
                tokio::select! {
                    () = state.channels.notify.notified() => {}
                    () = tokio::time::sleep(settings.poll_interval) => {}
                    () = stop.cancelled() => break,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "channel worker cannot reach the database");
                tokio::select! {
                    () = tokio::time::sleep(settings.poll_interval.max(Duration::from_secs(1))) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
}

/// Delete finished events older than `pipeline.retention` (hourly).
pub(super) async fn purge_loop(state: AppState, stop: CancellationToken) {
    let retention = state.channels.settings.retention.as_millis() as i64;
    loop {
        let before = state.clock.now_millis() - retention;
        match state.store.purge_channel_events(before).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "purged finished channel events"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not purge channel events"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
            () = stop.cancelled() => break,
        }
    }
}

/// Exponential backoff with jitter: base · 2^(attempt-1), capped, ±20 %.
fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(max);
    let jitter = rand::random_range(0.8..1.2);
    capped.mul_f64(jitter)
}

async fn finish(state: &AppState, worker: &str, event: &ChannelEvent, outcome: ChannelOutcome) {
    let label = match &outcome {
        ChannelOutcome::Done => "done",
        ChannelOutcome::Retry { .. } => "retry",
        ChannelOutcome::Failed { .. } => "failed",
    };
    metrics::counter!("moltbot_channel_events_finished_total", "platform" => platform_label(&event.platform), "outcome" => label)
        .increment(1);
    match &outcome {
        ChannelOutcome::Failed { error } => {
            tracing::warn!(event = %event.id, platform = %event.platform, account = %event.account, attempts = event.attempts, %error, "channel event failed")
        }
        ChannelOutcome::Retry { error, at_ms } => {
            tracing::info!(event = %event.id, platform = %event.platform, attempts = event.attempts, %error, retry_in_ms = at_ms - state.clock.now_millis(), "channel event will be retried")
        }
        ChannelOutcome::Done => {}
    }
    match state
        .store
        .finish_channel_event(&event.id, worker, &outcome, state.clock.now_millis())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(event = %event.id, "lost the claim on a channel event before finishing it (lock_timeout too short?)")
        }
        Err(e) => {
            tracing::warn!(event = %event.id, error = %e, "could not record a channel event's outcome; it will be retried")
        }
    }
}

fn platform_label(p: &str) -> &'static str {
    Platform::parse(p).map(Platform::as_str).unwrap_or("unknown")
}

/// Retry later, unless this was the last attempt.
fn retry_or_fail(
    state: &AppState,
    event: &ChannelEvent,
    error: String,
    at_least: Option<Duration>,
) -> ChannelOutcome {
    let s = &state.channels.settings;
    if event.attempts >= s.max_attempts {
        return ChannelOutcome::Failed {
            error: format!("{error} (after {} attempts)", event.attempts),
        };
    }
    let wait = backoff(s.retry_base, s.retry_max, event.attempts).max(at_least.unwrap_or_default());
    ChannelOutcome::Retry {
        at_ms: state.clock.now_millis() + wait.as_millis() as i64,
        error,
    }
}

async fn process(state: &AppState, worker: &str, event: ChannelEvent) {
    let message: InboundMessage = match serde_json::from_value(event.message.clone()) {
        Ok(m) => m,
        Err(e) => {
            let error = format!("stored message cannot be read: {e}");
            return finish(state, worker, &event, ChannelOutcome::Failed { error }).await;
        }
    };
    let account =
        Platform::parse(&event.platform).and_then(|p| state.channels.get(p, &event.account).cloned());
    let Some(account) = account else {
        // Another release (blue-green) may still know the account; keep it for a while.
        let error = format!(
            "account {}/{} is not configured on this replica",
            event.platform, event.account
        );
        let outcome = retry_or_fail(state, &event, error, None);
        return finish(state, worker, &event, outcome).await;
    };
    let lock_ms = state.channels.settings.lock_timeout.as_millis() as i64;

    let reply = match &event.reply {
        Some(r) => r.clone(),
        None => {
            let generated = keep_claim(
                state,
                worker,
                &event,
                lock_ms,
                // Boxed: the chat turn's future is large, and this one is held across the whole wait.
                Box::pin(generate(state, &account, &message, &event.chat_key, &event.id)),
            )
            .await;
            match generated {
                Ok((text, conversation)) => {
                    let now = state.clock.now_millis();
                    match state
                        .store
                        .save_channel_reply(&event.id, worker, &text, conversation.as_deref(), now)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(event = %event.id, "lost the claim while generating; another worker has it");
                            return;
                        }
                        Err(e) => {
                            let outcome = retry_or_fail(state, &event, format!("database: {e}"), None);
                            return finish(state, worker, &event, outcome).await;
                        }
                    }
                    text
                }
                Err(e) => {
                    let outcome = if chat_error_is_temporary(&e) {
                        retry_or_fail(state, &event, format!("model: {e}"), None)
                    } else {
                        ChannelOutcome::Failed {
                            error: format!("model: {e}"),
                        }
                    };
                    return finish(state, worker, &event, outcome).await;
                }
            }
        }
    };

    let chunks = chunk::split(&reply, account.adapter.chunk_limit());
    for (i, piece) in chunks.iter().enumerate().skip(event.chunks_sent as usize) {
        state
            .channels
            .limiter
            .acquire(&event.chat_key, account.replies_per_minute)
            .await;
        let key = format!("{}-{i}", event.id);
        let sent = match tokio::time::timeout(SEND_TIMEOUT, account.adapter.send(&message, piece, &key)).await
        {
            Ok(r) => r,
            Err(_) => Err(SendError::retryable(format!(
                "no answer from the platform in {SEND_TIMEOUT:?}"
            ))),
        };
        match sent {
            Ok(()) => {
                metrics::counter!("moltbot_channel_replies_sent_total", "platform" => account.platform.as_str()).increment(1);
                let now = state.clock.now_millis();
                if let Err(e) = state
                    .store
                    .set_channel_progress(&event.id, worker, i as u32 + 1, now + lock_ms, now)
                    .await
                {
                    // The chunk went out; if this is lost, the retry resends it (at least once).
                    tracing::warn!(event = %event.id, error = %e, "could not record a sent chunk");
                }
            }
            Err(SendError::Retryable { message, retry_after }) => {
                let outcome = retry_or_fail(state, &event, format!("send: {message}"), retry_after);
                return finish(state, worker, &event, outcome).await;
            }
            Err(SendError::Permanent(message)) => {
                let outcome = ChannelOutcome::Failed {
                    error: format!("send: {message}"),
                };
                return finish(state, worker, &event, outcome).await;
            }
        }
    }
    finish(state, worker, &event, ChannelOutcome::Done).await;
}

/// Run `work`, extending the event's claim every third of `lock_ms` so a slow model does not let
/// another worker take the event meanwhile.
async fn keep_claim<T>(
    state: &AppState,
    worker: &str,
    event: &ChannelEvent,
    lock_ms: i64,
    work: impl std::future::Future<Output = T>,
) -> T {
    let every = Duration::from_millis((lock_ms / 3).max(100) as u64);
    let heartbeat = async {
        loop {
            tokio::time::sleep(every).await;
            let now = state.clock.now_millis();
            let _ = state
                .store
                .set_channel_progress(&event.id, worker, event.chunks_sent, now + lock_ms, now)
                .await;
        }
    };
    tokio::select! {
        out = work => out,
        () = heartbeat => unreachable!("the heartbeat never ends"),
    }
}

fn chat_error_is_temporary(e: &ChatError) -> bool {
    match e {
        ChatError::Backend(b) => b.should_fall_back(),
        ChatError::Store(_) => true,
        _ => false,
    }
}

/// The conversation of a chat: the mapped one, or a new one (with the account's system prompt).
async fn conversation(
    state: &AppState,
    account: &Account,
    message: &InboundMessage,
    chat_key: &str,
) -> Result<String, ChatError> {
    if let Some(id) = state.store.channel_conversation(chat_key).await? {
        return Ok(id);
    }
    let mut metadata = Map::new();
    metadata.insert("channel".into(), json!(account.platform.as_str()));
    metadata.insert("account".into(), json!(account.name));
    metadata.insert("chat_id".into(), json!(message.chat_id));
    metadata.insert("chat_type".into(), json!(message.chat_type));
    if let Some(t) = &message.thread_id {
        metadata.insert("thread_id".into(), json!(t));
    }
    let now = state.clock.now_secs();
    let mut tx = state.store.begin().await?;
    let conv = tx.create_conversation(&account.owner(), metadata, now).await?;
    if let Some(prompt) = &account.system_prompt {
        let system = NewMessage::new(Role::System, prompt.clone(), MessageStatus::Completed);
        tx.append_messages(&conv.id, &[system], now).await?;
    }
    tx.commit().await?;
    let bound = state
        .store
        .bind_channel_conversation(chat_key, &conv.id, state.clock.now_millis())
        .await?;
    if bound != conv.id {
        // Another worker mapped the chat first (two replicas, first message): use theirs.
        let _ = state.store.delete_conversation(&account.owner(), &conv.id).await;
    }
    Ok(bound)
}

/// Answer `message` in its chat's conversation with the account's model; returns the reply text and
/// the conversation id. The turn is recorded like any API turn (messages, usage).
pub(crate) async fn generate(
    state: &AppState,
    account: &Account,
    message: &InboundMessage,
    chat_key: &str,
    request_id: &str,
) -> Result<(String, Option<String>), ChatError> {
    let model = match &account.model {
        Some(m) => m.clone(),
        None => state
            .chat
            .models()
            .iter()
            .next()
            .map(|r| r.name.clone())
            .ok_or_else(|| ChatError::ModelNotFound("(none configured)".into()))?,
    };
    let text = match (message.chat_type, &message.sender_name) {
        // A shared group conversation: the model needs to know who is speaking.
        (ChatType::Group, Some(name)) if !account.rules.per_user_in_groups => {
            format!("{name}: {}", message.text)
        }
        _ => message.text.clone(),
    };
    let request: ChatCompletionRequest = serde_json::from_value(json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
    }))
    .map_err(|e| ChatError::invalid("messages", e.to_string()))?;
    let mut attempt = 0;
    let turn: Turn = loop {
        attempt += 1;
        let conversation = conversation(state, account, message, chat_key).await?;
        let input = TurnInput {
            owner: account.owner(),
            request: request.clone(),
            conversation: Some(conversation.clone()),
            request_id: request_id.to_owned(),
            instructions: None,
            history: None,
            group: true,
        };
        match state.chat.start(input).await {
            Ok(t) => break t,
            Err(ChatError::ConversationNotFound(_)) if attempt == 1 => {
                // Deleted (e.g. by an operator): start the chat over in a new conversation.
                state
                    .store
                    .unbind_channel_conversation(chat_key, &conversation)
                    .await?;
            }
            Err(e) => return Err(e),
        }
    };
    let Turn {
        mut events,
        mut recorder,
        conversation_id,
        ..
    } = turn;
    let mut reply = ReplyCollector::default();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => {
                if let BackendEvent::Delta { content: Some(c), .. } = &ev {
                    recorder.push_text(c);
                }
                reply.absorb(&ev);
            }
            Err(e) => {
                recorder.fail().await;
                return Err(e.into());
            }
        }
    }
    let (outcome, _usage, _) = crate::routes::chat::outcome(&reply, &recorder);
    recorder.commit(outcome).await?;
    Ok((reply.content, conversation_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        for (attempt, nominal) in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)] {
            let d = backoff(base, max, attempt).as_secs_f64();
            assert!(d >= nominal * 0.8 && d <= nominal * 1.2, "attempt {attempt}: {d}");
        }
    }
}
