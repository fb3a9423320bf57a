//! Structured output for local models: `response_format` (JSON object / JSON schema) and tool calls,
//! through grammar-constrained sampling (llama.cpp's GBNF, converted from JSON schema by llama.cpp's
//! own converter).
//!
//! Tool calls use the Hermes format that Qwen 2.5/3, Hermes and many fine-tunes are trained on:
//! `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`. A model supports tools when its chat
//! template renders `tools` and mentions `<tool_call>`; other models get a clear 400. With
//! `tool_choice: "required"` (or a named function) the whole output is constrained to one call; with
//! `"auto"` the grammar is lazy: free text until the model writes `<tool_call>`, then the call is
//! constrained. The output is parsed back into OpenAI tool calls ([`ToolCallFilter`]).

use moltbot_core::BackendError;
use serde_json::{Value, json};

/// The opening tag of a Hermes tool call (also the lazy grammar's trigger).
pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";

/// A grammar for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    /// GBNF with a `root` rule.
    pub gbnf: String,
    /// Words that switch a lazy grammar on; empty = enforced from the first token.
    pub triggers: Vec<String>,
}

fn invalid(param: &str, message: impl Into<String>) -> BackendError {
    BackendError::InvalidRequest {
        param: Some(param.to_owned()),
        message: message.into(),
    }
}

fn schema_grammar(schema: &Value, param: &str) -> Result<String, BackendError> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map_err(|e| invalid(param, format!("cannot turn this JSON schema into a grammar: {e}")))
}

/// The grammar for `response_format`, if it asks for JSON.
pub fn response_format_grammar(response_format: Option<&Value>) -> Result<Option<Grammar>, BackendError> {
    let Some(rf) = response_format.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let schema = match rf.get("type").and_then(Value::as_str) {
        None | Some("text") => return Ok(None),
        Some("json_object") => json!({"type": "object"}),
        Some("json_schema") => rf
            .get("json_schema")
            .and_then(|j| j.get("schema"))
            .filter(|s| s.is_object())
            .cloned()
            .ok_or_else(|| {
                invalid(
                    "response_format.json_schema.schema",
                    "`schema` must be a JSON schema object",
                )
            })?,
        Some(other) => {
            return Err(invalid(
                "response_format.type",
                format!("`{other}` is not a response format: expected text, json_object or json_schema"),
            ));
        }
    };
    let param = if rf["type"] == "json_schema" {
        "response_format.json_schema.schema"
    } else {
        "response_format"
    };
    Ok(Some(Grammar {
        gbnf: schema_grammar(&schema, param)?,
        triggers: Vec::new(),
    }))
}

/// What to do about tools for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolPlan {
    /// No tools (none given, or `tool_choice: "none"`): render and sample as plain chat.
    None,
    /// Render the tools into the prompt and constrain calls with this grammar.
    Calls { grammar: Grammar },
}

/// Check `tools` and `tool_choice` against what the model's template supports, and build the grammar.
pub fn plan(
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    template_supports_tools: bool,
) -> Result<ToolPlan, BackendError> {
    let tools: Vec<&Value> = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => return Err(invalid("tools", "`tools` must be an array")),
    };
    let choice = tool_choice.filter(|c| !c.is_null());
    if tools.is_empty() {
        return match choice {
            Some(c) if c != "none" && c != "auto" => {
                Err(invalid("tool_choice", "`tool_choice` needs `tools`"))
            }
            _ => Ok(ToolPlan::None),
        };
    }
    if choice.is_some_and(|c| c == "none") {
        return Ok(ToolPlan::None);
    }
    if !template_supports_tools {
        return Err(BackendError::Unsupported {
            param: "tools".into(),
            message:
                "this local model's chat template does not support tool calls (it must render `tools` and \
                      use the <tool_call> format); set `chat_template` for the model or use a model trained \
                      for tools"
                    .into(),
        });
    }
    let mut functions: Vec<(String, Value)> = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid(
                &format!("tools[{i}].type"),
                "only `function` tools are supported",
            ));
        }
        let f = &t["function"];
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&format!("tools[{i}].function.name"), "`name` must be a string"))?;
        let params = f
            .get("parameters")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        functions.push((name.to_owned(), params));
    }
    let (lazy, only): (bool, Option<String>) = match choice {
        None => (true, None),
        Some(Value::String(s)) if s == "auto" => (true, None),
        Some(Value::String(s)) if s == "required" => (false, None),
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.function.name", "`name` must be a string"))?;
            if !functions.iter().any(|(n, _)| n == name) {
                return Err(invalid(
                    "tool_choice.function.name",
                    format!("`{name}` is not one of the tools"),
                ));
            }
            (false, Some(name.to_owned()))
        }
        Some(_) => {
            return Err(invalid(
                "tool_choice",
                "`tool_choice` must be none, auto, required or a function",
            ));
        }
    };
    let variants: Vec<Value> = functions
        .iter()
        .filter(|(n, _)| only.as_ref().is_none_or(|o| o == n))
        .map(|(name, params)| {
            json!({
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let schema = if variants.len() == 1 {
        variants[0].clone()
    } else {
        json!({"anyOf": variants})
    };
    let call = schema_grammar(&schema, "tools")?;
    // The converter names its top rule `root`; wrap it in the call tags.
    let call = call.replacen("root ::=", "tool-call-json ::=", 1);
    let root = format!(
        "root ::= {} \"\\n\" tool-call-json \"\\n\" {}\n",
        gbnf_literal(CALL_OPEN),
        gbnf_literal(CALL_CLOSE)
    );
    Ok(ToolPlan::Calls {
        grammar: Grammar {
            gbnf: format!("{root}{call}"),
            triggers: if lazy {
                vec![CALL_OPEN.to_owned()]
            } else {
                Vec::new()
            },
        },
    })
}

fn gbnf_literal(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether a chat template can render tools in the Hermes format.
pub fn template_supports_tools(source: Option<&str>) -> bool {
    source.is_some_and(|s| s.contains("tools") && s.contains(CALL_OPEN))
}

/// Splits generated text into what the client sees as content and the tool calls: text is passed
/// through except from `<tool_call>` on (and any partial `<tool_call` at the end of a piece, held until
/// it is clearly not a tag).
#[derive(Debug, Default)]
pub struct ToolCallFilter {
    held: String,
    in_calls: bool,
    calls_text: String,
}

impl ToolCallFilter {
    /// Feed one generated piece; returns the text that can be shown now.
    pub fn push(&mut self, piece: &str) -> String {
        if self.in_calls {
            self.calls_text.push_str(piece);
            return String::new();
        }
        self.held.push_str(piece);
        if let Some(pos) = self.held.find(CALL_OPEN) {
            let text = self.held[..pos].to_owned();
            self.calls_text = self.held[pos..].to_owned();
            self.held.clear();
            self.in_calls = true;
            return text;
        }
        // Keep back a suffix that could still become `<tool_call>`.
        let keep = (1..CALL_OPEN.len())
            .rev()
            .find(|&n| {
                self.held.len() >= n
                    && self.held.is_char_boundary(self.held.len() - n)
                    && CALL_OPEN.starts_with(&self.held[self.held.len() - n..])
            })
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        out
    }

    /// The end of generation: remaining text, and the parsed calls in OpenAI's tool-call shape.
    pub fn finish(&mut self) -> (String, Vec<Value>) {
        let rest = std::mem::take(&mut self.held);
        let mut calls = Vec::new();
        let mut text = rest;
        let mut s = self.calls_text.as_str();
        while let Some(start) = s.find(CALL_OPEN) {
            let after = &s[start + CALL_OPEN.len()..];
            let (body, next) = match after.find(CALL_CLOSE) {
                Some(end) => (&after[..end], &after[end + CALL_CLOSE.len()..]),
                None => (after, ""),
            };
            match serde_json::from_str::<Value>(body.trim()) {
                Ok(v) if v.get("name").and_then(Value::as_str).is_some() => {
                    let args = v.get("arguments").cloned().unwrap_or_else(|| json!({}));
                    let args = match args {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    calls.push(json!({
                        "index": calls.len(),
                        "id": moltbot_core::ids::new_id("call"),
                        "type": "function",
                        "function": {"name": v["name"], "arguments": args},
                    }));
                }
                // Not a well-formed call (cut by max_tokens): the client gets it as text.
                _ => text.push_str(&s[start..start + CALL_OPEN.len() + body.len()]),
            }
            s = next;
        }
        (text, calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]}}}])
    }

    #[test]
    fn response_formats_become_grammars_or_400s() {
        assert_eq!(response_format_grammar(None).unwrap(), None);
        assert_eq!(
            response_format_grammar(Some(&json!({"type": "text"}))).unwrap(),
            None
        );
        let g = response_format_grammar(Some(&json!({"type": "json_object"})))
            .unwrap()
            .unwrap();
        assert!(g.gbnf.contains("root ::="), "{}", g.gbnf);
        assert!(g.triggers.is_empty());
        let g = response_format_grammar(Some(&json!({"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}})))
        .unwrap()
        .unwrap();
        assert!(g.gbnf.contains("\"\\\"ok\\\"\""), "{}", g.gbnf);
        let e = response_format_grammar(Some(
            &json!({"type": "json_schema", "json_schema": {"name": "x"}}),
        ))
        .unwrap_err();
        assert!(
            matches!(e, BackendError::InvalidRequest { param: Some(p), .. } if p == "response_format.json_schema.schema")
        );
        let e = response_format_grammar(Some(&json!({"type": "xml"}))).unwrap_err();
        assert!(
            matches!(e, BackendError::InvalidRequest { param: Some(p), .. } if p == "response_format.type")
        );
    }

    #[test]
    fn tools_need_a_template_that_supports_them() {
        let e = plan(Some(&weather()), None, false).unwrap_err();
        assert!(matches!(e, BackendError::Unsupported { param, .. } if param == "tools"));
        assert_eq!(
            plan(Some(&weather()), Some(&json!("none")), false).unwrap(),
            ToolPlan::None
        );
        assert_eq!(plan(None, None, false).unwrap(), ToolPlan::None);
        assert_eq!(plan(Some(&json!([])), None, false).unwrap(), ToolPlan::None);
    }

    #[test]
    fn auto_is_lazy_and_required_is_not() {
        let ToolPlan::Calls { grammar } = plan(Some(&weather()), None, true).unwrap() else {
            panic!()
        };
        assert_eq!(grammar.triggers, [CALL_OPEN]);
        assert!(
            grammar
                .gbnf
                .starts_with("root ::= \"<tool_call>\" \"\\n\" tool-call-json"),
            "{}",
            grammar.gbnf
        );
        assert!(grammar.gbnf.contains("tool-call-json ::="));
        let ToolPlan::Calls { grammar } = plan(Some(&weather()), Some(&json!("required")), true).unwrap()
        else {
            panic!()
        };
        assert!(grammar.triggers.is_empty());
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        assert!(matches!(
            plan(Some(&weather()), Some(&named), true).unwrap(),
            ToolPlan::Calls { .. }
        ));
        let unknown = json!({"type": "function", "function": {"name": "nope"}});
        let e = plan(Some(&weather()), Some(&unknown), true).unwrap_err();
        assert!(
            matches!(e, BackendError::InvalidRequest { param: Some(p), .. } if p == "tool_choice.function.name")
        );
    }

    #[test]
    fn the_filter_passes_text_and_extracts_calls_split_anywhere() {
        let out = "Sure. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>";
        for split in 1..out.len() {
            if !out.is_char_boundary(split) {
                continue;
            }
            let mut f = ToolCallFilter::default();
            let mut text = f.push(&out[..split]);
            text.push_str(&f.push(&out[split..]));
            let (rest, calls) = f.finish();
            text.push_str(&rest);
            assert_eq!(text, "Sure. ", "split at {split}");
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0]["function"]["name"], "get_weather");
            assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Rome\"}");
        }
    }

    #[test]
    fn text_that_only_looks_like_a_tag_is_released_and_a_cut_call_is_text() {
        let mut f = ToolCallFilter::default();
        assert_eq!(f.push("a <tool"), "a ");
        assert_eq!(f.push("box> b"), "<toolbox> b");
        let (rest, calls) = f.finish();
        assert_eq!(rest, "");
        assert!(calls.is_empty());

        let mut f = ToolCallFilter::default();
        assert_eq!(f.push("<tool_call>\n{\"name\": \"get_w"), "");
        let (rest, calls) = f.finish();
        assert!(calls.is_empty());
        assert_eq!(rest, "<tool_call>\n{\"name\": \"get_w");
    }

    #[test]
    fn two_calls_are_two_indexed_tool_calls() {
        let mut f = ToolCallFilter::default();
        f.push("<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"x\": 1}}\n</tool_call>");
        let (_, calls) = f.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1]["index"], 1);
        assert_eq!(calls[1]["function"]["name"], "b");
    }

    #[test]
    fn template_support_is_detected() {
        assert!(template_supports_tools(Some(
            "{% if tools %}<tool_call>{% endif %}"
        )));
        assert!(!template_supports_tools(Some("{{ messages }}")));
        assert!(!template_supports_tools(None));
    }
}
