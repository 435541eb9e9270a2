//! `FakeWorker`: a worker played by the test over NATS, to drive data-streams' side of the
//! ownership protocol exactly: it answers addressed starts, stops and job-list pages, and
//! heartbeats with only a digest and a count (as a worker with more than 1,000 jobs does).
//! It runs nothing; what it was told is recorded for the test to read.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use newsflow_core::digest::JobSetDigest;
use newsflow_core::JobId;
use newsflow_nats::subjects;
use newsflow_nats::wire::{Ack, Heartbeat, JobsPage, ListJobs, StartJob, StopJob, WorkerId};
use tokio::task::JoinHandle;

/// What a fake worker was told and runs.
#[derive(Debug, Default)]
pub struct FakeState {
    /// The jobs it runs.
    pub jobs: BTreeSet<JobId>,
    /// Every start addressed to it, in order.
    pub starts: Vec<StartJob>,
    /// Every stop sent to it, in order.
    pub stops: Vec<JobId>,
    /// How many job-list pages it was asked for.
    pub list_requests: usize,
}

/// A worker played by the test; it stops answering when dropped.
#[derive(Debug)]
pub struct FakeWorker {
    id: WorkerId,
    state: Arc<Mutex<FakeState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeWorker {
    /// Starts answering as `id` on `client`, running `jobs` (unknown to data-streams until it
    /// asks), heartbeating every `every`.
    pub async fn start(
        client: &async_nats::Client,
        id: &str,
        jobs: &[&str],
        every: Duration,
    ) -> Self {
        let id = WorkerId::parse(id).unwrap_or_else(|e| panic!("{e}"));
        let state = Arc::new(Mutex::new(FakeState {
            jobs: jobs
                .iter()
                .map(|j| JobId::parse(j).unwrap_or_else(|e| panic!("{e}")))
                .collect(),
            ..FakeState::default()
        }));
        let mut tasks = Vec::new();
        for (subject, kind) in [
            (subjects::start_on(&id), Kind::Start),
            (subjects::stop(&id), Kind::Stop),
            (subjects::worker_jobs(&id), Kind::List),
        ] {
            let mut subscription = client
                .subscribe(subject.clone())
                .await
                .unwrap_or_else(|e| panic!("subscribing to {subject}: {e}"));
            let (client, state, id) = (client.clone(), state.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    let reply = answer(kind, &id, &state, &message.payload);
                    if let Some(to) = message.reply {
                        let _ = client.publish(to, reply).await;
                    }
                }
            }));
        }
        client
            .flush()
            .await
            .unwrap_or_else(|e| panic!("flushing: {e}"));
        let (beats, beat_state, beat_id) = (client.clone(), state.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let digest = JobSetDigest::of(&lock(&beat_state).jobs);
                let mut heartbeat =
                    Heartbeat::new(beat_id.clone(), Vec::new, digest, newsflow_core::now_utc());
                heartbeat.jobs = None;
                if let Ok(body) = serde_json::to_vec(&heartbeat) {
                    let _ = beats.publish(subjects::HEARTBEAT, Bytes::from(body)).await;
                }
                tokio::time::sleep(every).await;
            }
        }));
        Self { id, state, tasks }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// Reads what it was told.
    pub fn read<T>(&self, look: impl FnOnce(&FakeState) -> T) -> T {
        look(&lock(&self.state))
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Start,
    Stop,
    List,
}

fn lock(state: &Mutex<FakeState>) -> std::sync::MutexGuard<'_, FakeState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn answer(kind: Kind, id: &WorkerId, state: &Mutex<FakeState>, payload: &[u8]) -> Bytes {
    let mut state = lock(state);
    let body = match kind {
        Kind::Start => match serde_json::from_slice::<StartJob>(payload) {
            Ok(start) => {
                let job_id = start.job.id().clone();
                state.jobs.insert(job_id.clone());
                state.starts.push(start);
                serde_json::to_vec(&Ack::Ok {
                    worker_id: id.clone(),
                    job_id,
                })
            }
            Err(e) => panic!("data-streams sent a start that does not parse: {e}"),
        },
        Kind::Stop => match serde_json::from_slice::<StopJob>(payload) {
            Ok(stop) => {
                state.jobs.remove(&stop.job_id);
                state.stops.push(stop.job_id.clone());
                serde_json::to_vec(&Ack::Ok {
                    worker_id: id.clone(),
                    job_id: stop.job_id,
                })
            }
            Err(e) => panic!("data-streams sent a stop that does not parse: {e}"),
        },
        Kind::List => match serde_json::from_slice::<ListJobs>(payload) {
            Ok(ask) => {
                state.list_requests += 1;
                let limit = ask.limit as usize;
                let jobs: Vec<JobId> = state
                    .jobs
                    .iter()
                    .filter(|j| ask.after.as_ref().is_none_or(|after| *j > after))
                    .take(limit)
                    .cloned()
                    .collect();
                let more = state
                    .jobs
                    .iter()
                    .filter(|j| ask.after.as_ref().is_none_or(|after| *j > after))
                    .nth(limit)
                    .is_some();
                let next = more.then(|| jobs.last().cloned()).flatten();
                serde_json::to_vec(&JobsPage { jobs, next })
            }
            Err(e) => panic!("data-streams sent a list request that does not parse: {e}"),
        },
    };
    Bytes::from(body.unwrap_or_else(|e| panic!("serializing an answer: {e}")))
}
