//! What a [`crate::Client`] and its connect loop share ([`Shared`]): the
//! transport, the session and the settings, and the exchanges both make
//! (handshake, re-subscribe, one request and its reply).
//!
//! It sits below both `client` and `connect_loop`, so neither imports the
//! other's internals: `client` starts the loop with an `Arc<Shared>`, and
//! the loop handshakes again through the same `Shared` on its own.

use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{meta, Advice, Subscription, BAYEUX_VERSION};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::message::{Incoming, Outgoing};
use crate::session::{Counter, Session, State};
use crate::transport::Transport;

/// What the server said in its handshake reply.
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    pub client_id: String,
    pub version: Option<String>,
    pub supported_connection_types: Vec<String>,
    pub advice: Option<Advice>,
    pub ext: Option<Box<RawValue>>,
    /// Whether the ack extension is on for this session (asked for, and the
    /// server agreed).
    pub ack: bool,
}

#[derive(Debug)]
pub(crate) struct Config {
    pub max_network_delay: Duration,
    pub backoff_increment: Duration,
    pub max_backoff: Duration,
    /// What every handshake sends as `ext` (with `"ack": true` when asked).
    pub handshake_ext: Option<Box<RawValue>>,
    pub ack: bool,
}

/// What the application's handle and the connect loop share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub transport: Transport,
    /// Shared with the websocket's reader task, which hands deliveries over.
    pub session: Arc<Session>,
    pub config: Config,
}

impl Shared {
    /// A message on `channel` with a fresh id and the session's `clientId`.
    pub fn session_message(&self, channel: &str) -> Result<Outgoing> {
        let client_id = self.session.client_id().ok_or(Error::NotHandshaken)?;
        let mut message = Outgoing::new(channel);
        message.id = Some(self.session.next_id());
        message.client_id = Some(client_id);
        Ok(message)
    }

    /// Sends a batch, hands its deliveries over and returns the replies.
    pub async fn send(&self, messages: &[Outgoing], timeout: Duration) -> Result<Vec<Incoming>> {
        let incoming = self.transport.exchange(messages, timeout).await?;
        Ok(self.session.dispatch(incoming))
    }

    /// Sends one message; its successful reply, or why not.
    pub async fn request(&self, message: Outgoing) -> Result<Incoming> {
        let replies = self
            .send(
                std::slice::from_ref(&message),
                self.config.max_network_delay,
            )
            .await?;
        take_reply(replies, &message)
    }

    /// Opens a new session; the connect loop is not touched.
    pub async fn handshake(&self) -> Result<HandshakeInfo> {
        // Whatever the old session acknowledged means nothing to the new one.
        self.session.set_ack(None);
        let mut message = Outgoing::new(meta::HANDSHAKE);
        message.id = Some(self.session.next_id());
        message.version = Some(BAYEUX_VERSION);
        message.minimum_version = Some(BAYEUX_VERSION);
        message.supported_connection_types = Some(vec![self.transport.connection_type()]);
        message.advice = Some(Advice {
            timeout: Some(60_000),
            interval: Some(0),
            ..Advice::default()
        });
        message.ext = self.config.handshake_ext.clone();
        let reply = self.request(message).await?;
        let client_id = reply.client_id.clone().ok_or_else(|| {
            Error::Malformed("successful handshake reply without clientId".into())
        })?;
        let ack = if self.config.ack {
            crate::ack::negotiated(reply.ext.as_deref())
        } else {
            None
        };
        self.session.set_ack(ack);
        self.session.set_client_id(Some(client_id.clone()));
        self.session.set_standing_advice(reply.advice.as_ref());
        self.session.set_state(State::Connecting);
        self.session.count(Counter::Handshakes);
        Ok(HandshakeInfo {
            client_id,
            version: reply.version,
            supported_connection_types: reply.supported_connection_types.unwrap_or_default(),
            advice: reply.advice,
            ext: reply.ext,
            ack: ack.is_some(),
        })
    }

    /// Subscribes again to everything the application subscribed to, one
    /// message per pattern in one batch (as the CometD clients do).
    pub async fn resubscribe(&self) -> Result<()> {
        let patterns = self.session.subscriptions();
        if patterns.is_empty() {
            return Ok(());
        }
        let mut messages = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let mut message = self.session_message(meta::SUBSCRIBE)?;
            message.subscription = Some(Subscription::One(pattern));
            messages.push(message);
        }
        let replies = self.send(&messages, self.config.max_network_delay).await?;
        let mut first_error = None;
        for message in &messages {
            if let Err(e) = take_reply_of(&replies, message) {
                tracing::warn!(error = %e, "re-subscription failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The reply to `message` among `replies`: `Ok` if successful.
fn take_reply(replies: Vec<Incoming>, message: &Outgoing) -> Result<Incoming> {
    let id = message.id.as_deref();
    let reply = replies
        .into_iter()
        .find(|r| r.id.as_deref() == id)
        .ok_or_else(|| no_reply(message))?;
    check(reply, message)
}

fn take_reply_of(replies: &[Incoming], message: &Outgoing) -> Result<()> {
    let id = message.id.as_deref();
    let reply = replies
        .iter()
        .find(|r| r.id.as_deref() == id)
        .ok_or_else(|| no_reply(message))?;
    if reply.is_successful() {
        Ok(())
    } else {
        Err(reply.refusal(message))
    }
}

fn check(reply: Incoming, message: &Outgoing) -> Result<Incoming> {
    if reply.is_successful() {
        Ok(reply)
    } else {
        Err(reply.refusal(message))
    }
}

fn no_reply(message: &Outgoing) -> Error {
    Error::NoReply {
        channel: message.channel.clone(),
        id: message.id.clone().unwrap_or_default(),
    }
}
