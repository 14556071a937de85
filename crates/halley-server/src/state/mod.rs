//! The server's state, knowing nothing of handlers or transports.
//!
//! - [`outbox`]: a session's bounded queue of encoded deliveries;
//! - [`session`]: one Bayeux session (clientId, browser, outbox, liveness);
//! - [`sessions`]: the registry of sessions by clientId, and of held polls per browser;
//! - [`subscriptions`]: who listens to which channel or glob;
//! - [`sweeper`]: the periodic task that expires silent sessions.

pub mod outbox;
pub mod session;
pub mod sessions;
pub mod subscriptions;
pub mod sweeper;

use session::Session;
use sessions::Sessions;
use subscriptions::Subscriptions;

/// Ends a session: unregisters it, closes it (waking a held connect) and
/// removes its subscriptions. Used by disconnect and by expiry.
pub fn end_session(sessions: &Sessions, subscriptions: &Subscriptions, session: &Session) {
    sessions.remove(session.client_id());
    session.close();
    subscriptions.remove_session(session);
}
