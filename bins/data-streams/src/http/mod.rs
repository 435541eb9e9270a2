//! The HTTP API: routes, authentication, and the error shape for everything, including
//! requests that never reach a handler.
//!
//! # Layout
//! - [`error`]: `AppError` and the JSON body extractor.
//! - [`params`]: query parameters, checked against what a route accepts.
//! - [`jobs`]: create, list, read, start, stop, delete.
//! - [`events`]: the server-sent event streams, with `Last-Event-ID` replay.
//! - [`caching`]: `ETag`, `If-None-Match` and `Cache-Control` on stored-data reads.
//! - [`articles`]: latest complete batch, batches, one batch's articles, the feed.
//! - [`edit`]: `PATCH /jobs/{id}` (a JSON merge patch of the spec) and the pipeline preview.
//! - [`forward`]: job changes on a read replica, forwarded to the controlling instance.
//! - [`ops`]: health, readiness, metrics, dead letters, OpenAPI.
//! - [`quota`]: the shared NewsAPI request budgets and the `over_budget` warning.
//! - [`views`]: the JSON shapes.
//! - [`page`]: the web page at `/`, compiled into the binary.
//! - [`openapi`]: the generated OpenAPI document.
//! - [`serve`]: the HTTP/1 server with its connection bounds and header deadline.

pub mod articles;
pub mod caching;
pub mod edit;
pub mod error;
pub mod events;
pub mod forward;
pub mod jobs;
pub mod openapi;
pub mod ops;
pub mod page;
pub mod params;
pub mod quota;
pub mod serve;
pub mod views;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use subtle::ConstantTimeEq as _;

use crate::control::Control;
use crate::state::Shared;
use error::{AppError, BodyLimit};

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// Store, NATS, metrics, cache.
    pub shared: Arc<Shared>,
    /// Ownership.
    pub control: Arc<Control>,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let limit = state.shared.max_body_bytes;
    let routes = Router::new()
        .route("/jobs", post(jobs::create).get(jobs::list))
        .route(
            "/jobs/{id}",
            get(jobs::get).delete(jobs::delete).patch(edit::patch),
        )
        .route("/jobs/{id}/pipeline/preview", post(edit::preview))
        .route("/jobs/{id}/start", post(jobs::start))
        .route("/jobs/{id}/stop", post(jobs::stop))
        .route("/jobs/{id}/articles", get(articles::latest))
        .route("/jobs/{id}/batches", get(articles::batches))
        .route(
            "/jobs/{id}/batches/{batch_id}/articles",
            get(articles::of_batch),
        )
        .route("/jobs/{id}/events", get(events::of_job))
        .route("/events", get(events::all))
        .route("/articles", get(articles::feed))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/dead-letters", get(ops::dead_letters))
        .route("/quota", get(quota::quota))
        .route("/openapi.json", get(ops::openapi))
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::style))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // Two layers of our own on every request (each layer costs a boxed service clone and a
    // boxed future per request): `observe` outside, `guard` inside; the body limit settings
    // only add request extensions.
    routes
        .route_layer(middleware::from_fn(caching::conditional))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .with_state(state)
}

async fn not_found() -> AppError {
    AppError::NotFound {
        code: "route_not_found",
        message: "no such route; GET /openapi.json lists them".to_owned(),
    }
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// What every request passes before its handler, in one layer: the in-flight bound (the
/// operational routes are exempt, so a probe is answered under load), one `Authorization`
/// header at most, the bearer token on every route but `/healthz` when one is configured
/// (compared in constant time), a body announced larger than the limit refused before it
/// is sent, and a job change run where jobs are controlled ([`forward`]).
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let operational = matches!(path, "/healthz" | "/readyz" | "/metrics");
    let _slot = if operational {
        None
    } else {
        match state.shared.in_flight.try_acquire() {
            Ok(slot) => Some(slot),
            Err(_) => return AppError::Overloaded.into_response(),
        }
    };
    let headers = request.headers();
    let mut authorizations = headers.get_all(header::AUTHORIZATION).iter();
    let authorization = authorizations.next();
    if authorizations.next().is_some() {
        return AppError::BadRequest {
            code: "repeated_header",
            message: "send one Authorization header, not several".to_owned(),
        }
        .into_response();
    }
    if let Some(token) = &state.shared.api_token {
        if path != "/healthz" && !page::PATHS.contains(&path) {
            let given = authorization
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token)
                .unwrap_or("");
            if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
                return AppError::Unauthorized.into_response();
            }
        }
    }
    let limit = state.shared.max_body_bytes;
    if announced_length(headers).is_some_and(|length| length > limit as u64) {
        return refuse_announced_body(request, limit);
    }
    forward::forward(&state, request, next).await
}

/// Puts errors produced outside the handlers in the contract's shape ([`contract_errors`]),
/// then counts every answered request by route template (axum's [`MatchedPath`] written
/// `/jobs/:id`, `unmatched` for a path no route knows, so a scan of random paths cannot grow
/// the label set), method and final status, and times it. It is outside [`guard`], so
/// refusals by it count too.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| route_label(path.as_str()));
    let method = known_method(request.method());
    let response = contract_errors(next.run(request).await).await;
    state.shared.metrics.observe_request(
        route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// A route template as a label: `/jobs/{id}` is `/jobs/:id` (braces inside a label value are
/// valid Prometheus text, but line-oriented parsers, prometheus-parse among them, drop such
/// samples). Made once per template and kept (the router's templates are a fixed, small set),
/// so that labelling a request allocates nothing.
fn route_label(template: &str) -> &'static str {
    static LABELS: std::sync::LazyLock<std::sync::RwLock<HashMap<String, &'static str>>> =
        std::sync::LazyLock::new(Default::default);
    let read = LABELS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(label) = read.get(template) {
        return label;
    }
    drop(read);
    let mut write = LABELS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    write
        .entry(template.to_owned())
        .or_insert_with(|| Box::leak(template.replace('{', ":").replace('}', "").into_boxed_str()))
}

/// The method as a label: the standard ones by name, anything else as `other` (a client can
/// send any token as a method).
fn known_method(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

fn announced_length(headers: &header::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A 413 at once for a body announced too large. A client that asked `Expect: 100-continue`
/// never sends it; one that is already sending has it drained (within bounds) so that the
/// answer reaches it rather than a connection reset.
fn refuse_announced_body(request: Request, limit: usize) -> Response {
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue {
        tokio::spawn(error::drain(request.into_body().into_data_stream()));
    }
    AppError::PayloadTooLarge { limit }.into_response()
}

/// Errors produced outside the handlers (extractor rejections of path parameters, for one)
/// come back in the contract's shape too.
async fn contract_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !status.is_client_error() && !status.is_server_error() || is_json {
        return response;
    }
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit: 0 },
        StatusCode::NOT_FOUND => AppError::NotFound {
            code: "not_found",
            message: "not found".to_owned(),
        },
        StatusCode::METHOD_NOT_ALLOWED => AppError::MethodNotAllowed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType,
        s if s.is_server_error() => {
            AppError::Internal(anyhow::anyhow!("an unexpected {s} without a body"))
        }
        _ => {
            // axum's rejection text says what is wrong with the request (a path parameter
            // that is not UTF-8, for one) and holds nothing but the request's own words.
            let detail = axum::body::to_bytes(response.into_body(), 512)
                .await
                .map(|text| String::from_utf8_lossy(&text).trim().to_owned())
                .unwrap_or_default();
            AppError::BadRequest {
                code: "bad_request",
                message: if detail.is_empty() {
                    "the request is malformed".to_owned()
                } else {
                    format!("the request is malformed: {detail}")
                },
            }
        }
    };
    let mut replaced = error.into_response();
    *replaced.status_mut() = status;
    replaced
}
