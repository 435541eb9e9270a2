//! Who runs a job: the rules data-streams applies to worker heartbeats and to its periodic
//! reconciliation, as pure decisions with the time passed in, so every case (a worker that goes
//! silent, one that comes back, two that claim the same job, a restart with no heartbeat yet) is
//! tested without a clock, a broker or a store.
//!
//! Worker ids are a type parameter: the id type lives with the wire format, and the rules only
//! compare ids.

use std::collections::HashSet;
use std::time::Duration;

use time::OffsetDateTime;

use crate::{JobId, JobState};

/// A point on a monotonic clock, as the time elapsed since an origin the caller picks
/// (data-streams picks its own start). Monotonic because "heard from recently" must not jump
/// when the wall clock is stepped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Tick(Duration);

impl Tick {
    /// The point `since_origin` after the origin.
    pub fn new(since_origin: Duration) -> Self {
        Self(since_origin)
    }

    /// How long after `earlier` this is; zero when `earlier` is later.
    pub fn since(self, earlier: Tick) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// The time a reconciliation runs at, on both clocks ownership uses: the monotonic one for
/// worker liveness, the wall clock for a stored `acked_at` (which outlives a restart, so it
/// cannot be monotonic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// For liveness and settling.
    pub tick: Tick,
    /// For the age of a stored acknowledgement.
    pub wall: OffsetDateTime,
}

/// What data-streams knows of one worker from its heartbeats and command acknowledgements.
///
/// Which jobs it runs is kept as the difference from what is recorded for it: a worker whose
/// heartbeat digest matches the jobs recorded as its own runs exactly those, so a worker with
/// 100,000 jobs costs a few bytes here, and only the recorded jobs its latest list lacked are
/// held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    /// When it was last heard from.
    pub last_seen: Tick,
    /// Jobs recorded as its own that it does not run, by its latest list.
    pub missing: HashSet<JobId>,
    /// How many jobs it said it runs.
    pub count: u64,
}

impl WorkerView {
    /// A worker first heard from at `at`, known to run nothing yet.
    pub fn new(at: Tick) -> Self {
        Self {
            last_seen: at,
            missing: HashSet::new(),
            count: 0,
        }
    }

    /// A heartbeat at `at` of a worker running `count` jobs: of the jobs recorded as its own,
    /// it does not run `missing` (nothing, when its digest matched the record).
    pub fn heartbeat(&mut self, at: Tick, count: u64, missing: impl IntoIterator<Item = JobId>) {
        self.last_seen = at;
        self.count = count;
        self.missing.clear();
        self.missing.extend(missing);
    }

    /// Heard from at `at`, with what it runs not known yet (its list is being fetched).
    pub fn seen(&mut self, at: Tick) {
        self.last_seen = at;
    }

    /// An acknowledged start: it runs `job`; the others are unchanged.
    pub fn started(&mut self, at: Tick, job: &JobId) {
        self.last_seen = at;
        self.missing.remove(job);
    }

    /// An acknowledged stop: it no longer runs `job`.
    pub fn stopped(&mut self, job: &JobId) {
        self.missing.insert(job.clone());
    }

    /// Whether it was heard from less than `timeout` before `now`.
    pub fn is_alive(&self, now: Tick, timeout: Duration) -> bool {
        now.since(self.last_seen) < timeout
    }

    /// Whether it is alive and runs `job`, one of the jobs recorded as its own.
    pub fn runs(&self, job: &JobId, now: Tick, timeout: Duration) -> bool {
        self.is_alive(now, timeout) && !self.missing.contains(job)
    }
}

/// The recorded owner of a job, with what was heard of it.
#[derive(Debug)]
pub struct OwnerView<'a, W> {
    /// The worker that last acknowledged starting (or adopted) the job.
    pub id: &'a W,
    /// When it did, by the wall clock.
    pub acked_at: OffsetDateTime,
    /// What was heard of that worker since data-streams started; `None` when nothing was.
    pub heard: Option<&'a WorkerView>,
}

/// The parts of a stored job that ownership reads.
#[derive(Debug)]
pub struct JobView<'a, W> {
    /// The job.
    pub id: &'a JobId,
    /// Its desired state.
    pub state: JobState,
    /// Its recorded owner, if any.
    pub owner: Option<OwnerView<'a, W>>,
}

/// Why a worker is told to stop a job it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceReason {
    /// The job no longer exists.
    Deleted,
    /// The job is stopped.
    Stopped,
    /// Another worker, alive, owns it: two workers must not fetch the same job.
    OwnedByAnother,
}

/// What to do about one job a worker's heartbeat says it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatDecision {
    /// The worker is the recorded owner: nothing to do.
    Keep,
    /// The job has no live owner: record the reporting worker as its owner, which is cheaper
    /// and faster than stopping it and starting the job elsewhere.
    Adopt,
    /// The worker must stop the job.
    Fence(FenceReason),
}

/// Why a running job's recorded owner is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostOwner {
    /// Not heard from for a worker timeout, once data-streams itself was connected that long.
    Gone,
    /// Alive, but its heartbeats no longer list the job a worker timeout after it acknowledged.
    Forgotten,
}

/// What the reconciler does about one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileDecision {
    /// Stopped, or owned by a worker that runs it (or may still be about to say so).
    Fine,
    /// Running with no owner: ask a worker to start it.
    Start,
    /// Running, but its owner was lost: clear the owner, then start it elsewhere.
    Reassign(LostOwner),
}

/// The ownership rules, for one worker timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    worker_timeout: Duration,
}

impl Ownership {
    /// Rules where a worker not heard from for `worker_timeout` is gone.
    pub fn new(worker_timeout: Duration) -> Self {
        Self { worker_timeout }
    }

    /// Whether a worker with this view is alive at `now`; never heard from is not alive.
    pub fn is_alive(&self, view: Option<&WorkerView>, now: Tick) -> bool {
        view.is_some_and(|v| v.is_alive(now, self.worker_timeout))
    }

    /// Whether data-streams, connected since `connected_since`, was connected a whole worker
    /// timeout at `now`: before then a silent owner is not yet gone.
    pub fn settled(&self, now: Tick, connected_since: Tick) -> bool {
        now.since(connected_since) >= self.worker_timeout
    }

    /// Decides about one job `reporter`'s heartbeat lists; `job` is `None` when it was deleted.
    /// A stopped or deleted job is fenced whoever runs it; a live recorded owner other than the
    /// reporter keeps the job and the reporter is fenced; an owner that is gone, or no owner,
    /// lets the reporter adopt the job.
    pub fn on_heartbeat<W: PartialEq>(
        &self,
        job: Option<&JobView<'_, W>>,
        reporter: &W,
        now: Tick,
    ) -> HeartbeatDecision {
        let Some(job) = job else {
            return HeartbeatDecision::Fence(FenceReason::Deleted);
        };
        if job.state == JobState::Stopped {
            return HeartbeatDecision::Fence(FenceReason::Stopped);
        }
        match &job.owner {
            Some(owner) if owner.id == reporter => HeartbeatDecision::Keep,
            Some(owner) if self.is_alive(owner.heard, now) => {
                HeartbeatDecision::Fence(FenceReason::OwnedByAnother)
            }
            _ => HeartbeatDecision::Adopt,
        }
    }

    /// Decides about one job at a reconciliation that runs at `now`, NATS having been connected
    /// without a break since `connected_since`. An owner is gone only once data-streams was
    /// connected a whole worker timeout: heartbeats sent while it was cut off (or not yet
    /// started) never reached it, so silence before then proves nothing. An owner that is alive
    /// but does not list the job has forgotten it only a worker timeout after it acknowledged,
    /// which leaves its next heartbeat time to list a job it just started.
    pub fn reconcile<W>(
        &self,
        job: &JobView<'_, W>,
        now: Now,
        connected_since: Tick,
    ) -> ReconcileDecision {
        if job.state != JobState::Running {
            return ReconcileDecision::Fine;
        }
        let Some(owner) = &job.owner else {
            return ReconcileDecision::Start;
        };
        if self.is_alive(owner.heard, now.tick) {
            let runs = owner
                .heard
                .is_some_and(|v| v.runs(job.id, now.tick, self.worker_timeout));
            // A wall clock stepped back makes the age negative: not past the grace.
            let past_grace = now.wall - owner.acked_at > self.worker_timeout;
            if !runs && past_grace {
                return ReconcileDecision::Reassign(LostOwner::Forgotten);
            }
            return ReconcileDecision::Fine;
        }
        if self.settled(now.tick, connected_since) {
            ReconcileDecision::Reassign(LostOwner::Gone)
        } else {
            ReconcileDecision::Fine
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn rules() -> Ownership {
        Ownership::new(TIMEOUT)
    }

    fn tick(secs: u64) -> Tick {
        Tick::new(Duration::from_secs(secs))
    }

    fn job_id(raw: &str) -> JobId {
        JobId::parse(raw).expect("a valid job id")
    }

    /// The wall clock at `secs` after an arbitrary fixed origin.
    fn wall(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_700_000_000 + secs)
    }

    fn now(secs: u64) -> Now {
        Now {
            tick: tick(secs),
            wall: wall(secs as i64),
        }
    }

    /// A worker heard at `at` that runs its recorded jobs but `lacks`.
    fn heard(at: u64, lacks: &[&JobId]) -> WorkerView {
        let mut view = WorkerView::new(tick(at));
        view.heartbeat(tick(at), 0, lacks.iter().map(|&j| j.clone()));
        view
    }

    fn running<'a>(
        id: &'a JobId,
        owner: Option<OwnerView<'a, &'static str>>,
    ) -> JobView<'a, &'static str> {
        JobView {
            id,
            state: JobState::Running,
            owner,
        }
    }

    fn owned<'a>(
        id: &'a &'static str,
        acked_at: u64,
        heard: Option<&'a WorkerView>,
    ) -> Option<OwnerView<'a, &'static str>> {
        Some(OwnerView {
            id,
            acked_at: wall(acked_at as i64),
            heard,
        })
    }

    // Liveness.

    #[test]
    fn a_worker_that_goes_silent_is_alive_until_the_timeout_and_gone_from_then_on() {
        let view = WorkerView::new(tick(100));
        assert!(view.is_alive(tick(100), TIMEOUT));
        assert!(view.is_alive(tick(109), TIMEOUT));
        assert!(!view.is_alive(tick(110), TIMEOUT));
        assert!(!view.is_alive(tick(500), TIMEOUT));
    }

    #[test]
    fn a_worker_that_comes_back_is_alive_again() {
        let mut view = WorkerView::new(tick(100));
        assert!(!view.is_alive(tick(130), TIMEOUT));
        view.heartbeat(tick(130), 0, []);
        assert!(view.is_alive(tick(130), TIMEOUT));
    }

    #[test]
    fn a_worker_never_heard_from_is_not_alive() {
        assert!(!rules().is_alive(None, tick(0)));
    }

    #[test]
    fn a_heartbeat_replaces_what_a_worker_lacks_of_its_recorded_jobs() {
        let (a, b) = (job_id("a"), job_id("b"));
        let mut view = heard(0, &[&a]);
        assert!(!view.runs(&a, tick(0), TIMEOUT) && view.runs(&b, tick(0), TIMEOUT));
        view.heartbeat(tick(1), 1, [b.clone()]);
        assert!(view.runs(&a, tick(1), TIMEOUT));
        assert!(!view.runs(&b, tick(1), TIMEOUT));
        assert_eq!(view.count, 1);
    }

    #[test]
    fn an_acknowledged_start_adds_a_job_and_an_acknowledged_stop_removes_it() {
        let (a, b) = (job_id("a"), job_id("b"));
        let mut view = heard(0, &[&b]);
        view.started(tick(5), &b);
        assert_eq!(view.last_seen, tick(5));
        assert!(view.runs(&a, tick(5), TIMEOUT) && view.runs(&b, tick(5), TIMEOUT));
        view.stopped(&a);
        assert!(!view.runs(&a, tick(5), TIMEOUT));
    }

    #[test]
    fn a_worker_whose_list_is_being_fetched_is_alive_and_keeps_what_it_lacked() {
        let a = job_id("a");
        let mut view = heard(0, &[&a]);
        view.seen(tick(20));
        assert!(view.is_alive(tick(21), TIMEOUT));
        assert!(!view.runs(&a, tick(21), TIMEOUT));
    }

    #[test]
    fn a_silent_worker_runs_nothing_even_if_it_last_listed_the_job() {
        let a = job_id("a");
        let view = heard(0, &[]);
        assert!(!view.runs(&a, tick(10), TIMEOUT));
    }

    // Heartbeats.

    #[test]
    fn the_recorded_owner_reporting_its_job_keeps_it() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[&id]);
        let job = running(&id, owned(&w1, 90, Some(&w1_view)));
        assert_eq!(
            rules().on_heartbeat(Some(&job), &"w1", tick(100)),
            HeartbeatDecision::Keep
        );
    }

    #[test]
    fn of_two_workers_claiming_a_job_the_live_recorded_owner_keeps_it_and_the_other_is_fenced() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[&id]);
        let job = running(&id, owned(&w1, 90, Some(&w1_view)));
        let rules = rules();
        assert_eq!(
            rules.on_heartbeat(Some(&job), &"w2", tick(101)),
            HeartbeatDecision::Fence(FenceReason::OwnedByAnother)
        );
        assert_eq!(
            rules.on_heartbeat(Some(&job), &"w1", tick(101)),
            HeartbeatDecision::Keep
        );
    }

    #[test]
    fn a_worker_reporting_a_job_whose_owner_went_silent_adopts_it() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[&id]);
        let job = running(&id, owned(&w1, 90, Some(&w1_view)));
        assert_eq!(
            rules().on_heartbeat(Some(&job), &"w2", tick(110)),
            HeartbeatDecision::Adopt
        );
    }

    #[test]
    fn a_worker_reporting_a_running_job_with_no_owner_adopts_it() {
        let id = job_id("j");
        let job = running(&id, None);
        assert_eq!(
            rules().on_heartbeat(Some(&job), &"w2", tick(0)),
            HeartbeatDecision::Adopt
        );
    }

    #[test]
    fn after_a_restart_the_first_worker_to_report_a_job_adopts_it_and_the_old_owner_is_then_fenced()
    {
        let id = job_id("j");
        let w1 = "w1";
        let rules = rules();
        // Restarted: nothing heard of w1 yet.
        let job = running(&id, owned(&w1, 0, None));
        assert_eq!(
            rules.on_heartbeat(Some(&job), &"w2", tick(1)),
            HeartbeatDecision::Adopt
        );
        let w2 = "w2";
        let w2_view = heard(1, &[]);
        let adopted = running(&id, owned(&w2, 1, Some(&w2_view)));
        assert_eq!(
            rules.on_heartbeat(Some(&adopted), &"w1", tick(2)),
            HeartbeatDecision::Fence(FenceReason::OwnedByAnother)
        );
    }

    #[test]
    fn a_worker_reporting_a_stopped_job_is_fenced_even_when_it_owns_it() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[]);
        let job = JobView {
            id: &id,
            state: JobState::Stopped,
            owner: owned(&w1, 90, Some(&w1_view)),
        };
        assert_eq!(
            rules().on_heartbeat(Some(&job), &"w1", tick(100)),
            HeartbeatDecision::Fence(FenceReason::Stopped)
        );
    }

    #[test]
    fn a_worker_reporting_a_deleted_job_is_fenced() {
        assert_eq!(
            rules().on_heartbeat::<&str>(None, &"w1", tick(0)),
            HeartbeatDecision::Fence(FenceReason::Deleted)
        );
    }

    // Reconciliation.

    #[test]
    fn a_stopped_job_is_left_alone() {
        let id = job_id("j");
        let job = JobView::<&str> {
            id: &id,
            state: JobState::Stopped,
            owner: None,
        };
        assert_eq!(
            rules().reconcile(&job, now(100), tick(0)),
            ReconcileDecision::Fine
        );
    }

    #[test]
    fn a_running_job_with_no_owner_is_started() {
        let id = job_id("j");
        let job = running(&id, None);
        assert_eq!(
            rules().reconcile(&job, now(0), tick(0)),
            ReconcileDecision::Start
        );
    }

    #[test]
    fn a_live_owner_that_runs_the_job_keeps_it() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[]);
        let job = running(&id, owned(&w1, 0, Some(&w1_view)));
        assert_eq!(
            rules().reconcile(&job, now(105), tick(0)),
            ReconcileDecision::Fine
        );
    }

    #[test]
    fn a_silent_owner_keeps_the_job_until_the_worker_timeout() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[]);
        let job = running(&id, owned(&w1, 0, Some(&w1_view)));
        assert_eq!(
            rules().reconcile(&job, now(109), tick(0)),
            ReconcileDecision::Fine
        );
    }

    #[test]
    fn a_silent_owner_is_gone_after_the_worker_timeout() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[]);
        let job = running(&id, owned(&w1, 0, Some(&w1_view)));
        assert_eq!(
            rules().reconcile(&job, now(110), tick(0)),
            ReconcileDecision::Reassign(LostOwner::Gone)
        );
    }

    #[test]
    fn a_silent_owner_is_not_gone_before_data_streams_was_connected_a_whole_worker_timeout() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[]);
        let job = running(&id, owned(&w1, 0, Some(&w1_view)));
        let rules = rules();
        // Reconnected at 105: w1's heartbeats between its last one and then may have been lost.
        assert_eq!(
            rules.reconcile(&job, now(114), tick(105)),
            ReconcileDecision::Fine
        );
        assert_eq!(
            rules.reconcile(&job, now(115), tick(105)),
            ReconcileDecision::Reassign(LostOwner::Gone)
        );
    }

    #[test]
    fn after_a_restart_with_no_heartbeat_yet_no_job_is_reassigned_until_settled() {
        let id = job_id("j");
        let w1 = "w1";
        // Restarted at tick 0, nothing heard of w1; it acknowledged long ago.
        let job = running(&id, owned(&w1, 0, None));
        let rules = rules();
        let restart = Now {
            tick: tick(0),
            wall: wall(1_000),
        };
        let almost = Now {
            tick: tick(9),
            wall: wall(1_009),
        };
        let settled = Now {
            tick: tick(10),
            wall: wall(1_010),
        };
        assert_eq!(
            rules.reconcile(&job, restart, tick(0)),
            ReconcileDecision::Fine
        );
        assert_eq!(
            rules.reconcile(&job, almost, tick(0)),
            ReconcileDecision::Fine
        );
        assert_eq!(
            rules.reconcile(&job, settled, tick(0)),
            ReconcileDecision::Reassign(LostOwner::Gone)
        );
    }

    #[test]
    fn an_owner_that_comes_back_before_it_is_reassigned_keeps_the_job() {
        let id = job_id("j");
        let w1 = "w1";
        let mut w1_view = heard(100, &[]);
        w1_view.heartbeat(tick(112), 1, []);
        let job = running(&id, owned(&w1, 0, Some(&w1_view)));
        assert_eq!(
            rules().reconcile(&job, now(113), tick(0)),
            ReconcileDecision::Fine
        );
    }

    #[test]
    fn a_live_owner_that_does_not_list_the_job_keeps_it_within_the_grace() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[&id]);
        let job = running(&id, owned(&w1, 95, Some(&w1_view)));
        assert_eq!(
            rules().reconcile(&job, now(105), tick(0)),
            ReconcileDecision::Fine
        );
    }

    #[test]
    fn a_live_owner_that_forgot_the_job_loses_it_after_the_grace() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[&id]);
        let job = running(&id, owned(&w1, 90, Some(&w1_view)));
        assert_eq!(
            rules().reconcile(&job, now(101), tick(100)),
            ReconcileDecision::Reassign(LostOwner::Forgotten)
        );
    }

    #[test]
    fn a_wall_clock_stepped_back_never_makes_an_owner_forget() {
        let id = job_id("j");
        let w1 = "w1";
        let w1_view = heard(100, &[&id]);
        let job = running(&id, owned(&w1, 500, Some(&w1_view)));
        assert_eq!(
            rules().reconcile(&job, now(101), tick(0)),
            ReconcileDecision::Fine
        );
    }
}
