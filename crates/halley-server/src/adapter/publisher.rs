//! [`Publisher`]: how server-side code (a Data Adapter, a service, an
//! embedding application) publishes into a node.

use std::sync::{Arc, Weak};

use halley_protocol::ChannelName;
use serde_json::value::RawValue;

use crate::broker::Published;
use crate::metrics::{metrics, Origin};
use crate::node::Node;

/// A handle to publish into the node from server-side code. Holds the node
/// weakly: an adapter that keeps it does not keep a stopped server alive;
/// publishing then reaches nobody.
#[derive(Clone)]
pub struct Publisher {
    node: Weak<Node>,
}

impl Publisher {
    pub fn new(node: &Arc<Node>) -> Self {
        Publisher {
            node: Arc::downgrade(node),
        }
    }

    /// Publishes `data` on a broadcast `channel`; returns how many sessions
    /// of this node it was queued for (0 once the node is gone, or when a
    /// cluster broker refused it: see [`Publisher::try_publish`]).
    pub fn publish(&self, channel: &ChannelName, data: &RawValue) -> usize {
        self.try_publish(channel, data).local()
    }

    /// Like [`Publisher::publish`], telling what the broker did with it
    /// ([`Published::Unavailable`]: a cluster broker that lost its engine).
    pub fn try_publish(&self, channel: &ChannelName, data: &RawValue) -> Published {
        self.try_publish_as(channel, data, Origin::Adapter)
    }

    /// [`Publisher::try_publish`], counted in the metrics under `origin`.
    pub(crate) fn try_publish_as(
        &self,
        channel: &ChannelName,
        data: &RawValue,
        origin: Origin,
    ) -> Published {
        let Some(node) = self.node.upgrade() else {
            return Published::Delivered(0);
        };
        // In the owning adapter's turn: a new subscriber gets its snapshot
        // before any later message of that adapter.
        let published = node
            .data_adapters()
            .in_turn(channel, || node.publish(channel, data, None, None));
        if !published.is_unavailable() {
            metrics().publishes.get(origin).inc();
        }
        published
    }
}
