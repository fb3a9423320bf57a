//! Long-lived connections (Telegram long polling, DingTalk Stream) run once per account across all
//! replicas: the replica holding the account's lease (`leases` table, renewed every third of
//! `pipeline.lease_ttl`) runs it; when that replica dies the lease expires and another takes over.
//! A replica that fails to renew stops its connection at once, before the lease can expire.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moltbot_channels::{InboundMessage, SendError, Sink};
use tokio_util::sync::CancellationToken;

use super::{Account, LongLived, Poller, ingest};
use crate::state::AppState;

fn lease_name(account: &Account) -> String {
    format!("channel:{}:{}", account.platform, account.name)
}

pub(super) async fn run(state: AppState, account: Arc<Account>, stop: CancellationToken) {
    let Some(long_lived) = account.long_lived.clone() else {
        return;
    };
    let name = lease_name(&account);
    let holder = state.channels.instance.clone();
    let ttl = state.channels.settings.lease_ttl;
    let ttl_ms = ttl.as_millis() as i64;
    let renew_every = ttl / 3;
    let mut logged_waiting = false;
    while !stop.is_cancelled() {
        let got = state
            .store
            .acquire_lease(&name, &holder, state.clock.now_millis(), ttl_ms)
            .await;
        match got {
            Ok(true) => {
                tracing::info!(lease = %name, holder = %holder, "took the lease: this replica runs the connection");
                metrics::gauge!("moltbot_channel_lease_held", "lease" => name.clone()).set(1.0);
                logged_waiting = false;
                let work_stop = stop.child_token();
                let work = connection(&state, &account, &long_lived, work_stop.clone());
                let renew = async {
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(renew_every) => {}
                            () = stop.cancelled() => return,
                        }
                        let now = state.clock.now_millis();
                        match state.store.acquire_lease(&name, &holder, now, ttl_ms).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!(lease = %name, "lease taken by another replica; stopping the connection");
                                return;
                            }
                            Err(e) => {
                                // Cannot prove we still hold it: stop before it could expire.
                                tracing::warn!(lease = %name, error = %e, "cannot renew the lease; stopping the connection");
                                return;
                            }
                        }
                    }
                };
                tokio::pin!(work);
                tokio::select! {
                    () = &mut work => {}
                    () = renew => {
                        work_stop.cancel();
                        // Let the connection notice and stop (it must not outlive the lease).
                        let _ = tokio::time::timeout(Duration::from_secs(5), &mut work).await;
                    }
                }
                metrics::gauge!("moltbot_channel_lease_held", "lease" => name.clone()).set(0.0);
                if stop.is_cancelled() {
                    let _ = state.store.release_lease(&name, &holder).await;
                    tracing::info!(lease = %name, "released the lease on shutdown");
                    break;
                }
            }
            Ok(false) => {
                if !logged_waiting {
                    tracing::info!(lease = %name, "another replica runs the connection; standing by");
                    logged_waiting = true;
                }
            }
            Err(e) => tracing::warn!(lease = %name, error = %e, "cannot reach the database for the lease"),
        }
        tokio::select! {
            () = tokio::time::sleep(renew_every) => {}
            () = stop.cancelled() => break,
        }
    }
}

/// Queues messages from a pushing connection; `Ok` only once stored (then the platform gets its ack).
struct QueueSink {
    state: AppState,
    account: Arc<Account>,
}

#[async_trait]
impl Sink for QueueSink {
    async fn deliver(&self, message: InboundMessage) -> Result<(), String> {
        ingest::enqueue(&self.state, &self.account, &message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

async fn connection(
    state: &AppState,
    account: &Arc<Account>,
    long_lived: &LongLived,
    stop: CancellationToken,
) {
    match long_lived {
        LongLived::Connect(c) => {
            let sink = Arc::new(QueueSink {
                state: state.clone(),
                account: account.clone(),
            });
            c.run(sink, stop).await;
        }
        LongLived::Poll(p) => poll_loop(state, account, p.as_ref(), stop).await,
    }
}

/// getUpdates in a loop: queue what arrives, then store the next offset (a crash in between
/// re-reads those updates, which the dedupe drops).
async fn poll_loop(state: &AppState, account: &Arc<Account>, poller: &dyn Poller, stop: CancellationToken) {
    let offset_key = format!("offset:{}:{}", account.platform, account.name);
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let offset = match state.store.get_channel_state(&offset_key).await {
            Ok(v) => v.and_then(|v| v.parse::<i64>().ok()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the polling offset");
                sleep_or_stop(Duration::from_secs(1), &stop).await;
                continue;
            }
        };
        let polled = tokio::select! {
            r = poller.poll(offset) => r,
            () = stop.cancelled() => break,
        };
        match polled {
            Ok((messages, next)) => {
                failures = 0;
                let mut stored = true;
                for m in &messages {
                    if let Err(e) = ingest::enqueue(state, account, m).await {
                        tracing::warn!(error = %e, "could not queue a polled message; polling it again");
                        stored = false;
                        break;
                    }
                }
                if stored
                    && let Some(next) = next
                    && Some(next) != offset
                    && let Err(e) = state
                        .store
                        .set_channel_state(&offset_key, &next.to_string(), state.clock.now_millis())
                        .await
                {
                    tracing::warn!(error = %e, "could not store the polling offset");
                }
                if !stored {
                    sleep_or_stop(Duration::from_secs(1), &stop).await;
                }
            }
            Err(e) => {
                failures += 1;
                let wait = match &e {
                    SendError::Retryable {
                        retry_after: Some(d), ..
                    } => *d,
                    _ => Duration::from_millis(500u64.saturating_mul(1 << failures.min(7)))
                        .min(Duration::from_secs(60)),
                };
                tracing::warn!(platform = %account.platform, account = %account.name, error = %e, retry_in = ?wait, "polling failed");
                sleep_or_stop(wait, &stop).await;
            }
        }
    }
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = stop.cancelled() => {}
    }
}
