//! The ack extension, wire-compatible with CometD's `AckExtension`.
//!
//! - Handshake: the client sends `ext: {"ack": true}`; the server answers
//!   `ext: {"ack": true}` and the session keeps numbered batches
//!   ([`crate::state::unacked`]).
//! - Every `/meta/connect` reply carries `ext: {"ack": N}`: the number of the
//!   batch of deliveries in that same response.
//! - Every `/meta/connect` request carries `ext: {"ack": N}`: the last batch
//!   the client received. Later batches are re-sent, in order, in the reply.
//! - While ack is on, deliveries travel only in connect replies (never
//!   piggybacked on other replies, never pushed alone on a WebSocket), so
//!   that every delivery belongs to exactly one numbered batch.

use serde_json::Value;

use halley_protocol::Reply;

use crate::state::session::Session;

/// At handshake: turns acks on when the client asks; returns whether it did.
pub fn negotiate(session: &Session, requested: Option<&Value>, reply: &mut Reply) -> bool {
    if requested == Some(&Value::Bool(true)) {
        session.enable_ack();
        super::add_to_reply(reply, "ack", Value::Bool(true));
        true
    } else {
        false
    }
}

/// On a connect request: the last batch the client received, if it says.
pub fn received(ext_ack: Option<&Value>) -> Option<u64> {
    ext_ack.and_then(Value::as_u64)
}

/// On a connect reply: says which batch it carries.
pub fn mark_batch(reply: &mut Reply, batch: Option<u64>) {
    if let Some(batch) = batch {
        super::add_to_reply(reply, "ack", Value::from(batch));
    }
}
