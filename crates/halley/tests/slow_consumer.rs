//! A slow consumer costs the server a bounded queue, and nobody else
//! anything.
//!
//! `halley serve --max-queue 1000 --overflow-policy <policy>`; on `/feed`:
//!
//! - a **stalled long-polling** subscriber: handshake, first connect,
//!   subscribe, then never another `/meta/connect`;
//! - a **stalled WebSocket** subscriber: a raw `tokio::net::TcpStream`
//!   upgraded with `tokio-websockets` (handshake, first connect and
//!   subscribe on the socket, no cookie), after which the test never polls
//!   the stream again, so nothing reads the TCP socket: the kernel buffers
//!   fill, the server's write blocks, and the session's outbox is all that
//!   grows;
//! - a **healthy** subscriber (the `halley_client`, long-polling in one test
//!   and WebSocket in the other) that must receive all 100,000 messages, in
//!   order;
//! - a publisher sending 100,000 messages of ~1 KiB in batches of 500
//!   publishes per request, each request as soon as the previous one's
//!   publish replies came back and the healthy subscriber is no more than
//!   one batch behind. (The queue limit applies to the healthy session too:
//!   a healthy client that fell 1000 messages behind would rightly lose
//!   some. The window keeps the test about the stalled clients.)
//!
//! Unbounded, the stalled sessions would hold every delivery: 100,000 ×
//! ~1.1 KB ≈ 110 MB (encoded once, shared by both; run with the limits
//! lifted, `--max-queue 200000 --max-queue-bytes 1000000000`, this test
//! measured +139 MiB and failed). The server's RSS (`/proc/<pid>/status`,
//! sampled every 10 ms) must stay within 50 MiB of what it was before
//! publishing. Then the policy is
//! checked: with `drop-oldest` a stalled client that comes back (the
//! WebSocket one on a new socket: what the stalled one held in flight is
//! lost with it) gets at most 1000 messages, the newest, in order; with
//! `disconnect` its next connect is refused with `402` and advice
//! `reconnect: handshake`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    eventually, exchange, first_connect, handshake, messages_of, reply_with_id, within, Server,
};
use futures_util::{SinkExt, StreamExt};
use halley_client::{Client, Deliveries};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_websockets::{Message, WebSocketStream};

const MESSAGES: u64 = 100_000;
const BATCH: u64 = 500;
const MAX_QUEUE: u64 = 1000;
/// Bytes of padding in each message: with the JSON around it, a delivery
/// is ~1.1 KB.
const PAD: usize = 1024;
const RSS_BOUND: u64 = 50 << 20;

/// Resident memory of a process, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

#[derive(Deserialize)]
struct Numbered {
    n: u64,
}

fn number_of(message: &Value) -> u64 {
    message["data"]["n"].as_u64().expect("numbered delivery")
}

/// A WebSocket on a raw TCP stream: the test decides when it is read.
struct RawSocket {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
}

impl RawSocket {
    async fn open(server: &Server) -> RawSocket {
        let stream = TcpStream::connect(server.address()).await.expect("connect");
        let uri = format!("ws://{}/cometd", server.address());
        let (ws, _) = tokio_websockets::ClientBuilder::new()
            .uri(&uri)
            .unwrap()
            .connect_on(stream)
            .await
            .expect("websocket upgrade");
        RawSocket { ws, next_id: 0 }
    }

    /// Sends `messages` (ids added) in one frame; their ids.
    async fn send(&mut self, mut messages: Vec<Value>) -> Vec<String> {
        let mut ids = Vec::new();
        for message in &mut messages {
            self.next_id += 1;
            let id = format!("w{}", self.next_id);
            message["id"] = json!(id);
            ids.push(id);
        }
        self.ws
            .send(Message::text(Value::Array(messages).to_string()))
            .await
            .expect("websocket send");
        ids
    }

    /// Reads frames until the reply to `id` came; the deliveries before it
    /// and the reply.
    async fn until_reply(&mut self, id: &str) -> (Vec<Value>, Value) {
        let mut deliveries = Vec::new();
        loop {
            let frame = within(30.0, "a websocket frame", self.ws.next())
                .await
                .expect("socket open")
                .expect("websocket frame");
            let Some(text) = frame.as_text() else {
                continue;
            };
            let messages: Vec<Value> = serde_json::from_str(text).expect("JSON frame");
            for message in messages {
                if message.get("successful").is_some() {
                    if message["id"] == id {
                        return (deliveries, message);
                    }
                } else if !message["channel"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("/meta/")
                {
                    deliveries.push(message);
                }
            }
        }
    }

    /// A `/meta/connect` answered at once; its deliveries and reply.
    async fn connect_now(&mut self, client_id: &str) -> (Vec<Value>, Value) {
        let ids = self
            .send(vec![
                json!({"channel": "/meta/connect", "clientId": client_id,
                              "connectionType": "websocket", "advice": {"timeout": 0}}),
            ])
            .await;
        self.until_reply(&ids[0]).await
    }
}

/// The stalled WebSocket subscriber: handshaken, connected once and
/// subscribed to `/feed`, then never read again.
async fn stalled_websocket(server: &Server) -> (RawSocket, String) {
    let mut socket = RawSocket::open(server).await;
    let ids = socket
        .send(vec![json!({"channel": "/meta/handshake", "version": "1.0",
                          "supportedConnectionTypes": ["websocket"]})])
        .await;
    let (_, reply) = socket.until_reply(&ids[0]).await;
    assert_eq!(reply["successful"], true, "{reply}");
    let client_id = reply["clientId"].as_str().unwrap().to_owned();
    let (_, reply) = socket.connect_now(&client_id).await;
    assert_eq!(reply["successful"], true, "{reply}");
    let ids = socket
        .send(vec![
            json!({"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/feed"}),
        ])
        .await;
    let (_, reply) = socket.until_reply(&ids[0]).await;
    assert_eq!(reply["successful"], true, "{reply}");
    (socket, client_id)
}

/// The stalled long-polling subscriber: handshaken, connected once and
/// subscribed to `/feed`, then never connects again.
async fn stalled_long_polling(server: &Server) -> (Client, String) {
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    let replies = exchange(
        &browser,
        &json!([{"id": "s", "channel": "/meta/subscribe", "clientId": client_id,
                 "subscription": "/feed"}]),
    )
    .await;
    assert_eq!(reply_with_id(&replies, "s")["successful"], true);
    (browser, client_id)
}

/// Reads the healthy client's deliveries: counts them while they come in
/// order, flags the first that does not.
fn count_in_order(mut deliveries: Deliveries, received: Arc<AtomicU64>, broken: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while let Some(delivery) = deliveries.recv().await {
            let n = delivery.data_as::<Numbered>().expect("numbered").n;
            if n != received.load(Ordering::SeqCst) {
                eprintln!(
                    "healthy client: got {n}, expected {}",
                    received.load(Ordering::SeqCst)
                );
                broken.store(true, Ordering::SeqCst);
                return;
            }
            received.fetch_add(1, Ordering::SeqCst);
        }
    });
}

/// The body of one publish request: messages `from..from + BATCH`.
fn publish_body(client_id: &str, from: u64, pad: &str) -> String {
    let mut body = String::with_capacity((BATCH as usize) * (PAD + 100));
    body.push('[');
    for n in from..from + BATCH {
        if n > from {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"id":"p{n}","channel":"/feed","clientId":"{client_id}","data":{{"n":{n},"pad":"{pad}"}}}}"#
        ));
    }
    body.push(']');
    body
}

async fn slow_consumers_are_bounded(policy: &str, healthy_over_websocket: bool) {
    let started = Instant::now();
    let server = Server::start(&[
        "--max-queue",
        &MAX_QUEUE.to_string(),
        "--overflow-policy",
        policy,
        // The stalled long-polling session must not expire meanwhile: its
        // fate is the overflow policy's to decide.
        "--max-interval",
        "60000",
    ]);
    let (healthy, deliveries) = if healthy_over_websocket {
        server.ws_connected_client().await
    } else {
        server.connected_client().await
    };
    within(30.0, "subscribe", healthy.subscribe("/feed"))
        .await
        .unwrap();
    let (stalled_lp, stalled_lp_id) = stalled_long_polling(&server).await;
    let (stalled_ws, stalled_ws_id) = stalled_websocket(&server).await;
    let (publisher, _) = server.connected_client().await;
    let publisher_id = publisher.client_id().unwrap();

    let received = Arc::new(AtomicU64::new(0));
    let broken = Arc::new(AtomicBool::new(false));
    count_in_order(deliveries, received.clone(), broken.clone());

    let pid = server.pid();
    let baseline = rss_bytes(pid);
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = std::thread::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        move || {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(rss_bytes(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });

    let pad = "x".repeat(PAD);
    let publishing = Instant::now();
    for from in (0..MESSAGES).step_by(BATCH as usize) {
        // At most one batch ahead of the healthy subscriber.
        within(30.0, "the healthy subscriber to keep up", async {
            while received.load(Ordering::SeqCst) + BATCH < from {
                assert!(
                    !broken.load(Ordering::SeqCst),
                    "healthy client out of order"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        let response = within(
            30.0,
            "a publish batch",
            publisher.raw_post(publish_body(&publisher_id, from, &pad)),
        )
        .await
        .expect("publish request");
        assert_eq!(response.status, 200, "{}", response.text());
        let replies = messages_of(&response);
        let acked = replies
            .iter()
            .filter(|m| m["channel"] == "/feed" && m["successful"] == true)
            .count();
        assert_eq!(acked as u64, BATCH, "every publish acknowledged");
    }
    let publish_time = publishing.elapsed();
    within(30.0, "the healthy subscriber to get everything", async {
        while received.load(Ordering::SeqCst) < MESSAGES && !broken.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    sampling.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    let (peak, after) = (peak.load(Ordering::SeqCst), rss_bytes(pid));
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{policy}: published {MESSAGES} in {:.2} s; server RSS {:.1} MiB before, peak {:.1} MiB (+{:.1} MiB), {:.1} MiB after; bound +{} MiB; unbounded, the stalled sessions would hold ~{} MB",
        publish_time.as_secs_f64(),
        baseline as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        growth as f64 / 1048576.0,
        after as f64 / 1048576.0,
        RSS_BOUND >> 20,
        MESSAGES * (PAD as u64 + 60) / 1_000_000,
    );
    assert!(
        !broken.load(Ordering::SeqCst),
        "the healthy client got messages out of order"
    );
    assert_eq!(received.load(Ordering::SeqCst), MESSAGES, "healthy client");
    assert_eq!(
        healthy.stats().rehandshakes,
        0,
        "the healthy session lived on"
    );
    assert!(
        growth < RSS_BOUND,
        "server RSS grew by {growth} bytes with two stalled subscribers"
    );

    // The stalled clients come back.
    let lp_replies = exchange(
        &stalled_lp,
        &json!([{"id": "late", "channel": "/meta/connect", "clientId": stalled_lp_id,
                 "connectionType": "long-polling", "advice": {"timeout": 0}}]),
    )
    .await;
    let lp_reply = reply_with_id(&lp_replies, "late").clone();
    let lp_deliveries: Vec<Value> = common::deliveries_in(&lp_replies)
        .into_iter()
        .cloned()
        .collect();
    // What the stalled socket had in flight is lost with it.
    drop(stalled_ws);
    let mut socket = RawSocket::open(&server).await;
    let (ws_deliveries, ws_reply) = socket.connect_now(&stalled_ws_id).await;

    for (transport, reply, deliveries) in [
        ("long-polling", &lp_reply, &lp_deliveries),
        ("websocket", &ws_reply, &ws_deliveries),
    ] {
        match policy {
            "drop-oldest" => {
                assert_eq!(reply["successful"], true, "{transport}: {reply}");
                let numbers: Vec<u64> = deliveries.iter().map(number_of).collect();
                assert!(
                    !numbers.is_empty() && numbers.len() as u64 <= MAX_QUEUE,
                    "{transport}: {} deliveries",
                    numbers.len()
                );
                let newest = (MESSAGES - numbers.len() as u64..MESSAGES).collect::<Vec<_>>();
                assert!(
                    numbers == newest,
                    "{transport}: not the newest, in order: {}..={} ({} messages)",
                    numbers[0],
                    numbers[numbers.len() - 1],
                    numbers.len()
                );
                eprintln!(
                    "{policy}: the stalled {transport} client came back to {} messages, {}..={}",
                    numbers.len(),
                    numbers[0],
                    numbers[numbers.len() - 1]
                );
            }
            "disconnect" => {
                assert_eq!(reply["successful"], false, "{transport}: {reply}");
                assert!(
                    reply["error"].as_str().unwrap_or("").starts_with("402:"),
                    "{transport}: {reply}"
                );
                assert_eq!(
                    reply["advice"]["reconnect"], "handshake",
                    "{transport}: {reply}"
                );
                assert!(deliveries.is_empty(), "{transport}: {deliveries:?}");
            }
            other => unreachable!("policy {other}"),
        }
    }
    if policy == "disconnect" {
        let overflows = || {
            server
                .log()
                .matches("outbox overflow: disconnecting the session")
                .count()
        };
        eventually(30.0, "two overflows in the log", || overflows() >= 2).await;
        let log = server.log();
        assert_eq!(
            log.matches("outbox overflow: disconnecting the session")
                .count(),
            2,
            "both stalled sessions, and only they, were disconnected:\n{log}"
        );
    }
    eprintln!("{policy}: {:.1} s in all", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_bounds_stalled_subscribers_and_keeps_the_newest() {
    slow_consumers_are_bounded("drop-oldest", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_ends_stalled_subscribers_and_spares_the_healthy_one() {
    slow_consumers_are_bounded("disconnect", true).await;
}
