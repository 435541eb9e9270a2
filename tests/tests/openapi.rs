//! The OpenAPI document: served at `/openapi.json`, describing every route, body and error
//! the server really has (it is generated from the handlers), and a property-based run of
//! schemathesis against it that finds no 5xx and no response breaking the schema.
//!
//! The schemathesis run installs schemathesis from PyPI into `target/schemathesis-venv` the
//! first time (or uses `SCHEMATHESIS_BIN`). `SCHEMATHESIS_EXAMPLES` (default 25 per operation)
//! raises the number of generated requests, `SCHEMATHESIS_SEED` fixes the seed, and
//! `SCHEMATHESIS_TIMEOUT_SECS` (default 600) caps its wall-clock time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use newsflow_core::{Article, ArticleId, BatchId, JobId, Source};
use newsflow_tests::bins::target_dir;
use newsflow_tests::contract::assert_error;
use newsflow_tests::hostile::raw_http;
use newsflow_tests::{StatusCode, System};
use serde_json::{json, Value};

const TOKEN: &str = "openapi-token-3vX";

/// Every route of the router and its methods.
fn routes() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    [
        ("/jobs", &["get", "post"][..]),
        ("/jobs/{id}", &["get", "delete", "patch"]),
        ("/jobs/{id}/pipeline/preview", &["post"]),
        ("/jobs/{id}/start", &["post"]),
        ("/jobs/{id}/stop", &["post"]),
        ("/jobs/{id}/articles", &["get"]),
        ("/jobs/{id}/batches", &["get"]),
        ("/jobs/{id}/batches/{batch_id}/articles", &["get"]),
        ("/articles", &["get"]),
        ("/events", &["get"]),
        ("/", &["get"]),
        ("/jobs/{id}/events", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/dead-letters", &["get"]),
        ("/quota", &["get"]),
        ("/openapi.json", &["get"]),
    ]
    .into_iter()
    .map(|(path, methods)| (path, methods.iter().copied().collect()))
    .collect()
}

/// A system with a token, one job and one complete batch of three articles (published as a
/// conforming worker would, so no worker fetches anything while the API is fuzzed).
async fn seeded_system() -> (System, BatchId) {
    let system = System::builder().api_token(TOKEN).start().await;
    let api = system.api();
    api.create_job_ok(&json!({"id":"seed","params":{"q":"bitcoin"},"interval_secs":3600}))
        .await;
    let batch = BatchId::generate();
    let articles: Vec<Article> = (0..3)
        .map(|i| {
            let url = format!("https://example.com/seed/{i}");
            Article {
                id: ArticleId::from_url(&url),
                job_id: JobId::parse("seed").expect("valid"),
                batch_id: batch,
                source: Source {
                    id: Some("example".into()),
                    name: Some("Example".into()),
                },
                author: (i % 2 == 0).then(|| "A".to_owned()),
                title: Some(format!("title {i}")),
                description: None,
                url,
                url_to_image: None,
                published_at: Some(newsflow_core::now_utc()),
                content: Some("content".into()),
                fetched_at: newsflow_core::now_utc(),
                extra: None,
            }
        })
        .collect();
    system.bus().await.publish_complete_batch(&articles).await;
    api.wait_for_latest("seed", None, Duration::from_secs(30))
        .await;
    (system, batch)
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("only local references: {reference}"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{reference} does not resolve"))
}

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(item, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
        _ => {}
    }
}

/// The statuses an operation documents with the contract's error body.
fn error_statuses(operation: &Value) -> BTreeSet<u16> {
    operation["responses"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, response)| {
            response["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .is_some_and(|r| r.ends_with("/ErrorBody"))
        })
        .filter_map(|(status, _)| status.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_every_route_method_body_and_error_of_the_server() {
    let (system, batch) = seeded_system().await;
    let api = system.api();
    let addr = system.data_streams().http_addr();

    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let (status, denied) = api.clone().without_token().get("/openapi.json").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{denied}");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );

    // Exactly the router's routes and methods.
    let documented: BTreeMap<&str, BTreeSet<&str>> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .into_iter()
                .flatten()
                .map(|(m, _)| m.as_str())
                .filter(|m| {
                    ["get", "post", "put", "patch", "delete", "head", "options"].contains(m)
                })
                .collect();
            (path.as_str(), methods)
        })
        .collect();
    assert_eq!(documented, routes());

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for reference in &all {
        resolve(&doc, reference);
    }
    let error = resolve(&doc, "#/components/schemas/ErrorBody");
    assert_eq!(error["required"], json!(["error"]), "{error}");

    // The errors each operation can answer are documented with the error body.
    for (path, methods) in routes() {
        for method in methods {
            let operation = &doc["paths"][path][method];
            let errors = error_statuses(operation);
            let what = format!("{method} {path}");
            let open = path == "/healthz" || path == "/";
            if open {
                assert_eq!(operation["security"], json!([{}]), "{what} needs no token");
            } else {
                assert!(errors.contains(&401), "{what} documents 401: {errors:?}");
            }
            if path.contains("{id}") {
                assert!(errors.contains(&404), "{what} documents 404: {errors:?}");
            }
            let params: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            if params.contains(&"limit") {
                assert!(errors.is_superset(&[400, 422].into()), "{what}: {errors:?}");
                let limit = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == "limit")
                    .expect("limit");
                assert_eq!(limit["schema"]["minimum"], 1, "{what}");
                assert_eq!(limit["schema"]["maximum"], 1000, "{what}");
            }
        }
    }
    let create = &doc["paths"]["/jobs"]["post"];
    assert!(
        error_statuses(create).is_superset(&[400, 409, 413, 415, 422].into()),
        "POST /jobs documents every refusal"
    );
    let body = resolve(
        &doc,
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .expect("a referenced create body"),
    );
    assert_eq!(
        body["additionalProperties"], false,
        "unknown fields are refused: {body}"
    );
    let mut fields: Vec<&str> = body["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "endpoint",
            "id",
            "interval_secs",
            "keep_batches",
            "max_pages",
            "page_size",
            "params",
            "pipeline"
        ]
    );

    // The server agrees with the document: every documented operation is routed, every
    // other method on a documented path is 405, and an undocumented path is 404.
    let concrete = |path: &str| {
        path.replace("{id}", "seed")
            .replace("{batch_id}", &batch.to_string())
    };
    let every = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    for (path, methods) in routes() {
        let target = concrete(path);
        for method in every {
            let documented = methods.contains(method.to_lowercase().as_str());
            if method == "DELETE" && documented {
                continue;
            }
            if method == "GET" && documented && path.ends_with("/events") {
                // A stream never ends, so it is opened as one rather than read whole.
                let stream = newsflow_tests::sse::open(&api, &target, None).await;
                assert!(stream.is_ok(), "GET {target} opens a stream");
                continue;
            }
            let head = format!(
                "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 2"
            );
            let response = raw_http(&addr, &head, b"{}").await;
            if documented {
                assert!(
                    response.status != 405 && response.body["error"]["code"] != "route_not_found",
                    "{method} {target} is documented but not routed: {} {}",
                    response.status,
                    response.body
                );
            } else {
                assert_eq!(response.status, 405, "{method} {target}: {}", response.body);
                assert_error(&response.body, "method_not_allowed");
            }
        }
    }
}

/// The schemathesis command: `SCHEMATHESIS_BIN`, else `target/schemathesis-venv/bin/st`,
/// installed there from PyPI when missing.
fn schemathesis() -> PathBuf {
    if let Some(bin) = std::env::var_os("SCHEMATHESIS_BIN") {
        return PathBuf::from(bin);
    }
    let venv = target_dir().join("schemathesis-venv");
    let st = venv.join("bin").join("st");
    if st.is_file() {
        return st;
    }
    let run = |program: &Path, args: &[&str]| {
        let output = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            output.status.success(),
            "installing schemathesis failed at `{} {}` ({}); install it yourself with \
             `python3 -m venv {venv} && {venv}/bin/pip install schemathesis` (Debian needs \
             the python3-venv package), or point SCHEMATHESIS_BIN at an `st` binary:\n{}{}",
            program.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            venv = venv.display(),
        );
    };
    let venv_text = venv.display().to_string();
    run(Path::new("python3"), &["-m", "venv", &venv_text]);
    run(
        &venv.join("bin").join("pip"),
        &["install", "--quiet", "schemathesis>=4,<5"],
    );
    assert!(
        st.is_file(),
        "pip installed schemathesis but {} is missing",
        st.display()
    );
    st
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_breaking_the_schema() {
    let st = tokio::task::spawn_blocking(schemathesis)
        .await
        .expect("the installer does not panic");
    let (system, _) = seeded_system().await;
    let addr = system.data_streams().http_addr();
    let examples = env_number("SCHEMATHESIS_EXAMPLES", 25);
    let timeout = Duration::from_secs(env_number("SCHEMATHESIS_TIMEOUT_SECS", 600));
    let reports = system.dir().join("schemathesis");
    let log = std::fs::File::create(system.dir().join("schemathesis.log")).expect("a log file");

    let mut command = tokio::process::Command::new(&st);
    command
        .arg("run")
        .arg(format!("http://{addr}/openapi.json"))
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        // Event streams never end; the events suite tests them.
        .args(["--exclude-path-regex", "/events$"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--workers", "1"])
        .args(["--request-timeout", "15"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--report", "json,har"])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--no-color")
        // It keeps a cache in its working directory: the test's, not the source tree.
        .current_dir(system.dir())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("a second handle"))
        .stderr(log)
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("SCHEMATHESIS_SEED") {
        command.args(["--seed", &seed]);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", st.display()));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.expect("waiting for schemathesis"),
        Err(_) => {
            let _ = child.kill().await;
            panic!(
                "schemathesis ran past its {timeout:?} cap\n{}",
                schemathesis_log(&system)
            );
        }
    };

    let report = read_report(&reports, "json");
    let har = read_report(&reports, "har");
    let generated = report["test_cases"]["generated"].as_u64().unwrap_or(0);
    let requests = har["log"]["entries"].as_array().map_or(0, Vec::len);
    let server_errors = har["log"]["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["response"]["status"].as_u64().is_some_and(|s| s >= 500))
        .count();
    eprintln!(
        "schemathesis (seed {}): {generated} test cases, {requests} HTTP requests, {} failures, {} errors, {server_errors} 5xx",
        schemathesis_log(&system)
            .lines()
            .find_map(|line| line.strip_prefix("Seed: "))
            .unwrap_or("?"),
        report["failures"].as_array().map_or(0, Vec::len),
        report["errors"].as_array().map_or(0, Vec::len),
    );
    assert!(
        status.success(),
        "schemathesis failed ({status})\n{}",
        schemathesis_log(&system)
    );
    assert_eq!(
        report["failures"],
        json!([]),
        "{}",
        schemathesis_log(&system)
    );
    assert_eq!(report["errors"], json!([]), "{}", schemathesis_log(&system));
    assert_eq!(server_errors, 0, "{}", schemathesis_log(&system));
    assert!(
        generated >= 10 * examples && requests >= 300,
        "a bounded but real run: {generated} test cases, {requests} requests"
    );
    // The server came through it whole.
    let api = system.api();
    let (status, _) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let logs = system.data_streams().logs();
    assert!(!logs.contains("panicked"), "data-streams panicked:\n{logs}");
    assert!(
        !logs.contains("request failed"),
        "data-streams answered a 500:\n{logs}"
    );
}

/// The report `st` wrote as `<kind>-<time>.json`.
fn read_report(dir: &Path, kind: &str) -> Value {
    let file = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{kind}-")) && n.ends_with(".json"))
        })
        .unwrap_or_else(|| panic!("no {kind} report in {}", dir.display()));
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()))
}

fn schemathesis_log(system: &System) -> String {
    let text = std::fs::read_to_string(system.dir().join("schemathesis.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(150)..].join("\n")
}
