//! The ack extension, as the CometD clients speak it (`AckExtension`).
//!
//! With [`crate::ClientBuilder::ack`] on:
//!
//! - the handshake carries `ext: {"ack": true}` (merged into any
//!   [`crate::ClientBuilder::handshake_ext`]);
//! - acks are on for the session only if the handshake reply agrees:
//!   `ext.ack == true`, or the object form CometD 5+ servers send,
//!   `{"enabled": true, "batch": n}` (then `n` is the batch to start from);
//! - every `/meta/connect` carries `ext: {"ack": N}`, the last batch
//!   received (0 before any);
//! - every *successful* `/meta/connect` reply's `ext.ack` becomes the last
//!   batch received, once the deliveries of its response have been handed to
//!   the application (`Session::dispatch` records it after dispatching, in
//!   the same call: on long-polling and on websocket alike, so a batch counts
//!   as received exactly when its deliveries did);
//! - a (re-)handshake starts over: off until the new reply says otherwise.
//!
//! The server keeps every batch until a connect acknowledges it and sends
//! again, in order, whatever came after the acknowledged one: a connect reply
//! lost with a broken connection costs nothing. With acks on, the server
//! sends deliveries only in connect replies.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The handshake `ext`: `base` (an object, or nothing) with `"ack": true`.
pub(crate) fn handshake_ext(base: Option<&RawValue>) -> Box<RawValue> {
    let mut ext = base
        .and_then(|raw| serde_json::from_str::<Map<String, Value>>(raw.get()).ok())
        .unwrap_or_default();
    ext.insert("ack".into(), Value::Bool(true));
    serde_json::value::to_raw_value(&ext).expect("a JSON object always serializes")
}

/// Whether a handshake reply's `ext` turns acks on, and from which batch.
pub(crate) fn negotiated(reply_ext: Option<&RawValue>) -> Option<u64> {
    match field(reply_ext)? {
        Value::Bool(true) => Some(0),
        Value::Object(ack) if ack.get("enabled") == Some(&Value::Bool(true)) => {
            Some(ack.get("batch").and_then(Value::as_u64).unwrap_or(0))
        }
        _ => None,
    }
}

/// The batch number a connect reply's `ext` carries.
pub(crate) fn batch(reply_ext: Option<&RawValue>) -> Option<u64> {
    field(reply_ext)?.as_u64()
}

/// A connect's `ext`: the last batch received.
pub(crate) fn connect_ext(batch: u64) -> Box<RawValue> {
    RawValue::from_string(format!(r#"{{"ack":{batch}}}"#)).expect("valid JSON")
}

/// `ext.ack`, if `ext` is an object that has it.
fn field(ext: Option<&RawValue>) -> Option<Value> {
    let mut ext = serde_json::from_str::<Map<String, Value>>(ext?.get()).ok()?;
    ext.remove("ack")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.into()).unwrap()
    }

    #[test]
    fn handshake_ext_merges_into_the_given_object() {
        assert_eq!(handshake_ext(None).get(), r#"{"ack":true}"#);
        let merged = handshake_ext(Some(&raw(r#"{"timesync":{"tc":1},"ack":false}"#)));
        let merged: Value = serde_json::from_str(merged.get()).unwrap();
        assert_eq!(
            merged,
            serde_json::json!({"timesync": {"tc": 1}, "ack": true})
        );
        assert_eq!(handshake_ext(Some(&raw("[1]"))).get(), r#"{"ack":true}"#);
    }

    #[test]
    fn negotiation_takes_true_or_the_object_form() {
        assert_eq!(negotiated(Some(&raw(r#"{"ack":true}"#))), Some(0));
        assert_eq!(
            negotiated(Some(&raw(r#"{"ack":{"enabled":true,"batch":12}}"#))),
            Some(12)
        );
        assert_eq!(
            negotiated(Some(&raw(r#"{"ack":{"enabled":true}}"#))),
            Some(0)
        );
        assert_eq!(
            negotiated(Some(&raw(r#"{"ack":{"enabled":false,"batch":3}}"#))),
            None
        );
        assert_eq!(negotiated(Some(&raw(r#"{"ack":false}"#))), None);
        assert_eq!(negotiated(Some(&raw(r#"{"other":1}"#))), None);
        assert_eq!(negotiated(Some(&raw("7"))), None);
        assert_eq!(negotiated(None), None);
    }

    #[test]
    fn connect_batches() {
        assert_eq!(connect_ext(0).get(), r#"{"ack":0}"#);
        assert_eq!(connect_ext(42).get(), r#"{"ack":42}"#);
        assert_eq!(batch(Some(&raw(r#"{"ack":42,"x":1}"#))), Some(42));
        assert_eq!(batch(Some(&raw(r#"{"ack":true}"#))), None);
        assert_eq!(batch(Some(&raw(r#"{"ack":-1}"#))), None);
        assert_eq!(batch(None), None);
    }
}
