//! Per-key rate limits: a token bucket per key, as a pure state machine taking `now`.

use std::fmt;
use std::time::{Duration, Instant};

/// A rate such as `10/s`, `600/m` or `10000/h`; the burst is one period's worth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("'{text}' is not a rate such as 10/s, 600/m or 10000/h");
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("'{text}': a rate must allow at least one request"));
        }
        Ok(Self { count, per })
    }

    fn per_second(self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

#[derive(Clone, Debug)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.count),
            at: now,
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.rate.per_second()).min(f64::from(self.rate.count));
        self.at = now;
        // A hair of slack: refilling by exactly the advertised wait must be enough.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.rate.per_second(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(Rate::parse("3/s").unwrap(), t0);
        for _ in 0..3 {
            assert!(bucket.take(t0).is_ok());
        }
        let wait = bucket.take(t0).unwrap_err();
        assert!(wait > Duration::from_millis(300) && wait <= Duration::from_millis(334));
        assert!(bucket.take(t0 + wait).is_ok());
        assert!(bucket.take(t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(Rate::parse("600/m").unwrap().to_string(), "600/m");
        for bad in ["", "10", "x/s", "10/d", "0/s", "-1/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn rate_parsing_never_panics(text in "\\PC{0,20}") {
            let _ = Rate::parse(&text);
        }

        /// Over any span, no more than the burst plus what the rate refills gets through.
        #[test]
        fn never_more_than_the_rate_allows(count in 1u32..50, steps in proptest::collection::vec(0u64..200, 1..200)) {
            let rate = Rate { count, per: Duration::from_secs(1) };
            let t0 = Instant::now();
            let mut bucket = Bucket::new(rate, t0);
            let mut now = t0;
            let mut passed = 0u64;
            for step in steps {
                now += Duration::from_millis(step);
                if bucket.take(now).is_ok() {
                    passed += 1;
                }
            }
            let span = now.duration_since(t0).as_secs_f64();
            prop_assert!(passed as f64 <= f64::from(count) + span * f64::from(count) + 1e-6);
        }
    }
}
