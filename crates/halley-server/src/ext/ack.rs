//! The ack extension, wire-compatible with CometD's `AckExtension`.
//!
//! - Handshake: the client sends `ext: {"ack": true}`; the server answers
//!   `ext: {"ack": true}` and the session keeps numbered batches
//!   (`state::unacked`).
//! - Every `/meta/connect` reply carries `ext: {"ack": N}`: the number of the
//!   batch of deliveries in that same response.
//! - Every `/meta/connect` request carries `ext: {"ack": N}`: the last batch
//!   the client received. Later batches are re-sent, in order, in the reply
//!   ([`received`], read by `/meta/connect`).
//! - While ack is on, deliveries travel only in connect replies (never
//!   piggybacked on other replies, never pushed alone on a WebSocket), so
//!   that every delivery belongs to exactly one numbered batch: the
//!   connection state machine ([`crate::connection`]) sees to that.

use serde_json::Value;

use halley_protocol::{meta, Reply};

use super::extension::{Context, Extension, ReplyExt};

/// The extension in the pipeline: agrees at handshake, numbers connect replies.
pub struct Ack;

impl Extension for Ack {
    fn outgoing(&self, reply: &mut Reply, context: &Context<'_>, ext: &mut ReplyExt) {
        match reply.channel.as_ref() {
            meta::HANDSHAKE if reply.successful == Some(true) => {
                if let Some(session) = context.session {
                    if context.ext.ack == Some(Value::Bool(true)) {
                        session.enable_ack();
                        ext.insert("ack", Value::Bool(true));
                    }
                }
            }
            meta::CONNECT => {
                if let Some(batch) = context.ack_batch {
                    ext.insert("ack", Value::from(batch));
                }
            }
            _ => {}
        }
    }
}

/// On a connect request: the last batch the client received, if it says.
pub fn received(ext_ack: Option<&Value>) -> Option<u64> {
    ext_ack.and_then(Value::as_u64)
}
