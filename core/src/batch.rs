//! Batches: the end-of-batch marker, a batch's status, and the rule that decides when a batch
//! becomes a job's latest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{BatchId, JobId};

/// A failure, as carried by a `failed` marker and shown as a job's `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorInfo {
    /// Stable snake_case code (`rate_limited`, `api_key_invalid`, `upstream_error`...).
    pub code: String,
    /// A human sentence.
    pub message: String,
}

impl ErrorInfo {
    /// Builds an error.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// How a run ended, as its marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerStatus {
    /// Every article was published and acknowledged.
    Complete,
    /// The run failed; `error` says why.
    Failed,
}

/// The end-of-batch marker on `news.batches.<job_id>.<batch_id>`, published only after every
/// article publish of the batch was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMarker {
    /// The job.
    pub job_id: JobId,
    /// The batch.
    pub batch_id: BatchId,
    /// How the run ended.
    pub status: MarkerStatus,
    /// How many articles the batch holds (seq 0..article_count).
    pub article_count: u32,
    /// When the run started.
    #[serde(with = "crate::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When the run ended.
    #[serde(with = "crate::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Why it failed (`failed` markers only).
    #[serde(default)]
    pub error: Option<ErrorInfo>,
    /// How many articles NewsAPI returned for the run, before cleaning and the job's pipeline
    /// (absent from publishers that do not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_count: Option<u32>,
    /// How many articles each cleaning step (`removed`, `no_url`, `repeated`) and each stage
    /// type dropped (absent from publishers that do not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<BTreeMap<String, u32>>,
}

/// A batch's status as the HTTP API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Articles are arriving; no marker yet.
    InProgress,
    /// The marker said complete and every article is stored.
    Complete,
    /// The marker said failed.
    Failed,
    /// It will never complete: its worker died, or its marker's count did not match.
    Incomplete,
}

/// What a marker does to the job's latest pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promotion {
    /// Move the latest pointer to this batch.
    Promote,
    /// Complete, but an equal or newer batch is already the latest: keep the pointer.
    Superseded,
    /// The marker counts more (or fewer) articles than are stored.
    CountMismatch {
        /// What the marker says.
        expected: u32,
        /// What is stored.
        stored: u32,
    },
    /// A failed run never becomes the latest.
    Failed,
}

impl Promotion {
    /// Decides what `marker` does, given how many of its articles (seq < article_count) are
    /// stored and which batch is the job's latest now.
    pub fn decide(marker: &BatchMarker, stored: u32, current_latest: Option<BatchId>) -> Self {
        if marker.status == MarkerStatus::Failed {
            return Self::Failed;
        }
        if stored != marker.article_count {
            return Self::CountMismatch {
                expected: marker.article_count,
                stored,
            };
        }
        match current_latest {
            Some(current) if current >= marker.batch_id => Self::Superseded,
            _ => Self::Promote,
        }
    }

    /// The status a batch has after this decision.
    pub fn status(self) -> BatchStatus {
        match self {
            Self::Promote | Self::Superseded => BatchStatus::Complete,
            Self::CountMismatch { .. } => BatchStatus::Incomplete,
            Self::Failed => BatchStatus::Failed,
        }
    }
}

/// The status of a batch that has no marker yet: still in progress only while its job runs and
/// it is the job's newest batch, newer than the latest complete one; any other markerless batch
/// was abandoned (its worker died or was stopped) and is incomplete.
pub fn markerless_status(
    batch: BatchId,
    newest_of_job: BatchId,
    latest_complete: Option<BatchId>,
    job_running: bool,
) -> BatchStatus {
    let newest = batch == newest_of_job;
    let after_latest = latest_complete.is_none_or(|latest| batch > latest);
    if job_running && newest && after_latest {
        BatchStatus::InProgress
    } else {
        BatchStatus::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(batch: BatchId, status: MarkerStatus, count: u32) -> BatchMarker {
        BatchMarker {
            job_id: JobId::parse("j").expect("valid"),
            batch_id: batch,
            status,
            article_count: count,
            started_at: crate::now_utc(),
            finished_at: crate::now_utc(),
            error: None,
            fetched_count: None,
            dropped: None,
        }
    }

    #[test]
    fn a_complete_batch_with_every_article_is_promoted() {
        let b = BatchId::from_parts(2_000, 0);
        assert_eq!(
            Promotion::decide(&marker(b, MarkerStatus::Complete, 5), 5, None),
            Promotion::Promote
        );
        let older = BatchId::from_parts(1_000, 0);
        assert_eq!(
            Promotion::decide(&marker(b, MarkerStatus::Complete, 5), 5, Some(older)),
            Promotion::Promote
        );
    }

    #[test]
    fn an_empty_complete_batch_is_promoted() {
        let b = BatchId::from_parts(2_000, 0);
        assert_eq!(
            Promotion::decide(&marker(b, MarkerStatus::Complete, 0), 0, None),
            Promotion::Promote
        );
    }

    #[test]
    fn a_batch_missing_articles_is_never_promoted() {
        let b = BatchId::from_parts(2_000, 0);
        let decision = Promotion::decide(&marker(b, MarkerStatus::Complete, 5), 4, None);
        assert_eq!(
            decision,
            Promotion::CountMismatch {
                expected: 5,
                stored: 4
            }
        );
        assert_eq!(decision.status(), BatchStatus::Incomplete);
    }

    #[test]
    fn an_older_batch_never_replaces_a_newer_latest() {
        let old = BatchId::from_parts(1_000, 0);
        let new = BatchId::from_parts(2_000, 0);
        assert_eq!(
            Promotion::decide(&marker(old, MarkerStatus::Complete, 1), 1, Some(new)),
            Promotion::Superseded
        );
        assert_eq!(
            Promotion::decide(&marker(new, MarkerStatus::Complete, 1), 1, Some(new)),
            Promotion::Superseded
        );
    }

    #[test]
    fn a_failed_batch_is_never_promoted() {
        let b = BatchId::from_parts(2_000, 0);
        assert_eq!(
            Promotion::decide(&marker(b, MarkerStatus::Failed, 0), 0, None),
            Promotion::Failed
        );
    }

    #[test]
    fn only_the_newest_open_batch_is_in_progress() {
        let a = BatchId::from_parts(1_000, 0);
        let b = BatchId::from_parts(2_000, 0);
        let c = BatchId::from_parts(3_000, 0);
        assert_eq!(
            markerless_status(c, c, Some(b), true),
            BatchStatus::InProgress
        );
        assert_eq!(markerless_status(c, c, None, true), BatchStatus::InProgress);
        assert_eq!(
            markerless_status(c, c, None, false),
            BatchStatus::Incomplete
        );
        assert_eq!(markerless_status(a, c, None, true), BatchStatus::Incomplete);
        assert_eq!(
            markerless_status(a, a, Some(b), true),
            BatchStatus::Incomplete
        );
    }
}
