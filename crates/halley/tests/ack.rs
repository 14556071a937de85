//! The ack extension end to end: a client with `ack(true)` behind a proxy
//! that keeps breaking its connections, while numbered messages are
//! published (directly, not through the proxy). Every message must arrive
//! exactly once and in order, over long-polling and over WebSocket.
//!
//! The proxy alternates two kinds of breakage. A plain *cut* drops every
//! connection at once. A *freeze* first stops forwarding for a while without
//! closing anything, so the server goes on answering the held
//! `/meta/connect` into a connection that will never deliver it (as a
//! network that drops packets does), and is then cut too: those replies are
//! lost for sure, and only the ack extension brings their deliveries back
//! (the control test shows that without it the same run loses messages).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, within, Proxy, Server};
use halley_client::{Client, State, TransportKind};
use serde_json::json;

const MESSAGES: u64 = 300;

/// What one run saw.
struct Run {
    received: Vec<u64>,
    breaks: usize,
    connect_failures: u64,
    rehandshakes: u64,
}

/// Publishes [`MESSAGES`] numbered messages while the proxy breaks the
/// subscriber's connections, then, the breakage over, a sentinel numbered
/// [`MESSAGES`]; collects what arrived before the sentinel. Deliveries come
/// in order, and a batch sent again comes before anything newer: whatever
/// would arrive twice has arrived by the time the sentinel does.
async fn publish_through_breakage(kind: TransportKind, ack: bool) -> Run {
    let server = Server::start(&["--timeout", "2000"]);
    let proxy = Arc::new(Proxy::start(&server).await);
    let client = Client::builder(&proxy.url)
        .transport(kind)
        .ack(ack)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .max_network_delay(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut deliveries = client.take_deliveries().unwrap();
    let info = within(30.0, "handshake", client.handshake()).await.unwrap();
    assert_eq!(info.ack, ack, "the server agrees to acks when asked");
    within(30.0, "subscribe", client.subscribe("/numbers"))
        .await
        .unwrap();
    eventually(30.0, "connected", || client.state() == State::Connected).await;
    let (publisher, _) = server.connected_client().await;

    let received = Arc::new(Mutex::new(Vec::new()));
    let collector = tokio::spawn({
        let received = received.clone();
        async move {
            while let Some(delivery) = deliveries.recv().await {
                let n = delivery.data_value()["n"].as_u64().expect("numbered");
                if n == MESSAGES {
                    return;
                }
                received.lock().unwrap().push(n);
            }
        }
    });

    let done = Arc::new(AtomicBool::new(false));
    let breaks = Arc::new(AtomicUsize::new(0));
    let breaker = tokio::spawn({
        let (proxy, done, breaks) = (proxy.clone(), done.clone(), breaks.clone());
        async move {
            let mut freeze = true;
            // The sleeps are the scenario (breakage at random moments), not
            // synchronisation.
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(60 + fastrand::u64(0..120))).await;
                if freeze {
                    // Replies written meanwhile go nowhere.
                    proxy.freeze();
                    tokio::time::sleep(Duration::from_millis(50 + fastrand::u64(0..100))).await;
                }
                proxy.cut();
                breaks.fetch_add(1, Ordering::SeqCst);
                freeze = !freeze;
            }
        }
    });

    for n in 0..MESSAGES {
        within(
            30.0,
            "publish",
            publisher.publish("/numbers", &json!({"n": n})),
        )
        .await
        .expect("publish");
        // Pacing, part of the scenario: the messages are spread over the
        // breakage rather than published before the first break.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done.store(true, Ordering::SeqCst);
    breaker.await.unwrap();

    // Everything (with acks) or whatever survived (without), then the
    // sentinel, published once nothing breaks any more.
    within(
        30.0,
        "publish the sentinel",
        publisher.publish("/numbers", &json!({ "n": MESSAGES })),
    )
    .await
    .expect("publish");
    within(60.0, "the sentinel", collector).await.unwrap();
    let stats = client.stats();
    let received = received.lock().unwrap().clone();
    Run {
        received,
        breaks: breaks.load(Ordering::SeqCst),
        connect_failures: stats.connect_failures,
        rehandshakes: stats.rehandshakes,
    }
}

async fn every_message_exactly_once_in_order(kind: TransportKind) {
    let run = publish_through_breakage(kind, true).await;
    eprintln!(
        "{kind:?} with acks: {} breaks, {} failed connects, {} of {MESSAGES} received",
        run.breaks,
        run.connect_failures,
        run.received.len()
    );
    assert!(
        run.breaks >= 8,
        "the proxy broke connections {} times",
        run.breaks
    );
    assert!(
        run.connect_failures >= 4,
        "the breaks hit the client's connects: {}",
        run.connect_failures
    );
    assert_eq!(run.rehandshakes, 0, "the session survived every break");
    let missing: Vec<u64> = (0..MESSAGES)
        .filter(|n| !run.received.contains(n))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(
        run.received,
        (0..MESSAGES).collect::<Vec<_>>(),
        "each exactly once, in order"
    );
}

#[tokio::test]
async fn ack_over_long_polling_delivers_every_message_once_through_broken_connections() {
    every_message_exactly_once_in_order(TransportKind::LongPolling).await;
}

#[tokio::test]
async fn ack_over_websocket_delivers_every_message_once_through_broken_connections() {
    every_message_exactly_once_in_order(TransportKind::WebSocket).await;
}

/// The control: the same breakage without the extension does lose messages,
/// so the tests above do test something.
#[tokio::test]
async fn without_ack_the_same_breakage_loses_messages() {
    let run = publish_through_breakage(TransportKind::WebSocket, false).await;
    eprintln!(
        "websocket without acks: {} breaks, {} of {MESSAGES} received",
        run.breaks,
        run.received.len()
    );
    assert!(
        (run.received.len() as u64) < MESSAGES,
        "frozen connections swallowed nothing?"
    );
}
