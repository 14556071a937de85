//! A token bucket: at most `rate` units per second on average, with bursts
//! up to `burst` units.
//!
//! Used for a session's bandwidth (bytes of deliveries per second), its
//! publish rate (publishes per second), per-IP rates, and the rate of each
//! trusted publisher (an API key, a remote adapter). Time is an input (tokio's
//! [`Instant`], so tests on the paused clock are exact); nothing here sleeps.
//!
//! Two ways to spend: [`TokenBucket::try_take`] takes `n` only when `n` are
//! there (a publish is allowed or not), and [`TokenBucket::spend_if_ready`]
//! spends `n` as soon as the bucket is not empty, possibly going into debt
//! (a delivery larger than the burst still goes out, and the debt makes the
//! next ones wait: the average rate holds and nothing is stuck forever).

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Units per second (finite, > 0; see [`TokenBucket::new`]).
    rate: f64,
    burst: f64,
    /// May be negative (debt) after [`TokenBucket::spend_if_ready`].
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl TokenBucket {
    /// A full bucket, or `None` when `rate` or `burst` is not a positive
    /// finite number (a limit that cannot be met is ignored rather than
    /// trusted: it would refuse everything forever).
    pub fn new(rate: f64, burst: f64, now: Instant) -> Option<Self> {
        let valid = |x: f64| x.is_finite() && x > 0.0;
        (valid(rate) && valid(burst)).then_some(TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        })
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let elapsed = (now - self.at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
            self.at = now;
        }
    }

    /// Takes `n` units if the bucket holds them; otherwise takes nothing.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Whether the bucket holds `n` units now (nothing is taken).
    pub fn holds(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= n
    }

    /// Whether something may be spent now (the bucket is not empty).
    pub fn is_ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0.0
    }

    /// Spends `n` units if the bucket is not empty, going into debt if
    /// needed; returns whether it spent.
    pub fn spend_if_ready(&mut self, n: f64, now: Instant) -> bool {
        let ready = self.is_ready(now);
        if ready {
            self.tokens -= n;
        }
        ready
    }

    /// Whether the bucket has refilled to its burst (it remembers nothing
    /// a new bucket would not).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    /// How long until the bucket holds `n` units (zero if it does now;
    /// forever, as an hour, if `n` is more than the burst).
    pub fn time_until(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= n {
            return Duration::ZERO;
        }
        if n > self.burst {
            return Duration::from_secs(3_600);
        }
        Duration::from_secs_f64(((n - self.tokens) / self.rate).min(3_600.0))
    }

    /// When the bucket will be ready again (now, if it is).
    pub fn ready_at(&self) -> Instant {
        if self.tokens > 0.0 {
            return self.at;
        }
        // Just past the moment the debt is paid, so the check then succeeds.
        let wait = (-self.tokens / self.rate).min(3_600.0) + 0.001;
        self.at + Duration::from_secs_f64(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_a_burst_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5.0, 5.0, start).unwrap();
        let taken = (0..10).filter(|_| bucket.try_take(1.0, start)).count();
        assert_eq!(taken, 5, "the burst");
        assert!(!bucket.try_take(1.0, start + Duration::from_millis(100)));
        assert!(bucket.try_take(1.0, start + Duration::from_millis(200)));
        let later = start + Duration::from_secs(60);
        let taken = (0..10).filter(|_| bucket.try_take(1.0, later)).count();
        assert_eq!(taken, 5, "never more than the burst");
    }

    #[test]
    fn debt_delays_but_does_not_block_forever() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1_000.0, 1_000.0, start).unwrap();
        assert!(
            bucket.spend_if_ready(3_000.0, start),
            "larger than the burst"
        );
        assert!(!bucket.is_ready(start + Duration::from_millis(1_000)));
        let ready = bucket.ready_at();
        assert!(ready > start + Duration::from_millis(2_000));
        assert!(ready <= start + Duration::from_millis(2_010));
        assert!(bucket.is_ready(ready));
    }

    #[test]
    fn impossible_limits_are_refused() {
        let now = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(TokenBucket::new(rate, 1.0, now).is_none(), "{rate}");
        }
    }
}
