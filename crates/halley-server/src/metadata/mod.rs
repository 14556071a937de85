//! Metadata Adapters: who may connect, subscribe and publish, and how fast.
//!
//! Lightstreamer separates where messages come from (Data Adapters,
//! [`crate::adapter`]) from the rules of each push scenario: a *Metadata
//! Adapter* authenticates users and authorizes what they do. Halley asks
//! one, when configured, at four points:
//!
//! | when | method | a denial answers |
//! |---|---|---|
//! | `/meta/handshake` | [`MetadataAdapter::handshake`]: credentials in `ext` -> a [`Grant`] (user, limits) | `403::handshake_denied` |
//! | `/meta/subscribe` | [`MetadataAdapter::subscribe`], per channel or glob | `403::subscribe_denied` |
//! | a publish (broadcast or `/service/**`) | [`MetadataAdapter::publish`] | `403::publish_denied` |
//! | `/meta/connect` with `ext.authentication` (fresh credentials) | [`MetadataAdapter::refresh`] -> their new expiry | `401::refresh_denied`, the session ends |
//! | session start and end | [`MetadataAdapter::session_opened`] / [`MetadataAdapter::session_closed`] | - |
//!
//! Every denial carries a human reason in the reply's `ext.halley.reason`;
//! the error string itself is CometD's, so its clients react as they would
//! to CometD. A denied handshake also advises `reconnect: none`.
//!
//! Implementations:
//! - [`jwt`]: configuration-driven; HS256/RS256 tokens whose claims list
//!   the channel patterns a user may subscribe to and publish on, and
//!   anonymous access per channel pattern;
//! - [`webhook`]: asks the application's backend over HTTP, caches its
//!   answers, fails closed (or open) when it is down.
//!
//! Independent of the adapter, [`caps::UserSessions`] caps the sessions
//! one user may hold (`max-sessions-per-user`); [`permissions`] is the
//! pattern arithmetic both adapters share. [`measured`] wraps the
//! configured adapter for the metrics and the readiness check.
//!
//! Server-side publishers (the HTTP publish API with its API keys, Data
//! Adapters, services) are trusted and never asked (the API keys and remote
//! adapters are still bounded by a rate of their own:
//! [`crate::state::publisher_rate`]).

pub mod caps;
pub mod jwt;
pub mod measured;
pub mod permissions;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;

use halley_protocol::{ChannelName, ChannelPattern};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::state::grant::Grant;
use crate::state::limits::{Limit, Limits};
use crate::state::listeners::SessionEnd;
use crate::state::session::Session;

/// An adapter's answer, possibly after asking someone (a webhook).
pub type Verdict<'a, T> = Pin<Box<dyn Future<Output = Result<T, Denial>> + Send + 'a>>;

/// A refusal and the reason shown to the client (and logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: String,
    /// Whether asking again later may succeed (the decision could not be
    /// made, e.g. an authorization backend was unreachable), as opposed to
    /// a verdict. A refused handshake then advises `reconnect: retry`, so
    /// clients come back instead of giving up for good.
    pub transient: bool,
    /// The node's limit that made it, if one did (counted by whoever
    /// answers it: [`Denial::count_in`]).
    pub limit: Option<Limit>,
}

impl Denial {
    /// A verdict: asking again will not change it.
    pub fn new(reason: impl Into<String>) -> Self {
        Denial {
            reason: reason.into(),
            transient: false,
            limit: None,
        }
    }

    /// No verdict could be reached now; asking again later may succeed.
    pub fn transient(reason: impl Into<String>) -> Self {
        Denial {
            reason: reason.into(),
            transient: true,
            limit: None,
        }
    }

    /// No verdict now because `limit` was reached (e.g. too many questions
    /// waiting for a backend); asking again later may succeed.
    pub fn limited(reason: impl Into<String>, limit: Limit) -> Self {
        Denial {
            limit: Some(limit),
            ..Denial::transient(reason)
        }
    }

    /// Counts the denial in `limits` (and warns, at a bounded rate) if a
    /// limit made it.
    pub fn count_in(&self, limits: &Limits) {
        if let Some(limit) = self.limit {
            limits.hit(limit, || self.reason.clone());
        }
    }
}

/// What a handshake presents.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeRequest<'a> {
    /// The handshake's `ext` (`Value::Null` when absent). Credentials travel
    /// in `ext.authentication`, as CometD's documentation does it.
    pub ext: &'a Value,
    /// The `BAYEUX_BROWSER` cookie of the request, if any.
    pub browser_id: Option<&'a str>,
}

impl HandshakeRequest<'_> {
    /// `ext.authentication`, if present.
    pub fn authentication(&self) -> Option<&Value> {
        self.ext.get("authentication").filter(|v| !v.is_null())
    }
}

/// The rules of a push scenario. Every method has a permissive default,
/// so an adapter implements what it restricts.
///
/// Methods returning a [`Verdict`] may wait (ask a backend); the request
/// that caused them waits with them, other sessions do not.
pub trait MetadataAdapter: Send + Sync + 'static {
    /// Authenticates a handshake: the session's user and limits, or a denial.
    fn handshake<'a>(&'a self, request: HandshakeRequest<'a>) -> Verdict<'a, Grant> {
        let _ = request;
        ready(Ok(Grant::anonymous()))
    }

    /// May `session` subscribe to `subscription` (a channel or a glob)?
    fn subscribe<'a>(
        &'a self,
        session: &'a Session,
        subscription: &'a ChannelPattern,
    ) -> Verdict<'a, ()> {
        let _ = (session, subscription);
        ready(Ok(()))
    }

    /// May `session` publish `data` on `channel` (broadcast or service)?
    fn publish<'a>(
        &'a self,
        session: &'a Session,
        channel: &'a ChannelName,
        data: &'a RawValue,
    ) -> Verdict<'a, ()> {
        let _ = (session, channel, data);
        ready(Ok(()))
    }

    /// `session` presents fresh credentials (`ext.authentication` of a
    /// `/meta/connect`, as at handshake) before its own expire: their new
    /// expiry in wall-clock ms (see [`Grant::expires_ms`]), or `None` when
    /// nothing changes. A denial ends the session. The default ignores
    /// them: an adapter whose grants do not expire has nothing to refresh.
    fn refresh<'a>(
        &'a self,
        session: &'a Session,
        request: HandshakeRequest<'a>,
    ) -> Verdict<'a, Option<i64>> {
        let _ = (session, request);
        ready(Ok(None))
    }

    /// A session was created with its grant.
    fn session_opened(&self, session: &Session) {
        let _ = session;
    }

    /// A session ended (after its subscriptions were removed).
    fn session_closed(&self, session: &Session, why: SessionEnd) {
        let _ = (session, why);
    }
}

/// A verdict known at once.
pub fn ready<'a, T: Send + 'a>(result: Result<T, Denial>) -> Verdict<'a, T> {
    Box::pin(std::future::ready(result))
}

/// Adds the denial's reason to a failed reply as `ext.halley.reason`.
pub fn explain(reply: &mut halley_protocol::Reply, denial: &Denial) {
    crate::ext::add_to_reply(
        reply,
        "halley",
        serde_json::json!({ "reason": denial.reason }),
    );
}
