//! The client against a scripted fake Bayeux server (a few lines of
//! HTTP/1.1 over a `TcpListener`): re-handshake and re-subscribe, advice
//! `none`, refusals as values, cookies and URL suffixes. No Halley server is
//! needed; the end-to-end suite in `crates/halley/tests` covers the real one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, within};
use halley_client::{Client, Error, State};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// The client's port: which TCP connection the request came on.
    port: u16,
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
                let (stream, peer) = listener.accept().await.unwrap();
                tokio::spawn(serve(stream, peer.port(), script.clone(), log.clone()));
            }
        });
        Fake { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(mut stream: TcpStream, port: u16, script: Arc<Script>, log: Arc<Mutex<Vec<Seen>>>) {
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
            port,
            path,
            cookie: header("cookie"),
            messages: serde_json::from_slice(&body).unwrap(),
        };
        log.lock().unwrap().push(seen.clone());
        let answer = script(&seen);
        // Part of the script, not synchronisation: a server holding a
        // connect (or answering after the client gave up).
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

/// A well-behaved server whose first session is lost once the test sets
/// `lose` (after its subscribe succeeded, so that there is something to
/// subscribe again): the next connect of `c1` is refused with 402.
fn losing_server(lose: Arc<AtomicBool>) -> impl Fn(&Seen) -> Answer + Send + Sync + 'static {
    let handshakes = Mutex::new(0u32);
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
                if !lose.load(Ordering::SeqCst) {
                    // Held a little (any time would do), then connect again.
                    Answer {
                        delay: Duration::from_millis(50),
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
    let lose = Arc::new(AtomicBool::new(false));
    let fake = Fake::start(losing_server(lose.clone())).await;
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
    lose.store(true, Ordering::SeqCst);

    let delivery = within("a delivery after the re-handshake", deliveries.recv())
        .await
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
async fn a_cut_connection_connects_again_on_a_new_one_with_the_same_session() {
    // Every connect is held far longer than the test: only the cut ends one.
    let fake = Fake::start(|seen: &Seen| {
        let m = &seen.messages[0];
        match m["channel"].as_str().unwrap() {
            "/meta/handshake" => Answer::now(json!([reply_to(
                m,
                json!({"clientId": "c1", "version": "1.0",
                       "supportedConnectionTypes": ["long-polling"],
                       "advice": {"reconnect": "retry", "interval": 0, "timeout": 600_000}})
            )])),
            "/meta/connect" => Answer {
                delay: Duration::from_secs(3600),
                body: json!([reply_to(m, json!({}))]),
                set_cookie: None,
            },
            _ => Answer::now(json!([reply_to(m, json!({}))])),
        }
    })
    .await;
    let client = Client::builder(&fake.url)
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .build()
        .unwrap();
    client.handshake().await.unwrap();
    let connects = || -> Vec<Seen> {
        fake.seen()
            .into_iter()
            .filter(|s| s.messages[0]["channel"] == "/meta/connect")
            .collect()
    };
    eventually("the first connect", || connects().len() == 1).await;

    client.cut();
    eventually("a connect after the cut", || connects().len() == 2).await;
    let seen = connects();
    assert_ne!(seen[0].port, seen[1].port, "a new TCP connection");
    assert_eq!(seen[1].messages[0]["clientId"], "c1", "the same session");
    assert_eq!(
        seen[1].messages[0]["advice"],
        json!({"timeout": 0}),
        "not held: the client learns at once that it is connected again"
    );
    let stats = client.stats();
    assert_eq!((stats.handshakes, stats.rehandshakes), (1, 0));
    assert_eq!(stats.connect_failures, 1, "the cut counts as a failure");
    assert!(
        !fake
            .seen()
            .iter()
            .any(|s| s.messages[0]["channel"] == "/meta/disconnect"),
        "no /meta/disconnect"
    );
}

#[tokio::test]
async fn refusals_are_error_values_with_the_bayeux_error() {
    let fake = Fake::start(losing_server(Arc::default())).await;
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
    eventually("the loop to stop", || client.state() == State::Disconnected).await;
    // The loop sets Disconnected as it returns, and the fake records a
    // request before answering it: every connect ever sent is counted.
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
    let fake = Fake::start(losing_server(Arc::default())).await;
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
    assert_eq!(response.json().unwrap()[0]["successful"], true);
    // Client `a`'s connect loop runs meanwhile: find b's request by its id.
    let raw = fake
        .seen()
        .into_iter()
        .find(|s| s.messages[0]["id"] == "x")
        .unwrap();
    assert_eq!(raw.path, "/cometd");
    assert_eq!(raw.cookie.as_deref(), Some("BAYEUX_BROWSER=b1"));
}

/// A server speaking the ack extension. Its first session numbers its
/// connect replies and puts one delivery `{"n": k}` in each, loses one reply
/// (held past the client's timeout), refuses one connect, re-sends what the
/// client did not acknowledge, then loses the session; the second session
/// agrees in CometD 5's object form, starting from batch 7.
fn acking_server() -> impl Fn(&Seen) -> Answer + Send + Sync + 'static {
    let handshakes = Mutex::new(0u32);
    let connects = Mutex::new(0u32);
    move |seen: &Seen| {
        let m = &seen.messages[0];
        let ack = m["ext"]["ack"].as_u64();
        let numbered = |batch: u64, n: Option<u64>, delay: u64| {
            let mut body: Vec<Value> = n
                .map(|n| json!({"channel": "/n", "data": {"n": n}}))
                .into_iter()
                .collect();
            body.push(reply_to(m, json!({"ext": {"ack": batch}})));
            Answer {
                delay: Duration::from_millis(delay),
                body: Value::Array(body),
                set_cookie: None,
            }
        };
        match (m["channel"].as_str().unwrap(), m["clientId"].as_str()) {
            ("/meta/handshake", _) => {
                let mut n = handshakes.lock().unwrap();
                *n += 1;
                let mut extra = json!({
                    "clientId": format!("a{n}"),
                    "advice": {"reconnect": "retry", "interval": 0, "timeout": 200}
                });
                if m["ext"]["ack"] == true {
                    extra["ext"] = if *n == 1 {
                        json!({"ack": true})
                    } else {
                        json!({"ack": {"enabled": true, "batch": 7}})
                    };
                }
                Answer::now(json!([reply_to(m, extra)]))
            }
            ("/meta/connect", Some("a1")) => {
                let mut k = connects.lock().unwrap();
                *k += 1;
                match *k {
                    1 => numbered(1, Some(1), 0),
                    2 => numbered(2, Some(2), 50),
                    // Lost: answered after the client gave up on it.
                    3 => numbered(3, Some(3), 1500),
                    4 => Answer::now(json!([reply_to(
                        m,
                        json!({"successful": false, "error": "500::boom", "ext": {"ack": 99},
                               "advice": {"reconnect": "retry", "interval": 0}})
                    )])),
                    // Batch 3 was not acknowledged: its delivery comes again.
                    5 => numbered(4, Some(3), 0),
                    _ => Answer::now(json!([reply_to(
                        m,
                        json!({"successful": false, "error": "402::session_unknown",
                               "advice": {"reconnect": "handshake", "interval": 0}})
                    )])),
                }
            }
            ("/meta/connect", _) => match ack {
                Some(7) => numbered(8, Some(4), 0),
                Some(acked) => numbered(acked + 1, None, 200),
                None => Answer {
                    delay: Duration::from_millis(200),
                    body: json!([reply_to(m, json!({}))]),
                    set_cookie: None,
                },
            },
            _ => Answer::now(json!([reply_to(m, json!({}))])),
        }
    }
}

#[tokio::test]
async fn the_ack_extension_numbers_connects_and_survives_lost_replies() {
    let fake = Fake::start(acking_server()).await;
    let client = Client::builder(&fake.url)
        .ack(true)
        .handshake_ext(serde_json::value::RawValue::from_string(r#"{"custom":1}"#.into()).unwrap())
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .max_network_delay(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut deliveries = client.take_deliveries().unwrap();
    let info = client.handshake().await.unwrap();
    assert!(info.ack, "the server agreed");

    let mut got = Vec::new();
    while got.len() < 4 {
        let delivery = within("four deliveries", deliveries.recv()).await.unwrap();
        got.push(delivery.data_value()["n"].as_u64().unwrap());
    }
    assert_eq!(got, [1, 2, 3, 4], "each once, in order");
    eventually("batch 9", || client.ack_batch() >= Some(9)).await;
    assert_eq!(client.client_id().as_deref(), Some("a2"));
    assert_eq!(client.stats().rehandshakes, 1);
    assert!(deliveries.is_empty(), "no duplicate");

    let seen = fake.seen();
    let handshakes: Vec<_> = seen
        .iter()
        .filter(|s| s.messages[0]["channel"] == "/meta/handshake")
        .collect();
    for handshake in &handshakes {
        assert_eq!(
            handshake.messages[0]["ext"],
            json!({"custom": 1, "ack": true}),
            "asked for at every handshake, merged into the handshake ext"
        );
    }
    let acks: Vec<(String, Value)> = seen
        .iter()
        .filter(|s| s.messages[0]["channel"] == "/meta/connect")
        .map(|s| {
            let m = &s.messages[0];
            (
                m["clientId"].as_str().unwrap().to_owned(),
                m["ext"]["ack"].clone(),
            )
        })
        .take(8)
        .collect();
    let expected = [
        ("a1", 0),
        ("a1", 1),
        ("a1", 2), // lost reply
        ("a1", 2), // refused: its ext.ack is not a batch received
        ("a1", 2), // batch 4 re-sends delivery 3
        ("a1", 4), // 402: re-handshake, which starts over
        ("a2", 7), // the object form's starting batch
        ("a2", 8),
    ];
    let expected: Vec<(String, Value)> = expected
        .iter()
        .map(|(c, a)| ((*c).to_owned(), json!(a)))
        .collect();
    assert_eq!(acks, expected);
}

#[tokio::test]
async fn no_ack_unless_asked_for_and_agreed() {
    // Asked for, but the server does not answer ext.ack.
    let fake = Fake::start(losing_server(Arc::default())).await;
    let client = Client::builder(&fake.url).ack(true).build().unwrap();
    let info = client.handshake().await.unwrap();
    assert!(!info.ack);
    assert_eq!(client.ack_batch(), None);
    // Not asked for, though the server would.
    let acking = Fake::start(acking_server()).await;
    let plain = Client::builder(&acking.url).build().unwrap();
    assert!(!plain.handshake().await.unwrap().ack);
    eventually("two connects of each client", || {
        client.stats().connects >= 2 && plain.stats().connects >= 2
    })
    .await;
    let handshake = &fake.seen()[0].messages[0];
    assert_eq!(handshake["ext"], json!({"ack": true}));
    for seen in fake.seen().iter().chain(&acking.seen()) {
        let m = &seen.messages[0];
        if m["channel"] == "/meta/connect" {
            assert!(m.get("ext").is_none(), "no ext.ack on {m}");
        }
    }
    assert!(acking.seen()[0].messages[0].get("ext").is_none());
    assert_eq!(plain.ack_batch(), None);
}
