//! The run as a picture (`report.svg` beside the JSON lines): every row with a target as a bar
//! of how far it is from meeting it, every latency on a log scale beside its ceiling, and the
//! figures' charts (latency distributions by percentile, the restart curve), so a reader sees
//! the result at a glance. Hand-written SVG: no drawing dependency to build.

use std::fmt::Write as _;

use crate::report::{Axis, Figure, Machine, Plot, Row, Target, Unit};

const WIDTH: f64 = 1240.0;
const LABEL: f64 = 520.0;
const BAR: f64 = 360.0;
const LINE: f64 = 22.0;

/// Text safe inside an SVG element or attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How well a row meets its target: 1 is just met, above is better.
fn score(row: &Row) -> Option<f64> {
    match (row.target?, row.measured?, row.ratio) {
        (Target::RatioAtLeast(min), _, Some(ratio)) if min > 0.0 => Some(ratio / min),
        (Target::AtMost(max), measured, _) if measured > 0.0 => Some(max / measured),
        (Target::AtMost(_), _, _) => Some(2.0),
        (Target::RatioAtMost(max), _, Some(ratio)) if ratio > 0.0 => Some(max / ratio),
        _ => None,
    }
}

fn target_text(row: &Row) -> String {
    let measured = row
        .measured
        .map_or_else(|| "n/a".to_owned(), |m| format_value(row.unit, m));
    match (row.target, row.ratio) {
        (Some(Target::RatioAtLeast(min)), Some(ratio)) => {
            format!("{measured}, {ratio:.2}x of its ceiling (target >= {min:.2}x)")
        }
        (Some(Target::AtMost(max)), _) => {
            format!("{measured} (target <= {})", format_value(row.unit, max))
        }
        (Some(Target::RatioAtMost(max)), Some(ratio)) => {
            format!("{measured}, {ratio:.2}x of alone (target <= {max:.2}x)")
        }
        _ => measured,
    }
}

fn format_value(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Ms if value < 10.0 => format!("{value:.2} ms"),
        Unit::Ms => format!("{value:.0} ms"),
        Unit::Bytes => format!("{value:.0} B"),
        Unit::ArticlesPerSec => format!("{value:.0} art/s"),
        Unit::MessagesPerSec => format!("{value:.0} msg/s"),
        Unit::RequestsPerSec => format!("{value:.0} req/s"),
        Unit::Instructions => format!("{value:.0} instr"),
    }
}

/// Position of a latency on the log axis from 0.1 ms to 100 s.
fn log_x(ms: f64) -> f64 {
    let (low, high) = (-1.0f64, 5.0f64);
    let at = ms.max(0.1).log10().clamp(low, high);
    LABEL + (at - low) / (high - low) * BAR
}

/// The picture of `figures`.
pub fn render(figures: &[Figure], machine: &Machine, elapsed_secs: f64) -> String {
    let targeted: Vec<(u8, &Row)> = figures
        .iter()
        .flat_map(|f| f.rows.iter().map(move |r| (f.figure, r)))
        .filter(|(_, r)| score(r).is_some())
        .collect();
    let latencies: Vec<(u8, &Row)> = figures
        .iter()
        .flat_map(|f| f.rows.iter().map(move |r| (f.figure, r)))
        .filter(|(_, r)| r.unit == Unit::Ms && r.measured.is_some())
        .collect();
    let plots: Vec<(u8, &Plot)> = figures
        .iter()
        .flat_map(|f| f.plots.iter().map(move |p| (f.figure, p)))
        .filter(|(_, p)| p.series.iter().any(|s| !s.points.is_empty()))
        .collect();
    let height = 110.0
        + LINE * (targeted.len() + latencies.len()) as f64
        + 80.0
        + CHART_ROW * plots.len().div_ceil(2) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let met = targeted.iter().filter(|(_, r)| r.ok == Some(true)).count();
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">newsflow benchmark{}: {met} of {} targets met</text>"#,
        if machine.quick { " (--quick)" } else { "" },
        targeted.len()
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="40" fill="#555">{} CPU(s): {} | {} | {} | {:.0} s</text>"##,
        machine.nproc,
        escape(&machine.cpu),
        escape(&machine.nats_server),
        escape(&machine.started_at),
        elapsed_secs
    );
    let mut y = 70.0;
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{y}" font-weight="bold">Targets: bar = how far past the target (the line); green met, red missed</text>"#
    );
    y += 10.0;
    let target_x = LABEL + BAR / 2.0;
    let top = y;
    for (figure, row) in &targeted {
        let value = score(row).unwrap_or(0.0).clamp(0.0, 2.0);
        let colour = if row.ok == Some(true) {
            "#2e7d32"
        } else {
            "#c62828"
        };
        let _ = writeln!(
            svg,
            r##"<text x="10" y="{}">{figure} · {}</text><rect x="{LABEL}" y="{}" width="{:.1}" height="14" fill="{colour}"><title>{}</title></rect><text x="{}" y="{}" fill="#333">{}</text>"##,
            y + 12.0,
            escape(&row.name),
            y + 1.0,
            value / 2.0 * BAR,
            escape(&target_text(row)),
            LABEL + BAR + 8.0,
            y + 12.0,
            escape(&target_text(row)),
        );
        y += LINE;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{target_x}" y1="{top}" x2="{target_x}" y2="{y}" stroke="#000" stroke-dasharray="4 3"/>"##
    );
    y += 24.0;
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{y}" font-weight="bold">Latencies (log scale, 0.1 ms to 100 s): bar = measured, tick = its ceiling</text>"#
    );
    y += 10.0;
    for (figure, row) in &latencies {
        let measured = row.measured.unwrap_or(0.0);
        let _ = writeln!(
            svg,
            r##"<text x="10" y="{}">{figure} · {}</text><rect x="{LABEL}" y="{}" width="{:.1}" height="14" fill="#1565c0"/><text x="{}" y="{}" fill="#333">{}</text>"##,
            y + 12.0,
            escape(&row.name),
            y + 1.0,
            log_x(measured) - LABEL,
            LABEL + BAR + 8.0,
            y + 12.0,
            escape(&format_value(Unit::Ms, measured)),
        );
        if let Some(ceiling) = row.ceiling {
            let x = log_x(ceiling);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#000" stroke-width="2"/>"##,
                y - 1.0,
                y + 17.0
            );
        }
        y += LINE;
    }
    for (i, label) in ["0.1 ms", "1 ms", "10 ms", "100 ms", "1 s", "10 s", "100 s"]
        .iter()
        .enumerate()
    {
        let x = LABEL + i as f64 / 6.0 * BAR;
        let _ = writeln!(
            svg,
            r##"<text x="{x:.1}" y="{}" fill="#555" font-size="10" text-anchor="middle">{label}</text>"##,
            y + 12.0
        );
    }
    y += 40.0;
    for (i, (figure, plot)) in plots.iter().enumerate() {
        let x = 10.0 + (i % 2) as f64 * (WIDTH / 2.0);
        chart(&mut svg, *figure, plot, x, y);
        if i % 2 == 1 {
            y += CHART_ROW;
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// Height of a row of charts.
const CHART_ROW: f64 = 280.0;
const CHART_W: f64 = 380.0;
const CHART_H: f64 = 170.0;
const COLOURS: [&str; 5] = ["#1565c0", "#757575", "#2e7d32", "#9e9e9e", "#ef6c00"];

/// Where a percentile sits: 90, 99 and 99.9 evenly apart (0 at the left, 100 drawn at 99.95).
fn percentile_at(p: f64) -> f64 {
    let nines = -(1.0 - p.min(99.95) / 100.0).log10();
    nines / (-(1.0f64 - 0.9995).log10())
}

/// A chart of `plot` with its top-left corner at `(left, top)`: x by percentile or count, y
/// on a log scale for a latency distribution and linear for a curve.
fn chart(svg: &mut String, figure: u8, plot: &Plot, left: f64, top: f64) {
    let (x0, y0) = (left + 50.0, top + 24.0);
    let values = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(plot.limit);
    let high = values.clone().fold(0.0f64, f64::max).max(1e-3);
    let log = plot.x == Axis::Percentile;
    let low = if log {
        values.fold(f64::INFINITY, f64::min).max(1e-3)
    } else {
        0.0
    };
    let max_x = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let (ylo, yhi) = if log {
        (
            low.log10().floor(),
            high.log10().ceil().max(low.log10().floor() + 1.0),
        )
    } else {
        (0.0, high * 1.1)
    };
    let y_of = |v: f64| {
        let at = if log { v.max(1e-3).log10() } else { v };
        y0 + CHART_H - (at - ylo) / (yhi - ylo) * CHART_H
    };
    let x_of = |v: f64| match plot.x {
        Axis::Percentile => x0 + percentile_at(v) * CHART_W,
        Axis::Count => x0 + v / max_x * CHART_W,
    };
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="{}" font-weight="bold">{figure} · {}</text>"#,
        top + 12.0,
        escape(&plot.title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y0}" width="{CHART_W}" height="{CHART_H}" fill="none" stroke="#bbb"/>"##
    );
    // y ticks: each decade (log) or five steps (linear).
    let ticks: Vec<f64> = if log {
        (ylo as i32..=yhi as i32).map(|d| 10f64.powi(d)).collect()
    } else {
        (0..=5).map(|i| yhi * f64::from(i) / 5.0).collect()
    };
    for tick in ticks {
        let y = y_of(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" fill="#555" font-size="10" text-anchor="end">{}</text>"##,
            x0 + CHART_W,
            x0 - 4.0,
            y + 3.0,
            escape(&format_value(plot.y, tick))
        );
    }
    let x_ticks: Vec<(f64, String)> = match plot.x {
        Axis::Percentile => [0.0, 50.0, 90.0, 99.0, 99.9]
            .iter()
            .map(|&p| (p, format!("p{p}")))
            .collect(),
        Axis::Count => (0..=4)
            .map(|i| {
                let v = max_x * f64::from(i) / 4.0;
                (v, format!("{v:.0}"))
            })
            .collect(),
    };
    for (v, label) in x_ticks {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{}" fill="#555" font-size="10" text-anchor="middle">{label}</text>"##,
            x_of(v),
            y0 + CHART_H + 12.0
        );
    }
    if let Some(limit) = plot.limit {
        let y = y_of(limit);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#c62828" stroke-dasharray="4 3"><title>target {}</title></line>"##,
            x0 + CHART_W,
            escape(&format_value(plot.y, limit))
        );
    }
    for (i, series) in plot.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = series
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            points.join(" ")
        );
        let _ = writeln!(
            svg,
            r#"<rect x="{x0}" y="{:.1}" width="10" height="3" fill="{colour}"/><text x="{}" y="{:.1}" font-size="10">{}</text>"#,
            y0 + CHART_H + 20.0 + 12.0 * i as f64,
            x0 + 14.0,
            y0 + CHART_H + 24.0 + 12.0 * i as f64,
            escape(&series.label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            nproc: 2,
            cpu: "cpu <test>".into(),
            nats_server: "v2.9.10".into(),
            kernel: "k".into(),
            quick: true,
            started_at: "2026-12-02T00:00:00Z".into(),
        }
    }

    fn figure(rows: Vec<Row>) -> Figure {
        Figure {
            figure: 4,
            title: "t",
            rows,
            details: serde_json::Map::new(),
            error: None,
            skipped: false,
            plots: vec![Plot {
                title: "read <latency>".into(),
                x: Axis::Percentile,
                y: Unit::Ms,
                series: vec![crate::report::Series::new(
                    "service",
                    vec![(50.0, 0.4), (99.0, 2.0), (100.0, 9.0)],
                )],
                limit: Some(3.0),
            }],
        }
    }

    #[test]
    fn every_target_and_latency_is_drawn_and_text_is_escaped() {
        let rows = vec![
            Row::versus("ingest -> visible", Unit::ArticlesPerSec, 70.0, 100.0, 0.85),
            Row::at_most("marker -> visible p99", Unit::Ms, 8.0, 10.0),
            Row::info("rss", Unit::Bytes, 10.0),
        ];
        let svg = render(&[figure(rows)], &machine(), 3.0);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("1 of 2 targets met"), "{svg}");
        assert!(
            svg.contains("#c62828") && svg.contains("#2e7d32"),
            "one missed, one met"
        );
        assert!(svg.contains("ingest -&gt; visible") && svg.contains("cpu &lt;test&gt;"));
        assert!(!svg.contains("-> "), "unescaped text");
        assert!(svg.contains("read &lt;latency&gt;"), "the chart is drawn");
        assert_eq!(svg.matches("<polyline").count(), 1, "one series");
    }

    #[test]
    fn percentiles_are_spread_by_their_nines() {
        assert!(percentile_at(0.0).abs() < 1e-9);
        let (p90, p99, p999) = (
            percentile_at(90.0),
            percentile_at(99.0),
            percentile_at(99.9),
        );
        assert!(((p99 - p90) - (p999 - p99)).abs() < 1e-9);
        assert!((percentile_at(100.0) - 1.0).abs() < 1e-9);
    }
}
