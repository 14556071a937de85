//! The client against a scripted fake Bayeux server (a few lines of
//! HTTP/1.1 over a `TcpListener`): re-handshake and re-subscribe, advice
//! `none`, refusals as values, cookies and URL suffixes. No Halley server is
//! needed; the end-to-end suite in `crates/halley/tests` covers the real one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use halley_client::{Client, Error, State};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    cookie: Option<String>,
    messages: Vec<Value>,
}

/// What the script answers: a delay (a held connect), a body, a cookie to set.
struct Answer {
    delay: Duration,
    body: Value,
    set_cookie: Option<&'static str>,
}

impl Answer {
    fn now(body: Value) -> Self {
        Answer {
            delay: Duration::ZERO,
            body,
            set_cookie: None,
        }
    }
}

type Script = dyn Fn(&Seen) -> Answer + Send + Sync;

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cometd", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(stream, script.clone(), log.clone()));
            }
        });
        Fake { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(mut stream: TcpStream, script: Arc<Script>, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let seen = Seen {
            path,
            cookie: header("cookie"),
            messages: serde_json::from_slice(&body).unwrap(),
        };
        log.lock().unwrap().push(seen.clone());
        let answer = script(&seen);
        tokio::time::sleep(answer.delay).await;
        let body = answer.body.to_string();
        let cookie = answer
            .set_cookie
            .map(|c| format!("Set-Cookie: {c}\r\n"))
            .unwrap_or_default();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{cookie}\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn reply_to(m: &Value, extra: Value) -> Value {
    let mut reply = json!({"channel": m["channel"], "id": m["id"], "successful": true});
    for (k, v) in extra.as_object().unwrap() {
        reply[k] = v.clone();
    }
    reply
}

/// A well-behaved server whose first session is lost after one connect.
fn losing_server() -> impl Fn(&Seen) -> Answer + Send + Sync + 'static {
    let handshakes = Mutex::new(0u32);
    let connects_of_c1 = Mutex::new(0u32);
    move |seen: &Seen| {
        let m = &seen.messages[0];
        match m["channel"].as_str().unwrap() {
            "/meta/handshake" => {
                let mut n = handshakes.lock().unwrap();
                *n += 1;
                let mut answer = Answer::now(json!([reply_to(
                    m,
                    json!({
                        "clientId": format!("c{n}"), "version": "1.0",
                        "supportedConnectionTypes": ["long-polling"],
                        "advice": {"reconnect": "retry", "interval": 0, "timeout": 200}
                    })
                )]));
                answer.set_cookie = Some("BAYEUX_BROWSER=b1; Path=/; HttpOnly");
                answer
            }
            "/meta/subscribe" => Answer::now(Value::Array(
                seen.messages
                    .iter()
                    .map(|m| reply_to(m, json!({"subscription": m["subscription"]})))
                    .collect(),
            )),
            "/meta/connect" if m["clientId"] == "c1" => {
                let mut n = connects_of_c1.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    // Held a little, so the test's subscribe lands before
                    // the session is lost.
                    Answer {
                        delay: Duration::from_millis(150),
                        body: json!([reply_to(m, json!({}))]),
                        set_cookie: None,
                    }
                } else {
                    Answer::now(json!([{
                        "channel": "/meta/connect", "id": m["id"], "successful": false,
                        "error": "402::session_unknown",
                        "advice": {"reconnect": "handshake", "interval": 0}
                    }]))
                }
            }
            "/meta/connect" if m["advice"]["timeout"] == 0 => Answer::now(json!([
                {"channel": "/x", "data": {"n": 1}},
                reply_to(m, json!({"advice": {"reconnect": "retry", "interval": 0, "timeout": 200}}))
            ])),
            "/meta/connect" => Answer {
                delay: Duration::from_millis(200),
                body: json!([reply_to(m, json!({}))]),
                set_cookie: None,
            },
            "/meta/disconnect" => Answer::now(json!([reply_to(m, json!({}))])),
            "/denied" => Answer::now(json!([{
                "channel": "/denied", "id": m["id"], "successful": false,
                "error": "403::publish_denied"
            }])),
            _ => Answer::now(json!([reply_to(m, json!({}))])),
        }
    }
}

#[tokio::test]
async fn rehandshakes_and_resubscribes_when_the_session_is_lost() {
    let fake = Fake::start(losing_server()).await;
    let client = Client::builder(&fake.url)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .build()
        .unwrap();
    let mut deliveries = client.take_deliveries().unwrap();
    assert!(client.take_deliveries().is_none(), "taken once");

    let info = client.handshake().await.unwrap();
    assert_eq!(info.client_id, "c1");
    assert_eq!(info.advice.unwrap().timeout, Some(200));
    client.subscribe("/x").await.unwrap();

    let delivery = tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
        .await
        .expect("a delivery after the re-handshake")
        .unwrap();
    assert_eq!(delivery.channel, "/x");
    assert_eq!(delivery.data_value(), json!({"n": 1}));

    let stats = client.stats();
    assert_eq!(stats.handshakes, 2);
    assert_eq!(stats.rehandshakes, 1);
    assert_eq!(client.client_id().as_deref(), Some("c2"));
    assert_eq!(client.subscriptions(), ["/x"]);

    let seen = fake.seen();
    let resubscribe = seen
        .iter()
        .find(|s| {
            s.messages[0]["channel"] == "/meta/subscribe" && s.messages[0]["clientId"] == "c2"
        })
        .expect("subscribed again with the new clientId");
    assert_eq!(resubscribe.messages[0]["subscription"], "/x");
    assert_eq!(seen[0].path, "/cometd/handshake");
    assert_eq!(seen[0].cookie, None);
    assert!(seen[1..]
        .iter()
        .all(|s| s.cookie.as_deref() == Some("BAYEUX_BROWSER=b1")));
    let first_connect = seen
        .iter()
        .find(|s| s.messages[0]["channel"] == "/meta/connect")
        .unwrap();
    assert_eq!(first_connect.path, "/cometd/connect");
    assert_eq!(first_connect.messages[0]["advice"], json!({"timeout": 0}));
    assert_eq!(first_connect.messages[0]["connectionType"], "long-polling");

    client.disconnect().await.unwrap();
    assert_eq!(client.state(), State::Disconnected);
    assert!(matches!(
        client.publish("/x", &1).await,
        Err(Error::NotHandshaken)
    ));
}

#[tokio::test]
async fn refusals_are_error_values_with_the_bayeux_error() {
    let fake = Fake::start(losing_server()).await;
    let client = Client::builder(&fake.url).build().unwrap();
    assert!(matches!(
        client.subscribe("/x").await,
        Err(Error::NotHandshaken)
    ));
    client.handshake().await.unwrap();
    let err = client.publish("/denied", &json!({})).await.unwrap_err();
    assert_eq!(err.server_error().unwrap().as_str(), "403::publish_denied");
    assert_eq!(err.server_error().unwrap().code(), Some(403));
    let ack = client.publish("/fine", &json!({"a": 1})).await.unwrap();
    assert_eq!(ack.channel, "/fine");
    assert!(!ack.id.is_empty());
}

#[tokio::test]
async fn advice_none_ends_the_connect_loop() {
    let fake = Fake::start(|seen: &Seen| {
        let m = &seen.messages[0];
        let extra = match m["channel"].as_str().unwrap() {
            "/meta/handshake" => json!({"clientId": "only", "advice": {"reconnect": "retry", "interval": 0, "timeout": 100}}),
            _ => json!({"successful": false, "error": "403::go_away", "advice": {"reconnect": "none"}}),
        };
        Answer::now(json!([reply_to(m, extra)]))
    })
    .await;
    let client = Client::builder(&fake.url).build().unwrap();
    client.handshake().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.state() != State::Disconnected {
        assert!(tokio::time::Instant::now() < deadline, "loop did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let connects = fake
        .seen()
        .iter()
        .filter(|s| s.messages[0]["channel"] == "/meta/connect")
        .count();
    assert_eq!(connects, 1, "no connect after reconnect: none");
    assert_eq!(client.stats().rehandshakes, 0);
}

#[tokio::test]
async fn shared_cookie_jar_makes_two_clients_one_browser() {
    let fake = Fake::start(losing_server()).await;
    let jar = Arc::new(halley_client::CookieJar::new());
    let a = Client::builder(&fake.url)
        .cookie_jar(jar.clone())
        .build()
        .unwrap();
    let b = Client::builder(&fake.url)
        .cookie_jar(jar.clone())
        .append_message_type_to_url(false)
        .build()
        .unwrap();
    a.handshake().await.unwrap();
    assert_eq!(jar.get("BAYEUX_BROWSER").as_deref(), Some("b1"));
    let response = b
        .raw_post(r#"[{"channel":"/meta/handshake","id":"x"}]"#)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.messages()[0]["successful"], true);
    // Client `a`'s connect loop runs meanwhile: find b's request by its id.
    let raw = fake
        .seen()
        .into_iter()
        .find(|s| s.messages[0]["id"] == "x")
        .unwrap();
    assert_eq!(raw.path, "/cometd");
    assert_eq!(raw.cookie.as_deref(), Some("BAYEUX_BROWSER=b1"));
}
