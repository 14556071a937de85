//! The remote adapter protocol, version 1: the lines and nothing else (no
//! I/O), so every rule about what a line may say is tested without sockets.
//!
//! One JSON object per line (`\n`-terminated, UTF-8), with a `type` field.
//! Halley sends [`ToAdapter`] lines; it reads [`FromAdapter`] lines with
//! [`decode`]. Fields a side does not know are ignored, so a later 1.x may
//! add optional fields; anything incompatible gets a new `version`.
//! The full description, for adapter authors, is in `docs/adapters.md`.

use halley_protocol::{ChannelKind, ChannelName};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The `protocol` of every hello.
pub const PROTOCOL: &str = "halley-adapter";

/// The one version this Halley speaks.
pub const VERSION: u64 = 1;

/// The longest line accepted, newline excluded. A longer one is answered
/// with an `error` and the link is closed: reading it whole would let one
/// adapter make Halley hold any amount of memory.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// A line Halley sends to an adapter.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ToAdapter<'a> {
    /// The first line on every connection.
    Hello {
        protocol: &'static str,
        version: u64,
        /// The adapter's `name` in Halley's configuration.
        name: &'a str,
        /// The patterns of the channels the adapter owns.
        channels: &'a [String],
        /// Halley pings after this long without sending; an adapter may
        /// consider Halley gone after three times as long without a line.
        #[serde(rename = "pingIntervalMs")]
        ping_interval_ms: u64,
    },
    /// `channel` has its first subscriber: start feeding it.
    Subscribe {
        channel: &'a str,
    },
    /// `channel` lost its last subscriber: stop feeding it.
    Unsubscribe {
        channel: &'a str,
    },
    Ping,
    /// The answer to a `ping`.
    Pong,
    /// A line of the adapter's was refused (or the link is about to close).
    Error {
        message: &'a str,
    },
}

impl ToAdapter<'_> {
    /// Halley's hello.
    pub fn hello<'a>(
        name: &'a str,
        channels: &'a [String],
        ping_interval_ms: u64,
    ) -> ToAdapter<'a> {
        ToAdapter::Hello {
            protocol: PROTOCOL,
            version: VERSION,
            name,
            channels,
            ping_interval_ms,
        }
    }

    /// The line, newline included.
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: only strings, numbers, arrays.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// A line an adapter sends to Halley, checked.
#[derive(Debug)]
pub enum FromAdapter {
    /// The adapter's first line; `name` is informative only (for logs);
    /// `secret` must match the table's `secret` when one is set.
    Hello {
        name: Option<String>,
        secret: Option<String>,
    },
    /// One message for the subscribers of `channel`; `data` is passed on
    /// byte for byte.
    Publish {
        channel: ChannelName,
        data: Box<RawValue>,
    },
    /// The current state of `channel`, as a list of messages' `data`.
    Snapshot {
        channel: ChannelName,
        data: Vec<Box<RawValue>>,
    },
    Ping,
    Pong,
    /// The adapter refused one of Halley's lines; logged.
    Error {
        message: String,
    },
}

/// Why a line was refused. All are answered with an `error` line;
/// [`LineError::is_fatal`] ones also close the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Over [`MAX_LINE_BYTES`].
    TooLong,
    /// A hello of another protocol or version.
    Unsupported(String),
    /// Not JSON, not an object, a field missing or of the wrong type, an
    /// unknown `type`, a channel that cannot be published to.
    Invalid(String),
}

impl LineError {
    /// Whether the link closes after the `error` answer.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, LineError::Invalid(_))
    }

    /// What the `error` line says.
    pub fn message(&self) -> String {
        match self {
            LineError::TooLong => format!("line longer than {MAX_LINE_BYTES} bytes; closing"),
            LineError::Unsupported(why) => format!("{why}; closing"),
            LineError::Invalid(why) => why.clone(),
        }
    }
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// Every field any adapter line may carry. Decoded in one pass straight
/// from the text (not through a tagged enum, which would buffer `data` and
/// lose its exact bytes).
#[derive(Deserialize)]
struct AnyLine {
    #[serde(rename = "type")]
    kind: Option<String>,
    protocol: Option<String>,
    version: Option<u64>,
    name: Option<String>,
    secret: Option<String>,
    channel: Option<String>,
    data: Option<Box<RawValue>>,
    message: Option<String>,
}

/// Decodes one line (without its newline; a trailing `\r` is tolerated).
pub fn decode(line: &[u8]) -> Result<FromAdapter, LineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong);
    }
    let text =
        std::str::from_utf8(line).map_err(|_| LineError::Invalid("line is not UTF-8".into()))?;
    if !text.trim_start().starts_with('{') {
        return Err(LineError::Invalid("line is not a JSON object".into()));
    }
    let any: AnyLine = serde_json::from_str(text)
        .map_err(|e| LineError::Invalid(format!("line is not a valid object: {e}")))?;
    let Some(kind) = any.kind else {
        return Err(LineError::Invalid("line has no \"type\"".into()));
    };
    match kind.as_str() {
        "hello" => {
            if any.protocol.as_deref() != Some(PROTOCOL) {
                return Err(LineError::Unsupported(format!(
                    "hello: protocol must be \"{PROTOCOL}\", got {:?}",
                    any.protocol.unwrap_or_default()
                )));
            }
            match any.version {
                Some(VERSION) => Ok(FromAdapter::Hello {
                    name: any.name,
                    secret: any.secret,
                }),
                other => Err(LineError::Unsupported(format!(
                    "hello: version {} is not supported; this Halley speaks version {VERSION}",
                    other.map_or("(none)".to_owned(), |v| v.to_string())
                ))),
            }
        }
        "publish" => {
            let channel = channel(&kind, any.channel)?;
            let data = any
                .data
                .filter(|d| d.get() != "null")
                .ok_or_else(|| LineError::Invalid("publish: \"data\" is missing or null".into()))?;
            Ok(FromAdapter::Publish { channel, data })
        }
        "snapshot" => {
            let channel = channel(&kind, any.channel)?;
            let data = any
                .data
                .and_then(|d| serde_json::from_str::<Vec<Box<RawValue>>>(d.get()).ok())
                .ok_or_else(|| {
                    LineError::Invalid("snapshot: \"data\" must be an array of messages".into())
                })?;
            Ok(FromAdapter::Snapshot { channel, data })
        }
        "ping" => Ok(FromAdapter::Ping),
        "pong" => Ok(FromAdapter::Pong),
        "error" => Ok(FromAdapter::Error {
            message: any.message.unwrap_or_default(),
        }),
        other => Err(LineError::Invalid(format!(
            "unknown line type {other:?} (version {VERSION} knows hello, publish, snapshot, ping, pong, error)"
        ))),
    }
}

/// The `channel` of a publish or snapshot: a plain broadcast channel.
fn channel(kind: &str, channel: Option<String>) -> Result<ChannelName, LineError> {
    let Some(channel) = channel else {
        return Err(LineError::Invalid(format!(
            "{kind}: \"channel\" is missing"
        )));
    };
    let name = ChannelName::parse(&channel)
        .map_err(|e| LineError::Invalid(format!("{kind}: channel {channel:?}: {e}")))?;
    if name.kind() != ChannelKind::Broadcast {
        return Err(LineError::Invalid(format!(
            "{kind}: channel {channel:?}: only broadcast channels (not /meta or /service)"
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(line: &str) -> String {
        match decode(line.as_bytes()) {
            Err(LineError::Invalid(why)) => why,
            other => panic!("{line}: expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn halley_lines_encode_as_documented() {
        let channels = ["/stocks/*".to_owned()];
        assert_eq!(
            ToAdapter::hello("prices", &channels, 5000).encode(),
            "{\"type\":\"hello\",\"protocol\":\"halley-adapter\",\"version\":1,\"name\":\"prices\",\"channels\":[\"/stocks/*\"],\"pingIntervalMs\":5000}\n"
        );
        assert_eq!(
            ToAdapter::Subscribe {
                channel: "/stocks/A"
            }
            .encode(),
            "{\"type\":\"subscribe\",\"channel\":\"/stocks/A\"}\n"
        );
        assert_eq!(
            ToAdapter::Unsubscribe {
                channel: "/stocks/A"
            }
            .encode(),
            "{\"type\":\"unsubscribe\",\"channel\":\"/stocks/A\"}\n"
        );
        assert_eq!(ToAdapter::Ping.encode(), "{\"type\":\"ping\"}\n");
        assert_eq!(ToAdapter::Pong.encode(), "{\"type\":\"pong\"}\n");
        assert_eq!(
            ToAdapter::Error {
                message: "a \"quoted\"\nline"
            }
            .encode(),
            "{\"type\":\"error\",\"message\":\"a \\\"quoted\\\"\\nline\"}\n",
            "one line even when the message has a newline"
        );
    }

    #[test]
    fn a_publish_keeps_its_data_byte_for_byte() {
        let line = r#"{"type":"publish","channel":"/stocks/A","data":{"p": 1.50, "n":"Ä\u00e4"},"extra":true}"#;
        match decode(line.as_bytes()).unwrap() {
            FromAdapter::Publish { channel, data } => {
                assert_eq!(channel.as_str(), "/stocks/A");
                assert_eq!(data.get(), r#"{"p": 1.50, "n":"Ä\u00e4"}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_snapshot_is_a_list_of_messages() {
        let line = br#"{"type":"snapshot","channel":"/s","data":[{"a":1}, 2 ,"x"]}"#;
        match decode(line).unwrap() {
            FromAdapter::Snapshot { channel, data } => {
                assert_eq!(channel.as_str(), "/s");
                let got: Vec<&str> = data.iter().map(|d| d.get()).collect();
                assert_eq!(got, [r#"{"a":1}"#, "2", r#""x""#]);
            }
            other => panic!("{other:?}"),
        }
        assert!(invalid(r#"{"type":"snapshot","channel":"/s","data":{"a":1}}"#).contains("array"));
        assert!(invalid(r#"{"type":"snapshot","channel":"/s"}"#).contains("array"));
    }

    #[test]
    fn hello_ping_pong_error_and_a_crlf_ending() {
        assert!(matches!(
            decode(br#"{"type":"hello","protocol":"halley-adapter","version":1,"name":"feed","future":1}"#),
            Ok(FromAdapter::Hello { name: Some(n), secret: None }) if n == "feed"
        ));
        assert!(matches!(
            decode(b"{\"type\":\"ping\"}\r"),
            Ok(FromAdapter::Ping)
        ));
        assert!(matches!(
            decode(br#"{"type":"pong"}"#),
            Ok(FromAdapter::Pong)
        ));
        assert!(matches!(
            decode(br#"{"type":"error","message":"no"}"#),
            Ok(FromAdapter::Error { message }) if message == "no"
        ));
    }

    #[test]
    fn another_version_or_protocol_is_fatal() {
        for line in [
            r#"{"type":"hello","protocol":"halley-adapter","version":2}"#,
            r#"{"type":"hello","protocol":"halley-adapter"}"#,
            r#"{"type":"hello","protocol":"other","version":1}"#,
        ] {
            let error = decode(line.as_bytes()).unwrap_err();
            assert!(error.is_fatal(), "{line}");
            assert!(matches!(error, LineError::Unsupported(_)), "{line}");
        }
        let error = decode(br#"{"type":"hello","protocol":"halley-adapter","version":2}"#)
            .unwrap_err()
            .message();
        assert!(
            error.contains("version 2") && error.contains("version 1"),
            "{error}"
        );
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason_and_are_not_fatal() {
        for (line, says) in [
            ("not json", "not a JSON object"),
            ("[1,2]", "not a JSON object"),
            ("{\"type\":", "not a valid object"),
            (r#"{"channel":"/a"}"#, "no \"type\""),
            (r#"{"type":"dance"}"#, "unknown line type"),
            (r#"{"type":"publish","data":1}"#, "\"channel\" is missing"),
            (r#"{"type":"publish","channel":"/a"}"#, "missing or null"),
            (
                r#"{"type":"publish","channel":"/a","data":null}"#,
                "missing or null",
            ),
            (r#"{"type":"publish","channel":"a","data":1}"#, "'/'"),
            (r#"{"type":"publish","channel":"/a/*","data":1}"#, "glob"),
            (
                r#"{"type":"publish","channel":"/meta/connect","data":1}"#,
                "broadcast",
            ),
            (
                r#"{"type":"snapshot","channel":"/service/x","data":[]}"#,
                "broadcast",
            ),
            (
                r#"{"type":"publish","channel":7,"data":1}"#,
                "not a valid object",
            ),
        ] {
            let why = invalid(line);
            assert!(why.contains(says), "{line}: {why}");
        }
        assert!(!LineError::Invalid(String::new()).is_fatal());
        assert!(matches!(decode(b"\xff\xfe"), Err(LineError::Invalid(_))));
    }

    #[test]
    fn an_oversized_line_is_fatal() {
        let big = format!(
            r#"{{"type":"publish","channel":"/a","data":"{}"}}"#,
            "x".repeat(MAX_LINE_BYTES)
        );
        let error = decode(big.as_bytes()).unwrap_err();
        assert_eq!(error, LineError::TooLong);
        assert!(error.is_fatal());
        let fits = format!(
            r#"{{"type":"publish","channel":"/a","data":"{}"}}"#,
            "x".repeat(MAX_LINE_BYTES - 100)
        );
        assert!(decode(fits.as_bytes()).is_ok());
    }
}
