//! The background task that keeps a session alive.
//!
//! One `/meta/connect` is outstanding at any time. After each reply the loop
//! does what the advice says: `retry` waits `interval` and connects again;
//! `handshake` opens a new session, subscribes again to everything and starts
//! over with an immediate connect (`advice: {timeout: 0}`); `none` ends the
//! loop. Network failures and HTTP errors back off linearly up to a ceiling.
//!
//! Stopping is cooperative: [`crate::Client`] notifies `stop`, and every wait
//! and every request here races that notification.

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

pub(crate) async fn run(shared: Arc<Shared>, stop: Arc<Notify>) {
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
        };
        match next {
            Next::Connect => {
                first = false;
                backoff = Duration::ZERO;
                delay = millis(shared.session.advice().interval);
            }
            Next::Backoff => {
                shared.session.count(Counter::ConnectFailures);
                backoff = next_backoff(&shared, backoff);
                delay = backoff;
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
                if !pause(stop, backoff).await {
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

fn millis(ms: Option<i64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(0).max(0) as u64)
}
