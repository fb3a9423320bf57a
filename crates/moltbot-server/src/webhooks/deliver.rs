//! The dispatcher (outbox → deliveries), the delivery workers (claim → POST → record) and the purge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moltbot_channels::standard_webhooks;
use moltbot_config::WebhooksConfig;
use moltbot_core::ids;
use moltbot_core::webhooks::{DeliveryOutcome, WebhookAttempt, WebhookJob};
use tokio_util::sync::CancellationToken;

use super::{WAKE, target, wake};
use crate::state::AppState;

/// How often the dispatcher looks for new events (commits on any replica).
const DISPATCH_POLL: Duration = Duration::from_millis(250);
/// How often an idle worker looks for due deliveries (retries come due, other replicas' work).
const WORKER_POLL: Duration = Duration::from_millis(500);
/// Events fanned out per dispatcher round.
const DISPATCH_BATCH: u32 = 100;
/// Longest single retry delay: retries keep coming at least this often until the window closes.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Finished deliveries (and their attempts) are kept at least this long.
const MIN_RETENTION: Duration = Duration::from_secs(7 * 86_400);

pub(super) const USER_AGENT: &str = concat!("moltbot-webhooks/", env!("CARGO_PKG_VERSION"));

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = stop.cancelled() => false,
    }
}

pub(super) async fn dispatcher(state: AppState, stop: CancellationToken) {
    let retry_for = millis(state.config.webhooks.retry_for);
    while !stop.is_cancelled() {
        let now = state.clock.now_millis();
        // First which event types are written at all: subscriptions made on other replicas open theirs
        // here (at most one round late), deleted ones close.
        let round = async {
            state.store.refresh_event_gate().await?;
            state
                .store
                .dispatch_webhook_events(now, retry_for, DISPATCH_BATCH)
                .await
        };
        match round.await {
            Ok(done) => {
                // Workers are woken only for new deliveries: with no subscription, events are
                // just dropped and a wake-up would cost every worker a claim query.
                if done.deliveries > 0 {
                    wake();
                }
                if done.events == DISPATCH_BATCH {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook dispatcher cannot reach the database");
                if !pause(&stop, Duration::from_secs(1)).await {
                    break;
                }
            }
        }
        if !pause(&stop, DISPATCH_POLL).await {
            break;
        }
    }
}

pub(super) async fn worker(state: AppState, index: u32, clients: Arc<Clients>, stop: CancellationToken) {
    let worker = format!("{}#wh{index}", state.channels.instance);
    let cfg = state.config.webhooks.clone();
    // A claim outlives the slowest attempt; a worker that died leaves it to expire.
    let lock_ms = millis(cfg.timeout) + 30_000;
    while !stop.is_cancelled() {
        let now = state.clock.now_millis();
        match state
            .store
            .claim_webhook_delivery(&worker, now, now + lock_ms)
            .await
        {
            Ok(Some(job)) => attempt(&state, &cfg, &clients, &worker, job).await,
            Ok(None) => {
                tokio::select! {
                    () = WAKE.notified() => {}
                    () = tokio::time::sleep(WORKER_POLL) => {}
                    () = stop.cancelled() => break,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook worker cannot reach the database");
                if !pause(&stop, Duration::from_secs(1)).await {
                    break;
                }
            }
        }
    }
}

/// Delete finished deliveries older than the retention (hourly).
pub(super) async fn purge_loop(state: AppState, stop: CancellationToken) {
    let retention = MIN_RETENTION.max(state.config.webhooks.retry_for.saturating_mul(2));
    loop {
        let before = state.clock.now_millis() - millis(retention);
        match state.store.purge_webhooks(before).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "purged finished webhook deliveries"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not purge webhook deliveries"),
        }
        if !pause(&stop, Duration::from_secs(3600)).await {
            break;
        }
    }
}

fn client(
    cfg: &WebhooksConfig,
    pin: Option<(&str, std::net::SocketAddr)>,
) -> reqwest::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(moltbot_llm::tls::client_config(moltbot_llm::tls::Alpn::Any))
        .user_agent(USER_AGENT)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        // A redirect could lead anywhere (an internal address): 3xx is a failed attempt.
        .redirect(reqwest::redirect::Policy::none());
    if let Some((host, addr)) = pin {
        b = b.resolve(host, addr);
    }
    b.build()
}

/// Pinned clients kept at most; the map starts over when full.
const PINNED_MAX: usize = 64;

/// The delivery workers' HTTP clients: the workers share one, and a client pinned to a checked public
/// address is kept per (host, address) — a new address (DNS moved) gets a new one — so its pooled
/// connections (and TLS sessions) serve the next attempts. The trust store is the process's one
/// (`moltbot_llm::tls`), read once, not per client.
pub(super) struct Clients {
    shared: reqwest::Client,
    pinned: Mutex<HashMap<(String, SocketAddr), reqwest::Client>>,
}

impl Clients {
    pub(super) fn new(cfg: &WebhooksConfig) -> reqwest::Result<Self> {
        Ok(Self {
            shared: client(cfg, None)?,
            pinned: Mutex::default(),
        })
    }

    fn pinned(
        &self,
        cfg: &WebhooksConfig,
        host: String,
        addr: SocketAddr,
    ) -> reqwest::Result<reqwest::Client> {
        let key = (host, addr);
        if let Some(c) = self.pinned.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(c.clone());
        }
        let c = client(cfg, Some((&key.0, key.1)))?;
        let mut map = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PINNED_MAX {
            map.clear();
        }
        map.insert(key, c.clone());
        Ok(c)
    }
}

/// Exponential backoff with jitter: `first · 2^(attempts-1)`, at most an hour, ±20 %.
pub(super) fn backoff(first: Duration, attempts: u32) -> Duration {
    let exp = first.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(MAX_DELAY.max(first));
    capped.mul_f64(rand::random_range(0.8..1.2))
}

/// Retry (never past the delivery's expiry: the last retry lands on it), or give up.
fn retry_or_dead(cfg: &WebhooksConfig, job: &WebhookJob, now: i64) -> DeliveryOutcome {
    let expires = job.delivery.expires_ms;
    if now >= expires {
        return DeliveryOutcome::Dead;
    }
    let at = now.saturating_add(millis(backoff(cfg.first_retry, job.delivery.attempts)));
    DeliveryOutcome::Retry {
        at_ms: at.min(expires),
    }
}

/// What an HTTP attempt came to: the status (if any answer came) and an error for the log.
async fn send(
    state: &AppState,
    cfg: &WebhooksConfig,
    clients: &Clients,
    job: &WebhookJob,
) -> (Option<u16>, Option<String>) {
    let url = match target::parse(&job.url) {
        Ok(u) => u,
        Err(e) => return (None, Some(e)),
    };
    let pinned;
    let client = match target::check(&url, cfg.allow_private_targets).await {
        Err(e) => return (None, Some(format!("refused: {e}"))),
        Ok(None) => &clients.shared,
        Ok(Some((host, addr))) => match clients.pinned(cfg, host, addr) {
            Ok(c) => {
                pinned = c;
                &pinned
            }
            Err(e) => return (None, Some(format!("cannot build the HTTP client: {e}"))),
        },
    };
    let msg_id = &job.delivery.event_id;
    let timestamp = state.clock.now_secs();
    let signature = match standard_webhooks::sign(&job.secret, msg_id, timestamp, job.payload.as_bytes()) {
        Ok(s) => s,
        Err(e) => return (None, Some(format!("cannot sign: {e}"))),
    };
    if url.scheme() == "https" {
        moltbot_llm::tls::ready().await;
    }
    let sent = client
        .post(url)
        .header("webhook-id", msg_id.as_str())
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(job.payload.clone())
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                return (Some(status.as_u16()), None);
            }
            let body = tokio::time::timeout(Duration::from_secs(2), resp.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let snippet: String = body.trim().chars().take(200).collect();
            let mut error = format!("HTTP {status}");
            if !snippet.is_empty() {
                error.push_str(": ");
                error.push_str(&snippet);
            }
            (Some(status.as_u16()), Some(error))
        }
        Err(e) if e.is_timeout() => (None, Some(format!("timed out after {:?}", cfg.timeout))),
        Err(e) if e.is_connect() => (None, Some(format!("cannot connect: {}", error_chain(&e)))),
        Err(e) => (None, Some(error_chain(&e))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

async fn attempt(state: &AppState, cfg: &WebhooksConfig, clients: &Clients, worker: &str, job: WebhookJob) {
    let started_ms = state.clock.now_millis();
    let started = Instant::now();
    let (status, error) = send(state, cfg, clients, &job).await;
    let duration_ms = millis(started.elapsed());
    let outcome = match status {
        Some(code) if (200..300).contains(&code) => DeliveryOutcome::Delivered,
        // The receiver says this endpoint is gone for good: no point retrying for a day.
        Some(410) => DeliveryOutcome::Dead,
        _ => retry_or_dead(cfg, &job, started_ms + duration_ms),
    };
    let label = match outcome {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::Retry { .. } => "retry",
        DeliveryOutcome::Dead => "dead",
    };
    metrics::counter!("moltbot_webhook_deliveries_total", "outcome" => label).increment(1);
    let d = &job.delivery;
    match &outcome {
        DeliveryOutcome::Delivered => {
            tracing::debug!(delivery = %d.id, event = %d.event_id, attempts = d.attempts, "webhook delivered")
        }
        DeliveryOutcome::Retry { at_ms } => tracing::info!(delivery = %d.id, event = %d.event_id,
            subscription = %d.subscription_id, attempts = d.attempts, error = error.as_deref().unwrap_or(""),
            retry_in_ms = at_ms - started_ms - duration_ms, "webhook delivery failed; will retry"),
        DeliveryOutcome::Dead => tracing::warn!(delivery = %d.id, event = %d.event_id,
            subscription = %d.subscription_id, attempts = d.attempts, error = error.as_deref().unwrap_or(""),
            "webhook delivery dead-lettered"),
    }
    let record = WebhookAttempt {
        id: ids::new_id("whatt"),
        delivery_id: d.id.clone(),
        attempted_ms: started_ms,
        status_code: status,
        error,
        duration_ms,
    };
    match state
        .store
        .finish_webhook_delivery(worker, &record, &outcome)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(delivery = %d.id, "lost the claim on a webhook delivery before recording it")
        }
        Err(e) => {
            tracing::warn!(delivery = %d.id, error = %e, "could not record a webhook attempt; it will be retried")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let first = Duration::from_secs(5);
        for (attempts, base) in [(1, 5.0), (2, 10.0), (3, 20.0), (6, 160.0)] {
            let d = backoff(first, attempts).as_secs_f64();
            assert!(d >= base * 0.8 && d <= base * 1.2, "attempt {attempts}: {d}");
        }
        let late = backoff(first, 30).as_secs_f64();
        assert!((2880.0..=4320.0).contains(&late), "{late}");
    }
}
