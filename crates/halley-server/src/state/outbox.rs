//! A session's queue of deliveries waiting to be written.
//!
//! Every entry is a [`Bytes`] shared with the other subscribers of the same
//! broadcast (encoded once by the publisher). The queue is bounded both in
//! messages and in bytes, so one client that stops reading costs at most
//! `max_messages` entries or `max_bytes` of payload, whichever comes first.
//! When full, the oldest deliveries are dropped: a live feed is worth more
//! than stale history, and a client that needs every message uses the ack
//! extension or replay.

use std::collections::VecDeque;

use bytes::Bytes;

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
    bytes: usize,
    limits: OutboxLimits,
    /// Deliveries dropped because the outbox was full, since the session began.
    dropped: u64,
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued after dropping this many older deliveries.
    QueuedDroppingOldest(usize),
    /// The delivery alone is larger than the byte limit and was not queued.
    Rejected,
}

impl Outbox {
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            limits,
            dropped: 0,
        }
    }

    pub fn push(&mut self, delivery: Bytes) -> Pushed {
        if delivery.len() > self.limits.max_bytes || self.limits.max_messages == 0 {
            self.dropped += 1;
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
            self.bytes -= oldest.len();
            evicted += 1;
        }
        self.bytes += delivery.len();
        self.queue.push_back(delivery);
        self.dropped += evicted as u64;
        if evicted == 0 {
            Pushed::Queued
        } else {
            Pushed::QueuedDroppingOldest(evicted)
        }
    }

    /// Takes everything queued, oldest first.
    pub fn drain(&mut self) -> VecDeque<Bytes> {
        self.bytes = 0;
        std::mem::take(&mut self.queue)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(max_messages: usize, max_bytes: usize) -> Outbox {
        Outbox::new(OutboxLimits {
            max_messages,
            max_bytes,
        })
    }

    #[test]
    fn keeps_order_and_counts_bytes() {
        let mut o = outbox(10, 100);
        assert_eq!(o.push(Bytes::from_static(b"ab")), Pushed::Queued);
        assert_eq!(o.push(Bytes::from_static(b"cde")), Pushed::Queued);
        assert_eq!(o.bytes(), 5);
        let drained: Vec<_> = o.drain().into_iter().collect();
        assert_eq!(drained, [&b"ab"[..], &b"cde"[..]]);
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn drops_oldest_when_full_by_count() {
        let mut o = outbox(2, 100);
        o.push(Bytes::from_static(b"1"));
        o.push(Bytes::from_static(b"2"));
        assert_eq!(
            o.push(Bytes::from_static(b"3")),
            Pushed::QueuedDroppingOldest(1)
        );
        assert_eq!(
            o.drain().into_iter().collect::<Vec<_>>(),
            [&b"2"[..], &b"3"[..]]
        );
        assert_eq!(o.dropped(), 1);
    }

    #[test]
    fn drops_oldest_when_full_by_bytes_and_rejects_giants() {
        let mut o = outbox(100, 5);
        o.push(Bytes::from_static(b"aaa"));
        assert_eq!(
            o.push(Bytes::from_static(b"bbb")),
            Pushed::QueuedDroppingOldest(1)
        );
        assert_eq!(o.push(Bytes::from_static(b"cccccc")), Pushed::Rejected);
        assert_eq!(o.len(), 1);
        assert_eq!(o.dropped(), 2);
    }
}
