//! Plain HTTP with a client's cookies: the requests a websocket client and
//! the `raw_*` methods make, what they answer ([`RawResponse`]), and the
//! shared HTTP client ([`http_client`]) a load generator hands to many
//! clients. Below both transports, which use it.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE};
use reqwest::Method;

use crate::cookie::CookieJar;
use crate::error::Error;
use crate::tls::Trust;

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

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// [`Trust::http_client`] with the system's roots ([`Trust::system`]): an
/// HTTP client suited to long-polling, that many [`crate::Client`]s can share.
pub fn http_client(local_address: Option<IpAddr>) -> reqwest::Result<reqwest::Client> {
    Trust::system().http_client(local_address)
}
