//! Grammar-constrained output on local models: `response_format` JSON schema and tool calls. The tiny
//! model has random weights, so whatever it produces is the grammar's doing: a valid call or valid
//! JSON every time is the proof that the constraint works. Gemma (the real default model) checks a
//! JSON schema on a model that could otherwise write anything.

mod common;

use std::sync::Arc;

use common::{backend, collect, config, request};
use futures::StreamExt;
use moltbot_core::{BackendError, BackendEvent, ChatBackend};
use moltbot_engine::LocalBackend;
use serde_json::{Value, json};

/// A compact Hermes-style template (the format Qwen 2.5 and Hermes use): tools in the system turn,
/// calls as `<tool_call>` JSON, results as `<tool_response>`.
const HERMES: &str = r#"{%- if tools %}<|im_start|>system
You can call functions. Available tools:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Call one as <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{%- for call in message.tool_calls %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

fn hermes_backend() -> Arc<LocalBackend> {
    // The byte-level vocabulary makes the tools prompt ~650 tokens.
    let config = moltbot_engine::EngineConfig {
        context_per_slot: 2048,
        ..config("tiny-tools", 1)
    };
    Arc::new(LocalBackend::start(config, Some(HERMES)).expect("start tiny model"))
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]},
            "unit": {"enum": ["C", "F"]}}, "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
            "required": ["zone"], "additionalProperties": false}}}])
}

/// Tool calls of a whole stream, assembled, and the finish reason.
async fn calls_of(b: &LocalBackend, req: moltbot_core::BackendRequest) -> (String, Vec<Value>, String) {
    let mut stream = b.chat(req).await.unwrap();
    let (mut text, mut calls, mut finish) = (String::new(), Vec::new(), String::new());
    while let Some(ev) = stream.next().await {
        match ev.unwrap() {
            BackendEvent::Delta { content, tool_calls } => {
                text.push_str(content.as_deref().unwrap_or(""));
                calls.extend(tool_calls.and_then(|c| c.as_array().cloned()).unwrap_or_default());
            }
            BackendEvent::Finish { reason } => finish = reason,
            BackendEvent::Usage(_) => {}
        }
    }
    (text, calls, finish)
}

#[tokio::test]
async fn required_tool_choice_always_yields_a_valid_call() {
    let b = hermes_backend();
    for seed in 0..4 {
        let mut req = request("What's the weather in Rome?", 600);
        req.tools = Some(weather_tools());
        req.tool_choice = Some(json!("required"));
        req.temperature = Some(1.0);
        req.seed = Some(seed);
        let (text, calls, finish) = calls_of(&b, req).await;
        assert_eq!(finish, "tool_calls", "seed {seed}: {text:?}");
        assert_eq!(text, "", "seed {seed}");
        assert_eq!(calls.len(), 1, "seed {seed}: {calls:?}");
        let f = &calls[0]["function"];
        let args: Value = serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap();
        match f["name"].as_str().unwrap() {
            "get_weather" => {
                assert!(
                    ["Paris", "Rome", "Oslo"].contains(&args["city"].as_str().unwrap()),
                    "{args}"
                );
                assert!(["C", "F"].contains(&args["unit"].as_str().unwrap()), "{args}");
            }
            "get_time" => assert!(["UTC", "CET"].contains(&args["zone"].as_str().unwrap()), "{args}"),
            other => panic!("not a tool: {other}"),
        }
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    }
}

#[tokio::test]
async fn a_named_tool_choice_calls_that_tool() {
    let b = hermes_backend();
    let mut req = request("What time is it?", 600);
    req.tools = Some(weather_tools());
    req.tool_choice = Some(json!({"type": "function", "function": {"name": "get_time"}}));
    let (_, calls, finish) = calls_of(&b, req).await;
    assert_eq!(finish, "tool_calls");
    assert_eq!(calls[0]["function"]["name"], "get_time");
}

#[tokio::test]
async fn tool_results_render_through_the_template() {
    let b = hermes_backend();
    let mut req = request("weather?", 8);
    req.messages.push(moltbot_api::ChatMessage {
        role: "assistant".into(),
        content: None,
        tool_calls: Some(json!([{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\",\"unit\":\"C\"}"}}])),
        ..Default::default()
    });
    req.messages.push(moltbot_api::ChatMessage {
        role: "tool".into(),
        content: Some(json!("-3 degrees")),
        tool_call_id: Some("call_1".into()),
        ..Default::default()
    });
    let prompt = b
        .render_tools(&req.messages, Some(&weather_tools()))
        .unwrap()
        .text;
    assert!(prompt.contains("\"name\":\"get_weather\""), "{prompt}");
    assert!(
        prompt.contains(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Oslo\",\"unit\":\"C\"}}"
        ),
        "{prompt}"
    );
    assert!(
        prompt.contains("<tool_response>\n-3 degrees\n</tool_response>"),
        "{prompt}"
    );
    req.tools = Some(weather_tools());
    req.tool_choice = Some(json!("auto"));
    // `auto`: free text unless the model opens a call; either way the stream is well-formed.
    let (_, calls, finish) = calls_of(&b, req).await;
    assert!(finish == "tool_calls" && !calls.is_empty() || finish != "tool_calls" && calls.is_empty());
}

#[tokio::test]
async fn a_template_without_tools_is_a_400_naming_tools() {
    let b = backend("tiny-plain", 1);
    let mut req = request("x", 4);
    req.tools = Some(weather_tools());
    let Err(e) = b.chat(req).await else {
        panic!("tools accepted by a template without them")
    };
    assert!(
        matches!(e, BackendError::Unsupported { ref param, .. } if param == "tools"),
        "{e:?}"
    );
    // `tool_choice: none` means plain chat, so it is fine.
    let mut req = request("x", 4);
    req.tools = Some(weather_tools());
    req.tool_choice = Some(json!("none"));
    assert!(b.chat(req).await.is_ok());
}

#[tokio::test]
async fn json_schema_output_is_valid_json_of_the_schema_even_from_random_weights() {
    let b = backend("tiny-json", 1);
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"},
        "level": {"enum": ["low", "high"]}}, "required": ["ok", "level"], "additionalProperties": false});
    for seed in 0..4 {
        let mut req = request("Answer in JSON.", 64);
        req.response_format =
            Some(json!({"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}));
        req.temperature = Some(1.0);
        req.seed = Some(seed);
        let reply = collect(b.chat(req).await.unwrap()).await.unwrap();
        let v: Value = serde_json::from_str(&reply.text)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}: {:?}", reply.text));
        assert!(v["ok"].is_boolean(), "{v}");
        assert!(["low", "high"].contains(&v["level"].as_str().unwrap()), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
        assert_eq!(reply.finish, "stop");
    }
    let mut req = request("x", 4);
    req.response_format = Some(json!({"type": "json_schema", "json_schema": {"name": "r"}}));
    let Err(e) = b.chat(req).await else {
        panic!("a schema-less json_schema was accepted")
    };
    assert!(
        matches!(e, BackendError::InvalidRequest { param: Some(ref p), .. } if p == "response_format.json_schema.schema"),
        "{e:?}"
    );
}
