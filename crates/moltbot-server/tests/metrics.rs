//! `/metrics` after real traffic: the counters move by exactly what the traffic implies (requests,
//! tokens, errors, retries), streams are accounted when they end, and the endpoint is on the admin
//! listener only. Deltas are measured (before/after), so the process-wide recorder may be shared.

mod common;

use std::time::Duration;

use common::*;
use moltbot_testkit::Script;
use serde_json::json;

/// Parsed Prometheus text exposition.
struct Scrape(String);

impl Scrape {
    /// Sum of the samples named `name` whose labels include every `(key, value)` of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
                if metric != name {
                    return None;
                }
                let rest = rest.strip_suffix('}').unwrap_or(rest);
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
                all.then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }

    fn has_help(&self, name: &str) -> bool {
        self.0.lines().any(|l| l.starts_with(&format!("# HELP {name} ")))
    }
}

async fn scrape(srv: &TestServer) -> Scrape {
    let r = srv.http.get(srv.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    Scrape(r.text().await.unwrap())
}

fn chat_body(model: &str, stream: bool) -> serde_json::Value {
    json!({"model": model, "messages": [user("hi")], "stream": stream})
}

#[tokio::test]
async fn counters_move_by_what_the_traffic_implies() {
    let ok = fake_with(Script::text("one two three").chunks(3)).await;
    let broken = fake_with(Script::status(500)).await;
    let extra = format!(
        r#"
[[models]]
name = "broken"
endpoint = "{}"
retry = {{ max_attempts = 2, base_delay = "10ms", max_delay = "20ms" }}
circuit = {{ failure_threshold = 100 }}
"#,
        broken.base_url()
    );
    let srv = start_with(&ok, &extra, |_| {}).await;
    let before = scrape(&srv).await;

    for _ in 0..3 {
        let (status, _) = srv.chat(chat_body("gpt-test", false)).await;
        assert_eq!(status, 200);
    }
    let r = srv
        .post("/v1/chat/completions", chat_body("gpt-test", true))
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    let (status, _) = srv.chat(chat_body("no-such-model", false)).await;
    assert_eq!(status, 404);
    for _ in 0..2 {
        let (status, _) = srv.chat(chat_body("broken", false)).await;
        assert_eq!(status, 502);
    }
    let after = scrape(&srv).await;
    let delta = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);

    let chat_route = [("listener", "chat"), ("route", "/v1/chat/completions")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut l = chat_route.to_vec();
        l.extend_from_slice(extra);
        l
    };
    assert_eq!(
        delta(
            "http_requests_total",
            &with(&[("status", "200"), ("stream", "false")])
        ),
        3.0
    );
    assert_eq!(
        delta(
            "http_requests_total",
            &with(&[("status", "200"), ("stream", "true")])
        ),
        1.0
    );
    assert_eq!(delta("http_requests_total", &with(&[("status", "404")])), 1.0);
    assert_eq!(delta("http_requests_total", &with(&[("status", "502")])), 2.0);
    assert_eq!(
        delta(
            "http_request_duration_seconds_count",
            &with(&[("stream", "false")])
        ),
        6.0
    );
    assert_eq!(
        delta(
            "http_request_duration_seconds_count",
            &with(&[("stream", "true")])
        ),
        1.0
    );
    assert_eq!(after.sum("http_requests_in_flight", &[("listener", "chat")]), 0.0);

    let chat = |model, outcome| {
        delta(
            "moltbot_chat_requests_total",
            &[("model", model), ("outcome", outcome)],
        )
    };
    assert_eq!(chat("gpt-test", "success"), 4.0);
    assert_eq!(chat("<unknown>", "invalid_request"), 1.0);
    assert_eq!(chat("broken", "upstream_error"), 2.0);

    // The fake reports usage: prompt = messages received (1), completion = chunks (3).
    let tokens = |kind| delta("moltbot_tokens_total", &[("model", "gpt-test"), ("kind", kind)]);
    assert_eq!(tokens("prompt"), 4.0);
    assert_eq!(tokens("completion"), 12.0);
    assert_eq!(
        delta(
            "moltbot_time_to_first_token_seconds_count",
            &[("model", "gpt-test")]
        ),
        4.0
    );
    // The streamed reply has 3 deltas: 2 gaps. The 3 non-streamed replies came as one JSON body each
    // (one delta, no gap).
    assert_eq!(
        delta("moltbot_inter_token_seconds_count", &[("model", "gpt-test")]),
        2.0
    );

    let upstream = |backend, status| {
        delta(
            "moltbot_upstream_requests_total",
            &[("backend", backend), ("status", status)],
        )
    };
    assert_eq!(upstream("gpt-test", "200"), 4.0);
    assert_eq!(upstream("broken", "500"), 4.0);
    assert_eq!(
        delta("moltbot_upstream_retries_total", &[("backend", "broken")]),
        2.0
    );
    assert_eq!(
        delta("moltbot_upstream_retries_total", &[("backend", "gpt-test")]),
        0.0
    );
    assert_eq!(
        after.sum("moltbot_backend_circuit_state", &[("backend", "broken")]),
        0.0
    );
    // Turns are written in groups (`turn_group`): a turn's two writes are never in the same group.
    assert!(delta("moltbot_db_query_duration_seconds_count", &[("op", "turn_group")]) >= 2.0);
    srv.stop().await;
}

#[tokio::test]
async fn every_metric_is_described_and_process_and_build_info_are_there() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let (status, _) = srv.chat(chat_body("gpt-test", false)).await;
    assert_eq!(status, 200);
    let s = scrape(&srv).await;
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "http_requests_in_flight",
        "moltbot_chat_requests_total",
        "moltbot_tokens_total",
        "moltbot_time_to_first_token_seconds",
        "moltbot_upstream_requests_total",
        "moltbot_backend_circuit_state",
        "moltbot_db_query_duration_seconds",
        "moltbot_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(s.has_help(name), "no # HELP for {name}");
    }
    // Every family that has samples is described.
    for line in s.0.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(s.has_help(name), "no # HELP for {name}");
    }
    assert!(s.0.contains("# TYPE http_request_duration_seconds histogram"));
    assert_eq!(
        s.sum("moltbot_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert!(s.sum("process_resident_memory_bytes", &[]) > 0.0);
    assert!(s.sum("process_start_time_seconds", &[]) > 1.6e9);
    srv.stop().await;
}

#[tokio::test]
async fn metrics_are_on_the_admin_listener_only_or_their_own() {
    let fake = fake().await;
    let srv = start(&fake).await;
    assert_eq!(srv.get("/metrics").await.status(), 404);
    srv.stop().await;

    let srv = start_with(&fake, "", |c| {
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let own = srv.addrs.metrics_addr.expect("a metrics listener");
    let r = srv
        .http
        .get(format!("http://{own}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("# HELP http_requests_total"));
    let r = srv.http.get(srv.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(
        r.status(),
        404,
        "with metrics_addr set, the admin listener does not serve /metrics"
    );
    assert_eq!(srv.get("/metrics").await.status(), 404);
    srv.stop().await;
}

#[tokio::test]
async fn an_abandoned_stream_is_accounted_when_its_body_is_dropped() {
    let slow = fake_with(
        Script::text("a b c d e f g h i j")
            .chunks(10)
            .chunk_interval(Duration::from_millis(200)),
    )
    .await;
    let srv = start(&slow).await;
    let before = scrape(&srv).await;
    let mut r = srv
        .post("/v1/chat/completions", chat_body("gpt-test", true))
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.chunk().await.unwrap().is_some());
    let during = scrape(&srv).await;
    assert_eq!(
        during.sum("http_requests_in_flight", &[("listener", "chat")]),
        1.0
    );
    let streams = [("listener", "chat"), ("stream", "true")];
    assert_eq!(
        during.sum("http_requests_total", &streams) - before.sum("http_requests_total", &streams),
        0.0,
        "a stream is not counted before it ends"
    );
    drop(r);
    let cancelled = [("model", "gpt-test"), ("outcome", "cancelled")];
    let mut after = scrape(&srv).await;
    for _ in 0..100 {
        if after.sum("moltbot_chat_requests_total", &cancelled)
            > before.sum("moltbot_chat_requests_total", &cancelled)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = scrape(&srv).await;
    }
    assert_eq!(
        after.sum("moltbot_chat_requests_total", &cancelled)
            - before.sum("moltbot_chat_requests_total", &cancelled),
        1.0
    );
    assert_eq!(
        after.sum("http_requests_total", &streams) - before.sum("http_requests_total", &streams),
        1.0
    );
    assert_eq!(after.sum("http_requests_in_flight", &[("listener", "chat")]), 0.0);
    srv.stop().await;
}

#[tokio::test]
async fn upstream_429_counts_as_rate_limited() {
    let limited = fake_with(Script::status(429)).await;
    let srv = start(&limited).await;
    let before = scrape(&srv).await;
    let (status, _) = srv.chat(chat_body("gpt-test", false)).await;
    assert_eq!(status, 503);
    let after = scrape(&srv).await;
    let d = |name, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(d("moltbot_rate_limited_total", &[("reason", "upstream")]), 1.0);
    assert_eq!(
        d(
            "moltbot_chat_requests_total",
            &[("model", "gpt-test"), ("outcome", "rate_limited")]
        ),
        1.0
    );
    assert_eq!(
        d(
            "moltbot_upstream_requests_total",
            &[("backend", "gpt-test"), ("status", "429")]
        ),
        2.0
    );
    assert_eq!(
        d("moltbot_upstream_retries_total", &[("backend", "gpt-test")]),
        1.0
    );
    srv.stop().await;
}
