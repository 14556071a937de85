//! The websocket transport against a scripted fake Bayeux server (the
//! `tokio-websockets` server over a `TcpListener`): the dialect (what the
//! handshake and connects say, cookies on the upgrade), frames that mix
//! deliveries and replies, a socket closed under a waiting request, a reply
//! that never comes, pings. The end-to-end suite in `crates/halley/tests`
//! covers the real server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, within};
use futures_util::{SinkExt, StreamExt};
use halley_client::{Client, CookieJar, Error, State, TransportKind};
use reqwest::header::{HeaderValue, COOKIE, SET_COOKIE};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_websockets::{CloseCode, Message, ServerBuilder};

/// What the fake writes back.
enum Out {
    Frame(Value),
    /// A ping; the fake records the pong.
    Ping,
    /// Close 1001 and end the socket.
    Close,
}

/// One upgrade request as the fake saw it.
#[derive(Debug, Clone)]
struct Upgrade {
    path: String,
    cookie: Option<String>,
}

#[derive(Default)]
struct Log {
    upgrades: Vec<Upgrade>,
    /// Every message received, in order.
    messages: Vec<Value>,
    pongs: usize,
    /// Late replies (to `/late`) the fake has tried to write.
    late_replies: usize,
}

struct Fake {
    url: String,
    log: Arc<Mutex<Log>>,
}

impl Fake {
    async fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cometd", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let sockets = log.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(stream, sockets.clone()));
            }
        });
        Fake { url, log }
    }

    fn upgrades(&self) -> Vec<Upgrade> {
        self.log.lock().unwrap().upgrades.clone()
    }

    fn messages_on(&self, channel: &str) -> Vec<Value> {
        let log = self.log.lock().unwrap();
        log.messages
            .iter()
            .filter(|m| m["channel"] == channel)
            .cloned()
            .collect()
    }

    fn client(&self) -> Client {
        Client::builder(&self.url)
            .transport(TransportKind::WebSocket)
            .backoff(Duration::from_millis(50), Duration::from_millis(200))
            .max_network_delay(Duration::from_millis(1000))
            .build()
            .unwrap()
    }
}

async fn serve(stream: tokio::net::TcpStream, log: Arc<Mutex<Log>>) {
    let builder = ServerBuilder::new()
        .add_header(
            SET_COOKIE,
            HeaderValue::from_static("BAYEUX_BROWSER=fromws; Path=/; HttpOnly"),
        )
        .unwrap();
    let Ok((request, mut ws)) = builder.accept(stream).await else {
        return;
    };
    log.lock().unwrap().upgrades.push(Upgrade {
        path: request.uri().path().to_owned(),
        cookie: request
            .headers()
            .get(COOKIE)
            .map(|v| v.to_str().unwrap().to_owned()),
    });
    let (out, mut outbox) = mpsc::unbounded_channel::<Out>();
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(message)) => {
                    if message.is_pong() {
                        log.lock().unwrap().pongs += 1;
                    }
                    if let Some(text) = message.as_text() {
                        let messages: Vec<Value> = serde_json::from_str(text).unwrap();
                        log.lock().unwrap().messages.extend(messages.iter().cloned());
                        script(&messages, &out, &log);
                    }
                }
                _ => return,
            },
            next = outbox.recv() => match next {
                Some(Out::Frame(frame)) => {
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        return;
                    }
                }
                Some(Out::Ping) => {
                    if ws.send(Message::ping("are you there")).await.is_err() {
                        return;
                    }
                }
                Some(Out::Close) => {
                    let _ = ws
                        .send(Message::close(Some(CloseCode::GOING_AWAY), "going away"))
                        .await;
                    return;
                }
                None => return,
            },
        }
    }
}

fn reply_to(m: &Value, extra: Value) -> Value {
    let mut reply = json!({"channel": m["channel"], "id": m["id"], "successful": true});
    for (k, v) in extra.as_object().unwrap() {
        reply[k] = v.clone();
    }
    reply
}

/// Writes `frame` after `delay`, as a server that holds something would
/// (part of the script, not synchronisation).
fn later(out: &mpsc::UnboundedSender<Out>, delay: Duration, frame: Value) {
    let out = out.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = out.send(Out::Frame(frame));
    });
}

/// The fake's behaviour, one frame of messages at a time (`log` already
/// holds them).
fn script(messages: &[Value], out: &mpsc::UnboundedSender<Out>, log: &Arc<Mutex<Log>>) {
    let send = |frame: Value| {
        let _ = out.send(Out::Frame(frame));
    };
    let m = &messages[0];
    match m["channel"].as_str().unwrap() {
        "/meta/handshake" if m["ext"]["ack"] == true => send(json!([reply_to(
            m,
            json!({"clientId": "w1", "version": "1.0",
                   "supportedConnectionTypes": ["websocket"],
                   "advice": {"reconnect": "retry", "interval": 0, "timeout": 300},
                   "ext": {"ack": true}})
        )])),
        // The ack extension: the reply to a connect that acknowledges batch
        // k is batch k + 1, with one delivery `k + 1` up to 5. The first
        // reply of batch 3 is lost with its socket.
        "/meta/connect" if m["ext"]["ack"].is_u64() => {
            let acked = m["ext"]["ack"].as_u64().unwrap();
            let tries = log
                .lock()
                .unwrap()
                .messages
                .iter()
                .filter(|x| x["channel"] == "/meta/connect" && x["ext"]["ack"] == acked)
                .count();
            if acked == 2 && tries == 1 {
                let _ = out.send(Out::Close);
                return;
            }
            let mut frame: Vec<Value> = (acked < 5)
                .then(|| json!({"channel": "/n", "data": acked + 1}))
                .into_iter()
                .collect();
            frame.push(reply_to(m, json!({"ext": {"ack": acked + 1}})));
            let delay = if m["advice"]["timeout"] == 0 { 0 } else { 100 };
            later(out, Duration::from_millis(delay), Value::Array(frame));
        }
        "/meta/handshake" => send(json!([reply_to(
            m,
            json!({"clientId": "w1", "version": "1.0",
                   "supportedConnectionTypes": ["websocket", "long-polling"],
                   "advice": {"reconnect": "retry", "interval": 0, "timeout": 300}})
        )])),
        "/meta/connect" if m["advice"]["timeout"] == 0 => send(json!([reply_to(m, json!({}))])),
        // Held: answered at its timeout, on its own.
        "/meta/connect" => later(
            out,
            Duration::from_millis(300),
            json!([reply_to(m, json!({}))]),
        ),
        // Deliveries before, among and after the reply, in one frame; the
        // second carries the publish's own id (the publisher subscribes).
        "/multi" => send(json!([
            {"channel": "/multi", "data": "a"},
            {"channel": "/multi", "data": "b", "id": m["id"]},
            reply_to(m, json!({})),
            {"channel": "/multi", "data": "c"},
        ])),
        // The reply comes in a later frame than the deliveries.
        "/split" => {
            send(json!([{"channel": "/split", "data": 1}]));
            send(json!([{"channel": "/split", "data": 2}, {"channel": "/split", "data": 3}]));
            later(
                out,
                Duration::from_millis(50),
                json!([reply_to(m, json!({}))]),
            );
        }
        // Two messages in one frame: the replies come in two frames, in the
        // reverse order.
        "/pair" => {
            send(json!([reply_to(&messages[1], json!({}))]));
            send(json!([reply_to(&messages[0], json!({}))]));
        }
        "/close" => {
            let _ = out.send(Out::Close);
        }
        "/silent" => {}
        // Answered after the client gave up (its timeout is 200 ms); the
        // log counts the attempt, made whether or not the socket is still
        // there.
        "/late" => {
            let (out, log) = (out.clone(), log.clone());
            let reply = json!([reply_to(m, json!({}))]);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = out.send(Out::Frame(reply));
                log.lock().unwrap().late_replies += 1;
            });
        }
        "/ping" => {
            let _ = out.send(Out::Ping);
            send(json!([reply_to(m, json!({}))]));
        }
        "/meta/disconnect" => send(json!([reply_to(m, json!({}))])),
        _ => send(json!([reply_to(m, json!({}))])),
    }
}

#[tokio::test]
async fn speaks_the_cometd_websocket_dialect() {
    let fake = Fake::start().await;
    let jar = Arc::new(CookieJar::new());
    jar.insert("BAYEUX_BROWSER", "preset");
    jar.insert("other", "1");
    let client = Client::builder(&fake.url)
        .transport(TransportKind::WebSocket)
        .cookie_jar(jar.clone())
        .build()
        .unwrap();
    assert_eq!(client.connection_type(), "websocket");
    let info = client.handshake().await.unwrap();
    assert_eq!(info.client_id, "w1");
    eventually("two connects", || client.stats().connects >= 2).await;

    let upgrades = fake.upgrades();
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0].path, "/cometd");
    assert_eq!(
        upgrades[0].cookie.as_deref(),
        Some("BAYEUX_BROWSER=preset; other=1"),
        "the jar's cookies go with the upgrade"
    );
    assert_eq!(
        jar.get("BAYEUX_BROWSER").as_deref(),
        Some("fromws"),
        "Set-Cookie on the 101 is stored"
    );

    let handshake = &fake.messages_on("/meta/handshake")[0];
    assert_eq!(handshake["supportedConnectionTypes"], json!(["websocket"]));
    assert_eq!(handshake["version"], "1.0");
    assert!(handshake["id"].is_string());
    let connects = fake.messages_on("/meta/connect");
    assert_eq!(connects[0]["connectionType"], "websocket");
    assert_eq!(connects[0]["clientId"], "w1");
    assert_eq!(connects[0]["advice"], json!({"timeout": 0}));
    assert_eq!(connects[1]["connectionType"], "websocket");
    assert!(connects[1].get("advice").is_none());
    assert!(connects.iter().all(|c| c["id"].is_string()));

    client.disconnect().await.unwrap();
    assert_eq!(fake.messages_on("/meta/disconnect").len(), 1);
    assert_eq!(client.state(), State::Disconnected);
}

#[tokio::test]
async fn deliveries_anywhere_in_a_frame_and_replies_matched_by_id() {
    let fake = Fake::start().await;
    let client = fake.client();
    let mut deliveries = client.take_deliveries().unwrap();
    client.handshake().await.unwrap();

    let ack = client.publish("/multi", &0).await.unwrap();
    assert_eq!(ack.channel, "/multi");
    // Deliveries before the reply are handed over before publish returns;
    // the one after it, by the same reader, right behind them.
    let got: Vec<_> = [
        deliveries.recv().await.unwrap(),
        deliveries.recv().await.unwrap(),
        deliveries.recv().await.unwrap(),
    ]
    .into_iter()
    .map(|d| d.data_value())
    .collect();
    assert_eq!(got, [json!("a"), json!("b"), json!("c")]);

    client.publish("/split", &0).await.unwrap();
    assert_eq!(deliveries.len(), 3, "deliveries of earlier frames are in");
    let got: Vec<_> = std::iter::from_fn(|| deliveries.try_recv())
        .map(|d| d.data_value())
        .collect();
    assert_eq!(got, [json!(1), json!(2), json!(3)]);

    let batch = vec![
        halley_client::Outgoing::new("/pair"),
        halley_client::Outgoing::new("/pair/second"),
    ];
    let replies = client.send_batch(batch).await.unwrap();
    let channels: Vec<_> = replies.iter().map(|r| r.channel.as_str()).collect();
    assert_eq!(
        channels,
        ["/pair/second", "/pair"],
        "as the server sent them"
    );
    assert!(deliveries.is_empty());
    assert_eq!(client.stats().deliveries, 6);
}

#[tokio::test]
async fn a_socket_closed_under_a_request_fails_it_and_the_next_one_reopens() {
    let fake = Fake::start().await;
    let client = fake.client();
    client.handshake().await.unwrap();
    let error = client.publish("/close", &0).await.unwrap_err();
    assert!(
        matches!(&error, Error::WebSocket(reason) if reason.contains("1001")),
        "{error:?}"
    );
    // The next request (or the connect loop, whichever comes first) opens
    // a new socket; the session is the same.
    let ack = client.publish("/after", &0).await.unwrap();
    assert_eq!(ack.channel, "/after");
    assert_eq!(fake.upgrades().len(), 2);
    assert_eq!(client.client_id().as_deref(), Some("w1"));
    assert_eq!(client.stats().handshakes, 1);
    eventually("a connect on the new socket", || {
        client.state() == State::Connected
    })
    .await;
}

#[tokio::test]
async fn a_reply_that_does_not_come_in_time_condemns_the_socket() {
    let fake = Fake::start().await;
    let client = Client::builder(&fake.url)
        .transport(TransportKind::WebSocket)
        .max_network_delay(Duration::from_millis(200))
        .build()
        .unwrap();
    client.handshake().await.unwrap();
    assert_eq!(fake.upgrades().len(), 1);
    let error = client.publish("/silent", &0).await.unwrap_err();
    assert!(matches!(error, Error::Timeout(_)), "{error:?}");
    // As the CometD client does, the silent socket is dropped: the next
    // request opens another, with the same session.
    let ack = client.publish("/fine", &0).await.unwrap();
    assert_eq!(ack.channel, "/fine");
    assert_eq!(fake.upgrades().len(), 2);
    // A reply that comes too late (to a socket since dropped) is lost, and
    // harms nothing.
    let error = client.publish("/late", &0).await.unwrap_err();
    assert!(matches!(error, Error::Timeout(_)), "{error:?}");
    eventually("the late reply", || {
        fake.log.lock().unwrap().late_replies >= 1
    })
    .await;
    client.publish("/fine", &1).await.unwrap();
    assert_eq!(fake.upgrades().len(), 3);
    assert_eq!(client.client_id().as_deref(), Some("w1"));
    assert_eq!(client.stats().handshakes, 1);
}

#[tokio::test]
async fn pings_are_answered() {
    let fake = Fake::start().await;
    let client = fake.client();
    client.handshake().await.unwrap();
    client.publish("/ping", &0).await.unwrap();
    eventually("a pong", || fake.log.lock().unwrap().pongs >= 1).await;
}

#[tokio::test]
async fn a_ws_url_is_taken_as_its_http_url() {
    let fake = Fake::start().await;
    let ws_url = fake.url.replacen("http://", "ws://", 1) + "/";
    let client = Client::builder(&ws_url)
        .transport(TransportKind::WebSocket)
        .build()
        .unwrap();
    assert_eq!(client.url(), fake.url);
    client.handshake().await.unwrap();
}

#[tokio::test]
async fn nothing_listening_is_an_http_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cometd", listener.local_addr().unwrap());
    drop(listener);
    let client = Client::builder(&url)
        .transport(TransportKind::WebSocket)
        .build()
        .unwrap();
    let error = client.handshake().await.unwrap_err();
    assert!(matches!(error, Error::Http(_)), "{error:?}");
}

#[tokio::test]
async fn the_ack_extension_over_websocket_resends_what_a_lost_socket_took() {
    let fake = Fake::start().await;
    let client = Client::builder(&fake.url)
        .transport(TransportKind::WebSocket)
        .ack(true)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .build()
        .unwrap();
    let mut deliveries = client.take_deliveries().unwrap();
    assert!(client.handshake().await.unwrap().ack);
    let mut got = Vec::new();
    while got.len() < 5 {
        let delivery = within("five deliveries", deliveries.recv()).await.unwrap();
        got.push(delivery.data_value());
    }
    assert_eq!(got, [json!(1), json!(2), json!(3), json!(4), json!(5)]);
    eventually("batch 7", || client.ack_batch() >= Some(7)).await;
    assert!(deliveries.is_empty(), "no duplicate");
    assert_eq!(fake.upgrades().len(), 2, "one socket lost");
    assert_eq!(client.stats().handshakes, 1, "same session");
    let acks: Vec<Value> = fake
        .messages_on("/meta/connect")
        .iter()
        .map(|c| c["ext"]["ack"].clone())
        .take(8)
        .collect();
    assert_eq!(acks, [0, 1, 2, 2, 3, 4, 5, 6].map(|n| json!(n)));
    assert_eq!(
        fake.messages_on("/meta/handshake")[0]["ext"],
        json!({"ack": true})
    );
}
