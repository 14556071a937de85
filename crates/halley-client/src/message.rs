//! The client's side of the wire.
//!
//! The protocol crate models the *server's* view (it parses [`Message`]s and
//! writes [`Reply`]s); a client needs the mirror image: it writes
//! [`Outgoing`] messages and parses [`Incoming`] ones. Both reuse the
//! protocol's [`Advice`] and [`Subscription`] so the two sides cannot drift.
//!
//! An incoming message is either a *reply* (to a meta message, a publish or a
//! service request: it carries `successful`) or a *delivery* (a broadcast, or a
//! server-to-client message: no `successful`). A publisher that is also a
//! subscriber can get both for one publish, with the same `channel` and `id`,
//! so `successful` is the only reliable tell.
//!
//! [`Message`]: halley_protocol::Message
//! [`Reply`]: halley_protocol::Reply

use halley_protocol::{Advice, Subscription};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, ServerError};

/// A message the client sends.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outgoing {
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supported_connection_types: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<Advice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext: Option<Box<RawValue>>,
}

impl Outgoing {
    pub fn new(channel: impl Into<String>) -> Self {
        Outgoing {
            channel: channel.into(),
            ..Outgoing::default()
        }
    }
}

/// A message the server sends: a reply or a delivery. Every field is
/// optional and unknown fields are ignored; `data` and `ext` stay raw JSON
/// until someone asks for them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incoming {
    #[serde(default)]
    pub channel: String,
    /// The message id as text: a JSON string unquoted, a number as written.
    #[serde(default, deserialize_with = "id_as_text")]
    pub id: Option<String>,
    pub client_id: Option<String>,
    pub successful: Option<bool>,
    pub error: Option<String>,
    pub advice: Option<Advice>,
    pub subscription: Option<Subscription>,
    pub version: Option<String>,
    pub supported_connection_types: Option<Vec<String>>,
    pub data: Option<Box<RawValue>>,
    pub ext: Option<Box<RawValue>>,
}

impl Incoming {
    /// A reply (to a meta message, publish or service request), as opposed
    /// to a delivery.
    pub fn is_reply(&self) -> bool {
        self.successful.is_some() || self.channel.starts_with("/meta/")
    }

    pub fn is_successful(&self) -> bool {
        self.successful == Some(true)
    }

    /// This refusal (`successful: false`) of `sent` as an [`Error`]: its
    /// channel (the sent message's when the reply names none), error string
    /// and advice.
    pub(crate) fn refusal(&self, sent: &Outgoing) -> Error {
        Error::Refused {
            channel: if self.channel.is_empty() {
                sent.channel.clone()
            } else {
                self.channel.clone()
            },
            error: ServerError::new(self.error.clone().unwrap_or_default()),
            advice: self.advice.clone(),
        }
    }
}

fn id_as_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// Parses a response body: a JSON array of messages (a bare object is
/// accepted too, as servers may answer that way to a single message).
pub(crate) fn decode_response(body: &[u8]) -> Result<Vec<Incoming>, Error> {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let parsed = if first == Some(b'{') {
        serde_json::from_slice::<Incoming>(body).map(|m| vec![m])
    } else {
        serde_json::from_slice::<Vec<Incoming>>(body)
    };
    parsed.map_err(|e| {
        let preview: String = String::from_utf8_lossy(body).chars().take(200).collect();
        Error::Malformed(format!("{e}; body starts {preview:?}"))
    })
}

/// Encodes a batch as a request body.
pub(crate) fn encode_batch(messages: &[Outgoing]) -> Vec<u8> {
    serde_json::to_vec(messages).expect("outgoing messages always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use halley_protocol::Reconnect;

    #[test]
    fn outgoing_uses_wire_names_and_omits_absent_fields() {
        let mut m = Outgoing::new("/meta/connect");
        m.id = Some("2".into());
        m.client_id = Some("abc".into());
        m.connection_type = Some("long-polling");
        m.advice = Some(Advice {
            timeout: Some(0),
            ..Advice::default()
        });
        assert_eq!(
            String::from_utf8(encode_batch(&[m])).unwrap(),
            r#"[{"channel":"/meta/connect","id":"2","clientId":"abc","connectionType":"long-polling","advice":{"timeout":0}}]"#
        );
    }

    #[test]
    fn tells_replies_from_deliveries() {
        let batch = decode_response(
            br#"[{"channel":"/chat","data":{"t":1},"id":"4"},
                 {"channel":"/chat","id":"4","successful":true},
                 {"channel":"/meta/connect","successful":false,"error":"402::session_unknown",
                  "advice":{"reconnect":"handshake","interval":0}}]"#,
        )
        .unwrap();
        assert!(!batch[0].is_reply());
        assert_eq!(batch[0].data.as_ref().unwrap().get(), r#"{"t":1}"#);
        assert!(batch[1].is_reply() && batch[1].is_successful());
        assert!(batch[2].is_reply() && !batch[2].is_successful());
        assert_eq!(
            batch[2].advice.as_ref().unwrap().reconnect,
            Some(Reconnect::Handshake)
        );
    }

    #[test]
    fn ids_become_text() {
        let batch = decode_response(br#"[{"id":"7"},{"id":8},{"id":null},{}]"#).unwrap();
        let ids: Vec<_> = batch.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids, [Some("7".into()), Some("8".into()), None, None]);
    }

    #[test]
    fn bare_object_and_errors() {
        assert_eq!(decode_response(br#" {"channel":"/a"}"#).unwrap().len(), 1);
        assert!(matches!(
            decode_response(b"<html>"),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(decode_response(b"42"), Err(Error::Malformed(_))));
    }
}
