//! `POST /v1/chat/completions`, streaming (SSE) and not.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use moltbot_api::{ChatCompletion, ChatCompletionRequest, ErrorEnvelope, Usage};
use moltbot_core::assemble::{ChunkAssembler, ReplyCollector};
use moltbot_core::{BackendEvent, Turn, TurnInput, TurnOutcome, TurnRecorder};

use crate::auth::limits::{self, ChatLease};
use crate::error::{ApiError, current_request_id};
use crate::extract::Json;
use crate::principal::Principal;
use crate::state::AppState;
use crate::telemetry::{ChatMeter, ChatSummary};

pub const PATH: &str = "/v1/chat/completions";
pub const CONVERSATION_HEADER: &str = "x-moltbot-conversation";

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, post(create))
}

/// Create a chat completion.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "chat",
    request_body = ChatCompletionRequest,
    params(("X-Moltbot-Conversation" = Option<String>, Header, description = "Continue a stored conversation")),
    responses(
        (status = 200, description = "A completion, or an SSE stream of chunks when `stream` is true", body = ChatCompletion),
        (status = 400, description = "Invalid request", body = ErrorEnvelope),
        (status = 404, description = "Unknown model or conversation", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 502, description = "Upstream error", body = ErrorEnvelope),
        (status = 503, description = "Backend unavailable", body = ErrorEnvelope),
        (status = 504, description = "Upstream timeout", body = ErrorEnvelope),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Json(request): Json<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let conversation = match (&request.conversation, headers.get(CONVERSATION_HEADER)) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(h)) => Some(
            h.to_str()
                .map_err(|_| ApiError::invalid(CONVERSATION_HEADER, "header must be a conversation id"))?
                .to_owned(),
        ),
        (None, None) => None,
    };
    let stream = request.stream.unwrap_or(false);
    let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    if request.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    let lease = match limits::begin_chat(
        &state.auth,
        &principal,
        request.max_completion_tokens.or(request.max_tokens),
        stream,
    )
    .await
    {
        Ok(lease) => lease,
        Err(refused) => return Ok(refused),
    };
    let token_limits = lease.tokens;
    if state.config.log.prompts {
        // Opt-in only (log.prompts = true): prompts are never logged otherwise.
        let messages = serde_json::to_string(&request.messages).unwrap_or_default();
        tracing::info!(moltbot.prompt = %messages, moltbot.model = %request.model, "prompt");
    }
    let mut meter = chat_meter(&state, &request.model, stream);
    let input = TurnInput {
        owner: principal.owner().to_owned(),
        request,
        conversation,
        request_id: current_request_id().unwrap_or_default(),
        instructions: None,
        history: None,
        group: true,
    };
    let turn = match state.chat.start(input).await {
        Ok(turn) => turn,
        Err(e) => {
            let e = ApiError::from(e);
            meter.fail(&e);
            return Err(e);
        }
    };
    meter.set_backend(&turn.backend);
    let summary = ChatSummary {
        model: turn.model.clone(),
        backend: turn.backend.clone(),
    };
    let conv_header = turn
        .conversation_id
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok());
    let mut resp = if stream {
        stream_response(turn, include_usage, meter, lease)
    } else {
        complete(turn, meter, lease).await?
    };
    if let Some(d) = &token_limits {
        limits::token_headers(resp.headers_mut(), d);
    }
    resp.extensions_mut().insert(summary);
    if let Some(v) = conv_header {
        resp.headers_mut().insert(CONVERSATION_HEADER, v);
    }
    Ok(resp)
}

/// How a finished reply is recorded: the backend's usage or an estimate, the finish reason, tool calls.
pub(crate) fn outcome(reply: &ReplyCollector, recorder: &TurnRecorder) -> (TurnOutcome, Usage, String) {
    let usage = recorder.usage_or_estimate(reply.usage.clone());
    let reason = reply.finish_reason.clone().unwrap_or_else(|| "stop".into());
    let outcome = TurnOutcome {
        finish_reason: Some(reason.clone()),
        usage: Some(usage.clone()),
        tool_calls: reply.tool_calls_value(),
        truncated: false,
        response: None,
    };
    (outcome, usage, reason)
}

/// The turn's metrics, labelled with a configured model name only (never a client-chosen string).
pub(crate) fn chat_meter(state: &AppState, model: &str, stream: bool) -> ChatMeter {
    let meter = match state.chat.models().get(model) {
        Some(route) => ChatMeter::new(&route.name, route.backend.name(), stream),
        None => ChatMeter::new("<unknown>", "none", stream),
    };
    meter.with_live(state.telemetry.live.clone())
}

/// Read a non-streamed generation to its end. A backend error marks the turn failed and is returned.
pub(crate) async fn collect(
    events: &mut moltbot_core::EventStream,
    mut recorder: TurnRecorder,
    meter: &mut ChatMeter,
) -> Result<(ReplyCollector, TurnRecorder), ApiError> {
    let mut reply = ReplyCollector::default();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => {
                if let BackendEvent::Delta { content, .. } = &ev {
                    meter.delta();
                    if let Some(c) = content {
                        recorder.push_text(c);
                    }
                }
                reply.absorb(&ev);
            }
            Err(e) => {
                recorder.fail().await;
                let e = ApiError::Backend(e);
                meter.fail(&e);
                return Err(e);
            }
        }
    }
    Ok((reply, recorder))
}

/// Collect the whole reply, store it, then answer.
async fn complete(turn: Turn, mut meter: ChatMeter, lease: ChatLease) -> Result<Response, ApiError> {
    let Turn {
        id,
        created,
        model,
        mut events,
        recorder,
        ..
    } = turn;
    let (reply, recorder) = collect(&mut events, recorder, &mut meter).await?;
    let (outcome, usage, _) = outcome(&reply, &recorder);
    if let Err(e) = recorder.commit(outcome).await {
        let e = ApiError::from(e);
        meter.fail(&e);
        return Err(e);
    }
    meter.success(&usage);
    lease.settle(usage.total_tokens).await;
    Ok(axum::Json(reply.into_completion(&id, created, &model, usage)).into_response())
}

fn sse_event(value: &impl serde::Serialize) -> bytes::Bytes {
    let mut out = b"data: ".to_vec();
    // Serialising our own types cannot fail.
    serde_json::to_writer(&mut out, value).unwrap_or_default();
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// Stream chunks as they arrive. The reply is committed before the finish chunk, the usage chunk and
/// `[DONE]` are sent; if the client goes away, the recorder stores what it received, marked truncated.
fn stream_response(turn: Turn, include_usage: bool, mut meter: ChatMeter, mut lease: ChatLease) -> Response {
    let Turn {
        id,
        created,
        model,
        mut events,
        mut recorder,
        ..
    } = turn;
    let request_id = current_request_id();
    let body = async_stream::stream! {
        let mut asm = ChunkAssembler::new(&id, created, &model, include_usage);
        let mut reply = ReplyCollector::default();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) => {
                    reply.absorb(&ev);
                    if let BackendEvent::Delta { content, tool_calls } = &ev {
                        meter.delta();
                        if let Some(c) = content {
                            recorder.push_text(c);
                            lease.delivered(c);
                        }
                        let mut out = Vec::with_capacity(160 + content.as_ref().map_or(0, String::len));
                        out.extend_from_slice(b"data: ");
                        asm.write_delta(content.as_deref(), tool_calls.as_ref(), &mut out);
                        out.extend_from_slice(b"\n\n");
                        yield Ok::<_, std::io::Error>(bytes::Bytes::from(out));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "backend failed mid-stream");
                    recorder.fail().await;
                    let err = ApiError::Backend(e);
                    meter.fail(&err);
                    yield Ok(sse_event(&err.envelope(request_id.as_deref())));
                    return;
                }
            }
        }
        drop(events);
        let (outcome, usage, reason) = outcome(&reply, &recorder);
        if let Err(e) = recorder.commit(outcome).await {
            let err = ApiError::internal(format!("could not store the reply: {e}"));
            err.log();
            meter.fail(&err);
            yield Ok(sse_event(&err.envelope(request_id.as_deref())));
            return;
        }
        meter.success(&usage);
        lease.settle(usage.total_tokens).await;
        yield Ok(sse_event(&asm.finish(&reason)));
        if let Some(chunk) = asm.usage(&usage) {
            yield Ok(sse_event(&chunk));
        }
        yield Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n"));
    };
    let body = Body::from_stream(body);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}
