//! Job routes: create, list, read, start, stop, delete.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use newsflow_core::{JobId, JobSpec, JobState};
use tokio::sync::oneshot;

use super::error::{AppError, ErrorBody, JsonBody};
use super::params::Params;
use super::views::{JobList, JobView, JobWithWarnings};
use super::AppState;
use crate::state::IngestCommand;
use crate::store::JobRecord;

/// Parses a job id from a path, as a 404 when it cannot name a job.
pub fn path_job(raw: &str) -> Result<JobId, AppError> {
    JobId::parse(raw).map_err(|_| AppError::job_not_found(raw))
}

pub(super) fn view(state: &AppState, record: JobRecord) -> Result<JobView, AppError> {
    let status = state.shared.store.job_status(record.spec.id())?;
    let plan = state.shared.plans.get(record.spec.id().as_str());
    Ok(JobView::new(
        record,
        status,
        state.shared.default_keep_batches,
        plan,
    ))
}

/// The job's view with the warnings about its plan.
fn view_with_warnings(state: &AppState, record: JobRecord) -> Result<JobWithWarnings, AppError> {
    let warnings = super::quota::warnings(state)?;
    Ok(JobWithWarnings {
        job: view(state, record)?,
        warnings,
    })
}

pub(super) fn load(state: &AppState, id: &JobId) -> Result<JobRecord, AppError> {
    state
        .shared
        .store
        .job(id)?
        .ok_or_else(|| AppError::job_not_found(id.as_str()))
}

/// Create a job and start it on a worker.
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = super::openapi::CreateJobBody,
    responses(
        (status = 201, description = "Created (and started; `Location: /jobs/{id}` when a worker acknowledged; `worker` is null otherwise), with `warnings` (`over_budget`)", body = JobWithWarnings),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "The id is taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid value", body = ErrorBody),
        (status = 503, description = "`no_controller`: a read replica found no instance controlling jobs to run the change (not made; `Retry-After`); `not_replicated`: made, but not yet in the jobs bucket", body = ErrorBody), (status = 504, description = "`controller_timeout`: the controlling instance did not answer a forwarded change in time", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, AppError> {
    let spec = JobSpec::from_create_request(&body)?;
    let now = newsflow_core::now_utc();
    let record = JobRecord {
        spec,
        state: JobState::Running,
        worker: None,
        created_at: now,
        updated_at: now,
    };
    let id = record.spec.id().clone();
    let hold = state.control.hold_start(&id);
    if !state.shared.store.create_job(&record)? {
        return Err(AppError::Conflict {
            code: "job_exists",
            message: format!("a job with id {:?} already exists", id.as_str()),
        });
    }
    state.shared.store.flush().await?;
    crate::events::job_changed(&state.shared, &id);
    state.control.start(&state.shared, &id, hold).await;
    let record = load(&state, &id)?;
    let location = axum::http::HeaderValue::from_str(&format!("/jobs/{}", id.as_str()))
        .map_err(anyhow::Error::from)?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(view_with_warnings(&state, record)?),
    ))
}

/// List jobs by id.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1..=1000, default 100"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "ETag, Cache-Control: private, no-cache", body = JobList), (status = 304, description = "Not modified: If-None-Match lists the current ETag"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<JobList>, AppError> {
    let params = Params::parse(query.as_deref(), &["limit", "cursor"])?;
    let limit = params.limit()?;
    let after = params.cursor()?;
    let (records, more) = state.shared.store.jobs_page(after.as_deref(), limit)?;
    let next_cursor = more
        .then(|| {
            records
                .last()
                .map(|r| newsflow_core::cursor::encode(r.spec.id().as_str().as_bytes()))
        })
        .flatten();
    let jobs = records
        .into_iter()
        .map(|r| view(&state, r))
        .collect::<Result<_, _>>()?;
    Ok(Json(JobList { jobs, next_cursor }))
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, description = "ETag, Cache-Control: private, no-cache", body = JobView), (status = 304, description = "Not modified: If-None-Match lists the current ETag"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, AppError> {
    let id = path_job(&id)?;
    Ok(Json(view(&state, load(&state, &id)?)?))
}

/// Resume a stopped job.
#[utoipa::path(post, path = "/jobs/{id}/start", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, description = "Running, with `warnings` (`over_budget`)", body = JobWithWarnings), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, description = "`no_controller`: a read replica found no instance controlling jobs to run the change (not made; `Retry-After`); `not_replicated`: made, but not yet in the jobs bucket", body = ErrorBody), (status = 504, description = "`controller_timeout`: the controlling instance did not answer a forwarded change in time", body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobWithWarnings>, AppError> {
    let id = path_job(&id)?;
    let before = load(&state, &id)?;
    if before.state != JobState::Running || before.worker.is_none() {
        let hold = state.control.hold_start(&id);
        state.shared.store.update_job(&id, |r| {
            if r.state != JobState::Running {
                r.state = JobState::Running;
                r.updated_at = newsflow_core::now_utc();
            }
        })?;
        state.shared.store.flush().await?;
        crate::events::job_changed(&state.shared, &id);
        state.control.start(&state.shared, &id, hold).await;
    }
    Ok(Json(view_with_warnings(&state, load(&state, &id)?)?))
}

/// Stop fetching: the owning worker is told to stop and acknowledges.
#[utoipa::path(post, path = "/jobs/{id}/stop", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, description = "`no_controller`: a read replica found no instance controlling jobs to run the change (not made; `Retry-After`); `not_replicated`: made, but not yet in the jobs bucket", body = ErrorBody), (status = 504, description = "`controller_timeout`: the controlling instance did not answer a forwarded change in time", body = ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, AppError> {
    let id = path_job(&id)?;
    stop_job(&state, &id).await?;
    crate::events::job_changed(&state.shared, &id);
    Ok(Json(view(&state, load(&state, &id)?)?))
}

async fn stop_job(state: &AppState, id: &JobId) -> Result<(), AppError> {
    let stopped = state
        .shared
        .store
        .update_job(id, |r| {
            if r.state != JobState::Stopped || r.worker.is_some() {
                r.state = JobState::Stopped;
                r.updated_at = newsflow_core::now_utc();
            }
        })?
        .ok_or_else(|| AppError::job_not_found(id.as_str()))?;
    state.shared.store.flush().await?;
    if let Some(owner) = stopped.worker {
        // Stopped whether or not the owner answers: a worker that missed this is fenced by
        // the reconciler at its next heartbeat.
        state.control.stop(&state.shared, &owner.id, id).await;
        state.shared.store.update_job(id, |r| {
            if r.state == JobState::Stopped {
                r.worker = None;
            }
        })?;
    }
    Ok(())
}

/// Stop the job, then delete it and everything stored for it.
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, description = "`no_controller`: a read replica found no instance controlling jobs to run the change (not made; `Retry-After`); `not_replicated`: made, but not yet in the jobs bucket", body = ErrorBody), (status = 504, description = "`controller_timeout`: the controlling instance did not answer a forwarded change in time", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let id = path_job(&id)?;
    stop_job(&state, &id).await?;
    let (reply, answer) = oneshot::channel();
    state
        .shared
        .ingest
        .send(IngestCommand::DeleteJob(id.clone(), reply))
        .await
        .map_err(|_| AppError::NotReady("the store is shutting down".to_owned()))?;
    let existed = answer
        .await
        .map_err(|_| AppError::NotReady("the store is shutting down".to_owned()))??;
    if existed {
        crate::events::job_changed(&state.shared, &id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::job_not_found(id.as_str()))
    }
}
