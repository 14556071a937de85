//! Lazy channels end to end, over both transports: a lazy message waits
//! (it does not wake the client) until its `max-lazy-timeout`, or until an
//! eager message flushes it along.

mod common;

use std::time::{Duration, Instant};

use common::{start_with_config, within, Server};
use halley_client::{Client, Deliveries};
use serde_json::json;

/// A server whose `/lazy/**` channels wait up to 1.5 s, and `/later/**`
/// ones up to 60 s (longer than any wait in a test: a message on it that
/// arrives was carried along by something else).
fn server() -> Server {
    start_with_config(
        "[[lazy]]\npattern = \"/lazy/**\"\nmax-lazy-timeout = 1500\n\
         [[lazy]]\npattern = \"/later/**\"\nmax-lazy-timeout = 60000\n",
        &["--timeout", "20000"],
    )
}

async fn lazy_waits_then_arrives(
    subscriber: Client,
    mut deliveries: Deliveries,
    publisher: Client,
) {
    subscriber.subscribe("/lazy/ticks").await.unwrap();
    subscriber.subscribe("/later/ticks").await.unwrap();
    subscriber.subscribe("/news").await.unwrap();
    // Whether or not the subscriber's connect is held yet, a lazy message
    // is not due before its timeout: it waits either way.

    let sent = Instant::now();
    publisher
        .publish("/lazy/ticks", &json!({"n": 1}))
        .await
        .unwrap();
    let first = within(30.0, "the lazy message", deliveries.recv())
        .await
        .unwrap();
    let waited = sent.elapsed();
    assert_eq!(first.data_value(), json!({"n": 1}));
    assert!(
        waited >= Duration::from_millis(1_000),
        "a lazy message waits for its timeout (1.5 s); it came after {waited:?}"
    );

    // An eager message carries a waiting lazy one along at once: a message
    // that would wait 60 s arrives, with the eager one, within 30 s.
    publisher
        .publish("/later/ticks", &json!({"n": 2}))
        .await
        .unwrap();
    publisher.publish("/news", &json!({"n": 3})).await.unwrap();
    let a = within(30.0, "the lazy message", deliveries.recv())
        .await
        .unwrap();
    let b = within(30.0, "the eager message", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(
        [a.data_value(), b.data_value()],
        [json!({"n": 2}), json!({"n": 3})]
    );
}

#[tokio::test]
async fn lazy_messages_over_long_polling() {
    let server = server();
    let (subscriber, deliveries) = server.connected_client().await;
    let (publisher, _) = server.connected_client().await;
    lazy_waits_then_arrives(subscriber, deliveries, publisher).await;
}

#[tokio::test]
async fn lazy_messages_over_websocket() {
    let server = server();
    let (subscriber, deliveries) = server.ws_connected_client().await;
    let (publisher, _) = server.connected_client().await;
    lazy_waits_then_arrives(subscriber, deliveries, publisher).await;
}
