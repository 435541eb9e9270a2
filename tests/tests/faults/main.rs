//! Faults a real deployment meets, each against real processes and a real nats-server: crashes
//! and restarts of every part, a misbehaving NewsAPI, poison on the bus, graceful shutdown and
//! a lost or corrupted store. The standard is JetStream's and Jepsen's: count what was
//! acknowledged, then check that every one of those is stored exactly once.
//!
//! # Layout
//! - `cluster`: a 3-node nats-server cluster: a node killed and brought back, a rolling restart.
//! - `crashes`: a worker killed mid-batch and fenced; data-streams killed mid-ingest.
//! - `nats_restart`: nats-server restarted mid-stream; data-streams cut off from it.
//! - `restarts`: data-streams or a worker restarted while the other stays up.
//! - `newsapi_faults`: rate limits, server errors, timeouts, a closed port, bad bodies, a
//!   refused key and the plan's result cap.
//! - `poison`: poison stream messages and garbage commands.
//! - `shutdown`: SIGTERM mid-ingest, mid-batch and while nats-server is down.
//! - `rebuild`: a lost or corrupted store rebuilt from the stream.

mod cluster;
mod crashes;
mod nats_restart;
mod newsapi_faults;
mod poison;
mod rebuild;
mod restarts;
mod shutdown;

use std::collections::BTreeSet;
use std::time::Duration;

use newsflow_tests::contract::{id_of, ids};
use newsflow_tests::faults_support::{
    owner, wait_for_half_batch, BatchReader, HeartbeatLog, Ledger,
};
use newsflow_tests::{Api, Bus, System};
use serde_json::{json, Value};

/// How long a batch may take to be fetched, published, consumed and promoted.
const BATCH_WITHIN: Duration = Duration::from_secs(45);
/// Workers' heartbeat interval in the harness's fast settings.
const HEARTBEAT: Duration = Duration::from_millis(300);
/// data-streams' worker timeout in the harness's fast settings.
const WORKER_TIMEOUT: Duration = Duration::from_millis(1200);
/// How long a job may take to move to another worker once its owner is gone.
const MOVE_WITHIN: Duration = Duration::from_secs(20);
/// The longest a service may take to exit after SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(15);

/// The batch `id` of `job` as listed.
async fn listed_batch(api: &Api, job: &str, id: &str) -> Value {
    api.batches(job)
        .await
        .into_iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("batch {id} of {job} is not listed"))
}

/// Asserts a [`BatchReader`] read pages throughout and never saw a partial, mixed or older one.
fn assert_reads_whole(reader: &BatchReader) {
    let figures = reader.figures();
    assert!(figures.reads > 0, "{figures:?}");
    assert_eq!(
        (figures.partial, figures.mixed, figures.regressions),
        (0, 0, 0),
        "{figures:?}: {:?}",
        reader.problems()
    );
}

/// Asserts a batch that lost its worker mid-run is never served: marked incomplete, no
/// articles through its route, no marker on the stream, not the latest.
async fn assert_abandoned(api: &Api, bus: &Bus, job: &str, batch: &str) {
    let listed = listed_batch(api, job, batch).await;
    assert_eq!(listed["status"], "incomplete", "{listed}");
    assert_eq!(listed["error"]["code"], "abandoned", "{listed}");
    let page = api
        .ok(&format!("/jobs/{job}/batches/{batch}/articles"))
        .await;
    assert_eq!(
        page["articles"].as_array().map(Vec::len),
        Some(0),
        "an abandoned batch serves no article: {page}"
    );
    let markers = bus
        .stream_messages(&format!("news.batches.{job}.{batch}"))
        .await;
    assert!(markers.is_empty(), "an abandoned batch got a marker");
    let latest = api.latest(job).await;
    assert_ne!(
        latest["batch"]["id"], batch,
        "the abandoned batch is served"
    );
}

/// Asserts the latest page of `job` is one whole complete batch; returns its id.
fn assert_whole(page: &Value) -> String {
    let batch = &page["batch"];
    let id = id_of(batch);
    assert_eq!(batch["status"], "complete", "{batch}");
    let articles = page["articles"].as_array().cloned().unwrap_or_default();
    assert_eq!(batch["article_count"], articles.len(), "{batch}");
    assert!(
        articles.iter().all(|a| a["batch_id"] == id.as_str()),
        "a page mixes batches: {page}"
    );
    id
}

/// Checks what a test's own publisher saw acknowledged against what data-streams serves,
/// batch by batch, as sets.
async fn assert_ledger_served(api: &Api, ledger: &Ledger) {
    let acked = ledger.articles();
    for ((job, batch), count) in ledger.markers() {
        let want: BTreeSet<String> = acked
            .get(&(job.clone(), batch.clone()))
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default();
        assert_eq!(want.len(), count as usize, "{job}/{batch} ledger");
        let served = api.batch_articles(&job, &batch, 1000).await;
        let got: BTreeSet<String> = ids(&served).into_iter().collect();
        assert_eq!(got.len(), served.len(), "{job}/{batch}: duplicates served");
        let lost: Vec<&String> = want.difference(&got).collect();
        let extra: Vec<&String> = got.difference(&want).collect();
        assert!(
            lost.is_empty() && extra.is_empty(),
            "{job}/{batch}: lost {lost:?}, never acknowledged {extra:?}"
        );
    }
    for (job, newest) in ledger.newest_complete() {
        let latest = api.latest(&job).await;
        assert_eq!(latest["batch"]["id"], newest.as_str(), "latest of {job}");
    }
}

/// Two workers behind a slow mock, and a job caught in the middle of a batch on its owner,
/// after a first complete one: where a crash or a shutdown of a worker hurts most.
struct MidBatch {
    system: System,
    bus: Bus,
    /// Every heartbeat since before the job was created.
    heartbeats: HeartbeatLog,
    /// The worker running the batch.
    owner: String,
    /// The other worker.
    other: String,
    /// The id of the batch in progress, with 1 to 40 of its 80 articles stored and no marker
    /// on the stream; the owner is frozen (SIGSTOP) so it stays so until the test acts.
    half: String,
}

/// Starts a [`MidBatch`] for job `id` (four pages of 20 a run, every second), every worker
/// started with `worker_args` too.
async fn mid_batch(id: &str, worker_args: &[&str]) -> MidBatch {
    let mut system = System::builder()
        .workers(2)
        .mock_args(["--latency-ms", "300"])
        .worker_args(worker_args.iter().copied())
        .start()
        .await;
    let api = system.api();
    let bus = system.bus().await;
    let heartbeats = HeartbeatLog::start(&bus).await;
    api.create_job_ok(&json!({
        "id":id,"params":{"q":"bitcoin"},"interval_secs":1,"max_pages":4,"page_size":20
    }))
    .await;
    api.wait_for_latest(id, None, BATCH_WITHIN).await;
    let owner = owner(&api, id).await.expect("the job has an owner");
    let other = system
        .worker_ids()
        .into_iter()
        .find(|w| *w != owner)
        .expect("a second worker");
    let half = loop {
        let half = wait_for_half_batch(&api, id, 40, BATCH_WITHIN).await;
        // data-streams trails the worker by a flush, so the batch it shows half stored may be
        // finished already: frozen, the owner publishes nothing more, and the stream says.
        system.worker(&owner).signal("STOP");
        let markers = bus
            .stream_messages(&format!("news.batches.{id}.{half}"))
            .await;
        if markers.is_empty() {
            break half;
        }
        system.worker(&owner).signal("CONT");
    };
    MidBatch {
        system,
        bus,
        heartbeats,
        owner,
        other,
        half,
    }
}

/// The jobs whose batches the ingest tests publish themselves.
const INGEST_JOBS: [&str; 3] = ["ingest-a", "ingest-b", "ingest-c"];

/// A system with no worker and the ingest jobs created (stored, running, unowned), so a test
/// publishes their batches itself.
async fn system_for_own_batches() -> System {
    let system = System::builder().workers(0).start().await;
    let api = system.api();
    // Every batch kept: a publisher that runs until stopped may publish more than the
    // default 20 per job, and the audits read retention's deletions as losses.
    for job in INGEST_JOBS {
        api.create_job_ok(
            &json!({"id":job,"params":{"q":job},"interval_secs":3600,"keep_batches":1000}),
        )
        .await;
    }
    system
}
