//! Deliveries sent but not yet acknowledged (the ack extension).
//!
//! With the ack extension, every `/meta/connect` reply is a numbered batch.
//! The deliveries it carried stay here until the client's next connect
//! says it received that batch (`ext.ack: N` acknowledges every batch up to
//! N). Batches after N were lost on the way: they go back to the front of
//! the outbox and are sent again, in order, in the next reply.

use std::collections::VecDeque;

use bytes::Bytes;

/// On a cluster node a batch number says the log offset the batch reaches:
/// `offset << BATCH_BITS | n`, so the node a client's next connect lands on
/// knows what the client has from the number alone (see
/// `state/session/position.rs`).
///
/// Low bits of a batch number that count batches with no newer log
/// message (empty replies, local deliveries). JavaScript numbers are exact
/// to 2^53, so offsets may reach 2^40 (a million publishes a second for
/// twelve days).
pub const BATCH_BITS: u32 = 13;

/// The offset a batch number reaches (see the module documentation).
pub fn batch_offset(batch: u64) -> u64 {
    batch >> BATCH_BITS
}

/// The number of the batch after `last` that reaches `offset`: rising,
/// and never claiming more than `offset` (the count saturates within one
/// offset rather than spill into the next).
pub fn batch_number(last: u64, offset: u64) -> u64 {
    let base = offset << BATCH_BITS;
    if batch_offset(last) == offset {
        (last + 1).min(base | ((1 << BATCH_BITS) - 1))
    } else if base > last {
        base
    } else {
        // The log's counter went back (Redis lost its data): keep rising.
        last + 1
    }
}

#[derive(Debug, Default)]
pub struct UnackedBatches {
    batches: VecDeque<(u64, Vec<Bytes>)>,
    last_batch: u64,
}

impl UnackedBatches {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The number of the newest batch sent (0: none yet).
    pub fn last_batch(&self) -> u64 {
        self.last_batch
    }

    /// Forgets the oldest kept deliveries until at most `max` remain: a
    /// client that never acknowledges must not make the server keep
    /// everything it was ever sent. Returns how many were forgotten.
    pub fn trim(&mut self, max: usize) -> usize {
        let mut forgotten = 0;
        while self.len() > max {
            let Some((_, front)) = self.batches.front_mut() else {
                break;
            };
            if front.is_empty() {
                self.batches.pop_front();
                continue;
            }
            front.remove(0);
            forgotten += 1;
        }
        forgotten
    }

    /// Numbers the next connect reply's batch and keeps its deliveries.
    #[cfg(test)]
    pub fn record(&mut self, deliveries: &[Bytes]) -> u64 {
        self.record_at(deliveries, None)
    }

    /// Like [`UnackedBatches::record`]; on a cluster node, `offset` is the
    /// log offset the batch reaches, written into its number (see
    /// [`crate::state::session::batch_number`]).
    pub fn record_at(&mut self, deliveries: &[Bytes], offset: Option<u64>) -> u64 {
        self.last_batch = match offset {
            Some(offset) => batch_number(self.last_batch, offset),
            None => self.last_batch + 1,
        };
        if !deliveries.is_empty() {
            self.batches
                .push_back((self.last_batch, deliveries.to_vec()));
        }
        self.last_batch
    }

    /// Numbers continue after `batch` (a session taken over from another
    /// node, whose client acknowledged `batch` there).
    pub fn continue_after(&mut self, batch: u64) {
        self.last_batch = self.last_batch.max(batch);
    }

    /// The client received every batch up to `batch`: forget those; return
    /// the deliveries of later batches (lost on the way), oldest first.
    pub fn acknowledge(&mut self, batch: u64) -> Vec<Bytes> {
        while self.batches.front().is_some_and(|(n, _)| *n <= batch) {
            self.batches.pop_front();
        }
        self.batches.drain(..).flat_map(|(_, d)| d).collect()
    }

    /// Deliveries waiting for an acknowledgement.
    pub fn len(&self) -> usize {
        self.batches.iter().map(|(_, d)| d.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_numbers_rise_and_say_their_offset() {
        let first = batch_number(0, 7);
        assert_eq!(batch_offset(first), 7);
        let empty = batch_number(first, 7);
        assert!(empty > first);
        assert_eq!(
            batch_offset(empty),
            7,
            "a batch with nothing new stays at 7"
        );
        let next = batch_number(empty, 9);
        assert!(next > empty);
        assert_eq!(batch_offset(next), 9);
        // Saturates within one offset instead of claiming the next one.
        let mut last = next;
        for _ in 0..(1 << BATCH_BITS) + 5 {
            last = batch_number(last, 9);
        }
        assert_eq!(batch_offset(last), 9);
        // A restarted counter: still rising.
        assert!(batch_number(last, 1) > last);
        // No log message yet: small numbers, as a single node's.
        assert_eq!(batch_number(0, 0), 1);
        assert_eq!(batch_number(1, 0), 2);
    }

    fn d(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn acknowledged_batches_are_forgotten_later_ones_come_back_in_order() {
        let mut u = UnackedBatches::default();
        assert_eq!(u.record(&[d("a"), d("b")]), 1);
        assert_eq!(u.record(&[]), 2);
        assert_eq!(u.record(&[d("c")]), 3);
        assert_eq!(u.record(&[d("e")]), 4);
        assert_eq!(u.len(), 4);
        // The client got batch 1 (and the empty 2) but not 3 and 4.
        assert_eq!(u.acknowledge(2), vec![d("c"), d("e")]);
        assert!(u.is_empty());
        assert_eq!(u.record(&[d("c"), d("e")]), 5, "numbers keep rising");
        assert_eq!(u.acknowledge(5), Vec::<Bytes>::new());
    }

    #[test]
    fn trimming_forgets_the_oldest() {
        let mut u = UnackedBatches::default();
        u.record(&[d("a"), d("b")]);
        u.record(&[d("c")]);
        assert_eq!(u.trim(2), 1);
        assert_eq!(u.acknowledge(0), vec![d("b"), d("c")]);
        assert_eq!(u.last_batch(), 2);
    }
}
