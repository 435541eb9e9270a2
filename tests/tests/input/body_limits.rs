//! `POST /jobs` bodies at every limit are accepted, a taken id is a conflict, and bodies over
//! the size limit are refused whether or not their length is announced.

use newsflow_tests::contract::assert_job;
use newsflow_tests::hostile::raw_http;
use newsflow_tests::System;
use serde_json::json;

use crate::{assert_refused, post_raw};

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
