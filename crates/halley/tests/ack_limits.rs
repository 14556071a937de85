//! The ack extension against the queue limits, at the wire level.
//!
//! Regression tests for two bugs found while writing the client's ack
//! support: re-sent batches must follow the overflow policy, and a client
//! that never acknowledges must cost bounded memory.

mod common;

use common::{deliveries_in, exchange, reply_with_id, send_one, Server};
use halley_client::Client;
use serde_json::{json, Value};

/// A long-polling handshake asking for acks; the clientId.
async fn handshake_with_ack(browser: &Client) -> String {
    let replies = exchange(
        browser,
        &json!([{"id": "hs", "channel": "/meta/handshake", "version": "1.0",
                 "supportedConnectionTypes": ["long-polling"], "ext": {"ack": true}}]),
    )
    .await;
    let reply = reply_with_id(&replies, "hs");
    assert_eq!(reply["ext"]["ack"], true, "{reply}");
    reply["clientId"].as_str().unwrap().to_owned()
}

/// A connect answered at once, acknowledging `ack` (or saying nothing);
/// the numbers delivered and the reply.
async fn connect(
    browser: &Client,
    client_id: &str,
    id: &str,
    ack: Option<u64>,
) -> (Vec<u64>, Value) {
    let mut message = json!({"id": id, "channel": "/meta/connect", "clientId": client_id,
                             "connectionType": "long-polling", "advice": {"timeout": 0}});
    if let Some(ack) = ack {
        message["ext"] = json!({"ack": ack});
    }
    let replies = exchange(browser, &json!([message])).await;
    let numbers = deliveries_in(&replies)
        .iter()
        .map(|d| d["data"]["n"].as_u64().unwrap())
        .collect();
    (numbers, reply_with_id(&replies, id).clone())
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// A lost batch re-queued in front of a full outbox follows the overflow
/// policy: under `drop-newest` the re-sent deliveries are kept; under
/// `disconnect` the session ends (402, re-handshake) rather than lose them.
/// (The bug: `requeue_front` dropped the re-sent ones whatever the policy,
/// and the reply said `successful: true` with only 10..19.)
#[tokio::test]
async fn a_lost_batch_that_no_longer_fits_follows_the_overflow_policy() {
    for policy in ["drop-newest", "disconnect"] {
        let server = Server::start(&["--max-queue", "10", "--overflow-policy", policy]);
        let browser = server.browser();
        let client_id = handshake_with_ack(&browser).await;
        let (_, reply) = connect(&browser, &client_id, "c1", Some(0)).await;
        assert_eq!(reply["ext"]["ack"], 1);
        send_one(
            &browser,
            &client_id,
            "s",
            "/meta/subscribe",
            json!({"subscription": "/q"}),
        )
        .await;
        let (publisher, _) = server.connected_client().await;
        for n in 0..10 {
            publisher.publish("/q", &json!({"n": n})).await.unwrap();
        }
        // Batch 2 carries 0..9; say it was lost on the way.
        let (numbers, reply) = connect(&browser, &client_id, "c2", Some(1)).await;
        assert_eq!(numbers, (0..10).collect::<Vec<_>>());
        assert_eq!(reply["ext"]["ack"], 2);
        // The outbox fills up again (to its limit, no overflow yet).
        for n in 10..20 {
            publisher.publish("/q", &json!({"n": n})).await.unwrap();
        }
        // The client acknowledges batch 1 only: 0..9 must come back, or the
        // policy must say why not.
        let (numbers, reply) = connect(&browser, &client_id, "c3", Some(1)).await;
        match policy {
            "drop-newest" => assert_eq!(
                numbers,
                (0..10).collect::<Vec<_>>(),
                "{policy}: what was queued first is kept; {reply}"
            ),
            _ => assert_eq!(
                reply["successful"], false,
                "{policy}: the session ends rather than lose 0..9; got {numbers:?}, {reply}"
            ),
        }
    }
}

/// A session that negotiated acks but whose connects carry no `ext.ack`
/// (a client that asked for the extension and then does not speak it)
/// must not make the server keep every delivery it was ever sent. (The bug:
/// 50,000 deliveries of ~1.1 KB took RSS from 16 to 86 MiB with
/// `--max-queue 1000`, growing linearly.)
#[tokio::test]
async fn unacknowledged_batches_are_bounded_when_the_client_never_acknowledges() {
    let server = Server::start(&["--max-queue", "1000"]);
    let browser = server.browser();
    let client_id = handshake_with_ack(&browser).await;
    connect(&browser, &client_id, "c0", Some(0)).await;
    send_one(
        &browser,
        &client_id,
        "s",
        "/meta/subscribe",
        json!({"subscription": "/q"}),
    )
    .await;
    let (publisher, _) = server.connected_client().await;
    let publisher_id = publisher.client_id().unwrap();
    let before = rss_mib(server.pid());
    let pad = "x".repeat(1024);
    let mut received = 0;
    for k in 0..100u64 {
        let batch: Vec<Value> = (0..500)
            .map(|i| {
                json!({"id": format!("p{i}"), "channel": "/q", "clientId": publisher_id,
                       "data": {"n": k * 500 + i, "pad": pad}})
            })
            .collect();
        let response = publisher
            .raw_post(Value::Array(batch).to_string())
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        let (numbers, _) = connect(&browser, &client_id, &format!("c{k}"), None).await;
        received += numbers.len();
    }
    let after = rss_mib(server.pid());
    assert_eq!(received, 50_000);
    assert!(
        after - before < 30,
        "RSS {before} -> {after} MiB for 50,000 deliveries the client received"
    );
}
