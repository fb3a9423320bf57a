//! Pure conversion of backend events into OpenAI chat completion chunks and responses, independent of
//! the transport (SSE, WebSocket, plain JSON).

use moltbot_api::{AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, Delta, Usage};
use serde_json::Value;

use crate::backend::BackendEvent;

/// Builds the chunks of one streamed completion: the role in the first delta, the same `id` and
/// `created` on every chunk, `finish_reason` only on the last content chunk, and with `include_usage`
/// a final chunk with `choices: []` (and `usage: null` on all the others).
#[derive(Debug, Clone)]
pub struct ChunkAssembler {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    sent_role: bool,
    /// What every written delta starts with, up to the delta's `{`: the same for the whole stream, so
    /// serialized (and its strings escaped) once instead of per chunk.
    head: Vec<u8>,
}

impl ChunkAssembler {
    pub fn new(id: &str, created: i64, model: &str, include_usage: bool) -> Self {
        let mut head = Vec::with_capacity(128 + id.len() + model.len());
        head.extend_from_slice(b"{\"id\":");
        json_str(&mut head, id);
        head.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        head.extend_from_slice(created.to_string().as_bytes());
        head.extend_from_slice(b",\"model\":");
        json_str(&mut head, model);
        head.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{");
        Self {
            id: id.to_owned(),
            created,
            model: model.to_owned(),
            include_usage,
            sent_role: false,
            head,
        }
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Value>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: if self.include_usage {
                Some(usage.unwrap_or(Value::Null))
            } else {
                None
            },
        }
    }

    fn take_role(&mut self) -> Option<String> {
        if self.sent_role {
            None
        } else {
            self.sent_role = true;
            Some("assistant".into())
        }
    }

    /// A content or tool-call delta.
    pub fn delta(&mut self, content: Option<String>, tool_calls: Option<Value>) -> ChatCompletionChunk {
        let role = self.take_role();
        let delta = Delta {
            role,
            content,
            tool_calls,
        };
        self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: None,
                logprobs: None,
            }],
            None,
        )
    }

    /// [`delta`](Self::delta) written straight to JSON (byte for byte the same), without building the
    /// owned chunk: the per-chunk path of streaming. Only the delta's fields are serialized per chunk.
    pub fn write_delta(&mut self, content: Option<&str>, tool_calls: Option<&Value>, out: &mut Vec<u8>) {
        out.reserve(self.head.len() + 64 + content.map_or(0, str::len));
        out.extend_from_slice(&self.head);
        let mut first = true;
        let mut field = |out: &mut Vec<u8>, name: &[u8]| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.extend_from_slice(name);
        };
        if !self.sent_role {
            field(out, b"\"role\":\"assistant\"");
        }
        if let Some(c) = content {
            field(out, b"\"content\":");
            json_str(out, c);
        }
        if let Some(t) = tool_calls {
            field(out, b"\"tool_calls\":");
            // Writing a JSON value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, t);
        }
        self.sent_role = true;
        out.extend_from_slice(b"},\"finish_reason\":null,\"logprobs\":null}]");
        if self.include_usage {
            out.extend_from_slice(b",\"usage\":null");
        }
        out.push(b'}');
    }

    /// The last content chunk, carrying the finish reason (and the role if nothing came before).
    pub fn finish(&mut self, reason: &str) -> ChatCompletionChunk {
        let role = self.take_role();
        let delta = Delta {
            role,
            content: None,
            tool_calls: None,
        };
        self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: Some(reason.to_owned()),
                logprobs: None,
            }],
            None,
        )
    }

    /// The usage chunk, only with `include_usage`.
    pub fn usage(&self, usage: &Usage) -> Option<ChatCompletionChunk> {
        self.include_usage
            .then(|| self.chunk(Vec::new(), serde_json::to_value(usage).ok()))
    }
}

/// `text` as a JSON string (quoted, escaped as serde_json escapes it).
fn json_str(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(out, text);
}

/// Collects a whole reply for a non-streaming response.
#[derive(Debug, Default, Clone)]
pub struct ReplyCollector {
    pub content: String,
    pub tool_calls: Vec<Value>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}

impl ReplyCollector {
    /// Take one backend event into the reply.
    pub fn absorb(&mut self, event: &BackendEvent) {
        match event {
            BackendEvent::Delta { content, tool_calls } => {
                if let Some(c) = content {
                    self.content.push_str(c);
                }
                if let Some(t) = tool_calls {
                    self.push_tool_calls(t);
                }
            }
            BackendEvent::Finish { reason } => self.finish_reason = Some(reason.clone()),
            BackendEvent::Usage(u) => self.usage = Some(u.clone()),
        }
    }

    /// Merge tool-call deltas (OpenAI's shape: fragments keyed by `index`, `arguments` concatenated).
    pub fn push_tool_calls(&mut self, calls: &Value) {
        let Some(arr) = calls.as_array() else { return };
        for c in arr {
            let idx = c
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(self.tool_calls.len() as u64) as usize;
            while self.tool_calls.len() <= idx {
                self.tool_calls
                    .push(serde_json::json!({"type": "function", "function": {"arguments": ""}}));
            }
            let slot = &mut self.tool_calls[idx];
            if let Some(id) = c.get("id") {
                slot["id"] = id.clone();
            }
            if let Some(t) = c.get("type") {
                slot["type"] = t.clone();
            }
            if let Some(f) = c.get("function") {
                if let Some(name) = f.get("name") {
                    slot["function"]["name"] = name.clone();
                }
                if let Some(args) = f.get("arguments").and_then(Value::as_str) {
                    let prev = slot["function"]["arguments"].as_str().unwrap_or("").to_owned();
                    slot["function"]["arguments"] = Value::String(prev + args);
                }
            }
        }
    }

    pub fn tool_calls_value(&self) -> Option<Value> {
        (!self.tool_calls.is_empty()).then(|| Value::Array(self.tool_calls.clone()))
    }

    pub fn into_completion(self, id: &str, created: i64, model: &str, usage: Usage) -> ChatCompletion {
        let tool_calls = self.tool_calls_value();
        let content = if self.content.is_empty() && tool_calls.is_some() {
            None
        } else {
            Some(self.content)
        };
        ChatCompletion {
            id: id.to_owned(),
            object: "chat.completion".into(),
            created,
            model: model.to_owned(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content,
                    tool_calls,
                    refusal: None,
                },
                finish_reason: Some(self.finish_reason.unwrap_or_else(|| "stop".into())),
                logprobs: None,
            }],
            usage,
            system_fingerprint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_first_finish_last_usage_separate() {
        let mut a = ChunkAssembler::new("chatcmpl-1", 7, "m", true);
        let c1 = serde_json::to_value(a.delta(Some("Hel".into()), None)).unwrap();
        let c2 = serde_json::to_value(a.delta(Some("lo".into()), None)).unwrap();
        let fin = serde_json::to_value(a.finish("stop")).unwrap();
        let u = serde_json::to_value(a.usage(&Usage::new(3, 2)).unwrap()).unwrap();
        assert_eq!(c1["choices"][0]["delta"]["role"], "assistant");
        assert!(c2["choices"][0]["delta"].get("role").is_none());
        assert_eq!(c1["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(fin["choices"][0]["finish_reason"], "stop");
        for c in [&c1, &c2, &fin] {
            assert_eq!(c["usage"], Value::Null);
            assert!(c.as_object().unwrap().contains_key("usage"));
            assert_eq!(c["id"], "chatcmpl-1");
            assert_eq!(c["created"], 7);
        }
        assert_eq!(u["choices"], serde_json::json!([]));
        assert_eq!(u["usage"]["total_tokens"], 5);
    }

    #[test]
    fn written_deltas_are_the_owned_chunks_byte_for_byte() {
        let calls =
            serde_json::json!([{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}]);
        for include_usage in [false, true] {
            let mut owned = ChunkAssembler::new("chatcmpl-9", 42, "model \"x\"", include_usage);
            let mut fast = owned.clone();
            let steps: [(Option<&str>, Option<&Value>); 5] = [
                (Some("He said \"hi\"\n\u{1F600}"), None),
                (Some("again"), None),
                (None, Some(&calls)),
                (Some("both"), Some(&calls)),
                (None, None),
            ];
            for (content, tools) in steps {
                let want =
                    serde_json::to_vec(&owned.delta(content.map(str::to_owned), tools.cloned())).unwrap();
                let mut got = Vec::new();
                fast.write_delta(content, tools, &mut got);
                assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
            }
        }
    }

    #[test]
    fn without_include_usage_there_is_no_usage_field() {
        let mut a = ChunkAssembler::new("x", 1, "m", false);
        let c = serde_json::to_value(a.delta(Some("a".into()), None)).unwrap();
        assert!(c.get("usage").is_none());
        assert!(a.usage(&Usage::new(1, 1)).is_none());
    }

    #[test]
    fn tool_call_fragments_merge() {
        let mut r = ReplyCollector::default();
        r.push_tool_calls(&serde_json::json!([{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]));
        r.push_tool_calls(&serde_json::json!([{"index":0,"function":{"arguments":":1}"}}]));
        let v = r.tool_calls_value().unwrap();
        assert_eq!(v[0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(v[0]["id"], "call_1");
    }
}
