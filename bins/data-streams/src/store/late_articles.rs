//! A `complete` marker that reaches ingest before some of its articles: after a restart,
//! JetStream redelivers unacknowledged messages only when their ack wait is over, after newer
//! ones. The batch must complete once its last article arrives, even across another restart.

use newsflow_core::{BatchId, BatchStatus, JobId};

use super::testing::{self, apply};
use super::{Ingest, Store};

fn job() -> JobId {
    JobId::parse("late").expect("valid")
}

fn article_message(batch: BatchId, seq: u32) -> (String, Vec<u8>) {
    testing::article_message(&job(), batch, seq)
}

fn marker_message(batch: BatchId, count: u32) -> (String, Vec<u8>) {
    testing::marker_message(&job(), batch, count)
}

fn status(store: &Store, batch: BatchId) -> BatchStatus {
    store
        .batch(&job(), batch)
        .expect("reads")
        .and_then(|record| record.marker)
        .map(|marker| marker.status)
        .expect("a marker is recorded")
}

#[test]
fn a_batch_whose_marker_came_first_completes_when_its_last_article_arrives() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path()).expect("opens");
    let mut ingest = Ingest::new(store.clone()).expect("starts");
    let batch = BatchId::generate();
    apply(&mut ingest, article_message(batch, 0));

    apply(&mut ingest, marker_message(batch, 3));
    assert_eq!(status(&store, batch), BatchStatus::Incomplete);
    let early = store.job_status(&job()).expect("reads");
    assert_eq!(
        early.last_error.map(|e| e.code).as_deref(),
        Some("incomplete_batch")
    );
    apply(&mut ingest, article_message(batch, 1));
    assert_eq!(status(&store, batch), BatchStatus::Incomplete);
    apply(&mut ingest, article_message(batch, 2));

    assert_eq!(status(&store, batch), BatchStatus::Complete);
    let now = store.job_status(&job()).expect("reads");
    assert_eq!(now.latest.map(|latest| latest.id), Some(batch));
    assert!(
        now.last_error.is_none(),
        "the early marker's error is withdrawn"
    );
}

#[test]
fn a_batch_still_missing_articles_at_a_restart_completes_after_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let batch = BatchId::generate();
    {
        let store = Store::open(dir.path()).expect("opens");
        let mut ingest = Ingest::new(store).expect("starts");
        apply(&mut ingest, marker_message(batch, 2));
        apply(&mut ingest, article_message(batch, 0));
    }
    let store = Store::open(dir.path()).expect("opens again");
    let mut ingest = Ingest::new(store.clone()).expect("starts again");

    apply(&mut ingest, article_message(batch, 1));

    assert_eq!(status(&store, batch), BatchStatus::Complete);
    let now = store.job_status(&job()).expect("reads");
    assert_eq!(now.latest.map(|latest| latest.id), Some(batch));
}
