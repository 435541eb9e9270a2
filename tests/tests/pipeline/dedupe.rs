//! Dedupe across batches: a job that follows a topic publishes only new articles, and its
//! memory survives a worker's kill -9, the job's move to another worker and a data-streams
//! restart, since it lives in the broker.

use newsflow_tests::serde_json::{json, Value};
use newsflow_tests::{wait_for, Api, Bus, System};

use super::WITHIN;

/// The job's complete batches, newest first.
async fn complete_batches(api: &Api, job: &str) -> Vec<Value> {
    api.batches(job)
        .await
        .into_iter()
        .filter(|b| b["status"] == "complete")
        .collect()
}

/// How many batches the job's dedupe memory holds now.
async fn remembered(bus: &Bus, job: &str) -> usize {
    let Ok(bucket) = bus.jetstream().get_key_value("newsflow_dedupe").await else {
        return 0;
    };
    match bucket.get(job).await {
        Ok(Some(value)) => serde_json::from_slice::<Value>(&value).expect("memory is JSON")
            ["batches"]
            .as_array()
            .map_or(0, Vec::len),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_memory_survives_a_kill_9_a_move_and_a_data_streams_restart() {
    let mut system = System::builder().workers(2).start().await;
    let api = system.api();
    let bus = system.bus().await;
    let created = api
        .create_job_ok(&json!({
            "id":"fresh","params":{"q":"bitcoin"},"interval_secs":2,"page_size":10,
            "pipeline":[{"type":"dedupe","window_batches":3}]
        }))
        .await;
    let first_owner = created["worker"]["id"].as_str().expect("owned").to_owned();

    // The first batch publishes all ten; the next ones find nothing new (the mock does not
    // rotate) and say so.
    let seen = wait_for(WITHIN, "two complete batches", || async {
        let batches = complete_batches(&api, "fresh").await;
        (batches.len() >= 2).then_some(batches)
    })
    .await;
    let first = seen.last().expect("oldest");
    assert_eq!(first["article_count"], 10, "{first}");
    let second = &seen[seen.len() - 2];
    assert_eq!(second["article_count"], 0, "{second}");
    assert_eq!(second["dropped"], json!({"dedupe": 10}), "{second}");
    // Killed only once the memory holds every complete batch so far, so the kill cannot land
    // between a marker and its memory write (that window costs repeats, by design).
    wait_for(
        WITHIN,
        "the memory to hold the complete batches",
        || async {
            let complete = complete_batches(&api, "fresh").await.len();
            (remembered(&bus, "fresh").await >= complete.min(3)).then_some(())
        },
    )
    .await;

    system.kill_worker(&first_owner);
    system.restart_data_streams().await;
    let api = system.api();
    let before = complete_batches(&api, "fresh").await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let after = wait_for(WITHIN, "a complete batch by the other worker", || async {
        let batches = complete_batches(&api, "fresh").await;
        let newest = batches.first()?.clone();
        (newest["id"].as_str()? > before.as_str()).then_some(newest)
    })
    .await;
    assert_eq!(after["article_count"], 0, "{after}");
    assert_eq!(after["fetched_count"], 10, "{after}");
    assert_eq!(after["dropped"], json!({"dedupe": 10}), "{after}");
    let job = api.job("fresh").await;
    assert_ne!(job["worker"]["id"], first_owner.as_str(), "{job}");
    let (_, served) = api.get("/jobs/fresh/articles").await;
    assert_eq!(
        served["articles"].as_array().map(Vec::len),
        Some(0),
        "the latest batch holds only new articles: none"
    );
}
