//!
//! A fast, shared "have we seen this event id?" cache in front of the database, for webhook and
//! channel deliveries that providers retry (Telegram `update_id`, Slack `event_id`, …).
//!
//! The database stays the authority: the cache may forget (TTL, eviction, Redis down) but never
//! invents. So the protocol is
//!
//! 1. `dedupe.known(scope, id)` → [`Known::Yes`]: a duplicate for sure, acknowledge and stop;
//!    [`Known::Unknown`]: ask the database (insert-if-absent on a unique key);
//! 2. once the database has recorded the id (or said it already had it), `dedupe.remember(scope, id)`.
//!
//! Never `remember` before the database commit: a crash in between would otherwise drop an event
//! that was never processed. Without Redis (or while it is unavailable) the cache is a bounded
//! in-memory map per replica, which only saves database round-trips on this replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Shared;

/// Entries kept in the per-replica fallback at most (oldest-expiring dropped first).
const MAX_LOCAL: usize = 50_000;

/// What the cache knows about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Recorded before (by any replica, within the TTL): a duplicate.
    Yes,
    /// Not in the cache: the database decides.
    Unknown,
}

pub struct Dedupe {
    shared: Option<Arc<Shared>>,
    ttl: Duration,
    /// id → expiry (unix ms), per replica.
    local: Mutex<HashMap<String, i64>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Dedupe {
    /// `ttl`: how long an id is remembered (longer than the provider retries, e.g. 24 h).
    pub fn new(shared: Option<Arc<Shared>>, ttl: Duration) -> Self {
        Self {
            shared,
            ttl,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn entry(scope: &str, id: &str) -> String {
        // Ids come from outside: hash them so any byte string makes a short, safe key.
        use sha2::Digest;
        format!(
            "dedupe:{scope}:{}",
            hex::encode(sha2::Sha256::digest(id.as_bytes()))
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `id` (within `scope`, e.g. a channel name) was remembered before.
    pub async fn known(&self, scope: &str, id: &str) -> Known {
        let entry = Self::entry(scope, id);
        let now = now_ms();
        if self.lock().get(&entry).is_some_and(|exp| *exp > now) {
            return Known::Yes;
        }
        if let Some(shared) = &self.shared {
            let key = shared.key(&entry);
            let r = shared
                .run("dedupe", |mut c| async move {
                    redis::cmd("EXISTS").arg(key).query_async::<bool>(&mut c).await
                })
                .await;
            if let Ok(true) = r {
                return Known::Yes;
            }
        }
        Known::Unknown
    }

    /// Remember `id` after the database recorded it. Best effort: a failure only costs a database
    /// lookup later.
    pub async fn remember(&self, scope: &str, id: &str) {
        let entry = Self::entry(scope, id);
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        {
            let now = now_ms();
            let mut local = self.lock();
            if local.len() >= MAX_LOCAL {
                local.retain(|_, exp| *exp > now);
            }
            if local.len() >= MAX_LOCAL {
                // Still full of live entries: drop the ones expiring soonest (a tenth).
                let mut exps: Vec<i64> = local.values().copied().collect();
                exps.sort_unstable();
                let cut = exps[exps.len() / 10];
                local.retain(|_, exp| *exp > cut);
            }
            local.insert(entry.clone(), now.saturating_add(ttl_ms));
        }
        if let Some(shared) = &self.shared {
            let key = shared.key(&entry);
            let _ = shared
                .run("dedupe", |mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("PX")
                        .arg(ttl_ms.max(1))
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_config::ClusterConfig;

    const REDIS: &str = "redis://127.0.0.1:6379";

    async fn shared(prefix: &str) -> Arc<Shared> {
        let cfg = ClusterConfig {
            redis_key_prefix: prefix.to_owned(),
            ..ClusterConfig::default()
        };
        let s = Shared::start(REDIS, &cfg).unwrap();
        for _ in 0..100 {
            if s.is_up() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the shared test Redis at {REDIS} is not reachable");
    }

    fn prefix() -> String {
        format!("moltbot-test:{}:", hex::encode(rand::random::<[u8; 8]>()))
    }

    #[tokio::test]
    async fn local_only_remembers_within_the_ttl() {
        let d = Dedupe::new(None, Duration::from_millis(200));
        assert_eq!(d.known("tg", "1").await, Known::Unknown);
        d.remember("tg", "1").await;
        assert_eq!(d.known("tg", "1").await, Known::Yes);
        assert_eq!(d.known("slack", "1").await, Known::Unknown, "scopes are separate");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(d.known("tg", "1").await, Known::Unknown, "expired");
    }

    #[tokio::test]
    async fn replicas_share_what_they_remember() {
        let p = prefix();
        let a = Dedupe::new(Some(shared(&p).await), Duration::from_secs(1));
        let b = Dedupe::new(Some(shared(&p).await), Duration::from_secs(1));
        assert_eq!(b.known("tg", "42").await, Known::Unknown);
        a.remember("tg", "42").await;
        assert_eq!(b.known("tg", "42").await, Known::Yes, "seen through Redis");
        assert_eq!(b.known("tg", "43").await, Known::Unknown);
        // Another deployment (prefix) sharing the Redis does not see it.
        let other = Dedupe::new(Some(shared(&prefix()).await), Duration::from_secs(1));
        assert_eq!(other.known("tg", "42").await, Known::Unknown);
        // Expires in Redis too (nothing grows forever).
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(b.known("tg", "42").await, Known::Unknown);
    }

    #[tokio::test]
    async fn redis_down_means_unknown_never_a_false_duplicate() {
        // A port nothing listens on: every Redis call fails fast.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = ClusterConfig {
            redis_key_prefix: prefix(),
            redis_timeout: Duration::from_millis(100),
            ..ClusterConfig::default()
        };
        let s = Shared::start(&format!("redis://127.0.0.1:{port}"), &cfg).unwrap();
        let a = Dedupe::new(Some(s.clone()), Duration::from_secs(60));
        let b = Dedupe::new(Some(s), Duration::from_secs(60));
        a.remember("tg", "7").await;
        assert_eq!(a.known("tg", "7").await, Known::Yes, "this replica's own memory");
        assert_eq!(b.known("tg", "7").await, Known::Unknown, "the database decides");
    }
}
