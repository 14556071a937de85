//! The coordinator and its worker processes talk in JSON lines: commands on
//! the worker's stdin, events on its stdout (its stderr is left for logs).
//!
//! ```text
//! coordinator                         worker
//!   Plan ───────────────────────────▶   connects its users
//!        ◀─────────────────────────── Progress{connected} ... Ready
//!   Start{window} ──────────────────▶   counts deliveries in the window
//!        ◀─────────────────────────── Progress{delivered} ... Sample{k} ...
//!   Finish ─────────────────────────▶
//!        ◀─────────────────────────── Result{counts, latencies, cpu}
//! ```

use serde::{Deserialize, Serialize};

use crate::histogram::LatencyBuckets;
use crate::scenario::Scenario;
use crate::series::WorkerSample;
use crate::tally::Counts;

/// What one worker simulates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub index: usize,
    /// The users `first..first+count` of the scenario.
    pub first_user: usize,
    pub user_count: usize,
    /// Source address for this worker's connections (spreads ephemeral ports).
    pub local_address: Option<std::net::IpAddr>,
    /// Users of this worker handshaking at once while connecting.
    pub connecting_at_once: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Boxed: a plan is large, the other commands are small.
    Plan(Box<Plan>),
    /// Count deliveries of messages scheduled in `[from_us, to_us)`.
    Start {
        from_us: u64,
        to_us: u64,
    },
    Finish,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Progress {
        connected: usize,
        delivered: u64,
        errors: u64,
    },
    Ready,
    /// Its part of row `k` of the time series (with `sample_every`).
    Sample(WorkerSample),
    Result(WorkerResult),
    /// The worker cannot go on (e.g. no user could connect).
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub counts: Counts,
    pub latencies: LatencyBuckets,
    pub errors: u64,
    pub rehandshakes: u64,
    /// CPU seconds the worker used between Start and Finish.
    pub cpu_s: f64,
    /// Users that needed more than one try to handshake and subscribe.
    #[serde(default)]
    pub connect_retries: u64,
    /// Connections cut while measuring (`cuts` in the scenario).
    #[serde(default)]
    pub cuts: u64,
    /// Handshakes refused with advice to retry later, which users waited
    /// out while connecting (a handshake rate limit at work).
    #[serde(default)]
    pub advised_waits: u64,
}

pub fn encode<T: Serialize>(message: &T) -> String {
    let mut line = serde_json::to_string(message).expect("control messages serialize");
    line.push('\n');
    line
}
