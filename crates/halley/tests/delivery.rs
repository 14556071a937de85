//! Delivery: globs, batches, piggybacking, ordering, services.

mod common;

use common::*;
use serde_json::{json, Value};

/// Subscribes a fresh client to `patterns` (and the sentinel `/done`),
/// publishes to every channel of `published` then to `/done`, and returns
/// the channels the subscriber received (sentinel included).
async fn received_by(server: &Server, patterns: &[&str], published: &[&str]) -> Vec<String> {
    let (subscriber, mut deliveries) = server.connected_client().await;
    for pattern in patterns {
        subscriber.subscribe(pattern).await.unwrap();
    }
    subscriber.subscribe("/done").await.unwrap();
    let (publisher, _) = server.connected_client().await;
    for channel in published {
        publisher
            .publish(channel, &json!({"to": channel}))
            .await
            .unwrap();
    }
    publisher.publish("/done", &json!({})).await.unwrap();
    collect_until(&mut deliveries, "/done").await
}

#[tokio::test]
async fn single_star_matches_exactly_one_more_segment() {
    let server = Server::start(&[]);
    let got = received_by(
        &server,
        &["/g/*"],
        &["/g", "/g/a", "/g/a/b", "/ga/x", "/g/b", "/x/g/c"],
    )
    .await;
    assert_eq!(got, ["/g/a", "/g/b", "/done"]);
}

#[tokio::test]
async fn double_star_matches_one_or_more_segments() {
    let server = Server::start(&[]);
    let got = received_by(
        &server,
        &["/g/**"],
        &["/g", "/g/a", "/g/a/b", "/gx/a", "/g/a/b/c", "/x/g/a"],
    )
    .await;
    assert_eq!(got, ["/g/a", "/g/a/b", "/g/a/b/c", "/done"]);
}

#[tokio::test]
async fn root_globs_cover_broadcast_channels_only() {
    let server = Server::start(&[]);
    // `/done` matches `/*` too, and is delivered once.
    let got = received_by(&server, &["/*"], &["/x", "/x/y", "/service/echo"]).await;
    assert_eq!(got, ["/x", "/done"]);
    let got = received_by(&server, &["/**"], &["/x", "/x/y", "/service/echo"]).await;
    assert_eq!(got, ["/x", "/x/y", "/done"]);
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once() {
    let server = Server::start(&[]);
    let got = received_by(&server, &["/o/**", "/o/*", "/o/a"], &["/o/a", "/o/a/b"]).await;
    assert_eq!(got, ["/o/a", "/o/a/b", "/done"]);
}

#[tokio::test]
async fn a_batch_is_answered_in_order_with_the_connect_reply_last() {
    // Held connects wait 60 s: the batch's connect, answered within the 30 s
    // of `exchange`, was not held.
    let server = Server::start(&["--timeout", "60000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;

    let mut batch = vec![
        json!({"id": "b0", "channel": "/meta/subscribe", "clientId": client_id,
                                "subscription": "/batch"}),
    ];
    for n in 1..=50 {
        batch.push(
            json!({"id": format!("b{n}"), "channel": "/batch", "clientId": client_id,
                          "data": {"n": n}}),
        );
    }
    batch.push(
        json!({"id": "bc", "channel": "/meta/connect", "clientId": client_id,
                      "connectionType": "long-polling"}),
    );
    let messages = exchange(&browser, &Value::Array(batch)).await;

    let reply_ids: Vec<&str> = messages
        .iter()
        .filter(|m| m.get("successful").is_some())
        .map(|m| m["id"].as_str().unwrap_or("?"))
        .collect();
    let mut expected: Vec<String> = (0..=50).map(|n| format!("b{n}")).collect();
    expected.push("bc".into());
    assert_eq!(reply_ids, expected, "replies in request order");
    assert!(
        messages
            .iter()
            .filter(|m| m.get("successful").is_some())
            .all(|m| m["successful"] == true),
        "{messages:?}"
    );
    let last = messages.last().unwrap();
    assert_eq!(
        last["channel"], "/meta/connect",
        "connect reply last: {last}"
    );

    let delivered: Vec<i64> = deliveries_in(&messages)
        .iter()
        .map(|d| {
            assert_eq!(d["channel"], "/batch");
            d["data"]["n"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(
        delivered,
        (1..=50).collect::<Vec<_>>(),
        "own publishes piggybacked in order"
    );
}

#[tokio::test]
async fn any_reply_flushes_the_queue() {
    let server = Server::start(&["--timeout", "5000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    let reply = send_one(
        &browser,
        &client_id,
        "s",
        "/meta/subscribe",
        json!({"subscription": "/pb"}),
    )
    .await;
    assert_eq!(reply["successful"], true);

    let (publisher, _) = server.connected_client().await;
    for n in 0..3 {
        publisher.publish("/pb", &json!({"n": n})).await.unwrap();
    }
    // Not a connect: a publish elsewhere carries the queued messages back.
    let messages = exchange(
        &browser,
        &json!([{"id": "p", "channel": "/elsewhere", "clientId": client_id, "data": 0}]),
    )
    .await;
    assert_eq!(reply_with_id(&messages, "p")["successful"], true);
    let data: Vec<_> = deliveries_in(&messages)
        .iter()
        .map(|d| d["data"]["n"].clone())
        .collect();
    assert_eq!(data, [json!(0), json!(1), json!(2)], "{messages:?}");
}

#[tokio::test]
async fn a_thousand_messages_arrive_in_order() {
    let server = Server::start(&[]);
    let (subscriber, mut deliveries) = server.connected_client().await;
    subscriber.subscribe("/order").await.unwrap();
    let (publisher, _) = server.connected_client().await;
    let publishing = tokio::spawn(async move {
        for n in 0..1000 {
            publisher.publish("/order", &json!({"n": n})).await.unwrap();
        }
        publisher
    });
    let mut got = Vec::with_capacity(1000);
    within(30.0, "1000 deliveries", async {
        while got.len() < 1000 {
            let d = deliveries.recv().await.unwrap();
            assert_eq!(d.channel, "/order");
            got.push(d.data_value()["n"].as_i64().unwrap());
        }
    })
    .await;
    let publisher = publishing.await.unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    // A sentinel published last is the next delivery: nothing came twice.
    publisher
        .publish("/order", &json!({"n": "end"}))
        .await
        .unwrap();
    let next = within(30.0, "the sentinel", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(next.data_value(), json!({"n": "end"}), "no duplicates");
}

/// A client built with `on_delivery` hands every delivery to its handler, in
/// the server's order, on both transports, and has no queue to take.
#[tokio::test]
async fn a_delivery_handler_gets_every_message_in_order_on_both_transports() {
    use halley_client::{Client, TransportKind};
    use std::sync::{Arc, Mutex};
    use tokio::sync::Notify;

    let server = Server::start(&[]);
    for transport in [TransportKind::LongPolling, TransportKind::WebSocket] {
        let got = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(Notify::new());
        let subscriber = Client::builder(&server.url)
            .transport(transport)
            .on_delivery({
                let (got, done) = (got.clone(), done.clone());
                move |delivery| {
                    assert_eq!(delivery.channel, "/handled");
                    let mut got = got.lock().unwrap();
                    got.push(delivery.data_value()["n"].as_i64().unwrap());
                    if got.len() == 300 {
                        done.notify_one();
                    }
                }
            })
            .build()
            .unwrap();
        assert!(subscriber.take_deliveries().is_none(), "{transport:?}");
        subscriber.handshake().await.unwrap();
        subscriber.subscribe("/handled").await.unwrap();
        let (publisher, _) = server.connected_client().await;
        for n in 0..300 {
            publisher
                .publish("/handled", &json!({"n": n}))
                .await
                .unwrap();
        }
        within(30.0, "300 deliveries to the handler", done.notified()).await;
        assert_eq!(
            *got.lock().unwrap(),
            (0..300).collect::<Vec<_>>(),
            "{transport:?}"
        );
        assert_eq!(subscriber.stats().deliveries, 300, "{transport:?}");
    }
}

#[tokio::test]
async fn the_publisher_receives_its_own_message() {
    let server = Server::start(&[]);
    let (client, mut deliveries) = server.connected_client().await;
    client.subscribe("/self").await.unwrap();
    let ack = client
        .publish("/self", &json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(ack.channel, "/self");
    let delivery = within(30.0, "own message", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.channel, "/self");
    assert_eq!(delivery.data_value(), json!({"text": "hi"}));
    assert_eq!(
        delivery.id.as_deref(),
        Some(ack.id.as_str()),
        "the delivery keeps the publish id"
    );
}

#[tokio::test]
async fn service_echo_round_trip() {
    let server = Server::start(&["--timeout", "1000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    let data = json!({"x": [1, 2, {"y": null}], "s": "é\"\n"});
    let messages = exchange(
        &browser,
        &json!([{"id": "e1", "channel": "/service/echo", "clientId": client_id, "data": data}]),
    )
    .await;
    assert_eq!(
        messages,
        [json!({"channel": "/service/echo", "id": "e1", "successful": true, "data": data})]
    );

    // A numeric id is echoed as it came.
    let reply = send_one(
        &browser,
        &client_id,
        "ignored",
        "/service/echo",
        json!({"data": 5}),
    )
    .await;
    assert_eq!(reply["data"], 5);
    let messages = exchange(
        &browser,
        &json!([{"id": 42, "channel": "/service/echo", "clientId": client_id, "data": "n"}]),
    )
    .await;
    assert_eq!(messages[0]["id"], 42, "{messages:?}");

    // Through the client: the ack carries the answer.
    let (client, _) = server.connected_client().await;
    let ack = client
        .publish("/service/echo", &json!({"k": "v"}))
        .await
        .unwrap();
    assert_eq!(ack.channel, "/service/echo");
    assert_eq!(ack.data_value(), Some(json!({"k": "v"})));
}

#[tokio::test]
async fn unknown_service_is_refused() {
    let server = Server::start(&[]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    let reply = send_one(
        &browser,
        &client_id,
        "x1",
        "/service/nope",
        json!({"data": {}}),
    )
    .await;
    assert_eq!(reply["channel"], "/service/nope");
    assert_eq!(reply["successful"], false, "{reply}");
    assert_eq!(reply["error"], "404::service_unknown", "{reply}");
}

#[tokio::test]
async fn two_hundred_clients_on_one_http_client_all_receive_a_broadcast() {
    // 200 handshakes at once from one address: over the default
    // handshake-rate-per-ip (50 a second), which is not what this tests.
    let server = Server::start(&["--timeout", "5000", "--handshake-rate-per-ip", "0"]);
    let http = halley_client::http_client(None).unwrap();
    let mut clients = Vec::new();
    for _ in 0..200 {
        let client = halley_client::Client::builder(&server.url)
            .http_client(http.clone())
            .build()
            .unwrap();
        let deliveries = client.take_deliveries().unwrap();
        clients.push((client, deliveries));
    }
    within(30.0, "200 handshakes and subscriptions", async {
        for (client, _) in &clients {
            client.handshake().await.unwrap();
            client.subscribe("/all").await.unwrap();
        }
    })
    .await;
    let ids: std::collections::HashSet<_> = clients
        .iter()
        .map(|(c, _)| c.client_id().unwrap())
        .collect();
    assert_eq!(ids.len(), 200, "every client is its own session");

    let (publisher, _) = server.connected_client().await;
    publisher
        .publish("/all", &json!({"to": "everyone"}))
        .await
        .unwrap();
    within(30.0, "200 deliveries", async {
        for (_, deliveries) in &mut clients {
            let d = deliveries.recv().await.unwrap();
            assert_eq!(d.data_value(), json!({"to": "everyone"}));
        }
    })
    .await;
}
