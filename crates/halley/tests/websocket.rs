//! The websocket transport end to end: `halley-client` over a real socket
//! to a real `halley serve`. Delivery, ordering, globs and services as on
//! long-polling; mixed transports; a socket dropped under the client (it
//! comes back to the same session and receives what was queued meanwhile);
//! a server restart (re-handshake); a server without websocket.

mod common;

use std::time::{Duration, Instant};

use common::*;
use halley_client::{Error, Outgoing, State};
use serde_json::{json, Value};

/// Waits until the connect loop has had `n` successful connects.
async fn connects(client: &halley_client::Client, n: u64) {
    eventually(30.0, &format!("{n} successful connect(s)"), || {
        client.stats().connects >= n
    })
    .await;
}

#[tokio::test]
async fn handshake_subscribe_publish_and_receive_on_one_socket() {
    let server = Server::start(&["--timeout", "2000"]);
    let proxy = Proxy::start(&server).await;
    let client = ws_client(&proxy.url);
    let mut deliveries = client.take_deliveries().unwrap();
    assert_eq!(client.connection_type(), "websocket");
    assert_eq!(client.url(), proxy.url, "the URL stays the http:// one");

    let info = client.handshake().await.expect("handshake over websocket");
    assert!(
        info.supported_connection_types
            .iter()
            .any(|t| t == "websocket"),
        "{info:?}"
    );
    assert_eq!(client.client_id().as_deref(), Some(info.client_id.as_str()));
    client.subscribe("/ws/chat").await.unwrap();
    let ack = client
        .publish("/ws/chat", &json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(ack.channel, "/ws/chat");
    let delivery = within(30.0, "own delivery", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.channel, "/ws/chat");
    assert_eq!(delivery.data_value(), json!({"text": "hi"}));
    connects(&client, 1).await;
    assert_eq!(client.state(), State::Connected);

    // Handshake, connects, subscribe and publish all went over one socket.
    assert_eq!(proxy.accepted(), 1, "one TCP connection for everything");
    assert_eq!(proxy.open(), 1);

    client.disconnect().await.unwrap();
    assert_eq!(client.state(), State::Disconnected);
    assert_eq!(client.client_id(), None);
    eventually(30.0, "the socket to close after disconnect", || {
        proxy.open() == 0
    })
    .await;
    assert_eq!(client.stats().connect_failures, 0, "{:?}", client.stats());
}

#[tokio::test]
async fn the_connect_is_held_while_deliveries_flow() {
    // The second connect is held 8 s: deliveries that arrive while the
    // subscriber has had one connect reply did not wait for the connect.
    let server = Server::start(&["--timeout", "8000"]);
    let (subscriber, mut deliveries) = server.ws_connected_client().await;
    subscriber.subscribe("/held").await.unwrap();
    connects(&subscriber, 1).await; // the first connect, answered at once
    let (publisher, _) = server.ws_connected_client().await;

    for n in 0..3 {
        publisher.publish("/held", &json!({"n": n})).await.unwrap();
        let delivery = within(
            30.0,
            "a delivery while the connect is held",
            deliveries.recv(),
        )
        .await
        .unwrap();
        assert_eq!(delivery.data_value(), json!({"n": n}));
        assert_eq!(
            subscriber.stats().connects,
            1,
            "the delivery came with a connect reply, not on its own"
        );
    }
    // Answered at its timeout, and the loop connects again.
    eventually(30.0, "the held connect's reply", || {
        subscriber.stats().connects >= 2
    })
    .await;
    assert_eq!(subscriber.state(), State::Connected);
}

#[tokio::test]
async fn several_deliveries_in_one_frame_with_the_replies() {
    let server = Server::start(&["--timeout", "2000"]);
    let (client, mut deliveries) = server.ws_connected_client().await;
    client.subscribe("/self/*").await.unwrap();
    // One frame of five publishes to a channel the client subscribes to:
    // the server answers with one frame, its five deliveries then the
    // five replies.
    let batch = (0..5)
        .map(|n| {
            let mut message = Outgoing::new(format!("/self/{n}"));
            message.data = Some(serde_json::value::to_raw_value(&json!({"n": n})).unwrap());
            message
        })
        .collect();
    let replies = client.send_batch(batch).await.unwrap();
    assert_eq!(replies.len(), 5, "{replies:?}");
    assert!(replies.iter().all(|r| r.is_successful()), "{replies:?}");
    // Deliveries written before the replies were handed over before the
    // exchange resolved.
    assert_eq!(deliveries.len(), 5);
    let got: Vec<Value> = std::iter::from_fn(|| deliveries.try_recv())
        .map(|d| d.data_value()["n"].clone())
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn globs_over_websocket() {
    let server = Server::start(&["--timeout", "2000"]);
    let (one, mut one_deliveries) = server.ws_connected_client().await;
    let (many, mut many_deliveries) = server.ws_connected_client().await;
    one.subscribe("/g/*").await.unwrap();
    one.subscribe("/done").await.unwrap();
    many.subscribe("/g/**").await.unwrap();
    many.subscribe("/done").await.unwrap();
    let (publisher, _) = server.ws_connected_client().await;
    for channel in [
        "/g", "/g/a", "/g/a/b", "/ga/x", "/g/b", "/x/g/c", "/g/a/b/c",
    ] {
        publisher.publish(channel, &json!({})).await.unwrap();
    }
    publisher.publish("/done", &json!({})).await.unwrap();
    assert_eq!(
        collect_until(&mut one_deliveries, "/done").await,
        ["/g/a", "/g/b", "/done"]
    );
    assert_eq!(
        collect_until(&mut many_deliveries, "/done").await,
        ["/g/a", "/g/a/b", "/g/b", "/g/a/b/c", "/done"]
    );
}

#[tokio::test]
async fn service_echo_answers_the_sender_only() {
    let server = Server::start(&["--timeout", "2000"]);
    let (client, mut deliveries) = server.ws_connected_client().await;
    client.subscribe("/**").await.unwrap();
    let ack = client
        .publish("/service/echo", &json!({"ping": [1, 2, 3]}))
        .await
        .unwrap();
    assert_eq!(ack.channel, "/service/echo");
    assert_eq!(ack.data_value(), Some(json!({"ping": [1, 2, 3]})));
    // Concurrent requests on one socket get their own answers.
    let (a, b) = tokio::join!(
        client.publish("/service/echo", "a"),
        client.publish("/service/echo", "b")
    );
    assert_eq!(a.unwrap().data_value(), Some(json!("a")));
    assert_eq!(b.unwrap().data_value(), Some(json!("b")));
    // A sentinel published last is the first delivery: the service answers
    // were replies, not deliveries.
    client.publish("/sentinel", &0).await.unwrap();
    let first = within(30.0, "the sentinel", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(
        first.channel, "/sentinel",
        "a service answer is a reply, not a delivery"
    );
}

#[tokio::test]
async fn a_thousand_messages_arrive_in_order() {
    let server = Server::start(&["--timeout", "2000"]);
    let (subscriber, mut deliveries) = server.ws_connected_client().await;
    subscriber.subscribe("/order").await.unwrap();
    let (publisher, _) = server.ws_connected_client().await;
    let publishing = tokio::spawn(async move {
        for n in 0..1000 {
            publisher.publish("/order", &json!({"n": n})).await.unwrap();
        }
        publisher
    });
    let got = within(30.0, "1000 deliveries", async {
        let mut got = Vec::with_capacity(1000);
        while got.len() < 1000 {
            let delivery = deliveries.recv().await.unwrap();
            got.push(delivery.data_value()["n"].as_u64().unwrap());
        }
        got
    })
    .await;
    assert_eq!(got, (0..1000).collect::<Vec<u64>>());
    publishing.await.unwrap();
    assert_eq!(subscriber.stats().deliveries, 1000);
}

#[tokio::test]
async fn websocket_publisher_long_polling_subscriber() {
    let server = Server::start(&["--timeout", "2000"]);
    let (subscriber, mut deliveries) = server.connected_client().await;
    assert_eq!(subscriber.connection_type(), "long-polling");
    subscriber.subscribe("/mixed/**").await.unwrap();
    connects(&subscriber, 1).await;
    let (publisher, _) = server.ws_connected_client().await;
    for n in 0..20 {
        publisher
            .publish("/mixed/lp", &json!({"n": n}))
            .await
            .unwrap();
    }
    let got = within(30.0, "20 deliveries over long-polling", async {
        let mut got = Vec::new();
        while got.len() < 20 {
            got.push(deliveries.recv().await.unwrap().data_value()["n"].clone());
        }
        got
    })
    .await;
    assert_eq!(got, (0..20).map(Value::from).collect::<Vec<_>>());
}

#[tokio::test]
async fn long_polling_publisher_websocket_subscriber() {
    let server = Server::start(&["--timeout", "2000"]);
    let (subscriber, mut deliveries) = server.ws_connected_client().await;
    subscriber.subscribe("/mixed/**").await.unwrap();
    let (publisher, _) = server.connected_client().await;
    for n in 0..20 {
        publisher
            .publish("/mixed/ws", &json!({"n": n}))
            .await
            .unwrap();
    }
    let got = within(30.0, "20 deliveries over websocket", async {
        let mut got = Vec::new();
        while got.len() < 20 {
            got.push(deliveries.recv().await.unwrap().data_value()["n"].clone());
        }
        got
    })
    .await;
    assert_eq!(got, (0..20).map(Value::from).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_dropped_socket_comes_back_to_its_session_and_gets_what_was_queued() {
    let server = Server::start(&["--timeout", "2000"]);
    let proxy = Proxy::start(&server).await;
    let client = ws_client(&proxy.url);
    let mut deliveries = client.take_deliveries().unwrap();
    client.handshake().await.unwrap();
    client.subscribe("/drop").await.unwrap();
    connects(&client, 1).await;
    let client_id = client.client_id().unwrap();

    // The network goes: the socket is cut and new ones are refused.
    proxy.refuse(true);
    proxy.cut();
    eventually(30.0, "the client to notice the socket is gone", || {
        client.stats().connect_failures >= 1
    })
    .await;
    assert_eq!(client.state(), State::Connecting);

    // Published while the client has no socket: queued in its session.
    let (publisher, _) = server.connected_client().await;
    for n in 0..5 {
        publisher.publish("/drop", &json!({"n": n})).await.unwrap();
    }
    proxy.refuse(false);

    let got = within(30.0, "what was queued meanwhile", async {
        let mut got = Vec::new();
        while got.len() < 5 {
            got.push(deliveries.recv().await.unwrap().data_value()["n"].clone());
        }
        got
    })
    .await;
    assert_eq!(got, (0..5).map(Value::from).collect::<Vec<_>>());
    assert_eq!(client.client_id(), Some(client_id), "same session");
    let stats = client.stats();
    assert_eq!((stats.handshakes, stats.rehandshakes), (1, 0), "{stats:?}");
    assert!(proxy.accepted() >= 2, "a new socket was opened");

    // And the session works as before on the new socket.
    client.publish("/drop", &json!({"n": 5})).await.unwrap();
    let delivery = within(30.0, "a delivery after reconnecting", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.data_value(), json!({"n": 5}));
    connects(&client, stats.connects + 1).await;
    assert_eq!(client.state(), State::Connected);
}

#[tokio::test]
async fn a_silent_network_is_noticed_and_the_client_moves_to_a_new_socket() {
    let server = Server::start(&["--timeout", "500"]);
    let proxy = Proxy::start(&server).await;
    let client = halley_client::Client::builder(&proxy.url)
        .transport(halley_client::TransportKind::WebSocket)
        .max_network_delay(Duration::from_millis(500))
        .backoff(Duration::from_millis(100), Duration::from_millis(300))
        .build()
        .unwrap();
    let mut deliveries = client.take_deliveries().unwrap();
    client.handshake().await.unwrap();
    client.subscribe("/silent").await.unwrap();
    connects(&client, 1).await;
    let client_id = client.client_id();

    // Packets stop, nothing closes: only the held connect's missing reply
    // (timeout + maxNetworkDelay) tells the client.
    proxy.freeze();
    eventually(30.0, "a second socket", || proxy.accepted() >= 2).await;
    let after = client.stats().connects;
    connects(&client, after + 1).await;
    assert_eq!(client.client_id(), client_id, "same session");
    assert_eq!(client.stats().rehandshakes, 0);

    let (publisher, _) = server.connected_client().await;
    publisher.publish("/silent", &json!("back")).await.unwrap();
    let delivery = within(30.0, "a delivery on the new socket", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.data_value(), json!("back"));
}

#[tokio::test]
async fn a_cut_socket_fails_the_held_connect_and_reopens() {
    let server = Server::start(&["--timeout", "30000"]);
    let proxy = Proxy::start(&server).await;
    let client = ws_client(&proxy.url);
    let mut deliveries = client.take_deliveries().unwrap();
    client.handshake().await.unwrap();
    client.subscribe("/abort").await.unwrap();
    connects(&client, 1).await;
    let client_id = client.client_id();
    // The socket goes under the client, without a close frame. The loop
    // sends its second connect (held 30 s) right after the first reply; a
    // cut that comes before it is sent only makes the connect open a new
    // socket, so cut until one catches the held connect and fails it.
    eventually(30.0, "a cut to fail the held connect", || {
        let failed = client.stats().connect_failures >= 1;
        if !failed {
            proxy.cut();
        }
        failed
    })
    .await;
    let ack = within(
        30.0,
        "publish on a new socket",
        client.publish("/abort", &1),
    )
    .await
    .unwrap();
    assert_eq!(ack.channel, "/abort");
    assert_eq!(
        within(30.0, "delivery", deliveries.recv())
            .await
            .unwrap()
            .data_value(),
        json!(1)
    );
    assert_eq!(client.client_id(), client_id);
    assert_eq!(client.stats().rehandshakes, 0);
    assert!(proxy.accepted() >= 2, "a new socket was opened");
}

#[tokio::test]
async fn after_a_server_restart_the_client_rehandshakes_and_resubscribes() {
    let mut server = Server::start(&["--timeout", "1000"]);
    let (client, mut deliveries) = server.ws_connected_client().await;
    client.subscribe("/restart").await.unwrap();
    connects(&client, 1).await;
    let old_id = client.client_id().unwrap();

    let address = server.address().to_owned();
    server.kill();
    let server = Server::start_at(&address, &["--timeout", "1000"]);

    let deadline = Instant::now() + Duration::from_secs(30);
    while !(client.stats().rehandshakes >= 1
        && client.state() == State::Connected
        && client.client_id().as_deref() != Some(old_id.as_str()))
    {
        assert!(
            Instant::now() < deadline,
            "no re-handshake within 30 s: state {:?}, {:?}; server log:\n{}",
            client.state(),
            client.stats(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.subscriptions(), ["/restart"]);

    let (publisher, _) = server.ws_connected_client().await;
    publisher
        .publish("/restart", &json!({"after": "restart"}))
        .await
        .unwrap();
    let delivery = within(30.0, "a delivery after the re-handshake", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.channel, "/restart");
    assert_eq!(delivery.data_value(), json!({"after": "restart"}));
}

#[tokio::test]
async fn a_server_without_websocket_refuses_the_upgrade_clearly() {
    let server = Server::start(&["--websocket", "false"]);
    let client = server.ws_browser();
    let error = within(30.0, "handshake", client.handshake())
        .await
        .unwrap_err();
    match &error {
        Error::UpgradeRefused { status, body } => {
            assert_eq!(*status, 400);
            assert!(
                String::from_utf8_lossy(body).contains("websocket transport is disabled"),
                "{error}"
            );
        }
        other => panic!("expected UpgradeRefused, got {other:?}"),
    }
    assert!(error.to_string().contains("HTTP 400"), "{error}");
    assert_eq!(client.state(), State::Disconnected);
    assert_eq!(client.client_id(), None);
    // Long-polling still works there.
    let (lp, _) = server.connected_client().await;
    lp.publish("/service/echo", &1).await.unwrap();
}

#[tokio::test]
async fn the_upgrade_carries_the_browser_cookie() {
    let server = Server::start(&["--timeout", "2000"]);
    // An established browser: it has its BAYEUX_BROWSER cookie before it
    // handshakes, so its session is bound to that cookie.
    let owner = server.browser();
    handshake(&owner).await;
    let cookie = owner.cookies().get("BAYEUX_BROWSER").expect("cookie set");
    let client_id = handshake(&owner).await;
    first_connect(&owner, &client_id).await;
    assert_eq!(owner.cookies().get("BAYEUX_BROWSER"), Some(cookie));

    let echo = |id: &str| {
        let mut message = Outgoing::new("/service/echo");
        message.id = Some(id.to_owned());
        message.client_id = Some(client_id.clone());
        message.data = Some(serde_json::value::to_raw_value(&json!("mine")).unwrap());
        vec![message]
    };
    // The same browser over websocket: its cookie goes with the upgrade.
    let tab = halley_client::Client::builder(&server.url)
        .transport(halley_client::TransportKind::WebSocket)
        .cookie_jar(owner.cookies().clone())
        .build()
        .unwrap();
    let replies = tab.send_batch(echo("same")).await.unwrap();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].is_successful(), "{replies:?}");

    // Other browsers, with no cookie or their own, cannot use that clientId.
    let stranger = server.ws_browser();
    let other_browser = server.browser();
    handshake(&other_browser).await;
    let other_tab = halley_client::Client::builder(&server.url)
        .transport(halley_client::TransportKind::WebSocket)
        .cookie_jar(other_browser.cookies().clone())
        .build()
        .unwrap();
    for thief in [&stranger, &other_tab] {
        let replies = thief.send_batch(echo("thief")).await.unwrap();
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert!(!replies[0].is_successful(), "{replies:?}");
        assert!(
            replies[0]
                .error
                .as_deref()
                .unwrap_or("")
                .starts_with("402:"),
            "{replies:?}"
        );
    }
}

#[tokio::test]
async fn pings_keep_a_quiet_socket_open() {
    // The server pings a socket silent for half the idle timeout and closes
    // it if nothing comes back; a connect held for longer than that keeps
    // the client silent, so only its pongs keep the socket.
    let server = Server::start(&["--timeout", "3000", "--websocket-idle-timeout", "400"]);
    let proxy = Proxy::start(&server).await;
    let client = ws_client(&proxy.url);
    client.handshake().await.unwrap();
    connects(&client, 1).await;
    // The scenario, not synchronisation: a quiet spell of more than three
    // idle timeouts (the connect is held 3 s), in which nothing may happen;
    // there is no event to wait for, only the absence of one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(proxy.accepted(), 1, "the socket was not replaced");
    assert_eq!(proxy.open(), 1);
    let stats = client.stats();
    assert_eq!(
        (stats.connects, stats.connect_failures),
        (1, 0),
        "{stats:?}"
    );
}

// Multi-threaded: `terminate` blocks its thread while the client must go on
// reading (and echo the server's close frame).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_answers_the_held_connect_then_closes_the_socket() {
    let mut server = Server::start(&["--timeout", "30000"]);
    let proxy = Proxy::start(&server).await;
    let client = ws_client(&proxy.url);
    within(30.0, "websocket handshake", client.handshake())
        .await
        .unwrap();
    connects(&client, 1).await;
    // The loop sends its second connect right after the first reply: the
    // upgrade, the handshake and the first connect were the client's
    // first three requests on the socket, the second connect its fourth.
    eventually(30.0, "the second connect to reach the server", || {
        proxy.requests() >= 4
    })
    .await;
    let status = server
        .terminate(Duration::from_secs(30))
        .expect("the server exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", server.log());
    // The client echoes the close frame: the socket does not make the
    // server wait out its shutdown grace period, after which it would say
    // so (`connections still open after 5s`).
    let log = server.final_log();
    assert!(
        !log.contains("still open after"),
        "shutdown waited for the websocket:\n{log}"
    );
    // The held connect was answered, not failed, before the socket closed:
    // frames are read in order, so once the next connect has failed the
    // held one has been counted.
    eventually(30.0, "the client to notice the server is gone", || {
        client.stats().connect_failures >= 1
    })
    .await;
    let stats = client.stats();
    // The held connect was answered (a connect sent meanwhile may have been
    // answered too, the server still reading the socket as it stops).
    assert!(stats.connects >= 2, "{stats:?}");
    assert_eq!(client.state(), State::Connecting);
}
