//! Unknown or unparsable ids, unknown routes, wrong methods, unknown or repeated query
//! parameters, bad limits and filters, and bad or misplaced cursors: each a contract error.

use newsflow_core::{Article, BatchId};
use newsflow_tests::bus::sample_article;
use newsflow_tests::contract::assert_articles_page;
use newsflow_tests::hostile::raw_http;
use newsflow_tests::System;
use serde_json::json;

use crate::{assert_no_failures, assert_refused, check_refused, BATCH_WITHIN};

/// `(method, path, status, code)`.
type RouteCase = (&'static str, String, u16, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_routes_methods_parameters_and_cursors_get_contract_errors() {
    let system = System::builder().start().await;
    let api = system.api();
    let addr = system.data_streams().http_addr();
    api.create_job_ok(&json!({"id":"cur","params":{"q":"x"},"interval_secs":3600}))
        .await;
    // A complete batch of three, published as a conforming worker would, for real cursors.
    let batch = BatchId::generate();
    let articles: Vec<Article> = (0..3)
        .map(|i| sample_article("cur", batch, i, ""))
        .collect();
    system.bus().await.publish_complete_batch(&articles).await;
    let page = api.wait_for_latest("cur", None, BATCH_WITHIN).await;
    assert_articles_page(&page, "cur");
    let (_, first) = api.get("/jobs/cur/articles?limit=1").await;
    let article_cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let other_batch = BatchId::generate();
    let unknown_ulid = BatchId::generate();
    let long_id = "a".repeat(4000);

    let routes: Vec<RouteCase> = vec![
        // Unknown or unparsable job and batch ids.
        ("GET", "/jobs/nope".into(), 404, "job_not_found"),
        ("GET", "/jobs/NOPE".into(), 404, "job_not_found"),
        ("GET", "/jobs/a.b".into(), 404, "job_not_found"),
        ("GET", "/jobs/%2e%2e".into(), 404, "job_not_found"),
        ("GET", "/jobs/a%2Fb".into(), 404, "job_not_found"),
        ("GET", "/jobs/%00".into(), 404, "job_not_found"),
        ("GET", format!("/jobs/{long_id}"), 404, "job_not_found"),
        ("POST", "/jobs/nope/start".into(), 404, "job_not_found"),
        ("POST", "/jobs/nope/stop".into(), 404, "job_not_found"),
        ("DELETE", "/jobs/nope".into(), 404, "job_not_found"),
        ("DELETE", "/jobs/NOPE".into(), 404, "job_not_found"),
        ("GET", "/jobs/nope/articles".into(), 404, "job_not_found"),
        ("GET", "/jobs/nope/batches".into(), 404, "job_not_found"),
        ("GET", "/jobs/Bad/batches".into(), 404, "job_not_found"),
        (
            "GET",
            "/jobs/cur/batches/not-a-ulid/articles".into(),
            404,
            "batch_not_found",
        ),
        (
            "GET",
            format!("/jobs/cur/batches/{unknown_ulid}/articles"),
            404,
            "batch_not_found",
        ),
        (
            "GET",
            format!("/jobs/nope/batches/{batch}/articles"),
            404,
            "job_not_found",
        ),
        // Unknown routes.
        // `/` is the web page; other paths near it are not routes.
        ("GET", "/index.html".into(), 404, "route_not_found"),
        ("POST", "/".into(), 405, "method_not_allowed"),
        ("GET", "/app.js/x".into(), 404, "route_not_found"),
        ("GET", "/nope".into(), 404, "route_not_found"),
        ("GET", "/jobs/cur/nope".into(), 404, "route_not_found"),
        (
            "GET",
            "/jobs/cur/batches/x/y/z".into(),
            404,
            "route_not_found",
        ),
        ("GET", "/v2/everything".into(), 404, "route_not_found"),
        ("POST", "/openapi.json/x".into(), 404, "route_not_found"),
        // Wrong methods.
        ("PUT", "/jobs".into(), 405, "method_not_allowed"),
        ("DELETE", "/jobs".into(), 405, "method_not_allowed"),
        ("PUT", "/jobs/cur".into(), 405, "method_not_allowed"),
        (
            "GET",
            "/jobs/cur/pipeline/preview".into(),
            405,
            "method_not_allowed",
        ),
        ("POST", "/jobs/cur".into(), 405, "method_not_allowed"),
        ("GET", "/jobs/cur/start".into(), 405, "method_not_allowed"),
        ("DELETE", "/jobs/cur/stop".into(), 405, "method_not_allowed"),
        (
            "POST",
            "/jobs/cur/articles".into(),
            405,
            "method_not_allowed",
        ),
        ("POST", "/articles".into(), 405, "method_not_allowed"),
        ("POST", "/healthz".into(), 405, "method_not_allowed"),
        ("DELETE", "/metrics".into(), 405, "method_not_allowed"),
        ("PUT", "/openapi.json".into(), 405, "method_not_allowed"),
        // Unknown or repeated query parameters: 400.
        ("GET", "/jobs?colour=red".into(), 400, "unknown_parameter"),
        (
            "GET",
            "/jobs?limit=1&limit=2".into(),
            400,
            "repeated_parameter",
        ),
        (
            "GET",
            "/jobs/cur/articles?page=2".into(),
            400,
            "unknown_parameter",
        ),
        (
            "GET",
            "/jobs/cur/batches?since=2026-01-01".into(),
            400,
            "unknown_parameter",
        ),
        ("GET", "/articles?apiKey=k".into(), 400, "unknown_parameter"),
        ("GET", "/articles?q=a&q=b".into(), 400, "repeated_parameter"),
        (
            "GET",
            "/dead-letters?job=cur".into(),
            400,
            "unknown_parameter",
        ),
        // Bad limits: 422.
        ("GET", "/jobs?limit=0".into(), 422, "out_of_range"),
        ("GET", "/jobs?limit=1001".into(), 422, "out_of_range"),
        ("GET", "/jobs?limit=-1".into(), 422, "out_of_range"),
        ("GET", "/jobs?limit=ten".into(), 422, "out_of_range"),
        ("GET", "/jobs?limit=".into(), 422, "out_of_range"),
        ("GET", "/jobs?limit=1.5".into(), 422, "out_of_range"),
        (
            "GET",
            "/jobs?limit=99999999999999999999999".into(),
            422,
            "out_of_range",
        ),
        (
            "GET",
            "/jobs/cur/articles?limit=0".into(),
            422,
            "out_of_range",
        ),
        (
            "GET",
            "/jobs/cur/batches?limit=5000".into(),
            422,
            "out_of_range",
        ),
        ("GET", "/articles?limit=abc".into(), 422, "out_of_range"),
        ("GET", "/dead-letters?limit=0".into(), 422, "out_of_range"),
        // Bad filters of the feed: 422.
        (
            "GET",
            "/articles?since=yesterday".into(),
            422,
            "invalid_date",
        ),
        (
            "GET",
            "/articles?since=2026-11-20".into(),
            422,
            "invalid_date",
        ),
        ("GET", "/articles?job=Bad.Id".into(), 422, "invalid_id"),
        ("GET", "/articles?q=".into(), 422, "invalid_value"),
        ("GET", "/articles?q=+++".into(), 422, "invalid_value"),
        (
            "GET",
            format!("/articles?q={}", "q".repeat(501)),
            422,
            "invalid_value",
        ),
        // Bad cursors: 400.
        ("GET", "/jobs?cursor=".into(), 400, "invalid_cursor"),
        ("GET", "/jobs?cursor=zz".into(), 400, "invalid_cursor"),
        ("GET", "/jobs?cursor=abc".into(), 400, "invalid_cursor"),
        ("GET", "/jobs?cursor=01".into(), 400, "invalid_cursor"),
        ("GET", "/jobs?cursor=0261".into(), 400, "invalid_cursor"),
        ("GET", "/jobs?cursor=0161%00".into(), 400, "invalid_cursor"),
        (
            "GET",
            format!("/jobs?cursor=01{}", "ab".repeat(600)),
            400,
            "invalid_cursor",
        ),
        ("GET", "/articles?cursor=01ff".into(), 400, "invalid_cursor"),
        (
            "GET",
            "/jobs/cur/articles?cursor=01ff".into(),
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            "/jobs/cur/batches?cursor=01ff".into(),
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            "/dead-letters?cursor=xyz".into(),
            400,
            "invalid_cursor",
        ),
        // A real cursor used where it does not belong.
        (
            "GET",
            format!("/jobs/cur/batches?cursor={article_cursor}"),
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            format!("/articles?cursor={article_cursor}"),
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            format!("/jobs/cur/batches/{other_batch}/articles?cursor={article_cursor}"),
            400,
            "invalid_cursor",
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, status, code) in &routes {
        let response = raw_http(
            &addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0"),
            b"",
        )
        .await;
        let what = format!("{method} {}", &path[..path.len().min(80)]);
        let content_type = response.header("content-type");
        if let Err(why) = check_refused(
            &what,
            response.status,
            &response.body,
            content_type,
            (*status, code, ""),
        ) {
            failures.push(why);
        }
    }
    assert_no_failures(&failures, routes.len());
    // A path that is not UTF-8 cannot name anything: malformed, and the message says why.
    let response = raw_http(
        &addr,
        &format!("GET /jobs/%ff%fe HTTP/1.1\r\nHost: {addr}"),
        b"",
    )
    .await;
    let content_type = response.header("content-type");
    assert_refused(
        "GET /jobs/%ff%fe",
        response.status,
        &response.body,
        content_type,
        (400, "bad_request", "UTF-8"),
    );
    // The real cursor still works where it belongs, and nothing above changed the job.
    let rest = api
        .ok(&format!(
            "/jobs/cur/articles?limit=1&cursor={article_cursor}"
        ))
        .await;
    assert_articles_page(&rest, "cur");
    assert_eq!(api.batches("cur").await.len(), 1);
    let (_, list) = api.get("/jobs").await;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1), "{list}");
    eprintln!(
        "routes, ids, parameters and cursors refused: {}",
        routes.len()
    );
}
