//! The result of one run: a human summary and the JSON scripts rely on.
//!
//! The JSON keys `users`, `transport`, `published`, `expected`, `delivered`,
//! `lost`, `duplicates`, `delivered_per_sec`, `latency_ms` (`p50`, `p90`,
//! `p99`, `p999`, `max`) and `errors` are a contract: scripts and the sweep
//! chart read them. Add keys freely; never rename these.
//!
//! Against a cluster (several `--url`, `--server-pid`), `server_url` is the
//! URLs joined with commas, `server_cpu_s` and `server_rss_bytes` are sums
//! over the nodes, `nodes` has each node's own figures and `redis_*` the
//! Redis server's (`--redis-pid`), apart from the nodes'.

use serde::{Deserialize, Serialize};

use crate::histogram::Quantiles;
use crate::series::{Growth, SeriesRow};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// The server's URL (a cluster's URLs, joined with commas).
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
    /// Handshake-and-subscribe attempts that failed and were tried again
    /// while users connected (the server was swamped; none is the norm).
    #[serde(default)]
    pub connect_retries: u64,
    /// CPU seconds of the load generator (coordinator + workers) while measuring.
    pub loadgen_cpu_s: f64,
    /// CPU seconds of the server while measuring (with `--server-pid`;
    /// summed over the nodes when there are several).
    pub server_cpu_s: Option<f64>,
    /// Server RSS once every user was connected (with `--server-pid`;
    /// summed over the nodes).
    pub server_rss_bytes: Option<u64>,
    /// Server RSS growth per connected user (with `--server-pid`).
    pub server_rss_per_client_bytes: Option<f64>,
    /// Server CPU µs per delivery in the window (nodes only, not Redis).
    #[serde(default)]
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Each server process given with `--server-pid`, in order.
    #[serde(default)]
    pub nodes: Vec<NodeFigures>,
    /// CPU seconds of Redis while measuring (with `--redis-pid`).
    #[serde(default)]
    pub redis_cpu_s: Option<f64>,
    /// Redis CPU µs per delivery in the window.
    #[serde(default)]
    pub redis_cpu_us_per_delivery: Option<f64>,
    /// Redis RSS once every user was connected (with `--redis-pid`).
    #[serde(default)]
    pub redis_rss_bytes: Option<u64>,
    /// Busy CPU seconds of the whole machine while measuring (all cores,
    /// every process): minus the load generator, server and Redis, what
    /// other processes took from the run.
    #[serde(default)]
    pub machine_cpu_s: Option<f64>,
    /// The machine's 1/5/15 minute load averages at the end of the window
    /// (the run's own processes included).
    #[serde(default)]
    pub load_average: Option<[f64; 3]>,
    /// A soak's connection cuts (`--cut-every`, `--cut-fraction`) and how
    /// many connections were cut in all.
    #[serde(default)]
    pub cut_every_s: Option<f64>,
    #[serde(default)]
    pub cut_fraction: Option<f64>,
    #[serde(default)]
    pub cuts: u64,
    /// Refused handshakes whose advised interval users waited out while
    /// connecting (the server's handshake rate at work).
    #[serde(default)]
    pub advised_waits: u64,
    /// When the measuring window opened, seconds since the Unix epoch: the
    /// series' `t_s` counts from there (a script lines its own events up).
    #[serde(default)]
    pub window_from_unix_s: f64,
    /// The time series (`--sample-every`), one row per sample.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<SeriesRow>,
    /// Server RSS and open files 5 minutes into the window and at its end
    /// (a series that long, with `--server-pid`).
    #[serde(default)]
    pub growth: Option<Growth>,
    pub date: String,
}

/// One server process's own figures (a cluster node).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeFigures {
    pub pid: u32,
    /// CPU seconds while measuring.
    pub cpu_s: Option<f64>,
    /// RSS once every user was connected.
    pub rss_bytes: Option<u64>,
}

/// CPU microseconds per delivery (`None` without CPU figures or deliveries).
pub fn per_delivery_us(cpu_s: Option<f64>, delivered: u64) -> Option<f64> {
    cpu_s
        .filter(|_| delivered > 0)
        .map(|cpu| cpu * 1e6 / delivered as f64)
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
        if let (Some(every), Some(fraction)) = (self.cut_every_s, self.cut_fraction) {
            text.push_str(&format!(
                "cut {} connections ({:.0}% of the users every {every:.0} s)\n",
                self.cuts,
                fraction * 100.0
            ));
        }
        if let Some(growth) = &self.growth {
            text.push_str(&format!("growth: {}\n", growth.summary()));
        }
        if self.advised_waits > 0 {
            text.push_str(&format!(
                "connecting waited out {} refusals as advised (retry after an interval)\n",
                self.advised_waits
            ));
        }
        if self.connect_retries > 0 {
            text.push_str(&format!(
                "connecting took {} retries (handshakes or subscribes that failed and were tried again)\n",
                self.connect_retries
            ));
        }
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
        if let Some(cpu) = self.redis_cpu_s {
            text.push_str(&format!("  Redis CPU {cpu:.2} s"));
        }
        text.push_str(" (load generator and server share the machine's cores)\n");
        if self.nodes.len() > 1 {
            text.push_str(&format!("{} nodes:", self.nodes.len()));
            for node in &self.nodes {
                let cpu = node.cpu_s.map_or("?".into(), |c| format!("{c:.2}"));
                let rss = node
                    .rss_bytes
                    .map_or("?".into(), |r| format!("{:.1}", r as f64 / 1048576.0));
                text.push_str(&format!("  [pid {}: CPU {cpu} s, RSS {rss} MiB]", node.pid));
            }
            text.push('\n');
        }
        if let Some(machine) = self.machine_cpu_s {
            let own = self.loadgen_cpu_s
                + self.server_cpu_s.unwrap_or(0.0)
                + self.redis_cpu_s.unwrap_or(0.0);
            text.push_str(&format!(
                "machine CPU {machine:.2} s while measuring ({:.2} s not this run's)",
                (machine - own).max(0.0)
            ));
            if let Some([one, five, _]) = self.load_average {
                text.push_str(&format!("  load average {one:.2} {five:.2}"));
            }
            text.push('\n');
        }
        if self.server_cpu_us_per_delivery.is_some() || self.redis_cpu_us_per_delivery.is_some() {
            text.push_str("CPU per delivery:");
            if let Some(us) = self.server_cpu_us_per_delivery {
                text.push_str(&format!("  server {us:.2} µs"));
            }
            if let Some(us) = self.redis_cpu_us_per_delivery {
                text.push_str(&format!("  Redis {us:.2} µs"));
            }
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_delivery_in_microseconds() {
        assert_eq!(per_delivery_us(Some(2.0), 1_000_000), Some(2.0));
        assert_eq!(per_delivery_us(Some(2.0), 0), None);
        assert_eq!(per_delivery_us(None, 10), None);
    }

    #[test]
    fn a_cluster_summary_shows_every_node_and_redis_apart() {
        let report = Report {
            delivered: 400_000,
            expected: 400_000,
            server_cpu_s: Some(3.0),
            server_cpu_us_per_delivery: per_delivery_us(Some(3.0), 400_000),
            nodes: vec![
                NodeFigures {
                    pid: 11,
                    cpu_s: Some(1.0),
                    rss_bytes: Some(100 << 20),
                },
                NodeFigures {
                    pid: 12,
                    cpu_s: Some(2.0),
                    rss_bytes: Some(200 << 20),
                },
            ],
            redis_cpu_s: Some(0.4),
            redis_cpu_us_per_delivery: per_delivery_us(Some(0.4), 400_000),
            ..Report::default()
        };
        let text = report.summary();
        assert!(text.starts_with("lossless run"), "{text}");
        assert!(
            text.contains("server CPU 3.00 s  Redis CPU 0.40 s"),
            "{text}"
        );
        assert!(text.contains("2 nodes:  [pid 11: CPU 1.00 s, RSS 100.0 MiB]  [pid 12: CPU 2.00 s, RSS 200.0 MiB]"), "{text}");
        assert!(
            text.contains("CPU per delivery:  server 7.50 µs  Redis 1.00 µs"),
            "{text}"
        );
    }

    #[test]
    fn one_node_keeps_its_summary() {
        let report = Report {
            server_cpu_s: Some(1.0),
            nodes: vec![NodeFigures {
                pid: 11,
                cpu_s: Some(1.0),
                rss_bytes: None,
            }],
            ..Report::default()
        };
        let text = report.summary();
        assert!(!text.contains("nodes:"), "{text}");
        assert!(!text.contains("Redis"), "{text}");
    }
}
