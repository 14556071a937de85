//! The cluster's sessions and log on Redis: [`Directory`] for the Redis
//! broker. See `docs/cluster.md` for the keys and the takeover protocol.
//!
//! A session's record is the hash `halley:session:<clientId>`: `node` (its
//! owner) and `rec` (the [`SessionRecord`] as JSON), expiring
//! [`RECORD_TTL`] after its owner last wrote it. Every write of an owner
//! goes through [`STORE_SCRIPT`], which refuses once another node has
//! claimed the session, so an owner that has not yet heard it lost a
//! session cannot take it back. A takeover is [`CLAIM_SCRIPT`] (the
//! claimer becomes the owner in one step), then, when the old owner's
//! heartbeat key says it is alive, `release <clientId> <owner> <claimer>`
//! on [`CONTROL`]: the old owner lets go, writes where its client stood,
//! and answers `released <clientId> <claimer>` on the same connection,
//! after that write, so the claimer reads the final record. A dead owner
//! does not answer; the claimer waits [`RELEASE_WAIT`] and reads what was
//! last written.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::Value;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::{decode_payload, CONTROL, LOG, NODE_PREFIX, OFFSET, TIMEOUT};
use crate::broker::directory::{
    Claimed, Directory, LogRead, LoggedPublication, Pending, SessionRecord,
};
use crate::broker::LocalFanout;

/// A session's record is this and its clientId.
pub const SESSION_PREFIX: &str = "halley:session:";
/// A record expires this long after its owner last wrote it (owners write
/// their sessions' records every few seconds, see `node/takeover.rs`).
pub const RECORD_TTL: Duration = Duration::from_secs(60);
/// After Redis came back without the cluster's data, how long a session
/// not found is answered "retry" rather than "unknown": every node writes
/// its sessions again at once, and within its next refresh at the latest.
pub const RESTORING: Duration = Duration::from_secs(10);
/// How long a claimer waits for a live owner to let go.
pub const RELEASE_WAIT: Duration = Duration::from_millis(500);
/// Most log entries one takeover reads back (the whole log).
const LOG_READ_MAX: usize = super::LOG_LENGTH + super::LOG_LENGTH / 10;

/// KEYS[1]: the record; ARGV: this node, the record's JSON, its TTL,
/// whether it may move (1/0). Writes unless another node owns the
/// session. Returns 1 if written.
pub const STORE_SCRIPT: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'rec', ARGV[2], 'movable', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// KEYS[1]: the record; ARGV: the claimer, the heartbeat key prefix, the
/// TTL. Returns nil (no such session, or one that may not move: its owner
/// is left alone) or {old owner, alive 0/1, record}.
pub const CLAIM_SCRIPT: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'node')
if not owner then return nil end
if redis.call('HGET', KEYS[1], 'movable') == '0' then return nil end
redis.call('HSET', KEYS[1], 'node', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local alive = 0
if owner ~= ARGV[1] then alive = redis.call('EXISTS', ARGV[2] .. owner) end
return {owner, alive, redis.call('HGET', KEYS[1], 'rec')}
"#;

/// KEYS[1]: the record; ARGV[1]: this node. Deletes it if this node owns it.
pub const FORGET_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#;

fn sha(script: &str) -> String {
    redis::Script::new(script).get_hash().to_owned()
}

fn record_key(client_id: &str) -> String {
    format!("{SESSION_PREFIX}{client_id}")
}

/// What the broker's tasks and the directory's calls share.
pub struct Shared {
    node_id: String,
    /// The writer's connection of the moment (a multiplexed connection is
    /// a handle: commands from here and the writer's pipelines share it).
    connection: Mutex<MultiplexedConnection>,
    /// Takeovers waiting for their old owner's `released`.
    waiting: Mutex<HashMap<String, oneshot::Sender<()>>>,
    store_sha: String,
    claim_sha: String,
    forget_sha: String,
    /// The newest log offset this node has received.
    last_offset: std::sync::atomic::AtomicU64,
    /// The newest log offset when this node joined the cluster.
    joined_at: std::sync::atomic::AtomicU64,
    /// Connections made so far (a new one: the node writes its records).
    generation: std::sync::atomic::AtomicU64,
    /// When Redis was last found without the cluster's data: for a while
    /// after, a session not found may be one not yet written again.
    lost_data_at: Mutex<Option<std::time::Instant>>,
    /// The token naming the cluster's data (`halley:epoch`) last read.
    epoch: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(node_id: &str, connection: MultiplexedConnection) -> Self {
        Shared {
            node_id: node_id.to_owned(),
            connection: Mutex::new(connection),
            waiting: Mutex::default(),
            store_sha: sha(STORE_SCRIPT),
            claim_sha: sha(CLAIM_SCRIPT),
            forget_sha: sha(FORGET_SCRIPT),
            last_offset: Default::default(),
            joined_at: Default::default(),
            generation: Default::default(),
            lost_data_at: Mutex::new(None),
            epoch: Mutex::new(None),
        }
    }

    /// The token naming the cluster's data, as this node just read it;
    /// `true` if it differs from the one it read before: Redis lost the
    /// data meanwhile (see [`RESTORING`]).
    pub fn set_epoch(&self, epoch: String) -> bool {
        let before = self.epoch.lock().replace(epoch.clone());
        let lost = before.is_some_and(|before| before != epoch);
        if lost {
            *self.lost_data_at.lock() = Some(std::time::Instant::now());
        }
        lost
    }

    fn restoring(&self) -> bool {
        self.lost_data_at
            .lock()
            .is_some_and(|at| at.elapsed() < RESTORING)
    }

    /// The reader received the publication at `offset`.
    pub fn received(&self, offset: u64) {
        self.last_offset
            .fetch_max(offset, std::sync::atomic::Ordering::Relaxed);
    }

    /// This node joins when the log's newest offset is `newest`: it has
    /// received everything up to there (nothing of it is for it).
    pub fn joined_at(&self, newest: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.joined_at.store(newest, Relaxed);
        self.last_offset.fetch_max(newest, Relaxed);
    }

    pub fn last_offset(&self) -> u64 {
        self.last_offset.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn set_connection(&self, connection: MultiplexedConnection) {
        *self.connection.lock() = connection;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    pub(super) fn connection(&self) -> MultiplexedConnection {
        self.connection.lock().clone()
    }

    /// Sends `cmd` without waiting for it (a session's end: nothing waits,
    /// and what fails is undone by a TTL or a sweep).
    pub(super) fn send_later(&self, what: &'static str, cmd: redis::Cmd) {
        let mut connection = self.connection();
        tokio::spawn(async move {
            if let Err(error) = bounded(what, cmd.query_async::<()>(&mut connection)).await {
                tracing::debug!(%error, "not sent to Redis");
            }
        });
    }

    fn store_pipeline(&self, records: &[SessionRecord]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for record in records {
            pipe.add_command(self.store_command(record)).ignore();
        }
        pipe
    }

    fn store_command(&self, record: &SessionRecord) -> redis::Cmd {
        let json = serde_json::to_string(record).expect("a record serializes");
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.store_sha)
            .arg(1)
            .arg(record_key(&record.client_id))
            .arg(&self.node_id)
            .arg(json)
            .arg(RECORD_TTL.as_secs())
            .arg(if record.movable { 1 } else { 0 });
        cmd
    }
}

pub(super) async fn bounded<T>(
    what: &str,
    query: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, query).await {
        Ok(result) => result.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {TIMEOUT:?}")),
    }
}

impl Directory for Shared {
    fn store(&self, record: SessionRecord) -> Pending<'_, Result<(), String>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let cmd = self.store_command(&record);
            bounded("storing a session", cmd.query_async::<i64>(&mut connection))
                .await
                .map(|_| ())
        })
    }

    fn store_later(&self, records: Vec<SessionRecord>) {
        if records.is_empty() {
            return;
        }
        let pipe = self.store_pipeline(&records);
        let mut connection = self.connection();
        tokio::spawn(async move {
            if let Err(error) = bounded(
                "refreshing sessions",
                pipe.query_async::<()>(&mut connection),
            )
            .await
            {
                tracing::debug!(%error, "session records not refreshed");
            }
        });
    }

    fn store_many(&self, records: Vec<SessionRecord>) -> Pending<'_, Result<(), String>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
            }
            let pipe = self.store_pipeline(&records);
            let mut connection = self.connection();
            bounded("writing sessions", pipe.query_async::<()>(&mut connection)).await
        })
    }

    fn forget(&self, client_id: &str) {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.forget_sha)
            .arg(1)
            .arg(record_key(client_id))
            .arg(&self.node_id);
        self.send_later("forgetting a session", cmd);
    }

    fn open_user_session<'a>(
        &'a self,
        user: &'a str,
        client_id: &'a str,
        max: usize,
    ) -> Pending<'a, Result<bool, String>> {
        self.open_user(user, client_id, max)
    }

    fn close_user_session(&self, user: &str, client_id: &str) {
        self.close_user(user, client_id);
    }

    fn hold_browser_poll<'a>(
        &'a self,
        browser: &'a str,
        client_id: &'a str,
        max: usize,
        life_ms: u64,
    ) -> Pending<'a, Result<bool, String>> {
        self.hold_poll(browser, client_id, max, life_ms)
    }

    fn release_browser_poll(&self, browser: &str, client_id: &str) {
        self.release_poll(browser, client_id);
    }

    fn claim<'a>(&'a self, client_id: &'a str) -> Pending<'a, Result<Option<Claimed>, String>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let key = record_key(client_id);
            let claimed: Option<(String, i64, Option<String>)> = bounded(
                "claiming a session",
                redis::cmd("EVALSHA")
                    .arg(&self.claim_sha)
                    .arg(1)
                    .arg(&key)
                    .arg(&self.node_id)
                    .arg(NODE_PREFIX)
                    .arg(RECORD_TTL.as_secs())
                    .query_async(&mut connection),
            )
            .await?;
            let Some((owner, alive, record)) = claimed else {
                if self.restoring() {
                    return Err("Redis lost its data: sessions are being written again".into());
                }
                return Ok(None);
            };
            let mut released = owner == self.node_id;
            let mut record = record;
            if alive == 1 {
                let (tell, told) = oneshot::channel();
                self.waiting.lock().insert(client_id.to_owned(), tell);
                let asked = bounded(
                    "asking for a release",
                    redis::cmd("PUBLISH")
                        .arg(CONTROL)
                        .arg(format!("release {client_id} {owner} {}", self.node_id))
                        .query_async::<i64>(&mut connection),
                )
                .await;
                if asked.is_ok()
                    && tokio::time::timeout(RELEASE_WAIT, told)
                        .await
                        .is_ok_and(|r| r.is_ok())
                {
                    released = true;
                    record = bounded(
                        "reading a released session",
                        redis::cmd("HGET")
                            .arg(&key)
                            .arg("rec")
                            .query_async(&mut connection),
                    )
                    .await?;
                }
                self.waiting.lock().remove(client_id);
            }
            let Some(record) = record else {
                return Ok(None);
            };
            let record: SessionRecord = serde_json::from_str(&record)
                .map_err(|e| format!("a malformed session record: {e}"))?;
            Ok(Some(Claimed { record, released }))
        })
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn joined(&self) -> u64 {
        self.joined_at.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn read_log(&self, after: u64) -> Pending<'_, Result<LogRead, String>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let (entries, newest): (Value, Option<u64>) = bounded(
                "reading the log",
                redis::pipe()
                    .cmd("XRANGE")
                    .arg(LOG)
                    .arg(format!("({after}-0"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(LOG_READ_MAX)
                    .cmd("GET")
                    .arg(OFFSET)
                    .query_async(&mut connection),
            )
            .await?;
            let entries = parse_log(entries)?;
            let newest = newest.unwrap_or(0);
            let read_to = entries.last().map_or(after, |e| e.offset);
            let gap = match entries.first() {
                Some(first) => first.offset != after + 1 && after != 0,
                None => newest > after,
            };
            Ok(LogRead {
                entries,
                read_to,
                gap,
            })
        })
    }
}

impl Shared {
    /// The log's publications strictly between `after` and `before`: what
    /// this node's subscription missed (its connection was being renewed,
    /// or Redis pushed them as it died).
    pub async fn read_between(
        &self,
        after: u64,
        before: u64,
    ) -> Result<Vec<LoggedPublication>, String> {
        let mut connection = self.connection();
        let entries: Value = bounded(
            "reading the log",
            redis::cmd("XRANGE")
                .arg(LOG)
                .arg(format!("({after}-0"))
                .arg(format!("({before}-0"))
                .arg("COUNT")
                .arg(LOG_READ_MAX)
                .query_async(&mut connection),
        )
        .await?;
        parse_log(entries)
    }
}

/// XRANGE's answer: `[[id, [field, value, ...]], ...]`.
fn parse_log(value: Value) -> Result<Vec<LoggedPublication>, String> {
    let Value::Array(items) = value else {
        return Err("XRANGE answered something else than entries".into());
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            continue;
        };
        if pair.len() != 2 {
            continue;
        }
        let fields = pair.pop();
        let id = pair.pop();
        let id: String =
            redis::from_redis_value(id.unwrap_or(Value::Nil)).map_err(|e| e.to_string())?;
        let Some(offset) = id.split('-').next().and_then(|o| o.parse::<u64>().ok()) else {
            continue;
        };
        let fields: Vec<Vec<u8>> =
            redis::from_redis_value(fields.unwrap_or(Value::Nil)).map_err(|e| e.to_string())?;
        let Some(payload) = fields.get(1) else {
            continue;
        };
        let decoded = decode_payload(payload, |p| {
            Ok::<_, serde_json::Error>(LoggedPublication {
                offset,
                channel: p.channel.clone(),
                data: RawValue::from_string(p.data.get().to_owned())?,
                id: p
                    .id
                    .map(|r| RawValue::from_string(r.get().to_owned()))
                    .transpose()?,
                ext: p
                    .ext
                    .map(|r| RawValue::from_string(r.get().to_owned()))
                    .transpose()?,
            })
        });
        match decoded {
            Ok(Ok(entry)) => entries.push(entry),
            _ => tracing::warn!(offset, "ignoring a malformed entry of {LOG}"),
        }
    }
    Ok(entries)
}

/// A message on [`CONTROL`].
pub fn on_control(shared: &Shared, local: std::sync::Arc<dyn LocalFanout>, message: &[u8]) {
    let Ok(message) = std::str::from_utf8(message) else {
        return;
    };
    let mut words = message.split(' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("release"), Some(client_id), Some(owner), Some(claimer))
            if owner == shared.node_id =>
        {
            let client_id = client_id.to_owned();
            let claimer = claimer.to_owned();
            let mut connection = shared.connection();
            tokio::spawn(async move {
                let record = local.release_session(&client_id).await;
                let mut pipe = redis::pipe();
                if let Some(record) = record {
                    // Where the client stood when this node let go; the
                    // claimer owns the record now, so `node` is left alone.
                    let json = serde_json::to_string(&record).expect("a record serializes");
                    pipe.cmd("HSET")
                        .arg(record_key(&client_id))
                        .arg("rec")
                        .arg(json)
                        .ignore();
                }
                pipe.cmd("PUBLISH")
                    .arg(CONTROL)
                    .arg(format!("released {client_id} {claimer}"))
                    .ignore();
                if let Err(error) = bounded(
                    "releasing a session",
                    pipe.query_async::<()>(&mut connection),
                )
                .await
                {
                    tracing::debug!(%error, "a release was not written");
                }
            });
        }
        (Some("released"), Some(client_id), Some(claimer), None) if claimer == shared.node_id => {
            if let Some(tell) = shared.waiting.lock().remove(client_id) {
                let _ = tell.send(());
            }
        }
        _ => {}
    }
}
