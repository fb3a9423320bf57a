//! A per-backend circuit breaker: closed → open after N consecutive failed calls → half-open after
//! `open_for` (exactly one probe) → closed on the probe's success, open again on its failure.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use moltbot_core::CircuitState;
use tokio::time::Instant;

use crate::settings::CircuitSettings;

/// `retry_after` given while a half-open probe is in flight.
const PROBE_BUSY_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    settings: CircuitSettings,
    state: Mutex<State>,
}

/// Permission to make one call. Report its outcome with [`CircuitPermit::record`]; dropping it
/// unreported (the call was cancelled or never reached the upstream) changes nothing, except that a
/// probe slot is freed.
#[derive(Debug)]
pub struct CircuitPermit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl CircuitBreaker {
    pub fn new(settings: CircuitSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state as callers would see it now (an elapsed open period reads as half-open).
    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if Instant::now() >= until => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// A permit to call, or how long until the circuit may let a call through.
    pub fn try_acquire(&self) -> Result<CircuitPermit<'_>, Duration> {
        let mut state = self.lock();
        let now = Instant::now();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => return Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => {
                return Err(PROBE_BUSY_RETRY.min(self.settings.open_for.max(Duration::from_millis(1))));
            }
        };
        Ok(CircuitPermit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    fn record(&self, probe: bool, failed: bool) {
        if self.settings.failure_threshold == 0 {
            return;
        }
        let mut state = self.lock();
        let open = State::Open {
            until: Instant::now() + self.settings.open_for,
        };
        match (*state, probe) {
            (State::Closed { failures }, false) => {
                let failures = if failed { failures + 1 } else { 0 };
                *state = if failures >= self.settings.failure_threshold {
                    open
                } else {
                    State::Closed { failures }
                };
            }
            (State::HalfOpen { .. }, true) => {
                *state = if failed {
                    open
                } else {
                    State::Closed { failures: 0 }
                };
            }
            // Calls started before the state changed do not move it.
            _ => {}
        }
    }
}

impl CircuitPermit<'_> {
    /// Reports the call's outcome: `failed` = the upstream looked unhealthy.
    pub fn record(mut self, failed: bool) {
        self.reported = true;
        self.breaker.record(self.probe, failed);
    }

    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for CircuitPermit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut state = self.breaker.lock();
            if *state == (State::HalfOpen { probing: true }) {
                *state = State::HalfOpen { probing: false };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(CircuitSettings {
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
        })
    }

    fn fail(b: &CircuitBreaker) {
        b.try_acquire().unwrap().record(true);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_only() {
        let b = breaker();
        fail(&b);
        fail(&b);
        b.try_acquire().unwrap().record(false); // resets the count
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
        advance(Duration::from_secs(4)).await;
        assert_eq!(b.try_acquire().unwrap_err(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_and_success_closes() {
        let b = breaker();
        (0..3).for_each(|_| fail(&b));
        advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert!(b.try_acquire().is_err());
        probe.record(false);
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(!b.try_acquire().unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_for_a_full_period() {
        let b = breaker();
        (0..3).for_each(|_| fail(&b));
        advance(Duration::from_secs(11)).await;
        b.try_acquire().unwrap().record(true);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.try_acquire().unwrap_err(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probe_frees_the_slot_and_late_results_are_ignored() {
        let b = breaker();
        let late = b.try_acquire().unwrap(); // started while closed
        (0..3).for_each(|_| fail(&b));
        late.record(false); // finished after the circuit opened: ignored
        assert_eq!(b.state(), CircuitState::Open);
        advance(Duration::from_secs(10)).await;
        drop(b.try_acquire().unwrap());
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_zero_disables() {
        let b = CircuitBreaker::new(CircuitSettings {
            failure_threshold: 0,
            open_for: Duration::from_secs(1),
        });
        (0..10).for_each(|_| fail(&b));
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
