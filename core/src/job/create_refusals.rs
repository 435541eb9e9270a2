//! Every way a `POST /jobs` body breaks a rule this crate checks, with the field, code and
//! message hint the caller gets back (data-streams answers each with a 422 carrying that code and
//! message). The black-box suite keeps one representative case per class; the whole table lives
//! here, where it runs without a process.

use serde_json::{json, Value};

use crate::JobSpec;

/// One refused body: what it is, the body, and the `field`, `code` and a word of the message
/// (what to fix, matched case-insensitively) it must be refused with.
struct Refusal {
    what: &'static str,
    body: Value,
    field: String,
    code: &'static str,
    hint: String,
}

fn refusal(
    what: &'static str,
    body: Value,
    field: &str,
    code: &'static str,
    hint: &str,
) -> Refusal {
    Refusal {
        what,
        body,
        field: field.to_owned(),
        code,
        hint: hint.to_owned(),
    }
}

/// Bodies of the wrong JSON type, or with fields of the wrong type.
fn wrong_types() -> Vec<Refusal> {
    // A number past u64 reaches the parser as a float, as it does through serde_json at the edge.
    let past_u64: Value =
        serde_json::from_str(r#"{"params":{"q":"x"},"interval_secs":18446744073709551616}"#)
            .expect("valid JSON");
    vec![
        refusal(
            "body is an array",
            json!([{"params":{"q":"x"}}]),
            "body",
            "invalid_type",
            "object",
        ),
        refusal(
            "body is a string",
            json!("params"),
            "body",
            "invalid_type",
            "object",
        ),
        refusal(
            "body is null",
            json!(null),
            "body",
            "invalid_type",
            "object",
        ),
        refusal(
            "id is a number",
            json!({"id":7,"params":{"q":"x"}}),
            "id",
            "invalid_type",
            "id",
        ),
        refusal(
            "endpoint is a number",
            json!({"endpoint":1,"params":{"q":"x"}}),
            "endpoint",
            "invalid_type",
            "endpoint",
        ),
        refusal(
            "params is a string",
            json!({"params":"q=x"}),
            "params",
            "invalid_type",
            "params",
        ),
        refusal(
            "params is an array",
            json!({"params":[["q","x"]]}),
            "params",
            "invalid_type",
            "params",
        ),
        refusal(
            "params.q is a number",
            json!({"params":{"q":1}}),
            "params.q",
            "invalid_type",
            "params.q",
        ),
        refusal(
            "params.q is a list",
            json!({"params":{"q":["a","b"]}}),
            "params.q",
            "invalid_type",
            "params.q",
        ),
        refusal(
            "interval_secs is a string",
            json!({"params":{"q":"x"},"interval_secs":"300"}),
            "interval_secs",
            "invalid_type",
            "interval_secs",
        ),
        refusal(
            "interval_secs is a fraction",
            json!({"params":{"q":"x"},"interval_secs":1.5}),
            "interval_secs",
            "invalid_type",
            "interval_secs",
        ),
        refusal(
            "interval_secs is 1e3",
            json!({"params":{"q":"x"},"interval_secs":1000.0}),
            "interval_secs",
            "invalid_type",
            "interval_secs",
        ),
        refusal(
            "max_pages is a bool",
            json!({"params":{"q":"x"},"max_pages":true}),
            "max_pages",
            "invalid_type",
            "max_pages",
        ),
        refusal(
            "page_size is an object",
            json!({"params":{"q":"x"},"page_size":{"n":1}}),
            "page_size",
            "invalid_type",
            "page_size",
        ),
        refusal(
            "interval_secs past u64",
            past_u64,
            "interval_secs",
            "out_of_range",
            "interval_secs",
        ),
    ]
}

/// Fields a job does not have, or that only the system sets.
fn unknown_fields() -> Vec<Refusal> {
    vec![
        refusal(
            "unknown field",
            json!({"params":{"q":"x"},"colour":"red"}),
            "colour",
            "unknown_field",
            "colour",
        ),
        refusal(
            "apiKey beside params",
            json!({"params":{"q":"x"},"apiKey":"k"}),
            "apiKey",
            "unknown_field",
            "apiKey",
        ),
        refusal(
            "state is not settable",
            json!({"params":{"q":"x"},"state":"stopped"}),
            "state",
            "unknown_field",
            "state",
        ),
        refusal(
            "worker is not settable",
            json!({"params":{"q":"x"},"worker":{"id":"w"}}),
            "worker",
            "unknown_field",
            "worker",
        ),
    ]
}

/// Bodies that do not say what to fetch.
fn missing_scope() -> Vec<Refusal> {
    vec![
        refusal("empty object", json!({}), "params", "scope_missing", "q"),
        refusal(
            "no params",
            json!({"endpoint":"everything","interval_secs":60}),
            "params",
            "scope_missing",
            "q",
        ),
        refusal(
            "params null",
            json!({"params":null}),
            "params",
            "scope_missing",
            "q",
        ),
        refusal(
            "empty params",
            json!({"params":{}}),
            "params",
            "scope_missing",
            "q",
        ),
        refusal(
            "top-headlines without scope",
            json!({"endpoint":"top-headlines","params":{}}),
            "params",
            "scope_missing",
            "country",
        ),
    ]
}

/// Ids that could not name a job (or a NATS subject token).
fn bad_ids() -> Vec<Refusal> {
    let bad_characters = [
        ("uppercase id", "Bitcoin"),
        ("id starting with -", "-a"),
        ("id starting with _", "_a"),
        ("empty id", ""),
        ("id with a dot (a subject token)", "a.b"),
        ("id with *", "a*"),
        ("id with >", "a>"),
        ("id with a space", "a b"),
        ("id with a slash", "a/b"),
        ("id with a NUL", "a\u{0}b"),
        ("non-ASCII id", "café"),
    ];
    let mut cases: Vec<Refusal> = bad_characters
        .into_iter()
        .map(|(what, id)| {
            let body = json!({"id":id,"params":{"q":"x"}});
            refusal(what, body, "id", "invalid_id", "[a-z0-9]")
        })
        .collect();
    for (what, length) in [("65-character id", 65), ("10 000-character id", 10_000)] {
        let body = json!({"id":"a".repeat(length),"params":{"q":"x"}});
        cases.push(refusal(what, body, "id", "invalid_id", "64"));
    }
    cases
}

/// Numbers outside a field's range.
fn out_of_range() -> Vec<Refusal> {
    [
        ("interval_secs 0", "interval_secs", json!(0)),
        ("interval_secs 86401", "interval_secs", json!(86_401)),
        ("interval_secs -5", "interval_secs", json!(-5)),
        ("interval_secs u64::MAX", "interval_secs", json!(u64::MAX)),
        ("max_pages 0", "max_pages", json!(0)),
        ("max_pages 11", "max_pages", json!(11)),
        ("page_size 0", "page_size", json!(0)),
        ("page_size 101", "page_size", json!(101)),
        ("page_size -1", "page_size", json!(-1)),
        ("keep_batches 0", "keep_batches", json!(0)),
        ("keep_batches 1001", "keep_batches", json!(1001)),
        ("keep_batches -3", "keep_batches", json!(-3)),
    ]
    .into_iter()
    .map(|(what, field, value)| {
        let body = json!({"params":{"q":"x"}, field: value});
        refusal(what, body, field, "out_of_range", field)
    })
    .collect()
}

/// Endpoints NewsFlow does not fetch.
fn unknown_endpoints() -> Vec<Refusal> {
    [
        ("endpoint sources", "sources", "top-headlines"),
        ("endpoint in capitals", "Everything", "everything"),
        ("endpoint as a path", "/v2/everything", "everything"),
    ]
    .into_iter()
    .map(|(what, endpoint, hint)| {
        let body = json!({"endpoint":endpoint,"params":{"q":"x"}});
        refusal(what, body, "endpoint", "unknown_endpoint", hint)
    })
    .collect()
}

/// NewsAPI parameters the endpoint does not accept, or that belong to the worker or to the
/// job's own paging fields.
fn bad_param_names() -> Vec<Refusal> {
    let mut cases = vec![
        refusal(
            "country on everything",
            json!({"params":{"q":"x","country":"us"}}),
            "params.country",
            "unknown_param",
            "params.country",
        ),
        refusal(
            "language on top-headlines",
            json!({"endpoint":"top-headlines","params":{"q":"x","language":"en"}}),
            "params.language",
            "unknown_param",
            "params.language",
        ),
        refusal(
            "made-up param",
            json!({"params":{"q":"x","colour":"red"}}),
            "params.colour",
            "unknown_param",
            "accepted",
        ),
        refusal(
            "apiKey on top-headlines",
            json!({"endpoint":"top-headlines","params":{"country":"us","apiKey":"k"}}),
            "params.apiKey",
            "api_key_not_allowed",
            "worker",
        ),
        refusal(
            "page in params",
            json!({"params":{"q":"x","page":"2"}}),
            "params.page",
            "reserved_param",
            "max_pages",
        ),
        refusal(
            "pageSize in params",
            json!({"params":{"q":"x","pageSize":"10"}}),
            "params.pageSize",
            "reserved_param",
            "page_size",
        ),
    ];
    for (what, name) in [
        ("apiKey in params", "apiKey"),
        ("apikey in params", "apikey"),
        ("api_key in params", "api_key"),
    ] {
        let body = json!({"params":{"q":"x", name: "k"}});
        let field = format!("params.{name}");
        cases.push(refusal(what, body, &field, "api_key_not_allowed", "worker"));
    }
    cases
}

/// NewsAPI parameter values that break its rules, alone or together.
fn bad_param_values() -> Vec<Refusal> {
    let many_sources = (0..21)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut cases = vec![
        refusal(
            "sources with country",
            json!({"endpoint":"top-headlines","params":{"sources":"cnn","country":"us"}}),
            "params.sources",
            "incompatible_params",
            "country",
        ),
        refusal(
            "sources with category",
            json!({"endpoint":"top-headlines","params":{"sources":"cnn","category":"health"}}),
            "params.sources",
            "incompatible_params",
            "category",
        ),
        refusal(
            "21 sources",
            json!({"params":{"sources":many_sources}}),
            "params.sources",
            "too_many",
            "20",
        ),
        refusal(
            "q of 501 characters",
            json!({"params":{"q":"a".repeat(501)}}),
            "params.q",
            "too_long",
            "500",
        ),
        refusal(
            "qInTitle of 501 characters",
            json!({"params":{"qInTitle":"b".repeat(501)}}),
            "params.qInTitle",
            "too_long",
            "500",
        ),
        refusal(
            "empty q",
            json!({"params":{"q":"   "}}),
            "params.q",
            "empty_value",
            "params.q",
        ),
        refusal(
            "from after to",
            json!({"params":{"q":"x","from":"2026-11-02","to":"2026-11-01"}}),
            "params.from",
            "invalid_range",
            "params.from",
        ),
    ];
    let bad_values = [
        (
            "from is not a date",
            json!({"params":{"q":"x","from":"yesterday"}}),
            "from",
            "invalid_date",
        ),
        (
            "to is not a date",
            json!({"params":{"q":"x","to":"2026-13-45"}}),
            "to",
            "invalid_date",
        ),
        (
            "unknown language",
            json!({"params":{"q":"x","language":"xx"}}),
            "language",
            "invalid_value",
        ),
        (
            "language in capitals",
            json!({"params":{"q":"x","language":"EN"}}),
            "language",
            "invalid_value",
        ),
        (
            "unknown country",
            json!({"endpoint":"top-headlines","params":{"country":"zz"}}),
            "country",
            "invalid_value",
        ),
        (
            "unknown category",
            json!({"endpoint":"top-headlines","params":{"category":"gossip"}}),
            "category",
            "invalid_value",
        ),
        (
            "unknown sortBy",
            json!({"params":{"q":"x","sortBy":"newest"}}),
            "sortBy",
            "invalid_value",
        ),
        (
            "unknown searchIn",
            json!({"params":{"q":"x","searchIn":"title,body"}}),
            "searchIn",
            "invalid_value",
        ),
        (
            "bad domain",
            json!({"params":{"domains":"not a domain"}}),
            "domains",
            "invalid_value",
        ),
        (
            "bad source id",
            json!({"params":{"sources":"Bad Source"}}),
            "sources",
            "invalid_value",
        ),
    ];
    for (what, body, name, code) in bad_values {
        let field = format!("params.{name}");
        cases.push(refusal(what, body, &field, code, &field));
    }
    cases
}

#[test]
fn every_create_body_breaking_a_rule_is_refused_naming_its_field_code_and_what_to_fix() {
    let cases: Vec<Refusal> = [
        wrong_types(),
        unknown_fields(),
        missing_scope(),
        bad_ids(),
        out_of_range(),
        unknown_endpoints(),
        bad_param_names(),
        bad_param_values(),
    ]
    .into_iter()
    .flatten()
    .collect();

    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let error = match JobSpec::from_create_request(&case.body) {
                Ok(spec) => return Some(format!("{}: accepted as {spec:?}", case.what)),
                Err(error) => error,
            };
            let hinted = error
                .message
                .to_lowercase()
                .contains(&case.hint.to_lowercase());
            (error.field != case.field || error.code != case.code || !hinted).then(|| {
                format!(
                    "{}: expected {} {} mentioning {:?}, got {error:?}",
                    case.what, case.field, case.code, case.hint
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(cases.len(), 78, "the whole table of refused create bodies");
}
