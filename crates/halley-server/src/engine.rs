//! The dispatcher: one batch of messages in, replies out.
//!
//! Transports decode a request into messages and hand them to
//! [`Engine::handle_batch`]; it routes each message to its handler
//! (`meta/<channel>.rs`, `publish.rs`, `service/`) and returns an
//! [`Exchange`]: the replies in order, the session whose queued deliveries
//! ride along, and the `/meta/connect` (if any) that the transport answers
//! last, possibly after holding it ([`Engine::complete_connect`]).
//!
//! [`Engine::publish`] is the one way a message reaches subscribers, for
//! clients and server-side adapters ([`crate::adapter`]) alike: encode once,
//! then copy a `Bytes` handle into each subscriber's outbox.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use halley_protocol::codec::InvalidMessage;
use halley_protocol::{
    meta, Advice, BayeuxError, ChannelName, ChannelPattern, Inbound, Message, Reply,
};
use serde_json::value::RawValue;

use crate::adapter::DataAdapters;
use crate::config::Config;
use crate::history::memory::MemoryHistory;
use crate::history::{Entry, HistoryStore, Retention, Sequencers};
use crate::meta as handlers;
use crate::meta::connect::PendingConnect;
use crate::metadata::caps::UserSessions;
use crate::metadata::MetadataAdapter;
use crate::qos::ThrottledPublish;
use crate::rules::ChannelRules;
use crate::service::Services;
use crate::shutdown::Shutdown;
use crate::state::listeners::{SessionEnd, SessionListeners};
use crate::state::outbox::OverflowPolicy;
use crate::state::session::{ConnectionType, Session};
use crate::state::sessions::{new_random_id, Sessions};
use crate::state::subscriptions::{Subscribed, Subscriptions, Unsubscribed};
use crate::state::throttle::Release;

pub struct Engine {
    config: Config,
    sessions: Sessions,
    subscriptions: Subscriptions,
    services: Services,
    session_listeners: SessionListeners,
    /// Server-side feeds of channels, told about first and last subscribers.
    data_adapters: DataAdapters,
    shutdown: Shutdown,
    /// Retained messages of the channels with `[[history]]` (replay).
    history: Box<dyn HistoryStore>,
    /// One lock per history channel: publishes and replays take turns.
    sequencers: Sequencers,
    /// Per-channel overflow, history, lazy and QoS settings, parsed once.
    rules: ChannelRules,
    /// Who may handshake, subscribe and publish; none: everyone may.
    metadata: std::sync::OnceLock<Arc<dyn MetadataAdapter>>,
    /// Sessions per authenticated user (`max-sessions-per-user`).
    user_sessions: UserSessions,
    /// This engine, for the tasks it spawns (QoS releases): they must not
    /// keep it alive.
    me: Weak<Engine>,
}

/// Where a batch came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub connection_type: ConnectionType,
    /// The `BAYEUX_BROWSER` cookie sent with the request, if any.
    pub browser_id: Option<String>,
    /// Whether the response can set a cookie. An HTTP response can; a
    /// WebSocket frame cannot.
    pub can_set_cookie: bool,
    /// The WebSocket this batch came on (0 for HTTP): a session's deliveries
    /// go to the socket of its latest `/meta/connect` only.
    pub socket_id: u64,
    /// When that socket was opened, on the sessions' clock.
    pub socket_opened_ms: Option<u64>,
}

impl Origin {
    /// A request over HTTP (long-polling or callback-polling).
    pub fn http(connection_type: ConnectionType, browser_id: Option<String>) -> Self {
        Origin {
            connection_type,
            browser_id,
            can_set_cookie: true,
            socket_id: 0,
            socket_opened_ms: None,
        }
    }

    /// A frame on WebSocket `socket_id`, opened at `opened_ms` with
    /// `browser_id`'s cookie (if any).
    pub fn websocket(socket_id: u64, opened_ms: u64, browser_id: Option<String>) -> Self {
        Origin {
            connection_type: ConnectionType::WebSocket,
            browser_id,
            can_set_cookie: false,
            socket_id,
            socket_opened_ms: Some(opened_ms),
        }
    }
}

/// The outcome of one batch, for the transport to write.
pub struct Exchange {
    pub origin: Origin,
    /// Handshake replies: written first.
    pub handshake_replies: Vec<Reply>,
    /// Every other reply except the connect's, in request order.
    pub replies: Vec<Reply>,
    /// The session whose queued deliveries this response carries.
    pub session: Option<Arc<Session>>,
    /// The `/meta/connect` to answer last.
    pub connect: Option<PendingConnect>,
    /// A browser id issued by this exchange: the transport sets the cookie.
    pub new_browser_id: Option<String>,
    /// Number of messages in the batch (a connect is held only when alone).
    pub batch_len: usize,
}

impl Exchange {
    /// The browser this request speaks for: the cookie it sent, or the one just issued.
    pub fn browser_id(&self) -> Option<&str> {
        self.origin
            .browser_id
            .as_deref()
            .or(self.new_browser_id.as_deref())
    }

    /// The browser a new session is bound to: the request's, or a new one
    /// when the transport can set the cookie, or none.
    pub fn browser_for_new_session(&mut self) -> Option<String> {
        if let Some(id) = self.browser_id() {
            return Some(id.to_owned());
        }
        if !self.origin.can_set_cookie {
            return None;
        }
        let id = new_random_id();
        self.new_browser_id = Some(id.clone());
        Some(id)
    }
}

impl Engine {
    pub fn new(config: Config) -> Arc<Self> {
        let sessions =
            Sessions::new(config.outbox_limits()).with_max_bandwidth(config.max_bandwidth);
        let rules = ChannelRules::from_config(&config);
        let config_max_sessions_per_user = config.max_sessions_per_user;
        let engine = Arc::new_cyclic(|me| Engine {
            config,
            sessions,
            subscriptions: Subscriptions::default(),
            services: Services::default(),
            session_listeners: SessionListeners::default(),
            data_adapters: DataAdapters::new(me.clone()),
            shutdown: Shutdown::default(),
            history: Box::new(MemoryHistory::default()),
            sequencers: Sequencers::default(),
            rules,
            metadata: std::sync::OnceLock::new(),
            user_sessions: UserSessions::new(config_max_sessions_per_user),
            me: me.clone(),
        });
        crate::service::echo::register(&engine.services);
        crate::service::presence::register(&engine);
        engine
    }

    /// A handle on this engine that does not keep it alive.
    pub fn weak(&self) -> Weak<Engine> {
        self.me.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// The service-handler registry (`/service/**`).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Who is told when a session ends (disconnect or expiry).
    pub fn session_listeners(&self) -> &SessionListeners {
        &self.session_listeners
    }

    /// The Data Adapters: server-side feeds of channels.
    pub fn data_adapters(&self) -> &DataAdapters {
        &self.data_adapters
    }

    /// Installs the Metadata Adapter (once, before serving): from then on
    /// it decides who may handshake, subscribe and publish.
    pub fn set_metadata_adapter(&self, adapter: Arc<dyn MetadataAdapter>) -> Result<(), String> {
        self.metadata
            .set(adapter)
            .map_err(|_| "a Metadata Adapter is already installed".to_owned())
    }

    /// The Metadata Adapter, if one is installed.
    pub fn metadata_adapter(&self) -> Option<&dyn MetadataAdapter> {
        self.metadata.get().map(|a| a.as_ref())
    }

    /// Sessions per authenticated user, and the cap on them.
    pub fn user_sessions(&self) -> &UserSessions {
        &self.user_sessions
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Handles every message of one request, in order.
    ///
    /// Boxed: a transport's task (a held long poll, an idle WebSocket) is
    /// as large as its largest state, and handling a batch is big (~2.5 KB
    /// of futures: handlers, Metadata Adapter verdicts) but short-lived; on
    /// the heap only while it runs, it no longer sizes every idle client's
    /// task (see docs/benchmarks.md, memory per idle client).
    pub fn handle_batch(
        &self,
        batch: Vec<Inbound>,
        origin: Origin,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Exchange> + Send + '_>> {
        Box::pin(self.handle_batch_inline(batch, origin))
    }

    async fn handle_batch_inline(&self, batch: Vec<Inbound>, origin: Origin) -> Exchange {
        let mut exchange = Exchange {
            origin,
            handshake_replies: Vec::new(),
            replies: Vec::new(),
            session: None,
            connect: None,
            new_browser_id: None,
            batch_len: batch.len(),
        };
        for inbound in batch {
            match inbound {
                Ok(message) => self.handle_message(message, &mut exchange).await,
                Err(invalid) => exchange.replies.push(invalid_reply(invalid)),
            }
        }
        exchange
    }

    async fn handle_message(&self, message: Message, exchange: &mut Exchange) {
        if !message.id_is_valid() {
            let reply = Reply::to(message.channel.unwrap_or_default(), None)
                .failure(BayeuxError::MESSAGE_ID_INVALID);
            exchange.replies.push(reply);
            return;
        }
        let Some(channel) = message.channel.clone() else {
            let reply = Reply::to("", message.id).failure(BayeuxError::CHANNEL_MISSING);
            exchange.replies.push(reply);
            return;
        };
        match channel.as_str() {
            meta::HANDSHAKE => {
                let reply = handlers::handshake::handle(self, message, exchange).await;
                exchange.handshake_replies.push(reply);
            }
            meta::CONNECT => {
                match handlers::connect::handle(self, message, exchange) {
                    Ok(pending) => {
                        // Only the last connect of a batch is held; an
                        // earlier one (a confused client) is answered now.
                        if let Some(earlier) = exchange.connect.replace(pending) {
                            exchange.replies.push(earlier.immediate_reply(self));
                        }
                    }
                    Err(reply) => exchange.replies.push(*reply),
                }
            }
            meta::SUBSCRIBE | meta::UNSUBSCRIBE | meta::DISCONNECT => {
                let timesync = crate::ext::InboundExt::parse(message.ext.as_deref())
                    .timesync
                    .map(crate::ext::timesync::Received::now);
                let mut reply = match channel.as_str() {
                    meta::SUBSCRIBE => handlers::subscribe::handle(self, message, exchange).await,
                    meta::UNSUBSCRIBE => handlers::unsubscribe::handle(self, message, exchange),
                    _ => handlers::disconnect::handle(self, message, exchange),
                };
                if let Some(timesync) = timesync {
                    crate::ext::add_to_reply(&mut reply, "timesync", timesync.reply());
                }
                exchange.replies.push(reply);
            }
            _ if channel.starts_with("/meta/") || channel == "/meta" => {
                // Not a meta channel Bayeux defines: a publish to /meta/**.
                let reply = Reply::to(channel, message.id).failure(BayeuxError::PUBLISH_DENIED);
                exchange.replies.push(reply);
            }
            _ if channel.starts_with("/service/") => {
                let reply = crate::service::handle(self, message, exchange).await;
                exchange.replies.push(reply);
            }
            _ => {
                let reply = crate::publish::handle(self, message, exchange).await;
                exchange.replies.push(reply);
            }
        }
    }

    /// Finds the session a message speaks for, or the error reply to send.
    ///
    /// A clientId is honoured only with the browser cookie it was issued to
    /// (unless `trust-client-session`), so a leaked clientId alone cannot be
    /// used to read someone else's messages. One exception keeps Faye working
    /// over WebSocket: Faye opens its socket while its first handshake is in
    /// flight, before the cookie exists, and keeps using it. So a socket
    /// opened *before* a session existed, without any cookie, may use that
    /// session, if its handshake also came without a cookie (a browser that
    /// already had one always presents it). A thief's socket, opened after
    /// the clientId was issued, gets nothing. Any message is a sign of life.
    pub fn resolve_session(
        &self,
        message: &Message,
        exchange: &mut Exchange,
    ) -> Result<Arc<Session>, Box<Reply>> {
        let reply_channel = message.channel.clone().unwrap_or_default();
        let Some(client_id) = message.client_id.as_deref() else {
            return Err(Box::new(
                Reply::to(reply_channel, message.id.clone())
                    .failure(BayeuxError::CLIENT_ID_MISSING)
                    .with_advice(Advice::handshake(self.config.interval as i64)),
            ));
        };
        let session = self
            .sessions
            .get(client_id)
            .filter(|s| !s.is_closed())
            .filter(|s| {
                let origin = &exchange.origin;
                self.config.trust_client_session
                    || s.browser_id().is_none()
                    || s.browser_id() == origin.browser_id.as_deref()
                    || (origin.browser_id.is_none()
                        && !s.is_bound_strictly()
                        && origin
                            .socket_opened_ms
                            .is_some_and(|opened| opened <= s.created_ms()))
            });
        let Some(session) = session else {
            return Err(Box::new(
                Reply::to(reply_channel, message.id.clone())
                    .failure(BayeuxError::SESSION_UNKNOWN)
                    .with_advice(Advice::handshake(self.config.interval as i64)),
            ));
        };
        session.touch(self.sessions.now_ms());
        if message.channel.as_deref() != Some(meta::CONNECT) {
            session.poke_callback_polling();
        }
        if exchange.session.is_none() {
            exchange.session = Some(session.clone());
        }
        Ok(session)
    }

    /// Delivers `data` on a broadcast `channel` to every subscriber (the
    /// publisher included, as CometD does). Returns how many sessions it
    /// was queued for.
    pub fn publish(
        &self,
        channel: &ChannelName,
        data: &RawValue,
        id: Option<&RawValue>,
        ext: Option<&RawValue>,
    ) -> usize {
        if let Some(retention) = self.retention(channel) {
            return self.publish_with_history(channel, data, id, ext, retention);
        }
        let delivery: Bytes = halley_protocol::encode_delivery(channel.as_str(), data, id, ext);
        self.fan_out(channel, data, delivery)
    }

    /// A publish on a channel with history: numbered, kept, delivered, all
    /// under the channel's sequencer so a replaying subscribe sees each
    /// message exactly once (replayed or live).
    fn publish_with_history(
        &self,
        channel: &ChannelName,
        data: &RawValue,
        id: Option<&RawValue>,
        ext: Option<&RawValue>,
        retention: Retention,
    ) -> usize {
        let sequencer = self.sequencers.of(channel.as_str(), self.history.as_ref());
        let mut last_id = sequencer.lock();
        *last_id += 1;
        let replay_id = *last_id;
        let mut ext_object = ext
            .and_then(|raw| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.get()).ok()
            })
            .unwrap_or_default();
        ext_object.insert("replay".into(), serde_json::json!({ "id": replay_id }));
        let ext_raw = serde_json::value::to_raw_value(&ext_object).expect("a JSON object");
        let delivery = halley_protocol::encode_delivery(channel.as_str(), data, id, Some(&ext_raw));
        let entry = Entry {
            id: replay_id,
            at_ms: self.sessions.now_ms(),
            delivery: delivery.clone(),
        };
        self.history.append(channel.as_str(), entry, retention);
        self.fan_out(channel, data, delivery)
    }

    /// Subscribes `session` to `pattern`, first replaying what a channel
    /// with history retains after the `requested` id (`-1`, or none: only
    /// new messages). Returns whether the request reached further back than
    /// what is retained (a gap).
    ///
    /// On a channel a Data Adapter owns, the adapter hears of a first
    /// subscriber and the session gets the adapter's snapshot, alone.
    pub fn subscribe(
        &self,
        pattern: &ChannelPattern,
        session: &Arc<Session>,
        requested: Option<i64>,
    ) -> bool {
        let Some(owner) = self.data_adapters.owner(pattern.as_str()) else {
            return self.subscribe_with_replay(pattern, session, requested).1;
        };
        let Ok(channel) = ChannelName::parse(pattern.as_str()) else {
            return self.subscribe_with_replay(pattern, session, requested).1;
        };
        let mut gap = false;
        self.data_adapters.subscribe(
            self,
            &owner,
            &channel,
            || {
                let (outcome, replay_gap) = self.subscribe_with_replay(pattern, session, requested);
                gap = replay_gap;
                outcome.added()
            },
            |snapshot| {
                let policy = self.overflow_policy(&channel);
                for data in snapshot {
                    let delivery =
                        halley_protocol::encode_delivery(channel.as_str(), &data, None, None);
                    session.enqueue(delivery, policy);
                }
            },
        );
        gap
    }

    /// Removes `session` from `pattern`, telling the owning Data Adapter
    /// when it was the last subscriber. Returns whether it was subscribed.
    pub fn unsubscribe(&self, pattern: &str, session: &Session) -> bool {
        let outcome = self.subscriptions.unsubscribe(pattern, session);
        if outcome == Unsubscribed::Last {
            self.data_adapters.emptied(self, pattern);
        }
        outcome.removed()
    }

    fn subscribe_with_replay(
        &self,
        pattern: &ChannelPattern,
        session: &Arc<Session>,
        requested: Option<i64>,
    ) -> (Subscribed, bool) {
        let replay = requested.and_then(crate::history::replay_from);
        let channel = ChannelName::parse(pattern.as_str()).ok();
        let retention = channel.as_ref().and_then(|c| self.retention(c));
        let (Some(after), Some(channel), Some(retention)) = (replay, channel, retention) else {
            return (
                self.subscriptions.subscribe(pattern.as_str(), session),
                false,
            );
        };
        let sequencer = self.sequencers.of(channel.as_str(), self.history.as_ref());
        let _turn = sequencer.lock();
        let outcome = self.subscriptions.subscribe(pattern.as_str(), session);
        let replayed =
            self.history
                .after(channel.as_str(), after, retention, self.sessions.now_ms());
        let policy = self.overflow_policy(&channel);
        for delivery in replayed.deliveries {
            session.enqueue(delivery, policy);
        }
        (outcome, replayed.gap)
    }

    /// How long a message of `channel` may wait, if the channel is lazy.
    fn lazy_timeout(&self, channel: &ChannelName) -> Option<u64> {
        self.rules.lazy_timeout_ms(channel)
    }

    /// The history kept for `channel`, if any `[[history]]` rule matches.
    fn retention(&self, channel: &ChannelName) -> Option<Retention> {
        self.rules.retention(channel)
    }

    /// Pushes one encoded delivery into the outbox of every subscriber, or
    /// through its throttle when the channel's `[[qos]]` rule or the
    /// session's grant limits its frequency (see [`crate::qos`]).
    fn fan_out(&self, channel: &ChannelName, data: &RawValue, delivery: Bytes) -> usize {
        let policy = self.overflow_policy(channel);
        let lazy_timeout = self.lazy_timeout(channel);
        let lazy_deadline = lazy_timeout.map(|t| self.sessions.now_ms() + t);
        // Once per publish: a channel without a rule, while no session has
        // a frequency of its own, takes the plain path.
        let qos = self.rules.qos(channel);
        let mut overflowed = Vec::new();
        let delivered = if qos.is_none() && !Session::any_frequency_grant() {
            self.subscriptions.for_each_subscriber(channel, |session| {
                if !session.enqueue_lazily(delivery.clone(), policy, lazy_deadline) {
                    overflowed.push(session.clone());
                }
            })
        } else {
            let mut throttled: Option<ThrottledPublish> = None;
            self.subscriptions.for_each_subscriber(channel, |session| {
                let kept = match crate::qos::frequency_limit(qos, session) {
                    None => session.enqueue_lazily(delivery.clone(), policy, lazy_deadline),
                    Some(limit) => {
                        let publish = throttled.get_or_insert_with(|| {
                            let release = Release {
                                policy,
                                lazy_timeout_ms: lazy_timeout,
                            };
                            ThrottledPublish::new(channel, data, qos, release)
                        });
                        crate::qos::offer(self, session, publish, limit, delivery.clone())
                    }
                };
                if !kept {
                    overflowed.push(session.clone());
                }
            })
        };
        // Ended outside the fan-out: it holds the subscriber sets' read locks.
        for session in overflowed {
            tracing::info!(client_id = session.client_id(), %channel, "outbox overflow: disconnecting the session");
            self.remove_session(&session, SessionEnd::Overflowed);
        }
        delivered
    }

    /// The overflow policy of a channel: the first matching `[[overflow]]`
    /// rule, or the default.
    fn overflow_policy(&self, channel: &ChannelName) -> OverflowPolicy {
        self.rules.overflow_policy(channel)
    }

    /// Answers a pending connect, holding it first when the transport
    /// allows (see `meta/connect.rs`).
    pub async fn complete_connect(
        &self,
        pending: PendingConnect,
        holdable: bool,
        browser_id: Option<&str>,
    ) -> (Reply, u64) {
        handlers::connect::complete(self, pending, holdable, browser_id).await
    }

    /// The deliveries that ride with the reply to connect `generation`,
    /// marking the reply with its batch number when the session uses the
    /// ack extension. A superseded connect's reply gets none.
    pub fn deliveries_for_connect_reply(
        &self,
        session: &Session,
        reply: &mut Reply,
        generation: u64,
    ) -> std::collections::VecDeque<Bytes> {
        let (deliveries, batch) = session.take_for_connect_reply(generation);
        crate::ext::ack::mark_batch(reply, batch);
        deliveries
    }

    /// Removes a session and everything it subscribed to, tells the Data
    /// Adapters of the channels it was the last subscriber of, then the
    /// session listeners `why`.
    pub fn remove_session(&self, session: &Session, why: SessionEnd) {
        let ended = crate::state::end_session(&self.sessions, &self.subscriptions, session);
        for pattern in &ended.emptied {
            self.data_adapters.emptied(self, pattern);
        }
        if ended.registered {
            self.session_listeners.session_ended(session, why);
            if let Some(metadata) = self.metadata_adapter() {
                metadata.session_closed(session, why);
            }
            if let Some(user) = session.user() {
                self.user_sessions.close(user);
            }
        }
    }

    /// Expires silent sessions until shutdown (spawned by the server).
    pub async fn run_sweeper(&self) {
        crate::state::sweeper::run(
            &self.sessions,
            self.config.session_lifetime_ms(),
            self.config.sweep_period(),
            self.shutdown.wait(),
            |session| self.remove_session(session, SessionEnd::Expired),
        )
        .await
    }
}

fn invalid_reply(invalid: InvalidMessage) -> Reply {
    tracing::debug!(reason = %invalid.reason, "invalid message in batch");
    Reply::to(invalid.channel.unwrap_or_default(), invalid.id).failure(BayeuxError::MESSAGE_INVALID)
}
