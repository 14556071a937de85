//! Session life: expiry, held connects, browsers and their cookie, and the
//! client's automatic re-handshake.

mod common;

use std::time::{Duration, Instant};

use common::*;
use halley_client::{Client, Error, State};
use serde_json::{json, Value};

#[tokio::test]
async fn a_session_without_connects_expires() {
    let server = Server::start(&[
        "--timeout",
        "500",
        "--max-interval",
        "800",
        "--sweep-period",
        "100",
    ]);
    // A client whose connect loop keeps its session alive meanwhile.
    let (alive, _) = server.connected_client().await;

    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    // The scenario, not synchronisation: the browser stays silent for more
    // than max-interval (800 ms) plus a sweep (100 ms), so its session
    // expires. Nothing observable says "expired" short of asking, and
    // asking (a connect) is what would keep the session alive.
    tokio::time::sleep(Duration::from_millis(2000)).await;

    let replies = connect(&browser, &client_id, "late").await;
    let reply = reply_with_id(&replies, "late");
    assert_eq!(reply["successful"], false, "{reply}");
    assert_eq!(reply["error"], "402::session_unknown", "{reply}");
    assert_eq!(reply["advice"]["reconnect"], "handshake", "{reply}");
    let reply = send_one(&browser, &client_id, "p", "/x", json!({"data": 1})).await;
    assert_eq!(reply["successful"], false, "{reply}");
    assert!(
        reply["error"].as_str().unwrap_or("").starts_with("402:"),
        "{reply}"
    );

    assert_eq!(
        alive.stats().rehandshakes,
        0,
        "held connects keep a session alive"
    );
    assert!(alive.stats().connects >= 3, "{:?}", alive.stats());
    alive
        .publish("/service/echo", &1)
        .await
        .expect("the live session still works");
}

#[tokio::test]
async fn a_newer_connect_ends_the_held_one() {
    // Held connects wait 60 s unless they ask for less: one answered within
    // the 30 s of `within` was ended by a newer connect, not by its timeout.
    let server = Server::start(&["--timeout", "60000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;

    let spawn_connect = |id: String, advice: Value| {
        let url = server.url.clone();
        let jar = browser.cookies().clone();
        let client_id = client_id.clone();
        tokio::spawn(async move {
            let browser = Client::builder(url).cookie_jar(jar).build().unwrap();
            let started = Instant::now();
            let replies = exchange(
                &browser,
                &json!([{"id": id, "channel": "/meta/connect", "clientId": client_id,
                         "connectionType": "long-polling", "advice": advice}]),
            )
            .await;
            (started.elapsed(), replies)
        })
    };
    // Two connects at once: whichever reaches the server second ends the
    // other, so the first answered is the older one.
    let mut x = spawn_connect("x".into(), json!({}));
    let mut y = spawn_connect("y".into(), json!({}));
    let ((_, replies), held, held_id) = within(30.0, "the older connect to be ended", async {
        tokio::select! {
            done = &mut x => (done.unwrap(), y, "y"),
            done = &mut y => (done.unwrap(), x, "x"),
        }
    })
    .await;
    let older = &replies[0];
    assert_eq!(older["channel"], "/meta/connect", "{replies:?}");
    assert_eq!(older["successful"], true, "{replies:?}");
    assert!(!held.is_finished(), "the newer connect {held_id} is held");

    // A third connect, asking to be held 3 s, ends the held one in turn and
    // is itself held normally.
    let newest = spawn_connect("newest".into(), json!({"timeout": 3000}));
    let (_, replies) = within(30.0, "the held connect to be ended", held)
        .await
        .unwrap();
    assert_eq!(reply_with_id(&replies, held_id)["successful"], true);
    let (newest_held, replies) = within(30.0, "the newest connect", newest).await.unwrap();
    let reply = reply_with_id(&replies, "newest");
    assert_eq!(reply["successful"], true, "{reply}");
    assert!(
        newest_held >= Duration::from_millis(3000),
        "the newest connect is held normally, was answered after {newest_held:?}"
    );
}

#[tokio::test]
async fn a_second_held_connect_of_one_browser_gets_multiple_clients_advice() {
    let server = Server::start(&[
        "--timeout",
        "4000",
        "--max-sessions-per-browser",
        "1",
        "--multi-session-interval",
        "2000",
    ]);
    let browser = server.browser();
    let a = handshake(&browser).await;
    assert!(browser.cookies().get("BAYEUX_BROWSER").is_some());
    let b = handshake(&browser).await;
    first_connect(&browser, &a).await;
    first_connect(&browser, &b).await;

    // Both sessions ask to be held at once: one holds the browser's only
    // poll (4 s), the other is answered at once with `multiple-clients`
    // advice, which a connect held to its timeout never carries.
    let spawn_connect = |client_id: String, id: &'static str| {
        let url = server.url.clone();
        let jar = browser.cookies().clone();
        tokio::spawn(async move {
            let tab = Client::builder(url).cookie_jar(jar).build().unwrap();
            connect(&tab, &client_id, id).await
        })
    };
    let mut on_a = spawn_connect(a.clone(), "a1");
    let mut on_b = spawn_connect(b.clone(), "b1");
    let (replies, held, held_id, polled_id) = within(30.0, "the first connect reply", async {
        tokio::select! {
            done = &mut on_a => (done.unwrap(), on_b, "b1", "a1"),
            done = &mut on_b => (done.unwrap(), on_a, "a1", "b1"),
        }
    })
    .await;
    let reply = reply_with_id(&replies, polled_id);
    assert_eq!(reply["channel"], "/meta/connect");
    assert_eq!(reply["advice"]["multiple-clients"], true, "{reply}");
    assert_eq!(reply["advice"]["reconnect"], "retry", "{reply}");
    assert_eq!(reply["advice"]["interval"], 2000, "{reply}");
    assert!(!held.is_finished(), "the other connect is still held");
    let replies = within(30.0, "the held connect", held).await.unwrap();
    let reply = reply_with_id(&replies, held_id);
    assert_eq!(reply["successful"], true, "{reply}");
    assert!(reply["advice"].get("multiple-clients").is_none(), "{reply}");
}

#[tokio::test]
async fn unlimited_sessions_per_browser_and_separate_browsers_are_held() {
    for (flags, same_browser) in [
        (
            &["--timeout", "1500", "--max-sessions-per-browser", "-1"][..],
            true,
        ),
        (
            &["--timeout", "1500", "--max-sessions-per-browser", "1"][..],
            false,
        ),
    ] {
        let server = Server::start(flags);
        let first = server.browser();
        let second = if same_browser {
            Client::builder(&server.url)
                .cookie_jar(first.cookies().clone())
                .build()
                .unwrap()
        } else {
            server.browser()
        };
        let a = handshake(&first).await;
        let b = handshake(&second).await;
        first_connect(&first, &a).await;
        first_connect(&second, &b).await;
        let started = Instant::now();
        let (ra, rb) = tokio::join!(connect(&first, &a, "a"), connect(&second, &b, "b"));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1300),
            "{flags:?} same browser {same_browser}: both should be held, done after {elapsed:?}"
        );
        for (replies, id) in [(ra, "a"), (rb, "b")] {
            let reply = reply_with_id(&replies, id);
            assert_eq!(reply["successful"], true, "{reply}");
            assert!(reply["advice"].get("multiple-clients").is_none(), "{reply}");
        }
    }
}

#[tokio::test]
async fn a_client_id_without_its_browser_cookie_is_refused() {
    let server = Server::start(&["--timeout", "1000"]);
    let owner = server.browser();
    let client_id = handshake(&owner).await;
    first_connect(&owner, &client_id).await;

    // No cookie at all, then another browser's cookie.
    let stranger = server.browser();
    let other_browser = server.browser();
    handshake(&other_browser).await;
    for thief in [&stranger, &other_browser] {
        let replies = exchange(
            thief,
            &json!([{"id": "t", "channel": "/meta/connect", "clientId": client_id,
                     "connectionType": "long-polling", "advice": {"timeout": 0}}]),
        )
        .await;
        let reply = reply_with_id(&replies, "t");
        assert_eq!(reply["successful"], false, "{reply}");
        assert!(
            reply["error"].as_str().unwrap_or("").starts_with("402:"),
            "{reply}"
        );
        let reply = send_one(thief, &client_id, "p", "/stolen", json!({"data": 1})).await;
        assert_eq!(reply["successful"], false, "{reply}");
        assert!(
            reply["error"].as_str().unwrap_or("").starts_with("402:"),
            "{reply}"
        );
    }

    // The owner is unaffected.
    let replies = exchange(
        &owner,
        &json!([{"id": "o", "channel": "/meta/connect", "clientId": client_id,
                 "connectionType": "long-polling", "advice": {"timeout": 0}}]),
    )
    .await;
    assert_eq!(reply_with_id(&replies, "o")["successful"], true);
}

#[tokio::test]
async fn trust_client_session_accepts_a_client_id_without_cookie() {
    let server = Server::start(&["--timeout", "1000", "--trust-client-session"]);
    let owner = server.browser();
    let client_id = handshake(&owner).await;
    first_connect(&owner, &client_id).await;
    let stranger = server.browser();
    let reply = send_one(
        &stranger,
        &client_id,
        "p",
        "/service/echo",
        json!({"data": "mine"}),
    )
    .await;
    assert_eq!(reply["successful"], true, "{reply}");
    assert_eq!(reply["data"], "mine");
    let replies = exchange(
        &stranger,
        &json!([{"id": "t", "channel": "/meta/connect", "clientId": client_id,
                 "connectionType": "long-polling", "advice": {"timeout": 0}}]),
    )
    .await;
    assert_eq!(
        reply_with_id(&replies, "t")["successful"],
        true,
        "{replies:?}"
    );
}

#[tokio::test]
async fn the_client_rehandshakes_and_resubscribes_when_its_session_is_lost() {
    let mut server = Server::start(&["--timeout", "1000"]);
    let client = Client::builder(&server.url)
        .backoff(Duration::from_millis(100), Duration::from_millis(300))
        .build()
        .unwrap();
    let mut deliveries = client.take_deliveries().unwrap();
    client.handshake().await.unwrap();
    client.subscribe("/rh").await.unwrap();
    let old_id = client.client_id().unwrap();

    // The server crashes and comes back on the same port: it knows no
    // session, so the client's next connect gets 402::session_unknown.
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
            "no re-handshake within 30 s: state {:?}, {:?}, clientId {:?} (old {old_id}); server log:\n{}",
            client.state(),
            client.stats(),
            client.client_id(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.subscriptions(), ["/rh"]);

    let (publisher, _) = server.connected_client().await;
    publisher
        .publish("/rh", &json!({"after": "rehandshake"}))
        .await
        .unwrap();
    let delivery = within(30.0, "delivery after re-handshake", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.channel, "/rh");
    assert_eq!(delivery.data_value(), json!({"after": "rehandshake"}));
}

#[tokio::test]
async fn a_held_connect_of_a_disconnected_session_tells_the_client_to_stop() {
    // Held for 60 s: the connect found held is still the one held when the
    // disconnect comes.
    let server = Server::start(&["--timeout", "60000"]);
    let (client, _) = server.connected_client().await;
    let client_id = client.client_id().unwrap();
    // Wait until the loop's second connect is held.
    eventually(30.0, "first connect", || client.stats().connects >= 1).await;
    held_in_browser(&server, &client).await;

    // Another tab of the same browser ends the session.
    let reply = send_one(&client, &client_id, "bye", "/meta/disconnect", json!({})).await;
    assert_eq!(reply["successful"], true, "{reply}");
    eventually(30.0, "the connect loop to stop on advice none", || {
        client.state() == State::Disconnected
    })
    .await;
    assert_eq!(client.stats().rehandshakes, 0);
}

#[tokio::test]
async fn client_api_round_trip() {
    let server = Server::start(&["--timeout", "1000"]);
    let client = server.browser();
    let mut deliveries = client.take_deliveries().unwrap();
    assert!(matches!(
        client.subscribe("/api").await,
        Err(Error::NotHandshaken)
    ));

    let info = client.handshake().await.unwrap();
    assert_eq!(info.version.as_deref(), Some("1.0"));
    assert!(info
        .supported_connection_types
        .iter()
        .any(|t| t == "long-polling"));
    assert_eq!(client.client_id().as_deref(), Some(info.client_id.as_str()));

    client.subscribe_all(&["/api/a", "/api/b"]).await.unwrap();
    client.publish("/api/a", &json!(1)).await.unwrap();
    client.publish("/api/b", &json!(2)).await.unwrap();
    // Own deliveries can come back on the connect or piggybacked on the
    // next publish reply, so compare as a set.
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = within(30.0, "delivery", deliveries.recv()).await.unwrap();
        got.push((d.channel.clone(), d.data_value()));
    }
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        [
            ("/api/a".to_owned(), json!(1)),
            ("/api/b".to_owned(), json!(2))
        ]
    );
    client.unsubscribe("/api/a").await.unwrap();
    client.publish("/api/a", &json!(3)).await.unwrap();
    client.publish("/api/b", &json!(4)).await.unwrap();
    let d = within(30.0, "delivery", deliveries.recv()).await.unwrap();
    assert_eq!((d.channel.as_str(), d.data_value()), ("/api/b", json!(4)));

    let err = client.subscribe("/meta/connect").await.unwrap_err();
    assert_eq!(
        err.server_error().and_then(|e| e.code()),
        Some(403),
        "{err}"
    );

    // The loop is alive: it has connected at least once (first connect).
    eventually(30.0, "connected", || client.state() == State::Connected).await;
    client.disconnect().await.unwrap();
    assert_eq!(client.state(), State::Disconnected);
    assert!(matches!(
        client.publish("/api/b", &0).await,
        Err(Error::NotHandshaken)
    ));
}

#[tokio::test]
async fn two_tabs_of_one_browser_both_receive() {
    let server = Server::start(&[
        "--timeout",
        "1000",
        "--max-sessions-per-browser",
        "1",
        "--multi-session-interval",
        "300",
    ]);
    let jar = std::sync::Arc::new(halley_client::CookieJar::new());
    let tab = || {
        Client::builder(&server.url)
            .cookie_jar(jar.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (tab(), tab());
    let mut deliveries = [a.take_deliveries().unwrap(), b.take_deliveries().unwrap()];
    for client in [&a, &b] {
        client.handshake().await.unwrap();
        client.subscribe("/tabs").await.unwrap();
    }
    // Both loops settle into "one holds, the other polls every 300 ms":
    // the polling one has been told so.
    eventually(30.0, "one tab told to poll (multiple-clients)", || {
        a.advice().multiple_clients == Some(true) || b.advice().multiple_clients == Some(true)
    })
    .await;
    let (publisher, _) = server.connected_client().await;
    publisher.publish("/tabs", &json!("both")).await.unwrap();
    for (i, deliveries) in deliveries.iter_mut().enumerate() {
        let d = within(30.0, &format!("delivery to tab {i}"), deliveries.recv())
            .await
            .unwrap();
        assert_eq!(d.data_value(), json!("both"));
    }
    assert_eq!(a.stats().rehandshakes + b.stats().rehandshakes, 0);
}
