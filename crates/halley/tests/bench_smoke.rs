//! `halley bench` end to end: a few hundred users for a few seconds against
//! a Halley started here, over each transport. The figures are not judged
//! (benchmarks are commands, not assertions); correctness is: no loss, the
//! JSON keys scripts rely on, and a chart that is well-formed SVG. And once
//! through two cluster nodes on a Redis of the test's own: users spread over
//! both, every room's messages crossing the cluster, and the report's
//! per-node and Redis figures. And a soak in small: connections cut, a time
//! series written.

mod common;

use std::process::Command;

use common::{Redis, Server};
use serde_json::Value;

fn smoke(transport: &str, ack: bool) {
    // A load test from one address: over the per-IP defaults, as any
    // benchmark run from one machine (see docs/security.md).
    let server = Server::start(&["--handshake-rate-per-ip", "0"]);
    let dir = std::env::temp_dir().join(format!(
        "halley-bench-smoke-{}-{transport}-{ack}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let chart = dir.join("chart.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_halley"))
        .args(["bench", "--url", &server.url])
        .args(ack.then_some("--ack"))
        .args([
            "--transport",
            transport,
            "--users",
            "300",
            "--interval",
            "50",
        ])
        .args([
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--drain-timeout",
            "5s",
        ])
        .args(["--server-pid", &server.pid().to_string()])
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(&chart)
        .output()
        .expect("halley bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "halley bench failed:\n{stdout}\n{stderr}\nserver:\n{}",
        server.log()
    );
    assert!(
        stdout.starts_with("lossless run"),
        "first line says whether anything was lost:\n{stdout}"
    );
    assert_eq!(
        stdout.contains("ack extension"),
        ack,
        "the summary says whether acks were on:\n{stdout}"
    );

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in [
        "users",
        "transport",
        "ack",
        "published",
        "expected",
        "delivered",
        "lost",
        "duplicates",
        "delivered_per_sec",
        "latency_ms",
        "errors",
        "loadgen_cpu_s",
        "server_cpu_s",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}: {report}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            report["latency_ms"][key].as_f64().is_some(),
            "latency_ms lacks {key}: {report}"
        );
    }
    assert_eq!(report["users"], 300);
    assert_eq!(report["transport"], transport);
    assert_eq!(report["ack"], ack);
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    // 2 s of bursts every 50 ms to 2 rooms (300 users: rooms of 200 and 100).
    assert!(report["published"].as_u64().unwrap() >= 60, "{report}");
    assert_eq!(report["expected"], report["delivered"], "{report}");

    let svg = std::fs::read_to_string(&chart).unwrap();
    let document = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    assert!(
        root.descendants().any(|n| n.has_tag_name("polyline")),
        "the chart has curves"
    );
}

#[test]
fn bench_over_long_polling_loses_nothing() {
    smoke("long-polling", false);
}

#[test]
fn bench_over_websocket_loses_nothing() {
    smoke("websocket", false);
}

/// `--ack`: every user and publisher uses the ack extension (over websocket,
/// where it changes the most: deliveries then ride only in connect replies).
#[test]
fn bench_with_the_ack_extension_loses_nothing() {
    smoke("websocket", true);
}

/// A soak in small: WebSocket and long-polling users side by side, a
/// quarter of them cut every second, a series sampled every second and
/// written as CSV, JSON and SVG.
#[test]
fn bench_cuts_connections_and_writes_a_time_series() {
    let server = Server::start(&["--handshake-rate-per-ip", "0"]);
    let dir = std::env::temp_dir().join(format!("halley-bench-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = dir.join("soak");
    let json = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_halley"))
        .args(["bench", "--url", &server.url, "--transport", "mixed"])
        .args(["--users", "200", "--interval", "100", "--warmup", "500ms"])
        .args(["--duration", "3s", "--drain-timeout", "5s"])
        .args(["--cut-every", "1s", "--cut-fraction", "0.25"])
        .args(["--sample-every", "1s"])
        .args(["--server-pid", &server.pid().to_string()])
        .arg("--json")
        .arg(&json)
        .arg("--series")
        .arg(&prefix)
        .output()
        .expect("halley bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Without the ack extension a delivery in flight on a cut connection
    // may be lost (exit status 3); anything else is a failure.
    assert!(
        output.status.success() || output.status.code() == Some(3),
        "halley bench failed:\n{stdout}\n{stderr}\nserver:\n{}",
        server.log()
    );
    assert!(
        stdout.contains("cut 100 connections (25% of the users every 1 s)"),
        "{stdout}"
    );

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["transport"], "mixed");
    assert_eq!(report["cuts"], 100, "cuts at 1 s and 2 s, 50 users each");
    let series = report["series"]
        .as_array()
        .expect("the report holds the series");
    let times: Vec<f64> = series.iter().map(|r| r["t_s"].as_f64().unwrap()).collect();
    assert_eq!(times, [1.0, 2.0, 3.0]);
    let cuts: Vec<u64> = series.iter().map(|r| r["cuts"].as_u64().unwrap()).collect();
    // Cumulative; a row taken at the instant of a cut may or may not count it.
    assert!(cuts.windows(2).all(|w| w[0] <= w[1]), "{cuts:?}");
    assert_eq!(cuts.last(), Some(&100), "both cuts by the window's end");
    for row in series {
        assert!(row["server_rss_bytes"].as_u64().unwrap() > 0, "{row}");
        // 200 users' sockets, give or take the ones being replaced.
        assert!(row["server_fds"].as_u64().unwrap() > 100, "{row}");
    }
    let delivered: u64 = series
        .iter()
        .map(|r| r["delivered"].as_u64().unwrap())
        .sum();
    assert!(delivered > 0);

    let csv = std::fs::read_to_string(dir.join("soak.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "a header and three rows:\n{csv}");
    let same: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("soak.json")).unwrap()).unwrap();
    assert_eq!(same.as_array().unwrap().len(), 3);
    let svg = std::fs::read_to_string(dir.join("soak.svg")).unwrap();
    let document = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
    assert_eq!(document.root_element().tag_name().name(), "svg");
}

#[test]
fn bench_through_two_cluster_nodes_loses_nothing_and_reports_each() {
    let Some(redis) = Redis::start() else { return };
    let flags = [
        "--redis",
        redis.url.as_str(),
        "--handshake-rate-per-ip",
        "0",
    ];
    let (a, b) = (Server::start(&flags), Server::start(&flags));
    let dir =
        std::env::temp_dir().join(format!("halley-bench-smoke-{}-cluster", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_halley"))
        // Both spellings: a repeated flag and a comma-separated list.
        .args(["bench", "--url", &format!("{},{}", a.url, b.url)])
        .args([
            "--server-pid",
            &a.pid().to_string(),
            "--server-pid",
            &b.pid().to_string(),
        ])
        .args(["--redis-pid", &redis.pid().to_string()])
        .args([
            "--transport",
            "websocket",
            "--users",
            "300",
            "--interval",
            "50",
        ])
        .args([
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--drain-timeout",
            "5s",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("halley bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "halley bench failed:\n{stdout}\n{stderr}\nnode a:\n{}\nnode b:\n{}",
        a.log(),
        b.log()
    );
    assert!(stdout.starts_with("lossless run"), "{stdout}");
    assert!(
        stdout.contains("2 nodes:") && stdout.contains("Redis CPU"),
        "{stdout}"
    );

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["server_url"], format!("{},{}", a.url, b.url));
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["expected"], report["delivered"], "{report}");
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{report}");
    assert_eq!(nodes[0]["pid"], a.pid());
    assert_eq!(nodes[1]["pid"], b.pid());
    // Half the users are on each node, so both did work, and the report's
    // server figures are the two nodes' sums.
    let cpu: Vec<f64> = nodes.iter().map(|n| n["cpu_s"].as_f64().unwrap()).collect();
    assert!(cpu.iter().all(|&c| c > 0.0), "{report}");
    let total = report["server_cpu_s"].as_f64().unwrap();
    assert!((total - cpu.iter().sum::<f64>()).abs() < 1e-9, "{report}");
    let rss: u64 = nodes.iter().map(|n| n["rss_bytes"].as_u64().unwrap()).sum();
    assert_eq!(report["server_rss_bytes"], rss, "{report}");
    assert!(report["redis_cpu_s"].as_f64().is_some(), "{report}");
    assert!(report["redis_rss_bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["server_cpu_us_per_delivery"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}
