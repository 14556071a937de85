//! A session's rates (quality of service): updates of rate-limited
//! channels held for their turn, and the bucket its publishes draw from.
//! Both boxed and created on first use, so a session without QoS pays two
//! pointers. One part of [`super::Session`].

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::state::outbox::OutboxLimits;
use crate::state::throttle::{Limit, Offered, Release, Throttle};
use crate::state::token_bucket::TokenBucket;

#[derive(Default)]
pub(super) struct Rates {
    /// Updates of rate-limited channels waiting for their turn.
    throttle: Mutex<Option<Box<Throttle>>>,
    /// Publishes this session may make (when a publish rate applies).
    publishes: Mutex<Option<Box<TokenBucket>>>,
}

impl Rates {
    pub(super) fn offer(
        &self,
        slot: &str,
        delivery: Bytes,
        limit: Limit,
        release: Release,
        limits: OutboxLimits,
        now: Instant,
    ) -> Offered {
        self.throttle
            .lock()
            .get_or_insert_with(Box::default)
            .offer(slot, delivery, limit, release, limits, now)
    }

    pub(super) fn release(&self, now: Instant) -> (Vec<(Bytes, Release)>, Option<Instant>) {
        let mut throttle = self.throttle.lock();
        let Some(state) = throttle.as_mut() else {
            return (Vec::new(), None);
        };
        let due = state.due(now);
        if due.1.is_none() && state.is_empty() {
            *throttle = None;
        }
        due
    }

    pub(super) fn clear(&self) {
        if let Some(state) = self.throttle.lock().as_mut() {
            state.clear();
        }
    }

    pub(super) fn held(&self) -> usize {
        self.throttle.lock().as_ref().map_or(0, |t| t.held())
    }

    pub(super) fn try_publish(&self, per_second: f64, now: Instant) -> bool {
        let mut bucket = self.publishes.lock();
        if bucket.is_none() {
            *bucket = TokenBucket::new(per_second, per_second, now).map(Box::new);
        }
        bucket
            .as_mut()
            .is_none_or(|bucket| bucket.try_take(1.0, now))
    }
}
