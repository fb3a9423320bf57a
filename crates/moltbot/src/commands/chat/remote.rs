//! Talking to a running server: `POST /v1/chat/completions` as a stream (parsed with moltbot-llm's SSE
//! parser), the conversation continued through `X-Moltbot-Conversation`, `GET /v1/models` and
//! `GET /v1/conversations/{id}/items`.

use std::future::Future;

use futures::StreamExt;
use moltbot_api::{ChatCompletionChunk, ChatCompletionRequest, ErrorEnvelope, ItemList, ModelList};
use moltbot_config::Secret;
use moltbot_llm::sse::SseParser;
use reqwest::{Method, RequestBuilder, StatusCode};

use super::{Ending, Exchange, Failure, Item, Reply};

pub const CONVERSATION_HEADER: &str = "x-moltbot-conversation";

pub struct Remote {
    http: reqwest::Client,
    /// `scheme://host:port[/prefix]`, without `/v1` and without a trailing slash.
    base: String,
    key: Option<Secret>,
}

impl Remote {
    pub fn new(url: &str, key: Option<Secret>) -> anyhow::Result<Self> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("--url {url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("--url {url:?} must start with http:// or https://");
        }
        let trimmed = url.trim_end_matches('/');
        let base = trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_owned();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(moltbot_llm::tls::client_config(moltbot_llm::tls::Alpn::Any))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self { http, base, key })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => req.bearer_auth(k.expose()),
            None => req,
        }
    }

    fn transport(&self, e: &reqwest::Error) -> Failure {
        let what = if e.is_connect() {
            format!(
                "cannot connect to {} (is `moltbot serve` running there?)",
                self.base
            )
        } else {
            format!("request to {} failed", self.base)
        };
        // reqwest's own text ends at the first cause; the root cause says why (refused, reset, …).
        let mut cause = String::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        Failure {
            status: None,
            message: if cause.is_empty() {
                format!("{what}: {e}")
            } else {
                format!("{what}: {cause}")
            },
            code: None,
        }
    }

    /// A successful JSON answer, or the server's error.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        let resp = self
            .request(Method::GET, path)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.transport(&e))?;
        if !status.is_success() {
            return Err(error_from_body(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| Failure {
            status: Some(status.as_u16()),
            message: format!("unexpected answer from {path}: {e}"),
            code: None,
        })
    }

    pub async fn models(&self) -> Result<Vec<String>, Failure> {
        let list: ModelList = self.get_json("/v1/models").await?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }

    pub async fn history(&self, conversation: &str) -> Result<Vec<Item>, Failure> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/conversations/{conversation}/items?order=asc&limit=100");
            if let Some(a) = &after {
                path.push_str("&after=");
                path.push_str(a);
            }
            let page: ItemList = self.get_json(&path).await?;
            for it in &page.data {
                items.push(Item {
                    role: it.role.clone(),
                    text: it.content.iter().map(|p| p.text.as_str()).collect(),
                    status: it.status.clone(),
                });
            }
            if !page.has_more || page.last_id.is_none() {
                return Ok(items);
            }
            after = page.last_id;
        }
    }

    /// Stream one reply. `cancel` resolving drops the request: the server stores what it had sent.
    pub async fn send(
        &self,
        ex: Exchange<'_>,
        cancel: impl Future<Output = ()>,
        out: &mut dyn FnMut(&str),
    ) -> Reply {
        tokio::pin!(cancel);
        let body = ChatCompletionRequest {
            model: ex.model.to_owned(),
            messages: ex.messages.to_vec(),
            stream: Some(true),
            ..Default::default()
        };
        let mut req = self.request(Method::POST, "/v1/chat/completions").json(&body);
        if let Some(c) = ex.conversation {
            req = req.header(CONVERSATION_HEADER, c);
        }
        let mut reply = Reply {
            conversation: ex.conversation.map(str::to_owned),
            text: String::new(),
            ending: Ending::Cancelled,
        };
        let resp = tokio::select! {
            biased;
            () = &mut cancel => return reply,
            r = req.send() => r,
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return reply.failed(self.transport(&e)),
        };
        if let Some(c) = resp
            .headers()
            .get(CONVERSATION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            reply.conversation = Some(c.to_owned());
        }
        let status = resp.status();
        if !status.is_success() {
            let body = tokio::select! {
                biased;
                () = &mut cancel => return reply,
                b = resp.bytes() => b.unwrap_or_default(),
            };
            return reply.failed(error_from_body(status, &body));
        }
        let mut stream = resp.bytes_stream();
        let mut parser = SseParser::new();
        let mut finish: Option<String> = None;
        loop {
            let chunk = tokio::select! {
                biased;
                () = &mut cancel => return reply,
                c = stream.next() => c,
            };
            let (events, ended) = match chunk {
                Some(Ok(bytes)) => match parser.feed(&bytes) {
                    Ok(events) => (events, false),
                    Err(e) => return reply.failed(Failure::protocol(e.to_string())),
                },
                Some(Err(e)) => return reply.failed(self.transport(&e)),
                None => (parser.finish().into_iter().collect(), true),
            };
            for ev in events {
                if ev.data == "[DONE]" {
                    reply.ending = Ending::Finished(finish.unwrap_or_else(|| "stop".into()));
                    return reply;
                }
                if let Some(err) = stream_error(&ev.data) {
                    return reply.failed(err);
                }
                let Ok(chunk) = serde_json::from_str::<ChatCompletionChunk>(&ev.data) else {
                    return reply.failed(Failure::protocol(format!(
                        "the server sent an event that is not a chunk: {}",
                        ev.data.chars().take(200).collect::<String>()
                    )));
                };
                for choice in chunk.choices {
                    if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                        out(&text);
                        reply.text.push_str(&text);
                    }
                    if let Some(r) = choice.finish_reason {
                        finish = Some(r);
                    }
                }
            }
            if ended {
                if let Some(reason) = finish {
                    // A finish chunk without the closing `[DONE]`: lenient, like the SSE parser.
                    reply.ending = Ending::Finished(reason);
                    return reply;
                }
                return reply.failed(Failure::protocol(
                    "the server closed the stream before the reply was complete".into(),
                ));
            }
        }
    }
}

/// An error event inside a stream (`data: {"error": {…}}`).
fn stream_error(data: &str) -> Option<Failure> {
    let env: ErrorEnvelope = serde_json::from_str(data).ok()?;
    Some(Failure::from_envelope(None, env))
}

fn error_from_body(status: StatusCode, body: &[u8]) -> Failure {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(env) => Failure::from_envelope(Some(status.as_u16()), env),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            Failure {
                status: Some(status.as_u16()),
                message: if text.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    text.chars().take(300).collect()
                },
                code: None,
            }
        }
    }
}
