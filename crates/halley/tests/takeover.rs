//! Sessions that survive their node: a client's requests may reach any node
//! of the cluster (a non-sticky balancer, a dead node), and it keeps its
//! clientId, its subscriptions and every message. Real `redis-server` and
//! `halley serve` processes on free ports; a test returns early, saying
//! so, when `redis-server` is not installed outside CI.

mod common;

use common::{eventually, within, Redis, Server};
use serde_json::{json, Value};

fn node(redis: &Redis, id: &str) -> Server {
    Server::start(&[
        "--redis",
        redis.url.as_str(),
        "--node-id",
        id,
        "--api-key",
        "takeover-test-api-key",
        // A held connect with nothing to deliver returns within a second.
        "--timeout",
        "1000",
    ])
}

/// One browser (one cookie jar for 127.0.0.1, whatever the port) that
/// sends each request to the node it is told.
struct Browser {
    http: reqwest::Client,
}

impl Browser {
    fn new() -> Self {
        Browser {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, node: &Server, body: Value) -> Vec<Value> {
        let response = self
            .http
            .post(&node.url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("a Bayeux request");
        assert_eq!(response.status(), 200);
        serde_json::from_str(&response.text().await.unwrap()).expect("a JSON array")
    }

    /// Handshake on `node` (with the ack extension when `ack`): the clientId.
    async fn handshake(&self, node: &Server, ack: bool) -> String {
        let ext = if ack { json!({"ack": true}) } else { json!({}) };
        let replies = self
            .send(
                node,
                json!([{"id": "hs", "channel": "/meta/handshake", "version": "1.0",
                        "supportedConnectionTypes": ["long-polling"], "ext": ext}]),
            )
            .await;
        assert_eq!(replies[0]["successful"], true, "{replies:?}");
        replies[0]["clientId"].as_str().unwrap().to_owned()
    }

    async fn subscribe(&self, node: &Server, client_id: &str, channel: &str) {
        let replies = self
            .send(
                node,
                json!([{"id": "s", "channel": "/meta/subscribe", "clientId": client_id,
                        "subscription": channel}]),
            )
            .await;
        let reply = replies.iter().find(|m| m["id"] == "s").unwrap();
        assert_eq!(reply["successful"], true, "{replies:?}");
    }

    /// A connect on `node` (acknowledging `ack` when given): the connect
    /// reply and the deliveries' data.
    async fn connect(
        &self,
        node: &Server,
        client_id: &str,
        ack: Option<u64>,
    ) -> (Value, Vec<Value>) {
        let mut connect = json!({"id": "c", "channel": "/meta/connect", "clientId": client_id,
                                 "connectionType": "long-polling"});
        if let Some(ack) = ack {
            connect["ext"] = json!({ "ack": ack });
        }
        let replies = self.send(node, json!([connect])).await;
        let reply = replies
            .iter()
            .find(|m| m["channel"] == "/meta/connect")
            .cloned()
            .unwrap();
        assert_eq!(
            reply["successful"], true,
            "the session lives on, wherever the request lands: {replies:?}"
        );
        let data = replies
            .iter()
            .filter(|m| m.get("successful").is_none())
            .map(|m| m["data"].clone())
            .collect();
        (reply, data)
    }
}

async fn api_publish(node: &Server, data: Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/publish", node.origin))
        .bearer_auth("takeover-test-api-key")
        .header("content-type", "application/json")
        .body(json!({ "channel": "/chat/room", "data": data }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Connects (without acks) on `node` until `got` holds `count` numbers.
async fn collect(
    browser: &Browser,
    node: &Server,
    client_id: &str,
    got: &mut Vec<u64>,
    count: usize,
    what: &str,
) {
    within(30.0, what, async {
        while got.len() < count {
            got.extend(numbers(&browser.connect(node, client_id, None).await.1));
        }
    })
    .await;
}

fn numbers(data: &[Value]) -> Vec<u64> {
    data.iter().map(|d| d["n"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn long_polling_without_sticky_sessions_every_request_on_the_next_node() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let nodes = [node(&redis, "a"), node(&redis, "b"), node(&redis, "c")];
    let browser = Browser::new();
    // Round robin, as a balancer without stickiness: handshake on A,
    // subscribe on B, then each connect on the next node.
    let client_id = browser.handshake(&nodes[0], false).await;
    browser.subscribe(&nodes[1], &client_id, "/chat/room").await;
    const N: u64 = 30;
    let mut got = Vec::new();
    let mut turn = 2;
    for n in 0..N {
        api_publish(&nodes[(n % 3) as usize], json!({ "n": n })).await;
        let (_, data) = browser.connect(&nodes[turn % 3], &client_id, None).await;
        got.extend(numbers(&data));
        turn += 1;
    }
    within(30.0, "every message", async {
        while got.len() < N as usize {
            let (_, data) = browser.connect(&nodes[turn % 3], &client_id, None).await;
            got.extend(numbers(&data));
            turn += 1;
        }
    })
    .await;
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "each message once, in order, though the session moved at every connect"
    );
    // The same clientId all along, and one more round finds nothing new.
    let (_, data) = browser.connect(&nodes[turn % 3], &client_id, None).await;
    assert!(data.is_empty(), "nothing twice: {data:?}");
    // Every request on another node than the last one was a takeover from
    // a live owner, which let go.
    let mut released = 0.0;
    for node in &nodes {
        released += node.metric("halley_takeovers_total").await;
        assert!(node.metric("halley_takeover_seconds_count").await > 0.0);
    }
    assert!(
        released >= (turn - 1) as f64,
        "{released} takeovers for {turn} requests"
    );
}

#[tokio::test]
async fn with_acks_a_node_killed_loses_nothing_and_repeats_nothing() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let mut a = node(&redis, "a");
    let b = node(&redis, "b");
    let browser = Browser::new();
    let client_id = browser.handshake(&a, true).await;
    browser.subscribe(&a, &client_id, "/chat/room").await;
    let (reply, _) = browser.connect(&a, &client_id, None).await;
    let mut acked = reply["ext"]["ack"].as_u64().expect("a batch number");

    // 0..10 received and acknowledged on A.
    for n in 0..10 {
        api_publish(&b, json!({ "n": n })).await;
    }
    let mut got = Vec::new();
    within(30.0, "the first ten on A", async {
        while got.len() < 10 {
            let (reply, data) = browser.connect(&a, &client_id, Some(acked)).await;
            acked = reply["ext"]["ack"].as_u64().unwrap();
            got.extend(numbers(&data));
        }
    })
    .await;
    // 10..20: A sends some of them in a reply the client never reads (the
    // node dies as it writes), then A is killed without notice.
    for n in 10..20 {
        api_publish(&b, json!({ "n": n })).await;
    }
    let (_, lost) = browser.connect(&a, &client_id, Some(acked)).await;
    a.kill();
    for n in 20..30 {
        api_publish(&b, json!({ "n": n })).await;
    }
    // The client goes on on B with what it acknowledged on A.
    within(30.0, "the rest on B", async {
        while got.len() < 30 {
            let (reply, data) = browser.connect(&b, &client_id, Some(acked)).await;
            acked = reply["ext"]["ack"].as_u64().unwrap();
            got.extend(numbers(&data));
        }
    })
    .await;
    assert_eq!(
        got,
        (0..30).collect::<Vec<_>>(),
        "exactly once, in order (A's unread reply had {} of them)",
        lost.len()
    );
    let (_, data) = browser.connect(&b, &client_id, Some(acked)).await;
    assert!(data.is_empty(), "nothing twice: {data:?}");
}

#[tokio::test]
async fn after_redis_lost_its_data_sessions_are_written_again_and_can_still_move() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let browser = Browser::new();
    let client_id = browser.handshake(&a, false).await;
    browser.subscribe(&a, &client_id, "/chat/room").await;
    for n in 0..5 {
        api_publish(&a, json!({ "n": n })).await;
    }
    let mut got = Vec::new();
    collect(&browser, &a, &client_id, &mut got, 5, "the first five").await;
    let offset = |redis: &Redis| -> u64 {
        redis.command("INCRBY halley:offset 0")[1..]
            .parse()
            .unwrap()
    };
    let before = offset(&redis);
    assert!(before >= 5, "{before}");

    // Redis restarts empty: no records, no log, no counter.
    let port = redis.port;
    redis.kill();
    a.logged("Redis lost").await;
    let redis = Redis::start_on(port);
    a.logged("Redis is back").await;
    b.logged("Redis is back").await;
    // The owner writes its sessions again within a few seconds.
    let key = format!("EXISTS halley:session:{client_id}");
    within(30.0, "the record written again", async {
        while redis.command(&key) != ":1" {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await; // polling Redis
        }
    })
    .await;
    assert!(
        offset(&redis) >= before,
        "the counter goes on from where the cluster was, not from 1"
    );
    // The session moves to B and goes on.
    for n in 5..10 {
        api_publish(&b, json!({ "n": n })).await;
    }
    collect(
        &browser,
        &b,
        &client_id,
        &mut got,
        10,
        "the next five, on B",
    )
    .await;
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_node_stopping_writes_where_its_clients_stand_so_nothing_comes_twice() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let mut a = node(&redis, "a");
    let b = node(&redis, "b");
    let browser = Browser::new();
    // No ack extension: what the client has is what its node wrote.
    let client_id = browser.handshake(&a, false).await;
    browser.subscribe(&a, &client_id, "/chat/room").await;
    for n in 0..5 {
        api_publish(&b, json!({ "n": n })).await;
    }
    let mut got = Vec::new();
    collect(&browser, &a, &client_id, &mut got, 5, "the first five on A").await;
    let status = a.terminate(std::time::Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    for n in 5..10 {
        api_publish(&b, json!({ "n": n })).await;
    }
    collect(&browser, &b, &client_id, &mut got, 10, "the rest on B").await;
    assert_eq!(
        got,
        (0..10).collect::<Vec<_>>(),
        "nothing twice, nothing lost"
    );
}

/// A connect that lands on a node that has just taken its session over is
/// held like any other, not answered at once as a session's first: else a
/// client behind a round-robin balancer polls without pause, each connect
/// one more takeover on the next node.
#[tokio::test]
async fn a_connect_after_a_takeover_is_held_until_there_is_something_to_deliver() {
    let Some(redis) = Redis::start() else {
        return;
    };
    // Connects held for long: a reply before the publish below is one
    // that was not held.
    let node = |id: &str| {
        Server::start(&[
            "--redis",
            redis.url.as_str(),
            "--node-id",
            id,
            "--api-key",
            "takeover-test-api-key",
            "--timeout",
            "60000",
        ])
    };
    let (a, b) = (node("a"), node("b"));
    let browser = Browser::new();
    let client_id = browser.handshake(&a, false).await;
    browser.subscribe(&a, &client_id, "/chat/room").await;
    let (_, data) = browser.connect(&a, &client_id, None).await;
    assert!(data.is_empty(), "the first connect, answered at once");

    // The next connect goes to B, which takes the session over; only once
    // B owns it (Redis says so) is the message published.
    let owned_by_b = format!(
        "EVAL \"return redis.call('HGET', KEYS[1], 'node') == 'b' and 1 or 0\" 1 halley:session:{client_id}"
    );
    let publish = async {
        eventually(30.0, "B to own the session", || {
            redis.command(&owned_by_b) == ":1"
        })
        .await;
        api_publish(&a, json!({ "n": 1 })).await;
    };
    let ((_, data), ()) = tokio::join!(browser.connect(&b, &client_id, None), publish);
    assert_eq!(
        numbers(&data),
        vec![1],
        "the connect on B was held until the message came"
    );
}

#[tokio::test]
async fn two_requests_of_one_client_on_two_nodes_leave_one_owner() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let nodes = [node(&redis, "a"), node(&redis, "b"), node(&redis, "c")];
    for round in 0..5 {
        let browser = Browser::new();
        let client_id = browser.handshake(&nodes[0], false).await;
        // As CometD does after its handshake: the subscribe and the first
        // connect at once, on two connections, which a round-robin
        // balancer sends to two other nodes.
        let subscribe = browser.send(
            &nodes[1],
            json!([{"id": "s", "channel": "/meta/subscribe", "clientId": client_id,
                    "subscription": "/chat/room"}]),
        );
        let connect = browser.send(
            &nodes[2],
            json!([{"id": "c", "channel": "/meta/connect", "clientId": client_id,
                    "connectionType": "long-polling", "advice": {"timeout": 0}}]),
        );
        let (subscribed, connected) = tokio::join!(subscribe, connect);
        assert_eq!(
            subscribed[0]["successful"], true,
            "round {round}: {subscribed:?}"
        );
        let connected = connected
            .iter()
            .find(|m| m["channel"] == "/meta/connect")
            .unwrap();
        assert_eq!(connected["successful"], true, "round {round}: {connected}");
        // One node holds it, subscribed: a message reaches it once.
        api_publish(&nodes[0], json!({ "n": round })).await;
        let mut got = Vec::new();
        within(30.0, "the message", async {
            while got.is_empty() {
                got.extend(numbers(
                    &browser
                        .connect(&nodes[round as usize % 3], &client_id, None)
                        .await
                        .1,
                ));
            }
        })
        .await;
        assert_eq!(got, vec![round], "round {round}");
        let mut holders = 0;
        for node in &nodes {
            // `halley_sessions` is set at scrape: the sessions each node holds.
            holders += node.metric("halley_sessions").await as u64;
        }
        assert_eq!(holders, round + 1, "one session per round, each held once");
    }
}

#[tokio::test]
async fn without_redis_a_request_for_another_nodes_session_is_told_to_retry() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let browser = Browser::new();
    let client_id = browser.handshake(&a, false).await;
    redis.kill();
    b.logged("Redis lost").await;
    a.logged("Redis lost").await;
    // B cannot ask who holds it: not "unknown" (which makes the client
    // handshake again and lose its subscriptions), but "retry".
    let replies = browser
        .send(
            &b,
            json!([{"id": "c", "channel": "/meta/connect", "clientId": client_id,
                    "connectionType": "long-polling"}]),
        )
        .await;
    assert_eq!(replies[0]["successful"], false, "{replies:?}");
    assert_eq!(
        replies[0]["error"], "503::broker_unavailable",
        "{replies:?}"
    );
    assert_eq!(replies[0]["advice"]["reconnect"], "retry", "{replies:?}");
    // Nor a new session no other node could find.
    let refused = browser
        .send(
            &b,
            json!([{"id": "hs", "channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"]}]),
        )
        .await;
    assert_eq!(refused[0]["successful"], false, "{refused:?}");
    assert_eq!(
        refused[0]["error"], "503::broker_unavailable",
        "{refused:?}"
    );
    assert_eq!(refused[0]["advice"]["reconnect"], "retry", "{refused:?}");
    // Its own node still serves it.
    let (reply, _) = browser.connect(&a, &client_id, None).await;
    assert_eq!(reply["successful"], true);
}
