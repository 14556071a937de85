//! Extensions: the pipeline every inbound message and every reply passes
//! through, and the Bayeux extensions Halley speaks, one file each:
//!
//! - [`ack`]: reliable, ordered delivery within a session (CometD's
//!   `AckExtension`): numbered connect-reply batches, re-sent until acknowledged;
//! - [`timesync`]: clock offset and network lag estimation (CometD's
//!   `TimeSyncExtension`);
//! - [`replay`]: the replay ids a handshake asks for (Salesforce's
//!   convention; the history itself is [`crate::history`]).
//!
//! An [`Extension`] sees each inbound message before its handler
//! ([`Extension::incoming`]: it may rewrite the message or refuse it, and a
//! refused message is answered with the extension's error and goes no
//! further) and each reply before it is written ([`Extension::outgoing`]:
//! it may rewrite the reply and add fields to its `ext`). The built-in
//! extensions run first, then those the embedding application adds with
//! [`Extensions::add`], in the order added.
//!
//! `ext` is parsed once per message, by the dispatcher, into
//! [`InboundExt`], and only for meta and service messages: a broadcast
//! publish keeps its `ext` raw (the hot path) and its extensions see an
//! empty [`InboundExt`] (the raw `ext` is on the message). A reply's `ext`
//! additions are gathered in a [`ReplyExt`] and merged into the reply once.

pub mod ack;
pub mod replay;
pub mod timesync;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use halley_protocol::{BayeuxError, Message, Reply};

use crate::state::session::Session;

/// The extension fields of an inbound meta message that Halley acts on.
#[derive(Debug, Default, Deserialize)]
pub struct InboundExt {
    /// `true` on a handshake (asking for acks), a batch number on a connect.
    pub ack: Option<Value>,
    pub timesync: Option<timesync::Request>,
    /// `{"/channel": last seen id}` on a handshake or subscribe.
    pub replay: Option<Map<String, Value>>,
}

impl InboundExt {
    /// An `ext` with nothing Halley acts on (a broadcast publish's).
    pub const EMPTY: InboundExt = InboundExt {
        ack: None,
        timesync: None,
        replay: None,
    };

    /// Reads the fields Halley knows; anything malformed is ignored (an
    /// extension the server cannot read is an extension it does not speak).
    pub fn parse(ext: Option<&RawValue>) -> InboundExt {
        ext.and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }

    /// Whether no field Halley acts on is present.
    pub fn is_empty(&self) -> bool {
        self.ack.is_none() && self.timesync.is_none() && self.replay.is_none()
    }

    /// The replay ids requested, per channel (non-integers ignored).
    pub fn replay_requests(&self) -> impl Iterator<Item = (&str, i64)> {
        self.replay
            .iter()
            .flat_map(|m| m.iter())
            .filter_map(|(channel, v)| v.as_i64().map(|id| (channel.as_str(), id)))
    }
}

/// What an extension knows of the message a hook is called for.
pub struct Context<'a> {
    /// The session the message speaks for: none before a handshake has
    /// created it (or when the clientId was unknown).
    pub session: Option<&'a Arc<Session>>,
    /// The request's `ext`, parsed once.
    pub ext: &'a InboundExt,
    /// When the request arrived, wall clock, milliseconds since the Unix epoch.
    pub received_ms: i64,
    /// Now (when the reply is made), on the same clock.
    pub now_ms: i64,
    /// On a `/meta/connect` reply with the ack extension: the number of the
    /// batch of deliveries written with it.
    pub ack_batch: Option<u64>,
}

/// Fields an outgoing hook adds to a reply's `ext`, merged once at the end.
#[derive(Debug, Default)]
pub struct ReplyExt {
    fields: Map<String, Value>,
}

impl ReplyExt {
    pub fn insert(&mut self, key: &str, value: Value) {
        self.fields.insert(key.to_owned(), value);
    }

    /// Merges the fields into `reply.ext`, keeping what is there.
    fn merge_into(self, reply: &mut Reply) {
        if self.fields.is_empty() {
            return;
        }
        let mut ext = reply
            .ext
            .as_deref()
            .and_then(|raw| serde_json::from_str::<Map<String, Value>>(raw.get()).ok())
            .unwrap_or_default();
        ext.extend(self.fields);
        reply.ext = serde_json::value::to_raw_value(&ext).ok();
    }
}

/// A Bayeux extension on the server side. Both hooks default to doing
/// nothing. Hooks run on the request's task: keep them quick.
pub trait Extension: Send + Sync + 'static {
    /// An inbound message, before its handler. `Err` refuses it: the
    /// client gets a failed reply with that error (CometD answers a
    /// message an extension deleted with `404::message_deleted`).
    fn incoming(&self, message: &mut Message, context: &Context<'_>) -> Result<(), BayeuxError> {
        let _ = (message, context);
        Ok(())
    }

    /// A reply (to a meta, service or publish message) before it is written.
    fn outgoing(&self, reply: &mut Reply, context: &Context<'_>, ext: &mut ReplyExt) {
        let _ = (reply, context, ext);
    }
}

/// The pipeline: the built-in extensions, then the application's.
pub struct Extensions {
    builtins: [Box<dyn Extension>; 3],
    added: RwLock<Vec<Arc<dyn Extension>>>,
    /// Whether `added` is non-empty: the publish path skips its lock otherwise.
    any_added: AtomicBool,
}

impl Extensions {
    /// Ack, timesync and replay.
    pub fn with_builtins() -> Self {
        Extensions {
            builtins: [
                Box::new(ack::Ack),
                Box::new(timesync::TimeSync),
                Box::new(replay::Replay),
            ],
            added: RwLock::default(),
            any_added: AtomicBool::new(false),
        }
    }

    /// Adds an extension after the built-in ones and those added before.
    pub fn add(&self, extension: Arc<dyn Extension>) {
        self.added.write().push(extension);
        self.any_added.store(true, Ordering::Release);
    }

    /// Runs the incoming hooks of a message; the first refusal wins.
    pub fn incoming(
        &self,
        message: &mut Message,
        context: &Context<'_>,
    ) -> Result<(), BayeuxError> {
        for extension in &self.builtins {
            extension.incoming(message, context)?;
        }
        if self.any_added.load(Ordering::Acquire) {
            for extension in self.added.read().iter() {
                extension.incoming(message, context)?;
            }
        }
        Ok(())
    }

    /// Runs the outgoing hooks of a reply to a meta or service message.
    pub fn outgoing(&self, reply: &mut Reply, context: &Context<'_>) {
        let mut ext = ReplyExt::default();
        for extension in &self.builtins {
            extension.outgoing(reply, context, &mut ext);
        }
        if self.any_added.load(Ordering::Acquire) {
            for extension in self.added.read().iter() {
                extension.outgoing(reply, context, &mut ext);
            }
        }
        ext.merge_into(reply);
    }

    /// Runs the application's hooks only: for broadcast publishes, whose
    /// requests the built-in extensions never act on (the hot path).
    pub fn incoming_added(
        &self,
        message: &mut Message,
        context: &Context<'_>,
    ) -> Result<(), BayeuxError> {
        if self.any_added.load(Ordering::Acquire) {
            for extension in self.added.read().iter() {
                extension.incoming(message, context)?;
            }
        }
        Ok(())
    }

    /// The outgoing counterpart of [`Extensions::incoming_added`].
    pub fn outgoing_added(&self, reply: &mut Reply, context: &Context<'_>) {
        if self.any_added.load(Ordering::Acquire) {
            let mut ext = ReplyExt::default();
            for extension in self.added.read().iter() {
                extension.outgoing(reply, context, &mut ext);
            }
            ext.merge_into(reply);
        }
    }
}

/// Adds `key: value` to a reply's `ext` object, keeping what is there (for
/// the few replies made outside the pipeline: a denial's reason).
pub fn add_to_reply(reply: &mut Reply, key: &str, value: Value) {
    let mut ext = ReplyExt::default();
    ext.insert(key, value);
    ext.merge_into(reply);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_fields_and_ignores_the_rest() {
        let raw =
            RawValue::from_string(r#"{"ack":3,"timesync":{"tc":10,"l":2,"o":-1},"x":[1]}"#.into())
                .unwrap();
        let ext = InboundExt::parse(Some(&raw));
        assert_eq!(ext.ack, Some(Value::from(3)));
        assert_eq!(ext.timesync.unwrap().tc, 10);
        let junk = RawValue::from_string(r#"{"timesync":"nope"}"#.into()).unwrap();
        assert!(InboundExt::parse(Some(&junk)).timesync.is_none());
        assert!(InboundExt::parse(None).ack.is_none());
    }

    #[test]
    fn reply_ext_fields_accumulate() {
        let mut reply = Reply::to("/meta/connect", None);
        add_to_reply(&mut reply, "ack", Value::from(7));
        add_to_reply(&mut reply, "timesync", serde_json::json!({"tc": 1}));
        let ext: Value = serde_json::from_str(reply.ext.unwrap().get()).unwrap();
        assert_eq!(ext, serde_json::json!({"ack": 7, "timesync": {"tc": 1}}));
    }

    /// An application's extension that refuses one channel and stamps replies.
    struct Stamp;

    impl Extension for Stamp {
        fn incoming(&self, message: &mut Message, _: &Context<'_>) -> Result<(), BayeuxError> {
            if message.channel.as_deref() == Some("/forbidden") {
                return Err(BayeuxError::MESSAGE_DELETED);
            }
            Ok(())
        }

        fn outgoing(&self, _: &mut Reply, _: &Context<'_>, ext: &mut ReplyExt) {
            ext.insert("stamp", Value::Bool(true));
        }
    }

    #[test]
    fn added_extensions_refuse_and_rewrite_after_the_builtins() {
        let extensions = Extensions::with_builtins();
        extensions.add(Arc::new(Stamp));
        let context = Context {
            session: None,
            ext: &InboundExt::EMPTY,
            received_ms: 0,
            now_ms: 0,
            ack_batch: None,
        };
        let mut message: Message =
            serde_json::from_str(r#"{"channel":"/forbidden","data":1}"#).unwrap();
        assert_eq!(
            extensions.incoming_added(&mut message, &context),
            Err(BayeuxError::MESSAGE_DELETED)
        );
        let mut reply = Reply::to("/meta/subscribe", None);
        reply.ext = Some(RawValue::from_string(r#"{"mine":1}"#.into()).unwrap());
        extensions.outgoing(&mut reply, &context);
        let ext: Value = serde_json::from_str(reply.ext.unwrap().get()).unwrap();
        assert_eq!(ext, serde_json::json!({"mine": 1, "stamp": true}));
    }
}
