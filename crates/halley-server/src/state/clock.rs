//! The one clock a node reads: tokio's monotonic clock (so tests can pause
//! and advance it), and the wall clock derived from it for the few places
//! that tell time to clients (the timesync extension).
//!
//! Everything that ages (sessions, lazy deadlines, history) counts
//! milliseconds since the clock's epoch; nothing below reads
//! `SystemTime::now()` on its own. The wall clock is the system time at
//! start plus the monotonic time since, kept to the nanosecond and rounded
//! down to milliseconds only when read: it agrees with the system clock to
//! the millisecond, and never jumps backwards when NTP steps the system
//! clock (which a client estimating its offset from `ts` would notice).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
    /// The wall clock at `epoch`, since the Unix epoch.
    wall_at_epoch: Duration,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        // The monotonic reading first: the wall clock derived from the two
        // may run a few microseconds ahead of the system's, never behind.
        let epoch = Instant::now();
        let wall_at_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            epoch,
            wall_at_epoch,
        }
    }

    /// Milliseconds since the clock started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The monotonic instant `ms` milliseconds after the clock started.
    pub fn instant_at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Milliseconds of `instant` since the clock started.
    pub fn ms_at(&self, instant: Instant) -> u64 {
        instant.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Wall-clock milliseconds since the Unix epoch, now.
    pub fn wall_ms(&self) -> i64 {
        self.wall_ms_at(Instant::now())
    }

    /// Wall-clock milliseconds since the Unix epoch at `instant`: for a
    /// caller that has read the clock already (each reading is a
    /// `clock_gettime`, ~2% of a long-polling round trip's CPU at ~13 per
    /// request).
    pub fn wall_ms_at(&self, instant: Instant) -> i64 {
        (self.wall_at_epoch + instant.saturating_duration_since(self.epoch)).as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn moves_with_tokios_clock() {
        let clock = Clock::start();
        let wall = clock.wall_at_epoch;
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now_ms(), 1_500);
        assert_eq!(
            clock.wall_ms(),
            (wall + Duration::from_millis(1_500)).as_millis() as i64
        );
        assert_eq!(clock.ms_at(clock.instant_at(700)), 700);
        let at = clock.instant_at(700);
        assert_eq!(
            clock.wall_ms_at(at),
            (wall + Duration::from_millis(700)).as_millis() as i64
        );
    }

    /// The wall clock agrees with the system's to the millisecond: rounded
    /// down once, not once for the start and once for the time since
    /// (which put timesync's `ts` up to 2 ms before a client's `tc`).
    #[test]
    fn the_wall_clock_is_never_behind_the_system_clock_by_a_millisecond() {
        let clock = Clock::start();
        // Long enough for the time since start to take every sub-millisecond
        // fraction, so a clock that rounds twice is caught lagging.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(5) {
            let before = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let wall = clock.wall_ms();
            assert!(wall >= before, "wall {wall} < system {before}");
        }
    }
}
