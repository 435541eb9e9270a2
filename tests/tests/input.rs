//! Bad input at every edge: HTTP bodies, parameters, ids, cursors, sizes, routes and methods;
//! garbage commands and heartbeats on NATS; nulls, missing URLs, wrong types and oversized
//! bodies from the external API; unusable flags and environment. Each gets a clear, typed
//! answer: never a panic, a hang, a 500 or a half-written record.

use std::time::Duration;

use newsflow_core::{Article, ArticleId, BatchId, JobId, Source};
use newsflow_tests::bins::Program;
use newsflow_tests::contract::{assert_article, assert_articles_page, assert_error, assert_job};
use newsflow_tests::hostile::{metric, raw_http, run_to_exit, spawn_worker, Canned, ScriptedApi};
use newsflow_tests::mock::DEMO_KEY;
use newsflow_tests::{hold_for, wait_for, Api, Scratch, StatusCode, System};
use serde_json::{json, Value};

/// How long a batch may take to be fetched, published, consumed and promoted.
const BATCH_WITHIN: Duration = Duration::from_secs(30);

/// One bad request and the answer it must get.
struct Case {
    what: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    /// A word the message must contain (what to fix), case-insensitive.
    hint: &'static str,
}

fn case(
    what: &'static str,
    body: Value,
    status: u16,
    code: &'static str,
    hint: &'static str,
) -> Case {
    Case {
        what,
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status,
        code,
        hint,
    }
}

fn raw_case(
    what: &'static str,
    content_type: Option<&'static str>,
    body: &[u8],
    status: u16,
    code: &'static str,
    hint: &'static str,
) -> Case {
    Case {
        what,
        content_type,
        body: body.to_vec(),
        status,
        code,
        hint,
    }
}

/// `POST path` with exactly these bytes and content type (none when `None`).
async fn post_raw(
    addr: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Value, Option<String>) {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}",
        body.len()
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("\r\nContent-Type: {content_type}"));
    }
    let response = raw_http(addr, &head, body).await;
    let content_type = response.header("content-type").map(str::to_owned);
    (response.status, response.body, content_type)
}

/// Checks a contract error with `status`, `code` and a message containing `hint`; says
/// what is wrong otherwise.
fn check_refused(
    what: &str,
    status: u16,
    body: &Value,
    content_type: Option<&str>,
    want: (u16, &str, &str),
) -> Result<(), String> {
    let (want_status, code, hint) = want;
    let fail = |why: &str| Err(format!("{what}: {why}; got {status} {body}"));
    if status != want_status {
        return fail(&format!("expected status {want_status}"));
    }
    if std::panic::catch_unwind(|| assert_error(body, code)).is_err() {
        return fail(&format!("expected the contract error with code {code:?}"));
    }
    let message = body["error"]["message"].as_str().unwrap_or_default();
    if !message.to_lowercase().contains(&hint.to_lowercase()) {
        return fail(&format!(
            "the message should say what to fix (mention {hint:?})"
        ));
    }
    if !content_type.is_some_and(|t| t.starts_with("application/json")) {
        return fail(&format!(
            "errors are JSON, got content type {content_type:?}"
        ));
    }
    Ok(())
}

/// Asserts a contract error with `status`, `code` and a message containing `hint`.
fn assert_refused(
    what: &str,
    status: u16,
    body: &Value,
    content_type: Option<&str>,
    want: (u16, &str, &str),
) {
    if let Err(why) = check_refused(what, status, body, content_type, want) {
        panic!("{why}");
    }
}

/// Panics listing every failure, if any.
fn assert_no_failures(failures: &[String], of: usize) {
    assert!(
        failures.is_empty(),
        "{} of {of} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn create_cases() -> Vec<Case> {
    let long_q = "a".repeat(501);
    let many_sources = (0..21)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let mut cases = vec![
        // Malformed JSON: 400.
        raw_case(
            "truncated JSON",
            Some("application/json"),
            br#"{"params":"#,
            400,
            "malformed_json",
            "JSON",
        ),
        raw_case(
            "empty body",
            Some("application/json"),
            b"",
            400,
            "malformed_json",
            "JSON",
        ),
        raw_case(
            "trailing garbage",
            Some("application/json"),
            br#"{"params":{"q":"x"}} x"#,
            400,
            "malformed_json",
            "JSON",
        ),
        raw_case(
            "single quotes",
            Some("application/json"),
            b"{'params':{'q':'x'}}",
            400,
            "malformed_json",
            "JSON",
        ),
        raw_case(
            "not UTF-8",
            Some("application/json"),
            b"{\"params\":{\"q\":\"\xff\xfe\"}}",
            400,
            "malformed_json",
            "JSON",
        ),
        raw_case(
            "NaN",
            Some("application/json"),
            br#"{"params":{"q":"x"},"interval_secs":NaN}"#,
            400,
            "malformed_json",
            "JSON",
        ),
        raw_case(
            "5000 levels of nesting",
            Some("application/json"),
            deep.as_bytes(),
            400,
            "malformed_json",
            "JSON",
        ),
        raw_case(
            "duplicate field",
            Some("application/json"),
            br#"{"params":{"q":"x"},"id":"dup-a","id":"dup-b"}"#,
            400,
            "malformed_json",
            "JSON",
        ),
        // Wrong content type: 415.
        raw_case(
            "no content type",
            None,
            br#"{"params":{"q":"x"}}"#,
            415,
            "unsupported_media_type",
            "Content-Type",
        ),
        raw_case(
            "text/plain",
            Some("text/plain"),
            br#"{"params":{"q":"x"}}"#,
            415,
            "unsupported_media_type",
            "Content-Type",
        ),
        raw_case(
            "form",
            Some("application/x-www-form-urlencoded"),
            b"params=q",
            415,
            "unsupported_media_type",
            "Content-Type",
        ),
        raw_case(
            "multipart",
            Some("multipart/form-data; boundary=x"),
            b"--x--",
            415,
            "unsupported_media_type",
            "Content-Type",
        ),
        raw_case(
            "json-ish prefix",
            Some("application/jsonx"),
            br#"{"params":{"q":"x"}}"#,
            415,
            "unsupported_media_type",
            "Content-Type",
        ),
        // Wrong types: 422.
        case(
            "body is an array",
            json!([{"params":{"q":"x"}}]),
            422,
            "invalid_type",
            "object",
        ),
        case(
            "body is a string",
            json!("params"),
            422,
            "invalid_type",
            "object",
        ),
        case("body is null", json!(null), 422, "invalid_type", "object"),
        case(
            "id is a number",
            json!({"id":7,"params":{"q":"x"}}),
            422,
            "invalid_type",
            "id",
        ),
        case(
            "endpoint is a number",
            json!({"endpoint":1,"params":{"q":"x"}}),
            422,
            "invalid_type",
            "endpoint",
        ),
        case(
            "params is a string",
            json!({"params":"q=x"}),
            422,
            "invalid_type",
            "params",
        ),
        case(
            "params is an array",
            json!({"params":[["q","x"]]}),
            422,
            "invalid_type",
            "params",
        ),
        case(
            "params.q is a number",
            json!({"params":{"q":1}}),
            422,
            "invalid_type",
            "params.q",
        ),
        case(
            "params.q is a list",
            json!({"params":{"q":["a","b"]}}),
            422,
            "invalid_type",
            "params.q",
        ),
        case(
            "interval_secs is a string",
            json!({"params":{"q":"x"},"interval_secs":"300"}),
            422,
            "invalid_type",
            "interval_secs",
        ),
        case(
            "interval_secs is a fraction",
            json!({"params":{"q":"x"},"interval_secs":1.5}),
            422,
            "invalid_type",
            "interval_secs",
        ),
        case(
            "interval_secs is 1e3",
            json!({"params":{"q":"x"},"interval_secs":1000.0}),
            422,
            "invalid_type",
            "interval_secs",
        ),
        case(
            "max_pages is a bool",
            json!({"params":{"q":"x"},"max_pages":true}),
            422,
            "invalid_type",
            "max_pages",
        ),
        case(
            "page_size is an object",
            json!({"params":{"q":"x"},"page_size":{"n":1}}),
            422,
            "invalid_type",
            "page_size",
        ),
        raw_case(
            "interval_secs past u64",
            Some("application/json"),
            br#"{"params":{"q":"x"},"interval_secs":18446744073709551616}"#,
            422,
            "invalid_type",
            "interval_secs",
        ),
        // Unknown fields: 422.
        case(
            "unknown field",
            json!({"params":{"q":"x"},"colour":"red"}),
            422,
            "unknown_field",
            "colour",
        ),
        case(
            "apiKey beside params",
            json!({"params":{"q":"x"},"apiKey":"k"}),
            422,
            "unknown_field",
            "apiKey",
        ),
        case(
            "state is not settable",
            json!({"params":{"q":"x"},"state":"stopped"}),
            422,
            "unknown_field",
            "state",
        ),
        case(
            "worker is not settable",
            json!({"params":{"q":"x"},"worker":{"id":"w"}}),
            422,
            "unknown_field",
            "worker",
        ),
        // Missing fields: 422.
        case("empty object", json!({}), 422, "scope_missing", "q"),
        case(
            "no params",
            json!({"endpoint":"everything","interval_secs":60}),
            422,
            "scope_missing",
            "q",
        ),
        case(
            "params null",
            json!({"params":null}),
            422,
            "scope_missing",
            "q",
        ),
        case(
            "empty params",
            json!({"params":{}}),
            422,
            "scope_missing",
            "q",
        ),
        case(
            "top-headlines without scope",
            json!({"endpoint":"top-headlines","params":{}}),
            422,
            "scope_missing",
            "country",
        ),
        // Bad ids: 422.
        case(
            "uppercase id",
            json!({"id":"Bitcoin","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "id starting with -",
            json!({"id":"-a","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "id starting with _",
            json!({"id":"_a","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "empty id",
            json!({"id":"","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "id with a dot (a subject token)",
            json!({"id":"a.b","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "id with *",
            json!({"id":"a*","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "id with >",
            json!({"id":"a>","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "id with a space",
            json!({"id":"a b","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "id with a slash",
            json!({"id":"a/b","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "id with a NUL",
            json!({"id":"a\u{0}b","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "non-ASCII id",
            json!({"id":"café","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "65-character id",
            json!({"id":"a".repeat(65),"params":{"q":"x"}}),
            422,
            "invalid_id",
            "64",
        ),
        case(
            "10 000-character id",
            json!({"id":"a".repeat(10_000),"params":{"q":"x"}}),
            422,
            "invalid_id",
            "64",
        ),
        // Out of range: 422.
        case(
            "interval_secs 0",
            json!({"params":{"q":"x"},"interval_secs":0}),
            422,
            "out_of_range",
            "interval_secs",
        ),
        case(
            "interval_secs 86401",
            json!({"params":{"q":"x"},"interval_secs":86_401}),
            422,
            "out_of_range",
            "interval_secs",
        ),
        case(
            "interval_secs -5",
            json!({"params":{"q":"x"},"interval_secs":-5}),
            422,
            "out_of_range",
            "interval_secs",
        ),
        case(
            "interval_secs u64::MAX",
            json!({"params":{"q":"x"},"interval_secs":u64::MAX}),
            422,
            "out_of_range",
            "interval_secs",
        ),
        case(
            "max_pages 0",
            json!({"params":{"q":"x"},"max_pages":0}),
            422,
            "out_of_range",
            "max_pages",
        ),
        case(
            "max_pages 11",
            json!({"params":{"q":"x"},"max_pages":11}),
            422,
            "out_of_range",
            "max_pages",
        ),
        case(
            "page_size 0",
            json!({"params":{"q":"x"},"page_size":0}),
            422,
            "out_of_range",
            "page_size",
        ),
        case(
            "page_size 101",
            json!({"params":{"q":"x"},"page_size":101}),
            422,
            "out_of_range",
            "page_size",
        ),
        case(
            "page_size -1",
            json!({"params":{"q":"x"},"page_size":-1}),
            422,
            "out_of_range",
            "page_size",
        ),
        // Unknown endpoint: 422.
        case(
            "endpoint sources",
            json!({"endpoint":"sources","params":{"q":"x"}}),
            422,
            "unknown_endpoint",
            "top-headlines",
        ),
        case(
            "endpoint in capitals",
            json!({"endpoint":"Everything","params":{"q":"x"}}),
            422,
            "unknown_endpoint",
            "everything",
        ),
        case(
            "endpoint as a path",
            json!({"endpoint":"/v2/everything","params":{"q":"x"}}),
            422,
            "unknown_endpoint",
            "everything",
        ),
        // NewsAPI parameters the endpoint does not accept, or whose values break its rules.
        case(
            "country on everything",
            json!({"params":{"q":"x","country":"us"}}),
            422,
            "unknown_param",
            "params.country",
        ),
        case(
            "language on top-headlines",
            json!({"endpoint":"top-headlines","params":{"q":"x","language":"en"}}),
            422,
            "unknown_param",
            "params.language",
        ),
        case(
            "made-up param",
            json!({"params":{"q":"x","colour":"red"}}),
            422,
            "unknown_param",
            "accepted",
        ),
        case(
            "sources with country",
            json!({"endpoint":"top-headlines","params":{"sources":"cnn","country":"us"}}),
            422,
            "incompatible_params",
            "country",
        ),
        case(
            "sources with category",
            json!({"endpoint":"top-headlines","params":{"sources":"cnn","category":"health"}}),
            422,
            "incompatible_params",
            "category",
        ),
        case(
            "21 sources",
            json!({"params":{"sources":many_sources}}),
            422,
            "too_many",
            "20",
        ),
        case(
            "q of 501 characters",
            json!({"params":{"q":long_q}}),
            422,
            "too_long",
            "500",
        ),
        case(
            "qInTitle of 501 characters",
            json!({"params":{"qInTitle":"b".repeat(501)}}),
            422,
            "too_long",
            "500",
        ),
        case(
            "empty q",
            json!({"params":{"q":"   "}}),
            422,
            "empty_value",
            "params.q",
        ),
        case(
            "from is not a date",
            json!({"params":{"q":"x","from":"yesterday"}}),
            422,
            "invalid_date",
            "params.from",
        ),
        case(
            "to is not a date",
            json!({"params":{"q":"x","to":"2026-13-45"}}),
            422,
            "invalid_date",
            "params.to",
        ),
        case(
            "from after to",
            json!({"params":{"q":"x","from":"2026-11-02","to":"2026-11-01"}}),
            422,
            "invalid_range",
            "params.from",
        ),
        case(
            "unknown language",
            json!({"params":{"q":"x","language":"xx"}}),
            422,
            "invalid_value",
            "params.language",
        ),
        case(
            "language in capitals",
            json!({"params":{"q":"x","language":"EN"}}),
            422,
            "invalid_value",
            "params.language",
        ),
        case(
            "unknown country",
            json!({"endpoint":"top-headlines","params":{"country":"zz"}}),
            422,
            "invalid_value",
            "params.country",
        ),
        case(
            "unknown category",
            json!({"endpoint":"top-headlines","params":{"category":"gossip"}}),
            422,
            "invalid_value",
            "params.category",
        ),
        case(
            "unknown sortBy",
            json!({"params":{"q":"x","sortBy":"newest"}}),
            422,
            "invalid_value",
            "params.sortBy",
        ),
        case(
            "unknown searchIn",
            json!({"params":{"q":"x","searchIn":"title,body"}}),
            422,
            "invalid_value",
            "params.searchIn",
        ),
        case(
            "bad domain",
            json!({"params":{"domains":"not a domain"}}),
            422,
            "invalid_value",
            "params.domains",
        ),
        case(
            "bad source id",
            json!({"params":{"sources":"Bad Source"}}),
            422,
            "invalid_value",
            "params.sources",
        ),
        // The key belongs to the worker, never to a job.
        case(
            "apiKey in params",
            json!({"params":{"q":"x","apiKey":"k"}}),
            422,
            "api_key_not_allowed",
            "worker",
        ),
        case(
            "apikey in params",
            json!({"params":{"q":"x","apikey":"k"}}),
            422,
            "api_key_not_allowed",
            "worker",
        ),
        case(
            "api_key in params",
            json!({"params":{"q":"x","api_key":"k"}}),
            422,
            "api_key_not_allowed",
            "worker",
        ),
        case(
            "apiKey on top-headlines",
            json!({"endpoint":"top-headlines","params":{"country":"us","apiKey":"k"}}),
            422,
            "api_key_not_allowed",
            "worker",
        ),
        // Paging belongs to the job's own fields.
        case(
            "page in params",
            json!({"params":{"q":"x","page":"2"}}),
            422,
            "reserved_param",
            "max_pages",
        ),
        case(
            "pageSize in params",
            json!({"params":{"q":"x","pageSize":"10"}}),
            422,
            "reserved_param",
            "page_size",
        ),
    ];
    // An oversized body with a wrong content type is refused for its type before it is read.
    cases.push(raw_case(
        "oversized text/plain",
        Some("text/plain"),
        &vec![b'x'; 100 * 1024],
        415,
        "unsupported_media_type",
        "Content-Type",
    ));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_create_body_gets_its_status_and_code_and_leaves_no_job_behind() {
    let system = System::builder().start().await;
    let api = system.api();
    let addr = system.data_streams().http_addr();
    let cases = create_cases();

    let mut failures = Vec::new();
    for case in &cases {
        let (status, body, content_type) =
            post_raw(&addr, "/jobs", case.content_type, &case.body).await;
        let want = (case.status, case.code, case.hint);
        if let Err(why) = check_refused(case.what, status, &body, content_type.as_deref(), want) {
            failures.push(why);
        }
    }
    assert_no_failures(&failures, cases.len());

    let (status, list) = api.get("/jobs").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        list["jobs"],
        json!([]),
        "no refused create leaves a job: {list}"
    );
    let (status, metrics) = api.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(metric(&metrics, "newsflow_jobs"), Some(0.0), "{metrics}");
    eprintln!("create bodies refused: {}", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_at_every_limit_are_accepted_and_a_taken_id_is_a_conflict() {
    let system = System::builder().start().await;
    let api = system.api();
    let addr = system.data_streams().http_addr();
    let twenty_sources = (0..20)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let id_64 = format!("a{}", "-_9z".repeat(16))
        .chars()
        .take(64)
        .collect::<String>();
    let accepted = [
        json!({"id":id_64,"params":{"q":"x"}}),
        json!({"id":"0","params":{"q":"x"},"interval_secs":1,"max_pages":10,"page_size":1}),
        json!({"id":"max","params":{"q":"x"},"interval_secs":86_400,"max_pages":1,"page_size":100}),
        json!({"id":"q-500","params":{"q":"q".repeat(500)}}),
        json!({"id":"q-500-wide","params":{"q":"ü".repeat(500)}}),
        json!({"id":"twenty","params":{"sources":twenty_sources}}),
        json!({"id":"nulls","endpoint":null,"params":{"q":"x"},"interval_secs":null,"max_pages":null,"page_size":null}),
        json!({"id":"th-sources","endpoint":"top-headlines","params":{"sources":"bbc-news,cnn"}}),
        json!({"id":"th-country","endpoint":"top-headlines","params":{"country":"us","category":"business","q":"x"}}),
        json!({"id":"everything-all","params":{"q":"x","qInTitle":"y","searchIn":"title,content","domains":"a.com,b.org","excludeDomains":"c.net","from":"2026-11-01","to":"2026-11-20T10:00:00Z","language":"en","sortBy":"publishedAt"}}),
        json!({"params":{"q":"generated id"}}),
    ];
    for body in &accepted {
        let job = api.create_job_ok(body).await;
        assert_job(&job);
    }
    // A content type with parameters and a +json type are JSON too.
    let (status, body, _) = post_raw(
        &addr,
        "/jobs",
        Some("application/json; charset=utf-8"),
        br#"{"id":"charset","params":{"q":"x"}}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = post_raw(
        &addr,
        "/jobs",
        Some("Application/JSON"),
        br#"{"id":"caps","params":{"q":"x"}}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let before = api.job("max").await;
    let (status, body) = api
        .create_job(&json!({"id":"max","params":{"q":"other"},"interval_secs":5}))
        .await;
    assert_refused(
        "a taken id",
        status.as_u16(),
        &body,
        Some("application/json"),
        (409, "job_exists", "already exists"),
    );
    assert_eq!(
        api.job("max").await,
        before,
        "a refused create changes nothing"
    );
    let (_, list) = api.get("/jobs").await;
    assert_eq!(
        list["jobs"].as_array().map(Vec::len),
        Some(accepted.len() + 2),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_with_413_whether_or_not_their_length_is_announced() {
    let system = System::builder().start().await;
    let addr = system.data_streams().http_addr();
    // A valid job whose q pads it past the 64 KiB default.
    let big =
        json!({"id":"big","params":{"q":"x"},"interval_secs":60,"padding":"p".repeat(70 * 1024)});
    let big = big.to_string().into_bytes();

    let (status, body, content_type) =
        post_raw(&addr, "/jobs", Some("application/json"), &big).await;
    assert_refused(
        "an announced large body",
        status,
        &body,
        content_type.as_deref(),
        (413, "payload_too_large", "limit"),
    );

    let mut chunked = Vec::new();
    for piece in big.chunks(8 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response = raw_http(
        &addr,
        &format!("POST /jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"),
        &chunked,
    )
    .await;
    assert_refused(
        "a chunked large body",
        response.status,
        &response.body,
        response.header("content-type"),
        (413, "payload_too_large", "limit"),
    );

    // Just under the limit, the body is read and judged on its content.
    let under = json!({"params":{"q":"x"},"padding":"p".repeat(60 * 1024)}).to_string();
    let (status, body, content_type) =
        post_raw(&addr, "/jobs", Some("application/json"), under.as_bytes()).await;
    assert_refused(
        "a large body under the limit",
        status,
        &body,
        content_type.as_deref(),
        (422, "unknown_field", "padding"),
    );

    let (_, list) = system.api().get("/jobs").await;
    assert_eq!(list["jobs"], json!([]), "{list}");
}

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
    let articles: Vec<Article> = (0..3).map(|i| article("cur", batch, i)).collect();
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
            "batch_not_found",
        ),
        // Unknown routes.
        ("GET", "/".into(), 404, "route_not_found"),
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
        ("PATCH", "/jobs/cur".into(), 405, "method_not_allowed"),
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

/// Article `i` of a batch, as a conforming worker would publish it.
fn article(job: &str, batch: BatchId, i: u32) -> Article {
    let url = format!("https://example.com/{job}/{batch}/{i}");
    Article {
        id: ArticleId::from_url(&url),
        job_id: JobId::parse(job).expect("a valid job id"),
        batch_id: batch,
        source: Source {
            id: None,
            name: Some("Example".into()),
        },
        author: None,
        title: Some(format!("title {i}")),
        description: None,
        url,
        url_to_image: None,
        published_at: None,
        content: None,
        fetched_at: newsflow_core::now_utc(),
    }
}

/// A valid `news.ctl.start` payload for job `id`.
fn start_payload(id: &str) -> Value {
    json!({"job":{"id":id,"endpoint":"everything","params":{"q":"bitcoin"},"interval_secs":3600,"max_pages":1,"page_size":5}})
}

/// Garbage, wrong types and oversized payloads for both command subjects.
fn bad_commands() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let huge = format!(r#"{{"job_id":"a","pad":"{}"}}"#, "p".repeat(64 * 1024));
    let huge_start = {
        let mut start = start_payload("big");
        start["job"]["params"]["q"] = json!("q".repeat(65 * 1024));
        start.to_string()
    };
    vec![
        ("empty", Vec::new(), "invalid_payload"),
        ("not JSON", b"hello".to_vec(), "invalid_payload"),
        ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x80], "invalid_payload"),
        ("JSON null", b"null".to_vec(), "invalid_payload"),
        ("JSON array", b"[]".to_vec(), "invalid_payload"),
        ("JSON number", b"42".to_vec(), "invalid_payload"),
        ("empty object", b"{}".to_vec(), "invalid_payload"),
        ("truncated", br#"{"job":{"id":"#.to_vec(), "invalid_payload"),
        (
            "deeply nested",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            "invalid_payload",
        ),
        ("over 64 KiB", huge.into_bytes(), "payload_too_large"),
        (
            "start over 64 KiB",
            huge_start.into_bytes(),
            "payload_too_large",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_commands_get_error_replies_and_the_worker_keeps_serving() {
    let system = System::builder()
        .without_data_streams()
        .workers(1)
        .start()
        .await;
    let bus = system.bus().await;
    let within = Duration::from_secs(5);
    let stop_subject = "news.ctl.worker.worker-1.stop";

    let mut wrong_starts: Vec<(&str, Value)> = vec![
        ("job is a number", json!({"job":5})),
        ("job is a string", json!({"job":"bitcoin"})),
        (
            "job id is invalid",
            json!({"job":{"id":"Bad Id","endpoint":"everything","params":{"q":"x"},"interval_secs":60,"max_pages":1,"page_size":5}}),
        ),
        (
            "job id is a subject wildcard",
            json!({"job":{"id":"a.>","endpoint":"everything","params":{"q":"x"},"interval_secs":60,"max_pages":1,"page_size":5}}),
        ),
        (
            "interval 0",
            json!({"job":{"id":"a","endpoint":"everything","params":{"q":"x"},"interval_secs":0,"max_pages":1,"page_size":5}}),
        ),
        (
            "page_size 1000",
            json!({"job":{"id":"a","endpoint":"everything","params":{"q":"x"},"interval_secs":60,"max_pages":1,"page_size":1000}}),
        ),
        (
            "apiKey in params",
            json!({"job":{"id":"a","endpoint":"everything","params":{"q":"x","apiKey":"k"},"interval_secs":60,"max_pages":1,"page_size":5}}),
        ),
        ("missing fields", json!({"job":{"id":"a"}})),
        (
            "unknown endpoint",
            json!({"job":{"id":"a","endpoint":"sources","params":{"q":"x"},"interval_secs":60,"max_pages":1,"page_size":5}}),
        ),
        (
            "unknown field",
            json!({"job":{"id":"a","endpoint":"everything","params":{"q":"x"},"interval_secs":60,"max_pages":1,"page_size":5},"force":true}),
        ),
        ("a stop on the start subject", json!({"job_id":"a"})),
    ];
    let mut wrong_stops: Vec<(&str, Value)> = vec![
        ("job_id is a number", json!({"job_id":1})),
        ("job_id is invalid", json!({"job_id":"A B"})),
        ("job_id is null", json!({"job_id":null})),
        ("unknown field", json!({"job_id":"a","now":true})),
        ("a start on the stop subject", start_payload("a")),
    ];
    let mut count = 0;
    for (subject, cases) in [
        ("news.ctl.start", &mut wrong_starts),
        (stop_subject, &mut wrong_stops),
    ] {
        let mut all: Vec<(String, Vec<u8>, &str)> = cases
            .drain(..)
            .map(|(what, value)| {
                (
                    what.to_owned(),
                    value.to_string().into_bytes(),
                    "invalid_payload",
                )
            })
            .collect();
        all.extend(
            bad_commands()
                .into_iter()
                .map(|(what, bytes, code)| (what.to_owned(), bytes, code)),
        );
        for (what, payload, code) in all {
            let reply = bus.request_bytes(subject, payload, within).await;
            assert_eq!(reply["ok"], false, "{subject} {what}: {reply}");
            assert_eq!(reply["error"]["code"], code, "{subject} {what}: {reply}");
            assert!(
                reply["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty() && m.len() < 2000),
                "{subject} {what}: a short reason: {reply}"
            );
            count += 1;
        }
    }

    // Nothing above started a job, and the worker still takes a valid command.
    let mut beats = bus.heartbeats().await;
    let beat = beats
        .wait_for(within, "a heartbeat after the garbage", "worker-1", |_| {
            true
        })
        .await;
    assert!(beat.jobs.is_empty(), "no garbage started a job: {beat:?}");
    let reply = bus
        .request_json("news.ctl.start", &start_payload("after"), within)
        .await;
    assert_eq!(
        reply,
        json!({"ok":true,"worker_id":"worker-1","job_id":"after"})
    );
    let reply = bus
        .request_json(stop_subject, &json!({"job_id":"after"}), within)
        .await;
    assert_eq!(
        reply,
        json!({"ok":true,"worker_id":"worker-1","job_id":"after"})
    );
    eprintln!("garbage commands answered with errors: {count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_heartbeats_are_counted_and_ignored_and_data_streams_keeps_serving() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    api.create_job_ok(
        &json!({"id":"steady","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;
    let before = invalid_heartbeats(&api).await;
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"not json".to_vec(),
        vec![0xff, 0x00, 0xfe],
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        br#"{"worker_id":7,"jobs":[],"at":"2026-11-20T08:00:00Z"}"#.to_vec(),
        br#"{"worker_id":"w.x","jobs":[],"at":"2026-11-20T08:00:00Z"}"#.to_vec(),
        br#"{"worker_id":"","jobs":[],"at":"2026-11-20T08:00:00Z"}"#.to_vec(),
        br#"{"worker_id":"w","jobs":["Bad Id"],"at":"2026-11-20T08:00:00Z"}"#.to_vec(),
        br#"{"worker_id":"w","jobs":"steady","at":"2026-11-20T08:00:00Z"}"#.to_vec(),
        br#"{"worker_id":"w","jobs":[],"at":"yesterday"}"#.to_vec(),
        br#"{"worker_id":"w","jobs":[]}"#.to_vec(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        format!(
            r#"{{"worker_id":"w","jobs":[{}],"at":"2026-11-20T08:00:00Z"}}"#,
            vec!["\"Bad Id\""; 40_000].join(",")
        )
        .into_bytes(),
    ];
    for payload in &garbage {
        bus.client()
            .publish("news.ctl.heartbeat", payload.clone().into())
            .await
            .expect("publishes");
    }
    bus.flush().await;

    let want = before + garbage.len() as f64;
    wait_for(
        Duration::from_secs(10),
        "every garbage heartbeat to be counted",
        || async { (invalid_heartbeats(&api).await >= want).then_some(()) },
    )
    .await;
    // Only those: the real worker's heartbeats keep parsing.
    hold_for(
        Duration::from_secs(2),
        "no other heartbeat counted as invalid",
        || async {
            let now = invalid_heartbeats(&api).await;
            (now != want).then(|| format!("{now} invalid heartbeats, expected {want}"))
        },
    )
    .await;
    let (status, _) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let job = api.job("steady").await;
    assert_eq!(
        job["worker"]["id"], "worker-1",
        "the real owner is kept: {job}"
    );
    assert!(system.data_streams().logs().contains("invalid heartbeat"));
    eprintln!("garbage heartbeats counted: {}", garbage.len());
}

async fn invalid_heartbeats(api: &Api) -> f64 {
    let (status, text) = api.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    metric(&text, "newsflow_invalid_heartbeats_total")
        .unwrap_or_else(|| panic!("newsflow_invalid_heartbeats_total missing from\n{text}"))
}

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

/// A program, its flags, its environment, and what its refusal must name.
type FlagCase<'a> = (Program, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_flags_and_environment_stop_a_program_at_start_with_the_reason() {
    let dir = Scratch::new("bad-flags");
    let data = dir.subdir("data");
    let data = data.to_str().expect("a UTF-8 path");
    let secret_pw = "flag-password-Zq81";
    let cases: Vec<FlagCase> = vec![
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--api-token", ""],
            vec![],
            "--api-token",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data],
            vec![("DS_API_TOKEN", "")],
            "--api-token",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--http-addr", "nowhere"],
            vec![],
            "--http-addr",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data],
            vec![("DS_HTTP_ADDR", "300.1.1.1:80")],
            "--http-addr",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--max-body-bytes", "10"],
            vec![],
            "--max-body-bytes",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--stream-replicas", "9"],
            vec![],
            "--stream-replicas",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--worker-timeout-ms", "0"],
            vec![],
            "--worker-timeout-ms",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--log-format", "xml"],
            vec![],
            "--log-format",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--nats-tls-cert", "/x.pem"],
            vec![],
            "--nats-tls-key",
        ),
        (
            Program::Worker,
            vec!["--newsapi-url", "newsapi.org"],
            vec![],
            "--newsapi-url",
        ),
        (
            Program::Worker,
            vec!["--newsapi-url", "ftp://newsapi.org"],
            vec![],
            "--newsapi-url",
        ),
        (
            Program::Worker,
            vec![],
            vec![("NEWSAPI_URL", "https://u:flag-password-Zq81@newsapi.org")],
            "credentials",
        ),
        (
            Program::Worker,
            vec!["--worker-id", "a.b"],
            vec![],
            "--worker-id",
        ),
        (
            Program::Worker,
            vec![],
            vec![("WORKER_ID", "a>")],
            "--worker-id",
        ),
        (
            Program::Worker,
            vec!["--heartbeat-ms", "0"],
            vec![],
            "--heartbeat-ms",
        ),
        (
            Program::Worker,
            vec!["--max-response-bytes", "0"],
            vec![],
            "--max-response-bytes",
        ),
        (
            Program::Worker,
            vec!["--newsapi-key", "line\nbreak-Zq81"],
            vec![],
            "header",
        ),
        (
            Program::Worker,
            vec!["--nats-creds", "/does/not/exist.creds"],
            vec![],
            "/does/not/exist.creds",
        ),
    ];
    for (program, args, env, needle) in &cases {
        let (code, output) = run_to_exit(*program, dir.path(), args, env).await;
        let what = format!("{} {args:?} {env:?}", program.file_name());
        assert!(
            matches!(code, Some(c) if c != 0),
            "{what} must exit non-zero, got {code:?}\n{output}"
        );
        assert!(
            output.contains(needle),
            "{what}: the reason names {needle:?}\n{output}"
        );
        assert!(!output.contains("panicked"), "{what} panicked\n{output}");
        assert!(
            !output.contains(secret_pw) && !output.contains("break-Zq81"),
            "{what} echoes a secret\n{output}"
        );
    }
    eprintln!("unusable flags and variables refused: {}", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_streams_with_an_unreadable_nats_credentials_file_exits_with_the_reason() {
    let dir = Scratch::new("bad-creds");
    let data = dir.subdir("data");
    let (code, output) = run_to_exit(
        Program::DataStreams,
        dir.path(),
        &[
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("UTF-8"),
            "--nats-creds",
            "/does/not/exist.creds",
        ],
        &[],
    )
    .await;
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}\n{output}");
    assert!(output.contains("/does/not/exist.creds"), "{output}");
}
