//! Ways in for the fuzz targets (`fuzz/` at the repository's root); not an
//! API: hidden from the docs, changed at will.
//!
//! Each is the smallest public handle on a parser that is otherwise private,
//! so the fuzzer runs the server's own code rather than a copy:
//!
//! | function | what it reaches |
//! |---|---|
//! | [`callback_polling_query`] | the `?jsonp=&message=` query of callback-polling |
//! | [`json_depth`] | the nesting count that enforces `max-data-depth` |
//! | [`websocket`] | a WebSocket's whole path: frames, batches, the engine, replies |
//! | [`http1_requests`] | the public listener's HTTP/1.1 request reader: heads, framing, bodies |
//!
//! The remote adapter protocol's [`crate::adapter::remote::protocol::decode`]
//! and the codec of `halley-protocol` are public already.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::engine::Engine;

pub use crate::transport::callback_polling::{
    is_valid_callback, parse_query as callback_polling_query, Jsonp,
};

/// How deep arrays and objects nest in valid JSON `text` (0 for a scalar).
pub fn json_depth(text: &str) -> usize {
    crate::publish::json_depth(text)
}

/// Serves one WebSocket (already upgraded) on `stream` with `engine`, as
/// the server does after an upgrade, until the peer closes it.
pub async fn websocket<S: AsyncRead + AsyncWrite + Unpin>(engine: Arc<Engine>, stream: S) {
    let opened_ms = engine.node().sessions().now_ms();
    crate::transport::websocket::serve(engine, stream, None, opened_ms, None).await;
}

/// Reads the HTTP/1.1 requests in `input` as the public listener does
/// (bodies up to `max_body_bytes`): each request's head and body, and the
/// status of a refused head, if one ended it.
pub async fn http1_requests(
    input: &[u8],
    max_body_bytes: usize,
) -> (
    Vec<(http::Request<()>, crate::transport::RequestBody)>,
    Option<http::StatusCode>,
) {
    crate::transport::http1::read_requests(input, max_body_bytes).await
}
