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
//! A channel whose newest message is older than its `max-age-ms` is
//! forgotten whole, its retained messages and its sequencer
//! ([`forget_stale`], run by the sweeper): otherwise every channel ever
//! published on would hold memory forever. Its ids go on from where they
//! were (the store remembers the highest id it forgot), so a client's
//! last-seen id never looks newer than a later message.
//!
//! On a cluster, a message's replay id is its offset in the cluster's log
//! (`docs/cluster.md`): rising per channel but not consecutive, and the
//! same on every node, so a client whose session moves asks any node for
//! what follows its last-seen id. Each node retains what it received since
//! it started; one asked for more than that answers with the gap flag.
//!
//! Storage is behind [`HistoryStore`] so a cluster can keep it elsewhere
//! (Redis Streams); [`memory::MemoryHistory`] is the in-process default.

pub mod memory;

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use halley_protocol::ChannelName;
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

    /// The id of the newest message ever published on `channel` (0: none;
    /// for a forgotten channel, at least its last id before).
    fn last_id(&self, channel: &str) -> u64;

    /// Forgets `channel` whole if nothing it retains is younger than
    /// `max_age_ms`; returns whether it did.
    fn forget_if_stale(&self, channel: &str, max_age_ms: u64, now_ms: u64) -> bool;

    /// Says that messages with an id up to `id` may have been published
    /// without this store hearing of them (a cluster node that started
    /// after them): a replay from before it reports a gap.
    fn raise_floor(&self, id: u64);
}

/// The per-channel lock publishes and replaying subscribes take turns on,
/// holding the channel's last id.
#[derive(Default)]
pub struct Sequencers {
    by_channel: DashMap<Box<str>, Arc<Mutex<u64>>>,
}

impl Sequencers {
    /// Channels with a sequencer now.
    pub fn len(&self) -> usize {
        self.by_channel.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_channel.is_empty()
    }

    /// The sequencer of `channel`, created on first use from the store's last id.
    pub fn of(&self, channel: &str, store: &dyn HistoryStore) -> Arc<Mutex<u64>> {
        self.by_channel
            .entry(channel.into())
            .or_insert_with(|| Arc::new(Mutex::new(store.last_id(channel))))
            .clone()
    }
}

/// Forgets every channel with a `max-age-ms` whose newest message is older
/// than that (and the sequencers of channels that never had one); returns
/// how many. A channel whose sequencer is held (a publish or a replay under
/// way) is left for the next sweep.
pub fn forget_stale(
    store: &dyn HistoryStore,
    sequencers: &Sequencers,
    retention: impl Fn(&ChannelName) -> Option<Retention>,
    now_ms: u64,
) -> usize {
    let mut forgotten = 0;
    sequencers.by_channel.retain(|channel, sequencer| {
        let max_age = ChannelName::parse(channel)
            .ok()
            .and_then(|name| retention(&name))
            .and_then(|retention| retention.max_age_ms);
        let Some(max_age) = max_age else {
            return true;
        };
        let Some(_turn) = sequencer.try_lock() else {
            return true;
        };
        let stale = store.forget_if_stale(channel, max_age, now_ms);
        forgotten += usize::from(stale);
        !stale
    });
    shrink_if_sparse(&sequencers.by_channel);
    forgotten
}

/// Shrinks `map` once it holds less than a quarter of its capacity (a hash
/// map keeps its largest capacity otherwise, so the memory of many
/// forgotten channels would stay).
pub(crate) fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &DashMap<K, V>) {
    if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
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
