//! The NewsAPI client: one page per call, size-capped, classified by `newsflow_core::newsapi`,
//! retried with backoff when retrying can help, and the key sent only as `X-Api-Key`.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use newsflow_core::budget::{Ask, Kind};

use newsflow_core::newsapi::{interpret, FetchError, PageOutcome};
use newsflow_core::retry::{parse_retry_after, Backoff};
use newsflow_core::{NewsQuery, Secret};
use newsflow_runtime::retry::{retry_until_dropped, Failure, RetryPolicy};
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{redirect, Url};
use tokio::sync::Semaphore;

use crate::breaker::Breaker;
use crate::budget::Budget;
use crate::metrics;
use crate::run::{PageRequest, PageSource};

/// Timeouts, retries and size cap of NewsAPI requests.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Longest one request may take, body included.
    pub timeout: Duration,
    /// Retries of a page after its first attempt, for retryable failures only.
    pub retries: u32,
    /// First retry's backoff; doubles per retry.
    pub retry_base: Duration,
    /// Longest backoff.
    pub retry_max: Duration,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// Largest body accepted.
    pub max_response_bytes: usize,
}

/// How the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The key cannot be an HTTP header value (control characters).
    #[error("the NewsAPI key contains characters an HTTP header cannot carry")]
    InvalidKey,
    /// The TLS or HTTP stack could not be set up.
    #[error("could not set up the HTTP client: {0}")]
    Http(String),
}

const MAX_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A NewsAPI client. Cheap to share: one connection pool for every job of the worker.
#[derive(Debug, Clone)]
pub struct NewsClient {
    http: reqwest::Client,
    base: String,
    key: Option<HeaderValue>,
    key_text: Option<Secret>,
    settings: FetchSettings,
    retry: RetryPolicy,
}

impl NewsClient {
    /// A client for the server at `base`, sending `key` with every request.
    pub fn new(
        base: &Url,
        key: Option<Secret>,
        settings: FetchSettings,
    ) -> Result<Self, ClientError> {
        let header = key
            .as_ref()
            .map(|key| {
                let mut value =
                    HeaderValue::from_str(key.expose()).map_err(|_| ClientError::InvalidKey)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(settings.timeout))
            .timeout(settings.timeout)
            // The key is a custom header, which reqwest does not strip on a cross-host redirect.
            .redirect(redirect::Policy::custom(same_host_only))
            .user_agent(concat!("newsflow-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Http(describe(&e.without_url())))?;
        Ok(Self {
            http,
            base: base.as_str().trim_end_matches('/').to_owned(),
            key: header,
            key_text: key,
            retry: RetryPolicy::new(Backoff::new(settings.retry_base, settings.retry_max))
                .attempts(settings.retries.saturating_add(1))
                .honour_asked_waits_up_to(settings.max_retry_after),
            settings,
        })
    }

    /// Fetches one page, retrying retryable failures up to the configured number of times
    /// and honouring the server's `Retry-After` up to its cap. Dropping the future aborts the
    /// request or the wait in hand.
    ///
    /// `admit` is asked before every attempt, the first and each retry; when it refuses, the
    /// request is not sent and its error ends the fetch.
    pub async fn fetch_page<A, Admitted>(
        &self,
        query: &NewsQuery,
        page: u32,
        page_size: u32,
        admit: A,
    ) -> Result<PageOutcome, FetchError>
    where
        A: Fn() -> Admitted,
        Admitted: Future<Output = Result<(), FetchError>>,
    {
        let admit = &admit;
        let attempts = &std::sync::atomic::AtomicU32::new(0);
        retry_until_dropped(&self.retry, "NewsAPI fetch failed", || async move {
            admit().await.map_err(Failure::Permanent)?;
            // Counted once the retry is allowed out, so a refusal of the budget is not one.
            if attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                metrics::global().retried(query.endpoint());
            }
            self.attempt(query, page, page_size)
                .await
                .map_err(|error| match error.retry_after() {
                    _ if !error.is_retryable() => Failure::Permanent(error),
                    Some(asked) => Failure::TransientAfter(error, asked),
                    None => Failure::Transient(error),
                })
        })
        .await
        .map_err(|gave_up| gave_up.error)
    }

    /// One request, counted and timed by endpoint, status and outcome.
    async fn attempt(
        &self,
        query: &NewsQuery,
        page: u32,
        page_size: u32,
    ) -> Result<PageOutcome, FetchError> {
        let started = std::time::Instant::now();
        let mut status = None;
        let result = self.request(query, page, page_size, &mut status).await;
        metrics::global().newsapi_request(query.endpoint(), status, &result, started.elapsed());
        result
    }

    async fn request(
        &self,
        query: &NewsQuery,
        page: u32,
        page_size: u32,
        answered: &mut Option<u16>,
    ) -> Result<PageOutcome, FetchError> {
        let mut params: Vec<(&str, String)> = query
            .params()
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone()))
            .collect();
        params.push(("pageSize", page_size.to_string()));
        params.push(("page", page.to_string()));
        let url = format!("{}{}", self.base, query.endpoint().path());
        let mut request = self.http.get(url).query(&params);
        if let Some(key) = &self.key {
            request = request.header("X-Api-Key", key.clone());
        }
        let mut response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        *answered = Some(status);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, newsflow_core::now_utc()));
        let limit = self.settings.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(FetchError::TooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        interpret(status, retry_after, &body).map_err(|error| self.scrub(error))
    }

    fn transport(&self, error: reqwest::Error) -> FetchError {
        if error.is_timeout() {
            return FetchError::Timeout(self.settings.timeout);
        }
        let detail = describe(&error.without_url());
        self.scrub(FetchError::Connection(detail))
    }

    /// Takes the key out of any text a server or the network put in an error, in case a
    /// server echoes it back: errors are logged and published in markers.
    fn scrub(&self, error: FetchError) -> FetchError {
        let Some(key) = &self.key_text else {
            return error;
        };
        let clean = |text: String| key.redact_in(&text);
        match error {
            FetchError::RateLimited {
                code,
                message,
                retry_after,
            } => FetchError::RateLimited {
                code: clean(code),
                message: clean(message),
                retry_after,
            },
            FetchError::QuotaExhausted { code, message } => FetchError::QuotaExhausted {
                code: clean(code),
                message: clean(message),
            },
            FetchError::Unauthorized { code, message } => FetchError::Unauthorized {
                code: clean(code),
                message: clean(message),
            },
            FetchError::Rejected {
                status,
                code,
                message,
            } => FetchError::Rejected {
                status,
                code: clean(code),
                message: clean(message),
            },
            FetchError::Server { status, message } => FetchError::Server {
                status,
                message: clean(message),
            },
            FetchError::Connection(message) => FetchError::Connection(clean(message)),
            FetchError::Malformed(message) => FetchError::Malformed(clean(message)),
            other @ (FetchError::Timeout(_)
            | FetchError::TooLarge { .. }
            | FetchError::BudgetExhausted { .. }
            | FetchError::BudgetUnavailable(_)) => other,
        }
    }
}

/// Follows a redirect only to the same scheme, host and port, and only a few times.
fn same_host_only(attempt: redirect::Attempt<'_>) -> redirect::Action {
    let same_origin = attempt.previous().first().is_some_and(|first| {
        let next = attempt.url();
        first.scheme() == next.scheme()
            && first.host_str() == next.host_str()
            && first.port_or_known_default() == next.port_or_known_default()
    });
    if same_origin && attempt.previous().len() <= MAX_REDIRECTS {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

/// An error and its causes, one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The worker's way to NewsAPI: the shared client behind the worker-wide key breaker, the
/// limit on concurrent fetches and the request budget shared with other workers on the key.
#[derive(Debug)]
pub struct GuardedClient {
    client: NewsClient,
    breaker: Breaker,
    permits: Semaphore,
    budget: Option<Budget>,
}

impl GuardedClient {
    /// Guards `client` with `breaker` and `budget` (none: no limit), letting `concurrency`
    /// fetches run at once.
    pub fn new(
        client: NewsClient,
        breaker: Breaker,
        concurrency: usize,
        budget: Option<Budget>,
    ) -> Self {
        Self {
            client,
            breaker,
            permits: Semaphore::new(concurrency.max(1)),
            budget,
        }
    }

    /// Admits one request of `request`'s run against the shared budget and counts it as sent.
    async fn admit(&self, request: &PageRequest<'_>) -> Result<(), FetchError> {
        if let Some(budget) = &self.budget {
            let spec = request.spec;
            let first_of_run = request.sent.load(Ordering::Relaxed) == 0;
            let interval_ms =
                u64::try_from(spec.interval().duration().as_millis()).unwrap_or(u64::MAX);
            budget
                .admit(Ask {
                    job: spec.id().as_str(),
                    pages: spec.max_pages().get(),
                    interval_ms,
                    kind: if first_of_run {
                        Kind::RunStart
                    } else {
                        Kind::InRun
                    },
                })
                .await?;
        }
        request.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl PageSource for GuardedClient {
    async fn fetch(&self, request: PageRequest<'_>) -> Result<PageOutcome, FetchError> {
        // The semaphore is never closed, so acquiring only fails in theory; go on unlimited then.
        let _permit = self.permits.acquire().await.ok();
        let pass = self.breaker.admit()?;
        let spec = request.spec;
        let result = self
            .client
            .fetch_page(spec.query(), request.page, spec.page_size().get(), || {
                self.admit(&request)
            })
            .await;
        pass.record(&result);
        result
    }
}

#[cfg(test)]
mod tests;
