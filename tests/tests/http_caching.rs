//! HTTP conventions: `Location` on 201, and `ETag` + `If-None-Match` → 304 with
//! `Cache-Control` on every GET of stored data.

use std::time::Duration;

use newsflow_tests::{Api, StatusCode, System};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(30);

struct Answer {
    status: StatusCode,
    etag: Option<String>,
    cache_control: Option<String>,
    location: Option<String>,
    body: String,
}

async fn send(api: &Api, request: reqwest::RequestBuilder) -> Answer {
    let request = match api.token() {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let response = request.send().await.expect("an answer");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (etag, cache_control, location) =
        (header("etag"), header("cache-control"), header("location"));
    let status = response.status();
    Answer {
        status,
        etag,
        cache_control,
        location,
        body: response.text().await.expect("a body"),
    }
}

async fn get(api: &Api, path: &str, if_none_match: Option<&str>) -> Answer {
    let mut request = reqwest::Client::new().get(format!("{}{path}", api.base()));
    if let Some(tag) = if_none_match {
        request = request.header("If-None-Match", tag);
    }
    send(api, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_of_stored_data_has_an_etag_and_answers_304_when_it_did_not_change() {
    let system = System::builder()
        .workers(1)
        .api_token("sesame")
        .start()
        .await;
    let api = system.api();
    let created = send(
        &api,
        reqwest::Client::new()
            .post(format!("{}/jobs", api.base()))
            .json(
                &json!({"id":"tagged","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
            ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.location.as_deref(), Some("/jobs/tagged"));
    let latest = api.wait_for_latest("tagged", None, WITHIN).await;
    // The run's plan (next_run_at) changes the job's view, and so its tag, a moment later.
    api.wait_for_next_run_beyond("tagged", Duration::from_secs(1800), WITHIN)
        .await;
    let batch = latest["batch"]["id"]
        .as_str()
        .expect("a batch id")
        .to_owned();

    let paths = [
        "/jobs".to_owned(),
        "/jobs/tagged".to_owned(),
        "/jobs/tagged/articles".to_owned(),
        "/jobs/tagged/batches".to_owned(),
        format!("/jobs/tagged/batches/{batch}/articles"),
        "/articles".to_owned(),
        "/articles?job=tagged&limit=2".to_owned(),
    ];
    for path in &paths {
        let first = get(&api, path, None).await;
        assert_eq!(first.status, StatusCode::OK, "GET {path}: {}", first.body);
        let etag = first
            .etag
            .clone()
            .unwrap_or_else(|| panic!("GET {path} has an ETag"));
        let cache_control = first
            .cache_control
            .clone()
            .unwrap_or_else(|| panic!("GET {path} has Cache-Control"));
        assert!(
            cache_control.contains("private"),
            "GET {path}: {cache_control}"
        );
        let again = get(&api, path, Some(&etag)).await;
        assert_eq!(
            again.status,
            StatusCode::NOT_MODIFIED,
            "GET {path} with If-None-Match"
        );
        assert_eq!(again.body, "", "a 304 has no body: GET {path}");
        assert_eq!(again.etag.as_deref(), Some(etag.as_str()), "GET {path}");
        let other = get(&api, path, Some("\"something-else\"")).await;
        assert_eq!(other.status, StatusCode::OK, "GET {path} with a stale tag");
        assert_eq!(other.body, first.body, "GET {path}");
    }

    // A complete batch never changes: its pages may be kept.
    for path in [
        "/jobs/tagged/articles".to_owned(),
        format!("/jobs/tagged/batches/{batch}/articles"),
    ] {
        let page = get(&api, &path, None).await;
        let cache_control = page.cache_control.unwrap_or_default();
        assert!(
            cache_control.contains("immutable"),
            "GET {path}: {cache_control}"
        );
    }
    // Everything else is revalidated, and a change changes the tag.
    let before = get(&api, "/jobs/tagged", None).await;
    assert!(before
        .cache_control
        .unwrap_or_default()
        .contains("no-cache"));
    let (status, _) = api.post_empty("/jobs/tagged/stop").await;
    assert_eq!(status, StatusCode::OK);
    let after = get(&api, "/jobs/tagged", before.etag.as_deref()).await;
    assert_eq!(after.status, StatusCode::OK, "a changed job is sent again");
    assert_ne!(after.etag, before.etag);
}
