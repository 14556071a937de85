//! What one client may make the node hold, through the engine on tokio's
//! paused clock: one handshake per request, handshakes per IP, the session
//! cap, channels per subscribe and per session, presence rooms and pages,
//! service calls under the publish rate, and history channels forgotten
//! whole after their max-age. Each reproduces an attack of issue 14 at a
//! small scale and checks the bounded outcome and its counter.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{decode_batch, BodyWriter};
use halley_server::config::ChannelHistory;
use halley_server::engine::Engine;
use halley_server::exchange::Origin;
use halley_server::state::limits::Limit;
use halley_server::state::session::ConnectionType;
use halley_server::transport::drive_http;
use halley_server::Config;
use serde_json::{json, Value};

/// Sessions are used without their browser cookie here (binding is not
/// what these tests are about).
fn base() -> Config {
    Config {
        trust_client_session: true,
        ..Config::default()
    }
}

/// One long-polling request from `peer`; its replies.
async fn from(engine: &Arc<Engine>, peer: &str, batch: &Value) -> Vec<Value> {
    let ip: IpAddr = peer.parse().unwrap();
    let body = serde_json::to_vec(batch).unwrap();
    let origin = Origin::http(ConnectionType::LongPolling, None).from_peer(Some(ip));
    let exchange = engine
        .handle_batch(decode_batch(&body).unwrap(), origin)
        .await;
    let mut body = BodyWriter::new();
    drive_http(engine, exchange, &mut body).await;
    serde_json::from_slice(&body.finish(b"")).unwrap()
}

fn handshake_message(id: usize) -> Value {
    json!({"id": id.to_string(), "channel": "/meta/handshake", "version": "1.0",
           "supportedConnectionTypes": ["long-polling"]})
}

async fn handshake(engine: &Arc<Engine>, peer: &str) -> Value {
    from(engine, peer, &json!([handshake_message(0)])).await[0].clone()
}

/// A session's clientId, from a fresh address each time (no rate limit).
async fn session(engine: &Arc<Engine>) -> String {
    let n = engine.node().sessions().len();
    let peer = format!("10.9.{}.{}", n / 250, n % 250);
    let reply = handshake(engine, &peer).await;
    assert_eq!(reply["successful"], true, "{reply}");
    reply["clientId"].as_str().unwrap().to_owned()
}

async fn send(engine: &Arc<Engine>, client_id: &str, mut message: Value) -> Value {
    message["clientId"] = json!(client_id);
    message["id"] = json!("m");
    let replies = from(engine, "10.0.0.1", &json!([message])).await;
    // The reply, not a delivery of the same message (which carries its id).
    replies
        .into_iter()
        .find(|r| r["id"] == "m" && r.get("successful").is_some())
        .expect("a reply")
}

#[tokio::test(start_paused = true)]
async fn a_request_carrying_many_handshakes_creates_one_session() {
    let engine = Engine::new(base());
    let batch: Vec<Value> = (0..1_000).map(handshake_message).collect();
    let replies = from(&engine, "10.0.0.1", &json!(batch)).await;
    assert_eq!(replies.len(), 1_000, "every handshake is answered");
    assert_eq!(replies[0]["successful"], true);
    assert!(replies[1..]
        .iter()
        .all(|r| r["error"] == "400::one_handshake_per_request"));
    assert_eq!(engine.node().sessions().len(), 1);
    assert_eq!(
        engine.node().limits().count(Limit::HandshakesPerRequest),
        999
    );
}

#[tokio::test(start_paused = true)]
async fn handshakes_from_one_ip_are_rate_limited_with_spread_retry_advice() {
    let engine = Engine::new(Config {
        handshake_rate_per_ip: 5.0,
        ..base()
    });
    let mut refused = Vec::new();
    for _ in 0..20 {
        let reply = handshake(&engine, "10.0.0.1").await;
        if reply["successful"] == false {
            refused.push(reply);
        }
    }
    assert_eq!(refused.len(), 15, "a burst of 5 went through");
    assert_eq!(refused[0]["error"], "429::handshake_rate_exceeded");
    assert_eq!(refused[0]["advice"]["reconnect"], "retry");
    let waits: std::collections::HashSet<i64> = refused
        .iter()
        .map(|r| r["advice"]["interval"].as_i64().unwrap())
        .collect();
    assert!(
        waits.iter().all(|w| (1_000..5_000).contains(w)),
        "{waits:?}"
    );
    assert!(waits.len() > 1, "the waits are spread: {waits:?}");
    assert_eq!(
        handshake(&engine, "10.0.0.2").await["successful"],
        true,
        "another address is not affected"
    );
    // IPv6: one /64 is one client.
    for i in 0..5 {
        let reply = handshake(&engine, &format!("2001:db8::{i}")).await;
        assert_eq!(reply["successful"], true);
    }
    assert_eq!(
        handshake(&engine, "2001:db8::ffff").await["successful"],
        false
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        handshake(&engine, "10.0.0.1").await["successful"],
        true,
        "the rate refills"
    );
    assert_eq!(engine.node().limits().count(Limit::HandshakeRate), 16);
}

#[tokio::test(start_paused = true)]
async fn the_session_cap_refuses_handshakes_until_sessions_end() {
    let engine = Engine::new(Config {
        max_sessions: 3,
        max_interval: 1_000,
        ..base()
    });
    let node = engine.node().clone();
    tokio::spawn(async move { node.run_sweeper().await });
    for _ in 0..3 {
        session(&engine).await;
    }
    let refused = handshake(&engine, "10.0.0.7").await;
    assert_eq!(refused["successful"], false);
    assert_eq!(refused["error"], "503::sessions_exhausted");
    assert_eq!(refused["advice"]["reconnect"], "retry");
    assert_eq!(engine.node().sessions().len(), 3);
    // Silent sessions expire; their places come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(engine.node().sessions().len(), 0);
    assert_eq!(handshake(&engine, "10.0.0.7").await["successful"], true);
    assert_eq!(engine.node().limits().count(Limit::Sessions), 1);
}

#[tokio::test(start_paused = true)]
async fn subscriptions_are_capped_per_message_and_per_session() {
    let engine = Engine::new(Config {
        max_channels_per_subscribe: 4,
        max_subscriptions_per_session: 6,
        ..base()
    });
    let id = session(&engine).await;
    let channels = |from: usize, n: usize| -> Vec<String> {
        (from..from + n).map(|i| format!("/c/{i}")).collect()
    };
    let subscribe = |list: Vec<String>| json!({"channel": "/meta/subscribe", "subscription": list});

    let too_many = send(&engine, &id, subscribe(channels(0, 5))).await;
    assert_eq!(too_many["error"], "400::too_many_channels", "{too_many}");
    assert_eq!(too_many["subscription"].as_array().unwrap().len(), 5);
    let ok = send(&engine, &id, subscribe(channels(0, 4))).await;
    assert_eq!(ok["successful"], true);
    // 4 held; 3 more (one already held) would make 6... and 4 more, 7.
    let over = send(&engine, &id, subscribe(channels(3, 4))).await;
    assert_eq!(over["error"], "403::too_many_subscriptions", "{over}");
    assert!(over["ext"]["halley"]["reason"]
        .as_str()
        .unwrap()
        .contains("max-subscriptions-per-session"));
    let fits = send(&engine, &id, subscribe(channels(3, 3))).await;
    assert_eq!(fits["successful"], true, "resubscribing costs nothing");
    let session = engine.node().sessions().get(&id).unwrap();
    assert_eq!(session.subscription_count(), 6, "all or nothing");
    let unsubscribe = json!({"channel": "/meta/unsubscribe", "subscription": "/c/0"});
    assert_eq!(send(&engine, &id, unsubscribe).await["successful"], true);
    let again = send(&engine, &id, subscribe(channels(100, 1))).await;
    assert_eq!(again["successful"], true, "an unsubscribe frees a place");
    let limits = engine.node().limits();
    assert_eq!(limits.count(Limit::ChannelsPerSubscribe), 1);
    assert_eq!(limits.count(Limit::SubscriptionsPerSession), 1);
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_presence_joins_writes_bounded_replies_and_rooms_are_capped() {
    let engine = Engine::new(Config {
        max_room_members: 150,
        ..base()
    });
    for i in 0..150 {
        let id = session(&engine).await;
        let join = json!({"channel": "/service/presence",
                          "data": {"action": "join", "room": "big", "name": format!("m{i:03}")}});
        assert_eq!(send(&engine, &id, join).await["successful"], true);
    }
    let late = session(&engine).await;
    let join = json!({"channel": "/service/presence",
                      "data": {"action": "join", "room": "big", "name": "late"}});
    let full = send(&engine, &late, join.clone()).await;
    assert_eq!(full["error"], "400::room_full", "{full}");
    assert_eq!(engine.node().limits().count(Limit::RoomMembers), 1);

    // A member's batch of 1,000 joins (renames) of the full room: each
    // reply carries one page, not the room.
    let member = session(&engine).await;
    let small = json!({"channel": "/service/presence",
                       "data": {"action": "join", "room": "small", "name": "x"}});
    send(&engine, &member, small).await;
    let batch: Vec<Value> = (0..1_000)
        .map(|i| {
            json!({"channel": "/service/presence", "clientId": late, "id": i.to_string(),
                   "data": {"action": "list", "room": "big"}})
        })
        .collect();
    let replies = from(&engine, "10.0.0.1", &json!(batch)).await;
    let bytes = serde_json::to_vec(&replies).unwrap().len();
    let page = &replies[0]["data"];
    assert_eq!(page["members"].as_array().unwrap().len(), 100);
    assert_eq!(page["count"], 150);
    assert_eq!(page["more"], true);
    assert!(bytes < 1_000 * 100 * 64, "{bytes} bytes");
    let rest = send(
        &engine,
        &late,
        json!({"channel": "/service/presence", "data": {"action": "list", "room": "big", "offset": 100}}),
    )
    .await;
    assert_eq!(rest["data"]["members"].as_array().unwrap().len(), 50);
}

#[tokio::test(start_paused = true)]
async fn service_calls_count_against_the_publish_rate() {
    let engine = Engine::new(Config {
        max_publish_rate: Some(3.0),
        ..base()
    });
    let id = session(&engine).await;
    let batch: Vec<Value> = (0..10)
        .map(|i| {
            json!({"channel": "/service/presence", "clientId": id, "id": i.to_string(),
                   "data": {"action": "join", "room": "lobby", "name": "ada"}})
        })
        .collect();
    let replies = from(&engine, "10.0.0.1", &json!(batch)).await;
    let refused = replies
        .iter()
        .filter(|r| r["error"] == "429::publish_rate_exceeded")
        .count();
    assert_eq!(refused, 7, "{replies:?}");
    assert_eq!(engine.node().limits().count(Limit::PublishRate), 7);
}

#[tokio::test(start_paused = true)]
async fn a_history_channel_older_than_its_max_age_is_forgotten_whole() {
    let engine = Engine::new(Config {
        history: vec![ChannelHistory {
            pattern: "/h/**".into(),
            max_messages: Some(10),
            max_age_ms: Some(2_000),
        }],
        ..base()
    });
    let node = engine.node().clone();
    tokio::spawn(async move { node.run_sweeper().await });
    let id = session(&engine).await;
    for i in 0..100 {
        let publish = json!({"channel": format!("/h/{i}"), "data": i});
        assert_eq!(send(&engine, &id, publish).await["successful"], true);
    }
    assert_eq!(engine.node().history_channels(), 100);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    send(&engine, &id, json!({"channel": "/h/0", "data": "again"})).await;
    // Past 2 s after the first publishes (swept every second), not after the last.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        engine.node().history_channels(),
        1,
        "only the channel published on within max-age is left"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(engine.node().history_channels(), 0);

    // A forgotten channel's ids go on: a client that saw id 1 of /h/5 gets
    // the next message, numbered above it.
    let watcher = session(&engine).await;
    let subscribe = json!({"channel": "/meta/subscribe", "subscription": "/h/5",
                           "ext": {"replay": {"/h/5": 1}}});
    let reply = send(&engine, &watcher, subscribe).await;
    assert_eq!(reply["successful"], true);
    assert_eq!(reply["ext"]["replay"]["gap"], true, "{reply}");
    send(&engine, &id, json!({"channel": "/h/5", "data": "new"})).await;
    let replies = from(
        &engine,
        "10.0.0.1",
        &json!([{"channel": "/meta/connect", "clientId": watcher, "connectionType": "long-polling"}]),
    )
    .await;
    let delivery = replies
        .iter()
        .find(|m| m["channel"] == "/h/5")
        .expect("the new message");
    assert!(
        delivery["ext"]["replay"]["id"].as_u64().unwrap() > 1,
        "{delivery}"
    );
}

#[tokio::test(start_paused = true)]
async fn data_nested_deeper_than_the_cap_is_refused_and_reaches_no_one() {
    let engine = Engine::new(Config {
        max_data_depth: 8,
        ..base()
    });
    let id = session(&engine).await;
    let subscribe = json!({"channel": "/meta/subscribe", "subscription": "/deep"});
    assert_eq!(send(&engine, &id, subscribe).await["successful"], true);
    let nested = |depth: usize| -> Value {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        serde_json::from_str(&text).unwrap()
    };
    let batch = json!([
        {"channel": "/deep", "clientId": id, "id": "ok", "data": nested(8)},
        {"channel": "/deep", "clientId": id, "id": "deep", "data": nested(9)},
        {"channel": "/service/echo", "clientId": id, "id": "echo", "data": nested(9)},
    ]);
    let replies = from(&engine, "10.0.0.1", &batch).await;
    let reply = |id: &str| {
        replies
            .iter()
            .find(|r| r["id"] == id && r.get("successful").is_some())
            .unwrap()
            .clone()
    };
    assert_eq!(reply("ok")["successful"], true);
    assert_eq!(reply("deep")["error"], "400::data_too_deep");
    assert_eq!(reply("echo")["error"], "400::data_too_deep");
    assert_eq!(engine.node().limits().count(Limit::DataDepth), 2);
    let delivered: Vec<&Value> = replies
        .iter()
        .filter(|m| m["channel"] == "/deep" && m.get("successful").is_none())
        .collect();
    assert_eq!(delivered.len(), 1, "only the allowed one: {replies:?}");
    assert_eq!(delivered[0]["id"], "ok");
}
