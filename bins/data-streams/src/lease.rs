//! The control lease: one key in the key-value bucket `newsflow_control` whose value names the
//! data-streams instance that controls jobs (reconciles, sends start and stop, answers the job
//! routes). Every other instance is a read replica.
//!
//! Per-key TTLs need nats-server 2.11, so the bucket's `max_age` is the lease's life: a value
//! expires that long after it was written. The holder renews by compare-and-set on the
//! revision it holds every quarter of the life, and counts itself the holder only until three
//! quarters of the life after it *sent* its last successful write (the server starts the
//! clock later, when it stores the value), so it has stopped controlling before the value can
//! expire and a contender can `create` the key. A contender tries `create` every quarter of
//! the life. A holder that stops cleanly deletes the key, so a contender takes over at once.
//!
//! An instance finding the key under its own instance id (it lost the lease while cut off
//! from NATS, or it is the same data directory restarted after a crash: the id is kept there)
//! takes it back by compare-and-set: no other process can be controlling under that id.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The one key of the bucket.
pub const KEY: &str = "controller";

/// Who holds (or held) the lease: the value of [`KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The instance's id (`--instance-id`).
    pub instance_id: String,
    /// Where its HTTP API is reached (`--advertise-url`).
    pub http_url: String,
}

/// How the lease is held.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// How long a written value lives (the bucket's `max_age`).
    pub life: Duration,
    /// This instance.
    pub me: Holder,
}

impl LeaseSettings {
    /// How often the holder renews, and a contender tries to take the lease.
    pub fn renew_every(&self) -> Duration {
        self.life / 4
    }

    /// How long after sending a successful write the holder may still control.
    pub fn valid_for(&self) -> Duration {
        self.life * 3 / 4
    }
}

/// What one attempt to take the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Taken: this is the revision to renew.
    Held(u64),
    /// Someone else holds it (named when its value could be read).
    Taken(Option<Holder>),
}

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The key changed under the holder: another instance has it, or it expired.
    #[error("the lease was taken or expired")]
    Lost,
    /// NATS did not answer; the lease may still be held until it is due.
    #[error("could not renew the lease: {0}")]
    Failed(#[source] async_nats::Error),
}

/// The lease's bucket, as one instance sees it.
#[derive(Clone)]
pub struct Lease {
    kv: kv::Store,
    settings: LeaseSettings,
    value: Bytes,
}

impl Lease {
    /// Opens the bucket (creating it with `max_age` = the lease's life if it does not exist).
    /// The life that counts is the bucket's own: a bucket created with another life keeps it,
    /// and this instance times its renewals by it.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        mut settings: LeaseSettings,
    ) -> anyhow::Result<Self> {
        let kv = newsflow_nats::kv::open_expiring_bucket(
            js,
            newsflow_nats::kv::CONTROL_BUCKET,
            "newsflow: which data-streams instance controls jobs (the lease; values expire)",
            replicas,
            settings.life,
        )
        .await?;
        let mut stream = js
            .get_stream(format!("KV_{}", newsflow_nats::kv::CONTROL_BUCKET))
            .await?;
        let life = stream.info().await?.config.max_age;
        if life.is_zero() {
            anyhow::bail!(
                "the bucket {} exists without max_age, so a lease in it would never expire; delete it (nats kv del {0}) and let data-streams create it",
                newsflow_nats::kv::CONTROL_BUCKET
            );
        }
        if life != settings.life {
            tracing::warn!(
                bucket_ms = life.as_millis() as u64,
                flag_ms = settings.life.as_millis() as u64,
                "the lease bucket was created with another life; using the bucket's"
            );
            settings.life = life;
        }
        let value = Bytes::from(serde_json::to_vec(&settings.me)?);
        Ok(Self {
            kv,
            settings,
            value,
        })
    }

    /// The settings in force (the life is the bucket's).
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Tries to take the lease once.
    pub async fn claim(&self) -> Result<Claim, async_nats::Error> {
        match self.kv.create(KEY, self.value.clone()).await {
            Ok(revision) => return Ok(Claim::Held(revision)),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(error) => return Err(error.into()),
        }
        let Some(entry) = self.kv.entry(KEY).await? else {
            // Expired between the two calls: the next attempt creates it.
            return Ok(Claim::Taken(None));
        };
        if entry.operation != kv::Operation::Put {
            return Ok(Claim::Taken(None));
        }
        let holder = serde_json::from_slice::<Holder>(&entry.value).ok();
        let mine = holder
            .as_ref()
            .is_some_and(|h| h.instance_id == self.settings.me.instance_id);
        if !mine {
            return Ok(Claim::Taken(holder));
        }
        match self
            .kv
            .update(KEY, self.value.clone(), entry.revision)
            .await
        {
            Ok(revision) => Ok(Claim::Held(revision)),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Ok(Claim::Taken(None))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Renews the lease held at `revision`; the new revision.
    pub async fn renew(&self, revision: u64) -> Result<u64, RenewError> {
        match self.kv.update(KEY, self.value.clone(), revision).await {
            Ok(revision) => Ok(revision),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(RenewError::Lost)
            }
            Err(error) => Err(RenewError::Failed(error.into())),
        }
    }

    /// Gives the lease up (when still held at `revision`), so a contender takes it at once.
    pub async fn release(&self, revision: u64) {
        if let Err(error) = self.kv.delete_expect_revision(KEY, Some(revision)).await {
            tracing::warn!(%error, "could not release the control lease; it expires on its own");
        }
    }
}
