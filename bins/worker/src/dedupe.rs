//! Dedupe memory in JetStream: a key-value bucket, one key per job, holding the article ids of
//! the job's last complete batches ([`Memory`]). It lives in the broker, so it survives a
//! worker's kill -9, follows a job to whichever worker owns it next, and does not depend on
//! data-streams at all.
//!
//! The run writes it after the batch's marker was acknowledged. A worker that dies between
//! the two leaves that batch out of the memory, so the next run may publish its articles again:
//! a repeat, never a loss.

use std::time::Duration;

use bytes::Bytes;
use newsflow_core::pipeline::Memory;
use newsflow_core::JobId;
use newsflow_nats::async_nats::jetstream::{self, kv};
use newsflow_nats::kv::{open_bucket, DEDUPE_BUCKET};
use newsflow_nats::publish::PublishError;

/// The largest memory kept per job: the oldest batches are forgotten beyond it, since a
/// JetStream message (and so a value) must stay under the server's 1 MiB payload limit.
const MAX_VALUE_BYTES: usize = 768 * 1024;

/// The bucket, provisioned.
#[derive(Debug, Clone)]
pub struct MemoryBucket {
    store: kv::Store,
}

impl MemoryBucket {
    /// Creates the bucket, or opens it when it exists, with `replicas` like the stream.
    pub async fn provision(js: &jetstream::Context, replicas: usize) -> anyhow::Result<Self> {
        let store = open_bucket(
            js,
            DEDUPE_BUCKET,
            "newsflow: article ids of each job's last complete batches",
            replicas,
        )
        .await?;
        Ok(Self { store })
    }

    /// The job's memory; empty when it has none yet.
    pub async fn load(&self, job: &JobId) -> Result<Memory, PublishError> {
        let started = tokio::time::Instant::now();
        let value = self
            .store
            .get(job.as_str())
            .await
            .map_err(|error| gave_up(job, started.elapsed(), error.to_string()))?;
        let Some(value) = value else {
            return Ok(Memory::default());
        };
        // A value this worker cannot read (written by a newer version, or damaged) is
        // forgotten rather than blocking the job forever.
        Ok(serde_json::from_slice(&value).unwrap_or_else(|error| {
            tracing::warn!(job = %job, %error, "unreadable dedupe memory; starting afresh");
            Memory::default()
        }))
    }

    /// Replaces the job's memory, forgetting its oldest batches if it grew too large.
    pub async fn save(&self, job: &JobId, memory: &Memory) -> Result<(), PublishError> {
        let started = tokio::time::Instant::now();
        let value = encode(memory);
        self.store
            .put(job.as_str(), Bytes::from(value))
            .await
            .map(|_| ())
            .map_err(|error| gave_up(job, started.elapsed(), error.to_string()))
    }
}

/// The memory as JSON, its oldest batches dropped until it fits [`MAX_VALUE_BYTES`].
fn encode(memory: &Memory) -> Vec<u8> {
    let mut memory = memory.clone();
    loop {
        let value = serde_json::to_vec(&memory).unwrap_or_default();
        if value.len() <= MAX_VALUE_BYTES || memory.batches.len() <= 1 {
            return value;
        }
        memory.batches.pop();
    }
}

fn gave_up(job: &JobId, elapsed: Duration, last: String) -> PublishError {
    PublishError::GaveUp {
        msg_id: format!("dedupe memory of {job}"),
        elapsed,
        last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_too_large_for_one_value_forgets_its_oldest_batches() {
        let batch: Vec<String> = (0..1000).map(|i| format!("{i:032x}")).collect();
        let memory = Memory {
            batches: vec![batch; 40],
        };
        let value = encode(&memory);
        assert!(value.len() <= MAX_VALUE_BYTES, "{}", value.len());
        let back: Memory = serde_json::from_slice(&value).expect("parses");
        assert!(back.batches.len() < 40 && !back.batches.is_empty());
        assert_eq!(back.batches[0], memory.batches[0]);
    }
}
