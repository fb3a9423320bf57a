//! The event stream handed to the caller: reads the body, parses SSE, maps chunks, enforces the idle
//! and total timeouts. Dropping it drops the response, which closes the upstream connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use moltbot_core::{BackendError, BackendEvent, EventStream};
use tokio::time::{Instant, timeout_at};

use crate::errors::{Redactor, describe};
use crate::events::ChunkMapper;
use crate::sse::SseParser;

pub(crate) struct SseStream {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    mapper: ChunkMapper,
    pending: VecDeque<Result<BackendEvent, BackendError>>,
    idle: Duration,
    /// The idle timeout applies only once the first event was delivered (before, first-byte does).
    idle_active: bool,
    deadline: Instant,
    ended: bool,
    redactor: Arc<Redactor>,
}

impl SseStream {
    pub fn new(resp: reqwest::Response, idle: Duration, deadline: Instant, redactor: Arc<Redactor>) -> Self {
        Self {
            body: resp.bytes_stream().boxed(),
            parser: SseParser::new(),
            mapper: ChunkMapper::default(),
            pending: VecDeque::new(),
            idle,
            idle_active: false,
            deadline,
            ended: false,
            redactor,
        }
    }

    fn fail(&mut self, err: BackendError) -> Option<Result<BackendEvent, BackendError>> {
        self.ended = true;
        self.pending.clear();
        Some(Err(err))
    }

    pub async fn next_event(&mut self) -> Option<Result<BackendEvent, BackendError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return match ev {
                    Ok(ev) => Some(Ok(ev)),
                    Err(e) => self.fail(e),
                };
            }
            if self.ended {
                return None;
            }
            let idle_at = Instant::now() + self.idle;
            let (limit, label) = if self.idle_active && idle_at < self.deadline {
                (idle_at, "idle")
            } else {
                (self.deadline, "total")
            };
            let mut out = Vec::new();
            match timeout_at(limit, self.body.next()).await {
                Err(_) => return self.fail(BackendError::Timeout(label)),
                Ok(Some(Err(e))) => {
                    let msg = format!("upstream stream broke: {}", describe(e, &self.redactor));
                    return self.fail(BackendError::Protocol(msg));
                }
                Ok(Some(Ok(bytes))) => match self.parser.feed(&bytes) {
                    Ok(events) => {
                        for ev in events {
                            if let Err(e) = self.mapper.on_data(&ev.data, &self.redactor, &mut out) {
                                out.push(Err(e));
                                break;
                            }
                        }
                    }
                    Err(e) => out.push(Err(BackendError::Protocol(e.to_string()))),
                },
                Ok(None) => {
                    if let Some(ev) = self.parser.finish()
                        && let Err(e) = self.mapper.on_data(&ev.data, &self.redactor, &mut out)
                    {
                        out.push(Err(e));
                    }
                    self.mapper.on_end(&mut out);
                    self.ended = true;
                }
            }
            if self.mapper.done {
                self.ended = true;
            }
            self.pending.extend(out);
        }
    }

    /// Puts an already-read event back in front.
    pub fn unread(&mut self, ev: Result<BackendEvent, BackendError>) {
        self.pending.push_front(ev);
    }

    pub fn into_event_stream(mut self) -> EventStream {
        self.idle_active = true;
        Box::pin(futures::stream::unfold(self, |mut s| async move {
            s.next_event().await.map(|ev| (ev, s))
        }))
    }
}
