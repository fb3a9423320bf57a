//! Request checks that name the offending field.

use moltbot_api::ChatCompletionRequest;
use serde_json::Value;

use super::ChatError;
use crate::domain::Role;

pub fn validate_request(req: &ChatCompletionRequest) -> Result<(), ChatError> {
    if req.model.trim().is_empty() {
        return Err(ChatError::invalid("model", "`model` must be a non-empty string"));
    }
    if req.messages.is_empty() {
        return Err(ChatError::invalid(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if Role::parse(&m.role).is_none() {
            return Err(ChatError::invalid(
                format!("messages[{i}].role"),
                format!(
                    "Invalid role `{}`: expected one of {}",
                    m.role,
                    Role::ALL.join(", ")
                ),
            ));
        }
        match &m.content {
            Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    if p.get("type").and_then(Value::as_str).is_none() {
                        return Err(ChatError::invalid(
                            format!("messages[{i}].content[{j}].type"),
                            "each content part needs a string `type`",
                        ));
                    }
                }
            }
            None | Some(Value::Null) if m.role == "assistant" && m.tool_calls.is_some() => {}
            None | Some(Value::Null) => {
                return Err(ChatError::invalid(
                    format!("messages[{i}].content"),
                    "`content` is required for this message",
                ));
            }
            Some(_) => {
                return Err(ChatError::invalid(
                    format!("messages[{i}].content"),
                    "`content` must be a string or an array of content parts",
                ));
            }
        }
    }
    if let Some(n) = req.n
        && n != 1
    {
        return Err(ChatError::invalid(
            "n",
            "Only n=1 is supported: moltbot returns one choice per request",
        ));
    }
    if let Some(t) = req.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ChatError::invalid(
            "temperature",
            "`temperature` must be between 0 and 2",
        ));
    }
    if let Some(p) = req.top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(ChatError::invalid("top_p", "`top_p` must be between 0 and 1"));
    }
    if let Some(stop) = &req.stop
        && stop.to_vec().len() > 4
    {
        return Err(ChatError::invalid("stop", "`stop` accepts at most 4 sequences"));
    }
    if let Some(c) = &req.conversation
        && c.is_empty()
    {
        return Err(ChatError::invalid(
            "conversation",
            "`conversation` must be a conversation id",
        ));
    }
    Ok(())
}
