//! The replay extension's handshake part: `ext.replay = {"/channel": id}`
//! on a handshake is remembered by the session and used by its later
//! subscribes to those channels (a subscribe's own `ext.replay` wins). The
//! replay itself, and the subscribe reply's `ext.replay.gap`, are the
//! subscribe handler's and [`crate::history`]'s.

use halley_protocol::{meta, Reply};

use super::extension::{Context, Extension, ReplyExt};

pub struct Replay;

impl Extension for Replay {
    fn outgoing(&self, reply: &mut Reply, context: &Context<'_>, _: &mut ReplyExt) {
        if reply.channel == meta::HANDSHAKE && reply.successful == Some(true) {
            if let Some(session) = context.session {
                for (channel, from) in context.ext.replay_requests() {
                    session.request_replay(channel, from);
                }
            }
        }
    }
}
