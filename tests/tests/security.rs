//! Authentication and secrets: the API token on every route but `/healthz`; NATS with
//! least-privilege users (the example of `deploy/`), a token, TLS and mutual TLS; and no
//! secret (NewsAPI key, API token, NATS passwords) in any log, response, URL or stream message,
//! error paths included.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use newsflow_tests::bins::Program;
use newsflow_tests::contract::{assert_article, assert_error, assert_job};
use newsflow_tests::hostile::{
    contains, files_containing, permissions_config, raw_http, run_to_exit, spawn_data_streams,
    spawn_program, spawn_worker, stream_text, Canned, ScriptedApi, DS_NATS_USER, WORKER_NATS_USER,
};
use newsflow_tests::tls::tls_files;
use newsflow_tests::{poll_until, wait_for, Api, Proc, StatusCode, System};
use serde_json::{json, Value};

/// How long a batch may take to be fetched, published, consumed and promoted.
const BATCH_WITHIN: Duration = Duration::from_secs(30);

/// A Basic credential, base64 of `user:pass`.
const BASIC: &str = "Basic dXNlcjpwYXNz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_healthz_needs_the_bearer_token_and_says_so_in_the_error_shape() {
    let token = "tok-route-Wv3q9";
    let system = System::builder().api_token(token).start().await;
    let addr = system.data_streams().http_addr();
    let api = system.api();
    api.create_job_ok(&json!({"id":"guarded","params":{"q":"x"},"interval_secs":3600}))
        .await;
    let body = br#"{"id":"sneaky","params":{"q":"x"}}"#.to_vec();
    let requests: Vec<(&str, &str, Vec<u8>)> = vec![
        ("GET", "/jobs", Vec::new()),
        ("POST", "/jobs", body.clone()),
        ("GET", "/jobs/guarded", Vec::new()),
        ("POST", "/jobs/guarded/start", Vec::new()),
        ("POST", "/jobs/guarded/stop", Vec::new()),
        ("DELETE", "/jobs/guarded", Vec::new()),
        ("GET", "/jobs/guarded/articles", Vec::new()),
        ("GET", "/jobs/guarded/batches", Vec::new()),
        (
            "GET",
            "/jobs/guarded/batches/01JD0000000000000000000000/articles",
            Vec::new(),
        ),
        ("GET", "/articles", Vec::new()),
        ("GET", "/readyz", Vec::new()),
        ("GET", "/metrics", Vec::new()),
        ("GET", "/dead-letters", Vec::new()),
        ("GET", "/openapi.json", Vec::new()),
        // Streams never end, so they are only asked without the token (the events suite opens
        // them with it).
        ("GET", "/events", Vec::new()),
        ("GET", "/jobs/guarded/events", Vec::new()),
        // Without the token nothing else is revealed: no 404, 405, 400, 413 or 415.
        ("GET", "/no-such-route", Vec::new()),
        ("PUT", "/jobs", Vec::new()),
        ("GET", "/jobs?colour=red", Vec::new()),
        ("POST", "/jobs", b"{not json".to_vec()),
        ("POST", "/jobs", vec![b' '; 200 * 1024]),
    ];
    let wrong: Vec<Option<String>> = vec![
        None,
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer  {token}")),
        Some(format!("Bearer x{token}")),
        Some(format!("Basic {token}")),
        Some(format!("Token {token}")),
        Some(token.to_owned()),
        Some(BASIC.into()),
        Some(format!("Bearer {}", token.to_uppercase())),
    ];
    let mut refused = 0;
    for (method, path, body) in &requests {
        for header in &wrong {
            let mut head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}",
                body.len()
            );
            if let Some(header) = header {
                head.push_str(&format!("\r\nAuthorization: {header}"));
            }
            let response = raw_http(&addr, &head, body).await;
            let what = format!("{method} {path} with {header:?}");
            assert_eq!(response.status, 401, "{what}: {}", response.body);
            assert_error(&response.body, "unauthorized");
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer"),
                "{what}"
            );
            assert!(
                !response.body.to_string().contains(token),
                "{what}: the answer echoes the token: {}",
                response.body
            );
            refused += 1;
        }
    }
    // The token in a query string or another header does not count.
    for (head, what) in [
        (
            format!("GET /jobs?access_token={token} HTTP/1.1\r\nHost: {addr}"),
            "query",
        ),
        (
            format!("GET /jobs HTTP/1.1\r\nHost: {addr}\r\nX-Api-Token: {token}"),
            "other header",
        ),
        (
            format!("GET /jobs HTTP/1.1\r\nHost: {addr}\r\nCookie: token={token}"),
            "cookie",
        ),
    ] {
        let response = raw_http(&addr, &head, b"").await;
        assert_eq!(response.status, 401, "{what}: {}", response.body);
        refused += 1;
    }
    // Liveness is open, with or without a header.
    for header in &wrong {
        let mut head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}");
        if let Some(header) = header {
            head.push_str(&format!("\r\nAuthorization: {header}"));
        }
        let response = raw_http(&addr, &head, b"").await;
        assert_eq!(response.status, 200, "GET /healthz with {header:?}");
    }
    // Nothing refused changed anything; with the token every route answers.
    let job = api.job("guarded").await;
    assert_job(&job);
    assert_eq!(job["state"], "running", "{job}");
    let (status, list) = api.get("/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1), "{list}");
    for (method, path, body) in requests.iter().take(14) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nAuthorization: Bearer {token}",
            body.len()
        );
        let response = raw_http(&addr, &head, body).await;
        assert!(
            response.status != 401 && response.status < 500,
            "{method} {path} with the token: {} {}",
            response.status,
            response.body
        );
    }
    eprintln!("unauthenticated requests refused: {refused}");
}

/// Events of a NATS connection, as text.
type Events = Arc<Mutex<Vec<String>>>;

/// Connects as `user` and records the connection's events (permission violations among
/// them).
async fn connect_as(url: &str, user: &str, password: &str) -> (async_nats::Client, Events) {
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .event_callback(move |event| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(event.to_string());
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting as {user}: {e}"));
    (client, events)
}

/// Waits for a permissions violation naming `subject`.
async fn assert_violation(events: &Events, kind: &str, subject: &str) {
    let needle = format!("permissions violation for {kind} to \"{subject}\"").to_lowercase();
    let seen = || events.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let found = poll_until(Duration::from_secs(5), || async {
        seen()
            .iter()
            .any(|e| e.to_lowercase().contains(&needle))
            .then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "no {needle:?} within 5s; the connection's events: {:#?}",
        seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_users_run_a_batch_end_to_end_and_the_worker_is_refused_the_rest() {
    let (ds_password, worker_password) = ("ds-pw-Kq27", "worker-pw-Lm48");
    let mut system = System::builder()
        .nats_config(&permissions_config(ds_password, worker_password))
        .data_streams_args(["--nats-user", DS_NATS_USER, "--nats-password", ds_password])
        .worker_args([
            "--nats-user",
            WORKER_NATS_USER,
            "--nats-password",
            worker_password,
            // The shared request budget and the job plans live in buckets the example grants.
            "--request-budget",
            "100",
            "--budget-window-secs",
            "3600",
        ])
        .workers(1)
        .start()
        .await;
    let api = system.api();
    let url = system.nats_url();

    // End to end: command, fetch, publish, consume, promote; then stop and start again.
    let job = api
        .create_job_ok(
            &json!({"id":"least","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":10}),
        )
        .await;
    assert_eq!(
        job["worker"]["id"], "worker-1",
        "the start command was answered: {job}"
    );
    let page = api.wait_for_latest("least", None, BATCH_WITHIN).await;
    assert_eq!(page["batch"]["status"], "complete", "{page}");
    assert_eq!(page["articles"].as_array().map(Vec::len), Some(10));
    for article in page["articles"].as_array().into_iter().flatten() {
        assert_article(article);
    }
    let quota = poll_until(BATCH_WITHIN, || async {
        let (status, quota) = api.get("/quota").await;
        (status == StatusCode::OK && quota["keys"][0]["used"].as_u64() >= Some(1)).then_some(quota)
    })
    .await
    .expect("the request ledger is readable under these permissions");
    assert_eq!(quota["keys"][0]["budget"], 100, "{quota}");
    let planned = poll_until(BATCH_WITHIN, || async {
        let job = api.job("least").await;
        job["next_run_at"].is_string().then_some(job)
    })
    .await;
    assert!(
        planned.is_some(),
        "the job's plan is readable under these permissions"
    );
    let (status, stopped) = api.post_empty("/jobs/least/stop").await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert!(
        stopped["worker"].is_null(),
        "the owner acknowledged the stop: {stopped}"
    );
    let (status, started) = api.post_empty("/jobs/least/start").await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["worker"]["id"], "worker-1", "{started}");

    // The worker user may not command workers, touch the stream's configuration, consume
    // it, or read what is published.
    let (worker, events) = connect_as(&url, WORKER_NATS_USER, worker_password).await;
    let forged = json!({"job":{"id":"forged","endpoint":"everything","params":{"q":"x"},"interval_secs":1,"max_pages":1,"page_size":1}});
    let denied_publishes = [
        "news.ctl.start",
        "news.ctl.worker.worker-1.stop",
        "$JS.API.STREAM.DELETE.NEWS",
        "$JS.API.STREAM.PURGE.NEWS",
        "$JS.API.STREAM.UPDATE.OTHER",
        "$JS.API.CONSUMER.CREATE.NEWS",
        "$JS.API.CONSUMER.DELETE.NEWS.data-streams",
        "$JS.API.CONSUMER.MSG.NEXT.NEWS.data-streams",
        "$JS.API.STREAM.MSG.GET.NEWS",
    ];
    for subject in denied_publishes {
        worker
            .publish(subject, forged.to_string().into())
            .await
            .expect("the client sends it");
        worker.flush().await.expect("flushes");
        assert_violation(&events, "publish", subject).await;
    }
    let denied_subscriptions = [
        "news.articles.>",
        "news.batches.>",
        "news.ctl.heartbeat",
        "$JS.ACK.>",
        "news.>",
    ];
    for subject in denied_subscriptions {
        let _subscription = worker
            .subscribe(subject)
            .await
            .expect("the client sends it");
        worker.flush().await.expect("flushes");
        assert_violation(&events, "subscription", subject).await;
    }
    // data-streams' user may not forge data either.
    let (ds, ds_events) = connect_as(&url, DS_NATS_USER, ds_password).await;
    let ds_denied = [
        "news.articles.least.01JD0000000000000000000000",
        "news.batches.least.01JD0000000000000000000000",
        "news.ctl.heartbeat",
    ];
    for subject in ds_denied {
        ds.publish(subject, "{}".into())
            .await
            .expect("the client sends it");
        ds.flush().await.expect("flushes");
        assert_violation(&ds_events, "publish", subject).await;
    }
    // Anonymous connections are refused outright.
    assert!(
        anonymous_is_refused(&url).await,
        "an anonymous connection is refused"
    );

    // Nothing forged took effect; the broker logged every refusal.
    let job = api.job("least").await;
    assert_eq!(job["worker"]["id"], "worker-1", "{job}");
    let (status, _) = api.get("/jobs/forged").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(api.job("least").await["state"] == "running");
    let broker_log = system.nats().proc().map(Proc::logs).unwrap_or_default();
    assert!(
        broker_log
            .lines()
            .any(|line| line.contains("Violation") && line.contains("\"news.ctl.start\"")),
        "the broker logs the refusal:\n{broker_log}"
    );
    // Every refusal the broker logged is one of the forgeries above: the programs themselves
    // never needed more than the example grants.
    let forged_subjects: Vec<String> = denied_publishes
        .iter()
        .chain(denied_subscriptions.iter())
        .chain(ds_denied.iter())
        .map(|s| format!("\"{s}\""))
        .collect();
    for line in broker_log.lines().filter(|l| l.contains("Violation")) {
        assert!(
            forged_subjects.iter().any(|s| line.contains(s.as_str())),
            "a program was refused something it needs: {line}"
        );
    }
    let ds_log = system.data_streams().logs();
    let worker_log = system.worker("worker-1").logs();
    for (name, log) in [("data-streams", &ds_log), ("worker", &worker_log)] {
        assert!(
            !log.to_lowercase().contains("permissions violation"),
            "{name} needed a permission the example does not grant:\n{log}"
        );
    }
}

async fn anonymous_is_refused(url: &str) -> bool {
    match tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(url),
    )
    .await
    {
        Ok(Ok(client)) => client.flush().await.is_err(),
        Ok(Err(_)) | Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_authenticated_nats_runs_a_batch_and_a_wrong_token_is_retried_without_leaking() {
    let token = "nats-token-Hd52";
    let config = format!("authorization {{ token: {} }}", json!(token));
    let system = System::builder()
        .nats_config(&config)
        .data_streams_args(["--nats-token", token])
        .worker_args(["--nats-token", token])
        .workers(1)
        .start()
        .await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"tok","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;
    let page = api.wait_for_latest("tok", None, BATCH_WITHIN).await;
    assert_eq!(page["batch"]["status"], "complete", "{page}");

    let wrong = "wrong-token-Pq61";
    let args = vec![
        "--worker-id".to_owned(),
        "intruder".to_owned(),
        "--nats-url".to_owned(),
        system.nats_url(),
        "--newsapi-url".to_owned(),
        system.mock().base().to_owned(),
    ];
    let intruder = spawn_program(
        Program::Worker,
        system.dir(),
        "intruder",
        &args,
        &[("NATS_TOKEN", wrong)],
        None,
    )
    .await;
    wait_for(
        Duration::from_secs(15),
        "the intruder to report that it cannot reach NATS",
        || async {
            intruder
                .logs()
                .contains("cannot reach NATS; retrying")
                .then_some(())
        },
    )
    .await;
    let logs = intruder.logs();
    assert!(!logs.contains("worker ready"), "{logs}");
    for secret in [wrong, token] {
        assert!(!logs.contains(secret), "the worker logs a token:\n{logs}");
    }
    assert!(!system.data_streams().logs().contains(token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_runs_a_batch_and_a_client_without_the_ca_is_refused() {
    let probe = newsflow_tests::Scratch::new("tls-files");
    let tls = tls_files(probe.path());
    let config = format!(
        "tls {{ cert_file: {}, key_file: {} }}",
        json!(tls.server_cert.display().to_string()),
        json!(tls.server_key.display().to_string())
    );
    let ca = tls.ca.display().to_string();
    let system = System::builder()
        .nats_config(&config)
        .data_streams_args(["--nats-tls-ca", ca.as_str()])
        .worker_args(["--nats-tls-ca", ca.as_str()])
        .workers(1)
        .start()
        .await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"tls","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;
    let page = api.wait_for_latest("tls", None, BATCH_WITHIN).await;
    assert_eq!(page["batch"]["status"], "complete", "{page}");

    // Without the CA the server's certificate is not trusted.
    let args = vec![
        "--worker-id".to_owned(),
        "untrusting".to_owned(),
        "--nats-url".to_owned(),
        system.nats_url(),
    ];
    let outsider = spawn_program(
        Program::Worker,
        system.dir(),
        "untrusting",
        &args,
        &[],
        None,
    )
    .await;
    wait_for(
        Duration::from_secs(15),
        "a worker without the CA to fail to connect",
        || async {
            outsider
                .logs()
                .contains("cannot reach NATS; retrying")
                .then_some(())
        },
    )
    .await;
    assert!(!outsider.logs().contains("worker ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_runs_a_batch_with_client_certificates() {
    let probe = newsflow_tests::Scratch::new("mtls-files");
    let tls = tls_files(probe.path());
    let path = |p: &std::path::Path| p.display().to_string();
    let config = format!(
        "tls {{ cert_file: {}, key_file: {}, ca_file: {}, verify: true }}",
        json!(path(&tls.server_cert)),
        json!(path(&tls.server_key)),
        json!(path(&tls.ca))
    );
    let flags = [
        "--nats-tls-ca".to_owned(),
        path(&tls.ca),
        "--nats-tls-cert".to_owned(),
        path(&tls.client_cert),
        "--nats-tls-key".to_owned(),
        path(&tls.client_key),
    ];
    let system = System::builder()
        .nats_config(&config)
        .data_streams_args(flags.clone())
        .worker_args(flags.clone())
        .workers(1)
        .start()
        .await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"mtls","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;
    let page = api.wait_for_latest("mtls", None, BATCH_WITHIN).await;
    assert_eq!(page["batch"]["status"], "complete", "{page}");

    // The CA alone is not enough: the server asks for a client certificate.
    let args = vec![
        "--worker-id".to_owned(),
        "certless".to_owned(),
        "--nats-url".to_owned(),
        system.nats_url(),
        "--nats-tls-ca".to_owned(),
        path(&tls.ca),
    ];
    let certless = spawn_program(Program::Worker, system.dir(), "certless", &args, &[], None).await;
    wait_for(
        Duration::from_secs(15),
        "a worker without a client certificate to fail to connect",
        || async {
            certless
                .logs()
                .contains("cannot reach NATS; retrying")
                .then_some(())
        },
    )
    .await;
    assert!(!certless.logs().contains("worker ready"));
}

/// Every response the secret test saw, as text.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn get(&mut self, api: &Api, path: &str) -> Value {
        let (status, body) = api.get(path).await;
        self.0.push(format!("GET {path} {status} {body}"));
        body
    }

    async fn text(&mut self, api: &Api, path: &str) {
        let (status, body) = api.get_text(path).await;
        self.0.push(format!("GET {path} {status} {body}"));
    }

    async fn post(&mut self, api: &Api, path: &str, body: &Value) -> (StatusCode, Value) {
        let (status, answer) = api.post(path, body).await;
        self.0.push(format!("POST {path} {status} {answer}"));
        (status, answer)
    }
}

/// Creates job `id` for `q` and waits until its first run is recorded (a complete batch or
/// a failure); returns the job.
async fn run_once(api: &Api, seen: &mut Seen, id: &str, q: &str) -> Value {
    let (status, job) = seen
        .post(
            api,
            "/jobs",
            &json!({"id":id,"params":{"q":q},"interval_secs":3600,"page_size":5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = wait_for(BATCH_WITHIN, &format!("job {id}'s first run"), || async {
        let job = api.job(id).await;
        (!job["latest_batch"].is_null() || !job["last_error"].is_null()).then_some(job)
    })
    .await;
    seen.get(api, &format!("/jobs/{id}")).await;
    seen.get(api, &format!("/jobs/{id}/batches")).await;
    seen.get(api, &format!("/jobs/{id}/articles")).await;
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_log_response_url_or_stream_message_even_on_error_paths() {
    let key = "nk-SECRET-7f3a9c";
    let token = "at-SECRET-4b8e1d";
    let ds_password = "np-SECRET-ds-2c6f";
    let worker_password = "np-SECRET-wk-9d0e";
    let reader_password = "reader-pw-5a1b";
    let secrets = [key, token, ds_password, worker_password];
    let users = format!(
        "authorization {{ users = [ {{user: ds, password: {}}}, {{user: worker, password: {}}}, {{user: reader, password: {}}} ] }}",
        json!(ds_password),
        json!(worker_password),
        json!(reader_password)
    );
    let system = System::builder()
        .nats_config(&users)
        .mock_args(["--api-key", key])
        .without_data_streams()
        .start()
        .await;
    let dir = system.dir().to_path_buf();
    let nats_url = system.nats_url();
    let trace = [("RUST_LOG", "trace")];

    // Secrets arrive by flag and by environment; everything logs at trace level.
    let ds_args = vec![
        "--nats-url".to_owned(),
        nats_url.clone(),
        "--nats-user".to_owned(),
        "ds".to_owned(),
    ];
    let mut data_streams = spawn_data_streams(
        &dir,
        &ds_args,
        &[
            trace[0],
            ("DS_API_TOKEN", token),
            ("NATS_PASSWORD", ds_password),
        ],
    )
    .await;
    let api = Api::new(&data_streams.http_addr()).with_token(token);
    api.wait_ready(Duration::from_secs(30)).await;
    let worker_args = |newsapi: &str| {
        vec![
            "--nats-url".to_owned(),
            nats_url.clone(),
            "--nats-user".to_owned(),
            "worker".to_owned(),
            "--nats-password".to_owned(),
            worker_password.to_owned(),
            "--newsapi-url".to_owned(),
            newsapi.to_owned(),
            "--fetch-retries".to_owned(),
            "1".to_owned(),
        ]
    };
    let mut seen = Seen::default();

    // Phase 1, the mock: a good run, a 500, then a 401.
    let mut worker = spawn_worker(
        &dir,
        "keeper-1",
        &worker_args(system.mock().base()),
        &[trace[0], ("NEWSAPI_KEY", key)],
    )
    .await;
    let calm = run_once(&api, &mut seen, "calm", "bitcoin").await;
    assert!(!calm["latest_batch"].is_null(), "the key works: {calm}");
    let mock = system.mock();
    mock.inject_fault(&json!({"kind":"server_error","times":2}))
        .await;
    let failed = run_once(&api, &mut seen, "upstream-500", "ethereum").await;
    assert_eq!(failed["last_error"]["code"], "upstream_error", "{failed}");
    mock.inject_fault(&json!({"kind":"key_invalid","times":1}))
        .await;
    let denied = run_once(&api, &mut seen, "upstream-401", "solana").await;
    assert_eq!(denied["last_error"]["code"], "api_key_invalid", "{denied}");
    assert!(worker.terminate().await.success());
    for id in ["calm", "upstream-500", "upstream-401"] {
        seen.post(&api, &format!("/jobs/{id}/stop"), &json!({}))
            .await;
    }

    // Phase 2, an upstream that echoes the key in every error message.
    let echo_key = key.to_owned();
    let scripted = ScriptedApi::start(move |request| {
        let sent = request.header("x-api-key").unwrap_or("none").to_owned();
        let q = request.target.split("q=").nth(1).unwrap_or("").split('&').next().unwrap_or("");
        let error = |status: u16, code: &str| {
            Canned::json(status, &json!({"status":"error","code":code,"message":format!("the key {sent} (expected {echo_key}) failed for {}", request.target)}))
        };
        match q {
            "echo500" => error(500, "unexpectedError"),
            "echo429" => error(429, "rateLimited"),
            "echo400" => error(400, "parameterInvalid"),
            _ => error(401, "apiKeyInvalid"),
        }
    })
    .await;
    let mut echoed = spawn_worker(
        &dir,
        "keeper-2",
        &worker_args(&scripted.base()),
        &[trace[0], ("NEWSAPI_KEY", key)],
    )
    .await;
    for (id, code) in [
        ("echo500", "upstream_error"),
        ("echo429", "rate_limited"),
        ("echo400", "parameter_invalid"),
        ("echo401", "api_key_invalid"),
    ] {
        let job = run_once(&api, &mut seen, id, id).await;
        assert_eq!(job["last_error"]["code"], code, "{job}");
        assert!(
            job["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("***")),
            "the echoed key is masked: {job}"
        );
    }
    let requests = scripted.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(
            request.header("x-api-key"),
            Some(key),
            "the key is sent as X-Api-Key"
        );
        assert!(
            !request.target.contains(key),
            "the key is never in a URL: {}",
            request.target
        );
    }
    // A job may not carry a key, and the refusal does not repeat it.
    let (status, refusal) = seen
        .post(
            &api,
            "/jobs",
            &json!({"id":"carrier","params":{"q":"x","apiKey":key}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refusal}");
    // Wrong tokens are refused without being repeated.
    for wrong in [format!("{token}x"), token[..token.len() - 1].to_owned()] {
        let (status, body) = Api::new(&data_streams.http_addr())
            .with_token(wrong)
            .get("/jobs")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        seen.0.push(body.to_string());
    }
    for path in ["/jobs", "/articles", "/dead-letters", "/readyz"] {
        seen.get(&api, path).await;
    }
    for path in ["/metrics", "/openapi.json"] {
        seen.text(&api, path).await;
    }
    assert!(echoed.terminate().await.success());

    // Everything the stream holds, payloads and headers.
    let (reader, _) = connect_as(&nats_url, "reader", reader_password).await;
    let (message_count, stream_text) = stream_text(&reader).await;
    assert!(
        message_count > 5,
        "the stream holds the runs: {message_count}"
    );
    assert!(
        stream_text.contains("***"),
        "the failed markers carry masked messages"
    );
    assert!(data_streams.terminate().await.success());

    // Help text shows no environment values.
    let mut help = String::new();
    for program in [Program::Worker, Program::DataStreams] {
        let (_, output) = run_to_exit(
            program,
            &dir,
            &["--help"],
            &[
                ("NEWSAPI_KEY", key),
                ("DS_API_TOKEN", token),
                ("NATS_PASSWORD", ds_password),
                ("NATS_TOKEN", worker_password),
            ],
        )
        .await;
        help.push_str(&output);
    }

    // The error paths ran and were logged, at trace level.
    let worker_logs = format!("{}{}", worker.logs(), echoed.logs());
    for expected in ["NewsAPI fetch failed; retrying", "TRACE", "DEBUG"] {
        assert!(
            worker_logs.contains(expected),
            "the workers logged {expected:?}"
        );
    }
    assert!(
        data_streams.logs().contains("TRACE"),
        "data-streams logged at trace level"
    );
    let is_broker_config =
        |path: &std::path::Path| path.file_name().is_some_and(|n| n == "nats-server.conf");
    let responses = seen.0.join("\n");
    let mut leaks = Vec::new();
    for secret in secrets {
        for (place, text) in [
            ("an HTTP response", &responses),
            ("a stream message", &stream_text),
            ("--help", &help),
        ] {
            if text.contains(secret) {
                leaks.push(format!("{secret} in {place}"));
            }
        }
        for file in files_containing(&dir, secret.as_bytes(), &is_broker_config) {
            leaks.push(format!("{secret} in {}", file.display()));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    // The search itself works: the broker's configuration does hold the passwords.
    let config = std::fs::read(dir.join("nats-server.conf")).expect("the broker's configuration");
    assert!(contains(&config, ds_password.as_bytes()));
    let (files, bytes) = files_and_bytes(&dir);
    eprintln!(
        "searched {} responses, {message_count} stream messages and {files} files ({bytes} bytes) for {} secrets",
        seen.0.len(),
        secrets.len()
    );
}

/// How many files, and bytes, `dir` holds (recursively).
fn files_and_bytes(dir: &std::path::Path) -> (usize, u64) {
    let mut pending = vec![dir.to_path_buf()];
    let (mut files, mut bytes) = (0, 0);
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files += 1;
                bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (files, bytes)
}
