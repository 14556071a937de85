//! `max-sessions-per-browser` across the cluster (cluster nodes only): a
//! long poll about to be held asks the cluster whether other sessions of
//! its browser hold one on any node, so the rule holds behind a balancer
//! that spreads a browser's tabs over nodes. The node's own count (in
//! [`crate::state::sessions`]) still decides on this node; this adds what
//! the other nodes hold.
//!
//! Asked once per HTTP request whose connect may be held, before the
//! connection state machine decides (it cannot wait on Redis). A cluster
//! that cannot be asked lets the poll be held: the rule spares browsers'
//! connections, it protects nothing.

use std::sync::Weak;
use std::time::Duration;

use super::Node;
use crate::exchange::PendingConnect;

/// A hold counts this long past its longest (the `timeout`) at most,
/// should its node die before releasing it.
const MARGIN: Duration = Duration::from_secs(10);

/// The cluster's answer for one connect, kept with it: released when the
/// connect is answered (dropped).
pub struct ClusterPoll {
    refused: bool,
    release: Option<(Weak<Node>, Box<str>, Box<str>)>,
}

impl ClusterPoll {
    /// Another session of the browser holds a poll on some node.
    pub fn refused(&self) -> bool {
        self.refused
    }
}

impl Drop for ClusterPoll {
    fn drop(&mut self) {
        if let Some((node, browser, client_id)) = self.release.take() {
            if let Some(directory) = node.upgrade().as_deref().and_then(Node::directory) {
                directory.release_browser_poll(&browser, &client_id);
            }
        }
    }
}

impl Node {
    /// Asks the cluster whether `pending` (a connect of `browser`, over
    /// HTTP, that may be held) may hold, and keeps the answer with it.
    pub async fn ask_cluster_for_poll(&self, browser: &str, pending: &mut PendingConnect) {
        let Some(directory) = self.directory() else {
            return;
        };
        let Ok(max) = usize::try_from(self.config().max_sessions_per_browser) else {
            return; // negative: no limit
        };
        if pending.hold_for().is_zero() {
            return;
        }
        let client_id = pending.session().client_id();
        let life = self.config().timeout() + MARGIN;
        let verdict = directory
            .hold_browser_poll(browser, client_id, max, life.as_millis() as u64)
            .await;
        let poll = match verdict {
            Ok(true) => ClusterPoll {
                refused: false,
                release: Some((self.weak(), browser.into(), client_id.into())),
            },
            Ok(false) => ClusterPoll {
                refused: true,
                release: None,
            },
            Err(error) => {
                tracing::debug!(%error, "the cluster's browser polls cannot be counted: held anyway");
                return;
            }
        };
        pending.set_cluster_poll(poll);
    }
}
