//! `--log-format json`, black-box: every line every program writes (stdout, its ready line
//! included, and stderr) parses as one JSON object; the worker's lines carry the `worker_id`,
//! `job_id` and `batch_id` spans, and one line per batch gives pages, articles, duration and
//! outcome.

use std::time::Duration;

use newsflow_tests::System;
use serde_json::{json, Value};

const BATCH_WITHIN: Duration = Duration::from_secs(45);
const JSON: [&str; 2] = ["--log-format", "json"];

/// Every `*.log` file in `dir` but nats-server's, with its lines.
fn program_logs(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the test directory") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.ends_with(".log") && !name.starts_with("nats.") {
            let text = std::fs::read_to_string(&path).expect("a log file");
            logs.push((name, text));
        }
    }
    logs.sort();
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_every_program_is_one_json_object_and_batches_carry_their_spans() {
    let mut system = System::builder()
        .workers(1)
        .worker_args(["--log-format", "json", "--metrics-addr", "127.0.0.1:0"])
        .data_streams_args(JSON)
        .mock_args(JSON)
        .start()
        .await;
    let api = system.api();
    // A retried 429 and a refused create add warning and error lines to the mix.
    system
        .mock()
        .inject_fault(&json!({"kind": "rate_limited", "times": 1}))
        .await;
    api.create_job_ok(&json!({"id": "logged", "params": {"q": "bitcoin"}, "interval_secs": 60}))
        .await;
    let latest = api.wait_for_latest("logged", None, BATCH_WITHIN).await;
    let batch_id = latest["batch"]["id"]
        .as_str()
        .expect("a batch id")
        .to_owned();
    let (status, _) = api.create_job(&json!({"id": "bad id!"})).await;
    assert!(status.is_client_error());

    assert!(system.terminate_worker("worker-1").await.success());
    assert!(system.terminate_data_streams().await.success());
    assert!(system.stop_mock().await.success());

    let logs = program_logs(system.dir());
    let programs: Vec<&str> = logs.iter().map(|(name, _)| name.as_str()).collect();
    for program in ["worker-1", "data-streams", "newsapi-mock"] {
        for stream in ["stdout", "stderr"] {
            assert!(
                programs
                    .iter()
                    .any(|n| n.starts_with(program) && n.ends_with(&format!("{stream}.log"))),
                "{program} {stream} in {programs:?}"
            );
        }
    }
    let mut lines = 0;
    let mut batch_line = None;
    for (name, text) in &logs {
        for line in text.lines() {
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: a line that is not JSON ({e}): {line}"));
            assert!(parsed.is_object(), "{name}: {line}");
            assert!(parsed["level"].is_string(), "{name}: {line}");
            assert!(parsed["fields"]["message"].is_string(), "{name}: {line}");
            lines += 1;
            if name.starts_with("worker-1")
                && parsed["fields"]["message"] == "batch finished"
                && parsed["span"]["batch_id"] == batch_id
            {
                batch_line = Some(parsed);
            }
        }
    }
    assert!(lines > 20, "only {lines} lines");
    for (name, text) in &logs {
        if name.ends_with("stdout.log") {
            assert!(!text.trim().is_empty(), "{name} printed its ready line");
        }
    }
    let batch = batch_line.expect("one line for the promoted batch");
    let fields = &batch["fields"];
    assert_eq!(fields["outcome"], "complete", "{batch}");
    assert!(fields["pages"].as_u64().is_some_and(|p| p >= 1), "{batch}");
    assert!(
        fields["articles"].as_u64().is_some_and(|a| a >= 1),
        "{batch}"
    );
    assert!(fields["duration_ms"].is_u64(), "{batch}");
    let spans = batch["spans"].as_array().expect("the span list");
    let carried = |key: &str| {
        spans
            .iter()
            .find_map(|s| s[key].as_str())
            .map(str::to_owned)
    };
    assert_eq!(carried("worker_id").as_deref(), Some("worker-1"), "{batch}");
    assert_eq!(carried("job_id").as_deref(), Some("logged"), "{batch}");
    assert_eq!(
        carried("batch_id").as_deref(),
        Some(batch_id.as_str()),
        "{batch}"
    );
}
