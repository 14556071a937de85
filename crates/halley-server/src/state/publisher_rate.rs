//! The rate of one trusted publisher: an API key of the HTTP publish API,
//! or a remote Data Adapter.
//!
//! Trusted publishers skip the Metadata Adapter and the per-session publish
//! rate, but every message they send is fanned out to every subscriber of
//! its channel: a leaked API key or a runaway feed would otherwise make the
//! node broadcast without bound. So each has a token bucket of messages
//! (`api-publish-rate`, `adapter-publish-rate`): generous, but finite.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::token_bucket::TokenBucket;

pub struct PublisherRate {
    /// `None`: unlimited (a rate of 0).
    bucket: Option<Mutex<TokenBucket>>,
}

impl PublisherRate {
    /// `rate` messages a second with bursts of `burst` (0 or less: unlimited).
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        PublisherRate {
            bucket: TokenBucket::new(rate, burst.max(rate).max(1.0), now).map(Mutex::new),
        }
    }

    /// Takes `messages` if the rate allows them all now; otherwise takes
    /// nothing and says how long until it would (for `Retry-After`).
    pub fn try_take(&self, messages: usize, now: Instant) -> Result<(), Duration> {
        let Some(bucket) = &self.bucket else {
            return Ok(());
        };
        let mut bucket = bucket.lock();
        let n = messages as f64;
        if bucket.try_take(n, now) {
            Ok(())
        } else {
            Err(bucket.time_until(n, now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_how_long_to_wait() {
        let start = Instant::now();
        let rate = PublisherRate::new(100.0, 100.0, start);
        assert_eq!(rate.try_take(60, start), Ok(()));
        assert_eq!(rate.try_take(40, start), Ok(()));
        // All or nothing: 10 more need 100 ms.
        assert_eq!(rate.try_take(10, start), Err(Duration::from_millis(100)));
        assert_eq!(
            rate.try_take(10, start + Duration::from_millis(100)),
            Ok(())
        );
        assert!(
            PublisherRate::new(0.0, 0.0, start)
                .try_take(1_000_000, start)
                .is_ok(),
            "0: unlimited"
        );
    }
}
