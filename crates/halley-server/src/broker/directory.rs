//! The cluster's memory of sessions and messages: what a node needs to
//! take over a session another node created (see `docs/cluster.md`).
//!
//! A cluster engine that implements [`Directory`] (the Redis broker does)
//! keeps, for every live session, a [`SessionRecord`] naming the node that
//! serves it, and a bounded log of recent publications, each with its
//! offset. When a message for an unknown clientId reaches a node, the node
//! claims the record ([`Directory::claim`]; a live owner is asked to let go
//! first), rebuilds the session, and replays from the log what its client
//! does not have yet ([`Directory::read_log`]). The node side of this is
//! [`crate::node`]'s `takeover.rs`.

use std::future::Future;
use std::pin::Pin;

use halley_protocol::ChannelName;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Publication;
use crate::state::grant::SessionLimits;

/// A boxed future borrowing the directory.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What another node needs to serve a session on: everything but the
/// deliveries themselves, which the log has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    #[serde(rename = "id")]
    pub client_id: String,
    /// The `BAYEUX_BROWSER` cookie the session is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    /// Whether the handshake came with that cookie.
    #[serde(default)]
    pub strict: bool,
    /// The authenticated user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub limits: SessionLimits,
    /// The ack extension is on.
    #[serde(default)]
    pub ack: bool,
    /// Whether another node may take it over: not when a cookie-less
    /// client uses it over one WebSocket it is bound to (unless
    /// `trust-client-session`: nothing but its clientId would vouch for the
    /// new connection), nor when its grant has an attachment. Checked by
    /// the claim itself, so asking cannot disturb the session's owner.
    #[serde(default = "movable")]
    pub movable: bool,
    /// The patterns it subscribed to.
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// The log offset up to which its client has everything (sent, or
    /// acknowledged with acks).
    #[serde(default)]
    pub has_through: u64,
}

fn movable() -> bool {
    true
}

/// A publication read back from the log.
pub struct LoggedPublication {
    pub offset: u64,
    pub channel: ChannelName,
    pub data: Box<RawValue>,
    pub id: Option<Box<RawValue>>,
    pub ext: Option<Box<RawValue>>,
}

impl LoggedPublication {
    pub fn publication(&self) -> Publication<'_> {
        Publication {
            channel: &self.channel,
            data: &self.data,
            id: self.id.as_deref(),
            ext: self.ext.as_deref(),
        }
    }
}

/// What [`Directory::read_log`] found after an offset.
pub struct LogRead {
    /// Oldest first.
    pub entries: Vec<LoggedPublication>,
    /// The newest offset in the log when it was read (at least the last
    /// entry's).
    pub read_to: u64,
    /// Messages after the asked offset were already trimmed from the log:
    /// the replay is incomplete.
    pub gap: bool,
}

/// A claimed session: its record, and whether its old owner let go of it
/// (a live node that answered) or was presumed dead.
pub struct Claimed {
    pub record: SessionRecord,
    pub released: bool,
}

/// The cluster's sessions and log. See the module documentation.
pub trait Directory: Send + Sync {
    /// Writes `record`, owned by this node; done when the engine has it, so
    /// a client learns of its session (or subscription) only once another
    /// node could serve it.
    fn store(&self, record: SessionRecord) -> Pending<'_, Result<(), String>>;

    /// Writes many records, not waited for (refreshing their expiry and
    /// where their clients stand).
    fn store_later(&self, records: Vec<SessionRecord>);

    /// Writes many records and waits (a node stopping: where each of its
    /// clients stands, for the nodes they move to).
    fn store_many(&self, records: Vec<SessionRecord>) -> Pending<'_, Result<(), String>>;

    /// Forgets a session this node owns (disconnected, expired).
    fn forget(&self, client_id: &str);

    /// Counts the new session `client_id` among `user`'s sessions in the
    /// whole cluster unless the user holds `max` already (`Ok(false)`), for
    /// `max-sessions-per-user`.
    fn open_user_session<'a>(
        &'a self,
        user: &'a str,
        client_id: &'a str,
        max: usize,
    ) -> Pending<'a, Result<bool, String>>;

    /// Frees the place of `user`'s session `client_id` (it ended).
    fn close_user_session(&self, user: &str, client_id: &str);

    /// Lets `client_id` hold a long poll for `browser` unless `max` other
    /// sessions of that browser hold one on any node (`Ok(false)`), for
    /// `max-sessions-per-browser`; the hold counts for `life_ms` at most.
    fn hold_browser_poll<'a>(
        &'a self,
        browser: &'a str,
        client_id: &'a str,
        max: usize,
        life_ms: u64,
    ) -> Pending<'a, Result<bool, String>>;

    /// The poll [`Directory::hold_browser_poll`] let hold has ended.
    fn release_browser_poll(&self, browser: &str, client_id: &str);

    /// Takes a session over: makes this node its owner, asks a live old
    /// owner to let go (and waits a moment for it), and returns the record.
    /// `None`: no such session in the cluster.
    fn claim<'a>(&'a self, client_id: &'a str) -> Pending<'a, Result<Option<Claimed>, String>>;

    /// Counts the engine connections made so far: when it changes (Redis
    /// came back), the node writes its records again at once.
    fn generation(&self) -> u64 {
        0
    }

    /// The log's newest offset when this node joined: it heard of nothing
    /// up to there (a replay from before it cannot be vouched for here).
    fn joined(&self) -> u64 {
        0
    }

    /// The log's publications after `offset`, oldest first.
    fn read_log(&self, after: u64) -> Pending<'_, Result<LogRead, String>>;
}
