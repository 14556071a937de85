//! `/service/**`: request/response between one client and the server.
//!
//! A service message is never broadcast. The server looks up the handler
//! registered for the exact channel, calls it with the request's `data`, and
//! replies to the sender alone, on the same channel and with the same `id`:
//! `{"channel":"/service/echo","id":"7","successful":true,"data":...}`.
//! That is the shape CometD's `remoteCall` expects.
//!
//! Register a handler with [`Services::register`]:
//!
//! ```
//! # use halley_server::{Config, Engine};
//! # use halley_server::service::{ServiceRequest, ServiceError};
//! let engine = Engine::new(Config::default());
//! engine.services().register("/service/time", |_request: ServiceRequest| async {
//!     Ok::<_, ServiceError>(serde_json::json!({"now": 0}))
//! });
//! ```

pub mod echo;
pub mod presence;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use halley_protocol::{BayeuxError, ChannelName, Message, Reply};
use parking_lot::RwLock;
use serde_json::value::RawValue;

use crate::engine::{Engine, Exchange};

/// What a service handler receives.
#[derive(Debug)]
pub struct ServiceRequest {
    /// The service channel, e.g. `/service/echo`.
    pub channel: String,
    /// The requesting session's clientId.
    pub client_id: String,
    /// The user the Metadata Adapter named at handshake (none: anonymous).
    pub user: Option<String>,
    /// The request's `data`, raw (`null` when absent).
    pub data: Box<RawValue>,
}

impl ServiceRequest {
    /// Parses `data` into a type of the handler's choosing.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ServiceError> {
        serde_json::from_str(self.data.get()).map_err(|e| ServiceError::BadRequest(e.to_string()))
    }
}

/// Why a service could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// The request's data was not what the service expects (reply `400::<message>`).
    BadRequest(String),
    /// The service failed (reply `500::service_failed`).
    Failed(String),
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, ServiceError>> + Send>>;
type Handler = Arc<dyn Fn(ServiceRequest) -> ServiceFuture + Send + Sync>;

/// The registry of service handlers, by exact channel.
#[derive(Default)]
pub struct Services {
    handlers: RwLock<HashMap<String, Handler>>,
}

impl Services {
    /// Registers (or replaces) the handler of a `/service/...` channel.
    ///
    /// # Panics
    /// If `channel` is not a valid `/service/...` channel name: that is a
    /// programming error in the embedding application, caught at start-up.
    pub fn register<F, Fut>(&self, channel: &str, handler: F)
    where
        F: Fn(ServiceRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value, ServiceError>> + Send + 'static,
    {
        let valid = ChannelName::parse(channel)
            .map(|c| c.kind() == halley_protocol::ChannelKind::Service)
            .unwrap_or(false);
        assert!(valid, "not a service channel: {channel:?}");
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        self.handlers.write().insert(channel.to_owned(), handler);
    }

    fn get(&self, channel: &str) -> Option<Handler> {
        self.handlers.read().get(channel).cloned()
    }
}

pub async fn handle(engine: &Engine, message: Message, exchange: &mut Exchange) -> Reply {
    let channel = message.channel.clone().unwrap_or_default();
    let session = match engine.resolve_session(&message, exchange) {
        Ok(session) => session,
        Err(reply) => return *reply,
    };
    let reply = Reply::to(channel.clone(), message.id);
    let Ok(name) = ChannelName::parse(&channel) else {
        return reply.failure(BayeuxError::CHANNEL_INVALID);
    };
    let data = message
        .data
        .unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON"));
    if let Some(metadata) = engine.metadata_adapter() {
        if let Err(denial) = metadata.publish(&session, &name, &data).await {
            let mut reply = reply.failure(BayeuxError::PUBLISH_DENIED);
            crate::metadata::explain(&mut reply, &denial);
            return reply;
        }
    }
    let Some(handler) = engine.services().get(&channel) else {
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
            tracing::warn!(channel = %reply.channel, %why, "service failed");
            reply.failure(BayeuxError::SERVICE_FAILED)
        }
    }
}
