//! The JSON shapes of the HTTP API, built from stored records.

use std::collections::BTreeMap;

use newsflow_core::batch::markerless_status;
use newsflow_core::{BatchId, BatchStatus, Endpoint, ErrorInfo, JobState};
use serde::Serialize;
use time::OffsetDateTime;

use crate::store::{BatchRecord, JobRecord, JobStatus, LastError, LatestBatch, WorkerRef};

/// A job, as every job route returns it.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JobView {
    /// `[a-z0-9][a-z0-9_-]{0,63}`.
    pub id: String,
    /// Which NewsAPI endpoint it queries.
    pub endpoint: Endpoint,
    /// NewsAPI query parameters.
    pub params: BTreeMap<String, String>,
    /// Seconds between runs.
    pub interval_secs: u64,
    /// Pages per run at most.
    pub max_pages: u64,
    /// Articles per page.
    pub page_size: u64,
    /// Desired state.
    pub state: JobState,
    /// The worker that acknowledged it, when one has.
    pub worker: Option<WorkerRef>,
    /// The latest complete batch.
    pub latest_batch: Option<LatestBatch>,
    /// The most recent failure (kept after later successes).
    pub last_error: Option<LastError>,
    /// Creation time.
    #[serde(with = "newsflow_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Last change of spec, state or owner.
    #[serde(with = "newsflow_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl JobView {
    /// Joins what the API owns with what ingest learned.
    pub fn new(record: JobRecord, status: JobStatus) -> Self {
        let spec = &record.spec;
        Self {
            id: spec.id().to_string(),
            endpoint: spec.query().endpoint(),
            params: spec.query().params().clone(),
            interval_secs: spec.interval().secs(),
            max_pages: u64::from(spec.max_pages().get()),
            page_size: u64::from(spec.page_size().get()),
            state: record.state,
            worker: record.worker,
            latest_batch: status.latest,
            last_error: status.last_error,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// `{"jobs":[Job]}`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JobList {
    /// The jobs, by id.
    pub jobs: Vec<JobView>,
    /// The cursor of the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// A batch: one run of a job.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BatchView {
    /// ULID, sortable by start time.
    pub id: String,
    /// in_progress, complete, failed or incomplete.
    pub status: BatchStatus,
    /// Articles in the batch (for a batch in progress: stored so far).
    pub article_count: u32,
    /// When the run started.
    #[serde(with = "newsflow_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: OffsetDateTime,
    /// When the run ended (complete or failed); null otherwise.
    #[serde(with = "newsflow_core::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<OffsetDateTime>,
    /// Why it failed or is incomplete.
    pub error: Option<ErrorInfo>,
}

/// Context for a batch without a marker: is it still in progress?
pub struct BatchContext {
    /// The job's newest batch.
    pub newest: Option<BatchId>,
    /// The job's latest complete batch.
    pub latest: Option<BatchId>,
    /// Whether the job runs.
    pub running: bool,
}

impl BatchView {
    /// A batch's view; `stored` counts its stored articles (used while no marker says).
    pub fn new(
        id: BatchId,
        record: &BatchRecord,
        context: &BatchContext,
        stored: impl FnOnce() -> u32,
    ) -> Self {
        match &record.marker {
            Some(marker) => Self {
                id: id.to_string(),
                status: marker.status,
                article_count: marker.article_count,
                started_at: record.started_at,
                completed_at: (marker.status != BatchStatus::Incomplete)
                    .then_some(marker.finished_at),
                error: match marker.status {
                    BatchStatus::Incomplete => Some(ErrorInfo::new(
                        "incomplete_batch",
                        format!(
                            "the marker counts {} articles but {} reached the store",
                            marker.article_count, marker.stored
                        ),
                    )),
                    _ => marker.error.clone(),
                },
            },
            None => {
                let status = markerless_status(
                    id,
                    context.newest.unwrap_or(id),
                    context.latest,
                    context.running,
                );
                Self {
                    id: id.to_string(),
                    status,
                    article_count: stored(),
                    started_at: record.started_at,
                    completed_at: None,
                    error: (status == BatchStatus::Incomplete).then(|| {
                        ErrorInfo::new(
                            "abandoned",
                            "the run ended without a marker (its worker stopped or died)",
                        )
                    }),
                }
            }
        }
    }
}

/// `{"batches":[Batch]}`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BatchList {
    /// Newest first.
    pub batches: Vec<BatchView>,
    /// The cursor of the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// The shape of an articles page (documentation; the body is assembled from stored bytes).
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ArticlesPage {
    /// The job.
    pub job_id: String,
    /// The batch shown, or null when the job has no complete batch yet.
    pub batch: Option<BatchView>,
    /// The batch's articles, in seq order.
    pub articles: Vec<newsflow_core::Article>,
    /// The cursor of the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// The shape of `GET /articles`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FeedPage {
    /// Newest first, unique by URL.
    pub articles: Vec<newsflow_core::Article>,
    /// The cursor of the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// Writes `{"job_id":..,"batch":..,"articles":[..],"next_cursor":..}` from stored article JSON,
/// without parsing the articles again.
pub fn articles_page_body(
    job_id: &str,
    batch: Option<&BatchView>,
    articles: &[sled::IVec],
    next_cursor: Option<&str>,
) -> Vec<u8> {
    let size: usize = articles.iter().map(|a| a.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 512);
    body.extend_from_slice(b"{\"job_id\":");
    write_json(&mut body, &job_id);
    body.extend_from_slice(b",\"batch\":");
    write_json(&mut body, &batch);
    body.extend_from_slice(b",\"articles\":");
    write_array(&mut body, articles);
    body.extend_from_slice(b",\"next_cursor\":");
    write_json(&mut body, &next_cursor);
    body.push(b'}');
    body
}

/// Writes `{"articles":[..],"next_cursor":..}`.
pub fn feed_page_body(articles: &[sled::IVec], next_cursor: Option<&str>) -> Vec<u8> {
    let size: usize = articles.iter().map(|a| a.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 64);
    body.extend_from_slice(b"{\"articles\":");
    write_array(&mut body, articles);
    body.extend_from_slice(b",\"next_cursor\":");
    write_json(&mut body, &next_cursor);
    body.push(b'}');
    body
}

fn write_array(body: &mut Vec<u8>, items: &[sled::IVec]) {
    body.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.push(b']');
}

fn write_json<T: Serialize>(body: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *body, value).is_err() {
        body.extend_from_slice(b"null");
    }
}
