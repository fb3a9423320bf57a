//! [`LocalBackend`]: the engine behind the same [`ChatBackend`] trait (and OpenAI responses) as remote
//! models, and a [`TokenCounter`] that uses the model's own vocabulary and prompt format.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use llama_cpp_2::model::LlamaChatMessage;
use moltbot_api::{ChatMessage, Usage};
use moltbot_core::{
    BackendError, BackendEvent, BackendRequest, ChatBackend, EmbedOutput, EmbedRequest, EventStream,
    TokenCounter,
};
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
    /// The chat template renders `tools` in the Hermes `<tool_call>` format.
    supports_tools: bool,
    embeddings: crate::embed::Embeddings,
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
        let supports_tools = crate::tools::template_supports_tools(format.jinja_source());
        tracing::info!(model = %name, template = source.as_str(), tools = supports_tools, "local model ready");
        let embeddings = crate::embed::Embeddings::new(&engine);
        Self {
            name,
            engine,
            format,
            source,
            retry_after: Duration::from_secs(1),
            supports_tools,
            embeddings,
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
        self.render_tools(messages, None)
    }

    /// [`Self::render`] with tools offered to the template (`tools` in the chat shape).
    pub fn render_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Value>,
    ) -> Result<Prompt, BackendError> {
        match self.format.render_tools(messages, tools) {
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
            grammar: None,
        }
    }
}

/// Parameters a local model cannot honour: 400 naming the parameter, never silently ignored. (Tools
/// and `response_format` are checked against the model in `LocalBackend::structured`.)
pub fn check_supported(request: &BackendRequest) -> Result<(), BackendError> {
    let unsupported = |param: &str, message: &str| {
        Err(BackendError::Unsupported {
            param: param.to_owned(),
            message: message.to_owned(),
        })
    };
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
        let mut sampling = Self::sampling(&request);
        let (tools, grammar) = self.structured(&request)?;
        sampling.grammar = grammar;
        let prompt = self.render_tools(&request.messages, tools)?;
        let tokens = self.engine.tokenize(&prompt.text);
        let mut stops = request.stop.clone();
        stops.extend(prompt.stops);
        let rx = self
            .engine
            .submit(tokens, request.max_tokens, sampling, stops)
            .map_err(|e| match e {
                EngineError::QueueFull => BackendError::Overloaded {
                    retry_after: self.retry_after,
                },
                e @ EngineError::ContextLength { .. } => BackendError::ContextLength(e.to_string()),
                e => BackendError::Connect(e.to_string()),
            })?;
        // A transcript prompt ends with "Assistant:"; the reply's leading space is not part of it.
        let trim = matches!(self.format, PromptFormat::Transcript);
        if tools.is_some() {
            Ok(Box::pin(with_tool_calls(events(rx, trim))))
        } else {
            Ok(Box::pin(events(rx, trim)))
        }
    }

    async fn embed(&self, request: EmbedRequest) -> Result<EmbedOutput, BackendError> {
        self.embeddings.embed(request).await
    }
}

impl LocalBackend {
    /// The tools to render (when calls are possible) and the grammar that constrains the output:
    /// `response_format` JSON, or tool calls. A grammar llama.cpp refuses is a 400 before queueing.
    fn structured<'a>(
        &self,
        request: &'a BackendRequest,
    ) -> Result<(Option<&'a Value>, Option<crate::tools::Grammar>), BackendError> {
        use crate::tools::{ToolPlan, plan, response_format_grammar};
        let tool_plan = plan(
            request.tools.as_ref(),
            request.tool_choice.as_ref(),
            self.supports_tools,
        )?;
        let format = response_format_grammar(request.response_format.as_ref())?;
        let (tools, grammar, param) = match (tool_plan, format) {
            (ToolPlan::Calls { .. }, Some(_)) => {
                return Err(BackendError::Unsupported {
                    param: "response_format".into(),
                    message: "local models cannot combine tools with a JSON response_format".into(),
                });
            }
            (ToolPlan::Calls { grammar }, None) => (request.tools.as_ref(), Some(grammar), "tools"),
            (ToolPlan::None, g) => (None, g, "response_format"),
        };
        if let Some(g) = &grammar {
            let probe = Sampling {
                grammar: Some(g.clone()),
                ..Sampling::greedy()
            };
            probe
                .check_grammar(&self.engine.model)
                .map_err(|e| BackendError::InvalidRequest {
                    param: Some(param.into()),
                    message: format!("llama.cpp refused the grammar built for `{param}`: {e}"),
                })?;
        }
        Ok((tools, grammar))
    }
}

/// Text deltas pass through a [`crate::tools::ToolCallFilter`]; calls come out as one tool-call delta
/// before `Finish { reason: "tool_calls" }`.
fn with_tool_calls(
    inner: impl futures::Stream<Item = Result<BackendEvent, BackendError>> + Send,
) -> impl futures::Stream<Item = Result<BackendEvent, BackendError>> + Send {
    async_stream::stream! {
        let mut filter = crate::tools::ToolCallFilter::default();
        futures::pin_mut!(inner);
        while let Some(ev) = futures::StreamExt::next(&mut inner).await {
            match ev {
                Ok(BackendEvent::Delta { content: Some(t), .. }) => {
                    let shown = filter.push(&t);
                    if !shown.is_empty() {
                        yield Ok(BackendEvent::Delta { content: Some(shown), tool_calls: None });
                    }
                }
                Ok(BackendEvent::Finish { reason }) => {
                    let (rest, calls) = filter.finish();
                    if !rest.is_empty() {
                        yield Ok(BackendEvent::Delta { content: Some(rest), tool_calls: None });
                    }
                    if calls.is_empty() {
                        yield Ok(BackendEvent::Finish { reason });
                    } else {
                        yield Ok(BackendEvent::Delta { content: None, tool_calls: Some(Value::Array(calls)) });
                        yield Ok(BackendEvent::Finish { reason: "tool_calls".into() });
                    }
                }
                other => yield other,
            }
        }
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
