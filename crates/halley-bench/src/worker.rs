//! One worker process: a slice of the users, each a real Bayeux client with
//! its own session, cookie jar and connection, subscribed to its room.
//!
//! Users record what they receive into one histogram and one set of counts
//! per worker; each user takes every delivery already waiting before it
//! locks them, so the lock is taken once per batch, not once per message.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use halley_client::{Client, Deliveries};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};

use crate::control::{encode, Command, Event, Plan, WorkerResult};
use crate::histogram::Latencies;
use crate::payload::{now_us, ChatMessage};
use crate::scenario::Scenario;
use crate::sysstat;
use crate::tally::{Arrival, Counts, SequenceTracker};
use crate::transport;

/// Tries a user gets to handshake and subscribe: a server (or a cluster
/// writing each new session to Redis) swamped by tens of thousands of
/// handshakes at once may let a few time out, and a real client would try
/// again. Each retry is counted in the report.
const CONNECT_ATTEMPTS: usize = 3;

/// What every user of the worker records into.
#[derive(Default)]
struct Recorder {
    latencies: Mutex<Latencies>,
    counts: Mutex<Counts>,
    /// The measuring window, µs since the epoch (both 0 until Start).
    from_us: AtomicU64,
    to_us: AtomicU64,
    connected: AtomicUsize,
    delivered: AtomicU64,
    errors: AtomicU64,
    connect_retries: AtomicU64,
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
        Command::Plan(plan) => plan,
        other => bail!("expected a plan first, got {other:?}"),
    };
    let recorder = Arc::new(Recorder::default());
    let http = transport::shared_http(&plan.scenario, plan.local_address)?;
    let clients = connect_users(&plan, http, &recorder, &events).await;
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
    loop {
        match read_command(&mut commands).await? {
            Command::Start { from_us, to_us } => {
                recorder.from_us.store(from_us, Ordering::Relaxed);
                recorder.to_us.store(to_us, Ordering::Relaxed);
                cpu_at_start = sysstat::cpu_time(None);
            }
            Command::Finish => break,
            Command::Plan(_) => bail!("a second plan"),
        }
    }
    progress.abort();
    let cpu_s = match (cpu_at_start, sysstat::cpu_time(None)) {
        (Some(start), Some(end)) => end.saturating_sub(start).as_secs_f64(),
        _ => 0.0,
    };
    let rehandshakes = clients.iter().map(|c| c.stats().rehandshakes).sum();
    let result = WorkerResult {
        counts: *recorder.counts.lock().expect("recorder"),
        latencies: recorder.latencies.lock().expect("recorder").to_buckets(),
        errors: recorder.errors.load(Ordering::Relaxed),
        rehandshakes,
        cpu_s,
        connect_retries: recorder.connect_retries.load(Ordering::Relaxed),
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
            loop {
                match connect_user(&scenario, user, http.clone(), local).await {
                    Ok((client, deliveries)) => {
                        recorder.connected.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(listen(deliveries, recorder));
                        return anyhow::Ok(client);
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

/// One user: a client of its URL, handshaken and subscribed to its room.
async fn connect_user(
    scenario: &Scenario,
    user: usize,
    http: transport::SharedHttp,
    local: Option<std::net::IpAddr>,
) -> anyhow::Result<(Arc<Client>, Deliveries)> {
    // A user only subscribes: one connection each, so a node's file limit
    // is spent on users, not on spare connections.
    let client = transport::client(scenario, scenario.url_for(user), http, local, false)?;
    let client = Arc::new(client);
    let deliveries = client.take_deliveries().expect("first take");
    client.handshake().await?;
    client
        .subscribe(&Scenario::channel(scenario.room_of(user)))
        .await?;
    Ok((client, deliveries))
}

/// One user's receiving loop.
async fn listen(mut deliveries: Deliveries, recorder: Arc<Recorder>) {
    let mut tracker = SequenceTracker::default();
    let mut batch = Vec::with_capacity(64);
    while let Some(first) = deliveries.recv().await {
        batch.push(first);
        while batch.len() < 1024 {
            match deliveries.try_recv() {
                Some(more) => batch.push(more),
                None => break,
            }
        }
        let now = now_us();
        let from = recorder.from_us.load(Ordering::Relaxed);
        let to = recorder.to_us.load(Ordering::Relaxed);
        let mut counts = Counts::default();
        let mut samples = Vec::with_capacity(batch.len());
        let mut errors = 0;
        for delivery in batch.drain(..) {
            let Ok(message) = serde_json::from_str::<ChatMessage>(delivery.data.get()) else {
                errors += 1;
                continue;
            };
            let arrival = tracker.observe(message.s);
            if message.t < from || message.t >= to {
                counts.outside_window += 1;
                continue;
            }
            match arrival {
                Arrival::Duplicate => counts.duplicates += 1,
                Arrival::OutOfOrder | Arrival::InOrder => {
                    if arrival == Arrival::OutOfOrder {
                        counts.out_of_order += 1;
                    }
                    counts.delivered += 1;
                    samples.push(now.saturating_sub(message.t));
                }
            }
        }
        {
            let mut latencies = recorder.latencies.lock().expect("recorder");
            for sample in &samples {
                latencies.record_us(*sample);
            }
        }
        recorder.counts.lock().expect("recorder").merge(&counts);
        recorder
            .delivered
            .fetch_add(counts.delivered, Ordering::Relaxed);
        if errors > 0 {
            recorder.errors.fetch_add(errors, Ordering::Relaxed);
        }
    }
}
