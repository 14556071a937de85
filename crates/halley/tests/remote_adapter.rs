//! Remote adapters end to end: a real `halley serve` configured with a
//! `[[remote-adapter]]`, a fake adapter written here over a real TCP
//! socket (Halley dials it, or it dials Halley), and Bayeux clients.

mod common;

use std::time::Duration;

use common::{refused_config, start_with_config, within, Server};
use halley_client::Deliveries;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Starts Halley with one remote adapter table (`extra` TOML lines added).
fn start(table: &str) -> Server {
    start_with_flags(table, &[])
}

/// The same, with command-line `flags`.
fn start_with_flags(table: &str, flags: &[&str]) -> Server {
    start_with_config(
        &format!("[[remote-adapter]]\nname = \"prices\"\nchannels = [\"/stocks/*\"]\n{table}\n"),
        flags,
    )
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The adapter side of one connection.
struct FakeAdapter {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    /// Whether `next` answers Halley's pings.
    answer_pings: bool,
}

const HELLO: &str = r#"{"type":"hello","protocol":"halley-adapter","version":1,"name":"fake"}"#;

impl FakeAdapter {
    fn new(stream: TcpStream) -> FakeAdapter {
        let (read, write) = stream.into_split();
        FakeAdapter {
            lines: BufReader::new(read).lines(),
            write,
            answer_pings: true,
        }
    }

    /// Accepts Halley's connection; returns it with Halley's hello, ours sent.
    async fn accept(listener: &TcpListener) -> (FakeAdapter, Value) {
        let (stream, _) = within(30.0, "Halley dialing the adapter", listener.accept())
            .await
            .unwrap();
        let mut adapter = FakeAdapter::new(stream);
        let hello = adapter.raw_next().await.expect("Halley's hello");
        adapter.send(HELLO).await;
        (adapter, hello)
    }

    /// Dials Halley's `listen` address; returns it with Halley's hello, ours sent.
    async fn dial(port: u16) -> (FakeAdapter, Value) {
        let stream = within(30.0, "dialing Halley", async {
            loop {
                match TcpStream::connect(("127.0.0.1", port)).await {
                    Ok(stream) => return stream,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        let mut adapter = FakeAdapter::new(stream);
        adapter.send(HELLO).await;
        let hello = adapter.raw_next().await.expect("Halley's hello");
        (adapter, hello)
    }

    async fn send(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("writing to Halley");
    }

    /// The next line as JSON, or None when Halley closed the connection.
    async fn raw_next(&mut self) -> Option<Value> {
        let line = within(30.0, "a line from Halley", self.lines.next_line())
            .await
            .ok()??;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}")))
    }

    /// The next line that is not a ping (pings are answered), within 10 s.
    async fn next(&mut self) -> Value {
        within(30.0, "a line from Halley other than a ping", async {
            loop {
                let line = self.raw_next().await.expect("Halley closed the link");
                if line["type"] == "ping" {
                    if self.answer_pings {
                        self.send(r#"{"type":"pong"}"#).await;
                    }
                    continue;
                }
                return line;
            }
        })
        .await
    }

    /// Reads `n` pings, answering them; anything else arriving meanwhile
    /// fails the test.
    async fn pings(&mut self, n: usize) {
        for _ in 0..n {
            let line = self.raw_next().await.expect("Halley closed the link");
            assert_eq!(line["type"], "ping", "expected only pings, got {line}");
            self.send(r#"{"type":"pong"}"#).await;
        }
    }

    /// Waits until Halley closes the connection (lines before are skipped).
    async fn closed(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        while let Some(line) = self.raw_next().await {
            seen.push(line);
        }
        seen
    }
}

fn subscribe(channel: &str) -> Value {
    json!({"type": "subscribe", "channel": channel})
}

fn unsubscribe(channel: &str) -> Value {
    json!({"type": "unsubscribe", "channel": channel})
}

async fn delivery(deliveries: &mut Deliveries) -> (String, String) {
    let d = within(30.0, "a delivery", deliveries.recv()).await.unwrap();
    (d.channel, d.data.get().to_owned())
}

#[tokio::test]
async fn notices_follow_the_first_and_the_last_subscriber() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = start(&format!(
        "connect = \"{address}\"\nping-interval-ms = 60000"
    ));
    let (mut adapter, hello) = FakeAdapter::accept(&listener).await;
    assert_eq!(
        hello,
        json!({"type": "hello", "protocol": "halley-adapter", "version": 1, "name": "prices",
               "channels": ["/stocks/*"], "pingIntervalMs": 60000})
    );

    let (a, _) = server.connected_client().await;
    let (b, _) = server.connected_client().await;
    let (monitor, _) = server.connected_client().await;
    monitor.subscribe("/stocks/*").await.unwrap();
    a.subscribe("/news").await.unwrap();

    // The next notice is AAPL's: neither a glob nor another channel
    // started a feed.
    a.subscribe("/stocks/AAPL").await.unwrap();
    assert_eq!(adapter.next().await, subscribe("/stocks/AAPL"));
    b.subscribe("/stocks/AAPL").await.unwrap();
    b.unsubscribe("/stocks/AAPL").await.unwrap();
    a.subscribe("/stocks/MSFT").await.unwrap();
    // B's coming and going said nothing: the next notice is about MSFT.
    assert_eq!(adapter.next().await, subscribe("/stocks/MSFT"));
    a.unsubscribe("/stocks/AAPL").await.unwrap();
    assert_eq!(adapter.next().await, unsubscribe("/stocks/AAPL"));
    // A disconnect is a last unsubscribe too.
    a.disconnect().await.unwrap();
    assert_eq!(adapter.next().await, unsubscribe("/stocks/MSFT"));
    server.logged("remote adapter link up").await;
}

#[tokio::test]
async fn publishes_reach_subscribers_and_new_ones_get_the_snapshot_first() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = start(&format!("connect = \"{address}\"\nsnapshot-length = 2"));
    let (mut adapter, _) = FakeAdapter::accept(&listener).await;

    let (a, mut a_got) = server.connected_client().await;
    let (monitor, mut monitor_got) = server.connected_client().await;
    monitor.subscribe("/stocks/*").await.unwrap();
    a.subscribe("/stocks/AAPL").await.unwrap();
    assert_eq!(adapter.next().await, subscribe("/stocks/AAPL"));

    // The snapshot goes to the current subscribers at once...
    adapter
        .send(r#"{"type":"snapshot","channel":"/stocks/AAPL","data":[{"snapshot":true,"seq":0}]}"#)
        .await;
    let first = (
        "/stocks/AAPL".to_owned(),
        r#"{"snapshot":true,"seq":0}"#.to_owned(),
    );
    assert_eq!(delivery(&mut a_got).await, first);
    // ...and publishes, byte for byte, to every subscriber, globs included.
    adapter
        .send(r#"{"type":"publish","channel":"/stocks/AAPL","data":{"seq": 1, "p":1.50}}"#)
        .await;
    let second = (
        "/stocks/AAPL".to_owned(),
        r#"{"seq": 1, "p":1.50}"#.to_owned(),
    );
    assert_eq!(delivery(&mut a_got).await, second);
    assert_eq!(delivery(&mut monitor_got).await, first);
    assert_eq!(delivery(&mut monitor_got).await, second);

    // A new subscriber first gets the last two messages, alone.
    let (b, mut b_got) = server.connected_client().await;
    b.subscribe("/stocks/AAPL").await.unwrap();
    assert_eq!(delivery(&mut b_got).await, first);
    assert_eq!(delivery(&mut b_got).await, second);
    adapter
        .send(r#"{"type":"publish","channel":"/stocks/AAPL","data":{"seq":2}}"#)
        .await;
    let third = ("/stocks/AAPL".to_owned(), r#"{"seq":2}"#.to_owned());
    assert_eq!(delivery(&mut b_got).await, third);
    assert_eq!(delivery(&mut a_got).await, third);
    assert!(a_got.is_empty(), "A got no snapshot when B subscribed");

    let (c, mut c_got) = server.connected_client().await;
    c.subscribe("/stocks/AAPL").await.unwrap();
    assert_eq!(delivery(&mut c_got).await, second, "the last two only");
    assert_eq!(delivery(&mut c_got).await, third);

    // Once nobody listens, what was kept is forgotten.
    for client in [&a, &b, &c] {
        client.unsubscribe("/stocks/AAPL").await.unwrap();
    }
    assert_eq!(adapter.next().await, unsubscribe("/stocks/AAPL"));
    let (d, mut d_got) = server.connected_client().await;
    d.subscribe("/stocks/AAPL").await.unwrap();
    assert_eq!(adapter.next().await, subscribe("/stocks/AAPL"));
    adapter
        .send(r#"{"type":"publish","channel":"/stocks/AAPL","data":{"seq":3}}"#)
        .await;
    assert_eq!(
        delivery(&mut d_got).await.1,
        r#"{"seq":3}"#,
        "no stale snapshot"
    );
}

#[tokio::test]
async fn bad_lines_are_answered_with_an_error_and_the_link_carries_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = start(&format!("connect = \"{address}\""));
    let (mut adapter, _) = FakeAdapter::accept(&listener).await;
    let (a, mut a_got) = server.connected_client().await;
    a.subscribe("/stocks/X").await.unwrap();
    assert_eq!(adapter.next().await, subscribe("/stocks/X"));

    for (line, says) in [
        ("this is not json", "not a JSON object"),
        (r#"{"type":"publish","channel":"/stocks/X"}"#, "data"),
        (
            r#"{"type":"publish","channel":"/news/X","data":1}"#,
            "not one of this adapter's channels",
        ),
        (
            r#"{"type":"publish","channel":"/meta/connect","data":1}"#,
            "broadcast",
        ),
        (
            r#"{"type":"publish","channel":"/stocks/*","data":1}"#,
            "glob",
        ),
        (
            r#"{"type":"snapshot","channel":"/stocks/X","data":5}"#,
            "array",
        ),
        (r#"{"type":"teleport"}"#, "unknown line type"),
        (HELLO, "already"),
    ] {
        adapter.send(line).await;
        let answer = adapter.next().await;
        assert_eq!(answer["type"], "error", "{line}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{line}: {message}");
    }
    adapter.send(r#"{"type":"ping"}"#).await;
    assert_eq!(adapter.next().await, json!({"type": "pong"}));
    adapter
        .send(r#"{"type":"publish","channel":"/stocks/X","data":"still here"}"#)
        .await;
    assert_eq!(delivery(&mut a_got).await.1, r#""still here""#);
    assert!(a_got.is_empty(), "nothing refused was delivered");
}

#[tokio::test]
async fn another_version_is_refused_and_an_oversized_line_closes_the_link() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = start(&format!("connect = \"{address}\""));

    let (stream, _) = listener.accept().await.unwrap();
    let mut adapter = FakeAdapter::new(stream);
    adapter.raw_next().await.expect("Halley's hello");
    adapter
        .send(r#"{"type":"hello","protocol":"halley-adapter","version":2}"#)
        .await;
    let seen = adapter.closed().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["type"], "error");
    let message = seen[0]["message"].as_str().unwrap();
    assert!(
        message.contains("version 2") && message.contains("version 1"),
        "{message}"
    );

    // Halley dials again; this time the hello is right.
    let (mut adapter, _) = FakeAdapter::accept(&listener).await;
    let (a, mut a_got) = server.connected_client().await;
    a.subscribe("/stocks/X").await.unwrap();
    assert_eq!(adapter.next().await, subscribe("/stocks/X"));
    let huge = format!(
        r#"{{"type":"publish","channel":"/stocks/X","data":"{}"}}"#,
        "x".repeat(1024 * 1024 + 10)
    );
    // Halley may close before reading it all: the write may fail.
    let _ = adapter
        .write
        .write_all(format!("{huge}\n").as_bytes())
        .await;
    let seen = adapter.closed().await;
    let error = seen
        .iter()
        .find(|l| l["type"] == "error")
        .expect("an error line");
    assert!(
        error["message"].as_str().unwrap().contains("longer than"),
        "{error}"
    );

    // The next link gets the listened channel again, and works.
    let (mut adapter, _) = FakeAdapter::accept(&listener).await;
    assert_eq!(adapter.next().await, subscribe("/stocks/X"));
    adapter
        .send(r#"{"type":"publish","channel":"/stocks/X","data":1}"#)
        .await;
    assert_eq!(delivery(&mut a_got).await.1, "1");
    assert!(a_got.is_empty(), "the oversized line was not delivered");
}

#[tokio::test]
async fn in_connect_mode_halley_redials_and_resends_every_listened_channel() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = start(&format!("connect = \"{address}\""));
    let (mut adapter, _) = FakeAdapter::accept(&listener).await;
    let (a, mut a_got) = server.connected_client().await;
    a.subscribe("/stocks/A").await.unwrap();
    a.subscribe("/stocks/B").await.unwrap();
    assert_eq!(adapter.next().await, subscribe("/stocks/A"));
    assert_eq!(adapter.next().await, subscribe("/stocks/B"));

    // The adapter process dies: its socket and its listener go away.
    drop(adapter);
    drop(listener);
    // While it is away, B loses its subscriber: nothing is queued for it.
    a.unsubscribe("/stocks/B").await.unwrap();
    a.subscribe("/stocks/C").await.unwrap();
    server.logged("remote adapter unreachable").await; // a failed redial

    // It comes back on the same port: Halley dials it and catches it up.
    let listener = TcpListener::bind(address).await.unwrap();
    let (mut adapter, _) = FakeAdapter::accept(&listener).await;
    let mut resent = vec![adapter.next().await, adapter.next().await];
    resent.sort_by_key(|l| l["channel"].as_str().unwrap().to_owned());
    assert_eq!(resent, [subscribe("/stocks/A"), subscribe("/stocks/C")]);
    // Nothing else was resent (B): the next notice is a new channel's.
    a.subscribe("/stocks/D").await.unwrap();
    assert_eq!(adapter.next().await, subscribe("/stocks/D"));
    adapter
        .send(r#"{"type":"publish","channel":"/stocks/A","data":{"back":true}}"#)
        .await;
    assert_eq!(delivery(&mut a_got).await.1, r#"{"back":true}"#);
    server.logged("remote adapter link down").await;
}

#[tokio::test]
async fn in_listen_mode_a_new_connection_replaces_the_old_one() {
    let port = free_port();
    let server = start(&format!("listen = \"127.0.0.1:{port}\""));
    let (mut first, hello) = FakeAdapter::dial(port).await;
    assert_eq!(hello["name"], "prices");
    let (a, mut a_got) = server.connected_client().await;
    a.subscribe("/stocks/A").await.unwrap();
    assert_eq!(first.next().await, subscribe("/stocks/A"));

    // A restarted adapter connects again: it takes over, and is caught up.
    let (mut second, _) = FakeAdapter::dial(port).await;
    assert_eq!(second.next().await, subscribe("/stocks/A"));
    assert_eq!(
        first.closed().await,
        Vec::<Value>::new(),
        "the old link is closed"
    );
    second
        .send(r#"{"type":"publish","channel":"/stocks/A","data":2}"#)
        .await;
    assert_eq!(delivery(&mut a_got).await.1, "2");
    a.unsubscribe("/stocks/A").await.unwrap();
    assert_eq!(second.next().await, unsubscribe("/stocks/A"));
}

#[tokio::test]
async fn connections_that_never_say_hello_cannot_keep_the_adapter_out() {
    let port = free_port();
    let server = start(&format!("listen = \"127.0.0.1:{port}\""));
    let (mut link, _) = FakeAdapter::dial(port).await;
    // Eight connections that say nothing fill the places of those waiting
    // for their hello...
    let mut silent = Vec::new();
    for _ in 0..8 {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        silent.push(FakeAdapter::new(stream));
    }
    // ...so the next one closes the oldest of them (Halley accepts
    // connections in the order they were made).
    let (mut restarted, hello) = FakeAdapter::dial(port).await;
    assert_eq!(hello["type"], "hello");
    // Closed, having heard at most Halley's hello (none if it was closed
    // before its task ran).
    let oldest = silent[0].closed().await;
    assert!(
        oldest.len() <= 1 && oldest.iter().all(|line| line["type"] == "hello"),
        "{oldest:?}"
    );
    server.logged("waiting for their hello").await;
    assert_eq!(
        link.closed().await,
        Vec::<Value>::new(),
        "the restarted adapter took over"
    );
    let (a, _) = server.connected_client().await;
    a.subscribe("/stocks/Q").await.unwrap();
    assert_eq!(restarted.next().await, subscribe("/stocks/Q"));
    drop(silent);
}

#[tokio::test]
async fn with_a_secret_a_hello_without_it_is_refused_and_displaces_nothing() {
    let port = free_port();
    let server = start(&format!(
        "listen = \"127.0.0.1:{port}\"\nsecret = \"s3cret-of-the-feed\""
    ));
    let with_secret =
        r#"{"type":"hello","protocol":"halley-adapter","version":1,"secret":"s3cret-of-the-feed"}"#;
    let connect =
        || async { FakeAdapter::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap()) };
    let mut link = connect().await;
    link.send(with_secret).await;
    assert_eq!(link.raw_next().await.unwrap()["type"], "hello");
    let (a, mut a_got) = server.connected_client().await;
    a.subscribe("/stocks/A").await.unwrap();
    assert_eq!(link.next().await, subscribe("/stocks/A"));

    for forged in [
        HELLO.to_owned(),
        with_secret.replace("s3cret-of-the-feed", "s3cret-of-the-fee"),
    ] {
        let mut intruder = connect().await;
        intruder.send(&forged).await;
        intruder
            .send(r#"{"type":"publish","channel":"/stocks/A","data":"forged"}"#)
            .await;
        let seen = intruder.closed().await;
        let error = seen.last().expect("an error line");
        assert_eq!(error["type"], "error", "{seen:?}");
        assert!(
            error["message"].as_str().unwrap().contains("secret"),
            "{error}"
        );
    }
    server.logged("wrong or missing secret").await;
    // The link is untouched, and only its publish reaches the subscriber.
    link.send(r#"{"type":"publish","channel":"/stocks/A","data":"real"}"#)
        .await;
    assert_eq!(delivery(&mut a_got).await.1, "\"real\"");
}

#[tokio::test]
async fn a_silent_adapter_is_dropped_after_three_ping_intervals() {
    let port = free_port();
    let server = start(&format!(
        "listen = \"127.0.0.1:{port}\"\nping-interval-ms = 100"
    ));
    let (mut adapter, _) = FakeAdapter::dial(port).await;
    adapter.answer_pings = false;
    let started = std::time::Instant::now();
    let seen = adapter.closed().await;
    assert!(
        seen.iter().filter(|l| l["type"] == "ping").count() >= 2,
        "Halley pinged while idle: {seen:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    // One that answers pings stays up, past three ping intervals.
    let (mut adapter, _) = FakeAdapter::dial(port).await;
    adapter.pings(5).await;
    let (a, _) = server.connected_client().await;
    a.subscribe("/stocks/Z").await.unwrap();
    assert_eq!(adapter.next().await, subscribe("/stocks/Z"));
    server.logged("silent for three ping intervals").await;
}

#[tokio::test]
async fn sigterm_closes_the_links_and_stops_promptly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let port = free_port();
    let mut server = start_with_config(
        &format!(
            "[[remote-adapter]]\nname = \"dialed\"\nchannels = [\"/a/*\"]\nconnect = \"{address}\"\n\
             [[remote-adapter]]\nname = \"dialing\"\nchannels = [\"/b/*\"]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
        &[],
    );
    let (mut dialed, hello) = FakeAdapter::accept(&listener).await;
    assert_eq!(hello["name"], "dialed");
    let (mut dialing, hello) = FakeAdapter::dial(port).await;
    assert_eq!(hello["name"], "dialing");

    let status =
        tokio::task::spawn_blocking(move || server.terminate_with_log(Duration::from_secs(30)));
    assert_eq!(dialed.closed().await, Vec::<Value>::new());
    assert_eq!(dialing.closed().await, Vec::<Value>::new());
    let (status, log) = status.await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    // Promptly: the links did not make it wait out its grace period,
    // after which it would say so.
    assert!(!log.contains("still open after"), "{log}");
}

#[test]
fn invalid_remote_adapter_tables_are_refused_at_start() {
    for (table, says) in [
        ("channels = [\"/a\"]", "set exactly one of connect"),
        (
            "channels = [\"/a\"]\nconnect = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"",
            "exactly one",
        ),
        ("channels = []\nconnect = \"127.0.0.1:1\"", "at least one"),
        (
            "channels = [\"/service/x\"]\nconnect = \"127.0.0.1:1\"",
            "broadcast",
        ),
        ("channels = [\"/a\"]\nconnect = \"nope\"", "host:port"),
        (
            "channels = [\"/a\"]\nconnect = \"127.0.0.1:1\"\nsnapshot-length = 5000",
            "snapshot-length",
        ),
        (
            "channels = [\"/a\"]\nconnect = \"127.0.0.1:1\"\nretry = 1",
            "unknown field",
        ),
    ] {
        let stderr = refused_config(&format!("[[remote-adapter]]\nname = \"x\"\n{table}\n"));
        assert!(stderr.contains(says), "{table}: {stderr}");
    }
}

#[tokio::test]
async fn listening_beyond_loopback_without_a_secret_is_warned_about() {
    // Port 0: any free one (a port picked beforehand may be taken by
    // another test in between on 0.0.0.0, which overlaps 127.0.0.1).
    let server = start("listen = \"0.0.0.0:0\"");
    server.logged("beyond loopback, without a secret").await;
    let quiet = start("listen = \"0.0.0.0:0\"\nsecret = \"s3cret-of-the-feed\"");
    // Started (it answers), and said nothing of the kind.
    let (_client, _) = quiet.connected_client().await;
    assert!(!quiet.log().contains("without a secret"), "{}", quiet.log());
}

/// Issue 14, finding 9: a remote adapter (trusted once it said hello)
/// bypassed every rate limit. Its publishes (each message of a snapshot
/// counts) are bounded by `adapter-publish-rate`: a line beyond it is
/// answered with an `error`, nothing of it published, and the link stays.
#[tokio::test]
async fn publishes_over_the_adapter_rate_are_refused_with_an_error_line() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = start_with_flags(
        &format!("connect = \"{address}\""),
        &["--adapter-publish-rate", "3"],
    );
    let (mut adapter, _) = FakeAdapter::accept(&listener).await;
    let (a, mut a_got) = server.connected_client().await;
    a.subscribe("/stocks/X").await.unwrap();
    assert_eq!(adapter.next().await, subscribe("/stocks/X"));

    // The burst (3): a snapshot of two and one publish.
    adapter
        .send(r#"{"type":"snapshot","channel":"/stocks/X","data":[0,1]}"#)
        .await;
    adapter
        .send(r#"{"type":"publish","channel":"/stocks/X","data":2}"#)
        .await;
    // Beyond it, at once: refused, whole.
    adapter
        .send(r#"{"type":"publish","channel":"/stocks/X","data":"flood"}"#)
        .await;
    let answer = adapter.next().await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("adapter-publish-rate"),
        "{answer}"
    );
    for expected in ["0", "1", "2"] {
        assert_eq!(delivery(&mut a_got).await.1, expected);
    }
    // The rate refills (3 a second): the link carries on.
    within(30.0, "a publish within the rate again", async {
        loop {
            adapter
                .send(r#"{"type":"publish","channel":"/stocks/X","data":"later"}"#)
                .await;
            // Accepted lines are not answered; a refused one is, at once:
            // a ping's pong tells which happened.
            adapter.send(r#"{"type":"ping"}"#).await;
            if adapter.next().await == json!({"type": "pong"}) {
                return;
            }
            // Refused: its `error` came first; the pong follows.
            assert_eq!(adapter.next().await, json!({"type": "pong"}));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(delivery(&mut a_got).await.1, r#""later""#);
    assert!(a_got.is_empty(), "the refused line was delivered to no one");
    let hits = server
        .metric("halley_limit_hits_total{limit=\"adapter_publish_rate\"}")
        .await;
    assert!(hits >= 1.0, "counted: {hits}");
}
