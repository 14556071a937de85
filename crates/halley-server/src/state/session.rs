//! One Bayeux session: what the server knows of a client between its
//! handshake and its disconnect or expiry.
//!
//! A session is shared (`Arc`) by the registry, by the subscriber sets of
//! the channels it listens to, and by any request in flight for it. Its
//! mutable parts are small and separately locked so that a publisher pushing
//! into the outbox never waits for anything but that outbox.
//!
//! Waking: whoever waits for deliveries (a held `/meta/connect`) creates a
//! `wake.notified()` future, checks the outbox, and only then sleeps; pushes
//! call `notify_waiters` after queuing, so no wake-up is lost.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::grant::{Grant, SessionLimits};
use super::outbox::{Outbox, OutboxLimits, OverflowPolicy, Pushed};
use super::throttle::{Limit, Offered, Release, Throttle};
use super::token_bucket::TokenBucket;
use super::unacked::UnackedBatches;

/// Server-internal, dense session number (cheaper to hash than the clientId).
pub type SessionKey = u64;

/// The transport a session's connects arrive on, as far as the engine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionType {
    LongPolling,
    CallbackPolling,
    WebSocket,
}

impl ConnectionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::LongPolling => halley_protocol::connection_type::LONG_POLLING,
            ConnectionType::CallbackPolling => halley_protocol::connection_type::CALLBACK_POLLING,
            ConnectionType::WebSocket => halley_protocol::connection_type::WEBSOCKET,
        }
    }
}

pub struct Session {
    key: SessionKey,
    client_id: Box<str>,
    /// The `BAYEUX_BROWSER` cookie the clientId was issued to.
    browser_id: Option<Box<str>>,
    /// Whether the handshake came with that cookie (see `Engine::resolve_session`).
    bound_strictly: bool,
    /// When the session was created (the registry's clock).
    created_ms: u64,
    /// The WebSocket of the latest connect (0: none, HTTP): only that socket
    /// takes deliveries, so a half-dead old socket cannot swallow them.
    owner_socket: AtomicU64,
    outbox: Mutex<Outbox>,
    /// The outbox's limits, readable without its lock (they bound held
    /// updates too).
    outbox_limits: OutboxLimits,
    /// Woken when a delivery is queued, a newer connect arrives, or the session closes.
    wake: Notify,
    /// Bumped by every `/meta/connect`; a held connect whose number is no
    /// longer current has been superseded and returns.
    connect_generation: AtomicU64,
    /// Milliseconds (on the registry's clock) of the last sign of life.
    last_seen_ms: AtomicU64,
    /// Connects being held right now; a session with one never expires.
    holding: AtomicUsize,
    /// Set by the first `/meta/connect`.
    connected: AtomicBool,
    /// Set on disconnect or expiry; a closed session is never used again.
    closed: AtomicBool,
    /// Set once the outbox has overflowed, so that is logged once, not per message.
    overflow_logged: AtomicBool,
    /// Set when an overflow under the `disconnect` policy ends the session.
    overflowed: AtomicBool,
    /// Patterns this session subscribed to, for cleanup and unsubscribe.
    subscriptions: Mutex<HashSet<Box<str>>>,
    /// The transport of the most recent connect (callback-polling answers a
    /// held connect on any inbound message).
    connection_type: Mutex<ConnectionType>,
    /// Set when the handshake negotiated the ack extension: deliveries then
    /// travel only in connect replies, numbered, and are kept until acknowledged.
    unacked: Mutex<Option<UnackedBatches>>,
    /// Replay ids asked for at handshake, per channel, used by later subscribes.
    replay_requests: Mutex<HashMap<Box<str>, i64>>,
    /// Who the session speaks for and its limits, set once at handshake;
    /// boxed, so the many anonymous sessions of a server without a Metadata
    /// Adapter pay one pointer, not the whole grant.
    grant: OnceLock<Box<Grant>>,
    /// Updates of rate-limited channels waiting for their turn (QoS); boxed
    /// and created on first use, so sessions without QoS pay one pointer.
    throttle: Mutex<Option<Box<Throttle>>>,
    /// `max-bandwidth` of the server, unless the grant sets one.
    default_max_bandwidth: Option<u64>,
    /// Bytes of deliveries that may leave the outbox (when a bandwidth applies).
    bandwidth: Mutex<Option<Box<TokenBucket>>>,
    /// Publishes this session may make (when a publish rate applies).
    publishes: Mutex<Option<Box<TokenBucket>>>,
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
            bound_strictly: false,
            created_ms: now_ms,
            owner_socket: AtomicU64::new(0),
            outbox: Mutex::new(Outbox::new(limits)),
            outbox_limits: limits,
            wake: Notify::new(),
            connect_generation: AtomicU64::new(0),
            last_seen_ms: AtomicU64::new(now_ms),
            holding: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            overflow_logged: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            subscriptions: Mutex::new(HashSet::new()),
            connection_type: Mutex::new(ConnectionType::LongPolling),
            unacked: Mutex::new(None),
            replay_requests: Mutex::new(HashMap::new()),
            grant: OnceLock::new(),
            throttle: Mutex::new(None),
            default_max_bandwidth: None,
            bandwidth: Mutex::new(None),
            publishes: Mutex::new(None),
        }
    }

    /// Sets the bandwidth that applies unless the grant sets one (at creation).
    pub fn set_default_max_bandwidth(&mut self, bytes_per_second: Option<u64>) {
        self.default_max_bandwidth = bytes_per_second;
    }

    /// The bytes per second of deliveries this session may receive, if limited.
    pub fn max_bandwidth(&self) -> Option<u64> {
        // The grant directly (not `limits()`): this is on every take.
        self.grant
            .get()
            .and_then(|grant| grant.limits.max_bandwidth)
            .or(self.default_max_bandwidth)
            .filter(|&b| b > 0)
    }

    /// Sets who the session speaks for and its limits (once, at handshake;
    /// a second call is ignored and returns `false`). Through
    /// [`super::sessions::Sessions::set_grant`], which counts the grants
    /// that limit frequency.
    pub(crate) fn set_grant(&self, grant: Grant) -> bool {
        self.grant.set(Box::new(grant)).is_ok()
    }

    /// Whether the session's grant limits its deliveries' frequency (QoS).
    pub fn limits_frequency(&self) -> bool {
        self.grant
            .get()
            .is_some_and(|grant| grant.limits.max_frequency.is_some())
    }

    /// The session's grant: anonymous with default limits until set.
    pub fn grant(&self) -> &Grant {
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

    pub fn key(&self) -> SessionKey {
        self.key
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn browser_id(&self) -> Option<&str> {
        self.browser_id.as_deref()
    }

    pub fn set_bound_strictly(&mut self, strict: bool) {
        self.bound_strictly = strict;
    }

    pub fn is_bound_strictly(&self) -> bool {
        self.bound_strictly
    }

    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// The WebSocket allowed to take this session's deliveries (0: none).
    pub fn owner_socket(&self) -> u64 {
        self.owner_socket.load(Ordering::Acquire)
    }

    /// Queues one encoded delivery and wakes whoever waits for this session.
    /// Returns `false` when the outbox overflowed under the `disconnect`
    /// policy: the caller ends the session (outside its own locks).
    pub fn enqueue(&self, delivery: Bytes, policy: OverflowPolicy) -> bool {
        self.enqueue_lazily(delivery, policy, None)
    }

    /// Like [`Session::enqueue`]; a delivery with a `lazy_deadline_ms` (on
    /// the sessions' clock) may wait until then for a flush that happens
    /// anyway, instead of waking a held connect at once.
    pub fn enqueue_lazily(
        &self,
        delivery: Bytes,
        policy: OverflowPolicy,
        lazy_deadline_ms: Option<u64>,
    ) -> bool {
        if self.is_closed() {
            return true;
        }
        let pushed = {
            let mut outbox = self.outbox.lock();
            let pushed = outbox.push(delivery, policy);
            match lazy_deadline_ms {
                Some(deadline) => outbox.mark_lazy(deadline),
                None => outbox.mark_eager(),
            }
            pushed
        };
        let keep = match pushed {
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
            self.wake.notify_waiters();
        } else {
            self.overflowed.store(true, Ordering::Release);
        }
        keep
    }

    /// Whether the session was ended because its outbox overflowed (its
    /// client is told to re-handshake rather than to stop).
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    fn log_overflow_once(&self) {
        if !self.overflow_logged.swap(true, Ordering::Relaxed) {
            let outbox = self.outbox.lock();
            tracing::warn!(
                client_id = %self.client_id,
                queued = outbox.len(),
                queued_bytes = outbox.bytes(),
                "session outbox full: deliveries dropped by the channel's overflow policy (logged once per session)"
            );
        }
    }

    /// Takes the queued deliveries, oldest first: all of them, or as many as
    /// the session's bandwidth allows now (the rest wait, see
    /// [`Session::bandwidth_ready_at`]).
    pub fn take_deliveries(&self, now: Instant) -> VecDeque<Bytes> {
        let mut outbox = self.outbox.lock();
        self.take_within_bandwidth(&mut outbox, now)
    }

    /// The bandwidth is applied where deliveries leave the outbox for the
    /// wire (a connect reply, a piggyback, a WebSocket frame): that is what
    /// a client receives per second, and what waits stays under the
    /// outbox's limits and overflow policy. The bucket may go into debt for
    /// a delivery larger than the budget, so no delivery is stuck forever.
    fn take_within_bandwidth(&self, outbox: &mut Outbox, now: Instant) -> VecDeque<Bytes> {
        let Some(rate) = self.max_bandwidth() else {
            return outbox.drain();
        };
        let mut bucket = self.bandwidth.lock();
        if bucket.is_none() {
            *bucket = TokenBucket::new(rate as f64, rate as f64, now).map(Box::new);
        }
        match bucket.as_mut() {
            Some(bucket) => outbox.drain_while(|d| bucket.spend_if_ready(d.len() as f64, now)),
            None => outbox.drain(),
        }
    }

    /// Whether the bandwidth lets a delivery leave now.
    fn bandwidth_ready(&self, now: Instant) -> bool {
        if self.max_bandwidth().is_none() {
            return true;
        }
        self.bandwidth
            .lock()
            .as_mut()
            .is_none_or(|bucket| bucket.is_ready(now))
    }

    /// When queued deliveries held back by the bandwidth may leave (`None`:
    /// nothing is held back by it). Whoever waits to write wakes then.
    pub fn bandwidth_ready_at(&self, now: Instant) -> Option<Instant> {
        self.max_bandwidth()?;
        let ready = self
            .bandwidth
            .lock()
            .as_mut()
            .and_then(|bucket| (!bucket.is_ready(now)).then(|| bucket.ready_at()))?;
        (!self.outbox.lock().is_empty()).then_some(ready)
    }

    /// Offers an update of a rate-limited channel (see [`Throttle::offer`]);
    /// held updates count against the outbox's limits.
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
        let limits = self.outbox_limits;
        let offered = self
            .throttle
            .lock()
            .get_or_insert_with(Box::default)
            .offer(slot, delivery, limit, release, limits, now);
        if matches!(offered, Offered::Dropped | Offered::Overflow) {
            self.log_overflow_once();
        }
        offered
    }

    /// Takes the held updates whose turn has come, and when to look again
    /// (`None`: nothing is held; the throttle's timer is then marked stopped).
    pub fn release_throttled(&self, now: Instant) -> (Vec<(Bytes, Release)>, Option<Instant>) {
        let mut throttle = self.throttle.lock();
        let Some(state) = throttle.as_mut() else {
            return (Vec::new(), None);
        };
        let due = state.due(now);
        if due.1.is_none() && state.is_empty() {
            *throttle = None;
        }
        due
    }

    /// Drops every held update (the session ended).
    pub fn clear_throttled(&self) {
        if let Some(state) = self.throttle.lock().as_mut() {
            state.clear();
        }
    }

    /// Updates held by the throttle right now.
    pub fn throttled(&self) -> usize {
        self.throttle.lock().as_ref().map_or(0, |t| t.held())
    }

    /// Counts one publish against `per_second` (a bucket with a burst of one
    /// second's worth); `false` when over the limit. An impossible rate
    /// (not positive) limits nothing.
    pub fn try_publish(&self, per_second: f64, now: Instant) -> bool {
        let mut bucket = self.publishes.lock();
        if bucket.is_none() {
            *bucket = TokenBucket::new(per_second, per_second, now).map(Box::new);
        }
        bucket
            .as_mut()
            .is_none_or(|bucket| bucket.try_take(1.0, now))
    }

    /// Remembers the replay id a handshake asked for on `channel`.
    pub fn request_replay(&self, channel: &str, from: i64) {
        self.replay_requests.lock().insert(channel.into(), from);
    }

    /// The replay id asked for `channel` at handshake, if any.
    pub fn replay_request(&self, channel: &str) -> Option<i64> {
        self.replay_requests.lock().get(channel).copied()
    }

    /// Turns on the ack extension for this session (at handshake).
    pub fn enable_ack(&self) {
        *self.unacked.lock() = Some(UnackedBatches::default());
    }

    pub fn ack_enabled(&self) -> bool {
        self.unacked.lock().is_some()
    }

    /// The deliveries a reply other than a connect reply may carry: all of
    /// them, or none with the ack extension (they wait for a connect reply).
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
    pub fn take_for_connect_reply(
        &self,
        generation: u64,
        now: Instant,
    ) -> (VecDeque<Bytes>, Option<u64>) {
        let mut unacked = self.unacked.lock();
        let deliveries = if self.is_current_connect(generation) {
            let mut outbox = self.outbox.lock();
            self.take_within_bandwidth(&mut outbox, now)
        } else {
            VecDeque::new()
        };
        let max_kept = self.outbox.lock().limits().max_messages;
        let batch = unacked.as_mut().map(|batches| {
            // Cloning a `Bytes` is a reference count, not a copy.
            let kept: Vec<Bytes> = deliveries.iter().cloned().collect();
            let batch = batches.record(&kept);
            // Sent but unacknowledged deliveries count against the same
            // limit as queued ones: a client that never acknowledges costs
            // bounded memory (it loses the oldest, as with drop-oldest).
            if batches.trim(max_kept) > 0 {
                self.log_overflow_once();
            }
            batch
        });
        (deliveries, batch)
    }

    /// The batch number of a connect reply that carries nothing (a
    /// superseded connect's), with the ack extension; the outbox is left
    /// alone for whichever connect comes next.
    pub fn number_empty_reply(&self) -> Option<u64> {
        self.unacked
            .lock()
            .as_mut()
            .map(|batches| batches.record(&[]))
    }

    pub fn has_deliveries(&self) -> bool {
        !self.outbox.lock().is_empty()
    }

    /// Whether queued deliveries must be written now (see [`Outbox::is_due`])
    /// and the session's bandwidth lets them leave.
    pub fn has_due_deliveries(&self, now_ms: u64, now: Instant) -> bool {
        self.outbox.lock().is_due(now_ms) && self.bandwidth_ready(now)
    }

    /// When queued lazy deliveries fall due, if only lazy ones wait.
    pub fn lazy_deadline_ms(&self) -> Option<u64> {
        self.outbox.lock().lazy_deadline_ms()
    }

    /// Deliveries dropped on overflow so far.
    pub fn dropped_deliveries(&self) -> u64 {
        self.outbox.lock().dropped()
    }

    pub fn wake(&self) -> &Notify {
        &self.wake
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
        let generation = {
            let mut unacked = self.unacked.lock();
            if let Some(batches) = unacked.as_mut() {
                // A connect without a batch number comes from a client that
                // does not keep count: what it was sent counts as received.
                let batch = acknowledged.unwrap_or(batches.last_batch());
                let lost = batches.acknowledge(batch);
                if !lost.is_empty() && !self.outbox.lock().requeue_front(lost, policy) {
                    // The re-sent batch does not fit and the policy is
                    // `disconnect`: the caller ends the session.
                    self.overflowed.store(true, Ordering::Release);
                }
            }
            *self.connection_type.lock() = connection_type;
            self.owner_socket.store(socket_id, Ordering::Release);
            self.connect_generation.fetch_add(1, Ordering::AcqRel) + 1
        };
        self.wake.notify_waiters();
        generation
    }

    pub fn is_current_connect(&self, generation: u64) -> bool {
        self.connect_generation.load(Ordering::Acquire) == generation
    }

    pub fn connection_type(&self) -> ConnectionType {
        *self.connection_type.lock()
    }

    /// Ends a held callback-polling connect, which must answer on any
    /// inbound message (a browser has few script slots per host).
    pub fn poke_callback_polling(&self) {
        if self.holding.load(Ordering::Acquire) > 0
            && self.connection_type() == ConnectionType::CallbackPolling
        {
            self.connect_generation.fetch_add(1, Ordering::AcqRel);
            self.wake.notify_waiters();
        }
    }

    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    pub fn start_holding(&self) {
        self.holding.fetch_add(1, Ordering::AcqRel);
    }

    pub fn stop_holding(&self, now_ms: u64) {
        self.touch(now_ms);
        self.holding.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn is_holding(&self) -> bool {
        self.holding.load(Ordering::Acquire) > 0
    }

    pub fn mark_connected(&self) -> bool {
        !self.connected.swap(true, Ordering::AcqRel)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Closes the session and wakes a held connect so it can answer.
    /// Returns false if it was already closed.
    pub fn close(&self) -> bool {
        let first = !self.closed.swap(true, Ordering::AcqRel);
        self.clear_throttled();
        self.wake.notify_waiters();
        first
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records a subscription; false if it was already there.
    pub fn add_subscription(&self, pattern: &str) -> bool {
        self.subscriptions.lock().insert(pattern.into())
    }

    /// Forgets a subscription; false if there was none.
    pub fn remove_subscription(&self, pattern: &str) -> bool {
        self.subscriptions.lock().remove(pattern)
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
