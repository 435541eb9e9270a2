//! The run as a picture (`report.svg` beside the JSON lines): every row with a target as a bar
//! of how far it is from meeting it, and every latency on a log scale beside its ceiling, so
//! a reader sees the result at a glance. Hand-written SVG: no drawing dependency to build.

use std::fmt::Write as _;

use crate::report::{Figure, Machine, Row, Target, Unit};

const WIDTH: f64 = 980.0;
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
    let height = 110.0 + LINE * (targeted.len() + latencies.len()) as f64 + 80.0;
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
    svg.push_str("</svg>\n");
    svg
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
        assert_eq!(svg.matches("#1565c0").count(), 1, "one latency row");
    }
}
