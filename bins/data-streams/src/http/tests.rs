//! The routes whose logic needs no broker, driven through the router with `oneshot`: a
//! temporary sled store, no NATS (so no start or stop command is sent), and batches written
//! straight into the store through ingest.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use newsflow_core::{BatchId, JobId, Secret};
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt as _;

use super::{router, AppState};
use crate::control::{Control, ControlSettings};
use crate::state::{Shared, SharedSettings};
use crate::store::{testing, Ingest, Store};

const TOKEN: &str = "router-test-token";
const BODY_LIMIT: usize = 4096;

/// A router over a fresh store; the store stays open while the test holds it.
struct Api {
    router: Router,
    store: Store,
    _dir: TempDir,
}

/// What a request got back.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Checks the contract's error shape and returns the message.
    fn error(&self, status: StatusCode, code: &str) -> String {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        body["error"]["message"]
            .as_str()
            .expect("a message")
            .to_owned()
    }
}

impl Api {
    fn new(token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path()).expect("the store opens");
        // The ingest task is not running: a delete answers 503, which no test here needs.
        let (ingest, _) = tokio::sync::mpsc::channel(1);
        let shared = Arc::new(Shared::new(
            store.clone(),
            ingest,
            SharedSettings {
                api_token: token.map(Secret::new),
                max_body_bytes: BODY_LIMIT,
                max_in_flight: 16,
                default_keep_batches: newsflow_core::KeepBatches::DEFAULT,
                max_sse_clients: 4,
            },
        ));
        shared.role.control_alone();
        let control = Arc::new(Control::new(ControlSettings {
            worker_timeout: Duration::from_secs(15),
            reconcile_every: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            rebalance: false,
        }));
        Self {
            router: router(AppState { shared, control }),
            store,
            _dir: dir,
        }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body is readable");
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(
            request(Method::GET, uri)
                .body(Body::empty())
                .expect("a request"),
        )
        .await
    }

    async fn create(&self, body: &Value) -> Answer {
        self.send(
            request(Method::POST, "/jobs")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .expect("a request"),
        )
        .await
    }
}

fn request(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri)
}

/// Writes a complete batch of `count` articles as ingest would from the stream.
fn ingest_complete_batch(store: &Store, job: &JobId, count: u32) -> BatchId {
    let mut ingest = Ingest::new(store.clone()).expect("ingest starts");
    let batch = BatchId::generate();
    for seq in 0..count {
        testing::apply(&mut ingest, testing::article_message(job, batch, seq));
    }
    testing::apply(&mut ingest, testing::marker_message(job, batch, count));
    batch
}

#[tokio::test]
async fn creating_a_job_answers_201_with_the_job_and_a_taken_id_answers_409() {
    let api = Api::new(None);

    let created = api
        .create(&json!({"id":"btc","params":{"q":"bitcoin"},"interval_secs":60}))
        .await;

    assert_eq!(created.status, StatusCode::CREATED);
    let job = created.json();
    assert_eq!(job["id"], "btc");
    assert_eq!(job["endpoint"], "everything");
    assert_eq!(job["params"], json!({"q":"bitcoin"}));
    assert_eq!(job["interval_secs"], 60);
    assert_eq!(job["max_pages"], 1);
    assert_eq!(job["page_size"], 100);
    assert_eq!(job["state"], "running");
    assert_eq!(job["worker"], Value::Null, "no worker without NATS");
    assert_eq!(job["latest_batch"], Value::Null);
    assert_eq!(job["next_run_at"], Value::Null, "no worker has planned it");
    assert_eq!(job["consecutive_failures"], 0);
    assert_eq!(job["warnings"], json!([]), "no budget known without NATS");
    let mut without_warnings = job.clone();
    without_warnings
        .as_object_mut()
        .expect("an object")
        .remove("warnings");
    assert_eq!(api.get("/jobs/btc").await.json(), without_warnings);

    let again = api
        .create(&json!({"id":"btc","params":{"q":"ether"}}))
        .await;
    let message = again.error(StatusCode::CONFLICT, "job_exists");
    assert!(message.contains("btc"), "{message}");
}

#[tokio::test]
async fn an_invalid_value_is_a_422_naming_the_field() {
    let api = Api::new(None);

    let answer = api
        .create(&json!({"params":{"q":"bitcoin"},"interval_secs":0}))
        .await;

    let message = answer.error(StatusCode::UNPROCESSABLE_ENTITY, "out_of_range");
    assert!(message.contains("interval_secs"), "{message}");
}

#[tokio::test]
async fn malformed_json_is_a_400_and_a_body_that_is_not_json_a_415() {
    let api = Api::new(None);
    let send = |content_type: &'static str, body: &'static str| {
        request(Method::POST, "/jobs")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("a request")
    };

    let malformed = api
        .send(send("application/json", r#"{"params":{"q":"x"}"#))
        .await;
    malformed.error(StatusCode::BAD_REQUEST, "malformed_json");

    let text = api
        .send(send("text/plain", r#"{"params":{"q":"x"}}"#))
        .await;
    text.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
}

#[tokio::test]
async fn a_body_announced_larger_than_the_limit_is_a_413_before_it_is_read() {
    let api = Api::new(None);

    let answer = api
        .send(
            request(Method::POST, "/jobs")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, BODY_LIMIT + 1)
                .header(header::EXPECT, "100-continue")
                .body(Body::empty())
                .expect("a request"),
        )
        .await;

    let message = answer.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(message.contains(&BODY_LIMIT.to_string()), "{message}");
    assert_eq!(answer.headers[header::CONNECTION], "close");
}

#[tokio::test]
async fn two_authorization_headers_are_a_400() {
    let api = Api::new(Some(TOKEN));

    let answer = api
        .send(
            request(Method::GET, "/jobs")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .expect("a request"),
        )
        .await;

    answer.error(StatusCode::BAD_REQUEST, "repeated_header");
}

#[tokio::test]
async fn with_a_token_set_every_route_but_healthz_answers_401_without_it() {
    let api = Api::new(Some(TOKEN));
    let with = |authorization: &str| {
        request(Method::GET, "/jobs")
            .header(header::AUTHORIZATION, authorization)
            .body(Body::empty())
            .expect("a request")
    };

    for uri in ["/jobs", "/articles", "/metrics", "/openapi.json"] {
        let answer = api.get(uri).await;
        answer.error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer", "{uri}");
    }
    api.send(with("Bearer wrong"))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    // The page is open (it asks for the token); the data it reads is not.
    for uri in ["/", "/app.js", "/app.css"] {
        assert_eq!(api.get(uri).await.status, StatusCode::OK, "{uri}");
    }
    assert_eq!(
        api.send(with(&format!("bearer {TOKEN}"))).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_jobs_and_routes_are_404_and_a_wrong_method_is_405() {
    let api = Api::new(None);

    api.get("/jobs/nobody")
        .await
        .error(StatusCode::NOT_FOUND, "job_not_found");
    api.get("/jobs/nobody/articles")
        .await
        .error(StatusCode::NOT_FOUND, "job_not_found");
    api.get("/nowhere")
        .await
        .error(StatusCode::NOT_FOUND, "route_not_found");
    let put = api
        .send(
            request(Method::PUT, "/jobs")
                .body(Body::empty())
                .expect("a request"),
        )
        .await;
    put.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn jobs_are_listed_by_id_a_page_at_a_time_following_the_cursor() {
    let api = Api::new(None);
    for id in ["c", "a", "b"] {
        let created = api.create(&json!({"id":id,"params":{"q":id}})).await;
        assert_eq!(created.status, StatusCode::CREATED);
    }
    let ids = |page: &Value| -> Vec<String> {
        page["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|job| job["id"].as_str().expect("an id").to_owned())
            .collect()
    };

    let first = api.get("/jobs?limit=2").await;
    assert_eq!(first.status, StatusCode::OK);
    let first = first.json();
    assert_eq!(ids(&first), ["a", "b"]);
    let cursor = first["next_cursor"].as_str().expect("a next cursor");

    let second = api
        .get(&format!("/jobs?limit=2&cursor={cursor}"))
        .await
        .json();
    assert_eq!(ids(&second), ["c"]);
    assert_eq!(second["next_cursor"], Value::Null);

    api.get("/jobs?limit=2&limit=3")
        .await
        .error(StatusCode::BAD_REQUEST, "repeated_parameter");
    api.get("/jobs?cursor=%21%21")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_cursor");
}

#[tokio::test]
async fn the_latest_batch_has_an_etag_and_answers_304_to_if_none_match() {
    let api = Api::new(None);
    assert_eq!(
        api.create(&json!({"id":"btc","params":{"q":"bitcoin"}}))
            .await
            .status,
        StatusCode::CREATED
    );
    let before = api.get("/jobs/btc/articles").await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(
        before.body,
        r#"{"job_id":"btc","batch":null,"articles":[],"next_cursor":null}"#
    );
    let job = JobId::parse("btc").expect("valid");
    let batch = ingest_complete_batch(&api.store, &job, 3);

    let page = api.get("/jobs/btc/articles?limit=2").await;

    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers[header::CONTENT_TYPE], "application/json");
    let etag = page.headers[header::ETAG].clone();
    let body = page.json();
    assert_eq!(body["job_id"], "btc");
    assert_eq!(body["batch"]["id"], batch.to_string());
    assert_eq!(body["batch"]["status"], "complete");
    assert_eq!(body["batch"]["article_count"], 3);
    let titles: Vec<&str> = body["articles"]
        .as_array()
        .expect("articles")
        .iter()
        .map(|a| a["title"].as_str().expect("a title"))
        .collect();
    assert_eq!(titles, ["article 0", "article 1"]);
    let cursor = body["next_cursor"].as_str().expect("more to come");
    let cached = api.get("/jobs/btc/articles?limit=2").await;
    assert_eq!(cached.body, page.body, "the cached page is the same bytes");

    let not_modified = api
        .send(
            request(Method::GET, "/jobs/btc/articles?limit=2")
                .header(header::IF_NONE_MATCH, etag.clone())
                .body(Body::empty())
                .expect("a request"),
        )
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers[header::ETAG], etag);
    assert!(not_modified.body.is_empty());

    let rest = api
        .get(&format!("/jobs/btc/articles?limit=2&cursor={cursor}"))
        .await;
    assert_ne!(
        rest.headers[header::ETAG],
        etag,
        "another page, another tag"
    );
    let rest = rest.json();
    assert_eq!(rest["articles"][0]["title"], "article 2");
    assert_eq!(rest["next_cursor"], Value::Null);
}

fn security_of(doc: &Value) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            found.push((format!("{method} {path}"), operation["security"].clone()));
        }
    }
    found
}

#[tokio::test]
async fn the_openapi_document_declares_bearer_security_only_when_a_token_is_set() {
    let open = Api::new(None).get("/openapi.json").await;
    assert_eq!(open.status, StatusCode::OK);
    let open = open.json();
    assert_eq!(open["security"], Value::Null);
    assert_eq!(open["components"]["securitySchemes"], Value::Null);
    for (operation, security) in security_of(&open) {
        assert_eq!(security, Value::Null, "{operation} declares no security");
    }

    let api = Api::new(Some(TOKEN));
    let guarded = api
        .send(
            request(Method::GET, "/openapi.json")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .expect("a request"),
        )
        .await;
    assert_eq!(guarded.status, StatusCode::OK);
    let guarded = guarded.json();
    assert_eq!(
        guarded["components"]["securitySchemes"]["bearer"],
        json!({"type":"http","scheme":"bearer"})
    );
    let operations = security_of(&guarded);
    assert_eq!(operations.len(), 21, "every operation is checked");
    for (operation, security) in operations {
        let expected = if operation == "get /healthz" || operation == "get /" {
            json!([{}])
        } else {
            json!([{"bearer":[]}])
        };
        assert_eq!(security, expected, "{operation}");
    }
    assert_eq!(
        open["paths"],
        {
            let mut paths = guarded["paths"].clone();
            for item in paths.as_object_mut().expect("paths").values_mut() {
                for operation in item.as_object_mut().expect("an item").values_mut() {
                    operation
                        .as_object_mut()
                        .expect("an operation")
                        .remove("security");
                }
            }
            paths
        },
        "the two documents differ only in security"
    );
}
