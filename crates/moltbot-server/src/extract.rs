//! Our own JSON extractor: any malformed body gets the OpenAI envelope naming the field, never axum's
//! plain-text rejection.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: state.body_limit,
                }
            } else {
                ApiError::Invalid {
                    param: None,
                    message: "Could not read the request body.".into(),
                    code: None,
                }
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parse a JSON body, naming the offending field on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::Invalid {
            param: None,
            message: "The request body is not valid UTF-8.".into(),
            code: Some("invalid_encoding"),
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Invalid {
            param: None,
            message: "The request body is empty; expected a JSON object.".into(),
            code: Some("invalid_json"),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::Invalid {
                param: None,
                message: format!(
                    "We could not parse the JSON body of your request ({inner}). Expected a JSON object."
                ),
                code: Some("invalid_json"),
            };
        }
        let text = inner.to_string();
        // "missing field `x`" and "unknown field `x`" name the field in the message, not in the path.
        let field = field_in_message(&text);
        let param = match (path.as_str(), field) {
            ("." | "", Some(f)) => Some(f.to_owned()),
            (p, Some(f)) if text.starts_with("missing field") => Some(format!("{p}.{f}")),
            ("." | "", None) => None,
            (p, _) => Some(p.to_owned()),
        };
        let message = match &param {
            Some(p) => format!("Invalid value for '{p}': {}", strip_position(&text)),
            None => format!("Invalid request body: {}", strip_position(&text)),
        };
        ApiError::Invalid {
            param,
            message,
            code: None,
        }
    })
}

fn field_in_message(msg: &str) -> Option<&str> {
    let rest = msg
        .strip_prefix("missing field `")
        .or_else(|| msg.strip_prefix("unknown field `"))?;
    rest.split('`').next()
}

fn strip_position(msg: &str) -> &str {
    msg.rsplit_once(" at line ").map_or(msg, |(m, _)| m)
}

/// Query-string extractor whose errors use the envelope.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|rej| {
                let text = rej.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                let param = detail
                    .split(':')
                    .next()
                    .filter(|p| !p.contains(' '))
                    .map(str::to_owned);
                ApiError::Invalid {
                    param,
                    message: format!("Invalid query string: {detail}"),
                    code: None,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_api::ChatCompletionRequest;

    fn param_of(body: &str) -> Option<String> {
        match parse_json::<ChatCompletionRequest>(body.as_bytes()) {
            Err(ApiError::Invalid { param, .. }) => param,
            other => panic!("expected an invalid-request error, got {other:?}"),
        }
    }

    #[test]
    fn names_the_field() {
        assert_eq!(param_of(r#"{"model":"m"}"#).as_deref(), Some("messages"));
        assert_eq!(
            param_of(r#"{"model":"m","messages":"hi"}"#).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":1}]}"#).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(param_of(r#"{"model":5,"messages":[]}"#).as_deref(), Some("model"));
        assert_eq!(
            param_of(r#"{"model":"m","messages":[],"max_tokens":"x"}"#).as_deref(),
            Some("max_tokens")
        );
    }

    #[test]
    fn syntax_and_encoding_errors() {
        assert_eq!(param_of("{"), None);
        let err = parse_json::<ChatCompletionRequest>(&[b'{', 0xff, b'}']).unwrap_err();
        assert!(matches!(
            err,
            ApiError::Invalid {
                code: Some("invalid_encoding"),
                ..
            }
        ));
    }
}
