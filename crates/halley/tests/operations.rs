//! Running Halley in production, end to end with the binary: the admin
//! listener (`/metrics` figures that match what clients did, `/healthz`,
//! `/readyz`), the drain on SIGTERM, the logs, and the demo switch.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{connect, first_connect, handshake, held_in_browser, reply_with_id, within, Server};
use serde_json::{json, Value};

async fn admin_url(server: &Server) -> String {
    server.admin_url().await
}

/// GET `url`: its status and body.
async fn get(url: &str) -> (u16, String) {
    let response = within(30.0, url, reqwest::get(url))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of the sample `name` (with its labels, as written) in a
/// Prometheus text body.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_match_what_the_clients_did() {
    let server = Server::start(&[]);
    let admin = admin_url(&server).await;
    let metrics = format!("{admin}/metrics");

    let (polling, mut polling_deliveries) = server.connected_client().await;
    let (socket, mut socket_deliveries) = server.ws_connected_client().await;
    polling.subscribe("/ops/room").await.unwrap();
    socket.subscribe("/ops/room").await.unwrap();
    for n in 0..3 {
        polling
            .publish("/ops/room", &json!({ "n": n }))
            .await
            .unwrap();
    }
    for deliveries in [&mut polling_deliveries, &mut socket_deliveries] {
        for n in 0..3 {
            let delivery = within(30.0, "a delivery", deliveries.recv()).await.unwrap();
            assert_eq!(delivery.data_value(), json!({ "n": n }));
        }
    }

    let (status, text) = get(&metrics).await;
    assert_eq!(status, 200);
    assert_eq!(sample(&text, "halley_sessions"), 2.0);
    assert_eq!(
        sample(&text, "halley_handshakes_total{outcome=\"accepted\"}"),
        2.0
    );
    assert_eq!(
        sample(&text, "halley_publishes_total{origin=\"bayeux\"}"),
        3.0
    );
    // Two subscribers, three messages: each delivery written once, its
    // latency observed once.
    assert_eq!(sample(&text, "halley_deliveries_total"), 6.0);
    assert_eq!(sample(&text, "halley_delivery_latency_seconds_count"), 6.0);
    assert_eq!(
        sample(&text, "halley_delivery_latency_seconds_bucket{le=\"+Inf\"}"),
        6.0
    );
    assert_eq!(sample(&text, "halley_outbox_depth"), 0.0);
    assert_eq!(
        sample(&text, "halley_connections_total{transport=\"websocket\"}"),
        1.0
    );
    assert!(
        sample(
            &text,
            "halley_connections_total{transport=\"long-polling\"}"
        ) >= 3.0
    );
    assert_eq!(sample(&text, "halley_websockets_open"), 1.0);
    assert_eq!(sample(&text, "halley_broker_up"), 1.0);

    // Gone clients leave the gauges.
    polling.disconnect().await.unwrap();
    socket.disconnect().await.unwrap();
    within(30.0, "sessions back to 0", async {
        loop {
            let (_, text) = get(&metrics).await;
            if sample(&text, "halley_sessions") == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Never on the public listener.
    let (status, _) = get(&format!("{}/metrics", server.origin)).await;
    assert_eq!(status, 404);
    let (status, body) = get(&format!("{}/healthz", server.origin)).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(
        get(&format!("{admin}/readyz")).await,
        (200, "ready\n".into())
    );
}

#[tokio::test]
async fn the_admin_listener_can_be_turned_off() {
    let server = Server::start(&["--admin-listen", "off"]);
    server.logged("admin listener: off").await;
    assert!(!server.log().contains("admin endpoints at"));
}

/// Sends `signal` (TERM, INT) to the server.
fn signal(server: &Server, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &server.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
}

/// Handshakes `count` long-polling sessions, each in its own browser, and
/// holds a connect for each; their answers come through the returned
/// tasks, with the time each arrived.
async fn held_sessions(
    server: &Server,
    count: usize,
) -> Vec<tokio::task::JoinHandle<(Value, Instant)>> {
    let mut held = Vec::new();
    for _ in 0..count {
        let browser = server.browser();
        let client_id = handshake(&browser).await;
        first_connect(&browser, &client_id).await;
        // The same browser (its cookie), to see the connect held.
        let same_browser = halley_client::Client::builder(&server.url)
            .cookie_jar(browser.cookies().clone())
            .build()
            .unwrap();
        let task = tokio::spawn(async move {
            let replies = connect(&browser, &client_id, "held").await;
            (reply_with_id(&replies, "held").clone(), Instant::now())
        });
        held_in_browser(server, &same_browser).await;
        held.push(task);
    }
    held
}

#[tokio::test]
async fn sigterm_drains_not_ready_at_once_clients_sent_away_over_the_window_then_exit_0() {
    let (delay, window) = (Duration::from_millis(1_000), Duration::from_millis(2_000));
    let mut server = Server::start(&[
        "--drain-delay",
        &delay.as_millis().to_string(),
        "--drain-timeout",
        &window.as_millis().to_string(),
    ]);
    let admin = admin_url(&server).await;
    let held = held_sessions(&server, 8).await;
    assert_eq!(get(&format!("{admin}/readyz")).await.0, 200);

    let signalled = Instant::now();
    signal(&server, "TERM");
    within(30.0, "readyz 503", async {
        while get(&format!("{admin}/readyz")).await.0 != 503 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        get(&format!("{admin}/readyz")).await,
        (503, "draining\n".into())
    );
    assert_eq!(get(&format!("{admin}/healthz")).await.0, 200);

    let mut answered = Vec::new();
    for task in held {
        let (reply, at) = within(30.0, "a held connect answered", task).await.unwrap();
        assert_eq!(reply["successful"], true, "{reply}");
        assert_eq!(reply["advice"]["reconnect"], "retry", "{reply}");
        answered.push(at);
    }
    // Kept serving through the delay; then spread over the window, not
    // all at once (eight slots in one of its ~50 steps: never in practice).
    for at in &answered {
        assert!(*at - signalled >= delay, "answered during the delay");
    }
    let first = answered.iter().min().unwrap();
    let last = answered.iter().max().unwrap();
    assert!(
        *last - *first >= window / 50,
        "all answered at once: {answered:?}"
    );

    let status = server.wait_exit(Duration::from_secs(30)).expect("exited");
    assert!(status.success(), "{status:?}");
    let log = server.final_log();
    assert!(log.contains("draining: not ready"), "{log}");
    assert!(log.contains("drained: every session was asked"), "{log}");
}

#[tokio::test]
async fn a_second_sigterm_stops_the_drain_at_once() {
    // A drain that would take a minute: the node serves through its delay,
    // and the second signal cuts it short.
    let mut server = Server::start(&["--drain-delay", "60000", "--drain-timeout", "60000"]);
    let admin = admin_url(&server).await;
    let held = held_sessions(&server, 1).await;
    signal(&server, "TERM");
    within(30.0, "readyz 503", async {
        while get(&format!("{admin}/readyz")).await.0 != 503 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Within the delay the node serves as before: a newcomer (one the
    // balancer had already sent) handshakes and connects.
    let newcomer = server.browser();
    let client_id = handshake(&newcomer).await;
    first_connect(&newcomer, &client_id).await;
    signal(&server, "TERM");
    for task in held {
        let (reply, _) = within(30.0, "the held connect answered", task)
            .await
            .unwrap();
        assert_eq!(reply["advice"]["reconnect"], "retry", "{reply}");
    }
    let status = server.wait_exit(Duration::from_secs(30)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(server.final_log().contains("drain cut short"));
}

#[tokio::test]
async fn sigint_stops_at_once_without_a_drain() {
    let mut server = Server::start(&["--drain-delay", "60000"]);
    let held = held_sessions(&server, 1).await;
    signal(&server, "INT");
    for task in held {
        let (reply, _) = within(30.0, "the held connect answered", task)
            .await
            .unwrap();
        assert_eq!(reply["advice"]["reconnect"], "retry", "{reply}");
    }
    let status = server.wait_exit(Duration::from_secs(30)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(!server.final_log().contains("draining"));
}

#[tokio::test]
async fn json_logs_and_one_start_line_per_feature() {
    let server = Server::start(&[
        "--log-format",
        "json",
        "--api-keys",
        "key-one-0123456789,key-two-0123456789",
    ]);
    server.logged("chat demo at /").await;
    let log = server.log();
    for line in log.lines() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(event["fields"]["message"].is_string(), "{line}");
    }
    for feature in [
        "transports: long-polling, websocket, callback-polling",
        "HTTP publish API: on, 2 API key(s)",
        "JWT Metadata Adapter: off",
        "webhook Metadata Adapter: off",
        "remote adapters: none",
        "per-channel rules: 0 qos",
        "admin listener: on",
        "cluster: off",
    ] {
        assert!(log.contains(feature), "{feature:?} missing from\n{log}");
    }
    assert!(!log.contains("key-one"), "an API key was logged");
}

#[tokio::test]
async fn sessions_opened_and_closed_are_logged_at_debug() {
    let server = Server::start_with_env("127.0.0.1:0", &[], &[("RUST_LOG", "halley_server=debug")]);
    let (client, _deliveries) = server.connected_client().await;
    client.disconnect().await.unwrap();
    server.logged("session opened").await;
    server.logged("session closed").await;
}

#[test]
fn a_bad_setting_is_one_line_and_no_backtrace() {
    let output = Command::new(env!("CARGO_BIN_EXE_halley"))
        .args(["serve", "--admin-listen", "nowhere"])
        .env("RUST_BACKTRACE", "1")
        .env_remove("HALLEY_ADMIN_LISTEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("expected HOST:PORT, PORT or off"),
        "{stderr}"
    );
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}

#[tokio::test]
async fn without_the_demo_the_root_is_404_and_the_client_stays() {
    let server = Server::start(&["--demo", "false"]);
    assert_eq!(get(&format!("{}/", server.origin)).await.0, 404);
    assert_eq!(get(&format!("{}/halley.js", server.origin)).await.0, 200);
    let on = Server::start(&["--path", "/x"]);
    // Redirected to the demo with its endpoint named (reqwest follows).
    let (status, body) = get(&format!("{}/", on.origin)).await;
    assert_eq!(status, 200);
    assert!(body.to_lowercase().contains("<html"), "{body}");
}

#[tokio::test]
async fn a_publish_of_null_is_delivered_and_one_without_data_refused() {
    let server = Server::start(&[]);
    let (subscriber, mut deliveries) = server.connected_client().await;
    subscriber.subscribe("/ops/null").await.unwrap();
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    let published = common::send_one(
        &browser,
        &client_id,
        "p1",
        "/ops/null",
        json!({ "data": null }),
    )
    .await;
    assert_eq!(published["successful"], true, "{published}");
    let delivery = within(30.0, "the null", deliveries.recv()).await.unwrap();
    assert_eq!(delivery.data_value(), Value::Null);
    let refused = common::send_one(&browser, &client_id, "p2", "/ops/null", json!({})).await;
    assert_eq!(refused["error"], "400::data_missing", "{refused}");
}

#[tokio::test]
async fn a_fail_closed_webhook_that_cannot_be_reached_makes_the_node_not_ready() {
    // Nothing listens on that port: the webhook cannot decide.
    let backend = format!("http://127.0.0.1:{}/", common::free_port());
    let server = Server::start(&["--webhook-url", &backend]);
    let admin = admin_url(&server).await;
    assert_eq!(get(&format!("{admin}/readyz")).await.0, 200);
    let browser = server.browser();
    let replies = common::exchange(
        &browser,
        &json!([{"id": "hs", "channel": "/meta/handshake", "version": "1.0",
                 "supportedConnectionTypes": ["long-polling"]}]),
    )
    .await;
    assert_eq!(reply_with_id(&replies, "hs")["successful"], false);
    let (status, why) = get(&format!("{admin}/readyz")).await;
    assert_eq!(status, 503);
    assert!(why.contains("Metadata Adapter"), "{why}");
    let (_, text) = get(&format!("{admin}/metrics")).await;
    assert_eq!(
        sample(
            &text,
            "halley_metadata_decisions_total{action=\"handshake\",outcome=\"unavailable\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "halley_handshakes_total{outcome=\"denied\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "halley_metadata_latency_seconds_count{action=\"handshake\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_cluster_node_that_lost_redis_is_not_ready_and_counts_refused_publishes() {
    let Some(mut redis) = common::Redis::start() else {
        return;
    };
    let server = Server::start(&["--redis", &redis.url, "--node-id", "ops"]);
    let admin = admin_url(&server).await;
    assert_eq!(get(&format!("{admin}/readyz")).await.0, 200);
    let (_, text) = get(&format!("{admin}/metrics")).await;
    assert_eq!(sample(&text, "halley_broker_up"), 1.0);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;

    redis.kill();
    server.logged("Redis lost").await;
    let refused = common::send_one(&browser, &client_id, "p", "/ops/x", json!({"data": 1})).await;
    assert_eq!(refused["error"], "503::broker_unavailable", "{refused}");
    let (status, why) = get(&format!("{admin}/readyz")).await;
    assert_eq!(status, 503);
    assert!(why.contains("broker unavailable"), "{why}");
    let (_, text) = get(&format!("{admin}/metrics")).await;
    assert_eq!(sample(&text, "halley_broker_up"), 0.0);
    assert_eq!(sample(&text, "halley_broker_publish_errors_total"), 1.0);
    assert_eq!(
        sample(&text, "halley_publishes_total{origin=\"bayeux\"}"),
        0.0
    );
}

#[tokio::test]
async fn a_safety_limit_hit_is_counted_in_the_metrics() {
    let server = Server::start(&["--max-channels-per-subscribe", "2"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    let refused = common::send_one(
        &browser,
        &client_id,
        "s",
        "/meta/subscribe",
        json!({"subscription": ["/a", "/b", "/c"]}),
    )
    .await;
    assert_eq!(refused["successful"], false, "{refused}");
    let admin = admin_url(&server).await;
    let (_, text) = get(&format!("{admin}/metrics")).await;
    assert!(
        text.contains(r#"halley_limit_hits_total{limit="channels_per_subscribe"} 1"#),
        "{text}"
    );
}
