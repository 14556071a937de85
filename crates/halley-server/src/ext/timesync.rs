//! The timesync extension, wire-compatible with CometD's `TimeSyncExtension`.
//!
//! The client sends `ext.timesync = {tc, l, o}` on meta messages: its clock
//! at sending, and its current estimates of lag and offset. The reply
//! carries `{tc, ts, p, a}`: `tc` echoed, `ts` the server's clock when the
//! request arrived, `p` how long the server kept it (a held connect counts),
//! and `a = tc + o + l - ts`, the accuracy of the client's estimates as
//! CometD defines it (0 when its lag and offset are exact). From those the
//! client computes lag `(now - tc - p) / 2` and offset `ts - tc - lag`.
//!
//! The times are the node's wall clock ([`crate::state::clock::Clock`]),
//! given to the hook in its [`Context`].

use serde_json::{json, Value};

use halley_protocol::Reply;

use super::extension::{Context, Extension, ReplyExt};

pub use super::extension::TimeSyncRequest as Request;

/// The extension in the pipeline: answers every reply whose request asked.
pub struct TimeSync;

impl Extension for TimeSync {
    fn outgoing(&self, _: &mut Reply, context: &Context<'_>, ext: &mut ReplyExt) {
        if let Some(request) = context.ext.timesync {
            ext.insert(
                "timesync",
                answer(request, context.received_ms, context.now_ms),
            );
        }
    }
}

/// The reply's `ext.timesync` for a request that arrived at `ts` and is
/// answered at `now` (wall clock, ms).
pub fn answer(request: Request, ts: i64, now: i64) -> Value {
    json!({
        "tc": request.tc,
        "ts": ts,
        "p": (now - ts).max(0),
        "a": request.tc + request.o + request.l - ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lets_the_client_compute_lag_and_offset() {
        let ts = 1_000_000;
        let tc = ts - 40; // the client's clock: 40 ms behind, or 40 ms of lag
        let reply = answer(Request { tc, l: 5, o: 0 }, ts, ts + 25);
        assert_eq!(reply["tc"], tc);
        assert_eq!(reply["ts"], ts);
        assert_eq!(reply["p"], 25, "held for 25 ms");
        assert_eq!(reply["a"].as_i64().unwrap(), tc + 5 - ts);
        let early = answer(Request { tc, l: 0, o: 0 }, ts, ts - 3);
        assert_eq!(early["p"], 0, "never negative");
    }
}
