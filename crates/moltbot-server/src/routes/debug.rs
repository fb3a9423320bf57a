//! The debug listener (development only; refused in the production profile): the effective
//! configuration with secrets redacted, the last requests, and a CPU profile.

use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::state::AppState;

pub const CONFIG: &str = "/debug/config";
pub const REQUESTS: &str = "/debug/requests";
pub const PROFILE: &str = "/debug/pprof/profile";

/// Longest CPU profile one request may ask for.
pub const MAX_PROFILE_SECONDS: u64 = 120;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(CONFIG, get(config))
        .route(REQUESTS, get(requests))
        .route(PROFILE, get(profile))
}

async fn config(State(state): State<AppState>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; charset=utf-8")],
        state.config.redacted_toml(),
    )
}

/// The last `server.debug_requests` requests of the dialog listener, newest first: ids, routes,
/// statuses, durations, model and backend. No bodies, headers, prompts or keys.
async fn requests(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "requests": state.telemetry.recent.snapshot() }))
}

#[derive(Debug, Deserialize)]
struct ProfileQuery {
    seconds: Option<u64>,
    /// Samples per second (default 99).
    frequency: Option<i32>,
}

/// Sample the whole process's CPU for `seconds` (default 10, at most 120) and answer a flamegraph SVG.
async fn profile(Query(q): Query<ProfileQuery>) -> Response {
    let seconds = q.seconds.unwrap_or(10);
    if seconds == 0 || seconds > MAX_PROFILE_SECONDS {
        return text(
            StatusCode::BAD_REQUEST,
            format!("seconds must be between 1 and {MAX_PROFILE_SECONDS}"),
        );
    }
    let frequency = q.frequency.unwrap_or(99).clamp(1, 1000);
    match flamegraph(Duration::from_secs(seconds), frequency).await {
        Ok(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Err((status, message)) => text(status, message),
    }
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

#[cfg(feature = "profiling")]
async fn flamegraph(duration: Duration, frequency: i32) -> Result<Vec<u8>, (StatusCode, String)> {
    use tokio::sync::Mutex;
    // One profile at a time: the sampler is process-wide.
    static BUSY: Mutex<()> = Mutex::const_new(());
    let Ok(_busy) = BUSY.try_lock() else {
        return Err((
            StatusCode::CONFLICT,
            "a profile is already being taken".to_owned(),
        ));
    };
    let internal = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(frequency)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| internal(format!("cannot start the profiler: {e}")))?;
    tokio::time::sleep(duration).await;
    tokio::task::spawn_blocking(move || {
        let report = guard
            .report()
            .build()
            .map_err(|e| format!("cannot build the report: {e}"))?;
        if report.data.is_empty() {
            // inferno renders nothing without samples; say so instead of answering an empty body.
            return Ok(IDLE_SVG.as_bytes().to_vec());
        }
        let mut svg = Vec::new();
        report
            .flamegraph(&mut svg)
            .map_err(|e| format!("cannot render the flamegraph: {e}"))?;
        Ok(svg)
    })
    .await
    .map_err(|e| internal(e.to_string()))?
    .map_err(internal)
}

#[cfg(feature = "profiling")]
const IDLE_SVG: &str = r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="600" height="40" xmlns="http://www.w3.org/2000/svg"><text x="10" y="25">No CPU samples: the process was idle while profiling.</text></svg>
"#;

#[cfg(not(feature = "profiling"))]
async fn flamegraph(_: Duration, _: i32) -> Result<Vec<u8>, (StatusCode, String)> {
    Err((
        StatusCode::NOT_IMPLEMENTED,
        "this build has no profiler (cargo feature `profiling` of moltbot-server)".to_owned(),
    ))
}
