//! What a run found: figures made of rows (measured, ceiling, ratio, target), printed as a
//! table and written as JSON lines (one object per figure), with the machine they ran on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

/// Every figure of the benchmark, by number.
pub const FIGURES: [(u8, &str); 13] = [
    (1, "ceilings: raw JetStream"),
    (2, "worker publish"),
    (3, "data-streams ingest"),
    (4, "marker -> visible latency"),
    (5, "read GET /jobs/{id}/articles"),
    (6, "scale of jobs on one worker"),
    (7, "data-streams restart"),
    (8, "footprint"),
    (9, "data-streams control at 100k jobs"),
    (10, "job move after a worker is killed"),
    (11, "failover on a 3-node cluster"),
    (12, "mixed load: ingest, readers, writers, SSE clients"),
    (13, "instructions, counted by callgrind (--only profile)"),
];

/// What a row should meet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// measured / ceiling at least this.
    RatioAtLeast(f64),
    /// measured at most this (in the row's unit).
    AtMost(f64),
    /// measured / reference at most this: a latency that may grow by this factor.
    RatioAtMost(f64),
}

/// The unit of a row, which also decides how it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Articles per second.
    ArticlesPerSec,
    /// Messages per second.
    MessagesPerSec,
    /// Requests per second.
    RequestsPerSec,
    /// Milliseconds.
    Ms,
    /// Bytes.
    Bytes,
    /// Instructions executed.
    Instructions,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Unit::ArticlesPerSec => format!("{} art/s", thousands(value)),
            Unit::MessagesPerSec => format!("{} msg/s", thousands(value)),
            Unit::RequestsPerSec => format!("{} req/s", thousands(value)),
            Unit::Ms if value < 10.0 => format!("{value:.2} ms"),
            Unit::Ms => format!("{value:.0} ms"),
            Unit::Bytes if value >= 1024.0 * 1024.0 => {
                format!("{:.1} MiB", value / 1024.0 / 1024.0)
            }
            Unit::Bytes if value >= 10.0 * 1024.0 => format!("{:.1} KiB", value / 1024.0),
            Unit::Bytes => format!("{value:.0} B"),
            Unit::Instructions => format!("{} instr", thousands(value)),
        }
    }
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is measured.
    pub name: String,
    /// Its unit.
    pub unit: Unit,
    /// The service's figure; `None` when it could not be measured.
    pub measured: Option<f64>,
    /// The ceiling measured in the same run.
    pub ceiling: Option<f64>,
    /// measured / ceiling.
    pub ratio: Option<f64>,
    /// What it should meet.
    pub target: Option<Target>,
    /// Whether it does.
    pub ok: Option<bool>,
}

impl Row {
    /// A figure beside its ceiling, with a target on their ratio.
    pub fn versus(name: &str, unit: Unit, measured: f64, ceiling: f64, at_least: f64) -> Self {
        Self::build(
            name,
            unit,
            Some(measured),
            Some(ceiling),
            Some(Target::RatioAtLeast(at_least)),
        )
    }

    /// A latency beside the same latency measured alone, which it may exceed by `factor`.
    pub fn no_worse_than(name: &str, unit: Unit, measured: f64, alone: f64, factor: f64) -> Self {
        Self::build(
            name,
            unit,
            Some(measured),
            Some(alone),
            Some(Target::RatioAtMost(factor)),
        )
    }

    /// A figure beside a reference, without a target.
    pub fn compared(name: &str, unit: Unit, measured: f64, reference: f64) -> Self {
        Self::build(name, unit, Some(measured), Some(reference), None)
    }

    /// A figure with an upper bound.
    pub fn at_most(name: &str, unit: Unit, measured: f64, limit: f64) -> Self {
        Self::build(
            name,
            unit,
            Some(measured),
            None,
            Some(Target::AtMost(limit)),
        )
    }

    /// A figure with an upper bound, beside the same figure of a ceiling.
    pub fn at_most_beside(
        name: &str,
        unit: Unit,
        measured: f64,
        reference: f64,
        limit: f64,
    ) -> Self {
        Self::build(
            name,
            unit,
            Some(measured),
            Some(reference),
            Some(Target::AtMost(limit)),
        )
    }

    /// A figure for information.
    pub fn info(name: &str, unit: Unit, measured: f64) -> Self {
        Self::build(name, unit, Some(measured), None, None)
    }

    fn build(
        name: &str,
        unit: Unit,
        measured: Option<f64>,
        ceiling: Option<f64>,
        target: Option<Target>,
    ) -> Self {
        let ratio = match (measured, ceiling) {
            (Some(m), Some(c)) if c > 0.0 => Some(m / c),
            _ => None,
        };
        let ok = target.map(|target| match target {
            Target::RatioAtLeast(min) => ratio.is_some_and(|r| r >= min),
            Target::AtMost(max) => measured.is_some_and(|m| m <= max),
            Target::RatioAtMost(max) => ratio.is_some_and(|r| r <= max),
        });
        Self {
            name: name.to_owned(),
            unit,
            measured,
            ceiling,
            ratio,
            target,
            ok,
        }
    }

    fn cells(&self, figure: u8) -> [String; 7] {
        let dash = || "-".to_owned();
        [
            figure.to_string(),
            self.name.clone(),
            self.measured
                .map_or_else(|| "n/a".to_owned(), |v| self.unit.format(v)),
            self.ceiling.map_or_else(dash, |v| self.unit.format(v)),
            self.ratio.map_or_else(dash, |r| format!("{r:.2}x")),
            match self.target {
                Some(Target::RatioAtLeast(min)) => format!(">= {min:.2}x"),
                Some(Target::AtMost(max)) => format!("<= {}", self.unit.format(max)),
                Some(Target::RatioAtMost(max)) => format!("<= {max:.2}x"),
                None => dash(),
            },
            match self.ok {
                Some(true) => "yes".to_owned(),
                Some(false) => "NO".to_owned(),
                None => dash(),
            },
        ]
    }
}

/// One figure: its rows, supporting numbers, and why it failed if it did.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Its number.
    pub figure: u8,
    /// Its title.
    pub title: &'static str,
    /// Its rows.
    pub rows: Vec<Row>,
    /// Supporting numbers (sizes, counts, secondary measurements).
    pub details: serde_json::Map<String, Value>,
    /// Why some or all of it could not be measured.
    pub error: Option<String>,
    /// Whether it was left out with `--only`.
    pub skipped: bool,
    /// What the picture draws beyond the rows: distributions and curves.
    pub plots: Vec<Plot>,
}

/// A chart of the picture: lines of `(x, y)` points.
#[derive(Debug, Clone, Serialize)]
pub struct Plot {
    /// Its title.
    pub title: String,
    /// What x is: a percentile (a latency distribution) or a count.
    pub x: Axis,
    /// The unit of y.
    pub y: Unit,
    /// The lines.
    pub series: Vec<Series>,
    /// A bound on y to draw as a dashed line (a target).
    pub limit: Option<f64>,
}

/// The x axis of a plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    /// Percentiles, drawn so that 90, 99 and 99.9 are evenly apart.
    Percentile,
    /// A count (articles written, say), linear from 0.
    Count,
}

/// One line of a plot.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Its label.
    pub label: String,
    /// Its points.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A line called `label`.
    pub fn new(label: &str, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.to_owned(),
            points,
        }
    }
}

/// The machine and the run.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// `nats-server --version`.
    pub nats_server: String,
    /// Kernel release.
    pub kernel: String,
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// When the run started (RFC 3339).
    pub started_at: String,
}

impl Machine {
    /// Reads what the machine says about itself.
    pub fn probe(nats_server_bin: &Path, quick: bool) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let nats_server = std::process::Command::new(nats_server_bin)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("unknown ({})", nats_server_bin.display()));
        Self {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            nats_server,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_owned())
                .unwrap_or_default(),
            quick,
            started_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    }
}

/// Figures as the phases fill them in; shared so that a phase that fails half-way keeps what
/// it measured.
#[derive(Debug, Clone)]
pub struct Report {
    figures: Arc<Mutex<BTreeMap<u8, Figure>>>,
}

impl Default for Report {
    fn default() -> Self {
        let figures = FIGURES
            .iter()
            .map(|&(figure, title)| {
                (
                    figure,
                    Figure {
                        figure,
                        title,
                        rows: Vec::new(),
                        details: serde_json::Map::new(),
                        error: None,
                        skipped: false,
                        plots: Vec::new(),
                    },
                )
            })
            .collect();
        Self {
            figures: Arc::new(Mutex::new(figures)),
        }
    }
}

impl Report {
    fn with<T>(&self, figure: u8, change: impl FnOnce(&mut Figure) -> T) -> T {
        let mut figures = self.figures.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = figures
            .get_mut(&figure)
            .unwrap_or_else(|| panic!("figure {figure} is not one of the benchmark's figures"));
        change(entry)
    }

    /// Adds a row to `figure` and prints it at once, so a long run shows progress.
    pub fn row(&self, figure: u8, row: Row) {
        let cells = row.cells(figure);
        eprintln!(
            "  [{}] {}: {}{}",
            cells[0],
            cells[1],
            cells[2],
            if row.ceiling.is_some() {
                format!(" (ceiling {}, ratio {})", cells[3], cells[4])
            } else {
                String::new()
            }
        );
        self.with(figure, |f| f.rows.push(row));
    }

    /// Adds a supporting number to `figure`.
    pub fn detail(&self, figure: u8, key: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.with(figure, |f| f.details.insert(key.to_owned(), value));
    }

    /// Adds a chart to `figure`'s part of the picture.
    pub fn plot(&self, figure: u8, plot: Plot) {
        self.with(figure, |f| f.plots.push(plot));
    }

    /// Records why part of `figure` could not be measured.
    pub fn error(&self, figure: u8, error: &str) {
        self.with(figure, |f| {
            f.error = Some(match f.error.take() {
                Some(previous) => format!("{previous}; {error}"),
                None => error.to_owned(),
            });
        });
    }

    /// Marks `figure` as left out, unless another phase measured part of it.
    pub fn skip(&self, figure: u8) {
        self.with(figure, |f| f.skipped = f.rows.is_empty());
    }

    /// The figures, in order.
    pub fn figures(&self) -> Vec<Figure> {
        let figures = self.figures.lock().unwrap_or_else(PoisonError::into_inner);
        figures.values().cloned().collect()
    }

    /// The table, machine information first.
    pub fn table(&self, machine: &Machine, elapsed_secs: f64) -> String {
        let mut lines: Vec<[String; 7]> = vec![[
            "fig".into(),
            "what".into(),
            "measured".into(),
            "ceiling".into(),
            "ratio".into(),
            "target".into(),
            "ok?".into(),
        ]];
        let mut notes = Vec::new();
        for figure in self.figures() {
            for row in &figure.rows {
                lines.push(row.cells(figure.figure));
            }
            let state = if figure.skipped {
                Some("skipped (--only)".to_owned())
            } else if figure.rows.is_empty() {
                Some(format!(
                    "not measured: {}",
                    figure.error.as_deref().unwrap_or("unknown reason")
                ))
            } else {
                None
            };
            if let Some(state) = state {
                let mut cells: [String; 7] = Default::default();
                cells[0] = figure.figure.to_string();
                cells[1] = format!("{}: {state}", figure.title);
                lines.push(cells);
            } else if let Some(error) = &figure.error {
                notes.push(format!("figure {}: {error}", figure.figure));
            }
        }
        let mut widths = [0usize; 7];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "newsflow benchmark{} on {} CPU(s): {} | {} | kernel {} | {:.0} s",
            if machine.quick { " (--quick)" } else { "" },
            machine.nproc,
            machine.cpu,
            machine.nats_server,
            machine.kernel,
            elapsed_secs,
        );
        for (i, line) in lines.iter().enumerate() {
            let mut text = String::new();
            for (j, (cell, width)) in line.iter().zip(widths).enumerate() {
                let pad = width - cell.chars().count();
                // Names left-aligned, numbers right-aligned.
                if j == 1 {
                    let _ = write!(text, "{cell}{} | ", " ".repeat(pad));
                } else {
                    let _ = write!(text, "{}{cell} | ", " ".repeat(pad));
                }
            }
            let _ = writeln!(out, "{}", text.trim_end().trim_end_matches('|').trim_end());
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(out, "{}", rule.join("-+-"));
            }
        }
        let rows: Vec<Row> = self.figures().into_iter().flat_map(|f| f.rows).collect();
        let missed = rows.iter().filter(|r| r.ok == Some(false)).count();
        let met = rows.iter().filter(|r| r.ok == Some(true)).count();
        let _ = writeln!(out, "targets met: {met}, missed: {missed}");
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
        out
    }

    /// Writes one JSON object per figure to `path`, each carrying the machine and the run.
    pub fn write_json_lines(
        &self,
        path: &Path,
        machine: &Machine,
        elapsed_secs: f64,
    ) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut text = String::new();
        for figure in self.figures() {
            let mut object = serde_json::to_value(&figure).context("serializing a figure")?;
            if let Value::Object(map) = &mut object {
                map.insert("machine".into(), serde_json::to_value(machine)?);
                map.insert("run_seconds".into(), Value::from(elapsed_secs));
            }
            text.push_str(&serde_json::to_string(&object)?);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_targets_decide_ok() {
        let row = Row::versus("x", Unit::ArticlesPerSec, 60.0, 100.0, 0.5);
        assert_eq!(row.ratio, Some(0.6));
        assert_eq!(row.ok, Some(true));
        let row = Row::at_most("p99", Unit::Ms, 25.0, 20.0);
        assert_eq!(row.ok, Some(false));
        let row = Row::no_worse_than("p99 mixed", Unit::Ms, 11.0, 10.0, 1.2);
        assert_eq!(row.ok, Some(true));
        assert_eq!(
            Row::no_worse_than("p99 mixed", Unit::Ms, 13.0, 10.0, 1.2).ok,
            Some(false)
        );
        assert_eq!(Row::info("rss", Unit::Bytes, 1.0).ok, None);
    }

    #[test]
    fn numbers_print_with_their_units() {
        assert_eq!(Unit::ArticlesPerSec.format(1_234_567.4), "1,234,567 art/s");
        assert_eq!(Unit::Ms.format(3.456), "3.46 ms");
        assert_eq!(Unit::Bytes.format(3.0 * 1024.0 * 1024.0), "3.0 MiB");
    }

    #[test]
    fn every_figure_appears_in_the_table_even_unmeasured() {
        let report = Report::default();
        report.row(2, Row::info("w", Unit::ArticlesPerSec, 5.0));
        report.error(3, "boom");
        let machine = Machine::probe(Path::new("/nonexistent"), true);
        let table = report.table(&machine, 1.0);
        for (figure, title) in FIGURES {
            assert!(
                table
                    .lines()
                    .any(|l| l.trim_start().starts_with(&figure.to_string())),
                "{figure} {title}\n{table}"
            );
        }
        assert!(table.contains("not measured: boom"), "{table}");
    }
}
