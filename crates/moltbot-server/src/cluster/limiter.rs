//! [`RateLimiter`] over Redis: the same GCRA buckets and fixed-window counters as
//! [`InMemoryLimiter`], as atomic Lua scripts timed by the Redis server's clock, so a limit holds across
//! every replica (at most B + R·t in t minutes in total). While Redis is unavailable the policy applies:
//! `open` decides with a per-replica in-memory limiter, `closed` refuses with `unavailable` set.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use moltbot_config::RedisFailure;
use moltbot_core::ratelimit::{Decision, InMemoryLimiter, Quota, RateLimiter};

use super::Shared;

const MICROS_PER_MINUTE: u64 = 60_000_000;

/// GCRA: KEYS[1] bucket; ARGV emission interval (µs), capacity (µs), cost, force (1 = debit).
/// Returns {allowed, µs of the bucket in use after the decision, µs until the cost would fit}.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local emission = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local force = ARGV[4] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + emission * cost
local allowed = force or (new_tat - now) <= capacity
local kept = tat
if allowed then kept = new_tat end
if kept > now then
  redis.call('SET', KEYS[1], string.format('%.0f', kept), 'PX', math.ceil((kept - now) / 1000) + 1000)
end
local retry = 0
if not allowed then retry = new_tat - now - capacity end
return {allowed and 1 or 0, kept - now, retry}
",
    )
});

/// KEYS[1] counter; ARGV n, expiry (unix ms). Adds n; a new counter gets the expiry.
static COUNTER_ADD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return v
",
    )
});

/// KEYS[1] counter; ARGV value, expiry (unix ms). Sets it if absent; returns the value.
static COUNTER_SEED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PXAT', ARGV[2])
local v = redis.call('GET', KEYS[1])
if v == false then return tonumber(ARGV[1]) end
return tonumber(v)
",
    )
});

pub struct RedisLimiter {
    shared: Arc<Shared>,
    /// Per-replica fallback while Redis is unavailable (policy `open`).
    local: InMemoryLimiter,
}

impl RedisLimiter {
    pub fn new(shared: Arc<Shared>, local: InMemoryLimiter) -> Self {
        Self { shared, local }
    }

    async fn gcra(&self, key: &str, quota: Quota, cost: u64, force: bool) -> Option<Decision> {
        let emission = (MICROS_PER_MINUTE / u64::from(quota.per_minute.max(1))).max(1);
        let capacity = emission * u64::from(quota.burst);
        let rkey = self.shared.key(&format!("rl:{key}"));
        let (allowed, used, retry): (i64, i64, i64) = self
            .shared
            .run("rate_limit", |mut c| async move {
                GCRA.key(rkey)
                    .arg(emission)
                    .arg(capacity)
                    .arg(cost)
                    .arg(u8::from(force))
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .ok()?;
        let used = u64::try_from(used).unwrap_or(0);
        let allowed = allowed == 1;
        Some(Decision {
            allowed,
            limit: quota.per_minute,
            remaining: capacity.saturating_sub(used) / emission,
            reset: Duration::from_micros(used),
            retry_after: (!allowed).then(|| Duration::from_micros(u64::try_from(retry).unwrap_or(0))),
            unavailable: false,
        })
    }

    /// Run a counter script (`KEYS[1]` the counter, `ARGV` a number and an expiry); `None` when Redis
    /// did not answer.
    async fn counter_script(
        &self,
        script: &'static redis::Script,
        key: &str,
        n: u64,
        expires_at_ms: i64,
    ) -> Option<u64> {
        let rkey = self.shared.key(&format!("ct:{key}"));
        self.shared
            .run("counter", |mut c| async move {
                script
                    .key(rkey)
                    .arg(n)
                    .arg(expires_at_ms)
                    .invoke_async::<u64>(&mut c)
                    .await
            })
            .await
            .ok()
    }

    /// The decision while Redis is unavailable.
    async fn fallback(&self, key: &str, quota: Quota, cost: u64, force: bool) -> Decision {
        match (self.shared.policy(), force) {
            (RedisFailure::Closed, false) => Decision {
                allowed: false,
                limit: quota.per_minute,
                remaining: 0,
                reset: Duration::ZERO,
                retry_after: Some(Duration::from_secs(1)),
                unavailable: true,
            },
            // Usage already spent is recorded locally under either policy.
            (_, true) => self.local.debit(key, quota, cost).await,
            (RedisFailure::Open, false) => self.local.acquire(key, quota, cost).await,
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn acquire(&self, key: &str, quota: Quota, cost: u64) -> Decision {
        match self.gcra(key, quota, cost, false).await {
            Some(d) => d,
            None => self.fallback(key, quota, cost, false).await,
        }
    }

    async fn debit(&self, key: &str, quota: Quota, cost: u64) -> Decision {
        match self.gcra(key, quota, cost, true).await {
            Some(d) => d,
            None => self.fallback(key, quota, cost, true).await,
        }
    }

    async fn counter_add(&self, key: &str, n: u64, expires_at_ms: i64) -> u64 {
        match self.counter_script(&COUNTER_ADD, key, n, expires_at_ms).await {
            Some(v) => v,
            None => self.local.counter_add(key, n, expires_at_ms).await,
        }
    }

    async fn counter_get(&self, key: &str) -> Option<u64> {
        let rkey = self.shared.key(&format!("ct:{key}"));
        let r = self
            .shared
            .run("counter", |mut c| async move {
                redis::cmd("GET")
                    .arg(rkey)
                    .query_async::<Option<u64>>(&mut c)
                    .await
            })
            .await;
        match r {
            Ok(v) => v,
            Err(_) => self.local.counter_get(key).await,
        }
    }

    async fn counter_seed(&self, key: &str, value: u64, expires_at_ms: i64) -> u64 {
        match self
            .counter_script(&COUNTER_SEED, key, value, expires_at_ms)
            .await
        {
            Some(v) => v,
            None => self.local.counter_seed(key, value, expires_at_ms).await,
        }
    }
}
