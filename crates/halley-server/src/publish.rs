//! A client's publish on a broadcast channel: validate, fan out, acknowledge.
//!
//! A Metadata Adapter, when installed, may refuse it (`403::publish_denied`).
//! The reply (`successful: true`) goes to the publisher; the delivery goes,
//! through the node's broker, to every subscriber, the publisher included
//! when it is subscribed. A cluster broker that cannot reach its engine
//! refuses the publish: the reply fails with `503::broker_unavailable`.

use halley_protocol::{BayeuxError, ChannelKind, ChannelName, Message, Reply};
use tokio::time::Instant;

use crate::node::Node;
use crate::state::limits::Limit;
use crate::state::session::Session;

pub async fn handle(node: &Node, message: Message, session: &Session) -> Reply {
    let channel_str = message.channel.clone().unwrap_or_default();
    let reply = Reply::to(channel_str.clone(), message.id.clone());
    // Over its publish rate: refused, not delivered; the session goes on.
    if !crate::qos::allow_publish(node.config().max_publish_rate, session, Instant::now()) {
        rate_exceeded(node, session);
        return reply.failure(BayeuxError::PUBLISH_RATE_EXCEEDED);
    }
    let channel = match ChannelName::parse(&channel_str) {
        Ok(channel) => channel,
        Err(_) => return reply.failure(BayeuxError::CHANNEL_INVALID),
    };
    match channel.kind() {
        ChannelKind::Broadcast => {}
        // Routed elsewhere by the dispatcher; refused here for safety.
        ChannelKind::Meta | ChannelKind::Service => {
            return reply.failure(BayeuxError::PUBLISH_DENIED)
        }
    }
    let Some(data) = message.data.as_deref() else {
        return reply.failure(BayeuxError::DATA_MISSING);
    };
    if let Some(metadata) = node.metadata_adapter() {
        if let Err(denial) = metadata.publish(session, &channel, data).await {
            tracing::debug!(client_id = session.client_id(), %channel, reason = %denial.reason, "publish denied");
            let mut reply = reply.failure(BayeuxError::PUBLISH_DENIED);
            crate::metadata::explain(&mut reply, &denial);
            return reply;
        }
    }
    let published = node.publish(
        &channel,
        data,
        message.id.as_deref(),
        message.ext.as_deref(),
    );
    if published.is_unavailable() {
        return reply.failure(crate::broker::UNAVAILABLE);
    }
    reply.success()
}

/// Counts a publish (or service call) refused by `max-publish-rate`.
pub(crate) fn rate_exceeded(node: &Node, session: &Session) {
    node.limits().hit(Limit::PublishRate, || {
        format!("{} over max-publish-rate; refused", session.client_id())
    });
}
