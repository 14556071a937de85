//! Connection cuts for a soak: every `every`, a `fraction` of the users
//! drop their connection abruptly (no `/meta/disconnect`, no close frame)
//! and reconnect as a real client does after a network failure
//! ([`halley_client::Client::cut`]: back off, connect again on a new
//! connection, handshake and subscribe again if the server lost the
//! session).
//!
//! Cut `k` (1, 2, ...) happens `k × every` after the measuring window
//! opens, while the window lasts. Each worker cuts its own users in turn:
//! cut `k` takes the next `fraction × users` of them, wrapping around, so
//! over `1 / fraction` cuts every user has been cut once, and no user is
//! cut twice before every other has been cut once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CutSchedule {
    /// Time between two cuts.
    pub every: Duration,
    /// Share of the users cut each time, in `(0, 1]`.
    pub fraction: f64,
}

impl CutSchedule {
    pub fn validate(&self) -> Result<(), String> {
        if self.every.is_zero() {
            return Err("cut-every must be at least 1 ms".into());
        }
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(format!(
                "cut-fraction must be above 0 and at most 1, not {}",
                self.fraction
            ));
        }
        Ok(())
    }

    /// When cut `k` (from 1) happens, µs since the epoch, for a window
    /// opening at `from_us`; `None` once that is past `to_us`.
    pub fn at_us(&self, k: u64, from_us: u64, to_us: u64) -> Option<u64> {
        let at = from_us + k * self.every.as_micros() as u64;
        (k >= 1 && at < to_us).then_some(at)
    }

    /// How many of `users` each cut takes: at least one, at most all.
    pub fn per_cut(&self, users: usize) -> usize {
        ((users as f64 * self.fraction).round() as usize).clamp(1, users.max(1))
    }

    /// The users (indices into a worker's `users`) cut `k` (from 1) takes.
    pub fn users(&self, k: u64, users: usize) -> impl Iterator<Item = usize> {
        let n = self.per_cut(users);
        let first = (k.saturating_sub(1) as usize).wrapping_mul(n);
        (0..n.min(users)).map(move |i| (first + i) % users)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn schedule(every_s: u64, fraction: f64) -> CutSchedule {
        CutSchedule {
            every: Duration::from_secs(every_s),
            fraction,
        }
    }

    #[test]
    fn cuts_happen_every_period_inside_the_window_only() {
        let s = schedule(60, 0.1);
        let from = 1_000_000;
        let to = from + 180_000_000; // three minutes
        assert_eq!(s.at_us(0, from, to), None, "not at the window's start");
        assert_eq!(s.at_us(1, from, to), Some(from + 60_000_000));
        assert_eq!(s.at_us(2, from, to), Some(from + 120_000_000));
        assert_eq!(s.at_us(3, from, to), None, "not at its end");
    }

    #[test]
    fn every_user_is_cut_once_before_any_is_cut_twice() {
        let s = schedule(60, 0.1);
        let users = 1000;
        assert_eq!(s.per_cut(users), 100);
        let mut times_cut = BTreeMap::new();
        for k in 1..=10 {
            let cut: Vec<usize> = s.users(k, users).collect();
            assert_eq!(cut.len(), 100);
            for user in cut {
                *times_cut.entry(user).or_insert(0) += 1;
            }
        }
        assert_eq!(times_cut.len(), users);
        assert!(times_cut.values().all(|&n| n == 1));
        // The eleventh cut starts over with the first users.
        assert_eq!(s.users(11, users).next(), Some(0));
    }

    #[test]
    fn cuts_wrap_around_a_slice_that_the_fraction_does_not_divide() {
        let s = schedule(1, 0.3);
        assert_eq!(s.per_cut(10), 3);
        assert_eq!(s.users(4, 10).collect::<Vec<_>>(), [9, 0, 1]);
        // A tiny slice still has someone cut; a fraction of 1 cuts everyone once.
        assert_eq!(schedule(1, 0.01).users(1, 5).collect::<Vec<_>>(), [0]);
        assert_eq!(
            schedule(1, 1.0).users(2, 4).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(schedule(1, 0.5).users(1, 0).count(), 0, "no users, no cut");
    }

    #[test]
    fn a_schedule_needs_a_period_and_a_share() {
        assert!(schedule(60, 0.1).validate().is_ok());
        assert!(schedule(0, 0.1).validate().is_err());
        assert!(schedule(60, 0.0).validate().is_err());
        assert!(schedule(60, 1.5).validate().is_err());
        assert!(schedule(60, f64::NAN).validate().is_err());
    }
}
