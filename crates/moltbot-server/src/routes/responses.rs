//! OpenAI's Responses API: `POST /v1/responses` (plain and streamed), `GET` and `DELETE
//! /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.
//!
//! A request is bridged onto the chat service (see `moltbot_core::responses`): the same backends,
//! fallback, limits, metrics and recording as Chat Completions. The acknowledgement rule is the same
//! too: the response (and its conversation items) is committed before `response.completed` or the
//! JSON body is sent.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use moltbot_api::{CreateResponseRequest, ErrorEnvelope, ResponseDeleted, ResponseItemList, ResponseObject};
use moltbot_core::assemble::ReplyCollector;
use moltbot_core::responses::{self, ResponseRecord, ResponseStreamer};
use moltbot_core::{BackendEvent, Turn, TurnRecorder};
use serde::Deserialize;
use serde_json::Value;

use super::chat::{CONVERSATION_HEADER, chat_meter, collect, outcome};
use crate::auth::limits::{self, ChatLease};
use crate::error::{ApiError, current_request_id};
use crate::extract::{Json, Query};
use crate::principal::Principal;
use crate::state::AppState;
use crate::telemetry::{ChatMeter, ChatSummary};

pub const COLLECTION: &str = "/v1/responses";
pub const ONE: &str = "/v1/responses/{response_id}";
pub const INPUT_ITEMS: &str = "/v1/responses/{response_id}/input_items";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(COLLECTION, post(create))
        .route(ONE, get(retrieve).delete(delete))
        .route(INPUT_ITEMS, get(input_items))
}

/// Create a model response.
#[utoipa::path(
    post,
    path = "/v1/responses",
    tag = "responses",
    request_body = CreateResponseRequest,
    responses(
        (status = 200, description = "A response, or an SSE stream of Responses events when `stream` is true", body = ResponseObject),
        (status = 400, description = "Invalid request", body = ErrorEnvelope),
        (status = 404, description = "Unknown model, conversation or previous response", body = ErrorEnvelope),
        (status = 502, description = "Upstream error", body = ErrorEnvelope),
        (status = 503, description = "Backend unavailable", body = ErrorEnvelope),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<CreateResponseRequest>,
) -> Result<Response, ApiError> {
    let request_id = current_request_id().unwrap_or_default();
    let prepared = responses::prepare(state.store.as_ref(), principal.owner(), &request, &request_id).await?;
    let stream = prepared.stream;
    let lease = match limits::begin_chat(&state.auth, &principal, request.max_output_tokens, stream).await {
        Ok(lease) => lease,
        Err(refused) => return Ok(refused),
    };
    let token_limits = lease.tokens;
    let mut meter = chat_meter(&state, &request.model, stream);
    let record = Record {
        owner: principal.owner().to_owned(),
        input: prepared.input,
        store: prepared.store,
    };
    let turn = match state.chat.start(prepared.turn).await {
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
    let base = responses::response_object(
        &moltbot_core::ids::new_id("resp"),
        turn.created,
        &turn.model,
        &request,
        turn.conversation_id.as_deref(),
    );
    let mut resp = if stream {
        stream_response(turn, base, record, meter, lease)
    } else {
        complete(turn, base, record, meter, lease).await?
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

/// What the stored response needs besides the object itself.
struct Record {
    owner: String,
    input: Vec<Value>,
    store: bool,
}

impl Record {
    fn stored(&self, object: &ResponseObject) -> Option<ResponseRecord> {
        self.store.then(|| ResponseRecord {
            id: object.id.clone(),
            owner: self.owner.clone(),
            previous_response_id: object.previous_response_id.clone(),
            conversation_id: object
                .conversation
                .as_ref()
                .and_then(|c| c.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            input: self.input.clone(),
            body: serde_json::to_value(object).unwrap_or(Value::Null),
            created_at: object.created_at,
        })
    }
}

/// The finished object: status, output, usage; and the outcome to commit (with the stored response).
fn finish(
    mut object: ResponseObject,
    output: Vec<Value>,
    reply: &ReplyCollector,
    recorder: &TurnRecorder,
    record: &Record,
) -> (ResponseObject, moltbot_core::TurnOutcome, moltbot_api::Usage) {
    let (mut outcome, usage, reason) = outcome(reply, recorder);
    let (status, incomplete) = responses::finish_status(&reason);
    object.status = status.into();
    object.incomplete_details = incomplete;
    object.output = output;
    object.usage = Some(responses::response_usage(&usage));
    outcome.response = record.stored(&object);
    (object, outcome, usage)
}

async fn complete(
    turn: Turn,
    base: ResponseObject,
    record: Record,
    mut meter: ChatMeter,
    lease: ChatLease,
) -> Result<Response, ApiError> {
    let Turn {
        mut events, recorder, ..
    } = turn;
    let (reply, recorder) = collect(&mut events, recorder, &mut meter).await?;
    let output = responses::output_items(&reply, None, &[]);
    let (object, outcome, usage) = finish(base, output, &reply, &recorder, &record);
    if let Err(e) = recorder.commit(outcome).await {
        let e = ApiError::from(e);
        meter.fail(&e);
        return Err(e);
    }
    meter.success(&usage);
    lease.settle(usage.total_tokens).await;
    Ok(axum::Json(object).into_response())
}

/// One SSE frame with the event's type as its `event:` name.
fn sse_frame(event: &Value) -> bytes::Bytes {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("message");
    let mut out = format!("event: {kind}\ndata: ").into_bytes();
    serde_json::to_writer(&mut out, event).unwrap_or_default();
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// Stream Responses events as deltas arrive; commit before `response.completed`. A client that goes
/// away leaves a truncated turn (as Chat Completions does) and no stored response.
fn stream_response(
    turn: Turn,
    base: ResponseObject,
    record: Record,
    mut meter: ChatMeter,
    mut lease: ChatLease,
) -> Response {
    let Turn {
        mut events,
        mut recorder,
        ..
    } = turn;
    let body = async_stream::stream! {
        let mut streamer = ResponseStreamer::new(base.clone());
        for e in streamer.start() {
            yield Ok::<_, std::io::Error>(sse_frame(&e));
        }
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
                        for e in streamer.delta(content.as_deref(), tool_calls.as_ref()) {
                            yield Ok(sse_frame(&e));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "backend failed mid-stream");
                    recorder.fail().await;
                    let err = ApiError::Backend(e);
                    meter.fail(&err);
                    let env = err.envelope(None);
                    let code = env.error.code.clone().unwrap_or_else(|| env.error.kind.clone());
                    for e in streamer.failed(&code, &env.error.message, env.error.param.as_deref()) {
                        yield Ok(sse_frame(&e));
                    }
                    return;
                }
            }
        }
        drop(events);
        let (closing, output) = streamer.finish();
        for e in closing {
            yield Ok(sse_frame(&e));
        }
        let (object, outcome, usage) = finish(base, output, &reply, &recorder, &record);
        if let Err(e) = recorder.commit(outcome).await {
            let err = ApiError::internal(format!("could not store the reply: {e}"));
            err.log();
            meter.fail(&err);
            let message = err.envelope(None).error.message;
            for e in streamer.failed("server_error", &message, None) {
                yield Ok(sse_frame(&e));
            }
            return;
        }
        meter.success(&usage);
        lease.settle(usage.total_tokens).await;
        yield Ok(sse_frame(&streamer.completed(&object)));
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

async fn load(state: &AppState, principal: &Principal, id: &str) -> Result<ResponseRecord, ApiError> {
    state
        .store
        .get_response(principal.owner(), id)
        .await?
        .ok_or_else(|| ApiError::response_not_found(id, "response_id"))
}

/// Retrieve a stored response.
#[utoipa::path(get, path = "/v1/responses/{response_id}", tag = "responses",
    params(("response_id" = String, Path)),
    responses((status = 200, body = ResponseObject), (status = 404, body = ErrorEnvelope)))]
pub async fn retrieve(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(load(&state, &principal, &id).await?.body))
}

/// Delete a stored response (its conversation items, if any, stay).
#[utoipa::path(delete, path = "/v1/responses/{response_id}", tag = "responses",
    params(("response_id" = String, Path)),
    responses((status = 200, body = ResponseDeleted), (status = 404, body = ErrorEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ResponseDeleted>, ApiError> {
    if !state.store.delete_response(principal.owner(), &id).await? {
        return Err(ApiError::response_not_found(&id, "response_id"));
    }
    Ok(axum::Json(ResponseDeleted {
        id,
        object: "response".into(),
        deleted: true,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct InputItemsParams {
    /// 1 to 100, default 20.
    limit: Option<u32>,
    /// `asc` or `desc` (default).
    order: Option<String>,
    /// An item id to list after.
    after: Option<String>,
}

/// The input items a response was given (not those of earlier responses or of its conversation).
#[utoipa::path(get, path = "/v1/responses/{response_id}/input_items", tag = "responses",
    params(("response_id" = String, Path), InputItemsParams),
    responses((status = 200, body = ResponseItemList), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn input_items(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(params): Query<InputItemsParams>,
) -> Result<axum::Json<ResponseItemList>, ApiError> {
    let limit = params.limit.unwrap_or(20) as usize;
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "`limit` must be between 1 and 100"));
    }
    let ascending = match params.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(ApiError::invalid("order", "`order` must be `asc` or `desc`")),
    };
    let mut items = load(&state, &principal, &id).await?.input;
    if !ascending {
        items.reverse();
    }
    let start = match &params.after {
        None => 0,
        Some(after) => {
            items
                .iter()
                .position(|i| i.get("id").and_then(Value::as_str) == Some(after.as_str()))
                .ok_or_else(|| ApiError::invalid("after", "`after` is not an item of this response"))?
                + 1
        }
    };
    let rest = items.get(start..).unwrap_or_default();
    let data: Vec<Value> = rest.iter().take(limit).cloned().collect();
    let id_of = |v: Option<&Value>| {
        v.and_then(|i| i.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(axum::Json(ResponseItemList {
        object: "list".into(),
        first_id: id_of(data.first()),
        last_id: id_of(data.last()),
        has_more: rest.len() > data.len(),
        data,
    }))
}
