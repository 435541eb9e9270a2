//! Stream messages for unit tests that feed `Ingest` as the consumer would, without a broker.

use newsflow_core::{Article, ArticleId, ArticleMessage, BatchId, BatchMarker, JobId};
use newsflow_core::{MarkerStatus, Source};
use newsflow_nats::subjects;

use super::ingest::{parse, Ingest};

/// Article `seq` of a batch, with a URL unique to it.
pub fn article(job: &JobId, batch: BatchId, seq: u32) -> Article {
    let url = format!("https://unit.example/{job}/{batch}/{seq}");
    Article {
        id: ArticleId::from_url(&url),
        job_id: job.clone(),
        batch_id: batch,
        source: Source {
            id: None,
            name: Some("Unit Example".to_owned()),
        },
        author: None,
        title: Some(format!("article {seq}")),
        description: None,
        url,
        url_to_image: None,
        published_at: Some(newsflow_core::now_utc()),
        content: None,
        fetched_at: newsflow_core::now_utc(),
        extra: None,
    }
}

/// The subject and payload of article `seq`.
pub fn article_message(job: &JobId, batch: BatchId, seq: u32) -> (String, Vec<u8>) {
    let message = ArticleMessage {
        article: article(job, batch, seq),
        seq,
    };
    let payload = serde_json::to_vec(&message).expect("serializes");
    (subjects::articles(job, batch), payload)
}

/// The subject and payload of a `complete` marker counting `count` articles.
pub fn marker_message(job: &JobId, batch: BatchId, count: u32) -> (String, Vec<u8>) {
    let marker = BatchMarker {
        job_id: job.clone(),
        batch_id: batch,
        status: MarkerStatus::Complete,
        article_count: count,
        started_at: newsflow_core::now_utc(),
        finished_at: newsflow_core::now_utc(),
        error: None,
        fetched_count: None,
        dropped: None,
    };
    let payload = serde_json::to_vec(&marker).expect("serializes");
    (subjects::batch_marker(job, batch), payload)
}

/// Parses and applies one message.
pub fn apply(ingest: &mut Ingest, (subject, payload): (String, Vec<u8>)) {
    ingest
        .apply(parse(&subject, None, &payload), 0)
        .expect("applies");
}
