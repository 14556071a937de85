//! Every way a request can be wrong, and after each one the server still
//! serves other sessions.

mod common;

use common::*;
use halley_client::Client;
use serde_json::{json, Value};

/// A server and a healthy session that exists before the error.
async fn server_with_a_healthy_session(flags: &[&str]) -> (Server, Client) {
    let server = Server::start(flags);
    let (healthy, _) = server.connected_client().await;
    healthy.subscribe("/healthy").await.unwrap();
    (server, healthy)
}

/// A raw session: a browser and its clientId, first connect done.
async fn raw_session(server: &Server) -> (Client, String) {
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    (browser, client_id)
}

#[tokio::test]
async fn malformed_json_is_http_400() {
    let (server, healthy) = server_with_a_healthy_session(&[]).await;
    let browser = server.browser();
    for body in [
        r#"[{"channel":"/meta/handshake""#,
        "not json at all",
        "",
        "42",
        r#""a string""#,
    ] {
        let response = browser.raw_post(body.to_owned()).await.unwrap();
        assert_eq!(
            response.status,
            400,
            "body {body:?} answered: {}",
            response.text()
        );
    }
    assert_still_serves(&server, &healthy).await;
}

#[tokio::test]
async fn a_body_over_max_request_bytes_is_http_413() {
    let (server, healthy) = server_with_a_healthy_session(&["--max-request-bytes", "2048"]).await;
    let (browser, client_id) = raw_session(&server).await;
    let message = |size: usize| {
        json!([{"id": "big", "channel": "/service/echo", "clientId": client_id,
                "data": "x".repeat(size)}])
    };
    let response = post(&browser, &message(1500)).await;
    assert_eq!(response.status, 200, "under the limit: {}", response.text());
    let response = post(&browser, &message(4096)).await;
    assert_eq!(response.status, 413, "over the limit: {}", response.text());
    let response = post(&browser, &message(1 << 20)).await;
    assert_eq!(
        response.status,
        413,
        "far over the limit: {}",
        response.text()
    );
    assert_still_serves(&server, &healthy).await;
}

#[tokio::test]
async fn more_messages_than_max_batch_messages_is_an_error() {
    let (server, healthy) = server_with_a_healthy_session(&["--max-batch-messages", "5"]).await;
    let (browser, client_id) = raw_session(&server).await;
    let batch = |n: usize| {
        Value::Array(
            (0..n)
                .map(|i| {
                    json!({"id": format!("m{i}"), "channel": "/service/echo",
                                "clientId": client_id, "data": i})
                })
                .collect(),
        )
    };
    let replies = exchange(&browser, &batch(5)).await;
    assert_eq!(replies.len(), 5, "five is allowed: {replies:?}");
    let response = post(&browser, &batch(6)).await;
    let refused = response.status >= 400
        || (response.status == 200
            && messages_of(&response)
                .iter()
                .all(|m| m["successful"] == false && m["error"].is_string()));
    assert!(
        refused,
        "six messages answered HTTP {}: {}",
        response.status,
        response.text()
    );
    assert_still_serves(&server, &healthy).await;
}

#[tokio::test]
async fn an_unknown_client_id_is_402_session_unknown() {
    let (server, healthy) = server_with_a_healthy_session(&["--timeout", "1000"]).await;
    let browser = server.browser();
    handshake(&browser).await; // a browser cookie, but not for this id
    let unknown = "0123456789abcdef0123456789abcdef";
    let replies = exchange(
        &browser,
        &json!([{"id": "c", "channel": "/meta/connect", "clientId": unknown,
                 "connectionType": "long-polling"}]),
    )
    .await;
    let reply = reply_with_id(&replies, "c");
    assert_eq!(reply["successful"], false, "{reply}");
    assert_eq!(reply["error"], "402::session_unknown", "{reply}");
    assert_eq!(reply["advice"]["reconnect"], "handshake", "{reply}");

    for (id, channel, extra) in [
        ("s", "/meta/subscribe", json!({"subscription": "/x"})),
        ("u", "/meta/unsubscribe", json!({"subscription": "/x"})),
        ("p", "/x", json!({"data": 1})),
        ("e", "/service/echo", json!({"data": 1})),
    ] {
        let reply = send_one(&browser, unknown, id, channel, extra).await;
        assert_eq!(reply["successful"], false, "{channel}: {reply}");
        assert_eq!(reply["error"], "402::session_unknown", "{channel}: {reply}");
        assert_eq!(
            reply["advice"]["reconnect"], "handshake",
            "{channel}: {reply}"
        );
    }
    // No clientId at all.
    let replies = exchange(&browser, &json!([{"id": "n", "channel": "/x", "data": 1}])).await;
    let reply = reply_with_id(&replies, "n");
    assert_eq!(reply["successful"], false, "{reply}");
    assert!(
        reply["error"].as_str().unwrap_or("").starts_with("402:"),
        "{reply}"
    );
    assert_still_serves(&server, &healthy).await;
}

#[tokio::test]
async fn invalid_channel_names_are_405_channel_invalid() {
    let (server, healthy) = server_with_a_healthy_session(&[]).await;
    let (browser, client_id) = raw_session(&server).await;
    let mut batch = Vec::new();
    let mut expected_invalid = Vec::new();
    for (i, channel) in [
        "/a b",
        "nochannel",
        "/a//b",
        "/a/",
        "/",
        "/a/*",
        "/a/**",
        "/a.b",
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("p{i}");
        batch.push(json!({"id": id, "channel": channel, "clientId": client_id, "data": 1}));
        expected_invalid.push((id, format!("publish to {channel:?}")));
    }
    for (i, pattern) in ["/a b", "/*/a", "/a/b*", "relative", "/a//b", "/a/***"]
        .into_iter()
        .enumerate()
    {
        let id = format!("s{i}");
        batch.push(
            json!({"id": id, "channel": "/meta/subscribe", "clientId": client_id,
                          "subscription": pattern}),
        );
        expected_invalid.push((id, format!("subscribe to {pattern:?}")));
    }
    // One good message in the middle of the bad ones.
    batch.push(
        json!({"id": "good", "channel": "/service/echo", "clientId": client_id, "data": "ok"}),
    );
    let replies = exchange(&browser, &Value::Array(batch)).await;
    for (id, what) in expected_invalid {
        let reply = reply_with_id(&replies, &id);
        assert_eq!(reply["successful"], false, "{what}: {reply}");
        assert_eq!(reply["error"], "405::channel_invalid", "{what}: {reply}");
    }
    let good = reply_with_id(&replies, "good");
    assert_eq!(good["successful"], true, "{good}");
    assert_eq!(good["data"], "ok");
    assert_still_serves(&server, &healthy).await;
}

#[tokio::test]
async fn publishing_or_subscribing_to_meta_channels_is_403() {
    let (server, healthy) = server_with_a_healthy_session(&[]).await;
    let (browser, client_id) = raw_session(&server).await;
    let mut wrong = Vec::new();
    for (id, channel, extra) in [
        ("p1", "/meta/custom", json!({"data": {"x": 1}})),
        ("p2", "/meta/foo/bar", json!({"data": 1})),
        ("s1", "/meta/subscribe", json!({"subscription": "/meta/**"})),
        (
            "s2",
            "/meta/subscribe",
            json!({"subscription": "/meta/connect"}),
        ),
        ("s3", "/meta/subscribe", json!({"subscription": "/meta/*"})),
        (
            "s4",
            "/meta/subscribe",
            json!({"subscription": ["/ok", "/meta/handshake"]}),
        ),
    ] {
        let reply = send_one(&browser, &client_id, id, channel, extra.clone()).await;
        if reply["successful"] != false
            || !reply["error"].as_str().unwrap_or("").starts_with("403:")
        {
            wrong.push(format!("{channel} {extra} -> {reply}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected 403 refusals, got:\n{}",
        wrong.join("\n")
    );
    // And through the client: an error value with the server's string.
    let err = healthy.subscribe("/meta/**").await.unwrap_err();
    assert_eq!(
        err.server_error().and_then(|e| e.code()),
        Some(403),
        "{err}"
    );
    let err = healthy
        .publish("/meta/custom", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.server_error().and_then(|e| e.code()),
        Some(403),
        "{err}"
    );
    assert_still_serves(&server, &healthy).await;
}

#[tokio::test]
async fn a_message_without_channel_is_400_channel_missing() {
    let (server, healthy) = server_with_a_healthy_session(&[]).await;
    let (browser, client_id) = raw_session(&server).await;
    let replies = exchange(
        &browser,
        &json!([{"id": "m1", "clientId": client_id, "data": {}},
                {"id": "m2", "channel": "/service/echo", "clientId": client_id, "data": 2}]),
    )
    .await;
    let reply = reply_with_id(&replies, "m1");
    assert_eq!(reply["successful"], false, "{reply}");
    assert_eq!(reply["error"], "400::channel_missing", "{reply}");
    assert_eq!(reply_with_id(&replies, "m2")["successful"], true);
    assert_still_serves(&server, &healthy).await;
}

#[tokio::test]
async fn subscribe_without_subscription_is_403_subscription_missing() {
    let (server, healthy) = server_with_a_healthy_session(&[]).await;
    let (browser, client_id) = raw_session(&server).await;
    for (id, channel) in [("s", "/meta/subscribe"), ("u", "/meta/unsubscribe")] {
        let reply = send_one(&browser, &client_id, id, channel, json!({})).await;
        assert_eq!(reply["channel"], channel, "{reply}");
        assert_eq!(reply["successful"], false, "{reply}");
        assert_eq!(reply["error"], "403::subscription_missing", "{reply}");
    }
    assert_still_serves(&server, &healthy).await;
}

#[tokio::test]
async fn an_object_as_message_id_is_405_message_id_invalid() {
    let (server, healthy) = server_with_a_healthy_session(&[]).await;
    let (browser, client_id) = raw_session(&server).await;
    let replies = exchange(
        &browser,
        &json!([{"id": {"not": "an id"}, "channel": "/service/echo", "clientId": client_id,
                 "data": 1}]),
    )
    .await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["successful"], false, "{replies:?}");
    assert_eq!(
        replies[0]["error"], "405::message_id_invalid",
        "{replies:?}"
    );
    assert_still_serves(&server, &healthy).await;
}
