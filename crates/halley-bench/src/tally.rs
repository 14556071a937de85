//! Counting deliveries per user: delivered, duplicated, out of order.
//!
//! Each user listens to one room, whose messages carry sequence numbers
//! 1, 2, 3, ... in publish order. A user remembers the highest number seen
//! and the numbers it skipped; a message below the highest is either a late
//! arrival of a skipped one (out of order) or a duplicate. Memory stays small
//! because gaps are rare (a lossless run has none).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Counts of one worker (or, merged, of a run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Deliveries of messages scheduled inside the measuring window.
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Deliveries of messages outside the window (warm-up, drain): not counted above.
    pub outside_window: u64,
}

impl Counts {
    pub fn merge(&mut self, other: &Counts) {
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.outside_window += other.outside_window;
    }
}

/// One user's view of its room's sequence.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    highest: u64,
    skipped: BTreeSet<u64>,
}

/// What one delivery was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    /// Arrived after a later message (and was not seen before).
    OutOfOrder,
    Duplicate,
}

impl SequenceTracker {
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq > self.highest {
            // Remember every number jumped over; bounded by what a run loses.
            for missing in self.highest + 1..seq {
                self.skipped.insert(missing);
            }
            self.highest = seq;
            Arrival::InOrder
        } else if self.skipped.remove(&seq) {
            Arrival::OutOfOrder
        } else {
            Arrival::Duplicate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_arrivals() {
        let mut t = SequenceTracker::default();
        assert_eq!(t.observe(1), Arrival::InOrder);
        assert_eq!(t.observe(2), Arrival::InOrder);
        assert_eq!(t.observe(2), Arrival::Duplicate);
        assert_eq!(t.observe(5), Arrival::InOrder);
        assert_eq!(t.observe(4), Arrival::OutOfOrder);
        assert_eq!(t.observe(4), Arrival::Duplicate);
        assert_eq!(t.observe(3), Arrival::OutOfOrder);
        assert_eq!(t.observe(1), Arrival::Duplicate);
    }

    #[test]
    fn a_tracker_may_start_mid_sequence() {
        // Users subscribe before the first publish, but a warm-up may be
        // shorter than a delivery: the first number seen need not be 1.
        let mut t = SequenceTracker::default();
        assert_eq!(t.observe(10), Arrival::InOrder);
        assert_eq!(t.observe(11), Arrival::InOrder);
    }
}
