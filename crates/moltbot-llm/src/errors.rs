//! Turning upstream failures into [`BackendError`]s: error envelopes, truncation, key redaction.

use moltbot_core::BackendError;
use serde_json::Value;

/// Longest upstream message carried in an error.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// Replaces every occurrence of a secret with `[redacted]`.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: &[String]) -> Self {
        Self {
            secrets: secrets.iter().filter(|s| !s.is_empty()).cloned().collect(),
        }
    }

    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[redacted]");
            }
        }
        out
    }

    /// Redacted and truncated to [`MAX_MESSAGE_CHARS`].
    pub fn message(&self, text: &str) -> String {
        truncate(&self.clean(text.trim()))
    }
}

pub(crate) fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// The parts of an upstream error body: OpenAI's envelope, `{"error": "..."}`, `{"message"}`,
/// `{"detail"}` or plain text.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct UpstreamError {
    pub message: Option<String>,
    pub param: Option<String>,
    pub code: Option<String>,
}

pub(crate) fn parse_error_body(body: &[u8]) -> UpstreamError {
    let text = String::from_utf8_lossy(body);
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        let t = text.trim();
        return UpstreamError {
            message: (!t.is_empty()).then(|| t.to_owned()),
            ..Default::default()
        };
    };
    let str_of = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    let err = match &v["error"] {
        Value::Object(_) => &v["error"],
        Value::String(s) => {
            return UpstreamError {
                message: Some(s.clone()),
                ..Default::default()
            };
        }
        _ => &v,
    };
    UpstreamError {
        message: str_of(&err["message"])
            .or_else(|| str_of(&err["detail"]))
            .or_else(|| Some(v.to_string())),
        param: str_of(&err["param"]),
        code: str_of(&err["code"]),
    }
}

/// The error for an upstream 4xx that is the client's fault (not 401/403/408/429).
pub(crate) fn client_error(status: u16, body: &[u8], redactor: &Redactor) -> BackendError {
    let e = parse_error_body(body);
    let message = redactor.message(
        &e.message
            .unwrap_or_else(|| format!("upstream returned HTTP {status}")),
    );
    let lower = message.to_ascii_lowercase();
    if e.code.as_deref() == Some("context_length_exceeded")
        || lower.contains("maximum context length")
        || lower.contains("context length exceeded")
    {
        return BackendError::ContextLength(message);
    }
    BackendError::InvalidRequest {
        param: e.param.map(|p| redactor.message(&p)),
        message,
    }
}

/// A human description of a reqwest error: the error chain, without the URL, redacted.
pub(crate) fn describe(err: reqwest::Error, redactor: &Redactor) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    redactor.message(&text)
}

/// Whether an error counts against the circuit breaker: the upstream (or the way to it) is unhealthy.
pub fn is_upstream_failure(err: &BackendError) -> bool {
    match err {
        BackendError::Connect(_) | BackendError::Timeout(_) | BackendError::Protocol(_) => true,
        BackendError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shapes() {
        let e = parse_error_body(br#"{"error":{"message":"bad","param":"temperature","code":null}}"#);
        assert_eq!(e.message.as_deref(), Some("bad"));
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert_eq!(
            parse_error_body(br#"{"error":"nope"}"#).message.as_deref(),
            Some("nope")
        );
        assert_eq!(
            parse_error_body(br#"{"detail":"vllm says"}"#).message.as_deref(),
            Some("vllm says")
        );
        assert_eq!(
            parse_error_body(b"plain text").message.as_deref(),
            Some("plain text")
        );
        assert_eq!(parse_error_body(b"").message, None);
    }

    #[test]
    fn client_errors_are_truncated_redacted_and_classified() {
        let r = Redactor::new(&["sk-secret".to_owned()]);
        let long = format!(
            r#"{{"error":{{"message":"key sk-secret {}"}}}}"#,
            "x".repeat(1000)
        );
        let BackendError::InvalidRequest { message, .. } = client_error(400, long.as_bytes(), &r) else {
            panic!()
        };
        assert!(!message.contains("sk-secret") && message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        let ctx = br#"{"error":{"message":"too long","code":"context_length_exceeded"}}"#;
        assert!(matches!(
            client_error(400, ctx, &r),
            BackendError::ContextLength(_)
        ));
    }

    #[test]
    fn failure_classification() {
        assert!(is_upstream_failure(&BackendError::Timeout("idle")));
        assert!(is_upstream_failure(&BackendError::Status {
            status: 503,
            retry_after: None,
            message: None
        }));
        assert!(!is_upstream_failure(&BackendError::Status {
            status: 401,
            retry_after: None,
            message: None
        }));
        let bad = BackendError::InvalidRequest {
            param: None,
            message: "x".into(),
        };
        assert!(!is_upstream_failure(&bad));
    }
}
