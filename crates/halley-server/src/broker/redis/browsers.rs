//! `max-sessions-per-browser` for the whole cluster: the sessions of one
//! browser (its `BAYEUX_BROWSER` cookie) holding a long poll, on any node,
//! in a sorted set `halley:browser:<id>` (clientId, scored by when its
//! hold expires), so two tabs whose polls a balancer spreads over two
//! nodes are counted together.
//!
//! A hold's entry expires by itself (its score, and the key's TTL) a
//! little after the longest hold, so a node's death leaves nothing behind.

use redis::Script;

use super::directory::{bounded, Shared};
use crate::broker::directory::Pending;

const BROWSER_PREFIX: &str = "halley:browser:";

/// KEYS[1]: the browser's set. ARGV: the clientId, the most other
/// sessions that may hold, the hold's life (ms). Returns 1 if it may hold.
const HOLD: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

fn browser_key(browser: &str) -> String {
    format!("{BROWSER_PREFIX}{browser}")
}

impl Shared {
    pub(super) fn hold_poll<'a>(
        &'a self,
        browser: &'a str,
        client_id: &'a str,
        max: usize,
        life_ms: u64,
    ) -> Pending<'a, Result<bool, String>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let held: i64 = bounded(
                "counting a browser's polls",
                Script::new(HOLD)
                    .key(browser_key(browser))
                    .arg(client_id)
                    .arg(max)
                    .arg(life_ms)
                    .invoke_async(&mut connection),
            )
            .await?;
            Ok(held == 1)
        })
    }

    pub(super) fn release_poll(&self, browser: &str, client_id: &str) {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(browser_key(browser)).arg(client_id);
        self.send_later("releasing a browser's poll", cmd);
    }
}
