//! HTTP in and out: routing, cookies, bodies. No protocol logic lives here.
//!
//! - [`long_polling`]: `POST` a JSON array, get a JSON array back;
//! - [`callback_polling`]: `GET ?jsonp=cb&message=[...]`, get `cb([...])` back;
//! - [`websocket`]: upgrade on the same path, frames of JSON arrays;
//! - [`pages`]: the chat demo at `/`, the browser client `/halley.js`, `/healthz`;
//! - [`publish_api`]: `POST /api/publish`, publishing from a backend with an API key;
//! - [`http`]: what they share (cookies, decoding, errors, [`respond`]);
//! - [`http1`]: the HTTP/1.1 connection itself: requests in, whole
//!   responses out, the hand-over after a WebSocket upgrade;
//! - [`connections`]: open connections, capped in total and per client IP;
//! - [`origins`]: which web pages may use WebSocket and callback-polling;
//! - [`tls`]: HTTPS and WSS on the public listener, between accept and hyper.
//!
//! The transports are shells: they read bytes, hand messages to the
//! dispatcher ([`Engine::handle_batch`]), and write what the connection
//! state machine ([`crate::connection`]) says, when it says. Both HTTP
//! transports end in [`respond`], which drives the machine of one request
//! ([`drive_http`]) and writes its body as one response.

pub mod callback_polling;
pub mod connections;
pub mod http;
pub mod http1;
pub mod long_polling;
pub mod origins;
pub mod pages;
pub mod publish_api;
pub mod tls;
pub mod websocket;

use std::sync::Arc;

use ::http::{Method, Request, Response, StatusCode};
use tokio_util::task::TaskTracker;

use crate::engine::Engine;
use crate::state::limits::Limit;

pub use self::http::{
    bayeux_error, browser_id, decode_request, drive_http, plain, respond, Body, BROWSER_COOKIE,
};
pub use self::http1::{IncomingRequest, RequestBody};

/// Routes one HTTP request from `peer`. `sockets` tracks the WebSocket
/// tasks it spawns. The peer is passed along, not put in the request's
/// extensions: that was a map and a box allocated per request.
pub async fn route(
    engine: Arc<Engine>,
    sockets: TaskTracker,
    peer: &connections::Peer,
    request: IncomingRequest,
) -> Response<Body> {
    let peer_ip = Some(peer.addr.ip());
    let path = request.uri().path();
    let bayeux = engine.node().config().path.as_str();
    let on_bayeux_path = path == bayeux
        || (path.starts_with(bayeux) && path.as_bytes().get(bayeux.len()) == Some(&b'/'));
    // Before the Bayeux path, which could be `/api`.
    let response = if path == publish_api::PATH {
        publish_api::handle(&engine, peer_ip, request).await
    } else if on_bayeux_path {
        match *request.method() {
            Method::GET if websocket::is_upgrade(&request) => {
                match refused_page(&engine, &request) {
                    None => websocket::handle(&engine, peer, request, &sockets),
                    Some(refusal) => refusal,
                }
            }
            Method::POST => long_polling::handle(&engine, peer_ip, request).await,
            Method::GET if engine.node().config().callback_polling => {
                match refused_page(&engine, &request) {
                    None => callback_polling::handle(&engine, peer_ip, request).await,
                    Some(refusal) => refusal,
                }
            }
            _ => plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST (long-polling) or GET ?jsonp= (callback-polling)\n",
            ),
        }
    } else {
        pages::handle(&request, engine.node().config())
    };
    response
}

/// The 403 for a browser page of an origin `allowed-origins` does not
/// allow, if this request comes from one.
fn refused_page<B>(engine: &Engine, request: &Request<B>) -> Option<Response<Body>> {
    let node = engine.node();
    let origins::Refused(page) = origins::check(request, &node.config().allowed_origins).err()?;
    node.limits().hit(Limit::Origin, || {
        format!("a page of {page} was refused (not the server's origin nor in allowed-origins)")
    });
    Some(plain(
        StatusCode::FORBIDDEN,
        "this page's origin is not allowed to use this server (allowed-origins)\n",
    ))
}
