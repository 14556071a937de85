//! What an extension is: the [`Extension`] trait, what its hooks see
//! ([`Context`], [`InboundExt`]) and what they may add ([`ReplyExt`]).

use std::sync::Arc;

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
    pub timesync: Option<TimeSyncRequest>,
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

/// A timesync request: the client's clock at sending, and its lag and
/// offset estimates (see [`super::timesync`]).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct TimeSyncRequest {
    pub tc: i64,
    #[serde(default)]
    pub l: i64,
    #[serde(default)]
    pub o: i64,
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
    pub(crate) fn merge_into(self, reply: &mut Reply) {
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
}
