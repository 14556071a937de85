//! `/meta/handshake`: version check, connection-type negotiation, the
//! Metadata Adapter's verdict (who the user is, or a denial) and the
//! per-user session cap, then a new session with a fresh clientId bound to
//! the requesting browser.

use halley_protocol::{connection_type, Advice, BayeuxError, Message, Reply, BAYEUX_VERSION};

use crate::engine::{Engine, Exchange};
use crate::metadata::{explain, Denial, HandshakeRequest};
use crate::state::grant::Grant;

/// The connection types this server offers, in preference order.
pub fn offered_connection_types(engine: &Engine) -> Vec<&'static str> {
    let mut offered = Vec::with_capacity(3);
    if engine.config().websocket {
        offered.push(connection_type::WEBSOCKET);
    }
    offered.push(connection_type::LONG_POLLING);
    if engine.config().callback_polling {
        offered.push(connection_type::CALLBACK_POLLING);
    }
    offered
}

pub async fn handle(engine: &Engine, message: Message, exchange: &mut Exchange) -> Reply {
    let config = engine.config();
    let offered = offered_connection_types(engine);
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
        None => return deny(reply, BayeuxError::VERSION_MISSING),
        Some(v) if v.split('.').next() != Some("1") => {
            return deny(reply, BayeuxError::VERSION_UNSUPPORTED)
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
            return deny(reply, BayeuxError::VERSION_UNSUPPORTED);
        }
    }
    let Some(requested) = message.supported_connection_types.as_ref() else {
        return deny(reply, BayeuxError::CONNECTION_TYPE_MISSING);
    };
    if !requested.iter().any(|t| offered.contains(&t.as_str())) {
        return deny(reply, BayeuxError::CONNECTION_TYPE_UNSUPPORTED);
    }

    // Who is this? The Metadata Adapter (if any) authenticates and names the user.
    let ext_value: serde_json::Value = message
        .ext
        .as_deref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    let grant = match engine.metadata_adapter() {
        Some(metadata) => {
            let request = HandshakeRequest {
                ext: &ext_value,
                browser_id: exchange.origin.browser_id.as_deref(),
            };
            match metadata.handshake(request).await {
                Ok(grant) => grant,
                Err(denial) => {
                    tracing::info!(reason = %denial.reason, "handshake denied");
                    let mut reply = deny(reply, BayeuxError::HANDSHAKE_DENIED);
                    explain(&mut reply, &denial);
                    return reply;
                }
            }
        }
        None => Grant::anonymous(),
    };
    if let Some(user) = grant.user() {
        if !engine.user_sessions().try_open(user) {
            let max = engine.user_sessions().max().unwrap_or_default();
            let denial = Denial::new(format!(
                "too many sessions for user {user:?} (max-sessions-per-user = {max})"
            ));
            tracing::info!(user, max, "handshake denied: session cap");
            let mut reply = deny(reply, BayeuxError::HANDSHAKE_DENIED);
            explain(&mut reply, &denial);
            return reply;
        }
    }

    // Strict binding when the client already had its cookie (an established browser).
    let strict = exchange.origin.browser_id.is_some();
    let browser_id = exchange.browser_for_new_session();
    let session = engine.sessions().create(browser_id.as_deref(), strict);
    // Without an adapter every session is anonymous: the grant stays unset
    // (embedders and tests may still set one).
    if let Some(metadata) = engine.metadata_adapter() {
        session.set_grant(grant);
        metadata.session_opened(&session);
    }
    tracing::debug!(
        client_id = session.client_id(),
        user = session.user(),
        "handshake"
    );

    let mut reply = reply
        .success()
        .with_advice(Advice::retry(config.interval as i64, config.timeout as i64));
    reply.client_id = Some(session.client_id().to_owned());
    reply.version = Some(BAYEUX_VERSION);
    reply.minimum_version = Some(BAYEUX_VERSION);
    reply.supported_connection_types = Some(offered);
    let ext = crate::ext::InboundExt::parse(message.ext.as_deref());
    crate::ext::ack::negotiate(&session, ext.ack.as_ref(), &mut reply);
    for (channel, from) in ext.replay_requests() {
        session.request_replay(channel, from);
    }
    if let Some(request) = ext.timesync {
        let received = crate::ext::timesync::Received::now(request);
        crate::ext::add_to_reply(&mut reply, "timesync", received.reply());
    }
    if exchange.session.is_none() {
        exchange.session = Some(session);
    }
    reply
}
