//! Chat prompt rendering. Order of preference: the template from the model's configuration
//! (`chat_template`), the Jinja template in the GGUF metadata (rendered with minijinja — llama.cpp's own
//! template function only recognises its built-in templates), llama.cpp's built-in templates when
//! minijinja cannot render the GGUF one, and a plain transcript for base models without a template.

use minijinja::{Environment, Error, ErrorKind, Value, context};
use moltbot_api::ChatMessage;

/// A rendered prompt and the stop strings its format implies.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub text: String,
    /// Stop strings the format needs (the transcript's next turn marker), added to the client's.
    pub stops: Vec<String>,
}

/// How prompts are built for one model.
#[derive(Debug, Clone)]
pub enum PromptFormat {
    /// A Jinja chat template (from config or GGUF metadata).
    Jinja {
        source: String,
        bos: String,
        eos: String,
    },
    /// `User: …\nAssistant:` — what a base model continues as an assistant; stops at the next turn.
    Transcript,
}

/// Where a model's prompt format came from, for logs and `load-model` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSource {
    Config,
    Gguf,
    Transcript,
}

impl TemplateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config override",
            Self::Gguf => "GGUF metadata",
            Self::Transcript => "plain transcript (no chat template)",
        }
    }
}

pub const TRANSCRIPT_PREAMBLE: &str =
    "The following is a conversation between a user and a helpful assistant.";
pub const TRANSCRIPT_STOPS: [&str; 2] = ["\nUser:", "\nAssistant:"];

impl PromptFormat {
    pub fn choose(config: Option<&str>, gguf: Option<&str>, bos: &str, eos: &str) -> (Self, TemplateSource) {
        let jinja = |s: &str| Self::Jinja {
            source: s.to_owned(),
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        };
        match (config, gguf) {
            (Some(t), _) if !t.trim().is_empty() => (jinja(t), TemplateSource::Config),
            (_, Some(t)) if !t.trim().is_empty() => (jinja(t), TemplateSource::Gguf),
            _ => (Self::Transcript, TemplateSource::Transcript),
        }
    }

    /// The Jinja source, when the format is a template.
    pub fn jinja_source(&self) -> Option<&str> {
        match self {
            Self::Jinja { source, .. } => Some(source),
            Self::Transcript => None,
        }
    }

    /// Render the conversation with the assistant's turn opened.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<Prompt, Error> {
        self.render_tools(messages, None)
    }

    /// [`Self::render`] with `tools` (chat shape) in the template's context.
    pub fn render_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
    ) -> Result<Prompt, Error> {
        match self {
            Self::Jinja { source, bos, eos } => {
                let text = render_jinja(source, messages, tools, bos, eos)?;
                Ok(Prompt {
                    text,
                    stops: Vec::new(),
                })
            }
            Self::Transcript => Ok(transcript(messages)),
        }
    }
}

fn render_jinja(
    source: &str,
    messages: &[ChatMessage],
    tools: Option<&serde_json::Value>,
    bos: &str,
    eos: &str,
) -> Result<String, Error> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |_fmt: String| -> String { String::new() });
    env.add_template("chat", source)?;
    let msgs: Vec<_> = messages
        .iter()
        .map(|m| {
            let role = if m.role == "developer" {
                "system"
            } else {
                m.role.as_str()
            };
            // Tool calls as Hugging Face templates expect them: arguments as an object.
            let tool_calls = m.tool_calls.as_ref().and_then(|c| c.as_array()).map(|calls| {
                calls
                    .iter()
                    .map(|c| {
                        let mut c = c.clone();
                        if let Some(args) = c["function"]["arguments"].as_str()
                            && let Ok(v) = serde_json::from_str::<serde_json::Value>(args)
                        {
                            c["function"]["arguments"] = v;
                        }
                        Value::from_serialize(&c)
                    })
                    .collect::<Vec<_>>()
            });
            context! {
                role => role,
                content => m.text_content(),
                tool_calls => tool_calls,
                tool_call_id => m.tool_call_id,
                name => m.name,
            }
        })
        .collect();
    env.get_template("chat")?.render(context! {
        messages => msgs,
        tools => tools.map(Value::from_serialize),
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    })
}

fn transcript(messages: &[ChatMessage]) -> Prompt {
    let mut system: Vec<String> = Vec::new();
    let mut turns = String::new();
    for m in messages {
        let text = m.text_content();
        match m.role.as_str() {
            "system" | "developer" => system.push(text.trim().to_owned()),
            "assistant" => turns.push_str(&format!("Assistant: {}\n", text.trim())),
            "tool" => turns.push_str(&format!("Tool: {}\n", text.trim())),
            _ => turns.push_str(&format!("User: {}\n", text.trim())),
        }
    }
    let preamble = if system.is_empty() {
        TRANSCRIPT_PREAMBLE.to_owned()
    } else {
        system.join("\n")
    };
    Prompt {
        text: format!("{preamble}\n\n{turns}Assistant:"),
        stops: TRANSCRIPT_STOPS.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        serde_json::from_value(serde_json::json!({"role": role, "content": content})).unwrap()
    }

    #[test]
    fn chatml_from_gguf_renders_with_generation_prompt() {
        let (f, src) = PromptFormat::choose(None, Some(crate::gguf::CHATML_TEMPLATE), "<s>", "</s>");
        assert_eq!(src, TemplateSource::Gguf);
        let p = f
            .render(&[msg("system", "Be brief."), msg("user", "Hi")])
            .unwrap();
        assert_eq!(
            p.text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(p.stops.is_empty());
    }

    #[test]
    fn config_override_wins_and_python_methods_work() {
        let tpl = "{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}] {{ m.content.strip() }}\n{% endfor %}";
        let (f, src) = PromptFormat::choose(Some(tpl), Some("ignored"), "<s>", "</s>");
        assert_eq!(src, TemplateSource::Config);
        assert_eq!(f.render(&[msg("user", "  x ")]).unwrap().text, "<s>[USER] x\n");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let (f, _) = PromptFormat::choose(Some("{{ raise_exception('no system role') }}"), None, "", "");
        assert!(
            f.render(&[msg("user", "x")])
                .unwrap_err()
                .to_string()
                .contains("no system role")
        );
    }

    #[test]
    fn base_models_get_a_transcript_that_stops_at_the_next_turn() {
        let (f, src) = PromptFormat::choose(None, None, "", "");
        assert_eq!(src, TemplateSource::Transcript);
        let p = f
            .render(&[
                msg("user", "Hello"),
                msg("assistant", "Hi!"),
                msg("user", "Name a color."),
            ])
            .unwrap();
        assert_eq!(
            p.text,
            format!("{TRANSCRIPT_PREAMBLE}\n\nUser: Hello\nAssistant: Hi!\nUser: Name a color.\nAssistant:")
        );
        assert_eq!(p.stops, vec!["\nUser:".to_owned(), "\nAssistant:".to_owned()]);
    }
}
