//! One worker holding thousands of jobs, driven straight over NATS (no data-streams): its
//! heartbeats carry the count and digest of its job set instead of the list, its jobs endpoint
//! pages through exactly those ids, stops update the digest, an addressed start lands on the
//! worker it names, and `not_before` puts a job's first run off.

use std::time::Duration;

use futures::StreamExt as _;
use newsflow_core::digest::JobSetDigest;
use newsflow_core::{now_utc, BatchMarker, JobId, JobSpec};
use newsflow_nats::command::{send_start, send_stop};
use newsflow_nats::subjects;
use newsflow_nats::wire::{Heartbeat, JobsPage, StartJob, WorkerId};
use newsflow_tests::{wait_for, Bus, System};
use serde_json::json;

/// Jobs given to the worker.
const JOBS: usize = 3000;
/// Commands in flight at once.
const IN_FLIGHT: usize = 64;
/// How long one command or heartbeat may take to arrive.
const WITHIN: Duration = Duration::from_secs(10);

fn spec(id: &str) -> JobSpec {
    JobSpec::from_create_request(&json!({
        "id": id, "params": {"q": "scale"}, "interval_secs": 3600, "max_pages": 1, "page_size": 10
    }))
    .expect("a valid spec")
}

fn worker(id: &str) -> WorkerId {
    WorkerId::parse(id).expect("a valid worker id")
}

/// The next heartbeat of `worker` whose count is `count`; with its size in bytes.
async fn heartbeat_counting(
    beats: &mut async_nats::Subscriber,
    worker: &str,
    count: u64,
) -> (Heartbeat, usize) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let message = tokio::time::timeout_at(deadline, beats.next())
            .await
            .unwrap_or_else(|_| panic!("no heartbeat of {worker} counting {count} in {WITHIN:?}"))
            .expect("the heartbeat subscription is open");
        let beat: Heartbeat = serde_json::from_slice(&message.payload).expect("a heartbeat");
        if beat.worker_id.as_str() == worker && beat.count == Some(count) {
            return (beat, message.payload.len());
        }
    }
}

/// Every id the worker's jobs endpoint lists, page by page.
async fn listed_jobs(bus: &Bus, worker: &WorkerId, limit: u32) -> Vec<JobId> {
    let subject = subjects::worker_jobs(worker);
    let mut ids = Vec::new();
    let mut after: Option<JobId> = None;
    loop {
        let request = match &after {
            Some(after) => json!({"after": after, "limit": limit}),
            None => json!({"limit": limit}),
        };
        let reply = bus.request_json(&subject, &request, WITHIN).await;
        let page: JobsPage = serde_json::from_value(reply.clone())
            .unwrap_or_else(|e| panic!("a jobs page ({e}): {reply}"));
        assert!(
            page.jobs.len() <= limit as usize,
            "a page holds at most the limit"
        );
        ids.extend(page.jobs);
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_thousands_of_jobs_beats_a_digest_and_pages_them() {
    let mut system = System::builder()
        .without_data_streams()
        .workers(1)
        .start()
        .await;
    let bus = system.bus().await;
    let client = bus.client().clone();
    let mut beats = bus.subscribe(subjects::HEARTBEAT).await;
    let first = worker("worker-1");
    let an_hour_on = now_utc() + time::Duration::hours(1);
    let ids: Vec<JobId> = (0..JOBS)
        .map(|n| JobId::parse(&format!("scale-{n:04}")).expect("a valid id"))
        .collect();

    // Thousands of starts from many callers at once, every first run an hour away.
    let acks: Vec<_> = futures::stream::iter(ids.iter().map(|id| {
        let client = client.clone();
        let command = StartJob {
            job: spec(id.as_str()),
            not_before: Some(an_hour_on),
        };
        async move { send_start(&client, &command, WITHIN).await }
    }))
    .buffer_unordered(IN_FLIGHT)
    .collect()
    .await;
    for ack in acks {
        assert_eq!(ack.expect("a start is acknowledged").worker_id, first);
    }

    let (beat, size) = heartbeat_counting(&mut beats, "worker-1", JOBS as u64).await;
    assert_eq!(beat.jobs, None, "3,000 ids are not listed in a heartbeat");
    assert_eq!(beat.job_set().ok(), Some(JobSetDigest::of(&ids)));
    assert!(size < 1024, "a heartbeat of {JOBS} jobs is {size} bytes");
    assert_eq!(listed_jobs(&bus, &first, 1000).await, ids);
    assert_eq!(
        system.mock().stats().await["requests"],
        0,
        "no first run came before its not_before"
    );
    let refusal = bus
        .request_json(&subjects::worker_jobs(&first), &json!({"limit": 0}), WITHIN)
        .await;
    assert_eq!(refusal["ok"], false, "{refusal}");
    assert_eq!(refusal["error"]["code"], "invalid_payload", "{refusal}");

    // Half of them stopped by many callers at once.
    let stopped: Vec<JobId> = ids.iter().step_by(2).cloned().collect();
    let kept: Vec<JobId> = ids.iter().skip(1).step_by(2).cloned().collect();
    let stops: Vec<_> = futures::stream::iter(stopped.iter().map(|id| {
        let (client, first) = (client.clone(), first.clone());
        async move { send_stop(&client, &first, id, WITHIN).await }
    }))
    .buffer_unordered(IN_FLIGHT)
    .collect()
    .await;
    assert!(
        stops.iter().all(Result::is_ok),
        "every stop is acknowledged"
    );

    let (beat, _) = heartbeat_counting(&mut beats, "worker-1", kept.len() as u64).await;
    assert_eq!(beat.job_set().ok(), Some(JobSetDigest::of(&kept)));
    assert_eq!(listed_jobs(&bus, &first, 333).await, kept);

    // Starts addressed to a second worker land there, and not_before puts a first run off.
    let second = worker(&system.start_worker().await);
    let soon = now_utc() + time::Duration::seconds(2);
    let addressed = ["here-a", "here-b", "here-soon"];
    for id in addressed {
        let not_before = if id == "here-soon" { soon } else { an_hour_on };
        let command = StartJob {
            job: spec(id),
            not_before: Some(not_before),
        };
        let reply = bus
            .request_json(
                &subjects::start_on(&second),
                &serde_json::to_value(&command).expect("serializes"),
                WITHIN,
            )
            .await;
        assert_eq!(
            reply,
            json!({"ok": true, "worker_id": second, "job_id": id})
        );
    }
    let (beat, _) = heartbeat_counting(&mut beats, second.as_str(), 3).await;
    let mut listed = beat.jobs.clone().expect("three jobs are listed");
    listed.sort();
    assert_eq!(listed, addressed.map(|id| JobId::parse(id).expect("valid")));
    heartbeat_counting(&mut beats, "worker-1", kept.len() as u64).await;

    let marker: BatchMarker = wait_for(WITHIN, "the delayed job's first batch", || async {
        let markers = bus.stream_messages("news.batches.here-soon.").await;
        markers
            .first()
            .map(|m| serde_json::from_slice(&m.payload).expect("a marker"))
    })
    .await;
    // Markers carry milliseconds; the run's clock and the command's may differ by a hair.
    assert!(
        marker.started_at >= soon - time::Duration::milliseconds(50),
        "the first run started at {}, before its not_before {soon}",
        marker.started_at
    );
    let requests = system.mock().stats().await["requests"].as_u64();
    assert_eq!(requests, Some(1), "only the job due soon ran");
}
