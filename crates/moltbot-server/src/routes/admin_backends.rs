//! The admin console's backends (admin listener, `admin` scope): `GET /admin/api/backends` lists every
//! configured backend with its circuit state and moltbot's own counters since start; `POST
//! /admin/api/backends/{name}/test` sends a tiny non-streaming prompt through that backend alone (no
//! fallback, no recording) with a timeout.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use futures::StreamExt;
use moltbot_api::ChatMessage;
use moltbot_core::assemble::ReplyCollector;
use moltbot_core::{BackendRequest, CircuitState, ModelRoute};
use serde::{Deserialize, Serialize};

use crate::auth::AdminPrincipal;
use crate::error::{ApiError, current_request_id};
use crate::extract::Json;
use crate::state::AppState;
use crate::telemetry::series::RecentError;

pub const COLLECTION: &str = "/admin/api/backends";
pub const TEST: &str = "/admin/api/backends/{name}/test";
/// How long a test prompt may take in all.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Completion tokens a test prompt asks for at most.
pub const TEST_MAX_TOKENS: u32 = 16;
/// Longest accepted test prompt, in characters.
const MAX_PROMPT_CHARS: usize = 2000;

pub fn router() -> Router<AppState> {
    Router::new().route(COLLECTION, get(list)).route(TEST, post(test))
}

/// A backend's health for the overview and the backends page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendHealth {
    pub name: String,
    /// `remote` or `local`.
    pub kind: String,
    /// The circuit is not open.
    pub healthy: bool,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
}

/// The configured backends, in configuration order, once each (a backend is named after the model it
/// was configured for).
pub fn backend_routes(state: &AppState) -> Vec<&ModelRoute> {
    let mut out: Vec<&ModelRoute> = Vec::new();
    for r in state.chat.models().iter() {
        if !out.iter().any(|o| o.backend.name() == r.backend.name()) {
            out.push(r);
        }
    }
    out
}

pub fn health(route: &ModelRoute) -> BackendHealth {
    let circuit = route.backend.circuit_state();
    BackendHealth {
        name: route.backend.name().to_owned(),
        kind: route.backend.kind().to_owned(),
        healthy: circuit != CircuitState::Open,
        circuit: circuit.as_str().to_owned(),
    }
}

#[derive(Debug, Serialize)]
struct BackendObject {
    #[serde(flatten)]
    health: BackendHealth,
    /// The public model names served by this backend.
    models: Vec<String>,
    requests: u64,
    errors: u64,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    /// Oldest first, at most ten.
    recent_errors: Vec<RecentError>,
}

#[derive(Debug, Serialize)]
struct BackendList {
    object: &'static str,
    data: Vec<BackendObject>,
}

async fn list(_: AdminPrincipal, State(state): State<AppState>) -> axum::Json<BackendList> {
    let live = &state.telemetry.live;
    let data = backend_routes(&state)
        .into_iter()
        .map(|route| {
            let name = route.backend.name();
            let counters = live.backends.get(name);
            BackendObject {
                health: health(route),
                models: state
                    .chat
                    .models()
                    .iter()
                    .filter(|r| r.backend.name() == name)
                    .map(|r| r.name.clone())
                    .collect(),
                requests: counters.requests,
                errors: counters.errors,
                p50_ms: counters.latency.quantile_ms(0.5),
                p95_ms: counters.latency.quantile_ms(0.95),
                recent_errors: counters.recent_errors.into_iter().collect(),
            }
        })
        .collect();
    axum::Json(BackendList { object: "list", data })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    prompt: String,
}

#[derive(Debug, Serialize)]
struct TestResult {
    ok: bool,
    reply: String,
    latency_ms: u64,
    error: Option<String>,
}

async fn test(
    _: AdminPrincipal,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<TestRequest>,
) -> Result<axum::Json<TestResult>, ApiError> {
    let route = backend_routes(&state)
        .into_iter()
        .find(|r| r.backend.name() == name)
        .cloned()
        .ok_or_else(|| ApiError::NotFound {
            param: Some("name"),
            message: format!("No backend named '{name}' is configured."),
            code: "backend_not_found",
        })?;
    let prompt = body.prompt.trim();
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "must not be empty"));
    }
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ApiError::invalid(
            "prompt",
            format!("must be at most {MAX_PROMPT_CHARS} characters"),
        ));
    }
    let request = BackendRequest {
        model: route.upstream_model.clone(),
        messages: vec![ChatMessage::text("user", prompt)],
        max_tokens: TEST_MAX_TOKENS.min(route.max_tokens),
        temperature: route.temperature,
        top_p: route.top_p,
        request_id: current_request_id().unwrap_or_default(),
        ..BackendRequest::default()
    };
    let started = Instant::now();
    let outcome = tokio::time::timeout(TEST_TIMEOUT, async {
        let mut events = route.backend.chat(request).await?;
        let mut reply = ReplyCollector::default();
        while let Some(ev) = events.next().await {
            reply.absorb(&ev?);
        }
        Ok::<_, moltbot_core::BackendError>(reply.content)
    })
    .await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (ok, reply, error) = match outcome {
        Ok(Ok(reply)) => (true, reply, None),
        Ok(Err(e)) => (false, String::new(), Some(e.to_string())),
        Err(_) => (
            false,
            String::new(),
            Some(format!("no complete reply within {}s", TEST_TIMEOUT.as_secs())),
        ),
    };
    tracing::info!(moltbot.backend = %name, ok, latency_ms, "admin backend test");
    Ok(axum::Json(TestResult {
        ok,
        reply,
        latency_ms,
        error,
    }))
}
