//! One Bayeux session: what the server knows of a client between its
//! handshake and its disconnect or expiry.
//!
//! A [`Session`] is its identity (clientId, browser binding, creation time),
//! its lifecycle (last sign of life, closed), what it listens to, who it
//! speaks for ([`Grant`]), and three parts, each in its own file and each
//! separately locked so that a publisher pushing into the outbox never
//! waits for anything but that outbox:
//!
//! - [`delivery`]: what the session is owed: the bounded outbox, the
//!   batches sent but not acknowledged (ack extension), the bandwidth bucket;
//! - [`connects`]: who serves it: numbered connects, the socket of the
//!   latest, how many hold it now;
//! - [`rates`]: quality of service: held updates of rate-limited channels,
//!   the publish-rate bucket.
//!
//! A session is shared (`Arc`) by the registry, by the subscriber sets of
//! the channels it listens to, and by any request in flight for it.
//!
//! Waking: whoever waits for deliveries (a held `/meta/connect`) creates a
//! `wake.notified()` future, enables it, calls [`Session::watching`], checks
//! the outbox, and only then sleeps; pushes call `notify_waiters` after
//! queuing, so no wake-up is lost. Only the first push after a `watching`
//! wakes: the others of a burst find the waiters already woken (they look
//! at the outbox before they sleep again), which saves the wake-up's lock
//! per delivery.
//!
//! Time is given, never read: methods that depend on it take the node's
//! clock reading (`now_ms`) or tokio's `Instant`.

mod connects;
mod delivery;
mod position;
mod rates;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::grant::{Grant, SessionLimits};
use super::log_throttle::LogThrottle;
use super::outbox::{OutboxLimits, OverflowPolicy, Pushed};
use super::throttle::{Limit, Offered, Release};
pub use crate::state::unacked::{batch_number, batch_offset};
pub use connects::ConnectionType;
use connects::Connects;
use delivery::Delivery;
use position::Position;
use rates::Rates;

/// Server-internal, dense session number (cheaper to hash than the clientId).
pub type SessionKey = u64;

pub struct Session {
    key: SessionKey,
    client_id: Box<str>,
    /// The `BAYEUX_BROWSER` cookie the clientId was issued to.
    browser_id: Option<Box<str>>,
    /// Whether the client has shown it keeps that cookie: its handshake
    /// came with it, or a later request did (see `Exchange::resolve_session`).
    bound_strictly: AtomicBool,
    /// The address its handshake came from, when known.
    handshake_peer: OnceLock<std::net::IpAddr>,
    /// The WebSocket a cookie-less client uses this session on (0: none):
    /// the one it was created on, or the first cookie-less socket that
    /// presented a session whose cookie was never sent back.
    bound_socket: AtomicU64,
    /// When the session was created (the node's clock).
    created_ms: u64,
    delivery: Delivery,
    connects: Connects,
    rates: Rates,
    /// Woken when a delivery is queued, a newer connect arrives, or the session closes.
    wake: Notify,
    /// Set by the push that woke the waiters, cleared by [`Session::watching`].
    woken: AtomicBool,
    /// Milliseconds (on the node's clock) of the last sign of life.
    last_seen_ms: AtomicU64,
    /// Set on disconnect or expiry; a closed session is never used again.
    closed: AtomicBool,
    /// Set when another node took the session over: a held connect tells
    /// its client to go on (there), not to stop.
    moved: AtomicBool,
    /// Set when it ended with its credentials (expired, or fresh ones
    /// refused): a held connect tells its client to handshake, not to stop.
    credentials_ended: AtomicBool,
    /// Patterns this session subscribed to, for cleanup and unsubscribe.
    subscriptions: Mutex<HashSet<Box<str>>>,
    /// Replay ids asked for at handshake, per channel, used by later subscribes.
    replay_requests: Mutex<HashMap<Box<str>, i64>>,
    /// Who the session speaks for and its limits, set once at handshake;
    /// boxed, so the many anonymous sessions of a server without a Metadata
    /// Adapter pay one pointer, not the whole grant.
    grant: OnceLock<Box<Grant>>,
    /// When its credentials expire (wall-clock ms; `i64::MAX`: never): the
    /// grant's, pushed later by a refresh. Kept apart from the grant, which
    /// is immutable so that the delivery path reads it without a lock.
    credentials_expire_ms: AtomicI64,
    /// `max-bandwidth` of the server, unless the grant sets one.
    default_max_bandwidth: Option<u64>,
    /// Set on a cluster node: deliveries carry log offsets, batch numbers
    /// say the offset they reach.
    logged: bool,
    /// Where the session stands in the cluster's log.
    position: Position,
    /// `has_through` and the time of its last periodic record write.
    recorded: Mutex<(u64, u64)>,
}

impl Session {
    pub fn new(
        key: SessionKey,
        client_id: Box<str>,
        browser_id: Option<Box<str>>,
        limits: OutboxLimits,
        now_ms: u64,
    ) -> Self {
        Session {
            key,
            client_id,
            browser_id,
            bound_strictly: AtomicBool::new(false),
            bound_socket: AtomicU64::new(0),
            handshake_peer: OnceLock::new(),
            created_ms: now_ms,
            delivery: Delivery::new(limits),
            connects: Connects::new(),
            rates: Rates::default(),
            wake: Notify::new(),
            woken: AtomicBool::new(false),
            last_seen_ms: AtomicU64::new(now_ms),
            closed: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            credentials_ended: AtomicBool::new(false),
            subscriptions: Mutex::new(HashSet::new()),
            replay_requests: Mutex::new(HashMap::new()),
            grant: OnceLock::new(),
            credentials_expire_ms: AtomicI64::new(i64::MAX),
            default_max_bandwidth: None,
            logged: false,
            position: Position::default(),
            recorded: Mutex::new((0, 0)),
        }
    }

    /// Marks a session of a cluster node (see [`Session::is_logged`]).
    pub fn set_logged(&mut self) {
        self.logged = true;
    }

    /// Whether the session lives on a cluster node.
    pub fn is_logged(&self) -> bool {
        self.logged
    }

    // Identity.

    pub fn key(&self) -> SessionKey {
        self.key
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn browser_id(&self) -> Option<&str> {
        self.browser_id.as_deref()
    }

    pub fn set_bound_strictly(&self, strict: bool) {
        self.bound_strictly.store(strict, Ordering::Release);
    }

    pub fn is_bound_strictly(&self) -> bool {
        self.bound_strictly.load(Ordering::Acquire)
    }

    /// Records the address its handshake came from (once).
    pub fn set_handshake_peer(&self, peer: std::net::IpAddr) {
        let _ = self.handshake_peer.set(peer);
    }

    /// The address its handshake came from, when known.
    pub fn handshake_peer(&self) -> Option<std::net::IpAddr> {
        self.handshake_peer.get().copied()
    }

    /// The WebSocket a cookie-less client uses this session on (0: none).
    pub fn bound_socket(&self) -> u64 {
        self.bound_socket.load(Ordering::Acquire)
    }

    /// Binds the session to WebSocket `socket_id` if it is bound to none
    /// yet; whether it is bound to that one now.
    pub fn bind_socket(&self, socket_id: u64) -> bool {
        match self
            .bound_socket
            .compare_exchange(0, socket_id, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(bound) => bound == socket_id,
        }
    }

    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    // Who it speaks for.

    /// Sets who the session speaks for and its limits (once, at handshake;
    /// a second call is ignored and returns `false`). Through
    /// [`super::sessions::Sessions::set_grant`], which counts the grants
    /// that limit frequency.
    pub(crate) fn set_grant(&self, grant: Grant) -> bool {
        let expires_ms = grant.expires_ms;
        let set = self.grant.set(Box::new(grant)).is_ok();
        if let (true, Some(expires_ms)) = (set, expires_ms) {
            self.credentials_expire_ms
                .store(expires_ms, Ordering::Release);
        }
        set
    }

    /// When the session's credentials expire (wall-clock ms), if they do.
    pub fn credentials_expire_ms(&self) -> Option<i64> {
        let ms = self.credentials_expire_ms.load(Ordering::Acquire);
        (ms != i64::MAX).then_some(ms)
    }

    /// Whether its credentials have expired at `now_wall_ms`.
    #[inline]
    pub fn credentials_expired(&self, now_wall_ms: i64) -> bool {
        now_wall_ms >= self.credentials_expire_ms.load(Ordering::Acquire)
    }

    /// Marks the session as ended with its credentials (before it is removed).
    pub fn mark_credentials_ended(&self) {
        self.credentials_ended.store(true, Ordering::Release);
    }

    /// Whether it ended with its credentials (see `credentials.rs`).
    pub fn credentials_ended(&self) -> bool {
        self.credentials_ended.load(Ordering::Acquire)
    }

    /// Pushes the credentials' end to `expires_ms` (fresh credentials of
    /// the same user): only later, never earlier. Whether it moved.
    pub fn extend_credentials(&self, expires_ms: i64) -> bool {
        self.credentials_expire_ms
            .fetch_max(expires_ms, Ordering::AcqRel)
            < expires_ms
    }

    /// Whether the session's grant limits its deliveries' frequency (QoS).
    pub fn limits_frequency(&self) -> bool {
        self.grant
            .get()
            .is_some_and(|grant| grant.limits.max_frequency.is_some())
    }

    /// The session's grant: anonymous with default limits until set.
    pub fn grant(&self) -> &Grant {
        // Immutable, shared by every anonymous session of every node.
        static ANONYMOUS: OnceLock<Grant> = OnceLock::new();
        match self.grant.get() {
            Some(grant) => grant,
            None => ANONYMOUS.get_or_init(Grant::anonymous),
        }
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        self.grant().user()
    }

    /// The session's own limits (`None` fields: the configured defaults).
    pub fn limits(&self) -> &SessionLimits {
        &self.grant().limits
    }

    /// Sets the bandwidth that applies unless the grant sets one (at creation).
    pub fn set_default_max_bandwidth(&mut self, bytes_per_second: Option<u64>) {
        self.default_max_bandwidth = bytes_per_second;
    }

    /// The bytes per second of deliveries this session may receive, if limited.
    #[inline]
    pub fn max_bandwidth(&self) -> Option<u64> {
        // The grant directly (not `limits()`): this is on every take.
        self.grant
            .get()
            .and_then(|grant| grant.limits.max_bandwidth)
            .or(self.default_max_bandwidth)
            .filter(|&b| b > 0)
    }

    // Delivery: the outbox, acks, bandwidth.

    /// Queues one encoded delivery and wakes whoever waits for this session.
    /// Returns `false` when the outbox overflowed under the `disconnect`
    /// policy: the caller ends the session (outside its own locks).
    pub fn enqueue(&self, delivery: Bytes, policy: OverflowPolicy) -> bool {
        self.enqueue_lazily(delivery, policy, None)
    }

    /// Like [`Session::enqueue`]; a delivery with a `lazy_deadline_ms` (on
    /// the node's clock) may wait until then for a flush that happens
    /// anyway, instead of waking a held connect at once.
    #[inline]
    pub fn enqueue_lazily(
        &self,
        delivery: Bytes,
        policy: OverflowPolicy,
        lazy_deadline_ms: Option<u64>,
    ) -> bool {
        if self.is_closed() {
            return true;
        }
        let keep = match self.delivery.push(delivery, policy, lazy_deadline_ms) {
            Pushed::Queued => true,
            Pushed::QueuedDroppingOldest(_) => {
                self.log_overflow_once();
                true
            }
            Pushed::Rejected => {
                self.log_overflow_once();
                policy != OverflowPolicy::Disconnect
            }
        };
        if keep {
            // SeqCst, like `watching`'s store: a waiter that cleared the
            // flag either sees this delivery in the outbox or is woken.
            if !self.woken.swap(true, Ordering::SeqCst) {
                self.wake.notify_waiters();
            }
        } else {
            self.delivery.mark_overflowed();
        }
        keep
    }

    /// Whether the session was ended because its outbox overflowed (its
    /// client is told to re-handshake rather than to stop).
    pub fn overflowed(&self) -> bool {
        self.delivery.overflowed()
    }

    fn log_overflow_once(&self) {
        // Once per session, and at a bounded rate over all of them: any
        // client can subscribe to a busy channel and stop reading, and a
        // flood of such sessions must not become a flood of lines.
        static OVERFLOWS: LogThrottle = LogThrottle::new();
        if self.delivery.first_overflow() {
            if let Some(suppressed) = OVERFLOWS.allow(Instant::now()) {
                let (queued, queued_bytes) = self.delivery.queued();
                tracing::warn!(
                    client_id = %self.client_id,
                    queued,
                    queued_bytes,
                    suppressed,
                    "session outbox full: deliveries dropped by the channel's overflow policy (logged once per session; `suppressed` other sessions since the last line)"
                );
            }
        }
    }

    /// Takes the queued deliveries, oldest first: all of them, or as many as
    /// the session's bandwidth allows now (the rest wait, see
    /// [`Session::bandwidth_ready_at`]).
    #[inline]
    pub fn take_deliveries(&self, now: Instant) -> VecDeque<Bytes> {
        if !self.logged || self.ack_enabled() {
            return self.delivery.take(self.max_bandwidth(), now);
        }
        let (taken, ()) = self
            .delivery
            .take_with(self.max_bandwidth(), now, |emptied| {
                if emptied {
                    self.position.sent(self.position.last_queued());
                }
            });
        taken
    }

    /// When queued deliveries held back by the bandwidth may leave (`None`:
    /// nothing is held back by it). Whoever waits to write wakes then.
    #[inline]
    pub fn bandwidth_ready_at(&self, now: Instant) -> Option<Instant> {
        self.delivery.bandwidth_ready_at(self.max_bandwidth(), now)
    }

    /// Turns on the ack extension for this session (at handshake).
    pub fn enable_ack(&self) {
        self.delivery.enable_ack();
    }

    #[inline]
    pub fn ack_enabled(&self) -> bool {
        self.delivery.ack_enabled()
    }

    /// The deliveries a reply other than a connect reply may carry: all of
    /// them, or none with the ack extension (they wait for a connect reply).
    #[inline]
    pub fn take_piggyback(&self, now: Instant) -> VecDeque<Bytes> {
        if self.ack_enabled() {
            VecDeque::new()
        } else {
            self.take_deliveries(now)
        }
    }

    /// The deliveries of the reply to connect number `generation`, and its
    /// batch number with the ack extension (the deliveries are then kept
    /// until the batch is acknowledged). A connect that is no longer the
    /// latest gets nothing: its client has moved on and may never read the
    /// reply. The check and the take are one step under the same lock as
    /// [`Session::begin_connect`], so no newer connect can slip in between.
    #[inline]
    pub fn take_for_connect_reply(
        &self,
        generation: u64,
        now: Instant,
    ) -> (VecDeque<Bytes>, Option<u64>) {
        // What the batch reaches in the log: everything queued when the
        // outbox was emptied, else no further than before (safe side: a
        // takeover may then send a message twice, never skip one).
        // Read before: the closure runs under the `unacked` lock.
        let ack = self.logged && self.ack_enabled();
        let reached = |emptied: bool| {
            let queued = self.position.last_queued();
            if !emptied {
                return self.position.last_sent();
            }
            if !ack {
                self.position.sent(queued);
            }
            queued
        };
        let (deliveries, batch, trimmed) = self.delivery.take_for_connect_reply(
            || self.connects.is_current(generation),
            self.max_bandwidth(),
            now,
            self.logged.then_some(&reached as &dyn Fn(bool) -> u64),
        );
        if trimmed {
            self.log_overflow_once();
        }
        (deliveries, batch)
    }

    /// The batch number of a connect reply that carries nothing (a
    /// superseded connect's), with the ack extension; the outbox is left
    /// alone for whichever connect comes next.
    pub fn number_empty_reply(&self) -> Option<u64> {
        self.delivery
            .number_empty_reply(self.logged.then(|| self.position.last_sent()))
    }

    // The cluster's log (cluster nodes only).

    /// A live message at log `offset` is about to be queued: `false` when
    /// it must be skipped (a takeover replayed it already).
    #[inline]
    pub fn admit_logged(&self, offset: u64) -> bool {
        self.position.admit(offset)
    }

    /// The message at log `offset` was queued.
    #[inline]
    pub fn queued_logged(&self, offset: u64) {
        self.position.queued(offset);
    }

    /// The log offset up to which the client has everything: sent to it
    /// (without acks) or acknowledged by it (with acks).
    pub fn has_through(&self) -> u64 {
        self.position.last_sent()
    }

    /// Whether the periodic write of its cluster record is due: where its
    /// client stands moved since the last one, or `restate_ms` passed.
    pub fn record_due(&self, now_ms: u64, restate_ms: u64) -> bool {
        let (through, at) = *self.recorded.lock();
        through != self.has_through() || now_ms.saturating_sub(at) >= restate_ms
    }

    /// Its cluster record was written now, as it stands.
    pub fn recorded(&self, now_ms: u64) {
        *self.recorded.lock() = (self.has_through(), now_ms);
    }

    /// A taken-over session starts: its client has everything up to
    /// `offset`, and with acks acknowledged batch `batch` on its old node.
    pub fn begin_catch_up(&self, offset: u64, batch: Option<u64>) {
        if let Some(batch) = batch {
            self.delivery.continue_after(batch);
        }
        self.position.begin_catch_up(offset);
    }

    /// Ends a takeover's catch-up: `replay` gets the first live offset and
    /// returns the replayed deliveries, which go in front of the live ones
    /// in the same step. `false` if they did not fit under `disconnect`.
    pub fn end_catch_up(
        &self,
        read_to: u64,
        policy: OverflowPolicy,
        replay: impl FnOnce(Option<u64>) -> Vec<Bytes>,
    ) -> bool {
        let fitted = self.position.end_catch_up(read_to, |first_live| {
            let deliveries = replay(first_live);
            deliveries.is_empty() || self.delivery.requeue_front(deliveries, policy)
        });
        self.wake.notify_waiters();
        fitted
    }

    pub fn has_deliveries(&self) -> bool {
        !self.delivery.is_empty()
    }

    /// Whether queued deliveries must be written now (see
    /// [`super::outbox::Outbox::is_due`]) and the session's bandwidth lets
    /// them leave.
    #[inline]
    pub fn has_due_deliveries(&self, now_ms: u64, now: Instant) -> bool {
        self.delivery.is_due(now_ms, self.max_bandwidth(), now)
    }

    /// When queued lazy deliveries fall due, if only lazy ones wait.
    #[inline]
    pub fn lazy_deadline_ms(&self) -> Option<u64> {
        self.delivery.lazy_deadline_ms()
    }

    /// Deliveries dropped on overflow so far.
    pub fn dropped_deliveries(&self) -> u64 {
        self.delivery.dropped()
    }

    #[inline]
    pub fn wake(&self) -> &Notify {
        &self.wake
    }

    /// Whoever waits for deliveries calls this after enabling its
    /// `wake().notified()` and before looking at the outbox: the next
    /// delivery queued wakes it (see the module documentation).
    pub fn watching(&self) {
        self.woken.store(false, Ordering::SeqCst);
    }

    // Rates: QoS.

    /// Offers an update of a rate-limited channel (see
    /// [`super::throttle::Throttle::offer`]); held updates count against
    /// the outbox's limits.
    pub fn offer_throttled(
        &self,
        slot: &str,
        delivery: Bytes,
        limit: Limit,
        release: Release,
        now: Instant,
    ) -> Offered {
        if self.is_closed() {
            return Offered::Dropped;
        }
        let offered = self
            .rates
            .offer(slot, delivery, limit, release, self.delivery.limits(), now);
        if matches!(offered, Offered::Dropped | Offered::Overflow) {
            self.log_overflow_once();
        }
        offered
    }

    /// Takes the held updates whose turn has come, and when to look again
    /// (`None`: nothing is held; the throttle's timer is then marked stopped).
    pub fn release_throttled(&self, now: Instant) -> (Vec<(Bytes, Release)>, Option<Instant>) {
        self.rates.release(now)
    }

    /// Drops every held update (the session ended).
    pub fn clear_throttled(&self) {
        self.rates.clear();
    }

    /// Updates held by the throttle right now.
    pub fn throttled(&self) -> usize {
        self.rates.held()
    }

    /// Counts one publish against `per_second` (a bucket with a burst of one
    /// second's worth); `false` when over the limit. An impossible rate
    /// (not positive) limits nothing.
    pub fn try_publish(&self, per_second: f64, now: Instant) -> bool {
        self.rates.try_publish(per_second, now)
    }

    // Replay requests.

    /// Remembers the replay id a handshake asked for on `channel`.
    pub fn request_replay(&self, channel: &str, from: i64) {
        self.replay_requests.lock().insert(channel.into(), from);
    }

    /// The replay id asked for `channel` at handshake, if any.
    pub fn replay_request(&self, channel: &str) -> Option<i64> {
        self.replay_requests.lock().get(channel).copied()
    }

    // Connects: who serves the session.

    /// The WebSocket allowed to take this session's deliveries (0: none).
    #[inline]
    pub fn owner_socket(&self) -> u64 {
        self.connects.owner_socket()
    }

    /// Registers a new `/meta/connect` that came on `socket_id` (0 for
    /// HTTP), superseding any held one, and returns its generation number.
    /// With the ack extension, `acknowledged` is the last batch the client
    /// received: later batches were lost and go back to the front of the
    /// outbox, in the same locked step.
    pub fn begin_connect(
        &self,
        connection_type: ConnectionType,
        socket_id: u64,
        acknowledged: Option<u64>,
        policy: OverflowPolicy,
    ) -> u64 {
        let (generation, refused) = self.delivery.acknowledge(acknowledged, policy, || {
            self.connects.begin(connection_type, socket_id)
        });
        if self.logged {
            if let Some(batch) = acknowledged {
                self.position.sent(batch_offset(batch));
            }
        }
        if refused {
            // The re-sent batch does not fit and the policy is
            // `disconnect`: the caller ends the session.
            self.delivery.mark_overflowed();
        }
        self.wake.notify_waiters();
        generation
    }

    #[inline]
    pub fn is_current_connect(&self, generation: u64) -> bool {
        self.connects.is_current(generation)
    }

    pub fn connection_type(&self) -> ConnectionType {
        self.connects.connection_type()
    }

    /// Ends a held callback-polling connect, which must answer on any
    /// inbound message (a browser has few script slots per host).
    pub fn poke_callback_polling(&self) {
        if self.connects.is_holding()
            && self.connects.connection_type() == ConnectionType::CallbackPolling
        {
            self.connects.supersede();
            self.wake.notify_waiters();
        }
    }

    pub fn start_holding(&self) {
        self.connects.start_holding();
    }

    pub fn stop_holding(&self, now_ms: u64) {
        self.touch(now_ms);
        self.connects.stop_holding();
    }

    pub fn is_holding(&self) -> bool {
        self.connects.is_holding()
    }

    pub fn mark_connected(&self) -> bool {
        self.connects.mark_connected()
    }

    pub fn is_connected(&self) -> bool {
        self.connects.is_connected()
    }

    // Lifecycle.

    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    /// Closes the session and wakes a held connect so it can answer.
    /// Returns false if it was already closed.
    pub fn close(&self) -> bool {
        let first = !self.closed.swap(true, Ordering::AcqRel);
        self.clear_throttled();
        self.wake.notify_waiters();
        first
    }

    /// Marks the session as taken over by another node (before closing it).
    pub fn mark_moved(&self) {
        self.moved.store(true, Ordering::Release);
    }

    pub fn moved(&self) -> bool {
        self.moved.load(Ordering::Acquire)
    }

    /// A new session of a cluster node starts at the log's current `offset`:
    /// nothing before it is owed to its client.
    pub fn start_at(&self, offset: u64) {
        self.position.queued(offset);
        self.position.sent(offset);
    }

    #[inline]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    // Subscriptions.

    /// Records a subscription; false if it was already there.
    pub fn add_subscription(&self, pattern: &str) -> bool {
        self.subscriptions.lock().insert(pattern.into())
    }

    /// Forgets a subscription; false if there was none.
    pub fn remove_subscription(&self, pattern: &str) -> bool {
        self.subscriptions.lock().remove(pattern)
    }

    /// How many patterns this session is subscribed to.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.lock().len()
    }

    pub fn is_subscribed(&self, pattern: &str) -> bool {
        self.subscriptions.lock().contains(pattern)
    }

    /// The patterns it subscribed to (for its cluster record).
    pub fn subscription_patterns(&self) -> Vec<String> {
        self.subscriptions
            .lock()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    pub fn take_subscriptions(&self) -> Vec<Box<str>> {
        self.subscriptions.lock().drain().collect()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &self.client_id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
