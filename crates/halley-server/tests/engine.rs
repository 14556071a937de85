//! The engine driven directly, without sockets, on tokio's paused clock:
//! timing rules (held connects, expiry) are checked in exact virtual time.
//! A `sleep` here is the scenario's time passing; a spawned connect is
//! waited for with [`until_held`], not with a sleep.

mod common;

use std::sync::Arc;
use std::time::Duration;

use halley_server::engine::Engine;
use halley_server::Config;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// A socket-less transport: one batch in, the body the long-polling
/// transport would write (its own assembly code), as JSON.
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
        common::exchange(&self.engine, &mut self.browser, &batch).await
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

/// Waits, without virtual time passing, until the engine holds the connect
/// that `task` sent for `client_id`, or until `task` ended (a connect
/// answered at once, for the test's assertions to report).
async fn until_held<T>(engine: &Engine, client_id: &Option<String>, task: &JoinHandle<T>) {
    let session = engine
        .node()
        .sessions()
        .get(client_id.as_deref().unwrap())
        .unwrap();
    common::until("the connect to be held", || {
        session.is_holding() || task.is_finished()
    })
    .await;
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

    let subscriber_id = subscriber.client_id.clone();
    let held = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        (subscriber.connect().await, started.elapsed())
    });
    until_held(&engine, &subscriber_id, &held).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await; // held meanwhile
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
        async move { engine.node().run_sweeper().await }
    });
    let mut client = Client::new(&engine);
    client.handshake().await;
    client.subscribe("/a").await;
    // Silence, in virtual time: the sweeper runs every 100 ms meanwhile.
    tokio::time::sleep(Duration::from_millis(4_800)).await;
    assert_eq!(
        engine.node().sessions().len(),
        1,
        "still alive before interval + maxInterval"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        engine.node().sessions().len(),
        0,
        "expired after interval + maxInterval"
    );
    assert_eq!(
        engine.node().subscriptions().pattern_count(),
        0,
        "its subscriptions are gone"
    );
    let replies = client.connect().await;
    assert_eq!(replies[0]["error"], "402::session_unknown");
    assert_eq!(replies[0]["advice"]["reconnect"], "handshake");
    engine.node().shutdown().trigger();
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
        async move { engine.node().run_sweeper().await }
    });
    let mut client = Client::new(&engine);
    client.handshake().await;
    let replies = client.connect().await; // held for the whole minute
    assert_eq!(replies[0]["successful"], true);
    assert_eq!(engine.node().sessions().len(), 1);
    engine.node().shutdown().trigger();
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
    until_held(&engine, &id, &held).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // held meanwhile
    let mut again = Client::new(&engine);
    again.client_id = id.clone();
    again.browser = browser;
    let newer = tokio::spawn(async move { again.connect().await });
    let (replies, waited) = held.await.unwrap();
    assert_eq!(waited, Duration::from_millis(300));
    assert_eq!(replies[0]["successful"], true);
    // The ended connect no longer counts as holding: this is the newer one.
    until_held(&engine, &id, &newer).await;
    engine.node().shutdown().trigger();
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
    let id = client.client_id.clone();
    let held = tokio::spawn(async move { client.connect().await });
    until_held(&engine, &id, &held).await;
    engine.node().shutdown().trigger();
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
        .node()
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

#[tokio::test(start_paused = true)]
async fn ack_extension_numbers_batches_and_resends_what_was_not_acknowledged() {
    let engine = engine(Config::default());
    let mut client = Client::new(&engine);
    let replies = client
        .send(json!([{"channel":"/meta/handshake","version":"1.0",
            "supportedConnectionTypes":["long-polling"],"ext":{"ack":true}}]))
        .await;
    assert_eq!(
        replies[0]["ext"]["ack"], true,
        "ack negotiated: {replies:?}"
    );
    client.client_id = Some(replies[0]["clientId"].as_str().unwrap().to_owned());
    let id = client.client_id.clone();
    let first = client
        .send(json!([{"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":0}}]))
        .await;
    assert_eq!(
        first[0]["ext"]["ack"], 1,
        "every connect reply is a numbered batch"
    );
    client.subscribe("/a").await;

    // A publish reply does not carry the delivery: only connect replies do.
    let replies = client
        .send(json!([{"channel":"/a","clientId":id,"data":1}]))
        .await;
    assert_eq!(
        replies.len(),
        1,
        "no piggybacked delivery with ack: {replies:?}"
    );
    let batch2 = client
        .send(json!([{"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","ext":{"ack":1}}]))
        .await;
    assert_eq!(batch2[0]["data"], 1);
    assert_eq!(batch2[1]["ext"]["ack"], 2);

    // The reply with batch 2 is "lost": the client acknowledges only 1.
    client
        .send(json!([{"channel":"/a","clientId":id,"data":2}]))
        .await;
    let again = client
        .send(json!([{"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","ext":{"ack":1}}]))
        .await;
    let data: Vec<&Value> = again
        .iter()
        .filter(|m| m["channel"] == "/a")
        .map(|m| &m["data"])
        .collect();
    assert_eq!(
        data,
        [&json!(1), &json!(2)],
        "batch 2 re-sent first, then the new message"
    );
    assert_eq!(again.last().unwrap()["ext"]["ack"], 3);

    // Acknowledging 3 empties the unacknowledged store: nothing comes back.
    let session = engine
        .node()
        .sessions()
        .get(id.as_deref().unwrap())
        .unwrap();
    let connect_id = id.clone();
    let held = tokio::spawn(async move {
        client
            .send(json!([{"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","ext":{"ack":3}}]))
            .await
    });
    until_held(&engine, &connect_id, &held).await;
    assert!(!session.has_deliveries());
    engine.node().shutdown().trigger();
    let last = held.await.unwrap();
    assert_eq!(last.len(), 1, "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn timesync_replies_carry_tc_ts_p_and_a() {
    let engine = engine(Config::default());
    let mut client = Client::new(&engine);
    let replies = client
        .send(json!([{"channel":"/meta/handshake","version":"1.0",
            "supportedConnectionTypes":["long-polling"],"ext":{"timesync":{"tc":1000,"l":10,"o":0}}}]))
        .await;
    let timesync = &replies[0]["ext"]["timesync"];
    assert_eq!(timesync["tc"], 1000);
    let ts = timesync["ts"].as_i64().unwrap();
    assert!(ts > 1_700_000_000_000, "server wall clock in ms: {ts}");
    assert_eq!(timesync["a"].as_i64().unwrap(), 1000 + 10 - ts);
    assert!(timesync["p"].as_i64().unwrap() >= 0);
}

#[tokio::test(start_paused = true)]
async fn overflow_policies_are_chosen_per_channel() {
    use halley_server::config::ChannelOverflow;
    use halley_server::state::outbox::OverflowPolicy;
    let engine = engine(Config {
        max_queue: 3,
        overflow: vec![
            ChannelOverflow {
                pattern: "/newest/**".into(),
                policy: OverflowPolicy::DropNewest,
            },
            ChannelOverflow {
                pattern: "/strict/*".into(),
                policy: OverflowPolicy::Disconnect,
            },
        ],
        ..Config::default()
    });
    let mut publisher = Client::new(&engine);
    publisher.handshake().await;
    let pid = publisher.client_id.clone();
    let publish = |channel: &str, n: i64| json!({"channel":channel,"clientId":pid,"data":n});

    let mut newest = Client::new(&engine);
    newest.handshake().await;
    newest.subscribe("/newest/x").await;
    publisher
        .send(Value::Array(
            (1..=5).map(|n| publish("/newest/x", n)).collect(),
        ))
        .await;
    let got: Vec<i64> = newest
        .connect()
        .await
        .iter()
        .filter_map(|m| m["data"].as_i64())
        .collect();
    assert_eq!(got, [1, 2, 3], "drop-newest keeps the first three");

    let mut strict = Client::new(&engine);
    strict.handshake().await;
    strict.subscribe("/strict/x").await;
    publisher
        .send(Value::Array(
            (1..=4).map(|n| publish("/strict/x", n)).collect(),
        ))
        .await;
    assert!(
        engine
            .node()
            .sessions()
            .get(strict.client_id.as_deref().unwrap())
            .is_none(),
        "the slow session was disconnected"
    );
    let replies = strict.connect().await;
    assert_eq!(replies[0]["error"], "402::session_unknown");
    assert_eq!(
        replies[0]["advice"]["reconnect"], "handshake",
        "told to come back"
    );
}

fn with_history(max_messages: usize) -> Config {
    Config {
        history: vec![halley_server::config::ChannelHistory {
            pattern: "/h/**".into(),
            max_messages: Some(max_messages),
            max_age_ms: None,
        }],
        max_queue: 100_000,
        ..Config::default()
    }
}

/// Publishes `range` on `channel` from `publisher`, one message each.
async fn publish_range(
    publisher: &mut Client,
    channel: &str,
    range: std::ops::RangeInclusive<i64>,
) {
    let id = publisher.client_id.clone();
    for n in range {
        publisher
            .send(json!([{"channel":channel,"clientId":id,"data":n}]))
            .await;
    }
}

/// The (data, replay id) of every delivery on `channel` in `messages`.
fn replayed(messages: &[Value], channel: &str) -> Vec<(i64, u64)> {
    messages
        .iter()
        .filter(|m| {
            m["channel"] == channel && m.get("data").is_some() && m.get("successful").is_none()
        })
        .map(|m| {
            (
                m["data"].as_i64().unwrap(),
                m["ext"]["replay"]["id"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn subscribe_with_replay(client: &mut Client, channel: &str, from: i64) -> Vec<Value> {
    let id = client.client_id.clone();
    client
        .send(
            json!([{"channel":"/meta/subscribe","clientId":id,"subscription":channel,
            "ext":{"replay":{channel: from}}}]),
        )
        .await
}

#[tokio::test(start_paused = true)]
async fn replay_from_a_last_seen_id_then_live() {
    let engine = engine(with_history(100));
    let mut publisher = Client::new(&engine);
    publisher.handshake().await;
    publish_range(&mut publisher, "/h/room", 1..=5).await;

    let mut late = Client::new(&engine);
    late.handshake().await;
    let replies = subscribe_with_replay(&mut late, "/h/room", 3).await;
    assert_eq!(replies.last().unwrap()["successful"], true);
    assert!(
        replies.last().unwrap()["ext"]["replay"]["gap"].is_null(),
        "no gap"
    );
    assert_eq!(
        replayed(&replies, "/h/room"),
        [(4, 4), (5, 5)],
        "retained after id 3, in order"
    );
    publish_range(&mut publisher, "/h/room", 6..=6).await;
    assert_eq!(
        replayed(&late.connect().await, "/h/room"),
        [(6, 6)],
        "then live, ids continue"
    );

    let mut all = Client::new(&engine);
    all.handshake().await;
    let replies = subscribe_with_replay(&mut all, "/h/room", -2).await;
    assert_eq!(
        replayed(&replies, "/h/room").len(),
        6,
        "-2: every retained message"
    );

    let mut new_only = Client::new(&engine);
    new_only.handshake().await;
    let replies = subscribe_with_replay(&mut new_only, "/h/room", -1).await;
    assert!(
        replayed(&replies, "/h/room").is_empty(),
        "-1: only new ones"
    );
}

#[tokio::test(start_paused = true)]
async fn replay_reports_a_gap_and_starts_at_the_oldest_retained() {
    let engine = engine(with_history(3));
    let mut publisher = Client::new(&engine);
    publisher.handshake().await;
    publish_range(&mut publisher, "/h/x", 1..=10).await;
    let mut late = Client::new(&engine);
    late.handshake().await;
    let replies = subscribe_with_replay(&mut late, "/h/x", 2).await;
    assert_eq!(replies.last().unwrap()["ext"]["replay"]["gap"], true);
    assert_eq!(replayed(&replies, "/h/x"), [(8, 8), (9, 9), (10, 10)]);
}

#[tokio::test(start_paused = true)]
async fn replay_ids_given_at_handshake_serve_later_subscribes() {
    // The Salesforce convention: the replay map travels in the handshake,
    // e.g. after a forced re-handshake, and applies to the next subscribe.
    let engine = engine(with_history(100));
    let mut publisher = Client::new(&engine);
    publisher.handshake().await;
    publish_range(&mut publisher, "/h/feed", 1..=4).await;
    let mut client = Client::new(&engine);
    let replies = client
        .send(json!([{"channel":"/meta/handshake","version":"1.0",
            "supportedConnectionTypes":["long-polling"],"ext":{"replay":{"/h/feed":2}}}]))
        .await;
    client.client_id = Some(replies[0]["clientId"].as_str().unwrap().to_owned());
    client.connect().await;
    let id = client.client_id.clone();
    let replies = client
        .send(json!([{"channel":"/meta/subscribe","clientId":id,"subscription":"/h/feed"}]))
        .await;
    assert_eq!(replayed(&replies, "/h/feed"), [(3, 3), (4, 4)]);
}

/// No gap and no duplicate at the seam: a subscriber catching up while a
/// publisher keeps publishing sees every message exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_seam_with_a_concurrent_publisher() {
    let engine = engine(with_history(10_000));
    let mut publisher = Client::new(&engine);
    publisher.handshake().await;
    publish_range(&mut publisher, "/h/seam", 1..=200).await;
    let publishing = tokio::spawn(async move {
        publish_range(&mut publisher, "/h/seam", 201..=2_000).await;
    });
    // A head start for the publisher, not synchronisation: whatever the
    // interleaving, every message must be seen exactly once.
    tokio::task::yield_now().await;
    let mut late = Client::new(&engine);
    late.handshake().await;
    let mut seen: Vec<i64> = replayed(
        &subscribe_with_replay(&mut late, "/h/seam", 100).await,
        "/h/seam",
    )
    .into_iter()
    .map(|(n, _)| n)
    .collect();
    publishing.await.unwrap();
    while seen.last() != Some(&2_000) {
        let more = late.connect().await;
        seen.extend(replayed(&more, "/h/seam").into_iter().map(|(n, _)| n));
    }
    assert_eq!(seen, (101..=2_000).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn lazy_messages_wait_for_a_flush_or_their_timeout() {
    let engine = engine(Config {
        lazy: vec![halley_server::config::ChannelLazy {
            pattern: "/lazy/**".into(),
            max_lazy_timeout: Some(3_000),
        }],
        ..Config::default()
    });
    let mut subscriber = Client::new(&engine);
    subscriber.handshake().await;
    subscriber.subscribe("/lazy/ticks").await;
    subscriber.subscribe("/news").await;
    let mut publisher = Client::new(&engine);
    publisher.handshake().await;
    let pid = publisher.client_id.clone();

    // A lazy message does not wake the held connect: it waits its timeout.
    let subscriber_id = subscriber.client_id.clone();
    let held = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let replies = subscriber.connect().await;
        (subscriber, replies, started.elapsed())
    });
    until_held(&engine, &subscriber_id, &held).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // held meanwhile
    publisher
        .send(json!([{"channel":"/lazy/ticks","clientId":pid,"data":1}]))
        .await;
    let (mut subscriber, replies, waited) = held.await.unwrap();
    assert_eq!(
        waited,
        Duration::from_millis(3_500),
        "held until the lazy timeout"
    );
    assert_eq!(replies[0]["data"], 1);

    // A lazy message rides along with the next eager one, at once.
    let held = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        (subscriber.connect().await, started.elapsed())
    });
    until_held(&engine, &subscriber_id, &held).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // held meanwhile
    publisher
        .send(json!([{"channel":"/lazy/ticks","clientId":pid,"data":2},{"channel":"/news","clientId":pid,"data":3}]))
        .await;
    let (replies, waited) = held.await.unwrap();
    assert_eq!(waited, Duration::from_millis(100));
    let data: Vec<i64> = replies.iter().filter_map(|m| m["data"].as_i64()).collect();
    assert_eq!(data, [2, 3]);
}
