//! Retention through the writer's own calls: what is pruned, the order that makes an
//! interrupted prune finishable, and abandoned batches.

use std::time::Duration;

use newsflow_core::{Article, ArticleId, ArticleMessage, BatchId, BatchMarker, BatchStatus};
use newsflow_core::{JobId, JobSpec, JobState, KeepBatches, MarkerStatus, Source};
use newsflow_nats::subjects;
use serde_json::json;

use super::ingest::parse;
use super::{batch_key, job_prefix, prefix_end, Ingest, JobRecord, Retention, Store};

fn job() -> JobId {
    JobId::parse("kept").expect("valid")
}

fn create_job(store: &Store, keep: Option<u64>) {
    let mut body = json!({"id":"kept","params":{"q":"x"},"interval_secs":3600});
    if let Some(keep) = keep {
        body["keep_batches"] = json!(keep);
    }
    let record = JobRecord {
        spec: JobSpec::from_create_request(&body).expect("valid"),
        state: JobState::Running,
        worker: None,
        created_at: newsflow_core::now_utc(),
        updated_at: newsflow_core::now_utc(),
    };
    assert!(store.create_job(&record).expect("stores"));
}

/// Publishes, as the stream would, a batch started at `ms` with articles at `urls` and, when
/// `status` is given, its marker.
fn batch(ingest: &mut Ingest, ms: u64, urls: &[&str], status: Option<MarkerStatus>) -> BatchId {
    let batch = BatchId::from_parts(ms, 7);
    for (seq, url) in urls.iter().enumerate() {
        let article = Article {
            id: ArticleId::from_url(url),
            job_id: job(),
            batch_id: batch,
            source: Source::default(),
            author: None,
            title: Some((*url).to_owned()),
            description: None,
            url: (*url).to_owned(),
            url_to_image: None,
            published_at: None,
            content: None,
            fetched_at: newsflow_core::now_utc(),
            extra: None,
        };
        let seq = seq as u32;
        let payload = serde_json::to_vec(&ArticleMessage { article, seq }).expect("serializes");
        ingest
            .apply(parse(&subjects::articles(&job(), batch), None, &payload), 0)
            .expect("applies");
    }
    if let Some(status) = status {
        let marker = BatchMarker {
            job_id: job(),
            batch_id: batch,
            status,
            article_count: urls.len() as u32,
            started_at: newsflow_core::now_utc(),
            finished_at: newsflow_core::now_utc(),
            error: (status == MarkerStatus::Failed)
                .then(|| newsflow_core::ErrorInfo::new("upstream", "failed")),
            fetched_count: None,
            dropped: None,
        };
        let payload = serde_json::to_vec(&marker).expect("serializes");
        ingest
            .apply(
                parse(&subjects::batch_marker(&job(), batch), None, &payload),
                0,
            )
            .expect("applies");
    }
    batch
}

fn batches(store: &Store) -> Vec<BatchId> {
    let (page, _) = store.batches_page(&job(), None, 100).expect("reads");
    page.into_iter().map(|(id, _)| id).collect()
}

fn article_count(store: &Store) -> usize {
    let prefix = job_prefix(&job());
    store
        .articles
        .range(prefix.clone()..prefix_end(&prefix))
        .count()
}

fn feed_titles(store: &Store) -> Vec<String> {
    let page = store
        .feed_page(&super::FeedFilter::default(), None, 100)
        .expect("reads");
    let mut titles: Vec<String> = page
        .articles
        .iter()
        .map(|a| {
            let article: Article = serde_json::from_slice(a).expect("an article");
            article.title.unwrap_or_default()
        })
        .collect();
    titles.sort();
    titles
}

#[tokio::test]
async fn pruning_keeps_the_newest_batches_and_the_latest_complete_one() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path()).expect("opens");
    create_job(&store, Some(2));
    let mut ingest = Ingest::new(store.clone()).expect("starts");
    let old = batch(
        &mut ingest,
        1_000,
        &["a", "shared"],
        Some(MarkerStatus::Complete),
    );
    let complete = batch(
        &mut ingest,
        2_000,
        &["b", "shared"],
        Some(MarkerStatus::Complete),
    );
    batch(&mut ingest, 3_000, &["c"], Some(MarkerStatus::Failed));
    let failed = batch(&mut ingest, 4_000, &["d"], Some(MarkerStatus::Failed));
    let newest = batch(&mut ingest, 5_000, &["e"], Some(MarkerStatus::Failed));

    let pruned = ingest.prune_due().await.expect("prunes");

    assert_eq!(pruned.len(), 2, "{pruned:?}");
    assert_eq!(batches(&store), vec![newest, failed, complete]);
    assert_eq!(article_count(&store), 4, "b, shared, d, e stay");
    assert_eq!(feed_titles(&store), vec!["b", "shared"]);
    assert!(store.batch(&job(), old).expect("reads").is_none());
    assert_eq!(store.pruning.len(), 0, "every prune finished");
}

#[tokio::test]
async fn a_job_without_its_own_keep_batches_uses_the_service_default() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path()).expect("opens");
    create_job(&store, None);
    let mut ingest = Ingest::new(store.clone())
        .expect("starts")
        .with_retention(Retention {
            default_keep: KeepBatches::new(1).expect("valid"),
            abandon_after: None,
        });
    batch(&mut ingest, 1_000, &["a"], Some(MarkerStatus::Complete));
    let newest = batch(&mut ingest, 2_000, &["b"], Some(MarkerStatus::Complete));

    ingest.prune_due().await.expect("prunes");

    assert_eq!(batches(&store), vec![newest]);
    assert_eq!(feed_titles(&store), vec!["b"]);
}

#[tokio::test]
async fn a_prune_interrupted_after_its_first_deletion_is_finished_at_start_up() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let old;
    {
        let store = Store::open(dir.path()).expect("opens");
        create_job(&store, Some(1));
        let mut ingest = Ingest::new(store.clone()).expect("starts");
        old = batch(
            &mut ingest,
            1_000,
            &["a", "b", "c"],
            Some(MarkerStatus::Complete),
        );
        batch(&mut ingest, 2_000, &["d"], Some(MarkerStatus::Complete));
        // What a crash leaves after the pruning mark and the batch record's deletion.
        store
            .pruning
            .insert(batch_key(&job(), old), &[])
            .expect("writes");
        store
            .batches
            .remove(batch_key(&job(), old))
            .expect("writes");
        store.flush().await.expect("flushes");
    }
    let store = Store::open(dir.path()).expect("opens again");
    let mut ingest = Ingest::new(store.clone()).expect("starts again");

    assert_eq!(
        article_count(&store),
        1,
        "no orphan articles of the pruned batch"
    );
    assert_eq!(feed_titles(&store), vec!["d"]);
    ingest.prune_due().await.expect("finishes");
    assert_eq!(store.pruning.len(), 0);
}

#[tokio::test]
async fn a_batch_without_a_marker_is_abandoned_once_old_enough_and_loses_its_articles() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path()).expect("opens");
    create_job(&store, Some(5));
    let mut ingest = Ingest::new(store.clone())
        .expect("starts")
        .with_retention(Retention {
            default_keep: KeepBatches::DEFAULT,
            abandon_after: Some(Duration::from_secs(2)),
        });
    let open = batch(&mut ingest, 10_000, &["a", "b"], None);

    assert_eq!(ingest.sweep_abandoned(11_000).expect("sweeps"), 0);
    assert_eq!(article_count(&store), 2);
    assert_eq!(ingest.sweep_abandoned(12_000).expect("sweeps"), 1);

    assert_eq!(article_count(&store), 0);
    let record = store.batch(&job(), open).expect("reads").expect("kept");
    assert!(record.abandoned && record.marker.is_none());
    assert_eq!(ingest.sweep_abandoned(20_000).expect("sweeps"), 0, "once");
    let view = crate::http::views::BatchView::new(
        open,
        &record,
        &crate::http::views::BatchContext {
            newest: Some(open),
            latest: None,
            running: true,
        },
        || 0,
    );
    assert_eq!(view.status, BatchStatus::Incomplete);
}
