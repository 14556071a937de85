//! Warnings an attacker can trigger, logged at a bounded rate.
//!
//! A limit hit by a flood (thousands of refused connections or handshakes a
//! second) must not become a flood of log lines: [`LogThrottle::allow`]
//! lets one warning through per period and counts the others, and the next
//! warning that goes through says how many were suppressed.
//!
//! Every warning (and per-request `info`) a remote client can cause goes
//! through one: limit hits ([`super::limits`]), a session's outbox
//! overflowing, a failing service, a denied handshake, the webhook
//! backend's failures, a remote adapter's port failing to accept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// How often one limit may log, at most.
pub const PERIOD: Duration = Duration::from_secs(5);

pub struct LogThrottle {
    /// When a warning last went through.
    last: Mutex<Option<Instant>>,
    /// Warnings held back since then.
    suppressed: AtomicU64,
}

impl LogThrottle {
    /// A throttle that lets the first warning through; `const`, so a
    /// warning without a node at hand can keep one in a `static`
    /// (process-wide: every node of the process shares it).
    pub const fn new() -> Self {
        LogThrottle {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether to log now: `Some(n)` with the number of warnings suppressed
    /// since the last one logged, or `None` (this one is counted instead).
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock();
        if last.is_some_and(|at| now < at + PERIOD) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_period_and_the_count_of_the_others() {
        let start = Instant::now();
        let throttle = LogThrottle::default();
        assert_eq!(throttle.allow(start), Some(0));
        for i in 1..1_000 {
            assert_eq!(throttle.allow(start + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.allow(start + PERIOD), Some(999));
        assert_eq!(throttle.allow(start + PERIOD), None);
    }
}
