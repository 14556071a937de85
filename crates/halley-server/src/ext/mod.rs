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
pub mod extension;
pub mod replay;
pub mod timesync;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use halley_protocol::{BayeuxError, Message, Reply};

pub use extension::{add_to_reply, Context, Extension, InboundExt, ReplyExt};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use serde_json::Value;

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
