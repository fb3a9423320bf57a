//! What the fake upstream does with one request.

use std::time::Duration;

use serde_json::Value;

/// Where the reply text comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Fixed text.
    Text(String),
    /// `echo: <text of the last user message>`.
    Echo,
}

/// An error answer: status, optional `Retry-After` header value, optional body (an OpenAI error envelope
/// is generated when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Option<Value>,
}

impl StatusReply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            body: None,
        }
    }

    /// `Retry-After` header value: seconds (`"1"`) or an HTTP date.
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// How a stream goes wrong after `fail_after` content chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Close the connection abruptly (the chunked body ends without its terminator).
    Abort,
    /// Send an event whose data is not JSON, then abort.
    Garbage,
    /// Send nothing more, forever (for idle timeouts).
    Stall,
}

/// When the final chunk carries `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageMode {
    /// Only when the request has `stream_options.include_usage: true` (OpenAI's behaviour).
    #[default]
    WhenRequested,
    Always,
    Never,
}

/// A tool call streamed after the text: `arguments` is split across the content chunks' count.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// The behaviour for one request. Build with the constructors and chain the modifiers.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub reply: Reply,
    /// Number of content chunks the reply is split into (at least 1).
    pub chunks: usize,
    /// Pause before each content chunk after the first.
    pub chunk_interval: Duration,
    /// Pause before sending the response headers.
    pub headers_delay: Duration,
    /// Answer every request with this error.
    pub status: Option<StatusReply>,
    /// Answer requests carrying `Authorization: Bearer <key>` with this error (checked before `status`).
    pub key_status: Vec<(String, StatusReply)>,
    /// Fail after this many content chunks.
    pub fail_after: Option<(usize, Failure)>,
    /// Never send a byte (not even headers).
    pub hang: bool,
    /// Close the connection without an answer once the request is read (the client sees the
    /// connection end before a status line).
    pub reset: bool,
    pub usage: UsageMode,
    /// `(prompt_tokens, completion_tokens)`; default: number of messages received, number of chunks.
    pub usage_tokens: Option<(u32, u32)>,
    pub finish_reason: String,
    /// Hostile SSE framing: CRLF, comments, `id:` lines, multi-line `data:`, and bytes split at awkward
    /// points (inside UTF-8 characters, between the two line ends, inside `data:`) with tiny pauses.
    pub hostile: bool,
    /// Answer with a `chat.completion` JSON even when the request asked for a stream.
    pub json_response: bool,
    /// Answer with a stream even when the request asked for one JSON reply.
    pub sse_response: bool,
    pub tool_call: Option<ToolCall>,
}

impl Default for Script {
    fn default() -> Self {
        Self::text("Hello from the fake upstream.")
    }
}

impl Script {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            reply: Reply::Text(text.into()),
            chunks: 3,
            chunk_interval: Duration::ZERO,
            headers_delay: Duration::ZERO,
            status: None,
            key_status: Vec::new(),
            fail_after: None,
            hang: false,
            reset: false,
            usage: UsageMode::WhenRequested,
            usage_tokens: None,
            finish_reason: "stop".to_owned(),
            hostile: false,
            json_response: false,
            sse_response: false,
            tool_call: None,
        }
    }

    /// Reply `echo: <last user text>`; usage reports `prompt_tokens` = number of messages received.
    pub fn echo() -> Self {
        Self {
            reply: Reply::Echo,
            ..Self::default()
        }
    }

    /// Answer with an error status (and a generated error envelope).
    pub fn status(status: u16) -> Self {
        Self::status_reply(StatusReply::new(status))
    }

    pub fn status_reply(reply: StatusReply) -> Self {
        Self {
            status: Some(reply),
            ..Self::default()
        }
    }

    /// The default text reply, except that requests with key `key` get `status`.
    pub fn status_for_key(key: &str, status: u16) -> Self {
        Self::default().key_status(key, StatusReply::new(status))
    }

    /// Never answer.
    pub fn hang() -> Self {
        Self {
            hang: true,
            ..Self::default()
        }
    }

    /// Close the connection without answering.
    pub fn reset() -> Self {
        Self {
            reset: true,
            ..Self::default()
        }
    }

    pub fn key_status(mut self, key: &str, reply: StatusReply) -> Self {
        self.key_status.push((key.to_owned(), reply));
        self
    }

    pub fn chunks(mut self, n: usize) -> Self {
        self.chunks = n.max(1);
        self
    }

    pub fn chunk_interval(mut self, d: Duration) -> Self {
        self.chunk_interval = d;
        self
    }

    pub fn headers_delay(mut self, d: Duration) -> Self {
        self.headers_delay = d;
        self
    }

    pub fn fail_after(mut self, chunks: usize, how: Failure) -> Self {
        self.fail_after = Some((chunks, how));
        self
    }

    pub fn usage(mut self, mode: UsageMode) -> Self {
        self.usage = mode;
        self
    }

    pub fn usage_tokens(mut self, prompt: u32, completion: u32) -> Self {
        self.usage_tokens = Some((prompt, completion));
        self
    }

    pub fn finish_reason(mut self, reason: &str) -> Self {
        self.finish_reason = reason.to_owned();
        self
    }

    pub fn hostile(mut self) -> Self {
        self.hostile = true;
        self
    }

    pub fn json_response(mut self) -> Self {
        self.json_response = true;
        self
    }

    pub fn sse_response(mut self) -> Self {
        self.sse_response = true;
        self
    }

    /// Stream a tool call after the text, and finish with `tool_calls`.
    pub fn tool_call(mut self, id: &str, name: &str, arguments: &str) -> Self {
        self.tool_call = Some(ToolCall {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        });
        self.finish_reason = "tool_calls".to_owned();
        self
    }

    /// The error this script answers a request carrying `key` with, if any.
    pub(crate) fn error_for(&self, key: Option<&str>) -> Option<&StatusReply> {
        key.and_then(|k| self.key_status.iter().find(|(kk, _)| kk == k).map(|(_, r)| r))
            .or(self.status.as_ref())
    }
}

/// Split `text` into `n` pieces of roughly equal character counts (fewer when the text is short).
pub(crate) fn split_text(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let n = n.clamp(1, chars.len());
    let size = chars.len().div_ceil(n);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_text_keeps_everything() {
        assert_eq!(split_text("abcdefg", 3), vec!["abc", "def", "g"]);
        assert_eq!(split_text("你好🌍", 5).concat(), "你好🌍");
        assert_eq!(split_text("", 3), vec![""]);
    }

    #[test]
    fn key_errors_take_precedence() {
        let s = Script::status(503).key_status("sk-a", StatusReply::new(429));
        assert_eq!(s.error_for(Some("sk-a")).map(|r| r.status), Some(429));
        assert_eq!(s.error_for(Some("sk-b")).map(|r| r.status), Some(503));
        assert_eq!(Script::status_for_key("sk-a", 401).error_for(None), None);
    }
}
