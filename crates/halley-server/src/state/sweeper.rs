//! Session expiry: one periodic sweep, not one timer per session.
//!
//! A session that holds no connect and has shown no sign of life for
//! `interval + maxInterval` is removed with its subscriptions, like CometD,
//! and the session listeners are told ([`SessionEnd::Expired`]).

use std::future::Future;
use std::time::Duration;

use super::listeners::{SessionEnd, SessionListeners};
use super::sessions::Sessions;
use super::subscriptions::Subscriptions;

/// Sweeps every `period` until `stop` resolves.
pub async fn run(
    sessions: &Sessions,
    subscriptions: &Subscriptions,
    listeners: &SessionListeners,
    max_silence_ms: u64,
    period: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticker.tick() => { sweep(sessions, subscriptions, listeners, max_silence_ms); }
            _ = &mut stop => return,
        }
    }
}

/// Removes every expired session; returns how many.
pub fn sweep(
    sessions: &Sessions,
    subscriptions: &Subscriptions,
    listeners: &SessionListeners,
    max_silence_ms: u64,
) -> usize {
    let expired = sessions.expired(max_silence_ms);
    for session in &expired {
        tracing::debug!(client_id = session.client_id(), "session expired");
        if super::end_session(sessions, subscriptions, session) {
            listeners.session_ended(session, SessionEnd::Expired);
        }
    }
    expired.len()
}
