//! Editing a job: `PATCH /jobs/{id}` takes a JSON merge patch (RFC 7396) of the spec's
//! editable fields, validated like a create; `POST /jobs/{id}/pipeline/preview` tries a
//! pipeline on the job's latest complete batch without changing anything.
//!
//! A running job picks up a new spec for its next run with no run of the old spec after the
//! 200: the new spec is stored and flushed, the owner is told to stop and acknowledges once
//! its run in hand is cancelled, and a start carrying the stored spec goes out, all under
//! [`Control::edits`](crate::control::Control::edits), so concurrent edits apply in turn and
//! the last start carries the last stored spec.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use newsflow_core::pipeline::{Memory, Pipeline};
use newsflow_core::{Article, JobSpec, JobState, ValidationError};
use serde_json::{Map, Value};

use super::error::{AppError, ErrorBody, JsonBody};
use super::jobs::{load, path_job, view};
use super::views::JobView;
use super::AppState;

/// The fields a patch may change.
pub const PATCHABLE: [&str; 7] = [
    "params",
    "interval_secs",
    "max_pages",
    "page_size",
    "pipeline",
    "keep_batches",
    "endpoint",
];

/// A JSON merge patch of a job's editable fields (RFC 7396: `null` removes a field, which then
/// takes its default; objects such as `params` merge key by key).
#[allow(dead_code)]
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"params":{"q":"open source"},"pipeline":[{"type":"dedupe","window_batches":5}]}))]
pub struct JobPatch {
    /// Merged into the current parameters key by key; `null` removes one.
    params: Option<BTreeMap<String, Option<String>>>,
    /// Seconds between runs.
    interval_secs: Option<u32>,
    /// Pages per run at most.
    max_pages: Option<u32>,
    /// Articles per page.
    page_size: Option<u32>,
    /// Replaces the pipeline (`null` or `[]`: none).
    pipeline: Option<Vec<newsflow_core::pipeline::StageSpec>>,
    /// How many batches the job keeps (`null`: the service default).
    keep_batches: Option<u32>,
    /// `everything` or `top-headlines`.
    endpoint: Option<newsflow_core::Endpoint>,
}

/// The preview request.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct PreviewRequest {
    /// The stages to try, as a job's `pipeline`.
    pub pipeline: Vec<newsflow_core::pipeline::StageSpec>,
}

/// What a pipeline would keep of the latest complete batch.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PreviewResult {
    /// The articles it keeps, shaped.
    pub kept: Vec<Article>,
    /// How many each stage type drops.
    pub dropped: BTreeMap<String, u32>,
}

/// RFC 7396: `patch` applied to `target`.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The spec `patch` makes of `current`, checked like a create body.
fn patched(current: &JobSpec, patch: &Value) -> Result<JobSpec, ValidationError> {
    let Some(fields) = patch.as_object() else {
        return Err(ValidationError::new(
            "body",
            "invalid_type",
            "the body must be a JSON merge patch: an object of the fields to change",
        ));
    };
    if let Some(fixed) = fields.keys().find(|k| *k == "id" || *k == "state") {
        return Err(ValidationError::new(
            fixed.clone(),
            "not_patchable",
            format!(
                "{fixed} cannot be changed by a patch (use POST /jobs/{{id}}/start or /stop for the state)"
            ),
        ));
    }
    if let Some(unknown) = fields.keys().find(|k| !PATCHABLE.contains(&k.as_str())) {
        return Err(ValidationError::new(
            unknown.clone(),
            "unknown_field",
            format!(
                "unknown field {unknown:?}; a patch may change: {}",
                PATCHABLE.join(", ")
            ),
        ));
    }
    let mut body = serde_json::to_value(current)
        .map_err(|e| ValidationError::new("body", "invalid_type", e.to_string()))?;
    merge(&mut body, patch);
    JobSpec::from_create_request(&body)
}

/// Change a job's spec.
#[utoipa::path(patch, path = "/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    request_body(content = JobPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "Changed; a running job's next run uses the new spec, and no run of the old one starts after this answer", body = JobView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "A field is invalid, unknown or not patchable (id, state)", body = ErrorBody),
        (status = 503, description = "`no_controller`: a read replica found no instance controlling jobs to run the change (not made; `Retry-After`); `not_replicated`: made, but not yet in the jobs bucket", body = ErrorBody), (status = 504, description = "`controller_timeout`: the controlling instance did not answer a forwarded change in time", body = ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<JobView>, AppError> {
    let id = path_job(&id)?;
    let _edit = state.control.edits().lock().await;
    let spec = patched(&load(&state, &id)?.spec, &body)?;
    let hold = state.control.hold_start(&id);
    let stored = state
        .shared
        .store
        .update_job(&id, |r| {
            r.spec = spec.clone();
            r.updated_at = newsflow_core::now_utc();
        })?
        .ok_or_else(|| AppError::job_not_found(id.as_str()))?;
    state.shared.store.flush().await?;
    if stored.state == JobState::Running {
        if let Some(owner) = &stored.worker {
            // Acknowledged once the owner's run in hand is cancelled: no run of the old spec
            // starts after this. An owner that does not answer is fenced by the reconciler.
            state.control.stop(&state.shared, &owner.id, &id).await;
        }
        state.control.start(&state.shared, &id, hold).await;
    }
    crate::events::job_changed(&state.shared, &id);
    Ok(Json(view(&state, load(&state, &id)?)?))
}

/// Try a pipeline on the job's latest complete batch; nothing is changed.
#[utoipa::path(post, path = "/jobs/{id}/pipeline/preview", tag = "jobs", params(("id" = String, Path)),
    request_body = PreviewRequest,
    responses(
        (status = 200, description = "What the stages keep of the latest complete batch (none before the first one); `dedupe` compares with nothing, since the memory is the workers'", body = PreviewResult),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "An invalid stage, named", body = ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<PreviewResult>, AppError> {
    let id = path_job(&id)?;
    load(&state, &id)?;
    let fields = body.as_object().ok_or_else(|| {
        ValidationError::new(
            "body",
            "invalid_type",
            "the body must be {\"pipeline\":[...]}",
        )
    })?;
    if let Some(unknown) = fields.keys().find(|k| *k != "pipeline") {
        return Err(ValidationError::new(
            unknown.clone(),
            "unknown_field",
            format!("unknown field {unknown:?}; a preview takes only pipeline"),
        )
        .into());
    }
    let pipeline = Pipeline::parse(fields.get("pipeline").unwrap_or(&Value::Null))?;
    let articles = match state.shared.store.job_status(&id)?.latest {
        None => Vec::new(),
        Some(latest) => state
            .shared
            .store
            .batch_articles(&id, latest.id, None, usize::MAX)?
            .articles
            .iter()
            .map(|json| serde_json::from_slice::<Article>(json))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("a stored article does not parse: {e}"))?,
    };
    let outcome = pipeline.run(articles, &Memory::default());
    Ok(Json(PreviewResult {
        kept: outcome.kept,
        dropped: outcome.dropped,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> JobSpec {
        JobSpec::from_create_request(&json!({"id":"a","params":{"q":"x","language":"en"},"interval_secs":60,"keep_batches":5}))
            .expect("valid")
    }

    #[test]
    fn a_merge_patch_changes_only_what_it_names_and_null_restores_defaults() {
        let changed = patched(
            &spec(),
            &json!({"params":{"q":"y","language":null},"keep_batches":null,"pipeline":[{"type":"limit","max":3}]}),
        )
        .expect("valid");
        let wire = serde_json::to_value(&changed).expect("serializes");
        assert_eq!(
            wire,
            json!({"id":"a","endpoint":"everything","params":{"q":"y"},"interval_secs":60,"max_pages":1,"page_size":100,"pipeline":[{"type":"limit","max":3}]})
        );
        assert_eq!(patched(&spec(), &json!({})).expect("empty patch"), spec());
    }

    #[test]
    fn id_state_unknown_and_invalid_fields_are_refused_like_a_create() {
        let code = |patch: Value| patched(&spec(), &patch).expect_err("refused").code;
        assert_eq!(code(json!({"id":"b"})), "not_patchable");
        assert_eq!(code(json!({"state":"stopped"})), "not_patchable");
        assert_eq!(code(json!({"colour":"red"})), "unknown_field");
        assert_eq!(code(json!({"interval_secs":0})), "out_of_range");
        assert_eq!(
            code(json!({"pipeline":[{"type":"sharpen"}]})),
            "unknown_stage"
        );
        assert_eq!(code(json!({"params":{"q":null}})), "scope_missing");
        assert_eq!(code(json!([1])), "invalid_type");
    }
}
