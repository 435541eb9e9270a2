//! Many concurrent writers: the load that froze data-streams for good (sled 0.34's concurrent
//! `flush_async` deadlock) is answered in full while ingest goes on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use newsflow_core::BatchId;
use newsflow_tests::{wait_for, Api, StatusCode, System};
use serde_json::json;

use super::{article, timed, Latencies};

const ROUNDS: usize = 3;
const CONCURRENT: usize = 100;

/// Publishes `batches` complete batches of `per_batch` articles for `job`, straight to the
/// stream (a backlog to ingest while the storm goes on).
async fn publish_backlog(
    system: &System,
    job: &str,
    batches: usize,
    per_batch: u32,
) -> Vec<BatchId> {
    let bus = system.bus().await;
    let mut ids = Vec::new();
    for _ in 0..batches {
        let batch = BatchId::generate();
        let articles: Vec<_> = (0..per_batch).map(|i| article(job, batch, i, "")).collect();
        bus.publish_complete_batch(&articles).await;
        ids.push(batch);
    }
    ids
}

/// One round: `CONCURRENT` creates, `CONCURRENT` start/stop of one job and as many reads, all
/// at once. Returns every request's status and latency.
async fn round(api: &Api, round: usize) -> Vec<(String, StatusCode, Duration)> {
    let creates = (0..CONCURRENT).map(|i| {
        let api = api.clone();
        async move {
            // Every fifth id is taken already: 409s are part of the storm.
            let id = if i % 5 == 0 {
                "storm-shared".to_owned()
            } else {
                format!("storm-{round}-{i}")
            };
            let body = json!({"id": id, "params": {"q": "storm"}, "interval_secs": 3600});
            let ((status, _), took) = timed(api.create_job(&body)).await;
            ("create".to_owned(), status, took)
        }
    });
    let toggles = (0..CONCURRENT).map(|i| {
        let api = api.clone();
        async move {
            let path = if i % 2 == 0 {
                "/jobs/toggled/stop"
            } else {
                "/jobs/toggled/start"
            };
            let ((status, _), took) = timed(api.post_empty(path)).await;
            ("start/stop".to_owned(), status, took)
        }
    });
    let reads = (0..CONCURRENT).map(|i| {
        let api = api.clone();
        async move {
            let path = match i % 3 {
                0 => "/jobs?limit=50",
                1 => "/jobs/backlog/articles",
                _ => "/articles?limit=20",
            };
            let ((status, _), took) = timed(api.get(path)).await;
            ("read".to_owned(), status, took)
        }
    });
    // The previous round's odd jobs are deleted while this round creates (a deletion goes
    // through the store writer that also applies the backlog).
    let deletes = (1..CONCURRENT)
        .filter(|i| round > 0 && deleted_later(*i))
        .map(|i| {
            let api = api.clone();
            async move {
                let path = format!("/jobs/storm-{}-{i}", round - 1);
                let ((status, _), took) = timed(api.delete(&path)).await;
                ("delete".to_owned(), status, took)
            }
        });
    let (mut creates, toggles, reads, deletes) = futures::join!(
        join_all(creates),
        join_all(toggles),
        join_all(reads),
        join_all(deletes)
    );
    creates.extend(toggles);
    creates.extend(reads);
    creates.extend(deletes);
    creates
}

/// Whether the job a round creates as its `i`th is deleted by the next round.
fn deleted_later(i: usize) -> bool {
    !i.is_multiple_of(5) && !i.is_multiple_of(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rounds_of_concurrent_writes_and_reads_during_ingest_are_all_answered_and_ingest_goes_on() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    api.create_job_ok(&json!({"id":"toggled","params":{"q":"toggle"},"interval_secs":3600}))
        .await;
    api.create_job_ok(&json!({"id":"storm-shared","params":{"q":"storm"},"interval_secs":3600}))
        .await;
    api.create_job_ok(&json!({"id":"backlog","params":{"q":"backlog"},"interval_secs":86400}))
        .await;

    let backlog = tokio::spawn({
        let url = system.nats_url();
        async move {
            let bus = newsflow_tests::Bus::connect(&url).await;
            let mut ids = Vec::new();
            for _ in 0..30 {
                let batch = BatchId::generate();
                let articles: Vec<_> = (0..100).map(|i| article("backlog", batch, i, "")).collect();
                bus.publish_complete_batch(&articles).await;
                ids.push(batch);
            }
            ids
        }
    });
    let mut answered = Vec::new();
    for n in 0..ROUNDS {
        answered.extend(round(&api, n).await);
    }
    let backlog = backlog.await.expect("the backlog publisher finished");

    for (what, status, _) in &answered {
        let expected: &[StatusCode] = match what.as_str() {
            "create" => &[StatusCode::CREATED, StatusCode::CONFLICT],
            "delete" => &[StatusCode::NO_CONTENT],
            _ => &[StatusCode::OK],
        };
        assert!(expected.contains(status), "a {what} was answered {status}");
    }
    let latencies = Latencies::new(answered.iter().map(|(_, _, took)| *took).collect());
    eprintln!(
        "storm: {} requests answered, p50 {:?}, p99 {:?}, max {:?}",
        latencies.count(),
        latencies.percentile(50),
        latencies.percentile(99),
        latencies.percentile(100)
    );

    // Ingest went on: the backlog's last batch becomes the latest.
    let last = backlog.last().expect("a backlog").to_string();
    wait_for(
        Duration::from_secs(60),
        "the backlog's last batch to be visible",
        || {
            let api = api.clone();
            let last = last.clone();
            async move {
                let page = api.latest("backlog").await;
                (page["batch"]["id"] == last.as_str()).then_some(())
            }
        },
    )
    .await;
    // A write right after the storm answers within 2 s, and the service is ready.
    let ((status, _), took) = timed(
        api.create_job(&json!({"id":"after-the-storm","params":{"q":"calm"},"interval_secs":3600})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        took < Duration::from_secs(2),
        "a create after the storm took {took:?}"
    );
    let (ready, body) = api.get("/readyz").await;
    assert_eq!(ready, StatusCode::OK, "{body}");
    for n in 0..ROUNDS {
        for i in (1..CONCURRENT).filter(|i| i % 5 != 0) {
            let (status, job) = api.get(&format!("/jobs/storm-{n}-{i}")).await;
            if n + 1 < ROUNDS && deleted_later(i) {
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "storm-{n}-{i} was deleted: {job}"
                );
                continue;
            }
            assert_eq!(status, StatusCode::OK, "storm-{n}-{i} was created");
            assert_eq!(job["state"], "running", "{job}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_during_a_storm_of_creates_leaves_each_job_absent_or_running_and_every_201_kept() {
    let mut system = System::builder().workers(1).start().await;
    let api = system.api();
    let _ = publish_backlog(&system, "unrelated", 3, 50).await;
    // Each creator sends creates back to back until one gets no answer at all (the process is
    // gone), so the kill always lands while creates are in flight, however fast the machine.
    const CREATORS: usize = 30;
    const MAX_PER_CREATOR: usize = 1000;
    let acked = Arc::new(AtomicUsize::new(0));
    let creators: Vec<_> = (0..CREATORS)
        .map(|c| {
            let (api, acked) = (api.clone(), acked.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for k in 0..MAX_PER_CREATOR {
                    let id = format!("kill-{c}-{k}");
                    let body = json!({"id": id, "params": {"q": "kill"}, "interval_secs": 3600});
                    match api.try_create_job(&body).await {
                        Some(StatusCode::CREATED) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            acknowledged.push(id);
                        }
                        Some(_) => {}
                        None => return (acknowledged, true),
                    }
                }
                (acknowledged, false)
            })
        })
        .collect();
    wait_for(
        Duration::from_secs(30),
        "the first creates to be answered",
        || {
            let acked = acked.load(Ordering::Relaxed);
            async move { (acked >= 50).then_some(()) }
        },
    )
    .await;
    system.kill_data_streams();
    let mut acknowledged = Vec::new();
    let mut cut_short = 0;
    for creator in creators {
        let (ids, was_cut) = creator.await.expect("a creator task panicked");
        acknowledged.extend(ids);
        cut_short += usize::from(was_cut);
    }
    assert_eq!(
        cut_short, CREATORS,
        "every creator was still sending when data-streams was killed"
    );
    system.start_data_streams().await;
    let api = system.api();

    for id in &acknowledged {
        let (status, job) = api.get(&format!("/jobs/{id}")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{id} was acknowledged with 201 but is gone"
        );
        assert_eq!(job["state"], "running", "{job}");
    }
    let jobs = api.collect_pages("/jobs", "jobs", 1000).await;
    for job in &jobs {
        assert_eq!(
            job["state"], "running",
            "a job whose create was cut short came back in another state: {job}"
        );
    }
    eprintln!(
        "kill mid-storm: {} creates acknowledged, {} jobs present after restart",
        acknowledged.len(),
        jobs.len()
    );
}
