//! The registry of live sessions, and of held long polls per browser.
//!
//! Sessions are found by clientId in a sharded map (no global lock). The
//! clientId is 128 random bits in hex: unguessable, because knowing it (with
//! the browser cookie) is all it takes to read a session's messages.
//!
//! Browsers: HTTP/1.1 browsers allow few connections per host, so CometD
//! lets only `maxSessionsPerBrowser` sessions of one browser (one
//! `BAYEUX_BROWSER` cookie) hold a long poll at a time; the others are told
//! `multiple-clients` and poll at `multiSessionInterval`. [`BrowserPolls`]
//! counts those held polls.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use rand::RngCore;
use tokio::time::Instant;

use super::clock::Clock;
use super::grant::Grant;
use super::outbox::OutboxLimits;
use super::session::{Session, SessionKey};

pub struct Sessions {
    by_client_id: DashMap<Box<str>, Arc<Session>>,
    next_key: AtomicU64,
    clock: Clock,
    limits: OutboxLimits,
    /// Bytes per second of deliveries per session, unless its grant says otherwise.
    max_bandwidth: Option<u64>,
    browsers: Arc<BrowserPolls>,
    /// Registered sessions whose grant limits their frequency (QoS). While
    /// there are none, which is the common case, a publish on a channel
    /// without a `[[qos]]` rule skips every per-subscriber QoS check.
    frequency_grants: AtomicUsize,
    /// Numbers WebSockets (from 1; 0 is HTTP), so a session knows which one
    /// its latest connect came on.
    next_socket_id: AtomicU64,
    /// A cluster node's sessions carry log offsets (see
    /// [`Session::is_logged`]).
    logged: bool,
}

impl Sessions {
    pub fn new(limits: OutboxLimits) -> Self {
        Sessions {
            by_client_id: DashMap::new(),
            next_key: AtomicU64::new(1),
            clock: Clock::start(),
            limits,
            max_bandwidth: None,
            browsers: Arc::new(BrowserPolls::default()),
            frequency_grants: AtomicUsize::new(0),
            logged: false,
            next_socket_id: AtomicU64::new(1),
        }
    }

    /// Sets the default bandwidth of new sessions (`max-bandwidth`).
    pub fn with_max_bandwidth(mut self, bytes_per_second: Option<u64>) -> Self {
        self.max_bandwidth = bytes_per_second;
        self
    }

    /// When `session`'s queued deliveries should be looked at again by
    /// whoever waits to write them: when lazy ones fall due, or when the
    /// bandwidth lets them leave, whichever is later. `None`: at once (or
    /// at the next wake-up, when nothing is queued).
    pub fn deliveries_wait_until(&self, session: &Session, now: Instant) -> Option<Instant> {
        let lazy = session.lazy_deadline_ms().map(|ms| self.instant_at(ms));
        match (lazy, session.bandwidth_ready_at(now)) {
            (Some(lazy), Some(bandwidth)) => Some(lazy.max(bandwidth)),
            (lazy, bandwidth) => lazy.or(bandwidth),
        }
    }

    /// A number for a new WebSocket, never 0 and never reused.
    pub fn new_socket_id(&self) -> u64 {
        self.next_socket_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The node's clock (see [`Clock`]).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Milliseconds since the registry was created: the clock sessions age by.
    /// It is tokio's clock, so tests can pause and advance it.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The instant `ms` milliseconds after the registry's epoch.
    pub fn instant_at(&self, ms: u64) -> Instant {
        self.clock.instant_at(ms)
    }

    /// Creates and registers a new session with a fresh clientId, bound to
    /// `browser_id`; `strict` when that browser presented its cookie.
    pub fn create(&self, browser_id: Option<&str>, strict: bool) -> Arc<Session> {
        self.create_as(new_random_id(), browser_id, strict)
    }

    /// [`Sessions::create`] under a clientId the caller drew with
    /// [`new_random_id`] (a cluster counts it before it exists).
    pub fn create_as(
        &self,
        client_id: String,
        browser_id: Option<&str>,
        strict: bool,
    ) -> Arc<Session> {
        let session = Arc::new(self.new_session(client_id.into(), browser_id, strict));
        self.by_client_id
            .insert(session.client_id().into(), session.clone());
        session
    }

    /// Registers a session another node created (a cluster takeover), under
    /// its clientId; `None` if one by that id is already here.
    pub fn adopt(
        &self,
        client_id: &str,
        browser_id: Option<&str>,
        strict: bool,
        prepare: impl FnOnce(&mut Session),
    ) -> Option<Arc<Session>> {
        use dashmap::mapref::entry::Entry;
        match self.by_client_id.entry(client_id.into()) {
            Entry::Occupied(_) => None,
            Entry::Vacant(vacant) => {
                let mut session = self.new_session(client_id.into(), browser_id, strict);
                prepare(&mut session);
                let session = Arc::new(session);
                vacant.insert(session.clone());
                Some(session)
            }
        }
    }

    /// Marks this registry's sessions as a cluster node's.
    pub fn set_logged(&mut self) {
        self.logged = true;
    }

    fn new_session(&self, client_id: Box<str>, browser_id: Option<&str>, strict: bool) -> Session {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let mut session = Session::new(
            key,
            client_id,
            browser_id.map(Into::into),
            self.limits,
            self.now_ms(),
        );
        session.set_bound_strictly(strict);
        session.set_default_max_bandwidth(self.max_bandwidth);
        if self.logged {
            session.set_logged();
        }
        session
    }

    pub fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        self.by_client_id.get(client_id).map(|s| s.clone())
    }

    /// Unregisters a session; the caller cleans up its subscriptions.
    pub fn remove(&self, client_id: &str) -> Option<Arc<Session>> {
        let (_, session) = self.by_client_id.remove(client_id)?;
        if session.limits_frequency() {
            self.frequency_grants.fetch_sub(1, Ordering::Relaxed);
        }
        Some(session)
    }

    /// Sets who `session` speaks for and its limits (once, at handshake; a
    /// second call is ignored and returns `false`).
    pub fn set_grant(&self, session: &Session, grant: Grant) -> bool {
        let set = session.set_grant(grant);
        if set && session.limits_frequency() {
            self.frequency_grants.fetch_add(1, Ordering::Relaxed);
        }
        set
    }

    /// Whether any registered session's grant limits its frequency (a hint
    /// for the publish path, read once per publish).
    pub fn any_frequency_grant(&self) -> bool {
        self.frequency_grants.load(Ordering::Relaxed) > 0
    }

    pub fn len(&self) -> usize {
        self.by_client_id.len()
    }

    /// Gives back the map's memory after a flood of sessions has expired
    /// (a hash map keeps its largest capacity otherwise).
    pub fn shrink_if_sparse(&self) {
        let map = &self.by_client_id;
        if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
            map.shrink_to_fit();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_client_id.is_empty()
    }

    /// Sessions that have been silent for longer than `max_silence_ms` and
    /// are not holding a connect.
    pub fn expired(&self, max_silence_ms: u64) -> Vec<Arc<Session>> {
        let now = self.now_ms();
        self.by_client_id
            .iter()
            .filter(|s| !s.is_holding() && now.saturating_sub(s.last_seen_ms()) > max_silence_ms)
            .map(|s| s.clone())
            .collect()
    }

    /// Every live session (for shutdown).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.by_client_id.iter().map(|s| s.clone()).collect()
    }

    pub fn browsers(&self) -> &Arc<BrowserPolls> {
        &self.browsers
    }
}

/// A new random identifier: 128 bits as 32 lowercase hex digits.
pub fn new_random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut id = String::with_capacity(32);
    for b in bytes {
        use std::fmt::Write;
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// Held long polls per browser: browser id -> the sessions holding one, and
/// how many each holds.
///
/// Every long poll is held and released once, so this is on the
/// long-polling round trip: a browser's entry is a short list (one session
/// in the common case, at most a few), not a map, and a poll's guard shares
/// the entry's key rather than copying it. A hold costs one lookup (and,
/// for a browser that holds nothing yet, its key and list); a release one.
#[derive(Default)]
pub struct BrowserPolls {
    held: DashMap<Arc<str>, Vec<(SessionKey, u32)>>,
}

impl BrowserPolls {
    /// Lets `session` hold a poll for `browser` unless `max` other sessions
    /// of that browser already do. A negative `max` means no limit. The
    /// returned guard releases the slot when dropped.
    pub fn try_hold(
        self: &Arc<Self>,
        browser: &str,
        session: SessionKey,
        max: i64,
    ) -> Option<BrowserPollGuard> {
        let mut held = match self.held.get_mut(browser) {
            Some(held) => held,
            None => self.held.entry(Arc::from(browser)).or_default(),
        };
        if max >= 0 {
            let others = held.iter().filter(|(k, _)| *k != session).count();
            if others as i64 >= max {
                return None;
            }
        }
        match held.iter_mut().find(|(k, _)| *k == session) {
            Some((_, count)) => *count += 1,
            None => held.push((session, 1)),
        }
        Some(BrowserPollGuard {
            polls: self.clone(),
            browser: held.key().clone(),
            session,
        })
    }

    fn release(&self, browser: &str, session: SessionKey) {
        self.held.remove_if_mut(browser, |_, held| {
            if let Some(at) = held.iter().position(|(k, _)| *k == session) {
                held[at].1 -= 1;
                if held[at].1 == 0 {
                    held.swap_remove(at);
                }
            }
            held.is_empty()
        });
    }
}

/// A held poll's slot in its browser's count.
pub struct BrowserPollGuard {
    polls: Arc<BrowserPolls>,
    browser: Arc<str>,
    session: SessionKey,
}

impl Drop for BrowserPollGuard {
    fn drop(&mut self) {
        self.polls.release(&self.browser, self.session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_128_bit_hex_and_distinct() {
        let a = new_random_id();
        let b = new_random_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn browser_polls_limit_other_sessions_only() {
        let polls = Arc::new(BrowserPolls::default());
        let first = polls
            .try_hold("b", 1, 1)
            .expect("first poll of the browser");
        // The same session may poll again (a newer connect replacing the held one).
        let again = polls.try_hold("b", 1, 1).expect("same session");
        assert!(
            polls.try_hold("b", 2, 1).is_none(),
            "a second session is refused"
        );
        drop(first);
        assert!(polls.try_hold("b", 2, 1).is_none(), "still held by `again`");
        drop(again);
        let second = polls.try_hold("b", 2, 1).expect("slot released");
        assert!(
            polls.try_hold("other", 3, 1).is_some(),
            "browsers are independent"
        );
        assert!(
            polls.try_hold("b", 4, -1).is_some(),
            "negative means unlimited"
        );
        drop(second);
        assert!(polls.try_hold("b", 5, 0).is_none(), "zero means never hold");
    }
}
