//! `/meta/unsubscribe`: the mirror of subscribe. Unsubscribing from a
//! channel one was not subscribed to succeeds (the end state is the same).

use halley_protocol::{Message, Reply};

use crate::node::Node;
use crate::state::session::Session;

pub fn handle(node: &Node, message: Message, session: &Session) -> Reply {
    let mut reply = Reply::to(halley_protocol::meta::UNSUBSCRIBE, message.id);
    let patterns = match super::validate_subscription(message.subscription.as_ref()) {
        Ok(patterns) => patterns,
        Err(error) => {
            reply.subscription = message.subscription;
            return reply.failure(error);
        }
    };
    for pattern in &patterns {
        node.unsubscribe(pattern.as_str(), session);
    }
    reply.subscription = message.subscription;
    reply.success()
}
