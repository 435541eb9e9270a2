//! A complete batch is exactly what its marker says, whoever publishes to the stream; stream
//! data of a job data-streams does not have is never served; bad values get clear 422s.

use std::time::Duration;

use newsflow_core::{ArticleMessage, BatchId, BatchMarker, JobId};
use newsflow_nats::subjects;
use newsflow_tests::bus::complete_marker;
use newsflow_tests::{wait_for, Api, StatusCode, System};
use serde_json::json;

use super::article;

async fn dead_letters(api: &Api) -> Vec<serde_json::Value> {
    api.collect_pages("/dead-letters", "dead_letters", 1000)
        .await
}

fn marker(job: &str, batch: BatchId, count: u32) -> BatchMarker {
    let job = JobId::parse(job).expect("valid");
    complete_marker(&job, batch, count, newsflow_core::now_utc())
}

#[tokio::test]
async fn a_complete_batch_serves_exactly_the_articles_its_marker_counts() {
    let system = System::builder().start().await;
    let api = system.api();
    api.create_job_ok(&json!({"id":"exact","params":{"q":"exact"},"interval_secs":3600}))
        .await;
    let bus = system.bus().await;
    let batch = BatchId::generate();
    for seq in 0..5 {
        bus.publish_article(&ArticleMessage {
            article: article("exact", batch, seq, ""),
            seq,
        })
        .await;
    }
    // A second, different article for seq 1 under another message id.
    let rival = ArticleMessage {
        article: article("exact", batch, 1, "-rival"),
        seq: 1,
    };
    let payload = serde_json::to_vec(&rival).expect("serializes");
    bus.publish(
        &subjects::articles(&rival.article.job_id, batch),
        Some(&format!("rival.{batch}.1")),
        &[],
        payload,
    )
    .await;
    bus.publish_marker(&marker("exact", batch, 3)).await;

    let latest = api
        .wait_for_latest("exact", None, Duration::from_secs(20))
        .await;
    let served = latest["articles"].as_array().cloned().unwrap_or_default();
    let seqs: Vec<_> = served.iter().map(|a| a["title"].clone()).collect();
    assert_eq!(
        seqs,
        vec![json!("title 0"), json!("title 1"), json!("title 2")]
    );
    assert_eq!(latest["batch"]["article_count"], 3);
    let of_batch = api.batch_articles("exact", &batch.to_string(), 100).await;
    assert_eq!(of_batch.len(), 3, "{of_batch:?}");

    // An extra article arriving after the marker is refused too.
    bus.publish_article(&ArticleMessage {
        article: article("exact", batch, 7, ""),
        seq: 7,
    })
    .await;
    let letters = wait_for(Duration::from_secs(20), "4 dead letters", || {
        let api = api.clone();
        async move {
            let letters = dead_letters(&api).await;
            (letters.len() >= 4).then_some(letters)
        }
    })
    .await;
    let reasons: Vec<String> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("past the batch's complete marker"))
            .count(),
        3,
        "{reasons:?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("already stored with different content"))
            .count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        api.batch_articles("exact", &batch.to_string(), 100)
            .await
            .len(),
        3
    );
}

#[tokio::test]
async fn stream_data_of_a_job_that_does_not_exist_is_never_served() {
    let system = System::builder().start().await;
    let api = system.api();
    let bus = system.bus().await;
    let batch = BatchId::generate();
    let articles: Vec<_> = (0..3).map(|i| article("ghost", batch, i, "")).collect();
    bus.publish_complete_batch(&articles).await;
    // Wait until ingest has seen it: a batch of a real job published after it is visible.
    api.create_job_ok(&json!({"id":"real","params":{"q":"real"},"interval_secs":3600}))
        .await;
    let real = BatchId::generate();
    bus.publish_complete_batch(&[article("real", real, 0, "")])
        .await;
    api.wait_for_latest("real", None, Duration::from_secs(20))
        .await;

    for path in [
        "/jobs/ghost".to_owned(),
        "/jobs/ghost/articles".to_owned(),
        "/jobs/ghost/batches".to_owned(),
        format!("/jobs/ghost/batches/{batch}/articles"),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], "job_not_found", "{path}: {body}");
    }
}

#[tokio::test]
async fn control_characters_and_numbers_too_large_are_clear_422s() {
    let system = System::builder().without_data_streams().start().await;
    let mut system = system;
    system.start_data_streams().await;
    let api = system.api();
    let (status, body) = api
        .create_job(&json!({"params":{"q":"bit\u{0}coin"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "control_character", "{body}");
    for (field, value) in [("interval_secs", json!(1e30)), ("max_pages", json!(11))] {
        let (status, body) = api
            .create_job(&json!({"params":{"q":"x"}, field: value}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "out_of_range", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("out of range"), "{body}");
    }
}
