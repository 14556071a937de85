//! What a session is owed: its bounded outbox, the batches sent but not
//! acknowledged (ack extension), and the bandwidth bucket deliveries leave
//! through. One part of [`super::Session`].
//!
//! Lock order inside: `unacked`, then `outbox`; `bandwidth` is taken with
//! `outbox` held, never the other way round.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::state::outbox::{Outbox, OutboxLimits, OverflowPolicy, Pushed};
use crate::state::token_bucket::TokenBucket;
use crate::state::unacked::UnackedBatches;

pub(super) struct Delivery {
    outbox: Mutex<Outbox>,
    /// The outbox's limits, readable without its lock (they bound held
    /// QoS updates and unacknowledged batches too).
    limits: OutboxLimits,
    /// Set when the handshake negotiated the ack extension: deliveries then
    /// travel only in connect replies, numbered, and are kept until acknowledged.
    unacked: Mutex<Option<UnackedBatches>>,
    /// Bytes of deliveries that may leave the outbox (when a bandwidth applies).
    bandwidth: Mutex<Option<Box<TokenBucket>>>,
    /// Set once the outbox has overflowed, so that is logged once, not per message.
    overflow_logged: AtomicBool,
    /// Set when an overflow under the `disconnect` policy ends the session.
    overflowed: AtomicBool,
}

impl Delivery {
    #[inline]
    pub(super) fn new(limits: OutboxLimits) -> Self {
        Delivery {
            outbox: Mutex::new(Outbox::new(limits)),
            limits,
            unacked: Mutex::new(None),
            bandwidth: Mutex::new(None),
            overflow_logged: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
        }
    }

    #[inline]
    pub(super) fn limits(&self) -> OutboxLimits {
        self.limits
    }

    /// Queues one delivery, eager or lazy (due at `lazy_deadline_ms`).
    #[inline]
    pub(super) fn push(
        &self,
        delivery: Bytes,
        policy: OverflowPolicy,
        lazy_deadline_ms: Option<u64>,
    ) -> Pushed {
        let mut outbox = self.outbox.lock();
        let pushed = outbox.push(delivery, policy);
        match lazy_deadline_ms {
            Some(deadline) => outbox.mark_lazy(deadline),
            None => outbox.mark_eager(),
        }
        pushed
    }

    /// `true` the first time only: the caller logs the overflow once.
    #[inline]
    pub(super) fn first_overflow(&self) -> bool {
        !self.overflow_logged.swap(true, Ordering::Relaxed)
    }

    #[inline]
    pub(super) fn mark_overflowed(&self) {
        self.overflowed.store(true, Ordering::Release);
    }

    #[inline]
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Deliveries and bytes queued (for the overflow log line).
    #[inline]
    pub(super) fn queued(&self) -> (usize, usize) {
        let outbox = self.outbox.lock();
        (outbox.len(), outbox.bytes())
    }

    /// Takes what may leave now (see [`Delivery::take_within`]).
    #[inline]
    pub(super) fn take(&self, max_bandwidth: Option<u64>, now: Instant) -> VecDeque<Bytes> {
        let mut outbox = self.outbox.lock();
        self.take_within(&mut outbox, max_bandwidth, now)
    }

    /// The bandwidth is applied where deliveries leave the outbox for the
    /// wire (a connect reply, a piggyback, a WebSocket frame): that is what
    /// a client receives per second, and what waits stays under the
    /// outbox's limits and overflow policy. The bucket may go into debt for
    /// a delivery larger than the budget, so no delivery is stuck forever.
    #[inline]
    fn take_within(
        &self,
        outbox: &mut Outbox,
        max_bandwidth: Option<u64>,
        now: Instant,
    ) -> VecDeque<Bytes> {
        let Some(rate) = max_bandwidth else {
            return outbox.drain();
        };
        let mut bucket = self.bandwidth.lock();
        if bucket.is_none() {
            *bucket = TokenBucket::new(rate as f64, rate as f64, now).map(Box::new);
        }
        match bucket.as_mut() {
            Some(bucket) => outbox.drain_while(|d| bucket.spend_if_ready(d.len() as f64, now)),
            None => outbox.drain(),
        }
    }

    /// Whether queued deliveries are due (see [`Outbox::is_due`]) and the
    /// bandwidth lets them leave.
    #[inline]
    pub(super) fn is_due(&self, now_ms: u64, max_bandwidth: Option<u64>, now: Instant) -> bool {
        self.outbox.lock().is_due(now_ms) && self.bandwidth_ready(max_bandwidth, now)
    }

    #[inline]
    fn bandwidth_ready(&self, max_bandwidth: Option<u64>, now: Instant) -> bool {
        if max_bandwidth.is_none() {
            return true;
        }
        self.bandwidth
            .lock()
            .as_mut()
            .is_none_or(|bucket| bucket.is_ready(now))
    }

    /// When deliveries held back by the bandwidth may leave (`None`:
    /// nothing is held back by it).
    #[inline]
    pub(super) fn bandwidth_ready_at(
        &self,
        max_bandwidth: Option<u64>,
        now: Instant,
    ) -> Option<Instant> {
        max_bandwidth?;
        let ready = self
            .bandwidth
            .lock()
            .as_mut()
            .and_then(|bucket| (!bucket.is_ready(now)).then(|| bucket.ready_at()))?;
        (!self.outbox.lock().is_empty()).then_some(ready)
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.outbox.lock().is_empty()
    }

    #[inline]
    pub(super) fn lazy_deadline_ms(&self) -> Option<u64> {
        self.outbox.lock().lazy_deadline_ms()
    }

    #[inline]
    pub(super) fn dropped(&self) -> u64 {
        self.outbox.lock().dropped()
    }

    #[inline]
    pub(super) fn enable_ack(&self) {
        *self.unacked.lock() = Some(UnackedBatches::default());
    }

    #[inline]
    pub(super) fn ack_enabled(&self) -> bool {
        self.unacked.lock().is_some()
    }

    /// With the ack extension, takes back the batches after `acknowledged`
    /// (a connect without a number: all were received) to the front of the
    /// outbox, then runs `then` still under the same lock, so no connect
    /// reply can be taken in between. Returns `then`'s result and whether
    /// the re-sent batches did not fit under the `disconnect` policy.
    #[inline]
    pub(super) fn acknowledge<R>(
        &self,
        acknowledged: Option<u64>,
        policy: OverflowPolicy,
        then: impl FnOnce() -> R,
    ) -> (R, bool) {
        let mut unacked = self.unacked.lock();
        let mut refused = false;
        if let Some(batches) = unacked.as_mut() {
            // A connect without a batch number comes from a client that
            // does not keep count: what it was sent counts as received.
            let batch = acknowledged.unwrap_or(batches.last_batch());
            let lost = batches.acknowledge(batch);
            if !lost.is_empty() && !self.outbox.lock().requeue_front(lost, policy) {
                refused = true;
            }
        }
        (then(), refused)
    }

    /// The deliveries of a connect reply, if `is_current()` says the
    /// connect is still the latest (asked under the `unacked` lock that
    /// [`Delivery::acknowledge`] holds while a newer connect registers),
    /// with their batch number when acks are on. Returns also whether the
    /// unacknowledged batches had to be trimmed to the limit.
    /// On a cluster node, `reached` is asked, under the outbox lock and
    /// with whether the outbox was emptied, for the log offset the batch
    /// reaches (written into its number).
    #[inline]
    pub(super) fn take_for_connect_reply(
        &self,
        is_current: impl FnOnce() -> bool,
        max_bandwidth: Option<u64>,
        now: Instant,
        reached: Option<&dyn Fn(bool) -> u64>,
    ) -> (VecDeque<Bytes>, Option<u64>, bool) {
        let mut unacked = self.unacked.lock();
        let (deliveries, offset) = if is_current() {
            let mut outbox = self.outbox.lock();
            let taken = self.take_within(&mut outbox, max_bandwidth, now);
            (taken, reached.map(|reached| reached(outbox.is_empty())))
        } else {
            (VecDeque::new(), reached.map(|reached| reached(false)))
        };
        let mut trimmed = false;
        let batch = unacked.as_mut().map(|batches| {
            // Cloning a `Bytes` is a reference count, not a copy.
            let kept: Vec<Bytes> = deliveries.iter().cloned().collect();
            let batch = batches.record_at(&kept, offset);
            // Sent but unacknowledged deliveries count against the same
            // limit as queued ones: a client that never acknowledges costs
            // bounded memory (it loses the oldest, as with drop-oldest).
            trimmed = batches.trim(self.limits.max_messages) > 0;
            batch
        });
        (deliveries, batch, trimmed)
    }

    /// The batch number of a reply that carries nothing, with acks
    /// (`offset`: the log offset it reaches, on a cluster node).
    #[inline]
    pub(super) fn number_empty_reply(&self, offset: Option<u64>) -> Option<u64> {
        self.unacked
            .lock()
            .as_mut()
            .map(|batches| batches.record_at(&[], offset))
    }

    /// With acks, numbers continue after `batch` (a taken-over session).
    pub(super) fn continue_after(&self, batch: u64) {
        if let Some(batches) = self.unacked.lock().as_mut() {
            batches.continue_after(batch);
        }
    }

    /// Puts `deliveries` in front of what is queued (a taken-over
    /// session's replay); `false` if they did not fit under `disconnect`.
    pub(super) fn requeue_front(&self, deliveries: Vec<Bytes>, policy: OverflowPolicy) -> bool {
        self.outbox.lock().requeue_front(deliveries, policy)
    }

    /// Whether the outbox is empty, asked with `then` under its lock.
    pub(super) fn take_with<R>(
        &self,
        max_bandwidth: Option<u64>,
        now: Instant,
        then: impl FnOnce(bool) -> R,
    ) -> (VecDeque<Bytes>, R) {
        let mut outbox = self.outbox.lock();
        let taken = self.take_within(&mut outbox, max_bandwidth, now);
        let r = then(outbox.is_empty());
        (taken, r)
    }
}
