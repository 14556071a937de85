//! The two shapes of a Bayeux message Halley handles.
//!
//! [`Message`] is what a client sends, parsed leniently: every field optional,
//! unknown fields ignored, and `data`, `ext` and `id` kept as raw JSON because
//! the server passes them through without looking inside (encode once, never
//! re-parse). [`Reply`] is what the server answers on a meta or publish
//! message; broadcasts to subscribers are not `Reply`s but pre-encoded bytes
//! (see [`crate::codec::encode_delivery`]).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::advice::Advice;

/// `subscription` may be one channel or an array of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Subscription {
    One(String),
    Many(Vec<String>),
}

impl Subscription {
    pub fn channels(&self) -> &[String] {
        match self {
            Subscription::One(one) => std::slice::from_ref(one),
            Subscription::Many(many) => many,
        }
    }
}

/// A message as a client sends it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub channel: Option<String>,
    /// Kept raw: clients send strings (CometD, Faye) but the spec lets any
    /// JSON through and the reply must echo it byte for byte.
    pub id: Option<Box<RawValue>>,
    pub client_id: Option<String>,
    pub version: Option<String>,
    pub minimum_version: Option<String>,
    pub supported_connection_types: Option<Vec<String>>,
    pub connection_type: Option<String>,
    pub subscription: Option<Subscription>,
    pub advice: Option<Advice>,
    /// `None` only when absent: `"data": null` is data (JSON's `null`).
    #[serde(default, deserialize_with = "present")]
    pub data: Option<Box<RawValue>>,
    pub ext: Option<Box<RawValue>>,
}

/// Reads a field that is there as `Some`, `null` included (serde's `Option`
/// reads `null` as `None`); with `#[serde(default)]`, an absent one is `None`.
pub fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

impl Message {
    /// `id` must be a JSON string or number when present (`405::message_id_invalid` otherwise).
    pub fn id_is_valid(&self) -> bool {
        match &self.id {
            None => true,
            Some(raw) => {
                let first = raw.get().as_bytes().first().copied();
                matches!(first, Some(b'"' | b'-' | b'0'..=b'9'))
            }
        }
    }
}

/// A reply from the server: to a meta message, a publish, or a service request.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    /// Empty only when replying to a message whose channel could not be read.
    /// Borrowed for the meta channels' replies (no allocation per reply).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub channel: Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successful: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supported_connection_types: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<Advice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext: Option<Box<RawValue>>,
}

impl Reply {
    /// A reply on `channel` echoing the request's `id`.
    pub fn to(channel: impl Into<Cow<'static, str>>, id: Option<Box<RawValue>>) -> Self {
        Reply {
            channel: channel.into(),
            id,
            ..Reply::default()
        }
    }

    pub fn success(mut self) -> Self {
        self.successful = Some(true);
        self
    }

    pub fn failure(mut self, error: crate::BayeuxError) -> Self {
        self.successful = Some(false);
        self.error = Some(error.to_string());
        self
    }

    pub fn with_advice(mut self, advice: Advice) -> Self {
        self.advice = Some(advice);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_cometd_handshake() {
        let m: Message = serde_json::from_str(
            r#"{"id":"1","channel":"/meta/handshake","version":"1.0","minimumVersion":"1.0",
                "supportedConnectionTypes":["websocket","long-polling"],"advice":{"timeout":60000,"interval":0},
                "ext":{"ack":true},"unknown":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(m.channel.as_deref(), Some("/meta/handshake"));
        assert_eq!(m.id.as_ref().unwrap().get(), r#""1""#);
        assert_eq!(m.supported_connection_types.unwrap().len(), 2);
        assert_eq!(m.advice.unwrap().timeout, Some(60000));
        assert_eq!(m.ext.unwrap().get(), r#"{"ack":true}"#);
    }

    #[test]
    fn subscription_is_one_or_many() {
        let m: Message = serde_json::from_str(r#"{"subscription":"/a"}"#).unwrap();
        assert_eq!(m.subscription.unwrap().channels(), ["/a"]);
        let m: Message = serde_json::from_str(r#"{"subscription":["/a","/b/*"]}"#).unwrap();
        assert_eq!(m.subscription.unwrap().channels(), ["/a", "/b/*"]);
    }

    #[test]
    fn id_validity() {
        for (raw, ok) in [
            (r#""7""#, true),
            ("7", true),
            ("-1", true),
            ("{}", false),
            ("null", true),
            ("[1]", false),
        ] {
            let m: Message = serde_json::from_str(&format!(r#"{{"id":{raw}}}"#)).unwrap();
            assert_eq!(m.id_is_valid(), ok, "{raw}");
        }
    }

    #[test]
    fn reply_omits_absent_fields_and_keeps_raw_values() {
        let id = RawValue::from_string(r#""9""#.into()).unwrap();
        let reply =
            Reply::to("/meta/subscribe", Some(id)).failure(crate::BayeuxError::SUBSCRIBE_DENIED);
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"channel":"/meta/subscribe","id":"9","successful":false,"error":"403::subscribe_denied"}"#
        );
    }

    #[test]
    fn null_data_is_data_and_absent_data_is_none() {
        let null: Message = serde_json::from_str(r#"{"channel":"/a","data":null}"#).unwrap();
        assert_eq!(null.data.as_deref().map(RawValue::get), Some("null"));
        let absent: Message = serde_json::from_str(r#"{"channel":"/a"}"#).unwrap();
        assert!(absent.data.is_none());
    }
}
