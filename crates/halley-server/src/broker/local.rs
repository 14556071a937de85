//! The embedded default: one node, nothing to tell anyone else.

use super::{Broker, LocalFanout, Publication, Published};

/// Delivers every publication to this node's subscribers at once, on the
/// publisher's task: the single-process Halley, with no extra hop.
#[derive(Debug, Default)]
pub struct LocalBroker;

impl Broker for LocalBroker {
    #[inline]
    fn publish(&self, publication: Publication<'_>, local: &dyn LocalFanout) -> Published {
        Published::Delivered(local.fan_out(publication))
    }

    fn name(&self) -> &'static str {
        "local"
    }
}
