//! Chat-turn metrics: `moltbot_chat_requests_total{model,backend,outcome}`, `moltbot_tokens_total`,
//! time to first token and inter-token gaps. One [`ChatMeter`] per turn, recorded when it is dropped,
//! so a stream the client abandoned is counted as `cancelled` when its body is dropped.

use std::sync::Arc;
use std::time::Instant;

use metrics::counter;
use moltbot_api::Usage;
use moltbot_core::BackendError;

use super::RATE_LIMITED;
use super::handles::{self, ModelHandles};
use crate::error::ApiError;

pub struct ChatMeter {
    model: String,
    backend: String,
    stream: bool,
    started: Instant,
    last_delta: Option<Instant>,
    /// The model's registered series (time to first token, inter-token gaps, tokens).
    handles: Arc<ModelHandles>,
    outcome: &'static str,
    /// The admin console's counters, when attached with [`ChatMeter::with_live`].
    live: Option<Arc<super::LiveStats>>,
    /// Why the backend failed (for the console's recent errors); client errors are not kept.
    backend_error: Option<String>,
    /// A backend answered ([`set_backend`](Self::set_backend)): the turn counts for its backend.
    answered: bool,
}

impl ChatMeter {
    /// `model` must be a configured model name (or a fixed placeholder): labels must stay bounded.
    /// `backend` is the model's primary backend until [`set_backend`](Self::set_backend) names the one
    /// that answered.
    pub fn new(model: &str, backend: &str, stream: bool) -> Self {
        Self {
            model: model.to_owned(),
            backend: backend.to_owned(),
            stream,
            started: Instant::now(),
            last_delta: None,
            handles: handles::model(model),
            outcome: "cancelled",
            live: None,
            backend_error: None,
            answered: false,
        }
    }

    /// Also feed the admin console's live counters: tokens and active streams into the overview
    /// series, the turn's duration and backend failures into the answering backend's counters.
    pub fn with_live(mut self, live: Arc<super::LiveStats>) -> Self {
        if self.stream {
            live.series.stream_started();
        }
        self.live = Some(live);
        self
    }

    pub fn set_backend(&mut self, backend: &str) {
        backend.clone_into(&mut self.backend);
        self.answered = true;
    }

    /// A generated delta reached the client's transport.
    pub fn delta(&mut self) {
        let now = Instant::now();
        match self.last_delta {
            None => self
                .handles
                .ttft(self.stream)
                .record(now.duration_since(self.started).as_secs_f64()),
            Some(last) => self
                .handles
                .inter_token()
                .record(now.duration_since(last).as_secs_f64()),
        }
        self.last_delta = Some(now);
    }

    /// The turn completed and was stored.
    pub fn success(&mut self, usage: &Usage) {
        self.handles
            .prompt_tokens()
            .increment(u64::from(usage.prompt_tokens));
        self.handles
            .completion_tokens()
            .increment(u64::from(usage.completion_tokens));
        if let Some(live) = &self.live {
            live.series
                .record_tokens(u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens));
        }
        self.outcome = "success";
    }

    /// The turn failed with this error (before or during generation).
    pub fn fail(&mut self, err: &ApiError) {
        self.outcome = outcome(err);
        let reason = match err {
            ApiError::Backend(BackendError::Status { status: 429, .. }) => Some("upstream"),
            ApiError::Backend(BackendError::Overloaded { .. }) => Some("backend_capacity"),
            _ => None,
        };
        if let Some(reason) = reason {
            counter!(RATE_LIMITED, "reason" => reason).increment(1);
        }
        if let ApiError::Backend(e) = err
            && e.should_fall_back()
        {
            self.backend_error = Some(e.to_string());
            // A stream that already sent its 200 and tokens: the HTTP status cannot show this failure.
            if let (true, Some(_), Some(live)) = (self.stream, self.last_delta, &self.live) {
                live.series.record_stream_error();
            }
        }
    }
}

impl Drop for ChatMeter {
    fn drop(&mut self) {
        handles::turns(&self.model, &self.backend, self.outcome).increment(1);
        if let Some(live) = self.live.take() {
            if self.stream {
                live.series.stream_ended();
            }
            // Turns refused before any backend was asked (validation, limits) are not the backend's.
            if self.answered || self.backend_error.is_some() {
                live.backends
                    .record(&self.backend, self.started.elapsed(), self.backend_error.take());
            }
        }
    }
}

/// The `outcome` label of a failed turn.
fn outcome(err: &ApiError) -> &'static str {
    match err {
        ApiError::Backend(e) => match e {
            BackendError::Timeout(_) => "timeout",
            BackendError::CircuitOpen { .. } => "circuit_open",
            BackendError::Overloaded { .. } => "overloaded",
            BackendError::Status { status: 429, .. } => "rate_limited",
            BackendError::InvalidRequest { .. }
            | BackendError::ContextLength(_)
            | BackendError::Unsupported { .. } => "invalid_request",
            BackendError::Connect(_) | BackendError::Status { .. } | BackendError::Protocol(_) => {
                "upstream_error"
            }
        },
        // The rest by status, so variants added by other layers are classified too.
        other => match other.status().as_u16() {
            429 => "rate_limited",
            401 | 403 => "unauthorized",
            400..=499 => "invalid_request",
            _ => "error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_error_kind() {
        let status = |s| {
            ApiError::Backend(BackendError::Status {
                status: s,
                retry_after: None,
                message: None,
            })
        };
        assert_eq!(outcome(&status(429)), "rate_limited");
        assert_eq!(outcome(&status(500)), "upstream_error");
        assert_eq!(
            outcome(&ApiError::Backend(BackendError::Timeout("idle"))),
            "timeout"
        );
        assert_eq!(outcome(&ApiError::invalid("model", "x")), "invalid_request");
        assert_eq!(outcome(&ApiError::internal("x")), "error");
    }
}
