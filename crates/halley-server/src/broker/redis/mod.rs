//! The cluster engine on Redis (cargo feature `redis`): a message published
//! on any node reaches the subscribers of its channel on every node, once,
//! in per-channel order. See `docs/cluster.md` for what it does not do yet.
//!
//! One publish is one Redis command, `EVALSHA` of [`PUBLISH_SCRIPT`], which
//! in one step (a script runs alone in Redis):
//!
//! ```text
//! INCR    halley:offset                                       -> offset
//! XADD    halley:log MAXLEN ~ 100000 <offset>-0 p <publication>
//! PUBLISH halley:publications "<offset> <publication>"
//! ```
//!
//! The log keeps the cluster's recent messages under consecutive offsets
//! (read back to catch up after a hole, and by a session takeover). Every
//! node, the publisher's included, is subscribed to `halley:publications`
//! on a connection of its own; its reader task decodes each message and
//! hands it to the node's [`LocalFanout`]. Redis runs one command at a time
//! and pushes a pub/sub channel's messages to each subscriber in that
//! order, so every node delivers the same sequence, each message once (one
//! subscription per node), the publisher's own node too (it does not
//! deliver locally first, which would reorder it).
//!
//! Files: this one (publishing, the reader and writer tasks, health),
//! `directory.rs` (session records and takeover: [`Directory`]),
//! `roster.rs` (presence rooms shared by the nodes), `users.rs` (each
//! user's sessions, for `max-sessions-per-user`), `browsers.rs` (each
//! browser's held polls, for `max-sessions-per-browser`).
//!
//! Tasks, both started by [`Broker::start`] and ended by [`Broker::stop`]:
//!
//! - the writer owns the command connection: it takes publications from a
//!   bounded queue (filled by [`Broker::publish`], which never waits),
//!   sends whatever has gathered as one pipeline, and refreshes this node's
//!   heartbeat key `halley:node:<id>` (TTL [`HEARTBEAT_TTL`]);
//! - the reader owns the subscription, and PINGs it so a silent connection
//!   is noticed rather than trusted; when it loses Redis, the writer
//!   reconnects too, so both come back on the restarted Redis.
//!
//! Redis lost while running: whichever task notices marks the broker down;
//! from then on [`Broker::publish`] answers [`Published::Unavailable`] at
//! once (the publisher gets `503::broker_unavailable`); local sessions go
//! on. Each task reconnects with a growing pause, the reader resubscribes,
//! and publishing resumes when both are back. What was published during the
//! gap, or queued but not yet sent when the connection broke, is lost:
//! delivery across nodes is best effort while Redis is down.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use halley_protocol::ChannelName;
use parking_lot::Mutex;
use redis::aio::{MultiplexedConnection, PubSub};
use redis::{AsyncConnectionConfig, Client, ServerErrorKind, Value};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::directory::Directory;
use super::{Broker, LocalFanout, Publication, Published};

mod browsers;
mod directory;
mod roster;
mod users;
use directory::Shared;

/// The pub/sub channel every node listens to.
pub const PUBLICATIONS: &str = "halley:publications";
/// The pub/sub channel of takeovers: `release <clientId> <owner> <claimer>`
/// asks a node to let go of a session, `released <clientId> <claimer>`
/// answers.
pub const CONTROL: &str = "halley:control";
/// The offset counter and the log of recent publications.
pub const OFFSET: &str = "halley:offset";
pub const LOG: &str = "halley:log";
/// A node's heartbeat key is this and its id: `halley:node:a1b2c3`.
pub const NODE_PREFIX: &str = "halley:node:";
/// Entries the log keeps, about (`MAXLEN ~`: Redis trims whole blocks,
/// which is cheaper than trimming to the exact count): at 20,000
/// publishes a second, five seconds of them, the longest a takeover
/// should need to reach back.
pub const LOG_LENGTH: usize = 100_000;
/// How often a node refreshes its heartbeat key (and PINGs its subscription).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a node's heartbeat key outlives its last refresh: a node
/// killed without notice counts as dead after this.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);

/// Publications accepted but not yet sent; beyond it publishes are refused
/// (Redis is too slow or gone), not queued without bound.
const QUEUE: usize = 16_384;
/// Most publications sent in one pipeline.
const BATCH: usize = 256;
/// Connecting, and waiting for an answer, take at most this long: a Redis
/// that does not answer counts as lost instead of stalling publishes.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between two reconnection attempts doubles from the first to
/// the second.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Numbers the publication, keeps it in the cluster's log and tells every
/// node, in one step. KEYS[1]: the offset counter, KEYS[2]: the log; ARGV:
/// the publication, the log's length, the pub/sub channel. Returns the
/// offset. Offsets are consecutive: the log's entry ids are `<offset>-0`,
/// so a gap in what a node reads back is a trimmed log, nothing else.
pub const PUBLISH_SCRIPT: &str = r#"
local offset = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], offset .. '-0', 'p', ARGV[1])
redis.call('PUBLISH', ARGV[3], offset .. ' ' .. ARGV[1])
return offset
"#;

/// Keeps the offset counter from going back: after Redis lost its data
/// (restarted without persistence), the first node to reconnect sets it to
/// the newest offset it has seen, so batch numbers and positions of live
/// sessions stay meaningful. KEYS[1]: the counter; ARGV[1]: the offset.
///
/// KEYS[2] names the cluster's data: a random token set by the first node
/// to find it missing, gone only when Redis lost everything. Returns the
/// token: a node that sees another than before knows the data was lost,
/// and the counter (the newest offset).
pub const CONTINUE_SCRIPT: &str = r#"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  current = tonumber(ARGV[1])
end
redis.call('SET', KEYS[2], ARGV[2], 'NX')
return {redis.call('GET', KEYS[2]), current}
"#;

/// The key whose absence means Redis lost the cluster's data.
pub const EPOCH: &str = "halley:epoch";

/// A publication as it travels through Redis: JSON, `data`, `id` and `ext`
/// carried raw (byte for byte, never parsed into a tree).
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    ext: Option<&'a RawValue>,
}

/// Encodes a publication once, for both the stream and the other nodes.
fn encode(publication: &Publication<'_>) -> Vec<u8> {
    let wire = Wire {
        channel: Cow::Borrowed(publication.channel.as_str()),
        data: publication.data,
        id: publication.id,
        ext: publication.ext,
    };
    serde_json::to_vec(&wire).expect("raw JSON values serialize")
}

/// Decodes a `halley:publications` message, `<offset> <publication>`, and
/// hands it to `fan_out`.
fn decode<R>(message: &[u8], fan_out: impl FnOnce(u64, Publication<'_>) -> R) -> Result<R, String> {
    let space = message.iter().position(|&b| b == b' ').ok_or("no offset")?;
    let offset = std::str::from_utf8(&message[..space])
        .ok()
        .and_then(|o| o.parse::<u64>().ok())
        .ok_or("offset not a number")?;
    decode_payload(&message[space + 1..], |publication| {
        fan_out(offset, publication)
    })
}

/// Decodes a publication as the log and the pub/sub channel carry it.
fn decode_payload<R>(
    payload: &[u8],
    fan_out: impl FnOnce(Publication<'_>) -> R,
) -> Result<R, String> {
    let wire: Wire<'_> = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let channel = ChannelName::parse(&wire.channel).map_err(|e| e.to_string())?;
    Ok(fan_out(Publication {
        channel: &channel,
        data: wire.data,
        id: wire.id,
        ext: wire.ext,
    }))
}

/// The offset a `halley:publications` message starts with.
fn offset_of(message: &[u8]) -> Option<u64> {
    let space = message.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&message[..space]).ok()?.parse().ok()
}

/// Delivers what the log holds between `last` (received) and `next` (just
/// arrived). What the log no longer holds (Redis lost its data) is gone:
/// said once.
async fn catch_up(shared: &Shared, local: &dyn LocalFanout, last: u64, next: u64) {
    match shared.read_between(last, next).await {
        Ok(missed) => {
            let found = missed.len() as u64;
            for entry in &missed {
                shared.received(entry.offset);
                local.fan_out_logged(entry.publication(), entry.offset);
            }
            let lost = next - last - 1 - found.min(next - last - 1);
            if lost > 0 {
                tracing::warn!(lost, last, next, "publications missed by this node and no longer in the log (Redis lost its data?)");
            } else {
                tracing::info!(
                    caught_up = found,
                    "publications missed by this node delivered from the log"
                );
            }
        }
        Err(error) => {
            tracing::warn!(%error, missed = next - last - 1, "publications missed by this node: the log cannot be read")
        }
    }
}

/// `url` without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    let mut shown = url.to_owned();
    if let Some(scheme_end) = shown.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = shown[authority_start..]
            .find(['/', '?'])
            .map_or(shown.len(), |i| authority_start + i);
        if let Some(at) = shown[authority_start..authority_end].rfind('@') {
            let userinfo = authority_start..authority_start + at;
            if let Some(colon) = shown[userinfo.clone()].find(':') {
                shown.replace_range(authority_start + colon + 1..userinfo.end, "***");
            }
        }
    }
    // `redis+unix:///run/redis.sock?pass=...`
    if let Some(query_start) = shown.find('?') {
        let query: Vec<String> = shown[query_start + 1..]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key == "pass" || key == "password" => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        shown.replace_range(query_start + 1.., &query.join("&"));
    }
    shown
}

/// Whether each connection is up; the broker takes publishes while both are.
#[derive(Default)]
struct Health {
    writer_down: AtomicBool,
    reader_down: AtomicBool,
    /// The reader lost Redis: the writer's connection is likely dead too,
    /// and would only find out at its next command, possibly after the
    /// reader is back, losing that command. It reconnects at once instead.
    reconnect_writer: AtomicBool,
    subscription_lost: tokio::sync::Notify,
}

#[derive(Clone, Copy, Debug)]
enum Part {
    Writer,
    Reader,
}

impl Health {
    fn up(&self) -> bool {
        !self.writer_down.load(Ordering::Acquire) && !self.reader_down.load(Ordering::Acquire)
    }

    /// Records `part` up or down, and says so when the broker as a whole
    /// changes.
    fn set(&self, part: Part, up: bool) {
        let before = self.up();
        let flag = match part {
            Part::Writer => &self.writer_down,
            Part::Reader => &self.reader_down,
        };
        flag.store(!up, Ordering::Release);
        match (before, self.up()) {
            (true, false) => tracing::warn!(
                ?part,
                "Redis lost: publishes are refused (503::broker_unavailable) until it is back; local sessions go on"
            ),
            (false, true) => tracing::info!("Redis is back: publishing and receiving again"),
            _ => {}
        }
    }
}

/// One publication on its way to Redis.
struct Outgoing {
    /// The encoded publication; empty for a barrier only.
    payload: Vec<u8>,
    /// Told once everything queued up to here has reached Redis (a
    /// publisher waiting for its confirmation, see [`Broker::confirm`]);
    /// dropped, never told, when it was lost.
    barrier: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Outgoing {
    fn is_publication(&self) -> bool {
        !self.payload.is_empty()
    }
}

/// What [`Broker::start`] hands to the tasks: made by
/// [`RedisBroker::connect`], so that a node is subscribed before it serves.
struct Parts {
    queue: mpsc::Receiver<Outgoing>,
    commands: MultiplexedConnection,
    pubsub: PubSub,
}

/// The Redis broker. See the module documentation.
pub struct RedisBroker {
    client: Client,
    /// What the directory's calls and the tasks share: this node's id, the
    /// command connection of the moment, the takeovers waiting for a release.
    shared: Arc<Shared>,
    node_id: String,
    shown_url: String,
    queue: mpsc::Sender<Outgoing>,
    health: Arc<Health>,
    parts: Mutex<Option<Parts>>,
    stop: CancellationToken,
}

impl RedisBroker {
    /// Connects to Redis at `url` as node `node_id`: a command connection
    /// (checked with the script loaded) and the subscription. The error
    /// names the URL (without its password) and what failed.
    pub async fn connect(url: &str, node_id: &str) -> Result<RedisBroker, String> {
        let shown_url = redact(url);
        let client =
            Client::open(url).map_err(|e| format!("invalid Redis URL {shown_url}: {e}"))?;
        let unreachable = |e: String| format!("cannot connect to Redis at {shown_url}: {e}");
        let mut commands = connect_commands(&client).await.map_err(unreachable)?;
        load_script(&mut commands).await.map_err(unreachable)?;
        let (epoch, newest) = continue_offsets(&mut commands, 0)
            .await
            .map_err(unreachable)?;
        beat(&mut commands, node_id).await.map_err(unreachable)?;
        let pubsub = subscribe(&client).await.map_err(unreachable)?;
        let (queue, receiver) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::new(node_id, commands.clone()));
        shared.set_epoch(epoch);
        // This node has heard of nothing before `newest`; what is published
        // from now until its subscription is in place, the reader catches
        // up from the log (it sees the hole after `newest`).
        shared.joined_at(newest);
        Ok(RedisBroker {
            client,
            shared,
            node_id: node_id.to_owned(),
            shown_url,
            queue,
            health: Arc::default(),
            parts: Mutex::new(Some(Parts {
                queue: receiver,
                commands,
                pubsub,
            })),
            stop: CancellationToken::new(),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The URL, without its password.
    pub fn url(&self) -> &str {
        &self.shown_url
    }
}

impl Broker for RedisBroker {
    fn cluster_node(&self) -> Option<(&str, &str)> {
        Some((self.node_id(), self.url()))
    }

    fn publish(&self, publication: Publication<'_>, _local: &dyn LocalFanout) -> Published {
        if !self.health.up() {
            return Published::Unavailable;
        }
        let outgoing = Outgoing {
            payload: encode(&publication),
            barrier: None,
        };
        // Full: Redis does not keep up (or is gone and not yet noticed);
        // closed: the broker is stopping. Refused either way, never awaited.
        match self.queue.try_send(outgoing) {
            // Delivered here too, when it comes back from Redis.
            Ok(()) => Published::Accepted { local: 0 },
            Err(_) => Published::Unavailable,
        }
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn start(&self, local: Weak<dyn LocalFanout>) -> Option<JoinHandle<()>> {
        let Parts {
            queue,
            commands,
            pubsub,
        } = self.parts.lock().take()?;
        let writer = tokio::spawn(write(
            self.client.clone(),
            commands,
            queue,
            self.shared.clone(),
            self.health.clone(),
            self.stop.clone(),
        ));
        let reader = tokio::spawn(read(
            self.client.clone(),
            pubsub,
            local,
            self.shared.clone(),
            self.health.clone(),
            self.stop.clone(),
        ));
        Some(tokio::spawn(async move {
            let _ = reader.await;
            let _ = writer.await;
        }))
    }

    fn stop(&self) {
        self.stop.cancel();
    }

    fn available(&self) -> bool {
        self.health.up()
    }

    fn directory(&self) -> Option<&dyn Directory> {
        Some(&*self.shared)
    }

    fn roster(&self) -> Option<&dyn crate::broker::roster::Roster> {
        Some(&*self.shared)
    }

    fn confirm(&self) -> super::directory::Pending<'_, bool> {
        let (tell, told) = tokio::sync::oneshot::channel();
        let barrier = Outgoing {
            payload: Vec::new(),
            barrier: Some(tell),
        };
        // Down (what was queued is being dropped) or full: not confirmed.
        let queued = self.health.up() && self.queue.try_send(barrier).is_ok();
        Box::pin(async move { queued && told.await.is_ok() })
    }
}

async fn connect_commands(client: &Client) -> Result<MultiplexedConnection, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<()>(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
    Ok(connection)
}

async fn subscribe(client: &Client) -> Result<PubSub, String> {
    let subscribed = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&[PUBLICATIONS, CONTROL]).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(TIMEOUT, subscribed).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
    }
}

fn script_hash() -> String {
    redis::Script::new(PUBLISH_SCRIPT).get_hash().to_owned()
}

async fn load_script(connection: &mut MultiplexedConnection) -> Result<(), String> {
    for script in [
        PUBLISH_SCRIPT,
        directory::STORE_SCRIPT,
        directory::CLAIM_SCRIPT,
        directory::FORGET_SCRIPT,
    ] {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script)
            .query_async::<String>(&mut *connection)
            .await
            .map_err(|e| format!("loading a script: {e}"))?;
    }
    Ok(())
}

/// Runs [`CONTINUE_SCRIPT`] with the newest offset this node has seen;
/// the token naming the cluster's data and the newest offset.
async fn continue_offsets(
    connection: &mut MultiplexedConnection,
    offset: u64,
) -> Result<(String, u64), String> {
    redis::cmd("EVAL")
        .arg(CONTINUE_SCRIPT)
        .arg(2)
        .arg(OFFSET)
        .arg(EPOCH)
        .arg(offset)
        .arg(crate::state::sessions::new_random_id())
        .query_async::<(String, u64)>(connection)
        .await
        .map_err(|e| format!("keeping the log's offsets: {e}"))
}

/// Refreshes this node's heartbeat key; its value is the time of the beat
/// (Unix milliseconds), for whoever looks.
async fn beat(connection: &mut MultiplexedConnection, node_id: &str) -> Result<(), String> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    redis::cmd("SET")
        .arg(format!("{NODE_PREFIX}{node_id}"))
        .arg(now_ms.to_string())
        .arg("EX")
        .arg(HEARTBEAT_TTL.as_secs())
        .query_async::<()>(connection)
        .await
        .map_err(|e| e.to_string())
}

/// Sends `batch` as one pipeline of script calls. A Redis that lost its
/// script cache (restarted, `SCRIPT FLUSH`) answers NOSCRIPT: the script is
/// loaded again and those calls sent again, in order. A publication Redis
/// refuses otherwise is logged; the error is the connection's.
async fn send(
    connection: &mut MultiplexedConnection,
    sha: &str,
    batch: &[Outgoing],
) -> Result<(), String> {
    let mut pending: Vec<&Outgoing> = batch.iter().filter(|o| o.is_publication()).collect();
    if pending.is_empty() {
        return Ok(());
    }
    for attempt in 0..2 {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for outgoing in &pending {
            pipe.cmd("EVALSHA")
                .arg(sha)
                .arg(2)
                .arg(OFFSET)
                .arg(LOG)
                .arg(outgoing.payload.as_slice())
                .arg(LOG_LENGTH)
                .arg(PUBLICATIONS);
        }
        let answers: Vec<Value> = pipe
            .query_async(connection)
            .await
            .map_err(|e| e.to_string())?;
        let mut no_script = Vec::new();
        for (outgoing, answer) in pending.iter().zip(answers) {
            if let Value::ServerError(error) = answer {
                if error.kind() == Some(ServerErrorKind::NoScript) && attempt == 0 {
                    no_script.push(*outgoing);
                } else {
                    tracing::warn!(bytes = outgoing.payload.len(), %error, "Redis refused a publication");
                }
            }
        }
        if no_script.is_empty() {
            break;
        }
        load_script(connection).await?;
        pending = no_script;
    }
    Ok(())
}

/// The pause before the next reconnection attempt.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(RETRY_FIRST)
    }

    fn next(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(RETRY_MAX);
        pause
    }
}

/// The writer task: publications to Redis, heartbeats, reconnection.
async fn write(
    client: Client,
    commands: MultiplexedConnection,
    mut queue: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let node_id = shared.node_id().to_owned();
    let sha = script_hash();
    let mut commands = Some(commands);
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    // After a slow send, one beat, not a burst of the missed ones.
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    let mut retry = Backoff::new();
    loop {
        let Some(connection) = commands.as_mut() else {
            // Accepted before the loss was noticed. Sent after an outage of
            // unknown length they would arrive arbitrarily late: dropped
            // instead, and said so (best effort, see docs/cluster.md).
            let mut lost = 0;
            while queue.try_recv().is_ok() {
                lost += 1;
            }
            if lost > 0 {
                tracing::warn!(lost, "publications lost: Redis unavailable");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(retry.next()) => {}
            }
            match connect_commands(&client).await {
                Ok(mut connection) => {
                    let resumed = async {
                        load_script(&mut connection).await?;
                        continue_offsets(&mut connection, shared.last_offset()).await
                    };
                    match resumed.await {
                        Ok((epoch, _)) => {
                            if shared.set_epoch(epoch) {
                                tracing::warn!("Redis came back without the cluster's data: this node writes its sessions again");
                            }
                        }
                        Err(error) => {
                            tracing::debug!(%error, "reconnecting to Redis");
                            continue;
                        }
                    }
                    shared.set_connection(connection.clone());
                    // This connection is newer than any loss the reader saw.
                    health.reconnect_writer.store(false, Ordering::Release);
                    commands = Some(connection);
                    retry = Backoff::new();
                    heartbeat.reset_immediately();
                    health.set(Part::Writer, true);
                }
                Err(error) => tracing::debug!(%error, "reconnecting to Redis"),
            }
            continue;
        };
        let failure = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            n = queue.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                let sent = send(connection, &sha, &batch).await;
                if sent.is_err() {
                    let lost = batch.iter().filter(|o| o.is_publication()).count();
                    tracing::warn!(lost, "publications lost: Redis unavailable");
                } else {
                    // In Redis: the publishers waiting on these are told.
                    for outgoing in &mut batch {
                        if let Some(barrier) = outgoing.barrier.take() {
                            let _ = barrier.send(());
                        }
                    }
                }
                batch.clear();
                sent.err()
            }
            _ = heartbeat.tick() => beat(connection, &node_id).await.err(),
            // A wake-up left from before the last reconnection finds the
            // flag clear.
            _ = health.subscription_lost.notified() => health
                .reconnect_writer
                .swap(false, Ordering::AcqRel)
                .then(|| "the subscription was lost".to_owned()),
        };
        if let Some(error) = failure {
            tracing::debug!(%error, "Redis command connection lost");
            commands = None;
            health.set(Part::Writer, false);
        }
    }
    // Stopping: what was accepted still goes out, and the heartbeat key
    // goes at once, so the others need not wait for its TTL.
    let Some(mut connection) = commands else {
        return;
    };
    queue.close();
    while let Some(outgoing) = queue.recv().await {
        batch.push(outgoing);
    }
    let leaving = async {
        if !batch.is_empty() && send(&mut connection, &sha, &batch).await.is_ok() {
            for outgoing in &mut batch {
                if let Some(barrier) = outgoing.barrier.take() {
                    let _ = barrier.send(());
                }
            }
        }
        let _ = redis::cmd("DEL")
            .arg(format!("{NODE_PREFIX}{node_id}"))
            .query_async::<()>(&mut connection)
            .await;
    };
    let _ = tokio::time::timeout(TIMEOUT, leaving).await;
}

/// The reader task: every publication of the cluster to this node's
/// fan-out, resubscribing after a loss.
async fn read(
    client: Client,
    pubsub: PubSub,
    local: Weak<dyn LocalFanout>,
    shared: Arc<Shared>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut pubsub = Some(pubsub);
    let mut retry = Backoff::new();
    loop {
        let Some(subscribed) = pubsub.take() else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(retry.next()) => {}
            }
            match subscribe(&client).await {
                Ok(subscribed) => {
                    pubsub = Some(subscribed);
                    retry = Backoff::new();
                    health.set(Part::Reader, true);
                }
                Err(error) => tracing::debug!(%error, "resubscribing to Redis"),
            }
            continue;
        };
        let (mut sink, mut messages) = subscribed.split();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + HEARTBEAT_EVERY,
            HEARTBEAT_EVERY,
        );
        let lost = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                message = messages.next() => {
                    let Some(message) = message else {
                        break "connection closed".to_owned();
                    };
                    // The node is gone: nothing left to deliver to.
                    let Some(local) = local.upgrade() else {
                        return;
                    };
                    if message.get_channel_name() == CONTROL {
                        directory::on_control(&shared, local.clone(), message.get_payload_bytes());
                        continue;
                    }
                    // A hole before this one (the subscription was being
                    // renewed, or a message was lost on its way): caught up
                    // from the log first, in order.
                    if let Some(offset) = offset_of(message.get_payload_bytes()) {
                        let last = shared.last_offset();
                        if last != 0 && offset > last + 1 {
                            catch_up(&shared, &*local, last, offset).await;
                        }
                    }
                    let delivered = decode(message.get_payload_bytes(), |offset, publication| {
                        tracing::trace!(offset, channel = %publication.channel, "publication from Redis");
                        shared.received(offset);
                        local.fan_out_logged(publication, offset)
                    });
                    if let Err(error) = delivered {
                        tracing::warn!(%error, "ignoring a malformed message on {PUBLICATIONS}");
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(TIMEOUT, sink.ping::<()>()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => break error.to_string(),
                        Err(_) => break format!("no answer to PING within {TIMEOUT:?}"),
                    }
                }
            }
        };
        tracing::debug!(error = %lost, "Redis subscription lost");
        health.set(Part::Reader, false);
        health.reconnect_writer.store(true, Ordering::Release);
        health.subscription_lost.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn a_publication_round_trips_byte_for_byte() {
        let channel = ChannelName::parse("/chat/room-1").unwrap();
        let data = raw(r#"{ "price" : 1.50, "name":"Äpple" }"#);
        let id = raw(r#""m1""#);
        let ext = raw(r#"{"trace":[1,2]}"#);
        let publication = Publication {
            channel: &channel,
            data: &data,
            id: Some(&id),
            ext: Some(&ext),
        };
        let mut message = b"1700 ".to_vec();
        message.extend(encode(&publication));
        let seen = decode(&message, |offset, p| {
            (
                offset,
                p.channel.as_str().to_owned(),
                p.data.get().to_owned(),
                p.id.map(|r| r.get().to_owned()),
                p.ext.map(|r| r.get().to_owned()),
            )
        })
        .unwrap();
        assert_eq!(seen.0, 1700);
        assert_eq!(seen.1, "/chat/room-1");
        assert_eq!(seen.2, data.get(), "data kept byte for byte");
        assert_eq!(seen.3.as_deref(), Some(r#""m1""#));
        assert_eq!(seen.4.as_deref(), Some(r#"{"trace":[1,2]}"#));

        let bare = Publication {
            channel: &channel,
            data: &data,
            id: None,
            ext: None,
        };
        let encoded = String::from_utf8(encode(&bare)).unwrap();
        assert!(
            !encoded.contains("\"id\"") && !encoded.contains("\"ext\""),
            "{encoded}"
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let refused = |message: &str| decode(message.as_bytes(), |_, _| ()).unwrap_err();
        refused("no-offset-here");
        refused("1 not json");
        refused(r#"1-0 {"channel":"/a","data":1}"#);
        refused(r#"1 {"channel":"no-slash","data":1}"#);
        refused(r#"1 {"channel":"/a/*","data":1}"#);
        refused(r#"1 {"channel":"/a"}"#);
    }

    #[test]
    fn passwords_are_kept_out_of_sight() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
            ("rediss://me:hunter2@host", "rediss://me:***@host"),
            ("redis://me@host", "redis://me@host"),
            ("redis://me:p@ss@host/1", "redis://me:***@host/1"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=hunter2",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn reconnection_pauses_grow_to_a_bound() {
        let mut backoff = Backoff::new();
        let pauses: Vec<Duration> = (0..8).map(|_| backoff.next()).collect();
        assert_eq!(pauses[0], RETRY_FIRST);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*pauses.last().unwrap(), RETRY_MAX);
    }

    #[test]
    fn the_broker_is_up_only_while_both_connections_are() {
        let health = Health::default();
        assert!(health.up());
        health.set(Part::Reader, false);
        assert!(!health.up());
        health.set(Part::Writer, false);
        health.set(Part::Reader, true);
        assert!(!health.up(), "the writer is still down");
        health.set(Part::Writer, true);
        assert!(health.up());
    }
}
