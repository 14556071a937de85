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
//! - server shutdown: the held connect is answered with `reconnect: retry`,
//!   then close 1001.
//!
//! Only the socket of a session's latest `/meta/connect` takes its
//! deliveries: when a client reconnects on a new socket while the old one is
//! half-dead (frozen by the network), the old one cannot swallow messages.
//!
//! A session survives its socket: when the socket drops, the session ages
//! like a long-polling one and expires after `interval + maxInterval`; a
//! client that reconnects in time with the same clientId keeps its
//! subscriptions and receives what was queued meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tokio_websockets::{CloseCode, Limits, Message, Payload, ServerBuilder, WebSocketStream};

use halley_protocol::{decode_batch, BayeuxError, BodyWriter};

use super::{browser_id, plain, Body};
use crate::engine::{Engine, Origin};
use crate::meta::connect::{ConnectEnd, PendingConnect};
use crate::state::session::Session;

/// A frame the client does not read within this time closes the socket: a
/// stuck peer must not hold its task (and the session's deliveries) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a request asks to switch to WebSocket.
pub fn is_upgrade(request: &Request<Incoming>) -> bool {
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
    mut request: Request<Incoming>,
    sockets: &TaskTracker,
) -> Response<Body> {
    if !engine.config().websocket {
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
    // The socket's age counts from the upgrade request, not from when the
    // upgrade completes: a handshake may be processed in between.
    let opened_ms = engine.sessions().now_ms();
    let on_upgrade = hyper::upgrade::on(&mut request);
    let engine = engine.clone();
    sockets.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let limits =
                    Limits::default().max_payload_len(Some(engine.config().max_request_bytes));
                let ws = ServerBuilder::new()
                    .limits(limits)
                    .serve(TokioIo::new(upgraded));
                Socket::new(engine, browser, opened_ms).run(ws).await;
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// Why a socket's task ends.
#[derive(Debug)]
enum Closed {
    ByPeer,
    Idle,
    Error,
}

/// Numbers sockets, so a session knows which one its latest connect came on.
static NEXT_SOCKET_ID: AtomicU64 = AtomicU64::new(1);

/// The state of one socket.
struct Socket {
    id: u64,
    /// When the socket opened, on the sessions' clock.
    opened_ms: u64,
    engine: Arc<Engine>,
    /// The cookie of the upgrade request: every batch on this socket speaks for it.
    browser_id: Option<String>,
    /// The session this socket serves (set by its handshake or first connect).
    session: Option<Arc<Session>>,
    /// The connect being held, with its deadline.
    held: Option<(PendingConnect, Instant)>,
    last_heard: Instant,
    ping_sent: bool,
    closing: bool,
}

impl Socket {
    fn new(engine: Arc<Engine>, browser_id: Option<String>, opened_ms: u64) -> Self {
        Socket {
            id: NEXT_SOCKET_ID.fetch_add(1, Ordering::Relaxed),
            opened_ms,
            engine,
            browser_id,
            session: None,
            held: None,
            last_heard: Instant::now(),
            ping_sent: false,
            closing: false,
        }
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self, mut ws: WebSocketStream<S>) {
        let end = self.serve(&mut ws).await;
        tracing::debug!(
            ?end,
            client_id = self.session.as_ref().map(|s| s.client_id()),
            "websocket closed"
        );
        self.attach(None);
    }

    /// Waits on the socket, the session's wake-ups and the timers, and
    /// writes what is due. Handling a frame and answering a held connect are
    /// boxed: this future is what an idle socket's task keeps allocated, so
    /// it is kept to the waiting state (~1 KB rather than ~4 KB per client).
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
    ) -> Closed {
        let engine = self.engine.clone();
        let idle = engine.config().websocket_idle_timeout();
        let mut errors = 0;
        loop {
            let session = self.session.clone();
            // Register for wake-ups before looking at the outbox (no lost wake-up).
            let notified = session.as_ref().map(|s| s.wake().notified());
            tokio::pin!(notified);
            if let Some(notified) = notified.as_mut().as_pin_mut() {
                notified.enable();
            }
            if !self.closing {
                let owned = session.as_ref().filter(|s| s.owner_socket() == self.id);
                let now_ms = engine.sessions().now_ms();
                if let Some(session) = owned.filter(|s| s.has_due_deliveries(now_ms)) {
                    if !session.ack_enabled() {
                        let mut body = BodyWriter::new();
                        for delivery in session.take_deliveries() {
                            body.push_encoded(&delivery);
                        }
                        if send(ws, body.finish(b"")).await.is_err() {
                            return Closed::Error;
                        }
                        continue;
                    }
                    // With the ack extension deliveries travel only in a
                    // (numbered) connect reply: answer the held one now.
                    if self.held.is_some() {
                        if Box::pin(self.answer_held(ws, ConnectEnd::Deliveries))
                            .await
                            .is_err()
                        {
                            return Closed::Error;
                        }
                        continue;
                    }
                }
                if let Some(end) = self.held.as_ref().and_then(|(p, _)| p.must_end(&engine)) {
                    if Box::pin(self.answer_held(ws, end)).await.is_err() {
                        return Closed::Error;
                    }
                    continue;
                }
            }

            let held_deadline = self.held.as_ref().map(|(_, deadline)| *deadline);
            // Lazy deliveries wait, but not past their deadline; deliveries
            // over the session's bandwidth wait until it lets them leave.
            let lazy_due = session
                .as_ref()
                .filter(|s| s.owner_socket() == self.id)
                .and_then(|s| engine.sessions().deliveries_wait_until(s));
            let idle_deadline = self.last_heard + if self.ping_sent { idle } else { idle / 2 };
            tokio::select! {
                _ = engine.shutdown().wait(), if !self.closing => {
                    if self.held.is_some() && Box::pin(self.answer_held(ws, ConnectEnd::Shutdown)).await.is_err() {
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
                            tracing::warn!(len, max_len, "websocket message over max-request-bytes: closing with 1009");
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
                            // Boxed, as `answer_held`: see `Socket::serve`.
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
                _ = tokio::time::sleep_until(lazy_due.unwrap_or(idle_deadline)), if lazy_due.is_some() && !self.closing => {}
                _ = tokio::time::sleep_until(held_deadline.unwrap_or(idle_deadline)), if held_deadline.is_some() && !self.closing => {
                    if Box::pin(self.answer_held(ws, ConnectEnd::Timeout)).await.is_err() {
                        return Closed::Error;
                    }
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    if self.closing {
                        return Closed::Error; // the peer never answered our close
                    }
                    if self.ping_sent {
                        tracing::debug!("websocket idle: closing with 1001");
                        self.close(ws, CloseCode::GOING_AWAY, "idle timeout").await;
                        return Closed::Idle;
                    }
                    self.ping_sent = true;
                    if with_timeout(ws.send(Message::ping(Bytes::new()))).await.is_err() {
                        return Closed::Error;
                    }
                }
            }
        }
    }

    /// Handles one text frame: a batch of messages.
    async fn handle_text<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        text: &str,
    ) -> Result<(), ()> {
        let config = self.engine.config();
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
        let origin = Origin::websocket(self.id, self.opened_ms, self.browser_id.clone());
        let mut exchange = self.engine.handle_batch(batch, origin).await;
        let session = exchange
            .session
            .clone()
            .or_else(|| exchange.connect.as_ref().map(|c| c.session().clone()));
        if let Some(session) = session.filter(|s| !s.is_closed()) {
            self.attach(Some(session));
        }

        let mut connect_reply = None;
        let mut superseded = None;
        if let Some(pending) = exchange.connect.take() {
            if pending.hold_for().is_zero() || self.engine.shutdown().is_started() {
                let generation = pending.generation();
                connect_reply = Some((pending.immediate_reply(&self.engine), generation));
            } else {
                let deadline = Instant::now() + pending.hold_for();
                if let Some((older, _)) = self.held.replace((pending, deadline)) {
                    let generation = older.generation();
                    let mut reply = older.answer(&self.engine, ConnectEnd::Superseded);
                    if let Some(session) = &self.session {
                        // Numbers the reply (with acks); it carries nothing.
                        self.engine
                            .deliveries_for_connect_reply(session, &mut reply, generation);
                    }
                    superseded = Some(reply);
                }
            }
        }
        // Deliveries ride along only on the socket of the session's latest
        // connect (and, with the ack extension, only with a connect reply).
        let deliveries = match self
            .session
            .as_ref()
            .filter(|s| s.owner_socket() == self.id)
        {
            Some(session) => match connect_reply.as_mut() {
                Some((reply, generation)) => {
                    self.engine
                        .deliveries_for_connect_reply(session, reply, *generation)
                }
                None => session.take_piggyback(),
            },
            None => Default::default(),
        };

        let mut body = BodyWriter::new();
        for reply in &exchange.handshake_replies {
            body.push_reply(reply);
        }
        for delivery in &deliveries {
            body.push_encoded(delivery);
        }
        for reply in exchange
            .replies
            .iter()
            .chain(&superseded)
            .chain(connect_reply.as_ref().map(|(reply, _)| reply))
        {
            body.push_reply(reply);
        }
        if body.is_empty() {
            return Ok(());
        }
        send(ws, body.finish(b"")).await
    }

    async fn answer_held<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        end: ConnectEnd,
    ) -> Result<(), ()> {
        let Some((pending, _)) = self.held.take() else {
            return Ok(());
        };
        let generation = pending.generation();
        let mut reply = pending.answer(&self.engine, end);
        // A superseded connect (a newer one came, on this socket or another)
        // gets no deliveries: the generation check sees to it.
        let deliveries = match self.session.as_ref() {
            Some(session) => self
                .engine
                .deliveries_for_connect_reply(session, &mut reply, generation),
            None => Default::default(),
        };
        let mut body = BodyWriter::new();
        for delivery in &deliveries {
            body.push_encoded(delivery);
        }
        body.push_reply(&reply);
        send(ws, body.finish(b"")).await
    }

    /// Makes `session` the one this socket serves. While a socket serves a
    /// session, the session counts as holding and does not expire; when the
    /// socket goes, the session's expiry clock starts.
    fn attach(&mut self, session: Option<Arc<Session>>) {
        let same = match (&self.session, &session) {
            (Some(a), Some(b)) => a.key() == b.key(),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        if let Some(old) = self.session.take() {
            old.stop_holding(self.engine.sessions().now_ms());
        }
        if let Some(new) = &session {
            new.start_holding();
        }
        self.session = session;
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
        let task = Socket::new(engine, None, 0).run(ServerBuilder::new().serve(stream));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2048, "a socket's task future is {size} bytes");
    }
}
