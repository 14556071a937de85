//! `/meta/disconnect`: the session ends now, with its subscriptions; a
//! connect it still holds is answered with `reconnect: none`.

use std::sync::Arc;

use halley_protocol::{Message, Reply};

use crate::exchange::Exchange;
use crate::node::Node;
use crate::state::listeners::SessionEnd;
use crate::state::session::Session;

pub fn handle(
    node: &Node,
    message: Message,
    session: Arc<Session>,
    exchange: &mut Exchange,
) -> Reply {
    node.remove_session(&session, SessionEnd::Disconnected);
    tracing::debug!(client_id = session.client_id(), "disconnect");
    // Queued deliveries die with the session: do not piggyback them.
    if exchange
        .session
        .as_ref()
        .is_some_and(|s| s.key() == session.key())
    {
        exchange.session = None;
    }
    Reply::to(halley_protocol::meta::DISCONNECT, message.id).success()
}
