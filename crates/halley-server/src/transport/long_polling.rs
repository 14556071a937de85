//! long-polling: `POST` a JSON array of messages, receive a JSON array.

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use halley_protocol::BayeuxError;

use super::http::{bayeux_error, browser_id, decode_request, respond, Body};
use crate::engine::Engine;
use crate::exchange::Origin;
use crate::state::session::ConnectionType;

pub async fn handle(engine: &Engine, request: Request<Incoming>) -> Response<Body> {
    let max = engine.node().config().max_request_bytes;
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return too_large(max);
    }
    let transport = crate::metrics::Transport::LongPolling;
    crate::metrics::metrics().connections.get(transport).inc();
    let origin = Origin::http(ConnectionType::LongPolling, browser_id(&request))
        .from_peer(super::connections::peer_ip(&request));
    let body = match Limited::new(request.into_body(), max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => return too_large(max),
        Err(error) => {
            tracing::debug!(%error, "request body unreadable");
            return bayeux_error(
                StatusCode::BAD_REQUEST,
                BayeuxError::MESSAGE_INVALID,
                "request body unreadable",
            );
        }
    };
    let batch = match decode_request(engine, &body) {
        Ok(batch) => batch,
        Err(response) => return *response,
    };
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
