//! The seed's chart: latency against delivered messages/s, one curve per
//! user count, p50 solid and p99 dashed, as a self-contained SVG.
//!
//! Written directly as SVG text: a line chart with two axes needs no
//! plotting library (and no fonts: the viewer renders the text).

use std::fmt::Write;

use crate::report::Report;

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
