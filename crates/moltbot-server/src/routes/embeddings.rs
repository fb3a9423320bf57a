//! `POST /v1/embeddings`: one vector per input from the model's backend (remote: the upstream's
//! `/embeddings`; local: a GGUF embedding model, see `moltbot_engine::embed`).
//!
//! Per-key limits apply as for chat (requests per minute, tokens per minute and the daily quota, debited
//! with the prompt tokens); every answered request is recorded in the usage table (`completion_tokens`
//! 0), so the console and the quotas see it. No fallback: another model's vectors live in another
//! space. Backends always return floats; `base64` (little-endian `f32`s, as OpenAI sends them) is
//! encoded here.

use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use moltbot_api::{
    Embedding, EmbeddingInput, EmbeddingList, EmbeddingRequest, EmbeddingUsage, EmbeddingVector,
    EncodingFormat, ErrorEnvelope,
};
use moltbot_core::{BackendError, ChatError, EmbedInput, EmbedRequest, ModelRoute, UsageRecord};

use crate::auth::limits;
use crate::error::{ApiError, current_request_id};
use crate::extract::Json;
use crate::principal::Principal;
use crate::state::AppState;
use crate::telemetry::{ChatSummary, TOKENS};

pub const PATH: &str = "/v1/embeddings";
/// Most inputs in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, post(create))
}

/// Create embeddings.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "embeddings",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "One embedding per input, in input order", body = EmbeddingList),
        (status = 400, description = "Invalid request, an input over the model's context, or a model without embeddings", body = ErrorEnvelope),
        (status = 404, description = "Unknown model", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 429, description = "Rate limit or quota", body = ErrorEnvelope),
        (status = 502, description = "Upstream error", body = ErrorEnvelope),
        (status = 503, description = "Backend unavailable or at capacity", body = ErrorEnvelope),
        (status = 504, description = "Upstream timeout", body = ErrorEnvelope),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let inputs = validate(&request)?;
    let route = state
        .chat
        .models()
        .get(&request.model)
        .cloned()
        .ok_or_else(|| ApiError::from(ChatError::ModelNotFound(request.model.clone())))?;
    // Each input must fit the model's context (counted with the model's tokenizer); the local engine
    // checks again with its own vocabulary, a remote upstream would refuse it less clearly.
    for (i, input) in inputs.iter().enumerate() {
        let tokens = match input {
            EmbedInput::Text(t) => route.tokens.count_text(t),
            EmbedInput::Tokens(t) => t.len(),
        };
        if tokens > route.context_window as usize {
            return Err(ApiError::ContextLength {
                param: Some("input".into()),
                message: format!(
                    "This model's maximum context length is {} tokens, however you requested {tokens} tokens \
                     in input[{i}]. Please reduce the length of the input.",
                    route.context_window
                ),
            });
        }
    }
    let lease = match limits::begin_chat(&state.auth, &principal, None, false).await {
        Ok(lease) => lease,
        Err(refused) => return Ok(refused),
    };
    let token_limits = lease.tokens;
    let format = request.encoding_format.unwrap_or_default();
    let count = inputs.len();
    let request_id = current_request_id().unwrap_or_default();
    let backend = route.backend.name().to_owned();
    let started = Instant::now();
    let result = route
        .backend
        .embed(EmbedRequest {
            model: route.upstream_model.clone(),
            inputs,
            dimensions: request.dimensions,
            user: request.user,
            extra: request.extra,
            request_id: request_id.clone(),
        })
        .await
        .and_then(|out| {
            if out.vectors.len() == count {
                Ok(out)
            } else {
                Err(BackendError::Protocol(format!(
                    "{} vectors for {count} inputs",
                    out.vectors.len()
                )))
            }
        });
    let live = &state.telemetry.live;
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            if e.should_fall_back() {
                live.backends
                    .record(&backend, started.elapsed(), Some(e.to_string()));
                let usage = usage(&state, &principal, &route, &request_id, 0, started, "error");
                state.store.record_usage(usage);
            }
            return Err(match e {
                BackendError::ContextLength(message) => ApiError::ContextLength {
                    param: Some("input".into()),
                    message,
                },
                e => ApiError::Backend(e),
            });
        }
    };
    live.backends.record(&backend, started.elapsed(), None);
    let usage = usage(
        &state,
        &principal,
        &route,
        &request_id,
        out.prompt_tokens,
        started,
        "ok",
    );
    state.store.record_usage(usage);
    metrics::counter!(TOKENS, "model" => route.name.clone(), "kind" => "prompt")
        .increment(u64::from(out.prompt_tokens));
    live.series.record_tokens(u64::from(out.prompt_tokens));
    lease.settle(out.prompt_tokens).await;
    let data = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| Embedding {
            object: "embedding".into(),
            index: i as u32,
            embedding: match format {
                EncodingFormat::Float => EmbeddingVector::Float(v),
                EncodingFormat::Base64 => EmbeddingVector::Base64(base64_f32(&v)),
            },
        })
        .collect();
    let list = EmbeddingList {
        object: "list".into(),
        data,
        model: route.name.clone(),
        usage: EmbeddingUsage {
            prompt_tokens: out.prompt_tokens,
            total_tokens: out.prompt_tokens,
        },
    };
    let mut resp = axum::Json(list).into_response();
    if let Some(d) = &token_limits {
        limits::token_headers(resp.headers_mut(), d);
    }
    resp.extensions_mut().insert(ChatSummary {
        model: route.name,
        backend,
    });
    Ok(resp)
}

/// The inputs, or a 400 naming the field: no inputs, more than [`MAX_INPUTS`], an empty string or token
/// list, `dimensions` 0.
fn validate(request: &EmbeddingRequest) -> Result<Vec<EmbedInput>, ApiError> {
    let n = request.input.len();
    if n == 0 {
        return Err(ApiError::invalid("input", "'input' must not be empty."));
    }
    if n > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!("'input' has {n} items; at most {MAX_INPUTS} are allowed per request."),
        ));
    }
    if request.dimensions == Some(0) {
        return Err(ApiError::invalid(
            "dimensions",
            "'dimensions' must be at least 1.",
        ));
    }
    let inputs: Vec<EmbedInput> = match &request.input {
        EmbeddingInput::Text(t) => vec![EmbedInput::Text(t.clone())],
        EmbeddingInput::Texts(t) => t.iter().cloned().map(EmbedInput::Text).collect(),
        EmbeddingInput::Tokens(t) => vec![EmbedInput::Tokens(t.clone())],
        EmbeddingInput::TokenLists(t) => t.iter().cloned().map(EmbedInput::Tokens).collect(),
    };
    let empty = inputs.iter().position(|i| match i {
        EmbedInput::Text(t) => t.is_empty(),
        EmbedInput::Tokens(t) => t.is_empty(),
    });
    if let Some(i) = empty {
        let what = if n == 1
            && !matches!(
                request.input,
                EmbeddingInput::Texts(_) | EmbeddingInput::TokenLists(_)
            ) {
            "'input'".to_owned()
        } else {
            format!("input[{i}]")
        };
        return Err(ApiError::invalid(
            "input",
            format!("{what} is empty; every input needs at least one character or token."),
        ));
    }
    Ok(inputs)
}

fn usage(
    state: &AppState,
    principal: &Principal,
    route: &ModelRoute,
    request_id: &str,
    prompt_tokens: u32,
    started: Instant,
    outcome: &str,
) -> UsageRecord {
    UsageRecord {
        id: moltbot_core::ids::usage_id(),
        owner: principal.owner().to_owned(),
        conversation_id: None,
        request_id: Some(request_id.to_owned()).filter(|r| !r.is_empty()),
        model: route.name.clone(),
        backend: Some(route.backend.name().to_owned()),
        prompt_tokens,
        completion_tokens: 0,
        latency_ms: started.elapsed().as_millis() as i64,
        outcome: outcome.into(),
        created_at: state.clock.now_secs(),
    }
}

/// OpenAI's base64 encoding: the vector's `f32`s, little-endian, back to back.
pub fn base64_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        // 1.0 = 0x3f800000, -2.0 = 0xc0000000.
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(base64_f32(&[]), "");
    }

    fn request(input: EmbeddingInput) -> EmbeddingRequest {
        EmbeddingRequest {
            model: "m".into(),
            input,
            ..EmbeddingRequest::default()
        }
    }

    fn param(r: &EmbeddingRequest) -> Option<String> {
        match validate(r) {
            Err(ApiError::Invalid { param, .. }) => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_inputs_name_the_field() {
        assert_eq!(
            param(&request(EmbeddingInput::Texts(vec![]))).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(&request(EmbeddingInput::Text(String::new()))).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(&request(EmbeddingInput::Texts(vec!["a".into(), String::new()]))).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(&request(EmbeddingInput::TokenLists(vec![vec![]]))).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(&request(EmbeddingInput::Texts(vec!["a".into(); MAX_INPUTS + 1]))).as_deref(),
            Some("input")
        );
        let mut r = request(EmbeddingInput::Text("a".into()));
        r.dimensions = Some(0);
        assert_eq!(param(&r).as_deref(), Some("dimensions"));
        let ok = validate(&request(EmbeddingInput::Texts(vec!["a".into(); MAX_INPUTS]))).unwrap();
        assert_eq!(ok.len(), MAX_INPUTS);
        assert_eq!(
            validate(&request(EmbeddingInput::Tokens(vec![1, 2]))).unwrap(),
            vec![EmbedInput::Tokens(vec![1, 2])]
        );
    }
}
