//! Local (llama.cpp) models through the real server: `/v1/models`, chat, remote → local fallback,
//! 400s for parameters a local model cannot honour, and models registered in the database.

mod common;

use common::{start_config, user};
use moltbot_core::RegisteredModel;
use moltbot_engine::gguf::{SyntheticShape, TensorType, write_synthetic};
use moltbot_server::BuildOptions;
use serde_json::json;

/// A config whose remote model is unreachable (connection refused) and falls back to a local tiny
/// model.
fn config(dir: &std::path::Path) -> moltbot_config::Config {
    let model = dir.join("tiny.gguf");
    write_synthetic(&model, &SyntheticShape::tiny(), TensorType::F32, 3).unwrap();
    let extra = format!(
        "fallbacks = [\"tiny\"]\n\n[[models]]\nname = \"tiny\"\nbackend = \"local\"\nmodel_path = \"{}\"\n\
         context_window = 512\nmax_tokens = 64\nthreads = 1\nparallel = 2\n",
        model.display()
    );
    common::config(dir, "http://127.0.0.1:1/v1", &extra)
}

#[tokio::test]
async fn local_models_are_listed_chat_and_catch_remote_failures() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let server = start_config(cfg, dir).await;

    let models: serde_json::Value = server.get("/v1/models").await.json().await.unwrap();
    let tiny = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "tiny")
        .cloned();
    assert_eq!(tiny.unwrap()["owned_by"], "moltbot-local");

    let (status, body) = server
        .chat(json!({"model": "tiny", "messages": [user("Hello")], "max_tokens": 8}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() <= 8,
        "{body}"
    );
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{body}");

    // The remote model is down: the local fallback answers.
    let (status, body) = server
        .chat(json!({"model": "gpt-test", "messages": [user("Hello")], "max_tokens": 4}))
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = server
        .chat(json!({"model": "tiny", "messages": [user("x")], "tools": [{"type": "function", "function": {"name": "f"}}]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "tools", "{body}");

    let (status, body) = server
        .chat(json!({"model": "tiny", "messages": [user("x")], "max_tokens": 600}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    server.stop().await;
}

fn registered(name: &str, path: &std::path::Path) -> RegisteredModel {
    let (sha256, md5) = moltbot_engine::fetch::digests(path).unwrap();
    RegisteredModel {
        name: name.into(),
        source: path.display().to_string(),
        local_path: path.display().to_string(),
        sha256,
        md5,
        quantization: "none".into(),
        context_window: 256,
        max_tokens: 32,
        gpu_layers: 0,
        created_at: 1,
    }
}

#[tokio::test]
async fn registered_models_are_served_and_config_names_win() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = moltbot_server::app::open_store(&cfg, BuildOptions::default())
        .await
        .unwrap();
    store
        .upsert_model(&registered("tiny-registered", &dir.path().join("tiny.gguf")))
        .await
        .unwrap();
    let server = start_config(cfg.clone(), dir).await;
    let (status, body) = server
        .chat(json!({"model": "tiny-registered", "messages": [user("Hi")], "max_tokens": 4}))
        .await;
    assert_eq!(status, 200, "{body}");
    // A registered name that the config file also defines refuses to start.
    store
        .upsert_model(&registered("tiny", &server.dir.path().join("tiny.gguf")))
        .await
        .unwrap();
    let err = moltbot_server::build_state(cfg, BuildOptions::default())
        .await
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("defined in the config file"),
        "{err:#}"
    );
    server.stop().await;
}

/// A Hermes-style template (tools in the system turn, `<tool_call>` JSON), as a `chat_template` override.
const HERMES: &str = r#"{%- if tools %}<|im_start|>system
<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools>
Call a tool as <tool_call>
{"name": <name>, "arguments": <object>}
</tool_call><|im_end|>
{% endif %}{%- for message in messages %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endfor %}{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

#[tokio::test]
async fn responses_api_on_a_local_model_with_json_output_and_tool_calls() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    write_synthetic(&model, &SyntheticShape::tiny(), TensorType::F32, 5).unwrap();
    // A JSON string is a valid TOML basic string (same escapes).
    let template = serde_json::to_string(HERMES).unwrap();
    let extra = format!(
        "[[models]]\nname = \"tiny\"\nbackend = \"local\"\nmodel_path = \"{}\"\ncontext_window = 2048\n\
         max_tokens = 600\nthreads = 1\nparallel = 1\n\n[[models]]\nname = \"tiny-tools\"\nbackend = \"local\"\n\
         model_path = \"{}\"\ncontext_window = 2048\nmax_tokens = 600\nthreads = 1\nparallel = 1\nchat_template = {template}\n",
        model.display(),
        model.display()
    );
    let cfg = common::config(dir.path(), "http://127.0.0.1:1/v1", &extra);
    let server = start_config(cfg, dir).await;

    // JSON schema output from random weights: valid every time, because of the grammar.
    let schema = json!({"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
        "required": ["answer"], "additionalProperties": false});
    let r = server
        .post(
            "/v1/responses",
            json!({"model": "tiny", "input": "Is it raining?", "temperature": 1.0,
                   "text": {"format": {"type": "json_schema", "name": "a", "schema": schema}}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let text = body["output"][0]["content"][0]["text"].as_str().unwrap();
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert!(["yes", "no"].contains(&v["answer"].as_str().unwrap()), "{v}");

    // A required tool call, streamed, through the Responses event sequence.
    let tools = json!([{"type": "function", "name": "set_light",
        "parameters": {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"],
                       "additionalProperties": false}}]);
    let body = server
        .post(
            "/v1/responses",
            json!({"model": "tiny-tools", "input": "Lights on", "tools": tools, "tool_choice": "required",
                   "stream": true}),
        )
        .await
        .text()
        .await
        .unwrap();
    let last: serde_json::Value = body
        .split("\n\n")
        .filter_map(|f| f.split_once("\ndata: "))
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .last()
        .unwrap();
    assert_eq!(last["type"], "response.completed", "{body}");
    let call = &last["response"]["output"][0];
    assert_eq!(call["type"], "function_call", "{body}");
    assert_eq!(call["name"], "set_light");
    let args: serde_json::Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(args["on"].is_boolean(), "{args}");

    // The chatml model without tool support refuses tools by name.
    let r = server
        .post(
            "/v1/responses",
            json!({"model": "tiny", "input": "x", "tools": tools}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "tools");
    server.stop().await;
}
