//! Outbound event webhooks: the dispatcher, the delivery workers and the admin API.
//!
//! Records and their events commit together (`event_outbox`, see `moltbot_core::webhooks`). The
//! dispatcher fans new events out into one delivery per enabled subscription that wants the type;
//! `webhooks.workers` workers claim due deliveries (the same claim/lock pattern as the channel queue,
//! so any replica may deliver) and POST the event signed per Standard Webhooks (`webhook-id` = the
//! event id, stable across retries and redeliveries). A 2xx answer delivers; anything else is retried
//! with exponential backoff and jitter from `webhooks.first_retry` until `webhooks.retry_for` after
//! the event, then the delivery is dead-lettered (`410 Gone` at once). Every attempt is logged; the
//! console shows the log and can redeliver. Delivery is at-least-once: receivers dedupe on the id.

mod admin;
mod deliver;
mod target;

use std::sync::LazyLock;

use axum::Router;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

pub use target::is_public;

/// Wakes this process's dispatcher and workers (new deliveries, a redelivery, a test event). Other
/// replicas find the work by polling.
static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

fn wake() {
    WAKE.notify_waiters();
}

/// Start the dispatcher, the delivery workers and the purge loop; they stop when `stop` is cancelled.
pub fn spawn(state: &AppState, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    let workers = state.config.webhooks.workers.max(1);
    let mut tasks = vec![
        tokio::spawn(deliver::dispatcher(state.clone(), stop.clone())),
        tokio::spawn(deliver::purge_loop(state.clone(), stop.clone())),
    ];
    match deliver::Clients::new(&state.config.webhooks) {
        Ok(clients) => {
            let clients = std::sync::Arc::new(clients);
            for i in 0..workers {
                tasks.push(tokio::spawn(deliver::worker(
                    state.clone(),
                    i,
                    clients.clone(),
                    stop.clone(),
                )));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; outbound webhooks are off");
        }
    }
    tasks
}

/// Admin API routes (admin listener, `admin` scope): `/admin/api/webhooks/subscriptions[/{id}[/test]]`,
/// `/admin/api/webhooks/deliveries[/{id}[/redeliver]]`.
pub fn admin_router() -> Router<AppState> {
    admin::router()
}
