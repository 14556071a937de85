//! What the socket-less engine tests share: one batch through the engine
//! and the long-polling transport's own assembly code, minus the HTTP; and
//! waiting for another task without sleeping (the tests run on tokio's
//! paused clock, where a sleep is the scenario's time passing).
#![allow(dead_code)] // each test file uses its own share

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

/// How many times [`until`] lets the other tasks run before it gives up.
/// On the current-thread runtime one yield runs every task that is ready,
/// so this only bounds a chain of wake-ups; a broken engine fails here with
/// what was awaited instead of hanging.
const YIELDS: usize = 1_000;

/// Lets the other tasks run until `condition` holds. It yields rather than
/// sleeps, so no virtual time passes: durations measured around it stay
/// exact.
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..YIELDS {
        if condition() {
            return;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        condition(),
        "still waiting after {YIELDS} yields for {what}"
    );
}

/// Lets every task that is ready run until it waits (for a wake-up or a
/// timer), without virtual time passing: a few yields on the
/// current-thread runtime, which the tests use.
pub async fn run_ready_tasks() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}
