//! The server-wide "we are stopping" signal, at once or paced (a drain).
//!
//! At once ([`Shutdown::trigger`]): held connects listen to it so that, on
//! SIGINT (or a second SIGTERM), each one is answered at once with
//! `reconnect: retry` instead of being cut.
//!
//! Paced (a drain, see [`crate::server`]): [`Shutdown::begin_drain`] closes
//! the HTTP connections as their responses end (so a client's next request
//! opens a new one, which a load balancer sends to another node); then the
//! server raises a bound step by step ([`Shutdown::ask_below`]) over the
//! drain timeout. Each session has a fixed slot, a hash of its clientId;
//! once the bound passes it, the session is asked to leave
//! ([`Shutdown::asks_to_leave`]): its held connect is answered as at
//! shutdown and its WebSocket closed, so the clients leave spread over the
//! window rather than all at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Shutdown {
    started: AtomicBool,
    notify: Notify,
    /// Set by [`Shutdown::begin_drain`].
    draining: AtomicBool,
    drain_notify: Notify,
    /// Sessions whose slot is below it are asked to leave (0: none).
    leave_below: AtomicU64,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.started.store(true, Ordering::Release);
        self.notify.notify_waiters();
        self.drain_notify.notify_waiters();
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Resolves once shutdown has begun (immediately if it already has).
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_started() {
            return;
        }
        notified.await;
    }

    /// The drain moves clients away from now on: HTTP connections close
    /// after their response, and sessions leave as their slot comes.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.drain_notify.notify_waiters();
    }

    /// Whether clients are being moved away (a drain or a shutdown).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.is_started()
    }

    /// Resolves once a drain or a shutdown has begun.
    pub async fn wait_draining(&self) {
        let notified = self.drain_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_draining() {
            return;
        }
        notified.await;
    }

    /// Asks the sessions whose slot is below `bound` to leave
    /// (`u64::MAX`: all of them). Returns the previous bound.
    pub fn ask_below(&self, bound: u64) -> u64 {
        self.leave_below.fetch_max(bound, Ordering::AcqRel)
    }

    /// Whether the session `client_id` must be answered now and sent away:
    /// the server is shutting down, or the drain has reached its slot.
    #[inline]
    pub fn asks_to_leave(&self, client_id: &str) -> bool {
        if self.is_started() {
            return true;
        }
        match self.leave_below.load(Ordering::Acquire) {
            0 => false,
            u64::MAX => true,
            bound => slot(client_id) < bound,
        }
    }
}

/// A session's place in the drain's order: a hash of its clientId spread
/// evenly over `u64` (FNV-1a, then SplitMix64's finalizer, so that ids
/// differing in their last characters land far apart).
pub fn slot(client_id: &str) -> u64 {
    let mut h = client_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_asks_sessions_to_leave_as_the_bound_passes_their_slot() {
        let shutdown = Shutdown::default();
        let ids: Vec<String> = (0..100).map(|i| format!("client-{i}")).collect();
        let asked = |s: &Shutdown| ids.iter().filter(|id| s.asks_to_leave(id)).count();
        assert_eq!(asked(&shutdown), 0);
        shutdown.ask_below(u64::MAX / 2);
        let half = asked(&shutdown);
        assert!((20..80).contains(&half), "about half: {half}");
        assert_eq!(shutdown.ask_below(u64::MAX / 4), u64::MAX / 2);
        assert_eq!(asked(&shutdown), half, "the bound never goes back");
        shutdown.ask_below(u64::MAX);
        assert_eq!(asked(&shutdown), 100);
    }

    #[test]
    fn shutdown_asks_everyone_and_counts_as_draining() {
        let shutdown = Shutdown::default();
        assert!(!shutdown.is_draining());
        shutdown.trigger();
        assert!(shutdown.is_draining());
        assert!(shutdown.asks_to_leave("anyone"));
    }
}
