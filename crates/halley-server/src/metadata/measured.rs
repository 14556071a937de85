//! A Metadata Adapter seen by the metrics: wraps the configured one, counts
//! its answers by action and outcome, times them, and remembers whether
//! its last answer came without a verdict (a webhook backend down, failing
//! closed), which makes the node not ready ([`crate::admin`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use halley_protocol::{ChannelName, ChannelPattern};
use serde_json::value::RawValue;

use super::{Denial, HandshakeRequest, MetadataAdapter, Verdict};
use crate::metrics::{metrics, Action, Outcome};
use crate::state::grant::Grant;
use crate::state::listeners::SessionEnd;
use crate::state::session::Session;

pub struct Measured {
    inner: Arc<dyn MetadataAdapter>,
    /// Whether the last answer was a transient denial (no verdict).
    unreachable: AtomicBool,
}

impl Measured {
    pub fn new(inner: Arc<dyn MetadataAdapter>) -> Arc<Self> {
        Arc::new(Measured {
            inner,
            unreachable: AtomicBool::new(false),
        })
    }

    /// Whether the adapter's last answer could not be decided (its backend
    /// was unreachable); cleared by the next answer that could.
    pub fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    async fn measure<T>(&self, action: Action, verdict: Verdict<'_, T>) -> Result<T, Denial> {
        let started = Instant::now();
        let result = verdict.await;
        let metrics = metrics();
        metrics
            .metadata_latency
            .get(action)
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => Outcome::Accepted,
            Err(denial) if denial.transient => Outcome::Unavailable,
            Err(_) => Outcome::Denied,
        };
        // A question refused by a limit of this node (too many waiting)
        // says nothing of the backend: readiness must not flap under a
        // flood, which would let one client take the node out of rotation.
        let limited = matches!(&result, Err(denial) if denial.limit.is_some());
        if !limited {
            self.unreachable
                .store(outcome == Outcome::Unavailable, Ordering::Relaxed);
        }
        metrics.metadata_decisions.get((action, outcome)).inc();
        result
    }
}

impl MetadataAdapter for Measured {
    fn handshake<'a>(&'a self, request: HandshakeRequest<'a>) -> Verdict<'a, Grant> {
        Box::pin(self.measure(Action::Handshake, self.inner.handshake(request)))
    }

    fn subscribe<'a>(
        &'a self,
        session: &'a Session,
        subscription: &'a ChannelPattern,
    ) -> Verdict<'a, ()> {
        Box::pin(self.measure(
            Action::Subscribe,
            self.inner.subscribe(session, subscription),
        ))
    }

    fn publish<'a>(
        &'a self,
        session: &'a Session,
        channel: &'a ChannelName,
        data: &'a RawValue,
    ) -> Verdict<'a, ()> {
        Box::pin(self.measure(Action::Publish, self.inner.publish(session, channel, data)))
    }

    fn refresh<'a>(
        &'a self,
        session: &'a Session,
        request: HandshakeRequest<'a>,
    ) -> Verdict<'a, Option<i64>> {
        Box::pin(self.measure(Action::Refresh, self.inner.refresh(session, request)))
    }

    fn session_opened(&self, session: &Session) {
        self.inner.session_opened(session)
    }

    fn session_closed(&self, session: &Session, why: SessionEnd) {
        self.inner.session_closed(session, why)
    }
}
