//! The connection state machine ([`halley_server::connection`]) driven
//! directly: no sockets, no HTTP, no sleeping.
//!
//! Each test builds an [`Engine`], turns JSON batches into exchanges with
//! [`Engine::handle_batch`] (with the [`Origin`] a long-polling request or
//! a WebSocket frame would have), feeds them to a [`Connection`] with
//! chosen instants, and checks the exact messages written and the
//! [`Status`] returned. The clock is tokio's, paused: it only moves where a
//! test says so (`tokio::time::advance`, for the timesync extension, whose
//! times come from the node's clock rather than from the instants given).
//!
//! Map: reply order; HTTP held connects; supersede; the ack extension;
//! WebSocket ownership of deliveries; lazy channels; multiple clients of a
//! browser; shutdown; closed sessions; timesync; and, at the engine level,
//! an application extension.

use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{decode_batch, BayeuxError, BodyWriter, ChannelName, Message, Reply};
use halley_server::config::ChannelLazy;
use halley_server::connection::{Connection, Status};
use halley_server::engine::Engine;
use halley_server::exchange::{Exchange, Origin};
use halley_server::ext::{Context, Extension, ReplyExt};
use halley_server::state::session::ConnectionType;
use halley_server::Config;
use serde_json::value::to_raw_value;
use serde_json::{json, Value};
use tokio::time::Instant;

/// The server timeout (ms) of most tests: a lone connect is held this long.
const TIMEOUT: u64 = 10_000;
/// A non-zero interval, so advice that carries it is told from advice that does not.
const INTERVAL: u64 = 250;

fn config() -> Config {
    Config {
        timeout: TIMEOUT,
        interval: INTERVAL,
        ..Config::default()
    }
}

/// The node's epoch: instant 0 of its clock. The paused clock does not
/// move unless a test advances it, so "now" stays here; the instants given
/// to the machine are chosen relative to it.
fn epoch(engine: &Engine) -> Instant {
    engine.node().sessions().instant_at(0)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs one call of the machine on a fresh body; returns its status and
/// the messages written (an empty list when nothing was).
fn write(call: impl FnOnce(&mut BodyWriter) -> Status) -> (Status, Vec<Value>) {
    let mut body = BodyWriter::new();
    let status = call(&mut body);
    let written = match serde_json::from_slice(&body.finish(b"")).unwrap() {
        Value::Array(messages) => messages,
        other => panic!("not an array: {other}"),
    };
    (status, written)
}

fn poll(machine: &mut Connection, now: Instant) -> (Status, Vec<Value>) {
    write(|body| machine.poll(now, body))
}

fn waiting(until: Instant) -> Status {
    Status::Waiting { until: Some(until) }
}

async fn handle(engine: &Engine, origin: Origin, batch: &Value) -> Exchange {
    let bytes = serde_json::to_vec(batch).unwrap();
    engine
        .handle_batch(decode_batch(&bytes).unwrap(), origin)
        .await
}

/// A publish from the server side (as a Data Adapter or the HTTP API would).
fn publish(engine: &Engine, channel: &str, data: Value) {
    let channel = ChannelName::parse(channel).unwrap();
    engine
        .node()
        .publish(&channel, &to_raw_value(&data).unwrap(), None, None);
}

/// A delivery as `publish` encodes it.
fn delivery(channel: &str, data: Value) -> Value {
    json!({"channel": channel, "data": data})
}

/// `{"reconnect":"retry","interval":..,"timeout":..}`.
fn retry(interval: u64, timeout: u64) -> Value {
    json!({"reconnect": "retry", "interval": interval, "timeout": timeout})
}

/// The reply to connect `id` with `advice`, and nothing else.
fn connect_reply(id: &str, advice: Value) -> Value {
    json!({"channel": "/meta/connect", "id": id, "successful": true, "advice": advice})
}

/// The same, with `ext`.
fn connect_reply_ext(id: &str, advice: Value, ext: Value) -> Value {
    let mut reply = connect_reply(id, advice);
    reply["ext"] = ext;
    reply
}

/// `(channel, id)` of each message: the order of a body at a glance.
fn order(messages: &[Value]) -> Vec<(String, Option<String>)> {
    messages
        .iter()
        .map(|m| {
            (
                m["channel"].as_str().unwrap().to_owned(),
                m["id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn entry(channel: &str, id: Option<&str>) -> (String, Option<String>) {
    (channel.to_owned(), id.map(str::to_owned))
}

/// One browser speaking long-polling: the `BAYEUX_BROWSER` cookie it sends
/// (kept when the server issues one).
struct Browser {
    engine: Arc<Engine>,
    cookie: Option<String>,
}

impl Browser {
    fn new(engine: &Arc<Engine>) -> Self {
        Browser {
            engine: engine.clone(),
            cookie: None,
        }
    }

    /// Another tab of the same browser: the same cookie.
    fn tab(&self) -> Self {
        Browser {
            engine: self.engine.clone(),
            cookie: self.cookie.clone(),
        }
    }

    /// The exchange of one request, not yet given to a machine.
    async fn request(&mut self, batch: Value) -> Exchange {
        let origin = Origin::http(ConnectionType::LongPolling, self.cookie.clone());
        let exchange = handle(&self.engine, origin, &batch).await;
        if let Some(id) = &exchange.new_browser_id {
            self.cookie = Some(id.clone());
        }
        exchange
    }

    /// One request answered at once: its whole body.
    async fn send(&mut self, batch: Value, now: Instant) -> Vec<Value> {
        let exchange = self.request(batch).await;
        let mut machine = Connection::http(self.engine.node().clone());
        let (status, written) = write(|body| machine.on_exchange(exchange, now, body));
        assert_eq!(status, Status::Done, "{written:?}");
        written
    }

    /// A handshake with `ext`; returns the clientId and the reply.
    async fn handshake(&mut self, ext: Value, now: Instant) -> (String, Value) {
        let written = self
            .send(
                json!([{"channel": "/meta/handshake", "id": "h", "version": "1.0",
                        "supportedConnectionTypes": ["long-polling"], "ext": ext}]),
                now,
            )
            .await;
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0]["successful"], true, "{written:?}");
        let client_id = written[0]["clientId"].as_str().unwrap().to_owned();
        (client_id, written[0].clone())
    }

    /// A handshake and the first connect (answered at once): a session
    /// ready for held connects.
    async fn session(&mut self, now: Instant) -> String {
        let (client_id, _) = self.handshake(json!({}), now).await;
        let written = self.send(connect(&client_id, "c1"), now).await;
        assert_eq!(written, vec![connect_reply("c1", retry(INTERVAL, TIMEOUT))]);
        client_id
    }

    async fn subscribe(&mut self, client_id: &str, channel: &str, now: Instant) {
        let written = self
            .send(
                json!([{"channel": "/meta/subscribe", "id": "s", "clientId": client_id,
                        "subscription": channel}]),
                now,
            )
            .await;
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0]["successful"], true, "{written:?}");
    }

    /// A lone connect, given to a new machine: the machine, its status and
    /// what it wrote at once.
    async fn hold(&mut self, batch: Value, now: Instant) -> (Connection, Status, Vec<Value>) {
        let exchange = self.request(batch).await;
        let mut machine = Connection::http(self.engine.node().clone());
        let (status, written) = write(|body| machine.on_exchange(exchange, now, body));
        (machine, status, written)
    }
}

fn connect(client_id: &str, id: &str) -> Value {
    json!([{"channel": "/meta/connect", "id": id, "clientId": client_id,
            "connectionType": "long-polling"}])
}

fn connect_ext(client_id: &str, id: &str, ext: Value) -> Value {
    json!([{"channel": "/meta/connect", "id": id, "clientId": client_id,
            "connectionType": "long-polling", "ext": ext}])
}

/// A WebSocket without the socket: its id (from the node, as the transport
/// gets it) and its machine.
struct Socket {
    engine: Arc<Engine>,
    id: u64,
    opened_ms: u64,
    machine: Connection,
}

impl Socket {
    fn open(engine: &Arc<Engine>) -> Self {
        let node = engine.node().clone();
        let id = node.sessions().new_socket_id();
        Socket {
            engine: engine.clone(),
            id,
            opened_ms: node.sessions().now_ms(),
            machine: Connection::websocket(node, id),
        }
    }

    /// One text frame, handled and given to the machine.
    async fn frame(&mut self, batch: Value, now: Instant) -> (Status, Vec<Value>) {
        let origin = Origin::websocket(self.id, self.opened_ms, None);
        let exchange = handle(&self.engine, origin, &batch).await;
        write(|body| self.machine.on_exchange(exchange, now, body))
    }

    fn poll(&mut self, now: Instant) -> (Status, Vec<Value>) {
        poll(&mut self.machine, now)
    }

    async fn handshake(&mut self, ext: Value, now: Instant) -> (String, Value) {
        let (_, written) = self
            .frame(
                json!([{"channel": "/meta/handshake", "id": "h", "version": "1.0",
                        "supportedConnectionTypes": ["websocket"], "ext": ext}]),
                now,
            )
            .await;
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0]["successful"], true, "{written:?}");
        (
            written[0]["clientId"].as_str().unwrap().to_owned(),
            written[0].clone(),
        )
    }

    /// Handshake, first connect (answered at once), subscribe to `channel`.
    async fn session(&mut self, channel: &str, now: Instant) -> String {
        let (client_id, _) = self.handshake(json!({}), now).await;
        let (status, written) = self.frame(ws_connect(&client_id, "c1"), now).await;
        assert_eq!(written, vec![connect_reply("c1", retry(INTERVAL, TIMEOUT))]);
        assert_eq!(status, Status::Waiting { until: None });
        self.subscribe(&client_id, channel, now).await;
        client_id
    }

    async fn subscribe(&mut self, client_id: &str, channel: &str, now: Instant) {
        let (_, written) = self
            .frame(
                json!([{"channel": "/meta/subscribe", "id": "s", "clientId": client_id,
                        "subscription": channel}]),
                now,
            )
            .await;
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0]["successful"], true, "{written:?}");
    }
}

fn ws_connect(client_id: &str, id: &str) -> Value {
    json!([{"channel": "/meta/connect", "id": id, "clientId": client_id,
            "connectionType": "websocket"}])
}

fn ws_connect_ext(client_id: &str, id: &str, ext: Value) -> Value {
    json!([{"channel": "/meta/connect", "id": id, "clientId": client_id,
            "connectionType": "websocket", "ext": ext}])
}

// Reply order.

#[tokio::test(start_paused = true)]
async fn http_body_order_is_handshake_deliveries_replies_then_connect() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;
    browser.subscribe(&a, "/chat", t0).await;

    // The handshake is not first in the batch, the connect not last: the
    // body orders them anyway. The publish is A's own (delivered to it:
    // the publisher is a subscriber too) and rides before the replies.
    let written = browser
        .send(
            json!([
                {"channel": "/chat", "id": "p", "clientId": a, "data": 1},
                {"channel": "/meta/connect", "id": "c2", "clientId": a,
                 "connectionType": "long-polling"},
                {"channel": "/meta/handshake", "id": "h", "version": "1.0",
                 "supportedConnectionTypes": ["long-polling"]},
                {"channel": "/meta/subscribe", "id": "s", "clientId": a, "subscription": "/more"},
            ]),
            t0,
        )
        .await;
    assert_eq!(
        order(&written),
        vec![
            entry("/meta/handshake", Some("h")),
            entry("/chat", Some("p")),
            entry("/chat", Some("p")),
            entry("/meta/subscribe", Some("s")),
            entry("/meta/connect", Some("c2")),
        ],
        "{written:?}"
    );
    assert_eq!(
        written[1],
        json!({"channel": "/chat", "data": 1, "id": "p"})
    );
    assert_eq!(
        written[2],
        json!({"channel": "/chat", "id": "p", "successful": true})
    );
    assert_eq!(written[4], connect_reply("c2", retry(INTERVAL, TIMEOUT)));
}

#[tokio::test(start_paused = true)]
async fn websocket_frame_order_is_handshake_deliveries_replies_then_connect() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut socket = Socket::open(&engine);
    let a = socket.session("/chat", t0).await;

    // `advice.timeout: 0`: the connect is answered in this frame, last.
    let (status, written) = socket
        .frame(
            json!([
                {"channel": "/chat", "id": "p", "clientId": a, "data": 1},
                {"channel": "/meta/connect", "id": "c2", "clientId": a,
                 "connectionType": "websocket", "advice": {"timeout": 0}},
                {"channel": "/meta/handshake", "id": "h", "version": "1.0",
                 "supportedConnectionTypes": ["websocket"]},
                {"channel": "/meta/subscribe", "id": "s", "clientId": a, "subscription": "/more"},
            ]),
            t0,
        )
        .await;
    assert_eq!(
        order(&written),
        vec![
            entry("/meta/handshake", Some("h")),
            entry("/chat", Some("p")),
            entry("/chat", Some("p")),
            entry("/meta/subscribe", Some("s")),
            entry("/meta/connect", Some("c2")),
        ],
        "{written:?}"
    );
    assert_eq!(
        written[1],
        json!({"channel": "/chat", "data": 1, "id": "p"})
    );
    assert_eq!(written[4], connect_reply("c2", retry(INTERVAL, TIMEOUT)));
    assert_eq!(status, Status::Waiting { until: None });
    assert!(!socket.machine.is_holding());

    // A held connect is not written with the frame; the deliveries are.
    let (status, written) = socket
        .frame(
            json!([
                {"channel": "/chat", "id": "p2", "clientId": a, "data": 2},
                {"channel": "/meta/connect", "id": "c3", "clientId": a,
                 "connectionType": "websocket"},
            ]),
            t0,
        )
        .await;
    assert_eq!(
        written,
        vec![
            json!({"channel": "/chat", "data": 2, "id": "p2"}),
            json!({"channel": "/chat", "id": "p2", "successful": true}),
        ]
    );
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));
    assert!(socket.machine.is_holding());
}

// HTTP held connect.

#[tokio::test(start_paused = true)]
async fn http_lone_connect_is_held_until_a_delivery() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;
    browser.subscribe(&a, "/chat", t0).await;

    let (mut held, status, written) = browser.hold(connect(&a, "c2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));
    assert!(written.is_empty(), "{written:?}");
    assert!(held.is_holding());
    let session = held.session().expect("the held connect's session").clone();
    assert!(session.is_holding(), "a held session does not expire");

    assert_eq!(
        poll(&mut held, t0 + ms(5_000)),
        (waiting(t0 + ms(TIMEOUT)), vec![])
    );

    publish(&engine, "/chat", json!({"n": 1}));
    let (status, written) = poll(&mut held, t0 + ms(6_000));
    assert_eq!(status, Status::Done);
    assert_eq!(
        written,
        vec![
            delivery("/chat", json!({"n": 1})),
            connect_reply("c2", retry(INTERVAL, TIMEOUT)),
        ]
    );
    assert!(!held.is_holding());
    assert!(
        !session.is_holding(),
        "answered: the expiry clock runs again"
    );
}

#[tokio::test(start_paused = true)]
async fn http_held_connect_is_answered_at_its_deadline_without_deliveries() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;

    let (mut held, status, _) = browser.hold(connect(&a, "c2"), t0 + ms(100)).await;
    let deadline = t0 + ms(100 + TIMEOUT);
    assert_eq!(status, waiting(deadline));
    assert_eq!(
        poll(&mut held, deadline - ms(1)),
        (waiting(deadline), vec![])
    );
    assert_eq!(
        poll(&mut held, deadline),
        (
            Status::Done,
            vec![connect_reply("c2", retry(INTERVAL, TIMEOUT))]
        )
    );
    // Done is final.
    assert_eq!(poll(&mut held, deadline + ms(1)), (Status::Done, vec![]));

    // A client's shorter timeout shortens the hold; a longer one does not
    // lengthen it past the server's.
    let short = json!([{"channel": "/meta/connect", "id": "c3", "clientId": a,
                        "connectionType": "long-polling", "advice": {"timeout": 700}}]);
    let (_held, status, _) = browser.hold(short, t0).await;
    assert_eq!(status, waiting(t0 + ms(700)));
    let long = json!([{"channel": "/meta/connect", "id": "c4", "clientId": a,
                       "connectionType": "long-polling", "advice": {"timeout": 60_000}}]);
    let (_held, status, _) = browser.hold(long, t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));
}

#[tokio::test(start_paused = true)]
async fn http_first_connect_and_timeout_zero_are_answered_at_once() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let (a, _) = browser.handshake(json!({}), t0).await;

    // The session's first connect: never held (the client waits for it
    // to learn it is connected).
    let (_, status, written) = browser.hold(connect(&a, "c1"), t0).await;
    assert_eq!(status, Status::Done);
    assert_eq!(written, vec![connect_reply("c1", retry(INTERVAL, TIMEOUT))]);

    let zero = json!([{"channel": "/meta/connect", "id": "c2", "clientId": a,
                       "connectionType": "long-polling", "advice": {"timeout": 0}}]);
    let (_, status, written) = browser.hold(zero, t0).await;
    assert_eq!(status, Status::Done);
    assert_eq!(written, vec![connect_reply("c2", retry(INTERVAL, TIMEOUT))]);
}

#[tokio::test(start_paused = true)]
async fn http_connect_in_a_batch_is_answered_at_once() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;

    let (_, status, written) = browser
        .hold(
            json!([
                {"channel": "/meta/connect", "id": "c2", "clientId": a,
                 "connectionType": "long-polling"},
                {"channel": "/meta/subscribe", "id": "s", "clientId": a, "subscription": "/x"},
            ]),
            t0,
        )
        .await;
    assert_eq!(status, Status::Done);
    assert_eq!(
        order(&written),
        vec![
            entry("/meta/subscribe", Some("s")),
            entry("/meta/connect", Some("c2"))
        ]
    );
    assert_eq!(written[1], connect_reply("c2", retry(INTERVAL, TIMEOUT)));
}

#[tokio::test(start_paused = true)]
async fn http_connect_with_something_queued_is_answered_at_once() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;
    browser.subscribe(&a, "/chat", t0).await;
    publish(&engine, "/chat", json!(1));
    publish(&engine, "/chat", json!(2));

    let (held, status, written) = browser.hold(connect(&a, "c2"), t0).await;
    assert_eq!(status, Status::Done);
    assert!(!held.is_holding());
    assert_eq!(
        written,
        vec![
            delivery("/chat", json!(1)),
            delivery("/chat", json!(2)),
            connect_reply("c2", retry(INTERVAL, TIMEOUT)),
        ]
    );
}

// Supersede.

#[tokio::test(start_paused = true)]
async fn http_newer_connect_answers_the_held_one_without_deliveries() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;
    browser.subscribe(&a, "/chat", t0).await;

    let (mut first, status, _) = browser.hold(connect(&a, "c2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));

    // The client gave up on c2 (its request was cut) and sent c3; a
    // delivery arrives before either machine looks again.
    let newer = browser.request(connect(&a, "c3")).await;
    publish(&engine, "/chat", json!("for c3"));

    // The superseded connect is answered, but carries nothing: its client
    // may never read it.
    assert_eq!(
        poll(&mut first, t0 + ms(10)),
        (
            Status::Done,
            vec![connect_reply("c2", retry(INTERVAL, TIMEOUT))]
        )
    );
    let mut second = Connection::http(engine.node().clone());
    let (status, written) = write(|body| second.on_exchange(newer, t0 + ms(10), body));
    assert_eq!(status, Status::Done);
    assert_eq!(
        written,
        vec![
            delivery("/chat", json!("for c3")),
            connect_reply("c3", retry(INTERVAL, TIMEOUT)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn websocket_second_connect_answers_the_first_in_its_frame() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut socket = Socket::open(&engine);
    let a = socket.session("/chat", t0).await;

    let (status, written) = socket.frame(ws_connect(&a, "c2"), t0).await;
    assert_eq!((status, written), (waiting(t0 + ms(TIMEOUT)), vec![]));

    let (status, written) = socket.frame(ws_connect(&a, "c3"), t0 + ms(300)).await;
    assert_eq!(
        written,
        vec![connect_reply("c2", retry(INTERVAL, TIMEOUT))],
        "the superseded connect answered in the new one's frame"
    );
    assert_eq!(status, waiting(t0 + ms(300 + TIMEOUT)), "c3 held");
    assert!(socket.machine.is_holding());

    assert_eq!(
        socket.poll(t0 + ms(300 + TIMEOUT)),
        (
            Status::Waiting { until: None },
            vec![connect_reply("c3", retry(INTERVAL, TIMEOUT))]
        )
    );
}

// Ack numbering.

#[tokio::test(start_paused = true)]
async fn ack_numbers_connect_replies_and_resends_lost_batches_in_order() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let (a, reply) = browser.handshake(json!({"ack": true}), t0).await;
    assert_eq!(reply["ext"], json!({"ack": true}));
    let ack = |n: u64| json!({"ack": n});
    let advice = || retry(INTERVAL, TIMEOUT);

    let written = browser.send(connect(&a, "c1"), t0).await;
    assert_eq!(written, vec![connect_reply_ext("c1", advice(), ack(1))]);
    browser.subscribe(&a, "/chat", t0).await;

    // With acks, a delivery never rides on another reply: the client's own
    // publish comes back only in a numbered connect reply.
    let written = browser
        .send(
            json!([{"channel": "/chat", "id": "p", "clientId": a, "data": 1}]),
            t0,
        )
        .await;
    assert_eq!(
        written,
        vec![json!({"channel": "/chat", "id": "p", "successful": true})]
    );

    let m1 = json!({"channel": "/chat", "data": 1, "id": "p"});
    let written = browser.send(connect_ext(&a, "c2", ack(1)), t0).await;
    assert_eq!(
        written,
        vec![m1.clone(), connect_reply_ext("c2", advice(), ack(2))]
    );

    publish(&engine, "/chat", json!(2));
    let written = browser.send(connect_ext(&a, "c3", ack(2)), t0).await;
    assert_eq!(
        written,
        vec![
            delivery("/chat", json!(2)),
            connect_reply_ext("c3", advice(), ack(3))
        ]
    );

    // Batch 3 was lost: the client acknowledges 2 only. Batch 3 comes
    // back first, then what is new.
    publish(&engine, "/chat", json!(3));
    let written = browser.send(connect_ext(&a, "c4", ack(2)), t0).await;
    assert_eq!(
        written,
        vec![
            delivery("/chat", json!(2)),
            delivery("/chat", json!(3)),
            connect_reply_ext("c4", advice(), ack(4)),
        ]
    );

    // Everything acknowledged: nothing to re-send, the connect is held,
    // and its (empty) batch is numbered too.
    let (mut held, status, written) = browser.hold(connect_ext(&a, "c5", ack(4)), t0).await;
    assert_eq!((status, written), (waiting(t0 + ms(TIMEOUT)), vec![]));
    assert_eq!(
        poll(&mut held, t0 + ms(TIMEOUT)),
        (
            Status::Done,
            vec![connect_reply_ext("c5", advice(), ack(5))]
        )
    );
}

#[tokio::test(start_paused = true)]
async fn ack_on_websocket_writes_deliveries_only_with_a_connect_reply() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut socket = Socket::open(&engine);
    let (a, reply) = socket.handshake(json!({"ack": true}), t0).await;
    assert_eq!(reply["ext"], json!({"ack": true}));
    let ack = |n: u64| json!({"ack": n});
    let advice = || retry(INTERVAL, TIMEOUT);

    let (_, written) = socket.frame(ws_connect(&a, "c1"), t0).await;
    assert_eq!(written, vec![connect_reply_ext("c1", advice(), ack(1))]);
    socket.subscribe(&a, "/chat", t0).await;

    let (status, written) = socket.frame(ws_connect_ext(&a, "c2", ack(1)), t0).await;
    assert_eq!((status, written), (waiting(t0 + ms(TIMEOUT)), vec![]));

    // A due delivery answers the held connect.
    publish(&engine, "/chat", json!(1));
    assert_eq!(
        socket.poll(t0 + ms(10)),
        (
            Status::Waiting { until: None },
            vec![
                delivery("/chat", json!(1)),
                connect_reply_ext("c2", advice(), ack(2))
            ]
        )
    );

    // No connect held: the delivery waits, it is never written alone.
    publish(&engine, "/chat", json!(2));
    assert_eq!(
        socket.poll(t0 + ms(20)),
        (Status::Waiting { until: None }, vec![])
    );

    // The next connect takes it. The transport polls right after a frame,
    // so what it sends is the frame's body then the poll's.
    let (_, mut written) = socket
        .frame(ws_connect_ext(&a, "c3", ack(2)), t0 + ms(30))
        .await;
    let (status, polled) = socket.poll(t0 + ms(30));
    written.extend(polled);
    assert_eq!(
        written,
        vec![
            delivery("/chat", json!(2)),
            connect_reply_ext("c3", advice(), ack(3))
        ]
    );
    assert_eq!(status, Status::Waiting { until: None });
}

/// A client that re-handshakes on its socket without disconnecting: the
/// new session's connect supersedes the old session's held one. The old
/// reply carries nothing, and what was queued for the old session stays in
/// its outbox (it is not taken and dropped on the way).
#[tokio::test(start_paused = true)]
async fn a_connect_of_another_session_on_the_socket_leaves_the_old_ones_deliveries_queued() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut socket = Socket::open(&engine);
    let (a, _) = socket.handshake(json!({"ack": true}), t0).await;
    let _ = socket.frame(ws_connect(&a, "c1"), t0).await;
    socket.subscribe(&a, "/chat", t0).await;
    let (status, _) = socket
        .frame(ws_connect_ext(&a, "c2", json!({"ack": 1})), t0)
        .await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));
    publish(&engine, "/chat", json!("for a"));

    let (b, _) = socket.handshake(json!({}), t0 + ms(5)).await;
    // B's first connect is answered at once; its second is held and
    // supersedes A's held connect on this socket.
    let _ = socket.frame(ws_connect(&b, "d1"), t0 + ms(5)).await;
    let (status, written) = socket.frame(ws_connect(&b, "d2"), t0 + ms(6)).await;
    assert_eq!(status, waiting(t0 + ms(6) + ms(TIMEOUT)));
    assert_eq!(
        order(&written),
        vec![entry("/meta/connect", Some("c2"))],
        "only the old connect answered (superseded): {written:?}"
    );
    assert!(
        !written.iter().any(|m| m["data"] == json!("for a")),
        "the old session's delivery is not written here: {written:?}"
    );
    let old = engine
        .node()
        .sessions()
        .get(&a)
        .expect("the old session lives on");
    assert!(old.has_deliveries(), "its delivery is still queued for it");
}

// WebSocket without ack.

#[tokio::test(start_paused = true)]
async fn websocket_writes_deliveries_alone_on_the_latest_connects_socket_only() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut first = Socket::open(&engine);
    let a = first.session("/chat", t0).await;
    let (status, _) = first.frame(ws_connect(&a, "c2"), t0).await;
    let deadline = t0 + ms(TIMEOUT);
    assert_eq!(status, waiting(deadline));

    // Written at once, alone: the connect stays held as a timer.
    publish(&engine, "/chat", json!(1));
    assert_eq!(
        first.poll(t0 + ms(100)),
        (waiting(deadline), vec![delivery("/chat", json!(1))])
    );
    assert!(first.machine.is_holding());

    // The client reconnects on a new socket (the first one is half-dead).
    let mut second = Socket::open(&engine);
    let (status, written) = second.frame(ws_connect(&a, "c3"), t0 + ms(200)).await;
    assert_eq!((status, written), (waiting(t0 + ms(200 + TIMEOUT)), vec![]));
    publish(&engine, "/chat", json!(2));

    // The old socket answers its superseded connect, without the delivery.
    assert_eq!(
        first.poll(t0 + ms(300)),
        (
            Status::Waiting { until: None },
            vec![connect_reply("c2", retry(INTERVAL, TIMEOUT))]
        )
    );
    assert_eq!(
        second.poll(t0 + ms(300)),
        (
            waiting(t0 + ms(200 + TIMEOUT)),
            vec![delivery("/chat", json!(2))]
        )
    );

    // From now on the old socket writes nothing.
    publish(&engine, "/chat", json!(3));
    assert_eq!(
        first.poll(t0 + ms(400)),
        (Status::Waiting { until: None }, vec![])
    );
    assert_eq!(
        second.poll(t0 + ms(400)),
        (
            waiting(t0 + ms(200 + TIMEOUT)),
            vec![delivery("/chat", json!(3))]
        )
    );
}

// Lazy channels.

fn lazy_config() -> Config {
    Config {
        lazy: vec![ChannelLazy {
            pattern: "/lazy/**".into(),
            max_lazy_timeout: Some(500),
        }],
        max_interval: 7_000,
        ..config()
    }
}

#[tokio::test(start_paused = true)]
async fn http_lazy_delivery_waits_for_its_deadline() {
    let engine = Engine::new(lazy_config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;
    browser.subscribe(&a, "/lazy/x", t0).await;
    browser.subscribe(&a, "/now", t0).await;

    let (mut held, status, _) = browser.hold(connect(&a, "c2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));

    // Published at 0 on the node's clock: due at 500.
    publish(&engine, "/lazy/x", json!("later"));
    assert_eq!(
        poll(&mut held, t0 + ms(10)),
        (waiting(t0 + ms(500)), vec![])
    );
    assert_eq!(
        poll(&mut held, t0 + ms(499)),
        (waiting(t0 + ms(500)), vec![])
    );
    // The advice is the configuration's `interval` and `timeout`; no
    // `maxInterval` is advised (the exact object pins that too).
    assert_eq!(
        poll(&mut held, t0 + ms(500)),
        (
            Status::Done,
            vec![
                delivery("/lazy/x", json!("later")),
                json!({"channel": "/meta/connect", "id": "c2", "successful": true,
                       "advice": {"reconnect": "retry", "interval": INTERVAL, "timeout": TIMEOUT}}),
            ]
        )
    );

    // A lazy delivery queued when the connect comes in is waited for too
    // (published at 0 on the node's clock again: due at 500).
    publish(&engine, "/lazy/x", json!("again"));
    let (mut held, status, written) = browser.hold(connect(&a, "c3"), t0 + ms(100)).await;
    assert_eq!((status, written), (waiting(t0 + ms(500)), vec![]));
    // An eager delivery ends the wait at once, and takes the lazy one along.
    publish(&engine, "/now", json!("eager"));
    assert_eq!(
        poll(&mut held, t0 + ms(200)),
        (
            Status::Done,
            vec![
                delivery("/lazy/x", json!("again")),
                delivery("/now", json!("eager")),
                connect_reply("c3", retry(INTERVAL, TIMEOUT)),
            ]
        )
    );
}

#[tokio::test(start_paused = true)]
async fn websocket_lazy_delivery_waits_for_its_deadline() {
    let engine = Engine::new(lazy_config());
    let t0 = epoch(&engine);
    let mut socket = Socket::open(&engine);
    let a = socket.session("/lazy/x", t0).await;
    let (status, _) = socket.frame(ws_connect(&a, "c2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));

    publish(&engine, "/lazy/x", json!("later"));
    assert_eq!(socket.poll(t0 + ms(499)), (waiting(t0 + ms(500)), vec![]));
    assert_eq!(
        socket.poll(t0 + ms(500)),
        (
            waiting(t0 + ms(TIMEOUT)),
            vec![delivery("/lazy/x", json!("later"))]
        )
    );
}

// Multiple clients of one browser.

#[tokio::test(start_paused = true)]
async fn a_browsers_second_held_connect_is_told_multiple_clients() {
    let engine = Engine::new(Config {
        multi_session_interval: 1_500,
        ..config()
    });
    let t0 = epoch(&engine);
    let mut tab1 = Browser::new(&engine);
    let a = tab1.session(t0).await;
    let mut tab2 = tab1.tab();
    assert!(tab2.cookie.is_some(), "the server issued a cookie");
    let b = tab2.session(t0).await;

    let (mut held, status, _) = tab1.hold(connect(&a, "a2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));

    let (_, status, written) = tab2.hold(connect(&b, "b2"), t0).await;
    assert_eq!(status, Status::Done);
    assert_eq!(
        written,
        vec![connect_reply(
            "b2",
            json!({"reconnect": "retry", "interval": 1_500, "timeout": TIMEOUT,
                   "multiple-clients": true})
        )]
    );

    // Another browser is not limited by this one.
    let mut other = Browser::new(&engine);
    let c = other.session(t0).await;
    let (_other_held, status, _) = other.hold(connect(&c, "x2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));

    // Once the first hold ends, the browser's slot is free again.
    assert_eq!(poll(&mut held, t0 + ms(TIMEOUT)).0, Status::Done);
    let (_, status, written) = tab2.hold(connect(&b, "b3"), t0 + ms(TIMEOUT)).await;
    assert_eq!((status, written), (waiting(t0 + ms(2 * TIMEOUT)), vec![]));
}

// Shutdown.

#[tokio::test(start_paused = true)]
async fn shutdown_answers_held_connects_with_retry() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;
    let (mut held, status, _) = browser.hold(connect(&a, "c2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));
    let mut socket = Socket::open(&engine);
    let b = socket.session("/chat", t0).await;
    let (status, _) = socket.frame(ws_connect(&b, "w2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));

    engine.node().shutdown().trigger();
    // Come back at once (interval 0), to whichever node is still up.
    assert_eq!(
        poll(&mut held, t0 + ms(10)),
        (Status::Done, vec![connect_reply("c2", retry(0, TIMEOUT))])
    );
    assert_eq!(
        socket.poll(t0 + ms(10)),
        (
            Status::Waiting { until: None },
            vec![connect_reply("w2", retry(0, TIMEOUT))]
        )
    );
    // After shutdown has begun, nothing is held any more.
    let (_, status, written) = browser.hold(connect(&a, "c3"), t0 + ms(20)).await;
    assert_eq!(status, Status::Done);
    assert_eq!(order(&written), vec![entry("/meta/connect", Some("c3"))]);
    let (status, written) = socket.frame(ws_connect(&b, "w3"), t0 + ms(20)).await;
    assert_eq!(status, Status::Waiting { until: None });
    assert_eq!(order(&written), vec![entry("/meta/connect", Some("w3"))]);
}

#[tokio::test(start_paused = true)]
async fn connection_shutdown_answers_held_connects_with_retry() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;
    let (mut held, _, _) = browser.hold(connect(&a, "c2"), t0).await;
    let mut socket = Socket::open(&engine);
    let b = socket.session("/chat", t0).await;
    socket.frame(ws_connect(&b, "w2"), t0).await;

    assert_eq!(
        write(|body| held.shutdown(t0 + ms(10), body)),
        (Status::Done, vec![connect_reply("c2", retry(0, TIMEOUT))])
    );
    assert_eq!(
        write(|body| socket.machine.shutdown(t0 + ms(10), body)),
        (
            Status::Waiting { until: None },
            vec![connect_reply("w2", retry(0, TIMEOUT))]
        )
    );
    // Nothing held: nothing written.
    assert_eq!(
        write(|body| socket.machine.shutdown(t0 + ms(20), body)),
        (Status::Waiting { until: None }, vec![])
    );
}

// Closed sessions.

#[tokio::test(start_paused = true)]
async fn http_disconnect_answers_the_held_connect_with_reconnect_none() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;
    browser.subscribe(&a, "/chat", t0).await;
    let (mut held, status, _) = browser.hold(connect(&a, "c2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));

    // Queued but not yet written when the disconnect comes in: it dies
    // with the session, on neither response.
    publish(&engine, "/chat", json!("too late"));
    let written = browser
        .send(
            json!([{"channel": "/meta/disconnect", "id": "d", "clientId": a}]),
            t0 + ms(5),
        )
        .await;
    assert_eq!(
        written,
        vec![json!({"channel": "/meta/disconnect", "id": "d", "successful": true})]
    );
    assert_eq!(
        poll(&mut held, t0 + ms(10)),
        (
            Status::Done,
            vec![connect_reply("c2", json!({"reconnect": "none"}))]
        )
    );
}

/// Regression: a WebSocket kept writing the queued deliveries of its
/// session after the session was closed (on the disconnect reply's frame,
/// or alone on the next poll), where long-polling drops them.
#[tokio::test(start_paused = true)]
async fn websocket_disconnect_answers_the_held_connect_without_deliveries() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut socket = Socket::open(&engine);
    let a = socket.session("/chat", t0).await;
    let (status, _) = socket.frame(ws_connect(&a, "c2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));

    publish(&engine, "/chat", json!("too late"));
    let (_, written) = socket
        .frame(
            json!([{"channel": "/meta/disconnect", "id": "d", "clientId": a}]),
            t0 + ms(5),
        )
        .await;
    assert_eq!(
        written,
        vec![json!({"channel": "/meta/disconnect", "id": "d", "successful": true})]
    );
    assert_eq!(
        socket.poll(t0 + ms(10)),
        (
            Status::Waiting { until: None },
            vec![connect_reply("c2", json!({"reconnect": "none"}))]
        )
    );
    assert_eq!(
        socket.poll(t0 + ms(20)),
        (Status::Waiting { until: None }, vec![])
    );
}

/// The same end, when the session is removed by the server (as the
/// sweeper or an overflow would) while its socket waits.
#[tokio::test(start_paused = true)]
async fn websocket_session_removed_by_the_server_writes_nothing_more() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut socket = Socket::open(&engine);
    let a = socket.session("/chat", t0).await;
    let (status, _) = socket.frame(ws_connect(&a, "c2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));

    publish(&engine, "/chat", json!("too late"));
    let session = engine.node().sessions().get(&a).unwrap();
    engine.node().remove_session(
        &session,
        halley_server::state::listeners::SessionEnd::Expired,
    );
    assert_eq!(
        socket.poll(t0 + ms(10)),
        (
            Status::Waiting { until: None },
            vec![connect_reply("c2", json!({"reconnect": "none"}))]
        )
    );
}

// Timesync.

#[tokio::test(start_paused = true)]
async fn timesync_counts_the_time_a_connect_was_held() {
    let engine = Engine::new(config());
    let t0 = epoch(&engine);
    let mut browser = Browser::new(&engine);
    let a = browser.session(t0).await;
    let ts = engine.node().sessions().clock().wall_ms();
    let tc = ts - 40;
    // The client asks for at most 750 ms of holding: answered at that deadline.
    let batch = json!([{"channel": "/meta/connect", "id": "c2", "clientId": a,
                        "connectionType": "long-polling", "advice": {"timeout": 750},
                        "ext": {"timesync": {"tc": tc, "l": 5, "o": 3}}}]);
    let (mut held, status, _) = browser.hold(batch, t0).await;
    assert_eq!(status, waiting(t0 + ms(750)));

    // The reply's times are the node's clock: move it (paused, no waiting).
    tokio::time::advance(ms(750)).await;
    assert_eq!(Instant::now(), t0 + ms(750));
    assert_eq!(
        poll(&mut held, Instant::now()),
        (
            Status::Done,
            vec![connect_reply_ext(
                "c2",
                retry(INTERVAL, TIMEOUT),
                json!({"timesync": {"tc": tc, "ts": ts, "p": 750, "a": tc + 3 + 5 - ts}})
            )]
        )
    );
}

// The extension pipeline, at the engine level.

/// An application's extension: refuses publishes to `/forbidden`, stamps
/// the replies to meta messages.
struct Censor;

impl Extension for Censor {
    fn incoming(&self, message: &mut Message, _: &Context<'_>) -> Result<(), BayeuxError> {
        if message.channel.as_deref() == Some("/forbidden") {
            return Err(BayeuxError::MESSAGE_DELETED);
        }
        Ok(())
    }

    fn outgoing(&self, reply: &mut Reply, _: &Context<'_>, ext: &mut ReplyExt) {
        if reply.channel.starts_with("/meta/") {
            ext.insert("censor", json!("v1"));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_application_extension_refuses_a_publish_and_stamps_meta_replies() {
    let engine = Engine::new(config());
    engine.node().extensions().add(Arc::new(Censor));
    let t0 = epoch(&engine);
    let stamp = json!({"censor": "v1"});

    let mut subscriber = Browser::new(&engine);
    let (s, reply) = subscriber.handshake(json!({}), t0).await;
    assert_eq!(reply["ext"], stamp, "handshake reply stamped");
    let written = subscriber.send(connect(&s, "c1"), t0).await;
    assert_eq!(
        written,
        vec![connect_reply_ext(
            "c1",
            retry(INTERVAL, TIMEOUT),
            stamp.clone()
        )]
    );
    let written = subscriber
        .send(
            json!([{"channel": "/meta/subscribe", "id": "s", "clientId": s,
                    "subscription": ["/forbidden", "/allowed"]}]),
            t0,
        )
        .await;
    assert_eq!(written.len(), 1);
    assert_eq!(written[0]["successful"], true, "{written:?}");
    assert_eq!(written[0]["ext"], stamp);

    let mut publisher = Browser::new(&engine);
    let (p, _) = publisher.handshake(json!({}), t0).await;
    let (mut held, status, _) = subscriber.hold(connect(&s, "c2"), t0).await;
    assert_eq!(status, waiting(t0 + ms(TIMEOUT)));

    let written = publisher
        .send(
            json!([{"channel": "/forbidden", "id": "p1", "clientId": p, "data": "no"}]),
            t0,
        )
        .await;
    assert_eq!(
        written,
        vec![
            json!({"channel": "/forbidden", "id": "p1", "successful": false,
                    "error": "404::message_deleted"})
        ]
    );
    assert_eq!(
        poll(&mut held, t0 + ms(1)),
        (waiting(t0 + ms(TIMEOUT)), vec![]),
        "nothing delivered"
    );

    // Other traffic is unchanged: a publish reply is not a meta reply.
    let written = publisher
        .send(
            json!([{"channel": "/allowed", "id": "p2", "clientId": p, "data": "yes"}]),
            t0,
        )
        .await;
    assert_eq!(
        written,
        vec![json!({"channel": "/allowed", "id": "p2", "successful": true})]
    );
    assert_eq!(
        poll(&mut held, t0 + ms(2)),
        (
            Status::Done,
            vec![
                json!({"channel": "/allowed", "data": "yes", "id": "p2"}),
                connect_reply_ext("c2", retry(INTERVAL, TIMEOUT), stamp),
            ]
        )
    );
}
