//! Brute-force protection: failed authentications are counted per client address in a fixed window;
//! `threshold` failures lock the address out for `duration` (429). The client address honours
//! `X-Forwarded-For` only when the connection comes from a trusted proxy.
//!
//! In cluster mode the counters and lockouts live in Redis (`lock:<ip>`, `fail:<ip>`), so an address
//! locked out on one replica is locked out on all; while Redis is unavailable each replica counts on its
//! own (the in-memory path below).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use ipnet::IpNet;
use moltbot_core::Clock;

/// Entries kept at most; beyond this, stale entries are dropped first (bounded memory under a flood).
const MAX_ENTRIES: usize = 100_000;

/// KEYS fail counter, lock; ARGV threshold, window ms, duration ms. Returns 1 when this failure locked out.
static RECORD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
",
    )
});

pub struct Lockout {
    clock: Arc<dyn Clock>,
    /// Cluster mode: shared counters in Redis.
    shared: Option<Arc<crate::cluster::Shared>>,
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
            shared: None,
        }
    }

    /// Share counters and lockouts through Redis (cluster mode).
    pub fn with_shared(mut self, shared: Option<Arc<crate::cluster::Shared>>) -> Self {
        self.shared = shared;
        self
    }

    /// `Some(remaining)` while the address is locked out (on any replica, in cluster mode).
    pub async fn locked(&self, ip: IpAddr) -> Option<Duration> {
        if let Some(shared) = &self.shared {
            let key = shared.key(&format!("lock:{ip}"));
            let ttl = shared
                .run("lockout", |mut c| async move {
                    redis::cmd("PTTL").arg(key).query_async::<i64>(&mut c).await
                })
                .await;
            if let Ok(ms) = ttl {
                return (ms > 0).then(|| Duration::from_millis(ms.unsigned_abs()));
            }
        }
        self.locked_local(ip)
    }

    /// Count a failed authentication from `ip`.
    pub async fn record_failure(&self, ip: IpAddr) -> Failure {
        if let Some(shared) = &self.shared {
            let (fail, lock) = (
                shared.key(&format!("fail:{ip}")),
                shared.key(&format!("lock:{ip}")),
            );
            let (threshold, window, duration) = (self.threshold, self.window_ms, self.duration_ms);
            let r = shared
                .run("lockout", |mut c| async move {
                    RECORD
                        .key(fail)
                        .key(lock)
                        .arg(threshold)
                        .arg(window)
                        .arg(duration)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await;
            if let Ok(locked) = r {
                return if locked == 1 {
                    Failure::LockedOut
                } else {
                    Failure::Counted
                };
            }
        }
        self.record_failure_local(ip)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn locked_local(&self, ip: IpAddr) -> Option<Duration> {
        let now = self.clock.now_millis();
        let until = self.lock().get(&ip)?.locked_until?;
        (until > now).then(|| Duration::from_millis(u64::try_from(until - now).unwrap_or(0)))
    }

    fn record_failure_local(&self, ip: IpAddr) -> Failure {
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
        assert_eq!(l.record_failure_local(ip), Failure::Counted);
        assert_eq!(l.record_failure_local(ip), Failure::Counted);
        assert_eq!(l.locked_local(ip), None);
        assert_eq!(l.record_failure_local(ip), Failure::LockedOut);
        assert_eq!(l.locked_local(ip), Some(Duration::from_secs(300)));
        assert_eq!(l.locked_local(other), None);
        clock.advance(Duration::from_secs(299));
        assert!(l.locked_local(ip).is_some());
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.locked_local(ip), None);
        assert_eq!(l.record_failure_local(ip), Failure::Counted, "a fresh window");
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
        assert_eq!(l.record_failure_local(ip), Failure::Counted);
        clock.advance(Duration::from_secs(61));
        assert_eq!(l.record_failure_local(ip), Failure::Counted);
        assert_eq!(l.record_failure_local(ip), Failure::LockedOut);
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
