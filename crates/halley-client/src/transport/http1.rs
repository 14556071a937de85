//! The long-polling transport's own HTTP/1.1 connections.
//!
//! Why not the shared `reqwest` pool: the load generator runs thousands of
//! clients, and a pooled `reqwest` request costs per call what a browser
//! never pays: URL parsing, a lookup in a pool shared by every user of the
//! worker (keyed by origin, behind a lock), a timer per request, redirect
//! and header bookkeeping, and a full `HeaderMap` clone per response. At
//! one delivery per response that was about twice the server's own CPU per
//! delivery (see `docs/benchmarks.md`).
//!
//! A client talks to one origin, so it keeps its connections itself. A
//! request takes the idle connection (or opens one, as when `/meta/connect`
//! holds the other), and gives it back once its response has been read in
//! full. At most one connection is kept idle, the most recently used: the
//! connect loop goes on with the connection it had, and a subscriber that
//! only ever connects keeps a single connection once its subscribe is done.
//! (Keeping a second one idle, as browsers do, would double the server's
//! memory per idle user, which the benchmark measures; a shared pool avoided
//! that before.) The price: a request made while the connect is held, after
//! the connect's connection was the one kept, opens a new connection, which
//! on a LAN costs a TCP handshake. A connection whose request was cancelled
//! or timed out is dropped, which closes it (hyper closes a connection whose
//! response nobody waits for), as before.
//!
//! Requests are `POST`s of a JSON body to the endpoint (or the endpoint plus
//! `/connect`, ...) with the client's cookies; only what `exchange` needs is
//! kept of the response (status and body, `Set-Cookie` into the jar).
//!
//! An `https://` endpoint gets TLS over each TCP connection, checked
//! against the client's [`Trust`] (the system's roots, and any CA given).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, COOKIE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use crate::cookie::CookieJar;
use crate::error::Error;
use crate::tls::Trust;

/// How long opening a TCP connection may take (as the shared HTTP client's
/// `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const JSON: HeaderValue = HeaderValue::from_static("application/json;charset=UTF-8");

type Sender = SendRequest<Full<Bytes>>;

/// Where the endpoint is: what to connect to and what to say in `Host`.
#[derive(Debug)]
struct Origin {
    /// `host:port` for the resolver (port 80, or 443 for https, when the
    /// URL has none).
    address: String,
    /// The URL's authority, as the `Host` header.
    host: HeaderValue,
    /// For `https://`: the name the server's certificate must carry.
    tls_name: Option<ServerName<'static>>,
}

impl Origin {
    fn parse(url: &str) -> Result<Origin, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "long-polling supports http:// and https:// URLs only, not {url:?}"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("URL without a host: {url:?}"))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("bad host in {url:?}: {e}"))?;
        let tls_name = match tls {
            // `[::1]` in a URL is `::1` in a certificate.
            true => Some(
                ServerName::try_from(authority.host().trim_matches(['[', ']']).to_owned())
                    .map_err(|e| format!("bad host in {url:?}: {e}"))?,
            ),
            false => None,
        };
        let default_port = if tls { 443 } else { 80 };
        Ok(Origin {
            address: format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(default_port)
            ),
            host,
            tls_name,
        })
    }
}

/// What a request got back.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// The connections of one client to its endpoint's origin.
#[derive(Debug)]
pub(crate) struct Connections {
    origin: Result<Origin, String>,
    local_address: Option<IpAddr>,
    /// Whose certificates an `https://` origin may present.
    trust: Trust,
    /// The connection kept for the next request.
    idle: Mutex<Option<Sender>>,
    /// Requests under way (see [`Connections::keep_spare`]).
    in_flight: AtomicUsize,
    /// Whether a connection freed while another request is under way (the
    /// held `/meta/connect`) is kept for the next request, as browsers keep
    /// their second connection. Off, it is closed: an idle client then holds
    /// exactly one connection, which is what a load generator simulating
    /// thousands of subscribers on one machine needs (a server may hold at
    /// most so many file descriptors), at the price of a new connection per
    /// request made while the connect is held.
    keep_spare: bool,
}

/// Counts a request as under way until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    /// Connections to the origin of `url`, opened from `local_address` when
    /// given, trusting `trust` over https. A URL this cannot use is
    /// reported by every request, not here (building a client does not
    /// fail on the URL either).
    pub fn new(url: &str, local_address: Option<IpAddr>, trust: &Trust) -> Self {
        Connections {
            origin: Origin::parse(url),
            local_address,
            trust: trust.clone(),
            idle: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            keep_spare: true,
        }
    }

    /// Sets [`Connections::keep_spare`] (default on).
    pub fn keep_spare(mut self, keep: bool) -> Self {
        self.keep_spare = keep;
        self
    }

    /// The request target (`/cometd/connect?x`) of a URL of this origin.
    pub fn target(url: &str) -> Result<Uri, Error> {
        let uri: Uri = url
            .parse()
            .map_err(|e| connection_error(format!("bad URL {url:?}: {e}")))?;
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        Uri::try_from(target).map_err(|e| connection_error(format!("bad URL {url:?}: {e}")))
    }

    /// `POST`s `body` to `target` with `cookies`, storing the cookies the
    /// answer sets. No timeout of its own: the caller bounds the whole call.
    pub async fn post(
        &self,
        target: Uri,
        body: Bytes,
        cookies: &CookieJar,
    ) -> Result<Answer, Error> {
        let origin = self
            .origin
            .as_ref()
            .map_err(|e| connection_error(e.clone()))?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = target;
        let headers = request.headers_mut();
        headers.insert(HOST, origin.host.clone());
        headers.insert(CONTENT_TYPE, JSON);
        if let Some(cookie) = cookies.header() {
            headers.insert(COOKIE, cookie);
        }

        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _in_flight = InFlight(&self.in_flight);
        let (sender, response) = self.send(origin, request).await?;
        cookies.store_response(response.headers());
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(connection_error)?
            .to_bytes();
        self.give_back(sender);
        Ok(Answer { status, body })
    }

    /// Sends on an idle connection, or a new one. A request that an idle
    /// connection could not even take (the server closed it meanwhile) is
    /// sent again on the next one: it never reached the server. Once sent,
    /// a failure is the caller's (a `POST` is not repeated).
    async fn send(
        &self,
        origin: &Origin,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Sender, hyper::Response<hyper::body::Incoming>), Error> {
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((sender, response)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(connection_error(error.into_error())),
                },
            }
        }
        let mut sender = self.open(origin).await?;
        sender.ready().await.map_err(connection_error)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(connection_error)?;
        Ok((sender, response))
    }

    fn take_idle(&self) -> Option<Sender> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
        idle.filter(|sender| !sender.is_closed())
    }

    /// Keeps a connection whose response was read in full for the next
    /// request (unless the server is closing it), closing the one kept
    /// before if any (dropped outside the lock).
    fn give_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        // This request still counts itself: more means another is under way.
        if !self.keep_spare && self.in_flight.load(Ordering::Acquire) > 1 {
            return;
        }
        let older = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(sender);
        drop(older);
    }

    /// Opens a connection and spawns the task that drives it; the task ends
    /// when the connection closes (the server closed it, or every handle to
    /// it was dropped).
    async fn open(&self, origin: &Origin) -> Result<Sender, Error> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(&origin.address))
            .await
            .map_err(|_| Error::Timeout(CONNECT_TIMEOUT))?
            .map_err(connection_error)?;
        // Requests are small and must leave at once.
        stream.set_nodelay(true).map_err(connection_error)?;
        match &origin.tls_name {
            None => handshake(stream).await,
            Some(name) => {
                let tls = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    self.trust.connector().connect(name.clone(), stream),
                )
                .await
                .map_err(|_| Error::Timeout(CONNECT_TIMEOUT))?
                .map_err(connection_error)?;
                handshake(tls).await
            }
        }
    }

    /// A TCP connection to the first address of `address` that answers,
    /// from `local_address` when set.
    async fn connect(&self, address: &str) -> io::Result<TcpStream> {
        let mut last_error = None;
        for remote in tokio::net::lookup_host(address).await? {
            let socket = if remote.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(local) = self.local_address {
                if local.is_ipv4() != remote.is_ipv4() {
                    continue;
                }
                socket.bind(SocketAddr::new(local, 0))?;
            }
            match socket.connect(remote).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no usable address for {address}"),
            )
        }))
    }
}

/// Starts HTTP/1.1 on `io` and spawns the task that drives it.
async fn handshake<T>(io: T) -> Result<Sender, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(connection_error)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "long-polling connection ended with an error");
        }
    });
    Ok(sender)
}

fn connection_error(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Connection(error.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    /// Polls `condition` until it holds; 30 s is a deadline only a broken
    /// test reaches, not a bound on how long the step may take.
    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("still waiting for {what}"));
    }

    /// Whether the connection kept idle (if any) is seen closed.
    fn idle_closed(connections: &Connections) -> bool {
        let idle = connections.idle.lock().unwrap();
        idle.as_ref().is_none_or(|sender| sender.is_closed())
    }

    /// A server answering every request `[]`, closing each connection after
    /// `per_connection` responses; counts the connections it accepted.
    async fn server(per_connection: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cometd", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_connection {
                        // Requests are small: read until a whole one is here.
                        loop {
                            let text = String::from_utf8_lossy(&buf).into_owned();
                            if let Some(end) = text.find("\r\n\r\n") {
                                let length: usize = text[..end]
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length: "))
                                    .map_or(0, |n| n.trim().parse().unwrap());
                                if buf.len() >= end + 4 + length {
                                    buf.drain(..end + 4 + length);
                                    break;
                                }
                            }
                            let mut chunk = [0u8; 1024];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let answer =
                            b"HTTP/1.1 200 OK\r\nset-cookie: b=1\r\ncontent-length: 2\r\n\r\n[]";
                        stream.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn reuses_its_connection_and_replaces_a_closed_one() {
        let jar = CookieJar::new();
        let (url, accepted) = server(usize::MAX).await;
        let connections = Connections::new(&url, None, &Trust::system());
        let target = Connections::target(&url).unwrap();
        for _ in 0..3 {
            let answer = connections
                .post(target.clone(), Bytes::from_static(b"[]"), &jar)
                .await
                .unwrap();
            assert_eq!((answer.status, &answer.body[..]), (200, &b"[]"[..]));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");
        assert_eq!(jar.get("b").as_deref(), Some("1"));

        // Two at once need two connections; one of them is kept afterwards.
        let (a, b) = tokio::join!(
            connections.post(target.clone(), Bytes::from_static(b"[]"), &jar),
            connections.post(target.clone(), Bytes::from_static(b"[]"), &jar),
        );
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        connections
            .post(target.clone(), Bytes::from_static(b"[]"), &jar)
            .await
            .unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // A server that closes after every response: each request still works.
        let (url, accepted) = server(1).await;
        let connections = Connections::new(&url, None, &Trust::system());
        for _ in 0..3 {
            connections
                .post(target.clone(), Bytes::from_static(b"[]"), &jar)
                .await
                .unwrap();
            // The server closed the connection after its response: wait
            // until the client's connection task has seen it.
            eventually("the close to be seen", || idle_closed(&connections)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// A server answering `[]`, to a body of `"slow"` only once `release`
    /// is notified (a held request); counts the connections it accepted and
    /// those the client closed.
    async fn slow_server() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<Notify>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cometd", listener.local_addr().unwrap());
        let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let release = Arc::new(Notify::new());
        let (a, c, r) = (accepted.clone(), closed.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                let (c, r) = (c.clone(), r.clone());
                tokio::spawn(async move {
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Each request arrives in one read (small, on loopback).
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                c.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(n) => {
                                if String::from_utf8_lossy(&chunk[..n]).ends_with("\"slow\"") {
                                    r.notified().await;
                                }
                            }
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
                        stream.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        (url, accepted, closed, release)
    }

    /// While a request is held, another opens a second connection: kept
    /// for later with a spare (as browsers do), closed without one.
    #[tokio::test]
    async fn without_a_spare_the_second_connection_closes_after_its_answer() {
        for keep_spare in [true, false] {
            let jar = CookieJar::new();
            let (url, accepted, closed, release) = slow_server().await;
            let connections =
                Arc::new(Connections::new(&url, None, &Trust::system()).keep_spare(keep_spare));
            let target = Connections::target(&url).unwrap();
            let held = tokio::spawn({
                let (connections, target) = (connections.clone(), target.clone());
                async move {
                    let jar = CookieJar::new();
                    let body = Bytes::from_static(b"\"slow\"");
                    connections.post(target, body, &jar).await.unwrap();
                }
            });
            // The held request is under way (and stays so until released).
            eventually("the held request", || {
                connections.in_flight.load(Ordering::SeqCst) == 1
                    && accepted.load(Ordering::SeqCst) == 1
            })
            .await;
            connections
                .post(target.clone(), Bytes::from_static(b"[]"), &jar)
                .await
                .unwrap();
            assert_eq!(accepted.load(Ordering::SeqCst), 2);
            if keep_spare {
                assert!(!idle_closed(&connections), "the second one is kept");
                assert_eq!(closed.load(Ordering::SeqCst), 0);
            } else {
                assert!(connections.idle.lock().unwrap().is_none(), "not kept");
                eventually("the server to see the close", || {
                    closed.load(Ordering::SeqCst) == 1
                })
                .await;
            }
            release.notify_one();
            held.await.unwrap();
        }
    }

    #[tokio::test]
    async fn reports_failures_as_values() {
        let jar = CookieJar::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cometd", listener.local_addr().unwrap());
        drop(listener);
        let connections = Connections::new(&url, None, &Trust::system());
        let target = Connections::target(&url).unwrap();
        let refused = connections.post(target.clone(), Bytes::new(), &jar).await;
        assert!(matches!(refused, Err(Error::Connection(_))), "{refused:?}");
        let ftp = Connections::new("ftp://127.0.0.1:1/cometd", None, &Trust::system());
        let unusable = ftp.post(target, Bytes::new(), &jar).await;
        assert!(
            matches!(unusable, Err(Error::Connection(_))),
            "{unusable:?}"
        );
    }

    #[test]
    fn parses_the_origin_and_targets() {
        let origin = Origin::parse("http://127.0.0.1:8080/cometd").unwrap();
        assert_eq!(origin.address, "127.0.0.1:8080");
        assert_eq!(origin.host, "127.0.0.1:8080");
        let origin = Origin::parse("http://example.org/cometd").unwrap();
        assert_eq!(origin.address, "example.org:80");
        assert_eq!(origin.host, "example.org");
        assert_eq!(
            Origin::parse("http://[::1]:9/x").unwrap().address,
            "[::1]:9"
        );
        let origin = Origin::parse("https://example.org/cometd").unwrap();
        assert_eq!(origin.address, "example.org:443");
        assert!(origin.tls_name.is_some());
        assert!(Origin::parse("http://example.org/")
            .unwrap()
            .tls_name
            .is_none());
        assert!(Origin::parse("ftp://example.org/cometd").is_err());
        assert!(Origin::parse("/cometd").is_err());
        assert!(Origin::parse("not a url").is_err());

        assert_eq!(
            Connections::target("http://h:1/cometd/connect").unwrap(),
            "/cometd/connect"
        );
        assert_eq!(Connections::target("http://h:1/c?a=b").unwrap(), "/c?a=b");
        assert_eq!(Connections::target("http://h:1").unwrap(), "/");
        assert!(Connections::target("http://bad host/").is_err());
    }
}
