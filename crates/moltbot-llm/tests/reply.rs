//! Callers that want only the whole reply (non-streaming clients, channel replies, summaries): the
//! upstream is asked for one JSON `chat.completion`, and what can go wrong with it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use moltbot_api::Usage;
use moltbot_core::{BackendError, BackendEvent, ChatBackend};
use moltbot_testkit::{Failure, Script};

#[tokio::test]
async fn asks_for_one_json_reply_and_maps_it_to_events() {
    let fake = fake(
        Script::text("Hello, whole reply.")
            .chunks(4)
            .finish_reason("length"),
    )
    .await;
    let b = backend(settings(&fake, &["sk-one"]));
    let c = collect(b.chat(whole_reply("hi")).await.unwrap()).await;
    assert!(c.error.is_none(), "{:?}", c.error);
    assert_eq!(
        c.events,
        vec![
            BackendEvent::Delta {
                content: Some("Hello, whole reply.".into()),
                tool_calls: None
            },
            BackendEvent::Finish {
                reason: "length".into()
            },
            BackendEvent::Usage(Usage::new(1, 4)),
        ]
    );
    let reqs = fake.chat_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body["stream"], false);
    assert!(reqs[0].body.get("stream_options").is_none(), "{}", reqs[0].body);
    assert_eq!(reqs[0].header("accept"), Some("application/json"));
    assert_eq!(reqs[0].bearer(), Some("sk-one"));
}

#[tokio::test]
async fn an_upstream_that_streams_anyway_is_read_as_a_stream() {
    let fake = fake(Script::text("streamed regardless").chunks(2).sse_response()).await;
    let b = backend(settings(&fake, &[]));
    let c = collect(b.chat(whole_reply("hi")).await.unwrap()).await;
    assert_eq!((c.text.as_str(), c.error), ("streamed regardless", None));
    assert_eq!(fake.chat_requests()[0].body["stream"], false);
}

#[tokio::test]
async fn always_stream_asks_for_a_stream_anyway() {
    let fake = fake(Script::text("streamed").chunks(3)).await;
    let mut s = settings(&fake, &[]);
    s.always_stream = true;
    let c = collect(backend(s).chat(whole_reply("hi")).await.unwrap()).await;
    assert_eq!((c.text.as_str(), c.error), ("streamed", None));
    // Three deltas: the reply came as a stream.
    let deltas = c
        .events
        .iter()
        .filter(|e| matches!(e, BackendEvent::Delta { .. }))
        .count();
    assert_eq!(deltas, 3);
    assert_eq!(fake.chat_requests()[0].body["stream"], true);
}

#[tokio::test]
async fn a_reply_longer_than_the_first_byte_timeout_is_waited_for() {
    // 5 chunks 600 ms apart: the whole reply comes after 2.4 s, beyond the 2 s first-byte timeout
    // (which a streaming caller would have had its first token well within).
    let fake = fake(Script::text("slow but whole").chunks(5).chunk_interval(600 * MS)).await;
    let b = backend(settings(&fake, &[]));
    let started = Instant::now();
    let c = collect(b.chat(whole_reply("hi")).await.unwrap()).await;
    assert_eq!((c.text.as_str(), c.error), ("slow but whole", None));
    assert!(started.elapsed() >= Duration::from_millis(2400));
    assert_eq!(fake.chat_requests().len(), 1);
}

#[tokio::test]
async fn a_reply_cut_off_midway_is_retried() {
    // The first attempt's body breaks off halfway; the client has seen nothing, so it is retried.
    let fake = fake(Script::text("second time lucky")).await;
    fake.push(Script::text("never whole").fail_after(1, Failure::Abort));
    let b = backend(settings(&fake, &[]));
    let c = collect(b.chat(whole_reply("hi")).await.unwrap()).await;
    assert_eq!((c.text.as_str(), c.error), ("second time lucky", None));
    assert_eq!(fake.chat_requests().len(), 2);
}

#[tokio::test]
async fn a_reply_that_is_not_json_is_retried_then_reported() {
    let fake = fake(Script::text("x").fail_after(0, Failure::Garbage)).await;
    let b = backend(settings(&fake, &[]));
    let err = b.chat(whole_reply("hi")).await.err().expect("an error");
    assert!(
        matches!(&err, BackendError::Protocol(m) if m.contains("invalid JSON")),
        "{err:?}"
    );
    assert_eq!(fake.chat_requests().len(), 3);
}

#[tokio::test]
async fn a_stalled_reply_ends_at_the_total_timeout() {
    let fake = fake(Script::text("half of it").fail_after(1, Failure::Stall)).await;
    let mut s = settings(&fake, &[]);
    s.timeouts.total = Duration::from_millis(1500);
    let started = Instant::now();
    let err = backend(s).chat(whole_reply("hi")).await.err().expect("an error");
    assert_eq!(err, BackendError::Timeout("total"));
    // Not the first-byte timeout (2 s here), and no retry after the total one.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.chat_requests().len(), 1);
}
