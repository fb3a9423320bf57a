//! The fake's streamed body: chunk payloads, SSE framing (plain or hostile) and the steps that write it.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::script::{Failure, Script, split_text};

/// One thing the body stream does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Wait, then send these bytes.
    Data(Duration, Bytes),
    /// End the body with an error: hyper closes the connection without the chunked terminator.
    Abort,
    /// Never produce anything again.
    Stall,
}

/// What the reply consists of, resolved from the script and the request.
pub(crate) struct Answer<'a> {
    pub id: String,
    pub model: String,
    pub text: String,
    pub include_usage: bool,
    pub prompt_tokens: u32,
    pub script: &'a Script,
}

impl Answer<'_> {
    fn chunk(&self, delta: &Value, finish: Option<&str>) -> Value {
        let mut c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    pub fn usage(&self) -> Value {
        let (p, c) = self.script.usage_tokens.unwrap_or((
            self.prompt_tokens,
            split_text(&self.text, self.script.chunks).len() as u32,
        ));
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    }

    /// The non-streaming `chat.completion`.
    pub fn completion(&self) -> Value {
        let mut message = json!({"role": "assistant", "content": self.text, "refusal": null});
        if let Some(tc) = &self.script.tool_call {
            message["tool_calls"] = json!([{"id": tc.id, "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments}}]);
        }
        let mut c = json!({
            "id": self.id, "object": "chat.completion", "created": 1_700_000_000, "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.script.finish_reason,
                "logprobs": null}],
        });
        // A whole reply carries its usage unless the script says never.
        if self.script.usage != crate::UsageMode::Never {
            c["usage"] = self.usage();
        }
        c
    }

    /// The non-streamed reply as steps, as an upstream that generates before it answers: the pauses
    /// the stream would have had (summed), then the whole `chat.completion`. With `fail_after`, the
    /// pauses up to the failure point and then: half the body and a broken connection (`Abort`), a
    /// complete body that is not JSON (`Garbage`), or half the body and silence (`Stall`).
    pub fn json_steps(&self) -> Vec<Step> {
        let s = self.script;
        let body = Bytes::from(self.completion().to_string());
        let parts = split_text(&self.text, s.chunks).len();
        let tool_parts = s
            .tool_call
            .as_ref()
            .map_or(0, |tc| 1 + split_text(&tc.arguments, s.chunks).len());
        let pauses = |n: usize| s.chunk_interval * u32::try_from(n).unwrap_or(u32::MAX);
        let Some((k, how)) = s.fail_after else {
            return vec![Step::Data(pauses(parts - 1 + tool_parts), body)];
        };
        let delay = pauses(k.max(1));
        let half = body.slice(..body.len() / 2);
        match how {
            Failure::Abort => vec![Step::Data(delay, half), Step::Abort],
            Failure::Garbage => vec![Step::Data(delay, Bytes::from_static(b"{\"choices\": [garb"))],
            Failure::Stall => vec![Step::Data(delay, half), Step::Stall],
        }
    }

    /// The SSE body as steps.
    pub fn steps(&self) -> Vec<Step> {
        let s = self.script;
        // (delay before, payload); `None` payload = the failure point.
        let mut events: Vec<(Duration, Option<String>)> = Vec::new();
        let role = self.chunk(&json!({"role": "assistant", "content": ""}), None);
        events.push((Duration::ZERO, Some(role.to_string())));
        let parts = split_text(&self.text, s.chunks);
        for (i, part) in parts.iter().enumerate() {
            if let Some((k, _)) = s.fail_after
                && k == i
            {
                events.push((s.chunk_interval, None));
                break;
            }
            let delay = if i == 0 { Duration::ZERO } else { s.chunk_interval };
            events.push((
                delay,
                Some(self.chunk(&json!({"content": part}), None).to_string()),
            ));
        }
        let failed = events.last().is_some_and(|e| e.1.is_none());
        if !failed {
            if let Some((k, _)) = s.fail_after
                && k >= parts.len()
            {
                events.push((s.chunk_interval, None));
            } else {
                self.push_tail(&mut events);
            }
        }
        self.frame(events)
    }

    fn push_tail(&self, events: &mut Vec<(Duration, Option<String>)>) {
        let s = self.script;
        if let Some(tc) = &s.tool_call {
            let head = json!({"tool_calls": [{"index": 0, "id": tc.id, "type": "function",
                "function": {"name": tc.name, "arguments": ""}}]});
            events.push((s.chunk_interval, Some(self.chunk(&head, None).to_string())));
            for part in split_text(&tc.arguments, s.chunks) {
                let d = json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]});
                events.push((s.chunk_interval, Some(self.chunk(&d, None).to_string())));
            }
        }
        events.push((
            Duration::ZERO,
            Some(self.chunk(&json!({}), Some(&s.finish_reason)).to_string()),
        ));
        let usage = match s.usage {
            crate::UsageMode::WhenRequested => self.include_usage,
            crate::UsageMode::Always => true,
            crate::UsageMode::Never => false,
        };
        if usage {
            let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": self.model, "choices": [], "usage": self.usage()});
            events.push((Duration::ZERO, Some(c.to_string())));
        }
        events.push((Duration::ZERO, Some("[DONE]".to_owned())));
    }

    fn frame(&self, events: Vec<(Duration, Option<String>)>) -> Vec<Step> {
        let mut steps = Vec::new();
        for (i, (delay, payload)) in events.into_iter().enumerate() {
            let Some(payload) = payload else {
                let how = self.script.fail_after.map_or(Failure::Abort, |f| f.1);
                if how == Failure::Garbage {
                    steps.push(Step::Data(
                        delay,
                        Bytes::from_static(b"data: {\"choices\": [garb\n\n"),
                    ));
                }
                steps.push(if how == Failure::Stall {
                    Step::Stall
                } else {
                    Step::Abort
                });
                return steps;
            };
            if self.script.hostile {
                hostile_pieces(i, &payload, delay, &mut steps);
            } else {
                steps.push(Step::Data(delay, Bytes::from(format!("data: {payload}\n\n"))));
            }
        }
        steps
    }
}

/// Frames one event hostilely and cuts it into pieces at awkward points.
fn hostile_pieces(index: usize, payload: &str, delay: Duration, steps: &mut Vec<Step>) {
    let eol = if index % 3 == 2 { "\r" } else { "\r\n" };
    let mut text = String::new();
    if index % 2 == 1 {
        text.push_str(&format!(": keep-alive{eol}{eol}"));
    }
    text.push_str(&format!("id: {index}{eol}event: message{eol}"));
    // Multi-line data: pretty-printed JSON, one `data:` line per line (joined back with `\n`).
    let body = serde_json::from_str::<Value>(payload)
        .ok()
        .filter(|_| index.is_multiple_of(2))
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| payload.to_owned());
    let sp = if index.is_multiple_of(2) { "" } else { " " };
    for line in body.lines() {
        text.push_str(&format!("data:{sp}{line}{eol}"));
    }
    text.push_str(eol);

    let b = text.as_bytes();
    let mut start = 0;
    let mut first = true;
    for i in 1..b.len() {
        let cut = b[i - 1] >= 0xC0 // just after the lead byte of a multi-byte character
            || b[i - 1] == b'\r' // between CR and LF, or between two line ends
            || (b[i - 1] == b'\n' && b[i] == b'\r')
            || (i >= 2 && &b[i - 2..i] == b"da"); // inside `data:`
        if cut {
            let d = if first { delay } else { Duration::from_millis(1) };
            steps.push(Step::Data(d, Bytes::copy_from_slice(&b[start..i])));
            start = i;
            first = false;
        }
    }
    let d = if first { delay } else { Duration::from_millis(1) };
    steps.push(Step::Data(d, Bytes::copy_from_slice(&b[start..])));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(steps: &[Step]) -> String {
        let mut out = Vec::new();
        for s in steps {
            if let Step::Data(_, b) = s {
                out.extend_from_slice(b);
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn reply(script: &Script) -> Answer<'_> {
        Answer {
            id: "c1".into(),
            model: "m".into(),
            text: "你好🌍 world".into(),
            include_usage: true,
            prompt_tokens: 2,
            script,
        }
    }

    #[test]
    fn plain_stream_has_done_and_usage() {
        let s = Script::text("x").chunks(2);
        let b = body(&reply(&s).steps());
        assert!(b.ends_with("data: [DONE]\n\n"));
        assert!(b.contains("\"prompt_tokens\":2"));
    }

    #[test]
    fn hostile_pieces_cut_inside_characters() {
        let s = Script::text("x").hostile();
        let steps = reply(&s).steps();
        let cut_inside_char = steps.iter().any(|s| match s {
            Step::Data(_, b) => std::str::from_utf8(b).is_err(),
            _ => false,
        });
        assert!(cut_inside_char);
        assert!(body(&steps).contains("\r\n"));
    }

    #[test]
    fn failure_stops_the_stream() {
        let s = Script::text("abcdef").chunks(3).fail_after(1, Failure::Garbage);
        let steps = reply(&s).steps();
        assert_eq!(steps.last(), Some(&Step::Abort));
        assert!(!body(&steps).contains("[DONE]"));
    }

    #[test]
    fn a_whole_reply_comes_after_the_pauses_or_breaks_off() {
        let ms = Duration::from_millis;
        let s = Script::text("abcdef").chunks(3).chunk_interval(ms(10));
        let steps = reply(&s).json_steps();
        let [Step::Data(delay, bytes)] = steps.as_slice() else {
            panic!("{steps:?}")
        };
        assert_eq!(*delay, ms(20));
        let whole: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(whole["choices"][0]["message"]["content"], "你好🌍 world");
        assert_eq!(whole["usage"]["completion_tokens"], 3);

        let cut = s.clone().fail_after(2, Failure::Abort);
        let steps = reply(&cut).json_steps();
        assert!(matches!(&steps[..], [Step::Data(d, half), Step::Abort]
            if *d == ms(20) && half.len() * 2 <= bytes.len() + 1 && serde_json::from_slice::<Value>(half).is_err()));
        let stall = s.clone().fail_after(0, Failure::Stall);
        assert!(matches!(
            reply(&stall).json_steps()[..],
            [Step::Data(..), Step::Stall]
        ));
        let garbage = s.fail_after(1, Failure::Garbage);
        let steps = reply(&garbage).json_steps();
        assert!(matches!(&steps[..], [Step::Data(_, b)] if serde_json::from_slice::<Value>(b).is_err()));
    }
}
