//! OpenAI's Responses API over a Chat Completions upstream: create (plain and streamed), retrieve,
//! delete, input items, `previous_response_id` chains, conversations, function calling, bad input.

mod common;

use common::*;
use moltbot_testkit::Script;
use serde_json::{Value, json};

async fn create(srv: &TestServer, body: Value) -> (u16, Value) {
    let r = srv.post("/v1/responses", body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn output_text(resp: &Value) -> String {
    resp["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap().iter())
        .filter_map(|p| p["text"].as_str())
        .collect()
}

/// The messages of the `n`-th chat request the fake received.
fn upstream_messages(fake: &moltbot_testkit::FakeUpstream, n: usize) -> Vec<Value> {
    fake.chat_requests()[n].body["messages"]
        .as_array()
        .unwrap()
        .clone()
}

/// The JSON payloads of an SSE body of `event:` + `data:` frames.
fn events_of(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|f| f.split_once("\ndata: "))
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect()
}

fn roles_and_texts(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn create_retrieve_input_items_and_delete() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let (status, resp) = create(
        &srv,
        json!({"model": "gpt-test", "input": "Hello there", "instructions": "Be brief.", "metadata": {"k": "v"}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let id = resp["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"), "{id}");
    assert_eq!(resp["object"], "response");
    assert_eq!(resp["status"], "completed");
    assert_eq!(resp["model"], "gpt-test");
    assert_eq!(output_text(&resp), "echo: Hello there");
    assert_eq!(resp["output"][0]["role"], "assistant");
    assert_eq!(resp["output"][0]["status"], "completed");
    assert_eq!(resp["instructions"], "Be brief.");
    assert_eq!(resp["metadata"]["k"], "v");
    let usage = &resp["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()
    );
    assert!(usage["output_tokens"].as_u64().unwrap() > 0);
    // The upstream saw the instructions as a system message, then the input.
    assert_eq!(
        roles_and_texts(&upstream_messages(&fake, 0)),
        [
            ("system".into(), "Be brief.".into()),
            ("user".into(), "Hello there".into())
        ]
    );

    let got: Value = srv
        .get(&format!("/v1/responses/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, resp);
    let items: Value = srv
        .get(&format!("/v1/responses/{id}/input_items"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["type"], "message");
    assert_eq!(items["data"][0]["role"], "user");
    assert_eq!(
        items["data"][0]["content"][0],
        json!({"type": "input_text", "text": "Hello there"})
    );
    assert_eq!(items["has_more"], false);
    assert_eq!(items["first_id"], items["data"][0]["id"]);

    // Usage is recorded like a chat turn.
    let usage_rows = srv.state.store.list_usage(&srv.key_id, 10).await.unwrap();
    assert_eq!(usage_rows.len(), 1);
    assert_eq!(usage_rows[0].outcome, "ok");

    let del: Value = srv
        .http
        .delete(srv.url(&format!("/v1/responses/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(del, json!({"id": id, "object": "response", "deleted": true}));
    let r = srv.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "response_not_found");
    assert_eq!(body["error"]["param"], "response_id");
}

#[tokio::test]
async fn input_items_paginate_in_both_orders() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let input: Vec<Value> = (1..=5)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let (_, resp) = create(&srv, json!({"model": "gpt-test", "input": input})).await;
    let id = resp["id"].as_str().unwrap();
    let texts = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["content"][0]["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let page: Value = srv
        .get(&format!("/v1/responses/{id}/input_items?limit=2"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(texts(&page), ["m5", "m4"]);
    assert_eq!(page["has_more"], true);
    let after = page["last_id"].as_str().unwrap();
    let page: Value = srv
        .get(&format!("/v1/responses/{id}/input_items?limit=10&after={after}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(texts(&page), ["m3", "m2", "m1"]);
    assert_eq!(page["has_more"], false);
    let asc: Value = srv
        .get(&format!("/v1/responses/{id}/input_items?order=asc&limit=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(texts(&asc), ["m1"]);
    let r = srv.get(&format!("/v1/responses/{id}/input_items?order=up")).await;
    assert_eq!(r.status(), 400);
    let r = srv
        .get(&format!("/v1/responses/{id}/input_items?after=msg_nope"))
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn previous_response_id_carries_input_and_output_but_not_instructions() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let (_, first) = create(
        &srv,
        json!({"model": "gpt-test", "input": "My name is Ada.", "instructions": "First rules."}),
    )
    .await;
    let (_, second) = create(
        &srv,
        json!({"model": "gpt-test", "input": "What is my name?", "previous_response_id": first["id"],
               "instructions": "Second rules."}),
    )
    .await;
    assert_eq!(second["previous_response_id"], first["id"]);
    assert_eq!(
        roles_and_texts(&upstream_messages(&fake, 1)),
        [
            ("system".into(), "Second rules.".into()),
            ("user".into(), "My name is Ada.".into()),
            ("assistant".into(), "echo: My name is Ada.".into()),
            ("user".into(), "What is my name?".into()),
        ]
    );
    // A third link sees the whole chain.
    let (_, _third) = create(
        &srv,
        json!({"model": "gpt-test", "input": "And again?", "previous_response_id": second["id"]}),
    )
    .await;
    let msgs = roles_and_texts(&upstream_messages(&fake, 2));
    assert_eq!(msgs.len(), 5, "{msgs:?}");
    assert_eq!(msgs[0], ("user".into(), "My name is Ada.".into()));
    assert_eq!(msgs[3], ("assistant".into(), "echo: What is my name?".into()));

    // Branching: another response on the first one does not see the second.
    let (_, branch) = create(
        &srv,
        json!({"model": "gpt-test", "input": "Branch", "previous_response_id": first["id"]}),
    )
    .await;
    assert_eq!(branch["status"], "completed");
    assert_eq!(upstream_messages(&fake, 3).len(), 3);

    // Another key cannot continue (or read) this key's responses.
    let (_, other) = create_key(&srv.state, &[moltbot_core::Scope::Chat], Default::default()).await;
    let r = client(&other)
        .post(srv.url("/v1/responses"))
        .json(&json!({"model": "gpt-test", "input": "hi", "previous_response_id": first["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client(&other)
        .get(srv.url(&format!("/v1/responses/{}", first["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn store_false_is_not_retrievable_nor_continuable() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let (status, resp) = create(&srv, json!({"model": "gpt-test", "input": "x", "store": false})).await;
    assert_eq!(status, 200);
    assert_eq!(resp["store"], false);
    assert_eq!(
        srv.get(&format!("/v1/responses/{}", resp["id"].as_str().unwrap()))
            .await
            .status(),
        404
    );
    let (status, err) = create(
        &srv,
        json!({"model": "gpt-test", "input": "y", "previous_response_id": resp["id"]}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["param"], "previous_response_id");
}

#[tokio::test]
async fn a_conversation_gets_the_items_and_gives_the_context() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let conv: Value = srv
        .post(
            "/v1/conversations",
            json!({"items": [{"role": "user", "content": "The code is 4711."}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let conv_id = conv["id"].as_str().unwrap();
    let (status, resp) = create(
        &srv,
        json!({"model": "gpt-test", "input": "What is the code?", "conversation": conv_id,
               "instructions": "Answer from the conversation."}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["conversation"], json!({"id": conv_id}));
    assert_eq!(
        roles_and_texts(&upstream_messages(&fake, 0)),
        [
            ("system".into(), "Answer from the conversation.".into()),
            ("user".into(), "The code is 4711.".into()),
            ("user".into(), "What is the code?".into()),
        ]
    );
    let items: Value = srv
        .get(&format!("/v1/conversations/{conv_id}/items?order=asc"))
        .await
        .json()
        .await
        .unwrap();
    let texts: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap())
        .collect();
    // The instructions are not stored in the conversation; input and output are.
    assert_eq!(
        texts,
        [
            "The code is 4711.",
            "What is the code?",
            "echo: What is the code?"
        ]
    );

    // The object form of `conversation` works too, and the next turn sees the previous one.
    let (status, _) = create(
        &srv,
        json!({"model": "gpt-test", "input": "Thanks", "conversation": {"id": conv_id}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(upstream_messages(&fake, 1).len(), 4);
}

#[tokio::test]
async fn bad_input_is_refused_by_name() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let cases = [
        (
            json!({"model": "gpt-test", "input": "x", "previous_response_id": "resp_missing"}),
            404,
            "previous_response_id",
        ),
        (
            json!({"model": "gpt-test", "input": "x", "conversation": "conv_missing"}),
            404,
            "conversation",
        ),
        (
            json!({"model": "gpt-test", "input": "x", "conversation": "conv_a", "previous_response_id": "resp_b"}),
            400,
            "conversation",
        ),
        (
            json!({"model": "gpt-test", "input": [{"type": "computer_call", "id": "x"}]}),
            400,
            "input[0].type",
        ),
        (
            json!({"model": "gpt-test", "input": "x", "tools": [{"type": "file_search"}]}),
            400,
            "tools[0].type",
        ),
        (json!({"model": "gpt-test"}), 400, "input"),
        (
            json!({"model": "gpt-test", "input": "x", "max_output_tokens": 0}),
            400,
            "max_output_tokens",
        ),
        (
            json!({"model": "gpt-test", "input": "x", "temperature": 7}),
            400,
            "temperature",
        ),
        (json!({"model": "nope", "input": "x"}), 404, "model"),
    ];
    for (body, status, param) in cases {
        let (got, err) = create(&srv, body.clone()).await;
        assert_eq!(got, status, "{body} -> {err}");
        assert_eq!(err["error"]["param"], param, "{body} -> {err}");
    }
    // Nothing reached the upstream.
    assert_eq!(fake.chat_requests().len(), 0);
}

#[tokio::test]
async fn streaming_follows_the_event_sequence_and_stores_before_completing() {
    let fake = fake_with(Script::echo().chunks(3)).await;
    let srv = start(&fake).await;
    let r = srv
        .post(
            "/v1/responses",
            json!({"model": "gpt-test", "input": "stream me", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = r.text().await.unwrap();
    let frames: Vec<&str> = body.split("\n\n").filter(|f| !f.is_empty()).collect();
    let mut events = Vec::new();
    for f in &frames {
        let (ev, data) = f.split_once('\n').unwrap();
        let ev = ev.strip_prefix("event: ").unwrap();
        let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], ev, "the event name is the payload's type");
        events.push(data);
    }
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(types.last().unwrap(), &"response.completed");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64);
    }
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "echo: stream me");
    assert!(
        types
            .iter()
            .filter(|t| **t == "response.output_text.delta")
            .count()
            >= 2
    );
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(output_text(done), "echo: stream me");
    // Stored before `response.completed` was sent: readable at once, identical.
    let id = done["id"].as_str().unwrap();
    let got: Value = srv
        .get(&format!("/v1/responses/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(&got, done);
    assert_eq!(events[0]["response"]["status"], "in_progress");
}

#[tokio::test]
async fn a_stream_that_fails_upstream_ends_with_error_and_response_failed() {
    let fake = fake_with(
        Script::text("partial reply here")
            .chunks(4)
            .fail_after(2, moltbot_testkit::Failure::Abort),
    )
    .await;
    let srv = start(&fake).await;
    let body = srv
        .post(
            "/v1/responses",
            json!({"model": "gpt-test", "input": "x", "stream": true}),
        )
        .await
        .text()
        .await
        .unwrap();
    let events = events_of(&body);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or("")).collect();
    assert!(types.contains(&"response.output_text.delta"), "{types:?}");
    assert_eq!(types[types.len() - 2..], ["error", "response.failed"], "{body}");
    assert_eq!(events.last().unwrap()["response"]["status"], "failed");
    let id = events[0]["response"]["id"].as_str().unwrap();
    assert_eq!(
        srv.get(&format!("/v1/responses/{id}")).await.status(),
        404,
        "a failed response is not stored"
    );
}

#[tokio::test]
async fn function_calling_round_trip_through_a_chat_upstream() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let (status, first) = create(
        &srv,
        json!({"model": "gpt-test", "input": "call get_weather {\"city\":\"Paris\"}", "tools": tools,
               "tool_choice": "auto", "parallel_tool_calls": false}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let sent = &fake.chat_requests()[0].body;
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(sent["tools"][0]["function"]["parameters"]["required"][0], "city");
    assert_eq!(sent["tool_choice"], "auto");
    assert_eq!(sent["parallel_tool_calls"], false);
    let output = first["output"].as_array().unwrap();
    assert_eq!(output.len(), 1, "{first}");
    let call = &output[0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], "{\"city\":\"Paris\"}");
    let call_id = call["call_id"].as_str().unwrap();

    let (status, second) = create(
        &srv,
        json!({"model": "gpt-test", "previous_response_id": first["id"], "tools": tools,
               "input": [{"type": "function_call_output", "call_id": call_id, "output": "18C and sunny"}]}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(output_text(&second), "echo: tool result: 18C and sunny");
    let msgs = upstream_messages(&fake, 1);
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"], Value::Null);
    assert_eq!(msgs[1]["tool_calls"][0]["id"], call_id);
    assert_eq!(
        msgs[1]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(msgs[2]["role"], "tool");
    assert_eq!(msgs[2]["tool_call_id"], call_id);
}

#[tokio::test]
async fn streamed_function_calls_are_assembled_into_items() {
    let fake = fake_with(Script::echo().chunks(4)).await;
    let srv = start(&fake).await;
    let tools = json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
    let body = srv
        .post(
            "/v1/responses",
            json!({"model": "gpt-test", "stream": true, "tools": tools,
                   "input": "call lookup {\"query\":\"moltbot gateway\"}"}),
        )
        .await
        .text()
        .await
        .unwrap();
    let events = events_of(&body);
    let arg_deltas: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert!(arg_deltas.len() >= 2, "{body}");
    assert_eq!(arg_deltas.concat(), "{\"query\":\"moltbot gateway\"}");
    let done = events
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done["arguments"], "{\"query\":\"moltbot gateway\"}");
    let completed = &events.last().unwrap()["response"];
    assert_eq!(completed["output"][0]["type"], "function_call");
    assert_eq!(completed["output"][0]["name"], "lookup");
    assert_eq!(
        completed["output"][0]["arguments"],
        "{\"query\":\"moltbot gateway\"}"
    );
    assert_eq!(completed["output"].as_array().unwrap().len(), 1);
    let stored: Value = srv
        .get(&format!("/v1/responses/{}", completed["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(&stored, completed);
}

#[tokio::test]
async fn tool_calls_in_a_conversation_are_kept_for_the_next_turn() {
    let fake = fake_with(Script::echo()).await;
    let srv = start(&fake).await;
    let tools = json!([{"type": "function", "name": "add", "parameters": {"type": "object"}}]);
    let conv: Value = srv
        .post("/v1/conversations", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let conv_id = conv["id"].as_str().unwrap();
    let (_, first) = create(
        &srv,
        json!({"model": "gpt-test", "conversation": conv_id, "tools": tools, "input": "call add {\"a\":1,\"b\":2}"}),
    )
    .await;
    let call_id = first["output"][0]["call_id"].as_str().unwrap();
    let (status, second) = create(
        &srv,
        json!({"model": "gpt-test", "conversation": conv_id, "tools": tools,
               "input": [{"type": "function_call_output", "call_id": call_id, "output": "3"}]}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(output_text(&second), "echo: tool result: 3");
    // The stored assistant turn carried its tool call into the next request's context.
    let msgs = upstream_messages(&fake, 1);
    assert_eq!(msgs[1]["tool_calls"][0]["id"], call_id, "{msgs:?}");
    assert_eq!(msgs[2]["role"], "tool");
}

#[tokio::test]
async fn text_format_json_schema_becomes_response_format() {
    let fake = fake_with(Script::text("{\"ok\":true}")).await;
    let srv = start(&fake).await;
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]});
    let (status, resp) = create(
        &srv,
        json!({"model": "gpt-test", "input": "json please",
               "text": {"format": {"type": "json_schema", "name": "result", "schema": schema, "strict": true}}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(resp["text"]["format"]["type"], "json_schema");
    let sent = &fake.chat_requests()[0].body;
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["name"], "result");
    assert_eq!(sent["response_format"]["json_schema"]["schema"], schema);
}

#[tokio::test]
async fn max_output_tokens_reaching_the_limit_is_incomplete() {
    let fake = fake_with(Script::text("cut").finish_reason("length")).await;
    let srv = start(&fake).await;
    let (status, resp) = create(
        &srv,
        json!({"model": "gpt-test", "input": "x", "max_output_tokens": 5}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(resp["status"], "incomplete");
    assert_eq!(resp["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(fake.chat_requests()[0].body["max_tokens"], 5);
}
