//! `halley`: the command line of the Halley Comet server.
//!
//! Thin by design: each subcommand parses its flags, builds the settings of
//! a library crate, and calls it.
//!
//! | subcommand | module | library |
//! |---|---|---|
//! | `serve` | [`serve`] | `halley-server` |
//! | `bench`, `bench sweep` | [`bench`] | `halley-bench` |
//! | `publish` | [`publish`] | none: one HTTP request to `/api/publish` |

mod bench;
mod publish;
mod serve;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use halley_server::config::LogFormat;

/// jemalloc instead of the system allocator: a push server allocates and
/// frees small buffers per request and per delivery, and glibc's malloc
/// showed up at ~10% of server and load-generator profiles. jemalloc beat
/// both glibc and mimalloc on latency and kept the least memory per idle
/// client (docs/benchmarks.md, 2026-11-26).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use tracing_subscriber::EnvFilter;

/// Halley: a Comet server speaking Bayeux, the protocol of CometD and Faye.
#[derive(Parser)]
#[command(name = "halley", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the server (all in memory; with --redis, a node of a cluster).
    Serve(serve::ServeArgs),
    /// Run the seed's chat benchmark against a Bayeux server (Halley, CometD, Faye).
    Bench(bench::BenchArgs),
    /// Publish a message through a server's HTTP publish API (POST /api/publish).
    Publish(publish::PublishArgs),
    /// One worker process of `halley bench` (started by it, not by hand).
    #[command(hide = true)]
    BenchWorker,
}

/// An error ends the process with one clear message and status 1: no
/// stack backtrace (anyhow prints one with `RUST_BACKTRACE` set), since
/// these are a user's errors (a bad setting, a port in use), not bugs.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // Its log format is a setting: logs start once settings are read.
        Command::Serve(args) => serve::run(args),
        command => {
            init_logs(LogFormat::Text);
            match command {
                Command::Bench(args) => bench::run(args),
                Command::Publish(args) => publish::run(args),
                Command::BenchWorker => bench::worker(),
                Command::Serve(_) => unreachable!("handled above"),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}`: the error and its causes on one line.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); the warnings
/// and errors that pass the filter are also kept for the admin page
/// ([`halley_server::admin::recent`]).
pub(crate) fn init_logs(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(halley_server::admin::recent::layer());
    let writer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => registry
            .with(writer.with_ansi(std::io::stderr().is_terminal()))
            .init(),
        LogFormat::Json => registry.with(writer.json().with_current_span(false)).init(),
    }
}
