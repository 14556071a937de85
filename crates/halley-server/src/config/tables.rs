//! The array-of-table settings, file-only: `[[history]]`, `[[lazy]]`,
//! `[[overflow]]`, `[[qos]]` and `[[remote-adapter]]`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::state::outbox::OverflowPolicy;
use crate::state::throttle::Mode;

/// History kept for replay on the channels matching one pattern (TOML:
/// `[[history]]` tables with `pattern`, `max-messages` and/or `max-age-ms`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ChannelHistory {
    pub pattern: String,
    pub max_messages: Option<usize>,
    pub max_age_ms: Option<u64>,
}

impl ChannelHistory {
    pub fn retention(&self) -> crate::history::Retention {
        crate::history::Retention {
            max_messages: self.max_messages,
            max_age_ms: self.max_age_ms,
        }
    }
}

/// Lazy channels (TOML: `[[lazy]]` tables with `pattern` and optionally
/// `max-lazy-timeout`): their messages do not wake a client; they wait for
/// the next flush, at most `max-lazy-timeout` ms.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ChannelLazy {
    pub pattern: String,
    pub max_lazy_timeout: Option<u64>,
}

/// The overflow policy of the channels matching one pattern (TOML:
/// `[[overflow]]` tables with `pattern` and `policy`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelOverflow {
    /// A channel or glob (`/chat/**`).
    pub pattern: String,
    pub policy: OverflowPolicy,
}

/// The most updates per second each session receives on each channel
/// matching one pattern (TOML: `[[qos]]` tables with `pattern`,
/// `max-frequency`, optionally `mode` and, for merge, `key`). See
/// `qos.rs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ChannelQos {
    /// A channel or glob (`/stocks/**`).
    pub pattern: String,
    /// Updates per second per channel per session (> 0; `0.5` is one every 2 s).
    pub max_frequency: f64,
    /// `merge` (the default: keep the latest) or `distinct` (keep all).
    #[serde(default)]
    pub mode: Mode,
    /// Merge only: a top-level field of the message `data` (`"symbol"`);
    /// conflation is then per channel and value of that field.
    pub key: Option<String>,
}

/// A remote Data Adapter: a process in any language, linked over TCP
/// (TOML: `[[remote-adapter]]` tables; see [`crate::adapter::remote`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RemoteAdapterConfig {
    /// Names the adapter in Halley's hello and in logs.
    pub name: String,
    /// The patterns of the channels the adapter owns (`/stocks/*`).
    pub channels: Vec<String>,
    /// Halley dials the adapter at this `host:port`...
    pub connect: Option<String>,
    /// ...or accepts adapter connections on this address (exactly one of the two).
    pub listen: Option<SocketAddr>,
    /// Halley pings after this long without sending; a link silent for
    /// three times as long is closed and made again.
    #[serde(default = "RemoteAdapterConfig::default_ping_interval_ms")]
    pub ping_interval_ms: u64,
    /// Messages kept per listened channel (the last published, or the
    /// adapter's snapshot) and given first to each new subscriber.
    #[serde(default = "RemoteAdapterConfig::default_snapshot_length")]
    pub snapshot_length: usize,
    /// What the adapter's hello must carry as `secret` (none: any hello is
    /// accepted, which is safe on loopback only; Halley warns otherwise).
    #[serde(default)]
    pub secret: Option<String>,
}

impl RemoteAdapterConfig {
    /// Most messages `snapshot-length` may keep per channel: each may be up
    /// to a line long (1 MiB), so this bounds the memory of one channel.
    pub const MAX_SNAPSHOT_LENGTH: usize = 1000;

    fn default_ping_interval_ms() -> u64 {
        5_000
    }

    fn default_snapshot_length() -> usize {
        1
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// Checks one table; errors name the adapter.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.trim().is_empty() {
            return Err("remote-adapter: name must not be empty".into());
        }
        if self.channels.is_empty() {
            return Err(format!(
                "remote-adapter {name:?}: channels must list at least one pattern"
            ));
        }
        for pattern in &self.channels {
            let parsed = halley_protocol::ChannelPattern::parse(pattern)
                .map_err(|e| format!("remote-adapter {name:?}: channel {pattern:?}: {e}"))?;
            if parsed.kind() != halley_protocol::ChannelKind::Broadcast {
                return Err(format!(
                    "remote-adapter {name:?}: channel {pattern:?}: only broadcast channels can be fed (not /meta or /service)"
                ));
            }
        }
        match (&self.connect, &self.listen) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(format!(
                    "remote-adapter {name:?}: set exactly one of connect (Halley dials the adapter) or listen (the adapter dials Halley)"
                ))
            }
            (Some(address), None) => {
                let valid = address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !valid {
                    return Err(format!(
                        "remote-adapter {name:?}: connect must be host:port, got {address:?}"
                    ));
                }
            }
            (None, Some(_)) => {}
        }
        if self.ping_interval_ms < 10 {
            return Err(format!(
                "remote-adapter {name:?}: ping-interval-ms must be at least 10"
            ));
        }
        if self.snapshot_length > Self::MAX_SNAPSHOT_LENGTH {
            return Err(format!(
                "remote-adapter {name:?}: snapshot-length must be at most {}",
                Self::MAX_SNAPSHOT_LENGTH
            ));
        }
        Ok(())
    }
}
