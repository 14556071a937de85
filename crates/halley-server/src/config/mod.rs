//! Server settings, with CometD's defaults where the protocol has one.
//!
//! The `halley` binary fills [`Config`] from its defaults, a TOML file,
//! `HALLEY_*` environment variables and flags (in rising priority).
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Config::validate`], the Metadata Adapter a config asks for, [`Config::features`] (the start-up log) |
//! | [`listen`] | `HOST:PORT` or `PORT`, host names resolved: what `listen` and `admin-listen` take |
//! | [`tables`] | the array-of-table settings (`[[qos]]`, `[[history]]`, ...), file-only |
//! | [`settings`](mod@settings) | the one declaration of every scalar setting: the [`Config`] struct, its defaults, help and [`Setting`] descriptors |

use std::sync::Arc;
use std::time::Duration;

use crate::metadata::jwt::JwtConfig;
use crate::metadata::webhook::WebhookConfig;
use crate::metadata::MetadataAdapter;
use crate::state::outbox::OutboxLimits;
use crate::state::throttle::Mode;

pub mod listen;
pub mod settings;
pub mod tables;

pub use settings::{setting, settings, AdminListen, Config, LogFormat, Setting, Shape, Shown};
pub use tables::{ChannelHistory, ChannelLazy, ChannelOverflow, ChannelQos, RemoteAdapterConfig};

/// The shortest API key accepted: shorter ones can be guessed.
pub const MIN_API_KEY_CHARS: usize = 16;

impl Config {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout)
    }

    /// How long a draining node keeps serving before moving clients away.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay)
    }

    /// How long a draining node takes to move its clients away.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout)
    }

    /// Whether the public listener serves HTTPS (`tls-cert` and `tls-key`).
    pub fn serves_tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// Whether the browser cookie is marked `Secure`: asked for
    /// (`cookie-secure`, TLS at a proxy), or served over HTTPS by Halley.
    pub fn secure_cookie(&self) -> bool {
        self.cookie_secure || self.serves_tls()
    }

    /// One line per feature, as the server logs them at start: what an
    /// operator checks first (no secret in them).
    pub fn features(&self) -> Vec<String> {
        let on_off = |on: bool| if on { "on" } else { "off" };
        let mut transports = vec!["long-polling"];
        if self.websocket {
            transports.push("websocket");
        }
        if self.callback_polling {
            transports.push("callback-polling");
        }
        let mut lines = vec![format!("transports: {}", transports.join(", "))];
        lines.push(match self.api_keys.len() {
            0 => "HTTP publish API: off (no API key)".into(),
            n => format!("HTTP publish API: on, {n} API key(s)"),
        });
        lines.push(match &self.jwt {
            Some(jwt) => format!(
                "JWT Metadata Adapter: on ({}, anonymous {})",
                if jwt.hs256_secret.is_some() {
                    "HS256"
                } else {
                    "RS256"
                },
                if jwt.allow_anonymous {
                    "allowed"
                } else {
                    "refused"
                }
            ),
            None => "JWT Metadata Adapter: off".into(),
        });
        lines.push(match &self.webhook {
            Some(webhook) => format!(
                "webhook Metadata Adapter: on ({}, fails {})",
                webhook.url,
                if webhook.fail_open { "open" } else { "closed" }
            ),
            None => "webhook Metadata Adapter: off".into(),
        });
        lines.push(format!(
            "remote adapters: {}",
            match self.remote_adapter.len() {
                0 => "none".to_owned(),
                _ => self
                    .remote_adapter
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        ));
        lines.push(format!(
            "per-channel rules: {} qos, {} history, {} lazy, {} overflow",
            self.qos.len(),
            self.history.len(),
            self.lazy.len(),
            self.overflow.len()
        ));
        lines.push(match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(_)) => format!(
                "TLS: on (HTTPS and WSS; certificate {}, reloaded when it changes or on SIGHUP)",
                cert.display()
            ),
            _ => "TLS: off (plain HTTP)".into(),
        });
        lines.push(match self.admin_listen.addr() {
            Some(addr) => format!("admin listener: on ({addr})"),
            None => "admin listener: off".into(),
        });
        lines.push(match &self.redis {
            Some(_) => format!(
                "cluster: on (Redis, node id {})",
                self.node_id.as_deref().unwrap_or("random")
            ),
            None => "cluster: off (a single node in memory)".into(),
        });
        lines.push(format!("chat demo at /: {}", on_off(self.demo)));
        lines
    }

    pub fn sweep_period(&self) -> Duration {
        Duration::from_millis(self.sweep_period.max(1))
    }

    pub fn websocket_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.websocket_idle_timeout.max(2))
    }

    /// How long a session may stay silent after a connect reply.
    /// A fresh rate for one API key of the publish API: bursts of at
    /// least a whole request, so any valid request can pass in time.
    pub fn api_publish_rate(&self) -> crate::state::publisher_rate::PublisherRate {
        crate::state::publisher_rate::PublisherRate::new(
            self.api_publish_rate,
            self.api_publish_rate.max(self.max_batch_messages as f64),
            tokio::time::Instant::now(),
        )
    }

    /// A fresh rate for one remote Data Adapter.
    pub fn adapter_publish_rate(&self) -> crate::state::publisher_rate::PublisherRate {
        crate::state::publisher_rate::PublisherRate::new(
            self.adapter_publish_rate,
            self.adapter_publish_rate,
            tokio::time::Instant::now(),
        )
    }

    pub fn session_lifetime_ms(&self) -> u64 {
        self.interval + self.max_interval
    }

    pub fn outbox_limits(&self) -> OutboxLimits {
        OutboxLimits {
            max_messages: self.max_queue,
            max_bytes: self.max_queue_bytes,
        }
    }

    /// The Metadata Adapter the configuration asks for, if any; the error
    /// names what is wrong (an unreadable key file, a bad URL).
    pub fn metadata_adapter(&self) -> Result<Option<Arc<dyn MetadataAdapter>>, String> {
        Ok(match (&self.jwt, &self.webhook) {
            (Some(jwt), _) => Some(jwt_adapter(jwt)?),
            (None, Some(webhook)) => Some(webhook_adapter(webhook)?),
            (None, None) => None,
        })
    }

    /// Checks values that would make the server misbehave.
    pub fn validate(&self) -> Result<(), String> {
        if !self.path.starts_with('/') || self.path.len() < 2 || self.path.ends_with('/') {
            return Err(format!(
                "path must start with '/' and not end with '/', got {:?}",
                self.path
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err("tls-cert is set but tls-key is not: give both (or neither)".into())
            }
            (None, Some(_)) => {
                return Err("tls-key is set but tls-cert is not: give both (or neither)".into())
            }
            _ => {}
        }
        if self.max_batch_messages == 0 {
            return Err("max-batch-messages must be at least 1".into());
        }
        if self.max_request_bytes == 0 {
            return Err("max-request-bytes must be at least 1".into());
        }
        // Short keys can be guessed, even at api-key-failures-per-ip.
        if let Some(short) = self
            .api_keys
            .iter()
            .position(|key| key.chars().count() < MIN_API_KEY_CHARS)
        {
            return Err(format!(
                "api-keys: key {} of {} is shorter than {MIN_API_KEY_CHARS} characters; \
                 use a long random one (e.g. `openssl rand -hex 16`)",
                short + 1,
                self.api_keys.len()
            ));
        }
        for rule in &self.overflow {
            halley_protocol::ChannelPattern::parse(&rule.pattern)
                .map_err(|e| format!("overflow pattern {:?}: {e}", rule.pattern))?;
        }
        for rule in &self.lazy {
            halley_protocol::ChannelPattern::parse(&rule.pattern)
                .map_err(|e| format!("lazy pattern {:?}: {e}", rule.pattern))?;
        }
        for rule in &self.history {
            halley_protocol::ChannelPattern::parse(&rule.pattern)
                .map_err(|e| format!("history pattern {:?}: {e}", rule.pattern))?;
            if rule.max_messages.is_none() && rule.max_age_ms.is_none() {
                return Err(format!(
                    "history for {:?} needs max-messages and/or max-age-ms",
                    rule.pattern
                ));
            }
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        for rule in &self.qos {
            halley_protocol::ChannelPattern::parse(&rule.pattern)
                .map_err(|e| format!("qos pattern {:?}: {e}", rule.pattern))?;
            if !positive(rule.max_frequency) {
                return Err(format!(
                    "qos for {:?}: max-frequency must be a positive number of updates per second, got {}",
                    rule.pattern, rule.max_frequency
                ));
            }
            if rule.key.is_some() && rule.mode != Mode::Merge {
                return Err(format!(
                    "qos for {:?}: key applies to mode = \"merge\" only",
                    rule.pattern
                ));
            }
            if rule.key.as_deref().is_some_and(|k| k.is_empty()) {
                return Err(format!("qos for {:?}: key must not be empty", rule.pattern));
            }
        }
        if self.max_bandwidth == Some(0) {
            return Err("max-bandwidth must be at least 1 byte per second".into());
        }
        if let Some(rate) = self.max_publish_rate.filter(|&r| !positive(r)) {
            return Err(format!(
                "max-publish-rate must be a positive number of publishes per second, got {rate}"
            ));
        }
        for (name, rate) in [
            ("api-publish-rate", self.api_publish_rate),
            ("adapter-publish-rate", self.adapter_publish_rate),
        ] {
            if !rate.is_finite() || rate < 0.0 {
                return Err(format!(
                    "{name} must be a number of messages per second (0: unlimited), got {rate}"
                ));
            }
        }
        if self.api_keys.iter().any(|key| key.trim().is_empty()) {
            return Err("api-keys must not contain an empty key".into());
        }
        if self.jwt.is_some() && self.webhook.is_some() {
            return Err("[jwt] and [webhook] are both set: choose one Metadata Adapter".into());
        }
        // Refused here, before anything binds, rather than only when the
        // server builds the adapter.
        if self.jwt.is_some() && !cfg!(feature = "jwt") {
            return Err(NO_JWT.into());
        }
        if self.webhook.is_some() && !cfg!(feature = "webhook") {
            return Err(NO_WEBHOOK.into());
        }
        match self.redis.as_deref() {
            Some(url) if url.trim().is_empty() => {
                return Err("redis must be a URL such as redis://127.0.0.1:6379".into())
            }
            Some(_) if !cfg!(feature = "redis") => return Err(NO_REDIS.into()),
            _ => {}
        }
        if let Some(id) = &self.node_id {
            let fits = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
            if id.is_empty() || id.len() > 64 || !id.bytes().all(fits) {
                return Err(format!(
                    "node-id must be 1 to 64 letters, digits, '-', '_' or '.', got {id:?}"
                ));
            }
        }
        if self.max_sessions_per_user == Some(0) {
            return Err("max-sessions-per-user must be at least 1".into());
        }
        if self.max_queue == 0 || self.max_queue_bytes == 0 {
            return Err("max-queue and max-queue-bytes must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for adapter in &self.remote_adapter {
            adapter.validate()?;
            if !names.insert(adapter.name.as_str()) {
                return Err(format!(
                    "remote-adapter {:?}: two remote adapters have this name",
                    adapter.name
                ));
            }
        }
        Ok(())
    }
}

const NO_JWT: &str = "[jwt] is set, but this halley was built without the jwt feature";
const NO_WEBHOOK: &str = "[webhook] is set, but this halley was built without the webhook feature";
const NO_REDIS: &str = "redis is set, but this halley was built without the redis feature";

// The optional integrations (cargo features `jwt` and `webhook`, on by
// default): without one, its table still parses, so the error can say why
// it is refused instead of "unknown field".
#[cfg(feature = "jwt")]
fn jwt_adapter(config: &JwtConfig) -> Result<Arc<dyn MetadataAdapter>, String> {
    Ok(Arc::new(crate::metadata::jwt::JwtAdapter::from_config(
        config,
    )?))
}

#[cfg(not(feature = "jwt"))]
fn jwt_adapter(_: &JwtConfig) -> Result<Arc<dyn MetadataAdapter>, String> {
    Err(NO_JWT.into())
}

#[cfg(feature = "webhook")]
fn webhook_adapter(config: &WebhookConfig) -> Result<Arc<dyn MetadataAdapter>, String> {
    Ok(Arc::new(
        crate::metadata::webhook::WebhookAdapter::from_config(config)?,
    ))
}

#[cfg(not(feature = "webhook"))]
fn webhook_adapter(_: &WebhookConfig) -> Result<Arc<dyn MetadataAdapter>, String> {
    Err(NO_WEBHOOK.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in builds without the feature: `cargo test -p halley-server
    /// --lib --no-default-features`.
    #[cfg(not(feature = "jwt"))]
    #[test]
    fn jwt_is_refused_without_the_feature() {
        let config = Config {
            jwt: Some(JwtConfig::default()),
            ..Config::default()
        };
        let error = config.validate().unwrap_err();
        assert!(error.contains("built without the jwt feature"), "{error}");
        let error = config.metadata_adapter().err().unwrap();
        assert!(error.contains("built without the jwt feature"), "{error}");
    }

    #[cfg(not(feature = "webhook"))]
    #[test]
    fn webhook_is_refused_without_the_feature() {
        let config = Config {
            webhook: Some(WebhookConfig::default()),
            ..Config::default()
        };
        let error = config.validate().unwrap_err();
        assert!(
            error.contains("built without the webhook feature"),
            "{error}"
        );
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn redis_is_refused_without_the_feature() {
        let config = Config {
            redis: Some("redis://127.0.0.1:6379".into()),
            ..Config::default()
        };
        let error = config.validate().unwrap_err();
        assert!(error.contains("built without the redis feature"), "{error}");
    }

    #[test]
    fn node_ids_are_checked() {
        let with_id = |id: &str| Config {
            node_id: Some(id.into()),
            ..Config::default()
        };
        assert!(with_id("node-1.eu_west").validate().is_ok());
        for bad in ["", "a b", "a:b", &"x".repeat(65)] {
            let error = with_id(bad).validate().unwrap_err();
            assert!(error.contains("node-id"), "{bad:?}: {error}");
        }
        let empty_url = Config {
            redis: Some(" ".into()),
            ..Config::default()
        };
        assert!(empty_url.validate().unwrap_err().contains("redis"));
    }

    #[test]
    fn both_adapters_are_refused() {
        let config = Config {
            jwt: Some(JwtConfig::default()),
            webhook: Some(WebhookConfig::default()),
            ..Config::default()
        };
        assert!(config.validate().unwrap_err().contains("choose one"));
    }
}
