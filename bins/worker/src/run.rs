//! One run of a job: one batch. Fetch pages, publish each page's articles and await their
//! acks, then publish the end-of-batch marker, so a marker always follows its whole batch.
//!
//! Fetching and publishing sit behind two small traits, so the page loop is tested with
//! scripted pages and a recording publisher. Between the two, every article of the run is
//! cleaned and goes through the job's pipeline (`crate::pipeline`): page by page, or, when a
//! stage judges the whole batch (`limit`), once every page is fetched.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use newsflow_core::newsapi::{FetchError, PageOutcome};
use newsflow_core::pipeline::Memory;
use newsflow_core::{now_utc, ArticleMessage, BatchId, BatchMarker, JobId, JobSpec, MarkerStatus};
use newsflow_nats::async_nats::jetstream;
use newsflow_nats::publish::{publish_all, publish_one, Outgoing, PublishError};
use newsflow_nats::subjects;
use newsflow_nats::wire::WorkerId;
use newsflow_runtime::retry::RetryPolicy;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::metrics;

use crate::pipeline::Shaper;

/// Marker header: how late the run started, in milliseconds (read by the benchmark).
pub const LATENESS_HEADER: &str = "Newsflow-Lateness-Ms";

/// One page a run asks for.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    /// The job (its query, page size, and what the request budget weighs: interval, pages).
    pub spec: &'a JobSpec,
    /// The page, from 1.
    pub page: u32,
    /// Requests this run has sent so far: the source adds each one it sends, retries included,
    /// so the run knows whether anything went out.
    pub sent: &'a AtomicU32,
}

/// Where pages come from.
pub trait PageSource: Send + Sync {
    /// One page, or why not. Dropping the future abandons the fetch.
    fn fetch(
        &self,
        request: PageRequest<'_>,
    ) -> impl Future<Output = Result<PageOutcome, FetchError>> + Send;
}

/// Where batches go. Both methods return once every message is acknowledged.
pub trait Publisher: Send + Sync {
    /// Publishes one page's article messages.
    fn publish_page(
        &self,
        messages: &[Outgoing],
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Publishes the end-of-batch marker.
    fn publish_marker(
        &self,
        marker: &Outgoing,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// What the job's earlier complete batches published (for `dedupe`); empty if nothing
    /// was remembered yet.
    fn recall(&self, job: &JobId) -> impl Future<Output = Result<Memory, PublishError>> + Send;

    /// Keeps `memory` for the job's next runs, wherever they run.
    fn remember(
        &self,
        job: &JobId,
        memory: &Memory,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// JetStream, with publish retries under the same message ids.
#[derive(Debug, Clone)]
pub struct JetStreamPublisher {
    js: jetstream::Context,
    policy: RetryPolicy,
    memory: crate::dedupe::MemoryBucket,
}

impl JetStreamPublisher {
    /// Publishes through `js`, retrying per `policy`, keeping dedupe memory in `memory`.
    pub fn new(
        js: jetstream::Context,
        policy: RetryPolicy,
        memory: crate::dedupe::MemoryBucket,
    ) -> Self {
        Self { js, policy, memory }
    }
}

impl Publisher for JetStreamPublisher {
    async fn publish_page(
        &self,
        messages: &[Outgoing],
        cancel: &CancellationToken,
    ) -> Result<(), PublishError> {
        let started = std::time::Instant::now();
        let report = publish_all(&self.js, messages, &self.policy, cancel).await?;
        let metrics = metrics::global();
        metrics.published("page", started.elapsed());
        metrics.articles_published.inc_by(messages.len() as u64);
        if report.duplicates > 0 || report.retried > 0 {
            tracing::debug!(
                acked = report.acked,
                duplicates = report.duplicates,
                retried = report.retried,
                "page published with retries"
            );
        }
        Ok(())
    }

    async fn publish_marker(
        &self,
        marker: &Outgoing,
        cancel: &CancellationToken,
    ) -> Result<(), PublishError> {
        let started = std::time::Instant::now();
        publish_one(&self.js, marker, &self.policy, cancel).await?;
        metrics::global().published("marker", started.elapsed());
        Ok(())
    }

    async fn recall(&self, job: &JobId) -> Result<Memory, PublishError> {
        self.memory.load(job).await
    }

    async fn remember(&self, job: &JobId, memory: &Memory) -> Result<(), PublishError> {
        self.memory.save(job, memory).await
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd {
    /// Every article published, then a `complete` marker.
    Complete,
    /// A fetch failed for good; a `failed` marker says why.
    Failed(FetchError),
    /// Publishing gave up; no marker, the batch stays incomplete.
    PublishFailed(PublishError),
    /// Stopped or shut down mid-run; no marker.
    Cancelled,
    /// The request budget had no room for the run's first request: nothing was sent and no
    /// marker published.
    Skipped(FetchError),
}

impl From<PublishError> for RunEnd {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::Cancelled => Self::Cancelled,
            other => Self::PublishFailed(other),
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    /// The batch.
    pub batch_id: BatchId,
    /// How it ended.
    pub end: RunEnd,
    /// Articles published.
    pub articles: u32,
    /// Pages fetched.
    pub pages: u32,
}

/// Runs batches of any job: the worker's id, where pages come from and where batches go.
#[derive(Debug)]
pub struct Runner<S, P> {
    /// Named in every message's worker header.
    pub worker_id: WorkerId,
    /// NewsAPI.
    pub source: S,
    /// JetStream.
    pub publisher: P,
}

impl<S: PageSource, P: Publisher> Runner<S, P> {
    /// Runs one batch of `spec` until its marker is acknowledged, it fails, or `cancel` fires.
    /// `lateness` is how late the run started, carried in the marker's headers.
    pub async fn run_batch(
        &self,
        spec: &JobSpec,
        lateness: Duration,
        cancel: &CancellationToken,
    ) -> RunReport {
        let clock = Instant::now();
        let mut batch = Batch {
            spec,
            worker: self.worker_id.as_str(),
            id: BatchId::generate(),
            published: 0,
            pages: 0,
            requests: AtomicU32::new(0),
            shaper: Shaper::default(),
            memory: Memory::default(),
            published_ids: Vec::new(),
        };
        let started_at = now_utc();
        let span = tracing::info_span!("batch", batch_id = %batch.id);
        let fetched = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(RunEnd::Cancelled),
            result = self.fetch_and_publish(&mut batch, cancel).instrument(span.clone()) => result,
        };
        let failure = match fetched {
            Ok(failure) => failure,
            Err(end) => return span.in_scope(|| batch.finish(end, clock)),
        };
        if cancel.is_cancelled() {
            return span.in_scope(|| batch.finish(RunEnd::Cancelled, clock));
        }
        let marker = BatchMarker {
            job_id: spec.id().clone(),
            batch_id: batch.id,
            status: if failure.is_none() {
                MarkerStatus::Complete
            } else {
                MarkerStatus::Failed
            },
            article_count: batch.published,
            started_at,
            finished_at: now_utc(),
            error: failure.as_ref().map(FetchError::to_info),
            fetched_count: Some(batch.shaper.fetched),
            dropped: Some(batch.shaper.dropped.clone()),
        };
        let message = batch.marker_message(&marker, lateness);
        let published = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(RunEnd::Cancelled),
            result = self.publisher.publish_marker(&message, cancel).instrument(span.clone()) => result.map_err(RunEnd::from),
        };
        let end = match (published, failure) {
            (Err(end), _) => end,
            (Ok(()), None) => {
                self.remember(&mut batch).await;
                RunEnd::Complete
            }
            (Ok(()), Some(error)) => RunEnd::Failed(error),
        };
        span.in_scope(|| batch.finish(end, clock))
    }

    /// Adds a complete batch to the job's dedupe memory, after its marker was acknowledged:
    /// dying before this write costs the next run some repeats, never a lost article (writing
    /// first would hide articles of a batch that never completed).
    async fn remember(&self, batch: &mut Batch<'_>) {
        let window = batch.spec.pipeline().memory_window();
        if window == 0 {
            return;
        }
        let ids = std::mem::take(&mut batch.published_ids);
        batch.memory.remember(ids, window);
        if let Err(error) = self
            .publisher
            .remember(batch.spec.id(), &batch.memory)
            .await
        {
            tracing::warn!(job = %batch.spec.id(), batch = %batch.id, %error,
                "dedupe memory not updated; the next run may repeat this batch's articles");
        }
    }

    /// The page loop: each page is shaped and published as it comes, or, when a stage needs
    /// the whole batch, every page is fetched first and the batch shaped and published at
    /// once. `Ok(None)`: every page fetched and published; `Ok(Some(e))`: a fetch failed for
    /// good after the pages before it were published; `Err`: no marker is due.
    async fn fetch_and_publish(
        &self,
        batch: &mut Batch<'_>,
        cancel: &CancellationToken,
    ) -> Result<Option<FetchError>, RunEnd> {
        let spec = batch.spec;
        let page_size = spec.page_size().get();
        let whole_batch = spec.pipeline().whole_batch();
        if spec.pipeline().memory_window() > 0 {
            batch.memory = self.publisher.recall(spec.id()).await?;
        }
        let mut held = Vec::new();
        let mut raw_total = 0u64;
        let mut failure = None;
        for page in 1..=spec.max_pages().get() {
            let request = PageRequest {
                spec,
                page,
                sent: &batch.requests,
            };
            let page = match self.source.fetch(request).await {
                Ok(PageOutcome::Page(page)) => page,
                Ok(PageOutcome::EndOfResults) => break,
                Err(error) if error.is_budget() && batch.requests.load(Ordering::Relaxed) == 0 => {
                    return Err(RunEnd::Skipped(error));
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            batch.pages += 1;
            let raw_count = page.articles.len();
            raw_total += raw_count as u64;
            held.extend(page.articles);
            if !whole_batch {
                self.publish(batch, std::mem::take(&mut held), cancel)
                    .await?;
            }
            if raw_count < page_size as usize || raw_total >= page.total_results {
                break;
            }
        }
        if whole_batch {
            self.publish(batch, held, cancel).await?;
        }
        Ok(failure)
    }

    /// Shapes `raw` and publishes what is left, a page's worth at a time.
    async fn publish(
        &self,
        batch: &mut Batch<'_>,
        raw: Vec<newsflow_core::article::RawArticle>,
        cancel: &CancellationToken,
    ) -> Result<(), RunEnd> {
        let articles = batch
            .shaper
            .shape(batch.spec, batch.id, raw, &batch.memory, now_utc());
        let messages = batch.messages(articles);
        for page in messages.chunks(batch.spec.page_size().get() as usize) {
            self.publisher.publish_page(page, cancel).await?;
            batch.published += page.len() as u32;
        }
        Ok(())
    }
}

/// A batch in the making.
struct Batch<'a> {
    spec: &'a JobSpec,
    worker: &'a str,
    id: BatchId,
    published: u32,
    pages: u32,
    requests: AtomicU32,
    /// Shapes the run's articles, counting what it drops.
    shaper: Shaper,
    /// The job's dedupe memory, when its pipeline dedupes.
    memory: Memory,
    /// Ids of the articles published so far, for the dedupe memory.
    published_ids: Vec<String>,
}

impl Batch<'_> {
    /// Shaped articles' messages, numbered on from the articles published so far. An article
    /// that cannot be serialized is left out (and out of the dedupe memory); seq stays dense.
    fn messages(&mut self, articles: Vec<newsflow_core::Article>) -> Vec<Outgoing> {
        let job = self.spec.id();
        let subject = subjects::articles(job, self.id);
        let mut messages = Vec::with_capacity(articles.len());
        for article in articles {
            let seq = self.published + messages.len() as u32;
            let (url, id) = (article.url.clone(), article.id.as_str().to_owned());
            match serde_json::to_vec(&ArticleMessage { article, seq }) {
                Ok(payload) => {
                    self.published_ids.push(id);
                    messages.push(Outgoing {
                        subject: subject.clone(),
                        msg_id: subjects::article_msg_id(job, self.id, seq),
                        headers: vec![(subjects::WORKER_HEADER, self.worker.to_owned())],
                        payload: Bytes::from(payload),
                    });
                }
                Err(error) => {
                    tracing::warn!(job = %job, %url, %error, "dropping an article that cannot be serialized");
                }
            }
        }
        messages
    }

    fn marker_message(&self, marker: &BatchMarker, lateness: Duration) -> Outgoing {
        let job = self.spec.id();
        let mut headers = vec![
            (subjects::WORKER_HEADER, self.worker.to_owned()),
            (LATENESS_HEADER, lateness.as_millis().to_string()),
        ];
        match serde_json::to_string(self.spec) {
            Ok(spec) => headers.push((subjects::JOB_SPEC_HEADER, spec)),
            Err(error) => {
                tracing::warn!(job = %job, %error, "marker sent without its job spec header")
            }
        }
        let payload = match serde_json::to_vec(marker) {
            Ok(payload) => payload,
            // A marker holds ids, counts and valid times only; this cannot happen.
            Err(error) => {
                tracing::error!(job = %job, %error, "could not serialize a marker");
                Vec::new()
            }
        };
        Outgoing {
            subject: subjects::batch_marker(job, self.id),
            msg_id: subjects::marker_msg_id(job, self.id),
            headers,
            payload: Bytes::from(payload),
        }
    }

    /// Logs how the run ended and reports it.
    fn finish(self, end: RunEnd, clock: Instant) -> RunReport {
        let job = self.spec.id();
        let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, articles, pages) = (status_name(&end), self.published, self.pages);
        match &end {
            RunEnd::Failed(error) => tracing::warn!(
                job = %job, batch = %self.id, code = %error.to_info().code, %error,
                "fetching failed; published a failed marker"
            ),
            RunEnd::PublishFailed(error) => tracing::error!(
                job = %job, batch = %self.id, %error,
                "publishing gave up; the batch stays without a marker"
            ),
            RunEnd::Skipped(error) => tracing::info!(
                job = %job, code = %error.to_info().code, %error,
                "run skipped: nothing sent, no marker"
            ),
            RunEnd::Complete | RunEnd::Cancelled => {}
        }
        metrics::global().run_finished(status, clock.elapsed());
        tracing::info!(job = %job, batch = %self.id, outcome = status, articles, pages, duration_ms, "batch finished");
        RunReport {
            batch_id: self.id,
            end,
            articles,
            pages,
        }
    }
}

fn status_name(end: &RunEnd) -> &'static str {
    match end {
        RunEnd::Complete => "complete",
        RunEnd::Failed(_) => "failed",
        RunEnd::PublishFailed(_) => "publish_failed",
        RunEnd::Cancelled => "cancelled",
        RunEnd::Skipped(_) => "skipped",
    }
}

#[cfg(test)]
mod tests;
