//! Article and batch routes: the latest complete batch, a job's batches, one batch's
//! articles, and the cross-job feed.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use newsflow_core::{BatchId, BatchStatus, JobId, JobState, ValidationError};

use super::error::{AppError, ErrorBody};
use super::jobs::path_job;
use super::params::{invalid_cursor, Params};
use super::views::{ArticlesPage, BatchContext, BatchList, BatchView, FeedPage};
use super::AppState;
use crate::state::PageKey;
use crate::store::FeedFilter;

const PAGE_PARAMS: &[&str] = &["limit", "cursor"];

/// The latest complete batch of a job.
#[utoipa::path(get, path = "/jobs/{id}/articles", tag = "articles",
    params(("id" = String, Path), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1..=1000, default 100"), ("cursor" = Option<String>, Query)),
    responses(
        (status = 200, description = "The latest complete batch (batch null before the first one); ETag, 304 on If-None-Match", body = ArticlesPage<'static>),
        (status = 304, description = "Not modified"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn latest(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let job = path_job(&id)?;
    let params = Params::parse(query.as_deref(), PAGE_PARAMS)?;
    let limit = params.limit()?;
    require_job(&state, &job)?;
    let (batch, after) = match params.cursor()? {
        Some(cursor) => batch_cursor(&cursor)?,
        None => match state.shared.store.latest_batch(&job)? {
            Some(latest) => (latest, None),
            None => {
                let body = ArticlesPage::new(job.as_str(), None, &[], None)
                    .and_then(|page| page.to_body())
                    .map_err(page_error)?;
                return Ok(json_response(Bytes::from(body), None));
            }
        },
    };
    complete_batch_page(&state, &job, batch, after, limit, &headers)
}

/// One batch's articles (articles only once the batch is complete: readers never see a
/// partial batch).
#[utoipa::path(get, path = "/jobs/{id}/batches/{batch_id}/articles", tag = "articles",
    params(("id" = String, Path), ("batch_id" = String, Path), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = ArticlesPage<'static>), (status = 304, description = "Not modified"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn of_batch(
    State(state): State<AppState>,
    Path((id, batch_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let job = path_job(&id)?;
    require_job(&state, &job)?;
    let batch = BatchId::parse(&batch_id).map_err(|_| batch_not_found(&batch_id))?;
    let params = Params::parse(query.as_deref(), PAGE_PARAMS)?;
    let limit = params.limit()?;
    let after = match params.cursor()? {
        Some(cursor) => {
            let (cursor_batch, after) = batch_cursor(&cursor)?;
            if cursor_batch != batch {
                return Err(invalid_cursor(ValidationError::new(
                    "cursor",
                    "invalid_cursor",
                    "the cursor belongs to another batch",
                )));
            }
            after
        }
        None => None,
    };
    let record = state
        .shared
        .store
        .batch(&job, batch)?
        .ok_or_else(|| batch_not_found(&batch_id))?;
    if record
        .marker
        .as_ref()
        .is_some_and(|m| m.status == BatchStatus::Complete)
    {
        return complete_batch_page(&state, &job, batch, after, limit, &headers);
    }
    let context = batch_context(&state, &job)?;
    let view = BatchView::new(batch, &record, &context, || {
        stored_count(&state, &job, batch)
    });
    let body = ArticlesPage::new(job.as_str(), Some(view), &[], None)
        .and_then(|page| page.to_body())
        .map_err(page_error)?;
    Ok(json_response(Bytes::from(body), None))
}

/// A page of a complete batch: immutable, so served from the cache with an ETag.
fn complete_batch_page(
    state: &AppState,
    job: &JobId,
    batch: BatchId,
    after: Option<u32>,
    limit: usize,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let etag = format!("\"{batch}.{}.{limit}\"", after.map_or(-1, i64::from));
    if super::caching::matches(headers, &etag) {
        return Ok(super::caching::not_modified(
            HeaderValue::from_str(&etag).map_err(anyhow::Error::from)?,
            super::caching::IMMUTABLE,
        ));
    }
    let key = PageKey {
        job: job.clone(),
        batch,
        after,
        limit,
    };
    if let Some(body) = state.shared.cache.get(&key) {
        state.shared.metrics.cache_hits.inc();
        return Ok(json_response(body, Some(&etag)));
    }
    let record = state
        .shared
        .store
        .batch(job, batch)?
        .filter(|r| {
            r.marker
                .as_ref()
                .is_some_and(|m| m.status == BatchStatus::Complete)
        })
        .ok_or_else(|| AppError::BadRequest {
            code: "invalid_cursor",
            message:
                "the cursor refers to a batch that no longer exists; start again without a cursor"
                    .to_owned(),
        })?;
    let context = BatchContext {
        newest: None,
        latest: None,
        running: false,
    };
    let view = BatchView::new(batch, &record, &context, || 0);
    let page = state
        .shared
        .store
        .batch_articles(job, batch, after, limit)?;
    let next = page.next.as_deref().map(|seq| {
        let mut key = batch.to_bytes().to_vec();
        key.extend_from_slice(seq);
        newsflow_core::cursor::encode(&key)
    });
    let body = ArticlesPage::new(job.as_str(), Some(view), &page.articles, next)
        .and_then(|page| page.to_body())
        .map_err(page_error)?;
    let body = Bytes::from(body);
    state.shared.cache.put(key, body.clone());
    Ok(json_response(body, Some(&etag)))
}

/// A job's batches, newest first.
#[utoipa::path(get, path = "/jobs/{id}/batches", tag = "articles",
    params(("id" = String, Path), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "ETag, Cache-Control: private, no-cache", body = BatchList), (status = 304, description = "Not modified: If-None-Match lists the current ETag"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn batches(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<BatchList>, AppError> {
    let job = path_job(&id)?;
    let params = Params::parse(query.as_deref(), PAGE_PARAMS)?;
    let limit = params.limit()?;
    let before = match params.cursor()? {
        Some(cursor) => Some(BatchId::from_bytes(
            cursor.as_slice().try_into().map_err(|_| bad_cursor())?,
        )),
        None => None,
    };
    let context = batch_context(&state, &job)?;
    let (records, more) = state.shared.store.batches_page(&job, before, limit)?;
    let next_cursor = more
        .then(|| {
            records
                .last()
                .map(|(id, _)| newsflow_core::cursor::encode(&id.to_bytes()))
        })
        .flatten();
    let batches = records
        .iter()
        .map(|(batch, record)| {
            BatchView::new(*batch, record, &context, || {
                stored_count(&state, &job, *batch)
            })
        })
        .collect();
    Ok(Json(BatchList {
        batches,
        next_cursor,
    }))
}

/// Every stored article across jobs, unique by URL, newest first.
#[utoipa::path(get, path = "/articles", tag = "articles",
    params(
        ("job" = Option<String>, Query, description = "only this job's articles"),
        ("since" = Option<String>, Query, format = DateTime, description = "RFC 3339: only articles published at or after"),
        ("q" = Option<String>, Query, min_length = 1, max_length = 500, description = "text in title, description or content (case-insensitive)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "ETag, Cache-Control: private, no-cache", body = FeedPage<'static>), (status = 304, description = "Not modified: If-None-Match lists the current ETag"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn feed(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let params = Params::parse(query.as_deref(), &["job", "since", "q", "limit", "cursor"])?;
    let limit = params.limit()?;
    let after = params.cursor()?;
    if after.as_ref().is_some_and(|c| c.len() != 24) {
        return Err(bad_cursor());
    }
    let filter = FeedFilter {
        job: params
            .get("job")
            .map(JobId::parse)
            .transpose()
            .map_err(|e| ValidationError::new("job", e.code, e.message))?,
        since: params
            .get("since")
            .map(|raw| {
                time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
                    .map(|t| t.unix_timestamp())
                    .map_err(|_| {
                        ValidationError::new(
                            "since",
                            "invalid_date",
                            format!(
                                "since {raw:?} is not an RFC 3339 time (e.g. 2026-11-20T08:00:00Z)"
                            ),
                        )
                    })
            })
            .transpose()?,
        q: match params.get("q") {
            Some(q) if q.trim().is_empty() || q.chars().count() > 500 => {
                return Err(ValidationError::new(
                    "q",
                    "invalid_value",
                    "q must be 1 to 500 characters",
                )
                .into());
            }
            Some(q) => Some(q.trim().to_lowercase()),
            None => None,
        },
    };
    let page = state
        .shared
        .store
        .feed_page(&filter, after.as_deref(), limit)?;
    let next = page.next.as_deref().map(newsflow_core::cursor::encode);
    let body = FeedPage::new(&page.articles, next)
        .and_then(|page| page.to_body())
        .map_err(page_error)?;
    Ok(json_response(Bytes::from(body), None))
}

/// Stream data is served only under a job data-streams has: a 404 otherwise, as `/jobs/{id}`.
fn require_job(state: &AppState, job: &JobId) -> Result<(), AppError> {
    if state.shared.store.job_exists(job)? {
        Ok(())
    } else {
        Err(AppError::job_not_found(job.as_str()))
    }
}

fn batch_context(state: &AppState, job: &JobId) -> Result<BatchContext, AppError> {
    let record = state
        .shared
        .store
        .job(job)?
        .ok_or_else(|| AppError::job_not_found(job.as_str()))?;
    let status = state.shared.store.job_status(job)?;
    Ok(BatchContext {
        newest: state.shared.store.newest_batch(job)?,
        latest: status.latest.map(|l| l.id),
        running: record.state == JobState::Running,
    })
}

fn stored_count(state: &AppState, job: &JobId, batch: BatchId) -> u32 {
    state.shared.store.count_batch_articles(job, batch)
}

fn batch_cursor(cursor: &[u8]) -> Result<(BatchId, Option<u32>), AppError> {
    let (batch, seq) = cursor.split_at_checked(16).ok_or_else(bad_cursor)?;
    let batch = BatchId::from_bytes(batch.try_into().map_err(|_| bad_cursor())?);
    let seq = u32::from_be_bytes(seq.try_into().map_err(|_| bad_cursor())?);
    Ok((batch, Some(seq)))
}

fn bad_cursor() -> AppError {
    invalid_cursor(ValidationError::new(
        "cursor",
        "invalid_cursor",
        "cursor is not one this route issued: pass back next_cursor unchanged, or omit it",
    ))
}

fn batch_not_found(batch: &str) -> AppError {
    AppError::NotFound {
        code: "batch_not_found",
        message: format!("no batch with id {batch:?} in this job"),
    }
}

/// Stored articles are JSON written by ingest: one that is not means a broken store (500).
fn page_error(error: serde_json::Error) -> AppError {
    AppError::Internal(anyhow::Error::new(error).context("serializing a page of stored articles"))
}

fn json_response(body: Bytes, etag: Option<&str>) -> Response {
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        response.headers_mut().insert(header::ETAG, etag);
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(super::caching::IMMUTABLE),
        );
    }
    response
}
