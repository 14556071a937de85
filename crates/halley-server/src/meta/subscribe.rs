//! `/meta/subscribe`: one channel or an array, globs allowed, `/meta` refused.
//! All-or-nothing: if any channel of the request is refused (invalid, or
//! denied by the Metadata Adapter), none is added.
//! A channel with history may be replayed from a last-seen id
//! (`ext.replay`, here or at handshake; see [`crate::history`]).

use std::sync::Arc;

use halley_protocol::{Message, Reply};

use crate::ext::InboundExt;
use crate::node::Node;
use crate::state::session::Session;

pub async fn handle(
    node: &Node,
    message: Message,
    session: &Arc<Session>,
    ext: &InboundExt,
) -> Reply {
    let mut reply = Reply::to(halley_protocol::meta::SUBSCRIBE, message.id);
    let patterns = match super::validate_subscription(message.subscription.as_ref()) {
        Ok(patterns) => patterns,
        Err(error) => {
            reply.subscription = message.subscription;
            return reply.failure(error);
        }
    };
    if let Some(metadata) = node.metadata_adapter() {
        for pattern in &patterns {
            if let Err(denial) = metadata.subscribe(session, pattern).await {
                tracing::debug!(client_id = session.client_id(), %pattern, reason = %denial.reason, "subscribe denied");
                reply.subscription = message.subscription;
                let mut reply = reply.failure(halley_protocol::BayeuxError::SUBSCRIBE_DENIED);
                crate::metadata::explain(&mut reply, &denial);
                return reply;
            }
        }
    }
    let mut gap = false;
    for pattern in &patterns {
        let requested = ext
            .replay_requests()
            .find(|(channel, _)| *channel == pattern.as_str())
            .map(|(_, from)| from)
            .or_else(|| session.replay_request(pattern.as_str()));
        gap |= node.subscribe(pattern, session, requested);
    }
    reply.subscription = message.subscription;
    let mut reply = reply.success();
    if gap {
        // The replay reached further back than what is retained.
        crate::ext::add_to_reply(&mut reply, "replay", serde_json::json!({"gap": true}));
    }
    reply
}
