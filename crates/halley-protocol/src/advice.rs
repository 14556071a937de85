//! The `advice` object: how the server tells a client when and how to come back.
//!
//! Clients act on `reconnect`, never on the error text, so every reply that
//! needs the client to change course carries one (see `docs` of
//! [`Reconnect`]). Inbound, clients send advice too: the first `/meta/connect`
//! carries `{"timeout": 0}` to ask for an immediate answer.

use serde::{Deserialize, Serialize};

/// What the client should do after this reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reconnect {
    /// Send the next `/meta/connect` (after `interval`).
    Retry,
    /// The session is gone: start again with `/meta/handshake`.
    Handshake,
    /// Give up: the server will not accept this client.
    None,
}

/// The advice fields CometD uses. Absent fields are omitted on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Advice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<Reconnect>,
    /// Milliseconds the client waits before its next connect.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_millis"
    )]
    pub interval: Option<i64>,
    /// Milliseconds the server may hold a `/meta/connect`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_millis"
    )]
    pub timeout: Option<i64>,
    /// Milliseconds the server keeps a session between two connects.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_millis"
    )]
    pub max_interval: Option<i64>,
    /// Set when another session of the same browser already holds a long poll.
    #[serde(
        default,
        rename = "multiple-clients",
        skip_serializing_if = "Option::is_none"
    )]
    pub multiple_clients: Option<bool>,
}

impl Advice {
    /// `{"reconnect":"retry","interval":..,"timeout":..}`: what a healthy session hears.
    pub fn retry(interval: i64, timeout: i64) -> Self {
        Advice {
            reconnect: Some(Reconnect::Retry),
            interval: Some(interval),
            timeout: Some(timeout),
            ..Advice::default()
        }
    }

    /// `{"reconnect":"handshake","interval":..}`: the session is unknown or expired.
    pub fn handshake(interval: i64) -> Self {
        Advice {
            reconnect: Some(Reconnect::Handshake),
            interval: Some(interval),
            ..Advice::default()
        }
    }

    /// `{"reconnect":"none"}`: do not come back.
    pub fn none() -> Self {
        Advice {
            reconnect: Some(Reconnect::None),
            ..Advice::default()
        }
    }
}

/// Clients written in JavaScript may send `1000.0` where an integer is meant;
/// accept any JSON number and round it, rather than failing the whole message.
fn lenient_millis<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value: Option<serde_json::Number> = Option::deserialize(deserializer)?;
    Ok(value.and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_only_present_fields_with_wire_names() {
        let mut advice = Advice::retry(0, 20000);
        advice.multiple_clients = Some(true);
        assert_eq!(
            serde_json::to_string(&advice).unwrap(),
            r#"{"reconnect":"retry","interval":0,"timeout":20000,"multiple-clients":true}"#
        );
        assert_eq!(
            serde_json::to_string(&Advice::handshake(0)).unwrap(),
            r#"{"reconnect":"handshake","interval":0}"#
        );
    }

    #[test]
    fn accepts_fractional_millis() {
        let advice: Advice = serde_json::from_str(r#"{"timeout":0.0,"maxInterval":10}"#).unwrap();
        assert_eq!(advice.timeout, Some(0));
        assert_eq!(advice.max_interval, Some(10));
    }
}
