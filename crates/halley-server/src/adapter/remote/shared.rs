//! What a remote adapter's two sides share: the in-process
//! [`super::RemoteAdapter`] (told of first and last subscribers) and its
//! [`super::link`] (the TCP connection): the listened channels with their
//! kept messages, the current link's outgoing queue, and the adapter's
//! publish rate (`adapter-publish-rate`: a runaway feed is bounded too).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use halley_protocol::{ChannelName, ChannelPattern};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};

use super::protocol::ToAdapter;
use crate::config::RemoteAdapterConfig;
use crate::node::Node;
use crate::state::limits::Limit;
use crate::state::publisher_rate::PublisherRate;

/// Lines waiting to be written to the adapter. Halley sends little (notices,
/// pongs, errors), so a link that lets this many pile up is stuck: it is
/// dropped, and the reconnection resynchronizes the adapter.
const OUTGOING_QUEUE: usize = 1024;

/// What the adapter (node side) and its link (network side) share.
pub(crate) struct Shared {
    pub(crate) name: String,
    /// The configured patterns, as sent in the hello.
    pub(crate) channels: Vec<String>,
    patterns: Vec<ChannelPattern>,
    snapshot_length: usize,
    pub(crate) ping_interval: Duration,
    /// What the adapter's hello must carry, if set.
    pub(crate) secret: Option<String>,
    pub(crate) state: Mutex<State>,
    /// Messages a second it may publish, whatever its link.
    rate: PublisherRate,
}

#[derive(Default)]
pub(crate) struct State {
    /// The listened channels, each with the messages a new subscriber gets
    /// first (at most `snapshot_length`).
    pub(crate) listened: HashMap<Box<str>, VecDeque<Box<RawValue>>>,
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
    pub(crate) fn send(&mut self, line: ToAdapter<'_>) {
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
    pub(crate) fn new(
        config: &RemoteAdapterConfig,
        patterns: Vec<ChannelPattern>,
        rate: PublisherRate,
    ) -> Self {
        Shared {
            name: config.name.clone(),
            channels: config.channels.clone(),
            patterns,
            snapshot_length: config.snapshot_length,
            ping_interval: config.ping_interval(),
            secret: config.secret.clone(),
            state: Mutex::default(),
            rate,
        }
    }

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

    /// Takes `messages` from the adapter's rate, or says why not (the
    /// line is refused whole, nothing of it published).
    fn within_rate(&self, node: &Node, messages: usize) -> Result<(), String> {
        let rate = node.config().adapter_publish_rate;
        self.rate
            .try_take(messages, tokio::time::Instant::now())
            .map_err(|wait| {
                node.limits().hit(Limit::AdapterPublishRate, || {
                    format!(
                        "remote adapter {:?} over adapter-publish-rate ({rate}/s); line refused",
                        self.name
                    )
                });
                format!(
                    "over adapter-publish-rate ({rate} messages a second): not published; \
                     slow down (room again in {} ms)",
                    wait.as_millis().max(1)
                )
            })
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
        self.within_rate(node, 1)?;
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
            crate::metrics::metrics()
                .publishes
                .get(crate::metrics::Origin::Adapter)
                .inc();
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
        self.within_rate(node, data.len())?;
        Ok(node.data_adapters().in_turn(channel, || {
            {
                let mut state = self.state.lock();
                let Some(kept) = state.listened.get_mut(channel.as_str()) else {
                    return 0;
                };
                let skip = data.len().saturating_sub(self.snapshot_length);
                *kept = data.iter().skip(skip).cloned().collect();
            }
            crate::metrics::metrics()
                .publishes
                .get(crate::metrics::Origin::Adapter)
                .inc_by(data.len() as u64);
            data.iter()
                .map(|d| node.publish(channel, d, None, None).local())
                .sum()
        }))
    }
}
