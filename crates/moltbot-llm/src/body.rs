//! The upstream request body.

use moltbot_core::BackendRequest;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// The upstream request body, written straight from the request (no intermediate JSON tree): a stream
/// with usage when the second field is true, else `"stream": false` (one JSON reply, which carries its
/// usage anyway). Known fields win over same-named `extra` fields; every other `extra` field is forwarded
/// unchanged.
pub(crate) struct RequestBody<'a>(pub &'a BackendRequest, pub bool);

#[derive(serde::Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// Write one known field and remember its key (a known field wins over a same-named `extra` one).
fn put<M, V>(m: &mut M, written: &mut Vec<&'static str>, key: &'static str, value: &V) -> Result<(), M::Error>
where
    M: SerializeMap,
    V: Serialize + ?Sized,
{
    written.push(key);
    m.serialize_entry(key, value)
}

impl Serialize for RequestBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (req, stream) = (self.0, self.1);
        let w = &mut Vec::with_capacity(16);
        let mut m = serializer.serialize_map(None)?;
        put(&mut m, w, "model", &req.model)?;
        put(&mut m, w, "messages", &req.messages)?;
        put(&mut m, w, "stream", &stream)?;
        if stream {
            put(
                &mut m,
                w,
                "stream_options",
                &StreamOptions { include_usage: true },
            )?;
        } else {
            // Not valid without a stream: never forwarded from `extra` either.
            w.push("stream_options");
        }
        let max_key = if req.use_max_completion_tokens {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        put(&mut m, w, max_key, &req.max_tokens)?;
        if let Some(t) = req.temperature {
            put(&mut m, w, "temperature", &f32_value(t))?;
        }
        if let Some(p) = req.top_p {
            put(&mut m, w, "top_p", &f32_value(p))?;
        }
        if !req.stop.is_empty() {
            put(&mut m, w, "stop", &req.stop)?;
        }
        if let Some(seed) = req.seed {
            put(&mut m, w, "seed", &seed)?;
        }
        if let Some(user) = &req.user {
            put(&mut m, w, "user", user)?;
        }
        for (key, value) in [
            ("tools", &req.tools),
            ("tool_choice", &req.tool_choice),
            ("response_format", &req.response_format),
        ] {
            if let Some(v) = value {
                put(&mut m, w, key, v)?;
            }
        }
        for (k, v) in &req.extra {
            if !w.contains(&k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

/// The body as a JSON tree (tests).
#[cfg(test)]
pub(crate) fn request_body(req: &BackendRequest, stream: bool) -> Value {
    serde_json::to_value(RequestBody(req, stream)).unwrap_or(Value::Null)
}

/// `0.7f32` as `0.7`, not `0.699999988079071`.
fn f32_value(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .map(Value::from)
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use moltbot_api::ChatMessage;
    use serde_json::{Map, json};

    use super::*;

    #[test]
    fn forwards_parameters_and_extra() {
        let mut extra = Map::new();
        extra.insert("logit_bias".into(), json!({"50256": -100}));
        extra.insert("stream".into(), json!(false));
        let req = BackendRequest {
            model: "gpt".into(),
            messages: vec![ChatMessage::text("user", "hi")],
            max_tokens: 7,
            use_max_completion_tokens: true,
            temperature: Some(0.7),
            stop: vec!["\n".into()],
            seed: Some(1),
            tool_choice: Some(json!("auto")),
            extra,
            ..Default::default()
        };
        let b = request_body(&req, true);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["max_completion_tokens"], 7);
        assert!(b.get("max_tokens").is_none() && b.get("top_p").is_none());
        assert_eq!(b["temperature"], json!(0.7));
        assert_eq!(b["stop"], json!(["\n"]));
        assert_eq!(b["tool_choice"], "auto");
        assert_eq!(b["logit_bias"], json!({"50256": -100}));
        assert_eq!(b["messages"][0]["content"], "hi");
    }

    #[test]
    fn each_key_is_written_once_and_unknown_fields_pass_through() {
        let mut extra = Map::new();
        extra.insert("stream".into(), json!(false));
        extra.insert("model".into(), json!("other"));
        extra.insert("top_p".into(), json!(0.5));
        extra.insert("logprobs".into(), json!(true));
        let req = BackendRequest {
            model: "gpt".into(),
            messages: vec![ChatMessage::text("user", "hi")],
            max_tokens: 3,
            extra,
            ..Default::default()
        };
        let raw = serde_json::to_string(&RequestBody(&req, true)).unwrap();
        for key in [
            "\"stream\":",
            "\"model\":",
            "\"top_p\":",
            "\"logprobs\":",
            "\"max_tokens\":",
        ] {
            assert_eq!(raw.matches(key).count(), 1, "{key} in {raw}");
        }
        let b: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            (b["model"].clone(), b["stream"].clone()),
            (json!("gpt"), json!(true))
        );
        // A field moltbot does not set itself is the client's, forwarded as sent.
        assert_eq!(
            (b["top_p"].clone(), b["logprobs"].clone()),
            (json!(0.5), json!(true))
        );
    }

    #[test]
    fn a_whole_reply_is_asked_for_without_stream_options() {
        let mut extra = Map::new();
        extra.insert("stream".into(), json!(true));
        extra.insert("stream_options".into(), json!({"include_usage": true}));
        let req = BackendRequest {
            model: "gpt".into(),
            messages: vec![ChatMessage::text("user", "hi")],
            max_tokens: 3,
            extra,
            ..Default::default()
        };
        let raw = serde_json::to_string(&RequestBody(&req, false)).unwrap();
        assert_eq!(raw.matches("\"stream\":").count(), 1, "{raw}");
        let b: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(b["stream"], false);
        // The client's own `stream_options` would be invalid without a stream: it is not forwarded.
        assert!(b.get("stream_options").is_none(), "{raw}");
    }
}
