//! The result of one run: a human summary and the JSON scripts rely on.
//!
//! The JSON keys `users`, `transport`, `published`, `expected`, `delivered`,
//! `lost`, `duplicates`, `delivered_per_sec`, `latency_ms` (`p50`, `p90`,
//! `p99`, `p999`, `max`) and `errors` are a contract: scripts and the sweep
//! chart read them. Add keys freely; never rename these.

use serde::{Deserialize, Serialize};

use crate::histogram::Quantiles;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub server_url: String,
    pub users: usize,
    pub transport: String,
    /// Whether every session used the ack extension (`--ack`).
    #[serde(default)]
    pub ack: bool,
    pub room_size: usize,
    pub burst: usize,
    pub interval_ms: f64,
    pub payload: usize,
    pub processes: usize,
    pub duration_s: f64,
    /// Messages published (and acknowledged) inside the measuring window.
    pub published: u64,
    /// Deliveries those messages owe.
    pub expected: u64,
    /// Distinct deliveries received of those messages.
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub offered_per_sec: f64,
    pub delivered_per_sec: f64,
    pub latency_ms: Quantiles,
    /// Refused or failed publishes, undecodable deliveries.
    pub errors: u64,
    pub rehandshakes: u64,
    /// CPU seconds of the load generator (coordinator + workers) while measuring.
    pub loadgen_cpu_s: f64,
    /// CPU seconds of the server while measuring (with `--server-pid`).
    pub server_cpu_s: Option<f64>,
    /// Server RSS once every user was connected (with `--server-pid`).
    pub server_rss_bytes: Option<u64>,
    /// Server RSS growth per connected user (with `--server-pid`).
    pub server_rss_per_client_bytes: Option<f64>,
    pub date: String,
}

impl Report {
    /// The one-line verdict a run starts with.
    pub fn verdict(&self) -> String {
        if self.lost > 0 || self.duplicates > 0 {
            format!(
                "LOSSY RUN: {} lost, {} duplicated of {} expected deliveries",
                self.lost, self.duplicates, self.expected
            )
        } else if self.errors > 0 {
            format!("run with {} errors, no loss", self.errors)
        } else {
            format!(
                "lossless run: {} of {} expected deliveries",
                self.delivered, self.expected
            )
        }
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let q = &self.latency_ms;
        let mut text = String::new();
        text.push_str(&self.verdict());
        text.push('\n');
        let ack = if self.ack { ", ack extension" } else { "" };
        text.push_str(&format!(
            "{} users ({}{ack}), rooms of {}, bursts to {} rooms every {} ms, {}-byte payload, {} worker process(es), {:.1} s measured\n",
            self.users, self.transport, self.room_size, self.burst, self.interval_ms, self.payload, self.processes, self.duration_s
        ));
        text.push_str(&format!(
            "published {}  expected {}  delivered {}  lost {}  duplicates {}  out-of-order {}  errors {}  re-handshakes {}\n",
            self.published, self.expected, self.delivered, self.lost, self.duplicates, self.out_of_order, self.errors, self.rehandshakes
        ));
        text.push_str(&format!(
            "delivered {:.0} msg/s (offered {:.0})\n",
            self.delivered_per_sec, self.offered_per_sec
        ));
        text.push_str(&format!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
            q.p50, q.p90, q.p99, q.p999, q.max
        ));
        text.push_str(&format!("load generator CPU {:.2} s", self.loadgen_cpu_s));
        if let Some(cpu) = self.server_cpu_s {
            text.push_str(&format!("  server CPU {cpu:.2} s"));
        }
        if let (Some(rss), Some(per)) = (self.server_rss_bytes, self.server_rss_per_client_bytes) {
            text.push_str(&format!(
                "  server RSS {:.1} MiB ({:.1} KiB per client)",
                rss as f64 / 1048576.0,
                per / 1024.0
            ));
        }
        text.push_str(" (load generator and server share the machine's cores)\n");
        text
    }
}
