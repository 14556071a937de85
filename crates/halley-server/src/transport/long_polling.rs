//! long-polling: `POST` a JSON array of messages, receive a JSON array.

use http::{Response, StatusCode};

use halley_protocol::BayeuxError;

use super::http::{bayeux_error, browser_id, decode_request, respond, Body};
use super::http1::IncomingRequest;
use crate::engine::Engine;
use crate::exchange::Origin;
use crate::state::session::ConnectionType;

pub async fn handle(
    engine: &Engine,
    peer: Option<std::net::IpAddr>,
    request: IncomingRequest,
) -> Response<Body> {
    let max = engine.node().config().max_request_bytes;
    let transport = crate::metrics::Transport::LongPolling;
    crate::metrics::metrics().connections.get(transport).inc();
    let origin = Origin::http(ConnectionType::LongPolling, browser_id(&request)).from_peer(peer);
    // The body is dropped once decoded: a held connect keeps none of it.
    let Some(body) = request.into_body().bytes() else {
        return too_large(max);
    };
    let batch = match decode_request(engine, &body) {
        Ok(batch) => batch,
        Err(response) => return *response,
    };
    drop(body);
    let exchange = engine.handle_batch(batch, origin).await;
    respond(
        engine,
        exchange,
        b"",
        b"",
        "application/json; charset=utf-8",
    )
    .await
}

fn too_large(max: usize) -> Response<Body> {
    bayeux_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        BayeuxError::MESSAGE_INVALID,
        &format!("request body larger than {max} bytes"),
    )
}
