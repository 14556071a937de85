//! Errors are values: every way a request can fail, with the server's own
//! Bayeux error string when it refused something.

use std::fmt;

use halley_protocol::Advice;

/// A Bayeux error string as the server sent it: `code:args:message`
/// (CometD: `402::session_unknown`). Kept verbatim; the accessors split it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    raw: String,
}

impl ServerError {
    pub fn new(raw: impl Into<String>) -> Self {
        ServerError { raw: raw.into() }
    }

    /// The string exactly as on the wire (empty if the reply had no `error`).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The numeric code before the first `:`, when there is one.
    pub fn code(&self) -> Option<u16> {
        self.raw.split(':').next()?.trim().parse().ok()
    }

    /// The comma-separated arguments between the first and second `:`.
    pub fn args(&self) -> Vec<&str> {
        match self.raw.split(':').nth(1) {
            Some("") | None => Vec::new(),
            Some(args) => args.split(',').collect(),
        }
    }

    /// The text after the second `:` (`session_unknown`); the whole string
    /// when it does not have the three-part shape.
    pub fn message(&self) -> &str {
        let mut parts = self.raw.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(_), Some(_), Some(message)) => message,
            _ => &self.raw,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.raw.is_empty() {
            f.write_str("(no error given)")
        } else {
            f.write_str(&self.raw)
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The HTTP exchange itself failed: connection refused, reset, timed out
    /// (for websocket: the upgrade request).
    #[error("HTTP request to the Bayeux endpoint failed: {0}")]
    Http(#[from] reqwest::Error),

    /// A long-polling connection failed: it could not be opened, or broke
    /// before the response was complete (or the URL is not an `http://` one).
    /// The next request uses another connection.
    #[error("HTTP connection to the Bayeux endpoint failed: {0}")]
    Connection(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The server answered with an HTTP status other than 200.
    #[error("the server answered HTTP {status}: {}", String::from_utf8_lossy(.body))]
    Status { status: u16, body: bytes::Bytes },

    /// The server answered the WebSocket upgrade request with an HTTP status
    /// other than 101 (Halley answers 400 when started with `--websocket false`).
    #[error("the server refused the WebSocket upgrade with HTTP {status}: {}", String::from_utf8_lossy(.body).trim())]
    UpgradeRefused { status: u16, body: bytes::Bytes },

    /// The WebSocket failed: it closed or broke before the reply came, or its
    /// upgrade was malformed. The next request opens a new socket.
    #[error("WebSocket to the Bayeux endpoint failed: {0}")]
    WebSocket(String),

    /// No reply came within the time the exchange was given.
    #[error("no reply from the server within {0:?}")]
    Timeout(std::time::Duration),

    /// The response body is not a JSON array of Bayeux messages.
    #[error("the server's response is not a Bayeux message array: {0}")]
    Malformed(String),

    /// The server answered `successful: false`.
    #[error("the server refused {channel}: {error}")]
    Refused {
        channel: String,
        error: ServerError,
        advice: Option<Advice>,
    },

    /// The response did not contain a reply to the message that was sent.
    #[error("the response carried no reply to {channel} (message id {id})")]
    NoReply { channel: String, id: String },

    /// An operation that needs a session was called before `handshake()`
    /// succeeded, or after `disconnect()`.
    #[error("no Bayeux session: call handshake() first")]
    NotHandshaken,

    /// The CA certificates given to trust could not be read
    /// ([`crate::Trust::with_ca_file`]).
    #[error("TLS: {0}")]
    Tls(String),

    /// The data to publish could not be encoded as JSON.
    #[error("data could not be encoded as JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

impl Error {
    /// The server's error string, when the server refused the message.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Refused { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The advice that came with a refusal.
    pub fn advice(&self) -> Option<&Advice> {
        match self {
            Error::Refused { advice, .. } => advice.as_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cometd_error_strings() {
        let e = ServerError::new("402::session_unknown");
        assert_eq!(e.code(), Some(402));
        assert!(e.args().is_empty());
        assert_eq!(e.message(), "session_unknown");
        assert_eq!(e.to_string(), "402::session_unknown");

        let e = ServerError::new("403:/meta/x,a:denied: really");
        assert_eq!(e.code(), Some(403));
        assert_eq!(e.args(), ["/meta/x", "a"]);
        assert_eq!(e.message(), "denied: really");
    }

    #[test]
    fn tolerates_odd_error_strings() {
        let e = ServerError::new("oops");
        assert_eq!(e.code(), None);
        assert_eq!(e.message(), "oops");
        assert_eq!(ServerError::new("").to_string(), "(no error given)");
    }

    #[test]
    fn refusal_exposes_error_and_advice() {
        let err = Error::Refused {
            channel: "/meta/connect".into(),
            error: ServerError::new("402::session_unknown"),
            advice: Some(Advice::handshake(0)),
        };
        assert_eq!(err.server_error().unwrap().code(), Some(402));
        assert_eq!(
            err.advice().unwrap().reconnect,
            Some(halley_protocol::Reconnect::Handshake)
        );
        assert_eq!(
            err.to_string(),
            "the server refused /meta/connect: 402::session_unknown"
        );
    }
}
