//! HTTP caching of stored data: every `GET` of a job, the job list, batches or articles
//! answers with an `ETag` and `Cache-Control`, and a request whose `If-None-Match` lists the
//! current tag gets a 304 without a body.
//!
//! Complete batches never change, so their pages carry a tag naming the batch and page (set by
//! the handler) and may be kept a year; everything else is tagged by a hash of its bytes and
//! must be revalidated on every use (`no-cache`). Responses are `private`: they may need a
//! bearer token.

use std::hash::{Hash as _, Hasher as _};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What a page of a complete batch says: it never changes.
pub const IMMUTABLE: &str = "private, max-age=31536000, immutable";
/// What every other stored-data answer says: use it only after checking it is current.
pub const REVALIDATE: &str = "private, no-cache";

/// The largest body this layer buffers to tag (pages are bounded well below it).
const MAX_TAGGED_BODY: usize = 64 * 1024 * 1024;

/// The routes whose `GET` answers are stored data.
const STORED_DATA: &[&str] = &[
    "/jobs",
    "/jobs/{id}",
    "/jobs/{id}/articles",
    "/jobs/{id}/batches",
    "/jobs/{id}/batches/{batch_id}/articles",
    "/articles",
];

/// Whether `If-None-Match` lists `etag` (or is `*`).
pub fn matches(headers: &HeaderMap, etag: &str) -> bool {
    lists(headers.get_all(header::IF_NONE_MATCH).iter(), etag)
}

/// Whether these `If-None-Match` values list `etag` (or are `*`).
fn lists<'a>(values: impl Iterator<Item = &'a HeaderValue>, etag: &str) -> bool {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == etag || tag == "*" || tag.strip_prefix("W/") == Some(etag))
}

/// A 304 carrying `etag`.
pub fn not_modified(etag: HeaderValue, cache_control: &'static str) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    response.headers_mut().insert(header::ETAG, etag);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    response
}

/// The layer: tags successful stored-data `GET`s that the handler did not tag, and answers 304
/// when the client already has them.
pub async fn conditional(request: Request, next: Next) -> Response {
    let stored_data = request.method() == Method::GET
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|path| STORED_DATA.contains(&path.as_str()));
    if !stored_data {
        return next.run(request).await;
    }
    // Only the conditions are kept (empty, and not allocated, without `If-None-Match`).
    let conditions: Vec<HeaderValue> = request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .cloned()
        .collect();
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    if response.headers().contains_key(header::ETAG) {
        // The handler tagged an immutable page itself (and answered its 304s).
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_TAGGED_BODY).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let etag = tag_of(&bytes);
    if lists(conditions.iter(), &etag) {
        if let Ok(value) = HeaderValue::from_str(&etag) {
            return not_modified(value, REVALIDATE);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        parts.headers.insert(header::ETAG, value);
    }
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    Response::from_parts(parts, Body::from(bytes))
}

/// A strong tag from the bytes: equal bytes, equal tag, within a build of data-streams.
fn tag_of(bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("\"{:016x}-{:x}\"", hasher.finish(), bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_and_wildcards_match() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(matches(&headers, "\"a\""));
        assert!(matches(&headers, "\"b\""));
        assert!(!matches(&headers, "\"c\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(matches(&headers, "\"c\""));
        assert_eq!(tag_of(b"x"), tag_of(b"x"));
        assert_ne!(tag_of(b"x"), tag_of(b"y"));
    }
}
