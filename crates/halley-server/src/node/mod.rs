//! The core: everything one Halley node holds, below every handler.
//!
//! A [`Node`] owns the shared state (sessions, subscriptions, per-channel
//! rules, the Metadata Adapter, history, session listeners), the registries
//! that code above fills ([`data_adapters`]: who feeds which channels;
//! [`services`]: who answers which `/service/**` channel), and the
//! [`Broker`], the seam through which a publish leaves the node and
//! messages from other nodes enter its fan-out. Handlers (`meta/*`,
//! `publish`, `service/*`), adapters and transports take a `&Node`;
//! nothing here knows of them.
//!
//! The path of a broadcast through this file:
//!
//! 1. [`Node::publish`] wraps the message in a [`Publication`] and hands it
//!    to the broker (the embedded [`LocalBroker`] delivers it here at once);
//! 2. [`LocalFanout::fan_out`] (implemented below) encodes it once into
//!    `Bytes` (numbered and kept first on a channel with history), looks up
//!    the subscriber sets of the O(depth) matching patterns, and pushes a
//!    clone of the same `Bytes` into each subscriber's outbox, or through
//!    its QoS throttle when a frequency limit applies;
//! 3. the push wakes whoever waits for that session (a held connect, a
//!    WebSocket), see [`crate::connection`].
//!
//! Lock order, where two are held at once: a history channel's sequencer,
//! then a subscriber set's read lock, then one session's outbox. A Data
//! Adapter's turn is taken before any of those. No lock is held across an
//! `.await`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use halley_protocol::{ChannelName, ChannelPattern};
use serde_json::value::RawValue;
use tokio::time::Instant;

pub mod browser_polls;
pub mod data_adapters;
pub mod services;
pub mod takeover;

use crate::broker::local::LocalBroker;
use crate::broker::{Broker, LocalFanout, Publication, Published};
use crate::config::Config;
use crate::ext::Extensions;
use crate::history::memory::MemoryHistory;
use crate::history::{Entry, HistoryStore, Retention, Sequencers};
use crate::metadata::caps::UserSessions;
use crate::metadata::MetadataAdapter;
use crate::qos::ThrottledPublish;
use crate::rules::ChannelRules;
use crate::shutdown::Shutdown;
use crate::state::limits::Limits;
use crate::state::listeners::{SessionEnd, SessionListeners};
use crate::state::per_ip_rate::PerIpRate;
use crate::state::session::Session;
use crate::state::sessions::Sessions;
use crate::state::subscriptions::{Subscribed, Subscriptions, Unsubscribed};
use crate::state::throttle::{Limit, Offered, Release};

pub use data_adapters::{DataAdapter, DataAdapters};
pub use services::{ServiceError, ServiceRequest, Services};

/// Failed API-key attempts one address may make at once, after a pause.
const API_KEY_FAILURE_BURST: f64 = 10.0;

pub struct Node {
    config: Config,
    sessions: Sessions,
    subscriptions: Arc<Subscriptions>,
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
    /// What clients hit of the node's limits (counters, bounded warnings).
    limits: Limits,
    /// Handshakes per client IP (`handshake-rate-per-ip`).
    handshake_rate: PerIpRate,
    /// Failed API-key attempts per client IP (`api-key-failures-per-ip`).
    api_key_failures: PerIpRate,
    /// Messages per API key of the publish API (`api-publish-rate`), in
    /// the order of `api-keys`.
    api_publish_rates: Vec<crate::state::publisher_rate::PublisherRate>,
    /// The extensions every message and reply passes through (ack,
    /// timesync, replay, and any the embedding application adds).
    extensions: Extensions,
    /// Where publishes go: this node only, or the cluster's engine.
    broker: Box<dyn Broker>,
    /// Takeovers in progress, one per clientId (see `takeover.rs`).
    adopting: dashmap::DashMap<Box<str>, Arc<tokio::sync::Mutex<()>>>,
    /// The newest log offset this node has delivered (cluster nodes).
    last_offset: AtomicU64,
    /// This node, for the tasks it spawns (QoS releases): they must not
    /// keep it alive.
    me: Weak<Node>,
}

impl Node {
    /// A node with the embedded (in-process) broker.
    pub fn new(config: Config) -> Arc<Self> {
        Self::with_broker(config, Box::new(LocalBroker))
    }

    /// A node whose publishes go through `broker`.
    pub fn with_broker(config: Config, broker: Box<dyn Broker>) -> Arc<Self> {
        let mut sessions =
            Sessions::new(config.outbox_limits()).with_max_bandwidth(config.max_bandwidth);
        if broker.directory().is_some() {
            sessions.set_logged();
        }
        let rules = ChannelRules::from_config(&config);
        let subscriptions = Arc::new(Subscriptions::default());
        let user_sessions = UserSessions::new(config.max_sessions_per_user);
        let history = MemoryHistory::default();
        if let Some(directory) = broker.directory() {
            // What the log numbered before this node joined, its history
            // never had: a replay from before it reports the gap.
            history.raise_floor(directory.joined());
        }
        Arc::new_cyclic(|me| Node {
            handshake_rate: PerIpRate::new(
                config.handshake_rate_per_ip,
                config.handshake_rate_per_ip,
            ),
            api_key_failures: PerIpRate::new(config.api_key_failures_per_ip, API_KEY_FAILURE_BURST),
            api_publish_rates: config
                .api_keys
                .iter()
                .map(|_| config.api_publish_rate())
                .collect(),
            config,
            sessions,
            data_adapters: DataAdapters::new(subscriptions.clone()),
            subscriptions,
            services: Services::default(),
            session_listeners: SessionListeners::default(),
            shutdown: Shutdown::default(),
            history: Box::new(history),
            sequencers: Sequencers::default(),
            rules,
            metadata: std::sync::OnceLock::new(),
            user_sessions,
            limits: Limits::default(),
            extensions: Extensions::with_builtins(),
            broker,
            adopting: dashmap::DashMap::new(),
            last_offset: AtomicU64::new(0),
            me: me.clone(),
        })
    }

    /// The newest log offset this node has delivered (0 on a single node).
    pub fn last_offset(&self) -> u64 {
        self.last_offset.load(Ordering::Acquire)
    }

    /// A handle on this node that does not keep it alive.
    pub fn weak(&self) -> Weak<Node> {
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

    /// The extension pipeline (see [`crate::ext`]).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The broker publishes go through.
    pub fn broker(&self) -> &dyn Broker {
        self.broker.as_ref()
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

    /// The limits clients hit, counted (see [`crate::state::limits`]).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Channels whose history (sequencer) this node holds now.
    pub fn history_channels(&self) -> usize {
        self.sequencers.len()
    }

    /// Handshakes per client IP.
    pub fn handshake_rate(&self) -> &PerIpRate {
        &self.handshake_rate
    }

    /// Failed API-key attempts per client IP.
    pub fn api_key_failures(&self) -> &PerIpRate {
        &self.api_key_failures
    }

    /// The rate of the API key at `index` in `api-keys`.
    pub fn api_publish_rate(
        &self,
        index: usize,
    ) -> Option<&crate::state::publisher_rate::PublisherRate> {
        self.api_publish_rates.get(index)
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Publishes `data` on a broadcast `channel` to every subscriber (the
    /// publisher included, as CometD does), through the broker.
    pub fn publish(
        &self,
        channel: &ChannelName,
        data: &RawValue,
        id: Option<&RawValue>,
        ext: Option<&RawValue>,
    ) -> Published {
        let publication = Publication {
            channel,
            data,
            id,
            ext,
        };
        let published = self.broker.publish(publication, self);
        if published.is_unavailable() {
            crate::metrics::metrics().broker_publish_errors.inc();
        }
        published
    }

    /// A publish on a channel with history: numbered, kept, delivered, all
    /// under the channel's sequencer so a replaying subscribe sees each
    /// message exactly once (replayed or live).
    fn fan_out_with_history(
        &self,
        publication: Publication<'_>,
        retention: Retention,
        offset: Option<u64>,
    ) -> usize {
        let Publication {
            channel,
            data,
            id,
            ext,
        } = publication;
        let sequencer = self.sequencers.of(channel.as_str(), self.history.as_ref());
        let mut last_id = sequencer.lock();
        // On a cluster the log's offset is the replay id: the same on every
        // node, so a client's last-seen id means the same message wherever
        // its session moves (rising per channel, not consecutive).
        *last_id = offset.unwrap_or(*last_id + 1).max(*last_id + 1);
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
        self.enqueue_for_subscribers(channel, data, delivery, offset)
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
            &owner,
            &channel,
            || {
                let (outcome, replay_gap) = self.subscribe_with_replay(pattern, session, requested);
                gap = replay_gap;
                outcome.added()
            },
            |snapshot| {
                let policy = self.rules.overflow_policy(&channel);
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
            self.data_adapters.emptied(pattern);
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
        let retention = channel.as_ref().and_then(|c| self.rules.retention(c));
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
        let policy = self.rules.overflow_policy(&channel);
        for delivery in replayed.deliveries {
            session.enqueue(delivery, policy);
        }
        (outcome, replayed.gap)
    }

    /// Pushes one encoded delivery into the outbox of every subscriber, or
    /// through its throttle when the channel's `[[qos]]` rule or the
    /// session's grant limits its frequency (see [`crate::qos`]).
    /// `offset`: the cluster log's number of the publication (a session
    /// taken over skips what its replay already queued).
    fn enqueue_for_subscribers(
        &self,
        channel: &ChannelName,
        data: &RawValue,
        delivery: Bytes,
        offset: Option<u64>,
    ) -> usize {
        let policy = self.rules.overflow_policy(channel);
        let lazy_timeout = self.rules.lazy_timeout_ms(channel);
        let lazy_deadline = lazy_timeout.map(|t| self.sessions.now_ms() + t);
        // Once per publish: a channel without a rule, while no session has
        // a frequency of its own, takes the plain path.
        let qos = self.rules.qos(channel);
        let mut overflowed = Vec::new();
        let delivered = if let Some(offset) = offset {
            // A cluster node: the plain path, plus the session's place in
            // the log.
            self.subscriptions.for_each_subscriber(channel, |session| {
                if !session.admit_logged(offset) {
                    return;
                }
                let kept = match crate::qos::frequency_limit(qos, session) {
                    None => session.enqueue_lazily(delivery.clone(), policy, lazy_deadline),
                    Some(limit) => {
                        let release = Release {
                            policy,
                            lazy_timeout_ms: lazy_timeout,
                        };
                        let publish =
                            ThrottledPublish::new(channel, data, qos, release, Instant::now());
                        self.offer_throttled(session, &publish, limit, delivery.clone())
                    }
                };
                session.queued_logged(offset);
                if !kept {
                    overflowed.push(session.clone());
                }
            })
        } else if qos.is_none() && !self.sessions.any_frequency_grant() {
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
                            ThrottledPublish::new(channel, data, qos, release, Instant::now())
                        });
                        self.offer_throttled(session, publish, limit, delivery.clone())
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

    /// Delivers `delivery` to a frequency-limited `session`: now, or later
    /// by the session's release task. Returns `false` when the session must
    /// end (overflow under the `disconnect` policy), as `Session::enqueue`
    /// does. Without a runtime (an embedder publishing from a plain thread)
    /// deliveries go unthrottled rather than be held forever.
    fn offer_throttled(
        &self,
        session: &Arc<Session>,
        publish: &ThrottledPublish,
        limit: Limit,
        delivery: Bytes,
    ) -> bool {
        let release = publish.release;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.enqueue_released(session, delivery, release);
        };
        match session.offer_throttled(&publish.slot, delivery.clone(), limit, release, publish.now)
        {
            Offered::Now => self.enqueue_released(session, delivery, release),
            Offered::Held { start_timer } => {
                if start_timer {
                    runtime.spawn(release_held(self.weak(), session.clone()));
                }
                true
            }
            Offered::Dropped => {
                crate::metrics::metrics()
                    .dropped
                    .get(crate::metrics::DropReason::Qos)
                    .inc();
                true
            }
            Offered::Overflow => false,
        }
    }

    fn enqueue_released(&self, session: &Session, delivery: Bytes, release: Release) -> bool {
        let lazy_deadline = release
            .lazy_timeout_ms
            .map(|timeout| self.sessions.now_ms() + timeout);
        session.enqueue_lazily(delivery, release.policy, lazy_deadline)
    }

    /// Removes a session and everything it subscribed to, tells the Data
    /// Adapters of the channels it was the last subscriber of, then the
    /// session listeners `why`.
    pub fn remove_session(&self, session: &Session, why: SessionEnd) {
        let ended = crate::state::end_session(&self.sessions, &self.subscriptions, session);
        if ended.registered && why != SessionEnd::Moved {
            if let Some(directory) = self.directory() {
                directory.forget(session.client_id());
            }
        }
        for pattern in &ended.emptied {
            self.data_adapters.emptied(pattern);
        }
        if ended.registered {
            self.session_listeners.session_ended(session, why);
            if let Some(metadata) = self.metadata_adapter() {
                metadata.session_closed(session, why);
            }
            if let Some(user) = session.user() {
                self.user_sessions.close(user);
                // Its place in the cluster's count goes with the session,
                // not with this node's hold on it.
                if why != SessionEnd::Moved && self.user_sessions.max().is_some() {
                    if let Some(directory) = self.directory() {
                        directory.close_user_session(user, session.client_id());
                    }
                }
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
            || {
                let now = Instant::now();
                self.handshake_rate.prune(now);
                self.api_key_failures.prune(now);
                self.sessions.shrink_if_sparse();
                self.subscriptions.shrink_if_sparse();
                crate::history::forget_stale(
                    self.history.as_ref(),
                    &self.sequencers,
                    |channel| self.rules.retention(channel),
                    self.sessions.now_ms(),
                );
            },
        )
        .await
    }
}

impl LocalFanout for Node {
    fn fan_out(&self, publication: Publication<'_>) -> usize {
        let channel = publication.channel;
        let delivered = self.fan_out_at(publication, None);
        crate::traffic::traffic().record(channel.as_str(), delivered);
        delivered
    }

    fn fan_out_logged(&self, publication: Publication<'_>, offset: u64) -> usize {
        self.last_offset.fetch_max(offset, Ordering::AcqRel);
        let channel = publication.channel;
        let delivered = self.fan_out_at(publication, Some(offset));
        crate::traffic::traffic().record(channel.as_str(), delivered);
        delivered
    }

    fn release_session<'a>(
        &'a self,
        client_id: &'a str,
    ) -> crate::broker::directory::Pending<'a, Option<crate::broker::directory::SessionRecord>>
    {
        Box::pin(self.release(client_id))
    }
}

impl Node {
    fn fan_out_at(&self, publication: Publication<'_>, offset: Option<u64>) -> usize {
        let _published = crate::metrics::PublishTime::start();
        if let Some(retention) = self.rules.retention(publication.channel) {
            return self.fan_out_with_history(publication, retention, offset);
        }
        let Publication {
            channel,
            data,
            id,
            ext,
        } = publication;
        let delivery: Bytes = halley_protocol::encode_delivery(channel.as_str(), data, id, ext);
        self.enqueue_for_subscribers(channel, data, delivery, offset)
    }
}

/// A session's QoS release task: queues held updates as their turn comes,
/// and ends when nothing is held, when the session closes, or at shutdown.
async fn release_held(node: Weak<Node>, session: Arc<Session>) {
    // Spawned from the node's own publish: it is alive here. Kept for as
    // long as this task, which is bounded by the above.
    let Some(node) = node.upgrade() else {
        return;
    };
    loop {
        let (released, next) = session.release_throttled(Instant::now());
        for (delivery, release) in released {
            if !node.enqueue_released(&session, delivery, release) {
                tracing::info!(
                    client_id = session.client_id(),
                    "outbox overflow: disconnecting the session"
                );
                node.remove_session(&session, SessionEnd::Overflowed);
                return;
            }
        }
        let Some(next) = next else {
            return;
        };
        // Registered before the check, so a close in between is not missed.
        // Other wake-ups (new deliveries) only cost a look at the throttle.
        let woken = session.wake().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if session.is_closed() || node.shutdown().is_started() {
            session.clear_throttled();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = &mut woken => {}
            _ = node.shutdown().wait() => {}
        }
    }
}
