//! HTTP/1.1 on the public listener, one task per connection: read a
//! request (its head parsed by `httparse`, its body framed by
//! `Content-Length` or chunked), hand it to the router ([`super::route`]),
//! write the whole response at once, then read the next (keep-alive;
//! pipelined requests are answered in order) until either side closes, or
//! a `101 Switching Protocols` hands the connection to the WebSocket task
//! ([`OnUpgrade`]).
//!
//! Why not hyper, which the admin listener and every client still use:
//! hyper's HTTP/1 server keeps an 8 KiB read buffer and an 8 KiB write
//! buffer for a connection's whole life (8 KiB is its floor:
//! `max_buf_size` cannot go lower). A long-polling client's requests are a
//! few hundred bytes, held for seconds each: those buffers were 8.3 of the
//! 18.3 KiB of server memory an idle long-polling client cost (measured by
//! building hyper with 1 KiB buffers, `docs/benchmarks.md` §14). Here a
//! held request keeps no buffer: head and body are read into one that is
//! let go once the request is parsed, and every response Halley writes is
//! one complete buffer (it never streams), written in one go.
//!
//! Kept from hyper's behaviour: the header-read timeout (counted from when
//! a head is awaited, so it also closes a keep-alive connection idle
//! between requests), `Expect: 100-continue`, HTTP/1.0 keep-alive, `HEAD`,
//! the `Date` header, a client that closes while its request is held (the
//! handler's future is dropped, as hyper drops a service's), and a close
//! on drain: an idle connection at once, a busy one after its response.
//!
//! The fields the connection reads itself (framing, keep-alive, `Expect`,
//! `Upgrade`) are read in `fields`, from the raw head.
//!
//! Refused here, before any handler: a head over [`MAX_HEAD_BYTES`] or
//! with more than [`MAX_HEADERS`] fields (431), a malformed head, or one
//! with both `Content-Length` and `Transfer-Encoding` (the request
//! smuggling ambiguity), or with conflicting lengths (400), a transfer
//! coding other than chunked (501). A body over the limit is not read: it
//! reaches the handler as [`RequestBody::TooLarge`] (each answers its own
//! 413) and the connection closes after the response.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::tls::Stream;
use crate::shutdown::Shutdown;

mod fields;

/// The longest request head (request line and header fields) read.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most header fields a request may have (hyper's limit too).
pub const MAX_HEADERS: usize = 100;

/// What one read asks for at least: a whole long-polling request (head and
/// body) usually fits.
const READ_CHUNK: usize = 1024;

/// A request's body, as the connection read it.
#[derive(Debug)]
pub enum RequestBody {
    /// All of it (empty for a request without one).
    Complete(Bytes),
    /// Longer than the limit: not read, and the connection closes after
    /// the response (the handler answers 413).
    TooLarge,
}

impl RequestBody {
    /// The body's bytes, if it was read.
    pub fn bytes(self) -> Option<Bytes> {
        match self {
            RequestBody::Complete(bytes) => Some(bytes),
            RequestBody::TooLarge => None,
        }
    }
}

/// A request as the router sees it.
pub type IncomingRequest = Request<RequestBody>;

/// What bounds a connection's requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From when a head is awaited until it is complete; and again for
    /// the body.
    pub header_read_timeout: Duration,
    /// The longest body read.
    pub max_body_bytes: usize,
}

/// How a connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no complete request head within the header-read timeout")]
    HeaderTimeout,
    #[error("the request body did not arrive within the header-read timeout")]
    BodyTimeout,
    #[error("{0}")]
    Refused(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// The client was too slow sending its request.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::HeaderTimeout | Error::BodyTimeout)
    }
}

/// The connection of a request that asked to switch protocols, once its
/// `101` response is written (in the request's extensions: the WebSocket
/// handler takes it).
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// The connection after the `101`; `None` if the response was not
    /// written (the client left) or was not a `101`.
    pub async fn upgraded(self) -> Option<Upgraded> {
        let receiver = self.0.lock().ok()?.take()?;
        receiver.await.ok()
    }
}

/// A connection handed over after `101 Switching Protocols`: what the
/// client sent after its request (already read), then the socket.
pub struct Upgraded {
    io: Stream,
    read: Bytes,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// A parsed request head and what it says about the connection.
struct Head {
    request: Request<()>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
}

/// A head the connection answers itself, then closes.
struct Refusal(StatusCode, &'static str);

/// Serves one connection until it closes (or is upgraded): `service`
/// answers each request.
pub async fn serve<F, Fut>(
    mut io: Stream,
    limits: Limits,
    shutdown: &Shutdown,
    mut service: F,
) -> Result<(), Error>
where
    F: FnMut(IncomingRequest) -> Fut,
    Fut: Future<Output = Response<Bytes>>,
{
    let mut buf = BytesMut::new();
    // Registered once for the connection's life, not once per request: the
    // server-wide `Notify` behind it has one lock for every connection.
    let draining = shutdown.wait_draining();
    tokio::pin!(draining);
    // The header-read timeout: one timer for the connection's life, moved
    // forward for each head and body. Moving a pending timer later is an
    // atomic store, where a new timer per request took the timer wheel's
    // lock twice (to insert it, then to remove it).
    let too_slow = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(too_slow);
    loop {
        // The head, within the timeout. Idle (nothing of a next request
        // read), the connection closes as soon as the server drains.
        too_slow
            .as_mut()
            .reset(Instant::now() + limits.header_read_timeout);
        let head = tokio::select! {
            biased;
            head = read_head(&mut io, &mut buf) => head,
            () = &mut too_slow => return Err(Error::HeaderTimeout),
            _ = &mut draining, if buf.is_empty() => return Ok(()),
        };
        let head = match head {
            Err(error) => return Err(error),
            Ok(None) => return Ok(()),
            Ok(Some(Err(Refusal(status, why)))) => {
                write_refusal(&mut io, status, why).await;
                return Err(Error::Refused(why));
            }
            Ok(Some(Ok(head))) => head,
        };
        let Head {
            request,
            framing,
            mut keep_alive,
            expect_continue,
            upgrade,
        } = head;
        too_slow
            .as_mut()
            .reset(Instant::now() + limits.header_read_timeout);
        let body = tokio::select! {
            biased;
            body = read_body(
                &mut io,
                &mut buf,
                framing,
                limits.max_body_bytes,
                expect_continue,
            ) => body,
            () = &mut too_slow => return Err(Error::BodyTimeout),
        };
        let body = match body {
            Err(error) => return Err(error),
            Ok(Err(Refusal(status, why))) => {
                write_refusal(&mut io, status, why).await;
                return Err(Error::Refused(why));
            }
            Ok(Ok(body)) => body,
        };
        if matches!(body, RequestBody::TooLarge) {
            // Its bytes are still on the way: nothing after them can be read.
            keep_alive = false;
        }
        if buf.is_empty() {
            // Nothing of a next request: a held request keeps no buffer.
            buf = BytesMut::new();
        }
        let head_only = request.method() == Method::HEAD;
        let http10 = request.version() == Version::HTTP_10;
        let (parts, ()) = request.into_parts();
        let mut request = Request::from_parts(parts, body);
        let upgrade = upgrade.then(|| {
            let (tell, told) = oneshot::channel();
            request
                .extensions_mut()
                .insert(OnUpgrade(Arc::new(Mutex::new(Some(told)))));
            tell
        });
        let response = {
            let mut probe = [0u8; 64];
            let handler = service(request);
            tokio::pin!(handler);
            loop {
                tokio::select! {
                    response = &mut handler => break response,
                    // A client that closes while its request is held is
                    // gone: its handler is dropped. What else arrives is
                    // the next request (pipelined), kept for later.
                    // Read into the task's own few bytes, not into `buf`:
                    // a held request keeps no buffer (see the module's doc).
                    read = io.read(&mut probe), if buf.len() < MAX_HEAD_BYTES => match read {
                        Ok(0) | Err(_) => return Ok(()),
                        Ok(n) => buf.extend_from_slice(&probe[..n]),
                    },
                }
            }
        };
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS && upgrade.is_some();
        if shutdown.is_draining() {
            // The client's next request opens a new connection, which a
            // balancer sends to another node.
            keep_alive = false;
        }
        let mut response = response;
        if http10 && keep_alive {
            // An HTTP/1.0 client closes unless told the connection stays.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        }
        let bytes = encode_response(response, keep_alive || switching, head_only);
        io.write_all(&bytes).await?;
        io.flush().await?;
        drop(bytes);
        if switching {
            if let Some(tell) = upgrade {
                let _ = tell.send(Upgraded {
                    io,
                    read: buf.freeze(),
                });
            }
            return Ok(());
        }
        if !keep_alive {
            let _ = io.shutdown().await;
            return Ok(());
        }
    }
}

/// Reads until `buf` holds a whole head: `None` if the client closed
/// between two requests.
async fn read_head<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
) -> Result<Option<Result<Head, Refusal>>, Error> {
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(Some((len, head))) => {
                    buf.advance(len);
                    return Ok(Some(Ok(head)));
                }
                Ok(None) if buf.len() >= MAX_HEAD_BYTES => {
                    return Ok(Some(Err(Refusal(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request head too large",
                    ))))
                }
                Ok(None) => {}
                Err(refusal) => return Ok(Some(Err(refusal))),
            }
        }
        if read_more(io, buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed in the middle of a request head",
            )
            .into());
        }
    }
}

/// One read into `buf`, with room for at least [`READ_CHUNK`] bytes: the
/// number read (0: the client closed).
async fn read_more<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() == 0 {
        // The usual case, one request after another: one allocation, where
        // growing an empty buffer took the slower reallocation path.
        *buf = BytesMut::with_capacity(READ_CHUNK);
    } else if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK.max(buf.len()));
    }
    io.read_buf(buf).await
}

/// Parses the head at the start of `buf`: its length and what it says, or
/// `None` if it is not complete yet.
///
/// The head is copied once, whole, and the request's target and header
/// values are slices of that copy: one allocation where a copy per value
/// was one each (counted with `bench/instructions.sh`). It is let go with
/// the request's parts, which a long-polling handler drops before it holds
/// the connect.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, Refusal> {
    let bad = |why| Refusal(StatusCode::BAD_REQUEST, why);
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        // A whole head that arrived in one read can be longer than the
        // limit `read_head` applies to a partial one (and the offsets
        // below are u16).
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err(Refusal(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            ))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ))
        }
        Err(_) => return Err(bad("malformed request head")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("malformed method"))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where the target and each field lie in the head (at most
    // MAX_HEAD_BYTES: u16 offsets), to slice the copy with.
    let span = |part: &[u8]| {
        let from = part.as_ptr() as usize - buf.as_ptr() as usize;
        (from as u16, (from + part.len()) as u16)
    };
    let target = span(parsed.path.unwrap_or_default().as_bytes());
    let mut spans = [((0u16, 0u16), (0u16, 0u16)); MAX_HEADERS];
    for (field, spans) in parsed.headers.iter().zip(spans.iter_mut()) {
        *spans = (span(field.name.as_bytes()), span(field.value));
    }
    let spans = &spans[..parsed.headers.len()];
    let head = Bytes::copy_from_slice(&buf[..len]);
    let at = |(from, to): (u16, u16)| from as usize..to as usize;
    let uri = Uri::from_maybe_shared(head.slice(at(target)))
        .map_err(|_| bad("malformed request target"))?;
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(name, value) in spans {
        let name =
            HeaderName::from_bytes(&head[at(name)]).map_err(|_| bad("malformed header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(at(value)))
            .map_err(|_| bad("malformed header value"))?;
        headers.append(name, value);
    }
    // After the map: a malformed name or value is refused first, as before.
    let fields::Fields {
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    } = fields::read(
        version,
        spans
            .iter()
            .map(|&(name, value)| (&head[at(name)], &head[at(value)])),
    )?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some((
        len,
        Head {
            request,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
        },
    )))
}

/// Reads the body `framing` says, up to `max` bytes.
async fn read_body<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    framing: Framing,
    max: usize,
    expect_continue: bool,
) -> Result<Result<RequestBody, Refusal>, Error> {
    let eof = || -> Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the client closed in the middle of a request body",
        )
        .into()
    };
    match framing {
        Framing::Length(0) => Ok(Ok(RequestBody::Complete(Bytes::new()))),
        Framing::Length(n) if n > max as u64 => Ok(Ok(RequestBody::TooLarge)),
        Framing::Length(n) => {
            let n = n as usize;
            if expect_continue && buf.len() < n {
                io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            if buf.capacity() < n {
                buf.reserve(n - buf.len());
            }
            while buf.len() < n {
                if read_more(io, buf).await? == 0 {
                    return Err(eof());
                }
            }
            if buf.len() == n {
                // Nothing after it (the usual case): the body takes the
                // buffer whole, which `split_to` would first turn into a
                // shared one (one more allocation).
                return Ok(Ok(RequestBody::Complete(std::mem::take(buf).freeze())));
            }
            Ok(Ok(RequestBody::Complete(buf.split_to(n).freeze())))
        }
        Framing::Chunked => {
            if expect_continue && buf.is_empty() {
                io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            let bad = |why| Ok(Err(Refusal(StatusCode::BAD_REQUEST, why)));
            let mut body = BytesMut::new();
            loop {
                // The chunk's size line.
                let (line, size) = loop {
                    match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete(found)) => break found,
                        Ok(httparse::Status::Partial) if buf.len() < READ_CHUNK => {
                            if read_more(io, buf).await? == 0 {
                                return Err(eof());
                            }
                        }
                        _ => return bad("malformed chunk size"),
                    }
                };
                buf.advance(line);
                if size == 0 {
                    // Trailer fields (ignored), then an empty line.
                    let mut trailers = 0;
                    loop {
                        match buf.windows(2).position(|w| w == b"\r\n") {
                            Some(0) => {
                                buf.advance(2);
                                return Ok(Ok(RequestBody::Complete(body.freeze())));
                            }
                            Some(end) => {
                                trailers += end + 2;
                                buf.advance(end + 2);
                            }
                            None if trailers + buf.len() > MAX_HEAD_BYTES => {
                                return bad("trailer fields too large")
                            }
                            None => {
                                if read_more(io, buf).await? == 0 {
                                    return Err(eof());
                                }
                            }
                        }
                    }
                }
                if size > (max - body.len()) as u64 {
                    return Ok(Ok(RequestBody::TooLarge));
                }
                let size = size as usize;
                while buf.len() < size + 2 {
                    if read_more(io, buf).await? == 0 {
                        return Err(eof());
                    }
                }
                if &buf[size..size + 2] != b"\r\n" {
                    return bad("a chunk not followed by CRLF");
                }
                body.extend_from_slice(&buf[..size]);
                buf.advance(size + 2);
            }
        }
    }
}

/// Reads every request in `input` as a connection would (what it writes
/// back, `100 Continue`, is dropped): each request's head and body, until
/// the input ends or a head is refused (its status). For the fuzz target
/// (`crate::fuzzing::http1_requests`).
pub(crate) async fn read_requests(
    input: &[u8],
    max_body_bytes: usize,
) -> (Vec<(Request<()>, RequestBody)>, Option<StatusCode>) {
    let (mut io, mut peer) = tokio::io::duplex(input.len().max(1) + 64);
    let _ = peer.write_all(input).await;
    let _ = peer.shutdown().await;
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    loop {
        let head = match read_head(&mut io, &mut buf).await {
            Ok(Some(Ok(head))) => head,
            Ok(Some(Err(Refusal(status, _)))) => return (requests, Some(status)),
            Ok(None) | Err(_) => return (requests, None),
        };
        match read_body(
            &mut io,
            &mut buf,
            head.framing,
            max_body_bytes,
            head.expect_continue,
        )
        .await
        {
            Ok(Ok(RequestBody::TooLarge)) => {
                requests.push((head.request, RequestBody::TooLarge));
                return (requests, None);
            }
            Ok(Ok(body)) => requests.push((head.request, body)),
            Ok(Err(Refusal(status, _))) => return (requests, Some(status)),
            Err(_) => return (requests, None),
        }
    }
}

/// Answers a head the connection refuses, as plain text (best effort: the
/// connection closes next).
async fn write_refusal(io: &mut Stream, status: StatusCode, why: &'static str) {
    let mut response = Response::new(Bytes::from(format!("{why}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let bytes = encode_response(response, false, false);
    let _ = io.write_all(&bytes).await;
    let _ = io.shutdown().await;
}

/// The response as it goes on the wire: status line, the handler's header
/// fields, `Content-Length`, `Date`, `Connection: close` unless
/// `keep_alive`, then the body (left out for `HEAD`).
fn encode_response(response: Response<Bytes>, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let mut out = Vec::with_capacity(
        128 + parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + if head_only { 0 } else { body.len() },
    );
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !bodiless && !parts.headers.contains_key(CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    with_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodiless {
        out.extend_from_slice(&body);
    }
    out
}

/// The `Date` header's value, formatted once a second per thread.
fn with_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != second {
            *date = (second, httpdate::fmt_http_date(now));
        }
        f(date.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(usize, Head)>, Refusal> {
        parse_head(text.as_bytes())
    }

    fn status(result: Result<Option<(usize, Head)>, Refusal>) -> StatusCode {
        match result {
            Err(Refusal(status, _)) => status,
            Ok(_) => StatusCode::OK,
        }
    }

    #[test]
    fn a_long_polling_head_is_parsed_with_its_length_and_keep_alive() {
        let text = "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n[{\"a\":1}]xyz";
        let (len, head) = head(text).ok().flatten().unwrap();
        assert_eq!(&text[len..], "[{\"a\":1}]xyz");
        assert_eq!(head.framing, Framing::Length(12));
        assert!(head.keep_alive);
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri().path(), "/cometd");
        assert!(head.request.headers().contains_key("host"));
    }

    #[test]
    fn a_whole_head_over_the_limit_is_refused() {
        let long = format!(
            "GET / HTTP/1.1\r\nx-a: {}\r\nx-b: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES),
            "b".repeat(70_000)
        );
        assert_eq!(
            status(head(&long)),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let longest = format!(
            "GET / HTTP/1.1\r\nx-a: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES - 40)
        );
        assert_eq!(status(head(&longest)), StatusCode::OK);
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(matches!(
            head("POST /cometd HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        ));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let ka = |t: &str| head(t).ok().flatten().unwrap().1.keep_alive;
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(
            status(head(
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            )),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(head(
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
            )),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(head("POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(status(head("GARBAGE\r\n\r\n")), StatusCode::BAD_REQUEST);
        let (_, same) = head("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n")
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(same.framing, Framing::Length(3));
    }

    #[test]
    fn too_many_fields_are_refused_with_431() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            text.push_str(&format!("x-{i}: y\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(
            status(head(&text)),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn a_response_carries_its_length_date_and_close() {
        let mut response = Response::new(Bytes::from_static(b"[]"));
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let text = String::from_utf8(encode_response(response, false, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("content-type: application/json\r\n"),
            "{text}"
        );
        assert!(text.contains("content-length: 2\r\n"), "{text}");
        assert!(text.contains("date: "), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n[]"), "{text}");
        let head_only = Response::new(Bytes::from_static(b"[]"));
        let text = String::from_utf8(encode_response(head_only, true, true)).unwrap();
        assert!(
            text.contains("content-length: 2\r\n") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
        assert!(!text.contains("connection"), "{text}");
    }
}
