//! The seed's chart: latency against delivered messages/s, one curve per
//! user count, p50 solid and p99 dashed, as a self-contained SVG; and a
//! long run's time series ([`series_svg`]): one panel per quantity, over
//! the same time axis.
//!
//! Written directly as SVG text: a line chart with two axes needs no
//! plotting library (and no fonts: the viewer renders the text).

use std::fmt::Write;

use crate::report::Report;
use crate::series::SeriesRow;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// Draws `reports` (one per sweep point). Latency is on a log scale: p50 and
/// p99 differ by orders of magnitude near saturation.
pub fn svg(title: &str, reports: &[Report]) -> String {
    let mut user_counts: Vec<usize> = reports.iter().map(|r| r.users).collect();
    user_counts.sort_unstable();
    user_counts.dedup();

    let max_rate = reports
        .iter()
        .map(|r| r.delivered_per_sec)
        .fold(1.0, f64::max)
        * 1.05;
    let latencies = reports
        .iter()
        .flat_map(|r| [r.latency_ms.p50, r.latency_ms.p99])
        .filter(|v| *v > 0.0);
    let (lo, hi) = latencies.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi == 0.0 { (0.1, 1000.0) } else { (lo, hi) };
    let y_min = 10f64.powf(lo.log10().floor()).max(0.01);
    let y_max = 10f64.powf(hi.log10().ceil()).max(y_min * 10.0);

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |rate: f64| LEFT + rate / max_rate * plot_w;
    let y = |ms: f64| {
        let ms = ms.clamp(y_min, y_max);
        TOP + plot_h - (ms.log10() - y_min.log10()) / (y_max.log10() - y_min.log10()) * plot_h
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Axes and grid.
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let mut decade = y_min;
    while decade <= y_max * 1.0001 {
        let yy = y(decade);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            format_ms(decade)
        );
        decade *= 10.0;
    }
    for i in 0..=5 {
        let rate = max_rate * i as f64 / 5.0;
        let xx = x(rate);
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            format_rate(rate)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">delivered messages/s</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        out,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">latency (ms, log scale)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );

    // One pair of curves per user count.
    for (i, users) in user_counts.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points: Vec<&Report> = reports.iter().filter(|r| r.users == *users).collect();
        points.sort_by(|a, b| a.delivered_per_sec.total_cmp(&b.delivered_per_sec));
        for (quantile, dash) in [("p50", ""), ("p99", r#" stroke-dasharray="6 4""#)] {
            let value = |r: &Report| {
                if quantile == "p50" {
                    r.latency_ms.p50
                } else {
                    r.latency_ms.p99
                }
            };
            let path: Vec<String> = points
                .iter()
                .map(|r| format!("{:.1},{:.1}", x(r.delivered_per_sec), y(value(r))))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
                path.join(" ")
            );
            for r in &points {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{} users, {:.0} msg/s, {quantile} {:.2} ms</title></circle>"#,
                    x(r.delivered_per_sec),
                    y(value(r)),
                    r.users,
                    r.delivered_per_sec,
                    value(r)
                );
            }
        }
        let ly = TOP + 10.0 + i as f64 * 36.0;
        let lx = WIDTH - RIGHT + 15.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{users} users p50</text>"#,
            lx + 25.0,
            lx + 30.0,
            ly + 4.0
        );
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="2" stroke-dasharray="6 4"/><text x="{}" y="{}">{users} users p99</text>"#,
            ly + 16.0,
            lx + 25.0,
            ly + 16.0,
            lx + 30.0,
            ly + 20.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One panel of a series chart: a title and its lines (name, dashed, values).
struct Panel<'a> {
    title: &'a str,
    lines: Vec<(&'a str, bool, Vec<Option<f64>>)>,
}

const PANEL_HEIGHT: f64 = 150.0;
const PANEL_GAP: f64 = 40.0;

/// Draws a time series as stacked panels sharing the time axis: server
/// memory, open files and sessions, users connected and handshaken again,
/// delivered msg/s, latency p50 and p99. Each panel's scale starts at 0, so
/// growth shows as a slope, not as noise magnified.
pub fn series_svg(title: &str, rows: &[SeriesRow]) -> String {
    let col = |f: &dyn Fn(&SeriesRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
    let mib = |b: Option<u64>| b.map(|b| b as f64 / 1048576.0);
    let panels = [
        Panel {
            title: "server RSS (MiB)",
            lines: vec![("RSS", false, col(&|r| mib(r.server_rss_bytes)))],
        },
        Panel {
            title: "server open files, sessions",
            lines: vec![
                ("fds", false, col(&|r| r.server_fds.map(|v| v as f64))),
                ("sessions", true, col(&|r| r.sessions.map(|v| v as f64))),
            ],
        },
        Panel {
            title: "users connected, handshaken again",
            lines: vec![
                ("connected", false, col(&|r| Some(r.connected as f64))),
                ("re-handshaken", true, col(&|r| Some(r.rehandshaken as f64))),
            ],
        },
        Panel {
            title: "delivered msg/s",
            lines: vec![("msg/s", false, col(&|r| Some(r.delivered_per_sec)))],
        },
        Panel {
            title: "latency (ms)",
            lines: vec![
                ("p50", false, col(&|r| Some(r.p50_ms))),
                ("p99", true, col(&|r| Some(r.p99_ms))),
            ],
        },
    ];
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + PANEL_GAP) + 20.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let t_max = rows.iter().map(|r| r.t_s).fold(1.0, f64::max);
    let minutes = t_max > 300.0;
    let x = |t: f64| LEFT + t / t_max * plot_w;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    for (p, panel) in panels.iter().enumerate() {
        let top = TOP + p as f64 * (PANEL_HEIGHT + PANEL_GAP);
        let max = panel
            .lines
            .iter()
            .flat_map(|(_, _, values)| values.iter().flatten())
            .fold(0.0f64, |m, v| m.max(*v));
        let y_max = nice_ceiling(max * 1.1);
        let y = |v: f64| top + PANEL_HEIGHT - v / y_max * PANEL_HEIGHT;
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_HEIGHT}" fill="none" stroke="#333"/><text x="{LEFT}" y="{}" font-weight="bold">{}</text>"##,
            top - 6.0,
            escape(panel.title)
        );
        for i in 0..=4 {
            let v = y_max * i as f64 / 4.0;
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y(v) + 4.0,
                format_value(v),
                yy = y(v)
            );
        }
        for i in 0..=6 {
            let t = t_max * i as f64 / 6.0;
            let label = if minutes {
                format!("{:.0} min", t / 60.0)
            } else {
                format!("{t:.0} s")
            };
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{label}</text>"#,
                x(t),
                top + PANEL_HEIGHT + 15.0
            );
        }
        for (l, (name, dashed, values)) in panel.lines.iter().enumerate() {
            let color = COLORS[l % COLORS.len()];
            let dash = if *dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let points: Vec<String> = rows
                .iter()
                .zip(values)
                .filter_map(|(r, v)| v.map(|v| format!("{:.1},{:.1}", x(r.t_s), y(v))))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"{dash}/>"#,
                points.join(" ")
            );
            let ly = top + 12.0 + l as f64 * 18.0;
            let lx = WIDTH - RIGHT + 15.0;
            let _ = writeln!(
                out,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                lx + 25.0,
                lx + 30.0,
                ly + 4.0,
                escape(name)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v` (1 for nothing to
/// show): an axis top whose quarters are round numbers.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let decade = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * decade)
        .find(|&top| top >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * decade)
}

/// An axis label: integers with thousands as `k`, small values with decimals.
fn format_value(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn format_ms(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

fn format_rate(rate: f64) -> String {
    if rate >= 1000.0 {
        format!("{:.0}k", rate / 1000.0)
    } else {
        format!("{rate:.0}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Quantiles;

    fn report(users: usize, rate: f64, p50: f64, p99: f64) -> Report {
        Report {
            users,
            delivered_per_sec: rate,
            latency_ms: Quantiles {
                p50,
                p90: p50,
                p99,
                p999: p99,
                max: p99,
            },
            ..Report::default()
        }
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(18.4 * 1.1), 25.0);
        assert_eq!(nice_ceiling(461.0), 500.0);
        assert_eq!(nice_ceiling(880.0), 1000.0);
        assert_eq!(nice_ceiling(2000.0), 2000.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }

    #[test]
    fn a_series_has_one_panel_per_quantity_and_one_line_per_figure() {
        let rows: Vec<SeriesRow> = (1..=360)
            .map(|k| SeriesRow {
                t_s: k as f64 * 5.0,
                server_rss_bytes: Some(40 << 20),
                server_fds: Some(2010),
                sessions: None,
                delivered_per_sec: 3000.0,
                p50_ms: 1.2,
                p99_ms: 9.0,
                connected: 2000,
                ..SeriesRow::default()
            })
            .collect();
        let svg = series_svg("soak <2000 users>", &rows);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("font-weight=\"bold\"").count(),
            5,
            "five panels"
        );
        assert_eq!(svg.matches("<polyline").count(), 8, "one per line");
        // A line without values (no --admin-url: no sessions) is drawn empty.
        assert!(svg.contains(r#"<polyline points="" "#));
        assert!(svg.contains("30 min"), "a long run's axis is in minutes");
        assert!(svg.contains("soak &lt;2000 users&gt;"));
    }

    #[test]
    fn draws_one_pair_of_curves_per_user_count() {
        let reports = [
            report(1000, 2000.0, 1.0, 5.0),
            report(1000, 8000.0, 3.0, 40.0),
            report(5000, 10000.0, 2.0, 20.0),
            report(5000, 50000.0, 30.0, 400.0),
        ];
        let svg = svg("Halley <test> & co", &reports);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("Halley &lt;test&gt; &amp; co"));
        assert!(svg.contains("5000 users p99"));
    }
}
