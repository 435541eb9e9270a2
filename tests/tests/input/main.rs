//! Bad input at every edge: HTTP bodies, parameters, ids, cursors, sizes, routes and methods;
//! garbage commands and heartbeats on NATS; nulls, missing URLs, wrong types and oversized
//! bodies from the external API; unusable flags and environment. Each gets a clear, typed
//! answer: never a panic, a hang, a 500 or a half-written record.
//!
//! # Layout
//! - `create_body`: bad `POST /jobs` bodies, one per class (the full table of rule-breaking
//!   bodies is unit-tested in `newsflow-core`, against the parser itself).
//! - `body_limits`: bodies at every limit, a taken id, bodies over the size limit.
//! - `http_routes`: unknown ids, routes and methods, bad query parameters and cursors.
//! - `nats_commands`: garbage start and stop commands to a worker.
//! - `heartbeats`: garbage heartbeats to data-streams.
//! - `newsapi`: nulls, missing URLs, wrong types and oversized answers from NewsAPI.
//! - `flags`: unusable flags and environment at start.

mod body_limits;
mod create_body;
mod flags;
mod heartbeats;
mod http_routes;
mod nats_commands;
mod newsapi;

use std::time::Duration;

use newsflow_tests::contract::assert_error;
use newsflow_tests::hostile::raw_http;
use serde_json::Value;

/// How long a batch may take to be fetched, published, consumed and promoted.
const BATCH_WITHIN: Duration = Duration::from_secs(30);

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
