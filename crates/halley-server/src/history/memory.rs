//! The in-process history store: a bounded deque per channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::Mutex;

use super::{Entry, HistoryStore, Replay, Retention};

#[derive(Default)]
pub struct MemoryHistory {
    channels: DashMap<Box<str>, Mutex<ChannelLog>>,
    /// The highest last id of any forgotten channel: a channel starts its
    /// ids above it, so one forgotten and published on again never reuses
    /// an id a client may have seen.
    forgotten_up_to: AtomicU64,
    /// Ids up to this may have been published before this store heard of
    /// any (a cluster node that started late; see [`HistoryStore::raise_floor`]).
    floor: AtomicU64,
}

#[derive(Default)]
struct ChannelLog {
    entries: VecDeque<Entry>,
    last_id: u64,
    /// The highest id that may have been published but is not retained
    /// (trimmed, or from before this store knew the channel): a replay
    /// after an id below it has a gap. Ids need not be consecutive.
    dropped_up_to: u64,
}

impl ChannelLog {
    fn trim(&mut self, retention: Retention, now_ms: u64) {
        if let Some(max) = retention.max_messages {
            while self.entries.len() > max {
                self.drop_oldest();
            }
        }
        if let Some(max_age) = retention.max_age_ms {
            while self
                .entries
                .front()
                .is_some_and(|e| now_ms.saturating_sub(e.at_ms) > max_age)
            {
                self.drop_oldest();
            }
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(dropped) = self.entries.pop_front() {
            self.dropped_up_to = self.dropped_up_to.max(dropped.id);
        }
    }
}

impl MemoryHistory {
    /// What a channel this store does not retain may have missed.
    fn unknown_up_to(&self) -> u64 {
        self.forgotten_up_to
            .load(Ordering::Relaxed)
            .max(self.floor.load(Ordering::Relaxed))
    }
}

impl HistoryStore for MemoryHistory {
    fn append(&self, channel: &str, entry: Entry, retention: Retention) {
        let log = self.channels.entry(channel.into()).or_insert_with(|| {
            Mutex::new(ChannelLog {
                dropped_up_to: self.unknown_up_to(),
                ..ChannelLog::default()
            })
        });
        let mut log = log.lock();
        log.last_id = log.last_id.max(entry.id);
        let now = entry.at_ms;
        log.entries.push_back(entry);
        log.trim(retention, now);
    }

    fn after(
        &self,
        channel: &str,
        after: Option<u64>,
        retention: Retention,
        now_ms: u64,
    ) -> Replay {
        let Some(log) = self.channels.get(channel) else {
            // Perhaps forgotten since the client's last id: say so.
            let unknown = self.unknown_up_to();
            return Replay {
                deliveries: Vec::new(),
                gap: after.is_some_and(|after| after < unknown),
            };
        };
        let mut log = log.lock();
        log.trim(retention, now_ms);
        // Everything above `dropped_up_to` is retained: a client that has
        // less is missing the message numbered `dropped_up_to` at least.
        let gap = after.is_some_and(|after| after < log.dropped_up_to);
        let deliveries = log
            .entries
            .iter()
            .filter(|e| after.is_none_or(|after| e.id > after))
            .map(|e| e.delivery.clone())
            .collect();
        Replay { deliveries, gap }
    }

    fn last_id(&self, channel: &str) -> u64 {
        self.channels.get(channel).map_or_else(
            || self.forgotten_up_to.load(Ordering::Relaxed),
            |log| log.lock().last_id,
        )
    }

    fn forget_if_stale(&self, channel: &str, max_age_ms: u64, now_ms: u64) -> bool {
        let removed = self.channels.remove_if(channel, |_, log| {
            let log = log.lock();
            log.entries
                .back()
                .is_none_or(|newest| now_ms.saturating_sub(newest.at_ms) > max_age_ms)
        });
        let Some((_, log)) = removed else {
            // Not retained here at all (a sequencer made by a replaying
            // subscribe on a channel never published on): nothing to keep.
            return !self.channels.contains_key(channel);
        };
        self.forgotten_up_to
            .fetch_max(log.into_inner().last_id, Ordering::Relaxed);
        super::shrink_if_sparse(&self.channels);
        true
    }

    fn raise_floor(&self, id: u64) {
        self.floor.fetch_max(id, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry(id: u64, at_ms: u64) -> Entry {
        Entry {
            id,
            at_ms,
            delivery: Bytes::from(format!("m{id}")),
        }
    }

    fn ids(replay: &Replay) -> Vec<String> {
        replay
            .deliveries
            .iter()
            .map(|d| String::from_utf8(d.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn sparse_ids_from_a_cluster_log_report_gaps_only_for_what_is_gone() {
        let store = MemoryHistory::default();
        let keep2 = Retention {
            max_messages: Some(2),
            max_age_ms: None,
        };
        // This node heard of the log from offset 100 on.
        store.raise_floor(99);
        for id in [100, 140, 170] {
            store.append("/c", entry(id, 0), keep2);
        }
        let after140 = store.after("/c", Some(140), keep2, 0);
        assert_eq!(ids(&after140), ["m170"]);
        assert!(!after140.gap, "nothing between 140 and 170 on /c");
        let after100 = store.after("/c", Some(100), keep2, 0);
        assert_eq!(ids(&after100), ["m140", "m170"]);
        assert!(!after100.gap, "100 was trimmed, but the client had it");
        assert!(store.after("/c", Some(99), keep2, 0).gap, "100 is gone");
        // A channel first published on later: before the floor is unknown.
        store.append("/d", entry(200, 0), keep2);
        assert!(!store.after("/d", Some(99), keep2, 0).gap);
        assert!(store.after("/d", Some(50), keep2, 0).gap);
        assert!(store.after("/e", Some(50), keep2, 0).gap);
        assert!(!store.after("/e", Some(120), keep2, 0).gap);
    }

    #[test]
    fn keeps_the_last_n_and_reports_gaps() {
        let store = MemoryHistory::default();
        let keep3 = Retention {
            max_messages: Some(3),
            max_age_ms: None,
        };
        for id in 1..=5 {
            store.append("/c", entry(id, 0), keep3);
        }
        let all = store.after("/c", None, keep3, 0);
        assert_eq!(ids(&all), ["m3", "m4", "m5"]);
        assert!(!all.gap);
        let after3 = store.after("/c", Some(3), keep3, 0);
        assert_eq!(ids(&after3), ["m4", "m5"]);
        assert!(!after3.gap);
        let after2 = store.after("/c", Some(2), keep3, 0);
        assert_eq!(
            ids(&after2),
            ["m3", "m4", "m5"],
            "id 2 + 1 = 3 is the oldest: no gap"
        );
        assert!(!after2.gap);
        let after1 = store.after("/c", Some(1), keep3, 0);
        assert!(after1.gap, "message 2 is gone");
        assert_eq!(ids(&after1), ["m3", "m4", "m5"]);
        assert_eq!(store.last_id("/c"), 5);
        assert_eq!(store.last_id("/other"), 0);
    }

    #[test]
    fn forgets_messages_older_than_max_age() {
        let store = MemoryHistory::default();
        let minute = Retention {
            max_messages: None,
            max_age_ms: Some(60_000),
        };
        store.append("/c", entry(1, 0), minute);
        store.append("/c", entry(2, 50_000), minute);
        assert_eq!(ids(&store.after("/c", None, minute, 70_000)), ["m2"]);
        let later = store.after("/c", Some(0), minute, 200_000);
        assert!(later.deliveries.is_empty());
        assert!(later.gap, "both are gone");
    }

    #[test]
    fn a_stale_channel_is_forgotten_whole_and_its_ids_go_on() {
        let store = MemoryHistory::default();
        let second = Retention {
            max_messages: None,
            max_age_ms: Some(1_000),
        };
        store.append("/c", entry(7, 0), second);
        assert!(!store.forget_if_stale("/c", 1_000, 1_000), "not older yet");
        assert!(store.forget_if_stale("/c", 1_000, 1_001));
        assert!(store.channels.is_empty());
        assert_eq!(store.last_id("/c"), 7, "the next id is 8, never 1 again");
        assert!(store.after("/c", Some(5), second, 1_001).gap);
        assert!(!store.after("/c", Some(7), second, 1_001).gap);
        assert!(store.forget_if_stale("/never", 1_000, 0));
    }
}
