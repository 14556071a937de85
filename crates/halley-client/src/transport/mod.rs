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

mod http;
mod http1;
mod long_polling;
mod websocket;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;

use http::http_request;
pub use http::{http_client, RawResponse};
pub(crate) use long_polling::LongPolling;
pub(crate) use websocket::WebSocket;

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
pub(crate) enum Transport {
    LongPolling(LongPolling),
    WebSocket(WebSocket),
}

impl Transport {
    pub(crate) fn kind(&self) -> TransportKind {
        match self {
            Transport::LongPolling(_) => TransportKind::LongPolling,
            Transport::WebSocket(_) => TransportKind::WebSocket,
        }
    }

    /// The `connectionType` this transport announces.
    pub(crate) fn connection_type(&self) -> &'static str {
        self.kind().connection_type()
    }

    /// Sends one batch and returns the answer, in the server's order.
    /// Long-polling returns every message of the response (replies and
    /// deliveries); websocket returns the replies to this batch only (its
    /// deliveries have been handed over already). `timeout` bounds the
    /// whole exchange.
    pub(crate) async fn exchange(
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
    pub(crate) fn url(&self) -> &str {
        match self {
            Transport::LongPolling(lp) => lp.url(),
            Transport::WebSocket(ws) => ws.url(),
        }
    }

    pub(crate) fn cookies(&self) -> &Arc<CookieJar> {
        match self {
            Transport::LongPolling(lp) => lp.cookies(),
            Transport::WebSocket(ws) => ws.cookies(),
        }
    }

    /// Any HTTP request with this client's cookies (whatever the transport).
    pub(crate) async fn send_http(
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
    pub(crate) async fn close(&self) {
        if let Transport::WebSocket(ws) = self {
            ws.close().await;
        }
    }
}
