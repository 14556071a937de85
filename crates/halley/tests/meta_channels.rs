//! Every meta channel against a real server, at the wire level.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn handshake_reply_has_every_field_and_a_browser_cookie() {
    let server = Server::start(&["--timeout", "3000", "--interval", "0"]);
    let browser = server.browser();
    let response = post(
        &browser,
        &json!([{"id": "h1", "channel": "/meta/handshake", "version": "1.0",
                 "minimumVersion": "1.0",
                 "supportedConnectionTypes": ["websocket", "long-polling", "callback-polling"],
                 "advice": {"timeout": 60000, "interval": 0}}]),
    )
    .await;
    assert_eq!(response.status, 200);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let messages = messages_of(&response);
    assert_eq!(messages.len(), 1, "{messages:?}");
    let reply = &messages[0];
    assert_eq!(reply["channel"], "/meta/handshake");
    assert_eq!(reply["id"], "h1");
    assert_eq!(reply["successful"], true);
    assert_eq!(reply["version"], "1.0");

    let client_id = reply["clientId"].as_str().expect("clientId string");
    assert!(
        client_id.len() >= 32 && client_id.chars().all(|c| c.is_ascii_hexdigit()),
        "clientId must be >= 32 hex digits (128 bits): {client_id:?}"
    );

    let types = reply["supportedConnectionTypes"]
        .as_array()
        .expect("supportedConnectionTypes array");
    assert!(types.contains(&json!("long-polling")), "{types:?}");
    assert!(types.contains(&json!("callback-polling")), "{types:?}");

    assert_eq!(reply["advice"]["reconnect"], "retry", "{reply}");
    assert_eq!(reply["advice"]["timeout"], 3000, "{reply}");
    assert_eq!(reply["advice"]["interval"], 0, "{reply}");

    let set_cookie = response.header("set-cookie").unwrap_or_default().to_owned();
    assert!(set_cookie.starts_with("BAYEUX_BROWSER="), "{set_cookie:?}");
    assert!(
        set_cookie.to_ascii_lowercase().contains("httponly"),
        "{set_cookie:?}"
    );
    assert!(browser.cookies().get("BAYEUX_BROWSER").is_some());

    let other = handshake(&browser).await;
    assert_ne!(other, client_id, "every handshake gets a new clientId");
}

#[tokio::test]
async fn handshake_without_a_common_connection_type_fails() {
    let server = Server::start(&[]);
    let browser = server.browser();
    let replies = exchange(
        &browser,
        &json!([{"id": "h", "channel": "/meta/handshake", "version": "1.0",
                 "supportedConnectionTypes": ["flash"]}]),
    )
    .await;
    let reply = reply_with_id(&replies, "h");
    assert_eq!(reply["successful"], false, "{reply}");
    assert!(reply["error"].is_string(), "{reply}");
    assert!(reply.get("clientId").is_none(), "{reply}");
}

#[tokio::test]
async fn first_connect_with_timeout_zero_is_answered_at_once() {
    // Held connects wait 60 s: a reply within the 30 s of `within` was not held.
    let server = Server::start(&["--timeout", "60000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    let replies = within(
        30.0,
        "the first connect",
        first_connect(&browser, &client_id),
    )
    .await;
    let reply = reply_with_id(&replies, "c0");
    assert_eq!(reply["channel"], "/meta/connect");
    assert_eq!(replies.last().unwrap(), reply, "connect reply last");
}

#[tokio::test]
async fn later_connect_is_held_until_the_timeout() {
    let server = Server::start(&["--timeout", "1000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    let started = Instant::now();
    let replies = connect(&browser, &client_id, "c1").await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1000),
        "held {elapsed:?}, expected the 1000 ms timeout"
    );
    let reply = reply_with_id(&replies, "c1");
    assert_eq!(reply["successful"], true, "{reply}");
    assert_eq!(replies.len(), 1, "nothing was queued: {replies:?}");
}

#[tokio::test]
async fn held_connect_is_answered_when_a_message_arrives() {
    // Held connects wait 60 s: one answered within the 30 s of `within`,
    // with the message, was answered because of it.
    let server = Server::start(&["--timeout", "60000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    let reply = send_one(
        &browser,
        &client_id,
        "s",
        "/meta/subscribe",
        json!({"subscription": "/news"}),
    )
    .await;
    assert_eq!(reply["successful"], true, "{reply}");

    let held = {
        let url = server.url.clone();
        let jar = browser.cookies().clone();
        let client_id = client_id.clone();
        tokio::spawn(async move {
            let browser = halley_client::Client::builder(url)
                .cookie_jar(jar)
                .build()
                .unwrap();
            connect(&browser, &client_id, "held").await
        })
    };
    held_in_browser(&server, &browser).await;
    assert!(!held.is_finished(), "the connect should be held");

    let (publisher, _) = server.connected_client().await;
    publisher.publish("/news", &json!({"n": 1})).await.unwrap();

    let replies = within(30.0, "held connect", held).await.unwrap();
    let deliveries = deliveries_in(&replies);
    assert_eq!(deliveries.len(), 1, "{replies:?}");
    assert_eq!(deliveries[0]["channel"], "/news");
    assert_eq!(deliveries[0]["data"], json!({"n": 1}));
    assert!(
        deliveries[0].get("clientId").is_none(),
        "the publisher's clientId must not leak: {}",
        deliveries[0]
    );
    assert_eq!(
        replies.last().unwrap()["channel"],
        "/meta/connect",
        "connect reply last"
    );
    assert_eq!(replies.last().unwrap()["successful"], true);
}

#[tokio::test]
async fn subscribe_and_unsubscribe_one_channel() {
    let server = Server::start(&["--timeout", "1000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    let (publisher, _) = server.connected_client().await;

    let reply = send_one(
        &browser,
        &client_id,
        "s1",
        "/meta/subscribe",
        json!({"subscription": "/one"}),
    )
    .await;
    assert_eq!(
        reply,
        json!({"channel": "/meta/subscribe", "id": "s1", "subscription": "/one", "successful": true})
    );
    publisher.publish("/one", &json!({"n": 1})).await.unwrap();
    let replies = connect(&browser, &client_id, "c1").await;
    let got = deliveries_in(&replies);
    assert_eq!(got.len(), 1, "{replies:?}");
    assert_eq!(got[0]["data"], json!({"n": 1}));

    let reply = send_one(
        &browser,
        &client_id,
        "u1",
        "/meta/unsubscribe",
        json!({"subscription": "/one"}),
    )
    .await;
    assert_eq!(
        reply,
        json!({"channel": "/meta/unsubscribe", "id": "u1", "subscription": "/one", "successful": true})
    );
    publisher.publish("/one", &json!({"n": 2})).await.unwrap();
    let replies = connect(&browser, &client_id, "c2").await;
    assert!(
        deliveries_in(&replies).is_empty(),
        "unsubscribed, yet: {replies:?}"
    );
}

#[tokio::test]
async fn subscribe_and_unsubscribe_an_array_of_channels() {
    let server = Server::start(&["--timeout", "1000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    let (publisher, _) = server.connected_client().await;

    let both = json!(["/arr/a", "/arr/b"]);
    let reply = send_one(
        &browser,
        &client_id,
        "s",
        "/meta/subscribe",
        json!({"subscription": both}),
    )
    .await;
    assert_eq!(reply["successful"], true, "{reply}");
    assert_eq!(reply["subscription"], both, "{reply}");

    publisher.publish("/arr/a", &json!("a")).await.unwrap();
    publisher.publish("/arr/b", &json!("b")).await.unwrap();
    let replies = connect(&browser, &client_id, "c1").await;
    let data: Vec<_> = deliveries_in(&replies)
        .iter()
        .map(|d| d["data"].clone())
        .collect();
    assert_eq!(data, [json!("a"), json!("b")], "{replies:?}");

    let reply = send_one(
        &browser,
        &client_id,
        "u",
        "/meta/unsubscribe",
        json!({"subscription": both}),
    )
    .await;
    assert_eq!(reply["successful"], true, "{reply}");
    assert_eq!(reply["subscription"], both, "{reply}");
    publisher.publish("/arr/a", &json!("a")).await.unwrap();
    publisher.publish("/arr/b", &json!("b")).await.unwrap();
    let replies = connect(&browser, &client_id, "c2").await;
    assert!(
        deliveries_in(&replies).is_empty(),
        "unsubscribed, yet: {replies:?}"
    );
}

#[tokio::test]
async fn disconnect_then_the_session_is_unknown() {
    let server = Server::start(&["--timeout", "1000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;

    let reply = send_one(&browser, &client_id, "d1", "/meta/disconnect", json!({})).await;
    assert_eq!(reply["channel"], "/meta/disconnect");
    assert_eq!(reply["successful"], true, "{reply}");

    let replies = connect(&browser, &client_id, "c1").await;
    let reply = reply_with_id(&replies, "c1");
    assert_eq!(reply["successful"], false, "{reply}");
    assert_eq!(reply["error"], "402::session_unknown", "{reply}");
    assert_eq!(reply["advice"]["reconnect"], "handshake", "{reply}");
}

#[tokio::test]
async fn any_path_under_the_endpoint_is_the_endpoint() {
    let server = Server::start(&["--timeout", "1000"]);
    let browser = server.browser();
    let hs = json!([{"id": "h", "channel": "/meta/handshake", "version": "1.0",
                     "supportedConnectionTypes": ["long-polling"]}]);
    let response = browser
        .raw_post_to(&format!("{}/handshake", server.url), hs.to_string())
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let replies = messages_of(&response);
    let client_id = reply_with_id(&replies, "h")["clientId"]
        .as_str()
        .unwrap()
        .to_owned();

    let connect = json!([{"id": "c", "channel": "/meta/connect", "clientId": client_id,
                          "connectionType": "long-polling", "advice": {"timeout": 0}}]);
    for suffix in ["/connect", "/anything/at/all"] {
        let response = browser
            .raw_post_to(&format!("{}{suffix}", server.url), connect.to_string())
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{suffix}: {}", response.text());
        assert_eq!(
            reply_with_id(&messages_of(&response), "c")["successful"],
            true
        );
    }
}
