//! The backend's Prometheus metrics (through the `metrics` facade; a no-op until a recorder is installed).

use metrics::{Counter, Unit, counter, describe_counter, describe_gauge, gauge};
use moltbot_core::{BackendError, CircuitState};

/// Upstream HTTP attempts (every try, retries included) by `backend` and `status`.
pub const UPSTREAM_REQUESTS: &str = "moltbot_upstream_requests_total";
/// Retries (attempts after the first of a call) by `backend`.
pub const UPSTREAM_RETRIES: &str = "moltbot_upstream_retries_total";
/// Circuit breaker state by `backend`: 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "moltbot_backend_circuit_state";

/// Describe this crate's metrics (call once after installing the recorder).
pub fn describe() {
    describe_counter!(
        UPSTREAM_REQUESTS,
        Unit::Count,
        "Upstream HTTP attempts by backend and status: an HTTP status code, or connect_error, timeout, \
         protocol_error."
    );
    describe_counter!(
        UPSTREAM_RETRIES,
        Unit::Count,
        "Upstream attempts that were retries of an earlier failed attempt."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit breaker state per backend: 0 closed, 1 half-open, 2 open."
    );
}

/// The `status` label of a finished attempt.
pub(crate) fn status_label(result: Result<(), &BackendError>) -> String {
    match result {
        Ok(()) => "200".to_owned(),
        Err(BackendError::Status { status, .. }) => status.to_string(),
        Err(BackendError::Timeout(_)) => "timeout".to_owned(),
        Err(BackendError::Connect(_)) => "connect_error".to_owned(),
        Err(BackendError::InvalidRequest { .. }) => "400".to_owned(),
        Err(_) => "protocol_error".to_owned(),
    }
}

pub(crate) fn attempt(backend: &str, status: String) {
    attempts(backend, status).increment(1);
}

/// The attempts counter of one backend and status (a backend keeps the one for `200`).
pub(crate) fn attempts(backend: &str, status: String) -> Counter {
    counter!(UPSTREAM_REQUESTS, "backend" => backend.to_owned(), "status" => status)
}

pub(crate) fn retry(backend: &str) {
    counter!(UPSTREAM_RETRIES, "backend" => backend.to_owned()).increment(1);
}

/// Publish a backend's circuit state (also refreshed by the server at every scrape).
pub fn circuit_state(backend: &str, state: CircuitState) {
    gauge!(CIRCUIT_STATE, "backend" => backend.to_owned()).set(state.gauge());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_bounded() {
        assert_eq!(status_label(Ok(())), "200");
        let s = BackendError::Status {
            status: 429,
            retry_after: None,
            message: None,
        };
        assert_eq!(status_label(Err(&s)), "429");
        assert_eq!(status_label(Err(&BackendError::Timeout("connect"))), "timeout");
        assert_eq!(
            status_label(Err(&BackendError::Connect("refused".into()))),
            "connect_error"
        );
        assert_eq!(
            status_label(Err(&BackendError::Protocol("x".into()))),
            "protocol_error"
        );
    }
}
