//! The webhook Metadata Adapter end to end: a real `halley serve` asking a
//! backend written in the test (a real HTTP server on a real socket) on
//! handshake, subscribe and publish: allow, deny, slow, down, cache.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{handshake_with_token, publish_raw, start_with_config, subscribe_raw, within, Server};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// How the fake backend answers one question.
type Policy = dyn Fn(&Value) -> Answer + Send + Sync;

enum Answer {
    Json(Value),
    /// Sleeps, then allows.
    Slow(Duration),
    Status(u16),
    /// `307 Temporary Redirect` to this URL (which keeps the POST).
    Redirect(String),
}

/// A backend on 127.0.0.1:<port>; records every question it was asked.
struct Backend {
    url: String,
    questions: Arc<Mutex<Vec<Value>>>,
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(policy: impl Fn(&Value) -> Answer + Send + Sync + 'static) -> Backend {
        Backend::start_on(0, policy).await
    }

    async fn start_on(
        port: u16,
        policy: impl Fn(&Value) -> Answer + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let url = format!("http://{}/authorize", listener.local_addr().unwrap());
        let questions = Arc::new(Mutex::new(Vec::new()));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let policy: Arc<Policy> = Arc::new(policy);
        let (q, a) = (questions.clone(), authorizations.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (policy, q, a) = (policy.clone(), q.clone(), a.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (policy, q, a) = (policy.clone(), q.clone(), a.clone());
                            async move {
                                let auth = request
                                    .headers()
                                    .get("authorization")
                                    .map(|v| v.to_str().unwrap().to_owned());
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let question: Value = serde_json::from_slice(&body).unwrap();
                                q.lock().unwrap().push(question.clone());
                                a.lock().unwrap().push(auth);
                                let mut location = None;
                                let (status, body) = match policy(&question) {
                                    Answer::Json(v) => (200, v.to_string()),
                                    Answer::Redirect(url) => {
                                        location = Some(url);
                                        (307, "{}".to_owned())
                                    }
                                    Answer::Slow(d) => {
                                        // The scenario: a backend this slow.
                                        tokio::time::sleep(d).await;
                                        (200, json!({"allow": true}).to_string())
                                    }
                                    Answer::Status(s) => (s, "{}".to_owned()),
                                };
                                let mut response = hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json");
                                if let Some(location) = location {
                                    response = response.header("location", location);
                                }
                                Ok::<_, Infallible>(
                                    response.body(Full::new(Bytes::from(body))).unwrap(),
                                )
                            }
                        });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            url,
            questions,
            authorizations,
            task,
        }
    }

    fn asked(&self, action: &str) -> usize {
        self.questions
            .lock()
            .unwrap()
            .iter()
            .filter(|q| q["action"] == action)
            .count()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_for(url: &str, extra: &str) -> Server {
    start_with_config(
        &format!("[webhook]\nurl = \"{url}\"\nsecret = \"halley-to-backend\"\n{extra}\n"),
        &[],
    )
}

/// The test backend's rules: tokens "ada" and "bob" are users; ada may
/// subscribe to /chat/** and publish on /chat/1 only.
fn rules(question: &Value) -> Answer {
    let token = question["ext"]["authentication"]["token"].as_str();
    Answer::Json(match question["action"].as_str().unwrap() {
        "handshake" => match token {
            Some(user @ ("ada" | "bob")) => json!({"allow": true, "user": user}),
            _ => json!({"allow": false, "reason": "unknown token"}),
        },
        "subscribe" => {
            let channel = question["channel"].as_str().unwrap();
            json!({"allow": channel.starts_with("/chat/"), "reason": format!("no access to {channel}")})
        }
        "publish" => {
            json!({"allow": question["channel"] == "/chat/1" && question["user"] == "ada"})
        }
        other => panic!("unexpected action {other}"),
    })
}

fn reason(reply: &Value) -> &str {
    reply["ext"]["halley"]["reason"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_backend_allows_and_denies_handshake_subscribe_and_publish() {
    let backend = Backend::start(rules).await;
    let server = server_for(&backend.url, "");
    let browser = server.browser();

    let denied = handshake_with_token(&browser, "mallory").await;
    assert_eq!(denied["error"], "403::handshake_denied", "{denied}");
    // A verdict: the client is told not to try again.
    assert_eq!(denied["advice"]["reconnect"], "none", "{denied}");
    assert_eq!(reason(&denied), "unknown token");

    let reply = handshake_with_token(&browser, "ada").await;
    assert_eq!(reply["successful"], true, "{reply}");
    let id = reply["clientId"].as_str().unwrap();
    let ok = subscribe_raw(&browser, id, "s1", "/chat/*").await;
    assert_eq!(ok["successful"], true, "{ok}");
    let no = subscribe_raw(&browser, id, "s2", "/admin").await;
    assert_eq!(no["error"], "403::subscribe_denied", "{no}");
    assert_eq!(reason(&no), "no access to /admin");
    let published = publish_raw(&browser, id, "p1", "/chat/1", json!({"text": "hi"})).await;
    assert_eq!(published["successful"], true, "{published}");
    let refused = publish_raw(&browser, id, "p2", "/chat/2", json!(1)).await;
    assert_eq!(refused["error"], "403::publish_denied", "{refused}");
    assert!(
        reason(&refused).contains("/chat/2"),
        "a default reason names the channel: {refused}"
    );

    // What the backend was told.
    let questions = backend.questions.lock().unwrap().clone();
    let publish = questions.iter().find(|q| q["action"] == "publish").unwrap();
    assert_eq!(publish["user"], "ada");
    assert_eq!(publish["clientId"], id);
    assert_eq!(publish["data"], json!({"text": "hi"}));
    assert!(backend
        .authorizations
        .lock()
        .unwrap()
        .iter()
        .all(|a| a.as_deref() == Some("Bearer halley-to-backend")));
}

#[tokio::test]
async fn answers_are_cached_per_user_and_channel() {
    let backend = Backend::start(rules).await;
    let server = server_for(&backend.url, "cache-ms = 60000");
    let browser = server.browser();
    let id = handshake_with_token(&browser, "ada").await["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..20 {
        let reply = publish_raw(&browser, &id, &format!("p{i}"), "/chat/1", json!(i)).await;
        assert_eq!(reply["successful"], true);
    }
    assert_eq!(
        backend.asked("publish"),
        1,
        "19 of 20 answered from the cache"
    );
    // A second session of ada: its handshake and publishes hit the cache too.
    let other = server.browser();
    let id2 = handshake_with_token(&other, "ada").await["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    publish_raw(&other, &id2, "p", "/chat/1", json!(0)).await;
    assert_eq!(backend.asked("handshake"), 1);
    assert_eq!(backend.asked("publish"), 1);
    // Another channel is another question.
    publish_raw(&browser, &id, "p2", "/chat/2", json!(0)).await;
    assert_eq!(backend.asked("publish"), 2);
}

#[tokio::test]
async fn without_a_cache_every_message_is_asked() {
    let backend = Backend::start(rules).await;
    let server = server_for(&backend.url, "cache-ms = 0");
    let browser = server.browser();
    let id = handshake_with_token(&browser, "ada").await["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..3 {
        publish_raw(&browser, &id, &format!("p{i}"), "/chat/1", json!(i)).await;
    }
    assert_eq!(backend.asked("publish"), 3);
}

#[tokio::test]
async fn a_slow_backend_times_out_and_fails_closed() {
    // The backend answers after 60 s; a reply within the 30 s of `within`
    // came at Halley's timeout, not when the backend did.
    let backend = Backend::start(|_| Answer::Slow(Duration::from_secs(60))).await;
    let server = server_for(&backend.url, "timeout-ms = 300");
    let reply = within(
        30.0,
        "the handshake reply",
        handshake_with_token(&server.browser(), "ada"),
    )
    .await;
    assert_eq!(reply["error"], "403::handshake_denied", "{reply}");
    assert_eq!(reason(&reply), "authorization backend unavailable");
    server.logged("no answer within 300 ms").await;
}

#[tokio::test]
async fn a_backend_that_is_down_fails_closed_and_is_not_cached() {
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/authorize");
    let server = server_for(&url, "cache-ms = 60000");
    let reply = handshake_with_token(&server.browser(), "ada").await;
    assert_eq!(reply["error"], "403::handshake_denied", "{reply}");
    assert_eq!(reason(&reply), "authorization backend unavailable");
    // No verdict was reached: the client is told to come back, not to stop.
    assert_eq!(reply["advice"]["reconnect"], "retry", "{reply}");
    assert_eq!(reply["advice"]["interval"], 2000, "{reply}");

    // The backend comes up on that port: the failure was not cached.
    let backend = Backend::start_on(port, rules).await;
    let reply = handshake_with_token(&server.browser(), "ada").await;
    assert_eq!(reply["successful"], true, "{reply}");
    assert_eq!(backend.asked("handshake"), 1);
}

#[tokio::test]
async fn an_error_status_fails_closed_and_fail_open_allows() {
    let backend = Backend::start(|_| Answer::Status(500)).await;
    let closed = server_for(&backend.url, "");
    let reply = handshake_with_token(&closed.browser(), "ada").await;
    assert_eq!(reply["error"], "403::handshake_denied", "{reply}");

    let open = server_for(&backend.url, "fail-open = true");
    let browser = open.browser();
    let reply = handshake_with_token(&browser, "ada").await;
    assert_eq!(reply["successful"], true, "fail-open: {reply}");
    let id = reply["clientId"].as_str().unwrap();
    let sub = subscribe_raw(&browser, id, "s", "/anything").await;
    assert_eq!(sub["successful"], true, "fail-open: {sub}");
}

#[tokio::test]
async fn only_the_configured_actions_are_asked() {
    let backend = Backend::start(rules).await;
    let server = server_for(&backend.url, "actions = [\"handshake\"]");
    let browser = server.browser();
    let id = handshake_with_token(&browser, "bob").await["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    let sub = subscribe_raw(&browser, &id, "s", "/admin").await;
    assert_eq!(sub["successful"], true, "subscribe not asked: {sub}");
    assert_eq!(backend.asked("subscribe"), 0);
}

/// Issue 14, finding 11: a backend answering with a redirect is a failing
/// backend; Halley does not follow it to a server that would say yes (and
/// receive the credentials of every handshake).
#[tokio::test]
async fn a_redirect_is_not_followed_but_fails_closed() {
    let elsewhere =
        Backend::start(|_| Answer::Json(json!({"allow": true, "user": "mallory"}))).await;
    let to = elsewhere.url.clone();
    let backend = Backend::start(move |_| Answer::Redirect(to.clone())).await;
    let server = server_for(&backend.url, "cache-ms = 0");
    let reply = handshake_with_token(&server.browser(), "ada").await;
    assert_eq!(reply["error"], "403::handshake_denied", "{reply}");
    assert_eq!(reason(&reply), "authorization backend unavailable");
    assert_eq!(backend.asked("handshake"), 1);
    assert_eq!(elsewhere.asked("handshake"), 0, "the redirect was followed");
    server.logged("answered HTTP 307").await;
}

/// Issue 14, finding 11: distinct credentials defeat the cache, so a flood
/// of handshakes was a flood of backend calls, each a waiting task. Past
/// `max-in-flight` a question is refused at once, without a verdict (retry
/// advice), even with `fail-open`, and counted.
#[tokio::test]
async fn calls_past_max_in_flight_are_refused_at_once_with_retry_advice() {
    let backend = Backend::start(|_| Answer::Slow(Duration::from_secs(60))).await;
    let server = server_for(
        &backend.url,
        "cache-ms = 0\ntimeout-ms = 60000\nmax-in-flight = 2\nfail-open = true",
    );
    // Two handshakes hold both permits while the backend sleeps.
    let waiting: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|token| {
            let browser = server.browser();
            tokio::spawn(async move { handshake_with_token(&browser, token).await })
        })
        .collect();
    common::eventually(30.0, "two questions at the backend", || {
        backend.asked("handshake") == 2
    })
    .await;
    let refused = within(
        30.0,
        "the third handshake's answer, without waiting for the backend",
        handshake_with_token(&server.browser(), "c"),
    )
    .await;
    assert_eq!(refused["error"], "403::handshake_denied", "{refused}");
    assert_eq!(refused["advice"]["reconnect"], "retry", "{refused}");
    assert!(reason(&refused).contains("max-in-flight"), "{refused}");
    assert_eq!(backend.asked("handshake"), 2, "not asked");
    assert_eq!(
        server
            .metric("halley_limit_hits_total{limit=\"webhook_in_flight\"}")
            .await,
        1.0
    );
    for task in waiting {
        task.abort();
    }
}
