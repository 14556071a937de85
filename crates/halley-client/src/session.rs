//! What one Bayeux session remembers between requests.
//!
//! The `clientId` changes on every (re-)handshake; the subscriptions survive
//! it, because after a re-handshake the client subscribes again to everything
//! the application had asked for, as the CometD clients do. Locks here are
//! plain `std` mutexes held for a copy or a push, never across an `.await`.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use halley_protocol::{Advice, Reconnect};

use crate::delivery::{Delivery, DeliverySink};
use crate::message::Incoming;

/// Where a client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No session: before `handshake()`, after `disconnect()`, or after the
    /// server advised `reconnect: none`.
    Disconnected,
    /// Handshaken; the first `/meta/connect` has not succeeded yet, or the
    /// last one failed and the client is retrying or re-handshaking.
    Connecting,
    /// The last `/meta/connect` succeeded.
    Connected,
}

/// Counters a test or the load generator reads; a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Successful handshakes, the first one included.
    pub handshakes: u64,
    /// Handshakes the connect loop made on its own because the server
    /// advised `reconnect: handshake` (the session was lost).
    pub rehandshakes: u64,
    /// Successful `/meta/connect` replies.
    pub connects: u64,
    /// `/meta/connect` requests that failed (network, HTTP status, refusal).
    pub connect_failures: u64,
    /// Deliveries handed to the application.
    pub deliveries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    handshakes: AtomicU64,
    rehandshakes: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    deliveries: AtomicU64,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Handshakes,
    Rehandshakes,
    Connects,
    ConnectFailures,
}

/// The state of one client's session.
#[derive(Debug)]
pub(crate) struct Session {
    client_id: Mutex<Option<String>>,
    /// The advice of the handshake reply: what later partial advice overlays.
    standing_advice: Mutex<Advice>,
    /// The advice in force for the next connect.
    advice: Mutex<Advice>,
    subscriptions: Mutex<Vec<String>>,
    next_id: AtomicU64,
    state: AtomicU8,
    counters: Counters,
    deliveries: DeliverySink,
    /// The ack extension: `None` while it is off for this session, else the
    /// last batch received (see [`crate::ack`]).
    ack: Mutex<Option<u64>>,
}

/// What a client assumes before the server said anything (CometD's defaults).
pub(crate) fn default_advice() -> Advice {
    Advice::retry(0, 20_000)
}

/// `base` with every field `over` has replaced.
pub(crate) fn overlay(base: &Advice, over: &Advice) -> Advice {
    Advice {
        reconnect: over.reconnect.or(base.reconnect),
        interval: over.interval.or(base.interval),
        timeout: over.timeout.or(base.timeout),
        max_interval: over.max_interval.or(base.max_interval),
        multiple_clients: over.multiple_clients.or(base.multiple_clients),
    }
}

impl Session {
    pub(crate) fn new(deliveries: DeliverySink) -> Self {
        Session {
            client_id: Mutex::new(None),
            standing_advice: Mutex::new(default_advice()),
            advice: Mutex::new(default_advice()),
            subscriptions: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            state: AtomicU8::new(State::Disconnected as u8),
            counters: Counters::default(),
            deliveries,
            ack: Mutex::new(None),
        }
    }

    /// A fresh message id (`"1"`, `"2"`, ...), unique for this client.
    pub fn next_id(&self) -> String {
        self.next_id.fetch_add(1, Ordering::Relaxed).to_string()
    }

    pub fn client_id(&self) -> Option<String> {
        self.client_id.lock().expect("session poisoned").clone()
    }

    pub(crate) fn set_client_id(&self, client_id: Option<String>) {
        *self.client_id.lock().expect("session poisoned") = client_id;
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            x if x == State::Connected as u8 => State::Connected,
            x if x == State::Connecting as u8 => State::Connecting,
            _ => State::Disconnected,
        }
    }

    pub(crate) fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Release);
    }

    pub fn advice(&self) -> Advice {
        self.advice.lock().expect("session poisoned").clone()
    }

    /// The handshake reply's advice becomes the base for later replies.
    pub(crate) fn set_standing_advice(&self, advice: Option<&Advice>) {
        let standing = overlay(&default_advice(), advice.unwrap_or(&Advice::default()));
        *self.advice.lock().expect("session poisoned") = standing.clone();
        *self.standing_advice.lock().expect("session poisoned") = standing;
    }

    /// A reply's advice replaces the advice in force (fields it lacks come
    /// from the handshake's); a reply without advice changes nothing. This is
    /// what the CometD JavaScript client does, and it is why a one-off
    /// `multiple-clients` interval does not stick.
    pub(crate) fn apply_advice(&self, advice: Option<&Advice>) {
        if let Some(advice) = advice {
            let standing = self
                .standing_advice
                .lock()
                .expect("session poisoned")
                .clone();
            *self.advice.lock().expect("session poisoned") = overlay(&standing, advice);
        }
    }

    /// The patterns to subscribe again after a re-handshake.
    pub fn subscriptions(&self) -> Vec<String> {
        self.subscriptions.lock().expect("session poisoned").clone()
    }

    pub(crate) fn remember_subscriptions(&self, patterns: &[String]) {
        let mut subscriptions = self.subscriptions.lock().expect("session poisoned");
        for pattern in patterns {
            if !subscriptions.contains(pattern) {
                subscriptions.push(pattern.clone());
            }
        }
    }

    pub(crate) fn forget_subscriptions(&self, patterns: &[String]) {
        let mut subscriptions = self.subscriptions.lock().expect("session poisoned");
        subscriptions.retain(|s| !patterns.contains(s));
    }

    pub(crate) fn count(&self, counter: Counter) {
        let c = &self.counters;
        let atomic = match counter {
            Counter::Handshakes => &c.handshakes,
            Counter::Rehandshakes => &c.rehandshakes,
            Counter::Connects => &c.connects,
            Counter::ConnectFailures => &c.connect_failures,
        };
        atomic.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            handshakes: c.handshakes.load(Ordering::Relaxed),
            rehandshakes: c.rehandshakes.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            connect_failures: c.connect_failures.load(Ordering::Relaxed),
            deliveries: c.deliveries.load(Ordering::Relaxed),
        }
    }

    /// With the ack extension on for this session, the last batch received
    /// (0 before the first); `None` when it is off.
    pub fn ack_batch(&self) -> Option<u64> {
        *self.ack.lock().expect("session poisoned")
    }

    /// Turns the ack extension on (`Some(first batch)`) or off for the
    /// session that is starting.
    pub(crate) fn set_ack(&self, batch: Option<u64>) {
        *self.ack.lock().expect("session poisoned") = batch;
    }

    /// With acks on, a successful connect reply among `replies` numbers the
    /// batch just received.
    fn record_ack(&self, replies: &[Incoming]) {
        let mut ack = self.ack.lock().expect("session poisoned");
        let Some(last) = ack.as_mut() else {
            return;
        };
        for reply in replies {
            if reply.channel == halley_protocol::meta::CONNECT && reply.is_successful() {
                if let Some(batch) = crate::ack::batch(reply.ext.as_deref()) {
                    *last = batch;
                }
            }
        }
    }

    /// Hands every delivery in `messages` to the application, in order, and
    /// returns the replies. With the ack extension, a successful connect
    /// reply's batch number is recorded after the deliveries of the same
    /// response were handed over (never before: a batch counts as received
    /// only once its deliveries are).
    pub(crate) fn dispatch(&self, messages: Vec<Incoming>) -> Vec<Incoming> {
        let mut replies = Vec::new();
        for message in messages {
            if message.is_reply() {
                replies.push(message);
                continue;
            }
            let delivery = Delivery {
                channel: message.channel,
                data: message.data.unwrap_or_else(|| {
                    serde_json::value::RawValue::from_string("null".into()).expect("valid JSON")
                }),
                id: message.id,
                ext: message.ext,
            };
            self.counters.deliveries.fetch_add(1, Ordering::Relaxed);
            self.deliveries.hand_over(delivery);
        }
        self.record_ack(&replies);
        replies
    }

    /// `reconnect` advised by a failed reply: its own advice first, then the
    /// error code (402 means the session is gone), then the advice in force.
    pub(crate) fn reconnect_after_failure(&self, reply: &Incoming) -> Reconnect {
        if let Some(reconnect) = reply.advice.as_ref().and_then(|a| a.reconnect) {
            return reconnect;
        }
        if reply
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("402:"))
        {
            return Reconnect::Handshake;
        }
        self.advice().reconnect.unwrap_or(Reconnect::Retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Deliveries;
    use crate::message::decode_response;

    fn session() -> (Session, Deliveries) {
        let (tx, rx) = Deliveries::channel();
        (Session::new(tx), rx)
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let (s, _) = session();
        assert_eq!(s.next_id(), "1");
        assert_eq!(s.next_id(), "2");
    }

    #[test]
    fn advice_overlays_the_handshake_advice() {
        let (s, _) = session();
        s.set_standing_advice(Some(&Advice::retry(0, 1000)));
        let multi = Advice {
            reconnect: Some(Reconnect::Retry),
            interval: Some(2000),
            multiple_clients: Some(true),
            ..Advice::default()
        };
        s.apply_advice(Some(&multi));
        assert_eq!(s.advice().interval, Some(2000));
        assert_eq!(s.advice().timeout, Some(1000));
        s.apply_advice(None);
        assert_eq!(s.advice().interval, Some(2000), "no advice changes nothing");
        s.apply_advice(Some(&Advice::retry(0, 1000)));
        assert_eq!(s.advice().interval, Some(0));
        assert_eq!(s.advice().multiple_clients, None);
    }

    #[test]
    fn dispatch_delivers_in_order_and_returns_replies() {
        let (s, mut rx) = session();
        let messages = decode_response(
            br#"[{"channel":"/a","data":1},{"channel":"/a","id":"3","successful":true},
                 {"channel":"/b","data":{"x":2},"id":"9","ext":{"e":1}},{"channel":"/c"},
                 {"channel":"/meta/connect","successful":true}]"#,
        )
        .unwrap();
        let replies = s.dispatch(messages);
        assert_eq!(replies.len(), 2);
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].channel.as_str(), got[0].data.get()), ("/a", "1"));
        assert_eq!(got[1].id.as_deref(), Some("9"));
        assert_eq!(got[1].data_value()["x"], 2);
        assert_eq!(got[1].ext_value().unwrap()["e"], 1);
        assert_eq!(got[2].data.get(), "null");
        assert_eq!(s.stats().deliveries, 3);
    }

    #[test]
    fn dispatch_records_the_batch_of_successful_connect_replies_only_with_acks_on() {
        let (s, rx) = session();
        let response = |text: &str| decode_response(text.as_bytes()).unwrap();
        s.dispatch(response(
            r#"[{"channel":"/meta/connect","successful":true,"ext":{"ack":3}}]"#,
        ));
        assert_eq!(s.ack_batch(), None, "off: nothing recorded");

        s.set_ack(Some(0));
        let replies = s.dispatch(response(
            r#"[{"channel":"/a","data":1},{"channel":"/a","data":2},
                {"channel":"/meta/connect","successful":true,"ext":{"ack":4}}]"#,
        ));
        assert_eq!(replies.len(), 1);
        assert_eq!(rx.len(), 2, "the batch's deliveries were handed over");
        assert_eq!(s.ack_batch(), Some(4));
        for refused in [
            r#"[{"channel":"/meta/connect","successful":false,"error":"402::x","ext":{"ack":9}}]"#,
            r#"[{"channel":"/meta/subscribe","successful":true,"ext":{"ack":9}}]"#,
            r#"[{"channel":"/meta/connect","successful":true}]"#,
            r#"[{"channel":"/meta/connect","successful":true,"ext":{"ack":true}}]"#,
        ] {
            s.dispatch(response(refused));
            assert_eq!(s.ack_batch(), Some(4), "{refused}");
        }
        s.set_ack(None);
        assert_eq!(s.ack_batch(), None);
    }

    #[test]
    fn reconnect_after_failure_follows_advice_then_code() {
        let (s, _) = session();
        let replies = decode_response(
            br#"[{"channel":"/meta/connect","successful":false,"error":"402::session_unknown"},
                 {"channel":"/meta/connect","successful":false,"error":"402::x","advice":{"reconnect":"none"}},
                 {"channel":"/meta/connect","successful":false,"error":"500::boom"}]"#,
        )
        .unwrap();
        assert_eq!(s.reconnect_after_failure(&replies[0]), Reconnect::Handshake);
        assert_eq!(s.reconnect_after_failure(&replies[1]), Reconnect::None);
        assert_eq!(s.reconnect_after_failure(&replies[2]), Reconnect::Retry);
    }

    #[test]
    fn subscriptions_are_a_set() {
        let (s, _) = session();
        s.remember_subscriptions(&["/a".into(), "/b/**".into()]);
        s.remember_subscriptions(&["/a".into()]);
        assert_eq!(s.subscriptions(), ["/a", "/b/**"]);
        s.forget_subscriptions(&["/a".into()]);
        assert_eq!(s.subscriptions(), ["/b/**"]);
    }
}
