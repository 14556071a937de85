//! `/meta/disconnect`: the session ends now, with its subscriptions; a
//! connect it still holds is answered with `reconnect: none`.

use halley_protocol::{Message, Reply};

use crate::engine::{Engine, Exchange};
use crate::state::listeners::SessionEnd;

pub fn handle(engine: &Engine, message: Message, exchange: &mut Exchange) -> Reply {
    let session = match engine.resolve_session(&message, exchange) {
        Ok(session) => session,
        Err(reply) => return *reply,
    };
    engine.remove_session(&session, SessionEnd::Disconnected);
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
