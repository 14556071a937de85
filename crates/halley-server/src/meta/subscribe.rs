//! `/meta/subscribe`: one channel or an array, globs allowed, `/meta` refused.
//! All-or-nothing: if any channel of the request is refused, none is added.

use halley_protocol::{Message, Reply};

use crate::engine::{Engine, Exchange};

pub fn handle(engine: &Engine, message: Message, exchange: &mut Exchange) -> Reply {
    let session = match engine.resolve_session(&message, exchange) {
        Ok(session) => session,
        Err(reply) => return *reply,
    };
    let mut reply = Reply::to(halley_protocol::meta::SUBSCRIBE, message.id);
    let patterns = match super::validate_subscription(message.subscription.as_ref()) {
        Ok(patterns) => patterns,
        Err(error) => {
            reply.subscription = message.subscription;
            return reply.failure(error);
        }
    };
    for pattern in &patterns {
        engine.subscriptions().subscribe(pattern.as_str(), &session);
    }
    reply.subscription = message.subscription;
    reply.success()
}
