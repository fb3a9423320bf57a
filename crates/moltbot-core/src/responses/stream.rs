//! The Responses streaming event sequence, built from backend deltas: `response.created`,
//! `response.in_progress`, then per output item `response.output_item.added` → (`content_part.added`,
//! `output_text.delta`…, `output_text.done`, `content_part.done` | `function_call_arguments.delta`…,
//! `function_call_arguments.done`) → `response.output_item.done`, and finally `response.completed`
//! (or `response.incomplete`, or `error` + `response.failed`). Every event carries a
//! `sequence_number`, counting from 0. Pure: the caller frames and sends the events.

use moltbot_api::{ResponseObject, output_text_part};
use serde_json::{Value, json};

use crate::ids;

#[derive(Debug)]
enum Open {
    Message { index: usize, id: String, text: String },
    Call { index: usize, slot: usize },
}

#[derive(Debug)]
struct Call {
    /// The chat delta's `index`.
    chat_index: u64,
    output_index: usize,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
    done: bool,
}

/// Turns one generation into Responses events.
#[derive(Debug)]
pub struct ResponseStreamer {
    base: ResponseObject,
    seq: u64,
    /// Finished items, by output index.
    output: Vec<Option<Value>>,
    open: Option<Open>,
    calls: Vec<Call>,
}

impl ResponseStreamer {
    /// `base` is the response object with `status: in_progress` and no output.
    pub fn new(base: ResponseObject) -> Self {
        Self {
            base,
            seq: 0,
            output: Vec::new(),
            open: None,
            calls: Vec::new(),
        }
    }

    fn event(&mut self, kind: &str, mut body: Value) -> Value {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        body
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<Value> {
        let snapshot = serde_json::to_value(&self.base).unwrap_or(Value::Null);
        vec![
            self.event("response.created", json!({"response": snapshot})),
            self.event("response.in_progress", json!({"response": snapshot})),
        ]
    }

    /// Events for one backend delta (text and/or chat tool-call fragments).
    pub fn delta(&mut self, content: Option<&str>, tool_calls: Option<&Value>) -> Vec<Value> {
        let mut events = Vec::new();
        if let Some(text) = content.filter(|t| !t.is_empty()) {
            if !matches!(self.open, Some(Open::Message { .. })) {
                self.close(&mut events);
                let index = self.output.len();
                self.output.push(None);
                let id = ids::message_id();
                let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
                events.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                ));
                events.push(self.event(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text_part("")}),
                ));
                self.open = Some(Open::Message {
                    index,
                    id,
                    text: String::new(),
                });
            }
            if let Some(Open::Message { index, id, text: buf }) = &mut self.open {
                buf.push_str(text);
                let body = json!({"item_id": id, "output_index": *index, "content_index": 0, "delta": text, "logprobs": []});
                events.push(self.event("response.output_text.delta", body));
            }
        }
        for frag in tool_calls.and_then(Value::as_array).into_iter().flatten() {
            self.call_fragment(frag, &mut events);
        }
        events
    }

    fn call_fragment(&mut self, frag: &Value, events: &mut Vec<Value>) {
        let chat_index = frag
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(self.calls.len() as u64);
        let f = frag.get("function").unwrap_or(&Value::Null);
        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("");
        let slot = match self.calls.iter().position(|c| c.chat_index == chat_index) {
            Some(slot) => slot,
            None => {
                self.close(events);
                let output_index = self.output.len();
                self.output.push(None);
                let call = Call {
                    chat_index,
                    output_index,
                    id: ids::new_id("fc"),
                    call_id: frag
                        .get("id")
                        .and_then(Value::as_str)
                        .map_or_else(|| ids::new_id("call"), str::to_owned),
                    name: name.to_owned(),
                    arguments: String::new(),
                    done: false,
                };
                let item =
                    moltbot_api::function_call_item(&call.id, &call.call_id, &call.name, "", "in_progress");
                events.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                ));
                self.calls.push(call);
                let slot = self.calls.len() - 1;
                self.open = Some(Open::Call {
                    index: output_index,
                    slot,
                });
                slot
            }
        };
        let call = &mut self.calls[slot];
        if call.name.is_empty() && !name.is_empty() {
            name.clone_into(&mut call.name);
        }
        if !args.is_empty() {
            call.arguments.push_str(args);
            if !call.done {
                let body = json!({"item_id": call.id, "output_index": call.output_index, "delta": args});
                events.push(self.event("response.function_call_arguments.delta", body));
            }
        }
    }

    /// Close the open item: its `…done` events and `response.output_item.done`.
    fn close(&mut self, events: &mut Vec<Value>) {
        match self.open.take() {
            None => {}
            Some(Open::Message { index, id, text }) => {
                events.push(self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                ));
                events.push(self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text_part(&text)}),
                ));
                let item = moltbot_api::message_item(&id, "completed", &text);
                events.push(self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                ));
                self.output[index] = Some(item);
            }
            Some(Open::Call { index, slot }) => {
                let call = &mut self.calls[slot];
                call.done = true;
                let item = moltbot_api::function_call_item(
                    &call.id,
                    &call.call_id,
                    &call.name,
                    &call.arguments,
                    "completed",
                );
                let body = json!({"item_id": call.id, "output_index": index, "name": call.name, "arguments": call.arguments});
                events.push(self.event("response.function_call_arguments.done", body));
                events.push(self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                ));
                self.output[index] = Some(item);
            }
        }
    }

    /// Close the open item and return its events with the finished output (no item when the reply
    /// was empty: then one empty message, as the non-streaming response has).
    pub fn finish(&mut self) -> (Vec<Value>, Vec<Value>) {
        let mut events = Vec::new();
        if self.output.is_empty() {
            // An empty reply still has one (empty) message item, announced and closed.
            let index = 0;
            let id = ids::message_id();
            let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
            self.output.push(None);
            events.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
            events.push(self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text_part("")}),
            ));
            self.open = Some(Open::Message {
                index,
                id,
                text: String::new(),
            });
        }
        self.close(&mut events);
        // Calls whose later fragments came after another item opened were closed without their rest:
        // their final items carry the whole arguments.
        for call in &self.calls {
            self.output[call.output_index] = Some(moltbot_api::function_call_item(
                &call.id,
                &call.call_id,
                &call.name,
                &call.arguments,
                "completed",
            ));
        }
        let output = self.output.iter().flatten().cloned().collect();
        (events, output)
    }

    /// The final event: `response.completed`, or `response.incomplete` when `status` says so.
    pub fn completed(&mut self, response: &ResponseObject) -> Value {
        let kind = if response.status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let body = json!({"response": response});
        self.event(kind, body)
    }

    /// A failure after the stream started: an `error` event, then `response.failed`.
    pub fn failed(&mut self, code: &str, message: &str, param: Option<&str>) -> Vec<Value> {
        let error = self.event("error", json!({"code": code, "message": message, "param": param}));
        let mut response = self.base.clone();
        response.status = "failed".into();
        response.error = Some(json!({"code": code, "message": message}));
        response.output = self.output.iter().flatten().cloned().collect();
        let failed = self.event("response.failed", json!({"response": response}));
        vec![error, failed]
    }

    /// The base object (for building the final one).
    pub fn base(&self) -> &ResponseObject {
        &self.base
    }
}
