//! A session's queue of deliveries waiting to be written.
//!
//! Every entry is a [`Bytes`] shared with the other subscribers of the same
//! broadcast (encoded once by the publisher). The queue is bounded both in
//! messages and in bytes, so one client that stops reading costs at most
//! `max_messages` entries or `max_bytes` of payload, whichever comes first.
//! What happens to a delivery that does not fit is the channel's
//! [`OverflowPolicy`]: by default the oldest deliveries are dropped (a live
//! feed is worth more than stale history); a channel may instead drop the
//! newest, or disconnect the slow client so it re-handshakes.
//!
//! The outbox also keeps each delivery's queuing time, and counts what
//! passes through it in the process's metrics ([`crate::metrics`]): the
//! deliveries taken to be written and their latency, its depth, and what
//! it dropped (overflow, or still queued when its session ended).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::metrics::{metrics, DropReason};

/// Limits of one outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

/// A bounded FIFO of encoded deliveries.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Bytes>,
    /// When each queued delivery was queued (its publish accepted), in
    /// step with `queue`: the delivery latency metric is measured from it.
    queued_at: VecDeque<Instant>,
    bytes: usize,
    limits: OutboxLimits,
    /// Deliveries dropped because the outbox was full, since the session began.
    dropped: u64,
    /// Whether a non-lazy delivery is queued (it must be written at once).
    eager: bool,
    /// When the oldest queued lazy delivery must be written at the latest
    /// (ms on the sessions' clock); `None` when no lazy one waits.
    lazy_deadline_ms: Option<u64>,
}

/// What to do with a delivery that does not fit in a full outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Drop the oldest queued deliveries to make room.
    #[default]
    DropOldest,
    /// Keep what is queued; drop the new delivery.
    DropNewest,
    /// Keep what is queued, drop the new delivery, and end the session: the
    /// client is told to re-handshake (with replay it then loses nothing).
    Disconnect,
}

impl std::str::FromStr for OverflowPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop-oldest" => Ok(OverflowPolicy::DropOldest),
            "drop-newest" => Ok(OverflowPolicy::DropNewest),
            "disconnect" => Ok(OverflowPolicy::Disconnect),
            other => Err(format!(
                "unknown overflow policy {other:?}: use drop-oldest, drop-newest or disconnect"
            )),
        }
    }
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued after dropping this many older deliveries.
    QueuedDroppingOldest(usize),
    /// Not queued: too large on its own, or the outbox was full and the
    /// policy keeps what is queued.
    Rejected,
}

impl Outbox {
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox {
            queue: VecDeque::new(),
            queued_at: VecDeque::new(),
            bytes: 0,
            limits,
            dropped: 0,
            eager: false,
            lazy_deadline_ms: None,
        }
    }

    /// Queues a delivery, applying `policy` when it does not fit.
    pub fn push(&mut self, delivery: Bytes, policy: OverflowPolicy) -> Pushed {
        let fits = self.queue.len() < self.limits.max_messages
            && self.bytes + delivery.len() <= self.limits.max_bytes;
        if delivery.len() > self.limits.max_bytes
            || self.limits.max_messages == 0
            || (!fits && policy != OverflowPolicy::DropOldest)
        {
            self.dropped += 1;
            metrics().dropped.get(DropReason::Overflow).inc();
            return Pushed::Rejected;
        }
        let mut evicted = 0;
        while self.queue.len() >= self.limits.max_messages
            || self.bytes + delivery.len() > self.limits.max_bytes
        {
            let oldest = self
                .queue
                .pop_front()
                .expect("over a limit means not empty");
            self.queued_at.pop_front();
            self.bytes -= oldest.len();
            evicted += 1;
        }
        self.bytes += delivery.len();
        self.queue.push_back(delivery);
        self.queued_at.push_back(crate::metrics::queued_at());
        self.dropped += evicted as u64;
        if evicted == 0 {
            metrics().outbox_depth.inc();
            Pushed::Queued
        } else {
            // Each evicted one left the depth; the new one entered it.
            metrics().outbox_depth.dec_by(evicted as i64 - 1);
            metrics()
                .dropped
                .get(DropReason::Overflow)
                .inc_by(evicted as u64);
            Pushed::QueuedDroppingOldest(evicted)
        }
    }

    /// Puts deliveries back in front of the queue, in the given order
    /// (unacknowledged ones being re-sent before anything newer). When they
    /// do not all fit, `policy` decides: `drop-oldest` drops from the front
    /// (the re-sent ones first), `drop-newest` drops from the back, and
    /// `disconnect` changes nothing and returns `false`: the caller ends the
    /// session.
    pub fn requeue_front(&mut self, deliveries: Vec<Bytes>, policy: OverflowPolicy) -> bool {
        let added_bytes: usize = deliveries.iter().map(Bytes::len).sum();
        let fits = self.queue.len() + deliveries.len() <= self.limits.max_messages
            && self.bytes + added_bytes <= self.limits.max_bytes;
        if !fits && policy == OverflowPolicy::Disconnect {
            return false;
        }
        // Re-sent deliveries are late already: never lazy. Their latency
        // counts again from now (they were counted when first written).
        self.eager |= !deliveries.is_empty();
        let now = Instant::now();
        metrics().outbox_depth.inc_by(deliveries.len() as i64);
        for delivery in deliveries.into_iter().rev() {
            self.bytes += delivery.len();
            self.queue.push_front(delivery);
            self.queued_at.push_front(now);
        }
        while self.queue.len() > self.limits.max_messages || self.bytes > self.limits.max_bytes {
            let dropped = match policy {
                OverflowPolicy::DropNewest => {
                    self.queued_at.pop_back();
                    self.queue.pop_back()
                }
                _ => {
                    self.queued_at.pop_front();
                    self.queue.pop_front()
                }
            };
            let dropped = dropped.expect("over a limit means not empty");
            self.bytes -= dropped.len();
            self.dropped += 1;
            metrics().outbox_depth.dec();
            metrics().dropped.get(DropReason::Overflow).inc();
        }
        true
    }

    pub fn limits(&self) -> OutboxLimits {
        self.limits
    }

    /// Takes everything queued, oldest first, to be written now.
    pub fn drain(&mut self) -> VecDeque<Bytes> {
        self.bytes = 0;
        self.eager = false;
        self.lazy_deadline_ms = None;
        metrics().outbox_depth.dec_by(self.queue.len() as i64);
        metrics().written(self.queued_at.drain(..));
        std::mem::take(&mut self.queue)
    }

    /// Takes queued deliveries from the front, oldest first, while `take`
    /// accepts them (a bandwidth budget); the rest stay queued.
    pub fn drain_while(&mut self, mut take: impl FnMut(&Bytes) -> bool) -> VecDeque<Bytes> {
        let mut taken = VecDeque::new();
        while let Some(front) = self.queue.front() {
            if !take(front) {
                break;
            }
            let front = self.queue.pop_front().expect("just seen");
            self.bytes -= front.len();
            taken.push_back(front);
        }
        metrics().outbox_depth.dec_by(taken.len() as i64);
        metrics().written(self.queued_at.drain(..taken.len()));
        if self.queue.is_empty() {
            self.eager = false;
            self.lazy_deadline_ms = None;
        }
        taken
    }

    /// Records that the delivery just pushed is lazy: it may wait until
    /// `deadline_ms` for a flush that happens anyway.
    pub fn mark_lazy(&mut self, deadline_ms: u64) {
        self.lazy_deadline_ms = Some(
            self.lazy_deadline_ms
                .map_or(deadline_ms, |d| d.min(deadline_ms)),
        );
    }

    /// Records that the delivery just pushed must be written at once.
    pub fn mark_eager(&mut self) {
        self.eager = true;
    }

    /// Whether something queued must be written now: a non-lazy delivery,
    /// or a lazy one whose deadline has come.
    pub fn is_due(&self, now_ms: u64) -> bool {
        !self.queue.is_empty()
            && (self.eager
                || self
                    .lazy_deadline_ms
                    .is_none_or(|deadline| now_ms >= deadline))
    }

    /// When the queued lazy deliveries fall due (if nothing eager is queued).
    pub fn lazy_deadline_ms(&self) -> Option<u64> {
        if self.eager || self.queue.is_empty() {
            None
        } else {
            self.lazy_deadline_ms
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// A session's end drops what it had queued: counted, and out of the depth.
impl Drop for Outbox {
    fn drop(&mut self) {
        let left = self.queue.len();
        if left > 0 {
            metrics().outbox_depth.dec_by(left as i64);
            metrics()
                .dropped
                .get(DropReason::SessionEnd)
                .inc_by(left as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Outbox {
        /// The default policy, as most tests want.
        fn push_oldest(&mut self, delivery: Bytes) -> Pushed {
            self.push(delivery, OverflowPolicy::DropOldest)
        }
    }

    #[test]
    fn drop_newest_and_disconnect_keep_what_is_queued() {
        for policy in [OverflowPolicy::DropNewest, OverflowPolicy::Disconnect] {
            let mut o = outbox(2, 100);
            o.push(Bytes::from_static(b"1"), policy);
            o.push(Bytes::from_static(b"2"), policy);
            assert_eq!(o.push(Bytes::from_static(b"3"), policy), Pushed::Rejected);
            assert_eq!(
                o.drain().into_iter().collect::<Vec<_>>(),
                [&b"1"[..], &b"2"[..]]
            );
            assert_eq!(o.dropped(), 1);
        }
        assert_eq!("drop-newest".parse(), Ok(OverflowPolicy::DropNewest));
        assert!("drop-all".parse::<OverflowPolicy>().is_err());
    }

    fn outbox(max_messages: usize, max_bytes: usize) -> Outbox {
        Outbox::new(OutboxLimits {
            max_messages,
            max_bytes,
        })
    }

    #[test]
    fn keeps_order_and_counts_bytes() {
        let mut o = outbox(10, 100);
        assert_eq!(o.push_oldest(Bytes::from_static(b"ab")), Pushed::Queued);
        assert_eq!(o.push_oldest(Bytes::from_static(b"cde")), Pushed::Queued);
        assert_eq!(o.bytes(), 5);
        let drained: Vec<_> = o.drain().into_iter().collect();
        assert_eq!(drained, [&b"ab"[..], &b"cde"[..]]);
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn drain_while_takes_a_prefix_and_keeps_the_rest_due() {
        let mut o = outbox(10, 100);
        for d in [&b"aa"[..], b"bb", b"cc"] {
            o.push_oldest(Bytes::copy_from_slice(d));
        }
        let mut budget = 3;
        let taken = o.drain_while(|d| {
            let ok = budget > 0;
            budget -= d.len() as i32;
            ok
        });
        assert_eq!(taken.into_iter().collect::<Vec<_>>(), [&b"aa"[..], b"bb"]);
        assert_eq!((o.len(), o.bytes()), (1, 2));
        assert!(o.is_due(0));
    }

    #[test]
    fn drops_oldest_when_full_by_count() {
        let mut o = outbox(2, 100);
        o.push_oldest(Bytes::from_static(b"1"));
        o.push_oldest(Bytes::from_static(b"2"));
        assert_eq!(
            o.push_oldest(Bytes::from_static(b"3")),
            Pushed::QueuedDroppingOldest(1)
        );
        assert_eq!(
            o.drain().into_iter().collect::<Vec<_>>(),
            [&b"2"[..], &b"3"[..]]
        );
        assert_eq!(o.dropped(), 1);
    }

    #[test]
    fn lazy_deliveries_fall_due_at_their_deadline_eager_ones_at_once() {
        let mut o = outbox(10, 100);
        assert!(!o.is_due(0), "nothing queued");
        o.push_oldest(Bytes::from_static(b"lazy"));
        o.mark_lazy(5_000);
        o.push_oldest(Bytes::from_static(b"lazier"));
        o.mark_lazy(9_000);
        assert!(!o.is_due(4_999));
        assert_eq!(o.lazy_deadline_ms(), Some(5_000), "the earliest deadline");
        assert!(o.is_due(5_000));
        o.push_oldest(Bytes::from_static(b"eager"));
        o.mark_eager();
        assert!(o.is_due(0));
        assert_eq!(o.lazy_deadline_ms(), None);
        o.drain();
        o.push_oldest(Bytes::from_static(b"plain"));
        assert!(o.is_due(0), "unmarked deliveries are due");
    }

    #[test]
    fn requeued_deliveries_come_first_in_order() {
        let mut o = outbox(3, 100);
        o.push_oldest(Bytes::from_static(b"new"));
        o.requeue_front(
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            OverflowPolicy::DropOldest,
        );
        assert_eq!(
            o.drain().into_iter().collect::<Vec<_>>(),
            [&b"a"[..], &b"b"[..], &b"new"[..]]
        );
        let resent = || {
            vec![
                Bytes::from_static(b"1"),
                Bytes::from_static(b"2"),
                Bytes::from_static(b"3"),
            ]
        };
        o.push_oldest(Bytes::from_static(b"x"));
        assert!(o.requeue_front(resent(), OverflowPolicy::DropOldest));
        assert_eq!(o.len(), 3, "limits hold");
        let drained: Vec<_> = o.drain().into_iter().collect();
        assert_eq!(drained, [&b"2"[..], &b"3"[..], &b"x"[..]]);
        o.push_oldest(Bytes::from_static(b"x"));
        assert!(o.requeue_front(resent(), OverflowPolicy::DropNewest));
        let drained: Vec<_> = o.drain().into_iter().collect();
        assert_eq!(drained, [&b"1"[..], &b"2"[..], &b"3"[..]]);
        o.push_oldest(Bytes::from_static(b"x"));
        assert!(
            !o.requeue_front(resent(), OverflowPolicy::Disconnect),
            "does not fit"
        );
        assert_eq!(o.len(), 1, "unchanged");
    }

    #[test]
    fn drops_oldest_when_full_by_bytes_and_rejects_giants() {
        let mut o = outbox(100, 5);
        o.push_oldest(Bytes::from_static(b"aaa"));
        assert_eq!(
            o.push_oldest(Bytes::from_static(b"bbb")),
            Pushed::QueuedDroppingOldest(1)
        );
        assert_eq!(
            o.push_oldest(Bytes::from_static(b"cccccc")),
            Pushed::Rejected
        );
        assert_eq!(o.len(), 1);
        assert_eq!(o.dropped(), 2);
    }

    #[test]
    fn queuing_times_stay_in_step_with_the_queue() {
        let in_step = |o: &Outbox| assert_eq!(o.queue.len(), o.queued_at.len());
        let mut o = outbox(3, 100);
        for d in [&b"a"[..], b"b", b"c", b"d"] {
            o.push_oldest(Bytes::copy_from_slice(d));
            in_step(&o);
        }
        o.requeue_front(vec![Bytes::from_static(b"r")], OverflowPolicy::DropNewest);
        in_step(&o);
        o.drain_while(|_| false);
        in_step(&o);
        // [r, b, c] (d dropped, the newest): takes r and b.
        assert_eq!(o.drain_while(|d| d != b"c".as_slice()).len(), 2);
        in_step(&o);
        o.drain();
        in_step(&o);
        assert!(o.is_empty());
    }
}
