//! Where a session stands in the cluster's log (cluster mode only; a
//! single node leaves it at zero). One part of [`super::Session`].
//!
//! Every message that travels through the cluster's engine carries the
//! log offset Redis gave it (see `broker/redis`), and each node receives
//! them in offset order. A session remembers:
//!
//! - `queued`: the offset of the newest log message queued for it (stored
//!   *after* the push, so a reader may see an older value, never a newer
//!   one: a batch is never said to reach further than it does);
//! - `sent`: everything up to this offset has left in a reply or frame
//!   (written to Redis from time to time, for a node that takes the
//!   session over without the ack extension);
//! - the catch-up of a session taken over from another node: live messages
//!   at or below `floor` were already replayed from the log and are
//!   skipped; while the replay is read, `catching_up` is set and the first
//!   live offset is noted, so the replay stops just before it.
//!
//! With the ack extension, a connect reply's batch number says the offset
//! it reaches (see [`crate::state::unacked::batch_number`]), so the node a
//! client's next connect lands on needs nothing but that number to know
//! what the client has: no per-batch write to Redis on the way out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// The catch-up after a takeover (see the module documentation).
#[derive(Debug, Default)]
struct CatchUp {
    floor: u64,
    catching_up: bool,
    first_live: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct Position {
    queued: AtomicU64,
    sent: AtomicU64,
    /// Whether `catch_up` has anything to say: the fan-out looks at one
    /// atomic, not a lock, for every session that was never taken over.
    guarded: AtomicBool,
    catch_up: Mutex<CatchUp>,
}

impl Position {
    /// A live message at `offset` is about to be queued: `false` if it must
    /// be skipped (already replayed).
    #[inline]
    pub(super) fn admit(&self, offset: u64) -> bool {
        if !self.guarded.load(Ordering::Acquire) {
            return true;
        }
        let mut state = self.catch_up.lock();
        if state.floor != 0 {
            if offset <= state.floor {
                return false;
            }
            if !state.catching_up {
                // Past the replay: nothing at or below the floor can come
                // any more (offsets arrive in order), unless Redis's
                // counter restarted, which must not silence the session.
                state.floor = 0;
                self.guarded.store(false, Ordering::Release);
            }
        }
        if state.catching_up && state.first_live.is_none() {
            state.first_live = Some(offset);
        }
        true
    }

    /// The message at `offset` was queued (called after the push).
    #[inline]
    pub(super) fn queued(&self, offset: u64) {
        self.queued.fetch_max(offset, Ordering::AcqRel);
    }

    #[inline]
    pub(super) fn last_queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Everything queued up to `offset` has left.
    #[inline]
    pub(super) fn sent(&self, offset: u64) {
        self.sent.fetch_max(offset, Ordering::AcqRel);
    }

    pub(super) fn last_sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// A takeover starts: the client has everything up to `acknowledged`;
    /// live messages at or below it are skipped, later ones are queued and
    /// the first of them noted while the log is read.
    pub(super) fn begin_catch_up(&self, acknowledged: u64) {
        let mut state = self.catch_up.lock();
        state.floor = acknowledged;
        state.catching_up = true;
        state.first_live = None;
        self.queued.fetch_max(acknowledged, Ordering::AcqRel);
        self.sent.fetch_max(acknowledged, Ordering::AcqRel);
        self.guarded.store(true, Ordering::Release);
    }

    /// The log was read up to `read_to`: returns what `requeue` returns,
    /// given the first live offset (the replay must stop before it), and
    /// ends the catch-up in the same step, so no live message can slip in
    /// between the replayed ones and the live ones.
    pub(super) fn end_catch_up<R>(
        &self,
        read_to: u64,
        requeue: impl FnOnce(Option<u64>) -> R,
    ) -> R {
        let mut state = self.catch_up.lock();
        let first_live = state.first_live.take();
        let result = requeue(first_live);
        state.catching_up = false;
        match first_live {
            // Everything from the first live message on is queued live.
            Some(_) => {
                state.floor = 0;
                self.guarded.store(false, Ordering::Release);
            }
            // Live messages up to what was read are duplicates.
            None => {
                state.floor = state.floor.max(read_to);
                self.queued.fetch_max(read_to, Ordering::AcqRel);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_up_skips_what_was_replayed_and_keeps_what_came_live() {
        let p = Position::default();
        p.begin_catch_up(10);
        assert!(!p.admit(9), "the client has it");
        assert!(!p.admit(10), "the client has it");
        assert!(p.admit(14), "live during the catch-up");
        assert!(p.admit(15));
        let first_live = p.end_catch_up(15, |first| first);
        assert_eq!(first_live, Some(14), "replay 11..=13, then the live ones");
        assert!(p.admit(16));

        let q = Position::default();
        q.begin_catch_up(10);
        assert_eq!(q.end_catch_up(20, |first| first), None);
        assert!(!q.admit(20), "replayed, arriving late on this node");
        assert!(q.admit(21));
        assert!(
            q.admit(3),
            "past the replay, a restarted counter is not silenced"
        );
    }
}
