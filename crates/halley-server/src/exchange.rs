//! One request's passage through the node: where it came from
//! ([`Origin`]), what the handlers made of it ([`Exchange`]), and the
//! `/meta/connect` it may leave to answer last ([`PendingConnect`]).
//!
//! The dispatcher ([`crate::engine`]) fills an exchange; the connection
//! state machine ([`crate::connection`]) turns it into what a transport
//! writes. Both sit above this file; the handlers in between take it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use halley_protocol::{meta, Advice, BayeuxError, Message, Reply};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::ext::{Context, InboundExt};
use crate::node::browser_polls::ClusterPoll;
use crate::node::Node;
use crate::state::session::{ConnectionType, Session};
use crate::state::sessions::new_random_id;

/// Where a batch came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub connection_type: ConnectionType,
    /// The `BAYEUX_BROWSER` cookie sent with the request, if any.
    pub browser_id: Option<String>,
    /// Whether the response can set a cookie. An HTTP response can; a
    /// WebSocket frame cannot.
    pub can_set_cookie: bool,
    /// The WebSocket this batch came on (0 for HTTP): a session's deliveries
    /// go to the socket of its latest `/meta/connect` only.
    pub socket_id: u64,
    /// When that socket was opened, on the node's clock.
    pub socket_opened_ms: Option<u64>,
    /// The client's address, for per-IP limits (none: not limited, e.g. an
    /// embedder's or a test's batch).
    pub peer: Option<std::net::IpAddr>,
}

impl Origin {
    /// A request over HTTP (long-polling or callback-polling).
    pub fn http(connection_type: ConnectionType, browser_id: Option<String>) -> Self {
        Origin {
            connection_type,
            browser_id,
            can_set_cookie: true,
            socket_id: 0,
            socket_opened_ms: None,
            peer: None,
        }
    }

    /// A frame on WebSocket `socket_id`, opened at `opened_ms` with
    /// `browser_id`'s cookie (if any).
    pub fn websocket(socket_id: u64, opened_ms: u64, browser_id: Option<String>) -> Self {
        Origin {
            connection_type: ConnectionType::WebSocket,
            browser_id,
            can_set_cookie: false,
            socket_id,
            socket_opened_ms: Some(opened_ms),
            peer: None,
        }
    }

    /// The same, from the client at `peer`.
    pub fn from_peer(mut self, peer: Option<std::net::IpAddr>) -> Self {
        self.peer = peer;
        self
    }
}

/// The outcome of one batch, for the connection state machine to write.
pub struct Exchange {
    pub origin: Origin,
    /// Handshake replies: written first.
    pub handshake_replies: Vec<Reply>,
    /// Every other reply except the connect's, in request order.
    pub replies: Vec<Reply>,
    /// The session whose queued deliveries this response carries.
    pub session: Option<Arc<Session>>,
    /// The `/meta/connect` to answer last.
    pub connect: Option<PendingConnect>,
    /// A browser id issued by this exchange: the transport sets the cookie.
    pub new_browser_id: Option<String>,
    /// Number of messages in the batch (a connect is held only when alone).
    pub batch_len: usize,
}

impl Exchange {
    /// An exchange for a batch of `batch_len` messages, nothing handled yet.
    pub fn new(origin: Origin, batch_len: usize) -> Self {
        Exchange {
            origin,
            handshake_replies: Vec::new(),
            replies: Vec::new(),
            session: None,
            connect: None,
            new_browser_id: None,
            batch_len,
        }
    }

    /// The browser this request speaks for: the cookie it sent, or the one just issued.
    pub fn browser_id(&self) -> Option<&str> {
        self.origin
            .browser_id
            .as_deref()
            .or(self.new_browser_id.as_deref())
    }

    /// The browser a new session is bound to: the request's, or a new one
    /// when the transport can set the cookie, or none.
    pub fn browser_for_new_session(&mut self) -> Option<String> {
        if let Some(id) = self.browser_id() {
            return Some(id.to_owned());
        }
        if !self.origin.can_set_cookie {
            return None;
        }
        let id = new_random_id();
        self.new_browser_id = Some(id.clone());
        Some(id)
    }

    /// Finds the session a message speaks for, or the error reply to send.
    ///
    /// A clientId alone is not enough (unless `trust-client-session`): a
    /// session is served only with what it was created on, so a leaked
    /// clientId cannot be used to read someone else's messages
    /// ([`Binding::check`]). On a cluster node, a clientId this node does
    /// not hold may be another node's session: it is taken over (see
    /// `node/takeover.rs`); `acknowledged` is the ack extension's batch
    /// number of a connect. Any message is a sign of life.
    pub async fn resolve_session(
        &mut self,
        node: &Node,
        message: &Message,
        acknowledged: Option<u64>,
    ) -> Result<Arc<Session>, Box<Reply>> {
        let config = node.config();
        let reply_channel = message.channel.clone().unwrap_or_default();
        let Some(client_id) = message.client_id.as_deref() else {
            return Err(Box::new(
                Reply::to(reply_channel, message.id.clone())
                    .failure(BayeuxError::CLIENT_ID_MISSING)
                    .with_advice(Advice::handshake(config.interval as i64)),
            ));
        };
        let mut session = node.sessions().get(client_id);
        // A session let go to another node while this request was on its
        // way (two requests of one client on two nodes) is taken back,
        // rather than answered as unknown.
        for _ in 0..3 {
            if session
                .as_ref()
                .is_some_and(|s| !(s.is_closed() && s.moved()))
            {
                break;
            }
            session = match node.adopt(client_id, acknowledged).await {
                Ok(Some(session)) => Some(session),
                // Unknown to the cluster too: asked once, not three times.
                Ok(None) => break,
                Err(not_now) => {
                    // Redis lost, or this node stopping: the session may
                    // well exist elsewhere; the client keeps its clientId
                    // and tries again.
                    return Err(Box::new(
                        Reply::to(reply_channel, message.id.clone())
                            .failure(not_now.error())
                            .with_advice(Advice::retry(
                                config.interval.max(1000) as i64,
                                config.timeout as i64,
                            )),
                    ));
                }
            };
        }
        let session = session.filter(|s| !s.is_closed());
        let refusal = match &session {
            None => Some(Refused::Unknown),
            Some(_) if config.trust_client_session => None,
            Some(session) => Binding::check(session, &self.origin).err(),
        };
        if let Some(refusal) = refusal {
            let mut reply = Reply::to(reply_channel, message.id.clone())
                .failure(BayeuxError::SESSION_UNKNOWN)
                .with_advice(Advice::handshake(config.interval as i64));
            if let Some(why) = refusal.explanation() {
                crate::ext::add_to_reply(
                    &mut reply,
                    "halley",
                    serde_json::json!({ "reason": why }),
                );
            }
            return Err(Box::new(reply));
        }
        let session = session.expect("refused above when absent");
        session.touch(node.sessions().now_ms());
        if message.channel.as_deref() != Some(meta::CONNECT) {
            session.poke_callback_polling();
        }
        if self.session.is_none() {
            self.session = Some(session.clone());
        }
        Ok(session)
    }
}

/// Why a request may not use a session (all answered `402::session_unknown`,
/// as for a session that does not exist, with a reason for the honest
/// client that can act on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No such session (or it ended).
    Unknown,
    /// Bound to a browser cookie this request did not send.
    CookieMissing,
    /// Bound to another browser's cookie.
    OtherBrowser,
    /// Bound to another WebSocket.
    OtherSocket,
}

impl Refused {
    /// What an honest client can do about it (none for an unknown session
    /// or another browser's: nothing to tell).
    pub fn explanation(self) -> Option<&'static str> {
        match self {
            Refused::Unknown | Refused::OtherBrowser => None,
            Refused::CookieMissing => Some(
                "this session is bound to the BAYEUX_BROWSER cookie set by its handshake, and this request did not send it back; \
                 keep cookies (some HTTP libraries refuse them from IP-address hosts such as 127.0.0.1: use a host name such as localhost), \
                 or handshake over WebSocket, which binds the session to its connection",
            ),
            Refused::OtherSocket => Some(
                "this session is used by another WebSocket connection without a cookie and is bound to it; handshake again on this connection",
            ),
        }
    }
}

/// What a session is bound to, and the rule that serves a request with it.
pub struct Binding;

impl Binding {
    /// - A session created over HTTP is bound to the `BAYEUX_BROWSER`
    ///   cookie of its handshake: a request with that cookie is served,
    ///   one with another cookie is not.
    /// - A cookie-less WebSocket may use such a session if its handshake
    ///   did not present the cookie (a new browser, or a client in a
    ///   runtime without cookies on WebSocket, such as Faye in Node, which
    ///   handshakes over HTTP while its socket opens), the socket comes
    ///   from the handshake's address, and only one socket: the first to
    ///   present it. A thief with the clientId finds it on another address,
    ///   or taken by its owner's socket.
    /// - A session created over a WebSocket without a cookie (Node and Java
    ///   clients) has nothing but its clientId: any request with it is
    ///   served, so that such a client can reconnect (the ack extension's
    ///   promise) and move to another node. See docs/security.md.
    /// - Anything else without the cookie: refused, saying why.
    pub fn check(session: &Session, origin: &Origin) -> Result<(), Refused> {
        let on_socket = origin.socket_id != 0;
        match (session.browser_id(), origin.browser_id.as_deref()) {
            (Some(bound), Some(sent)) if bound == sent => Ok(()),
            (Some(_), Some(_)) => Err(Refused::OtherBrowser),
            (Some(_), None)
                if on_socket
                    && !session.is_bound_strictly()
                    && (session.handshake_peer().is_none()
                        || session.handshake_peer() == origin.peer) =>
            {
                if session.bind_socket(origin.socket_id) {
                    Ok(())
                } else {
                    Err(Refused::OtherSocket)
                }
            }
            (Some(_), None) => Err(Refused::CookieMissing),
            (None, _) => Ok(()),
        }
    }
}

/// A `/meta/connect` that has been registered but not answered yet.
pub struct PendingConnect {
    session: Arc<Session>,
    id: Option<Box<RawValue>>,
    generation: u64,
    /// How long it may be held: zero for a first connect or when the client asked.
    hold_for: Duration,
    /// The request's `ext`, for the extensions' outgoing hooks (boxed, and
    /// only when present: a held connect waits in every idle client's task).
    ext: Option<Box<InboundExt>>,
    /// When the request arrived, wall clock (timesync's `ts`).
    received_ms: i64,
    /// On a cluster, whether the browser may hold this poll, as the other
    /// nodes count (boxed, and only when asked: see `node/browser_polls.rs`).
    cluster_poll: Option<Box<ClusterPoll>>,
}

/// Why a connect was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectEnd {
    /// Not held (first connect, in a batch, client asked, something queued).
    Immediate,
    /// A delivery was queued (long-polling; WebSocket with the ack extension).
    Deliveries,
    /// `timeout` passed.
    Timeout,
    /// A newer connect for the session arrived. Its reply carries no
    /// deliveries (the generation check of `take_for_connect_reply`): the
    /// client has moved on and may never read it.
    Superseded,
    /// The session was disconnected or expired: `reconnect: none`.
    Closed,
    /// The server is stopping: `reconnect: retry`.
    Shutdown,
    /// Another session of the browser holds the poll: `multiple-clients`.
    MultipleClients,
}

impl PendingConnect {
    /// A connect of `session`, numbered `generation` by
    /// [`Session::begin_connect`], that may be held for `hold_for`.
    pub fn new(
        session: Arc<Session>,
        id: Option<Box<RawValue>>,
        generation: u64,
        hold_for: Duration,
        ext: InboundExt,
        received_ms: i64,
    ) -> Self {
        PendingConnect {
            session,
            id,
            generation,
            hold_for,
            ext: (!ext.is_empty()).then(|| Box::new(ext)),
            received_ms,
            cluster_poll: None,
        }
    }

    /// Keeps the cluster's answer on holding this poll (and its slot, until
    /// this connect is answered).
    pub fn set_cluster_poll(&mut self, poll: ClusterPoll) {
        self.cluster_poll = Some(Box::new(poll));
    }

    /// Another session of its browser holds a poll on another node.
    pub fn refused_by_cluster(&self) -> bool {
        self.cluster_poll.as_ref().is_some_and(|p| p.refused())
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// This connect's number: its reply carries deliveries only while it is
    /// the session's latest (see [`Session::take_for_connect_reply`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The longest this connect may be held (zero: answer at once).
    pub fn hold_for(&self) -> Duration {
        self.hold_for
    }

    /// Whether the session's end, a newer connect, shutdown or a drain means this
    /// connect must be answered now.
    pub fn must_end(&self, node: &Node) -> Option<ConnectEnd> {
        if self.session.is_closed() {
            Some(ConnectEnd::Closed)
        } else if !self.session.is_current_connect(self.generation) {
            Some(ConnectEnd::Superseded)
        } else if node.shutdown().asks_to_leave(self.session.client_id()) {
            // Shutdown, or a drain that reached this session.
            Some(ConnectEnd::Shutdown)
        } else {
            None
        }
    }

    /// Answers the connect for `end`: the reply, and the deliveries that
    /// ride with it (none for a closed session, nor for a superseded
    /// connect; with the ack extension they are numbered as one batch,
    /// which the ack extension's hook writes into the reply). Answering is
    /// a sign of life: the session's expiry clock restarts here.
    pub fn answer(self, node: &Node, end: ConnectEnd, now: Instant) -> (Reply, VecDeque<Bytes>) {
        let session = &self.session;
        // Held until its credentials' end (see `meta::connect`): the session
        // ends with them (here, or already by another message of the
        // client that got there first), and the client is told to
        // handshake again, never to stop.
        // One clock reading for the whole answer: `now`, the caller's.
        let clock = node.sessions().clock();
        let wall_ms = clock.wall_ms_at(now);
        let expired = session.credentials_expired(wall_ms);
        // Or it ended because fresh credentials it presented (on another
        // connect) were refused.
        let refused = !expired && session.credentials_ended();
        session.touch(clock.ms_at(now));
        let config = node.config();
        let advice = match end {
            // A session ended for overflowing its outbox may come back
            // (with replay it loses nothing); one that disconnected may not.
            ConnectEnd::Closed if session.overflowed() => Advice::handshake(config.interval as i64),
            // Another node of the cluster serves it now: go on, there.
            ConnectEnd::Closed if session.moved() => Advice::retry(0, config.timeout as i64),
            ConnectEnd::Closed => Advice::none(),
            ConnectEnd::Shutdown => Advice::retry(0, config.timeout as i64),
            ConnectEnd::MultipleClients => {
                let mut advice =
                    Advice::retry(config.multi_session_interval as i64, config.timeout as i64);
                advice.multiple_clients = Some(true);
                advice
            }
            ConnectEnd::Immediate
            | ConnectEnd::Deliveries
            | ConnectEnd::Timeout
            | ConnectEnd::Superseded => {
                Advice::retry(config.interval as i64, config.timeout as i64)
            }
        };
        let mut reply = if expired {
            crate::credentials::end(
                node,
                session,
                Reply::to(meta::CONNECT, self.id),
                BayeuxError::TOKEN_EXPIRED,
                &crate::metadata::Denial::new(crate::credentials::EXPIRED_REASON),
            )
        } else if refused {
            crate::credentials::end(
                node,
                session,
                Reply::to(meta::CONNECT, self.id),
                BayeuxError::REFRESH_DENIED,
                &crate::metadata::Denial::new(crate::credentials::REFUSED_REASON),
            )
        } else {
            Reply::to(meta::CONNECT, self.id)
                .success()
                .with_advice(advice)
        };
        let (deliveries, ack_batch) = if session.is_closed() {
            (VecDeque::new(), None)
        } else if end == ConnectEnd::Superseded {
            // Whatever superseded it (a newer connect of the session, or of
            // another session on the same socket) did not take this one's
            // deliveries: they stay queued for the next connect.
            (VecDeque::new(), session.number_empty_reply())
        } else {
            session.take_for_connect_reply(self.generation, now)
        };
        let context = Context {
            session: Some(session),
            ext: self.ext.as_deref().unwrap_or(&InboundExt::EMPTY),
            received_ms: self.received_ms,
            now_ms: wall_ms,
            ack_batch,
        };
        node.extensions().outgoing(&mut reply, &context);
        (reply, deliveries)
    }
}
