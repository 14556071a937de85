//! Bayeux extensions the server speaks, one file each:
//!
//! - [`ack`]: reliable, ordered delivery within a session (CometD's
//!   `AckExtension`): numbered connect-reply batches, re-sent until acknowledged;
//! - [`timesync`]: clock offset and network lag estimation (CometD's
//!   `TimeSyncExtension`).
//!
//! A message's `ext` stays raw JSON on the hot path; [`InboundExt::parse`]
//! looks inside only for meta messages, which are few.

pub mod ack;
pub mod timesync;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use halley_protocol::Reply;

/// The extension fields of an inbound meta message that Halley acts on.
#[derive(Debug, Default, Deserialize)]
pub struct InboundExt {
    /// `true` on a handshake (asking for acks), a batch number on a connect.
    pub ack: Option<Value>,
    pub timesync: Option<timesync::Request>,
    /// `{"/channel": last seen id}` on a handshake or subscribe.
    pub replay: Option<serde_json::Map<String, Value>>,
}

impl InboundExt {
    /// The replay ids requested, per channel (non-integers ignored).
    pub fn replay_requests(&self) -> impl Iterator<Item = (&str, i64)> {
        self.replay
            .iter()
            .flat_map(|m| m.iter())
            .filter_map(|(channel, v)| v.as_i64().map(|id| (channel.as_str(), id)))
    }
}

impl InboundExt {
    /// Reads the fields Halley knows; anything malformed is ignored (an
    /// extension the server cannot read is an extension it does not speak).
    pub fn parse(ext: Option<&RawValue>) -> InboundExt {
        ext.and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }
}

/// Adds `key: value` to a reply's `ext` object, keeping what is there.
pub fn add_to_reply(reply: &mut Reply, key: &str, value: Value) {
    let mut ext = reply
        .ext
        .as_deref()
        .and_then(|raw| serde_json::from_str::<serde_json::Map<String, Value>>(raw.get()).ok())
        .unwrap_or_default();
    ext.insert(key.to_owned(), value);
    reply.ext = serde_json::value::to_raw_value(&ext).ok();
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
