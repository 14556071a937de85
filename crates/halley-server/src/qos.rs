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
//! The publish path pays for this only when it is used: the node's fan-out
//! ([`crate::node`]) looks up the channel's rule once per publish, and reads
//! each subscriber's grant (no lock) only when the channel has a rule or
//! some live session has a frequency of its own
//! ([`crate::state::sessions::Sessions::any_frequency_grant`]); only a
//! limited subscriber goes through the session's
//! [`crate::state::throttle::Throttle`].
//!
//! This file holds the decisions (which limit applies, which throttle slot
//! an update goes to, whether a publish is within its rate); the node owns
//! the one task per session that releases held updates, alive only while
//! the session holds updates. Released updates enter the outbox as any
//! delivery, so long-polling, WebSocket and the ack extension carry them
//! unchanged.

use std::borrow::Cow;
use std::collections::HashMap;

use halley_protocol::ChannelName;
use serde_json::value::RawValue;
use tokio::time::Instant;

pub use crate::rules::QosRule;
use crate::state::session::Session;
use crate::state::throttle::{Limit, Mode, Release};

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
    pub slot: String,
    pub release: Release,
    /// When the publish happened (one clock read for all subscribers).
    pub now: Instant,
}

impl ThrottledPublish {
    pub fn new(
        channel: &ChannelName,
        data: &RawValue,
        rule: Option<&QosRule>,
        release: Release,
        now: Instant,
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
        ThrottledPublish { slot, release, now }
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

/// Counts a publish of `session` against its publish rate (the grant's, or
/// else `default_rate`, the server's `max-publish-rate`); `false` when over
/// it (the caller refuses the publish).
pub fn allow_publish(default_rate: Option<f64>, session: &Session, now: Instant) -> bool {
    match session.limits().max_publish_rate.or(default_rate) {
        None => true,
        Some(per_second) => session.try_publish(per_second, now),
    }
}
