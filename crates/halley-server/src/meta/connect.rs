//! `/meta/connect`: the heartbeat of a session, and the long poll that
//! carries its deliveries.
//!
//! Handling is in two steps because the reply must come last in the body:
//! [`handle`] registers the connect (superseding a held one) and returns a
//! [`PendingConnect`]; once the rest of the batch is done, the transport
//! calls [`complete`], which holds the connect when
//! - it is alone in its request (a batch with other messages is answered now),
//! - it is not the session's first connect and the client did not ask for
//!   `advice.timeout: 0`,
//! - nothing is queued, and
//! - fewer than `maxSessionsPerBrowser` other sessions of the browser hold one
//!   (otherwise the reply says `multiple-clients` and the client polls),
//!
//! and answers it when a delivery is queued, a newer connect arrives, the
//! session closes, the server shuts down, or `timeout` passes.

use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{Advice, Message, Reply};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::engine::{Engine, Exchange};
use crate::state::session::Session;

/// A connect that has been registered but not answered yet.
pub struct PendingConnect {
    session: Arc<Session>,
    id: Option<Box<RawValue>>,
    generation: u64,
    /// How long it may be held: zero for a first connect or when the client asked.
    hold_for: Duration,
}

pub fn handle(
    engine: &Engine,
    message: Message,
    exchange: &mut Exchange,
) -> Result<PendingConnect, Box<Reply>> {
    let session = engine.resolve_session(&message, exchange)?;
    let generation = session.begin_connect(exchange.origin.connection_type);
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
    })
}

impl PendingConnect {
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Answers without holding.
    pub fn immediate_reply(self, engine: &Engine) -> Reply {
        self.session.touch(engine.sessions().now_ms());
        reply(engine, self.id, retry_advice(engine))
    }
}

fn retry_advice(engine: &Engine) -> Advice {
    let config = engine.config();
    Advice::retry(config.interval as i64, config.timeout as i64)
}

fn reply(engine: &Engine, id: Option<Box<RawValue>>, advice: Advice) -> Reply {
    let _ = engine;
    Reply::to(halley_protocol::meta::CONNECT, id)
        .success()
        .with_advice(advice)
}

/// Why a held connect was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woken {
    Deliveries,
    Timeout,
    Superseded,
    Closed,
    Shutdown,
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

pub async fn complete(
    engine: &Engine,
    pending: PendingConnect,
    holdable: bool,
    browser_id: Option<&str>,
) -> Reply {
    let PendingConnect {
        session,
        id,
        generation,
        hold_for,
    } = pending;
    let config = engine.config();

    if !holdable || hold_for.is_zero() || session.has_deliveries() || engine.shutdown().is_started()
    {
        session.touch(engine.sessions().now_ms());
        return reply(engine, id, retry_advice(engine));
    }

    // One held poll per browser (HTTP/1.1 connection limits): the others poll.
    let _browser_slot = match browser_id {
        Some(browser) => match engine.sessions().browsers().try_hold(
            browser,
            session.key(),
            config.max_sessions_per_browser,
        ) {
            Some(slot) => Some(slot),
            None => {
                session.touch(engine.sessions().now_ms());
                let mut advice = retry_advice(engine);
                advice.interval = Some(config.multi_session_interval as i64);
                advice.multiple_clients = Some(true);
                return reply(engine, id, advice);
            }
        },
        None => None,
    };

    let woken = {
        let _holding = Holding::start(engine, &session);
        hold(engine, &session, generation, Instant::now() + hold_for).await
    };
    tracing::trace!(
        client_id = session.client_id(),
        ?woken,
        "held connect answered"
    );
    let advice = match woken {
        Woken::Closed => Advice::none(),
        Woken::Shutdown => Advice::retry(0, config.timeout as i64),
        Woken::Deliveries | Woken::Timeout | Woken::Superseded => retry_advice(engine),
    };
    reply(engine, id, advice)
}

async fn hold(engine: &Engine, session: &Session, generation: u64, deadline: Instant) -> Woken {
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        // Register interest before checking, so a push in between is not missed.
        let notified = session.wake().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if session.is_closed() {
            return Woken::Closed;
        }
        if !session.is_current_connect(generation) {
            return Woken::Superseded;
        }
        if session.has_deliveries() {
            return Woken::Deliveries;
        }
        if engine.shutdown().is_started() {
            return Woken::Shutdown;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = &mut sleep => return Woken::Timeout,
            _ = engine.shutdown().wait() => return Woken::Shutdown,
        }
    }
}
