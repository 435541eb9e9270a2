//! The store rebuilt from the stream: after it is lost, and after it is corrupted.

use std::collections::BTreeMap;
use std::time::Duration;

use newsflow_tests::contract::id_of;
use newsflow_tests::faults_support::{
    corrupt_files_under, spawn_data_streams_unready, wait_until_ingested, INGEST_WITHIN,
};
use newsflow_tests::{wait_for, Api, System};
use serde_json::{json, Value};

use crate::BATCH_WITHIN;

/// Everything data-streams derives from the stream, for comparison across a rebuild.
#[derive(Debug, PartialEq)]
struct Derived {
    jobs: BTreeMap<String, Value>,
    latest: BTreeMap<String, Value>,
    complete_batches: BTreeMap<String, Vec<Value>>,
    articles: BTreeMap<String, Vec<Value>>,
    feed: Vec<Value>,
}

async fn derived(api: &Api, jobs: &[&str]) -> Derived {
    let mut out = Derived {
        jobs: BTreeMap::new(),
        latest: BTreeMap::new(),
        complete_batches: BTreeMap::new(),
        articles: BTreeMap::new(),
        feed: api.collect_pages("/articles", "articles", 1000).await,
    };
    for job in jobs {
        let view = api.job(job).await;
        out.jobs.insert(
            (*job).to_owned(),
            json!({
                "endpoint": view["endpoint"], "params": view["params"],
                "interval_secs": view["interval_secs"], "max_pages": view["max_pages"],
                "page_size": view["page_size"], "latest_batch": view["latest_batch"],
            }),
        );
        out.latest.insert((*job).to_owned(), api.latest(job).await);
        let complete: Vec<Value> = api
            .batches(job)
            .await
            .into_iter()
            .filter(|b| b["status"] == "complete")
            .collect();
        for batch in &complete {
            let id = id_of(batch);
            let articles = api.batch_articles(job, &id, 1000).await;
            out.articles.insert(format!("{job}/{id}"), articles);
        }
        out.complete_batches.insert((*job).to_owned(), complete);
    }
    out
}

const REBUILT_JOBS: [&str; 2] = ["rebuilt-a", "rebuilt-b"];

/// Runs two jobs to two complete batches each, then stops the worker so the stream holds
/// still, and returns what data-streams derived from it.
async fn settled_store(system: &mut System) -> Derived {
    let api = system.api();
    api.create_job_ok(&json!({
        "id":"rebuilt-a","params":{"q":"bitcoin"},"interval_secs":1,"max_pages":2,"page_size":10
    }))
    .await;
    api.create_job_ok(
        &json!({"id":"rebuilt-b","params":{"q":"ethereum"},"interval_secs":1,"page_size":7}),
    )
    .await;
    for job in REBUILT_JOBS {
        wait_for(BATCH_WITHIN, &format!("two batches of {job}"), || async {
            let complete = api
                .batches(job)
                .await
                .iter()
                .filter(|b| b["status"] == "complete")
                .count();
            (complete >= 2).then_some(())
        })
        .await;
    }
    let status = system.terminate_worker("worker-1").await;
    assert!(status.success(), "{status}");
    let bus = system.bus().await;
    wait_until_ingested(&bus, INGEST_WITHIN).await;
    derived(&api, &REBUILT_JOBS).await
}

/// Asserts the rebuilt store derives the same data, with the jobs back as stopped ones.
async fn assert_rebuilt(system: &System, before: &Derived) {
    let api = system.api();
    let bus = system.bus().await;
    wait_until_ingested(&bus, INGEST_WITHIN).await;
    let after = derived(&api, &REBUILT_JOBS).await;
    for job in REBUILT_JOBS {
        let view = api.job(job).await;
        assert_eq!(
            view["state"], "stopped",
            "a job known only from the stream: {view}"
        );
        assert!(view["worker"].is_null(), "{view}");
        assert_eq!(after.jobs[job], before.jobs[job], "{job}");
        assert_eq!(after.latest[job], before.latest[job], "latest of {job}");
        assert_eq!(
            after.complete_batches[job], before.complete_batches[job],
            "complete batches of {job}"
        );
    }
    assert_eq!(after.articles, before.articles, "articles of each batch");
    assert_eq!(after.feed, before.feed, "GET /articles");
    assert_eq!(after, *before);
}

/// Deletes the job records bucket too: the jobs are then known only from the stream's
/// `Newsflow-Job-Spec` headers (with the bucket, they would come back from it as they were).
async fn lose_the_jobs_bucket(system: &System) {
    let js = async_nats::jetstream::new(system.bus().await.client().clone());
    js.delete_stream("KV_newsflow_jobs")
        .await
        .expect("the jobs bucket is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_is_rebuilt_from_the_stream_identically_with_its_jobs_back_stopped() {
    let mut system = System::builder().workers(1).start().await;
    let before = settled_store(&mut system).await;
    let status = system.terminate_data_streams().await;
    assert!(status.success(), "{status}");

    std::fs::remove_dir_all(system.data_dir()).expect("the store is deleted");
    lose_the_jobs_bucket(&system).await;
    system.start_data_streams_with(&["--rebuild"]).await;

    assert_rebuilt(&system, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_store_is_refused_without_rebuild_and_rebuilt_identically_with_it() {
    let mut system = System::builder().workers(1).start().await;
    let before = settled_store(&mut system).await;
    let status = system.terminate_data_streams().await;
    assert!(status.success(), "{status}");
    let overwritten = corrupt_files_under(system.data_dir());
    assert!(overwritten > 0, "the store has files");

    let mut refused = spawn_data_streams_unready(&system, &[]).await;
    let Some(exit) = refused.wait_exit(Duration::from_secs(30)).await else {
        panic!(
            "data-streams neither refused nor started on a corrupted store: {}",
            refused.logs()
        );
    };
    assert!(!exit.success(), "data-streams started on garbage");
    assert!(
        refused.logs().contains("--rebuild"),
        "the refusal names --rebuild: {}",
        refused.logs()
    );
    drop(refused);
    lose_the_jobs_bucket(&system).await;
    system.start_data_streams_with(&["--rebuild"]).await;

    assert_rebuilt(&system, &before).await;
}
