//! A conforming publisher of synthetic batches (articles, then their `complete` marker) that
//! records exactly what the server acknowledged, retrying unacknowledged publishes with the
//! same `Nats-Msg-Id` the way a worker does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use newsflow_core::{Article, ArticleId, ArticleMessage, BatchId, BatchMarker, JobId, Source};
use newsflow_nats::subjects;
use tokio::task::JoinHandle;

use crate::bus::{complete_marker, Bus};

/// How long one message may keep failing before the publisher gives up on it (and does not
/// count it as acknowledged).
pub const PUBLISH_WITHIN: Duration = Duration::from_secs(90);

/// `count` distinct articles of `batch`, each with its own URL.
pub fn synthetic_articles(job: &str, batch: BatchId, count: usize) -> Vec<Article> {
    let job_id = JobId::parse(job).unwrap_or_else(|e| panic!("job id {job:?}: {e:?}"));
    let fetched_at = newsflow_core::now_utc();
    (0..count)
        .map(|i| {
            let url = format!("https://faults.example/{job}/{batch}/{i}");
            Article {
                id: ArticleId::from_url(&url),
                job_id: job_id.clone(),
                batch_id: batch,
                source: Source {
                    id: Some("faults".to_owned()),
                    name: Some("Fault injection".to_owned()),
                },
                author: None,
                title: Some(format!("{job} article {i}")),
                description: None,
                url,
                url_to_image: None,
                published_at: Some(fetched_at),
                content: None,
                fetched_at,
                extra: None,
            }
        })
        .collect()
}

/// `(job, batch)` as strings.
pub type BatchKey = (String, String);

/// What the server acknowledged: article ids by batch and seq, and the markers' counts.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<LedgerInner>,
}

#[derive(Debug, Default, Clone)]
struct LedgerInner {
    articles: BTreeMap<BatchKey, BTreeMap<u32, String>>,
    markers: BTreeMap<BatchKey, u32>,
    failed_attempts: u64,
    last_failure: Option<String>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, LedgerInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn article_acked(&self, article: &Article, seq: u32) {
        self.lock()
            .articles
            .entry((article.job_id.to_string(), article.batch_id.to_string()))
            .or_default()
            .insert(seq, article.id.as_str().to_owned());
    }

    fn marker_acked(&self, marker: &BatchMarker) {
        self.lock().markers.insert(
            (marker.job_id.to_string(), marker.batch_id.to_string()),
            marker.article_count,
        );
    }

    fn attempt_failed(&self, why: String) {
        let mut inner = self.lock();
        inner.failed_attempts += 1;
        inner.last_failure = Some(why);
    }

    /// Publish attempts that got no ack, and the last reason.
    pub fn failures(&self) -> (u64, Option<String>) {
        let inner = self.lock();
        (inner.failed_attempts, inner.last_failure.clone())
    }

    /// Acknowledged article ids by batch and seq.
    pub fn articles(&self) -> BTreeMap<BatchKey, BTreeMap<u32, String>> {
        self.lock().articles.clone()
    }

    /// Batches whose marker was acknowledged, with its article count.
    pub fn markers(&self) -> BTreeMap<BatchKey, u32> {
        self.lock().markers.clone()
    }

    /// How many articles were acknowledged.
    pub fn acked_articles(&self) -> usize {
        self.lock().articles.values().map(BTreeMap::len).sum()
    }

    /// The newest batch with an acknowledged marker, per job.
    pub fn newest_complete(&self) -> BTreeMap<String, String> {
        let mut newest: BTreeMap<String, String> = BTreeMap::new();
        for (job, batch) in self.lock().markers.keys() {
            let entry = newest.entry(job.clone()).or_default();
            if batch > entry {
                *entry = batch.clone();
            }
        }
        newest
    }
}

/// Publishes one message until the server acknowledges it (same `Nats-Msg-Id` every time), or
/// `PUBLISH_WITHIN` passes. `true` when acknowledged.
async fn publish_until_acked(
    js: &jetstream::Context,
    ledger: &Ledger,
    subject: &str,
    msg_id: &str,
    payload: &Bytes,
) -> bool {
    let started = Instant::now();
    let mut wait = Duration::from_millis(50);
    loop {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let outcome = match js
            .publish_with_headers(subject.to_owned(), headers, payload.clone())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| format!("ack: {e}")),
            Err(e) => Err(format!("send: {e}")),
        };
        match outcome {
            Ok(()) => return true,
            Err(why) => ledger.attempt_failed(why),
        }
        if started.elapsed() > PUBLISH_WITHIN {
            return false;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// Publishes `articles` (seq 0..n), all sent before any ack is awaited, then retries the ones
/// not acknowledged, then the `complete` marker once every article was. Records each ack.
/// `true` when the whole batch, marker included, was acknowledged.
pub async fn publish_batch(js: &jetstream::Context, ledger: &Ledger, articles: &[Article]) -> bool {
    let Some(first) = articles.first() else {
        return true;
    };
    let (job, batch) = (first.job_id.clone(), first.batch_id);
    let started_at = newsflow_core::now_utc();
    let subject = subjects::articles(&job, batch);
    let mut sent = Vec::with_capacity(articles.len());
    for (seq, article) in articles.iter().enumerate() {
        let seq = seq as u32;
        let payload = Bytes::from(
            serde_json::to_vec(&ArticleMessage {
                article: article.clone(),
                seq,
            })
            .expect("an article serializes"),
        );
        let msg_id = subjects::article_msg_id(&job, batch, seq);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        let ack = js
            .publish_with_headers(subject.clone(), headers, payload.clone())
            .await
            .ok();
        sent.push((seq, article, msg_id, payload, ack));
    }
    // Awaited together, so acks lost in an outage cost one timeout, not one each.
    let acks = futures::future::join_all(sent.iter_mut().map(|(_, _, _, _, ack)| {
        let ack = ack.take();
        async move {
            match ack {
                Some(ack) => ack.await.map(|_| ()).map_err(|e| format!("ack: {e}")),
                None => Err("send failed".to_owned()),
            }
        }
    }))
    .await;
    let mut all_acked = true;
    for ((seq, article, msg_id, payload, _), outcome) in sent.into_iter().zip(acks) {
        let acked = match outcome {
            Ok(()) => true,
            Err(why) => {
                ledger.attempt_failed(why);
                false
            }
        };
        if acked || publish_until_acked(js, ledger, &subject, &msg_id, &payload).await {
            ledger.article_acked(article, seq);
        } else {
            all_acked = false;
        }
    }
    if !all_acked {
        return false;
    }
    let marker = complete_marker(&job, batch, articles.len() as u32, started_at);
    let payload = Bytes::from(serde_json::to_vec(&marker).expect("a marker serializes"));
    let acked = publish_until_acked(
        js,
        ledger,
        &subjects::batch_marker(&job, batch),
        &subjects::marker_msg_id(&job, batch),
        &payload,
    )
    .await;
    if acked {
        ledger.marker_acked(&marker);
    }
    acked
}

/// A publisher running in the background.
#[derive(Debug)]
pub struct PublisherHandle {
    /// What the server acknowledged so far.
    pub ledger: Arc<Ledger>,
    /// Batches fully acknowledged so far.
    pub batches_done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl PublisherHandle {
    /// Whether every task has ended.
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }

    /// Asks the tasks to stop after their batch in hand and waits for them.
    pub async fn stop(self) -> Arc<Ledger> {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await
    }

    /// Waits for the tasks to end by themselves.
    pub async fn join(self) -> Arc<Ledger> {
        for task in self.tasks {
            task.await
                .unwrap_or_else(|e| panic!("a publisher task failed: {e}"));
        }
        self.ledger
    }
}

/// Publishes batches of `per_batch` synthetic articles for each of `jobs` (one task per job),
/// `batches` batches each, or until stopped when `batches` is `None`, pausing `pause` between
/// two batches of a job.
pub fn spawn_publisher(
    bus: &Bus,
    jobs: &[&str],
    per_batch: usize,
    batches: Option<usize>,
    pause: Duration,
) -> PublisherHandle {
    let ledger = Arc::new(Ledger::default());
    let batches_done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = jobs
        .iter()
        .map(|job| {
            let (js, job) = (bus.jetstream().clone(), (*job).to_owned());
            let (ledger, done, stop) = (ledger.clone(), batches_done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut published = 0usize;
                while !stop.load(Ordering::Relaxed) && batches.is_none_or(|n| published < n) {
                    let articles = synthetic_articles(&job, BatchId::generate(), per_batch);
                    if publish_batch(&js, &ledger, &articles).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    published += 1;
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect();
    PublisherHandle {
        ledger,
        batches_done,
        stop,
        tasks,
    }
}
