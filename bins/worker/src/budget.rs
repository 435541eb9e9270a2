//! The request budget shared by every worker on one NewsAPI key: before each request, the
//! key's ledger (`newsflow_core::budget::Ledger`) is read from the budget bucket, the request
//! admitted or refused there, and the ledger written back by compare-and-set. Two workers that
//! race both re-read and decide again, so no request slips past the cap.
//!
//! The ledger is keyed by a fingerprint of the key, never the key. A ledger that cannot be
//! read or written refuses the request (`budget_unavailable`): the cap is a promise to the
//! key's owner, kept even when NATS is in trouble.

use std::time::Duration;

use bytes::Bytes;
use newsflow_core::budget::{fingerprint, Ask, Ledger};
use newsflow_core::newsapi::FetchError;
use newsflow_core::retry::Backoff;
use newsflow_core::{unix_ms, Secret};
use newsflow_nats::async_nats::jetstream;
use newsflow_nats::async_nats::jetstream::kv;
use newsflow_nats::kv::{open_bucket, BucketError, BUDGET_BUCKET};

use crate::config::BudgetSettings;

/// Compare-and-set rounds before giving up on one admission (each lost round means another
/// worker admitted a request meanwhile).
const MAX_ROUNDS: u32 = 40;

/// One key's shared budget, as this worker sees it.
#[derive(Debug)]
pub struct Budget {
    store: kv::Store,
    fingerprint: String,
    settings: BudgetSettings,
    backoff: Backoff,
}

impl Budget {
    /// Opens (or creates) the budget bucket and records this worker's settings in the key's
    /// ledger, so `GET /quota` shows the budget before the first request.
    pub async fn open(
        js: &jetstream::Context,
        key: &Secret,
        settings: BudgetSettings,
        replicas: usize,
    ) -> Result<Self, BucketError> {
        let store = open_bucket(
            js,
            BUDGET_BUCKET,
            "newsflow: NewsAPI requests per key fingerprint in the current window",
            replicas,
        )
        .await?;
        let budget = Self {
            store,
            fingerprint: fingerprint(key.expose()),
            settings,
            backoff: Backoff::new(Duration::from_millis(2), Duration::from_millis(50)),
        };
        if let Err(Refusal::Unavailable(error)) = budget.change(|_| Ok(()), now_ms()).await {
            tracing::warn!(%error, "could not record the request budget yet; the first request will");
        }
        Ok(budget)
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Admits one request of `ask`, counting it in the shared ledger, or says why it must not
    /// be sent.
    pub async fn admit(&self, ask: Ask<'_>) -> Result<(), FetchError> {
        let now = now_ms();
        match self.change(|ledger| ledger.take(ask, now), now).await {
            Ok(()) => Ok(()),
            Err(Refusal::Exhausted(exhausted)) => {
                let returns_at = newsflow_core::from_unix_ms(exhausted.returns_at_ms);
                let when = newsflow_core::rfc3339_text(returns_at);
                let message = if exhausted.cap_reached {
                    format!(
                        "the request budget of key {} ({} requests per {} s, shared by every worker on the key) is spent; the next request is allowed at {when}",
                        self.fingerprint,
                        self.settings.requests,
                        self.settings.window.as_secs()
                    )
                } else {
                    format!(
                        "the rest of the request budget of key {} ({} requests per {} s) is held for other jobs' fair shares; this job may run again at {when} at the latest",
                        self.fingerprint,
                        self.settings.requests,
                        self.settings.window.as_secs()
                    )
                };
                Err(FetchError::BudgetExhausted {
                    message,
                    returns_at,
                })
            }
            Err(Refusal::Unavailable(detail)) => Err(FetchError::BudgetUnavailable(detail)),
        }
    }

    /// Applies `decide` to the key's ledger and writes it back, re-reading and deciding again
    /// when another worker wrote first. The ledger is written even when `decide` refuses: it
    /// records that the job asked, so others leave room for its share.
    async fn change<F>(&self, decide: F, now: u64) -> Result<(), Refusal>
    where
        F: Fn(&mut Ledger) -> Result<(), newsflow_core::budget::Exhausted>,
    {
        for round in 0..MAX_ROUNDS {
            let entry = self
                .store
                .entry(self.fingerprint.as_str())
                .await
                .map_err(|e| Refusal::Unavailable(format!("reading the ledger: {e}")))?;
            let (mut ledger, revision) = match entry {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    (self.parse(&entry.value), Some(entry.revision))
                }
                Some(entry) => (self.fresh(), Some(entry.revision)),
                None => (self.fresh(), None),
            };
            ledger.budget = self.settings.requests;
            ledger.window_secs = self.settings.window.as_secs();
            let decision = decide(&mut ledger);
            ledger.prune(now);
            let value = serde_json::to_vec(&ledger)
                .map(Bytes::from)
                .map_err(|e| Refusal::Unavailable(format!("encoding the ledger: {e}")))?;
            let written = match revision {
                Some(revision) => self
                    .store
                    .update(self.fingerprint.as_str(), value, revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => self
                    .store
                    .create(self.fingerprint.as_str(), value)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
            };
            match written {
                Ok(()) => {
                    crate::metrics::global()
                        .budget(ledger.used(now), u64::from(self.settings.requests));
                    return decision.map_err(Refusal::Exhausted);
                }
                Err((true, _)) => {
                    tokio::time::sleep(self.backoff.delay(round.min(5), rand::random())).await;
                }
                Err((false, error)) => {
                    return Err(Refusal::Unavailable(format!("writing the ledger: {error}")))
                }
            }
        }
        Err(Refusal::Unavailable(format!(
            "the ledger kept changing under {MAX_ROUNDS} attempts to update it"
        )))
    }

    fn fresh(&self) -> Ledger {
        Ledger::new(self.settings.requests, self.settings.window.as_secs())
    }

    /// A stored ledger; one that is not valid JSON is replaced (logged), since refusing every
    /// request forever would be worse.
    fn parse(&self, value: &[u8]) -> Ledger {
        serde_json::from_slice(value).unwrap_or_else(|error| {
            tracing::error!(fingerprint = %self.fingerprint, %error, "the stored request ledger is not valid; starting a new one");
            self.fresh()
        })
    }
}

enum Refusal {
    Exhausted(newsflow_core::budget::Exhausted),
    Unavailable(String),
}

fn now_ms() -> u64 {
    unix_ms(newsflow_core::now_utc())
}
