//! The control shell over a real store, without a broker: fence dedupe and owned tasks,
//! heartbeats read from the index (digest or list), the reconciler's plan, placement and
//! rebalancing.

use newsflow_core::digest::JobSetDigest;
use newsflow_core::ownership::Now;
use newsflow_core::JobSpec;
use newsflow_nats::wire::Heartbeat;

use super::*;
use crate::state::SharedSettings;
use crate::store::{JobRecord, Store};

fn settings(rebalance: bool) -> ControlSettings {
    ControlSettings {
        worker_timeout: Duration::from_secs(10),
        reconcile_every: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        rebalance,
    }
}

fn control() -> Control {
    Control::new(settings(false))
}

fn key() -> (WorkerId, JobId) {
    (worker("w1"), job("j1"))
}

fn worker(id: &str) -> WorkerId {
    WorkerId::parse(id).expect("a valid worker id")
}

fn job(id: &str) -> JobId {
    JobId::parse(id).expect("a valid job id")
}

/// A store in a temporary directory, with no broker and no ingest task.
fn shared() -> (Arc<Shared>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path()).expect("the store opens");
    let (ingest, _) = tokio::sync::mpsc::channel(1);
    let shared = Shared::new(
        store,
        ingest,
        SharedSettings {
            api_token: None,
            max_body_bytes: 1024,
            max_in_flight: 1,
            default_keep_batches: newsflow_core::KeepBatches::DEFAULT,
            max_sse_clients: 1,
        },
    );
    (Arc::new(shared), dir)
}

fn create(shared: &Shared, id: &str, owner: Option<&str>) {
    let spec = JobSpec::from_create_request(&serde_json::json!({
        "id": id, "endpoint": "everything", "params": {"q": "x"}, "interval_secs": 3600
    }))
    .expect("a valid spec");
    let record = JobRecord {
        spec,
        state: JobState::Running,
        worker: owner.map(|w| WorkerRef {
            id: worker(w),
            acked_at: newsflow_core::now_utc(),
        }),
        created_at: newsflow_core::now_utc(),
        updated_at: newsflow_core::now_utc(),
    };
    assert!(shared.store.create_job(&record).expect("stores"));
}

/// The heartbeat of `id` running `jobs`, with the list only when `listed`.
fn heartbeat(id: &str, jobs: &[&str], listed: bool) -> Heartbeat {
    let mut jobs: Vec<JobId> = jobs.iter().map(|j| job(j)).collect();
    jobs.sort();
    let digest = JobSetDigest::of(&jobs);
    let mut heartbeat = Heartbeat::new(worker(id), || jobs, digest, newsflow_core::now_utc());
    if !listed {
        heartbeat.jobs = None;
    }
    heartbeat
}

fn now(control: &Control) -> Now {
    Now {
        tick: control.tick(),
        wall: newsflow_core::now_utc(),
    }
}

fn owner_of(shared: &Shared, id: &str) -> Option<WorkerId> {
    shared
        .store
        .job(&job(id))
        .expect("reads")
        .and_then(|r| r.worker)
        .map(|w| w.id)
}

#[test]
fn a_fence_in_flight_is_not_sent_again_until_it_is_done() {
    let control = control();
    let first = Claim::take(&control.fencing, key());
    assert!(first.is_some());
    assert!(Claim::take(&control.fencing, key()).is_none());
    drop(first);
    assert!(Claim::take(&control.fencing, key()).is_some());
}

#[test]
fn a_held_start_keeps_the_reconcilers_start_off_the_job_until_it_is_used_or_dropped() {
    let control = control();
    let hold = control.hold_start(&job("held"));
    assert!(hold.is_some());
    assert!(control.hold_start(&job("held")).is_none(), "a second hold");
    assert!(
        Claim::take(&control.starting, job("held")).is_none(),
        "the reconciler's start or move"
    );
    assert!(control.hold_start(&job("other")).is_some());
    drop(hold);
    assert!(Claim::take(&control.starting, job("held")).is_some());
}

#[tokio::test]
async fn a_panicking_control_task_is_waited_for_and_releases_its_claim() {
    let control = control();
    let claim = Claim::take(&control.fencing, key());
    assert!(claim.is_some());
    control.spawn("test", key().1, async move {
        let _claim = claim;
        panic!("a bug in a control task");
    });
    control.tasks().close();
    control.tasks().wait().await;
    assert!(Claim::take(&control.fencing, key()).is_some());
}

#[tokio::test]
async fn losing_control_ends_the_tasks_in_flight_and_not_the_next_terms() {
    let control = control();
    let claim = Claim::take(&control.fencing, key());
    control.spawn("stuck", key().1, async move {
        let _claim = claim;
        std::future::pending::<()>().await;
    });
    control.end_term();
    let (sent, received) = tokio::sync::oneshot::channel();
    control.spawn("next term", key().1, async move {
        let _ = sent.send(());
    });
    control.tasks().close();
    tokio::time::timeout(Duration::from_secs(5), control.tasks().wait())
        .await
        .expect("the stuck task ended with its term");
    assert!(received.await.is_ok(), "the next term's task ran");
    assert!(
        Claim::take(&control.fencing, key()).is_some(),
        "the ended task released its claim"
    );
}

#[tokio::test]
async fn a_digest_equal_to_the_record_runs_exactly_the_recorded_jobs() {
    let (shared, _dir) = shared();
    let control = Arc::new(control());
    for id in ["a", "b", "c"] {
        create(&shared, id, Some("w1"));
    }
    control
        .on_heartbeat(&shared, heartbeat("w1", &["a", "b", "c"], false))
        .expect("a valid heartbeat");
    let plan = control.plan(&shared, now(&control), control.tick());
    assert_eq!(plan, Plan::default());
    let view = control
        .workers()
        .get(&worker("w1"))
        .cloned()
        .expect("heard");
    assert!(view.missing.is_empty());
    assert_eq!(view.count, 3);
}

#[tokio::test]
async fn a_listed_job_with_no_owner_is_adopted_and_a_recorded_job_left_out_is_missing() {
    let (shared, _dir) = shared();
    let control = Arc::new(control());
    create(&shared, "a", Some("w1"));
    create(&shared, "b", Some("w1"));
    create(&shared, "orphan", None);
    control
        .on_heartbeat(&shared, heartbeat("w1", &["a", "orphan"], true))
        .expect("a valid heartbeat");
    assert_eq!(owner_of(&shared, "orphan"), Some(worker("w1")));
    let view = control
        .workers()
        .get(&worker("w1"))
        .cloned()
        .expect("heard");
    assert_eq!(view.missing, HashSet::from([job("b")]));
    assert_eq!(
        shared.store.job_index().owned_digest(&worker("w1")),
        JobSetDigest::of([&job("a"), &job("b"), &job("orphan")])
    );
}

#[tokio::test]
async fn a_heartbeat_whose_list_contradicts_its_digest_is_invalid() {
    let (shared, _dir) = shared();
    let control = Arc::new(control());
    let mut lying = heartbeat("w1", &["a", "b"], true);
    lying.jobs = Some(vec![job("a")]);
    assert!(control.on_heartbeat(&shared, lying).is_err());
    let mut empty = heartbeat("w1", &[], false);
    empty.digest = None;
    empty.count = None;
    assert!(control.on_heartbeat(&shared, empty).is_err());
    assert!(control.workers().is_empty());
}

#[tokio::test]
async fn a_job_owned_by_a_worker_never_heard_is_left_until_settled_and_then_started() {
    let (shared, _dir) = shared();
    let control = Arc::new(control());
    create(&shared, "a", Some("gone"));
    create(&shared, "new", None);
    control
        .on_heartbeat(&shared, heartbeat("w1", &[], false))
        .expect("a valid heartbeat");
    let connected = control.tick();
    let early = control.plan(&shared, now(&control), connected);
    assert_eq!(early.starts, [(job("new"), None)]);
    let settled = Now {
        tick: Tick::new(control.origin.elapsed() + Duration::from_secs(11)),
        wall: newsflow_core::now_utc(),
    };
    let mut late = control.plan(&shared, settled, connected).starts;
    late.sort();
    assert_eq!(late, [(job("a"), Some(worker("gone"))), (job("new"), None)]);
}

#[tokio::test]
async fn a_recorded_job_a_live_worker_does_not_run_is_started_again_after_the_grace() {
    let (shared, _dir) = shared();
    let control = Arc::new(control());
    for id in ["runs", "forgot"] {
        create(&shared, id, Some("w1"));
        let long_ago = newsflow_core::now_utc() - time::Duration::hours(1);
        shared
            .store
            .update_job(&job(id), |r| {
                if let Some(owner) = &mut r.worker {
                    owner.acked_at = long_ago;
                }
            })
            .expect("updates");
    }
    control
        .on_heartbeat(&shared, heartbeat("w1", &["runs"], true))
        .expect("a valid heartbeat");
    let plan = control.plan(&shared, now(&control), control.tick());
    assert_eq!(plan.starts, [(job("forgot"), Some(worker("w1")))]);
}

#[tokio::test]
async fn starts_go_to_the_least_loaded_live_worker_counting_those_in_flight() {
    let (shared, _dir) = shared();
    let control = Arc::new(control());
    for i in 0..4 {
        create(&shared, &format!("a{i}"), Some("w1"));
    }
    create(&shared, "b0", Some("w2"));
    let w1: Vec<String> = (0..4).map(|i| format!("a{i}")).collect();
    let w1: Vec<&str> = w1.iter().map(String::as_str).collect();
    control
        .on_heartbeat(&shared, heartbeat("w1", &w1, false))
        .expect("valid");
    control
        .on_heartbeat(&shared, heartbeat("w2", &["b0"], false))
        .expect("valid");
    control
        .on_heartbeat(&shared, heartbeat("w3", &[], false))
        .expect("valid");
    let mut held = Vec::new();
    let mut chosen = Vec::new();
    for _ in 0..6 {
        let pending = control
            .place(&shared.store.job_index())
            .expect("a live worker");
        chosen.push(pending.worker.to_string());
        held.push(pending);
    }
    // w3 (0) twice to reach w2 (1), then alternating w2/w3 up to 4 each, below w1's 4.
    assert_eq!(chosen, ["w3", "w2", "w3", "w2", "w3", "w2"]);
    drop(held);
    assert!(lock(&control.pending).is_empty());
}

#[tokio::test]
async fn rebalancing_plans_a_few_moves_from_the_busiest_to_a_worker_that_joined() {
    let (shared, _dir) = shared();
    let control = Arc::new(Control::new(settings(true)));
    let mut names = Vec::new();
    for w in ["w1", "w2", "w3"] {
        let jobs: Vec<String> = (0..10).map(|i| format!("{w}-j{i}")).collect();
        for j in &jobs {
            create(&shared, j, Some(w));
        }
        names.push((w, jobs));
    }
    for (w, jobs) in &names {
        let jobs: Vec<&str> = jobs.iter().map(String::as_str).collect();
        control
            .on_heartbeat(&shared, heartbeat(w, &jobs, false))
            .expect("valid");
    }
    control
        .on_heartbeat(&shared, heartbeat("w4", &[], false))
        .expect("valid");
    let plan = control.plan(&shared, now(&control), control.tick());
    assert!(plan.starts.is_empty());
    assert_eq!(plan.moves.len(), reconcile::MOVES_PER_PASS);
    let jobs: HashSet<&JobId> = plan.moves.iter().map(|(job, _, _)| job).collect();
    assert_eq!(jobs.len(), plan.moves.len(), "each job moves once");
    for (job, from, to) in &plan.moves {
        assert_eq!(to, &worker("w4"));
        assert!(job.as_str().starts_with(from.as_str()));
    }
}

#[tokio::test]
async fn without_rebalance_running_jobs_stay_where_they_are() {
    let (shared, _dir) = shared();
    let control = Arc::new(control());
    for i in 0..6 {
        create(&shared, &format!("j{i}"), Some("w1"));
    }
    let jobs: Vec<String> = (0..6).map(|i| format!("j{i}")).collect();
    let jobs: Vec<&str> = jobs.iter().map(String::as_str).collect();
    control
        .on_heartbeat(&shared, heartbeat("w1", &jobs, false))
        .expect("valid");
    control
        .on_heartbeat(&shared, heartbeat("w2", &[], false))
        .expect("valid");
    assert_eq!(
        control.plan(&shared, now(&control), control.tick()),
        Plan::default()
    );
}

/// Many heartbeats and placements from many threads at once leave every claim and count
/// released and the view of each worker whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_heartbeats_and_placements_keep_the_books_straight() {
    let (shared, _dir) = shared();
    let control = Arc::new(control());
    for w in 0..8 {
        for j in 0..20 {
            create(&shared, &format!("w{w}-{j}"), Some(&format!("w{w}")));
        }
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (control, shared) = (control.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("w{w}");
            let jobs: Vec<String> = (0..20).map(|j| format!("w{w}-{j}")).collect();
            let jobs: Vec<&str> = jobs.iter().map(String::as_str).collect();
            for round in 0..50 {
                control
                    .on_heartbeat(&shared, heartbeat(&name, &jobs, round % 2 == 0))
                    .expect("valid");
                let pending = control.place(&shared.store.job_index());
                assert!(pending.is_some());
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("no task panicked");
    }
    assert!(lock(&control.pending).is_empty());
    assert_eq!(control.alive_count(), 8);
    for view in control.workers().values() {
        assert!(view.missing.is_empty());
        assert_eq!(view.count, 20);
    }
}
