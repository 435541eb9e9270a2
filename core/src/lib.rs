//! Domain types and pure decisions of newsflow: everything here is deterministic and does no I/O,
//! so it is unit-tested without a runtime, a broker or a disk.
//!
//! # Layout
//! - [`ids`]: `JobId`, `BatchId`, `ArticleId`, parsed at the edge and trusted afterwards.
//! - [`query`]: `Endpoint` and `NewsQuery`, NewsAPI parameters checked against the endpoint's rules.
//! - [`job`]: `JobSpec` (what a job fetches and how often) and the `POST /jobs` body parser.
//! - [`article`]: the `Article` served over HTTP and carried on the stream.
//! - [`pipeline`]: a job's stages (filter, domains, dedupe, enrich, fields, limit) and the
//!   cleaning every batch gets first.
//! - [`batch`]: batch markers, batch status and the latest-complete promotion rule.
//! - [`newsapi`]: defensive parsing and classification of NewsAPI responses.
//! - [`retry`]: capped exponential backoff with jitter and `Retry-After` parsing.
//! - [`budget`]: the request budget of a NewsAPI key shared by all workers: its ledger, the cap and fair shares.
//! - [`retention`]: which of a job's batches the store deletes, and when a batch is abandoned.
//! - [`schedule`]: when a job runs next, and how late a run was.
//! - [`ownership`]: which worker runs a job: heartbeat and reconciliation decisions, time passed in.
//! - [`placement`]: which worker a job goes to, the moves that even out load, a move's first run.
//! - [`cursor`]: opaque list cursors.
//! - [`secret`]: a string that never prints.
//! - [`error`]: `ValidationError`, the typed answer to bad input.

pub mod article;
pub mod batch;
pub mod budget;
pub mod cursor;
pub mod digest;
pub mod error;
pub mod ids;
pub mod job;
pub mod newsapi;
pub mod ownership;
pub mod pipeline;
pub mod placement;
pub mod query;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod secret;

pub use article::{Article, ArticleMessage, Source};
pub use batch::{BatchMarker, BatchStatus, ErrorInfo, MarkerStatus, Promotion};
pub use error::ValidationError;
pub use ids::{ArticleId, BatchId, JobId};
pub use job::{Interval, JobSpec, JobState, KeepBatches, MaxPages, PageSize};
pub use pipeline::Pipeline;
pub use query::{Endpoint, NewsQuery};
pub use secret::Secret;

/// RFC 3339 formatting of UTC times, the one time format of the contract.
pub mod rfc3339 {
    pub use time::serde::rfc3339::*;

    /// Optional RFC 3339 times (`null` when absent).
    pub mod option {
        pub use time::serde::rfc3339::option::*;
    }
}

/// The current time in UTC, truncated to milliseconds so that what is stored, served and
/// compared is the same value after a round trip through RFC 3339 text.
pub fn now_utc() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    let millis = now.millisecond();
    now.replace_millisecond(millis).unwrap_or(now)
}

/// The time `ms` milliseconds after the Unix epoch (the epoch itself if out of range).
pub fn from_unix_ms(ms: u64) -> time::OffsetDateTime {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `at` as RFC 3339 text, the contract's time format (for messages; JSON fields use [`rfc3339`]).
pub fn rfc3339_text(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

/// `at` as milliseconds since the Unix epoch, the clock batch ids (ULIDs) carry; 0 before it.
pub fn unix_ms(at: time::OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}
