//! Retention (issue 10, points 1-3): a job keeps its newest `keep_batches` batches and always
//! its latest complete one; older batches leave the store and `GET /articles` within seconds;
//! a batch whose marker never came is abandoned; a kill -9 while pruning leaves nothing
//! half-deleted; the data directory stays flat while a job keeps producing.

use std::path::Path;
use std::time::{Duration, Instant};

use newsflow_core::{ArticleMessage, BatchId, BatchMarker, ErrorInfo, JobId, MarkerStatus};
use newsflow_tests::bus::sample_article;
use newsflow_tests::{wait_for, Api, Bus, StatusCode, System};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(20);

/// A batch id started `offset_ms` after `base_ms`, so that a test's batches sort in the order
/// it publishes them.
fn batch_at(base_ms: u64, offset_ms: u64) -> BatchId {
    BatchId::from_parts(base_ms + offset_ms, 1)
}

fn now_ms() -> u64 {
    u64::try_from(newsflow_core::now_utc().unix_timestamp_nanos() / 1_000_000).expect("after 1970")
}

async fn complete(bus: &Bus, job: &str, batch: BatchId, count: u32) {
    let articles: Vec<_> = (0..count)
        .map(|i| sample_article(job, batch, i, ""))
        .collect();
    bus.publish_complete_batch(&articles).await;
}

async fn failed(bus: &Bus, job: &str, batch: BatchId) {
    bus.publish_marker(&BatchMarker {
        job_id: JobId::parse(job).expect("valid"),
        batch_id: batch,
        status: MarkerStatus::Failed,
        article_count: 0,
        started_at: newsflow_core::now_utc(),
        finished_at: newsflow_core::now_utc(),
        error: Some(ErrorInfo::new("upstream_error", "the test says so")),
        fetched_count: None,
        dropped: None,
    })
    .await;
}

async fn batch_ids(api: &Api, job: &str) -> Vec<String> {
    api.batches(job)
        .await
        .iter()
        .map(|b| b["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until the job's batch list is exactly `want`, newest first.
async fn wait_for_batches(api: &Api, job: &str, want: &[BatchId]) {
    let want: Vec<String> = want.iter().map(ToString::to_string).collect();
    let found = newsflow_tests::poll_until(WITHIN, || {
        let (api, want) = (api.clone(), want.clone());
        async move { (batch_ids(&api, job).await == want).then_some(()) }
    })
    .await;
    if found.is_none() {
        let seen = batch_ids(api, job).await;
        panic!("batches of {job}: want {want:?}, saw {seen:?}");
    }
}

/// The batch ids of the job's articles in the cross-job feed.
async fn feed_batches(api: &Api, job: &str) -> Vec<String> {
    let mut batches: Vec<String> = api
        .collect_pages(&format!("/articles?job={job}"), "articles", 1000)
        .await
        .iter()
        .map(|a| a["batch_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    batches.sort();
    batches.dedup();
    batches
}

#[tokio::test]
async fn a_job_keeps_its_newest_batches_and_its_latest_complete_one() {
    let system = System::builder().start().await;
    let api = system.api();
    let job = api
        .create_job_ok(
            &json!({"id":"kept","params":{"q":"kept"},"interval_secs":3600,"keep_batches":2}),
        )
        .await;
    assert_eq!(job["keep_batches"], 2);
    let bus = system.bus().await;
    let base = now_ms();
    let (old, complete_batch, first_failure, second_failure, third_failure) = (
        batch_at(base, 0),
        batch_at(base, 10),
        batch_at(base, 20),
        batch_at(base, 30),
        batch_at(base, 40),
    );

    complete(&bus, "kept", old, 3).await;
    complete(&bus, "kept", complete_batch, 3).await;
    wait_for_batches(&api, "kept", &[complete_batch, old]).await;
    failed(&bus, "kept", first_failure).await;
    failed(&bus, "kept", second_failure).await;
    failed(&bus, "kept", third_failure).await;

    wait_for_batches(
        &api,
        "kept",
        &[third_failure, second_failure, complete_batch],
    )
    .await;
    assert_eq!(
        feed_batches(&api, "kept").await,
        vec![complete_batch.to_string()]
    );
    let latest = api.latest("kept").await;
    assert_eq!(latest["batch"]["id"], complete_batch.to_string());
    assert_eq!(latest["articles"].as_array().map(Vec::len), Some(3));
    let (status, _) = api.get(&format!("/jobs/kept/batches/{old}/articles")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a pruned batch is gone");
}

#[tokio::test]
async fn a_job_without_keep_batches_follows_the_service_default() {
    let system = System::builder()
        .data_streams_args(["--keep-batches", "1"])
        .start()
        .await;
    let api = system.api();
    let job = api
        .create_job_ok(&json!({"id":"dflt","params":{"q":"dflt"},"interval_secs":3600}))
        .await;
    assert_eq!(job["keep_batches"], 1);
    let bus = system.bus().await;
    let base = now_ms();

    complete(&bus, "dflt", batch_at(base, 0), 2).await;
    complete(&bus, "dflt", batch_at(base, 10), 2).await;

    wait_for_batches(&api, "dflt", &[batch_at(base, 10)]).await;
    assert_eq!(
        feed_batches(&api, "dflt").await,
        vec![batch_at(base, 10).to_string()]
    );
}

#[tokio::test]
async fn keep_batches_outside_one_to_a_thousand_is_refused_with_422() {
    let system = System::builder().start().await;
    let api = system.api();
    for bad in [json!(0), json!(1001)] {
        let (status, body) = api
            .create_job(&json!({"params":{"q":"x"},"keep_batches":bad}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        newsflow_tests::contract::assert_error(&body, "out_of_range");
    }
}

#[tokio::test]
async fn a_batch_whose_marker_never_comes_is_abandoned_and_loses_its_articles() {
    let system = System::builder()
        .data_streams_args(["--abandon-after-secs", "2"])
        .start()
        .await;
    let api = system.api();
    api.create_job_ok(&json!({"id":"orphan","params":{"q":"orphan"},"interval_secs":3600}))
        .await;
    let bus = system.bus().await;
    let batch = BatchId::generate();
    for seq in 0..4 {
        bus.publish_article(&ArticleMessage {
            article: sample_article("orphan", batch, seq, ""),
            seq,
        })
        .await;
    }

    let abandoned = wait_for(WITHIN, "the markerless batch to be abandoned", || {
        let api = api.clone();
        async move {
            let batches = api.batches("orphan").await;
            let first = batches.first()?.clone();
            (first["status"] == "incomplete" && first["article_count"] == 0).then_some(first)
        }
    })
    .await;
    assert_eq!(abandoned["id"], batch.to_string());
    assert_eq!(abandoned["error"]["code"], "abandoned");
    let served = api.batch_articles("orphan", &batch.to_string(), 100).await;
    assert!(served.is_empty(), "{served:?}");
}

#[tokio::test]
async fn a_kill_while_pruning_a_large_batch_leaves_nothing_half_deleted() {
    let mut system = System::builder().start().await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"big","params":{"q":"big"},"interval_secs":3600,"keep_batches":1}),
    )
    .await;
    let bus = system.bus().await;
    let base = now_ms();
    let (large, small) = (batch_at(base, 0), batch_at(base, 10));
    complete(&bus, "big", large, 2000).await;
    wait_for_batches(&api, "big", &[large]).await;

    complete(&bus, "big", small, 5).await;
    // The marker is applied, so pruning the large batch starts now: kill in the middle of it.
    wait_for(WITHIN, "the small batch's marker to be applied", || {
        let api = api.clone();
        async move {
            let ids = batch_ids(&api, "big").await;
            (ids.first() == Some(&small.to_string())).then_some(())
        }
    })
    .await;
    system.kill_data_streams();
    system.start_data_streams().await;
    let api = system.api();

    wait_for_batches(&api, "big", &[small]).await;
    // The batch leaves the list first, its articles right after it.
    wait_for(WITHIN, "the feed to serve only the kept batch", || {
        let api = api.clone();
        async move { (feed_batches(&api, "big").await == vec![small.to_string()]).then_some(()) }
    })
    .await;
    println!(
        "interrupted prune finished at start-up: {}",
        system
            .log_tails(400)
            .contains("finished pruning a batch a crash interrupted")
    );
    let feed = api
        .collect_pages("/articles?job=big", "articles", 1000)
        .await;
    assert_eq!(feed.len(), 5, "only the kept batch's articles are served");
    let (status, _) = api
        .get(&format!("/jobs/big/batches/{large}/articles"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Publishes complete batches of 100 articles until the job has had `until` of them, each
/// waited for (as a job running every second would give them one after another).
async fn produce(api: &Api, bus: &Bus, base: u64, from: u64, until: u64) {
    for n in from..until {
        let batch = batch_at(base, n * 1000);
        complete(bus, "flat", batch, 100).await;
        api.wait_for_latest(
            "flat",
            Some(&batch_at(base, n * 1000 - 1).to_string()),
            WITHIN,
        )
        .await;
    }
}

#[tokio::test]
async fn the_data_directory_stays_flat_while_a_job_keeps_three_batches() {
    let system = System::builder().start().await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"flat","params":{"q":"flat"},"interval_secs":1,"keep_batches":3}),
    )
    .await;
    let bus = system.bus().await;
    let base = now_ms();
    let started = Instant::now();

    produce(&api, &bus, base, 1, 31).await;
    let after_30 = dir_size(system.data_dir());
    produce(&api, &bus, base, 31, 151).await;
    let after_150 = dir_size(system.data_dir());

    println!(
        "data dir: {after_30} bytes after 30 batches, {after_150} after 150 ({:.2}x), in {:?}",
        after_150 as f64 / after_30 as f64,
        started.elapsed()
    );
    assert_eq!(api.batches("flat").await.len(), 3);
    assert!(
        after_150 as f64 <= after_30 as f64 * 1.5,
        "{after_150} bytes after 150 batches > 1.5 x {after_30} after 30"
    );
}
