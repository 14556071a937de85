//! What the socket-less engine tests share: one batch through the engine
//! and the long-polling transport's own assembly code, minus the HTTP.

use std::sync::Arc;

use halley_protocol::{decode_batch, BodyWriter};
use halley_server::engine::Engine;
use halley_server::exchange::Origin;
use halley_server::state::session::ConnectionType;
use halley_server::transport::drive_http;
use serde_json::Value;

/// Sends `batch` as a long-polling request from the browser whose cookie is
/// `browser` (updated when the server issues one); returns the response body.
pub async fn exchange(
    engine: &Arc<Engine>,
    browser: &mut Option<String>,
    batch: &Value,
) -> Vec<Value> {
    let body = serde_json::to_vec(batch).unwrap();
    let origin = Origin::http(ConnectionType::LongPolling, browser.clone());
    let exchange = engine
        .handle_batch(decode_batch(&body).unwrap(), origin)
        .await;
    let mut body = BodyWriter::new();
    if let Some(id) = drive_http(engine, exchange, &mut body).await {
        *browser = Some(id);
    }
    match serde_json::from_slice(&body.finish(b"")).unwrap() {
        Value::Array(messages) => messages,
        other => panic!("not an array: {other}"),
    }
}
