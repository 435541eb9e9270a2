//! Observability, black-box: both `/metrics` endpoints parsed with a real Prometheus text
//! parser (`prometheus-parse`) and seen to move when work happens (a batch completes, a 429 is
//! retried, a poison message is terminated), and both services' `/readyz` while nats-server
//! is stopped and after it returns.

use std::time::Duration;

use futures::StreamExt as _;
use newsflow_tests::{poll_until, wait_for, Bus, StatusCode, System};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::{json, Value as Json};

/// How long a batch may take to be fetched, published, consumed and promoted.
const BATCH_WITHIN: Duration = Duration::from_secs(45);
/// How long a figure may take to show up in a scrape.
const FIGURE_WITHIN: Duration = Duration::from_secs(20);

/// A parsed scrape.
struct Metrics(Scrape);

impl Metrics {
    /// Scrapes `http://{addr}/metrics` and parses it, failing on a non-200 or unparsable text.
    async fn scrape(addr: &str) -> Self {
        let response = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap_or_else(|e| panic!("GET {addr}/metrics: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {addr}/metrics");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = response.text().await.expect("the metrics text");
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        Self(Scrape::parse(lines).expect("a Prometheus text exposition"))
    }

    /// The samples named `name` whose labels include every pair of `labels`.
    fn samples<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> Vec<&'a Sample> {
        self.0
            .samples
            .iter()
            .filter(move |s| s.metric == name)
            .filter(move |s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|got| got == *v))
            })
            .collect()
    }

    /// The sum of the matching counter or gauge samples; 0 when there are none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels)
            .iter()
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{name} is not a single value: {other:?}"),
            })
            .sum()
    }

    /// How many observations the matching histograms hold (their `+Inf` buckets).
    fn observations(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels)
            .iter()
            .map(|s| match &s.value {
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map_or(0.0, |b| b.count),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// Whether a metric family of that name is declared.
    fn has(&self, name: &str) -> bool {
        self.0.docs.contains_key(name)
    }
}

/// The ops address a worker printed on stdout.
fn ops_addr(system: &mut System, id: &str) -> String {
    let stdout = system.worker(id).stdout();
    stdout
        .lines()
        .map(newsflow_tests::process::message_of)
        .find_map(|line| {
            line.split_once(" ops=http://")
                .map(|(_, addr)| addr.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("{id} printed no ops address: {stdout}"))
}

/// Polls a scrape of `addr` until `check` passes, returning the scrape that did.
async fn scrape_until(addr: &str, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    wait_for(FIGURE_WITHIN, what, || async {
        let metrics = Metrics::scrape(addr).await;
        check(&metrics).then_some(metrics)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_metrics_endpoints_parse_and_move_as_a_batch_completes_a_429_is_retried_and_poison_is_terminated(
) {
    let mut system = System::builder()
        .workers(1)
        .worker_args(["--metrics-addr", "127.0.0.1:0"])
        .start()
        .await;
    let api = system.api();
    let ds = api.base().trim_start_matches("http://").to_owned();
    let worker = ops_addr(&mut system, "worker-1");

    let before = Metrics::scrape(&ds).await;
    for family in [
        "newsflow_http_requests",
        "newsflow_ingest_flush_seconds",
        "newsflow_ingest_group_size",
        "newsflow_consumer_pending",
        "newsflow_consumer_ack_pending",
        "newsflow_jobs_by_state",
        "newsflow_store_bytes",
    ] {
        assert!(before.has(family), "data-streams declares {family}");
    }
    assert_eq!(before.value("newsflow_batches_promoted_total", &[]), 0.0);

    system
        .mock()
        .inject_fault(&json!({"kind": "rate_limited", "times": 1}))
        .await;
    api.create_job_ok(&json!({
        "id": "observed", "params": {"q": "bitcoin"}, "interval_secs": 60, "page_size": 10
    }))
    .await;
    api.wait_for_latest("observed", None, BATCH_WITHIN).await;

    let after = scrape_until(&ds, "data-streams to count the promoted batch", |m| {
        m.value("newsflow_batches_promoted_total", &[]) >= 1.0
    })
    .await;
    assert!(after.value("newsflow_messages_acked_total", &[]) >= 11.0);
    assert!(after.value("newsflow_articles_stored_total", &[]) >= 10.0);
    assert!(after.observations("newsflow_ingest_flush_seconds", &[]) >= 1.0);
    assert!(after.observations("newsflow_ingest_group_size", &[]) >= 1.0);
    assert_eq!(
        after.value("newsflow_jobs_by_state", &[("state", "running")]),
        1.0
    );
    assert_eq!(after.value("newsflow_workers_alive", &[]), 1.0);
    assert!(after.value("newsflow_store_bytes", &[]) > 0.0);
    let created = [("route", "/jobs"), ("method", "POST"), ("status", "201")];
    assert_eq!(after.value("newsflow_http_requests_total", &created), 1.0);
    assert!(
        after.value(
            "newsflow_http_requests_total",
            &[("route", "/jobs/:id/articles"), ("method", "GET")]
        ) >= 1.0,
        "reads are labelled by the route template, not the job id: {:?}",
        after.samples("newsflow_http_requests_total", &[])
    );
    assert!(
        after.observations(
            "newsflow_http_request_duration_seconds",
            &[("route", "/jobs"), ("method", "POST")]
        ) >= 1.0
    );
    let (status, _) = api.get("/no/such/route/abc123").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unmatched = Metrics::scrape(&ds).await;
    assert!(
        unmatched.value(
            "newsflow_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ) >= 1.0
    );
    assert!(unmatched
        .samples("newsflow_http_requests_total", &[])
        .iter()
        .all(|s| !s.labels.get("route").is_some_and(|r| r.contains("abc123"))));

    let worker_after = scrape_until(&worker, "the worker to count the complete run", |m| {
        m.value("newsflow_worker_runs_total", &[("outcome", "complete")]) >= 1.0
    })
    .await;
    let limited = [
        ("endpoint", "everything"),
        ("status", "429"),
        ("code", "rate_limited"),
    ];
    assert_eq!(
        worker_after.value("newsflow_worker_newsapi_requests_total", &limited),
        1.0,
        "the injected 429 is counted"
    );
    assert!(
        worker_after.value(
            "newsflow_worker_newsapi_requests_total",
            &[("status", "200"), ("code", "ok")]
        ) >= 1.0
    );
    assert!(
        worker_after.value(
            "newsflow_worker_newsapi_retries_total",
            &[("endpoint", "everything")]
        ) >= 1.0,
        "the 429 was retried"
    );
    assert!(worker_after.value("newsflow_worker_articles_published_total", &[]) >= 10.0);
    assert!(
        worker_after.observations("newsflow_worker_publish_ack_seconds", &[("kind", "marker")])
            >= 1.0
    );
    assert!(
        worker_after.observations("newsflow_worker_newsapi_request_duration_seconds", &[]) >= 2.0
    );
    assert!(
        worker_after.observations(
            "newsflow_worker_run_duration_seconds",
            &[("outcome", "complete")]
        ) >= 1.0
    );
    assert!(worker_after.observations("newsflow_worker_schedule_lateness_seconds", &[]) >= 1.0);
    assert_eq!(worker_after.value("newsflow_worker_jobs_owned", &[]), 1.0);
    assert_eq!(
        worker_after.value(
            "newsflow_worker_job_failures_in_a_row",
            &[("job_id", "observed")]
        ),
        0.0
    );
    assert_eq!(
        worker_after.value("newsflow_worker_nats_connected", &[]),
        1.0
    );

    let bus: Bus = system.bus().await;
    let terminated = after.value("newsflow_messages_terminated_total", &[]);
    bus.publish("news.articles.observed.x", None, &[], b"{not json".to_vec())
        .await;
    let poisoned = scrape_until(&ds, "the poison message to be terminated", |m| {
        m.value("newsflow_messages_terminated_total", &[]) > terminated
    })
    .await;
    assert_eq!(poisoned.value("newsflow_poison_messages_total", &[]), 1.0);
}

/// Waits for `GET http://{addr}/readyz` to answer `want`, returning its body.
async fn readyz(addr: &str, want: StatusCode) -> Json {
    wait_for(
        Duration::from_secs(60),
        &format!("{addr}/readyz to answer {want}"),
        || async {
            let response = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
            if response.status() != want {
                return None;
            }
            response.json::<Json>().await.ok()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_of_both_services_names_nats_while_it_is_stopped_and_recovers_when_it_returns() {
    let mut system = System::builder()
        .workers(1)
        .worker_args(["--metrics-addr", "127.0.0.1:0"])
        .start()
        .await;
    let ds = system.api().base().trim_start_matches("http://").to_owned();
    let worker = ops_addr(&mut system, "worker-1");
    let health = reqwest::get(format!("http://{worker}/healthz"))
        .await
        .expect("worker /healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let ready = readyz(&worker, StatusCode::OK).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready.get("error").is_none(), "{ready}");
    readyz(&ds, StatusCode::OK).await;

    system.nats().stop().await;
    let down = readyz(&ds, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(down["error"]["code"], "not_ready", "{down}");
    let message = down["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("NATS"), "{down}");
    assert_eq!(down["nats_connected"], false, "{down}");
    let worker_down = readyz(&worker, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(worker_down["error"]["code"], "not_ready", "{worker_down}");
    assert!(
        worker_down["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("NATS")),
        "{worker_down}"
    );
    let still_live = reqwest::get(format!("http://{worker}/healthz"))
        .await
        .expect("worker /healthz while NATS is down");
    assert_eq!(still_live.status(), StatusCode::OK);

    system.nats().start_again().await;
    let back = readyz(&ds, StatusCode::OK).await;
    assert_eq!(back["status"], "ready", "{back}");
    let worker_back = readyz(&worker, StatusCode::OK).await;
    assert_eq!(worker_back["commands_subscribed"], true, "{worker_back}");
}

/// Sends `subject` as a request and collects every reply that arrives within `within`, until
/// `want` replies are in.
async fn gather(bus: &Bus, subject: &str, want: usize, within: Duration) -> Vec<Json> {
    let client = bus.client();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("an inbox");
    client
        .publish_with_reply(subject.to_owned(), inbox, Vec::new().into())
        .await
        .expect("publishing the request");
    client.flush().await.expect("flushing");
    let mut gathered = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while gathered.len() < want {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await else {
            break;
        };
        gathered.push(serde_json::from_slice(&message.payload).expect("a JSON reply"));
    }
    gathered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_answers_srv_ping_and_its_stats_count_the_commands_it_took() {
    let system = System::builder().workers(2).start().await;
    let api = system.api();
    let bus = system.bus().await;

    let pings = gather(&bus, "$SRV.PING.newsflow-worker", 2, Duration::from_secs(5)).await;
    let mut workers: Vec<String> = pings
        .iter()
        .map(|p| {
            assert_eq!(p["name"], "newsflow-worker", "{p}");
            assert_eq!(p["type"], "io.nats.micro.v1.ping_response", "{p}");
            p["metadata"]["worker_id"]
                .as_str()
                .expect("worker_id")
                .to_owned()
        })
        .collect();
    workers.sort();
    assert_eq!(workers, ["worker-1", "worker-2"], "{pings:?}");

    // The contract's command subjects are unchanged: a create is started by one worker.
    api.create_job_ok(
        &json!({"id": "discovered", "params": {"q": "bitcoin"}, "interval_secs": 60}),
    )
    .await;
    let (status, _) = api.post_empty("/jobs/discovered/stop").await;
    assert_eq!(status, StatusCode::OK);

    // async-nats counts a request once its reply is published, so the stop's ack can reach
    // data-streams (and its 200 the test) a moment before the worker's stats count it.
    let counted = |stats: &[Json], name: &str| -> u64 {
        stats
            .iter()
            .flat_map(|worker| worker["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|endpoint| endpoint["name"] == name)
            .map(|endpoint| endpoint["num_requests"].as_u64().unwrap_or(0))
            .sum()
    };
    let stats_now = || {
        gather(
            &bus,
            "$SRV.STATS.newsflow-worker",
            2,
            Duration::from_secs(5),
        )
    };
    let settled = poll_until(Duration::from_secs(10), || async {
        let stats = stats_now().await;
        (stats.len() == 2 && counted(&stats, "stop") >= 1).then_some(stats)
    })
    .await;
    // Unsettled, the assertions below say what the stats lack.
    let stats = match settled {
        Some(stats) => stats,
        None => stats_now().await,
    };
    assert_eq!(stats.len(), 2, "{stats:?}");
    let mut starts = 0;
    let mut stops = 0;
    for worker in &stats {
        assert_eq!(
            worker["type"], "io.nats.micro.v1.stats_response",
            "{worker}"
        );
        let endpoints = worker["endpoints"].as_array().expect("endpoints");
        let start = endpoints
            .iter()
            .find(|e| e["name"] == "start")
            .expect("a start endpoint");
        assert_eq!(start["subject"], "news.ctl.start", "{worker}");
        assert_eq!(start["queue_group"], "workers", "{worker}");
        starts += start["num_requests"].as_u64().unwrap_or(0);
        let start_here = endpoints
            .iter()
            .find(|e| e["name"] == "start_here")
            .expect("an addressed start endpoint");
        starts += start_here["num_requests"].as_u64().unwrap_or(0);
        let stop = endpoints
            .iter()
            .find(|e| e["name"] == "stop")
            .expect("a stop endpoint");
        let id = pings
            .iter()
            .find(|p| p["id"] == worker["id"])
            .and_then(|p| p["metadata"]["worker_id"].as_str())
            .expect("the stats of a worker that answered the ping");
        assert_eq!(stop["queue_group"], id, "{worker}");
        assert_eq!(
            stop["subject"],
            format!("news.ctl.worker.{id}.stop"),
            "{worker}"
        );
        stops += stop["num_requests"].as_u64().unwrap_or(0);
    }
    assert_eq!(
        starts, 1,
        "one worker took the start (addressed to the least loaded, or from the queue group): {stats:?}"
    );
    assert!(stops >= 1, "the stop went to the owner: {stats:?}");

    let info = gather(&bus, "$SRV.INFO.newsflow-worker", 2, Duration::from_secs(5)).await;
    assert_eq!(info.len(), 2, "{info:?}");
    for worker in &info {
        let mut names: Vec<&str> = worker["endpoints"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["name"].as_str()).collect())
            .unwrap_or_default();
        names.sort_unstable();
        assert_eq!(names, ["jobs", "start", "start_here", "stop"], "{worker}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_requests_are_each_counted_once_by_route_and_status() {
    let system = System::builder().start().await;
    let api = system.api();
    let ds = api.base().trim_start_matches("http://").to_owned();
    api.create_job_ok(&json!({"id": "counted", "params": {"q": "bitcoin"}, "interval_secs": 60}))
        .await;
    let route = [("route", "/jobs/:id"), ("method", "GET")];
    let before = Metrics::scrape(&ds).await;

    let requests: Vec<_> = (0..100)
        .map(|i| {
            let api = api.clone();
            // Half for a job that exists, half for one that does not: two statuses, one route.
            let path = if i % 2 == 0 {
                "/jobs/counted"
            } else {
                "/jobs/absent"
            };
            tokio::spawn(async move { api.get(path).await.0 })
        })
        .collect();
    for request in requests {
        request.await.expect("a request task");
    }

    let after = Metrics::scrape(&ds).await;
    let counted = |m: &Metrics, status: &str| {
        let mut labels = route.to_vec();
        labels.push(("status", status));
        m.value("newsflow_http_requests_total", &labels)
    };
    assert_eq!(counted(&after, "200") - counted(&before, "200"), 50.0);
    assert_eq!(counted(&after, "404") - counted(&before, "404"), 50.0);
    assert_eq!(
        after.observations("newsflow_http_request_duration_seconds", &route)
            - before.observations("newsflow_http_request_duration_seconds", &route),
        100.0
    );
}

/// Runs the worker with `args` until it exits (within 5 s) and returns its status and stderr.
async fn worker_exit(scratch: &newsflow_tests::Scratch, args: &[&str]) -> (Option<i32>, String) {
    use newsflow_tests::bins::{binary, Program};
    let mut proc = newsflow_tests::Proc::spawn(
        newsflow_tests::Spec::new("worker", binary(Program::Worker), scratch.path())
            .args(args.iter().copied())
            .env("NO_COLOR", "1"),
    )
    .await;
    let status = proc
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("the worker {args:?} did not exit\n{}", proc.log_tails(20)));
    (status.code(), proc.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_addr_that_is_not_an_address_exits_2_and_a_taken_one_exits_1_naming_it() {
    let scratch = newsflow_tests::Scratch::new("metrics-addr");
    let (code, stderr) = worker_exit(&scratch, &["--metrics-addr", "not-an-address"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--metrics-addr"), "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let addr = taken.local_addr().expect("its address").to_string();
    let (code, stderr) = worker_exit(
        &scratch,
        &["--metrics-addr", &addr, "--nats-url", "nats://127.0.0.1:1"],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}
