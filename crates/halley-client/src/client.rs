//! [`Client`]: one Bayeux session, the way an application uses it.
//!
//! `handshake()` opens the session and starts the connect loop (a background
//! task, see `connect_loop`), which keeps one `/meta/connect` outstanding,
//! hands deliveries over to [`Deliveries`], follows the server's advice and,
//! when the session is lost, handshakes again and re-subscribes on its own.
//! `subscribe`, `publish` and the rest are ordinary request/reply exchanges
//! that run beside it.
//!
//! The `raw_*` methods send arbitrary bytes with this client's cookies, for
//! tests that need to say what no well-behaved client would.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use halley_protocol::{meta, Advice, Subscription};
use reqwest::Method;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::connect_loop;
use crate::cookie::CookieJar;
use crate::delivery::{Deliveries, Delivery, DeliveryHandler, DeliverySink};
use crate::error::Error;
use crate::error::Result;
use crate::message::{Incoming, Outgoing};
use crate::session::{Session, State, Stats};
use crate::shared::{Config, HandshakeInfo, Shared};
use crate::tls::Trust;
use crate::transport::{LongPolling, RawResponse, Transport, TransportKind, WebSocket};

/// Settings of a [`Client`]; see [`Client::builder`].
#[derive(Debug)]
pub struct ClientBuilder {
    url: String,
    transport: TransportKind,
    http: Option<reqwest::Client>,
    local_address: Option<IpAddr>,
    spare_connection: bool,
    cookies: Option<Arc<CookieJar>>,
    append_message_type: bool,
    max_network_delay: Duration,
    backoff_increment: Duration,
    max_backoff: Duration,
    handshake_ext: Option<Box<RawValue>>,
    ack: bool,
    trust: Option<Trust>,
    on_delivery: Option<DeliveryHandler>,
}

impl ClientBuilder {
    /// Which certificates an `https://` endpoint may present (default
    /// [`Trust::system`]): for long-polling connections, and for the HTTP
    /// client this builder makes when not given one (give a shared one the
    /// same trust, [`Trust::http_client`]).
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = Some(trust);
        self
    }

    /// The transport: [`TransportKind::LongPolling`] (the default) or
    /// [`TransportKind::WebSocket`]. The URL stays the `http://` (or
    /// `https://`) Bayeux URL either way; websocket upgrades on it (`wss`
    /// over https).
    pub fn transport(mut self, kind: TransportKind) -> Self {
        self.transport = kind;
        self
    }

    /// Shares an HTTP client (and so its connection pool) with other Bayeux
    /// clients; cookies stay per Bayeux client. It carries raw requests and
    /// websocket upgrades; long-polling exchanges use connections of the
    /// client's own. When set, `local_address` binds only those: bind the
    /// shared client too (see [`crate::http_client`]).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The local address to connect from: long-polling connections, and the
    /// HTTP client this builder makes when not given one.
    pub fn local_address(mut self, address: IpAddr) -> Self {
        self.local_address = Some(address);
        self
    }

    /// Uses `jar` instead of a private one: clients sharing a jar are tabs of
    /// one browser (one `BAYEUX_BROWSER` cookie) as far as the server can tell.
    pub fn cookie_jar(mut self, jar: Arc<CookieJar>) -> Self {
        self.cookies = Some(jar);
        self
    }

    /// Whether a lone meta message is posted to `<url>/<type>` (default true,
    /// as the CometD JavaScript client does). Long-polling only.
    pub fn append_message_type_to_url(mut self, append: bool) -> Self {
        self.append_message_type = append;
        self
    }

    /// How long any request may take beyond the time the server may hold it
    /// (CometD's `maxNetworkDelay`, default 10 s). A held `/meta/connect` is
    /// given the advised `timeout` plus this.
    pub fn max_network_delay(mut self, delay: Duration) -> Self {
        self.max_network_delay = delay;
        self
    }

    /// After a failed connect or handshake, the connect loop waits
    /// `increment`, then `2 * increment`, ... up to `max`.
    pub fn backoff(mut self, increment: Duration, max: Duration) -> Self {
        self.backoff_increment = increment;
        self.max_backoff = max;
        self
    }

    /// Long-polling: whether a second connection, opened for a request made
    /// while `/meta/connect` is held, is kept open for the next one, as
    /// browsers do (default true). Off, it is closed after its response, so
    /// an idle client holds exactly one connection: what a load generator
    /// simulating many subscribers against one server wants.
    pub fn spare_connection(mut self, keep: bool) -> Self {
        self.spare_connection = keep;
        self
    }

    /// An `ext` object to send with every handshake (`{"timesync":...}`, ...).
    pub fn handshake_ext(mut self, ext: Box<RawValue>) -> Self {
        self.handshake_ext = Some(ext);
        self
    }

    /// Uses the ack extension (default false): asks for it at handshake
    /// (`ext: {"ack": true}`, merged into [`ClientBuilder::handshake_ext`]),
    /// and when the server agrees, tells it on every `/meta/connect` which
    /// batch of deliveries came last, so that it sends again whatever a
    /// broken connection lost. The server then sends deliveries only in
    /// connect replies; [`Client::ack_batch`] is the last batch received.
    pub fn ack(mut self, enabled: bool) -> Self {
        self.ack = enabled;
        self
    }

    /// Hands each delivery to `handler` instead of the [`Deliveries`]
    /// queue: it is called by the task that read the delivery (the connect
    /// loop, a request's task, or the websocket's reader), in the server's
    /// order, before the next `/meta/connect` is sent. It must not block:
    /// nothing else is read from the server meanwhile; and not panic: the
    /// panic ends the task that called it. With it,
    /// [`Client::take_deliveries`] returns `None`. It saves a queue and a
    /// task wake-up per delivery.
    pub fn on_delivery(mut self, handler: impl Fn(Delivery) + Send + Sync + 'static) -> Self {
        self.on_delivery = Some(DeliveryHandler(Arc::new(handler)));
        self
    }

    pub fn build(self) -> Result<Client> {
        let trust = self.trust.unwrap_or_else(Trust::system);
        let http = match self.http {
            Some(http) => http,
            None => trust.http_client(self.local_address)?,
        };
        let cookies = self.cookies.unwrap_or_default();
        let (sink, deliveries) = match self.on_delivery {
            Some(handler) => (DeliverySink::Handler(handler), None),
            None => {
                let (sink, deliveries) = Deliveries::channel();
                (sink, Some(deliveries))
            }
        };
        let session = Arc::new(Session::new(sink));
        let transport = match self.transport {
            TransportKind::LongPolling => Transport::LongPolling(
                LongPolling::new(http, self.url, cookies, self.append_message_type)
                    .with_connections(self.local_address, self.spare_connection, &trust),
            ),
            TransportKind::WebSocket => {
                Transport::WebSocket(WebSocket::new(http, self.url, cookies, session.clone()))
            }
        };
        let shared = Shared {
            transport,
            session,
            config: Config {
                max_network_delay: self.max_network_delay,
                backoff_increment: self.backoff_increment,
                max_backoff: self.max_backoff,
                handshake_ext: if self.ack {
                    Some(crate::ack::handshake_ext(self.handshake_ext.as_deref()))
                } else {
                    self.handshake_ext
                },
                ack: self.ack,
            },
        };
        Ok(Client {
            shared: Arc::new(shared),
            deliveries: Mutex::new(deliveries),
            connect_loop: Mutex::new(None),
        })
    }
}

/// The server's acknowledgement of a publish. For a `/service` channel it
/// carries the service's answer in `data`.
#[derive(Debug, Clone)]
pub struct PublishAck {
    pub channel: String,
    pub id: String,
    pub data: Option<Box<RawValue>>,
    pub ext: Option<Box<RawValue>>,
}

impl PublishAck {
    /// `data` parsed into a JSON tree.
    pub fn data_value(&self) -> Option<serde_json::Value> {
        self.data
            .as_ref()
            .map(|d| serde_json::from_str(d.get()).expect("RawValue holds valid JSON"))
    }
}

/// The running connect loop and the ways to stop it or cut its connect.
#[derive(Debug)]
struct LoopHandle {
    stop: Arc<Notify>,
    cut: Arc<Notify>,
    task: JoinHandle<()>,
}

/// A Bayeux client: one session with one server.
///
/// Dropping it stops its connect loop at once (without `/meta/disconnect`;
/// the server lets the session expire) and ends its [`Deliveries`].
#[derive(Debug)]
pub struct Client {
    shared: Arc<Shared>,
    deliveries: Mutex<Option<Deliveries>>,
    connect_loop: Mutex<Option<LoopHandle>>,
}

impl Client {
    /// A builder for a client of the Bayeux endpoint at `url`
    /// (`http://host:port/cometd`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            transport: TransportKind::LongPolling,
            http: None,
            local_address: None,
            spare_connection: true,
            cookies: None,
            append_message_type: true,
            max_network_delay: Duration::from_secs(10),
            backoff_increment: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            handshake_ext: None,
            ack: false,
            trust: None,
            on_delivery: None,
        }
    }

    /// The receiver of this client's deliveries; `Some` the first time only
    /// (never with [`ClientBuilder::on_delivery`]).
    /// Deliveries that arrive before it is taken wait in it.
    pub fn take_deliveries(&self) -> Option<Deliveries> {
        self.deliveries.lock().expect("client poisoned").take()
    }

    /// The current `clientId` (it changes when the client re-handshakes).
    pub fn client_id(&self) -> Option<String> {
        self.shared.session.client_id()
    }

    pub fn state(&self) -> State {
        self.shared.session.state()
    }

    pub fn stats(&self) -> Stats {
        self.shared.session.stats()
    }

    /// With the ack extension on for the current session, the last batch
    /// received (0 before the first); `None` when it is off (not asked for,
    /// or the server did not agree).
    pub fn ack_batch(&self) -> Option<u64> {
        self.shared.session.ack_batch()
    }

    /// The server advice in force.
    pub fn advice(&self) -> Advice {
        self.shared.session.advice()
    }

    /// What the client will subscribe to again after a re-handshake.
    pub fn subscriptions(&self) -> Vec<String> {
        self.shared.session.subscriptions()
    }

    pub fn cookies(&self) -> &Arc<CookieJar> {
        self.shared.transport.cookies()
    }

    /// The endpoint URL (`http://...`, whatever the transport).
    pub fn url(&self) -> &str {
        self.shared.transport.url()
    }

    /// The `connectionType` this client announces (`long-polling`, `websocket`).
    pub fn connection_type(&self) -> &'static str {
        self.shared.transport.connection_type()
    }

    /// Opens a session and starts the connect loop. Calling it again starts
    /// a new session (the old one is left to expire).
    pub async fn handshake(&self) -> Result<HandshakeInfo> {
        self.stop_connect_loop().await;
        let info = self.shared.handshake().await?;
        let stop = Arc::new(Notify::new());
        let cut = Arc::new(Notify::new());
        let task = tokio::spawn(connect_loop::run(
            self.shared.clone(),
            stop.clone(),
            cut.clone(),
        ));
        *self.connect_loop.lock().expect("client poisoned") = Some(LoopHandle { stop, cut, task });
        Ok(info)
    }

    /// Drops the connection as a network failure would: no
    /// `/meta/disconnect`, no WebSocket close frame. A websocket client's
    /// socket is dropped; a long-polling client's held `/meta/connect` is
    /// abandoned, which closes its connection. The connect loop then does
    /// what it does after any failure: backs off, connects again on a new
    /// connection with the same `clientId`, and handshakes and subscribes
    /// again if the server says the session is gone. (For soak tests: the
    /// load generator cuts a share of its users every period.)
    pub fn cut(&self) {
        match &self.shared.transport {
            Transport::WebSocket(ws) => ws.cut(),
            // The socket's task ends on its own; a long-polling connect is
            // a future of the loop, so the loop must drop it.
            Transport::LongPolling(_) => {
                if let Some(handle) = &*self.connect_loop.lock().expect("client poisoned") {
                    handle.cut.notify_one();
                }
            }
        }
    }

    /// Subscribes to a channel or a glob (`/chat/*`, `/chat/**`).
    pub async fn subscribe(&self, pattern: &str) -> Result<()> {
        self.subscription(meta::SUBSCRIBE, Subscription::One(pattern.to_owned()))
            .await
    }

    /// Subscribes to several patterns with one message (`subscription` as an array).
    pub async fn subscribe_all(&self, patterns: &[&str]) -> Result<()> {
        let many = patterns.iter().map(|p| (*p).to_owned()).collect();
        self.subscription(meta::SUBSCRIBE, Subscription::Many(many))
            .await
    }

    pub async fn unsubscribe(&self, pattern: &str) -> Result<()> {
        self.subscription(meta::UNSUBSCRIBE, Subscription::One(pattern.to_owned()))
            .await
    }

    pub async fn unsubscribe_all(&self, patterns: &[&str]) -> Result<()> {
        let many = patterns.iter().map(|p| (*p).to_owned()).collect();
        self.subscription(meta::UNSUBSCRIBE, Subscription::Many(many))
            .await
    }

    async fn subscription(&self, channel: &str, subscription: Subscription) -> Result<()> {
        let mut message = self.shared.session_message(channel)?;
        let patterns = subscription.channels().to_vec();
        message.subscription = Some(subscription);
        self.shared.request(message).await?;
        if channel == meta::SUBSCRIBE {
            self.shared.session.remember_subscriptions(&patterns);
        } else {
            self.shared.session.forget_subscriptions(&patterns);
        }
        Ok(())
    }

    /// Publishes `data` (anything serializable) to `channel`. On a
    /// `/service` channel the acknowledgement carries the service's answer.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<PublishAck> {
        let data = serde_json::value::to_raw_value(data).map_err(Error::Encode)?;
        self.publish_raw(channel, data).await
    }

    /// Publishes data that is already JSON.
    pub async fn publish_raw(&self, channel: &str, data: Box<RawValue>) -> Result<PublishAck> {
        let mut message = self.shared.session_message(channel)?;
        message.data = Some(data);
        let reply = self.shared.request(message).await?;
        Ok(PublishAck {
            channel: reply.channel,
            id: reply.id.unwrap_or_default(),
            data: reply.data,
            ext: reply.ext,
        })
    }

    /// Sends a batch of messages in one request. Messages without an `id`
    /// or `clientId` get this session's. Deliveries in the answer go to
    /// [`Deliveries`]; every reply is returned, successful or not.
    pub async fn send_batch(&self, mut messages: Vec<Outgoing>) -> Result<Vec<Incoming>> {
        let client_id = self.client_id();
        for message in &mut messages {
            if message.id.is_none() {
                message.id = Some(self.shared.session.next_id());
            }
            if message.client_id.is_none() && message.channel != meta::HANDSHAKE {
                message.client_id.clone_from(&client_id);
            }
        }
        self.shared
            .send(&messages, self.shared.config.max_network_delay)
            .await
    }

    /// Ends the session: stops the connect loop, sends `/meta/disconnect`
    /// and, on websocket, closes the socket cleanly.
    pub async fn disconnect(&self) -> Result<()> {
        self.stop_connect_loop().await;
        let message = self.shared.session_message(meta::DISCONNECT)?;
        let result = self.shared.request(message).await.map(drop);
        self.shared.session.set_client_id(None);
        self.shared.session.set_state(State::Disconnected);
        self.shared.transport.close().await;
        result
    }

    /// POSTs `body` to the endpoint, as is, with this client's cookies
    /// (and stores the cookies the answer sets). No timeout.
    pub async fn raw_post(&self, body: impl Into<Bytes>) -> Result<RawResponse> {
        let url = self.url().to_owned();
        self.raw_post_to(&url, body).await
    }

    /// POSTs `body` to any URL, with this client's cookies.
    pub async fn raw_post_to(&self, url: &str, body: impl Into<Bytes>) -> Result<RawResponse> {
        self.raw(Method::POST, url, Some(body.into())).await
    }

    /// GETs any URL (`<endpoint>?jsonp=cb&message=...`, `/healthz`), with
    /// this client's cookies.
    pub async fn raw_get(&self, url: &str) -> Result<RawResponse> {
        self.raw(Method::GET, url, None).await
    }

    /// Plain HTTP whatever the transport (a websocket client's cookies too).
    async fn raw(&self, method: Method, url: &str, body: Option<Bytes>) -> Result<RawResponse> {
        self.shared
            .transport
            .send_http(method, url, body, None)
            .await
    }

    async fn stop_connect_loop(&self) {
        let handle = self.connect_loop.lock().expect("client poisoned").take();
        if let Some(LoopHandle { stop, mut task, .. }) = handle {
            stop.notify_one();
            if tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(mut handle) = self.connect_loop.lock() {
            if let Some(handle) = handle.take() {
                handle.task.abort();
            }
        }
    }
}
