//! How messages travel between a client and the server.
//!
//! A [`Transport`] takes a batch of [`Outgoing`] messages and returns what
//! the server answered to it. Long-polling is the only one today; it is an
//! enum rather than a trait object so that adding websocket costs one variant
//! and no allocation per call. A websocket transport will answer `exchange`
//! by matching replies to the batch's ids and push unsolicited deliveries the
//! same way the long-polling responses' deliveries are pushed.

pub mod long_polling;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;

pub use long_polling::LongPolling;

use crate::error::Error;
use crate::message::{Incoming, Outgoing};

/// The transports a client can use.
#[derive(Debug)]
#[non_exhaustive]
pub enum Transport {
    LongPolling(LongPolling),
}

impl Transport {
    /// The `connectionType` this transport announces.
    pub fn connection_type(&self) -> &'static str {
        match self {
            Transport::LongPolling(_) => halley_protocol::connection_type::LONG_POLLING,
        }
    }

    /// Sends one batch and returns every message of the answer (replies and
    /// deliveries, in the server's order). `timeout` bounds the whole exchange.
    pub async fn exchange(
        &self,
        messages: &[Outgoing],
        timeout: Duration,
    ) -> Result<Vec<Incoming>, Error> {
        match self {
            Transport::LongPolling(lp) => lp.exchange(messages, timeout).await,
        }
    }
}

/// Everything an HTTP response carried, for tests that look at the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as a JSON array of messages; panics with the body in the
    /// message when it is not one (a helper for tests).
    pub fn messages(&self) -> Vec<serde_json::Value> {
        match self.json() {
            Ok(serde_json::Value::Array(messages)) => messages,
            _ => panic!(
                "expected a JSON array body, got HTTP {}: {}",
                self.status,
                self.text()
            ),
        }
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP client suited to long-polling: HTTP/1.1, no proxy, no Nagle delay,
/// optionally bound to a local source address (a load generator spreads its
/// connections over several addresses to get past one address's ports).
///
/// Many [`crate::Client`]s can share one; each keeps its own cookies.
pub fn http_client(local_address: Option<IpAddr>) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .local_address(local_address)
        .build()
}
