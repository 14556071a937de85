//! The registry of service handlers, by exact `/service/...` channel, and
//! what a handler receives and may answer. The dispatch of `/service/**`
//! messages to them is [`crate::service`]'s.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use halley_protocol::ChannelName;
use parking_lot::RwLock;
use serde_json::value::RawValue;

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
pub(crate) type Handler = Arc<dyn Fn(ServiceRequest) -> ServiceFuture + Send + Sync>;

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

    pub(crate) fn get(&self, channel: &str) -> Option<Handler> {
        self.handlers.read().get(channel).cloned()
    }
}
