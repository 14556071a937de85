//! The broker seam: the only way a publish leaves this node, and the only
//! way a message published elsewhere enters this node's fan-out.
//!
//! Every publish (a client's, the HTTP publish API's, a Data Adapter's, a
//! service's) ends in [`crate::node::Node::publish`], which hands a
//! [`Publication`] to the node's [`Broker`]. The broker decides who else
//! must hear of it and gives it to the [`LocalFanout`] of every node that
//! has subscribers, this one included:
//!
//! ```text
//!   Node::publish ──► Broker::publish ──► (other nodes, via Redis/NATS...)
//!                          │                         │
//!                          ▼                         ▼
//!                 LocalFanout::fan_out      their LocalFanout::fan_out
//!                 (this node's sessions)    (their sessions)
//! ```
//!
//! [`local::LocalBroker`], the embedded default, has no one else to tell:
//! it calls this node's fan-out at once, on the publisher's task, which is
//! exactly the single-process behaviour. A cluster engine implements the
//! same trait: it ships the publication to its engine and, from its own
//! task, calls [`LocalFanout::fan_out`] for what arrives from the others.

pub mod local;

use halley_protocol::ChannelName;
use serde_json::value::RawValue;

/// One message on a broadcast channel, as it leaves a publisher. Borrowed:
/// the local path encodes it once, straight from the publisher's buffers.
#[derive(Debug, Clone, Copy)]
pub struct Publication<'a> {
    pub channel: &'a ChannelName,
    pub data: &'a RawValue,
    /// The publisher's message `id`, echoed in the deliveries (as CometD does).
    pub id: Option<&'a RawValue>,
    /// The publisher's `ext`, carried to subscribers unchanged.
    pub ext: Option<&'a RawValue>,
}

/// How far a publication got, as the broker can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Queued for this many sessions (all of them: the broker knows every
    /// subscriber, as the local broker does).
    Delivered(usize),
    /// Accepted by the broker for the cluster; how many sessions it reaches
    /// on the other nodes is not known when the publish returns. `local` is
    /// how many sessions of this node it was queued for.
    Accepted { local: usize },
}

impl Published {
    /// Sessions of this node the publication was queued for.
    pub fn local(self) -> usize {
        match self {
            Published::Delivered(n) | Published::Accepted { local: n } => n,
        }
    }
}

/// A node's own delivery of publications to its subscribers: encode once,
/// queue a `Bytes` handle in each subscriber's outbox. Implemented by
/// [`crate::node::Node`]; called by the broker, on the publisher's task for
/// the local broker, on the broker's reader task for a cluster engine.
pub trait LocalFanout: Send + Sync {
    /// Delivers `publication` to this node's subscribers of its channel;
    /// returns how many sessions it was queued for.
    fn fan_out(&self, publication: Publication<'_>) -> usize;
}

/// Carries publications between nodes. See the module documentation.
pub trait Broker: Send + Sync + 'static {
    /// Publishes on every node. `local` is this node's fan-out: a broker
    /// that delivers locally on the publisher's task calls it before
    /// returning; one that hears its own publications back from its engine
    /// calls it then instead (never both).
    fn publish(&self, publication: Publication<'_>, local: &dyn LocalFanout) -> Published;

    /// A short name for logs and the admin page (`local`, `redis`).
    fn name(&self) -> &'static str;
}
