//! `/service/**`: request/response between one client and the server.
//!
//! A service message is never broadcast. The server looks up the handler
//! registered for the exact channel, calls it with the request's `data`, and
//! replies to the sender alone, on the same channel and with the same `id`:
//! `{"channel":"/service/echo","id":"7","successful":true,"data":...}`.
//! That is the shape CometD's `remoteCall` expects. A call counts against
//! the session's `max-publish-rate`, as a publish does
//! (`429::publish_rate_exceeded` beyond it).
//!
//! Register a handler with [`Services::register`]:
//!
//! ```
//! # use halley_server::{Config, Engine};
//! # use halley_server::service::{ServiceRequest, ServiceError};
//! let engine = Engine::new(Config::default());
//! engine.node().services().register("/service/time", |_request: ServiceRequest| async {
//!     Ok::<_, ServiceError>(serde_json::json!({"now": 0}))
//! });
//! ```

pub mod echo;
pub mod presence;

use std::sync::Arc;

use halley_protocol::{BayeuxError, ChannelName, Message, Reply};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::node::Node;
use crate::state::session::Session;

pub use crate::node::services::{ServiceError, ServiceRequest, Services};

pub(crate) async fn handle(node: &Node, message: Message, session: &Arc<Session>) -> Reply {
    let channel = message.channel.clone().unwrap_or_default();
    let reply = Reply::to(channel.clone(), message.id);
    // A call costs the server what a publish does, or more (a presence
    // join broadcasts): it counts against the same rate.
    if !crate::qos::allow_publish(node.config().max_publish_rate, session, Instant::now()) {
        crate::publish::rate_exceeded(node, session);
        return reply.failure(BayeuxError::PUBLISH_RATE_EXCEEDED);
    }
    let Ok(name) = ChannelName::parse(&channel) else {
        return reply.failure(BayeuxError::CHANNEL_INVALID);
    };
    let data = message
        .data
        .unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON"));
    if crate::publish::too_deep(node, &data, session) {
        return reply.failure(BayeuxError::DATA_TOO_DEEP);
    }
    if let Some(metadata) = node.metadata_adapter() {
        if let Err(denial) = metadata.publish(session, &name, &data).await {
            denial.count_in(node.limits());
            let mut reply = reply.failure(BayeuxError::PUBLISH_DENIED);
            crate::metadata::explain(&mut reply, &denial);
            return reply;
        }
    }
    let Some(handler) = node.services().get(&channel) else {
        return reply.failure(BayeuxError::SERVICE_UNKNOWN);
    };
    let request = ServiceRequest {
        channel,
        client_id: session.client_id().to_owned(),
        user: session.user().map(str::to_owned),
        data,
    };
    match handler(request).await {
        Ok(value) => {
            let mut reply = reply.success();
            reply.data = serde_json::value::to_raw_value(&value).ok();
            reply
        }
        Err(ServiceError::BadRequest(why)) => {
            let mut reply = reply;
            reply.successful = Some(false);
            reply.error = Some(format!("400::{why}"));
            reply
        }
        Err(ServiceError::Failed(why)) => {
            // A client's call can make a service fail: bounded, counted.
            static FAILURES: crate::state::log_throttle::LogThrottle =
                crate::state::log_throttle::LogThrottle::new();
            if let Some(suppressed) = FAILURES.allow(tokio::time::Instant::now()) {
                tracing::warn!(channel = %reply.channel, %why, suppressed, "service failed");
            }
            reply.failure(BayeuxError::SERVICE_FAILED)
        }
    }
}
