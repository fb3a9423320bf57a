use moltbot_api::CreateResponseRequest;
use serde_json::{Value, json};

use super::*;
use crate::service::ChatError;

fn param_of(e: ChatError) -> String {
    match e {
        ChatError::InvalidRequest { param, .. } => param.unwrap_or_default(),
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

#[test]
fn a_string_input_is_one_user_message_with_an_id() {
    let items = normalize_input(Some(&json!("hello"))).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["type"], "message");
    assert_eq!(items[0]["role"], "user");
    assert_eq!(
        items[0]["content"],
        json!([{"type": "input_text", "text": "hello"}])
    );
    assert!(items[0]["id"].as_str().unwrap().starts_with("msg_"));
    let msgs = items_to_messages(&items);
    assert_eq!(msgs, vec![ChatMessage::text("user", "hello")]);
}

#[test]
fn unknown_item_types_and_bad_fields_are_named() {
    let e = normalize_input(Some(
        &json!([{"role": "user", "content": "a"}, {"type": "web_search_call", "id": "x"}]),
    ))
    .unwrap_err();
    assert_eq!(param_of(e), "input[1].type");
    let e = normalize_input(Some(
        &json!([{"type": "function_call", "call_id": "c", "name": "f"}]),
    ))
    .unwrap_err();
    assert_eq!(param_of(e), "input[0].arguments");
    let e = normalize_input(Some(&json!([{"role": "robot", "content": "a"}]))).unwrap_err();
    assert_eq!(param_of(e), "input[0].role");
    let e = normalize_input(Some(
        &json!([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]),
    ))
    .unwrap_err();
    assert_eq!(param_of(e), "input[0].content[0].type");
    assert_eq!(param_of(normalize_input(Some(&json!([]))).unwrap_err()), "input");
    assert_eq!(param_of(normalize_input(None).unwrap_err()), "input");
    assert_eq!(param_of(normalize_input(Some(&json!(3))).unwrap_err()), "input");
    assert_eq!(
        param_of(normalize_input(Some(&json!([{"content": "x"}]))).unwrap_err()),
        "input[0].type"
    );
}

#[test]
fn function_calls_and_outputs_become_tool_calls_and_tool_messages() {
    let items = normalize_input(Some(&json!([
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "21C"}]},
    ])))
    .unwrap();
    let msgs = items_to_messages(&items);
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    assert_eq!(msgs[1].role, "assistant");
    assert_eq!(msgs[1].content, Some(json!("Checking.")));
    let calls = msgs[1].tool_calls.as_ref().unwrap().as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1]["id"], "call_2");
    assert_eq!(calls[1]["function"]["name"], "weather");
    assert_eq!(calls[1]["function"]["arguments"], "{\"city\":\"Rome\"}");
    assert_eq!(msgs[2].role, "tool");
    assert_eq!(msgs[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(msgs[3].content, Some(json!("21C")));
}

#[test]
fn a_lone_function_call_is_an_assistant_message_with_null_content() {
    let items = normalize_input(Some(&json!([
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    ])))
    .unwrap();
    let msgs = items_to_messages(&items);
    assert_eq!(msgs[0].role, "assistant");
    assert_eq!(msgs[0].content, None);
}

#[test]
fn images_stay_content_parts() {
    let items = normalize_input(Some(&json!([{"role": "user", "content": [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
    ]}])))
    .unwrap();
    let msgs = items_to_messages(&items);
    assert_eq!(
        msgs[0].content,
        Some(json!([
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        ]))
    );
}

#[test]
fn function_tools_take_the_chat_shape_and_other_tools_are_refused() {
    let req: CreateResponseRequest = serde_json::from_value(json!({
        "model": "m",
        "tools": [{"type": "function", "name": "weather", "description": "d", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "weather"},
        "parallel_tool_calls": false,
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
    }))
    .unwrap();
    let t = chat_tools(&req).unwrap();
    assert_eq!(
        t.tools,
        Some(
            json!([{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}, "strict": true}}])
        )
    );
    assert_eq!(
        t.tool_choice,
        Some(json!({"type": "function", "function": {"name": "weather"}}))
    );
    assert_eq!(t.extra.get("parallel_tool_calls"), Some(&json!(false)));
    assert_eq!(
        t.response_format,
        Some(
            json!({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}})
        )
    );

    let req: CreateResponseRequest =
        serde_json::from_value(json!({"model": "m", "tools": [{"type": "web_search"}]})).unwrap();
    assert_eq!(param_of(chat_tools(&req).err().unwrap()), "tools[0].type");
    let req: CreateResponseRequest =
        serde_json::from_value(json!({"model": "m", "text": {"format": {"type": "yaml"}}})).unwrap();
    assert_eq!(param_of(chat_tools(&req).err().unwrap()), "text.format.type");
    let req: CreateResponseRequest =
        serde_json::from_value(json!({"model": "m", "tool_choice": "sometimes"})).unwrap();
    assert_eq!(param_of(chat_tools(&req).err().unwrap()), "tool_choice");
}

#[test]
fn output_items_have_text_then_function_calls_and_round_trip_as_input() {
    let mut reply = ReplyCollector::default();
    reply.absorb(&crate::BackendEvent::Delta {
        content: Some("Let me look.".into()),
        tool_calls: Some(json!([{"index": 0, "id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":"}}])),
    });
    reply.absorb(&crate::BackendEvent::Delta {
        content: None,
        tool_calls: Some(json!([{"index": 0, "function": {"arguments": "\"x\"}"}}])),
    });
    let out = output_items(&reply, None, &[]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["type"], "message");
    assert_eq!(out[0]["content"][0]["text"], "Let me look.");
    assert_eq!(out[1]["type"], "function_call");
    assert_eq!(out[1]["call_id"], "call_9");
    assert_eq!(out[1]["arguments"], "{\"q\":\"x\"}");
    // What a client sends back next: the output, then the function's result.
    let mut next = out.clone();
    next.push(json!({"type": "function_call_output", "call_id": "call_9", "output": "found"}));
    let items = normalize_input(Some(&Value::Array(next))).unwrap();
    let msgs = items_to_messages(&items);
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        msgs[0].tool_calls.as_ref().unwrap()[0]["function"]["arguments"],
        "{\"q\":\"x\"}"
    );
    assert_eq!(msgs[1].role, "tool");
}

#[test]
fn an_empty_reply_is_one_empty_message() {
    let out = output_items(&ReplyCollector::default(), Some("msg_1"), &[]);
    assert_eq!(out, vec![moltbot_api::message_item("msg_1", "completed", "")]);
}

fn base() -> moltbot_api::ResponseObject {
    let req: CreateResponseRequest = serde_json::from_value(json!({"model": "m"})).unwrap();
    response_object("resp_1", 1, "m", &req, None)
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn stream_events_for_text_then_a_call_are_ordered_and_numbered() {
    let mut s = ResponseStreamer::new(base());
    let mut events = s.start();
    events.extend(s.delta(Some("Hel"), None));
    events.extend(s.delta(Some("lo"), None));
    events.extend(s.delta(
        None,
        Some(&json!([{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}])),
    ));
    events.extend(s.delta(
        None,
        Some(&json!([{"index": 0, "function": {"arguments": ":1}"}}])),
    ));
    let (closing, output) = s.finish();
    events.extend(closing);
    let mut done = base();
    done.status = "completed".into();
    done.output = output.clone();
    events.push(s.completed(&done));
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64);
    }
    assert_eq!(events[6]["text"], "Hello");
    assert_eq!(events[12]["arguments"], "{\"a\":1}");
    assert_eq!(events[9]["output_index"], 1);
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["content"][0]["text"], "Hello");
    assert_eq!(output[1]["call_id"], "call_1");
    assert_eq!(output[1]["arguments"], "{\"a\":1}");
    // The ids announced while streaming are the ids of the final items.
    assert_eq!(events[2]["item"]["id"], output[0]["id"]);
    assert_eq!(events[9]["item"]["id"], output[1]["id"]);
}

#[test]
fn two_parallel_calls_are_two_items_and_an_empty_reply_is_one_message() {
    let mut s = ResponseStreamer::new(base());
    s.start();
    s.delta(
        None,
        Some(&json!([{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}])),
    );
    s.delta(
        None,
        Some(&json!([{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}])),
    );
    let (_, output) = s.finish();
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["name"], "f");
    assert_eq!(output[1]["name"], "g");

    let mut s = ResponseStreamer::new(base());
    s.start();
    let (events, output) = s.finish();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["type"], "message");
    assert_eq!(types(&events).last().unwrap(), "response.output_item.done");
}

#[test]
fn a_failure_is_an_error_event_then_response_failed() {
    let mut s = ResponseStreamer::new(base());
    s.start();
    s.delta(Some("partial"), None);
    let events = s.failed("upstream_error", "boom", None);
    assert_eq!(types(&events), ["error", "response.failed"]);
    assert_eq!(events[1]["response"]["status"], "failed");
    assert_eq!(events[1]["response"]["error"]["message"], "boom");
}

#[test]
fn conversation_field_accepts_an_id_or_an_object() {
    assert_eq!(
        conversation_id(Some(&json!("conv_1"))).unwrap(),
        Some("conv_1".into())
    );
    assert_eq!(
        conversation_id(Some(&json!({"id": "conv_2"}))).unwrap(),
        Some("conv_2".into())
    );
    assert_eq!(conversation_id(None).unwrap(), None);
    assert_eq!(
        param_of(conversation_id(Some(&json!(5))).unwrap_err()),
        "conversation"
    );
    assert_eq!(
        param_of(conversation_id(Some(&json!({}))).unwrap_err()),
        "conversation.id"
    );
}
