//! websocket: CometD's dialect on the Bayeux path (`/cometd` and below).
//!
//! Every frame, both ways, is a JSON array of Bayeux messages; the handshake
//! travels on the socket too. Unlike long-polling, deliveries do not wait for
//! a connect reply: whenever the session's outbox has something, it is written
//! at once, everything queued in one frame. The `/meta/connect` is only a
//! timer here: held for `timeout` (or until superseded, the session closes, or
//! shutdown) and then answered, which keeps the session alive.
//!
//! One task per socket owns it and `select!`s over: a frame from the client,
//! the session's wake-up, the held connect's deadline, the idle timer and
//! shutdown. The session's bounded outbox is the socket's outbound queue, so
//! the overflow policy is the same as long-polling's.
//!
//! Reactions to bad input, each affecting this socket only:
//! - a text frame that is not JSON or not messages: an error reply frame;
//! - a binary frame: close 1003 (unsupported data);
//! - a message over `max-request-bytes`: close 1009 (message too big);
//! - silence (no frame, no pong) for `websocket-idle-timeout`: close 1001;
//! - server shutdown, or a drain reaching the session: the held connect is
//!   answered with `reconnect: retry`, then close 1001.
//!
//! Only the socket of a session's latest `/meta/connect` takes its
//! deliveries: when a client reconnects on a new socket while the old one is
//! half-dead (frozen by the network), the old one cannot swallow messages.
//!
//! A session survives its socket: when the socket drops, the session ages
//! like a long-polling one and expires after `interval + maxInterval`; a
//! client that reconnects in time with the same clientId keeps its
//! subscriptions and receives what was queued meanwhile.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tokio_websockets::{CloseCode, Limits, Message, Payload, ServerBuilder, WebSocketStream};

use halley_protocol::{decode_batch, BayeuxError, BodyWriter};

use super::http::{browser_id, plain, Body};
use super::http1::{IncomingRequest, OnUpgrade};
use crate::connection::{Connection, Status};
use crate::engine::Engine;
use crate::exchange::Origin;
use crate::state::limits::Limit;

/// A frame the client does not read within this time closes the socket: a
/// stuck peer must not hold its task (and the session's deliveries) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts one open WebSocket in the metrics for as long as it lives.
struct OpenSocket;

impl Drop for OpenSocket {
    fn drop(&mut self) {
        crate::metrics::metrics().websockets_open.dec();
    }
}

/// Whether a request asks to switch to WebSocket.
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the upgrade request and spawns the socket's task (tracked by
/// `sockets`, so shutdown can wait for it).
pub fn handle(
    engine: &Arc<Engine>,
    peer: &super::connections::Peer,
    mut request: IncomingRequest,
    sockets: &TaskTracker,
) -> Response<Body> {
    if !engine.node().config().websocket {
        return plain(
            StatusCode::BAD_REQUEST,
            "the websocket transport is disabled on this server\n",
        );
    }
    let headers = request.headers();
    let connection_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return plain(
            StatusCode::BAD_REQUEST,
            "websocket upgrade without Connection: Upgrade\n",
        );
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut response = plain(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is supported\n",
        );
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "websocket upgrade without Sec-WebSocket-Key\n",
        );
    };
    let accept = halley_protocol::websocket::accept_key(key.as_bytes());
    let browser = browser_id(&request);
    // Holds the connection's place (see `connections`) while the socket lives.
    let peer = Some(peer.clone());
    // The socket's age counts from the upgrade request, not from when the
    // upgrade completes: a handshake may be processed in between.
    let opened_ms = engine.node().sessions().now_ms();
    // Set by the connection for a request with `Connection: upgrade`.
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "websocket upgrade without Connection: Upgrade\n",
        );
    };
    let engine = engine.clone();
    let metrics = crate::metrics::metrics();
    metrics
        .connections
        .get(crate::metrics::Transport::Websocket)
        .inc();
    sockets.spawn(async move {
        match on_upgrade.upgraded().await {
            Some(upgraded) => {
                metrics.websockets_open.inc();
                // Decremented however the socket's task ends.
                let _open = OpenSocket;
                serve(engine, upgraded, browser, opened_ms, peer).await;
            }
            None => tracing::debug!("websocket upgrade failed: the 101 was not written"),
        }
    });

    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// Serves one upgraded connection until it closes: frames in, Bayeux
/// replies and deliveries out. Also the fuzz target's way in
/// (`crate::fuzzing::websocket`), over an in-memory stream.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    engine: Arc<Engine>,
    stream: S,
    browser: Option<String>,
    opened_ms: u64,
    peer: Option<super::connections::Peer>,
) {
    let limits = Limits::default().max_payload_len(Some(engine.node().config().max_request_bytes));
    let ws = ServerBuilder::new().limits(limits).serve(stream);
    Socket::new(engine, browser, opened_ms, peer).run(ws).await;
}

/// Why a socket's task ends.
#[derive(Debug)]
enum Closed {
    ByPeer,
    Idle,
    Error,
}

/// The state of one socket: its connection state machine, and what only a
/// socket has (its cookie, its liveness).
struct Socket {
    id: u64,
    /// When the socket opened, on the node's clock.
    opened_ms: u64,
    engine: Arc<Engine>,
    /// The cookie of the upgrade request: every batch on this socket speaks for it.
    browser_id: Option<String>,
    /// The client, and its place among the open connections.
    peer: Option<super::connections::Peer>,
    /// What to write and when (see [`crate::connection`]).
    connection: Connection,
    last_heard: Instant,
    ping_sent: bool,
    closing: bool,
}

impl Socket {
    fn new(
        engine: Arc<Engine>,
        browser_id: Option<String>,
        opened_ms: u64,
        peer: Option<super::connections::Peer>,
    ) -> Self {
        let node = engine.node().clone();
        let id = node.sessions().new_socket_id();
        Socket {
            id,
            opened_ms,
            engine,
            browser_id,
            peer,
            connection: Connection::websocket(node, id),
            last_heard: Instant::now(),
            ping_sent: false,
            closing: false,
        }
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self, mut ws: WebSocketStream<S>) {
        let end = self.serve(&mut ws).await;
        tracing::debug!(
            ?end,
            client_id = self.connection.session().map(|s| s.client_id()),
            "websocket closed"
        );
        // Dropping the connection detaches its session: its expiry clock starts.
    }

    /// Waits on the socket, the session's wake-ups and the timers, and
    /// writes what the connection state machine says is due. Handling a
    /// frame is boxed: this future is what an idle socket's task keeps
    /// allocated, so it is kept to the waiting state.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
    ) -> Closed {
        let node = self.engine.node().clone();
        let idle = node.config().websocket_idle_timeout();
        let mut errors = 0;
        // Two timers for the socket's life, re-armed only when their
        // deadline moves: a timer made in the loop was registered in
        // tokio's wheel and cleared again on every delivery. The idle timer
        // is lazy: a frame only moves `last_heard`; when the timer fires
        // early for the new deadline, it is re-armed there.
        let idle_timer = tokio::time::sleep_until(self.idle_deadline(idle));
        tokio::pin!(idle_timer);
        let due_timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(due_timer);
        // Registered once for the socket's life: made in the loop, it took
        // the server-wide shutdown `Notify`'s lock twice per delivery (to
        // register and to deregister), a lock every socket shares.
        let stopping = node.shutdown().wait();
        tokio::pin!(stopping);
        let mut stopped = false;
        loop {
            let session = self.connection.session().cloned();
            // Register for wake-ups before looking at the outbox (no lost wake-up).
            let notified = session.as_ref().map(|s| s.wake().notified());
            tokio::pin!(notified);
            if let Some(notified) = notified.as_mut().as_pin_mut() {
                notified.enable();
            }
            if let Some(session) = &session {
                session.watching();
            }
            let mut until = None;
            if !self.closing {
                let mut body = BodyWriter::new();
                if let Status::Waiting { until: next } =
                    self.connection.poll(Instant::now(), &mut body)
                {
                    until = next;
                }
                // After writing, wait on the same wake-up: it was registered
                // before `poll` took the outbox, so it fires for anything
                // queued since (looking again at once cost a second
                // registration, and an empty look, per delivery).
                if !body.is_empty() && send(ws, body.finish(b"")).await.is_err() {
                    return Closed::Error;
                }
                // A drain reached this session: its held connect has just
                // been answered (reconnect: retry); the client reconnects
                // on a new socket, which a load balancer sends elsewhere.
                let leaving = session
                    .as_ref()
                    .is_some_and(|s| node.shutdown().asks_to_leave(s.client_id()));
                if leaving && !self.connection.is_holding() {
                    self.close(ws, CloseCode::GOING_AWAY, "server draining")
                        .await;
                    continue;
                }
            }

            if let Some(until) = until {
                if due_timer.deadline() != until {
                    due_timer.as_mut().reset(until);
                }
            }
            tokio::select! {
                _ = &mut stopping, if !self.closing && !stopped => {
                    stopped = true;
                    let mut body = BodyWriter::new();
                    self.connection.shutdown(Instant::now(), &mut body);
                    if !body.is_empty() && send(ws, body.finish(b"")).await.is_err() {
                        return Closed::Error;
                    }
                    self.close(ws, CloseCode::GOING_AWAY, "server shutting down").await;
                }
                frame = ws.next() => match frame {
                    None => return Closed::ByPeer,
                    Some(Err(error)) => {
                        // The library has queued the matching close frame
                        // (1009 for too big, 1002 for protocol errors); the
                        // next read flushes it and ends the stream.
                        if let tokio_websockets::Error::PayloadTooLong { len, max_len } = &error {
                            let (len, max_len) = (*len, *max_len);
                            self.engine.node().limits().hit(Limit::WebSocketMessageSize, || {
                                format!("websocket message of {len} bytes over max-request-bytes ({max_len}): closing with 1009")
                            });
                        } else {
                            tracing::debug!(%error, "websocket read failed");
                        }
                        errors += 1;
                        if errors > 1 {
                            return Closed::Error;
                        }
                    }
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        self.ping_sent = false;
                        if self.closing {
                            continue;
                        }
                        if let Some(text) = message.as_text() {
                            let text = text.to_owned();
                            // Boxed: see `Socket::serve`.
                            if Box::pin(self.handle_text(ws, &text)).await.is_err() {
                                return Closed::Error;
                            }
                        } else if message.is_binary() {
                            tracing::debug!("binary websocket frame: closing with 1003");
                            self.close(ws, CloseCode::UNSUPPORTED_DATA, "Bayeux frames are text").await;
                        }
                        // Ping, pong and close are answered by the library.
                    }
                },
                _ = async { notified.as_mut().as_pin_mut().expect("guarded").await }, if notified.is_some() => {}
                _ = &mut due_timer, if until.is_some() && !self.closing => {}
                _ = &mut idle_timer => {
                    let deadline = self.idle_deadline(idle);
                    if deadline > Instant::now() {
                        // Heard from the peer since the timer was armed.
                        idle_timer.as_mut().reset(deadline);
                        continue;
                    }
                    if self.closing {
                        return Closed::Error; // the peer never answered our close
                    }
                    if self.ping_sent {
                        tracing::debug!("websocket idle: closing with 1001");
                        self.close(ws, CloseCode::GOING_AWAY, "idle timeout").await;
                        return Closed::Idle;
                    }
                    self.ping_sent = true;
                    idle_timer.as_mut().reset(self.idle_deadline(idle));
                    if with_timeout(ws.send(Message::ping(Bytes::new()))).await.is_err() {
                        return Closed::Error;
                    }
                }
            }
        }
    }

    /// When silence becomes suspicious: a ping is due `idle / 2` after the
    /// last frame heard, the close `idle` after it once the ping is out.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.last_heard + if self.ping_sent { idle } else { idle / 2 }
    }

    /// Handles one text frame: a batch of messages, answered as the
    /// connection state machine writes it.
    async fn handle_text<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        text: &str,
    ) -> Result<(), ()> {
        let config = self.engine.node().config();
        let batch = match decode_batch(text.as_bytes()) {
            Ok(batch) => batch,
            Err(error) => {
                return send(
                    ws,
                    error_frame(BayeuxError::MESSAGE_INVALID, &error.to_string()),
                )
                .await;
            }
        };
        if batch.is_empty() {
            return Ok(()); // Faye's keep-alive ping is `[]`.
        }
        if batch.len() > config.max_batch_messages {
            let detail = format!("at most {} messages per frame", config.max_batch_messages);
            return send(ws, error_frame(BayeuxError::BATCH_TOO_LARGE, &detail)).await;
        }
        let origin = Origin::websocket(self.id, self.opened_ms, self.browser_id.clone())
            .from_peer(self.peer.as_ref().map(|peer| peer.addr.ip()));
        let exchange = self.engine.handle_batch(batch, origin).await;
        let mut body = BodyWriter::new();
        self.connection
            .on_exchange(exchange, Instant::now(), &mut body);
        if body.is_empty() {
            return Ok(());
        }
        send(ws, body.finish(b"")).await
    }

    async fn close<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        code: CloseCode,
        reason: &str,
    ) {
        self.closing = true;
        let _ = with_timeout(ws.send(Message::close(Some(code), reason))).await;
    }
}

/// Sends one text frame (zero-copy from `Bytes`), bounded by [`WRITE_TIMEOUT`].
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    frame: Bytes,
) -> Result<(), ()> {
    with_timeout(ws.send(Message::text(Payload::from(frame)))).await
}

async fn with_timeout<F, E>(write: F) -> Result<(), ()>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::debug!(%error, "websocket write failed");
            Err(())
        }
        Err(_) => {
            tracing::debug!("websocket write timed out: the client is not reading");
            Err(())
        }
    }
}

fn error_frame(error: BayeuxError, detail: &str) -> Bytes {
    let body =
        serde_json::json!([{ "successful": false, "error": error.to_string(), "failure": detail }]);
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connected WebSocket client keeps its socket's task allocated:
    /// its future is sized by its largest state. Boxing the handling of a
    /// frame and of a held connect keeps that to the waiting state (it was
    /// ~4 KB, most of a client's memory). A regression guard, not a target.
    #[tokio::test]
    async fn an_idle_sockets_task_stays_small() {
        let engine = Engine::new(crate::Config::default());
        let (stream, _peer) = tokio::io::duplex(64);
        let task = Socket::new(engine, None, 0, None).run(ServerBuilder::new().serve(stream));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2048, "a socket's task future is {size} bytes");
    }

    /// The idle timer is armed once and moved lazily: a frame heard only
    /// moves `last_heard`, and the ping and the close still come `idle / 2`
    /// and `idle` after the last frame. On tokio's paused clock, where
    /// timers fire exactly at their deadline.
    #[tokio::test(start_paused = true)]
    async fn silence_is_pinged_then_closed_counting_from_the_last_frame() {
        use tokio::io::AsyncWriteExt;
        let config = crate::Config {
            websocket_idle_timeout: 1000,
            ..crate::Config::default()
        };
        let engine = Engine::new(config);
        let (stream, mut peer) = tokio::io::duplex(4096);
        let start = Instant::now();
        let task = tokio::spawn(
            Socket::new(engine, None, 0, None).run(ServerBuilder::new().serve(stream)),
        );
        // At 400 ms the peer sends `[]` (Faye's keep-alive): a masked text
        // frame (zero mask). It never reads, so it never answers the ping.
        tokio::time::sleep(Duration::from_millis(400)).await;
        peer.write_all(&[0x81, 0x82, 0, 0, 0, 0, b'[', b']'])
            .await
            .unwrap();
        task.await.unwrap();
        // Ping due at 400 + 500 ms, close at 400 + 1000 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(1400));
    }
}
