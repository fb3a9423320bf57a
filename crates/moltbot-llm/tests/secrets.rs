//! API keys never appear in errors or logs, whatever goes wrong.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use moltbot_core::{BackendError, ChatBackend};
use moltbot_testkit::{Failure, Script, StatusReply};
use serde_json::json;

const KEY: &str = "sk-DISTINCTIVE-7f3a9c";

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn echoing_key(status: u16) -> StatusReply {
    StatusReply::new(status).body(
        json!({"error": {"message": format!("Incorrect API key provided: {KEY}"),
        "param": KEY, "code": "invalid_api_key"}}),
    )
}

async fn error_of(script: Script, tweak: impl FnOnce(&mut moltbot_llm::RemoteSettings)) -> BackendError {
    let fake = fake(script).await;
    let mut s = settings(&fake, &[KEY]);
    s.retry.max_attempts = 2;
    s.timeouts.first_byte = 100 * MS;
    s.timeouts.idle = 100 * MS;
    tweak(&mut s);
    match backend(s).chat(request("hi")).await {
        Err(e) => e,
        Ok(stream) => collect(stream).await.error.expect("an error"),
    }
}

#[tokio::test]
async fn keys_never_appear_in_errors_or_logs() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let unused_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let errors = vec![
        error_of(Script::status_reply(echoing_key(400)), |_| {}).await,
        error_of(Script::status_reply(echoing_key(401)), |_| {}).await,
        error_of(Script::status_reply(echoing_key(403)), |_| {}).await,
        error_of(Script::status_reply(echoing_key(429).retry_after("0")), |_| {}).await,
        error_of(Script::status_reply(echoing_key(503)), |_| {}).await,
        error_of(
            Script::status_reply(StatusReply::new(500).body(json!(KEY))),
            |_| {},
        )
        .await,
        error_of(Script::hang(), |_| {}).await,
        error_of(
            Script::text("abcd").chunks(4).fail_after(1, Failure::Stall),
            |_| {},
        )
        .await,
        error_of(
            Script::text("abcd").chunks(4).fail_after(1, Failure::Abort),
            |_| {},
        )
        .await,
        error_of(
            Script::text("abcd").chunks(4).fail_after(1, Failure::Garbage),
            |_| {},
        )
        .await,
        error_of(Script::default(), |s| {
            s.base_url = format!("http://{unused_port}/v1?key={KEY}").parse().unwrap();
        })
        .await,
        error_of(Script::default(), |s| {
            s.circuit.failure_threshold = 1;
            s.base_url = format!("http://{unused_port}/v1").parse().unwrap();
        })
        .await,
    ];
    let kinds: Vec<String> = errors.iter().map(|e| format!("{e:?}")).collect();
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, BackendError::InvalidRequest { .. })),
        "{kinds:?}"
    );
    assert!(
        errors.iter().any(|e| matches!(e, BackendError::Connect(_))),
        "{kinds:?}"
    );
    assert!(
        errors.iter().any(|e| matches!(e, BackendError::Timeout("idle"))),
        "{kinds:?}"
    );
    for e in &errors {
        assert!(!format!("{e:?}").contains(KEY), "{e:?}");
        assert!(!e.to_string().contains(KEY), "{e}");
    }
    // The upstream's message is kept, minus the key.
    assert!(format!("{:?}", errors[0]).contains("Incorrect API key provided: [redacted]"));

    let fake = fake(Script::default()).await;
    let b = backend(settings(&fake, &[KEY]));
    assert!(!format!("{b:?}").contains(KEY));
    assert!(!format!("{:?}", b.settings()).contains(KEY));

    tokio::time::sleep(Duration::from_millis(10)).await;
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("upstream attempt"), "debug events are logged");
    assert!(!logs.contains(KEY));
}
