//! Session expiry: one periodic sweep, not one timer per session.
//!
//! A session that holds no connect and has shown no sign of life for
//! `interval + maxInterval` is ended by `end` (the engine's
//! `remove_session` with [`super::listeners::SessionEnd::Expired`]: removed
//! with its subscriptions, like CometD, and the listeners told). After each
//! sweep `tidy` runs: what else forgets with time (idle per-IP handshake
//! buckets, channel histories past their age) and maps given back their
//! memory after a flood (a hash map otherwise keeps its largest capacity).

use std::future::Future;
use std::time::Duration;

use super::session::Session;
use super::sessions::Sessions;

/// Sweeps every `period` until `stop` resolves.
pub async fn run(
    sessions: &Sessions,
    max_silence_ms: u64,
    period: Duration,
    stop: impl Future<Output = ()>,
    end: impl Fn(&Session),
    tidy: impl Fn(),
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                sweep(sessions, max_silence_ms, &end);
                tidy();
            }
            _ = &mut stop => return,
        }
    }
}

/// Ends every expired session with `end`; returns how many.
pub fn sweep(sessions: &Sessions, max_silence_ms: u64, end: impl Fn(&Session)) -> usize {
    let expired = sessions.expired(max_silence_ms);
    for session in &expired {
        tracing::debug!(client_id = session.client_id(), "session expired");
        end(session);
    }
    expired.len()
}
