//! Read replicas, one controller (issue 14, point 4): two data-streams on one broker, each with
//! its own data directory and durable consumer, serve the same jobs; only the lease holder
//! controls; a replica forwards job changes and takes control when the holder dies.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use data_streams::lease::{Claim, Holder, Lease, LeaseSettings};
use newsflow_tests::contract::id_of;
use newsflow_tests::{hold_for, poll_until, wait_for, Api, NatsServer, StatusCode, System};
use serde_json::{json, Value};

const BATCH_WITHIN: Duration = Duration::from_secs(30);
const TAKEOVER_WITHIN: Duration = Duration::from_secs(20);
const SAME_WITHIN: Duration = Duration::from_secs(30);
/// A short lease, so a takeover is quick, yet long enough that a stall of the loaded test
/// machine does not hand control over before the test means it to.
const LEASE_MS: &str = "5000";

fn job(id: &str) -> Value {
    json!({"id": id, "params": {"q": "bitcoin"}, "interval_secs": 1, "page_size": 5})
}

async fn controls(api: &Api) -> bool {
    let (_, ready) = api.get("/readyz").await;
    ready["controls"] == true
}

async fn wait_until_controls(api: &Api, what: &str) {
    wait_for(TAKEOVER_WITHIN, what, || async {
        controls(api).await.then_some(())
    })
    .await;
}

/// `GET path` on both instances until they answer the same 200 body.
async fn wait_same(a: &Api, b: &Api, path: &str) -> Value {
    let last = Arc::new(Mutex::new((Value::Null, Value::Null)));
    let same = poll_until(SAME_WITHIN, || {
        let (a, b, last) = (a.clone(), b.clone(), last.clone());
        async move {
            let (status_a, body_a) = a.get(path).await;
            let (status_b, body_b) = b.get(path).await;
            let same = status_a == StatusCode::OK && status_b == StatusCode::OK && body_a == body_b;
            *last.lock().expect("not poisoned") = (body_a.clone(), body_b);
            same.then_some(body_a)
        }
    })
    .await;
    same.unwrap_or_else(|| {
        let last = last.lock().expect("not poisoned");
        panic!("GET {path} differs:\n{}\n{}", last.0, last.1)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_the_same_jobs_forwards_changes_and_takes_control_when_the_controller_dies(
) {
    let mut system = System::builder()
        .workers(1)
        .data_streams_args(["--lease-ms", LEASE_MS])
        .start()
        .await;
    let first = system.api();
    wait_until_controls(&first, "the first instance to control jobs").await;
    system.start_replica("replica", &[]).await;
    let replica = system.replica_api("replica");
    assert!(
        !controls(&replica).await,
        "the second instance is a replica"
    );

    // Jobs created at once on both instances: the replica forwards its creates.
    let mut creates = tokio::task::JoinSet::new();
    let ids: Vec<String> = (1..=8).map(|n| format!("rep-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let api = if n.is_multiple_of(2) {
            &first
        } else {
            &replica
        }
        .clone();
        let id = id.clone();
        creates.spawn(async move { (id.clone(), api.create_job(&job(&id)).await) });
    }
    while let Some(created) = creates.join_next().await {
        let (id, (status, body)) = created.expect("the create task ran");
        assert_eq!(status, StatusCode::CREATED, "POST /jobs {id}: {body}");
        assert_eq!(body["id"], id.as_str(), "{body}");
    }
    let (status, body) = replica.create_job(&job("rep-1")).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a forwarded duplicate: {body}"
    );
    assert_eq!(body["error"]["code"], "job_exists", "{body}");

    let mut latest = Vec::new();
    for id in &ids {
        first.wait_for_latest(id, None, BATCH_WITHIN).await;
        latest.push(id_of(
            &replica.wait_for_latest(id, None, BATCH_WITHIN).await["batch"],
        ));
    }
    wait_same(&first, &replica, &format!("/jobs/{}", ids[0])).await;

    // One controller: it started each job once; the replica started none.
    let starts = first.counter("newsflow_starts_acked_total").await;
    assert_eq!(starts, ids.len() as u64, "one start per job");
    assert_eq!(first.metric("newsflow_controls_jobs").await, Some(1.0));
    assert_eq!(replica.metric("newsflow_controls_jobs").await, Some(0.0));
    // The replica hears the worker too (it would have none alive to place jobs on at takeover).
    wait_for(
        Duration::from_secs(10),
        "the replica to count the worker alive",
        || async { (replica.metric("newsflow_workers_alive").await == Some(1.0)).then_some(()) },
    )
    .await;
    hold_for(
        Duration::from_secs(2),
        "no second start and no control on the replica",
        || async {
            let now = first.counter("newsflow_starts_acked_total").await;
            let replica_starts = replica.counter("newsflow_starts_acked_total").await;
            (now != starts || replica_starts != 0 || controls(&replica).await).then(|| {
                format!("controller starts {now} (was {starts}), replica starts {replica_starts}")
            })
        },
    )
    .await;

    // The controller dies: the replica takes over, and the jobs keep running.
    let killed = Instant::now();
    system.kill_data_streams();
    wait_until_controls(&replica, "the replica to take control").await;
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9 of the controller: {takeover:?} (lease {LEASE_MS} ms)");
    for (id, before) in ids.iter().zip(&latest) {
        replica
            .wait_for_latest(id, Some(before), BATCH_WITHIN)
            .await;
    }
    let created = replica.create_job_ok(&job("after-takeover")).await;
    assert_eq!(created["id"], "after-takeover", "{created}");
    replica
        .wait_for_latest("after-takeover", None, BATCH_WITHIN)
        .await;

    // The old controller comes back as a replica, and learns what changed meanwhile.
    system.start_data_streams().await;
    let old = system.api();
    assert!(!controls(&old).await, "the restarted instance is a replica");
    assert!(controls(&replica).await, "control did not move back");
    old.wait_for_latest("after-takeover", None, BATCH_WITHIN)
        .await;

    // Changes forwarded by the new replica; then both answer the same.
    let mut stops = tokio::task::JoinSet::new();
    for id in ids
        .iter()
        .chain(std::iter::once(&"after-takeover".to_owned()))
    {
        let (api, id) = (old.clone(), id.clone());
        stops.spawn(async move {
            (
                id.clone(),
                api.post_empty(&format!("/jobs/{id}/stop")).await,
            )
        });
    }
    while let Some(stopped) = stops.join_next().await {
        let (id, (status, body)) = stopped.expect("the stop task ran");
        assert_eq!(status, StatusCode::OK, "POST /jobs/{id}/stop: {body}");
        assert_eq!(body["state"], "stopped", "{body}");
    }
    let (status, body) = old.delete(&format!("/jobs/{}", ids[0])).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let listed = wait_same(&old, &replica, "/jobs").await;
    let listed: BTreeSet<String> = listed["jobs"]
        .as_array()
        .expect("a list")
        .iter()
        .map(id_of)
        .collect();
    let expected: BTreeSet<String> = ids[1..]
        .iter()
        .cloned()
        .chain(std::iter::once("after-takeover".to_owned()))
        .collect();
    assert_eq!(listed, expected);
    for id in &ids[1..] {
        wait_same(&old, &replica, &format!("/jobs/{id}")).await;
        wait_same(&old, &replica, &format!("/jobs/{id}/articles")).await;
    }
    let (status, _) = replica.get(&format!("/jobs/{}", ids[0])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The lease (of `life`) as instance `instance_id`, retried as data-streams retries it: a
/// JetStream request can time out while the machine is busy writing to disk.
async fn open_lease(url: String, life: Duration, instance_id: String, http_url: String) -> Lease {
    let client = async_nats::connect(url).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    let settings = LeaseSettings {
        life,
        me: Holder {
            instance_id,
            http_url,
        },
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Lease::open(&js, 1, settings.clone()).await {
            Ok(lease) => return lease,
            Err(error) if Instant::now() < deadline => {
                eprintln!("opening the lease bucket, trying again: {error:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("the lease bucket did not open within 60 s: {error:#}"),
        }
    }
}

/// The squatter's lease: renewed every quarter of it, so only a stall of 4.5 s would let it
/// lapse (its release hands it over at once).
const SQUAT_LEASE: Duration = Duration::from_secs(6);

/// Holds the lease as `squatter` (an instance with no HTTP API) until `stop`, then gives it up.
async fn squat(
    url: String,
    held: tokio::sync::oneshot::Sender<()>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let lease = open_lease(
        url,
        SQUAT_LEASE,
        "squatter".to_owned(),
        "http://nowhere".to_owned(),
    )
    .await;
    let mut revision = loop {
        if let Ok(Claim::Held(revision)) = lease.claim().await {
            break revision;
        }
        tokio::time::sleep(lease.settings().renew_every()).await;
    };
    let _ = held.send(());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(lease.settings().renew_every()) => {
                revision = lease.renew(revision).await.expect("the squatter keeps the lease");
            }
        }
    }
    lease.release(revision).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_change_is_refused_with_no_controller_and_runs_once_one_takes_the_lease() {
    let mut system = System::builder()
        .workers(1)
        .without_data_streams()
        .data_streams_args(["--lease-ms", "6000"])
        .start()
        .await;
    let (held_tx, held) = tokio::sync::oneshot::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let squatter = tokio::spawn(squat(system.nats_url(), held_tx, stop_rx));
    held.await.expect("the squatter holds the lease");
    system.start_data_streams().await;
    let api = system.api();
    assert!(!controls(&api).await, "the lease is held elsewhere");

    let (status, body) = api.create_job(&job("refused")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "no_controller", "{body}");
    let (status, body) = api.get("/jobs/refused").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing was run locally: {body}"
    );
    let (status, body) = api.get("/jobs").await;
    assert_eq!(status, StatusCode::OK, "reads are served: {body}");

    let _ = stop.send(());
    squatter.await.expect("the squatter gave the lease up");
    wait_until_controls(&api, "data-streams to take the released lease").await;
    let created = api.create_job_ok(&job("refused")).await;
    assert_eq!(created["state"], "running", "{created}");
}

/// One contender of the lease test: its own connection, taking the lease, holding it for a
/// few renewals, then giving it up or dying (no more renewals), again and again.
async fn contend(
    url: String,
    n: usize,
    until: Instant,
    held: Arc<Mutex<Vec<(usize, Instant, Instant)>>>,
) {
    let lease = open_lease(
        url,
        Duration::from_millis(1000),
        format!("contender-{n}"),
        format!("http://contender-{n}"),
    )
    .await;
    let settings = lease.settings().clone();
    let mut round = n;
    while Instant::now() < until {
        round += 1;
        let sent = Instant::now();
        let Ok(Claim::Held(mut revision)) = lease.claim().await else {
            tokio::time::sleep(settings.renew_every()).await;
            continue;
        };
        let start = Instant::now();
        let mut valid_until = sent + settings.valid_for();
        let renewals = round % 3;
        let mut end = None;
        for _ in 0..renewals {
            tokio::time::sleep(settings.renew_every()).await;
            let sent = Instant::now();
            match lease.renew(revision).await {
                Ok(renewed) if Instant::now() < valid_until => {
                    revision = renewed;
                    valid_until = sent + settings.valid_for();
                }
                _ => {
                    end = Some(valid_until.min(Instant::now()));
                    break;
                }
            }
        }
        let end = match end {
            Some(end) => end,
            None if round.is_multiple_of(2) => {
                let end = Instant::now().min(valid_until);
                lease.release(revision).await;
                end
            }
            // Dies: no release, no renewal; the value expires on its own.
            None => valid_until,
        };
        held.lock().expect("not poisoned").push((n, start, end));
        tokio::time::sleep_until(valid_until.into()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_contenders_for_the_lease_never_hold_it_at_the_same_time() {
    let nats = NatsServer::start().await;
    let held = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs(10);
    let mut contenders = tokio::task::JoinSet::new();
    for n in 0..8 {
        contenders.spawn(contend(nats.url(), n, until, held.clone()));
    }
    while let Some(ended) = contenders.join_next().await {
        ended.expect("a contender ran to the end");
    }
    let mut held = held.lock().expect("not poisoned").clone();
    held.sort_by_key(|(_, start, _)| *start);
    for pair in held.windows(2) {
        let ((a, _, a_end), (b, b_start, _)) = (pair[0], pair[1]);
        assert!(
            b_start >= a_end,
            "contender {b} held the lease {:?} before contender {a} stopped holding it",
            a_end - b_start
        );
    }
    let holders: BTreeSet<usize> = held.iter().map(|(n, _, _)| *n).collect();
    eprintln!(
        "{} holds by {} contenders of 8 in 10 s",
        held.len(),
        holders.len()
    );
    assert!(held.len() >= 4, "the lease changed hands: {held:?}");
    assert!(
        holders.len() >= 2,
        "more than one contender held it: {held:?}"
    );
}
