//! Outbound rate limits per backend: requests per minute and tokens per minute, as token buckets that
//! refill continuously and start full (a minute's worth of burst). A call reserves its cost in both
//! buckets at once; buckets may go negative, which queues later callers behind earlier reservations.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::settings::OutboundLimits;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    updated: Instant,
}

impl Bucket {
    fn per_minute(n: u32, now: Instant) -> Self {
        let capacity = f64::from(n.max(1));
        Bucket {
            capacity,
            per_sec: capacity / 60.0,
            level: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + dt * self.per_sec).min(self.capacity);
        self.updated = now;
    }

    /// Cost clamped to the capacity, so that an oversized request still goes through eventually.
    fn cost(&self, cost: f64) -> f64 {
        cost.min(self.capacity)
    }

    fn wait_for(&self, cost: f64) -> Duration {
        let missing = self.cost(cost) - self.level;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.per_sec)
        }
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<(Option<Bucket>, Option<Bucket>)>,
}

impl RateLimiter {
    pub fn new(limits: OutboundLimits) -> Self {
        let now = Instant::now();
        Self {
            buckets: Mutex::new((
                limits.requests_per_minute.map(|n| Bucket::per_minute(n, now)),
                limits.tokens_per_minute.map(|n| Bucket::per_minute(n, now)),
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (Option<Bucket>, Option<Bucket>)> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a token limit is configured (so callers can skip estimating the cost).
    pub fn limits_tokens(&self) -> bool {
        self.lock().1.is_some()
    }

    /// Reserves one request costing `tokens`. `Ok(wait)`: reserved, proceed after `wait`.
    /// `Err(retry_after)`: the wait would exceed `max_wait`; nothing was reserved.
    pub fn reserve(&self, tokens: u64, max_wait: Duration) -> Result<Duration, Duration> {
        let now = Instant::now();
        let mut guard = self.lock();
        let (requests, token_bucket) = &mut *guard;
        let mut wait = Duration::ZERO;
        for (bucket, cost) in [(requests.as_mut(), 1.0), (token_bucket.as_mut(), tokens as f64)] {
            if let Some(b) = bucket {
                b.refill(now);
                wait = wait.max(b.wait_for(cost));
            }
        }
        if wait > max_wait {
            return Err(wait);
        }
        for (bucket, cost) in [(requests.as_mut(), 1.0), (token_bucket.as_mut(), tokens as f64)] {
            if let Some(b) = bucket {
                b.level -= b.cost(cost);
            }
        }
        Ok(wait)
    }

    /// [`reserve`](Self::reserve), then sleeps the wait.
    pub async fn acquire(&self, tokens: u64, max_wait: Duration) -> Result<(), Duration> {
        let wait = self.reserve(tokens, max_wait)?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let l = RateLimiter::new(OutboundLimits::default());
        for _ in 0..10_000 {
            assert_eq!(l.reserve(1_000_000, Duration::ZERO), Ok(Duration::ZERO));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_burst_then_refill() {
        let l = RateLimiter::new(OutboundLimits {
            requests_per_minute: Some(60),
            tokens_per_minute: None,
        });
        for _ in 0..60 {
            assert_eq!(l.reserve(0, Duration::ZERO), Ok(Duration::ZERO));
        }
        // Empty: one request per second refills; a 1 s bound queues exactly one more.
        assert_eq!(l.reserve(0, Duration::ZERO), Err(SEC));
        assert_eq!(l.reserve(0, SEC), Ok(SEC));
        assert_eq!(l.reserve(0, SEC), Err(2 * SEC));
        advance(2 * SEC).await;
        assert_eq!(l.reserve(0, Duration::ZERO), Ok(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_weighted() {
        let l = RateLimiter::new(OutboundLimits {
            requests_per_minute: None,
            tokens_per_minute: Some(600),
        });
        assert_eq!(l.reserve(500, Duration::ZERO), Ok(Duration::ZERO));
        // 100 left, refilling at 10/s: 300 more need 20 s.
        assert_eq!(l.reserve(300, SEC), Err(20 * SEC));
        assert_eq!(l.reserve(100, Duration::ZERO), Ok(Duration::ZERO));
        advance(30 * SEC).await;
        assert_eq!(l.reserve(300, Duration::ZERO), Ok(Duration::ZERO));
        // Larger than a minute's budget: clamped to the capacity rather than refused forever.
        advance(60 * SEC).await;
        assert_eq!(l.reserve(10_000, Duration::ZERO), Ok(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn both_limits_must_allow_and_refusal_reserves_nothing() {
        let l = RateLimiter::new(OutboundLimits {
            requests_per_minute: Some(600),
            tokens_per_minute: Some(60),
        });
        assert_eq!(l.reserve(60, Duration::ZERO), Ok(Duration::ZERO));
        assert_eq!(l.reserve(10, Duration::ZERO), Err(10 * SEC));
        assert_eq!(l.reserve(1, SEC), Ok(SEC));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_sleeps_the_wait() {
        let l = RateLimiter::new(OutboundLimits {
            requests_per_minute: Some(1),
            tokens_per_minute: None,
        });
        l.acquire(0, SEC).await.unwrap();
        let start = Instant::now();
        assert_eq!(l.acquire(0, SEC).await, Err(60 * SEC));
        let l = RateLimiter::new(OutboundLimits {
            requests_per_minute: Some(120),
            tokens_per_minute: None,
        });
        for _ in 0..120 {
            l.acquire(0, SEC).await.unwrap();
        }
        l.acquire(0, SEC).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }
}
