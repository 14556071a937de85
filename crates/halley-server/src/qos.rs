//! Quality of service: how fast deliveries reach a session, and how fast a
//! session may publish. Lightstreamer's model, in Bayeux terms:
//!
//! - **Max frequency** per channel (`[[qos]]` rules) and per user (the
//!   session's grant, `max_frequency`): at most that many deliveries per
//!   second per channel per session; the lower of the two wins. In `merge`
//!   mode, updates that come too fast are conflated (per channel, or per
//!   channel and value of the rule's `key` field of `data`): the subscriber
//!   gets the latest value at the allowed rate and always ends with the
//!   latest. In `distinct` mode every update is kept and released in order
//!   at the allowed rate. A user limit alone is distinct.
//! - **Max bandwidth** per session (`max-bandwidth`, or the grant's): bytes
//!   of deliveries per second, applied where deliveries leave the outbox
//!   (see [`Session::take_deliveries`]); what waits stays queued.
//! - **Max publish rate** per session (`max-publish-rate`, or the grant's): a
//!   token bucket with a burst of one second's worth; a publish over it is
//!   refused with `429::publish_rate_exceeded` and not delivered.
//!
//! The publish path pays for this only when it is used: [`crate::engine`]
//! looks up the channel's rule once per publish, and reads each
//! subscriber's grant (no lock) only when the channel has a rule or some
//! live session has a frequency of its own
//! ([`Session::any_frequency_grant`]); only a limited subscriber goes
//! through the session's [`crate::state::throttle::Throttle`].
//!
//! Held updates are released by one task per session, alive only while the
//! session holds updates, and ending when the session closes; released
//! updates enter the outbox as any delivery, so long-polling, WebSocket and
//! the ack extension carry them unchanged.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use halley_protocol::ChannelName;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::engine::Engine;
use crate::state::listeners::SessionEnd;
use crate::state::session::Session;
use crate::state::throttle::{Limit, Mode, Offered, Release};

/// A `[[qos]]` rule, parsed once (see [`crate::config::ChannelQos`]).
#[derive(Debug, Clone, PartialEq)]
pub struct QosRule {
    pub max_frequency: f64,
    pub mode: Mode,
    /// Merge only: the top-level field of `data` to conflate by.
    pub key: Option<Box<str>>,
}

/// The limit on `session`'s deliveries of a channel whose rule is `rule`:
/// the lower of the rule's and the grant's frequency, in the rule's mode
/// (distinct for a grant alone). `None`: unlimited, the common case, decided
/// with one read of the grant.
#[inline]
pub fn frequency_limit(rule: Option<&QosRule>, session: &Session) -> Option<Limit> {
    let user = session.limits().max_frequency;
    if rule.is_none() && user.is_none() {
        return None;
    }
    // A grant's impossible rate (not positive) limits nothing.
    let user = user.filter(|f| f.is_finite() && *f > 0.0);
    let (per_second, mode) = match (rule, user) {
        (Some(rule), Some(user)) => (rule.max_frequency.min(user), rule.mode),
        (Some(rule), None) => (rule.max_frequency, rule.mode),
        (None, Some(user)) => (user, Mode::Distinct),
        (None, None) => return None,
    };
    Limit::per_second(per_second, mode)
}

/// What one publish tells the throttles of its limited subscribers, worked
/// out once for all of them.
pub struct ThrottledPublish {
    /// The throttle slot: the channel, or the channel and the key's value.
    slot: String,
    release: Release,
    /// When the publish happened (one clock read for all subscribers).
    now: Instant,
    /// Where release tasks are spawned; `None` without a runtime (an
    /// embedder publishing from a plain thread): deliveries then go
    /// unthrottled rather than be held forever.
    runtime: Option<tokio::runtime::Handle>,
}

impl ThrottledPublish {
    pub fn new(
        channel: &ChannelName,
        data: &RawValue,
        rule: Option<&QosRule>,
        release: Release,
    ) -> Self {
        let key = rule
            .filter(|rule| rule.mode == Mode::Merge)
            .and_then(|rule| rule.key.as_deref())
            .and_then(|key| key_value(data, key));
        let slot = match key {
            // NUL cannot appear in a channel name: the two parts stay apart.
            Some(value) => format!("{channel}\0{value}"),
            None => channel.as_str().to_owned(),
        };
        ThrottledPublish {
            slot,
            release,
            now: Instant::now(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

/// The raw JSON of the top-level field `key` of `data`, if `data` is an
/// object with that field. A message without it is conflated with the
/// channel's other keyless messages.
fn key_value(data: &RawValue, key: &str) -> Option<String> {
    // Borrowed field names when they need no unescaping, owned otherwise.
    if let Ok(fields) = serde_json::from_str::<HashMap<&str, &RawValue>>(data.get()) {
        return fields.get(key).map(|v| v.get().to_owned());
    }
    let fields = serde_json::from_str::<HashMap<Cow<str>, &RawValue>>(data.get()).ok()?;
    fields.get(key).map(|v| v.get().to_owned())
}

/// Delivers `delivery` to a limited `session`: now, or later by the
/// session's release task. Returns `false` when the session must end
/// (overflow under the `disconnect` policy), as `Session::enqueue` does.
pub fn offer(
    engine: &Engine,
    session: &Arc<Session>,
    publish: &ThrottledPublish,
    limit: Limit,
    delivery: Bytes,
) -> bool {
    let release = publish.release;
    let Some(runtime) = &publish.runtime else {
        return enqueue(engine, session, delivery, release);
    };
    match session.offer_throttled(&publish.slot, delivery.clone(), limit, release, publish.now) {
        Offered::Now => enqueue(engine, session, delivery, release),
        Offered::Held { start_timer } => {
            if start_timer {
                runtime.spawn(release_held(engine.weak(), session.clone()));
            }
            true
        }
        Offered::Dropped => true,
        Offered::Overflow => false,
    }
}

fn enqueue(engine: &Engine, session: &Session, delivery: Bytes, release: Release) -> bool {
    let lazy_deadline = release
        .lazy_timeout_ms
        .map(|timeout| engine.sessions().now_ms() + timeout);
    session.enqueue_lazily(delivery, release.policy, lazy_deadline)
}

/// A session's release task: queues held updates as their turn comes, and
/// ends when nothing is held, when the session closes, or at shutdown.
async fn release_held(engine: Weak<Engine>, session: Arc<Session>) {
    // Spawned from the engine's own publish: it is alive here. Kept for as
    // long as this task, which is bounded by the above.
    let Some(engine) = engine.upgrade() else {
        return;
    };
    loop {
        let (released, next) = session.release_throttled(Instant::now());
        for (delivery, release) in released {
            if !enqueue(&engine, &session, delivery, release) {
                tracing::info!(
                    client_id = session.client_id(),
                    "outbox overflow: disconnecting the session"
                );
                engine.remove_session(&session, SessionEnd::Overflowed);
                return;
            }
        }
        let Some(next) = next else {
            return;
        };
        // Registered before the check, so a close in between is not missed.
        // Other wake-ups (new deliveries) only cost a look at the throttle.
        let woken = session.wake().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if session.is_closed() || engine.shutdown().is_started() {
            session.clear_throttled();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = &mut woken => {}
            _ = engine.shutdown().wait() => {}
        }
    }
}

/// Counts a publish of `session` against its publish rate; `false` when
/// over it (the caller refuses the publish).
pub fn allow_publish(engine: &Engine, session: &Session) -> bool {
    match session
        .limits()
        .max_publish_rate
        .or(engine.config().max_publish_rate)
    {
        None => true,
        Some(per_second) => session.try_publish(per_second, Instant::now()),
    }
}
