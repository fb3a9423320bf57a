//! The Responses API over the chat service: input items ⇄ chat messages, function tools ⇄ chat tools,
//! the reply as output items, and the stored response record. Pure conversions; the HTTP handler
//! (moltbot-server `routes/responses.rs`) drives them.
//!
//! Every backend speaks Chat Completions, so a Responses request is bridged: `instructions` becomes a
//! system message, `input` items become messages (`function_call` → an assistant message with
//! `tool_calls`, `function_call_output` → a `tool` message), function tools and `tool_choice` take
//! the chat shape, `text.format` becomes `response_format`; the reply comes back as a `message` item
//! and one `function_call` item per tool call.

mod stream;

use async_trait::async_trait;
use moltbot_api::{
    ChatCompletionRequest, ChatMessage, CreateResponseRequest, ResponseObject, ResponseUsage, Usage,
};
use serde_json::{Map, Value, json};

pub use stream::ResponseStreamer;

use crate::assemble::ReplyCollector;
use crate::domain::Owner;
use crate::ids;
use crate::service::{ChatError, TurnInput};
use crate::store::{Store, StoreResult};

/// The most responses followed back through `previous_response_id`.
pub const MAX_CHAIN: usize = 256;

/// A stored response: the object as returned, the input items it was given (with ids), and the links
/// the context is rebuilt from.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseRecord {
    pub id: String,
    pub owner: String,
    pub previous_response_id: Option<String>,
    pub conversation_id: Option<String>,
    pub input: Vec<Value>,
    /// The response object (`ResponseObject`) as JSON.
    pub body: Value,
    pub created_at: i64,
}

impl ResponseRecord {
    /// The output items of the stored body.
    pub fn output(&self) -> Vec<Value> {
        self.body
            .get("output")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
pub trait ResponseStore: Send + Sync {
    /// A response of this owner, or `None`.
    async fn get_response(&self, owner: &Owner, id: &str) -> StoreResult<Option<ResponseRecord>>;

    /// `true` if a response was deleted.
    async fn delete_response(&self, owner: &Owner, id: &str) -> StoreResult<bool>;
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> ChatError {
    ChatError::invalid(param, message)
}

fn str_field<'a>(item: &'a Value, key: &str, param: &str) -> Result<&'a str, ChatError> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{param}.{key}"), format!("`{key}` must be a string")))
}

/// `input` as items with ids (a string is one user message), checked: every item has a type moltbot
/// understands, named in the error otherwise.
pub fn normalize_input(input: Option<&Value>) -> Result<Vec<Value>, ChatError> {
    let items = match input {
        None | Some(Value::Null) => return Err(invalid("input", "`input` is required")),
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user", "content": s})],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(invalid("input", "`input` must not be empty"));
        }
        Some(Value::Array(items)) => items.clone(),
        Some(_) => {
            return Err(invalid("input", "`input` must be a string or an array of items"));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| normalize_item(item, &format!("input[{i}]")))
        .collect()
}

fn normalize_item(item: Value, param: &str) -> Result<Value, ChatError> {
    let Value::Object(mut obj) = item else {
        return Err(invalid(param, "each input item must be an object"));
    };
    let kind = match obj.get("type") {
        None if obj.contains_key("role") => "message".to_owned(),
        None => {
            return Err(invalid(
                format!("{param}.type"),
                "input items need a `type` (or a `role`)",
            ));
        }
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(invalid(format!("{param}.type"), "`type` must be a string")),
    };
    let value = Value::Object(obj.clone());
    match kind.as_str() {
        "message" => {
            let role = str_field(&value, "role", param)?;
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(invalid(
                    format!("{param}.role"),
                    format!("Invalid role `{role}`: expected one of user, assistant, system, developer"),
                ));
            }
            let content = match obj.get("content") {
                Some(Value::String(s)) => {
                    let part = if role == "assistant" {
                        "output_text"
                    } else {
                        "input_text"
                    };
                    json!([{"type": part, "text": s}])
                }
                Some(Value::Array(parts)) => {
                    for (j, p) in parts.iter().enumerate() {
                        check_part(p, role, &format!("{param}.content[{j}]"))?;
                    }
                    Value::Array(parts.clone())
                }
                _ => {
                    return Err(invalid(
                        format!("{param}.content"),
                        "`content` must be a string or an array of content parts",
                    ));
                }
            };
            obj.insert("type".into(), json!("message"));
            obj.insert("content".into(), content);
            obj.entry("id").or_insert_with(|| json!(ids::message_id()));
            obj.entry("status").or_insert_with(|| json!("completed"));
        }
        "function_call" => {
            str_field(&value, "call_id", param)?;
            str_field(&value, "name", param)?;
            str_field(&value, "arguments", param)?;
            obj.entry("id").or_insert_with(|| json!(ids::new_id("fc")));
            obj.entry("status").or_insert_with(|| json!("completed"));
        }
        "function_call_output" => {
            str_field(&value, "call_id", param)?;
            match obj.get("output") {
                Some(Value::String(_)) => {}
                Some(Value::Array(parts)) => {
                    for (j, p) in parts.iter().enumerate() {
                        check_part(p, "user", &format!("{param}.output[{j}]"))?;
                    }
                }
                _ => {
                    return Err(invalid(
                        format!("{param}.output"),
                        "`output` must be a string or an array of content parts",
                    ));
                }
            }
            obj.entry("id").or_insert_with(|| json!(ids::new_id("fco")));
            obj.entry("status").or_insert_with(|| json!("completed"));
        }
        other => {
            return Err(invalid(
                format!("{param}.type"),
                format!(
                    "Input item type `{other}` is not supported: expected `message`, `function_call` or \
                     `function_call_output`"
                ),
            ));
        }
    }
    Ok(Value::Object(obj))
}

fn check_part(part: &Value, role: &str, param: &str) -> Result<(), ChatError> {
    let kind = part
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{param}.type"), "each content part needs a string `type`"))?;
    match kind {
        "input_text" | "output_text" | "text" | "refusal" => {
            let key = if kind == "refusal" { "refusal" } else { "text" };
            str_field(part, key, param).map(|_| ())
        }
        "input_image" if role != "assistant" => match part.get("image_url").and_then(Value::as_str) {
            Some(_) => Ok(()),
            None => Err(invalid(
                format!("{param}.image_url"),
                "`input_image` needs an `image_url` (uploaded files are not supported)",
            )),
        },
        other => Err(invalid(
            format!("{param}.type"),
            format!("Content part type `{other}` is not supported here"),
        )),
    }
}

/// Text of a content value: a string, or the text parts of an array joined.
fn parts_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Normalised items (input or output) as chat messages, in order. Consecutive `function_call` items
/// join the assistant message before them.
pub fn items_to_messages(items: &[Value]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::new();
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                let content = item.get("content").cloned().unwrap_or(Value::Null);
                let has_image = content.as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p.get("type").and_then(Value::as_str) == Some("input_image"))
                });
                let content = if has_image {
                    Value::Array(
                        content
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|p| match p.get("type").and_then(Value::as_str) {
                                Some("input_image") => {
                                    let mut url = json!({"url": p.get("image_url").cloned().unwrap_or(Value::Null)});
                                    if let Some(d) = p.get("detail") {
                                        url["detail"] = d.clone();
                                    }
                                    json!({"type": "image_url", "image_url": url})
                                }
                                _ => json!({"type": "text", "text": parts_text(&Value::Array(vec![p.clone()]))}),
                            })
                            .collect(),
                    )
                } else {
                    Value::String(parts_text(&content))
                };
                out.push(ChatMessage {
                    role: role.to_owned(),
                    content: Some(content),
                    ..Default::default()
                });
            }
            Some("function_call") => {
                let call = json!({
                    "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": item.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": item.get("arguments").cloned().unwrap_or(json!("")),
                    },
                });
                match out.last_mut() {
                    Some(last) if last.role == "assistant" => {
                        let calls = last.tool_calls.get_or_insert_with(|| json!([]));
                        if let Some(a) = calls.as_array_mut() {
                            a.push(call);
                        }
                    }
                    _ => out.push(ChatMessage {
                        role: "assistant".into(),
                        content: None,
                        tool_calls: Some(json!([call])),
                        ..Default::default()
                    }),
                }
            }
            Some("function_call_output") => out.push(ChatMessage {
                role: "tool".into(),
                content: Some(Value::String(parts_text(
                    item.get("output").unwrap_or(&Value::Null),
                ))),
                tool_call_id: item.get("call_id").and_then(Value::as_str).map(str::to_owned),
                ..Default::default()
            }),
            _ => {}
        }
    }
    // An assistant message that only carries tool calls has `content: null`, as Chat Completions wants;
    // one with text keeps it.
    for m in &mut out {
        if m.role == "assistant" && m.tool_calls.is_some() && m.content.as_ref().is_some_and(|c| c == "") {
            m.content = None;
        }
    }
    out
}

/// The Chat Completions fields of a Responses request: tools, tool choice, response format,
/// `parallel_tool_calls`. Non-function tools are refused by name.
pub struct ChatTools {
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub response_format: Option<Value>,
    pub extra: Map<String, Value>,
}

pub fn chat_tools(req: &CreateResponseRequest) -> Result<ChatTools, ChatError> {
    let tools = match &req.tools {
        None | Some(Value::Null) => None,
        Some(Value::Array(tools)) if tools.is_empty() => None,
        Some(Value::Array(tools)) => {
            let mut out = Vec::with_capacity(tools.len());
            for (i, t) in tools.iter().enumerate() {
                let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
                if kind != "function" {
                    return Err(invalid(
                        format!("tools[{i}].type"),
                        format!("Tool type `{kind}` is not supported: only `function` tools are"),
                    ));
                }
                let name = str_field(t, "name", &format!("tools[{i}]"))?;
                let mut function = json!({"name": name});
                for key in ["description", "parameters", "strict"] {
                    if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                        function[key] = v.clone();
                    }
                }
                out.push(json!({"type": "function", "function": function}));
            }
            Some(Value::Array(out))
        }
        Some(_) => return Err(invalid("tools", "`tools` must be an array")),
    };
    let tool_choice = match &req.tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if matches!(s.as_str(), "auto" | "none" | "required") => Some(json!(s)),
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.name", "`name` must be a string"))?;
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        Some(_) => {
            return Err(invalid(
                "tool_choice",
                "`tool_choice` must be `auto`, `none`, `required` or {\"type\": \"function\", \"name\": …}",
            ));
        }
    };
    let response_format = match req.text.as_ref().and_then(|t| t.get("format")) {
        None | Some(Value::Null) => None,
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") => None,
            Some("json_object") => Some(json!({"type": "json_object"})),
            Some("json_schema") => {
                let schema = f
                    .get("schema")
                    .filter(|s| s.is_object())
                    .ok_or_else(|| invalid("text.format.schema", "`schema` must be a JSON schema object"))?;
                let mut js = json!({
                    "name": f.get("name").and_then(Value::as_str).unwrap_or("response"),
                    "schema": schema,
                });
                if let Some(strict) = f.get("strict") {
                    js["strict"] = strict.clone();
                }
                if let Some(d) = f.get("description") {
                    js["description"] = d.clone();
                }
                Some(json!({"type": "json_schema", "json_schema": js}))
            }
            _ => {
                return Err(invalid(
                    "text.format.type",
                    "`text.format.type` must be `text`, `json_object` or `json_schema`",
                ));
            }
        },
    };
    let mut extra = Map::new();
    if let Some(p) = req.parallel_tool_calls
        && tools.is_some()
    {
        extra.insert("parallel_tool_calls".into(), json!(p));
    }
    Ok(ChatTools {
        tools,
        tool_choice,
        response_format,
        extra,
    })
}

/// The reply as output items: a `message` when there is text (or nothing else), then one
/// `function_call` per tool call. `message_id` is the id the stream announced, if it did.
pub fn output_items(
    reply: &ReplyCollector,
    message_id: Option<&str>,
    call_item_ids: &[String],
) -> Vec<Value> {
    let mut out = Vec::new();
    if !reply.content.is_empty() || reply.tool_calls.is_empty() {
        let id = message_id.map_or_else(ids::message_id, str::to_owned);
        out.push(moltbot_api::message_item(&id, "completed", &reply.content));
    }
    for (i, call) in reply.tool_calls.iter().enumerate() {
        let id = call_item_ids.get(i).cloned().unwrap_or_else(|| ids::new_id("fc"));
        out.push(function_call_from_chat(call, &id));
    }
    out
}

/// A chat tool call (`{"id", "function": {"name", "arguments"}}`) as a `function_call` item.
pub fn function_call_from_chat(call: &Value, item_id: &str) -> Value {
    let call_id = call
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| ids::new_id("call"), str::to_owned);
    let f = call.get("function").unwrap_or(&Value::Null);
    moltbot_api::function_call_item(
        item_id,
        &call_id,
        f.get("name").and_then(Value::as_str).unwrap_or(""),
        f.get("arguments").and_then(Value::as_str).unwrap_or(""),
        "completed",
    )
}

/// The response object for a request, with `status` and `output` to fill in.
pub fn response_object(
    id: &str,
    created_at: i64,
    model: &str,
    req: &CreateResponseRequest,
    conversation: Option<&str>,
) -> ResponseObject {
    ResponseObject {
        id: id.to_owned(),
        object: "response".into(),
        created_at,
        status: "in_progress".into(),
        model: model.to_owned(),
        output: Vec::new(),
        usage: None,
        error: None,
        incomplete_details: None,
        instructions: req.instructions.clone(),
        previous_response_id: req.previous_response_id.clone(),
        conversation: conversation.map(|c| json!({"id": c})),
        store: req.store.unwrap_or(true),
        max_output_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        tools: req
            .tools
            .as_ref()
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        text: req
            .text
            .clone()
            .unwrap_or_else(|| json!({"format": {"type": "text"}})),
        metadata: req.metadata.clone().unwrap_or_default(),
        user: req.user.clone(),
    }
}

/// Chat usage in the Responses API's naming.
pub fn response_usage(u: &Usage) -> ResponseUsage {
    ResponseUsage::new(u.prompt_tokens, u.completion_tokens)
}

/// `completed`, or `incomplete` with its reason when the output was cut by the token limit.
pub fn finish_status(reason: &str) -> (&'static str, Option<Value>) {
    if reason == "length" {
        ("incomplete", Some(json!({"reason": "max_output_tokens"})))
    } else {
        ("completed", None)
    }
}

/// The `conversation` field: an id string or `{"id": …}`.
pub fn conversation_id(value: Option<&Value>) -> Result<Option<String>, ChatError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(Some(id.to_owned())),
            _ => Err(invalid(
                "conversation.id",
                "`conversation.id` must be a conversation id",
            )),
        },
        Some(_) => Err(invalid(
            "conversation",
            "`conversation` must be a conversation id or {\"id\": …}",
        )),
    }
}

/// A Responses request turned into a chat turn, with what the response record needs.
pub struct Prepared {
    pub turn: TurnInput,
    /// The input items with ids, as stored for `input_items`.
    pub input: Vec<Value>,
    pub conversation: Option<String>,
    pub stream: bool,
    pub store: bool,
}

/// Check a Responses request and build its chat turn: the context of a `previous_response_id` chain
/// (its responses' input and output items, oldest first; instructions are not carried over), or a
/// stored conversation.
pub async fn prepare(
    store: &dyn Store,
    owner: &str,
    req: &CreateResponseRequest,
    request_id: &str,
) -> Result<Prepared, ChatError> {
    if req.model.trim().is_empty() {
        return Err(invalid("model", "`model` must be a non-empty string"));
    }
    let conversation = conversation_id(req.conversation.as_ref())?;
    if conversation.is_some() && req.previous_response_id.is_some() {
        return Err(invalid(
            "conversation",
            "`conversation` and `previous_response_id` cannot both be set: use one of them",
        ));
    }
    if req.max_output_tokens == Some(0) {
        return Err(invalid(
            "max_output_tokens",
            "`max_output_tokens` must be at least 1",
        ));
    }
    let input = normalize_input(req.input.as_ref())?;
    let tools = chat_tools(req)?;
    let history = match &req.previous_response_id {
        None => None,
        Some(id) if id.is_empty() => {
            return Err(invalid(
                "previous_response_id",
                "`previous_response_id` must be a response id",
            ));
        }
        Some(id) => {
            let mut chain = Vec::new();
            let mut next = Some(id.clone());
            while let Some(id) = next.take() {
                if chain.len() >= MAX_CHAIN {
                    break;
                }
                match store.get_response(owner, &id).await? {
                    Some(r) => {
                        next = r.previous_response_id.clone();
                        chain.push(r);
                    }
                    // The first link must exist; a deleted older one ends the chain there.
                    None if chain.is_empty() => return Err(ChatError::ResponseNotFound(id)),
                    None => break,
                }
            }
            let mut items = Vec::new();
            for r in chain.iter().rev() {
                items.extend(r.input.iter().cloned());
                items.extend(r.output());
            }
            Some(items_to_messages(&items))
        }
    };
    let mut extra = req.extra.clone();
    extra.extend(tools.extra);
    // Fields of the Responses API that have no chat meaning are not forwarded.
    for key in [
        "include",
        "reasoning",
        "truncation",
        "background",
        "prompt",
        "service_tier",
        "stream_options",
    ] {
        extra.remove(key);
    }
    let request = ChatCompletionRequest {
        model: req.model.clone(),
        messages: items_to_messages(&input),
        stream: req.stream,
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        user: req.user.clone(),
        tools: tools.tools,
        tool_choice: tools.tool_choice,
        response_format: tools.response_format,
        extra,
        ..Default::default()
    };
    Ok(Prepared {
        turn: TurnInput {
            owner: owner.to_owned(),
            request,
            conversation: conversation.clone(),
            request_id: request_id.to_owned(),
            instructions: req.instructions.clone().filter(|i| !i.is_empty()),
            history,
            group: false,
        },
        input,
        conversation,
        stream: req.stream.unwrap_or(false),
        store: req.store.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests;
