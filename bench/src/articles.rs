//! Realistic stream messages: articles made from the mock's own pages (about 1 KB of JSON
//! each, as the worker publishes them), batches with their `complete` marker, and plans of
//! many jobs' batches.

use anyhow::Context as _;
use bytes::Bytes;
use newsflow_core::article::RawArticle;
use newsflow_core::{
    Article, ArticleId, ArticleMessage, BatchId, BatchMarker, JobId, JobSpec, MarkerStatus,
};
use newsflow_nats::publish::Outgoing;
use newsflow_nats::subjects;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::http::Client;
use crate::jetstream::{publish_message, publish_pipelined, PUBLISH_WINDOW};

/// The article templates: one page of the mock.
#[derive(Debug, Clone)]
pub struct Corpus {
    templates: Vec<Article>,
    fetched_at: OffsetDateTime,
}

#[derive(Deserialize)]
struct Page {
    articles: Vec<RawArticle>,
}

impl Corpus {
    /// Fetches 100 articles from the mock at `addr`.
    pub async fn fetch(addr: &str) -> anyhow::Result<Self> {
        let mut client = Client::new(addr);
        let response = client
            .get_with(
                "/v2/everything?q=bench&pageSize=100&page=1",
                &[("X-Api-Key", "demo-key")],
            )
            .await?;
        anyhow::ensure!(
            response.status == 200,
            "the mock answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        let page: Page = serde_json::from_slice(&response.body).context("the mock's page")?;
        let job = JobId::parse("template").map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let fetched_at = newsflow_core::now_utc();
        let templates: Vec<Article> = page
            .articles
            .into_iter()
            .filter_map(|raw| Article::from_newsapi(raw, &job, BatchId::generate(), fetched_at))
            .collect();
        anyhow::ensure!(!templates.is_empty(), "the mock returned no usable article");
        Ok(Self {
            templates,
            fetched_at,
        })
    }

    /// Article `seq` of `job`'s `batch`: a template with the job's own URL, so each job has
    /// its own articles and its batches re-fetch the same ones, as real jobs do.
    pub fn article(&self, job: &JobId, batch: BatchId, seq: u32) -> ArticleMessage {
        let mut article = self.templates[seq as usize % self.templates.len()].clone();
        article.url = format!("{}?job={job}&n={seq}", article.url);
        article.id = ArticleId::from_url(&article.url);
        article.job_id = job.clone();
        article.batch_id = batch;
        article.fetched_at = self.fetched_at;
        ArticleMessage { article, seq }
    }

    /// The stream message of article `seq`, as the worker publishes it.
    pub fn article_message(&self, job: &JobId, batch: BatchId, seq: u32) -> Outgoing {
        let payload = serde_json::to_vec(&self.article(job, batch, seq))
            .unwrap_or_else(|e| panic!("an article always serializes: {e}"));
        Outgoing {
            subject: subjects::articles(job, batch),
            msg_id: subjects::article_msg_id(job, batch, seq),
            headers: vec![(subjects::WORKER_HEADER, "bench".to_owned())],
            payload: Bytes::from(payload),
        }
    }

    /// A whole batch: `count` articles, then its `complete` marker carrying the job's spec.
    pub fn batch(&self, job: &JobId, batch: BatchId, count: u32) -> Vec<Outgoing> {
        let mut messages: Vec<Outgoing> = (0..count)
            .map(|seq| self.article_message(job, batch, seq))
            .collect();
        messages.push(marker_message(job, batch, count));
        messages
    }
}

/// The `complete` marker of `job`'s `batch` of `count` articles, with the job-spec header.
pub fn marker_message(job: &JobId, batch: BatchId, count: u32) -> Outgoing {
    let now = newsflow_core::now_utc();
    let marker = BatchMarker {
        job_id: job.clone(),
        batch_id: batch,
        status: MarkerStatus::Complete,
        article_count: count,
        started_at: now,
        finished_at: now,
        error: None,
        fetched_count: None,
        dropped: None,
    };
    let mut headers = vec![(subjects::WORKER_HEADER, "bench".to_owned())];
    if let Ok(spec) = job_spec(job.as_str(), "bench", 300, 10, 100) {
        if let Ok(spec) = serde_json::to_string(&spec) {
            headers.push((subjects::JOB_SPEC_HEADER, spec));
        }
    }
    Outgoing {
        subject: subjects::batch_marker(job, batch),
        msg_id: subjects::marker_msg_id(job, batch),
        headers,
        payload: Bytes::from(
            serde_json::to_vec(&marker).unwrap_or_else(|e| panic!("a marker serializes: {e}")),
        ),
    }
}

/// Batch ids from the clock, each later than the one before (a job's batches sort by id).
#[derive(Debug, Default)]
pub struct BatchClock {
    last_ms: u64,
}

impl BatchClock {
    /// The next id; `n` tells apart ids made in the same millisecond by other clocks.
    pub fn next(&mut self, n: u128) -> anyhow::Result<BatchId> {
        let now_ms =
            u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .context("the clock is before 1970")?;
        self.last_ms = now_ms.max(self.last_ms + 1);
        Ok(BatchId::from_parts(self.last_ms, n))
    }
}

/// Publishes `count` articles of `job`'s batch `batch`, awaiting every ack.
pub async fn publish_articles(
    js: &async_nats::jetstream::Context,
    corpus: &Corpus,
    job: &JobId,
    batch: BatchId,
    count: u32,
) -> anyhow::Result<()> {
    let articles = (0..count).map(|seq| corpus.article_message(job, batch, seq));
    publish_pipelined(js, articles, PUBLISH_WINDOW).await?;
    Ok(())
}

/// Publishes the `complete` marker of `job`'s batch `batch` of `count` articles and awaits
/// its ack.
pub async fn publish_marker(
    js: &async_nats::jetstream::Context,
    job: &JobId,
    batch: BatchId,
    count: u32,
) -> anyhow::Result<()> {
    let marker = marker_message(job, batch, count);
    js.send_publish(marker.subject.clone(), publish_message(&marker))
        .await
        .context("publishing a marker")?
        .await
        .context("awaiting a marker's ack")?;
    Ok(())
}

/// A job spec as `POST /jobs` would make it.
pub fn job_spec(
    id: &str,
    q: &str,
    interval_secs: u64,
    max_pages: u64,
    page_size: u64,
) -> anyhow::Result<JobSpec> {
    JobSpec::from_create_request(&serde_json::json!({
        "id": id,
        "params": {"q": q},
        "interval_secs": interval_secs,
        "max_pages": max_pages,
        "page_size": page_size,
    }))
    .map_err(|e| anyhow::anyhow!("job spec {id}: {e:?}"))
}

/// Many jobs' batches: `jobs` jobs named `<prefix>-<n>`, each with `batches` batches whose
/// ids sort in publishing order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The jobs.
    pub jobs: Vec<JobId>,
    /// Per job, its batches in order.
    pub batches: Vec<Vec<BatchId>>,
    /// Articles per batch.
    pub articles: u32,
}

impl Plan {
    /// Builds the plan; batch `b` of every job is stamped `b` ms after the first.
    pub fn new(prefix: &str, jobs: usize, batches: usize, articles: u32) -> anyhow::Result<Self> {
        let base = u64::try_from(OffsetDateTime::now_utc().unix_timestamp() * 1000)
            .context("the clock is before 1970")?
            - 3_600_000;
        let jobs: Vec<JobId> = (0..jobs)
            .map(|j| {
                JobId::parse(&format!("{prefix}-{j:03}")).map_err(|e| anyhow::anyhow!("{e:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let batches = jobs
            .iter()
            .enumerate()
            .map(|(j, _)| {
                (0..batches)
                    .map(|b| BatchId::from_parts(base + b as u64, ((j as u128) << 64) | b as u128))
                    .collect()
            })
            .collect();
        Ok(Self {
            jobs,
            batches,
            articles,
        })
    }

    /// Every (job, batch), batch-major: each job's first batch, then each job's second...
    pub fn order(&self) -> Vec<(JobId, BatchId)> {
        let rounds = self.batches.first().map_or(0, Vec::len);
        (0..rounds)
            .flat_map(|b| {
                self.jobs
                    .iter()
                    .zip(&self.batches)
                    .map(move |(job, batches)| (job.clone(), batches[b]))
            })
            .collect()
    }

    /// Articles in the plan.
    pub fn article_count(&self) -> u64 {
        self.order().len() as u64 * u64::from(self.articles)
    }

    /// Messages in the plan (articles and markers).
    pub fn message_count(&self) -> u64 {
        self.order().len() as u64 * (u64::from(self.articles) + 1)
    }

    /// The last (job, batch) published.
    pub fn last(&self) -> Option<(JobId, BatchId)> {
        self.order().pop()
    }
}
