//! `max-sessions-per-user` for the whole cluster: each user's sessions in
//! a sorted set `halley:user:<user>` (clientId, scored by when it was
//! added), so a handshake on any node counts the user's sessions on every
//! node.
//!
//! A session's end on the node that holds it takes it out. One lost with
//! its node is taken out by the next handshake of its user, once its
//! session record is gone (its TTL) and it is older than [`GRACE`] (a
//! session just counted may not have its record written yet).

use std::time::Duration;

use redis::Script;

use super::directory::{bounded, Shared, SESSION_PREFIX};
use crate::broker::directory::Pending;

const USER_PREFIX: &str = "halley:user:";
/// A place younger than this is kept even without a session record.
const GRACE: Duration = Duration::from_secs(30);
/// A user's set outlives its last handshake by this much at most: a
/// janitor for sets whose sessions vanished with their node.
const SET_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// KEYS[1]: the user's set. ARGV: the clientId, the cap, the session
/// record prefix, the grace (ms), the set's TTL (s). Returns 1 if counted,
/// 0 if the user is at the cap.
const OPEN: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local places = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #places, 2 do
  local id, at = places[i], tonumber(places[i + 1])
  if at < now - tonumber(ARGV[4]) and redis.call('EXISTS', ARGV[3] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
  end
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"#;

fn user_key(user: &str) -> String {
    format!("{USER_PREFIX}{user}")
}

impl Shared {
    /// Counts `client_id` among `user`'s sessions unless the user holds
    /// `max` already; `Ok(false)`: at the cap.
    pub(super) fn open_user<'a>(
        &'a self,
        user: &'a str,
        client_id: &'a str,
        max: usize,
    ) -> Pending<'a, Result<bool, String>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let counted: i64 = bounded(
                "counting a user's sessions",
                Script::new(OPEN)
                    .key(user_key(user))
                    .arg(client_id)
                    .arg(max)
                    .arg(SESSION_PREFIX)
                    .arg(GRACE.as_millis() as u64)
                    .arg(SET_TTL.as_secs())
                    .invoke_async(&mut connection),
            )
            .await?;
            Ok(counted == 1)
        })
    }

    /// Frees `client_id`'s place among `user`'s sessions (not waited for).
    pub(super) fn close_user(&self, user: &str, client_id: &str) {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(user_key(user)).arg(client_id);
        self.send_later("freeing a user's session", cmd);
    }
}
