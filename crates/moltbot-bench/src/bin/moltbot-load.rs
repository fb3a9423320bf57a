//! `moltbot-load`: an HTTP load generator for OpenAI-compatible endpoints, with HDR histograms.
//!
//! ```text
//! moltbot-load --url http://127.0.0.1:PORT/v1/chat/completions --body '{…}' [--key K]
//!              (--requests N | --duration-s S) [--concurrency C | --rate R] [--stream]
//! moltbot-load --url … --body '{…"stream":true}' --hold N --hold-s S
//! ```
//!
//! - Closed loop (default): `C` workers each send the next request when the previous one ends
//!   (throughput, CPU per request).
//! - Open loop (`--rate R`): requests are scheduled at fixed intervals and latency is measured from the
//!   *scheduled* time, so a stalled server is charged for the requests it kept waiting (coordinated
//!   omission corrected).
//! - `--stream`: reads SSE bodies; records time to the first content chunk and counts `data:` events.
//! - `--hold N`: opens N streams at once, reports when all have received their first event, keeps
//!   them open for `--hold-s` seconds (while the harness samples memory), then reads them to the end.
//!
//! Prints one JSON object: counts, errors, wall time, rate, latency and TTFT percentiles in µs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Parser, Debug, Clone)]
struct Args {
    #[arg(long)]
    url: String,
    /// The JSON body of every request.
    #[arg(long)]
    body: String,
    /// Bearer token.
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    requests: Option<u64>,
    #[arg(long)]
    duration_s: Option<f64>,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Open loop: requests per second (latency from the scheduled send time).
    #[arg(long)]
    rate: Option<f64>,
    /// Read responses as SSE streams (time to first event, event counts).
    #[arg(long)]
    stream: bool,
    /// Hold this many streams open at once.
    #[arg(long)]
    hold: Option<usize>,
    #[arg(long, default_value_t = 10.0)]
    hold_s: f64,
    /// Warm-up requests before measuring (closed loop).
    #[arg(long, default_value_t = 0)]
    warmup: u64,
}

struct Stats {
    latency: Histogram<u64>,
    ttft: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    events: u64,
}

impl Stats {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
            ttft: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
            errors: 0,
            first_error: None,
            events: 0,
        }
    }
}

struct Outcome {
    latency: Duration,
    ttft: Option<Duration>,
    events: u64,
}

/// The request every mode sends: `--body` as JSON to `--url`, with `--key` as bearer token.
fn request(client: &reqwest::Client, args: &Args) -> reqwest::RequestBuilder {
    let req = client
        .post(&args.url)
        .header("content-type", "application/json")
        .body(args.body.clone());
    match &args.key {
        Some(k) => req.bearer_auth(k),
        None => req,
    }
}

async fn one(client: &reqwest::Client, args: &Args, since: Instant) -> anyhow::Result<Outcome> {
    let resp = request(client, args).send().await.context("send")?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!("HTTP {status}: {}", text.chars().take(200).collect::<String>());
    }
    if !args.stream {
        resp.bytes().await.context("body")?;
        return Ok(Outcome {
            latency: since.elapsed(),
            ttft: None,
            events: 0,
        });
    }
    let mut body = resp.bytes_stream();
    let mut ttft = None;
    let mut events = 0u64;
    let mut tail = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("stream")?;
        tail.extend_from_slice(&chunk);
        while let Some(pos) = tail.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = tail.drain(..pos + 2).collect();
            if let Some(pos) = frame.windows(6).position(|w| w == b"data: ") {
                events += 1;
                if ttft.is_none() && has_text(&frame[pos + 6..]) {
                    ttft = Some(since.elapsed());
                }
            }
        }
    }
    Ok(Outcome {
        latency: since.elapsed(),
        ttft,
        events,
    })
}

/// Whether an SSE data payload carries generated text: a chat chunk with non-empty
/// `choices[0].delta.content`, or a Responses `response.output_text.delta`.
fn has_text(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) else {
        return false;
    };
    let chat = v["choices"][0]["delta"]["content"]
        .as_str()
        .is_some_and(|c| !c.is_empty());
    chat || v["type"] == "response.output_text.delta"
}

fn record(stats: &mut Stats, r: anyhow::Result<Outcome>) {
    match r {
        Ok(o) => {
            stats.latency.saturating_record(o.latency.as_micros() as u64);
            if let Some(t) = o.ttft {
                stats.ttft.saturating_record(t.as_micros() as u64);
            }
            stats.events += o.events;
        }
        Err(e) => {
            stats.errors += 1;
            stats.first_error.get_or_insert_with(|| format!("{e:#}"));
        }
    }
}

fn client(args: &Args) -> anyhow::Result<reqwest::Client> {
    let idle = args.hold.unwrap_or(args.concurrency).max(1);
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(idle)
        .timeout(Duration::from_secs(600))
        .build()?)
}

async fn closed_loop(
    args: Arc<Args>,
    client: reqwest::Client,
    requests: Option<u64>,
    until: Option<Instant>,
) -> Stats {
    let sent = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(Mutex::new(Stats::new()));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (args, client, sent, stats) = (args.clone(), client.clone(), sent.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if requests.is_some_and(|r| n >= r) || until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                let r = one(&client, &args, Instant::now()).await;
                record(&mut *stats.lock().await, r);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(stats)
        .ok()
        .map(Mutex::into_inner)
        .unwrap_or_else(Stats::new)
}

async fn open_loop(args: Arc<Args>, client: reqwest::Client, rate: f64, requests: u64) -> Stats {
    let stats = Arc::new(Mutex::new(Stats::new()));
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = Vec::new();
    for i in 0..requests {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let (args, client, stats) = (args.clone(), client.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            // Latency counts from the scheduled time, not from when the send happened.
            let r = one(&client, &args, scheduled).await;
            record(&mut *stats.lock().await, r);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(stats)
        .ok()
        .map(Mutex::into_inner)
        .unwrap_or_else(Stats::new)
}

async fn hold(args: Arc<Args>, client: reqwest::Client, n: usize) -> anyhow::Result<serde_json::Value> {
    let opened = Arc::new(AtomicU64::new(0));
    // Streams refused or broken before their first event: the wait below does not wait for them.
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (args, client, opened, refused) = (args.clone(), client.clone(), opened.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut first = true;
            let streamed = async {
                let resp = request(&client, &args).send().await?;
                if !resp.status().is_success() {
                    bail!("HTTP {}", resp.status());
                }
                let mut body = resp.bytes_stream();
                let mut bytes = 0usize;
                while let Some(c) = body.next().await {
                    bytes += c?.len();
                    if first {
                        first = false;
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(bytes)
            }
            .await;
            if streamed.is_err() && first {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            streamed
        }));
    }
    // All streams have their first event (or were refused): report, hold, then let them finish.
    let deadline = Instant::now() + Duration::from_secs(120);
    while ((opened.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed)) as usize) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_open_s = started.elapsed().as_secs_f64();
    let open_now = opened.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({"event": "held", "open": open_now, "after_s": all_open_s})
    );
    tokio::time::sleep(Duration::from_secs_f64(args.hold_s)).await;
    let mut errors = 0u64;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(
        json!({"event": "done", "streams": n, "opened": open_now, "all_open_s": all_open_s, "errors": errors,
              "first_error": first_error}),
    )
}

fn report(stats: &Stats, wall: Duration) -> serde_json::Value {
    let n = stats.latency.len();
    let q = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            serde_json::Value::Null
        } else {
            json!(h.value_at_quantile(p))
        }
    };
    json!({
        "requests": n,
        "errors": stats.errors,
        "first_error": stats.first_error,
        "wall_s": wall.as_secs_f64(),
        "rps": n as f64 / wall.as_secs_f64(),
        "p50_us": q(&stats.latency, 0.5),
        "p90_us": q(&stats.latency, 0.9),
        "p99_us": q(&stats.latency, 0.99),
        "max_us": q(&stats.latency, 1.0),
        "ttft_p50_us": q(&stats.ttft, 0.5),
        "ttft_p99_us": q(&stats.ttft, 0.99),
        "events": stats.events,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let client = client(&args)?;
    if let Some(n) = args.hold {
        println!("{}", hold(args.clone(), client, n).await?);
        return Ok(());
    }
    if args.warmup > 0 {
        closed_loop(args.clone(), client.clone(), Some(args.warmup), None).await;
    }
    let started = Instant::now();
    let stats = match args.rate {
        Some(rate) => {
            let n = args
                .requests
                .or_else(|| args.duration_s.map(|d| (d * rate) as u64))
                .context("--rate needs --requests or --duration-s")?;
            open_loop(args.clone(), client, rate, n).await
        }
        None => {
            let until = args
                .duration_s
                .map(|d| Instant::now() + Duration::from_secs_f64(d));
            if args.requests.is_none() && until.is_none() {
                bail!("give --requests or --duration-s");
            }
            closed_loop(args.clone(), client, args.requests, until).await
        }
    };
    println!("{}", report(&stats, started.elapsed()));
    Ok(())
}
