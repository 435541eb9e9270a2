//! The scheduler on tokio's paused clock: due order, `not_before`, spec updates, stops during
//! a run, one run per job at a time, and many callers at once.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use newsflow_core::BatchId;

use super::*;

/// What a fake run does when it is cancelled.
#[derive(Debug, Clone, Copy)]
pub(super) enum OnCancel {
    /// Ends at once.
    Stop,
    /// Ends this much later.
    Linger(Duration),
    /// Never ends by itself.
    Ignore,
}

/// Fake runs that take `hold`, noting when each starts and whether two of one job overlap.
pub(super) struct Probe {
    hold: Duration,
    on_cancel: OnCancel,
    starts: Mutex<Vec<(Instant, JobId, String)>>,
    running: Mutex<HashMap<JobId, usize>>,
    overlaps: AtomicUsize,
    changed: Notify,
}

/// Marks a fake run as ended however it ends (aborts included).
struct InFlight(Arc<Probe>, JobId);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().expect("not poisoned");
        if let Some(n) = running.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.1);
            }
        }
        drop(running);
        self.0.changed.notify_waiters();
    }
}

impl Probe {
    pub(super) fn new(hold: Duration) -> Arc<Self> {
        Self::with(hold, OnCancel::Stop)
    }

    pub(super) fn deaf() -> Arc<Self> {
        Self::with(Duration::from_secs(86_400), OnCancel::Ignore)
    }

    fn with(hold: Duration, on_cancel: OnCancel) -> Arc<Self> {
        Arc::new(Self {
            hold,
            on_cancel,
            starts: Mutex::new(Vec::new()),
            running: Mutex::new(HashMap::new()),
            overlaps: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    pub(super) fn runs(self: &Arc<Self>) -> RunFn {
        let probe = Arc::clone(self);
        Arc::new(
            move |spec: JobSpec,
                  _late,
                  cancel: CancellationToken|
                  -> BoxFuture<'static, RunReport> {
                let probe = Arc::clone(&probe);
                Box::pin(async move {
                    let _in_flight = probe.begin(&spec);
                    let end = tokio::select! {
                        () = cancel.cancelled() => RunEnd::Cancelled,
                        () = tokio::time::sleep(probe.hold) => RunEnd::Complete,
                    };
                    if matches!(end, RunEnd::Cancelled) {
                        match probe.on_cancel {
                            OnCancel::Stop => {}
                            OnCancel::Linger(linger) => tokio::time::sleep(linger).await,
                            OnCancel::Ignore => std::future::pending::<()>().await,
                        }
                    }
                    RunReport {
                        batch_id: BatchId::generate(),
                        end,
                        articles: 0,
                        pages: 0,
                    }
                })
            },
        )
    }

    fn begin(self: &Arc<Self>, spec: &JobSpec) -> InFlight {
        let q = spec.query().params().get("q").cloned().unwrap_or_default();
        let job = spec.id().clone();
        {
            let mut running = self.running.lock().expect("not poisoned");
            let n = running.entry(job.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                self.overlaps.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.starts
            .lock()
            .expect("not poisoned")
            .push((Instant::now(), job.clone(), q));
        self.changed.notify_waiters();
        InFlight(Arc::clone(self), job)
    }

    pub(super) async fn wait_for_starts(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            if self.starts.lock().expect("not poisoned").len() >= n {
                return;
            }
            changed.await;
        }
    }

    pub(super) fn in_flight(&self) -> usize {
        self.running.lock().expect("not poisoned").values().sum()
    }

    fn starts(&self) -> Vec<(Instant, JobId, String)> {
        self.starts.lock().expect("not poisoned").clone()
    }

    fn overlaps(&self) -> usize {
        self.overlaps.load(Ordering::Relaxed)
    }
}

/// A registry of `probe`'s runs, at most `max_runs` at once, with its scheduler running.
pub(super) fn driven(probe: &Arc<Probe>, max_runs: usize) -> Arc<Registry> {
    let plans = Arc::new(PlanBoard::new(WorkerId::parse("w1").expect("valid")));
    let registry = Registry::new(probe.runs(), plans, max_runs);
    tokio::spawn(Arc::clone(&registry).drive(CancellationToken::new()));
    registry
}

fn whole_secs(from: Instant, to: Instant) -> u64 {
    (to - from).as_secs_f64().round() as u64
}

fn id(text: &str) -> JobId {
    JobId::parse(text).expect("valid")
}

#[tokio::test(start_paused = true)]
async fn jobs_run_in_due_order_and_not_before_delays_the_first_run() {
    let probe = Probe::new(Duration::ZERO);
    let registry = driven(&probe, 8);
    let (t0, now) = (Instant::now(), newsflow_core::now_utc());

    for (job, secs) in [("late", 30), ("early", 10), ("past", -5), ("middle", 20)] {
        let not_before = now + time::Duration::seconds(secs);
        registry.start(spec_of(job, "x", 3600), Some(not_before));
    }
    probe.wait_for_starts(4).await;

    let starts: Vec<(String, u64)> = probe
        .starts()
        .into_iter()
        .map(|(at, job, _)| (job.to_string(), whole_secs(t0, at)))
        .collect();
    let expected = [("past", 0), ("early", 10), ("middle", 20), ("late", 30)];
    assert_eq!(starts, expected.map(|(j, s)| (j.to_owned(), s)));
}

#[tokio::test(start_paused = true)]
async fn not_before_does_not_move_a_job_already_running() {
    let probe = Probe::new(Duration::ZERO);
    let registry = driven(&probe, 8);
    let t0 = Instant::now();
    registry.start(spec("a", 60), None);
    probe.wait_for_starts(1).await;

    let later = newsflow_core::now_utc() + time::Duration::hours(5);
    assert_eq!(
        registry.start(spec("a", 60), Some(later)),
        Started::Unchanged
    );
    probe.wait_for_starts(2).await;

    assert_eq!(whole_secs(t0, probe.starts()[1].0), 60);
}

#[tokio::test(start_paused = true)]
async fn a_spec_changed_during_a_run_is_used_from_the_next_run() {
    let probe = Probe::new(Duration::from_secs(5));
    let registry = driven(&probe, 8);
    registry.start(spec("old", 300), None);
    probe.wait_for_starts(1).await;

    assert_eq!(registry.start(spec("new", 10), None), Started::Updated);
    probe.wait_for_starts(3).await;

    let starts = probe.starts();
    let queries: Vec<&str> = starts.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(queries, ["old", "new", "new"]);
    assert_eq!(whole_secs(starts[0].0, starts[1].0), 10);
    assert_eq!(whole_secs(starts[1].0, starts[2].0), 10);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_run_returns_once_the_run_ended() {
    let probe = Probe::with(
        Duration::from_secs(3600),
        OnCancel::Linger(Duration::from_secs(2)),
    );
    let registry = driven(&probe, 8);
    registry.start(spec("a", 60), None);
    probe.wait_for_starts(1).await;

    assert!(registry.stop(&j1(), Duration::from_secs(10)).await);

    assert_eq!(
        probe.in_flight(),
        0,
        "the run ended before the stop returned"
    );
    tokio::time::sleep(Duration::from_secs(7200)).await;
    assert_eq!(probe.starts().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_overrunning_job_never_runs_twice_at_once() {
    let probe = Probe::new(Duration::from_secs(90));
    let registry = driven(&probe, 8);
    registry.start(spec("a", 60), None);

    probe.wait_for_starts(4).await;

    let starts = probe.starts();
    let gaps: Vec<u64> = starts
        .windows(2)
        .map(|p| whole_secs(p[0].0, p[1].0))
        .collect();
    assert_eq!(
        gaps,
        [90, 90, 90],
        "the next run follows the overrun at once"
    );
    assert_eq!(probe.overlaps(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_job_started_again_while_its_stopped_run_ends_waits_for_that_run() {
    let probe = Probe::with(
        Duration::from_secs(3600),
        OnCancel::Linger(Duration::from_secs(5)),
    );
    let registry = driven(&probe, 8);
    registry.start(spec("a", 60), None);
    probe.wait_for_starts(1).await;

    let stopping = tokio::spawn({
        let registry = Arc::clone(&registry);
        async move { registry.stop(&j1(), Duration::from_secs(30)).await }
    });
    while registry.count() > 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(registry.start(spec("b", 60), None), Started::New);
    probe.wait_for_starts(2).await;

    assert!(stopping.await.expect("the stop ends"));
    assert_eq!(probe.overlaps(), 0);
    assert_eq!(registry.job_ids(), [j1()]);
    let starts = probe.starts();
    assert_eq!(
        whole_secs(starts[0].0, starts[1].0),
        5,
        "after the old run's linger"
    );
}

#[tokio::test(start_paused = true)]
async fn no_more_runs_than_the_limit_at_once() {
    let probe = Probe::new(Duration::from_secs(10));
    let registry = driven(&probe, 3);
    for n in 0..10 {
        registry.start(spec_of(&format!("j{n}"), "x", 3600), None);
    }

    probe.wait_for_starts(3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.in_flight(), 3);
    probe.wait_for_starts(10).await;

    let starts = probe.starts();
    assert_eq!(
        whole_secs(starts[0].0, starts[9].0),
        30,
        "four rounds of ten seconds"
    );
}

#[tokio::test(start_paused = true)]
async fn pages_go_through_every_id_after_the_cursor() {
    let registry = idle_registry();
    for n in 0..25 {
        registry.start(spec_of(&format!("j{n:02}"), "x", 60), None);
    }

    let first = registry.page(None, 10);
    let second = registry.page(first.next.as_ref(), 10);
    let third = registry.page(second.next.as_ref(), 10);

    assert_eq!(first.jobs.len(), 10);
    assert_eq!(first.next, Some(id("j09")));
    assert_eq!(second.jobs.first(), Some(&id("j10")));
    assert_eq!(third.jobs.len(), 5);
    assert_eq!(third.next, None);
    let exact = registry.page(Some(&id("j14")), 10);
    assert_eq!(exact.jobs.last(), Some(&id("j24")));
    assert_eq!(
        exact.next, None,
        "a page that ends at the last id is the last"
    );
    assert!(registry.page(Some(&id("zz")), 10).jobs.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_view_lists_jobs_only_up_to_the_cap() {
    let registry = idle_registry();
    for n in 0..3 {
        registry.start(spec_of(&format!("j{n}"), "x", 60), None);
    }

    let (digest, listed) = registry.job_set(2);
    let (_, all) = registry.job_set(3);

    assert_eq!(listed, None);
    assert_eq!(digest.count(), 3);
    let all = all.expect("three fit a cap of three");
    assert_eq!(digest, JobSetDigest::of(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_callers_starting_and_stopping_at_once_leave_a_consistent_registry() {
    let probe = Probe::new(Duration::from_millis(5));
    let registry = driven(&probe, 4);

    let callers: Vec<_> = (0..32)
        .map(|caller| {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                for i in 0..60 {
                    let job = format!("c{}", (caller * 7 + i) % 40);
                    if (caller + i) % 3 == 0 {
                        registry.stop(&id(&job), Duration::from_secs(5)).await;
                    } else {
                        let q = format!("q{}", caller % 2);
                        registry.start(spec_of(&job, &q, 1), None);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("a caller ends cleanly");
    }

    let ids = registry.job_ids();
    let (digest, listed) = registry.job_set(1000);
    assert_eq!(digest, JobSetDigest::of(&ids));
    assert_eq!(listed.as_ref(), Some(&ids));
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = registry.page(after.as_ref(), 7);
        paged.extend(page.jobs);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, ids);
    assert_eq!(probe.overlaps(), 0, "no job ran twice at once");
    assert_eq!(registry.stop_all(Duration::from_secs(5)).await, ids.len());
    assert_eq!(registry.job_set(1000).0, JobSetDigest::default());
}
