//! The HTTP surface around Bayeux: health check, callback-polling (JSONP),
//! and a graceful stop on SIGTERM. Also the harness's own test (finding the
//! `listening on` URL), which lives here so that it runs once.

mod common;

use std::time::Duration;

use common::*;
use halley_client::Client;
use serde_json::{json, Value};

#[tokio::test]
async fn healthz_is_200() {
    let server = Server::start(&[]);
    let response = server
        .browser()
        .raw_get(&format!("{}/healthz", server.origin))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

/// `<endpoint>?jsonp=<callback>&message=<url-encoded messages>`.
fn jsonp_url(server: &Server, callback: &str, messages: &Value) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("jsonp", callback)
        .append_pair("message", &messages.to_string())
        .finish();
    format!("{}?{query}", server.url)
}

/// The array inside `callback(...)` (a trailing `;` tolerated).
fn unwrap_jsonp(callback: &str, body: &str) -> Vec<Value> {
    let body = body.trim().trim_end_matches(';');
    let inner = body
        .strip_prefix(&format!("{callback}("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a call of {callback}: {body:?}"));
    match serde_json::from_str(inner) {
        Ok(Value::Array(messages)) => messages,
        other => panic!("not an array inside the callback: {other:?} from {body:?}"),
    }
}

#[tokio::test]
async fn callback_polling_wraps_replies_in_the_callback() {
    // Held connects wait 60 s: a connect answered within the 30 s of
    // `within` was answered because of what was queued.
    let server = Server::start(&["--timeout", "60000"]);
    let browser = server.browser();
    let url = jsonp_url(
        &server,
        "cb",
        &json!([{"id": "1", "channel": "/meta/handshake", "version": "1.0",
                 "supportedConnectionTypes": ["callback-polling"]}]),
    );
    let response = browser.raw_get(&url).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    let replies = unwrap_jsonp("cb", &response.text());
    let reply = reply_with_id(&replies, "1");
    assert_eq!(reply["successful"], true, "{reply}");
    let client_id = reply["clientId"].as_str().unwrap().to_owned();

    let connect = |id: &str, advice: Value| {
        jsonp_url(
            &server,
            "jQuery_123",
            &json!([{"id": id, "channel": "/meta/connect", "clientId": client_id,
                     "connectionType": "callback-polling", "advice": advice}]),
        )
    };
    let response = browser
        .raw_get(&connect("2", json!({"timeout": 0})))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let replies = unwrap_jsonp("jQuery_123", &response.text());
    assert_eq!(
        reply_with_id(&replies, "2")["successful"],
        true,
        "{replies:?}"
    );

    // A delivery comes back through the callback too.
    let subscribe = jsonp_url(
        &server,
        "cb",
        &json!([{"id": "3", "channel": "/meta/subscribe", "clientId": client_id,
                 "subscription": "/jsonp"}]),
    );
    let replies = unwrap_jsonp("cb", &browser.raw_get(&subscribe).await.unwrap().text());
    assert_eq!(
        reply_with_id(&replies, "3")["successful"],
        true,
        "{replies:?}"
    );
    let (publisher, _) = server.connected_client().await;
    publisher
        .publish("/jsonp", &json!({"via": "jsonp"}))
        .await
        .unwrap();
    let response = within(
        30.0,
        "a connect with a queued message",
        browser.raw_get(&connect("4", json!({}))),
    )
    .await
    .unwrap();
    let replies = unwrap_jsonp("jQuery_123", &response.text());
    let delivered = deliveries_in(&replies);
    assert_eq!(delivered.len(), 1, "{replies:?}");
    assert_eq!(delivered[0]["data"], json!({"via": "jsonp"}));
    assert_eq!(replies.last().unwrap()["channel"], "/meta/connect");
}

#[tokio::test]
async fn callback_polling_rejects_a_callback_that_is_not_a_name() {
    let server = Server::start(&[]);
    let browser = server.browser();
    let handshake = json!([{"id": "1", "channel": "/meta/handshake", "version": "1.0",
                            "supportedConnectionTypes": ["callback-polling"]}]);
    for callback in ["alert(1)//", "a b", "cb;evil()", "<script>", "", "x\"y"] {
        let response = browser
            .raw_get(&jsonp_url(&server, callback, &handshake))
            .await
            .unwrap();
        assert_eq!(
            response.status,
            400,
            "callback {callback:?} answered: {}",
            response.text()
        );
    }
    let response = browser
        .raw_get(&jsonp_url(&server, "ok_cb", &handshake))
        .await
        .unwrap();
    assert_eq!(
        response.status,
        200,
        "the server still answers: {}",
        response.text()
    );
}

#[tokio::test]
async fn sigterm_answers_the_held_connect_and_exits_zero() {
    let mut server = Server::start(&["--timeout", "20000"]);
    let browser = server.browser();
    let client_id = handshake(&browser).await;
    first_connect(&browser, &client_id).await;
    let held = {
        let url = server.url.clone();
        let jar = browser.cookies().clone();
        tokio::spawn(async move {
            let tab = Client::builder(url).cookie_jar(jar).build().unwrap();
            tab.raw_post(
                json!([{"id": "held", "channel": "/meta/connect", "clientId": client_id,
                        "connectionType": "long-polling"}])
                .to_string(),
            )
            .await
        })
    };
    held_in_browser(&server, &browser).await;
    assert!(!held.is_finished(), "the connect should be held");

    let exit =
        tokio::task::spawn_blocking(move || server.terminate_with_log(Duration::from_secs(30)));
    let response = within(30.0, "the held connect after SIGTERM", held)
        .await
        .unwrap()
        .expect("an HTTP answer, not a dropped connection");
    assert_eq!(response.status, 200, "{}", response.text());
    let replies = messages_of(&response);
    let reply = reply_with_id(&replies, "held");
    assert_eq!(reply["channel"], "/meta/connect");
    assert_eq!(reply["advice"]["reconnect"], "retry", "{reply}");

    let (status, log) = exit.await.unwrap();
    let status = status.unwrap_or_else(|| panic!("still running 30 s after SIGTERM; log:\n{log}"));
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
}

/// The harness finds the URL in the server's `listening on` line (here,
/// not in `common`, so that it runs once rather than in every test binary).
#[test]
fn finds_the_listening_url() {
    assert_eq!(
        listening_url("2024 INFO halley: listening on http://127.0.0.1:4321/cometd").as_deref(),
        Some("http://127.0.0.1:4321/cometd")
    );
    assert_eq!(
        listening_url("\u{1b}[32mINFO\u{1b}[0m listening on http://127.0.0.1:1/cometd\u{1b}[0m x")
            .as_deref(),
        Some("http://127.0.0.1:1/cometd")
    );
    assert_eq!(listening_url("listening on 127.0.0.1:1"), None);
}

#[tokio::test]
async fn the_browser_cookie_is_same_site_lax_and_secure_when_asked() {
    let handshake = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#;
    for (flags, secure) in [(&[][..], false), (&["--cookie-secure"][..], true)] {
        let server = Server::start(flags);
        let response = reqwest::Client::new()
            .post(&server.url)
            .header("content-type", "application/json")
            .body(handshake)
            .send()
            .await
            .unwrap();
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(cookie.starts_with("BAYEUX_BROWSER="), "{cookie}");
        assert!(cookie.contains("; HttpOnly; SameSite=Lax"), "{cookie}");
        assert_eq!(cookie.ends_with("; Secure"), secure, "{cookie}");
    }
}
