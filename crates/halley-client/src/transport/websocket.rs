//! websocket: CometD's dialect over one WebSocket per client.
//!
//! The socket is opened on the Bayeux URL by the first exchange, and again
//! by the first exchange after it closed or broke. The upgrade is an ordinary
//! HTTP/1.1 `GET` sent through the client's `reqwest::Client`, so a shared
//! client's local address, connect timeout and the client's cookie jar apply
//! exactly as for long-polling (the jar's cookies go out with the upgrade;
//! `Set-Cookie` on the `101` is stored), and a refusal comes back with its
//! status and body ([`Error::UpgradeRefused`]). `tokio-websockets` then
//! takes over the upgraded connection. Every frame, both ways, is a JSON
//! array of messages; the handshake travels on the socket too.
//!
//! One task per socket owns it, so nothing locks around I/O. It waits for
//! two things: a batch to write (from [`WebSocket::exchange`], over a small
//! channel) and a frame from the server. A frame is parsed once; its
//! deliveries go to the session at once (`Session::dispatch`, in the
//! server's order, whether the frame holds one delivery, many, or replies
//! too), and its replies go to the exchange that waits for their ids. An
//! exchange resolves when every message of its batch has its reply (a batch
//! with a held `/meta/connect` resolves when the server answers the connect,
//! as with long-polling), or fails: when the socket goes ([`Error::WebSocket`]
//! for every waiting exchange), or at its timeout ([`Error::Timeout`]; the
//! socket is then dropped too, as the CometD JavaScript client does, because
//! a network that silently lost the connection is noticed no other way).
//! Nothing retries here: the next exchange opens a new socket, and the
//! connect loop's backoff paces those attempts. The server keeps the session
//! for `maxInterval` after its socket went, so a client that comes back in
//! time keeps its `clientId` and receives what was queued meanwhile.
//!
//! Writing does not stop reading: a batch is queued on the socket and
//! flushed while the task goes on polling for frames (the library flushes
//! before each read; it makes a writer wait only while more than 8 KiB are
//! unflushed), so a client and a server that both write a lot do not
//! deadlock on full TCP buffers. The library answers pings.
//!
//! Cost, for a load generator running thousands of clients: per socket, one
//! task, one channel and the library's buffers; per exchange, the encoded
//! frame, a oneshot and the list of ids; per delivery, nothing beyond
//! parsing it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use reqwest::header::{
    CONNECTION, COOKIE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use reqwest::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_websockets::{Message, Payload, WebSocketStream};

use crate::cookie::CookieJar;
use crate::error::Error;
use crate::message::{decode_response, encode_batch, Incoming, Outgoing};
use crate::session::Session;

/// Batches waiting for the socket's task: more than a few means the caller
/// outruns the socket, and then it should wait.
const QUEUED_BATCHES: usize = 16;

/// How long a clean close may take (close frame, the server's echo).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Socket = WebSocketStream<reqwest::Upgraded>;
type Answer = Result<Vec<Incoming>, Error>;

/// The websocket transport of one client.
#[derive(Debug)]
pub(crate) struct WebSocket {
    http: reqwest::Client,
    /// The Bayeux endpoint as an `http(s)://` URL, without a trailing slash.
    url: String,
    cookies: Arc<CookieJar>,
    /// Where the socket's task hands deliveries over.
    session: Arc<Session>,
    /// The current socket's task, if one was opened.
    link: Mutex<Option<Link>>,
    /// Sockets opened so far.
    opened: AtomicU64,
    /// Held while a socket is being opened: exchanges that start meanwhile
    /// wait and share it rather than open their own.
    opening: tokio::sync::Mutex<()>,
}

/// The way to the task that owns one socket.
#[derive(Debug)]
struct Link {
    /// Counts the sockets this transport opened: tells this one from a
    /// later one.
    generation: u64,
    batches: mpsc::Sender<Batch>,
    task: JoinHandle<()>,
}

/// One exchange as the socket's task sees it.
struct Batch {
    frame: Vec<u8>,
    expected: Vec<Key>,
    answer: oneshot::Sender<Answer>,
}

impl WebSocket {
    /// A transport for the endpoint at `url` (`http://`, `https://`, or the
    /// same as `ws://`, `wss://`), handing deliveries to `session`.
    pub(crate) fn new(
        http: reqwest::Client,
        url: impl Into<String>,
        cookies: Arc<CookieJar>,
        session: Arc<Session>,
    ) -> Self {
        let mut url = url.into();
        while url.ends_with('/') {
            url.pop();
        }
        if let Some(rest) = url.strip_prefix("ws://") {
            url = format!("http://{rest}");
        } else if let Some(rest) = url.strip_prefix("wss://") {
            url = format!("https://{rest}");
        }
        WebSocket {
            http,
            url,
            cookies,
            session,
            link: Mutex::new(None),
            opened: AtomicU64::new(0),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// The endpoint URL (`http://...`), without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn cookies(&self) -> &Arc<CookieJar> {
        &self.cookies
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Writes `messages` as one frame and returns the replies to them (the
    /// messages with their ids; a message without an id is not waited for).
    /// Opens the socket first if there is none. `timeout` bounds the whole
    /// exchange, the opening included.
    ///
    /// A reply that does not come in time condemns the socket, as in the
    /// CometD JavaScript client: a connection that went silent (a network
    /// that drops packets without a reset) is otherwise never noticed. The
    /// socket is dropped, the other exchanges waiting on it fail, and the
    /// next exchange opens a new one.
    pub async fn exchange(&self, messages: &[Outgoing], timeout: Duration) -> Answer {
        let expected = messages
            .iter()
            .filter_map(|m| m.id.as_deref().map(Key::new))
            .collect();
        let (answer, answered) = oneshot::channel();
        let batch = Batch {
            frame: encode_batch(messages),
            expected,
            answer,
        };
        let mut written_on = None;
        let exchange = async {
            written_on = Some(self.submit(batch).await?);
            answered.await.unwrap_or_else(|_| Err(socket_gone()))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => {
                if let Some(generation) = written_on {
                    tracing::debug!(?timeout, "no reply in time: dropping the websocket");
                    self.drop_socket(generation);
                }
                Err(Error::Timeout(timeout))
            }
        }
    }

    /// Hands `batch` to the socket's task, opening a socket if needed;
    /// the generation of the socket it went to.
    async fn submit(&self, batch: Batch) -> Result<u64, Error> {
        let (generation, batches) = self.link().await?;
        let Err(mpsc::error::SendError(batch)) = batches.send(batch).await else {
            return Ok(generation);
        };
        // The socket went between the look-up and the send, and nothing of
        // the batch was written: one more try on a new socket is safe.
        drop(batches);
        let (generation, batches) = self.link().await?;
        batches.send(batch).await.map_err(|_| socket_gone())?;
        Ok(generation)
    }

    /// Aborts socket `generation` if it is still the current one.
    fn drop_socket(&self, generation: u64) {
        let mut link = self.link.lock().expect("websocket poisoned");
        if link.as_ref().is_some_and(|l| l.generation == generation) {
            if let Some(link) = link.take() {
                link.task.abort();
            }
        }
    }

    /// Drops the current socket at once, without a close frame, as a broken
    /// network would: the exchanges waiting on it fail, and the next one
    /// opens a new socket.
    pub(crate) fn cut(&self) {
        let link = self.link.lock().expect("websocket poisoned").take();
        if let Some(link) = link {
            link.task.abort();
        }
    }

    /// Closes the socket cleanly (close frame, and the server's echo for up
    /// to two seconds). Exchanges still waiting fail; the next one opens a
    /// new socket.
    pub async fn close(&self) {
        let link = self.link.lock().expect("websocket poisoned").take();
        if let Some(Link {
            batches, mut task, ..
        }) = link
        {
            // The task sees its channel end once this last long-lived sender
            // is gone, and closes the socket.
            drop(batches);
            if tokio::time::timeout(CLOSE_TIMEOUT + Duration::from_millis(500), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// The open socket's generation and sender, if its task still runs.
    fn live(&self) -> Option<(u64, mpsc::Sender<Batch>)> {
        let link = self.link.lock().expect("websocket poisoned");
        link.as_ref()
            .filter(|link| !link.batches.is_closed())
            .map(|link| (link.generation, link.batches.clone()))
    }

    /// The open socket's generation and sender, opening a socket when
    /// there is none.
    async fn link(&self) -> Result<(u64, mpsc::Sender<Batch>), Error> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let _opening = self.opening.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let socket = self.open().await?;
        let (batches, inbox) = mpsc::channel(QUEUED_BATCHES);
        let task = tokio::spawn(run(socket, inbox, self.session.clone()));
        let generation = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        let link = Link {
            generation,
            batches: batches.clone(),
            task,
        };
        // The link replaced, if any, belongs to a task that has ended.
        *self.link.lock().expect("websocket poisoned") = Some(link);
        Ok((generation, batches))
    }

    /// Sends the upgrade request and takes the socket over.
    async fn open(&self) -> Result<Socket, Error> {
        let key = websocket_key();
        let mut request = self
            .http
            .get(&self.url)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .header(SEC_WEBSOCKET_VERSION, "13")
            .header(SEC_WEBSOCKET_KEY, &key);
        if let Some(cookie) = self.cookies.header_value() {
            request = request.header(COOKIE, cookie);
        }
        let response = request.send().await?;
        self.cookies.store_response(response.headers());
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let body = response.bytes().await.unwrap_or_default();
            return Err(Error::UpgradeRefused {
                status: status.as_u16(),
                body,
            });
        }
        let accept = response.headers().get(SEC_WEBSOCKET_ACCEPT);
        if accept.map(|v| v.as_bytes())
            != Some(halley_protocol::websocket::accept_key(key.as_bytes()).as_bytes())
        {
            return Err(Error::WebSocket(
                "the server's Sec-WebSocket-Accept does not match the key sent".into(),
            ));
        }
        let upgraded = response.upgrade().await?;
        tracing::debug!(url = %self.url, "websocket open");
        Ok(tokio_websockets::ClientBuilder::new().take_over(upgraded))
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
fn websocket_key() -> String {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn socket_gone() -> Error {
    Error::WebSocket("the socket closed before the reply came".into())
}

/// A message id as an exchange waits for it. The session's ids are decimal
/// counters, kept as numbers so that waiting for one costs no allocation;
/// any other id is kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Number(u64),
    Text(String),
}

impl Key {
    fn new(id: &str) -> Key {
        match canonical_number(id) {
            Some(n) => Key::Number(n),
            None => Key::Text(id.to_owned()),
        }
    }

    /// Whether a reply's `id` is this one.
    fn is(&self, id: &str) -> bool {
        match self {
            Key::Number(n) => canonical_number(id) == Some(*n),
            Key::Text(text) => text == id,
        }
    }
}

/// `id` as a number when it is one written the canonical way (no sign, no
/// leading zero), so that the text and the number say the same.
fn canonical_number(id: &str) -> Option<u64> {
    let digits = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    if !digits || (id.len() > 1 && id.starts_with('0')) {
        return None;
    }
    id.parse().ok()
}

/// An exchange waiting for its replies.
struct Waiter {
    /// The ids still without a reply.
    expected: Vec<Key>,
    replies: Vec<Incoming>,
    answer: oneshot::Sender<Answer>,
}

/// The exchanges waiting on one socket, oldest first.
#[derive(Default)]
struct Waiters {
    waiting: Vec<Waiter>,
}

impl Waiters {
    fn push(&mut self, expected: Vec<Key>, answer: oneshot::Sender<Answer>) {
        // Exchanges whose caller gave up (timed out, was cancelled) go now:
        // their replies, if they ever come, are dropped like any other
        // reply nobody waits for.
        self.waiting.retain(|w| !w.answer.is_closed());
        if expected.is_empty() {
            let _ = answer.send(Ok(Vec::new()));
            return;
        }
        let replies = Vec::with_capacity(expected.len());
        self.waiting.push(Waiter {
            expected,
            replies,
            answer,
        });
    }

    /// Hands `reply` to the exchange waiting for its id; resolves that
    /// exchange when it was the last reply it waited for.
    fn reply(&mut self, reply: Incoming) {
        let found = reply.id.as_deref().and_then(|id| {
            self.waiting.iter().enumerate().find_map(|(i, w)| {
                let slot = w.expected.iter().position(|k| k.is(id))?;
                Some((i, slot))
            })
        });
        let Some((i, slot)) = found else {
            tracing::debug!(
                channel = %reply.channel,
                id = ?reply.id,
                error = ?reply.error,
                "websocket reply that no exchange waits for: dropped"
            );
            return;
        };
        let waiter = &mut self.waiting[i];
        waiter.expected.swap_remove(slot);
        waiter.replies.push(reply);
        if waiter.expected.is_empty() {
            let waiter = self.waiting.remove(i);
            let _ = waiter.answer.send(Ok(waiter.replies));
        }
    }

    /// Fails every waiting exchange: the socket is gone.
    fn fail(&mut self, reason: &str) {
        for waiter in self.waiting.drain(..) {
            let _ = waiter.answer.send(Err(Error::WebSocket(reason.to_owned())));
        }
    }
}

/// Handles one text frame: deliveries to the session, replies to the waiters.
fn on_frame(text: &str, session: &Session, waiters: &mut Waiters) {
    let messages = match decode_response(text.as_bytes()) {
        Ok(messages) => messages,
        Err(error) => {
            tracing::warn!(%error, "websocket frame that is not Bayeux messages: ignored");
            return;
        }
    };
    for reply in session.dispatch(messages) {
        waiters.reply(reply);
    }
}

/// The task that owns one socket, until it closes or breaks, or the
/// transport lets go of it (then it closes the socket cleanly).
async fn run(mut socket: Socket, mut batches: mpsc::Receiver<Batch>, session: Arc<Session>) {
    let mut waiters = Waiters::default();
    let mut closed_by_server = None;
    let reason = loop {
        tokio::select! {
            batch = batches.recv() => match batch {
                Some(Batch { frame, expected, answer }) => {
                    if answer.is_closed() {
                        continue; // the caller gave up before it was written
                    }
                    waiters.push(expected, answer);
                    // Queued now; flushed while the loop goes on reading.
                    if let Err(error) = socket.feed(Message::text(Payload::from(frame))).await {
                        break format!("writing to the socket failed: {error}");
                    }
                }
                None => {
                    match tokio::time::timeout(CLOSE_TIMEOUT, socket.close()).await {
                        Ok(Ok(())) => tracing::debug!("websocket closed"),
                        Ok(Err(error)) => tracing::debug!(%error, "websocket close failed"),
                        Err(_) => tracing::debug!("websocket close not echoed in time"),
                    }
                    break "the client closed the socket".to_owned();
                }
            },
            frame = socket.next() => match frame {
                None => {
                    break closed_by_server
                        .take()
                        .unwrap_or_else(|| "the server closed the connection".to_owned());
                }
                Some(Err(error)) => break format!("the socket failed: {error}"),
                Some(Ok(message)) => {
                    if let Some(text) = message.as_text() {
                        on_frame(text, &session, &mut waiters);
                    } else if let Some((code, why)) = message.as_close() {
                        closed_by_server = Some(format!(
                            "the server closed the socket ({} {why})",
                            u16::from(code)
                        ));
                    } else if message.is_binary() {
                        tracing::debug!("binary websocket frame: ignored");
                    }
                    // Pings are answered by the library on the next read.
                }
            },
        }
    };
    tracing::debug!(%reason, "websocket gone");
    waiters.fail(&reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_16_random_bytes() {
        let (a, b) = (websocket_key(), websocket_key());
        assert_ne!(a, b);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(bytes.len(), 16);
    }

    #[test]
    fn ids_match_as_text() {
        assert_eq!(Key::new("12"), Key::Number(12));
        assert!(Key::new("12").is("12"));
        assert!(!Key::new("12").is("012"));
        assert!(!Key::new("12").is("+12"));
        assert!(!Key::new("12").is("13"));
        assert_eq!(Key::new("0"), Key::Number(0));
        assert_eq!(Key::new("007"), Key::Text("007".into()));
        assert!(Key::new("007").is("007") && !Key::new("007").is("7"));
        assert_eq!(Key::new("hs"), Key::Text("hs".into()));
        assert!(Key::new("99999999999999999999").is("99999999999999999999"));
        assert!(!Key::new("").is("0"));
    }
}
