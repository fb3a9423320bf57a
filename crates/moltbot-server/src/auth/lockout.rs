//! Brute-force protection: failed authentications are counted per client address in a fixed window;
//! `threshold` failures lock the address out for `duration` (429). The client address honours
//! `X-Forwarded-For` only when the connection comes from a trusted proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use ipnet::IpNet;
use moltbot_core::Clock;

/// Entries kept at most; beyond this, stale entries are dropped first (bounded memory under a flood).
const MAX_ENTRIES: usize = 100_000;

pub struct Lockout {
    clock: Arc<dyn Clock>,
    threshold: u32,
    window_ms: i64,
    duration_ms: i64,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: i64,
    failures: u32,
    locked_until: Option<i64>,
}

/// The result of recording a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Counted,
    /// This failure locked the address out.
    LockedOut,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Lockout {
    pub fn new(clock: Arc<dyn Clock>, threshold: u32, window: Duration, duration: Duration) -> Self {
        Self {
            clock,
            threshold: threshold.max(1),
            window_ms: ms(window),
            duration_ms: ms(duration),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Some(remaining)` while the address is locked out.
    pub fn locked(&self, ip: IpAddr) -> Option<Duration> {
        let now = self.clock.now_millis();
        let until = self.lock().get(&ip)?.locked_until?;
        (until > now).then(|| Duration::from_millis(u64::try_from(until - now).unwrap_or(0)))
    }

    pub fn record_failure(&self, ip: IpAddr) -> Failure {
        let now = self.clock.now_millis();
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            let (window, duration) = (self.window_ms, self.duration_ms);
            entries.retain(|_, e| {
                e.locked_until.is_some_and(|u| u > now) || now - e.window_start < window.max(duration)
            });
        }
        let e = entries.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if e.locked_until.is_some_and(|u| u <= now) || now - e.window_start >= self.window_ms {
            *e = Entry {
                window_start: now,
                failures: 0,
                locked_until: None,
            };
        }
        e.failures += 1;
        if e.failures >= self.threshold && e.locked_until.is_none() {
            e.locked_until = Some(now + self.duration_ms);
            return Failure::LockedOut;
        }
        Failure::Counted
    }
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the right-most address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .map(|s| s.parse::<IpAddr>())
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    hops.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_core::ManualClock;

    #[test]
    fn locks_after_threshold_and_unlocks_after_duration() {
        let clock = Arc::new(ManualClock::new(0));
        let l = Lockout::new(
            clock.clone(),
            3,
            Duration::from_secs(60),
            Duration::from_secs(300),
        );
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        assert_eq!(l.record_failure(ip), Failure::Counted);
        assert_eq!(l.record_failure(ip), Failure::Counted);
        assert_eq!(l.locked(ip), None);
        assert_eq!(l.record_failure(ip), Failure::LockedOut);
        assert_eq!(l.locked(ip), Some(Duration::from_secs(300)));
        assert_eq!(l.locked(other), None);
        clock.advance(Duration::from_secs(299));
        assert!(l.locked(ip).is_some());
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.locked(ip), None);
        assert_eq!(l.record_failure(ip), Failure::Counted, "a fresh window");
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let clock = Arc::new(ManualClock::new(0));
        let l = Lockout::new(
            clock.clone(),
            2,
            Duration::from_secs(60),
            Duration::from_secs(300),
        );
        let ip: IpAddr = "::1".parse().unwrap();
        assert_eq!(l.record_failure(ip), Failure::Counted);
        clock.advance(Duration::from_secs(61));
        assert_eq!(l.record_failure(ip), Failure::Counted);
        assert_eq!(l.record_failure(ip), Failure::LockedOut);
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.9, 10.0.0.2".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.50".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(stranger, &h, &trusted),
            stranger,
            "spoofed header ignored"
        );
        assert_eq!(client_ip(proxy, &h, &[]), proxy);
        h.insert("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(client_ip(proxy, &h, &trusted), proxy);
    }
}
