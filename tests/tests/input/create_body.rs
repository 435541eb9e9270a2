//! Bad `POST /jobs` bodies: malformed JSON, wrong content types, and one representative of each
//! class of rule the body parser checks; none leaves a job behind.

use newsflow_tests::{StatusCode, System};
use serde_json::{json, Value};

use crate::{assert_no_failures, check_refused, post_raw};

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

fn create_cases() -> Vec<Case> {
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
        // One body per class of rule the parser checks (422); `newsflow-core` unit-tests every
        // case of each class against the parser itself.
        case(
            "body is an array",
            json!([{"params":{"q":"x"}}]),
            422,
            "invalid_type",
            "object",
        ),
        case(
            "id is a number",
            json!({"id":7,"params":{"q":"x"}}),
            422,
            "invalid_type",
            "id",
        ),
        raw_case(
            "interval_secs past u64",
            Some("application/json"),
            br#"{"params":{"q":"x"},"interval_secs":18446744073709551616}"#,
            422,
            "out_of_range",
            "interval_secs",
        ),
        case(
            "unknown field",
            json!({"params":{"q":"x"},"colour":"red"}),
            422,
            "unknown_field",
            "colour",
        ),
        case("empty object", json!({}), 422, "scope_missing", "q"),
        case(
            "id with a dot (a subject token)",
            json!({"id":"a.b","params":{"q":"x"}}),
            422,
            "invalid_id",
            "[a-z0-9]",
        ),
        case(
            "interval_secs 0",
            json!({"params":{"q":"x"},"interval_secs":0}),
            422,
            "out_of_range",
            "interval_secs",
        ),
        case(
            "endpoint sources",
            json!({"endpoint":"sources","params":{"q":"x"}}),
            422,
            "unknown_endpoint",
            "top-headlines",
        ),
        case(
            "country on everything",
            json!({"params":{"q":"x","country":"us"}}),
            422,
            "unknown_param",
            "params.country",
        ),
        case(
            "unknown language",
            json!({"params":{"q":"x","language":"xx"}}),
            422,
            "invalid_value",
            "params.language",
        ),
        case(
            "apiKey in params",
            json!({"params":{"q":"x","apiKey":"k"}}),
            422,
            "api_key_not_allowed",
            "worker",
        ),
        case(
            "page in params",
            json!({"params":{"q":"x","page":"2"}}),
            422,
            "reserved_param",
            "max_pages",
        ),
    ];
    // An oversized body is refused for its announced size before anything else is read,
    // whatever its type (the freeze issue: 413 at once, never 408 after the body timeout).
    cases.push(raw_case(
        "oversized text/plain",
        Some("text/plain"),
        &vec![b'x'; 100 * 1024],
        413,
        "payload_too_large",
        "65536",
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
    assert_eq!(
        api.metric("newsflow_jobs").await,
        Some(0.0),
        "no refused create is counted as a job"
    );
    eprintln!("create bodies refused: {}", cases.len());
}
