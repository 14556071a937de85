//! Remote Data Adapters: feeds written in any language, in their own
//! process, linked to Halley by one TCP connection speaking line-delimited
//! JSON (configured as `[[remote-adapter]]` tables).
//!
//! - [`protocol`]: the lines of protocol version 1, their encoding and
//!   checks (no I/O);
//! - [`link`]: the connection: dialing (`connect`, retried with backoff
//!   forever) or accepting (`listen`, a new connection replaces the old),
//!   the hello, keep-alive, the bounded outgoing queue;
//! - [`shared`]: what the adapter (node side) and its link (network side)
//!   share: the listened channels, their kept messages, the link's queue;
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
pub mod shared;

use std::sync::Arc;

use halley_protocol::{ChannelName, ChannelPattern};
use serde_json::value::RawValue;

use crate::config::RemoteAdapterConfig;
use crate::node::{DataAdapter, Node};

pub use link::Link;
use protocol::ToAdapter;
use shared::Shared;

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
    let shared = Arc::new(Shared::new(
        config,
        patterns,
        node.config().adapter_publish_rate(),
    ));
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
