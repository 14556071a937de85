//! The limits that keep one client from exhausting the node: a counter of
//! hits per limit, and their warnings at a bounded rate.
//!
//! Each limit is a setting (see `docs/security.md` for the table) enforced
//! by the module that owns its concept: connections in [`crate::server`],
//! handshakes in [`crate::meta::handshake`], subscriptions in
//! [`crate::meta::subscribe`], rooms in [`crate::service::presence`],
//! adapter links and rates in [`crate::adapter::remote`], API keys' rates
//! in [`crate::transport::publish_api`], webhook calls in
//! [`crate::metadata::webhook`] (through [`crate::metadata::Denial::limited`],
//! counted by whoever answers the denial). When one is hit, that module
//! calls [`Limits::hit`]: the counter goes up (read by [`Limits::count`] and
//! [`Limits::counts`], for metrics) and a warning is logged, at most once per
//! [`super::log_throttle::PERIOD`] per limit.
//!
//! [`client_net`] is what per-IP limits count by: an IPv4 address, or the
//! /64 of an IPv6 one (one host usually owns a whole /64, so per-address
//! counting would not bound it).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::log_throttle::LogThrottle;

macro_rules! limits {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// One limit, by what it bounds.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Limit {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Limit {
            pub const ALL: &'static [Limit] = &[$(Limit::$variant,)*];

            /// Its name in logs and metrics (snake_case).
            pub fn name(self) -> &'static str {
                match self {
                    $(Limit::$variant => $name,)*
                }
            }
        }
    };
}

limits! {
    /// `max-connections`: a connection over it was closed at once.
    Connections = "connections",
    /// `max-connections-per-ip`: a connection over it was closed at once.
    ConnectionsPerIp = "connections_per_ip",
    /// `accept` failed (out of file descriptors): the loop backed off.
    AcceptErrors = "accept_errors",
    /// `header-read-timeout`: a connection sent no complete request head in
    /// time (a slow or idle client) and was closed.
    HeaderReadTimeout = "header_read_timeout",
    /// `tls-cert`: a TLS handshake failed, or did not finish within
    /// `header-read-timeout`; the connection was closed.
    TlsHandshake = "tls_handshake",
    /// A request head too large (431), malformed or ambiguously framed
    /// (400), or with a transfer coding other than chunked (501): refused
    /// before any handler, and the connection closed.
    RequestHead = "request_head",
    /// One request carried more than one `/meta/handshake`.
    HandshakesPerRequest = "handshakes_per_request",
    /// `handshake-rate-per-ip`.
    HandshakeRate = "handshake_rate",
    /// `max-sessions`.
    Sessions = "sessions",
    /// `max-channels-per-subscribe`.
    ChannelsPerSubscribe = "channels_per_subscribe",
    /// `max-subscriptions-per-session`.
    SubscriptionsPerSession = "subscriptions_per_session",
    /// `max-publish-rate`, for publishes and service calls alike.
    PublishRate = "publish_rate",
    /// `max-data-depth`: published (or service) data nested too deep.
    DataDepth = "data_depth",
    /// `max-request-bytes` on a WebSocket: the socket was closed with 1009.
    WebSocketMessageSize = "websocket_message_size",
    /// `max-room-members` of `/service/presence`.
    RoomMembers = "room_members",
    /// `allowed-origins`: a WebSocket or callback-polling request from
    /// another site's page was refused (403).
    Origin = "origin",
    /// `api-key-failures-per-ip`: an address that failed too many API-key
    /// attempts was answered 429.
    ApiKeyFailures = "api_key_failures",
    /// `api-publish-rate`: a publish API request over its key's rate was
    /// answered 429.
    ApiPublishRate = "api_publish_rate",
    /// `adapter-publish-rate`: a remote adapter's publish or snapshot over
    /// its rate was refused.
    AdapterPublishRate = "adapter_publish_rate",
    /// `max-in-flight` of `[webhook]`: a question past the cap of calls
    /// waiting for the backend was answered with a transient denial.
    WebhookInFlight = "webhook_in_flight",
    /// A remote adapter connection refused at hello (wrong or missing
    /// `secret`, no hello in time, or too many pending connections).
    RemoteAdapterHello = "remote_adapter_hello",
}

/// The node's counters, one per [`Limit`], and their log throttles.
pub struct Limits {
    hits: Vec<AtomicU64>,
    logs: Vec<LogThrottle>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hits: Limit::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            logs: Limit::ALL.iter().map(|_| LogThrottle::default()).collect(),
        }
    }
}

impl Limits {
    /// Counts a hit of `limit` and warns with `detail` (made only when the
    /// warning goes through), at a bounded rate.
    pub fn hit(&self, limit: Limit, detail: impl FnOnce() -> String) {
        let index = limit as usize;
        self.hits[index].fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.logs[index].allow(Instant::now()) {
            tracing::warn!(limit = limit.name(), suppressed, "limit hit: {}", detail());
        }
    }

    /// How many times `limit` was hit since the node started.
    pub fn count(&self, limit: Limit) -> u64 {
        self.hits[limit as usize].load(Ordering::Relaxed)
    }

    /// Every limit with its count, for a metrics exporter.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        Limit::ALL
            .iter()
            .map(|&limit| (limit.name(), self.count(limit)))
            .collect()
    }
}

/// What per-IP limits count by: the address for IPv4 (an IPv4-mapped IPv6
/// address counts as its IPv4), its /64 for IPv6.
pub fn client_net(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_counted_per_limit() {
        let limits = Limits::default();
        limits.hit(Limit::Sessions, || "full".into());
        limits.hit(Limit::Sessions, || "full".into());
        assert_eq!(limits.count(Limit::Sessions), 2);
        assert_eq!(limits.count(Limit::Connections), 0);
        assert!(limits.counts().contains(&("sessions", 2)));
    }

    #[test]
    fn ipv6_hosts_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_net(a), client_net(b));
        assert_ne!(client_net(a), client_net(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_net(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
