//! `ApiError`: every error a route can return, rendered as OpenAI's envelope with the right status.
//! 5xx bodies say something generic plus the request id; the cause goes to the log.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moltbot_api::ErrorEnvelope;
use moltbot_core::{BackendError, ChatError, StoreError};

#[derive(Debug)]
pub enum ApiError {
    /// 400 with the offending parameter named.
    Invalid {
        param: Option<String>,
        message: String,
        code: Option<&'static str>,
    },
    NotFound {
        param: Option<&'static str>,
        message: String,
        code: &'static str,
    },
    PayloadTooLarge {
        limit: usize,
    },
    Conflict {
        message: String,
        code: &'static str,
    },
    ContextLength {
        param: Option<String>,
        message: String,
    },
    /// An upstream or engine problem.
    Backend(BackendError),
    /// Something on our side; details are logged, not returned.
    Internal(String),
    Unavailable {
        message: String,
        /// `error.code`: `service_unavailable`, or what is unavailable (`redis_unavailable`).
        code: &'static str,
        retry_after: Option<Duration>,
    },
    /// 401: credentials missing or not accepted (the message never says which part was wrong).
    Unauthorized {
        message: String,
        code: &'static str,
    },
    /// 403: authenticated, but the credential lacks a scope.
    Forbidden {
        message: String,
        code: &'static str,
    },
    /// 429: a rate limit, quota or lockout. `retry: false` adds `x-should-retry: false`.
    TooManyRequests {
        kind: &'static str,
        message: String,
        code: &'static str,
        retry_after: Option<Duration>,
        retry: bool,
    },
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            param: Some(param.into()),
            message: message.into(),
            code: None,
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    pub fn conversation_not_found(id: &str) -> Self {
        ApiError::NotFound {
            param: Some("conversation"),
            message: format!("Conversation with id '{id}' not found."),
            code: "conversation_not_found",
        }
    }

    pub fn response_not_found(id: &str, param: &'static str) -> Self {
        ApiError::NotFound {
            param: Some(param),
            message: format!("Response with id '{id}' not found."),
            code: "response_not_found",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::ContextLength { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Backend(e) => match e {
                BackendError::InvalidRequest { .. }
                | BackendError::ContextLength(_)
                | BackendError::Unsupported { .. } => StatusCode::BAD_REQUEST,
                BackendError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                BackendError::CircuitOpen { .. } | BackendError::Overloaded { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                BackendError::Status { status: 429, .. } => StatusCode::SERVICE_UNAVAILABLE,
                BackendError::Connect(_) | BackendError::Status { .. } | BackendError::Protocol(_) => {
                    StatusCode::BAD_GATEWAY
                }
            },
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Unavailable { retry_after, .. } | ApiError::TooManyRequests { retry_after, .. } => {
                *retry_after
            }
            ApiError::Backend(BackendError::CircuitOpen { retry_after })
            | ApiError::Backend(BackendError::Overloaded { retry_after }) => Some(*retry_after),
            ApiError::Backend(BackendError::Status {
                status: 429,
                retry_after,
                ..
            }) => *retry_after,
            _ => None,
        }
    }

    /// The envelope; `request_id` is quoted in server-side errors so operators can find the log line.
    pub fn envelope(&self, request_id: Option<&str>) -> ErrorEnvelope {
        let rid = request_id
            .map(|r| format!(" (request id {r})"))
            .unwrap_or_default();
        match self {
            ApiError::Invalid { param, message, code } => {
                ErrorEnvelope::new("invalid_request_error", message.clone(), param.as_deref(), *code)
            }
            ApiError::NotFound { param, message, code } => {
                ErrorEnvelope::new("invalid_request_error", message.clone(), *param, Some(code))
            }
            ApiError::PayloadTooLarge { limit } => ErrorEnvelope::new(
                "invalid_request_error",
                format!("Request body is too large: the limit is {limit} bytes."),
                None,
                Some("request_too_large"),
            ),
            ApiError::Conflict { message, code } => {
                ErrorEnvelope::new("invalid_request_error", message.clone(), None, Some(code))
            }
            ApiError::ContextLength { param, message } => ErrorEnvelope::new(
                "invalid_request_error",
                message.clone(),
                param.as_deref(),
                Some("context_length_exceeded"),
            ),
            ApiError::Internal(_) => ErrorEnvelope::new(
                "server_error",
                format!("The server had an error while processing your request{rid}."),
                None,
                Some("internal_error"),
            ),
            ApiError::Unavailable { message, code, .. } => {
                ErrorEnvelope::new("server_error", message.clone(), None, Some(code))
            }
            ApiError::Unauthorized { message, code } | ApiError::Forbidden { message, code } => {
                ErrorEnvelope::new("invalid_request_error", message.clone(), None, Some(code))
            }
            ApiError::TooManyRequests {
                kind, message, code, ..
            } => ErrorEnvelope::new(kind, message.clone(), None, Some(code)),
            ApiError::Backend(e) => backend_envelope(e, &rid),
        }
    }

    /// Log the cause of server-side errors (never keys or prompts: causes are our own messages).
    pub fn log(&self) {
        match self {
            ApiError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            ApiError::Backend(e) if self.status().is_server_error() => {
                tracing::warn!(error = %e, "backend error")
            }
            _ => {}
        }
    }
}

fn backend_envelope(e: &BackendError, rid: &str) -> ErrorEnvelope {
    let upstream =
        |message: String, code: &str| ErrorEnvelope::new("server_error", message, None, Some(code));
    match e {
        BackendError::InvalidRequest { param, message } => ErrorEnvelope::new(
            "invalid_request_error",
            format!("The model backend rejected the request: {message}"),
            param.as_deref(),
            None,
        ),
        BackendError::ContextLength(m) => ErrorEnvelope::new(
            "invalid_request_error",
            m.clone(),
            Some("messages"),
            Some("context_length_exceeded"),
        ),
        BackendError::Unsupported { param, message } => ErrorEnvelope::new(
            "invalid_request_error",
            message.clone(),
            Some(param),
            Some("unsupported_parameter"),
        ),
        BackendError::Timeout(stage) => upstream(
            format!("The model backend timed out ({stage}){rid}."),
            "upstream_timeout",
        ),
        BackendError::CircuitOpen { .. } => upstream(
            format!("The model backend is unavailable after repeated failures; try again shortly{rid}."),
            "backend_unavailable",
        ),
        BackendError::Overloaded { .. } => upstream(
            format!("The model backend is at capacity; try again shortly{rid}."),
            "backend_overloaded",
        ),
        BackendError::Status { status: 429, .. } => upstream(
            format!("The model platform is rate limiting moltbot; try again shortly{rid}."),
            "upstream_rate_limited",
        ),
        BackendError::Status {
            status: 401 | 403, ..
        } => upstream(
            format!("The model platform rejected moltbot's credentials{rid}."),
            "upstream_auth_failed",
        ),
        BackendError::Status { status, .. } => upstream(
            format!("The model backend returned an error (HTTP {status}){rid}."),
            "upstream_error",
        ),
        BackendError::Connect(_) => upstream(
            format!("Could not connect to the model backend{rid}."),
            "upstream_unreachable",
        ),
        BackendError::Protocol(_) => upstream(
            format!("The model backend sent an invalid response{rid}."),
            "upstream_error",
        ),
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::InvalidRequest { param, message, code } => ApiError::Invalid { param, message, code },
            ChatError::ModelNotFound(m) => ApiError::NotFound {
                param: Some("model"),
                message: format!("The model `{m}` does not exist or you do not have access to it."),
                code: "model_not_found",
            },
            ChatError::ConversationNotFound(id) => ApiError::conversation_not_found(&id),
            ChatError::ResponseNotFound(id) => ApiError::response_not_found(&id, "previous_response_id"),
            ChatError::ContextLength { param, message } => ApiError::ContextLength { param, message },
            ChatError::Backend(b) => ApiError::Backend(b),
            ChatError::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound {
                param: None,
                message: "Not found.".into(),
                code: "not_found",
            },
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::Unavailable {
                    message: "The service's database is unavailable; retry shortly.".into(),
                    code: "database_unavailable",
                    retry_after: Some(Duration::from_secs(5)),
                }
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The request id of the current request, set by the middleware as a task-local.
pub fn current_request_id() -> Option<String> {
    crate::middleware::REQUEST_ID.try_with(|r| r.clone()).ok()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let rid = current_request_id();
        let body = serde_json::to_vec(&self.envelope(rid.as_deref())).unwrap_or_default();
        let mut resp = (self.status(), body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let ApiError::TooManyRequests { retry: false, .. } = &self {
            resp.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let Some(d) = self.retry_after() {
            let secs = d.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
