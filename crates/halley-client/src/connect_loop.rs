//! The background task that keeps a session alive.
//!
//! One `/meta/connect` is outstanding at any time. After each reply the loop
//! does what the advice says: `retry` waits `interval` and connects again;
//! `handshake` opens a new session, subscribes again to everything and starts
//! over with an immediate connect (`advice: {timeout: 0}`, as is the first
//! connect after a failure); `none` ends the loop. Network failures and HTTP
//! errors back off linearly up to a ceiling, each wait drawn at random
//! between half the backoff and all of it, and never shorter than an
//! `interval` the refusal advised: after a node restarts, its
//! thousands of clients then come back spread over time (as the server's
//! `retry after a random 1 to 5 s` advice intends) instead of all retrying at
//! the same instants.
//!
//! Stopping is cooperative: [`crate::Client`] notifies `stop`, and every wait
//! and every request here races that notification. `cut` (long-polling only,
//! see [`crate::Client::cut`]) abandons the connect in flight, which closes
//! its connection, and the loop goes on as after a network failure.

use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{meta, Advice, Reconnect};
use tokio::sync::Notify;

use crate::error::Error;
use crate::session::{Counter, State};
use crate::shared::Shared;

/// What to do after one connect exchange.
enum Next {
    /// Connect again after the advised interval.
    Connect,
    /// Connect again after a backoff (something failed).
    Backoff,
    Handshake,
    Stop,
}

pub(crate) async fn run(shared: Arc<Shared>, stop: Arc<Notify>, cut: Arc<Notify>) {
    let mut first = true;
    let mut backoff = Duration::ZERO;
    let mut delay = Duration::ZERO;
    loop {
        if !delay.is_zero() && !pause(&stop, delay).await {
            return;
        }
        let next = tokio::select! {
            next = connect_once(&shared, first) => next,
            _ = stop.notified() => return,
            _ = cut.notified() => {
                shared.session.set_state(State::Connecting);
                Next::Backoff
            }
        };
        match next {
            Next::Connect => {
                first = false;
                backoff = Duration::ZERO;
                delay = millis(shared.session.advice().interval);
            }
            Next::Backoff => {
                shared.session.count(Counter::ConnectFailures);
                // As the CometD JavaScript client: the first connect after
                // a failure asks not to be held, so the client knows at once
                // that it is connected again.
                first = true;
                backoff = next_backoff(&shared, backoff);
                delay = jittered(backoff, fastrand::f64());
            }
            Next::Handshake => {
                shared.session.count(Counter::ConnectFailures);
                if !rehandshake(&shared, &stop).await {
                    shared.session.set_state(State::Disconnected);
                    return;
                }
                first = true;
                backoff = Duration::ZERO;
                delay = Duration::ZERO;
            }
            Next::Stop => {
                shared.session.set_state(State::Disconnected);
                return;
            }
        }
    }
}

/// One `/meta/connect` exchange.
async fn connect_once(shared: &Shared, first: bool) -> Next {
    let mut message = match shared.session_message(meta::CONNECT) {
        Ok(message) => message,
        Err(_) => return Next::Stop,
    };
    message.connection_type = Some(shared.transport.connection_type());
    if let Some(batch) = shared.session.ack_batch() {
        message.ext = Some(crate::ack::connect_ext(batch));
    }
    if first {
        message.advice = Some(Advice {
            timeout: Some(0),
            ..Advice::default()
        });
    }
    let held_for = millis(shared.session.advice().timeout);
    let timeout = held_for + shared.config.max_network_delay;
    let replies = match shared.send(std::slice::from_ref(&message), timeout).await {
        Ok(replies) => replies,
        Err(e) => {
            tracing::debug!(error = %e, "/meta/connect failed");
            shared.session.set_state(State::Connecting);
            return Next::Backoff;
        }
    };
    let Some(reply) = replies
        .iter()
        .find(|r| r.channel == meta::CONNECT && r.id == message.id)
        .or_else(|| replies.iter().find(|r| r.channel == meta::CONNECT))
    else {
        tracing::debug!("response without a /meta/connect reply");
        return Next::Backoff;
    };
    shared.session.apply_advice(reply.advice.as_ref());
    if reply.is_successful() {
        shared.session.count(Counter::Connects);
        shared.session.set_state(State::Connected);
        return match shared.session.advice().reconnect {
            Some(Reconnect::None) => Next::Stop,
            Some(Reconnect::Handshake) => Next::Handshake,
            _ => Next::Connect,
        };
    }
    shared.session.set_state(State::Connecting);
    let reason = reply.refusal(&message);
    tracing::debug!(error = %reason, "/meta/connect refused");
    match shared.session.reconnect_after_failure(reply) {
        Reconnect::Handshake => Next::Handshake,
        Reconnect::None => Next::Stop,
        Reconnect::Retry => Next::Backoff,
    }
}

/// Handshakes until it works (backing off) and subscribes again; false if
/// the loop must end (stopped, or the server said `reconnect: none`).
async fn rehandshake(shared: &Shared, stop: &Notify) -> bool {
    let mut backoff = Duration::ZERO;
    loop {
        let result = tokio::select! {
            result = shared.handshake() => result,
            _ = stop.notified() => return false,
        };
        match result {
            Ok(_) => break,
            Err(Error::Refused {
                advice:
                    Some(Advice {
                        reconnect: Some(Reconnect::None),
                        ..
                    }),
                ..
            }) => return false,
            Err(e) => {
                tracing::debug!(error = %e, "re-handshake failed");
                backoff = next_backoff(shared, backoff);
                let advised = e.advice().and_then(|a| a.interval);
                if !pause(stop, retry_delay(backoff, advised, fastrand::f64())).await {
                    return false;
                }
            }
        }
    }
    shared.session.count(Counter::Rehandshakes);
    let resubscribed = tokio::select! {
        result = shared.resubscribe() => result,
        _ = stop.notified() => return false,
    };
    if let Err(e) = resubscribed {
        tracing::warn!(error = %e, "could not subscribe again after re-handshake");
    }
    true
}

/// Sleeps `duration` unless stopped first; true if it slept.
async fn pause(stop: &Notify, duration: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = stop.notified() => false,
    }
}

fn next_backoff(shared: &Shared, current: Duration) -> Duration {
    (current + shared.config.backoff_increment).min(shared.config.max_backoff)
}

/// A wait drawn between half of `backoff` and all of it (`unit` is a random
/// number in `[0, 1)`): clients that failed at the same instant (their node
/// went away) retry spread over the second half of each backoff step rather
/// than together, and still never sooner than half the step.
fn jittered(backoff: Duration, unit: f64) -> Duration {
    backoff / 2 + backoff.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
}

/// The wait before trying again after a refused handshake: the jittered
/// backoff, but never less than the `interval` the refusal advised (a
/// server shedding a storm tells each client when to come back, already
/// spread at random).
fn retry_delay(backoff: Duration, advised_ms: Option<i64>, unit: f64) -> Duration {
    jittered(backoff, unit).max(millis(advised_ms))
}

fn millis(ms: Option<i64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(0).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_wait_is_drawn_from_its_second_half() {
        let step = Duration::from_millis(1000);
        assert_eq!(jittered(step, 0.0), Duration::from_millis(500));
        assert_eq!(jittered(step, 0.5), Duration::from_millis(750));
        assert_eq!(jittered(step, 0.999_998), Duration::from_micros(999_999));
        assert_eq!(jittered(step, 7.0), step, "a unit out of range is clamped");
        assert_eq!(jittered(Duration::ZERO, 0.3), Duration::ZERO);
    }

    #[test]
    fn clients_failing_together_retry_apart() {
        // A thousand clients whose node vanished at the same instant: their
        // first retries spread over the second half of the step, not on one
        // instant.
        let step = Duration::from_millis(500);
        let waits: std::collections::BTreeSet<Duration> = (0..1000)
            .map(|i| jittered(step, i as f64 / 1000.0))
            .collect();
        assert_eq!(waits.len(), 1000);
        assert_eq!(waits.first(), Some(&Duration::from_millis(250)));
        assert!(waits.last().unwrap() < &step);
    }

    #[test]
    fn a_refused_handshake_waits_at_least_the_advised_interval() {
        let step = Duration::from_millis(500);
        // The server's `retry after 3.2 s` outweighs a short backoff...
        assert_eq!(
            retry_delay(step, Some(3200), 0.9),
            Duration::from_millis(3200)
        );
        // ...a longer backoff outweighs a short advice, and no advice (or a
        // nonsensical negative one) leaves the jittered backoff.
        let long = Duration::from_secs(8);
        assert_eq!(retry_delay(long, Some(1000), 0.0), Duration::from_secs(4));
        assert_eq!(retry_delay(step, None, 0.0), Duration::from_millis(250));
        assert_eq!(retry_delay(step, Some(-5), 0.0), Duration::from_millis(250));
    }
}
