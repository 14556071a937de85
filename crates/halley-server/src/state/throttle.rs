//! A session's held updates: deliveries of rate-limited channels that wait
//! for their turn (quality of service, see `qos.rs`).
//!
//! Each throttled (channel, key) of a session has a `Slot`: when it may
//! send next, and what waits. An update that arrives when the slot may send
//! and nothing waits goes out at once; otherwise it is held:
//! - [`Mode::Merge`]: the slot holds one update, the latest (conflation: the
//!   subscriber gets the latest value at the allowed rate, and always ends
//!   with the latest value, flushed when the interval ends);
//! - [`Mode::Distinct`]: the slot queues every update, in order.
//!
//! [`Throttle::due`] releases, per slot, the update whose turn has come and
//! says when to look again; the caller's timer does the waiting. Time is an
//! input: nothing here sleeps or spawns.
//!
//! Memory is bounded: held updates of all slots together count against the
//! session's queue limits (`max-queue`, `max-queue-bytes`; beyond them the
//! channel's overflow policy applies), and idle slots are pruned once their
//! interval has passed.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::outbox::{OutboxLimits, OverflowPolicy};

/// What a rate-limited channel does with updates that come too fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Keep only the latest update (per key); it is sent when the interval ends.
    #[default]
    Merge,
    /// Keep every update, in order, and send them at the allowed rate.
    Distinct,
}

/// The limit of one slot: at most one update per `interval`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub interval: Duration,
    pub mode: Mode,
}

impl Limit {
    /// A limit of `per_second` updates per second, or `None` when that is not
    /// a positive finite number. Intervals are capped at an hour, so an
    /// absurdly low rate still makes progress.
    pub fn per_second(per_second: f64, mode: Mode) -> Option<Limit> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        let interval = Duration::try_from_secs_f64(1.0 / per_second)
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs(3_600));
        Some(Limit { interval, mode })
    }
}

/// How a released update enters the outbox: as it would have on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub policy: OverflowPolicy,
    /// The channel's lazy timeout (a released lazy update may still wait).
    pub lazy_timeout_ms: Option<u64>,
}

/// What [`Throttle::offer`] did with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Its slot may send: the caller queues it now.
    Now,
    /// Held for later. `start_timer`: no timer runs for this session yet,
    /// the caller starts one (which calls [`Throttle::due`] until it says
    /// nothing is held).
    Held { start_timer: bool },
    /// Dropped by the overflow policy (the held updates are at the limits).
    Dropped,
    /// Over the limits under the `disconnect` policy: the caller ends the session.
    Overflow,
}

#[derive(Debug)]
struct Slot {
    /// When this slot may send its next update.
    next_at: Instant,
    limit: Limit,
    release: Release,
    /// Merge: at most one (the latest); distinct: all, oldest first.
    held: VecDeque<Bytes>,
}

impl Slot {
    fn is_idle(&self, now: Instant) -> bool {
        self.held.is_empty() && self.next_at <= now
    }
}

/// The held updates of one session.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Keyed by channel, or channel and conflation key (see `crate::qos`).
    slots: HashMap<Box<str>, Slot>,
    held: usize,
    held_bytes: usize,
    /// Whether a timer is releasing this session's updates.
    timer_running: bool,
    /// Slots beyond this count trigger a pruning pass of the idle ones.
    prune_above: usize,
}

/// Fewest slots that trigger pruning (small maps are not worth a pass).
const MIN_PRUNE: usize = 64;

impl Throttle {
    /// Offers an update of slot `slot` limited by `limit`. Held updates of
    /// all slots are bounded by `limits`; `release.policy` decides beyond.
    pub fn offer(
        &mut self,
        slot: &str,
        delivery: Bytes,
        limit: Limit,
        release: Release,
        limits: OutboxLimits,
        now: Instant,
    ) -> Offered {
        if self.slots.len() > self.prune_above.max(MIN_PRUNE) {
            self.slots.retain(|_, slot| !slot.is_idle(now));
            self.prune_above = self.slots.len() * 2;
        }
        let entry = match self.slots.get_mut(slot) {
            Some(entry) => entry,
            None => self.slots.entry(slot.into()).or_insert(Slot {
                next_at: now,
                limit,
                release,
                held: VecDeque::new(),
            }),
        };
        // A rule is fixed, but the first update may have come before a
        // grant was set: the latest limit applies.
        entry.limit = limit;
        entry.release = release;
        if entry.held.is_empty() && entry.next_at <= now {
            entry.next_at = now + limit.interval;
            return Offered::Now;
        }
        match limit.mode {
            Mode::Merge if !entry.held.is_empty() => {
                // Conflation: the latest replaces what waits (of this slot:
                // the limits were checked when the first was held).
                let len = delivery.len();
                let older = std::mem::replace(&mut entry.held[0], delivery);
                self.held_bytes = self.held_bytes - older.len() + len;
                // Any extra (after a switch from distinct) goes too.
                while entry.held.len() > 1 {
                    if let Some(extra) = entry.held.pop_back() {
                        self.held -= 1;
                        self.held_bytes -= extra.len();
                    }
                }
            }
            _ => {
                let full = |held: usize, bytes: usize| {
                    held >= limits.max_messages || bytes + delivery.len() > limits.max_bytes
                };
                if full(self.held, self.held_bytes) {
                    match release.policy {
                        OverflowPolicy::Disconnect => return Offered::Overflow,
                        OverflowPolicy::DropNewest => return Offered::Dropped,
                        // The oldest of this slot makes room, if it has one
                        // (dropping another channel's update would be unfair).
                        OverflowPolicy::DropOldest => {
                            while full(self.held, self.held_bytes) {
                                let Some(oldest) = entry.held.pop_front() else {
                                    return Offered::Dropped;
                                };
                                self.held -= 1;
                                self.held_bytes -= oldest.len();
                            }
                        }
                    }
                }
                self.held += 1;
                self.held_bytes += delivery.len();
                entry.held.push_back(delivery);
            }
        }
        let start_timer = !self.timer_running;
        self.timer_running = true;
        Offered::Held { start_timer }
    }

    /// Takes the updates whose turn has come (one per slot), oldest slot
    /// state first, and says when to call again. `None`: nothing is held,
    /// and the timer is marked stopped in the same step (a later
    /// [`Throttle::offer`] starts a new one).
    pub fn due(&mut self, now: Instant) -> (Vec<(Bytes, Release)>, Option<Instant>) {
        let mut released = Vec::new();
        let mut next: Option<Instant> = None;
        for slot in self.slots.values_mut() {
            if slot.next_at <= now {
                if let Some(delivery) = slot.held.pop_front() {
                    self.held -= 1;
                    self.held_bytes -= delivery.len();
                    released.push((delivery, slot.release));
                    // Keeps the cadence when the timer fires late, without
                    // a burst to catch up more than one interval.
                    slot.next_at = (slot.next_at + slot.limit.interval).max(now);
                }
            }
            if !slot.held.is_empty() {
                next = Some(next.map_or(slot.next_at, |n| n.min(slot.next_at)));
            }
        }
        if next.is_none() {
            self.slots.retain(|_, slot| !slot.is_idle(now));
            self.timer_running = false;
        }
        (released, next)
    }

    /// Held updates, all slots together.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether nothing is held and no slot remembers a recent send.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Forgets everything (the session ended).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.held = 0;
        self.held_bytes = 0;
        self.timer_running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: OutboxLimits = OutboxLimits {
        max_messages: 3,
        max_bytes: 1_000,
    };
    const RELEASE: Release = Release {
        policy: OverflowPolicy::DropOldest,
        lazy_timeout_ms: None,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn offer(
        t: &mut Throttle,
        slot: &str,
        body: &'static str,
        mode: Mode,
        now: Instant,
    ) -> Offered {
        let limit = Limit::per_second(10.0, mode).unwrap();
        t.offer(
            slot,
            Bytes::from_static(body.as_bytes()),
            limit,
            RELEASE,
            LIMITS,
            now,
        )
    }

    fn bodies(released: &[(Bytes, Release)]) -> Vec<&[u8]> {
        released.iter().map(|(b, _)| &b[..]).collect()
    }

    #[test]
    fn merge_sends_the_first_holds_the_latest_and_flushes_it() {
        let start = Instant::now();
        let mut t = Throttle::default();
        assert_eq!(offer(&mut t, "/p", "1", Mode::Merge, start), Offered::Now);
        assert_eq!(
            offer(&mut t, "/p", "2", Mode::Merge, start + ms(10)),
            Offered::Held { start_timer: true }
        );
        assert_eq!(
            offer(&mut t, "/p", "3", Mode::Merge, start + ms(20)),
            Offered::Held { start_timer: false }
        );
        assert_eq!(t.held(), 1, "conflated");
        let (released, next) = t.due(start + ms(50));
        assert!(released.is_empty());
        assert_eq!(next, Some(start + ms(100)));
        let (released, next) = t.due(start + ms(100));
        assert_eq!(bodies(&released), [b"3"]);
        assert_eq!(next, None, "nothing held: the timer stops");
        assert_eq!(
            offer(&mut t, "/p", "4", Mode::Merge, start + ms(150)),
            Offered::Held { start_timer: true },
            "inside the interval after the flush"
        );
    }

    #[test]
    fn distinct_keeps_all_in_order_bounded_by_the_queue_limits() {
        let start = Instant::now();
        let mut t = Throttle::default();
        assert_eq!(
            offer(&mut t, "/d", "1", Mode::Distinct, start),
            Offered::Now
        );
        for body in ["2", "3", "4", "5"] {
            offer(&mut t, "/d", body, Mode::Distinct, start);
        }
        assert_eq!(t.held(), 3, "max-queue 3: drop-oldest dropped 2");
        let mut got = Vec::new();
        let mut now = start;
        loop {
            let (released, next) = t.due(now);
            got.extend(bodies(&released).into_iter().map(|b| b.to_vec()));
            match next {
                Some(next) => now = next,
                None => break,
            }
        }
        assert_eq!(got, [b"3".to_vec(), b"4".to_vec(), b"5".to_vec()]);
        assert_eq!(now, start + ms(300), "one per 100 ms");
    }

    #[test]
    fn slots_are_independent_and_idle_ones_are_forgotten() {
        let start = Instant::now();
        let mut t = Throttle::default();
        assert_eq!(
            offer(&mut t, "/p\0a", "a1", Mode::Merge, start),
            Offered::Now
        );
        assert_eq!(
            offer(&mut t, "/p\0b", "b1", Mode::Merge, start),
            Offered::Now
        );
        offer(&mut t, "/p\0a", "a2", Mode::Merge, start);
        let (released, next) = t.due(start + ms(100));
        assert_eq!(bodies(&released), [b"a2"]);
        assert!(next.is_none());
        assert!(
            !t.is_empty(),
            "a remembers its send until its interval ends"
        );
        assert_eq!(t.due(start + ms(200)), (Vec::new(), None));
        assert!(t.is_empty(), "both slots idle after their interval");
    }

    #[test]
    fn disconnect_policy_reports_overflow() {
        let start = Instant::now();
        let mut t = Throttle::default();
        let limit = Limit::per_second(1.0, Mode::Distinct).unwrap();
        let release = Release {
            policy: OverflowPolicy::Disconnect,
            lazy_timeout_ms: None,
        };
        let results: Vec<_> = (0..5)
            .map(|_| {
                t.offer(
                    "/d",
                    Bytes::from_static(b"x"),
                    limit,
                    release,
                    LIMITS,
                    start,
                )
            })
            .collect();
        assert_eq!(results[0], Offered::Now);
        assert_eq!(results[4], Offered::Overflow);
    }

    #[test]
    fn impossible_rates_are_no_limit() {
        assert!(Limit::per_second(0.0, Mode::Merge).is_none());
        assert!(Limit::per_second(f64::NAN, Mode::Merge).is_none());
        let slow = Limit::per_second(1e-300, Mode::Merge).unwrap();
        assert_eq!(slow.interval, Duration::from_secs(3_600));
    }
}
