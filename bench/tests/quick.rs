//! `newsflow-bench --quick` still measures every figure: the benchmark cannot rot unnoticed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The services next to the bench binary (same profile), built when missing.
fn ensure_services(bin_dir: &Path) {
    let missing = ["data-streams", "worker", "newsapi-mock"]
        .iter()
        .any(|name| !bin_dir.join(name).is_file());
    if !missing {
        return;
    }
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.args(["build", "--bins"]);
    if bin_dir.ends_with("release") {
        cargo.arg("--release");
    }
    let status = cargo
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build --bins failed: {status}");
}

#[test]
fn a_quick_run_prints_and_records_every_figure() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_newsflow-bench"));
    let bin_dir = bench
        .parent()
        .expect("the bench has a directory")
        .to_path_buf();
    ensure_services(&bin_dir);
    let out =
        std::env::temp_dir().join(format!("newsflow-bench-quick-{}.jsonl", std::process::id()));

    let started = Instant::now();
    let output = Command::new(&bench)
        .arg("--quick")
        .arg("--out")
        .arg(&out)
        .output()
        .expect("running newsflow-bench --quick");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "newsflow-bench --quick failed ({}) after {took:?}\n{stdout}\n{stderr}",
        output.status
    );
    eprintln!("newsflow-bench --quick took {took:?}\n{stdout}");

    let header = stdout
        .lines()
        .position(|line| line.trim_start().starts_with("fig"))
        .unwrap_or_else(|| panic!("no table header in\n{stdout}"));
    let table: Vec<&str> = stdout.lines().skip(header + 2).collect();
    // Figure 13 (callgrind) runs only when asked for.
    for figure in 1..=13 {
        assert!(
            table
                .iter()
                .any(|line| line.split('|').next().map(str::trim) == Some(&figure.to_string())),
            "figure {figure} is missing from the table\n{stdout}"
        );
    }

    let picture = out.with_file_name("report.svg");
    let svg = std::fs::read_to_string(&picture).expect("the picture was written");
    assert!(
        svg.starts_with("<svg")
            && svg.contains("targets met")
            && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );

    let lines = std::fs::read_to_string(&out).expect("the JSON lines were written");
    let _ = std::fs::remove_file(&out);
    let figures: Vec<serde_json::Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON object"))
        .collect();
    let numbers: Vec<u64> = figures
        .iter()
        .filter_map(|f| f["figure"].as_u64())
        .collect();
    assert_eq!(numbers, (1..=13).collect::<Vec<u64>>(), "{lines}");
    for figure in &figures {
        if figure["figure"] == 13 {
            assert_eq!(figure["skipped"], true, "{figure}");
            continue;
        }
        let rows = figure["rows"].as_array().expect("rows");
        assert!(!rows.is_empty(), "figure without rows: {figure}");
        assert!(figure["error"].is_null(), "figure with an error: {figure}");
        for row in rows {
            assert!(row["measured"].is_number(), "row not measured: {row}");
        }
        assert!(
            figure["machine"]["nproc"].as_u64().is_some_and(|n| n > 0),
            "{figure}"
        );
    }
}
