//! `halley`: the command line of the Halley Comet server.
//!
//! Thin by design: each subcommand parses its flags, builds the settings of
//! a library crate, and calls it.
//!
//! | subcommand | module | library |
//! |---|---|---|
//! | `serve` | [`serve`] | `halley-server` |

mod serve;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Halley: a Comet server speaking Bayeux, the protocol of CometD and Faye.
#[derive(Parser)]
#[command(name = "halley", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (in-memory state, no external service needed).
    Serve(serve::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Serve(args) => serve::run(args),
    }
}
