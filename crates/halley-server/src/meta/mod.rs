//! One file per meta channel, each with the same shape: a `handle` function
//! that takes the node, the message and the session it speaks for (the
//! dispatcher has resolved it; the handshake creates one), and returns the
//! reply (the connect returns what the connection state machine needs to
//! answer it later). Handlers import the core ([`crate::node`],
//! [`crate::exchange`]) and the state below it, never the dispatcher.

pub mod connect;
pub mod disconnect;
pub mod handshake;
pub mod subscribe;
pub mod unsubscribe;

use halley_protocol::{BayeuxError, ChannelKind, ChannelPattern, Subscription};

/// Validates every channel of a `subscription` field for subscribe and
/// unsubscribe: all must be valid patterns, none under `/meta`.
pub(crate) fn validate_subscription(
    subscription: Option<&Subscription>,
) -> Result<Vec<ChannelPattern>, BayeuxError> {
    let Some(subscription) = subscription else {
        return Err(BayeuxError::SUBSCRIPTION_MISSING);
    };
    let channels = subscription.channels();
    if channels.is_empty() {
        return Err(BayeuxError::SUBSCRIPTION_MISSING);
    }
    let mut patterns = Vec::with_capacity(channels.len());
    for channel in channels {
        let pattern = ChannelPattern::parse(channel).map_err(|_| BayeuxError::CHANNEL_INVALID)?;
        if pattern.kind() == ChannelKind::Meta {
            return Err(BayeuxError::SUBSCRIBE_DENIED);
        }
        patterns.push(pattern);
    }
    Ok(patterns)
}
