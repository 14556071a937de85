//! The TCP link to one remote adapter: getting a connection (dialing with
//! backoff, or accepting), the hello, keep-alive, and what ends a link.
//!
//! One connection at a time is *the* link. In `connect` mode Halley dials
//! until it gets through (100 ms doubling to 5 s between attempts, forever,
//! until shutdown) and dials again as soon as a link ends. In `listen` mode
//! any number of adapter processes may connect; the latest to complete its
//! hello replaces the previous link (the usual case: the adapter restarted
//! and its old connection is half-dead).
//!
//! In `listen` mode the port is open to whoever can reach it, so: with a
//! `secret` in the table, a hello without it is refused (an unauthenticated
//! connection never replaces the link); a connection must say hello within
//! [`HELLO_TIMEOUT`]; and at most [`MAX_PENDING_HELLOS`] connections wait
//! for their hello at once, a newer one closing the oldest, so silent
//! sockets cannot keep the real adapter out. Listening beyond loopback
//! without a secret is warned about at start.
//!
//! On every connection both sides send `hello` first. Halley then sends
//! `subscribe` for every listened channel, and afterwards whatever the
//! node notices. Halley writes a `ping` after `ping-interval-ms` without
//! writing, answers `ping` with `pong`, and closes a link that stays silent
//! for three intervals, so a dead peer is noticed even without a TCP error.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::protocol::{self, FromAdapter, LineError, ToAdapter, MAX_LINE_BYTES};
use super::shared::Shared;
use crate::config::RemoteAdapterConfig;
use crate::node::Node;
use crate::state::limits::Limit;

/// The first wait before dialing again after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two dialing attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one dialing attempt may take (an unreachable host may not refuse).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new connection may take to say hello (at most; three ping
/// intervals when that is shorter).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection closing after an `error` line may take.
const LINGER: Duration = Duration::from_secs(1);

/// A remote adapter's link, ready to run.
pub struct Link {
    shared: Arc<Shared>,
    endpoint: Endpoint,
}

enum Endpoint {
    Connect(String),
    Listen(TcpListener),
}

impl Link {
    pub(super) async fn new(
        shared: Arc<Shared>,
        config: &RemoteAdapterConfig,
    ) -> std::io::Result<Link> {
        let endpoint = match (&config.connect, config.listen) {
            (Some(address), _) => Endpoint::Connect(address.clone()),
            (None, Some(address)) => {
                let listener = listen(address).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "remote-adapter {:?}: listening on {address}: {e}",
                            shared.name
                        ),
                    )
                })?;
                tracing::info!(
                    adapter = %shared.name,
                    "remote adapter: accepting adapter connections on {}",
                    listener.local_addr()?
                );
                if !address.ip().is_loopback() && config.secret.is_none() {
                    tracing::warn!(
                        adapter = %shared.name,
                        "remote adapter: listening on {address}, beyond loopback, without a secret: \
                         anyone who can reach it can publish on {:?}; set `secret` in its table",
                        config.channels
                    );
                }
                Endpoint::Listen(listener)
            }
            (None, None) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("remote-adapter {:?}: set connect or listen", shared.name),
                ))
            }
        };
        Ok(Link { shared, endpoint })
    }

    /// The address adapters connect to, in `listen` mode.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.endpoint {
            Endpoint::Listen(listener) => listener.local_addr().ok(),
            Endpoint::Connect(_) => None,
        }
    }

    /// Keeps the link up until the node shuts down.
    pub async fn run(self, node: Arc<Node>) {
        match self.endpoint {
            Endpoint::Connect(address) => dial(address, self.shared, node).await,
            Endpoint::Listen(listener) => accept(listener, self.shared, node).await,
        }
    }
}

/// Dials `address` until shutdown: after a failure, waits (doubling from
/// [`MIN_BACKOFF`] to [`MAX_BACKOFF`]); after a link that was up, dials at once.
async fn dial(address: String, shared: Arc<Shared>, node: Arc<Node>) {
    let mut backoff = MIN_BACKOFF;
    let mut failures = 0u32;
    loop {
        // `select!` picks at random among ready branches: without this, a
        // reachable adapter could win a race against a shutdown under way.
        if node.shutdown().is_started() {
            return;
        }
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address)) => attempt,
            _ = node.shutdown().wait() => return,
        };
        let was_up = match attempt {
            Ok(Ok(stream)) => serve(stream, &shared, &node, None).await,
            Ok(Err(error)) => {
                failures += 1;
                // Once per outage at warn: a feed that is down retries forever.
                if failures == 1 {
                    tracing::warn!(adapter = %shared.name, %address, %error, "remote adapter unreachable; retrying");
                } else {
                    tracing::debug!(adapter = %shared.name, %address, %error, "remote adapter still unreachable");
                }
                false
            }
            Err(_) => {
                failures += 1;
                tracing::debug!(adapter = %shared.name, %address, "remote adapter: connect timed out");
                false
            }
        };
        if was_up {
            backoff = MIN_BACKOFF;
            failures = 0;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = node.shutdown().wait() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connections waiting for their hello at once on a `listen` address
/// (adapters restarting). Beyond it, a new connection closes the oldest
/// waiting one: silent sockets cannot pile up, and cannot keep out a real
/// adapter, whose hello follows its connect within a round trip.
pub const MAX_PENDING_HELLOS: usize = 8;

/// A connection waiting for its hello: `evict` closes it, `greeted` is
/// cancelled once its hello is done (either way).
struct Pending {
    evict: CancellationToken,
    greeted: CancellationToken,
}

/// Accepts adapter connections until shutdown, each served on its own task.
async fn accept(listener: TcpListener, shared: Arc<Shared>, node: Arc<Node>) {
    let tasks = TaskTracker::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors (a flood elsewhere): every
                    // 50 ms while it lasts, so bounded.
                    static FAILED: crate::state::log_throttle::LogThrottle =
                        crate::state::log_throttle::LogThrottle::new();
                    if let Some(suppressed) = FAILED.allow(tokio::time::Instant::now()) {
                        tracing::warn!(adapter = %shared.name, %error, suppressed, "remote adapter: accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = node.shutdown().wait() => break,
        };
        pending.retain(|p| !p.greeted.is_cancelled());
        if pending.len() >= MAX_PENDING_HELLOS {
            if let Some(oldest) = pending.pop_front() {
                oldest.evict.cancel();
            }
            node.limits().hit(Limit::RemoteAdapterHello, || {
                format!(
                    "remote adapter {:?}: too many connections waiting for their hello; closing the oldest",
                    shared.name
                )
            });
        }
        let waiting = Pending {
            evict: CancellationToken::new(),
            greeted: CancellationToken::new(),
        };
        let (evict, greeted) = (waiting.evict.clone(), waiting.greeted.clone());
        pending.push_back(waiting);
        let (shared, node) = (shared.clone(), node.clone());
        tasks.spawn(async move {
            // Done waiting however the task ends, so it frees its place.
            let _done = greeted.clone().drop_guard();
            serve(stream, &shared, &node, Some(Pending { evict, greeted })).await;
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Serves one connection until it ends (or shutdown). Returns whether it
/// became the link (its hello was accepted). An accepted connection comes
/// with its place among those waiting for a hello.
async fn serve(
    stream: TcpStream,
    shared: &Arc<Shared>,
    node: &Arc<Node>,
    waiting: Option<Pending>,
) -> bool {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut lines = Lines::new(read);
    let silence = shared.ping_interval * 3;
    let name = &shared.name;

    let hello = ToAdapter::hello(
        &shared.name,
        &shared.channels,
        shared.ping_interval.as_millis() as u64,
    );
    let evicted = async {
        match &waiting {
            Some(waiting) => waiting.evict.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let hello_timeout = silence.min(HELLO_TIMEOUT);
    let secret = shared.secret.as_deref();
    let greeted = tokio::select! {
        greeted = greet(&mut write, &mut lines, hello.encode(), hello_timeout, secret) => greeted,
        _ = evicted => Err(Ended::quietly("closed: newer connections are waiting for their hello")),
        _ = node.shutdown().wait() => return false,
    };
    if let Some(waiting) = &waiting {
        waiting.greeted.cancel();
    }
    let remote_name = match greeted {
        Ok(remote_name) => remote_name,
        Err(Ended { reason, farewell }) => {
            // Anyone who can reach a listen port can make this happen: a
            // bounded warning, counted.
            node.limits().hit(Limit::RemoteAdapterHello, || {
                format!("remote adapter {name:?}: hello from {peer} failed: {reason}")
            });
            say_farewell(&mut write, &mut lines, farewell).await;
            return false;
        }
    };

    let registration = shared.link_up();
    let generation = registration.generation;
    tracing::info!(
        adapter = %name, %peer, remote = remote_name.as_deref().unwrap_or(""),
        listened = registration.resync.len(), "remote adapter link up"
    );
    let mut close = registration.close;
    crate::metrics::metrics().remote_links.inc();
    let ended = tokio::select! {
        ended = write_lines(&mut write, registration.outgoing, registration.resync, shared.ping_interval) => ended,
        ended = read_lines(&mut lines, shared, node, registration.replies, silence) => ended,
        reason = close.wait_for(Option::is_some) => Ended::quietly(reason.ok().and_then(|r| *r).unwrap_or("closed")),
        _ = node.shutdown().wait() => Ended::quietly("shutting down"),
    };
    shared.link_down(generation);
    crate::metrics::metrics().remote_links.dec();
    tracing::info!(adapter = %name, %peer, reason = %ended.reason, "remote adapter link down");
    say_farewell(&mut write, &mut lines, ended.farewell).await;
    true
}

/// Why a connection ends, and the `error` line to send before closing.
struct Ended {
    reason: String,
    farewell: Option<String>,
}

impl Ended {
    fn quietly(reason: &str) -> Ended {
        Ended {
            reason: reason.to_owned(),
            farewell: None,
        }
    }

    /// Ends after telling the adapter why.
    fn with_error(error: &LineError) -> Ended {
        let message = error.message();
        Ended {
            farewell: Some(ToAdapter::Error { message: &message }.encode()),
            reason: message,
        }
    }
}

/// Closes the connection, first writing `farewell` if any. Best effort,
/// and briefly: the peer may be the reason the link ends.
///
/// After an `error`, what the peer still sends is read and discarded for
/// up to [`LINGER`]: closing a socket with unread data makes the kernel
/// reset the connection, which can destroy the error line before the
/// adapter reads it.
async fn say_farewell(write: &mut OwnedWriteHalf, lines: &mut Lines, farewell: Option<String>) {
    let Some(line) = farewell else {
        let _ = write.shutdown().await;
        return;
    };
    let _ = tokio::time::timeout(LINGER, async {
        let _ = write.write_all(line.as_bytes()).await;
        let _ = write.shutdown().await;
        let mut discard = [0u8; 8192];
        while let Ok(n) = lines.reader.read(&mut discard).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Sends Halley's hello and checks the adapter's (and its `secret`, when
/// one is expected); returns the adapter's name.
async fn greet(
    write: &mut OwnedWriteHalf,
    lines: &mut Lines,
    hello: String,
    timeout: Duration,
    expected_secret: Option<&str>,
) -> Result<Option<String>, Ended> {
    write
        .write_all(hello.as_bytes())
        .await
        .map_err(|e| Ended::quietly(&format!("write failed: {e}")))?;
    let line = match tokio::time::timeout(timeout, lines.next()).await {
        Err(_) => return Err(Ended::quietly("no hello in time")),
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => return Err(Ended::quietly("closed before its hello")),
        Ok(Err(ReadError::TooLong)) => return Err(Ended::with_error(&LineError::TooLong)),
        Ok(Err(ReadError::Io(e))) => return Err(Ended::quietly(&format!("read failed: {e}"))),
    };
    match protocol::decode(&line) {
        Ok(FromAdapter::Hello { name, secret }) => match expected_secret {
            Some(expected) if !same_secret(secret.as_deref().unwrap_or(""), expected) => {
                Err(Ended::with_error(&LineError::Unsupported(
                    "hello: wrong or missing secret".into(),
                )))
            }
            _ => Ok(name),
        },
        Ok(_) => Err(Ended::with_error(&LineError::Unsupported(
            "the first line must be a hello".into(),
        ))),
        Err(error) => Err(Ended::with_error(&LineError::Unsupported(format!(
            "the first line must be a valid hello: {}",
            error.message().trim_end_matches("; closing")
        )))),
    }
}

/// Compares secrets in time independent of where they differ, so timing
/// does not reveal a prefix of the secret.
fn same_secret(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

/// Writes the resync `subscribe`s, then queued lines, with a `ping` when
/// idle. Ends only on a write error.
async fn write_lines(
    write: &mut OwnedWriteHalf,
    mut outgoing: mpsc::Receiver<String>,
    resync: Vec<String>,
    ping_interval: Duration,
) -> Ended {
    let failed = |e: std::io::Error| Ended::quietly(&format!("write failed: {e}"));
    for channel in &resync {
        let line = ToAdapter::Subscribe { channel }.encode();
        if let Err(e) = write.write_all(line.as_bytes()).await {
            return failed(e);
        }
    }
    loop {
        let line = match tokio::time::timeout(ping_interval, outgoing.recv()).await {
            Ok(Some(line)) => line,
            // Unreachable while the reading side holds a sender; ends cleanly anyway.
            Ok(None) => return Ended::quietly("closed"),
            Err(_) => ToAdapter::Ping.encode(),
        };
        if let Err(e) = write.write_all(line.as_bytes()).await {
            return failed(e);
        }
    }
}

/// Reads and applies the adapter's lines. A bad line is answered with an
/// `error` and the link carries on; only a fatal one (too long) ends it.
async fn read_lines(
    lines: &mut Lines,
    shared: &Shared,
    node: &Node,
    replies: mpsc::Sender<String>,
    silence: Duration,
) -> Ended {
    loop {
        let line = match tokio::time::timeout(silence, lines.next()).await {
            Err(_) => return Ended::quietly("silent for three ping intervals"),
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => return Ended::quietly("closed by the adapter"),
            Ok(Err(ReadError::TooLong)) => return Ended::with_error(&LineError::TooLong),
            Ok(Err(ReadError::Io(e))) => return Ended::quietly(&format!("read failed: {e}")),
        };
        let refused = match protocol::decode(&line) {
            Ok(FromAdapter::Publish { channel, data }) => {
                shared.publish(node, &channel, data).err()
            }
            Ok(FromAdapter::Snapshot { channel, data }) => {
                shared.snapshot(node, &channel, data).err()
            }
            Ok(FromAdapter::Ping) => {
                if replies.try_send(ToAdapter::Pong.encode()).is_err() {
                    return Ended::quietly("outgoing queue full");
                }
                None
            }
            Ok(FromAdapter::Pong) => None,
            Ok(FromAdapter::Hello { .. }) => Some("hello: already said".to_owned()),
            Ok(FromAdapter::Error { message }) => {
                tracing::warn!(adapter = %shared.name, %message, "the remote adapter reports an error");
                None
            }
            Err(error) if error.is_fatal() => return Ended::with_error(&error),
            Err(error) => Some(error.message()),
        };
        if let Some(message) = refused {
            tracing::debug!(adapter = %shared.name, %message, "refused a line of the remote adapter");
            let line = ToAdapter::Error { message: &message }.encode();
            if replies.try_send(line).is_err() {
                return Ended::quietly("outgoing queue full");
            }
        }
    }
}

enum ReadError {
    TooLong,
    Io(std::io::Error),
}

/// Lines of at most [`MAX_LINE_BYTES`]: a longer one is refused as soon as
/// that many bytes arrived without a newline, never buffered whole.
struct Lines {
    reader: BufReader<OwnedReadHalf>,
    buffer: Vec<u8>,
}

impl Lines {
    fn new(read: OwnedReadHalf) -> Lines {
        Lines {
            reader: BufReader::new(read),
            buffer: Vec::new(),
        }
    }

    /// The next non-blank line (without `\n`), or `None` at the end.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            self.buffer.clear();
            let limit = MAX_LINE_BYTES as u64 + 1;
            (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buffer)
                .await
                .map_err(ReadError::Io)?;
            match self.buffer.last() {
                None => return Ok(None),
                Some(b'\n') => {}
                // A partial last line: the connection ended mid-line.
                Some(_) if self.buffer.len() <= MAX_LINE_BYTES => return Ok(None),
                Some(_) => return Err(ReadError::TooLong),
            }
            self.buffer.pop();
            if self.buffer.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Leave the buffer's capacity for the next line, unless a huge
            // line grew it: keep the memory of a quiet link small.
            let line = self.buffer.clone();
            if self.buffer.capacity() > 64 * 1024 {
                self.buffer = Vec::new();
            }
            return Ok(Some(line));
        }
    }
}

/// Binds with `SO_REUSEADDR`, so a restarted Halley takes its port back.
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(64)
}
