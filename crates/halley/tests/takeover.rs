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
    cookies: std::sync::Arc<reqwest::cookie::Jar>,
}

impl Browser {
    fn new() -> Self {
        let cookies = std::sync::Arc::new(reqwest::cookie::Jar::default());
        Browser {
            http: reqwest::Client::builder()
                .cookie_provider(cookies.clone())
                .build()
                .unwrap(),
            cookies,
        }
    }

    /// The `Cookie` header this browser sends to `node`.
    fn cookie(&self, node: &Server) -> String {
        use reqwest::cookie::CookieStore;
        self.cookies
            .cookies(&node.url.parse().unwrap())
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
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

impl Browser {
    /// A `/service/presence` call on `node`: the reply.
    async fn presence(&self, node: &Server, client_id: &str, data: Value) -> Value {
        let replies = self
            .send(
                node,
                json!([{"id": "p", "channel": "/service/presence", "clientId": client_id,
                        "data": data}]),
            )
            .await;
        let reply = replies.iter().find(|m| m["id"] == "p").cloned().unwrap();
        assert_eq!(reply["successful"], true, "{replies:?}");
        reply["data"].clone()
    }

    /// Connects on `node` until a presence event of `member` and kind
    /// `event` arrives; returns it.
    async fn presence_event(
        &self,
        node: &Server,
        client_id: &str,
        event: &str,
        member: &str,
    ) -> Value {
        within(30.0, &format!("the {event} of {member}"), async {
            loop {
                let (_, data) = self.connect(node, client_id, None).await;
                if let Some(found) = data
                    .into_iter()
                    .find(|d| d["event"] == event && d["member"]["name"] == member)
                {
                    return found;
                }
            }
        })
        .await
    }
}

fn member_names(reply: &Value) -> Vec<String> {
    let mut names: Vec<String> = reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
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

/// A stopping node does not take sessions over (it would hold them only to
/// let them go again, or worse: once it has begun to stop it cannot, and
/// answered "unknown", which made the client handshake again and lose its
/// subscriptions). A request that reached it just before it stopped is
/// told to retry; the retry lands on a live node, which takes it over.
#[tokio::test]
async fn a_node_that_is_stopping_tells_a_request_for_another_nodes_session_to_retry() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Some(redis) = Redis::start() else {
        return;
    };
    let a = node(&redis, "a");
    // No drain: it stops at once on SIGTERM, as the rolling restart does.
    let mut b = Server::start(&[
        "--redis",
        redis.url.as_str(),
        "--node-id",
        "b",
        "--api-key",
        "takeover-test-api-key",
        "--drain-delay",
        "0",
        "--drain-timeout",
        "0",
    ]);
    let browser = Browser::new();
    let client_id = browser.handshake(&a, false).await;
    browser.subscribe(&a, &client_id, "/chat/room").await;

    // A connect to B whose body is still on its way when B begins to stop:
    // B has the request's head (the request is in flight, so B finishes
    // it), and reads the connect only once shutdown has begun.
    let body = json!([{"id": "c", "channel": "/meta/connect", "clientId": client_id,
                       "connectionType": "long-polling"}])
    .to_string();
    let mut socket = tokio::net::TcpStream::connect(b.address()).await.unwrap();
    let path = b.url.split_once(b.address()).unwrap().1.to_owned();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         cookie: {}\r\ncontent-length: {}\r\n\r\n",
        b.address(),
        browser.cookie(&a),
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // The head is read (the request is in flight) before B is told to stop.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &b.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    b.logged("shutting down").await;
    socket.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within(30.0, "B's answer", socket.read_to_end(&mut response))
        .await
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let replies: Value =
        serde_json::from_str(&response[response.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(replies[0]["successful"], false, "{response}");
    assert_eq!(replies[0]["error"], "503::node_stopping", "{response}");
    assert_eq!(replies[0]["advice"]["reconnect"], "retry", "{response}");
    assert!(b.wait_exit(std::time::Duration::from_secs(30)).is_some());

    // The retry, on a live node: the same session, still subscribed.
    let (reply, _) = browser.connect(&a, &client_id, None).await;
    assert_eq!(reply["successful"], true, "{reply}");
    api_publish(&a, json!({ "n": 7 })).await;
    let mut got = Vec::new();
    collect(&browser, &a, &client_id, &mut got, 1, "the message").await;
    assert_eq!(got, vec![7]);
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

#[tokio::test]
async fn presence_is_one_list_for_the_cluster_and_a_dead_nodes_members_leave() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = node(&redis, "a");
    let mut b = node(&redis, "b");
    let join = |name: &str| json!({"action": "join", "room": "lobby", "name": name});
    let list = json!({"action": "list", "room": "lobby"});

    // Ada watches the room from A; Bob and Carol join it on B.
    let ada = Browser::new();
    let ada_id = ada.handshake(&a, false).await;
    ada.subscribe(&a, &ada_id, "/presence/lobby").await;
    assert_eq!(ada.presence(&a, &ada_id, join("ada")).await["count"], 1);
    let bob = Browser::new();
    let bob_id = bob.handshake(&b, false).await;
    let joined = bob.presence(&b, &bob_id, join("bob")).await;
    assert_eq!(member_names(&joined), ["ada", "bob"], "{joined}");
    let event = ada.presence_event(&a, &ada_id, "join", "bob").await;
    assert_eq!(event["count"], 2, "{event}");
    let carol = Browser::new();
    let carol_id = carol.handshake(&b, false).await;
    carol.presence(&b, &carol_id, join("carol")).await;

    // Bob's session moves to A: he stays in the room (B does not say he
    // left), and A lists everyone.
    bob.connect(&a, &bob_id, None).await;
    let listed = ada.presence(&a, &ada_id, list.clone()).await;
    assert_eq!(member_names(&listed), ["ada", "bob", "carol"], "{listed}");
    assert_eq!(listed["count"], 3);

    // B dies with Carol's session. Once the cluster no longer has its
    // record (its TTL; deleted here rather than waited for), the sweep
    // takes her out and says so.
    b.kill();
    let deleted = redis.command(&format!("DEL halley:session:{carol_id}"));
    assert_eq!(deleted, ":1", "Carol's session record existed");
    let event = ada.presence_event(&a, &ada_id, "leave", "carol").await;
    assert_eq!(event["reason"], "expired", "{event}");
    assert_eq!(event["count"], 2, "{event}");
    let listed = ada.presence(&a, &ada_id, list.clone()).await;
    assert_eq!(member_names(&listed), ["ada", "bob"], "{listed}");

    // Bob disconnects on A, the node that holds him now.
    bob.send(
        &a,
        json!([{"channel": "/meta/disconnect", "clientId": bob_id}]),
    )
    .await;
    let event = ada.presence_event(&a, &ada_id, "leave", "bob").await;
    assert_eq!(event["reason"], "disconnected", "{event}");
    let listed = ada.presence(&a, &ada_id, list).await;
    assert_eq!(member_names(&listed), ["ada"], "{listed}");
}

#[tokio::test]
async fn replay_ids_are_the_clusters_and_a_node_started_later_reports_its_gap() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let history = "[[history]]\npattern = \"/feed/*\"\nmax-messages = 10\n";
    let start = |id: &str| {
        common::start_with_config(
            history,
            &[
                "--redis",
                redis.url.as_str(),
                "--node-id",
                id,
                "--api-key",
                "takeover-test-api-key",
                "--timeout",
                "1000",
            ],
        )
    };
    let (a, b) = (start("a"), start("b"));
    for n in 0..3 {
        api_publish_on(&a, "/feed/x", json!({ "n": n })).await;
    }
    // Every retained message, from B: each with the cluster's replay id.
    let x = Browser::new();
    let x_id = x.handshake(&b, false).await;
    let (reply, replayed) = x.subscribe_replaying(&b, &x_id, "/feed/x", -2).await;
    assert_ne!(reply["ext"]["replay"]["gap"], true, "{reply}");
    let ids: Vec<u64> = replayed.iter().map(replay_id).collect();
    assert_eq!(replayed.len(), 3, "{replayed:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "rising: {ids:?}");

    // A client that saw up to the second asks A: exactly the third, under
    // the same id.
    let y = Browser::new();
    let y_id = y.handshake(&a, false).await;
    let (reply, replayed) = y
        .subscribe_replaying(&a, &y_id, "/feed/x", ids[1] as i64)
        .await;
    assert_ne!(reply["ext"]["replay"]["gap"], true, "{reply}");
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(
        (replayed[0]["data"]["n"].clone(), replay_id(&replayed[0])),
        (json!(2), ids[2])
    );

    // C starts after those messages: asked for what follows the first, it
    // cannot vouch for them and says so.
    let c = start("c");
    let z = Browser::new();
    let z_id = z.handshake(&c, false).await;
    let (reply, _) = z
        .subscribe_replaying(&c, &z_id, "/feed/x", ids[0] as i64)
        .await;
    assert_eq!(
        reply["ext"]["replay"]["gap"], true,
        "C started later: {reply}"
    );
    // A new message has the same id on every node, above the old ones.
    api_publish_on(&a, "/feed/x", json!({ "n": 3 })).await;
    let on_c = within(30.0, "n = 3 on C", async {
        loop {
            let (_, data) = z.connect_raw(&c, &z_id).await;
            if let Some(m) = data.into_iter().find(|m| m["data"]["n"] == 3) {
                break m;
            }
        }
    })
    .await;
    let on_b = within(30.0, "n = 3 on B", async {
        loop {
            let (_, data) = x.connect_raw(&b, &x_id).await;
            if let Some(m) = data.into_iter().find(|m| m["data"]["n"] == 3) {
                break m;
            }
        }
    })
    .await;
    assert_eq!(replay_id(&on_c), replay_id(&on_b));
    assert!(replay_id(&on_c) > ids[2]);
}

fn replay_id(message: &Value) -> u64 {
    message["ext"]["replay"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a replay id: {message}"))
}

async fn api_publish_on(node: &Server, channel: &str, data: Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/publish", node.origin))
        .bearer_auth("takeover-test-api-key")
        .header("content-type", "application/json")
        .body(json!({ "channel": channel, "data": data }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

impl Browser {
    /// A subscribe asking to replay `channel` after `from`: the reply and
    /// the deliveries that came with it (whole messages).
    async fn subscribe_replaying(
        &self,
        node: &Server,
        client_id: &str,
        channel: &str,
        from: i64,
    ) -> (Value, Vec<Value>) {
        let replies = self
            .send(
                node,
                json!([{"id": "s", "channel": "/meta/subscribe", "clientId": client_id,
                        "subscription": channel, "ext": {"replay": {channel: from}}}]),
            )
            .await;
        let reply = replies.iter().find(|m| m["id"] == "s").cloned().unwrap();
        assert_eq!(reply["successful"], true, "{replies:?}");
        let (_, mut delivered) = self.connect_raw(node, client_id).await;
        delivered.extend(
            replies
                .into_iter()
                .filter(|m| m.get("successful").is_none()),
        );
        delivered.sort_by_key(replay_id);
        (reply, delivered)
    }

    /// A connect on `node`: its reply and the whole delivered messages.
    async fn connect_raw(&self, node: &Server, client_id: &str) -> (Value, Vec<Value>) {
        let replies = self
            .send(
                node,
                json!([{"id": "c", "channel": "/meta/connect", "clientId": client_id,
                        "connectionType": "long-polling"}]),
            )
            .await;
        let (reply, delivered): (Vec<Value>, Vec<Value>) = replies
            .into_iter()
            .partition(|m| m.get("successful").is_some());
        (reply.into_iter().next().unwrap_or_default(), delivered)
    }
}

#[tokio::test]
async fn a_tokens_session_moves_with_its_channels_and_counts_once_per_user() {
    let Some(redis) = Redis::start() else {
        return;
    };
    const SECRET: &str = "a-shared-secret-of-the-cluster-test-32+";
    let start = |id: &str| {
        Server::start(&[
            "--redis",
            redis.url.as_str(),
            "--node-id",
            id,
            "--jwt-hs256-secret",
            SECRET,
            "--max-sessions-per-user",
            "1",
            "--timeout",
            "1000",
        ])
    };
    let (a, b) = (start("a"), start("b"));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |user: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({ "sub": user, "exp": exp, "subscribe": ["/chat/*"] }),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let handshake = |node: &Server, user: &str| {
        let body = json!([{"id": "hs", "channel": "/meta/handshake", "version": "1.0",
                           "supportedConnectionTypes": ["long-polling"],
                           "ext": {"authentication": {"token": token(user)}}}]);
        let url = node.url.clone();
        async move {
            let browser = Browser::new();
            let replies: Vec<Value> = serde_json::from_str(
                &browser
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap(),
            )
            .unwrap();
            (browser, replies[0].clone())
        }
    };

    let (ada, first) = handshake(&a, "ada").await;
    assert_eq!(first["successful"], true, "{first}");
    let (_, second) = handshake(&b, "ada").await;
    assert_eq!(second["successful"], false, "one session, on A: {second}");
    assert_eq!(second["error"], "403::handshake_denied", "{second}");
    let (_, bob) = handshake(&b, "bob").await;
    assert_eq!(bob["successful"], true, "other users unaffected: {bob}");

    // Ada's session moves to B (a token's session moves with its channels
    // and its expiry): still one session, counted once.
    let ada_id = first["clientId"].as_str().unwrap().to_owned();
    ada.connect(&b, &ada_id, None).await;
    let (_, again) = handshake(&a, "ada").await;
    assert_eq!(again["successful"], false, "{again}");
    ada.subscribe(&b, &ada_id, "/chat/room").await;
    let replies = ada
        .send(
            &b,
            json!([{"id": "s", "channel": "/meta/subscribe", "clientId": ada_id,
                    "subscription": "/secret/room"}]),
        )
        .await;
    assert_eq!(
        replies[0]["successful"], false,
        "not in the token: {replies:?}"
    );

    // It ends on B, the node that holds it now: the place is free on A.
    ada.send(
        &b,
        json!([{"channel": "/meta/disconnect", "clientId": ada_id}]),
    )
    .await;
    within(30.0, "Ada's place to be freed", async {
        loop {
            let (_, again) = handshake(&a, "ada").await;
            if again["successful"] == true {
                break;
            }
            assert_eq!(again["error"], "403::handshake_denied", "{again}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn max_sessions_per_browser_counts_the_polls_held_on_every_node() {
    let Some(redis) = Redis::start() else {
        return;
    };
    // The default max-sessions-per-browser is 1; polls held up to 10 s.
    let start = |id: &str| {
        Server::start(&[
            "--redis",
            redis.url.as_str(),
            "--node-id",
            id,
            "--timeout",
            "10000",
        ])
    };
    let (a, b) = (start("a"), start("b"));
    // One browser, two tabs: one session polls on A, the other on B.
    let browser = std::sync::Arc::new(Browser::new());
    let first = browser.handshake(&a, false).await;
    browser.connect(&a, &first, None).await; // a first connect is not held
    let second = browser.handshake(&b, false).await;
    browser.connect(&b, &second, None).await;

    let held = tokio::spawn({
        let browser = browser.clone();
        let a_url = a.url.clone();
        let first = first.clone();
        async move {
            browser
                .http
                .post(&a_url)
                .header("content-type", "application/json")
                .body(
                    json!([{"channel": "/meta/connect", "clientId": first,
                            "connectionType": "long-polling"}])
                    .to_string(),
                )
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    eventually(30.0, "the first tab's poll held on A", || {
        redis.command("KEYS halley:browser:*") == "*1"
    })
    .await;
    // The second tab's poll on B is answered at once, told that another
    // session of its browser polls (as on one node).
    let (reply, _) = browser.connect(&b, &second, None).await;
    assert_eq!(reply["advice"]["multiple-clients"], true, "{reply}");
    held.abort();
}

#[tokio::test]
async fn callback_polling_moves_between_nodes_too() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let browser = Browser::new();
    // Callback-polling (JSONP): GET <endpoint>?jsonp=cb&message=[...].
    let get = |node: &Server, messages: Value| {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("jsonp", "cb")
            .append_pair("message", &messages.to_string())
            .finish();
        let url = format!("{}?{query}", node.url);
        let http = browser.http.clone();
        async move {
            let body = http.get(url).send().await.unwrap().text().await.unwrap();
            let inner = body
                .trim()
                .trim_end_matches(';')
                .strip_prefix("cb(")
                .and_then(|rest| rest.strip_suffix(')'))
                .unwrap_or_else(|| panic!("not a call of cb: {body:?}"))
                .to_owned();
            serde_json::from_str::<Vec<Value>>(&inner).unwrap()
        }
    };
    let replies = get(
        &a,
        json!([{"id": "1", "channel": "/meta/handshake", "version": "1.0",
                 "supportedConnectionTypes": ["callback-polling"]}]),
    )
    .await;
    assert_eq!(replies[0]["successful"], true, "{replies:?}");
    let client_id = replies[0]["clientId"].as_str().unwrap().to_owned();
    let replies = get(
        &b,
        json!([{"id": "2", "channel": "/meta/subscribe", "clientId": client_id,
                 "subscription": "/chat/room"}]),
    )
    .await;
    assert_eq!(
        replies[0]["successful"], true,
        "subscribed on B: {replies:?}"
    );
    api_publish(&a, json!({ "n": 0 })).await;
    let mut got = Vec::new();
    within(30.0, "the message over callback-polling on A", async {
        while got.is_empty() {
            let replies = get(
                &a,
                json!([{"id": "3", "channel": "/meta/connect", "clientId": client_id,
                         "connectionType": "callback-polling"}]),
            )
            .await;
            let reply = replies.iter().find(|m| m["id"] == "3").unwrap();
            assert_eq!(
                reply["successful"], true,
                "the session moved back: {replies:?}"
            );
            got.extend(
                replies
                    .iter()
                    .filter(|m| m.get("successful").is_none())
                    .map(|m| m["data"]["n"].as_u64().unwrap()),
            );
        }
    })
    .await;
    assert_eq!(got, [0]);
}
