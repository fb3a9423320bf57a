//! Mapping OpenAI stream chunks (and a non-streamed `chat.completion`) to [`BackendEvent`]s, enforcing
//! the order: deltas, one `Finish`, then optionally `Usage`.

use moltbot_api::Usage;
use moltbot_core::{BackendError, BackendEvent};
use serde_json::Value;

use crate::errors::Redactor;

/// Stateful mapper for one stream.
#[derive(Debug, Default)]
pub(crate) struct ChunkMapper {
    finished: bool,
    usage: Option<Usage>,
    usage_sent: bool,
    /// `[DONE]` seen: nothing more is expected.
    pub done: bool,
}

type Out = Vec<Result<BackendEvent, BackendError>>;

impl ChunkMapper {
    /// Handles one SSE event's data.
    pub fn on_data(&mut self, data: &str, redactor: &Redactor, out: &mut Out) -> Result<(), BackendError> {
        if self.done {
            return Ok(());
        }
        if data.trim() == "[DONE]" {
            self.done = true;
            self.finish("stop", out);
            return Ok(());
        }
        let chunk = parse::<ChunkChoice>(data)
            .map_err(|e| BackendError::Protocol(format!("upstream sent an event that is not JSON ({e})")))?;
        if let Some(err) = chunk.error.filter(|e| !e.is_null()) {
            return Err(BackendError::Protocol(format!(
                "upstream error in stream: {}",
                redactor.message(&error_message(&err))
            )));
        }
        if let Some(choice) = chunk.choice {
            let ChoiceContent { content, tool_calls } = choice.content;
            let content = content.filter(|s| !s.is_empty());
            if !self.finished && (content.is_some() || tool_calls.is_some()) {
                out.push(Ok(BackendEvent::Delta { content, tool_calls }));
            }
            if let Some(reason) = &choice.finish_reason {
                self.finish(reason, out);
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
            if self.finished {
                self.flush_usage(out);
            }
        }
        Ok(())
    }

    fn finish(&mut self, reason: &str, out: &mut Out) {
        if !self.finished {
            self.finished = true;
            out.push(Ok(BackendEvent::Finish {
                reason: reason.to_owned(),
            }));
        }
        self.flush_usage(out);
    }

    fn flush_usage(&mut self, out: &mut Out) {
        if !self.usage_sent
            && let Some(u) = self.usage.take()
        {
            self.usage_sent = true;
            out.push(Ok(BackendEvent::Usage(u)));
        }
    }

    /// The body ended. Fine after `[DONE]` or a finish reason; otherwise the stream was cut short.
    pub fn on_end(&mut self, out: &mut Out) {
        if self.finished {
            self.flush_usage(out);
        } else if !self.done {
            out.push(Err(BackendError::Protocol(
                "upstream closed the stream before finishing".into(),
            )));
        }
    }
}

/// What a stream chunk or a whole `chat.completion` says, in the fields moltbot reads.
#[derive(Debug, Default)]
struct Parsed {
    error: Option<Value>,
    /// The first choice with index 0 (`None`: no `choices` array, or no such choice in it).
    choice: Option<ChoiceParts>,
    usage: Option<Usage>,
}

/// A choice's text and tool calls (a chunk's `delta`, a completion's `message`) and finish reason.
#[derive(Debug, Default)]
struct ChoiceParts {
    content: ChoiceContent,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ChoiceContent {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Value>,
}

/// A choice as one kind of body names its content: a chunk's `delta` or a completion's `message`.
trait Choice {
    /// The key of the content object.
    const CONTENT: &'static str;
    fn index(&self) -> u64;
    fn into_parts(self) -> ChoiceParts;
}

#[derive(Debug, serde::Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    delta: Option<ChoiceContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

impl Choice for ChunkChoice {
    const CONTENT: &'static str = "delta";
    fn index(&self) -> u64 {
        self.index.unwrap_or(0)
    }
    fn into_parts(self) -> ChoiceParts {
        ChoiceParts {
            content: self.delta.unwrap_or_default(),
            finish_reason: self.finish_reason,
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct ReplyChoice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    message: Option<ChoiceContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

impl Choice for ReplyChoice {
    const CONTENT: &'static str = "message";
    fn index(&self) -> u64 {
        self.index.unwrap_or(0)
    }
    fn into_parts(self) -> ChoiceParts {
        ChoiceParts {
            content: self.message.unwrap_or_default(),
            finish_reason: self.finish_reason,
        }
    }
}

/// The typed shape of a well-formed chunk or completion: unknown fields are skipped without building
/// a tree.
#[derive(Debug, serde::Deserialize)]
#[serde(bound = "C: serde::Deserialize<'de> + Choice")]
struct Typed<C> {
    #[serde(default)]
    choices: Option<FirstChoice<C>>,
    #[serde(default)]
    usage: Option<TypedUsage>,
    #[serde(default)]
    error: Option<Value>,
}

/// The first choice with index 0 of a `choices` array, read without collecting the array.
#[derive(Debug)]
struct FirstChoice<T>(Option<T>);

impl<'de, T: serde::Deserialize<'de> + Choice> serde::Deserialize<'de> for FirstChoice<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Choices<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de> + Choice> serde::de::Visitor<'de> for Choices<T> {
            type Value = FirstChoice<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of choices")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<FirstChoice<T>, A::Error> {
                let mut first = None;
                while let Some(c) = seq.next_element::<T>()? {
                    if first.is_none() && c.index() == 0 {
                        first = Some(c);
                    }
                }
                Ok(FirstChoice(first))
            }
        }
        d.deserialize_seq(Choices(std::marker::PhantomData))
    }
}

/// `usage` with integer counts (other shapes take the generic path).
#[derive(Debug, serde::Deserialize)]
struct TypedUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

/// Parse a chunk (`C` = [`ChunkChoice`]) or a completion ([`ReplyChoice`]): the typed fast path for the
/// common shape, else (odd types, duplicate keys) the same reading from a generic JSON tree. From a `&str`:
/// its UTF-8 was checked once already, where reading bytes would check every string of it again.
fn parse<C: serde::de::DeserializeOwned + Choice>(body: &str) -> Result<Parsed, serde_json::Error> {
    if let Ok(typed) = serde_json::from_str::<Typed<C>>(body) {
        return Ok(Parsed {
            error: typed.error,
            choice: typed.choices.and_then(|c| c.0).map(Choice::into_parts),
            usage: typed
                .usage
                .and_then(|u| usage_from(u.prompt_tokens, u.completion_tokens, u.total_tokens)),
        });
    }
    let v: Value = serde_json::from_str(body)?;
    let choice = first_choice(&v).map(|c| {
        let content = &c[C::CONTENT];
        ChoiceParts {
            content: ChoiceContent {
                content: content["content"].as_str().map(str::to_owned),
                tool_calls: Some(&content["tool_calls"]).filter(|t| !t.is_null()).cloned(),
            },
            finish_reason: c["finish_reason"].as_str().map(str::to_owned),
        }
    });
    Ok(Parsed {
        error: v.get("error").cloned(),
        choice,
        usage: v.get("usage").and_then(parse_usage),
    })
}

/// An `error` object's `message`, or the whole value as JSON.
fn error_message(err: &Value) -> String {
    err.get("message")
        .and_then(Value::as_str)
        .map_or_else(|| err.to_string(), str::to_owned)
}

fn first_choice(v: &Value) -> Option<&Value> {
    let choices = v["choices"].as_array()?;
    choices.iter().find(|c| c["index"].as_u64().unwrap_or(0) == 0)
}

fn parse_usage(v: &Value) -> Option<Usage> {
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    usage_from(n("prompt_tokens"), n("completion_tokens"), n("total_tokens"))
}

/// Usage from its counts: none without `prompt_tokens`; counts beyond `u32` saturate.
fn usage_from(prompt: Option<u64>, completion: Option<u64>, total: Option<u64>) -> Option<Usage> {
    let n = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
    let prompt = n(prompt?);
    let completion = completion.map_or(0, n);
    let total = total.map_or(prompt.saturating_add(completion), n);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: total,
    })
}

/// The events of a non-streamed `chat.completion` (asked for by a caller that wants the whole reply,
/// or sent by an upstream that ignored `stream: true`).
pub(crate) fn completion_events(body: &[u8], redactor: &Redactor) -> Result<Vec<BackendEvent>, BackendError> {
    let invalid = |e: serde_json::Error| BackendError::Protocol(format!("upstream sent invalid JSON ({e})"));
    let completion = match std::str::from_utf8(body) {
        Ok(text) => parse::<ReplyChoice>(text).map_err(invalid)?,
        Err(e) => {
            return Err(BackendError::Protocol(format!(
                "upstream sent a body that is not UTF-8 ({e})"
            )));
        }
    };
    if let Some(err) = completion.error.filter(|e| !e.is_null()) {
        return Err(BackendError::Protocol(format!(
            "upstream error: {}",
            redactor.message(&error_message(&err))
        )));
    }
    let choice = completion
        .choice
        .ok_or_else(|| BackendError::Protocol("upstream completion has no choices".into()))?;
    let ChoiceContent { content, tool_calls } = choice.content;
    let content = content.filter(|s| !s.is_empty());
    // Tool calls in the delta shape: each with its `index`.
    let tool_calls = tool_calls.and_then(|calls| match calls {
        Value::Array(mut calls) => {
            for (i, c) in calls.iter_mut().enumerate() {
                if let Some(obj) = c.as_object_mut() {
                    obj.entry("index").or_insert(Value::from(i));
                }
            }
            Some(Value::Array(calls))
        }
        _ => None,
    });
    let mut events = Vec::with_capacity(3);
    if content.is_some() || tool_calls.is_some() {
        events.push(BackendEvent::Delta { content, tool_calls });
    }
    let reason = choice.finish_reason.unwrap_or_else(|| "stop".to_owned());
    events.push(BackendEvent::Finish { reason });
    if let Some(u) = completion.usage {
        events.push(BackendEvent::Usage(u));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(datas: &[&str], end: bool) -> Out {
        let mut m = ChunkMapper::default();
        let mut out = Vec::new();
        for d in datas {
            if let Err(e) = m.on_data(d, &Redactor::default(), &mut out) {
                out.push(Err(e));
            }
        }
        if end {
            m.on_end(&mut out);
        }
        out
    }

    fn chunk(delta: Value, finish: Value) -> String {
        let mut c = json!({"choices": [{"index": 0}], "usage": null});
        c["choices"][0]["delta"] = delta;
        c["choices"][0]["finish_reason"] = finish;
        c.to_string()
    }

    fn delta(s: &str) -> Result<BackendEvent, BackendError> {
        Ok(BackendEvent::Delta {
            content: Some(s.into()),
            tool_calls: None,
        })
    }

    #[test]
    fn maps_deltas_finish_usage_in_order() {
        let usage =
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        let out = run(
            &[
                &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                &chunk(json!({"content": "Hi"}), Value::Null),
                &chunk(json!({}), json!("length")),
                &usage.to_string(),
                "[DONE]",
            ],
            true,
        );
        assert_eq!(
            out,
            vec![
                delta("Hi"),
                Ok(BackendEvent::Finish {
                    reason: "length".into()
                }),
                Ok(BackendEvent::Usage(Usage::new(3, 2)))
            ]
        );
    }

    #[test]
    fn usage_before_finish_is_held_back_and_done_without_finish_synthesizes_stop() {
        let early = json!({"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}});
        let out = run(&[&early.to_string(), "[DONE]"], true);
        assert_eq!(
            out,
            vec![
                delta("a"),
                Ok(BackendEvent::Finish {
                    reason: "stop".into()
                }),
                Ok(BackendEvent::Usage(Usage::new(1, 1)))
            ]
        );
    }

    #[test]
    fn tool_calls_pass_through() {
        let tc = json!([{"index": 0, "function": {"arguments": "{\"a\""}}]);
        let out = run(&[&chunk(json!({"tool_calls": tc}), Value::Null)], false);
        assert_eq!(
            out,
            vec![Ok(BackendEvent::Delta {
                content: None,
                tool_calls: Some(tc)
            })]
        );
    }

    #[test]
    fn truncated_garbage_and_error_events() {
        let out = run(&[&chunk(json!({"content": "a"}), Value::Null)], true);
        assert!(matches!(out.last(), Some(Err(BackendError::Protocol(_)))));
        assert!(matches!(
            run(&["{nope"], false)[0],
            Err(BackendError::Protocol(_))
        ));
        let err = json!({"error": {"message": "overloaded"}}).to_string();
        assert!(
            matches!(&run(&[&err], false)[0], Err(BackendError::Protocol(m)) if m.contains("overloaded"))
        );
        // A finish without [DONE] is a complete stream.
        assert!(
            run(&[&chunk(json!({}), json!("stop"))], true)
                .iter()
                .all(Result::is_ok)
        );
    }

    #[test]
    fn non_streamed_completion() {
        let body = json!({"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "x", "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "f", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}});
        let ev = completion_events(body.to_string().as_bytes(), &Redactor::default()).unwrap();
        let BackendEvent::Delta { content, tool_calls } = &ev[0] else {
            panic!()
        };
        assert_eq!(content.as_deref(), Some("x"));
        assert_eq!(tool_calls.as_ref().unwrap()[0]["index"], 0);
        assert_eq!(
            ev[1],
            BackendEvent::Finish {
                reason: "tool_calls".into()
            }
        );
        assert_eq!(ev[2], BackendEvent::Usage(Usage::new(4, 1)));
        let err = json!({"error": {"message": "quota"}}).to_string();
        let got = completion_events(err.as_bytes(), &Redactor::default());
        assert!(matches!(got, Err(BackendError::Protocol(m)) if m.contains("quota")));
    }
}
