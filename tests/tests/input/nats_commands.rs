//! Garbage, wrong types and oversized payloads on a worker's command subjects: each gets an
//! error reply and the worker keeps serving.

use std::time::Duration;

use newsflow_tests::System;
use serde_json::{json, Value};

/// A valid `news.ctl.start` payload for job `id`.
fn start_payload(id: &str) -> Value {
    json!({"job":{"id":id,"endpoint":"everything","params":{"q":"bitcoin"},"interval_secs":3600,"max_pages":1,"page_size":5}})
}

/// Garbage, wrong types and oversized payloads for both command subjects.
fn bad_commands() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let huge = format!(r#"{{"job_id":"a","pad":"{}"}}"#, "p".repeat(64 * 1024));
    let huge_start = {
        let mut start = start_payload("big");
        start["job"]["params"]["q"] = json!("q".repeat(65 * 1024));
        start.to_string()
    };
    vec![
        ("empty", Vec::new(), "invalid_payload"),
        ("not JSON", b"hello".to_vec(), "invalid_payload"),
        ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x80], "invalid_payload"),
        ("JSON null", b"null".to_vec(), "invalid_payload"),
        ("JSON array", b"[]".to_vec(), "invalid_payload"),
        ("JSON number", b"42".to_vec(), "invalid_payload"),
        ("empty object", b"{}".to_vec(), "invalid_payload"),
        ("truncated", br#"{"job":{"id":"#.to_vec(), "invalid_payload"),
        (
            "deeply nested",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            "invalid_payload",
        ),
        ("over 64 KiB", huge.into_bytes(), "payload_too_large"),
        (
            "start over 64 KiB",
            huge_start.into_bytes(),
            "payload_too_large",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_commands_get_error_replies_and_the_worker_keeps_serving() {
    let system = System::builder()
        .without_data_streams()
        .workers(1)
        .start()
        .await;
    let bus = system.bus().await;
    let within = Duration::from_secs(5);
    let stop_subject = "news.ctl.worker.worker-1.stop";

    let mut wrong_starts: Vec<(&str, Value)> = vec![
        ("job is a number", json!({"job":5})),
        ("job is a string", json!({"job":"bitcoin"})),
        (
            "job id is invalid",
            json!({"job":{"id":"Bad Id","endpoint":"everything","params":{"q":"x"},"interval_secs":60,"max_pages":1,"page_size":5}}),
        ),
        (
            "job id is a subject wildcard",
            json!({"job":{"id":"a.>","endpoint":"everything","params":{"q":"x"},"interval_secs":60,"max_pages":1,"page_size":5}}),
        ),
        (
            "interval 0",
            json!({"job":{"id":"a","endpoint":"everything","params":{"q":"x"},"interval_secs":0,"max_pages":1,"page_size":5}}),
        ),
        (
            "page_size 1000",
            json!({"job":{"id":"a","endpoint":"everything","params":{"q":"x"},"interval_secs":60,"max_pages":1,"page_size":1000}}),
        ),
        (
            "apiKey in params",
            json!({"job":{"id":"a","endpoint":"everything","params":{"q":"x","apiKey":"k"},"interval_secs":60,"max_pages":1,"page_size":5}}),
        ),
        ("missing fields", json!({"job":{"id":"a"}})),
        (
            "unknown endpoint",
            json!({"job":{"id":"a","endpoint":"sources","params":{"q":"x"},"interval_secs":60,"max_pages":1,"page_size":5}}),
        ),
        (
            "unknown field",
            json!({"job":{"id":"a","endpoint":"everything","params":{"q":"x"},"interval_secs":60,"max_pages":1,"page_size":5},"force":true}),
        ),
        ("a stop on the start subject", json!({"job_id":"a"})),
    ];
    let mut wrong_stops: Vec<(&str, Value)> = vec![
        ("job_id is a number", json!({"job_id":1})),
        ("job_id is invalid", json!({"job_id":"A B"})),
        ("job_id is null", json!({"job_id":null})),
        ("unknown field", json!({"job_id":"a","now":true})),
        ("a start on the stop subject", start_payload("a")),
    ];
    let mut count = 0;
    for (subject, cases) in [
        ("news.ctl.start", &mut wrong_starts),
        (stop_subject, &mut wrong_stops),
    ] {
        let mut all: Vec<(String, Vec<u8>, &str)> = cases
            .drain(..)
            .map(|(what, value)| {
                (
                    what.to_owned(),
                    value.to_string().into_bytes(),
                    "invalid_payload",
                )
            })
            .collect();
        all.extend(
            bad_commands()
                .into_iter()
                .map(|(what, bytes, code)| (what.to_owned(), bytes, code)),
        );
        for (what, payload, code) in all {
            let reply = bus.request_bytes(subject, payload, within).await;
            assert_eq!(reply["ok"], false, "{subject} {what}: {reply}");
            assert_eq!(reply["error"]["code"], code, "{subject} {what}: {reply}");
            assert!(
                reply["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty() && m.len() < 2000),
                "{subject} {what}: a short reason: {reply}"
            );
            count += 1;
        }
    }

    // Nothing above started a job, and the worker still takes a valid command.
    let mut beats = bus.heartbeats().await;
    let beat = beats
        .wait_for(within, "a heartbeat after the garbage", "worker-1", |_| {
            true
        })
        .await;
    assert!(beat.count == Some(0), "no garbage started a job: {beat:?}");
    let reply = bus
        .request_json("news.ctl.start", &start_payload("after"), within)
        .await;
    assert_eq!(
        reply,
        json!({"ok":true,"worker_id":"worker-1","job_id":"after"})
    );
    let reply = bus
        .request_json(stop_subject, &json!({"job_id":"after"}), within)
        .await;
    assert_eq!(
        reply,
        json!({"ok":true,"worker_id":"worker-1","job_id":"after"})
    );
    eprintln!("garbage commands answered with errors: {count}");
}
