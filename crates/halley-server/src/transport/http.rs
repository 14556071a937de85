//! What the HTTP transports share: the response body type, the browser
//! cookie, request decoding and HTTP errors, and [`respond`], which drives
//! the connection state machine of one request ([`drive_http`]) and writes
//! its body as one response.

use bytes::Bytes;
use halley_protocol::BodyWriter;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{Request, Response, StatusCode};
use tokio::time::{sleep_until, Instant};

use crate::connection::{Connection, Status};
use crate::engine::Engine;
use crate::exchange::Exchange;

/// The cookie naming a browser, as CometD calls it.
pub const BROWSER_COOKIE: &str = "BAYEUX_BROWSER";

/// A response's body: always whole (see [`super::http1`]).
pub type Body = Bytes;

/// The `BAYEUX_BROWSER` cookie of a request, if present and well formed
/// (1 to 64 ASCII letters and digits, optionally quoted).
///
/// Read from the header's bytes as they are (every long poll does this):
/// the first `BAYEUX_BROWSER` pair of any `Cookie` field counts.
pub fn browser_id<B>(request: &Request<B>) -> Option<String> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            pair.strip_prefix(BROWSER_COOKIE.as_bytes())?
                .strip_prefix(b"=")
        })
        .map(|value| {
            let start = value.iter().position(|&b| b != b'"').unwrap_or(value.len());
            let end = value
                .iter()
                .rposition(|&b| b != b'"')
                .map_or(start, |i| i + 1);
            &value[start..end]
        })
        .filter(|value| {
            !value.is_empty() && value.len() <= 64 && value.iter().all(u8::is_ascii_alphanumeric)
        })
        // ASCII alphanumeric, checked above: valid UTF-8 (`from_utf8` on
        // ASCII is a quick scan; `from_utf8_lossy` was half of this call).
        .and_then(|value| String::from_utf8(value.to_vec()).ok())
}

/// Writes the exchange as one HTTP response: `prefix[...]suffix`.
pub async fn respond(
    engine: &Engine,
    exchange: Exchange,
    prefix: &[u8],
    suffix: &[u8],
    content_type: &'static str,
) -> Response<Body> {
    let mut body = BodyWriter::with_prefix(prefix);
    let new_browser_id = drive_http(engine, exchange, &mut body).await;
    let mut response = Response::new(body.finish(suffix));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(id) = new_browser_id {
        // Lax: not sent on another site's subrequests (a cross-site page's
        // script or fetch cannot ride on the user's session); Secure when
        // the server is reached over HTTPS (tls-cert, or cookie-secure for
        // TLS at a proxy).
        let secure = if engine.node().config().secure_cookie() {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!("{BROWSER_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax{secure}");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.insert(SET_COOKIE, value);
        }
    }
    response
}

/// Drives the connection state machine of one HTTP request to the end:
/// writes into `body` what it says, waiting (for the session's wake-up, the
/// time it asks for, or shutdown) while it holds a `/meta/connect`.
/// Returns the browser id to set as a cookie, if the exchange issued one.
pub async fn drive_http(
    engine: &Engine,
    exchange: Exchange,
    body: &mut BodyWriter,
) -> Option<String> {
    let node = engine.node();
    let new_browser_id = exchange.new_browser_id.clone();
    let mut connection = Connection::http(node.clone());
    let mut status = connection.on_exchange(exchange, Instant::now(), body);
    // Made once for the request, and only if it waits: it registers with
    // the server-wide shutdown `Notify`, whose lock every request shares.
    let stopping = node.shutdown().wait();
    tokio::pin!(stopping);
    let mut stopped = false;
    while let Status::Waiting { .. } = status {
        let Some(session) = connection.session().cloned() else {
            break;
        };
        // Register interest before looking, so a push in between is not missed.
        let notified = session.wake().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        session.watching();
        status = connection.poll(Instant::now(), body);
        let Status::Waiting { until } = status else {
            break;
        };
        tokio::select! {
            _ = &mut notified => {}
            _ = sleep_until(until.unwrap_or_else(Instant::now)), if until.is_some() => {}
            // At shutdown `poll` answers the held connect (`retry`).
            _ = &mut stopping, if !stopped => stopped = true,
        }
    }
    new_browser_id
}

/// Decodes a request's messages, or the HTTP error to answer with:
/// 400 for a body that is not messages, 413 for too many of them.
pub fn decode_request(
    engine: &Engine,
    body: &[u8],
) -> Result<Vec<halley_protocol::Inbound>, Box<Response<Body>>> {
    let batch = halley_protocol::decode_batch(body).map_err(|error| {
        Box::new(bayeux_error(
            StatusCode::BAD_REQUEST,
            halley_protocol::BayeuxError::MESSAGE_INVALID,
            &error.to_string(),
        ))
    })?;
    let max = engine.node().config().max_batch_messages;
    if batch.len() > max {
        return Err(Box::new(bayeux_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            halley_protocol::BayeuxError::BATCH_TOO_LARGE,
            &format!("at most {max} messages per request"),
        )));
    }
    Ok(batch)
}

/// A short plain-text response (errors that are not Bayeux messages).
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Bytes::from_static(text.as_bytes()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// An HTTP error carrying a Bayeux error body, for requests that could not
/// be read as messages at all (malformed JSON, too large).
pub fn bayeux_error(
    status: StatusCode,
    error: halley_protocol::BayeuxError,
    detail: &str,
) -> Response<Body> {
    let body =
        serde_json::json!([{ "successful": false, "error": error.to_string(), "failure": detail }]);
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookies(cookies: &[&[u8]]) -> Option<String> {
        let mut request = Request::new(());
        for cookie in cookies {
            request
                .headers_mut()
                .append(COOKIE, HeaderValue::from_bytes(cookie).unwrap());
        }
        browser_id(&request)
    }

    #[test]
    fn the_browser_cookie_is_found_among_others() {
        assert_eq!(
            with_cookies(&[b"BAYEUX_BROWSER=abc123"]).as_deref(),
            Some("abc123")
        );
        assert_eq!(
            with_cookies(&[b"a=1; BAYEUX_BROWSER=\"Q9\"; b=2"]).as_deref(),
            Some("Q9")
        );
        assert_eq!(
            with_cookies(&[b"a=1", b"BAYEUX_BROWSER=x7"]).as_deref(),
            Some("x7"),
            "in a second Cookie field"
        );
        assert_eq!(
            with_cookies(&[b"other=\xc3\xa9; BAYEUX_BROWSER=k"]).as_deref(),
            Some("k"),
            "other cookies' bytes do not matter"
        );
        assert_eq!(with_cookies(&[b"X_BAYEUX_BROWSER=abc"]), None);
        assert_eq!(with_cookies(&[b"BAYEUX_BROWSERS=abc"]), None);
    }

    #[test]
    fn a_malformed_browser_cookie_is_none() {
        assert_eq!(with_cookies(&[]), None);
        assert_eq!(with_cookies(&[b"BAYEUX_BROWSER="]), None);
        assert_eq!(with_cookies(&[b"BAYEUX_BROWSER=a-b"]), None);
        assert_eq!(with_cookies(&[b"BAYEUX_BROWSER= ab"]), None);
        let long = format!("BAYEUX_BROWSER={}", "a".repeat(65));
        assert_eq!(with_cookies(&[long.as_bytes()]), None);
        let longest = format!("BAYEUX_BROWSER={}", "a".repeat(64));
        assert_eq!(
            with_cookies(&[longest.as_bytes()]).map(|v| v.len()),
            Some(64)
        );
    }
}
