//! What a session was granted at handshake: who it speaks for and its limits.
//!
//! A Metadata Adapter ([`crate::metadata`]) authenticates a handshake and
//! names the user; it may also set per-user limits. Sessions of a server
//! without one are anonymous and get the configured defaults. The grant is
//! set once, right after the session is created and before its clientId is
//! returned, so readers on the delivery path never lock.

/// Per-session limits; `None` means "the server's configured default".
#[derive(Debug, Clone, Default, PartialEq)]
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// The authenticated user, or `None` for an anonymous session.
    pub user: Option<Box<str>>,
    pub limits: SessionLimits,
}

impl Grant {
    /// An anonymous session with the default limits.
    pub fn anonymous() -> Self {
        Grant::default()
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}
