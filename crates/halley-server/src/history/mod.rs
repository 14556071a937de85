//! Replay: per-channel message history, the convention Salesforce's CometD
//! users know.
//!
//! Channels matching a `[[history]]` rule keep their last `max-messages`
//! messages and/or those of the last `max-age-ms`. Every delivery on such a
//! channel carries `ext.replay = {"id": N}`, N strictly increasing per
//! channel. A client that subscribes (or handshakes) with
//! `ext.replay = {"/channel": last_seen}` first receives the retained
//! messages after `last_seen`, in order, then the live ones; `-1` means
//! only new messages (the default), `-2` every retained one. When
//! `last_seen` is older than what is retained, the subscribe reply says
//! `ext.replay.gap: true` and delivery starts at the oldest retained message.
//!
//! No gap and no duplicate at the seam: a channel's publishes and its
//! replaying subscribes take turns on one lock per channel (its
//! [`Sequencers`]), so each message is either replayed or delivered live.
//!
//! Storage is behind [`HistoryStore`] so a cluster can keep it elsewhere
//! (Redis Streams); [`memory::MemoryHistory`] is the in-process default.

pub mod memory;

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::Deserialize;

/// How much of a channel's history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Retention {
    pub max_messages: Option<usize>,
    pub max_age_ms: Option<u64>,
}

/// One retained message: its replay id, when it was published, and the
/// delivery exactly as subscribers received it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    pub at_ms: u64,
    pub delivery: Bytes,
}

/// What a replay returns.
#[derive(Debug, Default)]
pub struct Replay {
    /// Retained deliveries after the requested id, oldest first.
    pub deliveries: Vec<Bytes>,
    /// The requested id was older than anything retained: messages in
    /// between are gone.
    pub gap: bool,
}

/// Where retained messages live.
pub trait HistoryStore: Send + Sync + 'static {
    /// Keeps `entry` as the newest of `channel`, then trims to `retention`.
    fn append(&self, channel: &str, entry: Entry, retention: Retention);

    /// The retained entries of `channel` with an id above `after` (all when
    /// `None`), oldest first, ignoring those older than `retention` allows.
    fn after(&self, channel: &str, after: Option<u64>, retention: Retention, now_ms: u64)
        -> Replay;

    /// The id of the newest message ever published on `channel` (0: none).
    fn last_id(&self, channel: &str) -> u64;
}

/// The per-channel lock publishes and replaying subscribes take turns on,
/// holding the channel's last id.
#[derive(Default)]
pub struct Sequencers {
    by_channel: DashMap<Box<str>, Arc<Mutex<u64>>>,
}

impl Sequencers {
    /// The sequencer of `channel`, created on first use from the store's last id.
    pub fn of(&self, channel: &str, store: &dyn HistoryStore) -> Arc<Mutex<u64>> {
        self.by_channel
            .entry(channel.into())
            .or_insert_with(|| Arc::new(Mutex::new(store.last_id(channel))))
            .clone()
    }
}

/// The value a client asked to replay from: `-1` new only, `-2` everything
/// retained, `n >= 0` everything after `n`.
pub fn replay_from(requested: i64) -> Option<Option<u64>> {
    match requested {
        -1 => None,
        -2 => Some(None),
        n if n >= 0 => Some(Some(n as u64)),
        _ => None,
    }
}
