//! The one clock a node reads: tokio's monotonic clock (so tests can pause
//! and advance it), and the wall clock derived from it for the few places
//! that tell time to clients (the timesync extension).
//!
//! Everything that ages (sessions, lazy deadlines, history) counts
//! milliseconds since the clock's epoch; nothing below reads
//! `SystemTime::now()` on its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
    /// The wall clock at `epoch`, in milliseconds since the Unix epoch.
    wall_at_epoch_ms: i64,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock {
            epoch: Instant::now(),
            wall_at_epoch_ms: wall,
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
        self.wall_at_epoch_ms + self.now_ms() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn moves_with_tokios_clock() {
        let clock = Clock::start();
        let wall = clock.wall_ms();
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now_ms(), 1_500);
        assert_eq!(clock.wall_ms(), wall + 1_500);
        assert_eq!(clock.ms_at(clock.instant_at(700)), 700);
    }
}
