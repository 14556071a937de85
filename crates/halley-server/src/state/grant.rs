//! What a session was granted at handshake: who it speaks for and its limits.
//!
//! A Metadata Adapter ([`crate::metadata`]) authenticates a handshake and
//! names the user; it may also set per-user limits. Sessions of a server
//! without one are anonymous and get the configured defaults. The grant is
//! set once, right after the session is created and before its clientId is
//! returned, so readers on the delivery path never lock. Credentials with
//! an end (a JWT's `exp`) set [`Grant::expires_ms`]: the session ends with
//! them, unless its client presents fresh ones (see `credentials.rs`).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Per-session limits; `None` means "the server's configured default".
/// In JSON (token claims, webhook answers) the keys are kebab-case:
/// `{"max-frequency": 10, "max-bandwidth": 65536, "max-publish-rate": 5}`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SessionLimits {
    /// Most deliveries per second on one channel for this session (QoS),
    /// on top of any `[[qos]]` rule of the channel (the lower wins).
    pub max_frequency: Option<f64>,
    /// Most bytes of deliveries per second sent to this session.
    pub max_bandwidth: Option<u64>,
    /// Most publishes per second this session may make.
    pub max_publish_rate: Option<f64>,
}

/// The identity and limits of a session.
#[derive(Clone, Default)]
pub struct Grant {
    /// The authenticated user, or `None` for an anonymous session.
    pub user: Option<Box<str>>,
    pub limits: SessionLimits,
    /// What the Metadata Adapter wants to remember about the session (e.g.
    /// the channel patterns a token allows), for its later subscribe and
    /// publish checks: kept with the session, so it cannot outlive it.
    pub attachment: Option<Arc<dyn Any + Send + Sync>>,
    /// When the credentials stop being valid, in wall-clock milliseconds
    /// since the Unix epoch (any tolerated clock skew included); `None`:
    /// they do not expire. The session is refused from then on
    /// (`401::token_expired`, advice to handshake again).
    pub expires_ms: Option<i64>,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("user", &self.user)
            .field("limits", &self.limits)
            .field("attachment", &self.attachment.is_some())
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

impl Grant {
    /// An anonymous session with the default limits.
    pub fn anonymous() -> Self {
        Grant::default()
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The attachment, if it is a `T`.
    pub fn attachment<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.attachment.as_deref()?.downcast_ref()
    }
}
