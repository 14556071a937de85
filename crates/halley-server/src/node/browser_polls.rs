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
    /// Asks the cluster whether `client_id`'s connect (of `browser`, over
    /// HTTP, that may be held for `hold_for`) may hold; the answer goes
    /// with the connect. `None`: nothing to ask (a single node, no limit, a
    /// connect answered at once) or no answer (held anyway).
    pub async fn ask_cluster_for_poll(
        &self,
        browser: &str,
        client_id: &str,
        hold_for: Duration,
    ) -> Option<ClusterPoll> {
        let directory = self.directory()?;
        // Negative: no limit.
        let max = usize::try_from(self.config().max_sessions_per_browser).ok()?;
        if hold_for.is_zero() {
            return None;
        }
        let life = self.config().timeout() + MARGIN;
        let verdict = directory
            .hold_browser_poll(browser, client_id, max, life.as_millis() as u64)
            .await;
        match verdict {
            Ok(true) => Some(ClusterPoll {
                refused: false,
                release: Some((self.weak(), browser.into(), client_id.into())),
            }),
            Ok(false) => Some(ClusterPoll {
                refused: true,
                release: None,
            }),
            Err(error) => {
                tracing::debug!(%error, "the cluster's browser polls cannot be counted: held anyway");
                None
            }
        }
    }
}
