//! A client's publish on a broadcast channel: validate, fan out, acknowledge.
//!
//! A Metadata Adapter, when installed, may refuse it (`403::publish_denied`).
//! The reply (`successful: true`) goes to the publisher; the delivery goes to
//! every subscriber, the publisher included when it is subscribed.

use halley_protocol::{BayeuxError, ChannelKind, ChannelName, Message, Reply};

use crate::engine::{Engine, Exchange};

pub async fn handle(engine: &Engine, message: Message, exchange: &mut Exchange) -> Reply {
    let channel_str = message.channel.clone().unwrap_or_default();
    let session = match engine.resolve_session(&message, exchange) {
        Ok(session) => session,
        Err(reply) => return *reply,
    };
    let reply = Reply::to(channel_str.clone(), message.id.clone());
    // Over its publish rate: refused, not delivered; the session goes on.
    if !crate::qos::allow_publish(engine, &session) {
        return reply.failure(BayeuxError::PUBLISH_RATE_EXCEEDED);
    }
    let channel = match ChannelName::parse(&channel_str) {
        Ok(channel) => channel,
        Err(_) => return reply.failure(BayeuxError::CHANNEL_INVALID),
    };
    match channel.kind() {
        ChannelKind::Broadcast => {}
        // Routed elsewhere by the engine; refused here for safety.
        ChannelKind::Meta | ChannelKind::Service => {
            return reply.failure(BayeuxError::PUBLISH_DENIED)
        }
    }
    let Some(data) = message.data.as_deref() else {
        return reply.failure(BayeuxError::DATA_MISSING);
    };
    if let Some(metadata) = engine.metadata_adapter() {
        if let Err(denial) = metadata.publish(&session, &channel, data).await {
            tracing::debug!(client_id = session.client_id(), %channel, reason = %denial.reason, "publish denied");
            let mut reply = reply.failure(BayeuxError::PUBLISH_DENIED);
            crate::metadata::explain(&mut reply, &denial);
            return reply;
        }
    }
    engine.publish(
        &channel,
        data,
        message.id.as_deref(),
        message.ext.as_deref(),
    );
    reply.success()
}
