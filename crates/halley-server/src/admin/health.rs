//! Whether the node is alive and ready to take clients (`/healthz`,
//! `/readyz`), and why not.
//!
//! Ready means: serving (not starting, not draining), the broker takes
//! publishes (a cluster node that lost Redis is not), and the Metadata
//! Adapter's last answer came with a verdict (a fail-closed webhook whose
//! backend is down refuses every handshake: clients are better sent to
//! another node).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::metadata::measured::Measured;
use crate::node::Node;

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Bound, not serving yet.
    Starting = 0,
    Serving = 1,
    /// Told to stop: not ready, moving its clients away.
    Draining = 2,
}

/// See the module documentation. Shared by the server and its admin listener.
pub struct Health {
    phase: AtomicU8,
    /// The configured Metadata Adapter, as measured (none: none configured).
    metadata: Option<Arc<Measured>>,
}

impl Health {
    pub fn new(metadata: Option<Arc<Measured>>) -> Self {
        Health {
            phase: AtomicU8::new(Phase::Starting as u8),
            metadata,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        let draining = i64::from(phase == Phase::Draining);
        crate::metrics::metrics().draining.set(draining);
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Draining,
        }
    }

    /// `None` when ready; else why not, in a few words.
    pub fn not_ready(&self, node: &Node) -> Option<&'static str> {
        match self.phase() {
            Phase::Starting => return Some("starting"),
            Phase::Draining => return Some("draining"),
            Phase::Serving => {}
        }
        if !node.broker().available() {
            return Some("broker unavailable (the cluster's Redis cannot be reached)");
        }
        if self.metadata.as_ref().is_some_and(|m| m.is_unreachable()) {
            return Some("the Metadata Adapter's backend cannot be reached");
        }
        None
    }
}
