//! How messages travel between a client and the server.
//!
//! A [`Transport`] takes a batch of [`Outgoing`] messages and returns what
//! the server answered to it. It is an enum rather than a trait object: one
//! variant per transport and no allocation per call.
//!
//! - [`LongPolling`]: one `POST` per batch; the answer carries the replies
//!   *and* the deliveries the server had queued, which the caller hands over.
//! - [`WebSocket`]: one socket per client; `exchange` writes one frame and
//!   waits for the replies with the batch's ids, while the socket's reader
//!   task hands deliveries over as soon as they arrive, whatever frame they
//!   come in. `exchange` then returns replies only.
//!
//! Either way the caller passes the answer through `Session::dispatch`, so
//! a delivery is handed over exactly once, the same way.

mod http1;
pub mod long_polling;
pub mod websocket;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE};
use reqwest::Method;

pub use long_polling::LongPolling;
pub use websocket::WebSocket;

use crate::cookie::CookieJar;
use crate::error::Error;
use crate::message::{Incoming, Outgoing};

/// Which transport a [`crate::ClientBuilder`] sets up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// `connectionType: long-polling`: HTTP `POST`s (the default).
    #[default]
    LongPolling,
    /// `connectionType: websocket`: one WebSocket on the Bayeux URL.
    WebSocket,
}

impl TransportKind {
    /// The `connectionType` the transport announces.
    pub fn connection_type(self) -> &'static str {
        match self {
            TransportKind::LongPolling => halley_protocol::connection_type::LONG_POLLING,
            TransportKind::WebSocket => halley_protocol::connection_type::WEBSOCKET,
        }
    }
}

/// The transports a client can use.
#[derive(Debug)]
#[non_exhaustive]
pub enum Transport {
    LongPolling(LongPolling),
    WebSocket(WebSocket),
}

impl Transport {
    pub fn kind(&self) -> TransportKind {
        match self {
            Transport::LongPolling(_) => TransportKind::LongPolling,
            Transport::WebSocket(_) => TransportKind::WebSocket,
        }
    }

    /// The `connectionType` this transport announces.
    pub fn connection_type(&self) -> &'static str {
        self.kind().connection_type()
    }

    /// Sends one batch and returns the answer, in the server's order.
    /// Long-polling returns every message of the response (replies and
    /// deliveries); websocket returns the replies to this batch only (its
    /// deliveries have been handed over already). `timeout` bounds the
    /// whole exchange.
    pub async fn exchange(
        &self,
        messages: &[Outgoing],
        timeout: Duration,
    ) -> Result<Vec<Incoming>, Error> {
        match self {
            Transport::LongPolling(lp) => lp.exchange(messages, timeout).await,
            Transport::WebSocket(ws) => ws.exchange(messages, timeout).await,
        }
    }

    /// The endpoint URL (`http://...`), without a trailing slash.
    pub fn url(&self) -> &str {
        match self {
            Transport::LongPolling(lp) => lp.url(),
            Transport::WebSocket(ws) => ws.url(),
        }
    }

    pub fn cookies(&self) -> &Arc<CookieJar> {
        match self {
            Transport::LongPolling(lp) => lp.cookies(),
            Transport::WebSocket(ws) => ws.cookies(),
        }
    }

    /// Any HTTP request with this client's cookies (whatever the transport).
    pub async fn send_http(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<RawResponse, Error> {
        match self {
            Transport::LongPolling(lp) => lp.send(method, url, body, timeout).await,
            Transport::WebSocket(ws) => {
                http_request(ws.http(), ws.cookies(), method, url, body, timeout).await
            }
        }
    }

    /// Lets go of the connection: the websocket is closed (close frame and
    /// its echo); long-polling has nothing to close. The next exchange opens
    /// a new one.
    pub async fn close(&self) {
        if let Transport::WebSocket(ws) = self {
            ws.close().await;
        }
    }
}

/// Any request, with `cookies`; `Set-Cookie` answers are stored. A body is
/// sent as `application/json`.
pub(crate) async fn http_request(
    http: &reqwest::Client,
    cookies: &CookieJar,
    method: Method,
    url: &str,
    body: Option<Bytes>,
    timeout: Option<Duration>,
) -> Result<RawResponse, Error> {
    let mut request = http.request(method, url);
    if let Some(cookie) = cookies.header_value() {
        request = request.header(COOKIE, cookie);
    }
    if let Some(body) = body {
        request = request
            .header(CONTENT_TYPE, "application/json;charset=UTF-8")
            .body(body);
    }
    if let Some(timeout) = timeout {
        request = request.timeout(timeout);
    }
    let response = request.send().await?;
    cookies.store_response(response.headers());
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await?;
    Ok(RawResponse {
        status,
        headers,
        body,
    })
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
/// Many [`crate::Client`]s can share one; each keeps its own cookies. A
/// long-polling client uses it for raw requests only (its Bayeux exchanges go
/// over connections of its own); a websocket client for its upgrades.
pub fn http_client(local_address: Option<IpAddr>) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .local_address(local_address)
        .build()
}
