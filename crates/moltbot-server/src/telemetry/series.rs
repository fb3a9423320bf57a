//! moltbot's own live counters for the admin console (no Prometheus needed): a one-hour time series of
//! the dialog listener in 10-second buckets, and per-backend counters with the last errors.
//!
//! What counts:
//! - a **request** is a response of the dialog listener to a `/v1/…` path (probes, pages and static
//!   files are left out; WebSocket upgrades too — their turns are counted as tokens and streams);
//! - an **error** is such a response with status ≥ 500 (upstream failures map to 502/503/504), plus a
//!   streamed turn whose backend failed after the 200 and the first token were already sent;
//! - **latency** is the time until the response body ended (a stream's whole length), kept in a
//!   log-scale histogram (4 buckets per doubling, ≤ 19 % error) from which p50/p95 are read;
//! - **tokens** are prompt + completion tokens of completed turns.
//!
//! The hot path takes one uncontended mutex per update and allocates nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Seconds per bucket.
pub const INTERVAL_SECS: i64 = 10;
/// Buckets kept: one hour.
pub const BUCKETS: usize = 360;
/// Recent errors kept per backend.
pub const RECENT_ERRORS: usize = 10;
/// Latency histogram buckets: bucket `i` holds latencies up to `2^(i/4)` ms (the last one: more).
const LATENCY_BUCKETS: usize = 96;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fixed log-scale latency histogram.
#[derive(Clone, Copy)]
pub struct LatencySketch {
    counts: [u32; LATENCY_BUCKETS],
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self {
            counts: [0; LATENCY_BUCKETS],
        }
    }
}

impl LatencySketch {
    fn index(latency: Duration) -> usize {
        let ms = latency.as_secs_f64() * 1000.0;
        if ms <= 1.0 {
            return 0;
        }
        // ceil(4·log2(ms)): the first bucket whose upper bound 2^(i/4) is ≥ ms.
        let i = (4.0 * ms.log2()).ceil();
        (i as usize).min(LATENCY_BUCKETS - 1)
    }

    fn upper_ms(index: usize) -> f64 {
        2f64.powf(index as f64 / 4.0)
    }

    pub fn record(&mut self, latency: Duration) {
        let i = Self::index(latency);
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    pub fn merge(&mut self, other: &LatencySketch) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| u64::from(*c)).sum()
    }

    /// The `q` quantile (0..=1) in milliseconds, rounded to 0.1 ms; `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some((Self::upper_ms(i) * 10.0).round() / 10.0);
            }
        }
        None
    }
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Bucket number (unix seconds / interval); a slot holding an older number is stale.
    slot: i64,
    requests: u64,
    errors: u64,
    tokens: u64,
    latency: LatencySketch,
}

/// One point of the overview series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Unix seconds at the bucket's start.
    pub t: i64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub tokens: u64,
}

/// Aggregates over a recent window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Totals {
    pub requests_per_second: f64,
    /// Errors / requests (0 without requests).
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub tokens_per_second: f64,
    pub active_streams: i64,
}

/// The ring buffer of the dialog listener.
pub struct Series {
    buckets: Mutex<Vec<Bucket>>,
    active_streams: AtomicI64,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            buckets: Mutex::new(vec![Bucket::default(); BUCKETS]),
            active_streams: AtomicI64::new(0),
        }
    }
}

impl Series {
    fn update(&self, now: i64, f: impl FnOnce(&mut Bucket)) {
        let slot = now.div_euclid(INTERVAL_SECS);
        let mut buckets = lock(&self.buckets);
        let b = &mut buckets[slot.rem_euclid(BUCKETS as i64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        f(b);
    }

    /// A finished response: its status and how long it took.
    pub fn record_request(&self, status: u16, latency: Duration) {
        self.record_request_at(now_secs(), status, latency);
    }

    pub fn record_request_at(&self, now: i64, status: u16, latency: Duration) {
        self.update(now, |b| {
            b.requests += 1;
            if status >= 500 {
                b.errors += 1;
            }
            b.latency.record(latency);
        });
    }

    /// A streamed turn failed after its 200 went out.
    pub fn record_stream_error(&self) {
        self.update(now_secs(), |b| b.errors += 1);
    }

    pub fn record_tokens(&self, tokens: u64) {
        self.record_tokens_at(now_secs(), tokens);
    }

    pub fn record_tokens_at(&self, now: i64, tokens: u64) {
        self.update(now, |b| b.tokens += tokens);
    }

    pub fn stream_started(&self) {
        self.active_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_ended(&self) {
        self.active_streams.fetch_sub(1, Ordering::Relaxed);
    }

    /// The last hour, oldest first, ending with the current bucket (empty buckets included).
    pub fn points(&self) -> Vec<Point> {
        self.points_at(now_secs())
    }

    pub fn points_at(&self, now: i64) -> Vec<Point> {
        self.window(now, BUCKETS)
            .into_iter()
            .map(|(slot, b)| Point {
                t: slot * INTERVAL_SECS,
                requests: b.requests,
                errors: b.errors,
                p50_ms: b.latency.quantile_ms(0.5),
                p95_ms: b.latency.quantile_ms(0.95),
                tokens: b.tokens,
            })
            .collect()
    }

    /// Rates and latencies over the last `window` (whole buckets, the current one included).
    pub fn totals(&self, window: Duration) -> Totals {
        self.totals_at(now_secs(), window)
    }

    pub fn totals_at(&self, now: i64, window: Duration) -> Totals {
        let n = usize::try_from(window.as_secs().div_ceil(INTERVAL_SECS as u64))
            .unwrap_or(BUCKETS)
            .clamp(1, BUCKETS);
        let mut latency = LatencySketch::default();
        let (mut requests, mut errors, mut tokens) = (0u64, 0u64, 0u64);
        for (_, b) in self.window(now, n) {
            requests += b.requests;
            errors += b.errors;
            tokens += b.tokens;
            latency.merge(&b.latency);
        }
        let secs = (n as i64 * INTERVAL_SECS) as f64;
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        Totals {
            requests_per_second: round(requests as f64 / secs),
            error_rate: if requests == 0 {
                0.0
            } else {
                round(errors as f64 / requests as f64)
            },
            p50_ms: latency.quantile_ms(0.5),
            p95_ms: latency.quantile_ms(0.95),
            tokens_per_second: round(tokens as f64 / secs),
            active_streams: self.active_streams.load(Ordering::Relaxed).max(0),
        }
    }

    /// The last `n` buckets (slot number, contents), oldest first; stale slots read as empty.
    fn window(&self, now: i64, n: usize) -> Vec<(i64, Bucket)> {
        let current = now.div_euclid(INTERVAL_SECS);
        let buckets = lock(&self.buckets);
        (0..n as i64)
            .rev()
            .map(|ago| {
                let slot = current - ago;
                let b = buckets[slot.rem_euclid(BUCKETS as i64) as usize];
                (slot, if b.slot == slot { b } else { Bucket::default() })
            })
            .collect()
    }
}

/// One error a backend returned.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecentError {
    /// Unix seconds.
    pub at: i64,
    pub message: String,
}

/// A backend's counters since start.
#[derive(Clone, Default)]
pub struct BackendCounters {
    pub requests: u64,
    pub errors: u64,
    pub latency: LatencySketch,
    /// Newest last.
    pub recent_errors: VecDeque<RecentError>,
}

/// Per-backend counters, keyed by backend name (configured names only, so the map stays bounded).
#[derive(Default)]
pub struct BackendStats {
    by_name: Mutex<HashMap<String, BackendCounters>>,
}

impl BackendStats {
    /// A finished turn on `backend`: how long it took and, if the backend failed, why.
    pub fn record(&self, backend: &str, latency: Duration, error: Option<String>) {
        let mut map = lock(&self.by_name);
        let c = match map.get_mut(backend) {
            Some(c) => c,
            None => map.entry(backend.to_owned()).or_default(),
        };
        c.requests += 1;
        c.latency.record(latency);
        if let Some(message) = error {
            c.errors += 1;
            if c.recent_errors.len() == RECENT_ERRORS {
                c.recent_errors.pop_front();
            }
            c.recent_errors.push_back(RecentError {
                at: now_secs(),
                message,
            });
        }
    }

    pub fn get(&self, backend: &str) -> BackendCounters {
        lock(&self.by_name).get(backend).cloned().unwrap_or_default()
    }
}

/// What the console's overview and backends pages read.
#[derive(Default)]
pub struct LiveStats {
    pub series: Series,
    pub backends: BackendStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    #[test]
    fn buckets_roll_over_and_read_oldest_first() {
        let s = Series::default();
        s.record_request_at(T0, 200, Duration::from_millis(20));
        s.record_request_at(T0 + 1, 502, Duration::from_millis(40));
        s.record_tokens_at(T0 + 2, 7);
        s.record_request_at(T0 + 15, 200, Duration::from_millis(10));
        let points = s.points_at(T0 + 15);
        assert_eq!(points.len(), BUCKETS);
        let last = &points[BUCKETS - 1];
        let prev = &points[BUCKETS - 2];
        assert_eq!(last.t, (T0 + 15) / 10 * 10);
        assert_eq!((last.requests, last.errors, last.tokens), (1, 0, 0));
        assert_eq!((prev.requests, prev.errors, prev.tokens), (2, 1, 7));
        assert!(points.windows(2).all(|w| w[0].t + 10 == w[1].t));
        // An hour later the old slot is reused and reads as empty.
        let later = s.points_at(T0 + 3620);
        assert_eq!(later.iter().map(|p| p.requests).sum::<u64>(), 0);
        s.record_request_at(T0 + 3620, 200, Duration::from_millis(5));
        assert_eq!(s.points_at(T0 + 3620)[BUCKETS - 1].requests, 1);
    }

    #[test]
    fn quantiles_are_within_the_bucket_error() {
        let mut l = LatencySketch::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let p50 = l.quantile_ms(0.5).unwrap();
        let p95 = l.quantile_ms(0.95).unwrap();
        assert!((50.0..=50.0 * 1.2).contains(&p50), "{p50}");
        assert!((95.0..=95.0 * 1.2).contains(&p95), "{p95}");
        assert_eq!(LatencySketch::default().quantile_ms(0.5), None);
    }

    #[test]
    fn totals_over_a_window() {
        let s = Series::default();
        for _ in 0..9 {
            s.record_request_at(T0, 200, Duration::from_millis(100));
        }
        s.record_request_at(T0, 500, Duration::from_millis(100));
        s.record_tokens_at(T0, 600);
        s.stream_started();
        let t = s.totals_at(T0, Duration::from_secs(60));
        assert_eq!(t.requests_per_second, 0.167);
        assert_eq!(t.error_rate, 0.1);
        assert_eq!(t.tokens_per_second, 10.0);
        assert_eq!(t.active_streams, 1);
        assert!(t.p50_ms.is_some_and(|p| (100.0..=120.0).contains(&p)));
    }

    #[test]
    fn backend_errors_keep_the_last_ten() {
        let b = BackendStats::default();
        for i in 0..12 {
            b.record("m", Duration::from_millis(5), Some(format!("e{i}")));
        }
        b.record("m", Duration::from_millis(5), None);
        let c = b.get("m");
        assert_eq!((c.requests, c.errors), (13, 12));
        assert_eq!(c.recent_errors.len(), RECENT_ERRORS);
        assert_eq!(c.recent_errors.back().unwrap().message, "e11");
        assert_eq!(b.get("other").requests, 0);
    }
}
