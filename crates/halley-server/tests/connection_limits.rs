//! Connection limits of a real server on `127.0.0.1:0`, on tokio's paused
//! clock (a sleep is the scenario's time passing): a silent or slow client
//! is closed after `header-read-timeout`, an idle keep-alive connection
//! too, but a held long poll is not; connections over the per-IP cap are
//! closed at once, and their places come back when connections close.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use halley_server::state::limits::Limit;
use halley_server::{Config, Node, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

struct Running {
    addr: SocketAddr,
    node: Arc<Node>,
    _stop: oneshot::Sender<()>,
}

async fn serve(config: Config) -> Running {
    let server = Server::bind(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: halley_server::config::AdminListen::Off,
        ..config
    })
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let node = server.node().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        node,
        _stop: stop,
    }
}

/// Reads until the peer closes (or resets) the connection; what it sent.
/// Fails when the server keeps it open for a (virtual) minute.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut bytes));
    assert!(read.await.is_ok(), "still open after a minute");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sends one HTTP/1.1 request and reads its response (headers and a
/// `Content-Length` body); the connection stays open.
async fn request(stream: &mut TcpStream, head: &str, body: &str) -> Option<String> {
    let request = format!(
        "{head}\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if response.len() >= end + 4 + length {
                return Some(text.into_owned());
            }
        }
    }
}

async fn bayeux(stream: &mut TcpStream, body: &str) -> Vec<Value> {
    let response = request(
        stream,
        "POST /cometd HTTP/1.1\r\nContent-Type: application/json",
        body,
    )
    .await
    .expect("a response");
    let json = &response[response.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(json).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_the_header_read_timeout() {
    let server = serve(Config {
        header_read_timeout: 2_000,
        ..Config::default()
    })
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let start = Instant::now();
    assert_eq!(
        read_to_close(&mut silent).await,
        "",
        "closed without a word"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(2_000),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.node.limits().count(Limit::HeaderReadTimeout), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slowloris_header_trickle_does_not_keep_the_connection() {
    let server = serve(Config {
        header_read_timeout: 2_000,
        ..Config::default()
    })
    .await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let start = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // One header line every half second, never the blank line.
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if slow
                .write_all(format!("X-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), trickle)
        .await
        .expect("the server closed the trickling connection");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2_000) && elapsed < Duration::from_secs(60),
        "{elapsed:?}"
    );
    assert_eq!(server.node.limits().count(Limit::HeaderReadTimeout), 1);
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_but_a_held_long_poll_is_not() {
    let server = serve(Config {
        header_read_timeout: 2_000,
        timeout: 10_000,
        trust_client_session: true,
        ..Config::default()
    })
    .await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let ok = request(&mut idle, "GET /healthz HTTP/1.1", "")
        .await
        .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let served = Instant::now();
    assert_eq!(read_to_close(&mut idle).await, "");
    assert!(served.elapsed() >= Duration::from_millis(2_000));

    // A long poll held for 10 s, five times the header timeout, is answered.
    let mut poll = TcpStream::connect(server.addr).await.unwrap();
    let replies = bayeux(
        &mut poll,
        r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#,
    )
    .await;
    let client_id = replies[0]["clientId"].as_str().unwrap().to_owned();
    let connect = format!(
        r#"[{{"channel":"/meta/connect","clientId":"{client_id}","connectionType":"long-polling"}}]"#
    );
    bayeux(&mut poll, &connect).await; // the first connect is answered at once
    let held = Instant::now();
    let replies = bayeux(&mut poll, &connect).await;
    assert_eq!(replies[0]["successful"], true, "{replies:?}");
    assert!(
        held.elapsed() >= Duration::from_millis(10_000),
        "{:?}",
        held.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_per_ip_cap_are_closed_at_once_until_one_closes() {
    let server = serve(Config {
        max_connections_per_ip: 2,
        header_read_timeout: 30_000,
        ..Config::default()
    })
    .await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let _second = TcpStream::connect(server.addr).await.unwrap();
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let start = Instant::now();
    assert_eq!(read_to_close(&mut third).await, "");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "closed at once, not by a timeout"
    );
    assert_eq!(server.node.limits().count(Limit::ConnectionsPerIp), 1);
    let ok = request(&mut first, "GET /healthz HTTP/1.1", "")
        .await
        .unwrap();
    assert!(
        ok.starts_with("HTTP/1.1 200"),
        "the first two are served: {ok}"
    );

    drop(first);
    // Its place comes back once the server has seen it close.
    let mut served = false;
    for _ in 0..100 {
        common::run_ready_tasks().await;
        let mut next = TcpStream::connect(server.addr).await.unwrap();
        if request(&mut next, "GET /healthz HTTP/1.1", "")
            .await
            .is_some()
        {
            served = true;
            break;
        }
    }
    assert!(served, "a closed connection gives its place back");
}
