//! `moltbot-floor-proxy`: the least a gateway can do, as a baseline for moltbot's overhead.
//!
//! ```text
//! moltbot-floor-proxy --upstream http://127.0.0.1:PORT/v1/chat/completions
//! ```
//!
//! Built from the same crates as moltbot (tokio's multi-threaded runtime, axum and hyper for the server,
//! reqwest with rustls for the upstream client, the same socket options and accept queue), it accepts `POST
//! /v1/chat/completions`, forwards the body untouched to `--upstream` and answers with the upstream's
//! status, content type and body — no authentication, no parsing, no logging, no metrics, no storage.
//! What it costs per request is the price of two HTTP/1.1 exchanges on loopback on this machine, so
//! `bench/harness.py` reports moltbot's CPU per request next to it. Prints its base URL on the first
//! line of stdout, then serves until SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// The upstream chat completions URL.
    #[arg(long)]
    upstream: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

struct Proxy {
    client: reqwest::Client,
    upstream: String,
}

async fn forward(State(p): State<Arc<Proxy>>, body: Bytes) -> Response {
    let sent = p
        .client
        .post(&p.upstream)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    match resp.bytes().await {
        Ok(bytes) => {
            let mut out = Response::new(Body::from(bytes));
            *out.status_mut() = status;
            if let Some(ct) = content_type {
                out.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .context("building the HTTP client")?;
    let state = Arc::new(Proxy {
        client,
        upstream: args.upstream,
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(forward))
        .with_state(state);
    // Bound exactly as moltbot's listeners are (the same accept queue).
    let addr: std::net::SocketAddr = args.listen.parse().context("--listen")?;
    let listener = moltbot_server::listeners::listen(addr).with_context(|| format!("binding {addr}"))?;
    println!("http://{}", listener.local_addr()?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    Ok(())
}
