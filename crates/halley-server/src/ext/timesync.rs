//! The timesync extension, wire-compatible with CometD's `TimeSyncExtension`.
//!
//! The client sends `ext.timesync = {tc, l, o}` on meta messages: its clock
//! at sending, and its current estimates of lag and offset. The reply
//! carries `{tc, ts, p, a}`: `tc` echoed, `ts` the server's clock when the
//! request arrived, `p` how long the server kept it (a held connect counts),
//! and `a = tc + o + l - ts`, the accuracy of the client's estimates as
//! CometD defines it (0 when its lag and offset are exact). From those the
//! client computes lag `(now - tc - p) / 2` and offset `ts - tc - lag`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Request {
    pub tc: i64,
    #[serde(default)]
    pub l: i64,
    #[serde(default)]
    pub o: i64,
}

/// A timesync request with the server's arrival time.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    request: Request,
    ts: i64,
}

/// Milliseconds since the Unix epoch (the clocks being compared are wall clocks).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Received {
    pub fn now(request: Request) -> Self {
        Received {
            request,
            ts: now_ms(),
        }
    }

    /// The reply's `ext.timesync`, computed at the moment the reply is made.
    pub fn reply(&self) -> Value {
        let p = (now_ms() - self.ts).max(0);
        json!({
            "tc": self.request.tc,
            "ts": self.ts,
            "p": p,
            "a": self.request.tc + self.request.o + self.request.l - self.ts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lets_the_client_compute_lag_and_offset() {
        let tc = now_ms() - 40; // the client's clock: 40 ms behind, or 40 ms of lag
        let received = Received::now(Request { tc, l: 5, o: 0 });
        let reply = received.reply();
        assert_eq!(reply["tc"], tc);
        let ts = reply["ts"].as_i64().unwrap();
        assert!(ts >= tc + 40);
        assert_eq!(reply["a"].as_i64().unwrap(), tc + 5 - ts);
        assert!(reply["p"].as_i64().unwrap() >= 0);
    }
}
