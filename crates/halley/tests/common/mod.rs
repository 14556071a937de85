//! The end-to-end harness: a real `halley serve` on `127.0.0.1:0`, and
//! helpers to talk Bayeux to it at the wire level (through
//! [`halley_client::Client`]'s `raw_*` methods, so cookies behave as in a
//! browser) or through the client's own API.
//!
//! Every test file includes this module; not every file uses every helper.
//! It holds no `#[test]`: one here would run once per test binary (the
//! harness's own test is in `http.rs`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use halley_client::{Client, Deliveries, RawResponse, TransportKind};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running `halley serve`, killed when dropped.
pub struct Server {
    child: Child,
    /// The Bayeux endpoint, `http://127.0.0.1:PORT/cometd`.
    pub url: String,
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    log: Arc<Mutex<Vec<String>>>,
    /// Set once stderr is closed (the process exited) and read to its end.
    log_complete: Arc<AtomicBool>,
}

/// Writes `toml` to a fresh file under the temp directory; its path.
pub fn config_file(toml: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("halley-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.toml", fastrand::u64(..)));
    std::fs::write(&file, toml).unwrap();
    file
}

/// `halley serve --config <toml> <flags>`: the settings only a file can hold.
pub fn start_with_config(toml: &str, flags: &[&str]) -> Server {
    let file = config_file(toml);
    let mut args = vec!["--config", file.to_str().unwrap()];
    args.extend_from_slice(flags);
    Server::start(&args)
}

/// Asserts that `halley serve` refuses to start with `toml`; its stderr.
pub fn refused_config(toml: &str) -> String {
    let file = config_file(toml);
    let output = Command::new(env!("CARGO_BIN_EXE_halley"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "started with {toml:?}: {stderr}");
    stderr
}

/// A long-polling handshake carrying `ext`: its reply (successful or not).
pub async fn handshake_with(browser: &Client, ext: Value) -> Value {
    let replies = exchange(
        browser,
        &json!([{"id": "hs", "channel": "/meta/handshake", "version": "1.0",
                 "supportedConnectionTypes": ["long-polling"], "ext": ext}]),
    )
    .await;
    reply_with_id(&replies, "hs").clone()
}

/// A handshake presenting `token` in `ext.authentication.token`, where the
/// Metadata Adapters look for credentials: its reply.
pub async fn handshake_with_token(browser: &Client, token: &str) -> Value {
    handshake_with(browser, json!({"authentication": {"token": token}})).await
}

/// A publish of `data` on `channel` as message `id`: the reply.
pub async fn publish_raw(
    browser: &Client,
    client_id: &str,
    id: &str,
    channel: &str,
    data: Value,
) -> Value {
    send_one(browser, client_id, id, channel, json!({ "data": data })).await
}

/// `/meta/subscribe` to `subscription` as message `id`: the reply.
pub async fn subscribe_raw(
    browser: &Client,
    client_id: &str,
    id: &str,
    subscription: &str,
) -> Value {
    send_one(
        browser,
        client_id,
        id,
        "/meta/subscribe",
        json!({ "subscription": subscription }),
    )
    .await
}

/// The URL in a `listening on http://...` line (ANSI colours tolerated).
pub fn listening_url(line: &str) -> Option<String> {
    let start = line.find("listening on ")? + "listening on ".len();
    let rest = &line[start..];
    if !rest.starts_with("http://") && !rest.starts_with("https://") {
        return None;
    }
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '\u{1b}' || c == '"')
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

impl Server {
    /// Starts `halley serve --listen 127.0.0.1:0 <flags>` and waits for its
    /// `listening on` line.
    pub fn start(flags: &[&str]) -> Server {
        Server::start_at("127.0.0.1:0", flags)
    }

    /// Like [`Server::start`] on a given address (to restart on a known port).
    pub fn start_at(listen: &str, flags: &[&str]) -> Server {
        Server::start_with_env(listen, flags, &[])
    }

    /// Like [`Server::start_at`] with `HALLEY_*` variables set (the
    /// harness clears the ones of its own environment).
    pub fn start_with_env(listen: &str, flags: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_halley"));
        command.arg("serve").args(["--listen", listen]);
        // Tests run side by side: each admin listener on a port of its own.
        // SIGTERM stops at once, as before drains existed, unless the test
        // is about the drain.
        for (flag, value) in [
            ("--admin-listen", "127.0.0.1:0"),
            ("--drain-delay", "0"),
            ("--drain-timeout", "0"),
        ] {
            if !flags.contains(&flag) {
                command.args([flag, value]);
            }
        }
        command
            .args(flags)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("HALLEY_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("starting the halley binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_complete = Arc::new(AtomicBool::new(false));
        let (found, listening) = mpsc::channel();
        let (lines, complete) = (log.clone(), log_complete.clone());
        std::thread::spawn(move || {
            // Keeps reading until the process closes stderr, so it never
            // blocks on a full pipe.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = listening_url(&line) {
                    let _ = found.send(url);
                }
                lines.lock().unwrap().push(line);
            }
            complete.store(true, Ordering::SeqCst);
        });
        let url = match listening.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "halley serve {flags:?} did not say `listening on http://...` (exit: {status:?}); stderr:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let origin = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        Server {
            child,
            url,
            origin,
            log,
            log_complete,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        self.origin
            .split_once("://")
            .map_or(self.origin.as_str(), |(_, rest)| rest)
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote to stderr so far (read by a thread of its
    /// own: a line just written may not be here yet; see
    /// [`Server::logged`] and [`Server::final_log`]).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until the log holds `text`.
    pub async fn logged(&self, text: &str) {
        let what = format!("{text:?} in the server's log");
        eventually(30.0, &what, || self.log().contains(text)).await
    }

    /// The whole log of a server that has exited (waits until its stderr
    /// has been read to the end), for asserting what it did not say.
    pub fn final_log(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log_complete.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "stderr still open: has the server exited?"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.log()
    }

    /// A client with its own cookie jar (its own browser), not handshaken.
    /// The admin listener's `http://ADDR`, from the start-up log.
    pub async fn admin_url(&self) -> String {
        self.logged("admin endpoints at http://").await;
        let log = self.log();
        let start = log.find("admin endpoints at ").unwrap() + "admin endpoints at ".len();
        let rest = &log[start..];
        rest[..rest.find(' ').unwrap()].to_owned()
    }

    /// One sample of the admin listener's `/metrics` (summed over its
    /// labels when `name` has some, e.g. `halley_takeovers_total`).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.admin_url().await))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                line.starts_with(&format!("{name} ")) || line.starts_with(&format!("{name}{{"))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn browser(&self) -> Client {
        Client::builder(&self.url)
            .backoff(Duration::from_millis(100), Duration::from_millis(500))
            .build()
            .expect("client")
    }

    /// A handshaken client with its deliveries.
    pub async fn connected_client(&self) -> (Client, Deliveries) {
        let client = self.browser();
        let deliveries = client.take_deliveries().unwrap();
        client.handshake().await.expect("handshake");
        (client, deliveries)
    }

    /// A websocket client with its own cookie jar, not handshaken.
    pub fn ws_browser(&self) -> Client {
        ws_client(&self.url)
    }

    /// A handshaken websocket client with its deliveries.
    pub async fn ws_connected_client(&self) -> (Client, Deliveries) {
        let client = self.ws_browser();
        let deliveries = client.take_deliveries().unwrap();
        within(30.0, "websocket handshake", client.handshake())
            .await
            .expect("websocket handshake");
        (client, deliveries)
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        self.wait_exit(within)
    }

    /// [`Server::terminate`], then the log: all of it once the server has
    /// exited, what was read so far if it has not.
    pub fn terminate_with_log(&mut self, within: Duration) -> (Option<ExitStatus>, String) {
        let status = self.terminate(within);
        let log = if status.is_some() {
            self.final_log()
        } else {
            self.log()
        };
        (status, log)
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A websocket client of the Bayeux endpoint at `url` (an `http://` URL),
/// with its own cookie jar and a short backoff, not handshaken.
pub fn ws_client(url: &str) -> Client {
    Client::builder(url)
        .transport(TransportKind::WebSocket)
        .backoff(Duration::from_millis(100), Duration::from_millis(500))
        .build()
        .expect("websocket client")
}

/// A TCP proxy in front of a server, to break connections the way a network
/// does: [`Proxy::cut`] drops every connection through it at once (no close
/// frame, no FIN from the server), [`Proxy::freeze`] stops forwarding on
/// them but keeps them open (a network that silently drops packets), and
/// [`Proxy::refuse`] makes it drop new connections as soon as accepted.
pub struct Proxy {
    /// The server's Bayeux endpoint through the proxy.
    pub url: String,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    /// Who sent last, and how many times clients started sending.
    turns: Arc<Turns>,
    refusing: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    freeze: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// A proxy on `127.0.0.1:0` to `server`.
    pub async fn start(server: &Server) -> Proxy {
        Proxy::start_to(server.address(), |local| {
            server.url.replacen(server.address(), local, 1)
        })
        .await
    }

    /// A proxy on `127.0.0.1:0` to `target` (`127.0.0.1:PORT`); `url` makes
    /// its [`Proxy::url`] from its own address.
    pub async fn start_to(target: &str, url: impl FnOnce(&str) -> String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let local = listener.local_addr().expect("proxy address");
        let url = url(&local.to_string());
        let target = target.to_owned();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let turns = Arc::new(Turns::default());
        let refusing = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let (freeze, _) = watch::channel(0u64);
        let task = tokio::spawn({
            let (accepted, open, turns, refusing, cut, freeze) = (
                accepted.clone(),
                open.clone(),
                turns.clone(),
                refusing.clone(),
                cut.clone(),
                freeze.clone(),
            );
            async move {
                loop {
                    let Ok((mut downstream, _)) = listener.accept().await else {
                        return;
                    };
                    if refusing.load(Ordering::SeqCst) {
                        drop(downstream);
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let mut cut = cut.subscribe();
                    let mut freeze = freeze.subscribe();
                    let (open, turns, target) = (open.clone(), turns.clone(), target.clone());
                    tokio::spawn(async move {
                        let Ok(mut upstream) = TcpStream::connect(&target).await else {
                            return;
                        };
                        open.fetch_add(1, Ordering::SeqCst);
                        let mut downstream = Counting {
                            inner: &mut downstream,
                            turns: turns.clone(),
                            client: true,
                        };
                        let mut upstream = Counting {
                            inner: &mut upstream,
                            turns,
                            client: false,
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => {}
                            _ = cut.changed() => {}
                            _ = freeze.changed() => {
                                // Both ends stay open, and nothing moves.
                                let _ = cut.changed().await;
                            }
                        }
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Proxy {
            url,
            accepted,
            open,
            turns,
            refusing,
            cut,
            freeze,
            task,
        }
    }

    /// Stops forwarding on every open connection, leaving them open (new
    /// connections are forwarded as usual).
    pub fn freeze(&self) {
        self.freeze.send_modify(|generation| *generation += 1);
    }

    /// Drops every connection through the proxy.
    pub fn cut(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// While true, new connections are dropped as soon as accepted.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Connections accepted (and forwarded) so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open through the proxy now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// How many times the client side started sending: the first time, and
    /// each time after the server had sent something. Through a proxy
    /// carrying one connection whose client waits for each answer before
    /// it sends again, the number of requests that have reached the server
    /// (an upgrade, a handshake and a first connect make 3; the next
    /// connect, 4).
    pub fn requests(&self) -> usize {
        self.turns.client_turns.load(Ordering::SeqCst)
    }
}

/// Which side of the proxied connections sent last.
#[derive(Default)]
struct Turns {
    client_last: AtomicBool,
    client_turns: AtomicUsize,
}

/// A side of a proxied connection that records in [`Turns`] when it sends
/// (is read from).
struct Counting<'a> {
    inner: &'a mut TcpStream,
    turns: Arc<Turns>,
    client: bool,
}

impl AsyncRead for Counting<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let was_client = self.turns.client_last.swap(self.client, Ordering::SeqCst);
            if self.client && !was_client {
                self.turns.client_turns.fetch_add(1, Ordering::SeqCst);
            }
        }
        polled
    }
}

impl AsyncWrite for Counting<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Polls `condition` every 20 ms until it holds, failing the test after
/// `secs` seconds with `what`. `secs` is a safety deadline that only a broken
/// test reaches, not a bound on how long the step may take: keep it generous
/// (30 s), and never let a test's claim rest on it unless the alternative
/// would take far longer (a server timeout of 60 s).
pub async fn eventually(secs: f64, what: &str, mut condition: impl FnMut() -> bool) {
    within(secs, what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Awaits `future`, failing the test after `secs` seconds (a safety
/// deadline, as for [`eventually`]).
pub async fn within<T>(secs: f64, what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs_f64(secs), future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

/// POSTs `body` (JSON) to the endpoint with `browser`'s cookies.
pub async fn post(browser: &Client, body: &Value) -> RawResponse {
    within(30.0, "POST", browser.raw_post(body.to_string()))
        .await
        .expect("HTTP request")
}

/// POSTs `body` and returns the messages of a 200 response.
pub async fn exchange(browser: &Client, body: &Value) -> Vec<Value> {
    let response = post(browser, body).await;
    assert_eq!(
        response.status,
        200,
        "request {body} answered HTTP {}: {}",
        response.status,
        response.text()
    );
    messages_of(&response)
}

/// A response's body as a JSON array of messages; panics with the status
/// and body when it is not one.
pub fn messages_of(response: &RawResponse) -> Vec<Value> {
    match response.json() {
        Ok(Value::Array(messages)) => messages,
        _ => panic!(
            "expected a JSON array body, got HTTP {}: {}",
            response.status,
            response.text()
        ),
    }
}

/// A handshake as the CometD JavaScript client sends it; the clientId.
pub async fn handshake(browser: &Client) -> String {
    let replies = exchange(
        browser,
        &json!([{"id": "hs", "channel": "/meta/handshake", "version": "1.0",
                 "minimumVersion": "1.0",
                 "supportedConnectionTypes": ["websocket", "long-polling", "callback-polling"],
                 "advice": {"timeout": 60000, "interval": 0}}]),
    )
    .await;
    let reply = reply_with_id(&replies, "hs");
    assert_eq!(reply["successful"], true, "handshake refused: {reply}");
    reply["clientId"]
        .as_str()
        .expect("clientId is a string")
        .to_owned()
}

/// The first connect of a session (`advice: {timeout: 0}`): answered at once.
pub async fn first_connect(browser: &Client, client_id: &str) -> Vec<Value> {
    let replies = exchange(
        browser,
        &json!([{"id": "c0", "channel": "/meta/connect", "clientId": client_id,
                 "connectionType": "long-polling", "advice": {"timeout": 0}}]),
    )
    .await;
    assert_eq!(
        reply_with_id(&replies, "c0")["successful"],
        true,
        "{replies:?}"
    );
    replies
}

/// A plain connect (may be held).
pub async fn connect(browser: &Client, client_id: &str, id: &str) -> Vec<Value> {
    exchange(
        browser,
        &json!([{"id": id, "channel": "/meta/connect", "clientId": client_id,
                 "connectionType": "long-polling"}]),
    )
    .await
}

/// One message of `clientId` on `channel` with `extra` fields.
pub async fn send_one(
    browser: &Client,
    client_id: &str,
    id: &str,
    channel: &str,
    extra: Value,
) -> Value {
    let mut message = json!({"id": id, "channel": channel, "clientId": client_id});
    for (k, v) in extra.as_object().expect("extra is an object") {
        message[k] = v.clone();
    }
    let replies = exchange(browser, &json!([message])).await;
    reply_with_id(&replies, id).clone()
}

/// The reply (a message with `successful`) whose id is `id`.
pub fn reply_with_id<'a>(messages: &'a [Value], id: &str) -> &'a Value {
    messages
        .iter()
        .find(|m| m["id"] == id && m.get("successful").is_some())
        .unwrap_or_else(|| panic!("no reply with id {id:?} in {messages:?}"))
}

/// The messages that are deliveries (no `successful`).
pub fn deliveries_in(messages: &[Value]) -> Vec<&Value> {
    messages
        .iter()
        .filter(|m| {
            m.get("successful").is_none()
                && !m["channel"].as_str().unwrap_or("").starts_with("/meta/")
        })
        .collect()
}

/// Waits until the server holds a long-polling `/meta/connect` of
/// `browser`'s browser (its `BAYEUX_BROWSER` cookie), as the server itself
/// shows it: with one held poll per browser (`max-sessions-per-browser = 1`,
/// the default), another session of the same browser asking to be held
/// (for 1 ms) is answered with `multiple-clients` advice exactly while a
/// connect of the browser is held. For tests that must act on a held
/// connect, not on one still on its way.
pub async fn held_in_browser(server: &Server, browser: &Client) {
    let probe = Client::builder(&server.url)
        .cookie_jar(browser.cookies().clone())
        .build()
        .expect("probe client");
    let client_id = handshake(&probe).await;
    first_connect(&probe, &client_id).await;
    within(30.0, "a held connect in the browser", async {
        for n in 0.. {
            let id = format!("probe{n}");
            let replies = exchange(
                &probe,
                &json!([{"id": id, "channel": "/meta/connect", "clientId": client_id,
                         "connectionType": "long-polling", "advice": {"timeout": 1}}]),
            )
            .await;
            if reply_with_id(&replies, &id)["advice"]["multiple-clients"] == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Collects deliveries until one on `sentinel` arrives (included).
pub async fn collect_until(deliveries: &mut Deliveries, sentinel: &str) -> Vec<String> {
    let mut channels = Vec::new();
    within(30.0, &format!("a delivery on {sentinel}"), async {
        while let Some(d) = deliveries.recv().await {
            let done = d.channel == sentinel;
            channels.push(d.channel);
            if done {
                break;
            }
        }
    })
    .await;
    channels
}

/// Asserts the server still serves sessions: `existing` (a handshaken
/// client) gets an echo, and a brand-new client can handshake, subscribe,
/// publish and receive its own message.
pub async fn assert_still_serves(server: &Server, existing: &Client) {
    let ack = within(
        30.0,
        "echo on an existing session",
        existing.publish("/service/echo", &json!({"still": "here"})),
    )
    .await
    .expect("existing session still served");
    assert_eq!(ack.data_value(), Some(json!({"still": "here"})));

    let (fresh, mut deliveries) = within(30.0, "fresh handshake", server.connected_client()).await;
    within(30.0, "subscribe", fresh.subscribe("/alive/check"))
        .await
        .expect("subscribe");
    within(
        30.0,
        "publish",
        fresh.publish("/alive/check", &json!({"ok": true})),
    )
    .await
    .expect("publish");
    let delivery = within(30.0, "own delivery", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.channel, "/alive/check");
    assert_eq!(delivery.data_value(), json!({"ok": true}));
}

/// A `redis-server` of a test's own on a free port, without persistence,
/// killed when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl Redis {
    /// Starts one, or returns `None` after saying why when `redis-server`
    /// is not installed and `CI` is not set (`scripts/test.sh` installs it;
    /// under CI a missing `redis-server` fails the test).
    pub fn start() -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        Some(Redis::start_on(free_port()))
    }

    /// Starts one on `port` (to bring Redis back where the nodes expect it)
    /// and waits until it answers PING.
    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let redis = Redis {
            child,
            port,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !redis.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    /// Sends one command (inline: its words separated by spaces, none of
    /// them containing one) and returns the first line of the answer
    /// (`:15` for an integer, `$-1` for a missing string).
    pub fn command(&self, command: &str) -> String {
        use std::io::Write;
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to redis");
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("writing to redis");
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("reading from redis");
        line.trim_end().to_owned()
    }

    /// Its process id (for `halley bench --redis-pid`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port nothing listens on (just now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
