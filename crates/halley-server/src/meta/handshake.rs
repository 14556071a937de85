//! `/meta/handshake`: version check, connection-type negotiation, the
//! limits that keep a flood of handshakes from filling the node (a rate
//! per client IP, a cap on sessions: both refused with advice to retry
//! later, spread out), the Metadata Adapter's verdict (who the user is, or
//! a denial) and the per-user session cap, then a new session with a fresh
//! clientId bound to the requesting browser.

use std::sync::Arc;

use halley_protocol::{connection_type, Advice, BayeuxError, Message, Reply, BAYEUX_VERSION};

use crate::exchange::Exchange;
use crate::metadata::{explain, Denial, HandshakeRequest};
use crate::node::Node;
use crate::state::grant::Grant;
use crate::state::limits::Limit;
use crate::state::session::Session;

/// How long a client refused without a verdict (the Metadata Adapter could
/// not decide: [`crate::metadata::Denial::transient`]) waits before
/// handshaking again, in ms: long enough not to hammer a backend that is
/// down, short enough to come back soon after it does.
const RETRY_AFTER_TRANSIENT_DENIAL_MS: i64 = 2_000;

/// How long a client refused by a limit (rate, session cap) waits before
/// handshaking again, in ms: a random wait in this range, so the clients
/// of a reconnect storm come back spread out rather than all at once.
const RETRY_AFTER_LIMIT_MS: std::ops::Range<i64> = 1_000..5_000;

/// The connection types this server offers, in preference order.
pub fn offered_connection_types(node: &Node) -> Vec<&'static str> {
    let mut offered = Vec::with_capacity(3);
    if node.config().websocket {
        offered.push(connection_type::WEBSOCKET);
    }
    offered.push(connection_type::LONG_POLLING);
    if node.config().callback_polling {
        offered.push(connection_type::CALLBACK_POLLING);
    }
    offered
}

/// The reply, and the new session when the handshake succeeded (the
/// extensions' outgoing hooks see it: ack agrees, replay remembers).
pub async fn handle(
    node: &Node,
    message: Message,
    ext_value: serde_json::Value,
    exchange: &mut Exchange,
) -> (Reply, Option<Arc<Session>>) {
    let config = node.config();
    let offered = offered_connection_types(node);
    let reply = Reply::to(halley_protocol::meta::HANDSHAKE, message.id);
    let deny = |reply: Reply, error: BayeuxError| {
        let mut reply = reply.failure(error).with_advice(Advice::none());
        reply.version = Some(BAYEUX_VERSION);
        reply.minimum_version = Some(BAYEUX_VERSION);
        reply.supported_connection_types = Some(offered.clone());
        reply
    };

    // Bayeux 1.x: accept any 1.* version; a client needing more is refused.
    match message.version.as_deref() {
        None => return (deny(reply, BayeuxError::VERSION_MISSING), None),
        Some(v) if v.split('.').next() != Some("1") => {
            return (deny(reply, BayeuxError::VERSION_UNSUPPORTED), None)
        }
        Some(_) => {}
    }
    if let Some(minimum) = message.minimum_version.as_deref() {
        if minimum
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0)
            > 1
        {
            return (deny(reply, BayeuxError::VERSION_UNSUPPORTED), None);
        }
    }
    let Some(requested) = message.supported_connection_types.as_ref() else {
        return (deny(reply, BayeuxError::CONNECTION_TYPE_MISSING), None);
    };
    if !requested.iter().any(|t| offered.contains(&t.as_str())) {
        return (deny(reply, BayeuxError::CONNECTION_TYPE_UNSUPPORTED), None);
    }

    // Before the Metadata Adapter: a flood must not reach its backend.
    let refused_by = if !node
        .handshake_rate()
        .try_take(exchange.origin.peer, tokio::time::Instant::now())
    {
        Some((Limit::HandshakeRate, BayeuxError::HANDSHAKE_RATE_EXCEEDED))
    } else if node.sessions().len() >= config.max_sessions {
        Some((Limit::Sessions, BayeuxError::SESSIONS_EXHAUSTED))
    } else {
        None
    };
    if let Some((limit, error)) = refused_by {
        let peer = exchange
            .origin
            .peer
            .map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
        node.limits().hit(limit, || match limit {
            Limit::Sessions => format!(
                "max-sessions ({}) reached; handshake refused",
                config.max_sessions
            ),
            _ => format!(
                "handshakes from {peer:?} over handshake-rate-per-ip ({}/s); refused",
                config.handshake_rate_per_ip
            ),
        });
        let mut reply = deny(reply, error);
        let wait = rand::random_range(RETRY_AFTER_LIMIT_MS);
        reply.advice = Some(Advice::retry(wait, config.timeout as i64));
        return (reply, None);
    }

    // Who is this? The Metadata Adapter (if any) authenticates and names the user.
    let grant = match node.metadata_adapter() {
        Some(metadata) => {
            let request = HandshakeRequest {
                ext: &ext_value,
                browser_id: exchange.origin.browser_id.as_deref(),
            };
            match metadata.handshake(request).await {
                Ok(grant) => grant,
                Err(denial) => {
                    denial.count_in(node.limits());
                    // Anyone can send a handshake with bad credentials: a
                    // line per few seconds, counted (and the metrics count
                    // every one: halley_metadata_decisions).
                    static DENIED: crate::state::log_throttle::LogThrottle =
                        crate::state::log_throttle::LogThrottle::new();
                    if let Some(suppressed) = DENIED.allow(tokio::time::Instant::now()) {
                        tracing::info!(reason = %denial.reason, transient = denial.transient, suppressed, "handshake denied");
                    }
                    let mut reply = deny(reply, BayeuxError::HANDSHAKE_DENIED);
                    if denial.transient {
                        // No verdict (the backend was unreachable): come back
                        // later rather than give up for good.
                        reply.advice = Some(Advice::retry(
                            RETRY_AFTER_TRANSIENT_DENIAL_MS,
                            config.timeout as i64,
                        ));
                    }
                    explain(&mut reply, &denial);
                    return (reply, None);
                }
            }
        }
        None => Grant::anonymous(),
    };
    let client_id = crate::state::sessions::new_random_id();
    if let Some(user) = grant.user() {
        let max = node.user_sessions().max().unwrap_or_default();
        let denied = |reply: Reply| {
            let denial = Denial::new(format!(
                "too many sessions for user {user:?} (max-sessions-per-user = {max})"
            ));
            static CAPPED: crate::state::log_throttle::LogThrottle =
                crate::state::log_throttle::LogThrottle::new();
            if let Some(suppressed) = CAPPED.allow(tokio::time::Instant::now()) {
                tracing::info!(user, max, suppressed, "handshake denied: session cap");
            }
            let mut reply = deny(reply, BayeuxError::HANDSHAKE_DENIED);
            explain(&mut reply, &denial);
            reply
        };
        if !node.user_sessions().try_open(user) {
            return (denied(reply), None);
        }
        // On a cluster the cap counts the user's sessions on every node.
        if let (Some(directory), Some(max)) = (node.directory(), node.user_sessions().max()) {
            match directory.open_user_session(user, &client_id, max).await {
                Ok(true) => {}
                Ok(false) => {
                    node.user_sessions().close(user);
                    return (denied(reply), None);
                }
                Err(error) => {
                    node.user_sessions().close(user);
                    tracing::warn!(%error, "handshake refused: the cluster cannot count the user's sessions");
                    let reply =
                        reply
                            .failure(crate::broker::UNAVAILABLE)
                            .with_advice(Advice::retry(
                                config.interval.max(1000) as i64,
                                config.timeout as i64,
                            ));
                    return (reply, None);
                }
            }
        }
    }

    // Strict binding when the client already had its cookie (an established browser).
    let strict = exchange.origin.browser_id.is_some();
    let browser_id = exchange.browser_for_new_session();
    let session = node
        .sessions()
        .create_as(client_id, browser_id.as_deref(), strict);
    if let Some(peer) = exchange.origin.peer {
        session.set_handshake_peer(peer);
    }

    // Without an adapter every session is anonymous: the grant stays unset
    // (embedders and tests may still set one).
    if let Some(metadata) = node.metadata_adapter() {
        node.sessions().set_grant(&session, grant);
        metadata.session_opened(&session);
    }
    tracing::debug!(
        client_id = session.client_id(),
        user = session.user(),
        "session opened"
    );

    let mut reply = reply
        .success()
        .with_advice(Advice::retry(config.interval as i64, config.timeout as i64));
    reply.client_id = Some(session.client_id().to_owned());
    reply.version = Some(BAYEUX_VERSION);
    reply.minimum_version = Some(BAYEUX_VERSION);
    reply.supported_connection_types = Some(offered);
    if exchange.session.is_none() {
        exchange.session = Some(session.clone());
    }
    (reply, Some(session))
}
