//! `/service/presence` driven through the engine, on tokio's paused clock:
//! join, list, leave, and members removed when their session disconnects or
//! expires (the session-ended hook).

mod common;

use std::sync::Arc;
use std::time::Duration;

use halley_server::engine::Engine;
use halley_server::Config;
use serde_json::{json, Value};

/// A socket-less long-polling client: every batch returns the replies plus
/// the deliveries that piggyback on them (no held connects here).
struct Client {
    engine: Arc<Engine>,
    browser: Option<String>,
    client_id: Value,
}

impl Client {
    async fn handshake(engine: &Arc<Engine>) -> Self {
        let mut client = Client {
            engine: engine.clone(),
            browser: None,
            client_id: Value::Null,
        };
        let replies = client
            .send(json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]))
            .await;
        client.client_id = replies[0]["clientId"].clone();
        client
    }

    async fn send(&mut self, batch: Value) -> Vec<Value> {
        common::exchange(&self.engine, &mut self.browser, &batch).await
    }

    /// Sends one message with this client's id; returns (deliveries, reply).
    async fn one(&mut self, mut message: Value) -> (Vec<Value>, Value) {
        message["clientId"] = self.client_id.clone();
        message["id"] = json!("1");
        let mut out = self.send(json!([message])).await;
        let reply = out.pop().unwrap();
        (out, reply)
    }

    async fn presence(&mut self, data: Value) -> Value {
        let (_, reply) = self
            .one(json!({"channel":"/service/presence","data":data}))
            .await;
        reply
    }

    async fn subscribe(&mut self, channel: &str) {
        let (_, reply) = self
            .one(json!({"channel":"/meta/subscribe","subscription":channel}))
            .await;
        assert_eq!(reply["successful"], true, "{reply}");
    }

    /// Deliveries queued for this client (piggybacked on a harmless publish).
    async fn deliveries(&mut self) -> Vec<Value> {
        let (deliveries, _) = self
            .one(json!({"channel":"/service/echo","data":null}))
            .await;
        deliveries
    }
}

fn names(members: &Value) -> Vec<&str> {
    members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn join_list_and_leave_are_answered_and_broadcast() {
    let engine = Engine::new(Config::default());
    let mut ada = Client::handshake(&engine).await;
    let mut bob = Client::handshake(&engine).await;
    ada.subscribe("/presence/lobby").await;

    let (own_event, joined) = ada
        .one(json!({"channel":"/service/presence","data":{"action":"join","room":"lobby","name":"ada"}}))
        .await;
    assert_eq!(joined["successful"], true, "{joined}");
    assert_eq!(joined["id"], "1");
    let ada_id = joined["data"]["you"].as_str().unwrap().to_owned();
    assert_eq!(names(&joined["data"]["members"]), ["ada"]);

    let joined = bob
        .presence(json!({"action":"join","room":"lobby","name":"  bob "}))
        .await;
    assert_eq!(names(&joined["data"]["members"]), ["ada", "bob"]);
    let bob_id = joined["data"]["you"].as_str().unwrap().to_owned();
    assert_ne!(ada_id, bob_id);

    // Ada's own join rode on the reply to her request; Bob's came later.
    let events: Vec<Value> = own_event
        .into_iter()
        .chain(ada.deliveries().await)
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["channel"], "/presence/lobby");
    assert_eq!(
        events[0]["data"],
        json!({"room":"lobby","event":"join","member":{"id":ada_id,"name":"ada"},"count":1})
    );
    assert_eq!(
        events[1]["data"],
        json!({"room":"lobby","event":"join","member":{"id":bob_id,"name":"bob"},"count":2})
    );
    let text = serde_json::to_string(&events).unwrap();
    for id in [&ada.client_id, &bob.client_id] {
        assert!(
            !text.contains(id.as_str().unwrap()),
            "no clientId in broadcasts"
        );
    }

    let listed = bob.presence(json!({"action":"list","room":"lobby"})).await;
    assert_eq!(names(&listed["data"]["members"]), ["ada", "bob"]);

    let left = bob.presence(json!({"action":"leave","room":"lobby"})).await;
    assert_eq!(left["data"], json!({"room":"lobby","left":true}));
    let again = bob.presence(json!({"action":"leave","room":"lobby"})).await;
    assert_eq!(again["data"]["left"], false);
    let events = ada.deliveries().await;
    assert_eq!(
        events[0]["data"],
        json!({"room":"lobby","event":"leave","member":{"id":bob_id,"name":"bob"},"reason":"left","count":1})
    );
}

#[tokio::test(start_paused = true)]
async fn bad_requests_get_400_replies() {
    let engine = Engine::new(Config::default());
    let mut ada = Client::handshake(&engine).await;
    for (data, error) in [
        (
            json!({"action":"join","room":"a/b","name":"ada"}),
            "400::room_invalid",
        ),
        (
            json!({"action":"join","room":"*","name":"ada"}),
            "400::room_invalid",
        ),
        (
            json!({"action":"join","room":"lobby","name":" "}),
            "400::name_invalid",
        ),
        (
            json!({"action":"dance","room":"lobby"}),
            "400::action_unknown",
        ),
        (json!({"room":"lobby"}), "400::request_invalid"),
        (json!("join"), "400::request_invalid"),
    ] {
        let reply = ada.presence(data.clone()).await;
        assert_eq!(reply["successful"], false, "{data}");
        assert_eq!(reply["error"], error, "{data}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_disconnected_member_leaves_every_room() {
    let engine = Engine::new(Config::default());
    let mut ada = Client::handshake(&engine).await;
    let mut bob = Client::handshake(&engine).await;
    ada.subscribe("/presence/*").await;
    for room in ["lobby", "games"] {
        bob.presence(json!({"action":"join","room":room,"name":"bob"}))
            .await;
    }
    ada.deliveries().await;
    let (_, reply) = bob.one(json!({"channel":"/meta/disconnect"})).await;
    assert_eq!(reply["successful"], true);

    let events = ada.deliveries().await;
    let mut rooms: Vec<&str> = events
        .iter()
        .map(|e| {
            assert_eq!(e["data"]["event"], "leave");
            assert_eq!(e["data"]["reason"], "disconnected");
            assert_eq!(e["data"]["count"], 0);
            e["data"]["room"].as_str().unwrap()
        })
        .collect();
    rooms.sort();
    assert_eq!(rooms, ["games", "lobby"]);
    let listed = ada.presence(json!({"action":"list","room":"lobby"})).await;
    assert_eq!(listed["data"]["members"], json!([]));
}

#[tokio::test(start_paused = true)]
async fn an_expired_member_leaves_with_reason_expired() {
    let engine = Engine::new(Config {
        max_interval: 2_000,
        sweep_period: 100,
        ..Config::default()
    });
    let sweeper = tokio::spawn({
        let engine = engine.clone();
        async move { engine.node().run_sweeper().await }
    });
    let mut ada = Client::handshake(&engine).await;
    let mut bob = Client::handshake(&engine).await;
    ada.subscribe("/presence/lobby").await;
    bob.presence(json!({"action":"join","room":"lobby","name":"bob"}))
        .await;
    ada.deliveries().await;

    // Bob's tab is gone; ada keeps showing signs of life every 600 ms of
    // virtual time (the sleep is the scenario's time passing) and looks for
    // his leave, which the sweeper sends once his 2 s are up.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let events = ada.deliveries().await;
        if let Some(event) = events.first() {
            assert_eq!(event["data"]["event"], "leave");
            assert_eq!(event["data"]["member"]["name"], "bob");
            assert_eq!(event["data"]["reason"], "expired");
            assert_eq!(engine.node().sessions().len(), 1, "only ada is left");
            engine.node().shutdown().trigger();
            sweeper.await.unwrap();
            return;
        }
    }
    panic!("bob was never removed");
}

#[tokio::test(start_paused = true)]
async fn a_session_that_ended_cannot_join() {
    let engine = Engine::new(Config::default());
    let mut ada = Client::handshake(&engine).await;
    let id = ada.client_id.clone();
    ada.one(json!({"channel":"/meta/disconnect"})).await;
    ada.client_id = id;
    let reply = ada
        .presence(json!({"action":"join","room":"lobby","name":"ada"}))
        .await;
    assert_eq!(reply["error"], "402::session_unknown");
}
