//! Who listens to what: subscription patterns to the sessions behind them.
//!
//! Keys are subscription strings exactly as subscribed (`/chat/room1`,
//! `/chat/*`, `/**`). A publish on `/chat/room1` looks up only the keys that
//! can match it ([`ChannelName::matching_patterns`]): O(channel depth) map
//! lookups, however many patterns exist, and no global lock: the map is
//! sharded and each pattern's subscriber set has its own lock, held only
//! while the publisher copies a `Bytes` handle into each outbox.
//!
//! Subscribing and unsubscribing also say when a pattern's set goes from
//! empty to non-empty ([`Subscribed::First`]) or back ([`Unsubscribed::Last`]):
//! the engine uses it to start and stop Data Adapter feeds. The edge is read
//! under the locks the change takes anyway, so it costs the publish path
//! nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dashmap::DashMap;
use halley_protocol::ChannelName;
use parking_lot::RwLock;

use super::session::{Session, SessionKey};

#[derive(Default)]
pub struct Subscriptions {
    by_pattern: DashMap<Box<str>, Arc<Subscribers>>,
}

/// The sessions subscribed to one pattern.
#[derive(Default)]
pub struct Subscribers {
    sessions: RwLock<HashMap<SessionKey, Arc<Session>>>,
}

/// What a subscribe did to its pattern's set of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// The session was subscribed already: nothing changed.
    Already,
    /// Added to a set that had other sessions.
    Added,
    /// Added to an empty set: the pattern's first subscriber.
    First,
}

impl Subscribed {
    /// Whether the session was added (it was not subscribed before).
    pub fn added(self) -> bool {
        self != Subscribed::Already
    }
}

/// What an unsubscribe did to its pattern's set of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The session was not subscribed: nothing changed.
    NotSubscribed,
    /// Removed; other sessions remain.
    Removed,
    /// Removed the last session: the pattern has no subscriber left.
    Last,
}

impl Unsubscribed {
    /// Whether the session was removed (it was subscribed before).
    pub fn removed(self) -> bool {
        self != Unsubscribed::NotSubscribed
    }
}

impl Subscriptions {
    /// Gives back the pattern map's memory after a flood of subscriptions
    /// has gone.
    pub fn shrink_if_sparse(&self) {
        let map = &self.by_pattern;
        if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
            map.shrink_to_fit();
        }
    }

    /// Adds `session` to `pattern` (already validated).
    pub fn subscribe(&self, pattern: &str, session: &Arc<Session>) -> Subscribed {
        // The shard lock of `entry` is held while inserting, so a concurrent
        // unsubscribe cannot remove the set between lookup and insert; and
        // as empty sets are removed under the same lock, a set of one after
        // an insert was empty before it.
        let subscribers = self.by_pattern.entry(pattern.into()).or_default();
        let outcome = {
            let mut sessions = subscribers.sessions.write();
            if sessions.insert(session.key(), session.clone()).is_some() {
                Subscribed::Already
            } else if sessions.len() == 1 {
                Subscribed::First
            } else {
                Subscribed::Added
            }
        };
        drop(subscribers);
        session.add_subscription(pattern);
        outcome
    }

    /// Removes `session` from `pattern`.
    pub fn unsubscribe(&self, pattern: &str, session: &Session) -> Unsubscribed {
        session.remove_subscription(pattern);
        self.remove_from_pattern(pattern, session.key())
    }

    fn remove_from_pattern(&self, pattern: &str, key: SessionKey) -> Unsubscribed {
        let mut outcome = Unsubscribed::NotSubscribed;
        // remove_if holds the shard's write lock: the emptiness check and the
        // removal are atomic with respect to `subscribe`.
        self.by_pattern.remove_if(pattern, |_, subscribers| {
            let mut sessions = subscribers.sessions.write();
            if sessions.remove(&key).is_some() {
                outcome = if sessions.is_empty() {
                    Unsubscribed::Last
                } else {
                    Unsubscribed::Removed
                };
            }
            sessions.is_empty()
        });
        outcome
    }

    /// Removes every subscription of a session that is going away. Returns
    /// the patterns it was the last subscriber of.
    pub fn remove_session(&self, session: &Session) -> Vec<Box<str>> {
        let mut emptied = Vec::new();
        for pattern in session.take_subscriptions() {
            if self.remove_from_pattern(&pattern, session.key()) == Unsubscribed::Last {
                emptied.push(pattern);
            }
        }
        emptied
    }

    /// The channels (not globs) that have a subscriber now.
    pub fn subscribed_channels(&self) -> Vec<Box<str>> {
        self.by_pattern
            .iter()
            .map(|entry| entry.key().clone())
            .filter(|pattern| !pattern.ends_with('*'))
            .collect()
    }

    /// Whether `pattern` (as subscribed, not matched) has a subscriber.
    pub fn has_subscribers(&self, pattern: &str) -> bool {
        self.by_pattern.contains_key(pattern)
    }

    /// Calls `deliver` once for every session subscribed to a pattern that
    /// matches `channel`, even when several of its patterns match. Returns
    /// how many sessions were called.
    pub fn for_each_subscriber(
        &self,
        channel: &ChannelName,
        mut deliver: impl FnMut(&Arc<Session>),
    ) -> usize {
        let matched: Vec<Arc<Subscribers>> = channel
            .matching_patterns()
            .iter()
            .filter_map(|key| self.by_pattern.get(key.as_str()).map(|s| s.clone()))
            .collect();
        match matched.as_slice() {
            [] => 0,
            [only] => {
                let sessions = only.sessions.read();
                sessions.values().for_each(&mut deliver);
                sessions.len()
            }
            several => {
                // A session subscribed to both `/a/*` and `/a/**` hears a message once.
                let mut seen = HashSet::new();
                for subscribers in several {
                    for (key, session) in subscribers.sessions.read().iter() {
                        if seen.insert(*key) {
                            deliver(session);
                        }
                    }
                }
                seen.len()
            }
        }
    }

    /// The `n` patterns with the most subscribers, most first (for the admin
    /// page: one pass over the patterns, each set's lock held for a read of
    /// its length).
    pub fn top_by_subscribers(&self, n: usize) -> Vec<(Box<str>, usize)> {
        let mut top: Vec<(Box<str>, usize)> = Vec::with_capacity(n + 1);
        for entry in self.by_pattern.iter() {
            let count = entry.value().sessions.read().len();
            let place = top.partition_point(|(pattern, c)| {
                *c > count || (*c == count && **pattern < **entry.key())
            });
            if place < n {
                top.insert(place, (entry.key().clone(), count));
                top.truncate(n);
            }
        }
        top
    }

    /// Number of distinct patterns with at least one subscriber.
    pub fn pattern_count(&self) -> usize {
        self.by_pattern.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::outbox::OutboxLimits;

    fn session(key: SessionKey) -> Arc<Session> {
        let limits = OutboxLimits {
            max_messages: 10,
            max_bytes: 1000,
        };
        Arc::new(Session::new(key, format!("c{key}").into(), None, limits, 0))
    }

    fn subscribers_of(subs: &Subscriptions, channel: &str) -> Vec<SessionKey> {
        let mut keys = Vec::new();
        subs.for_each_subscriber(&ChannelName::parse(channel).unwrap(), |s| {
            keys.push(s.key())
        });
        keys.sort();
        keys
    }

    #[test]
    fn exact_and_glob_subscribers_each_hear_once() {
        let subs = Subscriptions::default();
        let (a, b, c) = (session(1), session(2), session(3));
        subs.subscribe("/chat/room", &a);
        subs.subscribe("/chat/*", &b);
        subs.subscribe("/chat/**", &b);
        subs.subscribe("/**", &c);
        assert_eq!(subscribers_of(&subs, "/chat/room"), [1, 2, 3]);
        assert_eq!(subscribers_of(&subs, "/chat/room/deep"), [2, 3]);
        assert_eq!(subscribers_of(&subs, "/chat"), [3]);
        assert_eq!(subscribers_of(&subs, "/other"), [3]);
    }

    #[test]
    fn the_top_patterns_are_the_most_subscribed_ties_by_name() {
        let subs = Subscriptions::default();
        let sessions: Vec<_> = (1..=4).map(session).collect();
        for (pattern, count) in [("/c", 1), ("/a", 3), ("/b", 1), ("/d/*", 4), ("/e", 2)] {
            for s in &sessions[..count] {
                subs.subscribe(pattern, s);
            }
        }
        let top = |n| -> Vec<(String, usize)> {
            let rows = subs.top_by_subscribers(n).into_iter();
            rows.map(|(p, c)| (p.into_string(), c)).collect()
        };
        assert_eq!(
            top(3),
            [("/d/*".into(), 4), ("/a".into(), 3), ("/e".into(), 2)]
        );
        assert_eq!(top(10).len(), 5);
        assert_eq!(top(10)[3..], [("/b".into(), 1), ("/c".into(), 1)]);
    }

    #[test]
    fn unsubscribe_and_session_removal_clean_up() {
        let subs = Subscriptions::default();
        let (a, b) = (session(1), session(2));
        assert_eq!(subs.subscribe("/x", &a), Subscribed::First);
        assert_eq!(subs.subscribe("/x", &a), Subscribed::Already);
        assert_eq!(subs.subscribe("/x", &b), Subscribed::Added);
        subs.subscribe("/y/*", &a);
        assert_eq!(subs.unsubscribe("/x", &a), Unsubscribed::Removed);
        assert_eq!(subs.unsubscribe("/x", &a), Unsubscribed::NotSubscribed);
        assert_eq!(subscribers_of(&subs, "/x"), [2]);
        assert_eq!(subs.remove_session(&a), vec![Box::from("/y/*")]);
        assert_eq!(subscribers_of(&subs, "/y/z"), Vec::<SessionKey>::new());
        assert!(subs.has_subscribers("/x"));
        assert_eq!(subs.remove_session(&b), vec![Box::from("/x")]);
        assert!(!subs.has_subscribers("/x"));
        assert_eq!(subs.pattern_count(), 0, "empty patterns are dropped");
    }

    #[test]
    fn first_and_last_subscriber_edges() {
        let subs = Subscriptions::default();
        let (a, b) = (session(1), session(2));
        assert_eq!(subs.subscribe("/x", &a), Subscribed::First);
        assert_eq!(subs.subscribe("/x", &b), Subscribed::Added);
        assert_eq!(subs.unsubscribe("/x", &a), Unsubscribed::Removed);
        assert_eq!(subs.unsubscribe("/x", &b), Unsubscribed::Last);
        assert_eq!(subs.subscribe("/x", &a), Subscribed::First, "again");
    }
}
