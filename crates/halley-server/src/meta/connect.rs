//! `/meta/connect`: the heartbeat of a session, and the long poll that
//! carries its deliveries.
//!
//! Handling is in two steps because the reply must come last in the body:
//! [`handle`] registers the connect (superseding a held one) and returns a
//! [`PendingConnect`]; once the rest of the batch is done, the transport
//! answers it.
//!
//! Long-polling calls [`complete`], which holds the connect when
//! - it is alone in its request (a batch with other messages is answered now),
//! - it is not the session's first connect and the client did not ask for
//!   `advice.timeout: 0`,
//! - nothing is queued, and
//! - fewer than `maxSessionsPerBrowser` other sessions of the browser hold one
//!   (otherwise the reply says `multiple-clients` and the client polls),
//!
//! and answers it when a delivery is queued (a lazy one: when it falls due),
//! a newer connect arrives, the session closes, the server shuts down, or
//! `timeout` passes.
//!
//! WebSocket writes deliveries as they come and only keeps the connect as a
//! timer: it uses [`PendingConnect::hold_for`], [`PendingConnect::must_end`]
//! and [`PendingConnect::answer`] directly.

use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{Advice, Message, Reply};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::engine::{Engine, Exchange};
use crate::ext::timesync::Received;
use crate::ext::InboundExt;
use crate::state::session::Session;

/// A connect that has been registered but not answered yet.
pub struct PendingConnect {
    session: Arc<Session>,
    id: Option<Box<RawValue>>,
    generation: u64,
    /// How long it may be held: zero for a first connect or when the client asked.
    hold_for: Duration,
    /// The request's timesync, answered when the reply is made.
    timesync: Option<Received>,
}

pub fn handle(
    engine: &Engine,
    message: Message,
    exchange: &mut Exchange,
) -> Result<PendingConnect, Box<Reply>> {
    let session = engine.resolve_session(&message, exchange)?;
    let ext = InboundExt::parse(message.ext.as_deref());
    // With acks, batches the client did not receive go back in front of the outbox.
    let generation = session.begin_connect(
        exchange.origin.connection_type,
        exchange.origin.socket_id,
        crate::ext::ack::received(ext.ack.as_ref()),
        engine.config().overflow_policy,
    );
    if session.overflowed() {
        // Lost batches to re-send do not fit under the `disconnect` policy.
        engine.remove_session(&session, crate::state::listeners::SessionEnd::Overflowed);
        return Err(Box::new(
            Reply::to(halley_protocol::meta::CONNECT, message.id)
                .failure(halley_protocol::BayeuxError::SESSION_UNKNOWN)
                .with_advice(Advice::handshake(engine.config().interval as i64)),
        ));
    }
    let first = session.mark_connected();
    let server_timeout = engine.config().timeout();
    let hold_for = match message.advice.as_ref().and_then(|a| a.timeout) {
        _ if first => Duration::ZERO,
        Some(client) => Duration::from_millis(client.max(0) as u64).min(server_timeout),
        None => server_timeout,
    };
    Ok(PendingConnect {
        session,
        id: message.id,
        generation,
        hold_for,
        timesync: ext.timesync.map(Received::now),
    })
}

/// Why a connect was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectEnd {
    /// Not held (first connect, in a batch, client asked, something queued).
    Immediate,
    /// A delivery was queued (long-polling).
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

    /// Whether the session's end, a newer connect or shutdown means this
    /// connect must be answered now.
    pub fn must_end(&self, engine: &Engine) -> Option<ConnectEnd> {
        if self.session.is_closed() {
            Some(ConnectEnd::Closed)
        } else if !self.session.is_current_connect(self.generation) {
            Some(ConnectEnd::Superseded)
        } else if engine.shutdown().is_started() {
            Some(ConnectEnd::Shutdown)
        } else {
            None
        }
    }

    /// Answers without holding.
    pub fn immediate_reply(self, engine: &Engine) -> Reply {
        self.answer(engine, ConnectEnd::Immediate)
    }

    /// The reply for a connect that ends for `end`. Answering is a sign of
    /// life: the session's expiry clock restarts here.
    pub fn answer(self, engine: &Engine, end: ConnectEnd) -> Reply {
        self.session.touch(engine.sessions().now_ms());
        let config = engine.config();
        let advice = match end {
            // A session ended for overflowing its outbox may come back
            // (with replay it loses nothing); one that disconnected may not.
            ConnectEnd::Closed if self.session.overflowed() => {
                Advice::handshake(config.interval as i64)
            }
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
        let mut reply = Reply::to(halley_protocol::meta::CONNECT, self.id)
            .success()
            .with_advice(advice);
        if let Some(timesync) = self.timesync {
            crate::ext::add_to_reply(&mut reply, "timesync", timesync.reply());
        }
        reply
    }
}

/// Keeps a session marked as holding for exactly as long as the hold lasts,
/// including when the HTTP request is dropped mid-hold (client went away).
struct Holding<'a> {
    session: &'a Session,
    engine: &'a Engine,
}

impl<'a> Holding<'a> {
    fn start(engine: &'a Engine, session: &'a Session) -> Self {
        session.start_holding();
        Holding { session, engine }
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.session.stop_holding(self.engine.sessions().now_ms());
    }
}

/// Answers a long-polling connect, holding it first when allowed; returns
/// the reply with the connect's generation (for taking its deliveries).
pub async fn complete(
    engine: &Engine,
    pending: PendingConnect,
    holdable: bool,
    browser_id: Option<&str>,
) -> (Reply, u64) {
    if !holdable
        || pending.hold_for.is_zero()
        || pending
            .session
            .has_due_deliveries(engine.sessions().now_ms())
        || engine.shutdown().is_started()
    {
        let generation = pending.generation;
        return (pending.answer(engine, ConnectEnd::Immediate), generation);
    }

    // One held poll per browser (HTTP/1.1 connection limits): the others poll.
    let _browser_slot = match browser_id {
        Some(browser) => match engine.sessions().browsers().try_hold(
            browser,
            pending.session.key(),
            engine.config().max_sessions_per_browser,
        ) {
            Some(slot) => Some(slot),
            None => {
                let generation = pending.generation;
                return (
                    pending.answer(engine, ConnectEnd::MultipleClients),
                    generation,
                );
            }
        },
        None => None,
    };

    let end = {
        let _holding = Holding::start(engine, &pending.session);
        hold(engine, &pending, Instant::now() + pending.hold_for).await
    };
    tracing::trace!(
        client_id = pending.session.client_id(),
        ?end,
        "held connect answered"
    );
    let generation = pending.generation;
    (pending.answer(engine, end), generation)
}

async fn hold(engine: &Engine, pending: &PendingConnect, deadline: Instant) -> ConnectEnd {
    let session = &pending.session;
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        // Register interest before checking, so a push in between is not missed.
        let notified = session.wake().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(end) = pending.must_end(engine) {
            return end;
        }
        if session.has_due_deliveries(engine.sessions().now_ms()) {
            return ConnectEnd::Deliveries;
        }
        // Only lazy deliveries, or deliveries over the session's bandwidth,
        // wait: wake when they may leave.
        let lazy_due = engine.sessions().deliveries_wait_until(session);
        tokio::select! {
            _ = &mut notified => {}
            _ = &mut sleep => return ConnectEnd::Timeout,
            _ = tokio::time::sleep_until(lazy_due.unwrap_or(deadline)), if lazy_due.is_some() => {}
            _ = engine.shutdown().wait() => return ConnectEnd::Shutdown,
        }
    }
}
