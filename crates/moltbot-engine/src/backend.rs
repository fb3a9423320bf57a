//! [`LocalBackend`]: the engine behind the same [`ChatBackend`] trait (and OpenAI responses) as remote
//! models, and a [`TokenCounter`] that uses the model's own vocabulary and prompt format.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use llama_cpp_2::model::LlamaChatMessage;
use moltbot_api::{ChatMessage, Usage};
use moltbot_core::{BackendError, BackendEvent, BackendRequest, ChatBackend, EventStream, TokenCounter};
use serde_json::Value;

use crate::engine::{Engine, EngineConfig, EngineError, Event};
use crate::sampling::Sampling;
use crate::template::{Prompt, PromptFormat, TemplateSource};

/// A started local model.
pub struct LocalBackend {
    name: String,
    engine: Arc<Engine>,
    format: PromptFormat,
    source: TemplateSource,
    /// How long clients are told to wait when the queue is full.
    retry_after: Duration,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl LocalBackend {
    /// Load the model and start its engine. `chat_template` overrides the GGUF's template.
    pub fn start(config: EngineConfig, chat_template: Option<&str>) -> Result<Self, EngineError> {
        let engine = Engine::start(config)?;
        Ok(Self::with_engine(Arc::new(engine), chat_template))
    }

    pub fn with_engine(engine: Arc<Engine>, chat_template: Option<&str>) -> Self {
        let model = &engine.model;
        let gguf = model.meta_val_str("tokenizer.chat_template").ok();
        let vocab = model.vocab();
        let piece = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
        let (bos, eos) = (piece(vocab.bos()), piece(vocab.eos()));
        let (format, source) = PromptFormat::choose(chat_template, gguf.as_deref(), &bos, &eos);
        let name = engine.config().name.clone();
        tracing::info!(model = %name, template = source.as_str(), "local model ready");
        Self {
            name,
            engine,
            format,
            source,
            retry_after: Duration::from_secs(1),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn template_source(&self) -> TemplateSource {
        self.source
    }

    /// Tokens per sequence (prompt + output).
    pub fn context_per_slot(&self) -> u32 {
        self.engine.config().context_per_slot
    }

    /// A token counter over this model's vocabulary and prompt format.
    pub fn token_counter(self: &Arc<Self>) -> Arc<dyn TokenCounter> {
        Arc::new(LocalTokens(self.clone()))
    }

    /// Render the conversation into a prompt. A template that refuses the conversation
    /// (`raise_exception`) is the client's error; a template minijinja cannot render falls back to
    /// llama.cpp's built-in templates, then to the plain transcript.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<Prompt, BackendError> {
        match self.format.render(messages) {
            Ok(p) => Ok(p),
            Err(e) if e.kind() == minijinja::ErrorKind::InvalidOperation => {
                Err(BackendError::InvalidRequest {
                    param: Some("messages".into()),
                    message: format!(
                        "the model's chat template rejected the conversation: {}",
                        e.detail().unwrap_or("")
                    ),
                })
            }
            Err(e) => {
                tracing::warn!(model = %self.name, error = %e, "chat template failed; using llama.cpp's built-in template");
                Ok(self.builtin(messages).unwrap_or_else(|| {
                    PromptFormat::Transcript.render(messages).unwrap_or(Prompt {
                        text: String::new(),
                        stops: vec![],
                    })
                }))
            }
        }
    }

    fn builtin(&self, messages: &[ChatMessage]) -> Option<Prompt> {
        let model = &self.engine.model;
        let tmpl = model.chat_template(None).ok()?;
        let chat: Vec<LlamaChatMessage> = messages
            .iter()
            .filter_map(|m| LlamaChatMessage::new(m.role.clone(), m.text_content()).ok())
            .collect();
        let text = model.apply_chat_template(&tmpl, &chat, true).ok()?;
        Some(Prompt {
            text,
            stops: Vec::new(),
        })
    }

    fn sampling(request: &BackendRequest) -> Sampling {
        let f = |k: &str| request.extra.get(k).and_then(Value::as_f64).map(|v| v as f32);
        let d = Sampling::default();
        Sampling {
            temperature: request.temperature.unwrap_or(d.temperature),
            top_p: request.top_p.unwrap_or(d.top_p),
            top_k: request
                .extra
                .get("top_k")
                .and_then(Value::as_i64)
                .map_or(d.top_k, |k| k as i32),
            min_p: f("min_p").unwrap_or(d.min_p),
            repeat_penalty: f("repeat_penalty").unwrap_or(d.repeat_penalty),
            frequency_penalty: f("frequency_penalty").unwrap_or(d.frequency_penalty),
            presence_penalty: f("presence_penalty").unwrap_or(d.presence_penalty),
            seed: request.seed.map(|s| s as u32),
            ignore_eos: false,
        }
    }
}

/// Parameters a local model cannot honour: 400 naming the parameter, never silently ignored.
pub fn check_supported(request: &BackendRequest) -> Result<(), BackendError> {
    let unsupported = |param: &str, message: &str| {
        Err(BackendError::Unsupported {
            param: param.to_owned(),
            message: message.to_owned(),
        })
    };
    if request
        .tools
        .as_ref()
        .is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
    {
        return unsupported("tools", "local models do not support tool calls");
    }
    if request
        .tool_choice
        .as_ref()
        .is_some_and(|c| !c.is_null() && c != "none")
    {
        return unsupported("tool_choice", "local models do not support tool calls");
    }
    if let Some(rf) = &request.response_format
        && rf
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "text")
    {
        return unsupported("response_format", "local models only produce text");
    }
    let extra = &request.extra;
    if extra.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return unsupported("n", "local models return one choice");
    }
    if extra.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return unsupported("logprobs", "local models do not return log probabilities");
    }
    if extra
        .get("logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        return unsupported("logit_bias", "local models do not support logit_bias");
    }
    Ok(())
}

#[async_trait]
impl ChatBackend for LocalBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    async fn chat(&self, request: BackendRequest) -> Result<EventStream, BackendError> {
        check_supported(&request)?;
        let prompt = self.render(&request.messages)?;
        let tokens = self.engine.tokenize(&prompt.text);
        let mut stops = request.stop.clone();
        stops.extend(prompt.stops);
        let rx = self
            .engine
            .submit(tokens, request.max_tokens, Self::sampling(&request), stops)
            .map_err(|e| match e {
                EngineError::QueueFull => BackendError::Overloaded {
                    retry_after: self.retry_after,
                },
                e @ EngineError::ContextLength { .. } => BackendError::ContextLength(e.to_string()),
                e => BackendError::Connect(e.to_string()),
            })?;
        // A transcript prompt ends with "Assistant:"; the reply's leading space is not part of it.
        let trim = matches!(self.format, PromptFormat::Transcript);
        Ok(Box::pin(events(rx, trim)))
    }
}

fn events(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    mut trim_start: bool,
) -> impl futures::Stream<Item = Result<BackendEvent, BackendError>> + Send {
    async_stream::stream! {
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Text(mut t) => {
                    if trim_start {
                        t = t.trim_start().to_owned();
                        trim_start = t.is_empty();
                        if trim_start {
                            continue;
                        }
                    }
                    yield Ok(BackendEvent::Delta { content: Some(t), tool_calls: None })
                }
                Event::Done { reason, prompt_tokens, completion_tokens } => {
                    yield Ok(BackendEvent::Finish { reason: reason.to_owned() });
                    yield Ok(BackendEvent::Usage(Usage::new(prompt_tokens, completion_tokens)));
                    return;
                }
                Event::Error(e) => {
                    yield Err(BackendError::Protocol(format!("local generation failed: {e}")));
                    return;
                }
            }
        }
        yield Err(BackendError::Protocol("the local engine stopped".into()));
    }
}

struct LocalTokens(Arc<LocalBackend>);

impl TokenCounter for LocalTokens {
    fn count_text(&self, text: &str) -> usize {
        self.0
            .engine
            .model
            .vocab()
            .tokenize(text.as_bytes(), false, false)
            .len()
    }

    /// Exact: the rendered prompt's tokens.
    fn count_messages(&self, messages: &[ChatMessage]) -> usize {
        match self.0.render(messages) {
            Ok(p) => self.0.engine.tokenize(&p.text).len(),
            Err(_) => {
                messages
                    .iter()
                    .map(|m| 4 + self.count_text(&m.text_content()))
                    .sum::<usize>()
                    + 3
            }
        }
    }
}
