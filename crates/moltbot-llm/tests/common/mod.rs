//! Shared helpers for the tests against the fake upstream.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use moltbot_api::ChatMessage;
use moltbot_core::{BackendError, BackendEvent, BackendRequest, EventStream};
use moltbot_llm::{CircuitSettings, RemoteBackend, RemoteSettings, RetryPolicy, Timeouts, http_client};
use moltbot_testkit::{FakeConfig, FakeUpstream, Script};

pub const MS: Duration = Duration::from_millis(1);

pub async fn fake(default_script: Script) -> FakeUpstream {
    FakeUpstream::start(FakeConfig {
        default_script,
        ..Default::default()
    })
    .await
}

/// Short real durations: these tests talk to a real server.
pub fn settings(fake: &FakeUpstream, keys: &[&str]) -> RemoteSettings {
    let mut s = RemoteSettings::new("test-backend", fake.base_url().parse().unwrap(), Vec::new());
    s.api_keys = keys.iter().map(|k| k.to_string()).collect();
    s.timeouts = Timeouts {
        connect: Duration::from_secs(1),
        first_byte: Duration::from_secs(2),
        idle: Duration::from_secs(2),
        total: Duration::from_secs(10),
    };
    s.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: 10 * MS,
        max_delay: 50 * MS,
        retry_after_cap: Duration::from_secs(2),
    };
    s.circuit = CircuitSettings {
        failure_threshold: 100,
        open_for: Duration::from_secs(1),
    };
    s.key_cooldown = Duration::from_secs(60);
    s
}

pub fn backend(settings: RemoteSettings) -> RemoteBackend {
    RemoteBackend::new(settings, http_client(Duration::from_secs(1)))
}

/// A request from a caller that reads the events as they come (a streaming client).
pub fn request(text: &str) -> BackendRequest {
    BackendRequest {
        model: "fake-model".into(),
        messages: vec![ChatMessage::text("user", text)],
        max_tokens: 64,
        request_id: "req-123".into(),
        stream: true,
        ..Default::default()
    }
}

/// A request from a caller that wants only the whole reply (a non-streaming client).
pub fn whole_reply(text: &str) -> BackendRequest {
    BackendRequest {
        stream: false,
        ..request(text)
    }
}

/// Everything a stream yields: assembled text, all events, and the error that ended it, if any.
pub struct Collected {
    pub text: String,
    pub events: Vec<BackendEvent>,
    pub error: Option<BackendError>,
}

pub async fn collect(mut stream: EventStream) -> Collected {
    let mut c = Collected {
        text: String::new(),
        events: Vec::new(),
        error: None,
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(ev) => {
                if let BackendEvent::Delta { content: Some(t), .. } = &ev {
                    c.text.push_str(t);
                }
                c.events.push(ev);
            }
            Err(e) => {
                c.error = Some(e);
                assert!(stream.next().await.is_none(), "stream continued after an error");
                break;
            }
        }
    }
    c
}
