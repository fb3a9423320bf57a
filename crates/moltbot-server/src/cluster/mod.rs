//! Cluster mode (`redis_url`): several replicas share what a request depends on through Redis —
//! rate limits and token quotas ([`RedisLimiter`]), brute-force lockouts, one-time WebSocket tickets,
//! admin sign-outs and API-key cache invalidations — so any replica can serve any request. The database
//! stays the authority for records; Redis holds only short-lived shared state.
//!
//! Redis being unreachable is a policy (`cluster.redis_failure`): `open` (default) keeps serving with
//! per-replica state in memory, sets `moltbot_redis_up` to 0 and counts `moltbot_redis_fallback_total{op}`;
//! `closed` answers requests that need a rate-limit decision with 503 `redis_unavailable`. Either way the
//! connection is retried in the background and shared state resumes with no restart.

mod dedupe;
mod limiter;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use moltbot_config::{ClusterConfig, RedisFailure};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use dedupe::{Dedupe, Known};
pub use limiter::RedisLimiter;

pub const REDIS_UP: &str = "moltbot_redis_up";
pub const REDIS_FALLBACK: &str = "moltbot_redis_fallback_total";
/// Channel on which replicas announce API keys to drop from their caches (`<id> <secret hash>`).
const KEYS_CHANNEL: &str = "keys:invalidate";
/// At most one "Redis unavailable" warning per this many milliseconds.
const WARN_EVERY_MS: i64 = 10_000;

/// Redis could not answer within `cluster.redis_timeout`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Redis is unavailable ({0})")]
pub struct Unavailable(pub String);

/// The shared Redis connection with its policy and health.
pub struct Shared {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    policy: RedisFailure,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    up: AtomicBool,
    last_warn_ms: AtomicI64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Shared {
    /// Parse the URL and start connecting in the background (a replica starts even while Redis is
    /// down; the policy applies until it is back). Needs a tokio runtime.
    pub fn start(url: &str, config: &ClusterConfig) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        metrics::describe_gauge!(
            REDIS_UP,
            "1 while Redis (cluster mode) answers, 0 while it does not"
        );
        metrics::describe_counter!(
            REDIS_FALLBACK,
            "Redis operations that failed and fell back to the redis_failure policy, by operation"
        );
        metrics::gauge!(REDIS_UP).set(0.0);
        let shared = Arc::new(Self {
            client,
            prefix: config.redis_key_prefix.clone(),
            timeout: config.redis_timeout,
            policy: config.redis_failure,
            conn: tokio::sync::OnceCell::new(),
            up: AtomicBool::new(false),
            last_warn_ms: AtomicI64::new(0),
        });
        tokio::spawn(connect_and_watch(Arc::downgrade(&shared)));
        Ok(shared)
    }

    /// `prefix + rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    pub fn policy(&self) -> RedisFailure {
        self.policy
    }

    /// Whether the last operation succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Run one operation within the timeout; failures are counted and logged (rate-limited). While
    /// Redis is down, operations fail at once without trying (requests must not each wait out the
    /// timeout); the background health check notices when it is back, within a second.
    pub async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            metrics::counter!(REDIS_FALLBACK, "op" => op).increment(1);
            return Err(Unavailable("down".to_owned()));
        }
        self.try_run(op, f).await
    }

    /// [`Shared::run`] even while Redis is marked down (the health check).
    async fn try_run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(conn) = self.conn.get() else {
            return Err(self.down(op, "not connected yet".to_owned()));
        };
        match tokio::time::timeout(self.timeout, f(conn.clone())).await {
            Ok(Ok(v)) => {
                self.mark_up();
                Ok(v)
            }
            Ok(Err(e)) => Err(self.down(op, e.to_string())),
            Err(_) => Err(self.down(op, format!("no answer within {:?}", self.timeout))),
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            metrics::gauge!(REDIS_UP).set(1.0);
            tracing::info!("Redis is available: limits, lockouts, tickets and sign-outs are shared again");
        }
    }

    fn down(&self, op: &'static str, cause: String) -> Unavailable {
        metrics::counter!(REDIS_FALLBACK, "op" => op).increment(1);
        if self.up.swap(false, Ordering::Relaxed) {
            metrics::gauge!(REDIS_UP).set(0.0);
        }
        let now = now_ms();
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now - last >= WARN_EVERY_MS
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let policy = match self.policy {
                RedisFailure::Open => "open: per-replica limits in memory until it is back",
                RedisFailure::Closed => "closed: rate-limited requests get 503",
            };
            tracing::warn!(redis.op = op, "Redis unavailable ({cause}); policy {policy}");
        }
        Unavailable(cause)
    }

    /// Announce that an API key changed (revoked, edited) so every replica drops it from its cache.
    pub async fn publish_key_change(&self, key_id: &str, secret_hash: &str) {
        let channel = self.key(KEYS_CHANNEL);
        let msg = format!("{key_id} {secret_hash}");
        let _ = self
            .run("publish", |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(msg)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
    }

    /// Call `on_change(key_id, secret_hash)` for every key change announced by any replica, and
    /// `on_change("", "")` (drop everything) whenever the subscription (re)starts, since announcements
    /// made while it was down were missed. Runs until `self` is dropped.
    pub fn subscribe_key_changes(self: &Arc<Self>, on_change: impl Fn(&str, &str) + Send + Sync + 'static) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            use futures::StreamExt;
            loop {
                let Some(shared) = weak.upgrade() else { return };
                let channel = shared.key(KEYS_CHANNEL);
                let client = shared.client.clone();
                drop(shared);
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&channel).await.is_ok() {
                            on_change("", "");
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                let text: String = msg.get_payload().unwrap_or_default();
                                let (id, hash) = text.split_once(' ').unwrap_or((text.as_str(), ""));
                                on_change(id, hash);
                            }
                        }
                    }
                    Err(e) => tracing::debug!("Redis subscription failed: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// The oldest Redis cluster mode works with (`GETDEL`, `SET … EXAT/PXAT`).
pub const MIN_VERSION: (u32, u32) = (6, 2);

/// `(major, minor)` of a version string like `7.0.15`.
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// One connection, `PING` and the server's version, within `timeout` (for `moltbot doctor`).
pub async fn probe(url: &str, timeout: Duration) -> Result<(String, Duration), String> {
    let attempt = async {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let started = std::time::Instant::now();
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("PING failed: {e}"))?;
        let latency = started.elapsed();
        if pong != "PONG" {
            return Err(format!("PING answered {pong:?}"));
        }
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("INFO failed: {e}"))?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        Ok((version, latency))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// Connect (retrying with backoff), then PING every second so `moltbot_redis_up` follows Redis even
/// when no request needs it, and the connection manager reconnects without waiting for traffic.
async fn connect_and_watch(weak: std::sync::Weak<Shared>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(shared.timeout.max(Duration::from_millis(500)))
            .set_response_timeout(shared.timeout)
            .set_number_of_retries(2)
            .set_max_delay(1000);
        match ConnectionManager::new_with_config(shared.client.clone(), config).await {
            Ok(conn) => {
                let _ = shared.conn.set(conn);
                shared.mark_up();
                break;
            }
            Err(e) => {
                shared.down("connect", e.to_string());
            }
        }
        drop(shared);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(shared) = weak.upgrade() else { return };
        let _ = shared
            .try_run("ping", |mut c| async move {
                redis::cmd("PING").query_async::<String>(&mut c).await
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(parse_version("7.0.15"), Some((7, 0)));
        assert!(parse_version("6.0.16").unwrap() < MIN_VERSION);
        assert!(parse_version("6.2.0").unwrap() >= MIN_VERSION);
        assert_eq!(parse_version("unknown"), None);
    }
}
