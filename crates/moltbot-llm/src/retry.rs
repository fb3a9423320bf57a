//! Backoff delays and `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::settings::RetryPolicy;

/// Full jitter: uniform in `[0, min(max_delay, base_delay * 2^attempt)]`, `attempt` counting from 0 for
/// the delay after the first failure.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(2u32.saturating_pow(attempt.min(31)));
    let ceiling = exp.min(policy.max_delay);
    if ceiling.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (relative to `now`). A date in the past
/// means zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn full_jitter_stays_under_the_exponential_ceiling() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            retry_after_cap: Duration::from_secs(5),
        };
        let mut rng = StdRng::seed_from_u64(1);
        for attempt in 0..40 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(attempt.min(20))).min(p.max_delay);
            let samples: Vec<Duration> = (0..200).map(|_| backoff_delay(&p, attempt, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling));
            // Full jitter: some samples well below half the ceiling, some above.
            assert!(samples.iter().any(|d| *d < ceiling / 4));
            assert!(samples.iter().any(|d| *d > ceiling / 2));
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0.5 ", now), Some(Duration::from_millis(500)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(42)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(42));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
