//! The coordinator of one run: workers, phases, publisher, merge, report.
//!
//! 1. **connecting**: spawn the worker processes (enough that none holds more
//!    than ~15,000 sockets: one process may open at most 20,000 files here),
//!    each with its slice of users and, when there are several, its own
//!    127.0.0.x source address; wait until every user has subscribed. Each
//!    user connects to one of the URLs in turn ([`Scenario::url_for`]).
//! 2. **warm-up**: the publisher runs; deliveries are not counted.
//! 3. **measuring**: deliveries of messages *scheduled* in the window are
//!    counted and timed.
//! 4. **drain**: wait until every expected delivery has arrived (or the drain
//!    timeout passes: what is missing then is lost), collect and merge.
//!
//! With `sample_every`, the measuring window is also a time series (see
//! [`crate::series`]): the workers send their parts of each row, and a task
//! here reads the server's RSS, open files and sessions at the same instants.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use halley_client::Client;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::control::{encode, Command, Event, Plan, WorkerResult};
use crate::histogram::Latencies;
use crate::payload::now_us;
use crate::publisher::{self, Published};
use crate::report::{per_delivery_us, NodeFigures, Report};
use crate::scenario::{split_users, Scenario};
use crate::series::{self, Collector, ServerReading, WorkerSample};
use crate::sysstat;
use crate::tally::Counts;

/// Users one worker process simulates at most by default.
pub const USERS_PER_PROCESS: usize = 15_000;
/// Handshakes one worker has in flight at once while its users connect,
/// by default.
pub const CONNECTING_AT_ONCE: usize = 256;

pub struct RunOptions {
    pub scenario: Scenario,
    /// Worker processes; `None`: enough for [`USERS_PER_PROCESS`].
    pub processes: Option<usize>,
    /// The server's PIDs (one per cluster node), to report their CPU time
    /// and memory, summed and one by one.
    pub server_pids: Vec<u32>,
    /// Redis's PID, to report its CPU time apart from the nodes'.
    pub redis_pid: Option<u32>,
    /// How long to wait after the window for deliveries still in flight.
    pub drain_timeout: Duration,
    /// Handshakes each worker has in flight at once while connecting
    /// (`None`: [`CONNECTING_AT_ONCE`]). Fewer spare a cluster that writes
    /// every new session to Redis from a connect storm.
    pub connecting_at_once: Option<usize>,
    /// The admin listener of the server (`http://127.0.0.1:8081`), whose
    /// `/metrics` gives the sessions of the time series.
    pub admin_url: Option<String>,
    /// The program and arguments that start one worker (this binary's hidden subcommand).
    pub worker_program: PathBuf,
    pub worker_args: Vec<String>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

pub async fn run(options: RunOptions) -> anyhow::Result<Report> {
    let scenario = options.scenario.clone();
    scenario.validate().map_err(anyhow::Error::msg)?;
    // A CA file that cannot be read stops the run before any worker starts.
    crate::transport::trust(&scenario)?;
    let processes = options
        .processes
        .unwrap_or_else(|| scenario.users.div_ceil(USERS_PER_PROCESS))
        .max(1);
    let slices = split_users(scenario.users, processes);
    let processes = slices.len();
    let phases = Phases::new();
    let salt: u8 = rand::random_range(1..=254);
    let rss_before = sysstat::total(
        options
            .server_pids
            .iter()
            .map(|&pid| sysstat::rss_bytes(Some(pid))),
    );
    let loopback = scenario.urls.iter().all(|url| is_loopback(url));

    // 1. connecting
    let (events_tx, mut events) = mpsc::unbounded_channel::<(usize, Event)>();
    let mut workers = Vec::with_capacity(processes);
    for (index, users) in slices.iter().enumerate() {
        let mut child = tokio::process::Command::new(&options.worker_program)
            .args(&options.worker_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting worker {}", options.worker_program.display()))?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let plan = Plan {
            scenario: scenario.clone(),
            index,
            first_user: users.start,
            user_count: users.len(),
            local_address: source_address(loopback, index, salt),
            connecting_at_once: options.connecting_at_once.unwrap_or(CONNECTING_AT_ONCE),
        };
        stdin
            .write_all(encode(&Command::Plan(Box::new(plan))).as_bytes())
            .await?;
        let tx = events_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Event>(&line) {
                    Ok(event) => {
                        let _ = tx.send((index, event));
                    }
                    Err(error) => tracing::warn!("worker {index} said {line:?}: {error}"),
                }
            }
        });
        workers.push(Worker { child, stdin });
    }
    drop(events_tx);

    let bar = phases.start("connecting", scenario.users as u64, "users");
    let mut connected = vec![0usize; processes];
    let mut ready = 0;
    while ready < processes {
        let Some((index, event)) = events.recv().await else {
            bail!("a worker exited while connecting (see its log above)");
        };
        match event {
            Event::Progress { connected: n, .. } => {
                connected[index] = n;
                bar.set_position(connected.iter().sum::<usize>() as u64);
            }
            Event::Ready => ready += 1,
            Event::Failed { reason } => bail!("worker {index}: {reason}"),
            Event::Result(_) | Event::Sample(_) => {
                bail!("worker {index} reported before finishing")
            }
        }
    }
    bar.finish();
    let node_rss: Vec<Option<u64>> = options
        .server_pids
        .iter()
        .map(|&pid| sysstat::rss_bytes(Some(pid)))
        .collect();
    let server_rss = sysstat::total(node_rss.iter().copied());
    let redis_rss = options
        .redis_pid
        .and_then(|pid| sysstat::rss_bytes(Some(pid)));

    let publishers = connect_publishers(&scenario).await?;

    // 2. and 3. warm-up and measuring
    let start_us = now_us() + 200_000;
    let window_from_us = start_us + scenario.warmup.as_micros() as u64;
    let end_us = window_from_us + scenario.duration.as_micros() as u64;
    for worker in &mut workers {
        let start = Command::Start {
            from_us: window_from_us,
            to_us: end_us,
        };
        worker.stdin.write_all(encode(&start).as_bytes()).await?;
    }
    let published = Arc::new(Published::default());
    let sampler = tokio::spawn(sample_cpu(
        options.server_pids.clone(),
        options.redis_pid,
        window_from_us,
        end_us,
    ));
    let mut series = scenario
        .sample_every
        .map(|period| Collector::new(period, processes));
    let server_series = scenario.sample_every.map(|period| {
        tokio::spawn(read_server(
            period,
            options.server_pids.clone(),
            options.admin_url.clone(),
            window_from_us,
            end_us,
        ))
    });
    let publishing = {
        let scenario = scenario.clone();
        let publishers = publishers.clone();
        let published = published.clone();
        tokio::spawn(async move {
            publisher::run(
                &scenario,
                &publishers,
                start_us,
                window_from_us,
                end_us,
                published,
            )
            .await
        })
    };
    phases
        .timed(
            "warm-up",
            scenario.warmup,
            &mut events,
            &mut [],
            &mut series,
        )
        .await;
    let mut delivered = vec![0u64; processes];
    phases
        .timed(
            "measuring",
            scenario.duration,
            &mut events,
            &mut delivered,
            &mut series,
        )
        .await;
    publishing.await.context("publisher")?;
    let cpu = sampler.await.context("cpu sampler")?;
    let server_cpu_s = sysstat::total(cpu.nodes.iter().copied());

    // 4. drain
    let expected = published.expected.load(Ordering::Relaxed);
    let bar = phases.start("draining", expected, "deliveries");
    let deadline = tokio::time::Instant::now() + options.drain_timeout;
    loop {
        let total: u64 = delivered.iter().sum();
        bar.set_position(total.min(expected));
        if total >= expected {
            break;
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some((index, Event::Progress { delivered: n, .. }))) => delivered[index] = n,
            Ok(Some((_, Event::Sample(sample)))) => add_sample(&mut series, sample),
            Ok(Some(_)) => {}
            Ok(None) => bail!("a worker exited while draining"),
            Err(_) => break,
        }
    }
    bar.finish();

    for worker in &mut workers {
        worker
            .stdin
            .write_all(encode(&Command::Finish).as_bytes())
            .await?;
    }
    let mut results: Vec<Option<WorkerResult>> = vec![None; processes];
    while results.iter().any(Option::is_none) {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some((index, Event::Result(result)))) => results[index] = Some(result),
            Ok(Some((_, Event::Sample(sample)))) => add_sample(&mut series, sample),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => bail!("a worker did not report its result"),
        }
    }
    for worker in &mut workers {
        let _ = worker.child.wait().await;
    }
    for client in publishers.iter() {
        let _ = client.disconnect().await;
    }

    let mut latencies = Latencies::new();
    let mut counts = Counts::default();
    let mut errors = published.errors.load(Ordering::Relaxed);
    let mut rehandshakes = 0;
    let mut connect_retries = 0;
    let mut cuts = 0;
    let mut advised_waits = 0;
    let mut workers_cpu_s = 0.0;
    for result in results.into_iter().flatten() {
        latencies.merge(&Latencies::from_buckets(&result.latencies));
        counts.merge(&result.counts);
        errors += result.errors;
        rehandshakes += result.rehandshakes;
        connect_retries += result.connect_retries;
        cuts += result.cuts;
        advised_waits += result.advised_waits;
        workers_cpu_s += result.cpu_s;
    }
    if let (Some(series), Some(readings)) = (series.as_mut(), server_series) {
        for reading in readings.await.context("server sampler")? {
            series.add_server(reading);
        }
    }
    let series = series.map(|s| s.rows()).unwrap_or_default();
    let duration_s = scenario.duration.as_secs_f64();
    Ok(Report {
        server_url: scenario.urls_joined(),
        users: scenario.users,
        transport: scenario.transport.as_str().to_owned(),
        ack: scenario.ack,
        room_size: scenario.room_size,
        burst: scenario.burst,
        interval_ms: scenario.interval.as_secs_f64() * 1000.0,
        payload: scenario.payload,
        processes,
        duration_s,
        published: published.published.load(Ordering::Relaxed),
        expected,
        delivered: counts.delivered,
        lost: expected.saturating_sub(counts.delivered),
        duplicates: counts.duplicates,
        out_of_order: counts.out_of_order,
        offered_per_sec: scenario.offered_deliveries_per_sec(),
        delivered_per_sec: counts.delivered as f64 / duration_s,
        latency_ms: latencies.quantiles_ms(),
        errors,
        rehandshakes,
        connect_retries,
        loadgen_cpu_s: cpu.own + workers_cpu_s,
        server_cpu_s,
        server_rss_bytes: server_rss,
        server_rss_per_client_bytes: match (rss_before, server_rss) {
            (Some(before), Some(after)) => {
                Some(after.saturating_sub(before) as f64 / scenario.users as f64)
            }
            _ => None,
        },
        server_cpu_us_per_delivery: per_delivery_us(server_cpu_s, counts.delivered),
        nodes: options
            .server_pids
            .iter()
            .zip(cpu.nodes.iter().zip(&node_rss))
            .map(|(&pid, (&cpu_s, &rss_bytes))| NodeFigures {
                pid,
                cpu_s,
                rss_bytes,
            })
            .collect(),
        redis_cpu_s: cpu.redis,
        redis_cpu_us_per_delivery: per_delivery_us(cpu.redis, counts.delivered),
        redis_rss_bytes: redis_rss,
        machine_cpu_s: cpu.machine,
        load_average: cpu.load_average,
        cut_every_s: scenario.cuts.map(|c| c.every.as_secs_f64()),
        cut_fraction: scenario.cuts.map(|c| c.fraction),
        cuts,
        advised_waits,
        window_from_unix_s: window_from_us as f64 / 1e6,
        growth: series::growth(&series, GROWTH_FROM, GROWTH_SPAN),
        series,
        date: today(),
    })
}

/// Where a soak's growth is measured from: by five minutes connections,
/// caches and allocator arenas have settled.
pub const GROWTH_FROM: Duration = Duration::from_secs(300);
/// The span each side of the growth is the median of.
pub const GROWTH_SPAN: Duration = Duration::from_secs(60);

fn add_sample(series: &mut Option<Collector>, sample: WorkerSample) {
    if let Some(series) = series {
        series.add_worker(sample);
    }
}

/// Reads the server at `from_us + k × period` up to `to_us`: RSS and open
/// files summed over `pids`, sessions from the admin listener's `/metrics`.
async fn read_server(
    period: Duration,
    pids: Vec<u32>,
    admin_url: Option<String>,
    from_us: u64,
    to_us: u64,
) -> Vec<ServerReading> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("a plain HTTP client builds");
    let metrics_url = admin_url.map(|url| format!("{}/metrics", url.trim_end_matches('/')));
    let period_us = period.as_micros().max(1) as u64;
    let mut readings = Vec::new();
    for index in 1.. {
        let at = from_us + index * period_us;
        if at > to_us {
            break;
        }
        tokio::time::sleep(Duration::from_micros(at.saturating_sub(now_us()))).await;
        let sum =
            |read: &dyn Fn(u32) -> Option<u64>| sysstat::total(pids.iter().map(|&pid| read(pid)));
        let rss_bytes = sum(&|pid| sysstat::rss_bytes(Some(pid)));
        let fds = sum(&sysstat::open_fds);
        let sessions = match &metrics_url {
            Some(url) => match http.get(url).send().await {
                Ok(response) => response
                    .text()
                    .await
                    .ok()
                    .and_then(|text| series::gauge(&text, "halley_sessions")),
                Err(_) => None,
            },
            None => None,
        };
        readings.push(ServerReading {
            index,
            rss_bytes,
            fds,
            sessions,
        });
    }
    readings
}

fn is_loopback(url: &str) -> bool {
    url.contains("://127.") || url.contains("://localhost")
}

/// Against loopback servers, worker `i` of a run connects from its own
/// 127.x.y.z address: each source address has its own ephemeral ports, and
/// `salt` (random per run) keeps a run clear of the previous run's
/// connections still in TIME_WAIT, which otherwise exhaust 127.0.0.1's ports
/// over a sweep. (Against several nodes each node's port is a destination
/// of its own, with its own ~28,000 ephemeral ports per source address.)
fn source_address(loopback: bool, index: usize, salt: u8) -> Option<IpAddr> {
    loopback.then(|| {
        IpAddr::from([
            127,
            salt.max(1),
            (index / 250) as u8,
            2 + (index % 250) as u8,
        ])
    })
}

async fn connect_publishers(scenario: &Scenario) -> anyhow::Result<Arc<Vec<Arc<Client>>>> {
    let http = crate::transport::shared_http(scenario, None)?;
    let mut publishers = Vec::with_capacity(scenario.publishers);
    for index in 0..scenario.publishers {
        let url = scenario.url_for(index);
        let client =
            crate::transport::client(scenario, index, url, http.clone(), None, true).build()?;
        client.handshake().await.context("publisher handshake")?;
        publishers.push(Arc::new(client));
    }
    Ok(Arc::new(publishers))
}

/// CPU seconds used in the measuring window.
struct WindowCpu {
    /// This process (the coordinator and its publishers).
    own: f64,
    /// Each server process, in the order given.
    nodes: Vec<Option<f64>>,
    redis: Option<f64>,
    /// The whole machine (every process, every core).
    machine: Option<f64>,
    /// Load averages at the end of the window.
    load_average: Option<[f64; 3]>,
}

/// CPU seconds of this process, the server's and Redis between two instants.
async fn sample_cpu(
    server_pids: Vec<u32>,
    redis_pid: Option<u32>,
    from_us: u64,
    to_us: u64,
) -> WindowCpu {
    let sleep_until =
        |at_us: u64| tokio::time::sleep(Duration::from_micros(at_us.saturating_sub(now_us())));
    // This process first (`None`), then the nodes, then Redis.
    let pids: Vec<Option<u32>> = std::iter::once(None)
        .chain(server_pids.iter().map(|&pid| Some(pid)))
        .chain(redis_pid.map(Some))
        .collect();
    let read = || -> Vec<_> { pids.iter().map(|&pid| sysstat::cpu_time(pid)).collect() };
    sleep_until(from_us).await;
    let before = read();
    let machine_before = sysstat::machine_busy();
    sleep_until(to_us).await;
    let machine = sysstat::cpu_deltas(&[machine_before], &[sysstat::machine_busy()])[0];
    let load_average = sysstat::load_average();
    let mut deltas = sysstat::cpu_deltas(&before, &read()).into_iter();
    let own = deltas.next().flatten().unwrap_or(0.0);
    let nodes: Vec<Option<f64>> = deltas.by_ref().take(server_pids.len()).collect();
    let redis = redis_pid.and(deltas.next().flatten());
    WindowCpu {
        own,
        nodes,
        redis,
        machine,
        load_average,
    }
}

/// Today's date (UTC), for the report.
fn today() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10].to_owned()
}

/// Progress display: bars on a terminal, one plain line per phase otherwise.
struct Phases {
    terminal: bool,
}

impl Phases {
    fn new() -> Self {
        Phases {
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn start(&self, phase: &str, total: u64, unit: &str) -> ProgressBar {
        if !self.terminal {
            eprintln!("{phase}: {total} {unit}");
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{prefix:>10}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{elapsed}}"
            ))
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_owned());
        bar
    }

    /// Shows a phase of fixed length while keeping workers' delivered counts
    /// current and collecting their samples.
    async fn timed(
        &self,
        phase: &str,
        length: Duration,
        events: &mut mpsc::UnboundedReceiver<(usize, Event)>,
        delivered: &mut [u64],
        series: &mut Option<Collector>,
    ) {
        let bar = self.start(phase, length.as_millis() as u64, "ms");
        let started = tokio::time::Instant::now();
        let end = started + length;
        loop {
            bar.set_position(started.elapsed().as_millis() as u64);
            match tokio::time::timeout_at(end, events.recv()).await {
                Ok(Some((index, Event::Progress { delivered: n, .. }))) => {
                    if let Some(slot) = delivered.get_mut(index) {
                        *slot = n;
                    }
                }
                Ok(Some((_, Event::Sample(sample)))) => add_sample(series, sample),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        bar.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_differ_per_worker_and_run_on_loopback_only() {
        assert!(is_loopback("http://127.0.0.1:8080/cometd"));
        assert!(is_loopback("http://localhost:8080/cometd"));
        assert!(!is_loopback("http://10.0.0.1:8080/cometd"));
        assert_eq!(
            source_address(true, 0, 9),
            Some(IpAddr::from([127, 9, 0, 2]))
        );
        assert_eq!(
            source_address(true, 1, 9),
            Some(IpAddr::from([127, 9, 0, 3]))
        );
        assert_eq!(source_address(false, 1, 9), None);
    }

    #[test]
    fn today_is_a_date() {
        let date = today();
        assert_eq!(date.len(), 10);
        assert!(date.starts_with("20"));
    }
}
