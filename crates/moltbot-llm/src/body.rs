//! The upstream request body.

use moltbot_core::BackendRequest;
use serde_json::{Map, Value, json};

/// Always streaming with usage. Known fields win over same-named `extra` fields; every other `extra`
/// field is forwarded unchanged.
pub(crate) fn request_body(req: &BackendRequest) -> Value {
    let mut m = Map::new();
    m.insert("model".into(), Value::String(req.model.clone()));
    m.insert(
        "messages".into(),
        serde_json::to_value(&req.messages).unwrap_or(Value::Array(Vec::new())),
    );
    m.insert("stream".into(), Value::Bool(true));
    m.insert("stream_options".into(), json!({"include_usage": true}));
    let max_key = if req.use_max_completion_tokens {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    m.insert(max_key.into(), Value::from(req.max_tokens));
    let mut opt = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    opt("temperature", req.temperature.map(f32_value));
    opt("top_p", req.top_p.map(f32_value));
    opt("stop", (!req.stop.is_empty()).then(|| json!(req.stop)));
    opt("seed", req.seed.map(Value::from));
    opt("user", req.user.clone().map(Value::String));
    opt("tools", req.tools.clone());
    opt("tool_choice", req.tool_choice.clone());
    opt("response_format", req.response_format.clone());
    for (k, v) in &req.extra {
        m.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(m)
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
        let b = request_body(&req);
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
}
