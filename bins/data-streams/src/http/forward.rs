//! Job changes on a read replica: every request that changes jobs (`POST /jobs`,
//! `PATCH`/`DELETE /jobs/{id}`, `POST /jobs/{id}/start|stop`) is run by the instance that
//! controls jobs. A replica forwards it over NATS request-reply on `news.ctl.api` (method,
//! path and query, `Content-Type`, `Authorization` and the body in; status, the headers that
//! matter and the body out), and the controller runs it through its own router. With no
//! controller to answer (during a takeover, which takes about one lease life) the replica
//! keeps asking for up to two lease lives, then refuses with 503 `no_controller`.
//!
//! On the controller, such a request is answered only once its job changes are in the jobs
//! bucket (503 `not_replicated` if NATS does not take them within a lease life).
//!
//! Nothing here logs a header: `Authorization` travels in the NATS message's headers only.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::error::{AppError, BodyLimit};
use super::AppState;

/// The forwarded request's method.
const METHOD: &str = "Newsflow-Method";
/// The forwarded request's path and query.
const PATH: &str = "Newsflow-Path";
/// The answer's status code.
const STATUS: &str = "Newsflow-Status";
/// Request headers a forwarded request carries.
const REQUEST_HEADERS: [HeaderName; 3] =
    [header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT];
/// Response headers a forwarded answer carries back.
const RESPONSE_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
    header::ETAG,
    header::CACHE_CONTROL,
];

/// How long forwarding waits.
#[derive(Debug, Clone, Copy)]
pub struct ForwardTiming {
    /// How long a replica keeps asking while no controller answers (two lease lives).
    pub find_controller_within: Duration,
    /// How long a forwarded request may take (its commands to workers included).
    pub answer_within: Duration,
    /// How long the controller waits for a request's changes to reach the jobs bucket.
    pub publish_within: Duration,
}

impl ForwardTiming {
    /// The timing for a lease of `life` and commands of `command_timeout`.
    pub fn new(life: Duration, command_timeout: Duration) -> Self {
        Self {
            find_controller_within: life * 2,
            answer_within: command_timeout * 2 + life + Duration::from_secs(2),
            publish_within: life,
        }
    }
}

static TIMING: OnceLock<ForwardTiming> = OnceLock::new();

/// Sets the timing (once, at start-up; defaults to a 3 s lease and 2 s commands).
pub fn set_timing(timing: ForwardTiming) {
    let _ = TIMING.set(timing);
}

fn timing() -> ForwardTiming {
    *TIMING.get_or_init(|| ForwardTiming::new(Duration::from_secs(3), Duration::from_secs(2)))
}

/// Marks a request that came over NATS: it is never forwarded again.
#[derive(Debug, Clone, Copy)]
struct Forwarded;

/// Whether a request changes jobs, and so must run on the controller.
pub fn changes_jobs(method: &Method, path: &str) -> bool {
    // Every request asks: reads leave at once, without splitting their path.
    if !matches!(*method, Method::POST | Method::PATCH | Method::DELETE) {
        return false;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["jobs"] => method == Method::POST,
        ["jobs", id] => !id.is_empty() && (method == Method::PATCH || method == Method::DELETE),
        ["jobs", id, "start" | "stop"] => !id.is_empty() && method == Method::POST,
        _ => false,
    }
}

/// The last step of the guard layer: runs a job change here when this instance controls jobs
/// (and waits for it to be published), forwards it otherwise; lets every other request through.
pub async fn forward(state: &AppState, request: Request, next: Next) -> Response {
    if !changes_jobs(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let timing = timing();
    let forwarded = request.extensions().get::<Forwarded>().is_some();
    if state.shared.role.controls() {
        return run_here(state, request, next, timing).await;
    }
    if forwarded {
        return AppError::NoController(
            "this instance gave up control while the request was on its way; retry".to_owned(),
        )
        .into_response();
    }
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(usize::MAX, |l| l.0);
    let (parts, body) = request.into_parts();
    let body = match super::error::read_capped(body, limit).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let deadline = tokio::time::Instant::now() + timing.find_controller_within;
    loop {
        if state.shared.role.controls() {
            let request = Request::from_parts(parts, Body::from(body));
            return run_here(state, request, next, timing).await;
        }
        match ask_controller(state, &parts, body.clone(), timing).await {
            Ok(response) => return response,
            Err(Asked::NoController) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(Asked::NoController) => {
                return AppError::NoController(
                    "no instance controls jobs right now (NATS unreachable, or a takeover in progress); retry in a few seconds".to_owned(),
                )
                .into_response()
            }
            Err(Asked::TimedOut) => return AppError::ControllerTimeout.into_response(),
        }
    }
}

async fn run_here(
    state: &AppState,
    request: Request,
    next: Next,
    timing: ForwardTiming,
) -> Response {
    let response = next.run(request).await;
    let changes = state.shared.store.job_changes();
    if changes.published(timing.publish_within).await {
        return response;
    }
    tracing::warn!("a job change was made but could not be published to the jobs bucket in time");
    AppError::NotReplicated.into_response()
}

enum Asked {
    NoController,
    TimedOut,
}

async fn ask_controller(
    state: &AppState,
    parts: &axum::http::request::Parts,
    body: Bytes,
    timing: ForwardTiming,
) -> Result<Response, Asked> {
    let Some(client) = state.shared.nats.get() else {
        return Err(Asked::NoController);
    };
    if !state.shared.nats_connected() {
        return Err(Asked::NoController);
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(METHOD, parts.method.as_str());
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    headers.insert(PATH, path.as_str());
    for name in &REQUEST_HEADERS {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            headers.insert(name.as_str(), value);
        }
    }
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(body)
        .timeout(Some(timing.answer_within));
    match client
        .send_request(newsflow_nats::subjects::CONTROL_API, request)
        .await
    {
        Ok(message) => Ok(answer_of(&message)),
        Err(error) => match error.kind() {
            async_nats::client::RequestErrorKind::TimedOut => Err(Asked::TimedOut),
            _ => Err(Asked::NoController),
        },
    }
}

/// The HTTP answer a controller's reply carries.
fn answer_of(message: &async_nats::Message) -> Response {
    let headers = message.headers.as_ref();
    let status = headers
        .and_then(|h| h.get(STATUS))
        .and_then(|v| v.as_str().parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok());
    let Some(status) = status else {
        return AppError::Internal(anyhow::anyhow!(
            "the controller's answer to a forwarded request has no status"
        ))
        .into_response();
    };
    let mut response = Response::new(Body::from(message.payload.clone()));
    *response.status_mut() = status;
    if let Some(headers) = headers {
        for name in &RESPONSE_HEADERS {
            if let Some(value) = headers
                .get(name.as_str())
                .and_then(|v| HeaderValue::from_str(v.as_str()).ok())
            {
                response.headers_mut().insert(name.clone(), value);
            }
        }
    }
    response
}

/// Answers forwarded requests through `router` until `stop` (run by the controller only).
pub async fn answer(router: axum::Router, client: async_nats::Client, stop: CancellationToken) {
    let mut requests = match client.subscribe(newsflow_nats::subjects::CONTROL_API).await {
        Ok(requests) => requests,
        Err(error) => {
            tracing::error!(%error, "cannot subscribe to forwarded job requests");
            return;
        }
    };
    let tasks = TaskTracker::new();
    let router = Arc::new(router);
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = requests.next() => match message { Some(m) => m, None => break },
        };
        let (router, client) = (router.clone(), client.clone());
        tasks.spawn(async move {
            let Some(reply) = message.reply.clone() else {
                return;
            };
            let response = run_forwarded(&router, &message).await;
            if let Err(error) = client
                .publish_with_headers(reply, response.0, response.1)
                .await
            {
                tracing::warn!(%error, "could not answer a forwarded job request");
            }
        });
    }
    let _ = requests.unsubscribe().await;
    tasks.close();
    tasks.wait().await;
}

async fn run_forwarded(
    router: &axum::Router,
    message: &async_nats::Message,
) -> (async_nats::HeaderMap, Bytes) {
    let response = match forwarded_request(message) {
        Ok(request) => match (*router).clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(error) => error.into_response(),
    };
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(STATUS, parts.status.as_u16().to_string().as_str());
    for name in &RESPONSE_HEADERS {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            headers.insert(name.as_str(), value);
        }
    }
    (headers, body)
}

fn forwarded_request(message: &async_nats::Message) -> Result<Request, AppError> {
    let bad = || AppError::BadRequest {
        code: "bad_request",
        message: "a forwarded request without its method or path".to_owned(),
    };
    let headers = message.headers.as_ref().ok_or_else(bad)?;
    let method = headers
        .get(METHOD)
        .and_then(|m| Method::from_bytes(m.as_str().as_bytes()).ok())
        .ok_or_else(bad)?;
    let path = headers.get(PATH).ok_or_else(bad)?;
    let mut request = Request::builder()
        .method(method)
        .uri(path.as_str())
        .body(Body::from(message.payload.clone()))
        .map_err(|_| bad())?;
    for name in &REQUEST_HEADERS {
        if let Some(value) = headers
            .get(name.as_str())
            .and_then(|v| HeaderValue::from_str(v.as_str()).ok())
        {
            request.headers_mut().insert(name.clone(), value);
        }
    }
    request.extensions_mut().insert(Forwarded);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_routes_that_change_jobs_are_forwarded() {
        for (method, path) in [
            (Method::POST, "/jobs"),
            (Method::PATCH, "/jobs/a"),
            (Method::DELETE, "/jobs/a"),
            (Method::POST, "/jobs/a/start"),
            (Method::POST, "/jobs/a/stop"),
        ] {
            assert!(changes_jobs(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, "/jobs"),
            (Method::GET, "/jobs/a"),
            (Method::POST, "/jobs/a/pipeline/preview"),
            (Method::PATCH, "/jobs/"),
            (Method::POST, "/jobs/a/articles"),
            (Method::DELETE, "/articles"),
        ] {
            assert!(!changes_jobs(&method, path), "{method} {path}");
        }
    }
}
