//! The server's state, knowing nothing of handlers or transports.
//!
//! - [`clock`]: the one clock a node reads (monotonic, and the wall clock from it);
//! - [`outbox`]: a session's bounded queue of encoded deliveries;
//! - [`grant`]: who a session speaks for and its per-user limits;
//! - [`session`]: one Bayeux session (clientId, browser, outbox, liveness);
//! - [`sessions`]: the registry of sessions by clientId, and of held polls per browser;
//! - [`subscriptions`]: who listens to which channel or glob;
//! - `sweeper`: the periodic task that expires silent sessions;
//! - [`throttle`]: a session's held updates of rate-limited channels (QoS);
//! - `token_bucket`: rates with bursts (bandwidth, publish rate);
//! - `unacked`: deliveries sent but not acknowledged yet (ack extension);
//! - [`listeners`]: who is told when a session ends (disconnect or expiry);
//! - [`limits`]: a counter per limit a client can hit, and their warnings;
//! - [`log_throttle`]: warnings an attacker can trigger, at a bounded rate;
//! - [`per_ip_rate`]: a rate per client IP (handshakes, failed API keys);
//! - [`publisher_rate`]: the rate of one trusted publisher (an API key, a remote adapter).

pub mod clock;
pub mod grant;
pub mod limits;
pub mod listeners;
pub mod log_throttle;
pub mod outbox;
pub mod per_ip_rate;
pub mod publisher_rate;
pub mod session;
pub mod sessions;
pub mod subscriptions;
pub(crate) mod sweeper;
pub mod throttle;
pub(crate) mod token_bucket;
pub(crate) mod unacked;

use session::Session;
use sessions::Sessions;
use subscriptions::Subscriptions;

/// Ends a session: unregisters it, closes it (waking a held connect) and
/// removes its subscriptions. Used by disconnect and by expiry, whose
/// callers then tell the [`listeners::SessionListeners`] (and the Data
/// Adapters of the patterns that lost their last subscriber).
pub fn end_session(sessions: &Sessions, subscriptions: &Subscriptions, session: &Session) -> Ended {
    let registered = sessions.remove(session.client_id()).is_some();
    session.close();
    let emptied = subscriptions.remove_session(session);
    if registered {
        tracing::debug!(client_id = session.client_id(), "session closed");
    }
    Ended {
        registered,
        emptied,
    }
}

/// What ending a session did.
pub struct Ended {
    /// Whether the session was still registered: `false` when a racing
    /// disconnect or sweep ended it first, so listeners are told once.
    pub registered: bool,
    /// The subscription patterns it was the last subscriber of.
    pub emptied: Vec<Box<str>>,
}
