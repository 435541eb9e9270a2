//! What NewsAPI may answer: nulls, articles without a usable URL, wrong types, other shapes
//! and oversized bodies; stored as null, dropped, or failing the batch with a typed error.

use newsflow_tests::contract::{assert_article, assert_articles_page, assert_job};
use newsflow_tests::hostile::{spawn_worker, Canned, ScriptedApi};
use newsflow_tests::mock::DEMO_KEY;
use newsflow_tests::{wait_for, System};
use serde_json::{json, Value};

use crate::BATCH_WITHIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nulls_from_the_mock_are_stored_as_null_never_invented() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"nulls","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":60}),
    )
    .await;
    let page = api.wait_for_latest("nulls", None, BATCH_WITHIN).await;
    assert_articles_page(&page, "nulls");
    let raw = system
        .mock()
        .expected_articles(&[("q", "bitcoin")], 1, 60)
        .await;
    let served = page["articles"].as_array().cloned().unwrap_or_default();
    assert_eq!(served.len(), raw.len());

    let mut nulls = 0;
    for (ours, theirs) in [
        ("author", "author"),
        ("description", "description"),
        ("url_to_image", "urlToImage"),
        ("content", "content"),
    ] {
        let raw_nulls: Vec<&Value> = raw
            .iter()
            .filter(|a| a[theirs].is_null())
            .map(|a| &a["url"])
            .collect();
        assert!(!raw_nulls.is_empty(), "the mock serves some null {theirs}");
        for url in raw_nulls {
            let article = served
                .iter()
                .find(|a| &a["url"] == url)
                .unwrap_or_else(|| panic!("{url} is served"));
            assert!(
                article[ours].is_null(),
                "{ours} stays null for {url}: {article}"
            );
            nulls += 1;
        }
    }
    let null_source_ids = raw.iter().filter(|a| a["source"]["id"].is_null()).count();
    let served_null_ids = served
        .iter()
        .filter(|a| a["source"]["id"].is_null())
        .count();
    assert_eq!(served_null_ids, null_source_ids, "source.id nulls are kept");
    eprintln!("null fields checked: {nulls}");
}

/// A NewsAPI page of these raw articles.
fn page_of(articles: Vec<Value>) -> Value {
    json!({"status":"ok","totalResults":articles.len(),"articles":articles})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn articles_without_a_usable_url_are_dropped_and_missing_fields_become_null() {
    let scripted = ScriptedApi::start(|_| {
        Canned::json(200, &page_of(vec![
            json!({"source":{"id":"full","name":"Full"},"author":"A","title":"full","description":"d","url":"https://example.com/full","urlToImage":"https://example.com/i.png","publishedAt":"2026-11-20T08:00:00Z","content":"c"}),
            json!({"source":{"id":null,"name":null},"author":null,"title":null,"description":null,"url":"https://example.com/nulls","urlToImage":null,"publishedAt":null,"content":null}),
            json!({"url":"https://example.com/bare"}),
            json!({"source":null,"url":"http://example.com/plain-http","publishedAt":"not a date"}),
            json!({"title":"no url"}),
            json!({"title":"null url","url":null}),
            json!({"title":"empty url","url":""}),
            json!({"title":"relative url","url":"/relative"}),
            json!({"title":"javascript url","url":"javascript:alert(1)"}),
            json!({"title":"ftp url","url":"ftp://example.com/x"}),
        ]))
    })
    .await;
    let system = System::builder().start().await;
    let dir = system.dir().to_path_buf();
    let args = worker_args(&system.nats_url(), &scripted.base());
    let _worker = spawn_worker(&dir, "scripted-1", &args, &[]).await;
    let api = system.api();

    api.create_job_ok(
        &json!({"id":"ragged","params":{"q":"x"},"interval_secs":3600,"page_size":20}),
    )
    .await;
    let page = api.wait_for_latest("ragged", None, BATCH_WITHIN).await;

    assert_articles_page(&page, "ragged");
    assert_eq!(page["batch"]["article_count"], 4, "{page}");
    let served = page["articles"].as_array().cloned().unwrap_or_default();
    let mut urls: Vec<&str> = served.iter().filter_map(|a| a["url"].as_str()).collect();
    urls.sort_unstable();
    assert_eq!(
        urls,
        [
            "http://example.com/plain-http",
            "https://example.com/bare",
            "https://example.com/full",
            "https://example.com/nulls"
        ]
    );
    for article in &served {
        assert_article(article);
    }
    let by_url = |url: &str| {
        served
            .iter()
            .find(|a| a["url"] == url)
            .cloned()
            .unwrap_or_default()
    };
    let bare = by_url("https://example.com/bare");
    for field in [
        "author",
        "title",
        "description",
        "url_to_image",
        "published_at",
        "content",
    ] {
        assert!(bare[field].is_null(), "a missing {field} is null: {bare}");
    }
    assert_eq!(bare["source"], json!({"id":null,"name":null}), "{bare}");
    let nulls = by_url("https://example.com/nulls");
    assert_eq!(nulls["source"], json!({"id":null,"name":null}), "{nulls}");
    assert!(
        by_url("http://example.com/plain-http")["published_at"].is_null(),
        "an unparsable date is null"
    );
    let full = by_url("https://example.com/full");
    assert_eq!(full["author"], "A");
    assert_eq!(full["url_to_image"], "https://example.com/i.png");
}

fn worker_args(nats_url: &str, newsapi: &str) -> Vec<String> {
    vec![
        "--nats-url".into(),
        nats_url.into(),
        "--newsapi-url".into(),
        newsapi.into(),
        "--newsapi-key".into(),
        DEMO_KEY.into(),
        "--fetch-retries".into(),
        "1".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_and_oversized_answers_from_the_api_fail_the_batch_with_a_typed_error() {
    // Each job's query picks its answer.
    let scripted = ScriptedApi::start(|request| {
        let q = request
            .target
            .split("q=")
            .nth(1)
            .unwrap_or("")
            .split('&')
            .next()
            .unwrap_or("");
        match q {
            "types" => Canned::json(
                200,
                &page_of(vec![json!({"url":"https://example.com/a","author":42})]),
            ),
            "shape" => Canned::json(
                200,
                &json!({"status":"ok","articles":{"url":"https://example.com/a"}}),
            ),
            "html" => Canned::bytes(200, "<html>maintenance</html>"),
            "huge" => Canned::json(
                200,
                &page_of(vec![
                    json!({"url":"https://example.com/a","content":"c".repeat(200_000)}),
                ]),
            ),
            "huge-unannounced" => Canned::json(
                200,
                &page_of(vec![
                    json!({"url":"https://example.com/a","content":"c".repeat(200_000)}),
                ]),
            )
            .without_length(),
            _ => Canned::json(200, &page_of(vec![json!({"url":"https://example.com/ok"})])),
        }
    })
    .await;
    let system = System::builder().start().await;
    let dir = system.dir().to_path_buf();
    let mut args = worker_args(&system.nats_url(), &scripted.base());
    args.extend(["--max-response-bytes".into(), "65536".into()]);
    let _worker = spawn_worker(&dir, "scripted-2", &args, &[]).await;
    let api = system.api();

    let expected = [
        ("types", "malformed_response"),
        ("shape", "malformed_response"),
        ("html", "malformed_response"),
        ("huge", "response_too_large"),
        ("huge-unannounced", "response_too_large"),
    ];
    for (q, _) in expected {
        api.create_job_ok(&json!({"id":q,"params":{"q":q},"interval_secs":3600,"page_size":5}))
            .await;
    }
    for (q, code) in expected {
        let job = wait_for(
            BATCH_WITHIN,
            &format!("job {q} to record its failure"),
            || async {
                let job = api.job(q).await;
                (!job["last_error"].is_null()).then_some(job)
            },
        )
        .await;
        assert_job(&job);
        assert_eq!(job["last_error"]["code"], code, "{job}");
        assert!(
            job["latest_batch"].is_null(),
            "a failed run is never served: {job}"
        );
        let batches = api.batches(q).await;
        assert_eq!(batches.len(), 1, "{batches:?}");
        assert_eq!(batches[0]["status"], "failed", "{batches:?}");
        assert_eq!(batches[0]["error"]["code"], code, "{batches:?}");
        assert_eq!(batches[0]["article_count"], 0, "{batches:?}");
        let page = api.latest(q).await;
        assert!(
            page["batch"].is_null() && page["articles"] == json!([]),
            "{page}"
        );
    }
}
