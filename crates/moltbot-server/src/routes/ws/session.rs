//! One WebSocket connection.
//!
//! * The connection task reads client frames, answers `ping`, starts each `chat` as its own task (at
//!   most [`MAX_CHATS`] at once) and routes `cancel` to it.
//! * Every frame to the client goes through [`Outbox::send`], which awaits the socket (the frame is
//!   flushed to the kernel) — there is no queue. A chat task therefore does not poll its upstream
//!   stream while its previous delta is waiting for a slow reader, and TCP backpressure reaches the
//!   upstream. A send blocked longer than `server.ws_send_timeout` closes the connection (its chats are
//!   cancelled and stored as truncated).
//! * Liveness: a WebSocket ping every `server.ws_ping_interval`; no frame from the client for
//!   `server.ws_idle_timeout` closes with 1000; shutdown (draining) closes with 1001.
//! * A chat ends with exactly one `done` or `error` frame carrying its id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use axum::response::Response;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use moltbot_api::{ChatCompletionRequest, ChatMessage, ErrorBody, ErrorEnvelope};
use moltbot_core::assemble::ReplyCollector;
use moltbot_core::{BackendEvent, ChatError, Principal, TurnInput, TurnOutcome};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frames::{self, ChatFrame, ClientFrame, FrameError, ServerFrame};
use crate::auth::limits;
use crate::error::ApiError;
use crate::routes::chat::{chat_meter, outcome};
use crate::state::AppState;

/// Chats one socket may run at once.
pub const MAX_CHATS: usize = 4;
/// How long running chats get to stop (and store what they delivered) when the socket closes.
const WIND_DOWN: Duration = Duration::from_secs(2);
/// How long the close frame may take to send.
const CLOSE_SEND: Duration = Duration::from_secs(1);

/// Who is connected, decided at the upgrade.
pub struct Session {
    pub state: AppState,
    pub principal: Principal,
    /// When the credential expires (an access token's `exp`): later chats are refused and the socket
    /// closes.
    pub valid_until: Option<i64>,
}

/// The writing half of the socket, shared by the connection and its chats.
struct Outbox {
    sink: tokio::sync::Mutex<SplitSink<WebSocket, Message>>,
    send_timeout: Duration,
    /// Cancelled when the connection must close now (slow or broken client, credential revoked).
    closed: CancellationToken,
    /// The close frame to send, if any, when `closed` was cancelled.
    close: std::sync::Mutex<Option<CloseFrame>>,
}

/// The connection is closing: nothing more can be sent.
#[derive(Debug)]
struct Closed;

impl Outbox {
    /// Close the connection (the first reason wins); `None` for a broken socket.
    fn shut(&self, frame: Option<(u16, &'static str)>) {
        let mut close = self
            .close
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.closed.is_cancelled() {
            *close = frame.map(|(code, reason)| CloseFrame {
                code,
                reason: reason.into(),
            });
        }
        self.closed.cancel();
    }

    /// Send one message and wait until the socket took it.
    async fn send_message(&self, msg: Message) -> Result<(), Closed> {
        if self.closed.is_cancelled() {
            return Err(Closed);
        }
        let send = async {
            let mut sink = self.sink.lock().await;
            sink.send(msg).await
        };
        tokio::select! {
            () = self.closed.cancelled() => Err(Closed),
            sent = tokio::time::timeout(self.send_timeout, send) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "WebSocket send failed");
                    self.shut(None);
                    Err(Closed)
                }
                Err(_) => {
                    tracing::warn!(timeout = ?self.send_timeout,
                        "WebSocket client too slow: a send was blocked too long; closing");
                    self.shut(Some((close_code::POLICY, "client too slow")));
                    Err(Closed)
                }
            },
        }
    }

    async fn send(&self, frame: &ServerFrame<'_>) -> Result<(), Closed> {
        self.send_message(Message::Text(frame.to_text().into())).await
    }

    /// Send the close frame, bypassing `closed` (best effort, bounded).
    async fn close(&self, frame: CloseFrame) {
        let _ = tokio::time::timeout(CLOSE_SEND, async {
            let mut sink = self.sink.lock().await;
            let _ = sink.send(Message::Close(Some(frame))).await;
        })
        .await;
    }
}

/// How the connection loop ended.
enum End {
    /// Send this close frame after the chats stopped.
    Close(u16, &'static str),
    /// The outbox was shut (its close frame, if any, is stored there).
    Shut,
    /// The client closed or the connection broke.
    Gone,
}

/// Serve one upgraded socket until it closes.
pub async fn run(socket: WebSocket, session: Session) {
    let cfg = session.state.config.server.clone();
    let (sink, mut stream) = socket.split();
    let out = Arc::new(Outbox {
        sink: tokio::sync::Mutex::new(sink),
        send_timeout: cfg.ws_send_timeout,
        closed: CancellationToken::new(),
        close: std::sync::Mutex::new(None),
    });
    let session = Arc::new(session);
    let drain = session.state.readiness.drain_token();
    let all_chats = CancellationToken::new();
    let mut chats = Chats {
        running: HashMap::new(),
        tasks: JoinSet::new(),
        ids: HashMap::new(),
    };

    let models = session
        .state
        .chat
        .models()
        .iter()
        .map(|r| r.name.clone())
        .collect();
    if out.send(&ServerFrame::Ready { models }).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval_at(Instant::now() + cfg.ws_ping_interval, cfg.ws_ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = tokio::time::sleep(cfg.ws_idle_timeout);
    tokio::pin!(idle);

    let end = loop {
        tokio::select! {
            () = drain.cancelled() => break End::Close(close_code::AWAY, "server shutting down"),
            () = out.closed.cancelled() => break End::Shut,
            () = &mut idle => break End::Close(close_code::NORMAL, "idle timeout"),
            Some(finished) = chats.tasks.join_next_with_id() => {
                let task = match finished {
                    Ok((task, ())) => task,
                    Err(e) => e.id(),
                };
                if let Some(id) = chats.ids.remove(&task) {
                    chats.running.remove(&id);
                }
            }
            _ = ping.tick() => {
                if out.send_message(Message::Ping(bytes::Bytes::new())).await.is_err() {
                    break End::Shut;
                }
            }
            msg = stream.next() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket read failed");
                        break End::Gone;
                    }
                    None => break End::Gone,
                };
                idle.as_mut().reset(Instant::now() + cfg.ws_idle_timeout);
                let handled = match msg {
                    Message::Text(text) => {
                        handle_text(text.as_str(), &session, &out, &mut chats, &all_chats).await
                    }
                    Message::Binary(_) => {
                        let err = ApiError::Invalid {
                            param: None,
                            message: "Binary frames are not supported: send JSON text frames.".into(),
                            code: Some("unsupported_frame"),
                        };
                        out.send(&ServerFrame::error(None, &err, None)).await
                    }
                    Message::Close(_) => break End::Gone,
                    Message::Ping(_) | Message::Pong(_) => Ok(()),
                };
                if handled.is_err() {
                    break End::Shut;
                }
            }
        }
    };

    // Stop the chats: each stores what it delivered (truncated) and says `done` if it still can.
    all_chats.cancel();
    let stopped = tokio::time::timeout(WIND_DOWN, async {
        while chats.tasks.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        chats.tasks.shutdown().await;
    }
    let frame = match end {
        End::Close(code, reason) => Some(CloseFrame {
            code,
            reason: reason.into(),
        }),
        End::Shut => out
            .close
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(),
        End::Gone => None,
    };
    if let Some(frame) = frame {
        out.close(frame).await;
    }
}

/// The chats of one socket.
struct Chats {
    /// Client chat id → its cancel token.
    running: HashMap<String, CancellationToken>,
    tasks: JoinSet<()>,
    ids: HashMap<tokio::task::Id, String>,
}

async fn handle_text(
    text: &str,
    session: &Arc<Session>,
    out: &Arc<Outbox>,
    chats: &mut Chats,
    all_chats: &CancellationToken,
) -> Result<(), Closed> {
    match frames::parse(text) {
        Err(FrameError { id, error }) => out.send(&ServerFrame::error(id.as_deref(), &error, None)).await,
        Ok(ClientFrame::Ping) => out.send(&ServerFrame::Pong).await,
        Ok(ClientFrame::Cancel(c)) => {
            // An unknown id is a chat that has already finished: nothing to do.
            if let Some(token) = chats.running.get(&c.id) {
                token.cancel();
            }
            Ok(())
        }
        Ok(ClientFrame::Chat(chat)) => {
            let refused = if chats.running.contains_key(&chat.id) {
                Some(ApiError::Invalid {
                    param: Some("id".into()),
                    message: format!("A chat with id '{}' is still running on this socket.", chat.id),
                    code: Some("duplicate_id"),
                })
            } else if chats.running.len() >= MAX_CHATS {
                Some(ApiError::TooManyRequests {
                    kind: "requests",
                    message: format!(
                        "Too many chats running on this socket: the limit is {MAX_CHATS}. Wait for one to finish."
                    ),
                    code: "too_many_chats",
                    retry_after: None,
                    retry: true,
                })
            } else {
                None
            };
            if let Some(err) = refused {
                return out.send(&ServerFrame::error(Some(&chat.id), &err, None)).await;
            }
            let token = all_chats.child_token();
            let id = chat.id.clone();
            let handle = chats
                .tasks
                .spawn(run_chat(session.clone(), out.clone(), chat, token.clone()));
            chats.ids.insert(handle.id(), id.clone());
            chats.running.insert(id, token);
            Ok(())
        }
    }
}

/// Why a chat stopped early.
enum Stop {
    Api(ApiError),
    /// A limit refused it (the response built by `auth::limits`).
    Refused(Response),
    /// The credential is no longer valid: report, then close the socket.
    Revoked(ApiError),
    Closed,
}

impl From<Closed> for Stop {
    fn from(_: Closed) -> Self {
        Stop::Closed
    }
}

async fn run_chat(session: Arc<Session>, out: Arc<Outbox>, chat: ChatFrame, cancel: CancellationToken) {
    let id = chat.id.clone();
    let request_id = moltbot_core::ids::request_id();
    let stopped = chat_turn(&session, &out, chat, &cancel, &request_id).await;
    let frame_for = |err: &ApiError| ServerFrame::error(Some(&id), err, Some(&request_id)).to_text();
    match stopped {
        Ok(()) | Err(Stop::Closed) => {}
        Err(Stop::Api(err)) => {
            let _ = out.send_message(Message::Text(frame_for(&err).into())).await;
        }
        Err(Stop::Revoked(err)) => {
            let _ = out.send_message(Message::Text(frame_for(&err).into())).await;
            out.shut(Some((close_code::POLICY, "credential no longer valid")));
        }
        Err(Stop::Refused(resp)) => {
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            let error = serde_json::from_slice::<ErrorEnvelope>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| ErrorBody {
                    message: "The request was refused by a rate limit.".into(),
                    kind: "requests".into(),
                    param: None,
                    code: Some("rate_limit_exceeded".into()),
                });
            let frame = ServerFrame::Error {
                id: Some(&id),
                status,
                error,
            };
            let _ = out.send(&frame).await;
        }
    }
}

/// The key behind the socket must still be active and the access token unexpired.
async fn still_valid(session: &Session) -> Result<(), Stop> {
    let auth = &session.state.auth;
    let now = auth.clock().now_secs();
    if session.valid_until.is_some_and(|t| t <= now) {
        return Err(Stop::Revoked(ApiError::Unauthorized {
            message: "The access token of this WebSocket has expired; reconnect with a new one.".into(),
            code: "invalid_token",
        }));
    }
    match auth.key_by_id(&session.principal.key_id).await {
        Ok(Some(key)) if key.is_active(now) => Ok(()),
        Ok(_) => Err(Stop::Revoked(ApiError::Unauthorized {
            message: "The API key of this WebSocket has been revoked or has expired.".into(),
            code: "invalid_api_key",
        })),
        Err(e) => Err(Stop::Api(e.into())),
    }
}

/// One chat: limits, the stored conversation, the streamed reply, its record.
async fn chat_turn(
    session: &Session,
    out: &Outbox,
    chat: ChatFrame,
    cancel: &CancellationToken,
    request_id: &str,
) -> Result<(), Stop> {
    let state = &session.state;
    let principal = &session.principal;
    still_valid(session).await?;
    // The same limits as a streamed POST /v1/chat/completions: requests per minute, then concurrent
    // streams, the daily quota and tokens per minute.
    limits::check_requests(&state.auth, principal)
        .await
        .map_err(Stop::Refused)?;
    let mut lease = limits::begin_chat(&state.auth, principal, chat.max_tokens, true)
        .await
        .map_err(Stop::Refused)?;
    if state.chat.models().get(&chat.model).is_none() {
        return Err(Stop::Api(ChatError::ModelNotFound(chat.model).into()));
    }
    let owner = principal.owner().to_owned();
    // A chat without a conversation starts one, so the client can continue it.
    let (conversation, created) = match chat.conversation {
        Some(c) => (c, false),
        None => {
            let now = state.clock.now_secs();
            let mut tx = state.store.begin().await.map_err(|e| Stop::Api(e.into()))?;
            let conv = tx
                .create_conversation(&owner, serde_json::Map::new(), now)
                .await
                .map_err(|e| Stop::Api(e.into()))?;
            tx.commit().await.map_err(|e| Stop::Api(e.into()))?;
            (conv.id, true)
        }
    };
    if state.config.log.prompts {
        // Opt-in only (log.prompts = true): prompts are never logged otherwise.
        tracing::info!(moltbot.prompt = %chat.content, moltbot.model = %chat.model, "prompt");
    }
    let request = ChatCompletionRequest {
        model: chat.model.clone(),
        messages: vec![ChatMessage::text("user", chat.content)],
        stream: Some(true),
        max_tokens: chat.max_tokens,
        temperature: chat.temperature,
        ..Default::default()
    };
    let mut meter = chat_meter(state, &chat.model, true);
    let input = TurnInput {
        owner: owner.clone(),
        request,
        conversation: Some(conversation.clone()),
        request_id: request_id.to_owned(),
        instructions: None,
        history: None,
        group: true,
    };
    let id = chat.id.as_str();
    let started = tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        started = state.chat.start(input) => Some(started),
    };
    let turn = match started {
        None => {
            out.send(&ServerFrame::Done {
                id,
                finish_reason: "cancelled",
                usage: None,
            })
            .await?;
            return Ok(());
        }
        Some(Err(e)) => {
            let err = ApiError::from(e);
            meter.fail(&err);
            if created {
                // Never announced to the client: do not leave an empty conversation behind.
                if let Err(e) = state.store.delete_conversation(&owner, &conversation).await {
                    tracing::warn!(error = %e, "could not remove a conversation whose first turn failed");
                }
            }
            return Err(Stop::Api(err));
        }
        Some(Ok(turn)) => turn,
    };
    meter.set_backend(&turn.backend);
    out.send(&ServerFrame::Start {
        id,
        conversation: &conversation,
        model: &turn.model,
    })
    .await?;

    let moltbot_core::Turn {
        mut events,
        mut recorder,
        ..
    } = turn;
    let mut reply = ReplyCollector::default();
    let cancelled = loop {
        let event = tokio::select! {
            biased;
            () = cancel.cancelled() => break true,
            event = events.next() => event,
        };
        match event {
            None => break false,
            Some(Ok(event)) => {
                reply.absorb(&event);
                if let BackendEvent::Delta {
                    content: Some(text), ..
                } = &event
                    && !text.is_empty()
                {
                    meter.delta();
                    // Awaits the socket: the upstream is not polled while a slow client catches up.
                    // If the connection closes here, the recorder's `Drop` stores what was delivered.
                    out.send(&ServerFrame::Delta { id, content: text }).await?;
                    recorder.push_text(text);
                    lease.delivered(text);
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "backend failed mid-stream");
                recorder.fail().await;
                let err = ApiError::Backend(e);
                meter.fail(&err);
                return Err(Stop::Api(err));
            }
        }
    };
    // Closes the upstream request at once.
    drop(events);
    if cancelled {
        // Exactly the delivered prefix, marked truncated, committed before `done` is sent.
        let usage = recorder.usage_or_estimate(None);
        let outcome = TurnOutcome {
            usage: Some(usage.clone()),
            truncated: true,
            ..TurnOutcome::default()
        };
        if let Err(e) = recorder.commit(outcome).await {
            tracing::error!(error = %e, "could not record a cancelled turn");
        }
        lease.settle(usage.total_tokens).await;
        out.send(&ServerFrame::Done {
            id,
            finish_reason: "cancelled",
            usage: Some(&usage),
        })
        .await?;
        return Ok(());
    }
    let (outcome, usage, reason) = outcome(&reply, &recorder);
    if let Err(e) = recorder.commit(outcome).await {
        let err = ApiError::internal(format!("could not store the reply: {e}"));
        meter.fail(&err);
        return Err(Stop::Api(err));
    }
    meter.success(&usage);
    lease.settle(usage.total_tokens).await;
    out.send(&ServerFrame::Done {
        id,
        finish_reason: &reason,
        usage: Some(&usage),
    })
    .await?;
    Ok(())
}
