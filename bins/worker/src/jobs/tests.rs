use std::sync::Mutex;

use newsflow_core::newsapi::{FetchError, NewsPage, PageOutcome};
use newsflow_nats::wire::WorkerId;
use serde_json::json;
use tokio::sync::Notify;

use super::*;
use newsflow_core::digest::JobSetDigest;

mod scheduler;

use crate::run::PageRequest;
use crate::testing::Recorder;
use scheduler::{driven, Probe};

/// Answers the n-th fetch with `answer(n)` and notes when it was asked and for which `q`.
struct ClockedSource {
    answer: fn(usize) -> Result<PageOutcome, FetchError>,
    calls: Mutex<Vec<(Instant, String)>>,
    called: Notify,
}

impl ClockedSource {
    fn new(answer: fn(usize) -> Result<PageOutcome, FetchError>) -> Self {
        Self {
            answer,
            calls: Mutex::new(Vec::new()),
            called: Notify::new(),
        }
    }

    fn calls(&self) -> Vec<(Instant, String)> {
        self.calls.lock().expect("not poisoned").clone()
    }

    /// Waits (in paused time: lets the clock jump) until `n` fetches happened.
    async fn wait_for_calls(&self, n: usize) {
        while self.calls.lock().expect("not poisoned").len() < n {
            self.called.notified().await;
        }
    }

    /// Seconds between consecutive fetches.
    fn gaps_secs(&self) -> Vec<u64> {
        let calls = self.calls();
        calls
            .windows(2)
            .map(|pair| (pair[1].0 - pair[0].0).as_secs())
            .collect()
    }
}

impl PageSource for ClockedSource {
    async fn fetch(&self, request: PageRequest<'_>) -> Result<PageOutcome, FetchError> {
        let query = request.spec.query();
        let n = {
            let mut calls = self.calls.lock().expect("not poisoned");
            let q = query.params().get("q").cloned().unwrap_or_default();
            calls.push((Instant::now(), q));
            calls.len() - 1
        };
        self.called.notify_one();
        (self.answer)(n)
    }
}

fn empty_page() -> Result<PageOutcome, FetchError> {
    Ok(PageOutcome::Page(NewsPage::default()))
}

fn unauthorized() -> Result<PageOutcome, FetchError> {
    Err(FetchError::Unauthorized {
        code: "apiKeyInvalid".to_owned(),
        message: "bad key".to_owned(),
    })
}

fn spec(q: &str, interval_secs: u64) -> JobSpec {
    spec_of("j1", q, interval_secs)
}

fn spec_of(id: &str, q: &str, interval_secs: u64) -> JobSpec {
    JobSpec::from_create_request(&json!({
        "id": id, "params": {"q": q}, "interval_secs": interval_secs
    }))
    .expect("valid spec")
}

struct Running {
    runner: Arc<Runner<ClockedSource, Recorder>>,
    plans: Arc<PlanBoard>,
    registry: Arc<Registry>,
}

fn start(answer: fn(usize) -> Result<PageOutcome, FetchError>, spec: JobSpec) -> Running {
    let runner = Arc::new(Runner {
        worker_id: WorkerId::parse("w1").expect("valid"),
        source: ClockedSource::new(answer),
        publisher: Recorder::default(),
    });
    let plans = Arc::new(PlanBoard::new(WorkerId::parse("w1").expect("valid")));
    let registry = Registry::new(runs_of(Arc::clone(&runner)), Arc::clone(&plans), 8);
    tokio::spawn(Arc::clone(&registry).drive(CancellationToken::new()));
    registry.start(spec, None);
    Running {
        runner,
        plans,
        registry,
    }
}

fn j1() -> JobId {
    JobId::parse("j1").expect("valid")
}

#[tokio::test(start_paused = true)]
async fn a_job_runs_at_once_then_one_interval_after_each_start() {
    let job = start(|_| empty_page(), spec("a", 60));

    job.runner.source.wait_for_calls(4).await;

    assert_eq!(job.runner.source.gaps_secs(), [60, 60, 60]);
    assert!(job.runner.publisher.markers().len() >= 3);
}

#[tokio::test(start_paused = true)]
async fn failures_retrying_cannot_fix_push_the_next_run_further_out() {
    let job = start(|_| unauthorized(), spec("a", 60));

    job.runner.source.wait_for_calls(4).await;

    assert_eq!(job.runner.source.gaps_secs(), [120, 240, 480]);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_failure_backoff() {
    let job = start(
        |n| if n < 2 { unauthorized() } else { empty_page() },
        spec("a", 60),
    );

    job.runner.source.wait_for_calls(5).await;

    assert_eq!(job.runner.source.gaps_secs(), [120, 240, 60, 60]);
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_keep_the_normal_interval() {
    let job = start(
        |_| Err(FetchError::Timeout(Duration::from_secs(15))),
        spec("a", 60),
    );

    job.runner.source.wait_for_calls(3).await;

    assert_eq!(job.runner.source.gaps_secs(), [60, 60]);
}

#[tokio::test(start_paused = true)]
async fn a_new_spec_is_used_from_the_next_run_on_its_own_interval() {
    let job = start(|_| empty_page(), spec("old", 300));
    job.runner.source.wait_for_calls(1).await;

    job.registry.start(spec("new", 10), None);
    job.runner.source.wait_for_calls(3).await;

    let queries: Vec<String> = job.runner.source.calls().into_iter().map(|c| c.1).collect();
    assert_eq!(queries, ["old", "new", "new"]);
    assert_eq!(job.runner.source.gaps_secs(), [10, 10]);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_job_runs_no_more() {
    let job = start(|_| empty_page(), spec("a", 60));
    job.runner.source.wait_for_calls(1).await;

    assert!(job.registry.stop(&j1(), Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_secs(600)).await;

    assert_eq!(job.runner.source.calls().len(), 1);
}

fn idle_registry() -> Arc<Registry> {
    let plans = Arc::new(PlanBoard::new(WorkerId::parse("w1").expect("valid")));
    Registry::new(Probe::new(Duration::MAX).runs(), plans, 8)
}

#[tokio::test]
async fn starting_a_job_twice_keeps_one_entry_and_passes_on_a_new_spec() {
    let registry = idle_registry();

    assert_eq!(registry.start(spec("a", 60), None), Started::New);
    assert_eq!(registry.start(spec("a", 60), None), Started::Unchanged);
    assert_eq!(registry.start(spec("b", 60), None), Started::Updated);

    assert_eq!(registry.job_ids(), [j1()]);
}

#[tokio::test]
async fn jobs_are_listed_sorted_and_stopping_is_idempotent() {
    let registry = idle_registry();
    for id in ["zeta", "alpha", "mid"] {
        registry.start(spec_of(id, "x", 60), None);
    }
    let ids: Vec<String> = registry.job_ids().iter().map(|j| j.to_string()).collect();
    assert_eq!(ids, ["alpha", "mid", "zeta"]);

    let mid = JobId::parse("mid").expect("valid");
    assert!(registry.stop(&mid, Duration::from_secs(5)).await);
    assert!(!registry.stop(&mid, Duration::from_secs(5)).await);
    assert_eq!(registry.count(), 2);

    assert_eq!(registry.stop_all(Duration::from_secs(5)).await, 2);
    assert!(registry.job_ids().is_empty());
    assert_eq!(registry.job_set(10).0, JobSetDigest::default());
}

#[tokio::test(start_paused = true)]
async fn a_run_that_ignores_cancellation_is_aborted_after_the_grace() {
    let probe = Probe::deaf();
    let registry = driven(&probe, 8);
    registry.start(spec("a", 60), None);
    probe.wait_for_starts(1).await;

    let stopped = registry.stop(&j1(), Duration::from_secs(3)).await;

    assert!(stopped);
    assert!(registry.job_ids().is_empty());
    assert_eq!(probe.in_flight(), 0, "the aborted run is gone");
}

fn budget_exhausted() -> Result<PageOutcome, FetchError> {
    Err(FetchError::BudgetExhausted {
        message: "the request budget is spent".to_owned(),
        returns_at: newsflow_core::now_utc(),
    })
}

fn latest_plan(board: &PlanBoard) -> newsflow_nats::wire::JobPlan {
    match board.take().remove(&JobId::parse("j1").expect("valid")) {
        Some(crate::plans::Report::Plan(plan)) => plan,
        other => panic!("expected a plan, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_refused_by_the_budget_publishes_nothing_and_shows_in_the_plan() {
    let job = start(|_| budget_exhausted(), spec("a", 60));

    job.runner.source.wait_for_calls(2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert!(job.runner.publisher.markers().is_empty());
    assert!(job.runner.publisher.articles().is_empty());
    assert_eq!(job.runner.source.gaps_secs(), [60]);
    let plan = latest_plan(&job.plans);
    assert_eq!(plan.consecutive_failures, 2);
    let skipped = plan.skipped.expect("the skipped run");
    assert_eq!(skipped.error.code, "budget_exhausted");
    let next = plan.next_run_at.expect("a next run");
    let until_next = next - newsflow_core::now_utc();
    assert!(
        until_next > time::Duration::seconds(50) && until_next <= time::Duration::seconds(60),
        "next run in {until_next}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_complete_run_resets_the_failures_shown_but_keeps_the_last_skip() {
    let job = start(
        |n| {
            if n == 0 {
                budget_exhausted()
            } else {
                empty_page()
            }
        },
        spec("a", 60),
    );

    job.runner.source.wait_for_calls(2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let plan = latest_plan(&job.plans);
    assert_eq!(plan.consecutive_failures, 0);
    assert!(plan.skipped.is_some());
    assert_eq!(job.runner.publisher.markers().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_job_withdraws_its_plan() {
    let job = start(|_| empty_page(), spec("a", 60));
    job.runner.source.wait_for_calls(1).await;

    assert!(job.registry.stop(&j1(), Duration::from_secs(5)).await);

    let reports = job.plans.take();
    assert_eq!(
        reports.get(&JobId::parse("j1").expect("valid")),
        Some(&crate::plans::Report::Gone)
    );
}
