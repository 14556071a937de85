//! Long-polling: every batch is one `POST` of a JSON array, answered by one
//! JSON array. A held `/meta/connect` simply is a slow response, so a client
//! needs two HTTP connections at most (the connect, and everything else); the
//! shared `reqwest` pool provides them.
//!
//! Like the CometD JavaScript client, a batch of one meta message is posted to
//! the endpoint plus the message type (`/cometd/connect`), which makes
//! server logs and proxies readable; the option can turn it off.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;

use super::{http_request, RawResponse};
use crate::cookie::CookieJar;
use crate::error::Error;
use crate::message::{decode_response, encode_batch, Incoming, Outgoing};

/// The long-polling transport of one client.
#[derive(Debug)]
pub struct LongPolling {
    http: reqwest::Client,
    url: String,
    cookies: Arc<CookieJar>,
    append_message_type: bool,
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
        LongPolling {
            http,
            url,
            cookies,
            append_message_type,
        }
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

    pub async fn exchange(
        &self,
        messages: &[Outgoing],
        timeout: Duration,
    ) -> Result<Vec<Incoming>, Error> {
        let url = self.url_for(messages);
        let response = self
            .send(
                Method::POST,
                &url,
                Some(Bytes::from(encode_batch(messages))),
                Some(timeout),
            )
            .await?;
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
}
