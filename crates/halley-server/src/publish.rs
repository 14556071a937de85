//! A client's publish on a broadcast channel: validate, fan out, acknowledge.
//!
//! A Metadata Adapter, when installed, may refuse it (`403::publish_denied`).
//! The reply (`successful: true`) goes to the publisher; the delivery goes,
//! through the node's broker, to every subscriber, the publisher included
//! when it is subscribed. A cluster broker that cannot reach its engine
//! refuses the publish: the reply fails with `503::broker_unavailable`.
//! Data nested deeper than `max-data-depth` is refused (`400::data_too_deep`).

use halley_protocol::{BayeuxError, ChannelKind, ChannelName, Message, Reply};
use tokio::time::Instant;

use crate::metrics::{self, metrics};
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
    if too_deep(node, data, session) {
        return reply.failure(BayeuxError::DATA_TOO_DEEP);
    }
    if let Some(metadata) = node.metadata_adapter() {
        if let Err(denial) = metadata.publish(session, &channel, data).await {
            denial.count_in(node.limits());
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
    // Acknowledged only once it cannot be lost (a cluster node: in Redis).
    if published.is_unavailable() || !node.broker().confirm().await {
        return reply.failure(crate::broker::UNAVAILABLE);
    }
    metrics().publishes.get(metrics::Origin::Bayeux).inc();
    reply.success()
}

/// Counts a publish (or service call) refused by `max-publish-rate`.
pub(crate) fn rate_exceeded(node: &Node, session: &Session) {
    node.limits().hit(Limit::PublishRate, || {
        format!("{} over max-publish-rate; refused", session.client_id())
    });
}

/// Whether `data` nests deeper than `max-data-depth` (counted and warned).
/// Every subscriber's JSON parser has to descend it: a browser's may give
/// up, a recursive one may overflow its stack.
pub(crate) fn too_deep(node: &Node, data: &serde_json::value::RawValue, session: &Session) -> bool {
    let max = node.config().max_data_depth;
    let deep = json_depth(data.get()) > max;
    if deep {
        node.limits().hit(Limit::DataDepth, || {
            format!(
                "{}: data nested deeper than {max} (max-data-depth); refused",
                session.client_id()
            )
        });
    }
    deep
}

/// How deep arrays and objects nest in valid JSON `text` (0 for a scalar),
/// without recursion: a scan of brackets outside strings.
pub(crate) fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::json_depth;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_depth(r#"["[[[[", "\"[[", {"x":"}}}"}]"#), 2);
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(json_depth(&deep), 10_000);
    }

    /// Found checking the `batch` fuzz target's oracle: a parse into a
    /// `serde_json::Value` keeps only the last of duplicate keys and so
    /// under-counts; the text nests as deep as written, and a subscriber's
    /// parser descends every copy. The bracket count must stay textual.
    #[test]
    fn depth_counts_every_copy_of_a_duplicate_key() {
        let text = r#"{"a":[[1]],"a":1}"#;
        assert_eq!(json_depth(text), 3);
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value, serde_json::json!({"a": 1}), "what a Value keeps");
    }
}
