//! The HTTP server: shared state, the router, and the `/v2/*` handlers that answer or misbehave.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tokio::time::Instant;

use crate::articles::{self, Article, ResultSet};
use crate::catalog::{self, SourceInfo};
use crate::control::{self, Stats};
use crate::faults::{FaultKind, FaultQueue};
use crate::protocol::{check_api_key, json_response, ApiError, Params};
use crate::query::{Endpoint, NewsQuery, SourcesQuery};
use crate::Config;

/// What a proxy in front of the API sends when the API is down.
const UNAVAILABLE_HTML: &str = "<html>\r\n<head><title>503 Service Temporarily Unavailable\
    </title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\
    \r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// Shared by every handler: the settings, the fault queue and the request counters.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    api_key: Option<String>,
    total_results: Option<u32>,
    max_results: u32,
    latency: Duration,
    seed: u64,
    rotate_every: Option<Duration>,
    dirty_every: Option<u32>,
    started: Instant,
    faults: Mutex<FaultQueue>,
    stats: Mutex<Stats>,
}

impl AppState {
    /// State for a server configured by `config`, with its initial faults queued.
    pub fn new(config: &Config) -> Self {
        Self {
            inner: Arc::new(Shared {
                api_key: config.api_key.clone(),
                total_results: config.total_results,
                max_results: config.max_results,
                latency: config.latency,
                seed: config.seed,
                rotate_every: config.rotate_every,
                dirty_every: config.dirty_every,
                started: Instant::now(),
                faults: Mutex::new(FaultQueue::new(config.faults.iter().copied())),
                stats: Mutex::new(Stats::default()),
            }),
        }
    }

    /// The fault queue; a panic elsewhere cannot leave it in a state worth refusing.
    pub(crate) fn faults(&self) -> MutexGuard<'_, FaultQueue> {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The request counters.
    pub(crate) fn stats(&self) -> MutexGuard<'_, Stats> {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// All routes: NewsAPI's `/v2/*`, the `/__mock/*` control API and `/healthz`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2/everything", get(everything))
        .route("/v2/top-headlines", get(top_headlines))
        .route("/v2/top-headlines/sources", get(sources))
        .route("/healthz", get(|| async { "ok" }))
        .merge(control::routes())
        .with_state(state)
}

/// Which `/v2/*` resource a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Articles(Endpoint),
    Sources,
}

async fn everything(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    serve(
        &state,
        Route::Articles(Endpoint::Everything),
        &uri,
        &headers,
    )
    .await
}

async fn top_headlines(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    serve(
        &state,
        Route::Articles(Endpoint::TopHeadlines),
        &uri,
        &headers,
    )
    .await
}

async fn sources(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    serve(&state, Route::Sources, &uri, &headers).await
}

/// Answers one `/v2/*` request, through the next queued fault if there is one, and counts it.
async fn serve(state: &AppState, route: Route, uri: &Uri, headers: &HeaderMap) -> Response {
    state.stats().arrived();
    if !state.inner.latency.is_zero() {
        tokio::time::sleep(state.inner.latency).await;
    }
    let fault = state.faults().take();
    let response = match fault {
        None => into_response(answer(state, route, uri, headers)),
        Some(kind) => misbehave(state, kind, route, uri, headers).await,
    };
    let status = match fault {
        Some(FaultKind::Drop) => "dropped".to_owned(),
        _ => response.status().as_u16().to_string(),
    };
    let path = uri.path();
    match fault {
        Some(kind) => tracing::info!(path, %status, fault = kind.name(), "answered with a fault"),
        None => tracing::debug!(path, %status, "answered"),
    }
    state.stats().record(path, &status);
    response
}

fn into_response(answer: Result<Vec<u8>, ApiError>) -> Response {
    match answer {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(error) => error.into_response(),
    }
}

async fn misbehave(
    state: &AppState,
    kind: FaultKind,
    route: Route,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    match kind {
        FaultKind::RateLimited { retry_after_secs } => {
            let mut response = ApiError::rate_limited().into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        FaultKind::KeyExhausted => ApiError::api_key_exhausted().into_response(),
        FaultKind::ServerError => ApiError::unexpected_error().into_response(),
        FaultKind::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html")],
            UNAVAILABLE_HTML,
        )
            .into_response(),
        FaultKind::Slow { delay } => {
            tokio::time::sleep(delay).await;
            into_response(answer(state, route, uri, headers))
        }
        FaultKind::Malformed => {
            let mut body = answer(state, route, uri, headers).unwrap_or_else(|e| e.body());
            // Any strict prefix of a JSON object is invalid JSON.
            body.truncate(body.len() / 2);
            json_response(StatusCode::OK, body)
        }
        FaultKind::Oversized { bytes } => oversized(state, route, uri, bytes),
        FaultKind::KeyInvalid => ApiError::api_key_invalid().into_response(),
        FaultKind::BadRequest => ApiError::parameter_invalid(
            "You've included a parameter in your request which is currently not supported. \
             Check the documentation at https://newsapi.org/docs for the parameters this \
             endpoint supports.",
        )
        .into_response(),
        FaultKind::Drop => hang_up(),
        FaultKind::WrongShape => json_response(
            StatusCode::OK,
            br#"{"status":"ok","articles":"nope"}"#.to_vec(),
        ),
    }
}

/// A response whose body fails before its first byte: hyper then closes the connection
/// without writing anything, which a client sees as a connection error.
fn hang_up() -> Response {
    let failure = io::Error::new(io::ErrorKind::ConnectionAborted, "drop fault");
    Body::from_stream(futures::stream::iter([Err::<Bytes, _>(failure)])).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArticlePage<'a> {
    status: &'static str,
    total_results: u32,
    articles: &'a [Article],
}

#[derive(Serialize)]
struct SourcePage<'a> {
    status: &'static str,
    sources: &'a [SourceInfo],
}

/// The body of a successful answer, or the error NewsAPI would give.
fn answer(
    state: &AppState,
    route: Route,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Vec<u8>, ApiError> {
    let params = Params::from_uri(uri)?;
    check_api_key(state.inner.api_key.as_deref(), &params, headers)?;
    let body = match route {
        Route::Sources => {
            let listing = catalog::source_listing(&SourcesQuery::parse(&params)?);
            serde_json::to_vec(&SourcePage {
                status: "ok",
                sources: &listing,
            })
        }
        Route::Articles(endpoint) => {
            let query = NewsQuery::parse(endpoint, &params)?;
            let page_size = u64::from(query.page_size());
            let start = u64::from(query.page() - 1) * page_size;
            let max_results = state.inner.max_results;
            if start >= u64::from(max_results) {
                return Err(ApiError::maximum_results_reached(
                    max_results,
                    start,
                    start + page_size,
                ));
            }
            let results = result_set(state, endpoint, &query);
            let end = (start + page_size).min(u64::from(results.total().min(max_results)));
            // Both bounds are below `max_results`, a u32.
            let articles: Vec<Article> = (start as u32..end as u32)
                .map(|position| results.article(position))
                .collect();
            serde_json::to_vec(&ArticlePage {
                status: "ok",
                total_results: results.total(),
                articles: &articles,
            })
        }
    };
    body.map_err(|error| {
        tracing::error!(%error, "serializing a response body");
        ApiError::unexpected_error()
    })
}

fn result_set(state: &AppState, endpoint: Endpoint, query: &NewsQuery) -> ResultSet {
    let shared = &state.inner;
    let rotation = articles::rotation_steps(shared.started.elapsed(), shared.rotate_every);
    ResultSet::new(endpoint, query, shared.seed, shared.total_results, rotation)
        .dirty_every(shared.dirty_every)
}

/// A valid article page of at least `bytes` bytes, from the request's query when it has a
/// valid one (so its URLs look right), else from a generic one.
fn oversized(state: &AppState, route: Route, uri: &Uri, bytes: usize) -> Response {
    let endpoint = match route {
        Route::Articles(endpoint) => endpoint,
        Route::Sources => Endpoint::TopHeadlines,
    };
    let parsed = Params::from_uri(uri).and_then(|params| NewsQuery::parse(endpoint, &params));
    let (query, start) = match parsed {
        Ok(query) => {
            let start = (query.page() - 1).saturating_mul(query.page_size());
            (query, start)
        }
        Err(_) => {
            let params = Params::from_uri(&Uri::from_static("/v2/everything?q=news"));
            match params.and_then(|p| NewsQuery::parse(Endpoint::Everything, &p)) {
                Ok(query) => (query, 0),
                Err(error) => return error.into_response(),
            }
        }
    };
    let results = result_set(state, endpoint, &query);
    let mut body = Vec::with_capacity(bytes.saturating_add(4096));
    body.extend_from_slice(
        format!(
            r#"{{"status":"ok","totalResults":{},"articles":["#,
            results.total()
        )
        .as_bytes(),
    );
    let mut position = start;
    while body.len() <= bytes {
        if position != start {
            body.push(b',');
        }
        if let Err(error) = serde_json::to_writer(&mut body, &results.article(position)) {
            tracing::error!(%error, "serializing an oversized body");
            return ApiError::unexpected_error().into_response();
        }
        position = position.wrapping_add(1);
    }
    body.extend_from_slice(b"]}");
    json_response(StatusCode::OK, body)
}
