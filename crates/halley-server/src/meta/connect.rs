//! `/meta/connect`: the heartbeat of a session, and the long poll that
//! carries its deliveries.
//!
//! Handling is in two steps because the reply must come last in the body:
//! [`handle`] registers the connect (superseding a held one, taking back
//! with the ack extension the batches the client says it did not receive)
//! and returns a [`PendingConnect`]; once the rest of the batch is done,
//! the connection state machine ([`crate::connection`]) answers it, holding
//! it first when it may: that is where the rules of holding live, the same
//! for every transport.

use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{Advice, BayeuxError, Message, Reply};

use crate::exchange::{Exchange, PendingConnect};
use crate::ext::InboundExt;
use crate::node::Node;
use crate::state::listeners::SessionEnd;
use crate::state::session::Session;

pub fn handle(
    node: &Node,
    message: Message,
    session: Arc<Session>,
    ext: InboundExt,
    received_ms: i64,
    exchange: &Exchange,
) -> Result<PendingConnect, Box<Reply>> {
    // With acks, batches the client did not receive go back in front of the outbox.
    let generation = session.begin_connect(
        exchange.origin.connection_type,
        exchange.origin.socket_id,
        crate::ext::ack::received(ext.ack.as_ref()),
        node.config().overflow_policy,
    );
    if session.overflowed() {
        // Lost batches to re-send do not fit under the `disconnect` policy.
        node.remove_session(&session, SessionEnd::Overflowed);
        return Err(Box::new(
            Reply::to(halley_protocol::meta::CONNECT, message.id)
                .failure(BayeuxError::SESSION_UNKNOWN)
                .with_advice(Advice::handshake(node.config().interval as i64)),
        ));
    }
    let first = session.mark_connected();
    let server_timeout = node.config().timeout();
    let mut hold_for = match message.advice.as_ref().and_then(|a| a.timeout) {
        _ if first => Duration::ZERO,
        Some(client) => Duration::from_millis(client.max(0) as u64).min(server_timeout),
        None => server_timeout,
    };
    // Not held past the session's credentials: answered then, it is refused
    // as expired (see `PendingConnect::answer`), so an idle client learns
    // at once that it must handshake again.
    if let Some(expires_ms) = session.credentials_expire_ms() {
        let left = expires_ms.saturating_sub(received_ms).max(0) as u64;
        hold_for = hold_for.min(Duration::from_millis(left));
    }
    Ok(PendingConnect::new(
        session,
        message.id,
        generation,
        hold_for,
        ext,
        received_ms,
    ))
}
