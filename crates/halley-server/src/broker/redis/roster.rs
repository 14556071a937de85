//! Presence rooms on Redis: [`Roster`] for the Redis broker, so
//! `/service/presence` lists the members of every node.
//!
//! Keys (see `docs/cluster.md`):
//! - `halley:presence:room:<room>`, a hash: member id -> `<clientId>\n<name>`
//!   (a name has no control character, so the newline separates);
//! - `halley:presence:of:<clientId>`, a hash: room -> member id (what the
//!   session is in: its joins are idempotent, its rooms counted, and its
//!   end takes it out of all of them);
//! - `halley:presence:rooms`, a set of the rooms that have members (what
//!   [`Roster::sweep`] walks).
//!
//! Each change is one script, so the caps hold against joins on every node
//! at once. A member whose session record (`halley:session:<clientId>`,
//! see `directory.rs`) is gone is swept: its node died and its client did
//! not come back within the record's TTL. One node per
//! [`SWEEP_EVERY`] does the walk (a `SET NX PX` token), not every node.

use redis::Script;

use super::directory::{bounded, Shared, SESSION_PREFIX};
use crate::broker::directory::Pending;
use crate::broker::roster::{Bounds, Joined, Left, Member, Refused, Roster, SWEEP_EVERY};

const ROOM_PREFIX: &str = "halley:presence:room:";
const OF_PREFIX: &str = "halley:presence:of:";
const ROOMS: &str = "halley:presence:rooms";
const SWEEPING: &str = "halley:presence:sweeping";

/// KEYS: room, the session's rooms, the room set. ARGV: room, clientId,
/// name, new member id, max members, max rooms. Returns {id, changed 0/1,
/// count}, or {"", -1, 0} (too many rooms), {"", -2, 0} (room full).
const JOIN: &str = r#"
local value = ARGV[2] .. '\n' .. ARGV[3]
local id = redis.call('HGET', KEYS[2], ARGV[1])
if id then
  local old = redis.call('HGET', KEYS[1], id)
  redis.call('HSET', KEYS[1], id, value)
  redis.call('SADD', KEYS[3], ARGV[1])
  local changed = 0
  if old ~= value then changed = 1 end
  return {id, changed, redis.call('HLEN', KEYS[1])}
end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[6]) then return {'', -1, 0} end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return {'', -2, 0} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[1], ARGV[4], value)
redis.call('SADD', KEYS[3], ARGV[1])
return {ARGV[4], 1, redis.call('HLEN', KEYS[1])}
"#;

/// KEYS: the session's rooms, the room set. ARGV: the room prefix, then
/// the rooms to leave (none: all of them). Returns a flat list of
/// {room, id, value, count} for each member removed.
const LEAVE: &str = r#"
local rooms = {}
if #ARGV > 1 then
  for i = 2, #ARGV do rooms[#rooms + 1] = ARGV[i] end
else
  rooms = redis.call('HKEYS', KEYS[1])
end
local out = {}
for _, room in ipairs(rooms) do
  local id = redis.call('HGET', KEYS[1], room)
  if id then
    redis.call('HDEL', KEYS[1], room)
    local key = ARGV[1] .. room
    local value = redis.call('HGET', key, id)
    redis.call('HDEL', key, id)
    local count = redis.call('HLEN', key)
    if count == 0 then redis.call('SREM', KEYS[2], room) end
    if value then
      out[#out + 1] = room; out[#out + 1] = id; out[#out + 1] = value; out[#out + 1] = count
    end
  end
end
return out
"#;

/// KEYS: the room set, the sweep token. ARGV: room prefix, rooms-of
/// prefix, session record prefix, this node, the token's life (ms).
/// Returns what [`LEAVE`] does, or nothing when another node swept in
/// this period.
const SWEEP: &str = r#"
if not redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[5]) then return {} end
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. room
  local members = redis.call('HGETALL', key)
  for i = 1, #members, 2 do
    local id, value = members[i], members[i + 1]
    local client = string.match(value, '^([^\n]*)')
    if redis.call('EXISTS', ARGV[3] .. client) == 0 then
      redis.call('HDEL', key, id)
      redis.call('HDEL', ARGV[2] .. client, room)
      out[#out + 1] = room; out[#out + 1] = id; out[#out + 1] = value
      out[#out + 1] = redis.call('HLEN', key)
    end
  end
  if redis.call('HLEN', key) == 0 then redis.call('SREM', KEYS[1], room) end
end
return out
"#;

/// The scripts, hashed once (`Script` loads one again after NOSCRIPT).
static SCRIPTS: std::sync::LazyLock<Scripts> = std::sync::LazyLock::new(|| Scripts {
    join: Script::new(JOIN),
    leave: Script::new(LEAVE),
    sweep: Script::new(SWEEP),
});

struct Scripts {
    join: Script,
    leave: Script,
    sweep: Script,
}

/// `<clientId>\n<name>` -> the name.
fn name_of(value: &str) -> &str {
    value.split_once('\n').map_or(value, |(_, name)| name)
}

/// A flat {room, id, value, count} list from [`LEAVE`] or [`SWEEP`].
fn lefts(flat: Vec<redis::Value>) -> Result<Vec<Left>, String> {
    let mut lefts = Vec::with_capacity(flat.len() / 4);
    for chunk in flat.chunks_exact(4) {
        let text = |v: &redis::Value| -> Result<String, String> {
            redis::from_redis_value(v.clone()).map_err(|e| e.to_string())
        };
        let count: i64 = redis::from_redis_value(chunk[3].clone()).map_err(|e| e.to_string())?;
        lefts.push(Left {
            room: text(&chunk[0])?,
            member: Member {
                id: text(&chunk[1])?,
                name: name_of(&text(&chunk[2])?).to_owned(),
            },
            count: count.max(0) as usize,
        });
    }
    Ok(lefts)
}

impl Roster for Shared {
    fn join<'a>(
        &'a self,
        client_id: &'a str,
        room: &'a str,
        name: &'a str,
        new_id: String,
        bounds: Bounds,
    ) -> Pending<'a, Result<Result<Joined, Refused>, String>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let (id, changed, count): (String, i64, i64) = bounded(
                "joining a presence room",
                SCRIPTS
                    .join
                    .key(format!("{ROOM_PREFIX}{room}"))
                    .key(format!("{OF_PREFIX}{client_id}"))
                    .key(ROOMS)
                    .arg(room)
                    .arg(client_id)
                    .arg(name)
                    .arg(new_id)
                    .arg(bounds.max_members)
                    .arg(bounds.max_rooms)
                    .invoke_async(&mut connection),
            )
            .await?;
            Ok(match changed {
                -1 => Err(Refused::TooManyRooms),
                -2 => Err(Refused::RoomFull),
                changed => Ok(Joined {
                    id,
                    changed: changed == 1,
                    count: count.max(0) as usize,
                }),
            })
        })
    }

    fn leave<'a>(
        &'a self,
        client_id: &'a str,
        room: &'a str,
    ) -> Pending<'a, Result<Option<Left>, String>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let flat: Vec<redis::Value> = bounded(
                "leaving a presence room",
                SCRIPTS
                    .leave
                    .key(format!("{OF_PREFIX}{client_id}"))
                    .key(ROOMS)
                    .arg(ROOM_PREFIX)
                    .arg(room)
                    .invoke_async(&mut connection),
            )
            .await?;
            Ok(lefts(flat)?.pop())
        })
    }

    fn leave_all<'a>(&'a self, client_id: &'a str) -> Pending<'a, Result<Vec<Left>, String>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let flat: Vec<redis::Value> = bounded(
                "leaving presence rooms",
                SCRIPTS
                    .leave
                    .key(format!("{OF_PREFIX}{client_id}"))
                    .key(ROOMS)
                    .arg(ROOM_PREFIX)
                    .invoke_async(&mut connection),
            )
            .await?;
            lefts(flat)
        })
    }

    fn members<'a>(&'a self, room: &'a str) -> Pending<'a, Result<Vec<Member>, String>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let all: Vec<(String, String)> = bounded(
                "listing a presence room",
                redis::cmd("HGETALL")
                    .arg(format!("{ROOM_PREFIX}{room}"))
                    .query_async(&mut connection),
            )
            .await?;
            Ok(all
                .into_iter()
                .map(|(id, value)| Member {
                    id,
                    name: name_of(&value).to_owned(),
                })
                .collect())
        })
    }

    fn sweep(&self) -> Pending<'_, Result<Vec<Left>, String>> {
        Box::pin(async move {
            let mut connection = self.connection();
            // A little less than the period: the next period's first node
            // finds the token gone.
            let token_ms = SWEEP_EVERY.as_millis() as u64 * 9 / 10;
            let flat: Vec<redis::Value> = bounded(
                "sweeping presence rooms",
                SCRIPTS
                    .sweep
                    .key(ROOMS)
                    .key(SWEEPING)
                    .arg(ROOM_PREFIX)
                    .arg(OF_PREFIX)
                    .arg(SESSION_PREFIX)
                    .arg(self.node_id())
                    .arg(token_ms)
                    .invoke_async(&mut connection),
            )
            .await?;
            lefts(flat)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_member_is_its_client_and_name() {
        assert_eq!(name_of("abc\nAda Lovelace"), "Ada Lovelace");
        assert_eq!(name_of("abc\n"), "");
        let flat = vec![
            redis::Value::BulkString(b"lobby".to_vec()),
            redis::Value::BulkString(b"m1".to_vec()),
            redis::Value::BulkString(b"c1\nada".to_vec()),
            redis::Value::Int(2),
        ];
        assert_eq!(
            lefts(flat).unwrap(),
            vec![Left {
                room: "lobby".into(),
                member: Member {
                    id: "m1".into(),
                    name: "ada".into()
                },
                count: 2
            }]
        );
    }
}
