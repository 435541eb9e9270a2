use std::sync::Arc;

use newsflow_core::article::RawArticle;
use newsflow_core::newsapi::NewsPage;
use serde_json::json;

use super::*;
use crate::testing::{Recorder, ScriptedSource};

fn spec(max_pages: u32, page_size: u32) -> JobSpec {
    JobSpec::from_create_request(&json!({
        "id": "bitcoin", "params": {"q": "bitcoin"},
        "interval_secs": 60, "max_pages": max_pages, "page_size": page_size
    }))
    .expect("valid spec")
}

fn raw(url: Option<&str>) -> RawArticle {
    RawArticle {
        url: url.map(str::to_owned),
        title: Some("t".to_owned()),
        ..RawArticle::default()
    }
}

fn page(total: u64, urls: &[Option<&str>]) -> Result<PageOutcome, FetchError> {
    Ok(PageOutcome::Page(NewsPage {
        total_results: total,
        articles: urls.iter().map(|u| raw(*u)).collect(),
    }))
}

fn full_page(total: u64, first: usize, size: usize) -> Result<PageOutcome, FetchError> {
    let urls: Vec<String> = (first..first + size)
        .map(|i| format!("https://news.test/{i}"))
        .collect();
    let urls: Vec<Option<&str>> = urls.iter().map(|u| Some(u.as_str())).collect();
    page(total, &urls)
}

fn runner(source: ScriptedSource, publisher: Recorder) -> Runner<ScriptedSource, Recorder> {
    Runner {
        worker_id: WorkerId::parse("w1").expect("valid"),
        source,
        publisher,
    }
}

fn header<'a>(message: &'a Outgoing, name: &str) -> Option<&'a str> {
    message
        .headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_page_is_published_then_marked_complete_with_headers() {
    let spec = spec(1, 3);
    let runner = runner(
        ScriptedSource::new([full_page(10, 0, 3)]),
        Recorder::default(),
    );

    let report = runner
        .run_batch(&spec, Duration::from_millis(250), &CancellationToken::new())
        .await;

    assert!(matches!(report.end, RunEnd::Complete), "{:?}", report.end);
    assert_eq!((report.articles, report.pages), (3, 1));
    let sent = runner
        .publisher
        .sent_articles
        .lock()
        .expect("not poisoned")
        .clone();
    for (seq, message) in sent.iter().enumerate() {
        assert_eq!(
            message.subject,
            format!("news.articles.bitcoin.{}", report.batch_id)
        );
        assert_eq!(message.msg_id, format!("bitcoin.{}.{seq}", report.batch_id));
        assert_eq!(header(message, subjects::WORKER_HEADER), Some("w1"));
    }
    let seqs: Vec<u32> = runner.publisher.articles().iter().map(|a| a.seq).collect();
    assert_eq!(seqs, [0, 1, 2]);
    let markers = runner.publisher.markers();
    let [(marker, message)] = markers.as_slice() else {
        panic!("one marker expected, got {}", markers.len());
    };
    assert_eq!(marker.status, MarkerStatus::Complete);
    assert_eq!(marker.article_count, 3);
    assert_eq!(marker.batch_id, report.batch_id);
    assert_eq!(marker.error, None);
    assert!(marker.started_at <= marker.finished_at);
    assert_eq!(message.msg_id, format!("bitcoin.{}.end", report.batch_id));
    assert_eq!(
        message.subject,
        format!("news.batches.bitcoin.{}", report.batch_id)
    );
    assert_eq!(header(message, LATENESS_HEADER), Some("250"));
    assert_eq!(header(message, subjects::WORKER_HEADER), Some("w1"));
    let carried: JobSpec =
        serde_json::from_str(header(message, subjects::JOB_SPEC_HEADER).expect("spec header"))
            .expect("spec JSON");
    assert_eq!(carried, spec);
}

#[tokio::test]
async fn paging_stops_at_a_short_page() {
    let runner = runner(
        ScriptedSource::new([full_page(100, 0, 3), full_page(100, 3, 2)]),
        Recorder::default(),
    );

    let report = runner
        .run_batch(&spec(5, 3), Duration::ZERO, &CancellationToken::new())
        .await;

    assert_eq!(runner.source.pages_asked(), [1, 2]);
    assert_eq!(report.articles, 5);
    assert_eq!(runner.publisher.markers()[0].0.article_count, 5);
}

#[tokio::test]
async fn paging_stops_once_total_results_are_fetched() {
    let runner = runner(
        ScriptedSource::new([full_page(6, 0, 3), full_page(6, 3, 3)]),
        Recorder::default(),
    );

    runner
        .run_batch(&spec(5, 3), Duration::ZERO, &CancellationToken::new())
        .await;

    assert_eq!(runner.source.pages_asked(), [1, 2]);
}

#[tokio::test]
async fn paging_stops_at_max_pages() {
    let runner = runner(
        ScriptedSource::new([full_page(100, 0, 3), full_page(100, 3, 3)]),
        Recorder::default(),
    );

    let report = runner
        .run_batch(&spec(2, 3), Duration::ZERO, &CancellationToken::new())
        .await;

    assert_eq!(runner.source.pages_asked(), [1, 2]);
    assert_eq!(report.articles, 6);
}

#[tokio::test]
async fn the_end_of_results_completes_the_batch() {
    let runner = runner(
        ScriptedSource::new([full_page(500, 0, 3), Ok(PageOutcome::EndOfResults)]),
        Recorder::default(),
    );

    let report = runner
        .run_batch(&spec(5, 3), Duration::ZERO, &CancellationToken::new())
        .await;

    assert!(matches!(report.end, RunEnd::Complete));
    assert_eq!((report.articles, report.pages), (3, 1));
    let (marker, _) = &runner.publisher.markers()[0];
    assert_eq!(
        (marker.status, marker.article_count),
        (MarkerStatus::Complete, 3)
    );
}

#[tokio::test]
async fn articles_without_a_url_or_seen_before_are_dropped_and_seq_stays_dense() {
    let runner = runner(
        ScriptedSource::new([
            page(
                100,
                &[Some("https://a.test/1"), None, Some("https://a.test/2")],
            ),
            page(
                100,
                &[
                    Some("https://a.test/1"),
                    Some("https://a.test/3"),
                    Some("ftp://a.test/4"),
                ],
            ),
            page(100, &[]),
        ]),
        Recorder::default(),
    );

    let report = runner
        .run_batch(&spec(3, 3), Duration::ZERO, &CancellationToken::new())
        .await;

    let published: Vec<(u32, String)> = runner
        .publisher
        .articles()
        .into_iter()
        .map(|m| (m.seq, m.article.url))
        .collect();
    assert_eq!(
        published,
        [
            (0, "https://a.test/1".to_owned()),
            (1, "https://a.test/2".to_owned()),
            (2, "https://a.test/3".to_owned()),
        ]
    );
    assert_eq!(report.articles, 3);
    assert_eq!(runner.publisher.markers()[0].0.article_count, 3);
}

#[tokio::test]
async fn an_empty_result_is_a_complete_batch_of_nothing() {
    let runner = runner(ScriptedSource::new([page(0, &[])]), Recorder::default());

    let report = runner
        .run_batch(&spec(3, 3), Duration::ZERO, &CancellationToken::new())
        .await;

    assert!(matches!(report.end, RunEnd::Complete));
    assert!(runner.publisher.articles().is_empty());
    assert_eq!(runner.publisher.markers()[0].0.article_count, 0);
}

#[tokio::test]
async fn a_failed_fetch_publishes_a_failed_marker_counting_what_was_published() {
    let server_error = FetchError::Server {
        status: 500,
        message: "oops".to_owned(),
    };
    let runner = runner(
        ScriptedSource::new([full_page(100, 0, 3), Err(server_error.clone())]),
        Recorder::default(),
    );

    let report = runner
        .run_batch(&spec(5, 3), Duration::ZERO, &CancellationToken::new())
        .await;

    assert!(matches!(&report.end, RunEnd::Failed(e) if *e == server_error));
    let (marker, _) = &runner.publisher.markers()[0];
    assert_eq!(marker.status, MarkerStatus::Failed);
    assert_eq!(marker.article_count, 3);
    assert_eq!(marker.error, Some(server_error.to_info()));
}

#[tokio::test]
async fn a_publish_that_gives_up_ends_the_run_without_a_marker() {
    let runner = runner(
        ScriptedSource::new([full_page(100, 0, 3), full_page(100, 3, 3)]),
        Recorder {
            give_up_on_pages: true,
            ..Recorder::default()
        },
    );

    let report = runner
        .run_batch(&spec(5, 3), Duration::ZERO, &CancellationToken::new())
        .await;

    assert!(matches!(report.end, RunEnd::PublishFailed(_)));
    assert_eq!(runner.source.pages_asked(), [1], "no further fetches");
    assert!(runner.publisher.markers().is_empty());
}

#[tokio::test]
async fn a_cancelled_run_stops_at_once_and_never_publishes_a_marker() {
    let runner = Arc::new(runner(
        ScriptedSource::new([full_page(100, 0, 3)]),
        Recorder::default(),
    ));
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (runner, cancel) = (Arc::clone(&runner), cancel.clone());
        async move { runner.run_batch(&spec(5, 3), Duration::ZERO, &cancel).await }
    });

    runner.source.hanging.notified().await;
    cancel.cancel();
    let report = run.await.expect("the run ends");

    assert!(matches!(report.end, RunEnd::Cancelled));
    assert_eq!(runner.publisher.articles().len(), 3);
    assert!(runner.publisher.markers().is_empty());
}

#[tokio::test]
async fn a_run_cancelled_before_it_starts_fetches_nothing() {
    let runner = runner(
        ScriptedSource::new([full_page(100, 0, 3)]),
        Recorder::default(),
    );
    let cancel = CancellationToken::new();
    cancel.cancel();

    let report = runner.run_batch(&spec(1, 3), Duration::ZERO, &cancel).await;

    assert!(matches!(report.end, RunEnd::Cancelled));
    assert!(runner.source.pages_asked().is_empty());
    assert!(runner.publisher.markers().is_empty());
}

fn budget_exhausted() -> Result<PageOutcome, FetchError> {
    Err(FetchError::BudgetExhausted {
        message: "the request budget is spent".to_owned(),
        returns_at: newsflow_core::now_utc(),
    })
}

#[tokio::test]
async fn a_run_whose_first_request_the_budget_refuses_is_skipped_without_a_marker() {
    let runner = runner(
        ScriptedSource::new([budget_exhausted()]),
        Recorder::default(),
    );

    let report = runner
        .run_batch(&spec(3, 3), Duration::ZERO, &CancellationToken::new())
        .await;

    assert!(matches!(report.end, RunEnd::Skipped(_)), "{:?}", report.end);
    assert!(runner.publisher.markers().is_empty());
    assert!(runner.publisher.articles().is_empty());
}

#[tokio::test]
async fn a_budget_refusal_after_a_page_went_out_ends_the_run_with_a_failed_marker() {
    let runner = runner(
        ScriptedSource::new([full_page(10, 0, 3), budget_exhausted()]),
        Recorder::default(),
    );

    let report = runner
        .run_batch(&spec(3, 3), Duration::ZERO, &CancellationToken::new())
        .await;

    assert!(matches!(report.end, RunEnd::Failed(_)), "{:?}", report.end);
    let markers = runner.publisher.markers();
    assert_eq!(markers.len(), 1);
    let (marker, _) = &markers[0];
    assert_eq!(marker.article_count, 3);
    assert_eq!(
        marker.error.as_ref().map(|e| e.code.as_str()),
        Some("budget_exhausted")
    );
}
#[tokio::test]
async fn the_pipeline_shapes_the_batch_and_dedupe_remembers_only_complete_batches() {
    let spec = JobSpec::from_create_request(&json!({
        "id": "bitcoin", "params": {"q": "bitcoin"}, "page_size": 3, "max_pages": 2,
        "pipeline": [{"type":"dedupe","window_batches":2},{"type":"limit","max":4}]
    }))
    .expect("valid spec");
    let mut removed = raw(Some("https://removed.com"));
    removed.title = Some("[Removed]".to_owned());
    let first_page = Ok(PageOutcome::Page(NewsPage {
        total_results: 6,
        articles: vec![
            raw(Some("https://news.test/0")),
            removed,
            raw(Some("https://news.test/1")),
        ],
    }));
    let runner = runner(
        ScriptedSource::new([
            first_page,
            full_page(6, 1, 3),
            full_page(6, 0, 3),
            full_page(6, 3, 3),
        ]),
        Recorder::default(),
    );

    let first = runner
        .run_batch(&spec, Duration::ZERO, &CancellationToken::new())
        .await;
    let second = runner
        .run_batch(&spec, Duration::ZERO, &CancellationToken::new())
        .await;

    assert!(matches!(first.end, RunEnd::Complete));
    assert!(matches!(second.end, RunEnd::Complete));
    let markers = runner.publisher.markers();
    // First run: 6 fetched, a placeholder and a repeat of /1 out, limit 4 keeps all four.
    assert_eq!(markers[0].0.article_count, 4);
    assert_eq!(markers[0].0.fetched_count, Some(6));
    let dropped = markers[0].0.dropped.clone().expect("dropped");
    assert_eq!(dropped.get("removed"), Some(&1));
    assert_eq!(dropped.get("repeated"), Some(&1));
    // Second run: /0../5 fetched, the four the first run published are deduped.
    assert_eq!(markers[1].0.article_count, 2);
    assert_eq!(
        markers[1].0.dropped.clone().expect("dropped").get("dedupe"),
        Some(&4)
    );
    let second_urls: Vec<String> = runner
        .publisher
        .articles()
        .into_iter()
        .filter(|m| m.article.batch_id == second.batch_id)
        .map(|m| m.article.url)
        .collect();
    assert_eq!(second_urls, ["https://news.test/4", "https://news.test/5"]);
}

#[tokio::test]
async fn a_limit_stage_holds_every_page_until_the_batch_is_fetched() {
    let spec = JobSpec::from_create_request(&json!({
        "id": "bitcoin", "params": {"q": "bitcoin"}, "page_size": 3, "max_pages": 3,
        "pipeline": [{"type":"limit","max":2}]
    }))
    .expect("valid spec");
    let runner = Arc::new(runner(
        ScriptedSource::new([full_page(100, 0, 3)]),
        Recorder::default(),
    ));
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (runner, cancel, spec) = (Arc::clone(&runner), cancel.clone(), spec.clone());
        async move { runner.run_batch(&spec, Duration::ZERO, &cancel).await }
    });

    runner.source.hanging.notified().await;
    assert!(
        runner.publisher.articles().is_empty(),
        "nothing before the whole batch"
    );
    cancel.cancel();
    run.await.expect("the run ends");

    let whole = runner_with_pages(&spec).await;
    assert_eq!(whole.0.article_count, 2);
    assert_eq!(whole.0.fetched_count, Some(9));
    assert_eq!(
        whole.0.dropped.clone().expect("dropped").get("limit"),
        Some(&7)
    );
}

async fn runner_with_pages(spec: &JobSpec) -> (BatchMarker, Outgoing) {
    let runner = runner(
        ScriptedSource::new([full_page(9, 0, 3), full_page(9, 3, 3), full_page(9, 6, 3)]),
        Recorder::default(),
    );
    runner
        .run_batch(spec, Duration::ZERO, &CancellationToken::new())
        .await;
    runner.publisher.markers().remove(0)
}
