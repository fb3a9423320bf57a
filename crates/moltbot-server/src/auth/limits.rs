//! Per-key limits, following OpenAI's conventions so SDKs behave:
//!
//! * requests per minute — every authenticated request on the dialog listener;
//! * tokens per minute — pre-checked from the request's `max_tokens`, debited from the reply's usage;
//! * daily tokens — a UTC-day counter, seeded from the usage records (so restarts do not reset it);
//! * concurrent streams — open SSE responses.
//!
//! 429 `rate_limit_exceeded` carries `Retry-After` and `x-ratelimit-*`; an exhausted daily quota is 429
//! `insufficient_quota` with `x-should-retry: false`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use moltbot_core::Principal;
use moltbot_core::ratelimit::{Decision, Quota, format_reset};

use super::Auth;
use crate::error::ApiError;

const DAY_MS: i64 = 86_400_000;

/// Apply the requests-per-minute limit; `Ok(None)` when the key has none.
pub(crate) async fn check_requests(auth: &Auth, p: &Principal) -> Result<Option<Decision>, Response> {
    let Some(rpm) = p.limits.requests_per_minute else {
        return Ok(None);
    };
    let quota = Quota::with_window(rpm, auth.burst_window);
    let d = auth.limiter.acquire(&format!("rpm:{}", p.key_id), quota, 1).await;
    if d.allowed {
        return Ok(Some(d));
    }
    if d.unavailable {
        return Err(redis_unavailable(&d).into_response());
    }
    let mut resp = rate_limited(
        format!(
            "Rate limit reached for requests: limit {rpm} per minute. Please try again in {}.",
            format_reset(d.retry_after.unwrap_or_default())
        ),
        &d,
    )
    .into_response();
    request_headers(resp.headers_mut(), &d);
    Err(resp)
}

/// The shared limiter could not decide (cluster mode, Redis down, `cluster.redis_failure = "closed"`).
fn redis_unavailable(d: &Decision) -> ApiError {
    ApiError::Unavailable {
        message: "Rate limits cannot be checked right now (the shared limit store is unavailable); \
                  please retry shortly."
            .into(),
        code: "redis_unavailable",
        retry_after: d.retry_after,
    }
}

fn rate_limited(message: String, d: &Decision) -> ApiError {
    ApiError::TooManyRequests {
        kind: "requests",
        message,
        code: "rate_limit_exceeded",
        retry_after: d.retry_after,
        retry: true,
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

pub(crate) fn request_headers(headers: &mut HeaderMap, d: &Decision) {
    set(headers, "x-ratelimit-limit-requests", &d.limit.to_string());
    set(
        headers,
        "x-ratelimit-remaining-requests",
        &d.remaining.to_string(),
    );
    set(headers, "x-ratelimit-reset-requests", &format_reset(d.reset));
}

pub(crate) fn token_headers(headers: &mut HeaderMap, d: &Decision) {
    set(headers, "x-ratelimit-limit-tokens", &d.limit.to_string());
    set(headers, "x-ratelimit-remaining-tokens", &d.remaining.to_string());
    set(headers, "x-ratelimit-reset-tokens", &format_reset(d.reset));
}

/// Open streams per key, released by [`StreamSlot`]'s `Drop`.
#[derive(Default)]
pub struct StreamCounter(Arc<Mutex<HashMap<String, u32>>>);

pub struct StreamSlot {
    counter: Arc<Mutex<HashMap<String, u32>>>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut map = self
            .counter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl StreamCounter {
    fn try_acquire(&self, key: &str, limit: u32) -> Option<StreamSlot> {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key.to_owned()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            counter: self.0.clone(),
            key: key.to_owned(),
        })
    }
}

/// What a chat request holds while it runs: its stream slot, and what to debit when the reply is in.
pub struct ChatLease {
    auth: Arc<Auth>,
    key_id: String,
    tpm: Option<Quota>,
    daily: Option<(String, i64)>,
    /// The token bucket after the pre-check, for the `x-ratelimit-*-tokens` headers.
    pub tokens: Option<Decision>,
    _stream: Option<StreamSlot>,
    settled: bool,
    /// Characters delivered so far, for an estimate when a stream is cut short.
    delivered_chars: usize,
}

/// Pre-check a chat request: concurrent streams, the daily quota, and tokens per minute from
/// `max_tokens` (the request's, else 1: any debt left by earlier replies must be paid off first).
pub async fn begin_chat(
    auth: &Arc<Auth>,
    p: &Principal,
    max_tokens: Option<u32>,
    stream: bool,
) -> Result<ChatLease, Response> {
    let l = p.limits;
    let stream_slot = match (stream, l.concurrent_streams) {
        (true, Some(limit)) => Some(auth.streams.try_acquire(&p.key_id, limit).ok_or_else(|| {
            ApiError::TooManyRequests {
                kind: "requests",
                message: format!(
                    "Too many concurrent streams for this API key: the limit is {limit}. Wait for one to finish."
                ),
                code: "rate_limit_exceeded",
                retry_after: Some(std::time::Duration::from_secs(1)),
                retry: true,
            }
            .into_response()
        })?),
        _ => None,
    };
    let now = auth.clock().now_millis();
    let daily = match l.daily_tokens {
        None => None,
        Some(limit) => {
            let day_start = now.div_euclid(DAY_MS) * DAY_MS;
            let counter = format!("daily:{}:{}", p.key_id, day_start / DAY_MS);
            let used = match auth.limiter.counter_get(&counter).await {
                Some(used) => used,
                None => {
                    let used = auth
                        .store
                        .sum_usage_tokens(&p.key_id, day_start / 1000)
                        .await
                        .map_err(|e| ApiError::from(e).into_response())?;
                    auth.limiter
                        .counter_seed(&counter, used, day_start + DAY_MS)
                        .await
                }
            };
            if used >= limit {
                let reset =
                    std::time::Duration::from_millis(u64::try_from(day_start + DAY_MS - now).unwrap_or(0));
                let mut resp = ApiError::TooManyRequests {
                    kind: "insufficient_quota",
                    message: format!(
                        "You exceeded this API key's daily quota of {limit} tokens; it resets at 00:00 UTC."
                    ),
                    code: "insufficient_quota",
                    retry_after: None,
                    retry: false,
                }
                .into_response();
                set(
                    resp.headers_mut(),
                    "x-ratelimit-reset-tokens",
                    &format_reset(reset),
                );
                return Err(resp);
            }
            Some((counter, day_start + DAY_MS))
        }
    };
    let mut tokens = None;
    let tpm = l
        .tokens_per_minute
        .map(|r| Quota::with_window(r, auth.burst_window));
    if let Some(quota) = tpm {
        let cost = u64::from(max_tokens.unwrap_or(1).max(1));
        let key = format!("tpm:{}", p.key_id);
        if cost > u64::from(quota.burst) {
            let d = auth.limiter.acquire(&key, quota, 0).await;
            let mut resp = ApiError::TooManyRequests {
                kind: "tokens",
                message: format!(
                    "Request too large: max_tokens {cost} exceeds this API key's limit of {} tokens per minute.",
                    quota.burst
                ),
                code: "rate_limit_exceeded",
                retry_after: None,
                retry: false,
            }
            .into_response();
            token_headers(resp.headers_mut(), &d);
            return Err(resp);
        }
        // A pre-check: look, do not take (the reply's real usage is debited afterwards).
        let d = auth.limiter.acquire(&key, quota, 0).await;
        if d.unavailable {
            return Err(redis_unavailable(&d).into_response());
        }
        if d.remaining < cost {
            let probe = Decision {
                retry_after: Some(
                    d.reset
                        .saturating_sub(quota_time(quota, u64::from(quota.burst).saturating_sub(cost))),
                ),
                ..d
            };
            let mut resp = ApiError::TooManyRequests {
                kind: "tokens",
                message: format!(
                    "Rate limit reached for tokens: limit {} per minute, requested {cost}. Please try again in {}.",
                    quota.per_minute,
                    format_reset(probe.retry_after.unwrap_or_default())
                ),
                code: "rate_limit_exceeded",
                retry_after: probe.retry_after,
                retry: true,
            }
            .into_response();
            token_headers(resp.headers_mut(), &d);
            return Err(resp);
        }
        tokens = Some(d);
    }
    Ok(ChatLease {
        auth: auth.clone(),
        key_id: p.key_id.clone(),
        tpm,
        daily,
        tokens,
        _stream: stream_slot,
        settled: false,
        delivered_chars: 0,
    })
}

/// How long `units` take to replenish.
fn quota_time(quota: Quota, units: u64) -> std::time::Duration {
    let per_unit = 60_000_000_000u128 / u128::from(quota.per_minute.max(1));
    std::time::Duration::from_nanos(u64::try_from(per_unit * u128::from(units)).unwrap_or(u64::MAX))
}

impl ChatLease {
    pub fn delivered(&mut self, text: &str) {
        self.delivered_chars += text.len();
    }

    /// Debit the reply's tokens (prompt + completion) from the per-minute bucket and the daily quota.
    pub async fn settle(mut self, total_tokens: u32) {
        self.settled = true;
        debit(
            &self.auth,
            &self.key_id,
            self.tpm,
            self.daily.clone(),
            u64::from(total_tokens),
        )
        .await;
    }
}

async fn debit(auth: &Auth, key_id: &str, tpm: Option<Quota>, daily: Option<(String, i64)>, n: u64) {
    if let Some(quota) = tpm {
        auth.limiter.debit(&format!("tpm:{key_id}"), quota, n).await;
    }
    if let Some((counter, expires)) = daily {
        auth.limiter.counter_add(&counter, n, expires).await;
    }
}

impl Drop for ChatLease {
    /// A reply that never settled (client gone, backend error) is debited an estimate of what was
    /// delivered (about 4 characters per token).
    fn drop(&mut self) {
        if self.settled || (self.tpm.is_none() && self.daily.is_none()) {
            return;
        }
        let n = (self.delivered_chars as u64).div_ceil(4);
        if n == 0 {
            return;
        }
        let (auth, key, tpm, daily) = (
            self.auth.clone(),
            self.key_id.clone(),
            self.tpm,
            self.daily.take(),
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { debit(&auth, &key, tpm, daily, n).await });
        }
    }
}
