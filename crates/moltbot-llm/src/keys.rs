//! API keys used round robin; a key that got 401/403/429 is skipped until its cooldown ends.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyPick {
    /// No keys configured: send no `Authorization`.
    NoKeys,
    Ready(usize),
    /// Every key is cooling; this one is ready first, `wait` from now. `status` is what cooled it.
    Cooling {
        index: usize,
        wait: Duration,
        status: u16,
    },
}

#[derive(Debug, Default)]
struct Rotation {
    next: usize,
    /// Per key: cooling until, and the status that caused it.
    cooling: Vec<Option<(Instant, u16)>>,
}

pub(crate) struct KeyRing {
    keys: Vec<String>,
    state: Mutex<Rotation>,
}

impl KeyRing {
    pub fn new(keys: Vec<String>) -> Self {
        let cooling = vec![None; keys.len()];
        Self {
            keys,
            state: Mutex::new(Rotation { next: 0, cooling }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Rotation> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn secret(&self, index: usize) -> &str {
        &self.keys[index]
    }

    /// The next ready key in turn (advancing the rotation), or the key that is ready first.
    pub fn pick(&self, now: Instant) -> KeyPick {
        if self.keys.is_empty() {
            return KeyPick::NoKeys;
        }
        let mut st = self.lock();
        let n = self.keys.len();
        for i in 0..n {
            let idx = (st.next + i) % n;
            match st.cooling[idx] {
                Some((until, _)) if until > now => {}
                _ => {
                    st.cooling[idx] = None;
                    st.next = (idx + 1) % n;
                    return KeyPick::Ready(idx);
                }
            }
        }
        let (index, (until, status)) = st
            .cooling
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| (i, c)))
            .min_by_key(|(_, (until, _))| *until)
            .unwrap_or((0, (now, 429)));
        KeyPick::Cooling {
            index,
            wait: until - now,
            status,
        }
    }

    /// Whether some key is usable now.
    pub fn has_ready(&self, now: Instant) -> bool {
        self.lock()
            .cooling
            .iter()
            .any(|c| c.is_none_or(|(until, _)| until <= now))
    }

    pub fn cool_down(&self, index: usize, until: Instant, status: u16) {
        if let Some(slot) = self.lock().cooling.get_mut(index) {
            *slot = Some((until, status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> KeyRing {
        KeyRing::new((0..n).map(|i| format!("sk-{i}")).collect())
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_skips_cooling_keys() {
        let r = ring(3);
        let now = Instant::now();
        let picks: Vec<KeyPick> = (0..4).map(|_| r.pick(now)).collect();
        assert_eq!(picks, [0, 1, 2, 0].map(KeyPick::Ready));
        r.cool_down(1, now + Duration::from_secs(5), 429);
        let picks: Vec<KeyPick> = (0..3).map(|_| r.pick(now)).collect();
        assert_eq!(picks, [2, 0, 2].map(KeyPick::Ready));
        assert_eq!(r.pick(now + Duration::from_secs(5)), KeyPick::Ready(0));
        assert_eq!(r.pick(now + Duration::from_secs(5)), KeyPick::Ready(1));
    }

    #[tokio::test(start_paused = true)]
    async fn all_cooling_reports_the_first_to_recover() {
        let r = ring(2);
        let now = Instant::now();
        r.cool_down(0, now + Duration::from_secs(9), 429);
        r.cool_down(1, now + Duration::from_secs(3), 401);
        assert!(!r.has_ready(now));
        assert_eq!(
            r.pick(now),
            KeyPick::Cooling {
                index: 1,
                wait: Duration::from_secs(3),
                status: 401
            }
        );
        assert!(r.has_ready(now + Duration::from_secs(3)));
        assert_eq!(ring(0).pick(now), KeyPick::NoKeys);
    }
}
