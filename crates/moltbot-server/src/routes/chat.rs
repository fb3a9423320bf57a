//! `POST /v1/chat/completions`, streaming (SSE) and not.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use moltbot_api::{ChatCompletion, ChatCompletionRequest, ErrorEnvelope};
use moltbot_core::assemble::{ChunkAssembler, ReplyCollector};
use moltbot_core::{BackendEvent, Turn, TurnInput, TurnOutcome};

use crate::error::{ApiError, current_request_id};
use crate::extract::Json;
use crate::principal::Principal;
use crate::state::AppState;

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
    let input = TurnInput {
        owner: principal.owner().to_owned(),
        request,
        conversation,
        request_id: current_request_id().unwrap_or_default(),
    };
    let turn = state.chat.start(input).await?;
    let conv_header = turn
        .conversation_id
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok());
    let mut resp = if stream {
        stream_response(turn, include_usage)
    } else {
        complete(turn).await?
    };
    if let Some(v) = conv_header {
        resp.headers_mut().insert(CONVERSATION_HEADER, v);
    }
    Ok(resp)
}

/// Collect the whole reply, store it, then answer.
async fn complete(turn: Turn) -> Result<Response, ApiError> {
    let Turn {
        id,
        created,
        model,
        mut events,
        mut recorder,
        ..
    } = turn;
    let mut reply = ReplyCollector::default();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(BackendEvent::Delta { content, tool_calls }) => {
                if let Some(c) = content {
                    recorder.push_text(&c);
                    reply.content.push_str(&c);
                }
                if let Some(t) = tool_calls {
                    reply.push_tool_calls(&t);
                }
            }
            Ok(BackendEvent::Finish { reason }) => reply.finish_reason = Some(reason),
            Ok(BackendEvent::Usage(u)) => reply.usage = Some(u),
            Err(e) => {
                recorder.fail().await;
                return Err(ApiError::Backend(e));
            }
        }
    }
    let usage = recorder.usage_or_estimate(reply.usage.clone());
    recorder
        .commit(TurnOutcome {
            finish_reason: reply.finish_reason.clone(),
            usage: Some(usage.clone()),
            tool_calls: reply.tool_calls_value(),
            truncated: false,
        })
        .await?;
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
fn stream_response(turn: Turn, include_usage: bool) -> Response {
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
                Ok(BackendEvent::Delta { content, tool_calls }) => {
                    if let Some(c) = &content {
                        recorder.push_text(c);
                    }
                    if let Some(t) = &tool_calls {
                        reply.push_tool_calls(t);
                    }
                    yield Ok::<_, std::io::Error>(sse_event(&asm.delta(content, tool_calls)));
                }
                Ok(BackendEvent::Finish { reason }) => reply.finish_reason = Some(reason),
                Ok(BackendEvent::Usage(u)) => reply.usage = Some(u),
                Err(e) => {
                    tracing::warn!(error = %e, "backend failed mid-stream");
                    recorder.fail().await;
                    let err = ApiError::Backend(e);
                    yield Ok(sse_event(&err.envelope(request_id.as_deref())));
                    return;
                }
            }
        }
        drop(events);
        let usage = recorder.usage_or_estimate(reply.usage.clone());
        let reason = reply.finish_reason.clone().unwrap_or_else(|| "stop".into());
        let outcome = TurnOutcome {
            finish_reason: Some(reason.clone()),
            usage: Some(usage.clone()),
            tool_calls: reply.tool_calls_value(),
            truncated: false,
        };
        if let Err(e) = recorder.commit(outcome).await {
            let err = ApiError::internal(format!("could not store the reply: {e}"));
            err.log();
            yield Ok(sse_event(&err.envelope(request_id.as_deref())));
            return;
        }
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
