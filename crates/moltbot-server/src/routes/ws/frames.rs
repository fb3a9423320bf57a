//! The messages of the WebSocket chat protocol (`moltbot.v1`): JSON text frames, tagged by `type`.

use moltbot_api::{ErrorBody, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::extract::parse_json;

/// Longest client-chosen chat id.
pub const MAX_ID_LEN: usize = 128;

/// `{"type":"chat",…}`: one user message, answered as a streamed turn.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatFrame {
    pub id: String,
    pub model: String,
    pub content: String,
    #[serde(default)]
    pub conversation: Option<String>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelFrame {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PingFrame {}

/// A frame from the client.
#[derive(Debug, Clone)]
pub enum ClientFrame {
    Chat(ChatFrame),
    Cancel(CancelFrame),
    Ping,
}

/// A rejected frame: the error, and the chat id it carried (if any) so the client can match it.
#[derive(Debug)]
pub struct FrameError {
    pub id: Option<String>,
    pub error: ApiError,
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > MAX_ID_LEN {
        return Err(ApiError::invalid(
            "id",
            format!("`id` must be 1 to {MAX_ID_LEN} characters"),
        ));
    }
    Ok(())
}

/// Parse a text frame, naming the offending field on error.
pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let mut object: Map<String, Value> =
        parse_json(text.as_bytes()).map_err(|error| FrameError { id: None, error })?;
    let id = object.get("id").and_then(Value::as_str).map(str::to_owned);
    let fail = |error: ApiError| FrameError {
        id: id.clone(),
        error,
    };
    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => return Err(fail(ApiError::invalid("type", "`type` must be a string"))),
        None => return Err(fail(ApiError::invalid("type", "missing field `type`"))),
    };
    // Re-encoding a parsed object cannot fail; `parse_json` then names the offending field.
    let rest = serde_json::to_vec(&object).unwrap_or_default();
    match kind.as_str() {
        "chat" => {
            let chat: ChatFrame = parse_json(&rest).map_err(fail)?;
            check_id(&chat.id).map_err(fail)?;
            if chat.conversation.as_deref().is_some_and(str::is_empty) {
                return Err(fail(ApiError::invalid(
                    "conversation",
                    "`conversation` must be a conversation id or null",
                )));
            }
            Ok(ClientFrame::Chat(chat))
        }
        "cancel" => {
            let cancel: CancelFrame = parse_json(&rest).map_err(fail)?;
            check_id(&cancel.id).map_err(fail)?;
            Ok(ClientFrame::Cancel(cancel))
        }
        "ping" => {
            let _: PingFrame = parse_json(&rest).map_err(fail)?;
            Ok(ClientFrame::Ping)
        }
        other => Err(fail(ApiError::Invalid {
            param: Some("type".into()),
            message: format!(
                "Unknown message type '{}': expected \"chat\", \"cancel\" or \"ping\".",
                other.chars().take(64).collect::<String>()
            ),
            code: Some("unknown_message_type"),
        })),
    }
}

/// A frame to the client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Ready {
        models: Vec<String>,
    },
    Start {
        id: &'a str,
        conversation: &'a str,
        model: &'a str,
    },
    Delta {
        id: &'a str,
        content: &'a str,
    },
    Done {
        id: &'a str,
        finish_reason: &'a str,
        usage: Option<&'a Usage>,
    },
    Error {
        id: Option<&'a str>,
        status: u16,
        error: ErrorBody,
    },
    Pong,
}

impl<'a> ServerFrame<'a> {
    /// An `ApiError` as an error frame: its status and OpenAI error object (5xx messages quote `request_id`).
    pub fn error(id: Option<&'a str>, err: &ApiError, request_id: Option<&str>) -> Self {
        err.log();
        ServerFrame::Error {
            id,
            status: err.status().as_u16(),
            error: err.envelope(request_id).error,
        }
    }

    pub fn to_text(&self) -> String {
        // Serialising our own types cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(text: &str) -> (Option<String>, Option<String>) {
        match parse(text) {
            Err(FrameError { id, error }) => (id, error.envelope(None).error.param),
            Ok(f) => panic!("parsed: {f:?}"),
        }
    }

    #[test]
    fn parses_each_kind() {
        let f = parse(r#"{"type":"chat","id":"c1","model":"m","content":"hi","conversation":null}"#).unwrap();
        assert!(matches!(f, ClientFrame::Chat(c) if c.id == "c1" && c.conversation.is_none()));
        assert!(
            matches!(parse(r#"{"type":"cancel","id":"c1"}"#).unwrap(), ClientFrame::Cancel(c) if c.id == "c1")
        );
        assert!(matches!(parse(r#"{"type":"ping"}"#).unwrap(), ClientFrame::Ping));
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(param("not json"), (None, None));
        assert_eq!(param(r#"{"id":"x"}"#), (Some("x".into()), Some("type".into())));
        assert_eq!(param(r#"{"type":"dance"}"#).1.as_deref(), Some("type"));
        assert_eq!(
            param(r#"{"type":"chat","id":"c","model":"m"}"#),
            (Some("c".into()), Some("content".into()))
        );
        assert_eq!(
            param(r#"{"type":"chat","id":"c","model":"m","content":"x","max_tokens":"lots"}"#)
                .1
                .as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            param(r#"{"type":"chat","id":"c","model":"m","content":"x","stream":true}"#)
                .1
                .as_deref(),
            Some("stream")
        );
        assert_eq!(param(r#"{"type":"cancel","id":""}"#).1.as_deref(), Some("id"));
    }

    #[test]
    fn server_frames_have_the_contract_shape() {
        let usage = Usage::new(3, 2);
        let done = ServerFrame::Done {
            id: "c",
            finish_reason: "stop",
            usage: Some(&usage),
        };
        let v: Value = serde_json::from_str(&done.to_text()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"done","id":"c","finish_reason":"stop",
                "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}})
        );
        let err = ServerFrame::error(None, &ApiError::invalid("content", "bad"), None);
        let v: Value = serde_json::from_str(&err.to_text()).unwrap();
        assert_eq!(v["status"], 400);
        assert_eq!(v["error"]["param"], "content");
        assert!(v["id"].is_null());
        assert_eq!(ServerFrame::Pong.to_text(), r#"{"type":"pong"}"#);
    }
}
