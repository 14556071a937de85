//! A session's credentials over its life: fresh ones presented on a
//! `/meta/connect` (a refresh), and the end of those that expire.
//!
//! A Metadata Adapter may grant a session until a moment
//! ([`crate::state::grant::Grant::expires_ms`]: a JWT's `exp` plus the
//! leeway). From then on every message of the session is refused with
//! `401::token_expired` and advice to handshake again, and the session
//! ends: the official clients handshake again on that advice, and their
//! handshake `ext` carries the fresh token the application gives them. A
//! held `/meta/connect` is not held past the moment either
//! (`meta/connect.rs` shortens the hold; answering it then refuses
//! it the same way, see [`crate::exchange::PendingConnect::answer`]).
//!
//! A client may instead refresh in place (Centrifugo's connection refresh):
//! a `/meta/connect` whose `ext.authentication` holds fresh credentials is
//! asked to the adapter ([`crate::metadata::MetadataAdapter::refresh`]),
//! which may move the end later. A refused refresh ends the session with
//! `401::refresh_denied` and the adapter's reason: whoever presents
//! credentials that are not the session's own is not its owner.

use std::sync::Arc;

use halley_protocol::{meta, Advice, BayeuxError, Message, Reply};

use crate::metadata::{explain, Denial, HandshakeRequest};
use crate::node::Node;
use crate::state::listeners::SessionEnd;
use crate::state::session::Session;

/// What the client reads in `ext.halley.reason` when its session ended
/// with its credentials.
pub const EXPIRED_REASON: &str = "the credentials (token) of this session expired: \
     handshake again with fresh ones, or refresh them before they expire \
     (ext.authentication on a /meta/connect)";

/// What a held connect's client reads when another of its connects
/// presented credentials that were refused (that connect's reply has the
/// adapter's reason).
pub const REFUSED_REASON: &str = "this session ended: fresh credentials presented for it \
     were refused; handshake again";

/// Applies a refresh carried by `message` (a `/meta/connect`), then refuses
/// the message if `session`'s credentials have expired at `now_wall_ms`.
/// `Err` is the reply to send instead of handling the message; the session
/// has then ended.
pub async fn check(
    node: &Node,
    message: &Message,
    session: &Arc<Session>,
    now_wall_ms: i64,
) -> Result<(), Box<Reply>> {
    if message.channel.as_deref() == Some(meta::CONNECT) {
        if let Some(ext) = refresh_ext(message) {
            refresh(node, message, session, &ext).await?;
        }
    }
    if session.credentials_expired(now_wall_ms) {
        return Err(Box::new(end(
            node,
            session,
            Reply::to(
                message.channel.clone().unwrap_or_default(),
                message.id.clone(),
            ),
            BayeuxError::TOKEN_EXPIRED,
            &Denial::new(EXPIRED_REASON),
        )));
    }
    Ok(())
}

/// Ends `session` for its credentials; `reply` fails with `error`, advises
/// a new handshake and says why.
pub fn end(
    node: &Node,
    session: &Session,
    reply: Reply,
    error: BayeuxError,
    why: &Denial,
) -> Reply {
    tracing::debug!(
        client_id = session.client_id(),
        user = session.user(),
        reason = %why.reason,
        "session ended with its credentials"
    );
    session.mark_credentials_ended();
    node.remove_session(session, SessionEnd::TokenExpired);
    let mut reply = reply
        .failure(error)
        .with_advice(Advice::handshake(node.config().interval as i64));
    explain(&mut reply, why);
    reply
}

/// The connect's `ext`, when it carries `authentication` (looked for in the
/// raw text first: a connect without it, nearly all of them, is not parsed
/// twice).
fn refresh_ext(message: &Message) -> Option<serde_json::Value> {
    let raw = message.ext.as_deref()?.get();
    if !raw.contains("\"authentication\"") {
        return None;
    }
    let ext: serde_json::Value = serde_json::from_str(raw).ok()?;
    ext.get("authentication")
        .is_some_and(|a| !a.is_null())
        .then_some(ext)
}

async fn refresh(
    node: &Node,
    message: &Message,
    session: &Arc<Session>,
    ext: &serde_json::Value,
) -> Result<(), Box<Reply>> {
    let Some(metadata) = node.metadata_adapter() else {
        return Ok(());
    };
    let request = HandshakeRequest {
        ext,
        browser_id: session.browser_id(),
    };
    match metadata.refresh(session, request).await {
        Ok(Some(expires_ms)) => {
            session.extend_credentials(expires_ms);
            Ok(())
        }
        Ok(None) => Ok(()),
        // No verdict (a backend down): the session goes on until its
        // credentials' end as it stood; the client may present them again.
        Err(denial) if denial.transient => Ok(()),
        Err(denial) => Err(Box::new(end(
            node,
            session,
            Reply::to(meta::CONNECT, message.id.clone()),
            BayeuxError::REFRESH_DENIED,
            &denial,
        ))),
    }
}
