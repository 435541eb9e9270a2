//! Server-sent events: a `batch` event per batch that reaches a final status, `job` events,
//! `Last-Event-ID` resume from the store across a restart, the stream bound, and a client
//! that never reads.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use newsflow_tests::contract::assert_error_shape;
use newsflow_tests::sse::{self, SseEvent};
use newsflow_tests::{wait_for, Api, StatusCode, System};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

const WITHIN: Duration = Duration::from_secs(30);

fn batch_events(events: &[SseEvent]) -> Vec<&SseEvent> {
    events.iter().filter(|e| e.event == "batch").collect()
}

/// The id of the batch a batch event carries.
fn batch_id_of(event: &SseEvent) -> String {
    event.data["batch"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The job's batches in a final status, by id. A markerless batch of a stopped job reads as
/// abandoned at once, but only the writer's sweep records that (with its event) later, so
/// those are left out.
async fn final_batches(api: &Api, job: &str) -> BTreeMap<String, String> {
    api.collect_pages(&format!("/jobs/{job}/batches"), "batches", 100)
        .await
        .into_iter()
        .filter(|b| b["status"] != "in_progress" && b["error"]["code"] != "abandoned")
        .map(|b| {
            (
                b["id"].as_str().unwrap_or_default().to_owned(),
                b["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Stops the job and waits until its batches stop changing (the run in flight ends).
async fn stop_and_settle(api: &Api, job: &str) -> BTreeMap<String, String> {
    let (status, body) = api.post_empty(&format!("/jobs/{job}/stop")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for(WITHIN, "the stopped job's batches to all be final", || {
        let api = api.clone();
        async move {
            let all_final = api
                .collect_pages(&format!("/jobs/{job}/batches"), "batches", 100)
                .await
                .iter()
                .all(|b| b["status"] != "in_progress");
            all_final.then_some(())
        }
    })
    .await;
    final_batches(api, job).await
}

/// A client that asks `addr` for `/events` with a small receive buffer and never reads a byte
/// of the answer.
async fn never_reading_client(addr: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(1024).expect("a small buffer");
    let mut stream = socket
        .connect(addr.parse().expect("an address"))
        .await
        .expect("connects");
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("sends");
    stream
}

/// A batch event's id is its batch's id; one job's runs follow each other, so its batch
/// events' ids sort in time, each once.
fn assert_sorted_unique(events: &[&SseEvent]) {
    for event in events {
        assert_eq!(
            event.id,
            batch_id_of(event),
            "a batch event's id is its batch id"
        );
    }
    for pair in events.windows(2) {
        assert!(
            pair[0].id < pair[1].id,
            "event ids sort in time and are unique: {} then {}",
            pair[0].id,
            pair[1].id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_that_reaches_a_final_status_is_one_batch_event_and_jobs_send_job_events() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let mut all = sse::open(&api, "/events", None)
        .await
        .expect("stream opens");
    api.create_job_ok(
        &json!({"id":"often","params":{"q":"bitcoin"},"interval_secs":1,"page_size":5}),
    )
    .await;
    let mut seen = all
        .collect_until(WITHIN, "the job's creation event", |seen| {
            seen.iter().any(|e| e.event == "job")
        })
        .await;
    let created = seen
        .iter()
        .find(|e| e.event == "job")
        .expect("a job event")
        .clone();
    assert_eq!(created.data["id"], "often");
    assert_eq!(created.data["state"], "running");
    // Resumed after the creation event, so a batch promoted before the job's stream was open
    // (one second's interval is quick) is still on it.
    let mut one = sse::open(&api, "/jobs/often/events", Some(&created.id))
        .await
        .expect("the job's stream opens");
    let more = all
        .collect_until(WITHIN, "three batch events", |more| {
            batch_events(&seen).len() + batch_events(more).len() >= 3
        })
        .await;
    seen.extend(more);

    let settled = stop_and_settle(&api, "often").await;
    seen.extend(
        all.collect_until(WITHIN, "a batch event for every final batch", |more| {
            let ids: BTreeSet<_> = batch_events(&seen)
                .into_iter()
                .chain(batch_events(more))
                .map(batch_id_of)
                .collect();
            settled.keys().all(|id| ids.contains(id))
        })
        .await,
    );
    let batches = batch_events(&seen);
    assert_sorted_unique(&batches);
    let mut by_batch = BTreeMap::new();
    for event in &batches {
        assert_eq!(event.data["job_id"], "often");
        let id = event.data["batch"]["id"]
            .as_str()
            .expect("batch id")
            .to_owned();
        let status = event.data["batch"]["status"]
            .as_str()
            .expect("status")
            .to_owned();
        assert!(
            by_batch.insert(id.clone(), status).is_none(),
            "one event per batch: {id} twice"
        );
    }
    assert_eq!(
        by_batch, settled,
        "the events are the batches' final statuses"
    );
    if !seen
        .iter()
        .any(|e| e.event == "job" && e.data["state"] == "stopped")
    {
        all.collect_until(WITHIN, "the stop's job event", |more| {
            more.iter()
                .any(|e| e.event == "job" && e.data["state"] == "stopped")
        })
        .await;
    }

    // The job's own stream carries the same batch events.
    let own = one
        .collect_until(WITHIN, "the job stream's batch events", |seen| {
            batch_events(seen).len() >= settled.len()
        })
        .await;
    let own_ids: BTreeSet<_> = batch_events(&own).into_iter().map(batch_id_of).collect();
    assert_eq!(own_ids, settled.keys().cloned().collect());

    let (status, _) = api.delete("/jobs/often").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let gone = all
        .collect_until(WITHIN, "the delete's job event", |more| {
            more.iter()
                .any(|e| e.event == "job" && e.data["deleted"] == true)
        })
        .await;
    let deleted = gone.last().expect("an event");
    assert_eq!(deleted.data, json!({"id":"often","deleted":true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resuming_with_last_event_id_across_a_restart_misses_nothing_and_gets_nothing_twice(
) {
    let mut system = System::builder().workers(1).start().await;
    let api = system.api();
    // Open before the job exists, so the client sees its every batch until it leaves.
    let mut stream = sse::open(&api, "/events", None).await.expect("opens");
    api.create_job_ok(
        &json!({"id":"resume","params":{"q":"bitcoin"},"interval_secs":1,"page_size":5}),
    )
    .await;
    let first = stream
        .collect_until(WITHIN, "a first batch event", |seen| {
            !batch_events(seen).is_empty()
        })
        .await;
    let first: Vec<SseEvent> = batch_events(&first).into_iter().cloned().collect();
    let last_id = first.last().expect("one").id.clone();
    let last_batch = first.last().expect("one").data["batch"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    drop(stream);
    // Batches complete while the client is away, before and after the restart.
    api.wait_for_latest("resume", Some(&last_batch), WITHIN)
        .await;
    system.restart_data_streams().await;
    let api = system.api();
    api.wait_ready(WITHIN).await;
    let newest = api.latest("resume").await["batch"]["id"]
        .as_str()
        .expect("a latest batch")
        .to_owned();
    api.wait_for_latest("resume", Some(&newest), WITHIN).await;

    let mut resumed = sse::open(&api, "/events", Some(&last_id))
        .await
        .expect("resumes");
    let settled = stop_and_settle(&api, "resume").await;
    let rest = resumed
        .collect_until(WITHIN, "every final batch after the resume point", |seen| {
            let ids: BTreeSet<_> = batch_events(seen).into_iter().map(batch_id_of).collect();
            settled
                .keys()
                .filter(|id| !first.iter().any(|e| &e.data["batch"]["id"] == *id))
                .all(|id| ids.contains(id))
        })
        .await;
    let mut all: Vec<&SseEvent> = first.iter().collect();
    all.extend(batch_events(&rest));
    assert_sorted_unique(&all);
    let ids: Vec<String> = all.iter().map(|e| batch_id_of(e)).collect();
    let unique: BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "no batch event twice: {ids:?}");
    assert_eq!(
        unique,
        settled.keys().cloned().collect(),
        "no gap: every final batch has its event"
    );
    assert!(
        settled.len() >= 3,
        "batches completed while away: {settled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_slows_neither_ingest_nor_other_clients() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let addr = system.data_streams().http_addr();
    // Clients that send a request and never read a byte of the answer.
    let mut stalled = Vec::new();
    for _ in 0..5 {
        stalled.push(never_reading_client(&addr).await);
    }
    let mut reader = sse::open(&api, "/events", None).await.expect("opens");
    api.create_job_ok(
        &json!({"id":"busy","params":{"q":"bitcoin"},"interval_secs":1,"page_size":100}),
    )
    .await;
    let mut latest = None;
    for _ in 0..5 {
        let body = api.wait_for_latest("busy", latest.as_deref(), WITHIN).await;
        latest = body["batch"]["id"].as_str().map(str::to_owned);
    }
    let latest = latest.expect("a latest batch");
    reader
        .collect_until(
            WITHIN,
            "the reading client's event for the latest batch",
            |seen| {
                seen.iter()
                    .any(|e| e.event == "batch" && e.data["batch"]["id"] == latest.as_str())
            },
        )
        .await;
    assert_eq!(api.metric("newsflow_sse_clients").await, Some(6.0));
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_the_token_are_bounded_and_refuse_a_malformed_last_event_id() {
    let system = System::builder()
        .workers(0)
        .api_token("sesame")
        .data_streams_args(["--max-sse-clients", "1"])
        .start()
        .await;
    let api = system.api();
    let (status, body) = sse::open(&api.clone().without_token(), "/events", None)
        .await
        .expect_err("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(assert_error_shape(&body), "unauthorized");
    let (status, body) = sse::open(&api, "/events", Some("yesterday"))
        .await
        .expect_err("refused");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(assert_error_shape(&body), "bad_last_event_id");
    let (status, body) = sse::open(&api, "/jobs/nope/events", None)
        .await
        .expect_err("refused");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(assert_error_shape(&body), "job_not_found");

    let first = sse::open(&api, "/events", None).await.expect("opens");
    let (status, body) = sse::open(&api, "/events", None)
        .await
        .expect_err("beyond the bound");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(assert_error_shape(&body), "too_many_streams");
    drop(first);
    wait_for(WITHIN, "the closed stream's slot to be free", || {
        let api = api.clone();
        async move { sse::open(&api, "/events", None).await.ok() }
    })
    .await;
}

/// Ingest of `batches` complete batches of ten articles, published as fast as the test can,
/// until the last is promoted: with no stream open, then with `idle` streams that are open but
/// never read by the test plus one raw client that never reads a byte. A measurement, not a
/// test (speed is never asserted): `cargo test -p newsflow-tests --test events -- --ignored
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it with --ignored --nocapture"]
async fn measure_ingest_with_and_without_idle_and_stalled_sse_clients() {
    const BATCHES: u32 = 200;
    const IDLE: usize = 100;
    for idle in [0, IDLE] {
        let system = System::builder().workers(0).start().await;
        let api = system.api();
        api.create_job_ok(&json!({"id":"measured","params":{"q":"x"},"interval_secs":3600}))
            .await;
        let mut streams = Vec::new();
        let mut stalled = None;
        if idle > 0 {
            for _ in 0..idle {
                streams.push(sse::open(&api, "/events", None).await.expect("opens"));
            }
            let addr = system.data_streams().http_addr();
            stalled = Some(never_reading_client(&addr).await);
        }
        let bus = system.bus().await;
        let before = api.counter("newsflow_batches_promoted_total").await;
        let started = std::time::Instant::now();
        for _ in 0..BATCHES {
            let batch = newsflow_core::BatchId::generate();
            let articles: Vec<_> = (0..10)
                .map(|i| newsflow_tests::bus::sample_article("measured", batch, i, ""))
                .collect();
            bus.publish_complete_batch(&articles).await;
        }
        let published = started.elapsed();
        wait_for(Duration::from_secs(300), "every batch promoted", || {
            let api = api.clone();
            async move {
                (api.counter("newsflow_batches_promoted_total").await
                    >= before + u64::from(BATCHES))
                .then_some(())
            }
        })
        .await;
        let drained = started.elapsed();
        println!(
            "{BATCHES} batches x 10 articles with {idle} idle SSE clients{}: published in {:.2} s, all promoted after {:.2} s ({:.0} batches/s)",
            if idle > 0 { " + 1 that never reads" } else { "" },
            published.as_secs_f64(),
            drained.as_secs_f64(),
            f64::from(BATCHES) / drained.as_secs_f64()
        );
        drop((streams, stalled));
    }
}
