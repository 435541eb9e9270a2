//! What the store keeps, as JSON records.

use newsflow_core::{BatchStatus, ErrorInfo, JobSpec, JobState, MarkerStatus};
use newsflow_nats::wire::WorkerId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A job as the API owns it: what it fetches, whether it should run, who runs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// What it fetches.
    pub spec: JobSpec,
    /// The desired state: the truth the reconciler enforces.
    pub state: JobState,
    /// The worker that last acknowledged starting it.
    pub worker: Option<WorkerRef>,
    /// When it was created.
    #[serde(with = "newsflow_core::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its spec, state or owner last changed.
    #[serde(with = "newsflow_core::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A worker that acknowledged a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerRef {
    /// The worker's id.
    #[schema(value_type = String)]
    pub id: WorkerId,
    /// When it acknowledged.
    #[serde(with = "newsflow_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub acked_at: OffsetDateTime,
}

/// What ingest learned about a job from the stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobStatus {
    /// The latest complete batch.
    pub latest: Option<LatestBatch>,
    /// The most recent failure, kept after later successes.
    pub last_error: Option<LastError>,
}

/// The job's latest complete batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LatestBatch {
    /// Its id.
    #[schema(value_type = String)]
    pub id: newsflow_core::BatchId,
    /// When it completed.
    #[serde(with = "newsflow_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub completed_at: OffsetDateTime,
    /// How many articles it holds.
    pub article_count: u32,
}

/// A job's most recent failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastError {
    /// When it happened.
    #[serde(with = "newsflow_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// Stable code.
    pub code: String,
    /// What happened.
    pub message: String,
}

/// One batch of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRecord {
    /// When the run started (from the marker, else the batch id's time).
    #[serde(with = "newsflow_core::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The marker, once it came.
    pub marker: Option<MarkerRecord>,
    /// No marker came in time (its worker died): the batch is incomplete and its articles
    /// were deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
}

/// What a batch's marker said, and what was decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarkerRecord {
    /// What the marker said.
    pub said: MarkerStatus,
    /// The resulting status.
    pub status: BatchStatus,
    /// The marker's article count.
    pub article_count: u32,
    /// How many of those were stored when it came.
    pub stored: u32,
    /// When the run finished.
    #[serde(with = "newsflow_core::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Why it failed.
    pub error: Option<ErrorInfo>,
    /// How many articles the run fetched, when its marker said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_count: Option<u32>,
    /// What cleaning and each stage type dropped, when its marker said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<std::collections::BTreeMap<String, u32>>,
}

/// A poison message, kept for inspection.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// Its stream sequence.
    pub stream_seq: u64,
    /// Its subject.
    pub subject: String,
    /// Why it was refused.
    pub reason: String,
    /// The payload (lossy UTF-8, cut at 4 KiB).
    pub payload: String,
    /// When it was refused.
    #[serde(with = "newsflow_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}
