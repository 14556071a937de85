//! `/meta/unsubscribe`: the mirror of subscribe. Unsubscribing from a
//! channel one was not subscribed to succeeds (the end state is the same).

use halley_protocol::{Message, Reply};

use crate::engine::{Engine, Exchange};

pub fn handle(engine: &Engine, message: Message, exchange: &mut Exchange) -> Reply {
    let session = match engine.resolve_session(&message, exchange) {
        Ok(session) => session,
        Err(reply) => return *reply,
    };
    let mut reply = Reply::to(halley_protocol::meta::UNSUBSCRIBE, message.id);
    let patterns = match super::validate_subscription(message.subscription.as_ref()) {
        Ok(patterns) => patterns,
        Err(error) => {
            reply.subscription = message.subscription;
            return reply.failure(error);
        }
    };
    for pattern in &patterns {
        engine.unsubscribe(pattern.as_str(), &session);
    }
    reply.subscription = message.subscription;
    reply.success()
}
