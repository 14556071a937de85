//! The engine driven directly, without sockets, on tokio's paused clock:
//! timing rules (held connects, expiry) are checked without sleeping.

use std::sync::Arc;
use std::time::Duration;

use halley_protocol::decode_batch;
use halley_server::engine::{Engine, Origin};
use halley_server::state::session::ConnectionType;
use halley_server::Config;
use serde_json::{json, Value};

/// A fake transport: one batch in, the body the long-polling transport
/// would write, as JSON.
struct Client {
    engine: Arc<Engine>,
    browser: Option<String>,
    client_id: Option<String>,
}

impl Client {
    fn new(engine: &Arc<Engine>) -> Self {
        Client {
            engine: engine.clone(),
            browser: None,
            client_id: None,
        }
    }

    async fn send(&mut self, batch: Value) -> Vec<Value> {
        let body = serde_json::to_vec(&batch).unwrap();
        let origin = Origin::http(ConnectionType::LongPolling, self.browser.clone());
        let mut exchange = self
            .engine
            .handle_batch(decode_batch(&body).unwrap(), origin)
            .await;
        if let Some(id) = &exchange.new_browser_id {
            self.browser = Some(id.clone());
        }
        let mut out: Vec<Value> = Vec::new();
        let connect = match exchange.connect.take() {
            Some(pending) => {
                if exchange.session.is_none() {
                    exchange.session = Some(pending.session().clone());
                }
                let holdable = exchange.batch_len == 1;
                let browser = exchange.browser_id().map(str::to_owned);
                Some(
                    self.engine
                        .complete_connect(pending, holdable, browser.as_deref())
                        .await,
                )
            }
            None => None,
        };
        for reply in &exchange.handshake_replies {
            out.push(serde_json::to_value(reply).unwrap());
        }
        if let Some(session) = &exchange.session {
            for delivery in session.take_deliveries() {
                out.push(serde_json::from_slice(&delivery).unwrap());
            }
        }
        for reply in exchange.replies.iter().chain(connect.iter()) {
            out.push(serde_json::to_value(reply).unwrap());
        }
        out
    }

    async fn handshake(&mut self) {
        let replies = self
            .send(json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]))
            .await;
        assert_eq!(replies[0]["successful"], true, "{replies:?}");
        self.client_id = Some(replies[0]["clientId"].as_str().unwrap().to_owned());
        let first = self.connect().await;
        assert_eq!(first.last().unwrap()["successful"], true);
    }

    async fn connect(&mut self) -> Vec<Value> {
        let id = self.client_id.clone();
        self.send(
            json!([{"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}]),
        )
        .await
    }

    async fn subscribe(&mut self, channel: &str) {
        let id = self.client_id.clone();
        let replies = self
            .send(json!([{"channel":"/meta/subscribe","clientId":id,"subscription":channel}]))
            .await;
        assert_eq!(replies.last().unwrap()["successful"], true, "{replies:?}");
    }
}

fn engine(config: Config) -> Arc<Engine> {
    Engine::new(config)
}

#[tokio::test(start_paused = true)]
async fn a_held_connect_is_answered_at_timeout_and_not_before() {
    let engine = engine(Config {
        timeout: 20_000,
        ..Config::default()
    });
    let mut client = Client::new(&engine);
    client.handshake().await;
    let started = tokio::time::Instant::now();
    let replies = client.connect().await;
    assert_eq!(started.elapsed(), Duration::from_millis(20_000));
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["channel"], "/meta/connect");
    assert_eq!(replies[0]["advice"]["reconnect"], "retry");
}

#[tokio::test(start_paused = true)]
async fn a_held_connect_returns_as_soon_as_a_message_is_queued() {
    let engine = engine(Config::default());
    let mut subscriber = Client::new(&engine);
    subscriber.handshake().await;
    subscriber.subscribe("/chat/room").await;
    let mut publisher = Client::new(&engine);
    publisher.handshake().await;

    let held = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        (subscriber.connect().await, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let id = publisher.client_id.clone();
    publisher
        .send(json!([{"channel":"/chat/room","clientId":id,"data":{"n":1}}]))
        .await;
    let (replies, waited) = held.await.unwrap();
    assert_eq!(waited, Duration::from_millis(1_500));
    assert_eq!(replies[0], json!({"channel":"/chat/room","data":{"n":1}}));
    assert_eq!(replies[1]["channel"], "/meta/connect", "connect reply last");
}

#[tokio::test(start_paused = true)]
async fn a_silent_session_expires_after_interval_plus_max_interval() {
    let engine = engine(Config {
        interval: 1_000,
        max_interval: 4_000,
        sweep_period: 100,
        ..Config::default()
    });
    let sweeper = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_sweeper().await }
    });
    let mut client = Client::new(&engine);
    client.handshake().await;
    client.subscribe("/a").await;
    tokio::time::sleep(Duration::from_millis(4_800)).await;
    assert_eq!(
        engine.sessions().len(),
        1,
        "still alive before interval + maxInterval"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        engine.sessions().len(),
        0,
        "expired after interval + maxInterval"
    );
    assert_eq!(
        engine.subscriptions().pattern_count(),
        0,
        "its subscriptions are gone"
    );
    let replies = client.connect().await;
    assert_eq!(replies[0]["error"], "402::session_unknown");
    assert_eq!(replies[0]["advice"]["reconnect"], "handshake");
    engine.shutdown().trigger();
    sweeper.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_session_holding_a_connect_does_not_expire() {
    let engine = engine(Config {
        timeout: 60_000,
        max_interval: 2_000,
        sweep_period: 100,
        ..Config::default()
    });
    let sweeper = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_sweeper().await }
    });
    let mut client = Client::new(&engine);
    client.handshake().await;
    let replies = client.connect().await; // held for the whole minute
    assert_eq!(replies[0]["successful"], true);
    assert_eq!(engine.sessions().len(), 1);
    engine.shutdown().trigger();
    sweeper.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_newer_connect_ends_the_held_one() {
    let engine = engine(Config::default());
    let mut client = Client::new(&engine);
    client.handshake().await;
    let (id, browser) = (client.client_id.clone(), client.browser.clone());
    let held = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let replies = client.connect().await;
        (replies, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = Client::new(&engine);
    again.client_id = id;
    again.browser = browser;
    let newer = tokio::spawn(async move { again.connect().await });
    let (replies, waited) = held.await.unwrap();
    assert_eq!(waited, Duration::from_millis(300));
    assert_eq!(replies[0]["successful"], true);
    engine.shutdown().trigger();
    let replies = newer.await.unwrap();
    assert_eq!(
        replies[0]["advice"]["reconnect"], "retry",
        "shutdown answers with retry"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_held_connects_with_retry() {
    let engine = engine(Config::default());
    let mut client = Client::new(&engine);
    client.handshake().await;
    let held = tokio::spawn(async move { client.connect().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    engine.shutdown().trigger();
    let replies = held.await.unwrap();
    assert_eq!(replies[0]["successful"], true);
    assert_eq!(replies[0]["advice"]["reconnect"], "retry");
    assert_eq!(replies[0]["advice"]["interval"], 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_session_costs_a_bounded_queue() {
    let engine = engine(Config {
        max_queue: 100,
        ..Config::default()
    });
    let mut slow = Client::new(&engine);
    slow.handshake().await;
    slow.subscribe("/feed").await;
    let mut publisher = Client::new(&engine);
    publisher.handshake().await;
    let id = publisher.client_id.clone();
    let batch: Vec<Value> = (0..1_000)
        .map(|n| json!({"channel":"/feed","clientId":id,"data":n}))
        .collect();
    publisher.send(Value::Array(batch)).await;
    let session = engine
        .sessions()
        .get(slow.client_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(session.dropped_deliveries(), 900);
    let replies = slow.connect().await;
    let data: Vec<i64> = replies
        .iter()
        .filter(|m| m["channel"] == "/feed")
        .map(|m| m["data"].as_i64().unwrap())
        .collect();
    assert_eq!(
        data,
        (900..1_000).collect::<Vec<_>>(),
        "the newest 100, in order"
    );
}
