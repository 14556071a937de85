//! `/service/echo`: answers the sender with the data it sent. The smallest
//! possible service, and a round-trip probe for clients and monitoring.

use crate::node::services::{ServiceError, ServiceRequest, Services};

pub const CHANNEL: &str = "/service/echo";

pub fn register(services: &Services) {
    services.register(CHANNEL, |request: ServiceRequest| async move {
        serde_json::from_str(request.data.get())
            .map_err(|e| ServiceError::BadRequest(e.to_string()))
    });
}
