//! Quality of service driven through the engine on tokio's paused clock:
//! max frequency (merge, per key, distinct, per user), bandwidth and the
//! publish rate, in virtual time. A `sleep` here is the scenario's time
//! passing (publishers' pace, time for held updates to go); the release
//! tasks are waited for with `common::until`, not with a sleep.

mod common;

use std::sync::Arc;
use std::time::Duration;

use halley_protocol::ChannelName;
use halley_server::config::ChannelQos;
use halley_server::engine::Engine;
use halley_server::state::grant::{Grant, SessionLimits};
use halley_server::state::throttle::Mode;
use halley_server::Config;
use serde_json::value::to_raw_value;
use serde_json::{json, Value};
use tokio::time::Instant;

/// A long-polling client without sockets.
struct Client {
    engine: Arc<Engine>,
    browser: Option<String>,
    client_id: String,
    /// The last batch received, with the ack extension.
    ack: Option<u64>,
}

impl Client {
    async fn handshake(engine: &Arc<Engine>, ack: bool) -> Client {
        let mut browser = None;
        let handshake = json!([{"channel":"/meta/handshake","version":"1.0",
            "supportedConnectionTypes":["long-polling"],"ext":{"ack":ack}}]);
        let replies = common::exchange(engine, &mut browser, &handshake).await;
        assert_eq!(replies[0]["successful"], true, "{replies:?}");
        let mut client = Client {
            engine: engine.clone(),
            browser,
            client_id: replies[0]["clientId"].as_str().unwrap().to_owned(),
            ack: ack.then_some(0),
        };
        client.connect().await; // the first connect is answered at once
        client
    }

    async fn send(&mut self, batch: Value) -> Vec<Value> {
        common::exchange(&self.engine, &mut self.browser, &batch).await
    }

    /// One (held) connect; returns what it carried besides its reply.
    async fn connect(&mut self) -> Vec<Value> {
        let mut connect = json!({"channel":"/meta/connect","clientId":self.client_id,
            "connectionType":"long-polling"});
        if let Some(batch) = self.ack {
            connect["ext"] = json!({ "ack": batch });
        }
        let mut replies = self.send(json!([connect])).await;
        let reply = replies.pop().unwrap();
        assert_eq!(reply["channel"], "/meta/connect", "{reply}");
        if self.ack.is_some() {
            self.ack = reply["ext"]["ack"].as_u64();
        }
        replies
    }

    async fn subscribe(&mut self, channel: &str) {
        let subscribe =
            json!([{"channel":"/meta/subscribe","clientId":self.client_id,"subscription":channel}]);
        let replies = self.send(subscribe).await;
        assert_eq!(replies.last().unwrap()["successful"], true, "{replies:?}");
    }

    fn set_limits(&self, limits: SessionLimits) {
        let session = self.engine.node().sessions().get(&self.client_id).unwrap();
        assert!(self.engine.node().sessions().set_grant(
            &session,
            Grant {
                user: None,
                limits,
                ..Grant::anonymous()
            }
        ));
    }

    /// Polls until a delivery on `/done` comes; returns the deliveries
    /// before it with when they arrived (ms after `start`).
    fn collect(mut self, start: Instant) -> tokio::task::JoinHandle<Vec<(u64, Value)>> {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                for delivery in self.connect().await {
                    if delivery["channel"] == "/done" {
                        return got;
                    }
                    got.push((start.elapsed().as_millis() as u64, delivery));
                }
            }
        })
    }
}

fn qos(pattern: &str, max_frequency: f64, mode: Mode, key: Option<&str>) -> ChannelQos {
    ChannelQos {
        pattern: pattern.into(),
        max_frequency,
        mode,
        key: key.map(Into::into),
    }
}

fn publish(engine: &Engine, channel: &str, data: Value) {
    let channel = ChannelName::parse(channel).unwrap();
    engine
        .node()
        .publish(&channel, &to_raw_value(&data).unwrap(), None, None);
}

/// Publishes on `/done` after `settle`, which ends a [`Client::collect`].
/// `settle` is virtual time for the held updates to be released before the
/// sentinel (which is not throttled) is queued behind them.
async fn done(engine: &Engine, settle: Duration) {
    tokio::time::sleep(settle).await;
    publish(engine, "/done", json!(null));
}

fn data(got: &[(u64, Value)]) -> Vec<Value> {
    got.iter().map(|(_, d)| d["data"].clone()).collect()
}

/// 1,000 updates over one second on a merge channel capped at 10/s: about
/// ten deliveries, the last of them the latest value.
async fn merge_scenario(ack: bool) {
    let engine = Engine::new(Config {
        qos: vec![qos("/prices/*", 10.0, Mode::Merge, None)],
        ..Config::default()
    });
    let mut subscriber = Client::handshake(&engine, ack).await;
    subscriber.subscribe("/prices/acme").await;
    subscriber.subscribe("/done").await;
    let start = Instant::now();
    let got = subscriber.collect(start);
    for n in 0..1_000 {
        publish(&engine, "/prices/acme", json!({ "n": n }));
        tokio::time::sleep(Duration::from_millis(1)).await; // the publisher's pace
    }
    done(&engine, Duration::from_millis(500)).await;
    let got = got.await.unwrap();
    let values = data(&got);
    assert!(
        (10..=12).contains(&values.len()),
        "about 10 deliveries in 1 s at 10/s, got {}: {values:?}",
        values.len()
    );
    assert_eq!(values[0], json!({"n": 0}), "the first goes at once");
    assert_eq!(
        values.last().unwrap(),
        &json!({"n": 999}),
        "ends with the latest"
    );
    let ns: Vec<i64> = values.iter().map(|v| v["n"].as_i64().unwrap()).collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in order: {ns:?}");
    let times: Vec<u64> = got.iter().map(|(t, _)| *t).collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] >= 99),
        "at least 100 ms apart: {times:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn merge_conflates_to_the_max_frequency_and_ends_with_the_latest() {
    merge_scenario(false).await;
}

#[tokio::test(start_paused = true)]
async fn merge_works_with_the_ack_extension() {
    merge_scenario(true).await;
}

#[tokio::test(start_paused = true)]
async fn merge_with_a_key_conflates_per_key_value() {
    let engine = Engine::new(Config {
        qos: vec![qos("/stocks", 2.0, Mode::Merge, Some("symbol"))],
        ..Config::default()
    });
    let mut subscriber = Client::handshake(&engine, false).await;
    subscriber.subscribe("/stocks").await;
    subscriber.subscribe("/done").await;
    let got = subscriber.collect(Instant::now());
    for n in 0..100 {
        for symbol in ["AAA", "BBB"] {
            publish(&engine, "/stocks", json!({ "symbol": symbol, "n": n }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // the publisher's pace
    }
    done(&engine, Duration::from_millis(1_000)).await;
    let values = data(&got.await.unwrap());
    for symbol in ["AAA", "BBB"] {
        let of: Vec<i64> = values
            .iter()
            .filter(|v| v["symbol"] == symbol)
            .map(|v| v["n"].as_i64().unwrap())
            .collect();
        assert!(
            (2..=4).contains(&of.len()),
            "{symbol}: about 2 per second over 1 s, got {of:?}"
        );
        assert_eq!(
            of.first(),
            Some(&0),
            "{symbol}: not starved by the other key"
        );
        assert_eq!(of.last(), Some(&99), "{symbol}: ends with its latest");
    }
}

#[tokio::test(start_paused = true)]
async fn distinct_delivers_every_update_in_order_at_the_rate() {
    let engine = Engine::new(Config {
        qos: vec![qos("/orders", 10.0, Mode::Distinct, None)],
        ..Config::default()
    });
    let mut subscriber = Client::handshake(&engine, false).await;
    subscriber.subscribe("/orders").await;
    subscriber.subscribe("/done").await;
    let start = Instant::now();
    let got = subscriber.collect(start);
    for n in 0..25 {
        publish(&engine, "/orders", json!(n));
    }
    done(&engine, Duration::from_millis(3_000)).await;
    let got = got.await.unwrap();
    assert_eq!(data(&got), (0..25).map(|n| json!(n)).collect::<Vec<_>>());
    let last = got.last().unwrap().0;
    assert!(
        (2_390..=2_500).contains(&last),
        "25 updates at 10/s: the last after 2.4 s, not {last} ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_users_granted_frequency_limits_every_channel_and_no_one_else() {
    let engine = Engine::new(Config::default());
    let mut limited = Client::handshake(&engine, false).await;
    limited.set_limits(SessionLimits {
        max_frequency: Some(5.0),
        ..SessionLimits::default()
    });
    let mut other = Client::handshake(&engine, false).await;
    for client in [&mut limited, &mut other] {
        client.subscribe("/chat/room").await;
        client.subscribe("/done").await;
    }
    let start = Instant::now();
    let limited = limited.collect(start);
    let other = other.collect(start);
    for n in 0..10 {
        publish(&engine, "/chat/room", json!(n));
    }
    done(&engine, Duration::from_millis(2_500)).await;
    let all: Vec<Value> = (0..10).map(|n| json!(n)).collect();
    let limited = limited.await.unwrap();
    assert_eq!(data(&limited), all, "a user limit alone is distinct");
    let last = limited.last().unwrap().0;
    assert!(
        (1_790..=1_900).contains(&last),
        "10 at 5/s: the last after 1.8 s, not {last} ms"
    );
    let other = other.await.unwrap();
    assert_eq!(data(&other), all);
    assert!(other.iter().all(|(t, _)| *t == 0), "unlimited: at once");
}

#[tokio::test(start_paused = true)]
async fn the_lower_of_rule_and_grant_wins_in_the_rules_mode() {
    let engine = Engine::new(Config {
        qos: vec![qos("/prices/*", 10.0, Mode::Merge, None)],
        ..Config::default()
    });
    let mut subscriber = Client::handshake(&engine, false).await;
    subscriber.set_limits(SessionLimits {
        max_frequency: Some(2.0),
        ..SessionLimits::default()
    });
    subscriber.subscribe("/prices/acme").await;
    subscriber.subscribe("/done").await;
    let got = subscriber.collect(Instant::now());
    for n in 0..100 {
        publish(&engine, "/prices/acme", json!(n));
        tokio::time::sleep(Duration::from_millis(10)).await; // the publisher's pace
    }
    done(&engine, Duration::from_millis(1_000)).await;
    let values = data(&got.await.unwrap());
    assert!((2..=3).contains(&values.len()), "2/s, merged: {values:?}");
    assert_eq!(values.last(), Some(&json!(99)));
}

#[tokio::test(start_paused = true)]
async fn a_channel_without_a_rule_is_not_throttled() {
    let engine = Engine::new(Config {
        qos: vec![qos("/prices/**", 1.0, Mode::Merge, None)],
        ..Config::default()
    });
    let mut subscriber = Client::handshake(&engine, false).await;
    subscriber.subscribe("/chat/room").await;
    subscriber.subscribe("/done").await;
    let got = subscriber.collect(Instant::now());
    for n in 0..100 {
        publish(&engine, "/chat/room", json!(n));
    }
    done(&engine, Duration::ZERO).await;
    let got = got.await.unwrap();
    assert_eq!(data(&got), (0..100).map(|n| json!(n)).collect::<Vec<_>>());
    assert!(got.iter().all(|(t, _)| *t == 0));
}

#[tokio::test(start_paused = true)]
async fn held_updates_end_with_their_session() {
    let engine = Engine::new(Config {
        qos: vec![qos("/slow", 0.1, Mode::Distinct, None)],
        ..Config::default()
    });
    let mut subscriber = Client::handshake(&engine, false).await;
    subscriber.subscribe("/slow").await;
    for n in 0..5 {
        publish(&engine, "/slow", json!(n));
    }
    let session = engine.node().sessions().get(&subscriber.client_id).unwrap();
    assert_eq!(session.throttled(), 4, "one sent, four held");
    let id = subscriber.client_id.clone();
    subscriber
        .send(json!([{"channel":"/meta/disconnect","clientId":id}]))
        .await;
    assert_eq!(session.throttled(), 0, "dropped with the session");
    // The close wakes the release task, which notices and ends: nothing
    // keeps the session alive (its next release is 10 s away: no time passes).
    common::until("no task to hold the session", || {
        Arc::strong_count(&session) == 1
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_the_release_tasks() {
    let engine = Engine::new(Config {
        qos: vec![qos("/slow", 0.1, Mode::Distinct, None)],
        ..Config::default()
    });
    let mut subscriber = Client::handshake(&engine, false).await;
    subscriber.subscribe("/slow").await;
    let session = engine.node().sessions().get(&subscriber.client_id).unwrap();
    let before = Arc::strong_count(&session);
    publish(&engine, "/slow", json!(1));
    publish(&engine, "/slow", json!(2));
    // The release task has run and waits for update 2's turn, 10 s away.
    common::run_ready_tasks().await;
    assert_eq!(
        Arc::strong_count(&session),
        before + 1,
        "a task holds updates"
    );
    engine.node().shutdown().trigger();
    common::until("the release task to end", || {
        Arc::strong_count(&session) == before
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn bandwidth_delays_deliveries_and_loses_none() {
    let engine = Engine::new(Config {
        max_bandwidth: Some(1_000),
        ..Config::default()
    });
    let mut subscriber = Client::handshake(&engine, false).await;
    subscriber.subscribe("/feed").await;
    subscriber.subscribe("/done").await;
    let start = Instant::now();
    let got = subscriber.collect(start);
    // 30 deliveries of ~110 bytes at 1,000 bytes/s.
    let text = "x".repeat(70);
    for n in 0..30 {
        publish(&engine, "/feed", json!({ "n": n, "text": text }));
    }
    done(&engine, Duration::from_millis(100)).await;
    let got = got.await.unwrap();
    let ns: Vec<i64> = data(&got)
        .iter()
        .map(|d| d["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..30).collect::<Vec<_>>(), "nothing lost, in order");
    // The bucket starts full (1,000 bytes), then refills at 1,000 bytes/s.
    let bytes: usize = got.iter().map(|(_, d)| d.to_string().len()).sum();
    let expected = (bytes as u64 - 1_000) * 1_000 / 1_000;
    let last = got.last().unwrap().0;
    assert!(
        last + 150 >= expected && last <= expected + 250,
        "{bytes} bytes at 1,000 bytes/s after a 1,000-byte burst: about {expected} ms, not {last} ms"
    );
    assert!(got[0].0 == 0, "the burst goes at once");
}

#[tokio::test(start_paused = true)]
async fn a_users_granted_bandwidth_applies_to_it_alone() {
    let engine = Engine::new(Config::default());
    let mut limited = Client::handshake(&engine, false).await;
    limited.set_limits(SessionLimits {
        max_bandwidth: Some(500),
        ..SessionLimits::default()
    });
    limited.subscribe("/feed").await;
    limited.subscribe("/done").await;
    let got = limited.collect(Instant::now());
    for n in 0..10 {
        publish(&engine, "/feed", json!({ "n": n, "text": "x".repeat(80) }));
    }
    done(&engine, Duration::ZERO).await;
    let got = got.await.unwrap();
    assert_eq!(got.len(), 10);
    assert!(got.last().unwrap().0 >= 1_000, "{got:?}");
}

#[tokio::test(start_paused = true)]
async fn over_the_publish_rate_a_publish_is_refused_then_allowed_again() {
    let engine = Engine::new(Config {
        max_publish_rate: Some(5.0),
        ..Config::default()
    });
    let mut subscriber = Client::handshake(&engine, false).await;
    subscriber.subscribe("/chat/room").await;
    let mut publisher = Client::handshake(&engine, false).await;
    let id = publisher.client_id.clone();
    let batch: Vec<Value> = (0..8)
        .map(|n| json!({"channel":"/chat/room","clientId":id,"data":n,"id":n.to_string()}))
        .collect();
    let replies = publisher.send(Value::Array(batch)).await;
    let ok = replies.iter().filter(|r| r["successful"] == true).count();
    assert_eq!(ok, 5, "a burst of one second's worth: {replies:?}");
    let refused: Vec<&Value> = replies
        .iter()
        .filter(|r| r["successful"] == false)
        .collect();
    assert_eq!(refused.len(), 3);
    assert_eq!(refused[0]["error"], "429::publish_rate_exceeded");
    assert_eq!(refused[0]["channel"], "/chat/room");
    assert_eq!(refused[0]["id"], "5");

    let delivered = data(
        &subscriber
            .connect()
            .await
            .into_iter()
            .map(|d| (0, d))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        delivered,
        (0..5).map(|n| json!(n)).collect::<Vec<_>>(),
        "refused ones are not delivered"
    );

    tokio::time::sleep(Duration::from_millis(200)).await; // one token's refill at 5/s
    let replies = publisher
        .send(json!([{"channel":"/chat/room","clientId":id,"data":"again"}]))
        .await;
    assert_eq!(
        replies[0]["successful"], true,
        "the bucket refilled: {replies:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_users_granted_publish_rate_wins_over_the_default() {
    let engine = Engine::new(Config {
        max_publish_rate: Some(100.0),
        ..Config::default()
    });
    let mut publisher = Client::handshake(&engine, false).await;
    publisher.set_limits(SessionLimits {
        max_publish_rate: Some(1.0),
        ..SessionLimits::default()
    });
    let id = publisher.client_id.clone();
    let replies = publisher
        .send(json!([{"channel":"/a","clientId":id,"data":1},{"channel":"/a","clientId":id,"data":2}]))
        .await;
    assert_eq!(replies[0]["successful"], true);
    assert_eq!(replies[1]["error"], "429::publish_rate_exceeded");
}
