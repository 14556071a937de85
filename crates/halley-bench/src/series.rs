//! The time series of a long run (a soak, a reconnect storm): every
//! `sample-every` of the measuring window, one row of what the server held
//! (RSS, open file descriptors, sessions) and of what the users saw in the
//! interval (deliveries, latency p50/p99, users connected, handshakes made
//! again, connections cut).
//!
//! Row `k` (from 1) is taken `k × period` after the window opens and covers
//! the interval before it. Workers and the coordinator share the machine's
//! clock, so each takes its part at the same instants: every worker sends a
//! [`WorkerSample`] for `k`, the coordinator reads the server
//! ([`ServerReading`]), and [`Collector`] joins them into a [`SeriesRow`]
//! once every worker's part is in.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::histogram::{Latencies, LatencyBuckets};

/// One worker's part of row `index`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerSample {
    pub index: u64,
    /// Deliveries counted in the interval (messages scheduled in the window).
    pub delivered: u64,
    /// Their latencies.
    pub latencies: LatencyBuckets,
    /// Users whose connect loop is connected now.
    pub connected: usize,
    /// Users that have handshaken again at least once so far (their session
    /// was lost: a node restart, an expired session after a cut).
    pub rehandshaken: usize,
    /// Handshakes made again so far, all users together.
    pub rehandshakes: u64,
    /// Connections cut so far.
    pub cuts: u64,
}

/// The server at the instant of row `index` (each `None` when unknown: no
/// `--server-pid`, no `--admin-url`, or the process is gone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReading {
    pub index: u64,
    pub rss_bytes: Option<u64>,
    pub fds: Option<u64>,
    pub sessions: Option<u64>,
}

/// One row of the series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesRow {
    /// Seconds since the measuring window opened.
    pub t_s: f64,
    pub server_rss_bytes: Option<u64>,
    pub server_fds: Option<u64>,
    pub sessions: Option<u64>,
    pub delivered: u64,
    pub delivered_per_sec: f64,
    /// Latency of the interval's deliveries (0 when there were none).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub connected: usize,
    pub rehandshaken: usize,
    pub rehandshakes: u64,
    pub cuts: u64,
}

/// Joins the workers' samples and the server's readings into rows.
#[derive(Debug)]
pub struct Collector {
    period: Duration,
    workers: usize,
    /// Per row: how many workers reported, their sums, merged latencies.
    parts: BTreeMap<u64, (usize, WorkerSample, Latencies)>,
    server: BTreeMap<u64, ServerReading>,
}

impl Collector {
    pub fn new(period: Duration, workers: usize) -> Self {
        Collector {
            period,
            workers,
            parts: BTreeMap::new(),
            server: BTreeMap::new(),
        }
    }

    pub fn add_worker(&mut self, sample: WorkerSample) {
        let (reported, sum, latencies) = self
            .parts
            .entry(sample.index)
            .or_insert_with(|| (0, WorkerSample::default(), Latencies::new()));
        *reported += 1;
        sum.delivered += sample.delivered;
        sum.connected += sample.connected;
        sum.rehandshaken += sample.rehandshaken;
        sum.rehandshakes += sample.rehandshakes;
        sum.cuts += sample.cuts;
        latencies.merge(&Latencies::from_buckets(&sample.latencies));
    }

    pub fn add_server(&mut self, reading: ServerReading) {
        self.server.insert(reading.index, reading);
    }

    /// The rows every worker reported, in time order (a row a worker
    /// missed, because it died, is left out rather than shown too low).
    pub fn rows(&self) -> Vec<SeriesRow> {
        let period_s = self.period.as_secs_f64();
        self.parts
            .iter()
            .filter(|(_, (reported, _, _))| *reported == self.workers)
            .map(|(&index, (_, sum, latencies))| {
                let server = self.server.get(&index).copied().unwrap_or_default();
                let quantiles = latencies.quantiles_ms();
                let any = latencies.count() > 0;
                SeriesRow {
                    t_s: index as f64 * period_s,
                    server_rss_bytes: server.rss_bytes,
                    server_fds: server.fds,
                    sessions: server.sessions,
                    delivered: sum.delivered,
                    delivered_per_sec: sum.delivered as f64 / period_s,
                    p50_ms: if any { quantiles.p50 } else { 0.0 },
                    p99_ms: if any { quantiles.p99 } else { 0.0 },
                    connected: sum.connected,
                    rehandshaken: sum.rehandshaken,
                    rehandshakes: sum.rehandshakes,
                    cuts: sum.cuts,
                }
            })
            .collect()
    }
}

/// The rows as CSV, one header line first; an unknown value is left empty.
pub fn csv(rows: &[SeriesRow]) -> String {
    let mut out = String::from(
        "t_s,server_rss_bytes,server_fds,sessions,delivered,delivered_per_sec,p50_ms,p99_ms,connected,rehandshaken,rehandshakes,cuts\n",
    );
    let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.1},{:.3},{:.3},{},{},{},{}",
            r.t_s,
            opt(r.server_rss_bytes),
            opt(r.server_fds),
            opt(r.sessions),
            r.delivered,
            r.delivered_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.connected,
            r.rehandshaken,
            r.rehandshakes,
            r.cuts
        );
    }
    out
}

/// The value of an unlabelled gauge (`halley_sessions 1234`) in a
/// Prometheus text exposition.
pub fn gauge(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        let value: f64 = value.split_whitespace().next()?.parse().ok()?;
        (value >= 0.0).then_some(value as u64)
    })
}

/// What the server held early in the run and at its end: a soak's verdict
/// on growth (after `at`, connections and caches have settled; what still
/// grows from there to the end is a leak or a backlog). Each side is the
/// median of the rows of one `span` (a minute): a single row may fall on a
/// cut, when sockets are being replaced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    /// The early span starts here, s into the window.
    pub at_s: f64,
    /// The last span ends here.
    pub end_s: f64,
    pub span_s: f64,
    pub rss_at: Option<u64>,
    pub rss_end: Option<u64>,
    pub fds_at: Option<u64>,
    pub fds_end: Option<u64>,
}

/// Growth between the rows of `[at, at + span)` and those of the last
/// `span`; `None` when the series does not reach past `at + span`.
pub fn growth(rows: &[SeriesRow], at: Duration, span: Duration) -> Option<Growth> {
    let (at, span) = (at.as_secs_f64(), span.as_secs_f64());
    let end = rows.last()?.t_s;
    if end < at + span {
        return None;
    }
    let early: Vec<&SeriesRow> = rows
        .iter()
        .filter(|r| r.t_s >= at && r.t_s < at + span)
        .collect();
    let late: Vec<&SeriesRow> = rows.iter().filter(|r| r.t_s > end - span).collect();
    let median = |rows: &[&SeriesRow], value: fn(&SeriesRow) -> Option<u64>| {
        let mut values: Vec<u64> = rows.iter().filter_map(|r| value(r)).collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied()
    };
    Some(Growth {
        at_s: at,
        end_s: end,
        span_s: span,
        rss_at: median(&early, |r| r.server_rss_bytes),
        rss_end: median(&late, |r| r.server_rss_bytes),
        fds_at: median(&early, |r| r.server_fds),
        fds_end: median(&late, |r| r.server_fds),
    })
}

impl Growth {
    /// One line: `server RSS at 300 s 41.2 MiB, at the end (1800 s) 41.9
    /// MiB (+1.7%); open fds ... (medians over 60 s)`.
    pub fn summary(&self) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
        let change = |a: u64, b: u64| {
            if a == 0 {
                String::new()
            } else {
                format!(" ({:+.1}%)", (b as f64 - a as f64) * 100.0 / a as f64)
            }
        };
        let mut text = String::new();
        if let (Some(a), Some(b)) = (self.rss_at, self.rss_end) {
            let _ = write!(
                text,
                "server RSS at {:.0} s {}, at the end ({:.0} s) {}{}",
                self.at_s,
                mib(a),
                self.end_s,
                mib(b),
                change(a, b)
            );
        }
        if let (Some(a), Some(b)) = (self.fds_at, self.fds_end) {
            if !text.is_empty() {
                text.push_str("; ");
            }
            let _ = write!(
                text,
                "open fds at {:.0} s {a}, at the end {b}{}",
                self.at_s,
                change(a, b)
            );
        }
        if !text.is_empty() {
            let _ = write!(text, " (medians over {:.0} s)", self.span_s);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(index: u64, delivered: u64, latencies_us: &[u64]) -> WorkerSample {
        let mut l = Latencies::new();
        for &v in latencies_us {
            l.record_us(v);
        }
        WorkerSample {
            index,
            delivered,
            latencies: l.to_buckets(),
            connected: 10,
            rehandshaken: 1,
            rehandshakes: 2,
            cuts: 3,
        }
    }

    #[test]
    fn a_row_joins_every_workers_part_and_the_servers() {
        let mut c = Collector::new(Duration::from_secs(5), 2);
        // 97 deliveries at 1 ms, 3 at 50 ms, over two workers.
        c.add_worker(sample(1, 100, &[1000; 96]));
        c.add_worker(sample(1, 400, &[1000, 50_000, 50_000, 50_000]));
        c.add_server(ServerReading {
            index: 1,
            rss_bytes: Some(10 << 20),
            fds: Some(2010),
            sessions: Some(2004),
        });
        // Row 2: one worker so far, and no server reading.
        c.add_worker(sample(2, 7, &[]));
        let rows = c.rows();
        assert_eq!(rows.len(), 1, "row 2 waits for its second worker");
        let r = &rows[0];
        assert_eq!(r.t_s, 5.0);
        assert_eq!(r.delivered, 500);
        assert_eq!(r.delivered_per_sec, 100.0);
        assert_eq!(
            (r.connected, r.rehandshaken, r.rehandshakes, r.cuts),
            (20, 2, 4, 6)
        );
        assert_eq!(r.server_fds, Some(2010));
        assert_eq!(r.p50_ms, 1.0);
        assert!((r.p99_ms - 50.0).abs() < 0.1, "{}", r.p99_ms);

        c.add_worker(sample(2, 3, &[]));
        let rows = c.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].t_s, rows[1].delivered), (10.0, 10));
        assert_eq!((rows[1].p50_ms, rows[1].server_rss_bytes), (0.0, None));
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_row() {
        let rows = [
            SeriesRow {
                t_s: 5.0,
                server_rss_bytes: Some(1024),
                delivered: 10,
                delivered_per_sec: 2.0,
                p50_ms: 1.5,
                ..SeriesRow::default()
            },
            SeriesRow::default(),
        ];
        let text = csv(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("t_s,server_rss_bytes,server_fds,sessions,"));
        assert_eq!(lines[1], "5,1024,,,10,2.0,1.500,0.000,0,0,0,0");
        assert_eq!(
            lines[0].split(',').count(),
            lines[1].split(',').count(),
            "every column filled or empty"
        );
    }

    #[test]
    fn reads_an_unlabelled_gauge() {
        let metrics = "# TYPE halley_sessions gauge\nhalley_sessions_total 9\nhalley_sessions 2004\nhalley_draining 0\n";
        assert_eq!(gauge(metrics, "halley_sessions"), Some(2004));
        assert_eq!(gauge(metrics, "halley_draining"), Some(0));
        assert_eq!(gauge(metrics, "halley_missing"), None);
        assert_eq!(
            gauge("halley_sessions 1.5e3 1700000\n", "halley_sessions"),
            Some(1500)
        );
    }

    #[test]
    fn growth_compares_the_fifth_minute_with_the_last() {
        let row = |t_s: f64, rss: u64, fds: u64| SeriesRow {
            t_s,
            server_rss_bytes: Some(rss),
            server_fds: Some(fds),
            ..SeriesRow::default()
        };
        // 30 minutes every 5 s: fds 2000, but 1800 on the rows that fall on a
        // cut (every minute); RSS 100 MiB, 110 MiB in the last minute.
        let rows: Vec<SeriesRow> = (1..=360)
            .map(|k| {
                let t = k as f64 * 5.0;
                let fds = if k % 12 == 0 { 1800 } else { 2000 };
                let rss = if t > 1740.0 { 110 << 20 } else { 100 << 20 };
                row(t, rss, fds)
            })
            .collect();
        let minute = Duration::from_secs(60);
        let g = growth(&rows, Duration::from_secs(300), minute).unwrap();
        assert_eq!((g.at_s, g.end_s), (300.0, 1800.0));
        assert_eq!((g.rss_at, g.rss_end), (Some(100 << 20), Some(110 << 20)));
        assert_eq!(
            (g.fds_at, g.fds_end),
            (Some(2000), Some(2000)),
            "the cut rows are outliers"
        );
        let text = g.summary();
        assert!(
            text.contains("100.0 MiB") && text.contains("110.0 MiB (+10.0%)"),
            "{text}"
        );
        assert!(
            text.contains("open fds at 300 s 2000, at the end 2000 (+0.0%)"),
            "{text}"
        );
        assert!(text.ends_with("(medians over 60 s)"), "{text}");
        assert_eq!(
            growth(&rows[..70], Duration::from_secs(300), minute),
            None,
            "too short"
        );
    }
}
