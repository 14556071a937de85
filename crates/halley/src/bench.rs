//! `halley bench` (one run), `halley bench sweep` (a matrix and its chart),
//! and the hidden `halley bench-worker` that the coordinator spawns.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use halley_bench::cuts::CutSchedule;
use halley_bench::run::RunOptions;
use halley_bench::sweep::SweepOptions;
use halley_bench::{chart, series, Report, Scenario, TransportChoice};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    common: CommonArgs,
    /// Simulated chat users (each its own session and connection)
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Milliseconds between two bursts
    #[arg(long, default_value_t = 100.0, value_name = "MS")]
    interval: f64,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Run a matrix of user counts x intervals and draw latency against delivered msg/s
    Sweep(SweepArgs),
}

#[derive(Args, Debug)]
struct SweepArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// User counts, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    users: Vec<usize>,
    /// Burst intervals in ms, comma-separated (from light to heavy load)
    #[arg(long, value_delimiter = ',', default_value = "200,100,50,20")]
    intervals: Vec<f64>,
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// Bayeux URL of the server under test (Halley, CometD, Faye...),
    /// http:// or https:// (websocket: wss); repeat it or separate with
    /// commas for the nodes of a cluster: user i connects to URL i mod n,
    /// publishers likewise
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080/cometd"
    )]
    urls: Vec<String>,
    /// Transport every simulated client uses: long-polling, websocket, or
    /// mixed (every other user and publisher on each)
    #[arg(long, default_value = "long-polling")]
    transport: TransportChoice,
    /// Every simulated client (and publisher) uses the ack extension
    #[arg(long)]
    ack: bool,
    /// A PEM file of CA certificates to trust for an https:// URL, besides
    /// the system's roots (e.g. the server's self-signed certificate)
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Users per chat room (/chat/<n>)
    #[arg(long, default_value_t = 200)]
    room_size: usize,
    /// Rooms that get one message in each burst
    #[arg(long, default_value_t = 10)]
    burst: usize,
    /// Bytes of chat text in each message
    #[arg(long, default_value_t = 50)]
    payload: usize,
    /// Length of the measuring window (e.g. 10s, 1m)
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load before measuring starts (e.g. 2s)
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Worker processes (default: enough that none simulates more than 15,000 users)
    #[arg(long)]
    processes: Option<usize>,
    /// Publishing sessions, used in turn (bursts do not wait for each other)
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// PID of the server, to report its CPU time and memory per client;
    /// repeat it (or separate with commas) for a cluster's nodes: the
    /// report sums them and shows each
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// PID of the cluster's Redis, to report its CPU time apart from the nodes'
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Handshakes each worker process has in flight at once while users
    /// connect (default 256); fewer spare a cluster a connect storm
    #[arg(long, value_name = "N")]
    connecting_at_once: Option<usize>,
    /// How long to wait after the window for deliveries still in flight
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Soak: every this long while measuring, cut a share of the users'
    /// connections abruptly (no /meta/disconnect); they reconnect as a
    /// CometD client does (e.g. 60s)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    cut_every: Option<Duration>,
    /// Share of the users each cut takes, in turn (with --cut-every)
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    cut_fraction: f64,
    /// Sample a time series every this long while measuring (server RSS,
    /// open files and sessions; delivered msg/s, latency p50/p99, users
    /// connected, handshakes again, cuts); written with --series
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    sample_every: Option<Duration>,
    /// The server's admin listener (http://127.0.0.1:8081): the series reads
    /// `halley_sessions` from its /metrics
    #[arg(long, value_name = "URL")]
    admin_url: Option<String>,
    /// Write the time series to PREFIX.csv, PREFIX.json and PREFIX.svg
    /// (with --sample-every)
    #[arg(long, value_name = "PREFIX")]
    series: Option<PathBuf>,
    /// Write the report (or the sweep's reports) as JSON to this file
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw latency against delivered msg/s to this SVG file
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
}

impl CommonArgs {
    fn options(&self, users: usize, interval_ms: f64) -> anyhow::Result<RunOptions> {
        Ok(RunOptions {
            scenario: Scenario {
                urls: self.urls.clone(),
                transport: self.transport,
                users,
                room_size: self.room_size,
                burst: self.burst,
                interval: Duration::from_secs_f64(interval_ms / 1000.0),
                payload: self.payload,
                warmup: self.warmup,
                duration: self.duration,
                publishers: self.publishers,
                ack: self.ack,
                ca_cert: self.ca_cert.clone(),
                cuts: self.cut_every.map(|every| CutSchedule {
                    every,
                    fraction: self.cut_fraction,
                }),
                sample_every: self.sample_every,
            },
            processes: self.processes,
            server_pids: self.server_pids.clone(),
            redis_pid: self.redis_pid,
            drain_timeout: self.drain_timeout,
            connecting_at_once: self.connecting_at_once,
            admin_url: self.admin_url.clone(),
            worker_program: std::env::current_exe().context("finding this program")?,
            worker_args: vec!["bench-worker".into()],
        })
    }

    fn write_outputs(
        &self,
        title: &str,
        reports: &[Report],
        json: &serde_json::Value,
    ) -> anyhow::Result<()> {
        if let Some(path) = &self.json {
            std::fs::write(path, serde_json::to_string_pretty(json)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &self.chart {
            std::fs::write(path, chart::svg(title, reports))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// The time series of one run, as CSV, JSON and a chart.
    fn write_series(&self, title: &str, report: &Report) -> anyhow::Result<()> {
        let Some(prefix) = &self.series else {
            return Ok(());
        };
        let with = |extension: &str| {
            let mut path = prefix.clone().into_os_string();
            path.push(extension);
            PathBuf::from(path)
        };
        let write = |path: PathBuf, text: String| {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write(with(".csv"), series::csv(&report.series))?;
        write(
            with(".json"),
            serde_json::to_string_pretty(&report.series)? + "\n",
        )?;
        write(with(".svg"), chart::series_svg(title, &report.series))?;
        Ok(())
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.command {
            None => {
                let options = args.common.options(args.users, args.interval)?;
                let report = halley_bench::run(options).await?;
                print!("{}", report.summary());
                let ack = if report.ack { ", ack" } else { "" };
                let title = format!("{} users, {}{ack}", report.users, report.transport);
                let json = serde_json::to_value(&report)?;
                args.common
                    .write_outputs(&title, std::slice::from_ref(&report), &json)?;
                args.common.write_series(&title, &report)?;
                if report.lost > 0 || report.duplicates > 0 {
                    std::process::exit(3);
                }
                Ok(())
            }
            Some(BenchCommand::Sweep(sweep)) => {
                let intervals = sweep
                    .intervals
                    .iter()
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                    .collect();
                let first_users = sweep.users.first().copied().unwrap_or(1000);
                let options = SweepOptions {
                    base: sweep.common.options(first_users, 100.0)?,
                    users: sweep.users.clone(),
                    intervals,
                };
                let reports = halley_bench::sweep::sweep(options).await;
                let title = format!(
                    "{} ({}{}): latency against delivered msg/s",
                    sweep.common.urls.join(","),
                    sweep.common.transport.as_str(),
                    if sweep.common.ack { ", ack" } else { "" }
                );
                let json = serde_json::to_value(&reports)?;
                sweep.common.write_outputs(&title, &reports, &json)?;
                anyhow::ensure!(!reports.is_empty(), "no sweep point completed");
                Ok(())
            }
        }
    })
}

/// The hidden worker entry point (spawned by the coordinator).
pub fn worker() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(halley_bench::worker::run())
}
