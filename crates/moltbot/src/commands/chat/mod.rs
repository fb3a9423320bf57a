//! `moltbot chat`: a terminal chat client for operators.
//!
//! Against a running server (`--url`, default `http://<chat_addr>`), or in this process with the
//! configured models (`--local`). Replies stream as they are generated; the server keeps the
//! conversation. On a terminal, input goes through a line editor and Ctrl-C cancels a streaming reply;
//! otherwise standard input is read line by line (`echo hi | moltbot chat`).

mod input;
mod local;
mod remote;

use std::fmt;
use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};
use std::pin::Pin;
use std::process::ExitCode;

use anyhow::Context;
use moltbot_api::{ChatMessage, ErrorEnvelope};
use moltbot_config::Secret;
use rustyline::error::ReadlineError;

use crate::args::{ChatArgs, GlobalArgs};
use input::{Command, Composer, HELP, Input};

/// An error as the user sees it: the OpenAI error message and code (and HTTP status, if any).
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: Option<u16>,
    pub message: String,
    pub code: Option<String>,
}

impl Failure {
    fn from_envelope(status: Option<u16>, env: ErrorEnvelope) -> Self {
        Self {
            status,
            message: env.error.message,
            code: env.error.code.or(Some(env.error.kind)),
        }
    }

    fn protocol(message: String) -> Self {
        Self {
            status: None,
            message,
            code: None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match (&self.code, self.status) {
            (Some(code), Some(status)) => write!(f, " (code {code}, HTTP {status})"),
            (Some(code), None) => write!(f, " (code {code})"),
            (None, Some(status)) => write!(f, " (HTTP {status})"),
            (None, None) => Ok(()),
        }
    }
}

/// One request: the model, the conversation to continue (if any) and the messages to send.
#[derive(Clone, Copy)]
pub struct Exchange<'a> {
    pub model: &'a str,
    pub conversation: Option<&'a str>,
    pub messages: &'a [ChatMessage],
}

#[derive(Debug)]
pub enum Ending {
    /// The finish reason (`stop`, `length`, …).
    Finished(String),
    Cancelled,
    Failed(Failure),
}

/// What came back: the conversation it belongs to, the text shown, how it ended.
pub struct Reply {
    pub conversation: Option<String>,
    pub text: String,
    pub ending: Ending,
}

impl Reply {
    fn failed(mut self, f: Failure) -> Self {
        self.ending = Ending::Failed(f);
        self
    }
}

/// A stored message for `/history`.
pub struct Item {
    pub role: String,
    pub text: String,
    /// `completed`, `incomplete` or `in_progress`.
    pub status: String,
}

enum Backend {
    Remote(remote::Remote),
    Local(local::Local),
}

impl Backend {
    async fn models(&self) -> Result<Vec<String>, Failure> {
        match self {
            Backend::Remote(r) => r.models().await,
            Backend::Local(l) => Ok(l.models()),
        }
    }

    async fn history(&self, conversation: &str) -> Result<Vec<Item>, Failure> {
        match self {
            Backend::Remote(r) => r.history(conversation).await,
            Backend::Local(l) => l.history(conversation).await,
        }
    }

    async fn send(
        &self,
        ex: Exchange<'_>,
        cancel: impl Future<Output = ()>,
        out: &mut dyn FnMut(&str),
    ) -> Reply {
        match self {
            Backend::Remote(r) => r.send(ex, cancel, out).await,
            Backend::Local(l) => l.send(ex, cancel, out).await,
        }
    }
}

type Cancel = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Ctrl-C on a terminal cancels the operation under way; without a terminal nothing does (SIGINT
/// keeps its default action and ends the process, dropping the request).
fn cancel_signal(interactive: bool) -> Cancel {
    if !interactive {
        return Box::pin(std::future::pending());
    }
    Box::pin(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}

pub fn run(global: &GlobalArgs, args: &ChatArgs) -> anyhow::Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let rt = super::runtime()?;
    let (backend, origin) = rt.block_on(connect(global, args))?;
    let models = rt
        .block_on(backend.models())
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    let model = pick_model(&backend, &models, args.model.as_deref())?;
    let mut session = Session {
        backend,
        model,
        conversation: args.conversation.clone(),
        local_history: Vec::new(),
        interactive,
        failures: 0,
    };
    // From here on Ctrl-C belongs to the session: install the handler before the first prompt.
    #[cfg(unix)]
    let _sigint = if interactive {
        let _guard = rt.enter();
        Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::interrupt(),
        )?)
    } else {
        None
    };
    if interactive {
        println!("moltbot chat: model {} via {origin}", session.model);
        if let Some(c) = &session.conversation {
            println!("continuing conversation {c}");
        }
        println!(
            "Enter sends; end a line with \\ (or open a block with \"\"\") to write several lines. \
             /help lists the commands; Ctrl-D or /quit leaves."
        );
    }
    let mut reader = if interactive {
        Reader::Editor(Box::new(rustyline::DefaultEditor::new()?))
    } else {
        Reader::Plain(std::io::stdin().lock())
    };
    let mut composer = Composer::default();
    loop {
        let prompt = if composer.is_continuing() {
            "... ".to_owned()
        } else {
            format!("{}> ", session.model)
        };
        let line = match reader.read(&prompt)? {
            Line::Text(l) => l,
            Line::Interrupted => {
                composer.reset();
                eprintln!("^C (Ctrl-D or /quit leaves)");
                continue;
            }
            Line::Eof => {
                if interactive {
                    println!();
                }
                break;
            }
        };
        match composer.feed(&line) {
            None => {}
            Some(Input::Command(Command::Quit)) => break,
            Some(Input::Command(cmd)) => rt.block_on(session.command(cmd)),
            Some(Input::Message(text)) => rt.block_on(session.say(text)),
        }
    }
    Ok(if session.failures > 0 && !interactive {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The backend and a description of where it is, for the banner.
async fn connect(global: &GlobalArgs, args: &ChatArgs) -> anyhow::Result<(Backend, String)> {
    if args.local {
        let loaded = super::load_config(global)?;
        let local = local::Local::start(loaded.config)
            .await
            .context("cannot start the chat service in this process")?;
        return Ok((Backend::Local(local), "this process (--local)".into()));
    }
    // The configuration is only needed for what the flags do not give.
    let config = if args.url.is_none() || args.api_key.is_none() {
        Some(super::load_config(global)?.config)
    } else {
        None
    };
    let url = match (&args.url, &config) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => super::loopback_url(c.chat_addr, c.tls.on("dialog")),
        (None, None) => unreachable!("the configuration is loaded when --url is absent"),
    };
    let (key, key_origin) = match (&args.api_key, &config) {
        (Some(k), _) => (Some(Secret::new(k.trim())), "the given API key".to_owned()),
        (None, Some(c)) => key_from_file(&c.auth.bootstrap_key_file)?,
        (None, None) => (None, "no API key".to_owned()),
    };
    let client = remote::Remote::new(&url, key)?;
    let origin = format!("{} ({key_origin})", client.base());
    Ok((Backend::Remote(client), origin))
}

/// `http://<chat_addr>`, with a wildcard address replaced by loopback.
/// The bootstrap admin key file (`auth.bootstrap_key_file`), when it exists.
fn key_from_file(path: &str) -> anyhow::Result<(Option<Secret>, String)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim();
            if key.is_empty() {
                anyhow::bail!("{path} is empty; pass --api-key or set MOLTBOT_API_KEY");
            }
            Ok((Some(Secret::new(key)), format!("API key from {path}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((
            None,
            "no API key: pass --api-key or set MOLTBOT_API_KEY".to_owned(),
        )),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read the API key file {path}: {e}; pass --api-key or set MOLTBOT_API_KEY"
        )),
    }
}

fn pick_model(backend: &Backend, models: &[String], wanted: Option<&str>) -> anyhow::Result<String> {
    if let Some(w) = wanted {
        if models.iter().any(|m| m == w) {
            return Ok(w.to_owned());
        }
        anyhow::bail!("model {w:?} is not served; available: {}", models.join(", "));
    }
    if let Backend::Local(l) = backend
        && let Some(m) = l.first_local_model()
    {
        return Ok(m);
    }
    models
        .iter()
        .find(|m| *m == moltbot_server::local::DEFAULT_MODEL_NAME)
        .or_else(|| models.first())
        .cloned()
        .context("no model is configured (GET /v1/models is empty)")
}

struct Session {
    backend: Backend,
    model: String,
    /// The stored conversation replies go to (the server's `X-Moltbot-Conversation`).
    conversation: Option<String>,
    /// The messages so far, sent in full only while the server gives no conversation id
    /// (`store.record_exchanges = false`).
    local_history: Vec<ChatMessage>,
    interactive: bool,
    failures: u32,
}

impl Session {
    async fn say(&mut self, text: String) {
        let user = ChatMessage::text("user", text);
        let mut messages = if self.conversation.is_none() {
            self.local_history.clone()
        } else {
            Vec::new()
        };
        messages.push(user.clone());
        let ex = Exchange {
            model: &self.model,
            conversation: self.conversation.as_deref(),
            messages: &messages,
        };
        let mut stdout = std::io::stdout();
        let mut out = |t: &str| {
            let _ = stdout.write_all(t.as_bytes());
            let _ = stdout.flush();
        };
        let reply = self
            .backend
            .send(ex, cancel_signal(self.interactive), &mut out)
            .await;
        if reply.conversation.is_some() {
            self.conversation = reply.conversation;
        }
        let mut stdout = std::io::stdout();
        if !reply.text.is_empty() && !reply.text.ends_with('\n') {
            let _ = writeln!(stdout);
        }
        let _ = stdout.flush();
        match reply.ending {
            Ending::Finished(reason) => {
                if reason == "length" {
                    eprintln!("[the reply reached the token limit]");
                } else if reason != "stop" {
                    eprintln!("[finished: {reason}]");
                }
                self.local_history.push(user);
                self.local_history
                    .push(ChatMessage::text("assistant", reply.text));
            }
            Ending::Cancelled => {
                eprintln!("[cancelled]");
                self.local_history.push(user);
                if !reply.text.is_empty() {
                    self.local_history
                        .push(ChatMessage::text("assistant", reply.text));
                }
            }
            Ending::Failed(f) => {
                self.failures += 1;
                eprintln!("error: {f}");
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::New => {
                self.conversation = None;
                self.local_history.clear();
                println!("(new conversation)");
            }
            Command::Model(wanted) => self.model_command(wanted).await,
            Command::History => self.history().await,
            Command::Help => println!("{HELP}"),
            Command::Quit => {}
            Command::Unknown(name) => {
                eprintln!("unknown command /{name}; /help lists the commands (//text sends /text)");
            }
        }
    }

    /// Run `fut` unless Ctrl-C comes first.
    async fn interruptible<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            () = cancel_signal(self.interactive) => {
                eprintln!("[cancelled]");
                None
            }
            v = fut => Some(v),
        }
    }

    async fn model_command(&mut self, wanted: Option<String>) {
        let Some(models) = self.interruptible(self.backend.models()).await else {
            return;
        };
        let models = match models {
            Ok(m) => m,
            Err(f) => {
                self.failures += 1;
                eprintln!("error: {f}");
                return;
            }
        };
        match wanted {
            None => {
                println!("model: {}", self.model);
                println!("available:");
                for m in &models {
                    let mark = if *m == self.model { "*" } else { " " };
                    println!(" {mark} {m}");
                }
            }
            Some(name) if models.contains(&name) => {
                println!("model: {name}");
                self.model = name;
            }
            Some(name) => {
                self.failures += 1;
                eprintln!(
                    "error: the model `{name}` is not served; available: {}",
                    models.join(", ")
                );
            }
        }
    }

    async fn history(&mut self) {
        let items = match &self.conversation {
            Some(conv) => {
                let Some(items) = self.interruptible(self.backend.history(conv)).await else {
                    return;
                };
                match items {
                    Ok(items) => items,
                    Err(f) => {
                        self.failures += 1;
                        eprintln!("error: {f}");
                        return;
                    }
                }
            }
            None => self
                .local_history
                .iter()
                .map(|m| Item {
                    role: m.role.clone(),
                    text: m.text_content(),
                    status: "completed".into(),
                })
                .collect(),
        };
        if items.is_empty() {
            println!("(no messages yet)");
            return;
        }
        if let Some(c) = &self.conversation {
            println!("conversation {c}:");
        }
        for it in items {
            let note = match it.status.as_str() {
                "completed" => "",
                "incomplete" => " [incomplete]",
                _ => " [in progress]",
            };
            println!("{}{note}: {}", it.role, it.text);
        }
    }
}

enum Line {
    Text(String),
    Interrupted,
    Eof,
}

enum Reader {
    Editor(Box<rustyline::DefaultEditor>),
    Plain(std::io::StdinLock<'static>),
}

impl Reader {
    fn read(&mut self, prompt: &str) -> anyhow::Result<Line> {
        match self {
            Reader::Editor(ed) => match ed.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = ed.add_history_entry(line.as_str());
                    }
                    Ok(Line::Text(line))
                }
                Err(ReadlineError::Interrupted) => Ok(Line::Interrupted),
                Err(ReadlineError::Eof) => Ok(Line::Eof),
                Err(e) => Err(e.into()),
            },
            Reader::Plain(stdin) => {
                let mut line = String::new();
                if stdin.read_line(&mut line)? == 0 {
                    return Ok(Line::Eof);
                }
                if line.ends_with('\n') {
                    line.pop();
                }
                Ok(Line::Text(line))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_uses_loopback_for_wildcards() {
        use crate::commands::loopback_url;
        assert_eq!(
            loopback_url("0.0.0.0:7443".parse().unwrap(), false),
            "http://127.0.0.1:7443"
        );
        assert_eq!(loopback_url("[::]:9".parse().unwrap(), true), "https://[::1]:9");
        assert_eq!(
            loopback_url("10.1.2.3:80".parse().unwrap(), false),
            "http://10.1.2.3:80"
        );
    }

    #[test]
    fn failures_read_like_openai_errors() {
        let f = Failure::from_envelope(
            Some(404),
            ErrorEnvelope::new(
                "invalid_request_error",
                "Conversation with id 'conv_x' not found.",
                Some("conversation"),
                Some("conversation_not_found"),
            ),
        );
        assert_eq!(
            f.to_string(),
            "Conversation with id 'conv_x' not found. (code conversation_not_found, HTTP 404)"
        );
        let f = Failure::from_envelope(None, ErrorEnvelope::new("server_error", "boom", None, None));
        assert_eq!(f.to_string(), "boom (code server_error)");
    }
}
