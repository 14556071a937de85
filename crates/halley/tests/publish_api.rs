//! The HTTP publish API end to end: a real `halley serve`, a Bayeux
//! subscriber, `POST /api/publish` with an API key, and `halley publish`.

mod common;

use std::process::Command;

use common::{start_with_config, within, Server};
use serde_json::{json, Value};

/// Keys are at least 16 characters (shorter ones stop the server).
const KEY: &str = "test-api-key-0123456789";
const OTHER_KEY: &str = "other-api-key-0123456789";

/// `POST /api/publish` with `body` and an optional bearer `key`: status and JSON answer.
async fn post(server: &Server, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/api/publish", server.origin))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("POST /api/publish");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let answer = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, answer)
}

#[tokio::test]
async fn a_subscriber_receives_what_was_posted_byte_for_byte() {
    let server = Server::start(&["--api-key", KEY]);
    let (client, mut deliveries) = server.connected_client().await;
    client.subscribe("/stocks/AAPL").await.unwrap();

    let data = r#"{"price":187.25,"name":"Äpple","tags":[1,2.5e3,null]}"#;
    let body = format!(r#"{{"channel":"/stocks/AAPL","data":{data}}}"#);
    let (status, answer) = post(&server, Some(KEY), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!([{"channel":"/stocks/AAPL","delivered":1}]));
    let delivery = within(30.0, "the posted message", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.channel, "/stocks/AAPL");
    assert_eq!(delivery.data.get(), data, "data passed on unchanged");
}

#[tokio::test]
async fn an_array_publishes_each_message_in_order() {
    let server = Server::start(&["--api-key", KEY]);
    let (client, mut deliveries) = server.connected_client().await;
    client.subscribe("/a").await.unwrap();
    let (_other, _) = server.connected_client().await;
    let body = r#"[{"channel":"/a","data":1},{"channel":"/nobody","data":2},{"channel":"/a","data":"three"}]"#;
    let (status, answer) = post(&server, Some(KEY), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!([
            {"channel":"/a","delivered":1},
            {"channel":"/nobody","delivered":0},
            {"channel":"/a","delivered":1}
        ])
    );
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            within(30.0, "a message", deliveries.recv())
                .await
                .unwrap()
                .data_value(),
        );
    }
    assert_eq!(got, [json!(1), json!("three")]);
}

#[tokio::test]
async fn without_the_right_key_the_answer_is_401() {
    let server = Server::start(&["--api-key", KEY, "--api-key", OTHER_KEY]);
    let body = r#"{"channel":"/a","data":1}"#;
    let (status, answer) = post(&server, None, body).await;
    assert_eq!(status, 401);
    assert!(
        answer["error"].as_str().unwrap().contains("Bearer"),
        "{answer}"
    );
    assert_eq!(post(&server, Some("wrong"), body).await.0, 401);
    assert_eq!(
        post(&server, Some("test-api-key-012345678"), body).await.0,
        401
    );
    assert_eq!(
        post(&server, Some(OTHER_KEY), body).await.0,
        200,
        "a second key"
    );
}

#[tokio::test]
async fn invalid_requests_get_400_and_publish_nothing() {
    let server = Server::start(&["--api-key", KEY]);
    let (client, mut deliveries) = server.connected_client().await;
    client.subscribe("/a").await.unwrap();
    for (body, says) in [
        ("{not json", "expected"),
        (r#"{"channel":"/a"}"#, "data is missing"),
        (r#"{"channel":"a","data":1}"#, "invalid channel"),
        (r#"{"channel":"/meta/connect","data":1}"#, "/meta"),
        (r#"{"channel":"/service/echo","data":1}"#, "/service"),
        (
            r#"[{"channel":"/a","data":1},{"channel":"/a/*","data":1}]"#,
            "message 2: ",
        ),
    ] {
        let (status, answer) = post(&server, Some(KEY), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{body}: {error}");
    }
    // Nothing of the refused array went out: the next message is the first.
    post(&server, Some(KEY), r#"{"channel":"/a","data":"ok"}"#).await;
    let first = within(30.0, "a message", deliveries.recv()).await.unwrap();
    assert_eq!(first.data_value(), json!("ok"));
}

#[tokio::test]
async fn without_a_configured_key_the_api_is_disabled() {
    let server = Server::start(&[]);
    let (status, answer) = post(&server, Some("anything"), r#"{"channel":"/a","data":1}"#).await;
    assert_eq!(status, 404);
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("disabled") && error.contains("--api-key"),
        "{error}"
    );
}

#[tokio::test]
async fn a_body_over_max_request_bytes_gets_413() {
    let server = Server::start(&["--api-key", KEY, "--max-request-bytes", "200"]);
    let big = format!(r#"{{"channel":"/a","data":"{}"}}"#, "x".repeat(300));
    let (status, answer) = post(&server, Some(KEY), &big).await;
    assert_eq!(status, 413, "{answer}");
    let (status, _) = post(&server, Some(KEY), r#"{"channel":"/a","data":1}"#).await;
    assert_eq!(status, 200, "a small one still passes");
}

#[tokio::test]
async fn the_api_key_can_come_from_the_config_file() {
    let server = start_with_config("api-keys = [\"from-file-0123456789\"]\n", &[]);
    let (status, _) = post(
        &server,
        Some("from-file-0123456789"),
        r#"{"channel":"/a","data":1}"#,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn halley_api_keys_takes_a_comma_separated_list() {
    let server = Server::start_with_env(
        "127.0.0.1:0",
        &[],
        &[(
            "HALLEY_API_KEYS",
            "first-key-0123456789,second-key-0123456789",
        )],
    );
    let body = r#"{"channel":"/a","data":1}"#;
    assert_eq!(
        post(&server, Some("first-key-0123456789"), body).await.0,
        200
    );
    assert_eq!(
        post(&server, Some("second-key-0123456789"), body).await.0,
        200
    );
    assert_eq!(
        post(
            &server,
            Some("first-key-0123456789,second-key-0123456789"),
            body
        )
        .await
        .0,
        401,
        "split, not one key"
    );
}

fn halley_publish(server: &Server, key: &str, channel: &str, data: &str) -> std::process::Output {
    halley_publish_to(&server.origin, key, channel, data)
}

fn halley_publish_to(url: &str, key: &str, channel: &str, data: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_halley"))
        .args(["publish", "--url", url, "--api-key", key])
        .args(["--channel", channel, "--data", data])
        .env_remove("HALLEY_URL")
        .env_remove("HALLEY_API_KEY")
        .output()
        .expect("running halley publish")
}

#[tokio::test]
async fn halley_publish_posts_and_prints_the_answer() {
    let server = Server::start(&["--api-key", KEY]);
    let (client, mut deliveries) = server.connected_client().await;
    client.subscribe("/x").await.unwrap();

    let output = halley_publish(&server, KEY, "/x", r#"{"a":1}"#);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!([{"channel":"/x","delivered":1}])
    );
    let delivery = within(30.0, "the published message", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.data.get(), r#"{"a":1}"#);

    let refused = halley_publish(&server, "wrong", "/x", "1");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401"), "{stderr}");

    let bad = halley_publish(&server, KEY, "/meta/x", "1");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("400"));

    let not_json = halley_publish(&server, KEY, "/x", "{oops");
    assert!(!not_json.status.success());
    assert!(String::from_utf8_lossy(&not_json.stderr).contains("--data is not JSON"));
}

/// Given the Bayeux URL instead of the base URL, the POST reaches the
/// long-polling transport, which answers 200 with a Bayeux error: the
/// command fails and says what `--url` should be.
#[tokio::test]
async fn halley_publish_to_the_bayeux_endpoint_fails_and_says_why() {
    let server = Server::start(&["--api-key", KEY]);
    let output = halley_publish_to(&server.url, KEY, "/x", "1");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("base URL"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "nothing printed as if it had worked"
    );
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = Server::start(&["--api-key", KEY]);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = reqwest::Client::new()
            .post(format!("{}/api/publish", server.origin))
            .header("content-type", "application/json")
            .header("authorization", format!("{scheme} {KEY}"))
            .body(r#"{"channel":"/a","data":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{scheme}");
    }
    let basic = reqwest::Client::new()
        .post(format!("{}/api/publish", server.origin))
        .header("authorization", format!("Basic {KEY}"))
        .body(r#"{"channel":"/a","data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401, "another scheme is not a key");
}

#[tokio::test]
async fn an_address_guessing_keys_is_refused_for_a_while() {
    // 0.01 a second: no attempt comes back during the test.
    let server = Server::start(&["--api-key", KEY, "--api-key-failures-per-ip", "0.01"]);
    let body = r#"{"channel":"/a","data":1}"#;
    for guess in 0..10 {
        let (status, _) = post(&server, Some(&format!("guess-{guess}")), body).await;
        assert_eq!(status, 401, "attempt {guess}: the burst");
    }
    let (status, answer) = post(&server, Some(KEY), body).await;
    assert_eq!(
        status, 429,
        "even the right key, from this address: {answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("too many failed"),
        "{answer}"
    );
    server.logged("api-key-failures-per-ip").await;
    // Another address is not affected.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(format!("{}/api/publish", server.origin))
        .header("content-type", "application/json")
        .bearer_auth(KEY)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 200);
}

#[test]
fn a_short_api_key_stops_the_server_with_the_reason() {
    let stderr = common::refused_config("api-keys = [\"long-enough-key-0123\", \"short\"]\n");
    assert!(
        stderr.contains("key 2 of 2 is shorter than 16 characters"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("short\""),
        "the key itself is not shown: {stderr}"
    );
}

/// Issue 14, finding 9: a trusted publisher bypassed every rate limit, so
/// a leaked key (or a runaway backend) made the node broadcast without
/// bound. Each key has its own rate (`api-publish-rate`, bursts of at
/// least a request): beyond it, 429 with `Retry-After`, nothing published.
#[tokio::test]
async fn a_key_over_its_publish_rate_gets_429_with_retry_after_and_publishes_nothing() {
    let server = Server::start(&[
        "--api-keys",
        &format!("{KEY},{OTHER_KEY}"),
        "--api-publish-rate",
        "1",
        "--max-batch-messages",
        "10",
    ]);
    let (client, mut deliveries) = server.connected_client().await;
    client.subscribe("/rate").await.unwrap();
    let batch = |from: usize, n: usize| {
        let messages: Vec<Value> = (from..from + n)
            .map(|i| json!({"channel": "/rate", "data": i}))
            .collect();
        Value::Array(messages).to_string()
    };
    // The burst: one whole request of max-batch-messages.
    let (status, answer) = post(&server, Some(KEY), &batch(0, 10)).await;
    assert_eq!(status, 200, "{answer}");

    let response = reqwest::Client::new()
        .post(format!("{}/api/publish", server.origin))
        .header("content-type", "application/json")
        .bearer_auth(KEY)
        .body(batch(10, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=2).contains(&retry_after),
        "2 messages at 1/s: {retry_after}"
    );
    let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("api-publish-rate"),
        "{answer}"
    );
    // The other key has its own rate; its message is the next delivery,
    // after the first ten: the refused two were not published.
    let (status, answer) = post(&server, Some(OTHER_KEY), &batch(100, 1)).await;
    assert_eq!(status, 200, "{answer}");
    let mut seen = Vec::new();
    while seen.last() != Some(&100) {
        let delivery = within(30.0, "deliveries", deliveries.recv()).await.unwrap();
        seen.push(serde_json::from_str::<u64>(delivery.data.get()).unwrap());
    }
    assert_eq!(seen, (0..10).chain([100]).collect::<Vec<_>>());
    assert_eq!(
        server
            .metric("halley_limit_hits_total{limit=\"api_publish_rate\"}")
            .await,
        1.0
    );
}
