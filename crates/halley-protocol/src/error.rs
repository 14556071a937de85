//! Bayeux error strings: `code:args:message`.
//!
//! CometD leaves `args` empty and puts a snake_case reason in `message`
//! (`402::session_unknown`); clients act on the accompanying advice, not on
//! the text, but people read it in logs, so the reasons are CometD's own.

use std::fmt;

/// One error a reply can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BayeuxError {
    pub code: u16,
    pub reason: &'static str,
}

macro_rules! errors {
    ($($name:ident = $code:literal, $reason:literal;)*) => {
        impl BayeuxError {
            $(pub const $name: BayeuxError = BayeuxError { code: $code, reason: $reason };)*
        }
    };
}

errors! {
    CHANNEL_MISSING = 400, "channel_missing";
    MESSAGE_INVALID = 400, "message_invalid";
    VERSION_MISSING = 400, "version_missing";
    VERSION_UNSUPPORTED = 400, "version_unsupported";
    CONNECTION_TYPE_MISSING = 400, "connection_type_missing";
    DATA_MISSING = 400, "data_missing";
    CLIENT_ID_MISSING = 402, "client_id_missing";
    SESSION_UNKNOWN = 402, "session_unknown";
    HANDSHAKE_DENIED = 403, "handshake_denied";
    CONNECTION_TYPE_UNSUPPORTED = 403, "connection_type_unsupported";
    SUBSCRIPTION_MISSING = 403, "subscription_missing";
    SUBSCRIPTION_INVALID = 403, "subscription_invalid";
    SUBSCRIBE_DENIED = 403, "subscribe_denied";
    PUBLISH_DENIED = 403, "publish_denied";
    CREATE_DENIED = 403, "create_denied";
    BATCH_TOO_LARGE = 413, "batch_too_large";
    PUBLISH_RATE_EXCEEDED = 429, "publish_rate_exceeded";
    MESSAGE_DELETED = 404, "message_deleted";
    SERVICE_UNKNOWN = 404, "service_unknown";
    SERVICE_FAILED = 500, "service_failed";
    CHANNEL_INVALID = 405, "channel_invalid";
    MESSAGE_ID_INVALID = 405, "message_id_invalid";
    // Limits a client hit (see Halley's docs/security.md).
    HANDSHAKE_ONCE_PER_REQUEST = 400, "one_handshake_per_request";
    HANDSHAKE_RATE_EXCEEDED = 429, "handshake_rate_exceeded";
    SESSIONS_EXHAUSTED = 503, "sessions_exhausted";
    TOO_MANY_CHANNELS = 400, "too_many_channels";
    TOO_MANY_SUBSCRIPTIONS = 403, "too_many_subscriptions";
    DATA_TOO_DEEP = 400, "data_too_deep";
    // Credentials with an end (a JWT's `exp`): the session ends with them.
    TOKEN_EXPIRED = 401, "token_expired";
    REFRESH_DENIED = 401, "refresh_denied";
}

impl fmt::Display for BayeuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.code, self.reason)
    }
}

impl std::error::Error for BayeuxError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_code_empty_args_reason() {
        assert_eq!(
            BayeuxError::SESSION_UNKNOWN.to_string(),
            "402::session_unknown"
        );
        assert_eq!(
            BayeuxError::CHANNEL_INVALID.to_string(),
            "405::channel_invalid"
        );
    }
}
