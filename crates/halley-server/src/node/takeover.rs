//! Sessions that survive their node (cluster nodes only): the node side of
//! [`crate::broker::directory`].
//!
//! - A new session, and every change of its subscriptions, is written to
//!   the cluster ([`Node::store_session`]) before its client hears of it,
//!   so the client's next request may land on any node.
//! - Every [`RECORD_REFRESH`] the node writes where each of its clients
//!   stands in the log ([`Node::run_record_refresh`]), which also keeps
//!   the records from expiring.
//! - A request for a clientId this node does not hold makes it take the
//!   session over ([`Node::adopt`]): claim it (a live owner lets go, see
//!   [`LocalFanout::release_session`]), rebuild it with its browser
//!   binding, grant, ack state and subscriptions, then replay from the log
//!   what its client does not have, in front of what arrives live
//!   meanwhile. With the ack extension, what the client has is exactly the
//!   batch number its connect carries (see `state/session/position.rs`);
//!   without it, what its old node last wrote.

use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{BayeuxError, ChannelPattern};

use super::Node;
use crate::broker::directory::{Directory, SessionRecord};
use crate::metrics::Takeover;
use crate::state::grant::Grant;
use crate::state::listeners::SessionEnd;
use crate::state::session::{batch_offset, Session};

/// A clientId's turn on this node (see [`Node::hold`]): released on drop.
pub struct Turn<'a> {
    node: &'a Node,
    client_id: Box<str>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // The map's and nobody else's: forget the entry.
        self.node
            .adopting
            .remove_if(&self.client_id, |_, t| Arc::strong_count(t) <= 1);
    }
}

/// Why a session cannot be taken over now (see [`Node::adopt`]): it may
/// well exist on another node, so its client is told to retry (keeping its
/// clientId), not to handshake again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotNow {
    /// The cluster's engine cannot be asked (Redis lost).
    Unreachable,
    /// This node is draining or stopping: it would hold the session only
    /// to let it go again, and once stopped it cannot ask Redis at all.
    /// The client's retry reaches a live node (the balancer no longer
    /// sends it here).
    Stopping,
}

/// The failed reply to a request for a session a stopping node does not
/// hold ([`NotNow::Stopping`]).
pub const STOPPING: BayeuxError = BayeuxError {
    code: 503,
    reason: "node_stopping",
};

impl NotNow {
    /// The error of the failed reply (with `reconnect: retry` advice).
    pub fn error(self) -> BayeuxError {
        match self {
            NotNow::Unreachable => crate::broker::UNAVAILABLE,
            NotNow::Stopping => STOPPING,
        }
    }
}

/// The longest a session's record goes unwritten (its TTL is 60 s).
pub const RECORD_RESTATE: Duration = Duration::from_secs(30);

/// How often a node writes its sessions' records (those that changed).
pub const RECORD_REFRESH: Duration = Duration::from_secs(5);

impl Node {
    /// The cluster's sessions and log (none on a single node).
    pub fn directory(&self) -> Option<&dyn Directory> {
        self.broker.directory()
    }

    /// The record another node would need to serve `session`.
    pub fn record_of(&self, session: &Session) -> SessionRecord {
        let grant = session.grant();
        // What the Metadata Adapter attached (a token's channels) travels
        // as the adapter saves it; one it cannot save keeps the session
        // here (its client handshakes again elsewhere).
        let attachment = grant
            .attachment
            .as_ref()
            .and_then(|_| self.metadata_adapter()?.save(grant));
        SessionRecord {
            client_id: session.client_id().to_owned(),
            browser: session.browser_id().map(str::to_owned),
            strict: session.is_bound_strictly(),
            user: grant.user().map(str::to_owned),
            limits: grant.limits.clone(),
            ack: session.ack_enabled(),
            movable: (grant.attachment.is_none() || attachment.is_some())
                && (session.bound_socket() == 0 || self.config.trust_client_session),
            attachment,
            expires_ms: session.credentials_expire_ms(),
            subscriptions: session.subscription_patterns(),
            has_through: session.has_through(),
        }
    }

    /// Writes `session`'s record to the cluster and waits for it (nothing
    /// on a single node). A failure is logged and returned (`false`): the
    /// session goes on here, it just cannot move.
    pub async fn store_session(&self, session: &Session) -> bool {
        let Some(directory) = self.directory() else {
            return true;
        };
        if session.has_through() == 0 {
            session.start_at(self.last_offset());
        }
        if let Err(error) = directory.store(self.record_of(session)).await {
            tracing::warn!(client_id = session.client_id(), %error, "session not written to the cluster: it cannot move to another node");
            return false;
        }
        true
    }

    /// Takes over `client_id` from the node that holds it (see the module
    /// documentation); `acknowledged`: the batch number of the ack
    /// extension on the request's connect. `Ok(None)`: no such session in
    /// the cluster (or a single node); `Err`: not now (Redis lost, this
    /// node stopping), the client should retry rather than handshake.
    pub async fn adopt(
        &self,
        client_id: &str,
        acknowledged: Option<u64>,
    ) -> Result<Option<Arc<Session>>, NotNow> {
        let Some(directory) = self.directory() else {
            return Ok(None);
        };
        if self.shutdown.is_draining() {
            return Err(NotNow::Stopping);
        }
        // One takeover per clientId at a time on this node: a publish and
        // a connect of the same client may arrive together.
        let turn = self.adopting.entry(client_id.into()).or_default().clone();
        let adopted = {
            let _turn = turn.lock().await;
            match self.sessions.get(client_id) {
                Some(session) => Ok(Some(session)),
                None => {
                    let started = std::time::Instant::now();
                    let (session, outcome) =
                        self.take_over(directory, client_id, acknowledged).await;
                    let metrics = crate::metrics::metrics();
                    metrics.takeovers.get(outcome).inc();
                    if session.is_some() {
                        metrics
                            .takeover_latency
                            .observe(started.elapsed().as_secs_f64());
                    }
                    if outcome == Takeover::Failed {
                        Err(NotNow::Unreachable)
                    } else {
                        Ok(session)
                    }
                }
            }
        };
        self.adopting
            .remove_if(client_id, |_, t| Arc::strong_count(t) <= 2);
        adopted
    }

    /// Holds `session`'s turn on this node while a change that must reach
    /// its record (a subscribe, an unsubscribe) is made and written: a
    /// release waits for it, so the record it hands over has the change. A
    /// session let go meanwhile is taken back first. Nothing to hold on a
    /// single node.
    pub async fn hold(&self, mut session: Arc<Session>) -> (Arc<Session>, Option<Turn<'_>>) {
        if self.directory().is_none() {
            return (session, None);
        }
        for _ in 0..3 {
            let turn = self.turn(session.client_id()).await;
            if !(session.is_closed() && session.moved()) {
                return (session, Some(turn));
            }
            drop(turn);
            match self.adopt(session.client_id(), None).await {
                Ok(Some(adopted)) => session = adopted,
                _ => break,
            }
        }
        (session, None)
    }

    async fn turn(&self, client_id: &str) -> Turn<'_> {
        let lock = self.adopting.entry(client_id.into()).or_default().clone();
        let guard = lock.lock_owned().await;
        Turn {
            node: self,
            client_id: client_id.into(),
            guard: Some(guard),
        }
    }

    async fn take_over(
        &self,
        directory: &dyn Directory,
        client_id: &str,
        acknowledged: Option<u64>,
    ) -> (Option<Arc<Session>>, Takeover) {
        let claimed = match directory.claim(client_id).await {
            Ok(Some(claimed)) => claimed,
            Ok(None) => return (None, Takeover::Unknown),
            Err(error) => {
                tracing::warn!(client_id, %error, "cannot take a session over");
                return (None, Takeover::Failed);
            }
        };
        let record = claimed.record;
        let Some(session) =
            self.sessions
                .adopt(client_id, record.browser.as_deref(), record.strict, |_| {})
        else {
            // Registered meanwhile by someone else on this node.
            return (self.sessions.get(client_id), Takeover::Released);
        };
        self.sessions.set_grant(
            &session,
            Grant {
                user: record.user.as_deref().map(Into::into),
                limits: record.limits.clone(),
                attachment: record
                    .attachment
                    .as_ref()
                    .and_then(|saved| self.metadata_adapter()?.restore(saved)),
                expires_ms: record.expires_ms,
            },
        );
        if let Some(user) = session.user() {
            // Counted here now; its old node counted it down.
            let _ = self.user_sessions.try_open(user);
        }
        if record.ack {
            session.enable_ack();
        }
        // A connect here is held like any other, not answered at once as a
        // session's first: answered at once, a client behind a round-robin
        // balancer would poll without pause, each connect a takeover on the
        // next node. (The record does not say whether its client ever
        // connected; one that wants an answer at once, after handshaking or
        // losing its connection, says so: `advice: {timeout: 0}`.)
        session.mark_connected();
        // With acks the connect says exactly what the client has.
        let acknowledged = acknowledged.filter(|_| record.ack);
        let has_through = acknowledged.map_or(record.has_through, batch_offset);
        session.begin_catch_up(has_through, acknowledged);
        let patterns: Vec<ChannelPattern> = record
            .subscriptions
            .iter()
            .filter_map(|p| ChannelPattern::parse(p).ok())
            .collect();
        for pattern in &patterns {
            self.subscriptions.subscribe(pattern.as_str(), &session);
        }
        let read = directory.read_log(has_through).await;
        let (entries, read_to) = match read {
            Ok(read) => {
                if read.gap {
                    tracing::warn!(client_id, has_through, "the log no longer reaches back to where this client stood: messages in between are lost to it");
                }
                (read.entries, read.read_to)
            }
            Err(error) => {
                tracing::warn!(client_id, %error, "cannot read the log: this client misses what its old node had not sent");
                (Vec::new(), has_through)
            }
        };
        let policy = entries
            .first()
            .map_or_else(Default::default, |e| self.rules.overflow_policy(&e.channel));
        let fitted = session.end_catch_up(read_to, policy, |first_live| {
            entries
                .iter()
                .filter(|e| first_live.is_none_or(|live| e.offset < live))
                .filter(|e| patterns.iter().any(|p| p.matches(&e.channel)))
                .map(|e| {
                    let p = e.publication();
                    halley_protocol::encode_delivery(p.channel.as_str(), p.data, p.id, p.ext)
                })
                .collect()
        });
        if !fitted {
            self.remove_session(&session, SessionEnd::Overflowed);
            return (None, Takeover::Unknown);
        }
        tracing::debug!(
            client_id,
            released = claimed.released,
            has_through,
            read_to,
            "session taken over"
        );
        self.store_session(&session).await;
        let outcome = if claimed.released {
            Takeover::Released
        } else {
            Takeover::Presumed
        };
        (Some(session), outcome)
    }

    /// Lets go of `client_id` for the node that took it over: its record
    /// as it stands, then the session ends here without its client being
    /// told to stop (a held connect answers `retry`).
    ///
    /// Takes the clientId's turn first: a session this node is taking over
    /// itself right now (two requests of one client on two nodes) is let go
    /// only once this node has it, with where its client stands.
    pub(super) async fn release(&self, client_id: &str) -> Option<SessionRecord> {
        let turn = self.adopting.entry(client_id.into()).or_default().clone();
        let released = {
            let _turn = turn.lock().await;
            self.sessions.get(client_id).map(|session| {
                let record = self.record_of(&session);
                session.mark_moved();
                self.remove_session(&session, SessionEnd::Moved);
                record
            })
        };
        self.adopting
            .remove_if(client_id, |_, t| Arc::strong_count(t) <= 2);
        released
    }

    /// Writes where each client of this node stands, and waits: a node
    /// stopping leaves the nodes its clients move to an exact account.
    pub async fn store_all_sessions(&self) {
        let Some(directory) = self.directory() else {
            return;
        };
        let records = self.live_records();
        let count = records.len();
        if let Err(error) = directory.store_many(records).await {
            tracing::warn!(%error, count, "sessions not written before stopping: their clients may get messages twice on another node");
        }
    }

    fn live_records(&self) -> Vec<SessionRecord> {
        self.sessions
            .all()
            .iter()
            .filter(|s| !s.is_closed())
            .map(|s| self.record_of(s))
            .collect()
    }

    /// Writes where each client of this node stands, every
    /// [`RECORD_REFRESH`], until shutdown (spawned by the server on a
    /// cluster node).
    pub async fn run_record_refresh(&self) {
        let Some(directory) = self.directory() else {
            return;
        };
        // Every RECORD_REFRESH, and at once after a reconnection (Redis may
        // have come back empty): a look every quarter second is cheap.
        let mut look = tokio::time::interval(Duration::from_millis(250));
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut generation = directory.generation();
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = look.tick() => {}
                _ = self.shutdown.wait() => return,
            }
            let now = tokio::time::Instant::now();
            let reconnected = directory.generation() != generation;
            if !reconnected && now.duration_since(last) < RECORD_REFRESH {
                continue;
            }
            generation = directory.generation();
            last = now;
            // Only what changed (where its client stands), and each record
            // at least every RECORD_RESTATE so it does not expire: an idle
            // session costs Redis one write per RECORD_RESTATE, not per
            // RECORD_REFRESH. After a reconnection, all (Redis may be empty).
            let now_ms = self.sessions.now_ms();
            let restate_ms = RECORD_RESTATE.as_millis() as u64;
            let records = self
                .sessions
                .all()
                .iter()
                .filter(|s| !s.is_closed())
                .filter(|s| reconnected || s.record_due(now_ms, restate_ms))
                .map(|s| {
                    s.recorded(now_ms);
                    self.record_of(s)
                })
                .collect();
            directory.store_later(records);
        }
    }
}
