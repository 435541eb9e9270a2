//! Job records on every instance: the controlling instance publishes each job record change to
//! the key-value bucket `newsflow_jobs` (key = job id, value = the record's JSON, a delete
//! marker when the job is deleted), and every instance follows the bucket and applies it to its
//! own store, so read replicas answer `GET /jobs` like the controller.
//!
//! - The controller's store is the truth while it controls: it notes each change
//!   ([`crate::store::changes`]), [`publish`] copies the noted records to the bucket, and a
//!   request that changed jobs is answered only once its changes are in the bucket. The
//!   controller does not apply the bucket to itself (an echo of an older value would undo a
//!   newer local change).
//! - A replica applies every value ([`Follower::follow`]). Like [`crate::mirror`], it reads the
//!   bucket through an ephemeral pull consumer from the last value of every key, rebuilt when
//!   it is gone (nats-server 2.9 does not keep ephemeral consumers across a restart). After a
//!   rebuild has caught up, a local job the bucket does not hold is deleted (a change the
//!   instance made while it controlled and could not publish before losing the lease).
//! - A new controller's truth is what it applied: it takes the lease only once caught up, and
//!   waits for the values written just before it took over. A bucket never written (the first
//!   start of this version) is seeded with every local job instead, and a lone instance never
//!   deletes what it had.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use futures::StreamExt as _;
use newsflow_core::retry::Backoff;
use newsflow_core::JobId;
use newsflow_nats::kv::{open_bucket, JOBS_BUCKET};
use newsflow_runtime::retry::{retry, Failure, RetryPolicy};
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::state::{IngestCommand, Shared};
use crate::store::JobRecord;

const DESCRIPTION: &str =
    "newsflow: every job record (JSON) by job id, written by the data-streams that controls jobs";

/// How many records are written to the bucket at once.
const PUBLISH_CONCURRENCY: usize = 64;

/// What an instance knows of its copy of the bucket.
pub struct Follower {
    /// Whether the copy has caught up with the bucket and its watch is live.
    current: watch::Sender<bool>,
    /// The bucket's stream sequence of the last value read.
    read_up_to: watch::Sender<u64>,
    resync: Notify,
}

impl Default for Follower {
    fn default() -> Self {
        Self {
            current: watch::Sender::new(false),
            read_up_to: watch::Sender::new(0),
            resync: Notify::new(),
        }
    }
}

/// How a watch of the bucket ended.
enum Ended {
    Shutdown,
    Resync,
}

impl Follower {
    /// Whether the copy has caught up with the bucket and its watch is live.
    pub fn is_current(&self) -> bool {
        *self.current.borrow()
    }

    /// Resolves once the copy is current (at once when it is).
    pub async fn wait_current(&self) {
        let mut current = self.current.subscribe();
        // The sender lives as long as `self`: the wait cannot end in an error.
        let _ = current.wait_for(|current| *current).await;
    }

    /// Reads the bucket again from scratch and makes the store match it (after this instance
    /// stopped controlling).
    pub fn resync(&self) {
        self.resync.notify_one();
    }

    /// Waits (at most `within`) until every value up to the bucket's stream sequence `seq`
    /// has been read; `false` when that did not happen in time.
    pub async fn wait_read(&self, seq: u64, within: Duration) -> bool {
        let mut read = self.read_up_to.subscribe();
        tokio::time::timeout(within, read.wait_for(|done| *done >= seq))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// Keeps the store in line with the bucket until `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        shared: Arc<Shared>,
        js: jetstream::Context,
        replicas: usize,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let policy = RetryPolicy::new(Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
        ));
        let _ = retry(
            &policy,
            &shutdown,
            "could not follow the jobs bucket",
            || {
                let (follower, shared, js) = (self.clone(), shared.clone(), js.clone());
                let shutdown = shutdown.clone();
                async move {
                    let outcome = follower.watch(&shared, &js, replicas, &shutdown).await;
                    follower.current.send_replace(false);
                    match outcome {
                        Ok(Ended::Shutdown) => Ok(()),
                        Ok(Ended::Resync) => Err(Failure::Transient(anyhow::anyhow!(
                            "reading the jobs bucket again after giving up control"
                        ))),
                        Err(error) => Err(Failure::Transient(error)),
                    }
                }
            },
        )
        .await;
        Ok(())
    }

    async fn watch(
        &self,
        shared: &Arc<Shared>,
        js: &jetstream::Context,
        replicas: usize,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Ended> {
        open_bucket(js, JOBS_BUCKET, DESCRIPTION, replicas).await?;
        let mut stream = js.get_stream(format!("KV_{JOBS_BUCKET}")).await?;
        let fresh = stream.info().await?.state.last_sequence == 0;
        let (pending, mut messages) = crate::mirror::follow_latest(&stream, JOBS_BUCKET).await?;
        let resync = self.resync.notified();
        tokio::pin!(resync);
        // Keys holding a job in the bucket, while catching up.
        let mut present = HashSet::new();
        let mut catching_up = true;
        if pending == 0 {
            self.caught_up(shared, &present, fresh).await;
            catching_up = false;
        }
        tracing::info!(pending, fresh, "following the jobs bucket");
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(Ended::Shutdown),
                () = &mut resync => return Ok(Ended::Resync),
                next = messages.next() => next,
            };
            let Some(message) = next else {
                anyhow::bail!("the watch of the jobs bucket ended");
            };
            let message = message?;
            let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let (seq, left) = (info.stream_sequence, info.pending);
            let change = Change::of(&message);
            if catching_up {
                if let Some(Change::Put(job, _)) = &change {
                    present.insert(job.clone());
                } else if let Some(Change::Delete(job)) = &change {
                    present.remove(job);
                }
            }
            if let Some(change) = change {
                if !shared.store.job_changes().is_recording() {
                    apply(shared, change).await?;
                }
            }
            self.read_up_to.send_replace(seq);
            if catching_up && left == 0 {
                self.caught_up(shared, &present, fresh).await;
                catching_up = false;
            }
        }
    }

    /// Ends a rebuild: a replica drops the local jobs the bucket does not hold (unless the
    /// bucket was never written, where the local jobs are the ones to seed it with).
    async fn caught_up(&self, shared: &Arc<Shared>, present: &HashSet<JobId>, fresh: bool) {
        if !fresh && !shared.store.job_changes().is_recording() {
            match shared.store.all_jobs() {
                Ok(jobs) => {
                    for record in jobs {
                        let job = record.spec.id().clone();
                        if present.contains(&job) {
                            continue;
                        }
                        tracing::warn!(%job, "deleting a job the jobs bucket does not hold");
                        if let Err(error) = apply(shared, Change::Delete(job)).await {
                            tracing::error!(
                                error = format!("{error:#}"),
                                "deleting a job missing from the jobs bucket"
                            );
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "listing jobs to compare with the jobs bucket"
                    )
                }
            }
        }
        self.current.send_replace(true);
    }
}

/// One value of the bucket.
enum Change {
    Put(JobId, bytes::Bytes),
    Delete(JobId),
}

impl Change {
    fn of(message: &jetstream::Message) -> Option<Self> {
        let prefix = format!("$KV.{JOBS_BUCKET}.");
        let key = message.subject.as_str().strip_prefix(prefix.as_str())?;
        let Ok(job) = JobId::parse(key) else {
            tracing::warn!(
                key,
                "ignoring a key of the jobs bucket that is not a job id"
            );
            return None;
        };
        let removed = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("KV-Operation"))
            .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
        Some(if removed {
            Self::Delete(job)
        } else {
            Self::Put(job, message.payload.clone())
        })
    }
}

/// Makes the store hold what the bucket says of one job.
async fn apply(shared: &Shared, change: Change) -> anyhow::Result<()> {
    match change {
        Change::Put(job, value) => {
            let record = match serde_json::from_slice::<JobRecord>(&value) {
                Ok(record) if record.spec.id() == &job => record,
                Ok(_) | Err(_) => {
                    tracing::warn!(%job, "ignoring a value of the jobs bucket that is not the job's record");
                    return Ok(());
                }
            };
            let same = shared
                .store
                .job(&job)?
                .map(|local| serde_json::to_vec(&local))
                .transpose()?
                .is_some_and(|local| local == value);
            if same {
                return Ok(());
            }
            if !shared.store.create_job(&record)? {
                shared.store.update_job(&job, |r| *r = record.clone())?;
            }
            crate::events::job_changed(shared, &job);
        }
        Change::Delete(job) => {
            if !shared.store.job_exists(&job)? {
                return Ok(());
            }
            let (reply, answer) = oneshot::channel();
            shared
                .ingest
                .send(IngestCommand::DeleteJob(job.clone(), reply))
                .await
                .map_err(|_| anyhow::anyhow!("the store writer is gone"))?;
            answer
                .await
                .map_err(|_| anyhow::anyhow!("the store writer is gone"))??;
            crate::events::job_changed(shared, &job);
        }
    }
    Ok(())
}

/// Opens the jobs bucket for writing.
pub async fn open(js: &jetstream::Context, replicas: usize) -> anyhow::Result<kv::Store> {
    Ok(open_bucket(js, JOBS_BUCKET, DESCRIPTION, replicas).await?)
}

/// Copies every noted job change to the bucket until `stop`: a job's current record, or a
/// delete marker when it is gone. A failed write is retried after a pause.
pub async fn publish(shared: Arc<Shared>, bucket: kv::Store, stop: CancellationToken) {
    let changes = shared.store.job_changes().clone();
    loop {
        let taken = tokio::select! {
            () = stop.cancelled() => return,
            taken = changes.take() => taken,
        };
        let failed: Vec<JobId> = futures::stream::iter(taken.jobs)
            .map(|job| {
                let (shared, bucket) = (&shared, &bucket);
                async move {
                    match publish_one(shared, bucket, &job).await {
                        Ok(()) => None,
                        Err(error) => {
                            tracing::warn!(%job, error = format!("{error:#}"), "could not publish a job record to the jobs bucket; retrying");
                            Some(job)
                        }
                    }
                }
            })
            .buffer_unordered(PUBLISH_CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await;
        if failed.is_empty() {
            changes.mark_published(taken.upto);
            continue;
        }
        changes.put_back(failed);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn publish_one(shared: &Shared, bucket: &kv::Store, job: &JobId) -> anyhow::Result<()> {
    match shared.store.job(job)? {
        Some(record) => {
            bucket
                .put(job.as_str(), serde_json::to_vec(&record)?.into())
                .await?;
        }
        None => bucket.delete(job.as_str()).await?,
    }
    Ok(())
}

/// The bucket's last stream sequence: what a new controller waits to have read.
pub async fn last_sequence(js: &jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(format!("KV_{JOBS_BUCKET}")).await?;
    Ok(stream.info().await?.state.last_sequence)
}
