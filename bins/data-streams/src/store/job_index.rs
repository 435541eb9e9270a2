//! The in-memory index of job records: what the reconciler, heartbeats, placement and the
//! budget warning read, without decoding a sled record per job. Loaded when the store opens
//! and changed by every job write, under the store's job lock, right after the sled write, so
//! it never drifts from the tree.

use std::collections::{BTreeMap, HashMap, HashSet};

use newsflow_core::digest::JobSetDigest;
use newsflow_core::{JobId, JobState};
use newsflow_nats::wire::WorkerId;

use super::{JobRecord, WorkerRef};

/// The parts of a job record the control side reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedJob {
    /// Its desired state.
    pub state: JobState,
    /// Its recorded owner.
    pub owner: Option<WorkerRef>,
    /// Pages per run.
    pub max_pages: u32,
    /// Its interval in milliseconds.
    pub interval_ms: u64,
}

impl IndexedJob {
    /// The indexed parts of `record`.
    pub fn of(record: &JobRecord) -> Self {
        let interval = record.spec.interval().duration().as_millis();
        Self {
            state: record.state,
            owner: record.worker.clone(),
            max_pages: record.spec.max_pages().get(),
            interval_ms: u64::try_from(interval).unwrap_or(u64::MAX),
        }
    }

    /// The worker recorded as running it: its owner while it is running.
    fn runner(&self) -> Option<&WorkerId> {
        match (&self.owner, self.state) {
            (Some(owner), JobState::Running) => Some(&owner.id),
            _ => None,
        }
    }
}

/// The running jobs recorded as one worker's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    /// Their digest, as the worker's heartbeat carries it when it runs exactly these.
    pub digest: JobSetDigest,
    /// The jobs.
    pub jobs: HashSet<JobId>,
}

/// Every job by id, the running ones by recorded owner, and running plans by their shape.
#[derive(Debug, Default)]
pub struct JobIndex {
    jobs: HashMap<JobId, IndexedJob>,
    owned: HashMap<WorkerId, Owned>,
    /// Running jobs with no recorded owner: the reconciler starts each.
    unowned: HashSet<JobId>,
    /// Running jobs by `(max_pages, interval_ms)`: the few shapes the budget warning sums.
    plans: BTreeMap<(u32, u64), u64>,
    running: usize,
}

impl JobIndex {
    /// Records `record` (new or changed).
    pub fn put(&mut self, record: &JobRecord) {
        let id = record.spec.id();
        self.remove(id);
        let job = IndexedJob::of(record);
        if let Some(worker) = job.runner() {
            let owned = self.owned.entry(worker.clone()).or_default();
            if owned.jobs.insert(id.clone()) {
                owned.digest.insert(id);
            }
        }
        if job.state == JobState::Running && job.owner.is_none() {
            self.unowned.insert(id.clone());
        }
        if job.state == JobState::Running {
            self.running += 1;
            *self
                .plans
                .entry((job.max_pages, job.interval_ms))
                .or_default() += 1;
        }
        self.jobs.insert(id.clone(), job);
    }

    /// Forgets a deleted job.
    pub fn remove(&mut self, id: &JobId) {
        let Some(job) = self.jobs.remove(id) else {
            return;
        };
        if let Some(worker) = job.runner() {
            if let Some(owned) = self.owned.get_mut(worker) {
                if owned.jobs.remove(id) {
                    owned.digest.remove(id);
                }
                if owned.jobs.is_empty() {
                    self.owned.remove(worker);
                }
            }
        }
        self.unowned.remove(id);
        if job.state == JobState::Running {
            self.running -= 1;
            let shape = (job.max_pages, job.interval_ms);
            if let Some(count) = self.plans.get_mut(&shape) {
                *count -= 1;
                if *count == 0 {
                    self.plans.remove(&shape);
                }
            }
        }
    }

    /// One job.
    pub fn get(&self, id: &JobId) -> Option<&IndexedJob> {
        self.jobs.get(id)
    }

    /// Every job, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&JobId, &IndexedJob)> {
        self.jobs.iter()
    }

    /// Every worker with running jobs recorded as its own, with them.
    pub fn owners(&self) -> impl Iterator<Item = (&WorkerId, &Owned)> {
        self.owned.iter()
    }

    /// The running jobs with no recorded owner.
    pub fn unowned(&self) -> impl Iterator<Item = &JobId> {
        self.unowned.iter()
    }

    /// The running jobs recorded as `worker`'s.
    pub fn owned(&self, worker: &WorkerId) -> Option<&Owned> {
        self.owned.get(worker)
    }

    /// How many running jobs are recorded as `worker`'s.
    pub fn owned_count(&self, worker: &WorkerId) -> u64 {
        self.owned.get(worker).map_or(0, |o| o.digest.count())
    }

    /// The digest of the running jobs recorded as `worker`'s.
    pub fn owned_digest(&self, worker: &WorkerId) -> JobSetDigest {
        self.owned.get(worker).map(|o| o.digest).unwrap_or_default()
    }

    /// How many jobs exist.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job exists.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// How many jobs are running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The running jobs' plans: `(max_pages, interval_ms, how many jobs)`.
    pub fn running_plans(&self) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
        self.plans
            .iter()
            .map(|(&(pages, interval), &count)| (pages, interval, count))
    }
}

#[cfg(test)]
mod tests {
    use newsflow_core::JobSpec;
    use proptest::prelude::*;

    use super::*;

    fn record(id: &str, state: JobState, owner: Option<&str>, interval_secs: u64) -> JobRecord {
        let spec = JobSpec::from_create_request(&serde_json::json!({
            "id": id, "endpoint": "everything", "params": {"q": "x"},
            "interval_secs": interval_secs, "max_pages": 2, "page_size": 10
        }))
        .expect("a valid spec");
        JobRecord {
            spec,
            state,
            worker: owner.map(|w| WorkerRef {
                id: WorkerId::parse(w).expect("valid"),
                acked_at: newsflow_core::now_utc(),
            }),
            created_at: newsflow_core::now_utc(),
            updated_at: newsflow_core::now_utc(),
        }
    }

    fn worker(id: &str) -> WorkerId {
        WorkerId::parse(id).expect("valid")
    }

    fn job(id: &str) -> JobId {
        JobId::parse(id).expect("valid")
    }

    #[test]
    fn a_workers_digest_covers_exactly_its_running_jobs() {
        let mut index = JobIndex::default();
        index.put(&record("a", JobState::Running, Some("w1"), 60));
        index.put(&record("b", JobState::Running, Some("w1"), 60));
        index.put(&record("c", JobState::Stopped, Some("w1"), 60));
        index.put(&record("d", JobState::Running, Some("w2"), 60));
        assert_eq!(
            index.owned_digest(&worker("w1")),
            JobSetDigest::of([&job("a"), &job("b")])
        );
        index.put(&record("b", JobState::Running, Some("w2"), 60));
        assert_eq!(
            index.owned_digest(&worker("w1")),
            JobSetDigest::of([&job("a")])
        );
        assert_eq!(index.owned_count(&worker("w2")), 2);
        index.remove(&job("a"));
        assert!(index.owned(&worker("w1")).is_none());
        assert_eq!(index.len(), 3);
        assert_eq!(index.running(), 2);
    }

    #[test]
    fn running_plans_are_summed_by_shape() {
        let mut index = JobIndex::default();
        index.put(&record("a", JobState::Running, None, 60));
        index.put(&record("b", JobState::Running, None, 60));
        index.put(&record("c", JobState::Running, None, 3600));
        index.put(&record("d", JobState::Stopped, None, 60));
        let plans: Vec<_> = index.running_plans().collect();
        assert_eq!(plans, [(2, 60_000, 2), (2, 3_600_000, 1)]);
        index.put(&record("c", JobState::Stopped, None, 3600));
        assert_eq!(index.running_plans().collect::<Vec<_>>(), [(2, 60_000, 2)]);
    }

    proptest! {
        #[test]
        fn any_sequence_of_writes_leaves_the_index_as_if_built_from_the_final_records(
            writes in proptest::collection::vec((0u8..6, 0u8..4, any::<bool>(), any::<bool>()), 0..60),
        ) {
            let mut index = JobIndex::default();
            let mut truth: BTreeMap<String, JobRecord> = BTreeMap::new();
            for (id, owner, running, delete) in writes {
                let id = format!("j{id}");
                if delete {
                    index.remove(&job(&id));
                    truth.remove(&id);
                    continue;
                }
                let owner = (owner > 0).then(|| format!("w{owner}"));
                let state = if running { JobState::Running } else { JobState::Stopped };
                let r = record(&id, state, owner.as_deref(), 60);
                index.put(&r);
                truth.insert(id, r);
            }
            let mut fresh = JobIndex::default();
            for r in truth.values() {
                fresh.put(r);
            }
            prop_assert_eq!(&index.owned, &fresh.owned);
            prop_assert_eq!(&index.jobs, &fresh.jobs);
            prop_assert_eq!(&index.plans, &fresh.plans);
            prop_assert_eq!(&index.unowned, &fresh.unowned);
            prop_assert_eq!(index.running, fresh.running);
        }
    }
}
