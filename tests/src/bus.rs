//! `Bus`: the test's own NATS connection, to act as a conforming (or garbage) publisher on
//! the `NEWS` stream, watch heartbeats, and read what the stream holds.

use std::time::Duration;

use async_nats::jetstream::{self, message::StreamMessage};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use newsflow_core::{Article, ArticleMessage, BatchId, BatchMarker};
use newsflow_nats::subjects;
use newsflow_nats::wire::Heartbeat;
use serde_json::Value;

/// A NATS connection with JetStream.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Bus {
    /// Connects to `url`, or to any of several comma-separated URLs (a cluster), failing over.
    pub async fn connect(url: &str) -> Self {
        let servers: Vec<async_nats::ServerAddr> = url
            .split(',')
            .map(|one| {
                one.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("NATS URL {one:?}: {e}"))
            })
            .collect();
        let client = async_nats::connect(servers)
            .await
            .unwrap_or_else(|e| panic!("connecting to NATS at {url}: {e}"));
        let js = jetstream::new(client.clone());
        Self { client, js }
    }

    /// The core client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Publishes `payload` to the stream on `subject` with an optional `Nats-Msg-Id` and extra
    /// headers, and awaits the stream's ack. Returns the stream sequence and whether the
    /// server recognised it as a duplicate.
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        headers: &[(&str, &str)],
        payload: impl Into<Bytes>,
    ) -> (u64, bool) {
        let mut map = HeaderMap::new();
        if let Some(id) = msg_id {
            map.insert("Nats-Msg-Id", id);
        }
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), map, payload.into())
            .await
            .unwrap_or_else(|e| panic!("publishing to {subject}: {e}"))
            .await
            .unwrap_or_else(|e| panic!("awaiting the stream's ack for {subject}: {e}"));
        (ack.sequence, ack.duplicate)
    }

    /// Publishes one article the way a conforming worker does.
    pub async fn publish_article(&self, message: &ArticleMessage) -> (u64, bool) {
        let article = &message.article;
        let payload = serde_json::to_vec(message).expect("an article serializes");
        self.publish(
            &subjects::articles(&article.job_id, article.batch_id),
            Some(&subjects::article_msg_id(
                &article.job_id,
                article.batch_id,
                message.seq,
            )),
            &[],
            payload,
        )
        .await
    }

    /// Publishes a marker the way a conforming worker does.
    pub async fn publish_marker(&self, marker: &BatchMarker) -> (u64, bool) {
        let payload = serde_json::to_vec(marker).expect("a marker serializes");
        self.publish(
            &subjects::batch_marker(&marker.job_id, marker.batch_id),
            Some(&subjects::marker_msg_id(&marker.job_id, marker.batch_id)),
            &[],
            payload,
        )
        .await
    }

    /// Publishes `articles` (seq 0..n in order) and then their `complete` marker.
    pub async fn publish_complete_batch(&self, articles: &[Article]) -> BatchMarker {
        let first = articles
            .first()
            .expect("a batch published this way needs at least one article");
        let started_at = newsflow_core::now_utc();
        for (seq, article) in articles.iter().enumerate() {
            self.publish_article(&ArticleMessage {
                article: article.clone(),
                seq: seq as u32,
            })
            .await;
        }
        let marker = complete_marker(
            &first.job_id,
            first.batch_id,
            articles.len() as u32,
            started_at,
        );
        self.publish_marker(&marker).await;
        marker
    }

    /// Subscribes to heartbeats.
    pub async fn heartbeats(&self) -> Heartbeats {
        let subscriber = self
            .client
            .subscribe(subjects::HEARTBEAT)
            .await
            .unwrap_or_else(|e| panic!("subscribing to heartbeats: {e}"));
        // The subscription must reach the server before the caller acts on it.
        self.flush().await;
        Heartbeats { subscriber }
    }

    /// A core subscription to `subject` (wildcards allowed), flushed to the server.
    pub async fn subscribe(&self, subject: &str) -> async_nats::Subscriber {
        let subscriber = self
            .client
            .subscribe(subject.to_owned())
            .await
            .unwrap_or_else(|e| panic!("subscribing to {subject}: {e}"));
        self.flush().await;
        subscriber
    }

    /// Flushes the connection.
    pub async fn flush(&self) {
        self.client
            .flush()
            .await
            .unwrap_or_else(|e| panic!("flushing the NATS connection: {e}"));
    }

    /// The `NEWS` stream's info (panics when it does not exist).
    pub async fn stream_info(&self) -> jetstream::stream::Info {
        let mut stream = self
            .js
            .get_stream(subjects::STREAM)
            .await
            .unwrap_or_else(|e| panic!("looking up the NEWS stream: {e}"));
        stream
            .info()
            .await
            .unwrap_or_else(|e| panic!("reading the NEWS stream's info: {e}"))
            .clone()
    }

    /// Every message the `NEWS` stream holds now, in stream order, whose subject starts
    /// with `subject_prefix` (`""` for all).
    pub async fn stream_messages(&self, subject_prefix: &str) -> Vec<StreamMessage> {
        let info = self.stream_info().await;
        let stream = self
            .js
            .get_stream(subjects::STREAM)
            .await
            .unwrap_or_else(|e| panic!("looking up the NEWS stream: {e}"));
        let mut messages = Vec::new();
        if info.state.messages == 0 {
            return messages;
        }
        for seq in info.state.first_sequence..=info.state.last_sequence {
            // Deleted sequences (max age, purges) are simply skipped.
            if let Ok(message) = stream.get_raw_message(seq).await {
                if message.subject.as_str().starts_with(subject_prefix) {
                    messages.push(message);
                }
            }
        }
        messages
    }

    /// Sends a core request and returns the reply's payload as JSON (for command tests).
    pub async fn request_json(&self, subject: &str, payload: &Value, timeout: Duration) -> Value {
        self.request_bytes(subject, payload.to_string().into_bytes(), timeout)
            .await
    }

    /// Sends raw bytes (garbage included) as a core request and returns the reply as JSON.
    pub async fn request_bytes(&self, subject: &str, payload: Vec<u8>, timeout: Duration) -> Value {
        let request = async_nats::Request::new()
            .payload(Bytes::from(payload))
            .timeout(Some(timeout));
        let reply = self
            .client
            .send_request(subject.to_owned(), request)
            .await
            .unwrap_or_else(|e| panic!("request on {subject}: {e}"));
        serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
            panic!(
                "reply on {subject} is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&reply.payload)
            )
        })
    }
}

/// A subscription to `news.ctl.heartbeat`.
#[derive(Debug)]
pub struct Heartbeats {
    subscriber: async_nats::Subscriber,
}

impl Heartbeats {
    /// The next heartbeat within `within`, parsed; panics on a heartbeat that does not parse
    /// and returns `None` on silence.
    pub async fn next_within(&mut self, within: Duration) -> Option<Heartbeat> {
        let message = tokio::time::timeout(within, self.subscriber.next())
            .await
            .ok()??;
        Some(
            serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
                panic!(
                    "a heartbeat does not parse ({e}): {:?}",
                    String::from_utf8_lossy(&message.payload)
                )
            }),
        )
    }

    /// Waits up to `within` for a heartbeat from `worker` that satisfies `pred`; returns it.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        worker: &str,
        mut pred: impl FnMut(&Heartbeat) -> bool,
    ) -> Heartbeat {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(beat) if beat.worker_id.as_str() == worker && pred(&beat) => return beat,
                Some(_) => {}
                None => panic!("timed out after {within:?} waiting for a heartbeat: {what}"),
            }
        }
    }
}

/// Article `i` of a batch, as a conforming worker would publish it; `variant` changes its URL
/// and title (a second, different article for the same seq).
pub fn sample_article(job: &str, batch: BatchId, i: u32, variant: &str) -> Article {
    let url = format!("https://example.com/{job}/{batch}/{i}{variant}");
    Article {
        id: newsflow_core::ArticleId::from_url(&url),
        job_id: newsflow_core::JobId::parse(job).expect("a valid job id"),
        batch_id: batch,
        source: newsflow_core::Source {
            id: None,
            name: Some("Example".into()),
        },
        author: None,
        title: Some(format!("title {i}{variant}")),
        description: None,
        url,
        url_to_image: None,
        published_at: None,
        content: None,
        fetched_at: newsflow_core::now_utc(),
        extra: None,
    }
}

/// A `complete` marker counting `count` articles, started at `started_at` and finished now.
pub fn complete_marker(
    job: &newsflow_core::JobId,
    batch: BatchId,
    count: u32,
    started_at: time::OffsetDateTime,
) -> BatchMarker {
    BatchMarker {
        job_id: job.clone(),
        batch_id: batch,
        status: newsflow_core::MarkerStatus::Complete,
        article_count: count,
        started_at,
        finished_at: newsflow_core::now_utc(),
        error: None,
        fetched_count: None,
        dropped: None,
    }
}
