//! `/meta/subscribe`: one channel or an array, globs allowed, `/meta` refused.
//! All-or-nothing: if any channel of the request is refused (invalid, over
//! a limit, or denied by the Metadata Adapter), none is added.
//! Limits: at most `max-channels-per-subscribe` channels in one message
//! (`400::too_many_channels`) and `max-subscriptions-per-session` held by
//! one session (`403::too_many_subscriptions`); each subscription costs
//! memory until the session ends.
//! A channel with history may be replayed from a last-seen id
//! (`ext.replay`, here or at handshake; see [`crate::history`]).

use std::sync::Arc;

use std::collections::HashSet;

use halley_protocol::{BayeuxError, ChannelPattern, Message, Reply};

use crate::ext::InboundExt;
use crate::metadata::Denial;
use crate::node::Node;
use crate::state::limits::Limit;
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
    if let Some((limit, error, why)) = over_limit(node, session, &patterns) {
        node.limits().hit(limit, || {
            format!("{}: {why}; subscribe refused", session.client_id())
        });
        reply.subscription = message.subscription;
        let mut reply = reply.failure(error);
        crate::metadata::explain(&mut reply, &Denial::new(why));
        return reply;
    }
    if let Some(metadata) = node.metadata_adapter() {
        for pattern in &patterns {
            if let Err(denial) = metadata.subscribe(session, pattern).await {
                denial.count_in(node.limits());
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

/// The limit `patterns` would exceed, its error and why, if any.
fn over_limit(
    node: &Node,
    session: &Session,
    patterns: &[ChannelPattern],
) -> Option<(Limit, BayeuxError, String)> {
    let config = node.config();
    let per_message = config.max_channels_per_subscribe;
    if patterns.len() > per_message {
        return Some((
            Limit::ChannelsPerSubscribe,
            BayeuxError::TOO_MANY_CHANNELS,
            format!(
                "{} channels in one subscribe; at most {per_message} (max-channels-per-subscribe)",
                patterns.len()
            ),
        ));
    }
    let per_session = config.max_subscriptions_per_session;
    let new: HashSet<&str> = patterns
        .iter()
        .map(ChannelPattern::as_str)
        .filter(|pattern| !session.is_subscribed(pattern))
        .collect();
    let held = session.subscription_count();
    (held + new.len() > per_session).then(|| {
        (
            Limit::SubscriptionsPerSession,
            BayeuxError::TOO_MANY_SUBSCRIPTIONS,
            format!(
                "{held} subscriptions held, {} more asked; at most {per_session} per session (max-subscriptions-per-session)",
                new.len()
            ),
        )
    })
}
