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
//! task (started by [`Broker::start`]), calls [`LocalFanout::fan_out`] for
//! what arrives, its own publications included. [`redis::RedisBroker`]
//! (cargo feature `redis`) is that engine on Redis; see `docs/cluster.md`.

pub mod directory;
pub mod local;
#[cfg(feature = "redis")]
pub mod redis;
pub mod roster;

use std::sync::Weak;

use halley_protocol::{BayeuxError, ChannelName};
use serde_json::value::RawValue;
use tokio::task::JoinHandle;

/// The failed reply of a publish the broker could not take (a cluster
/// engine that lost Redis): the publisher learns at once, instead of a
/// message silently reaching only part of the cluster.
pub const UNAVAILABLE: BayeuxError = BayeuxError {
    code: 503,
    reason: "broker_unavailable",
};

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
    /// Refused: the broker cannot reach its engine now (or its queue to
    /// the engine is full). Delivered nowhere; the publisher is told
    /// ([`UNAVAILABLE`]).
    Unavailable,
}

impl Published {
    /// Sessions of this node the publication was queued for.
    pub fn local(self) -> usize {
        match self {
            Published::Delivered(n) | Published::Accepted { local: n } => n,
            Published::Unavailable => 0,
        }
    }

    /// Whether the broker refused it.
    pub fn is_unavailable(self) -> bool {
        self == Published::Unavailable
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

    /// Like [`LocalFanout::fan_out`], for a publication the cluster's log
    /// numbered `offset` (offsets arrive in rising order).
    fn fan_out_logged(&self, publication: Publication<'_>, offset: u64) -> usize {
        let _ = offset;
        self.fan_out(publication)
    }

    /// Another node takes `client_id` over: this node lets go of it (its
    /// client goes on there) and returns its latest record, if it had it.
    /// Asynchronous: a session this node is itself taking over at that
    /// moment is let go once it has it, so two nodes never both hold it.
    fn release_session<'a>(
        &'a self,
        client_id: &'a str,
    ) -> directory::Pending<'a, Option<directory::SessionRecord>> {
        let _ = client_id;
        Box::pin(std::future::ready(None))
    }
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

    /// Starts the broker's own tasks (a cluster engine's reader, which
    /// hands what arrives to `local`), once, when the server starts
    /// serving; the handle ends after [`Broker::stop`]. `local` is weak:
    /// the tasks must not keep a stopped node alive. The local broker has
    /// no task.
    fn start(&self, local: Weak<dyn LocalFanout>) -> Option<JoinHandle<()>> {
        let _ = local;
        None
    }

    /// Stops the tasks [`Broker::start`] started (the server is shutting
    /// down; a cluster node leaves the cluster).
    fn stop(&self) {}

    /// Whether a publish would be taken now (false: [`Published::Unavailable`]).
    /// For callers that want all or nothing, such as the HTTP publish API.
    fn available(&self) -> bool {
        true
    }

    /// Resolves `true` once every publish this broker took before the call
    /// has reached its engine (Redis has it: no node's death can lose it),
    /// `false` if one may have been lost. A publisher's reply waits for it,
    /// so an acknowledged message is never lost. The local broker delivers
    /// before `publish` returns: always `true` at once.
    fn confirm(&self) -> directory::Pending<'_, bool> {
        Box::pin(std::future::ready(true))
    }

    /// The cluster's sessions and log, for a node to take sessions over
    /// (none for the local broker).
    fn directory(&self) -> Option<&dyn directory::Directory> {
        None
    }

    /// The cluster's presence rooms (none for the local broker: the
    /// presence service keeps them in memory).
    fn roster(&self) -> Option<&dyn roster::Roster> {
        None
    }

    /// A cluster node's id and its engine's URL without the password, for
    /// the admin page (none for the local broker).
    fn cluster_node(&self) -> Option<(&str, &str)> {
        None
    }
}
