//! Editing a job and previewing a pipeline: PATCH takes effect on the next run, with no run of
//! the old spec after the 200, whoever patches at the same time; a preview changes nothing.

use std::time::Duration;

use newsflow_tests::serde_json::{json, Value};
use newsflow_tests::{wait_for, Api, StatusCode, System};
use reqwest::Method;

use super::WITHIN;

async fn patch(api: &Api, job: &str, body: &Value) -> (StatusCode, Value) {
    api.send(Method::PATCH, &format!("/jobs/{job}"), Some(body))
        .await
}

/// The job's complete batches whose run started at or after `since` (RFC 3339 text).
async fn complete_since(api: &Api, job: &str, since: &str) -> Vec<Value> {
    let since = newsflow_tests::contract::assert_time(&json!(since), "since");
    api.batches(job)
        .await
        .into_iter()
        .filter(|b| b["status"] == "complete")
        .filter(|b| newsflow_tests::contract::assert_time(&b["started_at"], "started_at") >= since)
        .collect()
}

fn now_text() -> String {
    newsflow_core::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_takes_effect_on_the_next_run_and_no_old_run_starts_after_the_200() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"edited","params":{"q":"bitcoin"},"interval_secs":1,"page_size":10}),
    )
    .await;
    api.wait_for_latest("edited", None, WITHIN).await;

    let (status, job) = patch(
        &api,
        "edited",
        &json!({"page_size":20,"pipeline":[{"type":"limit","max":3}]}),
    )
    .await;
    let answered = now_text();

    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["page_size"], 20, "{job}");
    assert_eq!(job["pipeline"], json!([{"type":"limit","max":3}]), "{job}");
    assert_eq!(job["params"], json!({"q":"bitcoin"}), "{job}");
    let after = wait_for(WITHIN, "two complete runs after the patch", || async {
        let batches = complete_since(&api, "edited", &answered).await;
        (batches.len() >= 2).then_some(batches)
    })
    .await;
    for batch in &after {
        assert_eq!(
            batch["fetched_count"], 20,
            "a run of the old spec after the 200: {batch}"
        );
        assert_eq!(batch["article_count"], 3, "{batch}");
        assert_eq!(batch["dropped"], json!({"limit": 17}), "{batch}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_leave_one_of_them_stored_and_run() {
    let system = System::builder().workers(2).start().await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"contested","params":{"q":"bitcoin"},"interval_secs":1,"page_size":20}),
    )
    .await;
    api.wait_for_latest("contested", None, WITHIN).await;

    let answers = futures::future::join_all((1..=8).map(|max| {
        let api = api.clone();
        async move {
            patch(
                &api,
                "contested",
                &json!({"pipeline":[{"type":"limit","max":max}]}),
            )
            .await
        }
    }))
    .await;
    let answered = now_text();

    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    let stored = api.job("contested").await;
    let max = stored["pipeline"][0]["max"]
        .as_u64()
        .expect("a limit stage");
    assert!((1..=8).contains(&max), "{stored}");
    let after = wait_for(WITHIN, "two complete runs after the patches", || async {
        let batches = complete_since(&api, "contested", &answered).await;
        (batches.len() >= 2).then_some(batches)
    })
    .await;
    for batch in &after {
        assert_eq!(
            batch["article_count"], max,
            "the stored spec is the one run: {batch}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_patch_is_refused_and_changes_nothing() {
    let system = System::builder().start().await;
    let api = system.api();
    let created = api
        .create_job_ok(&json!({"id":"fixed","params":{"q":"bitcoin"}}))
        .await;
    for (body, code, names) in [
        (json!({"id":"other"}), "not_patchable", "id"),
        (json!({"state":"stopped"}), "not_patchable", "state"),
        (json!({"colour":"red"}), "unknown_field", "colour"),
        (json!({"interval_secs":0}), "out_of_range", "interval_secs"),
        (
            json!({"pipeline":[{"type":"sharpen"}]}),
            "unknown_stage",
            "sharpen",
        ),
        (
            json!({"pipeline":[{"type":"fields","drop":["seq"]}]}),
            "invalid_stage",
            "seq",
        ),
    ] {
        let (status, error) = patch(&api, "fixed", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{names} in {message}");
    }
    let (status, _) = patch(&api, "nobody", &json!({"interval_secs":5})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let now = api.job("fixed").await;
    assert_eq!(now["updated_at"], created["updated_at"], "{now}");
    assert_eq!(now["pipeline"], json!([]), "{now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_shows_what_a_pipeline_keeps_and_changes_nothing() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    api.create_job_ok(
        &json!({"id":"tried","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":30}),
    )
    .await;
    let latest = api.wait_for_latest("tried", None, WITHIN).await;
    // Once the run's plan is in, the job's view changes no more until its next run.
    let job_before = api
        .wait_for_next_run_beyond("tried", Duration::from_secs(1800), WITHIN)
        .await;
    let batches_before = api.batches("tried").await;
    let stream_before = bus.stream_info().await.state.messages;

    let (status, preview) = api
        .post(
            "/jobs/tried/pipeline/preview",
            &json!({"pipeline":[
                {"type":"filter","include":["explainer"],"fields":["title"]},
                {"type":"enrich","add":["domain"]}
            ]}),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{preview}");
    let kept = preview["kept"].as_array().expect("kept");
    assert!(!kept.is_empty() && kept.len() < 30, "{preview}");
    for article in kept {
        let title = article["title"].as_str().unwrap_or_default().to_lowercase();
        assert!(title.contains("explainer"), "{title}");
        assert!(article["extra"]["domain"].is_string(), "{article}");
    }
    assert_eq!(
        preview["dropped"],
        json!({"filter": 30 - kept.len()}),
        "{preview}"
    );
    assert_eq!(api.job("tried").await, job_before);
    assert_eq!(api.batches("tried").await, batches_before);
    assert_eq!(api.latest("tried").await, latest);
    assert_eq!(bus.stream_info().await.state.messages, stream_before);
    let (status, error) = api
        .post(
            "/jobs/tried/pipeline/preview",
            &json!({"pipeline":[{"type":"limit"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max"),
        "{error}"
    );
}
