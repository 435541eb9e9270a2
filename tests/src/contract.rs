//! Assertions of the contract's JSON shapes (Job, Batch, Article, list pages, errors, stream
//! payloads), so every suite checks them the same, exact way.

use std::collections::BTreeSet;

use newsflow_core::{ArticleId, BatchId};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The fields of a Job.
pub const JOB_FIELDS: [&str; 16] = [
    "id",
    "endpoint",
    "params",
    "interval_secs",
    "max_pages",
    "page_size",
    "keep_batches",
    "pipeline",
    "state",
    "worker",
    "latest_batch",
    "last_error",
    "next_run_at",
    "consecutive_failures",
    "created_at",
    "updated_at",
];
/// The fields of a Batch.
pub const BATCH_FIELDS: [&str; 8] = [
    "id",
    "status",
    "article_count",
    "started_at",
    "completed_at",
    "error",
    "fetched_count",
    "dropped",
];
/// The fields of an Article.
pub const ARTICLE_FIELDS: [&str; 12] = [
    "id",
    "job_id",
    "batch_id",
    "source",
    "author",
    "title",
    "description",
    "url",
    "url_to_image",
    "published_at",
    "content",
    "fetched_at",
];
/// The fields of a batch-marker payload on the stream, as the worker publishes it (the last
/// two are optional: a publisher may leave them out).
pub const MARKER_FIELDS: [&str; 9] = [
    "job_id",
    "batch_id",
    "status",
    "article_count",
    "started_at",
    "finished_at",
    "error",
    "fetched_count",
    "dropped",
];

/// Asserts `value` is an object with exactly the keys `fields`.
pub fn assert_keys(value: &Value, fields: &[&str], what: &str) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what} must be an object: {value}"));
    let got: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = fields.iter().copied().collect();
    assert_eq!(
        got, want,
        "{what} must have exactly the contract's fields: {value}"
    );
}

/// Asserts `value` is an RFC 3339 time in UTC and returns it.
pub fn assert_time(value: &Value, what: &str) -> OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be an RFC 3339 string, got {value}"));
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .unwrap_or_else(|e| panic!("{what} = {text:?} is not RFC 3339: {e}"));
    assert!(at.offset().is_utc(), "{what} = {text:?} is not in UTC");
    at
}

/// Asserts `value` is null or an RFC 3339 UTC time.
pub fn assert_optional_time(value: &Value, what: &str) -> Option<OffsetDateTime> {
    (!value.is_null()).then(|| assert_time(value, what))
}

/// Parses an RFC 3339 time (e.g. a `published_at`), panicking with `what` otherwise.
pub fn parse_time(text: &str, what: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339)
        .unwrap_or_else(|e| panic!("{what} = {text:?} is not RFC 3339: {e}"))
}

/// Asserts `value` is the contract's error `{"error":{"code":code,"message":...}}`.
pub fn assert_error(value: &Value, code: &str) {
    assert_keys(value, &["error"], "an error body");
    assert_error_info(&value["error"], "error");
    assert_eq!(value["error"]["code"], code, "error code in {value}");
}

/// Asserts `value` is the contract's error shape, whatever its code; returns the code.
pub fn assert_error_shape(value: &Value) -> String {
    assert_keys(value, &["error"], "an error body");
    assert_error_info(&value["error"], "error");
    value["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Asserts `value` is `{"code":snake_case,"message":non-empty}`.
pub fn assert_error_info(value: &Value, what: &str) {
    assert_keys(value, &["code", "message"], what);
    let code = value["code"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty()
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "{what}.code must be snake_case: {value}"
    );
    assert!(
        value["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}.message must be a non-empty string: {value}"
    );
}

/// Asserts `value` is a batch id (a ULID) and returns it.
pub fn assert_batch_id(value: &Value, what: &str) -> BatchId {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be a string, got {value}"));
    BatchId::parse(text).unwrap_or_else(|e| panic!("{what} = {text:?} is not a ULID: {e}"))
}

/// Asserts `job` has the contract's Job shape.
pub fn assert_job(job: &Value) {
    // A create or a start answers with the Job and its `warnings`.
    let mut job = job.clone();
    if let Some(warnings) = job.as_object_mut().and_then(|o| o.remove("warnings")) {
        for warning in warnings.as_array().expect("warnings is an array") {
            assert_keys(warning, &["code", "message"], "a Warning");
            assert!(warning["code"].is_string() && warning["message"].is_string());
        }
    }
    let job = &job;
    assert_keys(job, &JOB_FIELDS, "a Job");
    if !job["next_run_at"].is_null() {
        assert_time(&job["next_run_at"], "Job.next_run_at");
    }
    assert!(
        job["consecutive_failures"].is_u64(),
        "Job.consecutive_failures: {job}"
    );
    assert!(
        job["id"].as_str().is_some_and(|id| !id.is_empty()),
        "Job.id: {job}"
    );
    assert!(
        matches!(
            job["endpoint"].as_str(),
            Some("everything" | "top-headlines")
        ),
        "Job.endpoint: {job}"
    );
    assert!(
        job["params"].is_object(),
        "Job.params must be an object: {job}"
    );
    for (field, max) in [
        ("interval_secs", 86_400),
        ("max_pages", 10),
        ("page_size", 100),
        ("keep_batches", 1000),
    ] {
        let n = job[field].as_u64().unwrap_or(0);
        assert!(
            (1..=max).contains(&n),
            "Job.{field} must be in 1..={max}: {job}"
        );
    }
    assert!(
        job["pipeline"]
            .as_array()
            .is_some_and(|stages| stages.len() <= 16),
        "Job.pipeline must be a list of at most 16 stages: {job}"
    );
    assert!(
        matches!(job["state"].as_str(), Some("running" | "stopped")),
        "Job.state: {job}"
    );
    if !job["worker"].is_null() {
        assert_keys(&job["worker"], &["id", "acked_at"], "Job.worker");
        assert!(job["worker"]["id"].is_string(), "Job.worker.id: {job}");
        assert_time(&job["worker"]["acked_at"], "Job.worker.acked_at");
    }
    if !job["latest_batch"].is_null() {
        assert_keys(
            &job["latest_batch"],
            &["id", "completed_at", "article_count"],
            "Job.latest_batch",
        );
        assert_batch_id(&job["latest_batch"]["id"], "Job.latest_batch.id");
        assert_time(
            &job["latest_batch"]["completed_at"],
            "Job.latest_batch.completed_at",
        );
        assert!(
            job["latest_batch"]["article_count"].is_u64(),
            "Job.latest_batch.article_count: {job}"
        );
    }
    if !job["last_error"].is_null() {
        assert_keys(
            &job["last_error"],
            &["at", "code", "message"],
            "Job.last_error",
        );
        assert_time(&job["last_error"]["at"], "Job.last_error.at");
        assert!(
            job["last_error"]["code"].is_string(),
            "Job.last_error.code: {job}"
        );
        assert!(
            job["last_error"]["message"].is_string(),
            "Job.last_error.message: {job}"
        );
    }
    let created = assert_time(&job["created_at"], "Job.created_at");
    let updated = assert_time(&job["updated_at"], "Job.updated_at");
    assert!(
        updated >= created,
        "Job.updated_at before created_at: {job}"
    );
}

/// Asserts `batch` has the contract's Batch shape.
pub fn assert_batch(batch: &Value) {
    assert_keys(batch, &BATCH_FIELDS, "a Batch");
    assert_batch_id(&batch["id"], "Batch.id");
    let status = batch["status"].as_str().unwrap_or_default();
    assert!(
        ["in_progress", "complete", "failed", "incomplete"].contains(&status),
        "Batch.status: {batch}"
    );
    assert!(
        batch["article_count"].is_u64(),
        "Batch.article_count: {batch}"
    );
    assert_time(&batch["started_at"], "Batch.started_at");
    let completed = assert_optional_time(&batch["completed_at"], "Batch.completed_at");
    if status == "complete" {
        assert!(
            completed.is_some(),
            "a complete Batch has completed_at: {batch}"
        );
        assert!(
            batch["error"].is_null(),
            "a complete Batch has no error: {batch}"
        );
    }
    if !batch["error"].is_null() {
        assert_error_info(&batch["error"], "Batch.error");
    }
}

/// Asserts `article` has the contract's Article shape and its id is the hash of its URL.
pub fn assert_article(article: &Value) {
    assert_keys(article, &ARTICLE_FIELDS, "an Article");
    let url = article["url"]
        .as_str()
        .unwrap_or_else(|| panic!("Article.url must be a string: {article}"));
    let id = article["id"].as_str().unwrap_or_default();
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "Article.id must be 32 lowercase hex digits: {article}"
    );
    assert_eq!(
        id,
        ArticleId::from_url(url).as_str(),
        "Article.id must hash its URL"
    );
    assert!(article["job_id"].is_string(), "Article.job_id: {article}");
    assert_batch_id(&article["batch_id"], "Article.batch_id");
    assert_keys(&article["source"], &["id", "name"], "Article.source");
    for field in ["author", "title", "description", "url_to_image", "content"] {
        assert!(
            article[field].is_null() || article[field].is_string(),
            "Article.{field} must be a string or null: {article}"
        );
    }
    assert_optional_time(&article["published_at"], "Article.published_at");
    assert_time(&article["fetched_at"], "Article.fetched_at");
}

/// Asserts a `GET /jobs/{id}/articles` or batch-articles page: `{"job_id","batch",
/// "articles","next_cursor"}`, every article of `job` and of the page's batch.
pub fn assert_articles_page(page: &Value, job: &str) {
    assert_keys(
        page,
        &["job_id", "batch", "articles", "next_cursor"],
        "an articles page",
    );
    assert_eq!(page["job_id"], job, "articles page job_id: {page}");
    assert!(
        page["next_cursor"].is_null() || page["next_cursor"].is_string(),
        "next_cursor must be a string or null: {page}"
    );
    let articles = page["articles"]
        .as_array()
        .unwrap_or_else(|| panic!("articles must be an array: {page}"));
    if page["batch"].is_null() {
        assert!(articles.is_empty(), "no batch but articles: {page}");
        return;
    }
    assert_batch(&page["batch"]);
    for article in articles {
        assert_article(article);
        assert_eq!(article["job_id"], job, "article of another job: {article}");
        assert_eq!(
            article["batch_id"], page["batch"]["id"],
            "article of another batch: {article}"
        );
    }
}

/// The `url` of every article.
pub fn urls(articles: &[Value]) -> Vec<String> {
    articles
        .iter()
        .map(|a| a["url"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The `id` of every article.
pub fn ids(articles: &[Value]) -> Vec<String> {
    articles.iter().map(id_of).collect()
}

/// The `id` of a job, batch or article (empty when it has none, which its shape assertion
/// reports).
pub fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_default().to_owned()
}

/// The id of the worker a job names as its owner, if any.
pub fn owner_of(job: &Value) -> Option<String> {
    job["worker"]["id"].as_str().map(str::to_owned)
}

/// Asserts no value repeats in `values`.
pub fn assert_unique(values: &[String], what: &str) {
    let mut seen = BTreeSet::new();
    for value in values {
        assert!(seen.insert(value), "{what}: {value} appears twice");
    }
}
