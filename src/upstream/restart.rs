//! Restart policy: exponential backoff with jitter, and restart intensity. Pure; time is
//! passed in.
//!
//! Two kinds of trouble are told apart. An upstream that cannot be reached (connection
//! refused, handshake failed) is retried forever, the delay doubling up to the cap: it may
//! come up any minute. An upstream that came up and then died counts against the intensity
//! limit; more than `max_restarts` such restarts inside `window` mean a crash loop, and the
//! server is marked `failed` until an operator resets it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RestartConfig {
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Spread of the random factor applied to each delay: 0.2 means ±20 %.
    pub jitter: f64,
    pub max_restarts: usize,
    pub window: Duration,
    /// Up this long without trouble, an upstream's backoff starts again from the base.
    pub stable_after: Duration,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            jitter: 0.2,
            max_restarts: 5,
            window: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// The delay before restart number `attempt` (0-based): `base * 2^attempt`, capped, times a
/// factor in `1 ± jitter` drawn from `unit` (a number in `0..1`).
pub fn backoff_delay(config: &RestartConfig, attempt: u32, unit: f64) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
    let raw = config
        .base_delay
        .saturating_mul(factor)
        .min(config.max_delay);
    let spread = config.jitter.clamp(0.0, 0.9);
    let scale = 1.0 - spread + 2.0 * spread * unit.clamp(0.0, 1.0);
    raw.mul_f64(scale)
}

/// What to do about an upstream that stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Restart { delay: Duration, attempt: u32 },
    GiveUp,
}

/// The restart history of one upstream.
#[derive(Clone, Debug, Default)]
pub struct RestartState {
    /// Consecutive troubles since the upstream was last stable.
    attempt: u32,
    /// When recent crash-after-up restarts happened, for the intensity limit.
    crashes: VecDeque<Instant>,
    up_since: Option<Instant>,
}

impl RestartState {
    /// The upstream completed its handshake.
    pub fn mark_up(&mut self, now: Instant) {
        self.up_since = Some(now);
    }

    /// The upstream stopped. Whether it had completed its handshake is what [`Self::mark_up`]
    /// recorded: only an exit after coming up counts towards giving up.
    pub fn on_exit(&mut self, config: &RestartConfig, now: Instant, unit: f64) -> Decision {
        let up_since = self.up_since.take();
        if up_since.is_some_and(|since| now.duration_since(since) >= config.stable_after) {
            self.attempt = 0;
        }
        if up_since.is_some() {
            while self
                .crashes
                .front()
                .is_some_and(|t| now.duration_since(*t) > config.window)
            {
                self.crashes.pop_front();
            }
            if self.crashes.len() >= config.max_restarts {
                return Decision::GiveUp;
            }
            self.crashes.push_back(now);
        }
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        Decision::Restart {
            delay: backoff_delay(config, attempt, unit),
            attempt,
        }
    }

    /// An operator's reset: forget everything.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RestartConfig {
        RestartConfig {
            jitter: 0.0,
            ..Default::default()
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let c = config();
        let secs: Vec<u64> = (0..9)
            .map(|a| backoff_delay(&c, a, 0.5).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let c = RestartConfig::default();
        assert_eq!(backoff_delay(&c, 0, 0.0), Duration::from_millis(800));
        assert_eq!(backoff_delay(&c, 0, 1.0), Duration::from_millis(1200));
        assert_eq!(backoff_delay(&c, 0, 0.5), Duration::from_secs(1));
        // Below the cap, doubling outgrows the jitter: the delays seen keep growing.
        for a in 0..5 {
            assert!(backoff_delay(&c, a + 1, 0.0) > backoff_delay(&c, a, 1.0));
        }
    }

    #[test]
    fn unreachable_upstreams_are_retried_forever() {
        let c = config();
        let mut s = RestartState::default();
        let mut now = Instant::now();
        for attempt in 0..50 {
            match s.on_exit(&c, now, 0.5) {
                Decision::Restart { delay, .. } => now += delay,
                Decision::GiveUp => panic!("gave up on attempt {attempt}"),
            }
        }
    }

    #[test]
    fn a_crash_loop_gives_up_after_max_restarts_in_the_window() {
        let c = config();
        let mut s = RestartState::default();
        let mut now = Instant::now();
        let mut delays = vec![];
        loop {
            s.mark_up(now);
            now += Duration::from_millis(100);
            match s.on_exit(&c, now, 0.5) {
                Decision::Restart { delay, .. } => {
                    delays.push(delay.as_secs());
                    // Keep within the window: restart at once for the test's purpose.
                    now += Duration::from_millis(100);
                }
                Decision::GiveUp => break,
            }
        }
        assert_eq!(delays, [1, 2, 4, 8, 16]);
    }

    #[test]
    fn crashes_outside_the_window_are_forgotten() {
        let c = config();
        let mut s = RestartState::default();
        let mut now = Instant::now();
        for _ in 0..20 {
            s.mark_up(now);
            now += Duration::from_secs(30);
            assert!(matches!(s.on_exit(&c, now, 0.5), Decision::Restart { .. }));
        }
    }

    #[test]
    fn a_stable_run_resets_the_backoff_and_reset_forgets_all() {
        let c = config();
        let mut s = RestartState::default();
        let now = Instant::now();
        s.on_exit(&c, now, 0.5);
        s.on_exit(&c, now, 0.5);
        s.mark_up(now);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            s.on_exit(&c, later, 0.5),
            Decision::Restart {
                delay: Duration::from_secs(1),
                attempt: 0
            }
        );
        for _ in 0..5 {
            s.mark_up(later);
            s.on_exit(&c, later, 0.5);
        }
        s.mark_up(later);
        assert_eq!(s.on_exit(&c, later, 0.5), Decision::GiveUp);
        s.reset();
        s.mark_up(later);
        assert!(matches!(
            s.on_exit(&c, later, 0.5),
            Decision::Restart { attempt: 0, .. }
        ));
    }
}
