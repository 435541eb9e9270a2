//! The key-value buckets newsflow keeps in JetStream beside the `NEWS` stream:
//! - [`BUDGET_BUCKET`]: one request ledger per NewsAPI key fingerprint
//!   (`newsflow_core::budget::Ledger`), changed by compare-and-set by every worker on that key;
//! - [`PLANS_BUCKET`]: one [`JobPlan`](crate::wire::JobPlan) per running job, written by its
//!   worker after each run and read by data-streams for `next_run_at` and
//!   `consecutive_failures`;
//! - [`DEDUPE_BUCKET`]: each deduping job's memory of its last complete batches' article ids,
//!   written by the worker that ran the batch.
//!
//! - [`JOBS_BUCKET`]: every job record (its JSON) by job id, written by the data-streams
//!   instance that controls jobs and followed by every other one (read replicas);
//! - [`CONTROL_BUCKET`]: the control lease, one key whose value names the instance that
//!   controls jobs; its `max_age` is the lease's life.
//!
//! All keep one value per key (history 1) on file storage, replicated like the stream.

use async_nats::jetstream::{self, kv};

/// Request ledgers by key fingerprint.
pub const BUDGET_BUCKET: &str = "newsflow_budget";
/// Job plans by job id.
pub const PLANS_BUCKET: &str = "newsflow_plans";
/// Dedupe memory by job id: the article ids of the job's last complete batches.
pub const DEDUPE_BUCKET: &str = "newsflow_dedupe";

/// Job records by job id, written by the controlling data-streams.
pub const JOBS_BUCKET: &str = "newsflow_jobs";
/// The control lease (see data-streams' `lease` module).
pub const CONTROL_BUCKET: &str = "newsflow_control";

/// Why a bucket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("could not open the JetStream key-value bucket {bucket}: {source}")]
pub struct BucketError {
    /// The bucket.
    pub bucket: &'static str,
    /// What JetStream said.
    #[source]
    pub source: async_nats::Error,
}

/// Opens `bucket`, creating it with `replicas` replicas if it does not exist yet. Creating is
/// idempotent, so every process may race to do it.
///
/// The bucket's stream is created here rather than by `create_key_value`, which first reads the
/// account's JetStream limits in a shape nats-server 2.9 does not send; the stream settings are
/// those of a key-value bucket with history 1.
pub async fn open_bucket(
    js: &jetstream::Context,
    bucket: &'static str,
    description: &str,
    replicas: usize,
) -> Result<kv::Store, BucketError> {
    open_expiring_bucket(js, bucket, description, replicas, std::time::Duration::ZERO).await
}

/// [`open_bucket`] for a bucket whose values expire `max_age` after they were written (zero:
/// never). Only the creator's `max_age` counts: an existing bucket is opened as it is.
pub async fn open_expiring_bucket(
    js: &jetstream::Context,
    bucket: &'static str,
    description: &str,
    replicas: usize,
    max_age: std::time::Duration,
) -> Result<kv::Store, BucketError> {
    let error = |source: async_nats::Error| BucketError { bucket, source };
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        max_age,
        ..Default::default()
    })
    .await
    .map_err(|e| error(e.into()))?;
    js.get_key_value(bucket).await.map_err(|e| error(e.into()))
}
