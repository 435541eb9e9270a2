//! End to end: jobs created over HTTP are run by workers against the NewsAPI mock, flow through
//! the `NEWS` stream into data-streams, and are served as whole, latest complete batches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use newsflow_tests::contract::{
    assert_article, assert_articles_page, assert_batch, assert_batch_id, assert_error_shape,
    assert_job, assert_keys, assert_time, assert_unique, id_of, ids, owner_of, parse_time, urls,
    ARTICLE_FIELDS, MARKER_FIELDS,
};
use newsflow_tests::{hold_for, wait_for, Api, StatusCode, System};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How long a batch may take to be fetched, published, consumed and promoted.
const BATCH_WITHIN: Duration = Duration::from_secs(30);

fn started_at(batch: &Value) -> OffsetDateTime {
    assert_time(&batch["started_at"], "Batch.started_at")
}

fn set(values: Vec<String>) -> BTreeSet<String> {
    values.into_iter().collect()
}

/// Asserts an article served by data-streams carries what the mock served for its URL.
fn assert_same_as_mock(article: &Value, raw: &Value) {
    let url = &article["url"];
    assert_eq!(url, &raw["url"]);
    for (ours, theirs) in [
        ("title", "title"),
        ("description", "description"),
        ("author", "author"),
        ("content", "content"),
        ("url_to_image", "urlToImage"),
    ] {
        assert_eq!(article[ours], raw[theirs], "{ours} of {url}");
    }
    assert_eq!(
        article["source"]["id"], raw["source"]["id"],
        "source.id of {url}"
    );
    assert_eq!(
        article["source"]["name"], raw["source"]["name"],
        "source.name of {url}"
    );
    let ours = parse_time(
        article["published_at"].as_str().unwrap_or_default(),
        "published_at",
    );
    let theirs = parse_time(
        raw["publishedAt"].as_str().unwrap_or_default(),
        "publishedAt",
    );
    assert_eq!(ours, theirs, "published_at of {url}");
}

/// The time an article is ordered by: publication, else fetch.
fn sort_time(article: &Value) -> OffsetDateTime {
    let at = if article["published_at"].is_null() {
        &article["fetched_at"]
    } else {
        &article["published_at"]
    };
    assert_time(at, "an article's time")
}

/// The same article with its times as instants, so differently formatted equal times compare
/// equal.
fn normalized(article: &Value) -> Value {
    let mut out = article.clone();
    for field in ["published_at", "fetched_at"] {
        if let Some(text) = article[field].as_str() {
            out[field] = json!(parse_time(text, field).unix_timestamp_nanos().to_string());
        }
    }
    out
}

/// Creates the three jobs of the listing tests and waits for their first batches:
/// `eth-a` and `eth-b` (same query, 30 articles) and `sol` (20 articles).
async fn three_jobs(api: &Api) -> BTreeMap<&'static str, Vec<Value>> {
    let specs = [
        ("eth-a", "ethereum", 30),
        ("eth-b", "ethereum", 30),
        ("sol", "solana", 20),
    ];
    let mut latest = BTreeMap::new();
    for (id, q, page_size) in specs {
        api.create_job_ok(&json!({
            "id": id, "params": {"q": q}, "interval_secs": 3600, "page_size": page_size
        }))
        .await;
    }
    for (id, _, page_size) in specs {
        let page = api.wait_for_latest(id, None, BATCH_WITHIN).await;
        let articles = page["articles"].as_array().cloned().unwrap_or_default();
        assert_eq!(articles.len(), page_size, "first batch of {id}: {page}");
        latest.insert(id, articles);
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_job_runs_on_a_worker_and_serves_the_mocks_articles_as_a_complete_batch() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();

    let (status, job) = api
        .create_job(&json!({"id":"bitcoin","params":{"q":"bitcoin"},"interval_secs":1}))
        .await;

    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_job(&job);
    assert_eq!(job["id"], "bitcoin");
    assert_eq!(job["endpoint"], "everything");
    assert_eq!(job["params"], json!({"q":"bitcoin"}));
    assert_eq!(job["interval_secs"], 1);
    assert_eq!(job["max_pages"], 1);
    assert_eq!(job["page_size"], 100);
    assert_eq!(job["state"], "running");
    assert_eq!(owner_of(&job).as_deref(), Some("worker-1"), "{job}");
    assert!(job["last_error"].is_null(), "{job}");

    let page = api.wait_for_latest("bitcoin", None, BATCH_WITHIN).await;
    assert_articles_page(&page, "bitcoin");
    let batch = &page["batch"];
    assert_eq!(batch["status"], "complete", "{batch}");
    let articles = page["articles"].as_array().cloned().unwrap_or_default();
    assert_eq!(batch["article_count"], articles.len(), "{batch}");
    assert!(
        page["next_cursor"].is_null(),
        "one page holds the batch: {page}"
    );
    assert_unique(&ids(&articles), "article ids of the batch");

    let expected = system
        .mock()
        .expected_articles(&[("q", "bitcoin")], 1, 100)
        .await;
    assert_eq!(
        expected.len(),
        100,
        "the mock serves a full page for bitcoin"
    );
    assert_eq!(set(urls(&articles)), set(urls(&expected)));
    let by_url: BTreeMap<String, &Value> = expected
        .iter()
        .map(|raw| (raw["url"].as_str().unwrap_or_default().to_owned(), raw))
        .collect();
    for article in &articles {
        assert_same_as_mock(article, by_url[article["url"].as_str().unwrap_or_default()]);
    }

    let job = api.job("bitcoin").await;
    assert_job(&job);
    let latest_id = job["latest_batch"]["id"].as_str().unwrap_or_default();
    assert!(
        latest_id >= batch["id"].as_str().unwrap_or_default(),
        "the job's latest_batch is at least the served batch: {job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_with_no_worker_is_stored_unowned_and_runs_once_a_worker_starts() {
    let mut system = System::builder().workers(0).start().await;
    let api = system.api();

    let (status, job) = api
        .create_job(
            &json!({"id":"lonely","params":{"q":"bitcoin"},"interval_secs":1,"page_size":10}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_job(&job);
    assert_eq!(job["state"], "running");
    assert!(job["worker"].is_null(), "no worker can own it yet: {job}");
    let page = api.latest("lonely").await;
    assert_articles_page(&page, "lonely");
    assert!(page["batch"].is_null(), "{page}");

    let worker = system.start_worker().await;

    wait_for(BATCH_WITHIN, "the new worker to own the job", || async {
        let job = api.job("lonely").await;
        (owner_of(&job).as_deref() == Some(worker.as_str())).then_some(())
    })
    .await;
    let page = api.wait_for_latest("lonely", None, BATCH_WITHIN).await;
    assert_articles_page(&page, "lonely");
    assert_eq!(page["batch"]["status"], "complete");
    assert_eq!(page["batch"]["article_count"], 10);
    assert_eq!(page["articles"].as_array().map(Vec::len), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_page_job_stores_every_page_exactly_once_in_one_batch() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    api.create_job_ok(&json!({
        "id":"pages","params":{"q":"bitcoin"},"interval_secs":3600,"max_pages":3,"page_size":20
    }))
    .await;

    let page = api.wait_for_latest("pages", None, BATCH_WITHIN).await;

    assert_articles_page(&page, "pages");
    let batch_id = id_of(&page["batch"]);
    assert_eq!(page["batch"]["article_count"], 60, "{}", page["batch"]);
    let paged = api.batch_articles("pages", &batch_id, 7).await;
    assert_eq!(paged.len(), 60);
    for article in &paged {
        assert_article(article);
        assert_eq!(article["batch_id"], batch_id.as_str());
    }
    assert_unique(&ids(&paged), "article ids across pages");
    let expected = system
        .mock()
        .expected_articles(&[("q", "bitcoin")], 3, 20)
        .await;
    assert_eq!(
        set(urls(&paged)),
        set(urls(&expected)),
        "none missing, none extra"
    );
    let latest_paged = api
        .collect_pages("/jobs/pages/articles", "articles", 7)
        .await;
    assert_eq!(
        ids(&latest_paged),
        ids(&paged),
        "both routes page the same batch alike"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_asking_past_the_result_cap_stops_at_it_with_a_complete_batch() {
    let system = System::builder()
        .workers(1)
        .mock_args(["--max-results", "100"])
        .start()
        .await;
    let api = system.api();
    api.create_job_ok(&json!({
        "id":"capped","params":{"q":"bitcoin"},"interval_secs":3600,"max_pages":3,"page_size":50
    }))
    .await;

    let page = api.wait_for_latest("capped", None, BATCH_WITHIN).await;

    assert_articles_page(&page, "capped");
    assert_eq!(page["batch"]["status"], "complete");
    assert_eq!(page["batch"]["article_count"], 100, "{}", page["batch"]);
    let articles = page["articles"].as_array().cloned().unwrap_or_default();
    assert_eq!(articles.len(), 100);
    assert_unique(&ids(&articles), "article ids");
    assert!(
        system.mock().count_status(426).await >= 1,
        "the worker asked for page 3 and hit the cap: {}",
        system.mock().stats().await
    );
    let job = api.job("capped").await;
    assert!(
        job["last_error"].is_null(),
        "the cap is an end of results, not a failure: {job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_and_read_one_by_one() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let created = three_jobs(&api).await;

    let (status, body) = api.get("/jobs").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
    let listed: BTreeSet<String> = jobs
        .iter()
        .map(|job| {
            assert_job(job);
            id_of(job)
        })
        .collect();
    let want: BTreeSet<String> = created.keys().map(|id| (*id).to_owned()).collect();
    assert_eq!(listed, want);
    for id in created.keys() {
        let job = api.job(id).await;
        assert_job(&job);
        assert_eq!(job["id"], *id);
        assert_eq!(job["state"], "running");
        assert_eq!(owner_of(&job).as_deref(), Some("worker-1"), "{job}");
        assert!(!job["latest_batch"].is_null(), "{job}");
        let listed = jobs.iter().find(|j| j["id"] == *id).expect("listed");
        assert_eq!(listed["params"], job["params"]);
        assert_eq!(listed["created_at"], job["created_at"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_listed_newest_first_with_their_statuses() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"often","params":{"q":"bitcoin"},"interval_secs":1,"page_size":5}),
    )
    .await;

    let batches = wait_for(BATCH_WITHIN, "three complete batches", || async {
        let batches = api.batches("often").await;
        let complete = batches.iter().filter(|b| b["status"] == "complete").count();
        (complete >= 3).then_some(batches)
    })
    .await;

    let listed_ids: Vec<String> = batches
        .iter()
        .map(|batch| {
            assert_batch(batch);
            id_of(batch)
        })
        .collect();
    let mut newest_first = listed_ids.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed_ids, newest_first, "batches must be newest first");
    assert_unique(&listed_ids, "batch ids");
    let complete: Vec<&Value> = batches
        .iter()
        .filter(|b| b["status"] == "complete")
        .collect();
    for batch in &complete {
        assert_eq!(batch["article_count"], 5, "{batch}");
        let id = batch["id"].as_str().unwrap_or_default();
        let articles = api.batch_articles("often", id, 1000).await;
        assert_eq!(articles.len(), 5, "articles of {id}");
        let page = api.ok(&format!("/jobs/often/batches/{id}/articles")).await;
        assert_articles_page(&page, "often");
        assert_eq!(page["batch"]["id"], id);
    }
    let job = api.job("often").await;
    assert!(
        job["latest_batch"]["id"].as_str() >= complete[0]["id"].as_str(),
        "the job's latest is the newest complete batch or newer: {job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn articles_across_jobs_are_unique_by_url_and_newest_first() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let latest = three_jobs(&api).await;

    let (status, body) = api.get("/articles?limit=1000").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["next_cursor"].is_null(), "{}", body["next_cursor"]);
    let articles = body["articles"].as_array().cloned().unwrap_or_default();
    for article in &articles {
        assert_article(article);
    }
    assert_eq!(
        set(urls(&latest["eth-a"])),
        set(urls(&latest["eth-b"])),
        "same query, same articles"
    );
    assert_unique(&urls(&articles), "URLs in GET /articles");
    let union: BTreeSet<String> = urls(&latest["eth-a"])
        .into_iter()
        .chain(urls(&latest["sol"]))
        .collect();
    assert_eq!(set(urls(&articles)), union);
    for pair in articles.windows(2) {
        assert!(
            sort_time(&pair[0]) >= sort_time(&pair[1]),
            "newest first: {} before {}",
            pair[0]["published_at"],
            pair[1]["published_at"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn articles_are_filtered_by_job_since_and_text() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let latest = three_jobs(&api).await;
    let all = api.collect_pages("/articles", "articles", 1000).await;

    for job in ["sol", "eth-a"] {
        let filtered = api
            .collect_pages(&format!("/articles?job={job}"), "articles", 1000)
            .await;
        assert_eq!(set(urls(&filtered)), set(urls(&latest[job])), "?job={job}");
        for article in &filtered {
            assert_eq!(article["job_id"], job, "?job={job}: {article}");
        }
    }

    let mut times: Vec<OffsetDateTime> = all.iter().map(sort_time).collect();
    times.sort();
    times.dedup();
    let cut = times[times.len() / 2];
    let since = (cut - time::Duration::seconds(1))
        .format(&Rfc3339)
        .expect("formats");
    let recent = api
        .collect_pages(&format!("/articles?since={since}"), "articles", 1000)
        .await;
    let want: BTreeSet<String> = all
        .iter()
        .filter(|a| sort_time(a) >= cut)
        .map(|a| a["url"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!want.is_empty() && want.len() < all.len());
    assert_eq!(set(urls(&recent)), want, "?since={since}");

    let matching = api
        .collect_pages("/articles?q=solana", "articles", 1000)
        .await;
    let want: BTreeSet<String> = all
        .iter()
        .filter(|a| {
            ["title", "description", "content"].iter().any(|f| {
                a[*f]
                    .as_str()
                    .is_some_and(|t| t.to_lowercase().contains("solana"))
            })
        })
        .map(|a| a["url"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!want.is_empty() && want.len() < all.len());
    assert_eq!(set(urls(&matching)), want, "?q=solana");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn articles_are_paged_with_limit_and_cursor() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    three_jobs(&api).await;
    let all = api.collect_pages("/articles", "articles", 1000).await;
    assert_eq!(all.len(), 50);

    let first = api.ok("/articles?limit=7").await;
    let paged = api.collect_pages("/articles", "articles", 7).await;

    assert_eq!(first["articles"].as_array().map(Vec::len), Some(7));
    assert!(first["next_cursor"].is_string(), "{first}");
    assert_eq!(ids(&paged), ids(&all), "paging neither skips nor repeats");
    let by_job = api.collect_pages("/articles?job=sol", "articles", 3).await;
    assert_eq!(by_job.len(), 20);
    assert_unique(&ids(&by_job), "?job=sol paged by 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_jobs_and_batches_are_not_found() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"real","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;
    api.wait_for_latest("real", None, BATCH_WITHIN).await;
    let unknown_batch = ulid::Ulid::new().to_string();

    let probes = [
        ("GET", "/jobs/nope".to_owned()),
        ("GET", "/jobs/nope/articles".to_owned()),
        ("GET", "/jobs/nope/batches".to_owned()),
        (
            "GET",
            format!("/jobs/nope/batches/{unknown_batch}/articles"),
        ),
        (
            "GET",
            format!("/jobs/real/batches/{unknown_batch}/articles"),
        ),
        ("POST", "/jobs/nope/start".to_owned()),
        ("POST", "/jobs/nope/stop".to_owned()),
        ("DELETE", "/jobs/nope".to_owned()),
    ];

    for (method, path) in probes {
        let (status, body) = match method {
            "GET" => api.get(&path).await,
            "POST" => api.post_empty(&path).await,
            _ => api.delete(&path).await,
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_error_shape(&body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_multi_page_batch_is_never_visible_half_done() {
    let system = System::builder()
        .workers(1)
        .mock_args(["--latency-ms", "300"])
        .start()
        .await;
    let api = system.api();
    api.create_job_ok(&json!({
        "id":"slow","params":{"q":"bitcoin"},"interval_secs":1,"max_pages":4,"page_size":20
    }))
    .await;

    let mut seen_empty = false;
    let mut seen_in_progress = false;
    let mut seen_batches: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen_batches.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for two complete batches; saw {seen_batches:?}"
        );
        let page = api.latest("slow").await;
        assert_articles_page(&page, "slow");
        let articles = page["articles"].as_array().cloned().unwrap_or_default();
        if page["batch"].is_null() {
            assert!(articles.is_empty(), "no batch yet, yet articles: {page}");
            assert!(
                seen_batches.is_empty(),
                "the latest batch went away: {page}"
            );
            seen_empty = true;
        } else {
            let batch = &page["batch"];
            let id = id_of(batch);
            assert_eq!(
                batch["status"], "complete",
                "a partial batch is served: {batch}"
            );
            assert_eq!(batch["article_count"], 80, "{batch}");
            assert_eq!(
                articles.len(),
                80,
                "served {} of 80 articles",
                articles.len()
            );
            assert!(
                articles.iter().all(|a| a["batch_id"] == id.as_str()),
                "articles of two batches are mixed: {page}"
            );
            assert_unique(&ids(&articles), "article ids of the latest batch");
            if let Some(last) = seen_batches.last() {
                assert!(&id >= last, "the latest went back from {last} to {id}");
            }
            if seen_batches.last() != Some(&id) {
                seen_batches.push(id);
            }
        }
        let listed = api.batches("slow").await;
        if listed.iter().any(|b| b["status"] == "in_progress") {
            seen_in_progress = true;
        }
    }

    assert!(
        seen_empty,
        "the first batch takes over a second: polling saw it empty"
    );
    assert!(seen_in_progress, "polling overlapped a batch being fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_job_is_released_by_its_worker_and_starts_no_new_batch() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    let mut heartbeats = bus.heartbeats().await;
    api.create_job_ok(
        &json!({"id":"halt","params":{"q":"bitcoin"},"interval_secs":1,"page_size":5}),
    )
    .await;
    api.wait_for_latest("halt", None, BATCH_WITHIN).await;
    heartbeats
        .wait_for(
            Duration::from_secs(10),
            "worker-1 runs halt",
            "worker-1",
            |beat| beat.jobs.iter().flatten().any(|job| job.as_str() == "halt"),
        )
        .await;

    let (status, job) = api.post_empty("/jobs/halt/stop").await;

    assert_eq!(status, StatusCode::OK, "{job}");
    assert_job(&job);
    assert_eq!(job["state"], "stopped");
    heartbeats
        .wait_for(
            Duration::from_secs(10),
            "worker-1 no longer runs halt",
            "worker-1",
            |beat| beat.jobs.iter().flatten().all(|job| job.as_str() != "halt"),
        )
        .await;
    let released_at = newsflow_core::now_utc();
    let before: BTreeSet<String> = api.batches("halt").await.iter().map(id_of).collect();
    hold_for(
        Duration::from_secs(4),
        "no new batch of a stopped job",
        || async {
            for batch in api.batches("halt").await {
                let id = batch["id"].as_str().unwrap_or_default();
                if !before.contains(id) && started_at(&batch) > released_at {
                    return Some(format!(
                        "batch {batch} started after the stop was acknowledged"
                    ));
                }
            }
            let job = api.job("halt").await;
            (job["state"] != "stopped").then(|| format!("the job is no longer stopped: {job}"))
        },
    )
    .await;
    heartbeats
        .wait_for(
            Duration::from_secs(5),
            "worker-1 still idle",
            "worker-1",
            |beat| beat.count == Some(0),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_job_runs_again_when_started() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    let mut heartbeats = bus.heartbeats().await;
    api.create_job_ok(
        &json!({"id":"again","params":{"q":"bitcoin"},"interval_secs":1,"page_size":5}),
    )
    .await;
    api.wait_for_latest("again", None, BATCH_WITHIN).await;
    let (status, _) = api.post_empty("/jobs/again/stop").await;
    assert_eq!(status, StatusCode::OK);
    heartbeats
        .wait_for(
            Duration::from_secs(10),
            "worker-1 released again",
            "worker-1",
            |beat| {
                beat.jobs
                    .iter()
                    .flatten()
                    .all(|job| job.as_str() != "again")
            },
        )
        .await;
    let restarted_at = newsflow_core::now_utc();

    let (status, job) = api.post_empty("/jobs/again/start").await;

    assert_eq!(status, StatusCode::OK, "{job}");
    assert_job(&job);
    assert_eq!(job["state"], "running");
    heartbeats
        .wait_for(
            Duration::from_secs(10),
            "worker-1 runs again again",
            "worker-1",
            |beat| {
                beat.jobs
                    .iter()
                    .flatten()
                    .any(|job| job.as_str() == "again")
            },
        )
        .await;
    wait_for(
        BATCH_WITHIN,
        "a batch started after the restart to complete",
        || async {
            let page = api.latest("again").await;
            (started_at(&page["batch"]) > restarted_at).then_some(())
        },
    )
    .await;
    let job = api.job("again").await;
    assert_eq!(owner_of(&job).as_deref(), Some("worker-1"), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_job_and_everything_stored_for_it_are_gone() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    let mut heartbeats = bus.heartbeats().await;
    api.create_job_ok(
        &json!({"id":"doomed","params":{"q":"dogecoin"},"interval_secs":1,"page_size":5}),
    )
    .await;
    api.create_job_ok(
        &json!({"id":"kept","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;
    let doomed = api.wait_for_latest("doomed", None, BATCH_WITHIN).await;
    let doomed_urls = set(urls(doomed["articles"].as_array().expect("articles")));
    let kept = api.wait_for_latest("kept", None, BATCH_WITHIN).await;
    let kept_urls = set(urls(kept["articles"].as_array().expect("articles")));
    assert!(doomed_urls.is_disjoint(&kept_urls));

    let (status, body) = api.delete("/jobs/doomed").await;

    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(body.is_null(), "204 has no body: {body}");
    for path in [
        "/jobs/doomed",
        "/jobs/doomed/articles",
        "/jobs/doomed/batches",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path}: {body}");
        assert_error_shape(&body);
    }
    let jobs = api.ok("/jobs").await;
    assert!(
        jobs["jobs"]
            .as_array()
            .is_some_and(|jobs| jobs.iter().all(|j| j["id"] != "doomed")),
        "{jobs}"
    );
    heartbeats
        .wait_for(
            Duration::from_secs(10),
            "worker-1 dropped doomed",
            "worker-1",
            |beat| {
                beat.jobs
                    .iter()
                    .flatten()
                    .all(|job| job.as_str() != "doomed")
            },
        )
        .await;
    hold_for(
        Duration::from_secs(3),
        "the deleted job to stay gone",
        || async {
            let all = api.collect_pages("/articles", "articles", 1000).await;
            if let Some(a) = all.iter().find(|a| {
                a["job_id"] == "doomed"
                    || doomed_urls.contains(a["url"].as_str().unwrap_or_default())
            }) {
                return Some(format!("GET /articles still serves {a}"));
            }
            if set(urls(&all)) != kept_urls {
                return Some("the other job's articles changed".to_owned());
            }
            let (status, body) = api.get("/jobs/doomed").await;
            (status != StatusCode::NOT_FOUND)
                .then(|| format!("GET /jobs/doomed is back: {status} {body}"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_data_streams_and_the_worker_keeps_every_batch_and_runs_the_job_again() {
    let mut system = System::builder().workers(1).start().await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"durable","params":{"q":"bitcoin"},"interval_secs":1,"page_size":10}),
    )
    .await;
    let complete_before = wait_for(BATCH_WITHIN, "two complete batches", || async {
        let complete: Vec<Value> = api
            .batches("durable")
            .await
            .into_iter()
            .filter(|b| b["status"] == "complete")
            .collect();
        (complete.len() >= 2).then_some(complete)
    })
    .await;
    let mut stored_before = BTreeMap::new();
    for batch in &complete_before {
        let id = id_of(batch);
        let articles = api.batch_articles("durable", &id, 1000).await;
        stored_before.insert(id, ids(&articles));
    }
    let newest_before = api.latest("durable").await["batch"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let ds_exit = system.terminate_data_streams().await;
    let worker_exit = system.terminate_worker("worker-1").await;
    system.start_data_streams().await;
    system.restart_worker("worker-1").await;
    let api = system.api();

    assert!(
        ds_exit.success(),
        "data-streams exited with {ds_exit} on SIGTERM"
    );
    assert!(
        worker_exit.success(),
        "the worker exited with {worker_exit} on SIGTERM"
    );
    let job = api.job("durable").await;
    assert_job(&job);
    assert_eq!(job["state"], "running");
    api.wait_for_latest("durable", Some(&newest_before), BATCH_WITHIN)
        .await;
    let batches = api.batches("durable").await;
    for before in &complete_before {
        let id = before["id"].as_str().unwrap_or_default();
        let now = batches
            .iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("batch {id} is gone after the restart"));
        assert_eq!(now["status"], "complete", "{now}");
        assert_eq!(now["article_count"], before["article_count"], "{now}");
        let articles = api.batch_articles("durable", id, 1000).await;
        assert_eq!(
            ids(&articles),
            stored_before[id],
            "articles of {id} changed"
        );
    }
    for batch in &batches {
        assert_batch(batch);
        let id = batch["id"].as_str().unwrap_or_default();
        let articles = api.batch_articles("durable", id, 1000).await;
        assert_unique(&ids(&articles), &format!("article ids of batch {id}"));
        if batch["status"] == "complete" {
            assert_eq!(batch["article_count"], articles.len(), "{batch}");
        }
    }
    wait_for(
        Duration::from_secs(10),
        "the restarted worker to own the job",
        || async {
            let job = api.job("durable").await;
            (owner_of(&job).as_deref() == Some("worker-1")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_carries_articles_and_markers_with_the_contracts_ids_and_shapes() {
    use futures::StreamExt;

    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    let mut live = bus.subscribe("news.>").await;
    api.create_job_ok(
        &json!({"id":"streamed","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":10}),
    )
    .await;
    let page = api.wait_for_latest("streamed", None, BATCH_WITHIN).await;
    let batch_id = id_of(&page["batch"]);

    let messages = bus.stream_messages("news.").await;

    let article_subject = format!("news.articles.streamed.{batch_id}");
    let marker_subject = format!("news.batches.streamed.{batch_id}");
    let mut seqs = BTreeSet::new();
    let mut payloads = Vec::new();
    let mut last_article_seq = 0;
    let mut marker = None;
    for message in &messages {
        let subject = message.subject.as_str();
        let msg_id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| panic!("{subject} #{} has no Nats-Msg-Id", message.sequence));
        let payload: Value = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|e| panic!("{subject} payload is not JSON: {e}"));
        if subject == article_subject {
            let mut keys: Vec<&str> = ARTICLE_FIELDS.to_vec();
            keys.push("seq");
            assert_keys(&payload, &keys, "an article message");
            let seq = payload["seq"].as_u64().expect("seq is a number");
            assert_eq!(msg_id, format!("streamed.{batch_id}.{seq}"));
            assert!(
                seqs.insert(seq),
                "seq {seq} published twice into the stream"
            );
            let mut article = payload.clone();
            article.as_object_mut().expect("object").remove("seq");
            assert_article(&article);
            assert_eq!(article["job_id"], "streamed");
            assert_eq!(article["batch_id"], batch_id.as_str());
            payloads.push(normalized(&article));
            last_article_seq = last_article_seq.max(message.sequence);
        } else if subject == marker_subject {
            assert!(marker.is_none(), "two markers for one batch");
            assert_eq!(msg_id, format!("streamed.{batch_id}.end"));
            marker = Some((message.sequence, payload));
        }
    }
    assert_eq!(seqs, (0..10).collect::<BTreeSet<u64>>(), "seqs 0..10");
    let (marker_seq, marker) = marker.expect("the batch's marker is in the stream");
    assert!(
        marker_seq > last_article_seq,
        "the marker follows every article of its batch"
    );
    let keys: Vec<&str> = if marker.get("error").is_some() {
        MARKER_FIELDS.to_vec()
    } else {
        MARKER_FIELDS
            .iter()
            .copied()
            .filter(|k| *k != "error")
            .collect()
    };
    assert_keys(&marker, &keys, "a marker");
    assert_eq!(marker["job_id"], "streamed");
    assert_eq!(marker["batch_id"], batch_id.as_str());
    assert_eq!(marker["status"], "complete");
    assert_eq!(marker["article_count"], 10);
    assert!(marker["error"].is_null(), "{marker}");
    let started = assert_time(&marker["started_at"], "marker.started_at");
    let finished = assert_time(&marker["finished_at"], "marker.finished_at");
    assert!(started <= finished, "{marker}");
    assert_batch_id(&marker["batch_id"], "marker.batch_id");

    let served: BTreeSet<String> = page["articles"]
        .as_array()
        .expect("articles")
        .iter()
        .map(|a| normalized(a).to_string())
        .collect();
    let streamed: BTreeSet<String> = payloads.iter().map(Value::to_string).collect();
    assert_eq!(
        served, streamed,
        "the HTTP articles are the stream's articles minus seq"
    );

    let mut live_ids = BTreeSet::new();
    let want_live = 11;
    while live_ids.len() < want_live {
        let message = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .unwrap_or_else(|_| panic!("a core subscriber saw only {live_ids:?}"))
            .expect("the subscription is open");
        if message
            .subject
            .as_str()
            .ends_with(&format!("streamed.{batch_id}"))
        {
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .expect("core subscribers see Nats-Msg-Id too");
            live_ids.insert(id);
        }
    }
    assert!(live_ids.contains(&format!("streamed.{batch_id}.end")));
}
