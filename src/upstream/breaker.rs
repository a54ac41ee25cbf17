//! The circuit breaker: a pure state machine that takes `now`, so tests drive it with an
//! injected clock and never sleep.
//!
//! Closed: calls pass; consecutive failures are counted. At `failure_threshold` it opens.
//! Open: calls fail fast until the cool-down ends. Each re-open doubles the cool-down, up to
//! `max_cooldown`; a close resets it.
//! Half-open: exactly one trial (a call or a probe) is let through; its outcome closes or
//! re-opens the circuit.

use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Clone, Debug)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub base_cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            base_cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// A change of circuit state, to be published as an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Opened { cooldown: Duration },
    HalfOpened,
    Closed,
}

/// Why a call was refused without touching the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub retry_after: Duration,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: CircuitState,
    consecutive_failures: u32,
    /// How many times the circuit re-opened from half-open since it last closed.
    reopens: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: CircuitState::Closed,
            consecutive_failures: 0,
            reopens: 0,
            open_until: None,
            trial_in_flight: false,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// When an open circuit may next let a trial through.
    #[cfg(test)]
    pub fn open_until(&self) -> Option<Instant> {
        self.open_until
    }

    fn cooldown(&self) -> Duration {
        let factor = 1u32.checked_shl(self.reopens.min(16)).unwrap_or(u32::MAX);
        self.config
            .base_cooldown
            .saturating_mul(factor)
            .min(self.config.max_cooldown)
    }

    /// Moves an open circuit whose cool-down has ended to half-open.
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        match (self.state, self.open_until) {
            (CircuitState::Open, Some(until)) if now >= until => {
                self.state = CircuitState::HalfOpen;
                self.trial_in_flight = false;
                Some(Transition::HalfOpened)
            }
            _ => None,
        }
    }

    /// Asks to let one call (or probe) through. In half-open, only the first asker gets
    /// through; the others are refused until its outcome is recorded.
    pub fn try_acquire(&mut self, now: Instant) -> (Result<(), Rejected>, Option<Transition>) {
        let transition = self.poll(now);
        let verdict = match self.state {
            CircuitState::Closed => Ok(()),
            CircuitState::Open => Err(Rejected {
                retry_after: self
                    .open_until
                    .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
                    .max(Duration::from_secs(1)),
            }),
            CircuitState::HalfOpen if !self.trial_in_flight => {
                self.trial_in_flight = true;
                Ok(())
            }
            CircuitState::HalfOpen => Err(Rejected {
                retry_after: Duration::from_secs(1),
            }),
        };
        (verdict, transition)
    }

    pub fn record_success(&mut self, _now: Instant) -> Option<Transition> {
        self.consecutive_failures = 0;
        match self.state {
            CircuitState::Closed => None,
            // A success while open comes from a call let through before it opened: it
            // proves the upstream answers, so close.
            CircuitState::HalfOpen | CircuitState::Open => {
                self.state = CircuitState::Closed;
                self.reopens = 0;
                self.open_until = None;
                self.trial_in_flight = false;
                Some(Transition::Closed)
            }
        }
    }

    pub fn record_failure(&mut self, now: Instant) -> Option<Transition> {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            CircuitState::Closed if self.consecutive_failures >= self.config.failure_threshold => {
                Some(self.open(now))
            }
            CircuitState::Closed => None,
            CircuitState::HalfOpen => {
                self.reopens = self.reopens.saturating_add(1);
                Some(self.open(now))
            }
            // Late failures of calls started before it opened change nothing.
            CircuitState::Open => None,
        }
    }

    fn open(&mut self, now: Instant) -> Transition {
        let cooldown = self.cooldown();
        self.state = CircuitState::Open;
        self.open_until = Some(now + cooldown);
        self.trial_in_flight = false;
        Transition::Opened { cooldown }
    }

    /// A call let through ended without an outcome (its caller went away). In half-open it
    /// was the trial: let the next asker be one, or the circuit would wait forever.
    pub fn abandon(&mut self) {
        if self.state == CircuitState::HalfOpen {
            self.trial_in_flight = false;
        }
    }

    /// Closes the circuit and forgets its history.
    #[cfg(test)]
    pub fn reset(&mut self) {
        *self = Self::new(self.config.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_trial_lets_the_next_asker_be_the_trial() {
        let config = BreakerConfig {
            failure_threshold: 1,
            base_cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(1),
        };
        let mut breaker = Breaker::new(config);
        let t0 = Instant::now();
        breaker.record_failure(t0);
        let later = t0 + Duration::from_secs(2);
        assert!(breaker.try_acquire(later).0.is_ok(), "the trial");
        assert!(breaker.try_acquire(later).0.is_err(), "one trial at a time");
        breaker.abandon();
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(breaker.try_acquire(later).0.is_ok(), "a new trial");
        // Abandoning a call in a closed circuit changes nothing.
        breaker.record_success(later);
        breaker.abandon();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(breaker.consecutive_failures(), 0);
    }

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 5,
            base_cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..4 {
            assert_eq!(b.record_failure(t0), None);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(
            b.record_failure(t0),
            Some(Transition::Opened {
                cooldown: Duration::from_secs(30)
            })
        );
        let (verdict, _) = b.try_acquire(t0 + Duration::from_secs(10));
        assert_eq!(
            verdict,
            Err(Rejected {
                retry_after: Duration::from_secs(20)
            })
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..4 {
            b.record_failure(t0);
        }
        b.record_success(t0);
        for _ in 0..4 {
            assert_eq!(b.record_failure(t0), None);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn half_open_lets_exactly_one_trial_through() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..5 {
            b.record_failure(t0);
        }
        let later = t0 + Duration::from_secs(30);
        let (first, transition) = b.try_acquire(later);
        assert_eq!(first, Ok(()));
        assert_eq!(transition, Some(Transition::HalfOpened));
        assert!(b.try_acquire(later).0.is_err());
        assert_eq!(b.record_success(later), Some(Transition::Closed));
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.try_acquire(later).0, Ok(()));
    }

    #[test]
    fn cooldown_doubles_on_each_reopen_up_to_the_cap_and_resets_on_close() {
        let mut now = Instant::now();
        let mut b = breaker();
        for _ in 0..5 {
            b.record_failure(now);
        }
        let mut seen = vec![];
        for _ in 0..6 {
            now = b.open_until().unwrap();
            assert_eq!(b.try_acquire(now).0, Ok(()));
            match b.record_failure(now) {
                Some(Transition::Opened { cooldown }) => seen.push(cooldown.as_secs()),
                other => panic!("expected a re-open, got {other:?}"),
            }
        }
        assert_eq!(seen, [60, 120, 240, 300, 300, 300]);
        now = b.open_until().unwrap();
        assert_eq!(b.try_acquire(now).0, Ok(()));
        b.record_success(now);
        for _ in 0..5 {
            b.record_failure(now);
        }
        assert_eq!(b.open_until(), Some(now + Duration::from_secs(30)));
    }

    #[test]
    fn poll_moves_to_half_open_only_after_the_cooldown() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..5 {
            b.record_failure(t0);
        }
        assert_eq!(b.poll(t0 + Duration::from_secs(29)), None);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(
            b.poll(t0 + Duration::from_secs(30)),
            Some(Transition::HalfOpened)
        );
        assert_eq!(b.state(), CircuitState::HalfOpen);
    }

    #[test]
    fn reset_closes() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..5 {
            b.record_failure(t0);
        }
        b.reset();
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.try_acquire(t0).0, Ok(()));
    }
}
