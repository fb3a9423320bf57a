//! The debug listener's `/debug/requests` (summaries without prompts or keys) and
//! `/debug/pprof/profile` (a flamegraph SVG).

mod common;

use common::*;
use serde_json::{Value, json};

async fn debug_server() -> (moltbot_testkit::FakeUpstream, TestServer, String) {
    let fake = fake().await;
    let srv = start_with(&fake, "", |c| c.debug_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let base = format!("http://{}", srv.addrs.debug_addr.expect("debug listener bound"));
    (fake, srv, base)
}

#[tokio::test]
async fn recent_requests_are_summarised_without_prompts_or_keys() {
    let (_fake, srv, debug) = debug_server().await;
    let prompt = "a-private-prompt-5521";
    let r = srv
        .http
        .post(srv.url("/v1/chat/completions"))
        .header("x-request-id", "req-debug-1")
        .json(&json!({"model": "gpt-test", "messages": [user(prompt)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    assert_eq!(srv.get("/nope").await.status(), 404);

    let r = srv
        .http
        .get(format!("{debug}/debug/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(prompt) && !text.contains(KEY), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let items = body["requests"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert_eq!(items[0]["route"], "<unmatched>");
    assert_eq!(items[0]["status"], 404);
    let chat = &items[1];
    assert_eq!(chat["request_id"], "req-debug-1");
    assert_eq!(chat["method"], "POST");
    assert_eq!(chat["route"], "/v1/chat/completions");
    assert_eq!(chat["status"], 200);
    assert_eq!(chat["stream"], false);
    assert_eq!(chat["model"], "gpt-test");
    assert_eq!(chat["backend"], "gpt-test");
    assert!(chat["duration_ms"].as_f64().unwrap() > 0.0);
    srv.stop().await;
}

#[tokio::test]
async fn cpu_profile_is_a_flamegraph() {
    let (_fake, srv, debug) = debug_server().await;
    // Keep a thread busy so the profile has samples.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let busy = std::thread::spawn(move || {
        let mut x = 0u64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        x
    });
    let r = srv
        .http
        .get(format!("{debug}/debug/pprof/profile?seconds=1&frequency=199"))
        .send()
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = busy.join();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let svg = r.text().await.unwrap();
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(500)]);
    let r = srv
        .http
        .get(format!("{debug}/debug/pprof/profile?seconds=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        srv.get("/debug/pprof/profile").await.status(),
        404,
        "never on the dialog listener"
    );
    srv.stop().await;
}
