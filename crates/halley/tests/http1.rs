//! The public listener's HTTP/1.1 (`transport/http1.rs`), byte for byte
//! over raw TCP against a real `halley serve`: keep-alive and pipelining,
//! the body framings clients use (`Content-Length`, chunked, `Expect:
//! 100-continue`), `HEAD`, what is refused before any handler, and a
//! client that closes while its connect is held.

mod common;

use std::time::Duration;

use common::{within, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response read off `socket`: its head (lowercased names, as sent)
/// and its body, by `Content-Length`; `buffer` keeps what came after it.
async fn response(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> (String, String) {
    within(30.0, "a response", async {
        loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                let length = if head.starts_with("HTTP/1.1 100") {
                    0
                } else {
                    length
                };
                if buffer.len() >= end + 4 + length {
                    let body =
                        String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
                    buffer.drain(..end + 4 + length);
                    return (head, body);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "the server closed before a whole response: {:?}",
                String::from_utf8_lossy(buffer)
            );
            buffer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

fn post(server: &Server, body: &str, extra: &str) -> String {
    format!(
        "POST /cometd HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        server.address(),
        body.len()
    )
}

fn handshake_body() -> String {
    json!([{"id": "1", "channel": "/meta/handshake", "version": "1.0",
            "supportedConnectionTypes": ["long-polling"]}])
    .to_string()
}

/// A new connection that has handshaken on itself: the socket, its read
/// buffer, and the handshake response's head and body.
async fn handshaken(server: &Server) -> (TcpStream, Vec<u8>, String, String) {
    let mut socket = TcpStream::connect(server.address()).await.unwrap();
    let mut buffer = Vec::new();
    socket
        .write_all(post(server, &handshake_body(), "").as_bytes())
        .await
        .unwrap();
    let (head, body) = response(&mut socket, &mut buffer).await;
    (socket, buffer, head, body)
}

fn connect_body(client_id: &str) -> String {
    json!([{"id": "2", "channel": "/meta/connect", "clientId": client_id,
            "connectionType": "long-polling"}])
    .to_string()
}

fn messages(body: &str) -> Vec<Value> {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The `BAYEUX_BROWSER=...` pair a response sets.
fn cookie(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|v| v.split(';').next())
        .expect("a browser cookie")
        .to_owned()
}

#[tokio::test]
async fn requests_follow_each_other_on_one_connection_and_pipelined_ones_are_answered_in_order() {
    let server = Server::start(&[]);
    let (mut socket, mut buffer, head, body) = handshaken(&server).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let client_id = messages(&body)[0]["clientId"].as_str().unwrap().to_owned();
    let cookie = format!("cookie: {}\r\n", cookie(&head));

    // Two requests in one write: a connect (the first, answered at once)
    // and a subscribe.
    let subscribe = json!([{"id": "3", "channel": "/meta/subscribe", "clientId": client_id,
                            "subscription": "/chat/a"}])
    .to_string();
    let both =
        post(&server, &connect_body(&client_id), &cookie) + &post(&server, &subscribe, &cookie);
    socket.write_all(both.as_bytes()).await.unwrap();
    let (_, first) = response(&mut socket, &mut buffer).await;
    let (_, second) = response(&mut socket, &mut buffer).await;
    assert_eq!(messages(&first)[0]["channel"], "/meta/connect", "{first}");
    assert_eq!(messages(&first)[0]["successful"], true, "{first}");
    assert_eq!(
        messages(&second)[0]["channel"],
        "/meta/subscribe",
        "{second}"
    );
    assert_eq!(messages(&second)[0]["successful"], true, "{second}");
}

#[tokio::test]
async fn a_chunked_body_and_expect_100_continue_are_read() {
    let server = Server::start(&[]);
    let mut socket = TcpStream::connect(server.address()).await.unwrap();
    let mut buffer = Vec::new();
    let body = handshake_body();
    let (a, b) = body.split_at(10);
    let chunked = format!(
        "POST /cometd HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\ntrailer: ignored\r\n\r\n",
        a.len(),
        b.len()
    );
    socket.write_all(chunked.as_bytes()).await.unwrap();
    let (head, reply) = response(&mut socket, &mut buffer).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(messages(&reply)[0]["successful"], true, "{reply}");

    // The head alone, waiting for "100 Continue" before the body, as curl does.
    let expect = format!(
        "POST /cometd HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(expect.as_bytes()).await.unwrap();
    let (head, _) = response(&mut socket, &mut buffer).await;
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    socket.write_all(body.as_bytes()).await.unwrap();
    let (head, reply) = response(&mut socket, &mut buffer).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(messages(&reply)[0]["successful"], true, "{reply}");
}

#[tokio::test]
async fn head_has_the_length_but_no_body_and_http_1_0_keeps_alive_only_when_asked() {
    let server = Server::start(&[]);
    let mut socket = TcpStream::connect(server.address()).await.unwrap();
    socket
        .write_all(
            b"GET /healthz HTTP/1.0\r\nconnection: keep-alive\r\n\r\n\
              HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut all = Vec::new();
    within(
        30.0,
        "the server to close after the HTTP/1.0 request",
        socket.read_to_end(&mut all),
    )
    .await
    .unwrap();
    let all = String::from_utf8(all).unwrap();
    let second = 1 + all[1..].find("HTTP/1.1 200").expect("the HEAD's response");
    let (kept_alive, all_after) = all.split_at(second);
    assert!(kept_alive.contains("connection: keep-alive\r\n"), "{all}");
    let all_after = all_after.to_owned();
    let third = 1 + all_after[1..]
        .find("HTTP/1.1 200")
        .expect("the GET's response");
    let (head_reply, get_reply) = all_after.split_at(third);
    assert!(head_reply.contains("content-length: "), "{all}");
    assert!(
        head_reply.ends_with("\r\n\r\n"),
        "no body after HEAD: {all}"
    );
    assert!(get_reply.contains("connection: close"), "{all}");
    assert!(!get_reply.ends_with("\r\n\r\n"), "a body after GET: {all}");
}

#[tokio::test]
async fn ambiguous_or_oversized_heads_are_refused_before_any_handler_and_closed() {
    let server = Server::start(&[]);
    for (request, status) in [
        (
            "POST /cometd HTTP/1.1\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n[]"
                .to_owned(),
            "400",
        ),
        (
            "POST /cometd HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n[]".to_owned(),
            "400",
        ),
        (
            "POST /cometd HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n".to_owned(),
            "501",
        ),
        ("NOT HTTP AT ALL\r\n\r\n".to_owned(), "400"),
        (
            format!("GET / HTTP/1.1\r\nx-long: {}\r\n\r\n", "a".repeat(20_000)),
            "431",
        ),
    ] {
        let mut socket = TcpStream::connect(server.address()).await.unwrap();
        // A refused head may be answered before all of it is written.
        let _ = socket.write_all(request.as_bytes()).await;
        let mut all = Vec::new();
        let _ = within(30.0, "the server to close", socket.read_to_end(&mut all)).await;
        let all = String::from_utf8_lossy(&all);
        assert!(
            all.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:.80}: {all}"
        );
        assert!(all.contains("connection: close"), "{all}");
    }
    assert_eq!(
        server
            .metric("halley_limit_hits_total{limit=\"request_head\"}")
            .await,
        5.0,
        "each refusal counted"
    );
    // Nothing broke: the next client is served.
    assert_eq!(
        reqwest::get(format!("{}/healthz", server.origin))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A client that closes its connection while its connect is held is gone:
/// its held poll no longer counts against its browser's
/// `max-sessions-per-browser` (1), so another tab's connect is held
/// rather than told to poll (`multiple-clients`).
#[tokio::test]
async fn a_client_that_closes_while_its_connect_is_held_frees_its_browsers_poll() {
    let server = Server::start(&["--timeout", "60000"]);
    let (mut first_tab, mut buffer, head, body) = handshaken(&server).await;
    let cookie = format!("cookie: {}\r\n", cookie(&head));
    let first = messages(&body)[0]["clientId"].as_str().unwrap().to_owned();
    // Its first connect is answered at once; the second is held.
    first_tab
        .write_all(post(&server, &connect_body(&first), &cookie).as_bytes())
        .await
        .unwrap();
    response(&mut first_tab, &mut buffer).await;
    first_tab
        .write_all(post(&server, &connect_body(&first), &cookie).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first_tab);

    let mut buffer = Vec::new();
    let mut second_tab = TcpStream::connect(server.address()).await.unwrap();
    let handshake = post(&server, &handshake_body(), &cookie);
    second_tab.write_all(handshake.as_bytes()).await.unwrap();
    let (_, body) = response(&mut second_tab, &mut buffer).await;
    let second = messages(&body)[0]["clientId"].as_str().unwrap().to_owned();
    second_tab
        .write_all(post(&server, &connect_body(&second), &cookie).as_bytes())
        .await
        .unwrap();
    response(&mut second_tab, &mut buffer).await;
    // Held (no answer within 2 s), not answered at once with
    // `multiple-clients`; the server may take a moment to see the close.
    for attempt in 0.. {
        second_tab
            .write_all(post(&server, &connect_body(&second), &cookie).as_bytes())
            .await
            .unwrap();
        match tokio::time::timeout(
            Duration::from_secs(2),
            response(&mut second_tab, &mut buffer),
        )
        .await
        {
            Err(_) => break,
            Ok((_, body)) => {
                assert!(attempt < 20, "the closed tab's poll still counts: {body}");
                assert_eq!(
                    messages(&body)[0]["advice"]["multiple-clients"],
                    true,
                    "{body}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `header-read-timeout` bounds each head and each body, from when it is
/// awaited: a client that stalls in either is closed and counted, an idle
/// keep-alive connection is closed, and a request held longer than the
/// timeout (the connection's timer fired meanwhile) is answered, with the
/// next request on the connection timed afresh.
#[tokio::test]
async fn a_client_too_slow_with_its_head_or_body_is_closed_and_a_long_held_connect_is_not() {
    let server = Server::start(&["--header-read-timeout", "400", "--timeout", "1200"]);
    let closed_within = |socket: TcpStream, what: &'static str| async move {
        let mut socket = socket;
        let mut rest = Vec::new();
        within(10.0, what, socket.read_to_end(&mut rest))
            .await
            .unwrap();
        rest
    };
    for (stalled, what) in [
        (
            &b"POST /cometd HTTP/1.1\r\nhost: x\r\n"[..],
            "a stalled head to be closed",
        ),
        (
            &b"POST /cometd HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n[{"[..],
            "a stalled body to be closed",
        ),
    ] {
        let mut socket = TcpStream::connect(server.address()).await.unwrap();
        socket.write_all(stalled).await.unwrap();
        assert!(closed_within(socket, what).await.is_empty());
    }
    // Connects held for 1.2 s, three times the timeout, one after another.
    let (mut socket, mut buffer, head, body) = handshaken(&server).await;
    let client_id = messages(&body)[0]["clientId"].as_str().unwrap().to_owned();
    let browser = format!("cookie: {}\r\n", cookie(&head));
    for _ in 0..3 {
        // The first connect is answered at once, the others held to their
        // timeout: the head after a long hold is read on a re-armed timer.
        socket
            .write_all(post(&server, &connect_body(&client_id), &browser).as_bytes())
            .await
            .unwrap();
        let (_, body) = response(&mut socket, &mut buffer).await;
        assert_eq!(messages(&body)[0]["successful"], true, "{body}");
    }
    // Idle after that: closed by the timeout, not kept open.
    assert!(
        closed_within(socket, "an idle keep-alive connection to be closed")
            .await
            .is_empty()
    );
    assert_eq!(
        server
            .metric("halley_limit_hits_total{limit=\"header_read_timeout\"}")
            .await,
        3.0,
        "the stalled head, the stalled body and the idle connection"
    );
}
