//! Who listens to what: subscription patterns to the sessions behind them.
//!
//! Keys are subscription strings exactly as subscribed (`/chat/room1`,
//! `/chat/*`, `/**`). A publish on `/chat/room1` looks up only the keys that
//! can match it ([`ChannelName::matching_patterns`]): O(channel depth) map
//! lookups, however many patterns exist, and no global lock: the map is
//! sharded and each pattern's subscriber set has its own lock, held only
//! while the publisher copies a `Bytes` handle into each outbox.

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

impl Subscriptions {
    /// Adds `session` to `pattern` (already validated). Returns false if it
    /// was already subscribed.
    pub fn subscribe(&self, pattern: &str, session: &Arc<Session>) -> bool {
        // The shard lock of `entry` is held while inserting, so a concurrent
        // unsubscribe cannot remove the set between lookup and insert.
        let subscribers = self.by_pattern.entry(pattern.into()).or_default();
        let added = subscribers
            .sessions
            .write()
            .insert(session.key(), session.clone())
            .is_none();
        drop(subscribers);
        session.add_subscription(pattern);
        added
    }

    /// Removes `session` from `pattern`; false if it was not subscribed.
    pub fn unsubscribe(&self, pattern: &str, session: &Session) -> bool {
        session.remove_subscription(pattern);
        self.remove_from_pattern(pattern, session.key())
    }

    fn remove_from_pattern(&self, pattern: &str, key: SessionKey) -> bool {
        let mut removed = false;
        // remove_if holds the shard's write lock: the emptiness check and the
        // removal are atomic with respect to `subscribe`.
        self.by_pattern.remove_if(pattern, |_, subscribers| {
            let mut sessions = subscribers.sessions.write();
            removed = sessions.remove(&key).is_some();
            sessions.is_empty()
        });
        removed
    }

    /// Removes every subscription of a session that is going away.
    pub fn remove_session(&self, session: &Session) {
        for pattern in session.take_subscriptions() {
            self.remove_from_pattern(&pattern, session.key());
        }
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
    fn unsubscribe_and_session_removal_clean_up() {
        let subs = Subscriptions::default();
        let (a, b) = (session(1), session(2));
        assert!(subs.subscribe("/x", &a));
        assert!(!subs.subscribe("/x", &a));
        subs.subscribe("/x", &b);
        subs.subscribe("/y/*", &a);
        assert!(subs.unsubscribe("/x", &a));
        assert!(!subs.unsubscribe("/x", &a));
        assert_eq!(subscribers_of(&subs, "/x"), [2]);
        subs.remove_session(&a);
        assert_eq!(subscribers_of(&subs, "/y/z"), Vec::<SessionKey>::new());
        subs.remove_session(&b);
        assert_eq!(subs.pattern_count(), 0, "empty patterns are dropped");
    }
}
