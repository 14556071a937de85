//! HTTP in and out: routing, cookies, bodies. No protocol logic lives here.
//!
//! - [`long_polling`]: `POST` a JSON array, get a JSON array back;
//! - [`callback_polling`]: `GET ?jsonp=cb&message=[...]`, get `cb([...])` back;
//! - [`websocket`]: upgrade on the same path, frames of JSON arrays;
//! - [`pages`]: the chat demo at `/`, the browser client `/halley.js`, `/healthz`;
//! - [`publish_api`]: `POST /api/publish`, publishing from a backend with an API key.
//!
//! Both Bayeux transports end in [`respond`], which writes one body in the
//! order Bayeux wants: handshake replies, queued deliveries, other replies,
//! and the `/meta/connect` reply last (after holding it if it may be held).

pub mod callback_polling;
pub mod long_polling;
pub mod pages;
pub mod publish_api;
pub mod websocket;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use halley_protocol::BodyWriter;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use crate::engine::{Engine, Exchange};

/// The cookie naming a browser, as CometD calls it.
pub const BROWSER_COOKIE: &str = "BAYEUX_BROWSER";

pub type Body = Full<Bytes>;

/// Routes one HTTP request. `sockets` tracks the WebSocket tasks it spawns.
pub async fn route(
    engine: Arc<Engine>,
    sockets: TaskTracker,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path();
    let bayeux = engine.config().path.as_str();
    let on_bayeux_path = path == bayeux
        || (path.starts_with(bayeux) && path.as_bytes().get(bayeux.len()) == Some(&b'/'));
    // Before the Bayeux path, which could be `/api`.
    let response = if path == publish_api::PATH {
        publish_api::handle(&engine, request).await
    } else if on_bayeux_path {
        match *request.method() {
            Method::GET if websocket::is_upgrade(&request) => {
                websocket::handle(&engine, request, &sockets)
            }
            Method::POST => long_polling::handle(&engine, request).await,
            Method::GET if engine.config().callback_polling => {
                callback_polling::handle(&engine, request).await
            }
            _ => plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST (long-polling) or GET ?jsonp= (callback-polling)\n",
            ),
        }
    } else {
        pages::handle(&request)
    };
    Ok(response)
}

/// The `BAYEUX_BROWSER` cookie of a request, if present and well formed.
pub fn browser_id(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BROWSER_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| {
            !value.is_empty()
                && value.len() <= 64
                && value.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .map(str::to_owned)
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
    let new_browser_id = write_exchange(engine, exchange, &mut body).await;
    let mut response = Response::new(Full::new(body.finish(suffix)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(id) = new_browser_id {
        let cookie = format!("{BROWSER_COOKIE}={id}; Path=/; HttpOnly");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.insert(SET_COOKIE, value);
        }
    }
    response
}

/// Puts an HTTP exchange's messages into `body` in the order Bayeux wants:
/// handshake replies, queued deliveries, other replies, and the
/// `/meta/connect` reply last, after holding it if it may be held. Returns
/// the browser id to set as a cookie, if the exchange issued one.
pub async fn write_exchange(
    engine: &Engine,
    mut exchange: Exchange,
    body: &mut BodyWriter,
) -> Option<String> {
    let mut connect_reply = match exchange.connect.take() {
        Some(pending) => {
            if exchange.session.is_none() {
                exchange.session = Some(pending.session().clone());
            }
            let holdable = exchange.batch_len == 1;
            Some(
                engine
                    .complete_connect(pending, holdable, exchange.browser_id())
                    .await,
            )
        }
        None => None,
    };
    let deliveries = match exchange.session.as_ref().filter(|s| !s.is_closed()) {
        // With the ack extension only a connect reply carries deliveries.
        Some(session) => match connect_reply.as_mut() {
            Some((reply, generation)) => {
                engine.deliveries_for_connect_reply(session, reply, *generation)
            }
            None => session.take_piggyback(),
        },
        None => Default::default(),
    };
    let connect_reply = connect_reply.map(|(reply, _)| reply);
    for reply in &exchange.handshake_replies {
        body.push_reply(reply);
    }
    for delivery in &deliveries {
        body.push_encoded(delivery);
    }
    for reply in exchange.replies.iter().chain(&connect_reply) {
        body.push_reply(reply);
    }
    exchange.new_browser_id
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
    let max = engine.config().max_batch_messages;
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
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
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
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}
