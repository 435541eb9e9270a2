//! Live events for SSE clients: batch events (published by the store writer once the flush
//! that makes them durable is done) and job events (published by whatever changed the job).
//! One broadcast channel fans them out; a client that falls a whole channel behind is dropped
//! rather than slowing anyone down, and reconnects with `Last-Event-ID`.

use std::sync::Arc;

use newsflow_core::JobId;
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::http::views::{BatchContext, BatchView, JobView};
use crate::state::Shared;
use crate::store::events::{EventId, StoredBatchEvent};

/// How many events the channel holds for the slowest client before that client is dropped.
pub(crate) const CHANNEL: usize = 1024;

/// What kind of event, as SSE's `event:` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A batch reached a final status.
    Batch,
    /// A job was created, changed, started, stopped, moved or deleted.
    Job,
}

impl Kind {
    /// The `event:` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Job => "job",
        }
    }
}

/// One event, rendered once for every client.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its place in the stream: sorts in the order events are made.
    pub id: EventId,
    /// The SSE `id:` clients see and send back: a batch event's batch id; a job event's own
    /// ULID, made when it is published.
    pub wire_id: String,
    /// Batch or job.
    pub kind: Kind,
    /// The job it is about.
    pub job: JobId,
    /// The `data:` JSON.
    pub data: String,
}

impl Event {
    /// A stored batch event as clients see it: `{"job_id","batch":Batch}`.
    pub fn from_batch(id: EventId, stored: &StoredBatchEvent) -> Self {
        // A recorded marker decides the view alone; the context is for markerless batches.
        let context = BatchContext {
            newest: None,
            latest: None,
            running: false,
        };
        let batch = BatchView::new(stored.batch_id, &stored.record, &context, || 0);
        let data = serde_json::json!({ "job_id": stored.job_id, "batch": batch }).to_string();
        Self {
            id,
            wire_id: stored.batch_id.to_string(),
            kind: Kind::Batch,
            job: stored.job_id.clone(),
            data,
        }
    }
}

/// The fan-out, the bound on streams, and the signal that ends them at shutdown.
pub struct Hub {
    sender: broadcast::Sender<Arc<Event>>,
    /// One permit per open stream.
    pub clients: Arc<Semaphore>,
    /// Cancelled at shutdown, so open streams end and the server can drain.
    pub closing: CancellationToken,
}

impl Hub {
    /// A hub for at most `max_clients` streams.
    pub fn new(max_clients: usize) -> Self {
        let (sender, _) = broadcast::channel(CHANNEL);
        Self {
            sender,
            clients: Arc::new(Semaphore::new(max_clients)),
            closing: CancellationToken::new(),
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// Sends an event to every stream (none listening is fine).
    pub fn publish(&self, event: Event) {
        let _ = self.sender.send(Arc::new(event));
    }
}

/// Publishes a job's current view as a `job` event, or `{"id","deleted":true}` when it is
/// gone. The one call every change to a job makes (create, start, stop, delete, owner moves;
/// edits too).
pub fn job_changed(shared: &Shared, job: &JobId) {
    let data = match shared.store.job(job) {
        Ok(Some(record)) => {
            let status = match shared.store.job_status(job) {
                Ok(status) => status,
                Err(error) => {
                    tracing::warn!(%job, error = format!("{error:#}"), "no job event: reading its status failed");
                    return;
                }
            };
            let plan = shared.plans.get(job.as_str());
            let view = JobView::new(record, status, shared.default_keep_batches, plan);
            match serde_json::to_string(&view) {
                Ok(data) => data,
                Err(error) => {
                    tracing::warn!(%job, %error, "no job event: the view did not serialize");
                    return;
                }
            }
        }
        Ok(None) => serde_json::json!({ "id": job, "deleted": true }).to_string(),
        Err(error) => {
            tracing::warn!(%job, error = format!("{error:#}"), "no job event: reading the job failed");
            return;
        }
    };
    let id = shared.store.next_event_id();
    shared.events.publish(Event {
        id,
        wire_id: ulid::Ulid::from_parts(id.ms(), rand::random()).to_string(),
        kind: Kind::Job,
        job: job.clone(),
        data,
    });
}
