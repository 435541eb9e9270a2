//! The JSON shapes of the HTTP API, built from stored records.

use std::collections::BTreeMap;

use newsflow_core::batch::markerless_status;
use newsflow_core::{BatchId, BatchStatus, Endpoint, ErrorInfo, JobState, KeepBatches};
use newsflow_nats::wire::JobPlan;
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::store::{
    BatchRecord, JobRecord, JobStatus, LastError, LatestBatch, StoredJson, WorkerRef,
};

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
    /// How many of its newest batches the job keeps: its own choice, else the service's
    /// `--keep-batches`.
    pub keep_batches: u64,
    /// What the worker does to each batch between the fetch and the publish, in order.
    pub pipeline: Vec<newsflow_core::pipeline::StageSpec>,
    /// Desired state.
    pub state: JobState,
    /// The worker that acknowledged it, when one has.
    pub worker: Option<WorkerRef>,
    /// The latest complete batch.
    pub latest_batch: Option<LatestBatch>,
    /// The most recent failure (kept after later successes), a run skipped for lack of request
    /// budget included.
    pub last_error: Option<LastError>,
    /// When the owning worker runs it next; null while it is stopped or no worker has said.
    #[serde(with = "newsflow_core::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_run_at: Option<OffsetDateTime>,
    /// Runs in a row that made no complete batch (failed, unpublished or skipped), as its
    /// worker counts them; 0 after a complete batch.
    pub consecutive_failures: u32,
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
    /// Joins what the API owns with what ingest learned and what its worker plans. A plan is
    /// only believed from the worker that owns the job now.
    pub fn new(
        record: JobRecord,
        status: JobStatus,
        default_keep: KeepBatches,
        plan: Option<JobPlan>,
    ) -> Self {
        let spec = &record.spec;
        let skipped = plan.as_ref().and_then(|plan| plan.skipped.clone());
        let owner_plan = plan.filter(|plan| {
            record.state == JobState::Running
                && record
                    .worker
                    .as_ref()
                    .is_some_and(|owner| owner.id == plan.worker_id)
        });
        let last_error = match (status.last_error, skipped) {
            (Some(known), Some(skip)) if known.at >= skip.at => Some(known),
            (_, Some(skip)) => Some(LastError {
                at: skip.at,
                code: skip.error.code,
                message: skip.error.message,
            }),
            (known, None) => known,
        };
        Self {
            id: spec.id().to_string(),
            endpoint: spec.query().endpoint(),
            params: spec.query().params().clone(),
            interval_secs: spec.interval().secs(),
            max_pages: u64::from(spec.max_pages().get()),
            page_size: u64::from(spec.page_size().get()),
            keep_batches: u64::from(spec.keep_batches().unwrap_or(default_keep)),
            pipeline: spec.pipeline().stages().to_vec(),
            state: record.state,
            worker: record.worker,
            latest_batch: status.latest,
            last_error,
            next_run_at: owner_plan.as_ref().and_then(|plan| plan.next_run_at),
            consecutive_failures: owner_plan.map_or(0, |plan| plan.consecutive_failures),
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// A job just created or started, with what the user should know about its plan.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JobWithWarnings {
    /// The job.
    #[serde(flatten)]
    pub job: JobView,
    /// Things that will go wrong with this plan (`over_budget`); empty when none.
    pub warnings: Vec<Warning>,
}

/// Something that will go wrong, though the request succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Warning {
    /// Stable snake_case code: `over_budget`.
    pub code: String,
    /// What will happen and what to change.
    pub message: String,
}

/// `GET /quota`: each NewsAPI key's request budget as the workers share it.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct QuotaView {
    /// One entry per key, by fingerprint.
    pub keys: Vec<KeyQuota>,
}

/// One key's budget.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KeyQuota {
    /// The first 16 hex digits of the key's SHA-256 (never the key).
    pub fingerprint: String,
    /// Requests allowed in any window.
    pub budget: u32,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Requests counted in the window ending now.
    pub used: u64,
    /// When the oldest counted request leaves the window; null when none is counted.
    #[serde(with = "newsflow_core::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resets_at: Option<OffsetDateTime>,
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
    /// How many articles NewsAPI returned for the run, before cleaning and the job's pipeline;
    /// null when its publisher did not say (or no marker came yet).
    #[serde(default)]
    pub fetched_count: Option<u32>,
    /// How many articles cleaning (`removed`, `no_url`, `repeated`) and each pipeline stage
    /// type dropped (types that dropped none are absent); null when its publisher did not say.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, u32>>)]
    pub dropped: Option<BTreeMap<String, u32>>,
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
                fetched_count: marker.fetched_count,
                dropped: marker.dropped.clone(),
            },
            None => {
                let status = if record.abandoned {
                    BatchStatus::Incomplete
                } else {
                    markerless_status(
                        id,
                        context.newest.unwrap_or(id),
                        context.latest,
                        context.running,
                    )
                };
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
                    fetched_count: None,
                    dropped: None,
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

/// A page of a batch's articles.
// The articles are the stored JSON (written by ingest from typed `Article`s), embedded as raw
// values: checked to be JSON but not parsed into a `Value` again, so a page costs a scan and a
// copy per article, not a rebuild. (Doc comments here become the OpenAPI descriptions.)
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArticlesPage<'a> {
    /// The job.
    pub job_id: String,
    /// The batch shown, or null when the job has no complete batch yet.
    pub batch: Option<BatchView>,
    /// The batch's articles, in seq order.
    #[schema(value_type = Vec<newsflow_core::Article>)]
    pub articles: Vec<&'a RawValue>,
    /// The cursor of the next page; null at the end.
    pub next_cursor: Option<String>,
}

impl<'a> ArticlesPage<'a> {
    /// A page over stored article JSON; an article that is not JSON is a broken store.
    pub fn new(
        job_id: &str,
        batch: Option<BatchView>,
        stored: &'a [StoredJson],
        next_cursor: Option<String>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            job_id: job_id.to_owned(),
            batch,
            articles: raw_articles(stored)?,
            next_cursor,
        })
    }

    /// The response body.
    pub fn to_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        to_body(self, stored_len(&self.articles) + 512)
    }
}

/// The shape of `GET /articles`.
// Over stored article JSON, as `ArticlesPage`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedPage<'a> {
    /// Newest first, unique by URL.
    #[schema(value_type = Vec<newsflow_core::Article>)]
    pub articles: Vec<&'a RawValue>,
    /// The cursor of the next page; null at the end.
    pub next_cursor: Option<String>,
}

impl<'a> FeedPage<'a> {
    /// A page over stored article JSON; an article that is not JSON is a broken store.
    pub fn new(
        stored: &'a [StoredJson],
        next_cursor: Option<String>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            articles: raw_articles(stored)?,
            next_cursor,
        })
    }

    /// The response body.
    pub fn to_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        to_body(self, stored_len(&self.articles) + 64)
    }
}

/// Borrows each stored article as a raw JSON value: validated, neither copied nor parsed.
fn raw_articles(stored: &[StoredJson]) -> Result<Vec<&RawValue>, serde_json::Error> {
    stored
        .iter()
        .map(|article| serde_json::from_slice::<&RawValue>(article))
        .collect()
}

fn stored_len(articles: &[&RawValue]) -> usize {
    articles.iter().map(|a| a.get().len() + 1).sum()
}

/// Serializes into a buffer sized for the page up front: pages run to hundreds of kilobytes,
/// and growing by doubling would copy them several times.
fn to_body<T: Serialize>(page: &T, capacity: usize) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut body, page)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored article JSON with escapes a re-serialization would rewrite (`\u00e9`, `\/`,
    /// `1.50`): it must reach the client byte for byte.
    fn stored() -> Vec<StoredJson> {
        vec![
            StoredJson::from(&br#"{"title":"caf\u00e9 \"q\"","url":"https:\/\/a.example\/1","n":[1.50,null,true]}"#[..]),
            StoredJson::from(&br#"{"title":null}"#[..]),
        ]
    }

    fn batch() -> BatchView {
        BatchView {
            id: "01KAHB4N3JQ0S9PZ3B0V5W6X7Y".to_owned(),
            status: BatchStatus::Complete,
            article_count: 2,
            started_at: time::macros::datetime!(2026-11-20 08:00:00 UTC),
            completed_at: Some(time::macros::datetime!(2026-11-20 08:00:05 UTC)),
            error: None,
            fetched_count: None,
            dropped: None,
        }
    }

    #[test]
    fn an_articles_page_is_the_fixture_byte_for_byte_with_stored_articles_verbatim() {
        let stored = stored();
        let page = ArticlesPage::new("btc", Some(batch()), &stored, Some("AAEC".to_owned()))
            .expect("stored articles are JSON");
        let body = page.to_body().expect("serializes");
        let expected = concat!(
            r#"{"job_id":"btc","#,
            r#""batch":{"id":"01KAHB4N3JQ0S9PZ3B0V5W6X7Y","status":"complete","article_count":2,"#,
            r#""started_at":"2026-11-20T08:00:00Z","completed_at":"2026-11-20T08:00:05Z","error":null,"#,
            r#""fetched_count":null,"dropped":null},"#,
            r#""articles":[{"title":"caf\u00e9 \"q\"","url":"https:\/\/a.example\/1","n":[1.50,null,true]},"#,
            r#"{"title":null}],"#,
            r#""next_cursor":"AAEC"}"#,
        );
        assert_eq!(String::from_utf8(body).expect("UTF-8"), expected);
    }

    #[test]
    fn an_empty_articles_page_and_a_feed_page_are_their_fixtures_byte_for_byte() {
        let empty = ArticlesPage::new("btc", None, &[], None)
            .and_then(|page| page.to_body())
            .expect("serializes");
        assert_eq!(
            String::from_utf8(empty).expect("UTF-8"),
            r#"{"job_id":"btc","batch":null,"articles":[],"next_cursor":null}"#
        );
        let stored = stored();
        let feed = FeedPage::new(&stored, None)
            .and_then(|page| page.to_body())
            .expect("serializes");
        assert_eq!(
            String::from_utf8(feed).expect("UTF-8"),
            concat!(
                r#"{"articles":[{"title":"caf\u00e9 \"q\"","url":"https:\/\/a.example\/1","n":[1.50,null,true]},"#,
                r#"{"title":null}],"next_cursor":null}"#
            )
        );
    }

    #[test]
    fn a_stored_article_that_is_not_json_is_an_error_not_a_broken_page() {
        let stored = vec![StoredJson::from(&b"{\"title\":"[..])];
        assert!(FeedPage::new(&stored, None).is_err());
        let trailing = vec![StoredJson::from(&b"{} {}"[..])];
        assert!(ArticlesPage::new("btc", None, &trailing, None).is_err());
    }
}
