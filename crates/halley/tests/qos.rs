//! Quality of service end to end, against the real binary: a publisher at
//! ~1,000 msg/s on a merge channel capped at 10 updates/s (over
//! long-polling, WebSocket, and with the ack extension), a WebSocket
//! subscriber paced by `--max-bandwidth`, and the publish rate limit over
//! HTTP.
//!
//! Rates are asserted in generous ranges: the machine running the tests may
//! be busy, and a late timer must not fail the suite. The exact behaviour is
//! checked on a paused clock in `halley-server/tests/qos.rs`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    eventually, exchange, first_connect, handshake, reply_with_id, start_with_config, within,
    Server,
};
use halley_client::{Client, Deliveries};
use serde_json::{json, Value};

/// A server whose `/prices/*` channels are capped at 10 updates/s, merged.
fn server(flags: &[&str]) -> Server {
    start_with_config(
        "[[qos]]\npattern = \"/prices/*\"\nmax-frequency = 10\nmode = \"merge\"\n",
        flags,
    )
}

/// A raw long-polling publisher: its browser and clientId.
async fn publisher(server: &Server) -> (Client, String) {
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    (browser, client_id)
}

/// Publishes `{"n": 0..}` on `/prices/acme` at ~1,000 msg/s (batches of 10
/// every 10 ms) for `duration`; returns the last `n` sent.
async fn publish_fast(browser: &Client, client_id: &str, duration: Duration) -> u64 {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0u64;
    while started.elapsed() < duration {
        ticks.tick().await;
        let batch: Vec<Value> = (0..10)
            .map(|i| json!({"channel":"/prices/acme","clientId":client_id,"data":{"n": n + i}}))
            .collect();
        let replies = exchange(browser, &Value::Array(batch)).await;
        assert!(
            replies.iter().all(|r| r["successful"] == true),
            "{replies:?}"
        );
        n += 10;
    }
    n - 1
}

async fn merge_scenario(server: &Server, subscriber: Client, mut deliveries: Deliveries) {
    subscriber.subscribe("/prices/acme").await.unwrap();
    subscriber.subscribe("/done").await.unwrap();
    let (browser, client_id) = publisher(server).await;

    let got = Arc::new(Mutex::new(Vec::new()));
    let collector = tokio::spawn({
        let got = got.clone();
        async move {
            while let Some(delivery) = deliveries.recv().await {
                if delivery.channel == "/done" {
                    break;
                }
                got.lock().unwrap().push(delivery.data_value());
            }
        }
    });
    let sent = Instant::now();
    let last = publish_fast(&browser, &client_id, Duration::from_secs(2)).await;
    // The held latest value is flushed when its interval ends: wait for it.
    eventually(30.0, "the latest value", || {
        got.lock().unwrap().last() == Some(&json!({ "n": last }))
    })
    .await;
    let elapsed = sent.elapsed();
    let replies = exchange(
        &browser,
        &json!([{"channel":"/done","clientId":client_id,"data":true}]),
    )
    .await;
    assert_eq!(replies[0]["successful"], true, "{replies:?}");
    within(30.0, "the deliveries and /done", collector)
        .await
        .unwrap();
    let got = got.lock().unwrap().clone();

    // At most one update per 100 ms of the time it took (plus the first,
    // and one for timer slack), however long that was; at least 12 of the
    // ~20 intervals of the 2 s of publishing.
    let cap = (elapsed.as_secs_f64() * 10.0).ceil() as usize + 2;
    assert!(
        (12..=cap).contains(&got.len()),
        "{} updates published, {elapsed:?} until the last arrived, capped at 10/s: \
         12 to {cap} expected, got {}",
        last + 1,
        got.len()
    );
    assert_eq!(
        got.last().unwrap(),
        &json!({ "n": last }),
        "the subscriber ends with the latest value"
    );
    let ns: Vec<u64> = got.iter().map(|d| d["n"].as_u64().unwrap()).collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in order: {ns:?}");
}

#[tokio::test]
async fn merge_caps_a_fast_feed_over_long_polling() {
    let server = server(&[]);
    let (subscriber, deliveries) = server.connected_client().await;
    merge_scenario(&server, subscriber, deliveries).await;
}

#[tokio::test]
async fn merge_caps_a_fast_feed_over_websocket() {
    let server = server(&[]);
    let (subscriber, deliveries) = server.ws_connected_client().await;
    merge_scenario(&server, subscriber, deliveries).await;
}

#[tokio::test]
async fn merge_caps_a_fast_feed_with_the_ack_extension() {
    let server = server(&[]);
    let subscriber = Client::builder(&server.url)
        .backoff(Duration::from_millis(100), Duration::from_millis(500))
        .ack(true)
        .build()
        .unwrap();
    let deliveries = subscriber.take_deliveries().unwrap();
    let info = subscriber.handshake().await.unwrap();
    assert!(info.ack, "the server accepts the ack extension");
    merge_scenario(&server, subscriber, deliveries).await;
}

#[tokio::test]
async fn over_the_publish_rate_publishes_are_refused_with_429_then_allowed_again() {
    let server = Server::start(&["--max-publish-rate", "5"]);
    let (subscriber, mut deliveries) = server.connected_client().await;
    subscriber.subscribe("/chat/room").await.unwrap();
    let (browser, client_id) = publisher(&server).await;

    let batch: Vec<Value> = (0..8)
        .map(|n| json!({"id": n.to_string(), "channel":"/chat/room","clientId":client_id,"data":n}))
        .collect();
    let replies = exchange(&browser, &Value::Array(batch)).await;
    let refused: Vec<&Value> = (0..8)
        .map(|n| reply_with_id(&replies, &n.to_string()))
        .filter(|r| r["successful"] == false)
        .collect();
    assert_eq!(refused.len(), 3, "a burst of 5 passes: {replies:?}");
    assert_eq!(
        *refused[0],
        json!({"id":"5","channel":"/chat/room","successful":false,
               "error":"429::publish_rate_exceeded"}),
    );

    let mut got = Vec::new();
    while got.len() < 5 {
        let delivery = within(30.0, "the accepted publishes", deliveries.recv())
            .await
            .unwrap();
        got.push(delivery.data_value());
    }
    assert_eq!(got, (0..5).map(|n| json!(n)).collect::<Vec<_>>());

    // The session goes on: once the bucket refills, publishing works again.
    // Try every 250 ms (slower than the 5/s refill) until it does.
    within(30.0, "a publish accepted again", async {
        loop {
            let replies = exchange(
                &browser,
                &json!([{"id":"later","channel":"/chat/room","clientId":client_id,"data":"later"}]),
            )
            .await;
            let reply = reply_with_id(&replies, "later");
            if reply["successful"] == true {
                break;
            }
            assert_eq!(reply["error"], "429::publish_rate_exceeded", "{reply}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let delivery = within(30.0, "the later publish", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.data_value(), json!("later"));
}

#[tokio::test]
async fn bandwidth_paces_a_websocket_subscriber_and_loses_nothing() {
    let server = Server::start(&["--max-bandwidth", "2000"]);
    let (subscriber, mut deliveries) = server.ws_connected_client().await;
    subscriber.subscribe("/feed").await.unwrap();
    let (browser, client_id) = publisher(&server).await;
    // 40 deliveries of ~200 bytes: ~8,000 bytes, 2,000 at once then 2,000/s.
    let text = "x".repeat(150);
    let batch: Vec<Value> = (0..40)
        .map(|n| json!({"channel":"/feed","clientId":client_id,"data":{"n": n, "text": text}}))
        .collect();
    let sent = Instant::now();
    exchange(&browser, &Value::Array(batch)).await;
    let mut ns = Vec::new();
    while ns.len() < 40 {
        let delivery = within(30.0, "all 40 deliveries", deliveries.recv())
            .await
            .unwrap();
        ns.push(delivery.data_value()["n"].as_u64().unwrap());
    }
    let elapsed = sent.elapsed();
    assert_eq!(ns, (0..40).collect::<Vec<_>>(), "nothing lost, in order");
    assert!(
        elapsed >= Duration::from_millis(2_000),
        "~6,000 bytes over the burst at 2,000 bytes/s take ~3 s, not {elapsed:?}"
    );
}
