//! One worker process: a slice of the users, each a real Bayeux client with
//! its own session, cookie jar and connection, subscribed to its room.
//!
//! Users record what they receive into one histogram and one set of counts
//! per worker, from the client's delivery handler: in the task that read the
//! delivery, with no queue and no task of its own between (a queue and a
//! wake-up per delivery were ~12% of the load generator's CPU, on the cores
//! it shares with the server under test).
//!
//! While measuring, two optional tasks run beside the users: the sampler
//! sends the worker's part of each row of the time series (`series`), and
//! the cutter cuts a share of the users' connections every period (`cuts`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use halley_client::{Client, Delivery, State};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};

use crate::control::{encode, Command, Event, Plan, WorkerResult};
use crate::cuts::CutSchedule;
use crate::histogram::Latencies;
use crate::payload::{now_us, ChatMessage};
use crate::scenario::Scenario;
use crate::series::WorkerSample;
use crate::sysstat;
use crate::tally::{Arrival, Counts, SequenceTracker};
use crate::transport;

/// Tries a user gets to handshake and subscribe: a server (or a cluster
/// writing each new session to Redis) swamped by tens of thousands of
/// handshakes at once may let a few time out, and a real client would try
/// again. Each retry is counted in the report.
const CONNECT_ATTEMPTS: usize = 3;

/// Times a user waits as a refusal advised (`retry` after an `interval`)
/// before it gives up: enough for a server that lets a few handshakes a
/// second in from each address to let a whole worker in.
const ADVISED_WAITS: usize = 100;

/// How long a refusal asked the client to wait before trying again
/// (`advice: {reconnect: retry, interval}`), if it did.
fn advised_wait(error: &anyhow::Error) -> Option<Duration> {
    let advice = error.downcast_ref::<halley_client::Error>()?.advice()?;
    if advice.reconnect == Some(halley_client::Reconnect::None) {
        return None;
    }
    let ms = advice.interval.filter(|&ms| ms > 0)?;
    Some(Duration::from_millis(ms as u64))
}

/// What every user of the worker records into.
#[derive(Default)]
struct Recorder {
    tally: Mutex<Tally>,
    /// The measuring window, µs since the epoch (both 0 until Start).
    from_us: AtomicU64,
    to_us: AtomicU64,
    connected: AtomicUsize,
    delivered: AtomicU64,
    errors: AtomicU64,
    connect_retries: AtomicU64,
    /// Refusals whose advised interval a connecting user waited out.
    advised_waits: AtomicU64,
    cuts: AtomicU64,
}

/// What deliveries add up to, under one lock (one lock per delivery).
#[derive(Default)]
struct Tally {
    latencies: Latencies,
    counts: Counts,
    /// Latencies since the last sample (with a time series only).
    recent: Option<Latencies>,
}

/// Runs a worker on this process's stdin/stdout until Finish.
pub async fn run() -> anyhow::Result<()> {
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let (events, mut outgoing) = mpsc::unbounded_channel::<Event>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(event) = outgoing.recv().await {
            if stdout.write_all(encode(&event).as_bytes()).await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });

    let plan = match read_command(&mut commands).await? {
        Command::Plan(plan) => *plan,
        other => bail!("expected a plan first, got {other:?}"),
    };
    let recorder = Arc::new(Recorder::default());
    let http = transport::shared_http(&plan.scenario, plan.local_address)?;
    if plan.scenario.sample_every.is_some() {
        recorder.tally.lock().expect("recorder").recent = Some(Latencies::new());
    }
    let clients = Arc::new(connect_users(&plan, http, &recorder, &events).await);
    let failed = plan.user_count - clients.len();
    if failed > 0 {
        let _ = events.send(Event::Failed {
            reason: format!(
                "{failed} of {} users of worker {} could not handshake and subscribe",
                plan.user_count, plan.index
            ),
        });
        drop(events);
        let _ = writer.await;
        return Ok(());
    }
    let _ = events.send(Event::Ready);

    let progress = tokio::spawn({
        let recorder = recorder.clone();
        let events = events.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let _ = events.send(progress(&recorder));
            }
        }
    });

    let mut cpu_at_start = None;
    let mut sampler = None;
    let mut cutter = None;
    loop {
        match read_command(&mut commands).await? {
            Command::Start { from_us, to_us } => {
                recorder.from_us.store(from_us, Ordering::Relaxed);
                recorder.to_us.store(to_us, Ordering::Relaxed);
                cpu_at_start = sysstat::cpu_time(None);
                if let Some(period) = plan.scenario.sample_every {
                    sampler = Some(tokio::spawn(sample(
                        period,
                        from_us,
                        to_us,
                        recorder.clone(),
                        clients.clone(),
                        events.clone(),
                    )));
                }
                if let Some(schedule) = plan.scenario.cuts {
                    cutter = Some(tokio::spawn(cut(
                        schedule,
                        from_us,
                        to_us,
                        recorder.clone(),
                        clients.clone(),
                    )));
                }
            }
            Command::Finish => break,
            Command::Plan(_) => bail!("a second plan"),
        }
    }
    if let Some(cutter) = cutter {
        cutter.abort();
    }
    // The last row is taken at the window's end, which Finish may beat.
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    progress.abort();
    let cpu_s = match (cpu_at_start, sysstat::cpu_time(None)) {
        (Some(start), Some(end)) => end.saturating_sub(start).as_secs_f64(),
        _ => 0.0,
    };
    let rehandshakes = clients.iter().map(|c| c.stats().rehandshakes).sum();
    let (counts, latencies) = {
        let tally = recorder.tally.lock().expect("recorder");
        (tally.counts, tally.latencies.to_buckets())
    };
    let result = WorkerResult {
        counts,
        latencies,
        errors: recorder.errors.load(Ordering::Relaxed),
        rehandshakes,
        cpu_s,
        connect_retries: recorder.connect_retries.load(Ordering::Relaxed),
        cuts: recorder.cuts.load(Ordering::Relaxed),
        advised_waits: recorder.advised_waits.load(Ordering::Relaxed),
    };
    let _ = events.send(Event::Result(result));
    drop(events);
    let _ = writer.await;
    // Leave without disconnecting thousands of sessions one by one: the
    // server expires them, and the run is over.
    std::process::exit(0);
}

async fn read_command<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> anyhow::Result<Command> {
    let line = lines
        .next_line()
        .await
        .context("reading the coordinator")?
        .context("the coordinator went away")?;
    serde_json::from_str(&line).with_context(|| format!("bad command {line:?}"))
}

fn progress(recorder: &Recorder) -> Event {
    Event::Progress {
        connected: recorder.connected.load(Ordering::Relaxed),
        delivered: recorder.delivered.load(Ordering::Relaxed),
        errors: recorder.errors.load(Ordering::Relaxed),
    }
}

/// Sleeps until `at_us` (µs since the epoch) on the machine's clock, which
/// the coordinator and every worker share.
async fn sleep_until_us(at_us: u64) {
    tokio::time::sleep(Duration::from_micros(at_us.saturating_sub(now_us()))).await;
}

/// Sends this worker's part of every row of the time series, at `from_us +
/// k × period` up to `to_us`.
async fn sample(
    period: Duration,
    from_us: u64,
    to_us: u64,
    recorder: Arc<Recorder>,
    clients: Arc<Vec<Arc<Client>>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let period_us = period.as_micros().max(1) as u64;
    let mut delivered_before = 0;
    for index in 1.. {
        let at = from_us + index * period_us;
        if at > to_us {
            break;
        }
        sleep_until_us(at).await;
        let delivered = recorder.delivered.load(Ordering::Relaxed);
        let latencies = recorder
            .tally
            .lock()
            .expect("recorder")
            .recent
            .replace(Latencies::new())
            .unwrap_or_default();
        let mut sample = WorkerSample {
            index,
            delivered: delivered - delivered_before,
            latencies: latencies.to_buckets(),
            cuts: recorder.cuts.load(Ordering::Relaxed),
            ..WorkerSample::default()
        };
        delivered_before = delivered;
        for client in clients.iter() {
            let rehandshakes = client.stats().rehandshakes;
            sample.connected += usize::from(client.state() == State::Connected);
            sample.rehandshaken += usize::from(rehandshakes > 0);
            sample.rehandshakes += rehandshakes;
        }
        let _ = events.send(Event::Sample(sample));
    }
}

/// Cuts the users of each cut of `schedule` at its time.
async fn cut(
    schedule: CutSchedule,
    from_us: u64,
    to_us: u64,
    recorder: Arc<Recorder>,
    clients: Arc<Vec<Arc<Client>>>,
) {
    for k in 1.. {
        let Some(at) = schedule.at_us(k, from_us, to_us) else {
            break;
        };
        sleep_until_us(at).await;
        let mut cut = 0;
        for user in schedule.users(k, clients.len()) {
            clients[user].cut();
            cut += 1;
        }
        recorder.cuts.fetch_add(cut, Ordering::Relaxed);
    }
}

/// Connects every user of the plan; returns the clients that made it.
async fn connect_users(
    plan: &Plan,
    http: transport::SharedHttp,
    recorder: &Arc<Recorder>,
    events: &mpsc::UnboundedSender<Event>,
) -> Vec<Arc<Client>> {
    let gate = Arc::new(Semaphore::new(plan.connecting_at_once.max(1)));
    let mut joins = Vec::with_capacity(plan.user_count);
    for user in plan.first_user..plan.first_user + plan.user_count {
        let scenario = plan.scenario.clone();
        let http = http.clone();
        let gate = gate.clone();
        let recorder = recorder.clone();
        let local = plan.local_address;
        joins.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("never closed");
            let mut attempt = 1;
            let mut advised_waits = 0;
            loop {
                match connect_user(&scenario, user, http.clone(), local, &recorder).await {
                    Ok(client) => {
                        recorder.connected.fetch_add(1, Ordering::Relaxed);
                        return anyhow::Ok(client);
                    }
                    // A server shedding load (a handshake rate, a session
                    // cap) says when to come back: a real client waits that
                    // long, and it is not a failed attempt.
                    Err(error)
                        if advised_waits < ADVISED_WAITS && advised_wait(&error).is_some() =>
                    {
                        advised_waits += 1;
                        recorder.advised_waits.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(advised_wait(&error).unwrap_or_default()).await;
                    }
                    Err(error) if attempt >= CONNECT_ATTEMPTS => return Err(error),
                    Err(error) => {
                        // A fresh client (a new session): the failed one's
                        // session, if the server made it, expires unused.
                        attempt += 1;
                        let retries = recorder.connect_retries.fetch_add(1, Ordering::Relaxed);
                        if retries < 3 {
                            tracing::warn!("a user tries to connect again: {error:#}");
                        }
                    }
                }
            }
        }));
    }
    let reporter = tokio::spawn({
        let recorder = recorder.clone();
        let events = events.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let _ = events.send(progress(&recorder));
            }
        }
    });
    let mut clients = Vec::with_capacity(joins.len());
    let mut failures = 0;
    for join in joins {
        let failure = match join.await {
            Ok(Ok(client)) => {
                clients.push(client);
                continue;
            }
            Ok(Err(error)) => format!("{error:#}"),
            Err(error) => format!("user task failed: {error}"),
        };
        // The first few say why; thousands of identical lines would not.
        failures += 1;
        if failures <= 3 {
            tracing::warn!("a user could not connect: {failure}");
        }
    }
    if failures > 3 {
        tracing::warn!("{failures} users could not connect in all");
    }
    reporter.abort();
    let _ = events.send(progress(recorder));
    clients
}

/// One user: a client of its URL, handshaken and subscribed to its room,
/// whose deliveries go to a [`Listener`].
async fn connect_user(
    scenario: &Scenario,
    user: usize,
    http: transport::SharedHttp,
    local: Option<std::net::IpAddr>,
    recorder: &Arc<Recorder>,
) -> anyhow::Result<Arc<Client>> {
    let listener = Listener {
        tracker: Mutex::default(),
        recorder: recorder.clone(),
    };
    // A user only subscribes: one connection each, so a node's file limit
    // is spent on users, not on spare connections.
    let client = transport::client(scenario, user, scenario.url_for(user), http, local, false)
        .on_delivery(move |delivery| listener.observe(&delivery))
        .build()?;
    let client = Arc::new(client);
    client.handshake().await?;
    client
        .subscribe(&Scenario::channel(scenario.room_of(user)))
        .await?;
    Ok(client)
}

/// One user's receiving end: called with each delivery, in the server's
/// order, by the client's task that read it.
struct Listener {
    /// Only this user's tasks take it, one at a time: never contended.
    tracker: Mutex<SequenceTracker>,
    recorder: Arc<Recorder>,
}

impl Listener {
    fn observe(&self, delivery: &Delivery) {
        let now = now_us();
        let recorder = &self.recorder;
        let Ok(message) = serde_json::from_str::<ChatMessage>(delivery.data.get()) else {
            recorder.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let arrival = self.tracker.lock().expect("tracker").observe(message.s);
        let from = recorder.from_us.load(Ordering::Relaxed);
        let to = recorder.to_us.load(Ordering::Relaxed);
        let mut tally = recorder.tally.lock().expect("recorder");
        if message.t < from || message.t >= to {
            tally.counts.outside_window += 1;
            return;
        }
        match arrival {
            Arrival::Duplicate => tally.counts.duplicates += 1,
            Arrival::OutOfOrder | Arrival::InOrder => {
                if arrival == Arrival::OutOfOrder {
                    tally.counts.out_of_order += 1;
                }
                tally.counts.delivered += 1;
                let latency = now.saturating_sub(message.t);
                tally.latencies.record_us(latency);
                if let Some(recent) = tally.recent.as_mut() {
                    recent.record_us(latency);
                }
                drop(tally);
                recorder.delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use halley_client::{Advice, Error, Reconnect, ServerError};

    use super::*;

    fn refused(advice: Option<Advice>) -> anyhow::Error {
        anyhow::Error::new(Error::Refused {
            channel: "/meta/handshake".into(),
            error: ServerError::new("429::handshake_rate_exceeded"),
            advice,
        })
    }

    #[test]
    fn a_user_waits_what_a_refusal_advised() {
        let wait = advised_wait(&refused(Some(Advice::retry(3200, 0))));
        assert_eq!(wait, Some(Duration::from_millis(3200)));
        // Wrapped in context, as connect_user's callers see it.
        let wrapped = refused(Some(Advice::retry(1500, 0))).context("handshake");
        assert_eq!(advised_wait(&wrapped), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn no_advised_wait_without_an_interval_or_when_told_to_stop() {
        assert_eq!(advised_wait(&refused(None)), None);
        assert_eq!(advised_wait(&refused(Some(Advice::retry(0, 0)))), None);
        let none = Advice {
            reconnect: Some(Reconnect::None),
            interval: Some(1000),
            ..Advice::default()
        };
        assert_eq!(advised_wait(&refused(Some(none))), None);
        assert_eq!(advised_wait(&anyhow::anyhow!("connection refused")), None);
    }
}
