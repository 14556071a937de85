//! Long-polling: every batch is one `POST` of a JSON array, answered by one
//! JSON array. A held `/meta/connect` simply is a slow response, so a client
//! needs two HTTP connections (the connect, and everything else); it owns
//! them (see [`super::http1`]) rather than borrowing from a shared pool.
//! Raw requests (`Client::raw_post` and friends, any URL and method) still
//! go through the `reqwest` client: they are for tests, not the hot path.
//!
//! Like the CometD JavaScript client, a batch of one meta message is posted to
//! the endpoint plus the message type (`/cometd/connect`), which makes
//! server logs and proxies readable; the option can turn it off.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use halley_protocol::meta;
use hyper::Uri;
use reqwest::Method;

use super::http::{http_request, RawResponse};
use super::http1::Connections;
use crate::cookie::CookieJar;
use crate::error::Error;
use crate::message::{decode_response, encode_batch, Incoming, Outgoing};
use crate::tls::Trust;

/// The long-polling transport of one client.
#[derive(Debug)]
pub(crate) struct LongPolling {
    /// For raw requests only.
    http: reqwest::Client,
    url: String,
    cookies: Arc<CookieJar>,
    append_message_type: bool,
    connections: Connections,
    /// `Err` when the URL is unusable (reported by every exchange). Boxed:
    /// parsed URIs are large, and every `Transport` would pay for them.
    targets: Result<Box<Targets>, String>,
}

/// The request targets of the two batches every client sends over and over,
/// parsed once.
#[derive(Debug)]
struct Targets {
    /// Of a lone `/meta/connect`.
    connect: Uri,
    /// Of anything posted to the endpoint itself.
    endpoint: Uri,
}

impl LongPolling {
    pub fn new(
        http: reqwest::Client,
        url: impl Into<String>,
        cookies: Arc<CookieJar>,
        append_message_type: bool,
    ) -> Self {
        let mut url = url.into();
        while url.ends_with('/') {
            url.pop();
        }
        let mut lp = LongPolling {
            http,
            connections: Connections::new(&url, None, &Trust::system()),
            targets: Err(String::new()),
            url,
            cookies,
            append_message_type,
        };
        let connect = Connections::target(&lp.url_for(&[Outgoing::new(meta::CONNECT)]));
        lp.targets = connect
            .and_then(|connect| {
                let endpoint = Connections::target(&lp.url)?;
                Ok(Box::new(Targets { connect, endpoint }))
            })
            .map_err(|e| e.to_string());
        lp
    }

    /// Opens the transport's connections from `address`, trusting `trust`
    /// over https; `keep_spare`: see
    /// [`crate::ClientBuilder::spare_connection`].
    pub fn with_connections(
        mut self,
        address: Option<IpAddr>,
        keep_spare: bool,
        trust: &Trust,
    ) -> Self {
        self.connections = Connections::new(&self.url, address, trust).keep_spare(keep_spare);
        self
    }

    /// The endpoint URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn cookies(&self) -> &Arc<CookieJar> {
        &self.cookies
    }

    /// Where a batch is posted: the endpoint, plus `/connect` etc. for a lone
    /// meta message when appending is on.
    pub fn url_for(&self, messages: &[Outgoing]) -> String {
        match messages {
            [only] if self.append_message_type => match only.channel.strip_prefix("/meta") {
                Some(kind) if kind.len() > 1 && kind.starts_with('/') => {
                    format!("{}{kind}", self.url)
                }
                _ => self.url.clone(),
            },
            _ => self.url.clone(),
        }
    }

    /// The request target of a batch (what [`LongPolling::url_for`] says,
    /// without the origin).
    fn target_for(&self, messages: &[Outgoing]) -> Result<Uri, Error> {
        let targets = self
            .targets
            .as_ref()
            .map_err(|e| Error::Connection(e.clone().into()))?;
        match messages {
            [only] if self.append_message_type && only.channel == meta::CONNECT => {
                Ok(targets.connect.clone())
            }
            _ => {
                let url = self.url_for(messages);
                if url != self.url {
                    return Connections::target(&url);
                }
                Ok(targets.endpoint.clone())
            }
        }
    }

    /// Posts the batch on one of this client's connections; `timeout`
    /// bounds the whole exchange (a connection it interrupts is closed).
    pub async fn exchange(
        &self,
        messages: &[Outgoing],
        timeout: Duration,
    ) -> Result<Vec<Incoming>, Error> {
        let target = self.target_for(messages)?;
        let body = Bytes::from(encode_batch(messages));
        let post = self.connections.post(target, body, &self.cookies);
        let response = tokio::time::timeout(timeout, post)
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        if response.status != 200 {
            return Err(Error::Status {
                status: response.status,
                body: response.body,
            });
        }
        decode_response(&response.body)
    }

    /// Any request, with this client's cookies; `Set-Cookie` answers are
    /// stored. A body is sent as `application/json`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<RawResponse, Error> {
        http_request(&self.http, &self.cookies, method, url, body, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(append: bool) -> LongPolling {
        LongPolling::new(
            reqwest::Client::new(),
            "http://h/cometd/",
            Arc::new(CookieJar::new()),
            append,
        )
    }

    #[test]
    fn appends_the_message_type_of_a_lone_meta_message() {
        let lp = transport(true);
        assert_eq!(lp.url(), "http://h/cometd");
        let connect = Outgoing::new("/meta/connect");
        let publish = Outgoing::new("/chat");
        assert_eq!(
            lp.url_for(std::slice::from_ref(&connect)),
            "http://h/cometd/connect"
        );
        assert_eq!(
            lp.url_for(std::slice::from_ref(&publish)),
            "http://h/cometd"
        );
        assert_eq!(lp.url_for(&[connect.clone(), publish]), "http://h/cometd");
        assert_eq!(
            transport(false).url_for(std::slice::from_ref(&connect)),
            "http://h/cometd"
        );
        assert_eq!(lp.url_for(&[Outgoing::new("/meta")]), "http://h/cometd");
    }

    #[test]
    fn request_targets_follow_the_urls() {
        let lp = transport(true);
        let target = |messages: &[Outgoing]| lp.target_for(messages).unwrap();
        assert_eq!(target(&[Outgoing::new("/meta/connect")]), "/cometd/connect");
        assert_eq!(
            target(&[Outgoing::new("/meta/subscribe")]),
            "/cometd/subscribe"
        );
        assert_eq!(target(&[Outgoing::new("/chat")]), "/cometd");
        assert_eq!(
            transport(false)
                .target_for(&[Outgoing::new("/meta/connect")])
                .unwrap(),
            "/cometd"
        );
        let bad = LongPolling::new(
            reqwest::Client::new(),
            "nonsense",
            Arc::new(CookieJar::new()),
            true,
        );
        assert!(matches!(
            bad.target_for(&[Outgoing::new("/meta/connect")]),
            Err(Error::Connection(_))
        ));
    }
}
