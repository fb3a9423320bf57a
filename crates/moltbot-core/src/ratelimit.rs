//! Rate limiting behind the [`RateLimiter`] trait: GCRA buckets keyed by string, and fixed-window
//! counters (daily quotas). [`InMemoryLimiter`] is per process; a shared implementation (Redis) makes the
//! same limits global across replicas.
//!
//! Burst semantics: a bucket with rate R per minute and burst B starts full; a request of cost n passes
//! when it fits, so at most **B + R·t** units pass in any t minutes (B at once, then R per minute).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Clock;

const NANOS_PER_MINUTE: u128 = 60_000_000_000;

/// R per minute with a burst of B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: u32,
    pub burst: u32,
}

impl Quota {
    /// `per_minute` with a burst of `per_minute × burst_window / 1 min` (at least 1).
    pub fn with_window(per_minute: u32, burst_window: Duration) -> Quota {
        let burst = (u128::from(per_minute) * burst_window.as_nanos()).div_ceil(NANOS_PER_MINUTE);
        Quota {
            per_minute,
            burst: u32::try_from(burst).unwrap_or(u32::MAX).max(1),
        }
    }

    /// Time one unit takes to replenish, in nanoseconds (at least 1).
    fn emission_nanos(self) -> u128 {
        (NANOS_PER_MINUTE / u128::from(self.per_minute.max(1))).max(1)
    }
}

/// The state of a bucket after a decision, for `x-ratelimit-*` headers and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The per-minute limit.
    pub limit: u32,
    /// Units that could be taken right now.
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// When denied: until this request's cost would fit.
    pub retry_after: Option<Duration>,
    /// Denied because the shared limiter could not decide (Redis down, policy `closed`), not because
    /// the limit was reached: the caller answers 503, not 429.
    pub unavailable: bool,
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Take `cost` units from bucket `key` if they fit (cost 0 only reads the state).
    async fn acquire(&self, key: &str, quota: Quota, cost: u64) -> Decision;

    /// Take `cost` units whether or not they fit (usage counted after the fact); the bucket may go into
    /// debt, which later requests wait out.
    async fn debit(&self, key: &str, quota: Quota, cost: u64) -> Decision;

    /// Add to a fixed-window counter that disappears at `expires_at_ms`; returns the new total.
    async fn counter_add(&self, key: &str, n: u64, expires_at_ms: i64) -> u64;

    /// The counter's value, or `None` if it does not exist (never set, or expired).
    async fn counter_get(&self, key: &str) -> Option<u64>;

    /// Set the counter if it does not exist (seeding from the database); returns its value.
    async fn counter_seed(&self, key: &str, value: u64, expires_at_ms: i64) -> u64;
}

/// GCRA in process memory, with an injected clock.
pub struct InMemoryLimiter {
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Theoretical arrival time per bucket, in nanoseconds since the epoch.
    tat: HashMap<String, u128>,
    counters: HashMap<String, (u64, i64)>,
    ops: u64,
}

impl InMemoryLimiter {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn now_nanos(&self) -> u128 {
        u128::try_from(self.clock.now_millis()).unwrap_or(0) * 1_000_000
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn decide(&self, key: &str, quota: Quota, cost: u64, force: bool) -> Decision {
        let now = self.now_nanos();
        let t = quota.emission_nanos();
        let capacity = t * u128::from(quota.burst);
        let mut inner = self.lock();
        inner.ops += 1;
        if inner.ops.is_multiple_of(4096) {
            // Full buckets carry no state: forget them so memory stays bounded by active keys.
            inner.tat.retain(|_, tat| *tat > now);
            let now_ms = self.clock.now_millis();
            inner.counters.retain(|_, (_, exp)| *exp > now_ms);
        }
        let tat = inner.tat.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + t * u128::from(cost);
        let allowed = force || new_tat - now <= capacity;
        let kept = if allowed { new_tat } else { tat };
        if kept > now {
            inner.tat.insert(key.to_owned(), kept);
        }
        let used = kept - now;
        Decision {
            allowed,
            limit: quota.per_minute,
            remaining: u64::try_from(capacity.saturating_sub(used) / t).unwrap_or(u64::MAX),
            reset: nanos(used),
            retry_after: (!allowed).then(|| nanos(new_tat - now - capacity)),
            unavailable: false,
        }
    }
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

#[async_trait]
impl RateLimiter for InMemoryLimiter {
    async fn acquire(&self, key: &str, quota: Quota, cost: u64) -> Decision {
        self.decide(key, quota, cost, false)
    }

    async fn debit(&self, key: &str, quota: Quota, cost: u64) -> Decision {
        self.decide(key, quota, cost, true)
    }

    async fn counter_add(&self, key: &str, n: u64, expires_at_ms: i64) -> u64 {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        let entry = inner.counters.entry(key.to_owned()).or_insert((0, expires_at_ms));
        if entry.1 <= now {
            *entry = (0, expires_at_ms);
        }
        entry.0 = entry.0.saturating_add(n);
        entry.0
    }

    async fn counter_get(&self, key: &str) -> Option<u64> {
        let now = self.clock.now_millis();
        self.lock()
            .counters
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| *v)
    }

    async fn counter_seed(&self, key: &str, value: u64, expires_at_ms: i64) -> u64 {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        let entry = inner
            .counters
            .entry(key.to_owned())
            .or_insert((value, expires_at_ms));
        if entry.1 <= now {
            *entry = (value, expires_at_ms);
        }
        entry.0
    }
}

/// OpenAI's duration format for `x-ratelimit-reset-*`: `6m0s`, `1s`, `20ms`, `1h2m3s`.
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    // Round up to whole seconds: a client waiting this long will find the bucket reset.
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter() -> (Arc<ManualClock>, InMemoryLimiter) {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        (clock.clone(), InMemoryLimiter::new(clock))
    }

    async fn passes(l: &InMemoryLimiter, quota: Quota, tries: u32) -> u32 {
        let mut ok = 0;
        for _ in 0..tries {
            if l.acquire("k", quota, 1).await.allowed {
                ok += 1;
            }
        }
        ok
    }

    #[tokio::test]
    async fn at_most_burst_plus_rate_times_t() {
        let (clock, l) = limiter();
        let quota = Quota {
            per_minute: 60,
            burst: 10,
        };
        // t = 0: exactly B.
        assert_eq!(passes(&l, quota, 100).await, 10);
        // Hammering every 100 ms for 2 minutes: R·t = 120 more, never more.
        let mut total = 10;
        for _ in 0..1200 {
            clock.advance(Duration::from_millis(100));
            total += passes(&l, quota, 5).await;
        }
        assert_eq!(total, 10 + 120);
    }

    #[tokio::test]
    async fn decisions_report_remaining_reset_and_retry_after() {
        let (clock, l) = limiter();
        let quota = Quota {
            per_minute: 10,
            burst: 2,
        };
        let d = l.acquire("k", quota, 1).await;
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining, d.reset), (10, 1, Duration::from_secs(6)));
        let d = l.acquire("k", quota, 1).await;
        assert_eq!((d.remaining, d.reset), (0, Duration::from_secs(12)));
        let d = l.acquire("k", quota, 1).await;
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(6)));
        clock.advance(Duration::from_secs(6));
        assert!(l.acquire("k", quota, 1).await.allowed);
        // Another key has its own bucket.
        assert!(l.acquire("other", quota, 2).await.allowed);
        // Peeking (cost 0) takes nothing.
        assert_eq!(l.acquire("other", quota, 0).await.remaining, 0);
    }

    #[tokio::test]
    async fn debit_goes_into_debt_and_is_waited_out() {
        let (clock, l) = limiter();
        let quota = Quota {
            per_minute: 1000,
            burst: 1000,
        };
        let d = l.debit("t", quota, 2500).await;
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(!l.acquire("t", quota, 1).await.allowed);
        // 2500 used of 1000: 1501 units (90.06 s at 1000 per minute) must drain before 1 more fits.
        clock.advance(Duration::from_secs(90));
        assert!(!l.acquire("t", quota, 1).await.allowed);
        clock.advance(Duration::from_millis(60));
        assert!(l.acquire("t", quota, 1).await.allowed);
    }

    #[tokio::test]
    async fn counters_expire_and_seed_only_once() {
        let (clock, l) = limiter();
        let exp = clock.now_millis() + 1000;
        assert_eq!(l.counter_get("d").await, None);
        assert_eq!(l.counter_seed("d", 40, exp).await, 40);
        assert_eq!(l.counter_seed("d", 99, exp).await, 40);
        assert_eq!(l.counter_add("d", 2, exp).await, 42);
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.counter_get("d").await, None);
        assert_eq!(l.counter_add("d", 5, exp + 1000).await, 5);
    }

    #[test]
    fn reset_durations_look_like_openai() {
        assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
        assert_eq!(format_reset(Duration::from_secs(1)), "1s");
        assert_eq!(format_reset(Duration::from_millis(1500)), "2s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(
            Quota::with_window(60, Duration::from_secs(10)),
            Quota {
                per_minute: 60,
                burst: 10
            }
        );
        assert_eq!(Quota::with_window(1, Duration::from_secs(1)).burst, 1);
    }
}
