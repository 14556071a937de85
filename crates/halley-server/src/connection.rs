//! The connection state machine: what a transport writes, and when it must
//! look again. One for every transport, with no I/O of its own.
//!
//! A transport owns one [`Connection`] per HTTP request (long-polling,
//! callback-polling) or per WebSocket, and drives it with three calls,
//! each given the time and a [`BodyWriter`] to fill:
//!
//! - [`Connection::on_exchange`] once a batch is handled: writes the
//!   replies in the order Bayeux wants (handshake replies, queued
//!   deliveries, other replies, the `/meta/connect` reply last) or keeps the
//!   connect to hold it;
//! - [`Connection::poll`] when the session is woken or the time it asked
//!   for comes: writes what is due (deliveries, a held connect's reply);
//! - [`Connection::shutdown`] when the server stops: answers a held connect
//!   with `reconnect: retry`.
//!
//! Each returns a [`Status`]: `Done` (HTTP: the response is complete) or
//! `Waiting { until }`: wait for the session's wake-up
//! ([`Connection::session`], registered *before* calling `poll`, so none is
//! missed), for `until`, or for shutdown, then `poll` again. The machine
//! never sleeps and never reads a clock: tests drive it with chosen times.
//!
//! The rules it applies:
//!
//! - HTTP holds a connect when it is alone in its request, not the
//!   session's first, the client did not ask for `advice.timeout: 0`,
//!   nothing is due, and fewer than `maxSessionsPerBrowser` other sessions
//!   of the browser hold one (else `multiple-clients`); it answers when a
//!   delivery falls due (a lazy one: at its deadline; one over the
//!   session's bandwidth: when it may leave), a newer connect supersedes
//!   it, the session closes, the server stops, or `timeout` passes.
//! - WebSocket keeps the connect only as a timer and writes deliveries as
//!   soon as they are due, on the socket of the session's latest connect
//!   only (a half-dead old socket cannot swallow them), and only while the
//!   session is open (a closed session's deliveries die with it); with the
//!   ack extension deliveries travel only in (numbered) connect replies, so
//!   a due delivery answers the held connect.
//! - A connect that is not answered by its own request (superseded) gets a
//!   reply without deliveries: its client has moved on.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use halley_protocol::BodyWriter;
use tokio::time::Instant;

use crate::exchange::{ConnectEnd, Exchange, PendingConnect};
use crate::node::Node;
use crate::state::session::Session;
use crate::state::sessions::BrowserPollGuard;

/// What the transport does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// HTTP: the response is complete; write it and stop.
    Done,
    /// Wait for the session's wake-up, shutdown, or `until` (if any), then
    /// call [`Connection::poll`].
    Waiting { until: Option<Instant> },
}

enum Kind {
    /// One HTTP request: at most one connect, held at most once.
    Http,
    /// A WebSocket: connects come and go on it.
    WebSocket { socket_id: u64 },
}

/// A connect being held, with its deadline.
struct Held {
    connect: PendingConnect,
    deadline: Instant,
    /// HTTP: the browser's poll slot, released when the hold ends.
    _browser_slot: Option<BrowserPollGuard>,
}

/// See the module documentation.
pub struct Connection {
    node: Arc<Node>,
    kind: Kind,
    /// WebSocket: the session this socket serves (it counts as holding
    /// while attached, so it does not expire under an open socket).
    /// HTTP: the session of the held connect.
    session: Option<Arc<Session>>,
    held: Option<Held>,
}

impl Connection {
    /// The machine of one HTTP request.
    pub fn http(node: Arc<Node>) -> Self {
        Connection {
            node,
            kind: Kind::Http,
            session: None,
            held: None,
        }
    }

    /// The machine of WebSocket `socket_id`.
    pub fn websocket(node: Arc<Node>, socket_id: u64) -> Self {
        Connection {
            node,
            kind: Kind::WebSocket { socket_id },
            session: None,
            held: None,
        }
    }

    /// The session whose wake-ups the transport waits for, if any.
    pub fn session(&self) -> Option<&Arc<Session>> {
        self.session.as_ref()
    }

    /// Whether a connect is being held.
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// A batch was handled: writes what goes out now into `body`.
    pub fn on_exchange(
        &mut self,
        exchange: Exchange,
        now: Instant,
        body: &mut BodyWriter,
    ) -> Status {
        match self.kind {
            Kind::Http => self.http_exchange(exchange, now, body),
            Kind::WebSocket { .. } => self.websocket_exchange(exchange, now, body),
        }
    }

    /// The session was woken or the awaited time came: writes what is due.
    pub fn poll(&mut self, now: Instant, body: &mut BodyWriter) -> Status {
        match self.kind {
            Kind::Http => self.http_poll(now, body),
            Kind::WebSocket { .. } => self.websocket_poll(now, body),
        }
    }

    /// The server is stopping: a held connect is answered (`reconnect:
    /// retry`); nothing else is written.
    pub fn shutdown(&mut self, now: Instant, body: &mut BodyWriter) -> Status {
        if self.held.is_some() {
            self.answer_held(ConnectEnd::Shutdown, now, body);
        }
        match self.kind {
            Kind::Http => Status::Done,
            Kind::WebSocket { .. } => Status::Waiting { until: None },
        }
    }

    fn http_exchange(
        &mut self,
        mut exchange: Exchange,
        now: Instant,
        body: &mut BodyWriter,
    ) -> Status {
        let Some(pending) = exchange.connect.take() else {
            let deliveries = match exchange.session.as_ref().filter(|s| !s.is_closed()) {
                Some(session) => session.take_piggyback(now),
                None => VecDeque::new(),
            };
            write_body(body, &exchange, &deliveries, None);
            return Status::Done;
        };
        let now_ms = self.node.sessions().clock().ms_at(now);
        let session = pending.session().clone();
        let leaving = self.node.shutdown().asks_to_leave(session.client_id());
        let holdable = exchange.batch_len == 1
            && !pending.hold_for().is_zero()
            && !session.has_due_deliveries(now_ms, now);
        let end = if leaving {
            ConnectEnd::Shutdown
        } else if !holdable {
            ConnectEnd::Immediate
        } else if pending.refused_by_cluster() {
            ConnectEnd::MultipleClients
        } else {
            // One held poll per browser (HTTP/1.1 connection limits): the others poll.
            let slot = exchange.browser_id().map(|browser| {
                self.node.sessions().browsers().try_hold(
                    browser,
                    session.key(),
                    self.node.config().max_sessions_per_browser,
                )
            });
            match slot {
                Some(None) => ConnectEnd::MultipleClients,
                Some(Some(slot)) => return self.hold(pending, now, Some(slot), body),
                None => return self.hold(pending, now, None, body),
            }
        };
        let (reply, deliveries) = pending.answer(&self.node, end, now);
        write_body(body, &exchange, &deliveries, Some(&reply));
        Status::Done
    }

    /// Keeps an HTTP connect to answer later (alone in its request: there
    /// is nothing else to write); the session counts as holding meanwhile
    /// (it does not expire).
    fn hold(
        &mut self,
        connect: PendingConnect,
        now: Instant,
        slot: Option<BrowserPollGuard>,
        body: &mut BodyWriter,
    ) -> Status {
        let session = connect.session().clone();
        session.start_holding();
        self.session = Some(session);
        self.held = Some(Held {
            deadline: now + connect.hold_for(),
            connect,
            _browser_slot: slot,
        });
        self.http_poll(now, body)
    }

    fn http_poll(&mut self, now: Instant, body: &mut BodyWriter) -> Status {
        let Some(held) = &self.held else {
            return Status::Done;
        };
        let session = held.connect.session();
        let now_ms = self.node.sessions().clock().ms_at(now);
        let end = held.connect.must_end(&self.node).or_else(|| {
            if session.has_due_deliveries(now_ms, now) {
                Some(ConnectEnd::Deliveries)
            } else if now >= held.deadline {
                Some(ConnectEnd::Timeout)
            } else {
                None
            }
        });
        match end {
            Some(end) => {
                self.answer_held(end, now, body);
                Status::Done
            }
            None => Status::Waiting {
                until: Some(self.wait_until(session, held.deadline, now)),
            },
        }
    }

    fn websocket_exchange(
        &mut self,
        mut exchange: Exchange,
        now: Instant,
        body: &mut BodyWriter,
    ) -> Status {
        let session = exchange
            .session
            .clone()
            .or_else(|| exchange.connect.as_ref().map(|c| c.session().clone()));
        if let Some(session) = session.filter(|s| !s.is_closed()) {
            self.attach(Some(session), now);
        }
        let mut connect_reply = None;
        let mut superseded = None;
        if let Some(pending) = exchange.connect.take() {
            if self
                .node
                .shutdown()
                .asks_to_leave(pending.session().client_id())
            {
                connect_reply = Some(pending.answer(&self.node, ConnectEnd::Shutdown, now));
            } else if pending.hold_for().is_zero() {
                connect_reply = Some(pending.answer(&self.node, ConnectEnd::Immediate, now));
            } else {
                let deadline = now + pending.hold_for();
                let older = self.held.replace(Held {
                    connect: pending,
                    deadline,
                    _browser_slot: None,
                });
                if let Some(older) = older {
                    // Numbered with acks; carries nothing (not the latest).
                    superseded = Some(
                        older
                            .connect
                            .answer(&self.node, ConnectEnd::Superseded, now)
                            .0,
                    );
                }
            }
        }
        // Deliveries ride along only on the socket of the session's latest
        // connect (and, with the ack extension, only with a connect reply).
        let deliveries = match (self.owned_session(), connect_reply.as_mut()) {
            (_, Some((_, deliveries))) => std::mem::take(deliveries),
            (Some(session), None) => session.take_piggyback(now),
            (None, None) => VecDeque::new(),
        };
        write_body(body, &exchange, &deliveries, None);
        for reply in superseded
            .iter()
            .chain(connect_reply.as_ref().map(|(r, _)| r))
        {
            body.push_reply(reply);
        }
        self.websocket_waiting(now)
    }

    fn websocket_poll(&mut self, now: Instant, body: &mut BodyWriter) -> Status {
        let now_ms = self.node.sessions().clock().ms_at(now);
        if let Some(session) = self
            .owned_session()
            .filter(|s| s.has_due_deliveries(now_ms, now))
        {
            if !session.ack_enabled() {
                for delivery in session.take_deliveries(now) {
                    body.push_encoded(&delivery);
                }
                return self.websocket_waiting(now);
            }
            // With the ack extension deliveries travel only in a
            // (numbered) connect reply: answer the held one now.
            if self.held.is_some() {
                self.answer_held(ConnectEnd::Deliveries, now, body);
                return self.websocket_waiting(now);
            }
        }
        let end = self.held.as_ref().and_then(|held| {
            held.connect
                .must_end(&self.node)
                .or((now >= held.deadline).then_some(ConnectEnd::Timeout))
        });
        if let Some(end) = end {
            self.answer_held(end, now, body);
        }
        self.websocket_waiting(now)
    }

    fn websocket_waiting(&self, now: Instant) -> Status {
        let held = self.held.as_ref().map(|held| held.deadline);
        // Lazy deliveries wait, but not past their deadline; deliveries
        // over the session's bandwidth wait until they may leave.
        let deliveries = self
            .owned_session()
            .and_then(|s| self.node.sessions().deliveries_wait_until(s, now));
        let until = match (held, deliveries) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Status::Waiting { until }
    }

    /// The earlier of `deadline` and when `session`'s waiting deliveries
    /// may leave.
    fn wait_until(&self, session: &Session, deadline: Instant, now: Instant) -> Instant {
        self.node
            .sessions()
            .deliveries_wait_until(session, now)
            .map_or(deadline, |due| due.min(deadline))
    }

    /// The served session, if this socket is the one its latest connect
    /// came on and it is still open: a closed session's queued deliveries
    /// die with it, as on long-polling (the socket may outlive it, e.g.
    /// after a `/meta/disconnect` or an expiry).
    fn owned_session(&self) -> Option<&Arc<Session>> {
        let Kind::WebSocket { socket_id } = self.kind else {
            return None;
        };
        self.session
            .as_ref()
            .filter(|s| s.owner_socket() == socket_id && !s.is_closed())
    }

    /// Answers the held connect for `end`, with the deliveries that ride on
    /// its reply.
    fn answer_held(&mut self, end: ConnectEnd, now: Instant, body: &mut BodyWriter) {
        let Some(held) = self.held.take() else {
            return;
        };
        if let Kind::Http = self.kind {
            held.connect
                .session()
                .stop_holding(self.node.sessions().clock().ms_at(now));
        }
        let Held {
            connect,
            _browser_slot,
            ..
        } = held;
        drop(_browser_slot);
        tracing::trace!(
            client_id = connect.session().client_id(),
            ?end,
            "connect answered"
        );
        let (reply, deliveries) = connect.answer(&self.node, end, now);
        for delivery in &deliveries {
            body.push_encoded(delivery);
        }
        body.push_reply(&reply);
    }

    /// Makes `session` the one this socket serves. While a socket serves a
    /// session, the session counts as holding and does not expire; when the
    /// socket goes, the session's expiry clock starts.
    fn attach(&mut self, session: Option<Arc<Session>>, now: Instant) {
        let same = match (&self.session, &session) {
            (Some(a), Some(b)) => a.key() == b.key(),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        if let Some(old) = self.session.take() {
            old.stop_holding(self.node.sessions().clock().ms_at(now));
        }
        if let Some(new) = &session {
            new.start_holding();
        }
        self.session = session;
    }
}

impl Drop for Connection {
    /// A request dropped mid-hold (the client went away) or a closed socket
    /// stops counting as holding: the session's expiry clock starts.
    fn drop(&mut self) {
        let now_ms = self.node.sessions().now_ms();
        match self.kind {
            Kind::Http => {
                if let Some(held) = self.held.take() {
                    held.connect.session().stop_holding(now_ms);
                }
            }
            Kind::WebSocket { .. } => {
                if let Some(session) = self.session.take() {
                    session.stop_holding(now_ms);
                }
            }
        }
    }
}

/// Handshake replies, deliveries, the other replies, then `connect` (last).
fn write_body(
    body: &mut BodyWriter,
    exchange: &Exchange,
    deliveries: &VecDeque<Bytes>,
    connect: Option<&halley_protocol::Reply>,
) {
    for reply in &exchange.handshake_replies {
        body.push_reply(reply);
    }
    for delivery in deliveries {
        body.push_encoded(delivery);
    }
    for reply in exchange.replies.iter().chain(connect) {
        body.push_reply(reply);
    }
}
