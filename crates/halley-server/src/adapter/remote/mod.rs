//! Remote Data Adapters: feeds written in any language, in their own
//! process, linked to Halley by one TCP connection speaking line-delimited
//! JSON (configured as `[[remote-adapter]]` tables).
//!
//! - [`protocol`]: the lines of protocol version 1, their encoding and
//!   checks (no I/O);
//! - [`link`]: the connection: dialing (`connect`, retried with backoff
//!   forever) or accepting (`listen`, a new connection replaces the old),
//!   the hello, keep-alive, the bounded outgoing queue;
//! - this file: [`RemoteAdapter`], the in-process [`DataAdapter`] that
//!   stands for the remote one. The node's first/last subscriber calls
//!   become `subscribe`/`unsubscribe` lines; the adapter's `publish` and
//!   `snapshot` lines become publishes through the node.
//!
//! What Halley keeps: the set of listened channels (the node's, as last
//! told to this adapter) and, for each, the last `snapshot-length` messages
//! the adapter published (or its last `snapshot`), handed to every new
//! subscriber by [`DataAdapter::snapshot`] and forgotten when the channel
//! loses its last subscriber. Nothing is queued while the link is down:
//! when it comes back, `subscribe` is sent again for every listened channel,
//! which is all the adapter needs to resume.

pub mod link;
pub mod protocol;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{ChannelName, ChannelPattern};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};

use crate::adapter::DataAdapter;
use crate::config::RemoteAdapterConfig;
use crate::node::Node;

pub use link::Link;
use protocol::ToAdapter;

/// Lines waiting to be written to the adapter. Halley sends little (notices,
/// pongs, errors), so a link that lets this many pile up is stuck: it is
/// dropped, and the reconnection resynchronizes the adapter.
const OUTGOING_QUEUE: usize = 1024;

/// The in-process stand-in of one remote adapter, registered for each of
/// its patterns.
pub struct RemoteAdapter {
    shared: Arc<Shared>,
}

/// Registers the remote adapter `config` describes with `node` (it owns
/// its channels from now on) and prepares its link: for `listen`, the
/// socket is bound here, so a taken port fails at start-up. The link runs
/// when [`Link::run`] is awaited.
pub async fn bind(node: &Arc<Node>, config: &RemoteAdapterConfig) -> std::io::Result<Link> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let mut patterns = Vec::new();
    for pattern in &config.channels {
        patterns.push(
            ChannelPattern::parse(pattern)
                .map_err(|e| invalid(format!("remote-adapter {:?}: {e}", config.name)))?,
        );
    }
    let shared = Arc::new(Shared {
        name: config.name.clone(),
        channels: config.channels.clone(),
        patterns,
        snapshot_length: config.snapshot_length,
        ping_interval: config.ping_interval(),
        state: Mutex::default(),
    });
    let adapter = Arc::new(RemoteAdapter {
        shared: shared.clone(),
    });
    for pattern in &config.channels {
        node.data_adapters()
            .register(pattern, adapter.clone())
            .map_err(invalid)?;
    }
    Link::new(shared, config).await
}

impl DataAdapter for RemoteAdapter {
    fn first_subscriber(&self, channel: &ChannelName) {
        let mut state = self.shared.state.lock();
        state.listened.entry(channel.as_str().into()).or_default();
        state.send(ToAdapter::Subscribe {
            channel: channel.as_str(),
        });
    }

    fn last_unsubscribed(&self, channel: &ChannelName) {
        let mut state = self.shared.state.lock();
        state.listened.remove(channel.as_str());
        state.send(ToAdapter::Unsubscribe {
            channel: channel.as_str(),
        });
    }

    fn snapshot(&self, channel: &ChannelName) -> Vec<Box<RawValue>> {
        let state = self.shared.state.lock();
        state
            .listened
            .get(channel.as_str())
            .map(|kept| kept.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// What the adapter (node side) and its link (network side) share.
pub(crate) struct Shared {
    pub(crate) name: String,
    /// The configured patterns, as sent in the hello.
    pub(crate) channels: Vec<String>,
    patterns: Vec<ChannelPattern>,
    snapshot_length: usize,
    pub(crate) ping_interval: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The listened channels, each with the messages a new subscriber gets
    /// first (at most `snapshot_length`).
    listened: HashMap<Box<str>, VecDeque<Box<RawValue>>>,
    /// The link that is up, if any.
    link: Option<LinkHandle>,
    /// Numbers links, so a link going down cannot unregister its successor.
    generations: u64,
}

/// The network side's handle, held while its link is up. Dropping it (or
/// sending a reason) closes the link.
struct LinkHandle {
    generation: u64,
    outgoing: mpsc::Sender<String>,
    close: watch::Sender<Option<&'static str>>,
}

impl LinkHandle {
    fn close(self, reason: &'static str) {
        self.close.send_replace(Some(reason));
    }
}

impl State {
    /// Queues `line` on the link, if one is up. A full queue drops the link
    /// rather than the line: the reconnection resends the whole state,
    /// where a lost line would leave the adapter wrong until then.
    fn send(&mut self, line: ToAdapter<'_>) {
        let Some(link) = &self.link else {
            return;
        };
        if link.outgoing.try_send(line.encode()).is_err() {
            if let Some(link) = self.link.take() {
                link.close("outgoing queue full");
            }
        }
    }
}

/// A link that just said hello: what it writes, and how it learns to close.
pub(crate) struct Registration {
    pub(crate) generation: u64,
    pub(crate) outgoing: mpsc::Receiver<String>,
    /// A sender of lines too (pongs, errors), for the reading side.
    pub(crate) replies: mpsc::Sender<String>,
    pub(crate) close: watch::Receiver<Option<&'static str>>,
    /// The channels listened now: `subscribe` to send before anything queued.
    pub(crate) resync: Vec<String>,
}

impl Shared {
    /// Makes a link that completed its hello the adapter's link, closing
    /// the previous one (a reconnecting adapter replaces itself).
    pub(crate) fn link_up(&self) -> Registration {
        let (outgoing, receiver) = mpsc::channel(OUTGOING_QUEUE);
        let (close, close_receiver) = watch::channel(None);
        let mut state = self.state.lock();
        state.generations += 1;
        let generation = state.generations;
        if let Some(previous) = state.link.take() {
            previous.close("replaced by a new connection");
        }
        state.link = Some(LinkHandle {
            generation,
            outgoing: outgoing.clone(),
            close,
        });
        // Under the same lock as the notices, so each listened channel is
        // either in this list or notified on the new link, never neither.
        let resync = state.listened.keys().map(|c| c.to_string()).collect();
        Registration {
            generation,
            outgoing: receiver,
            replies: outgoing,
            close: close_receiver,
            resync,
        }
    }

    /// The link `generation` went down: notices stop until the next one.
    pub(crate) fn link_down(&self, generation: u64) {
        let mut state = self.state.lock();
        if state.link.as_ref().map(|l| l.generation) == Some(generation) {
            state.link = None;
        }
    }

    fn owns(&self, channel: &ChannelName) -> Result<(), String> {
        if self.patterns.iter().any(|p| p.matches(channel)) {
            Ok(())
        } else {
            Err(format!(
                "channel {channel} is not one of this adapter's channels {:?}",
                self.channels
            ))
        }
    }

    /// A `publish` line: kept for new subscribers if the channel is
    /// listened, and delivered. Both happen in the adapter's turn, so a
    /// subscriber arriving meanwhile gets it either in its snapshot or
    /// live, never twice or not at all.
    pub(crate) fn publish(
        &self,
        node: &Node,
        channel: &ChannelName,
        data: Box<RawValue>,
    ) -> Result<usize, String> {
        self.owns(channel)?;
        Ok(node.data_adapters().in_turn(channel, || {
            if self.snapshot_length > 0 {
                let mut state = self.state.lock();
                if let Some(kept) = state.listened.get_mut(channel.as_str()) {
                    if kept.len() == self.snapshot_length {
                        kept.pop_front();
                    }
                    kept.push_back(data.clone());
                }
            }
            node.publish(channel, &data, None, None).local()
        }))
    }

    /// A `snapshot` line: the channel's state, delivered now to its
    /// subscribers and kept (its last `snapshot_length` messages) for the
    /// next ones. Dropped when the channel is no longer listened: it
    /// answers a `subscribe` that is not current any more.
    pub(crate) fn snapshot(
        &self,
        node: &Node,
        channel: &ChannelName,
        data: Vec<Box<RawValue>>,
    ) -> Result<usize, String> {
        self.owns(channel)?;
        Ok(node.data_adapters().in_turn(channel, || {
            {
                let mut state = self.state.lock();
                let Some(kept) = state.listened.get_mut(channel.as_str()) else {
                    return 0;
                };
                let skip = data.len().saturating_sub(self.snapshot_length);
                *kept = data.iter().skip(skip).cloned().collect();
            }
            data.iter()
                .map(|d| node.publish(channel, d, None, None).local())
                .sum()
        }))
    }
}
