//! The cluster on Redis end to end: a `redis-server` of the test's own and
//! several `halley serve --redis ...` nodes, each a real process on a free
//! port. A test returns early, saying so, when `redis-server` is not
//! installed outside CI (`scripts/test.sh` installs it; under `CI` a
//! missing one fails).

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{
    first_connect, free_port, handshake, publish_raw, send_one, within, Proxy, Redis, Server,
};
use halley_client::Deliveries;
use serde_json::{json, Value};

/// `halley serve --redis <redis> --node-id <id> <extra>`.
fn node(redis: &Redis, id: &str, extra: &[&str]) -> Server {
    let mut flags = vec!["--redis", redis.url.as_str(), "--node-id", id];
    flags.extend_from_slice(extra);
    Server::start(&flags)
}

/// `POST /api/publish` of one message with key `k`: status and answer.
async fn api_publish(server: &Server, channel: &str, data: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/publish", server.origin))
        .bearer_auth("cluster-test-api-key")
        .header("content-type", "application/json")
        .body(json!({ "channel": channel, "data": data }).to_string())
        .send()
        .await
        .expect("POST /api/publish");
    let status = response.status().as_u16();
    let text = response.text().await.expect("an answer");
    let answer = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, answer)
}

/// Deliveries (channel, data) until `ends` of them were on `/chat/end`.
async fn collect_until_ends(deliveries: &mut Deliveries, ends: usize) -> Vec<(String, Value)> {
    within(30.0, "the deliveries up to every /chat/end", async {
        let mut seen = Vec::new();
        let mut ended = 0;
        while ended < ends {
            let delivery = deliveries.recv().await.expect("the client is open");
            if delivery.channel == "/chat/end" {
                ended += 1;
            }
            seen.push((delivery.channel.clone(), delivery.data_value()));
        }
        seen
    })
    .await
}

#[tokio::test]
async fn a_publication_on_any_node_reaches_every_subscriber_once_in_one_order() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = node(&redis, "a", &["--api-key", "cluster-test-api-key"]);
    let b = node(&redis, "b", &[]);
    let c = node(&redis, "c", &[]);
    a.logged(&format!("cluster mode: node a, Redis at {}", redis.url))
        .await;

    // /chat/* on A over long-polling and on B over WebSocket; /chat/** on
    // C; an unrelated channel on B.
    let (on_a, mut at_a) = a.connected_client().await;
    on_a.subscribe("/chat/*").await.unwrap();
    let (on_b, mut at_b) = b.ws_connected_client().await;
    on_b.subscribe("/chat/*").await.unwrap();
    let (deep, mut at_deep) = c.connected_client().await;
    deep.subscribe("/chat/**").await.unwrap();
    let (news, mut at_news) = b.connected_client().await;
    news.subscribe("/news/*").await.unwrap();

    // Three sources, interleaved: a Bayeux client on B (long-polling), one
    // on C (WebSocket), and A's HTTP publish API.
    let (from_b, _) = b.connected_client().await;
    let (from_c, _) = c.ws_connected_client().await;
    const N: u64 = 15;
    for n in 0..N {
        from_b
            .publish("/chat/room", &json!({"from": "b", "n": n}))
            .await
            .unwrap();
        from_c
            .publish("/chat/room", &json!({"from": "c", "n": n}))
            .await
            .unwrap();
        let (status, answer) = api_publish(&a, "/chat/room", json!({"from": "api", "n": n})).await;
        assert_eq!(status, 200, "{answer}");
        // Counted when it comes back from Redis: not known now.
        assert_eq!(
            answer,
            json!([{"channel": "/chat/room", "delivered": null, "accepted": true}]),
            "a cluster node cannot count the other nodes' subscribers: it says so"
        );
    }
    from_b
        .publish("/chat/room/deep", &json!({"from": "b", "deep": true}))
        .await
        .unwrap();
    from_c
        .publish("/news/today", &json!({"from": "c"}))
        .await
        .unwrap();
    // Each source's last message: a source's messages keep their order, so
    // once the three have arrived everything before them has too.
    from_b
        .publish("/chat/end", &json!({"from": "b"}))
        .await
        .unwrap();
    from_c
        .publish("/chat/end", &json!({"from": "c"}))
        .await
        .unwrap();
    let (status, answer) = api_publish(&a, "/chat/end", json!({"from": "api"})).await;
    assert_eq!(status, 200, "{answer}");

    let seen_a = collect_until_ends(&mut at_a, 3).await;
    let seen_b = collect_until_ends(&mut at_b, 3).await;
    let seen_deep = collect_until_ends(&mut at_deep, 3).await;

    // Every subscriber of /chat/* sees one sequence, whatever its node and
    // transport: Redis ordered the publications once for the cluster.
    assert_eq!(
        seen_a, seen_b,
        "the same order on node A (long-polling) and node B (WebSocket)"
    );
    // Each message once, each source's in the order it sent them, and
    // nothing the glob does not match.
    let mut next: HashMap<String, u64> = HashMap::new();
    for (channel, data) in &seen_a {
        let from = data["from"].as_str().unwrap().to_owned();
        match channel.as_str() {
            "/chat/room" => {
                let expected = next.entry(from.clone()).or_default();
                assert_eq!(data["n"], *expected, "from {from}: {seen_a:?}");
                *expected += 1;
            }
            "/chat/end" => {
                assert_eq!(next.get(&from), Some(&N), "{from} ended early: {seen_a:?}")
            }
            other => panic!("/chat/* received {other}: {seen_a:?}"),
        }
    }
    assert_eq!(seen_a.len() as u64, 3 * N + 3, "{seen_a:?}");
    // /chat/** gets the same sequence and the deeper channel, once.
    let (deeper, same): (Vec<_>, Vec<_>) = seen_deep
        .iter()
        .cloned()
        .partition(|(channel, _)| channel == "/chat/room/deep");
    assert_eq!(same, seen_a, "/chat/** on node C");
    assert_eq!(
        deeper,
        [(
            "/chat/room/deep".to_owned(),
            json!({"from": "b", "deep": true})
        )]
    );

    // Only now the unrelated channel's last message: had any /chat message
    // reached /news/*, it would have been queued before it.
    from_c
        .publish("/news/end", &json!({"from": "c"}))
        .await
        .unwrap();
    let news_seen = common::collect_until(&mut at_news, "/news/end").await;
    assert_eq!(news_seen, ["/news/today", "/news/end"]);
    let late = [at_a.try_recv(), at_b.try_recv(), at_deep.try_recv()];
    assert!(late.iter().all(Option::is_none), "a duplicate: {late:?}");

    // Each message was numbered and kept in the cluster's log, in one
    // sequence without holes: as many entries as offsets given.
    let offsets = redis.command("INCRBY halley:offset 0");
    let logged = redis.command("XLEN halley:log");
    let offsets: u64 = offsets
        .trim_start_matches(['$', ':'])
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{offsets}"));
    assert!(offsets >= 3 * N, "{offsets}");
    assert_eq!(logged, format!(":{offsets}"));
}

#[tokio::test]
async fn each_node_keeps_a_heartbeat_key_and_removes_it_when_it_stops() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let mut a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    for id in ["a", "b"] {
        let ttl = redis.command(&format!("TTL halley:node:{id}"));
        let ttl: u64 = ttl[1..].parse().unwrap_or_else(|_| panic!("{id}: {ttl}"));
        assert!((1..=15).contains(&ttl), "{id}: {ttl}");
    }
    // A random id when none is given.
    let unnamed = Server::start(&["--redis", redis.url.as_str()]);
    unnamed.logged("cluster mode: node ").await;
    let log = unnamed.log();
    let id = log.split("cluster mode: node ").nth(1).unwrap();
    let id = &id[..id.find(',').unwrap()];
    assert!(!id.is_empty() && id != "a" && id != "b", "{log}");
    assert_eq!(
        redis.command(&format!(
            "EXISTS halley:node:a halley:node:b halley:node:{id}"
        )),
        ":3"
    );

    let status = a.terminate(std::time::Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(redis.command("EXISTS halley:node:a"), ":0", "a left");
    assert_eq!(redis.command("EXISTS halley:node:b"), ":1");
    drop(b);
}

// Two workers: the proxy must forward while `Server::start` blocks one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_noticed_by_its_ping_and_replaced() {
    let Some(redis) = Redis::start() else {
        return;
    };
    // The node reaches Redis through a proxy that can go silent.
    let proxy = Proxy::start_to(&format!("127.0.0.1:{}", redis.port), |address| {
        format!("redis://{address}")
    })
    .await;
    let a = Server::start(&["--redis", proxy.url.as_str(), "--node-id", "a"]);
    let (subscriber, mut at_a) = a.connected_client().await;
    subscriber.subscribe("/chat/*").await.unwrap();
    let browser = a.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;

    // Open, but nothing gets through: no error, no close, only silence;
    // and no new connection until the proxy lets them through again.
    proxy.refuse(true);
    proxy.freeze();
    a.logged("Redis lost").await;
    let refused = publish_raw(&browser, &client_id, "p1", "/chat/x", json!(1)).await;
    assert_eq!(refused["error"], "503::broker_unavailable", "{refused}");
    proxy.refuse(false);
    a.logged("Redis is back").await;
    let accepted = publish_raw(&browser, &client_id, "p2", "/chat/x", json!(2)).await;
    assert_eq!(accepted["successful"], true, "{accepted}");
    let delivery = within(30.0, "the message after the return", at_a.recv())
        .await
        .unwrap();
    assert_eq!(delivery.data_value(), json!(2));
}

// Multi-threaded: the proxy forwards while `Server::start` blocks its thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_publications_catches_up_from_the_log() {
    let Some(redis) = Redis::start() else {
        return;
    };
    // B reaches Redis through a proxy that can go silent; A directly.
    let proxy = Proxy::start_to(&format!("127.0.0.1:{}", redis.port), |address| {
        format!("redis://{address}")
    })
    .await;
    let a = node(&redis, "a", &[]);
    let b = Server::start(&["--redis", proxy.url.as_str(), "--node-id", "b"]);
    let (subscriber, mut at_b) = b.ws_connected_client().await;
    subscriber.subscribe("/chat/*").await.unwrap();
    let (publisher, _) = a.connected_client().await;
    publisher.publish("/chat/x", &json!(0)).await.unwrap();
    let first = within(30.0, "the first message", at_b.recv())
        .await
        .unwrap();
    assert_eq!(first.data_value(), json!(0));

    // B hears nothing for a while; A goes on publishing (Redis keeps them).
    proxy.refuse(true);
    proxy.freeze();
    b.logged("Redis lost").await;
    for n in 1..=5 {
        publisher.publish("/chat/x", &json!(n)).await.unwrap();
    }
    proxy.refuse(false);
    b.logged("Redis is back").await;
    // The next one shows B the hole; B fills it from the log, in order.
    publisher.publish("/chat/x", &json!(6)).await.unwrap();
    let got: Vec<Value> = within(30.0, "everything, in order", async {
        let mut got = Vec::new();
        while got.len() < 6 {
            got.push(at_b.recv().await.unwrap().data_value());
        }
        got
    })
    .await;
    assert_eq!(got, (1..=6).map(|n| json!(n)).collect::<Vec<_>>());
    b.logged("delivered from the log").await;
}

#[tokio::test]
async fn an_unreachable_redis_stops_the_start_with_a_clear_error() {
    // Nothing listens there; the password must not reach the log.
    let port = free_port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_halley"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--redis", &url]);
    for (key, _) in std::env::vars() {
        if key.starts_with("HALLEY_") {
            command.env_remove(key);
        }
    }
    let output = command.output().expect("running halley");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started: {stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to Redis at redis://:***@127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password was shown: {stderr}"
    );
}

#[tokio::test]
async fn while_redis_is_lost_publishes_are_refused_and_resume_when_it_is_back() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = node(&redis, "a", &["--api-key", "cluster-test-api-key"]);
    let b = node(&redis, "b", &[]);
    let (subscriber, mut at_b) = b.ws_connected_client().await;
    subscriber.subscribe("/chat/*").await.unwrap();
    let browser = a.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    let (browser, client_id) = (&browser, client_id.as_str());
    let publish =
        move |id: &'static str, n: u64| publish_raw(browser, client_id, id, "/chat/x", json!(n));

    assert_eq!(publish("p0", 0).await["successful"], true);
    let first = within(30.0, "the first message", at_b.recv())
        .await
        .unwrap();
    assert_eq!(first.data_value(), json!(0));

    let port = redis.port;
    redis.kill();
    a.logged("Redis lost").await;
    b.logged("Redis lost").await;
    // Refused at once, and said so; the HTTP API too.
    let refused = publish("p1", 1).await;
    assert_eq!(refused["successful"], false, "{refused}");
    assert_eq!(refused["error"], "503::broker_unavailable", "{refused}");
    let (status, answer) = api_publish(&a, "/chat/x", json!(1)).await;
    assert_eq!(status, 503, "{answer}");
    // Local sessions stay up: a service still answers.
    let echo = send_one(
        browser,
        client_id,
        "e",
        "/service/echo",
        json!({"data": "here"}),
    )
    .await;
    assert_eq!(echo["successful"], true, "{echo}");

    // Back on the same port (empty: no scripts, no streams): both nodes
    // resubscribe and publish again.
    let _redis = Redis::start_on(port);
    a.logged("Redis is back").await;
    b.logged("Redis is back").await;
    assert_eq!(publish("p2", 2).await["successful"], true);
    let (status, answer) = api_publish(&a, "/chat/x", json!(3)).await;
    assert_eq!(status, 200, "{answer}");
    let after: Vec<Value> = within(30.0, "the messages after the return", async {
        vec![
            at_b.recv().await.unwrap().data_value(),
            at_b.recv().await.unwrap().data_value(),
        ]
    })
    .await;
    // The refused ones never arrive.
    assert_eq!(after, [json!(2), json!(3)]);
}
