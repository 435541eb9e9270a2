//! The one error type of the HTTP API, in the contract's `{"error":{"code","message"}}` shape,
//! and the JSON body extractor that turns bad input into it.

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use newsflow_core::ValidationError;
use serde::Serialize;

/// An HTTP API failure.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: missing or wrong bearer token.
    #[error("a valid bearer token is required: send Authorization: Bearer <token>")]
    Unauthorized,
    /// 404.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 405.
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    /// 409.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 408: the body did not arrive in time.
    #[error("the request body did not arrive within {} seconds", BODY_READ_TIMEOUT.as_secs())]
    RequestTimeout,
    /// 413.
    #[error("the request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    /// 415.
    #[error("the request body must be JSON: send Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422: a value is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// 503.
    #[error("{0}")]
    NotReady(String),
    /// 503: too many requests in flight; retry in a second.
    #[error("the server is handling as many requests as it allows; retry in a second")]
    Overloaded,
    /// 503: as many event streams are open as `--max-sse-clients` allows.
    #[error("as many event streams are open as the server allows; retry later")]
    TooManyStreams,
    /// 503: a job change reached a read replica and no instance controls jobs to run it.
    #[error("{0}")]
    NoController(String),
    /// 504: the controlling instance did not answer a forwarded job change in time.
    #[error("the instance that controls jobs did not answer in time; the change may or may not have been made: read the job before retrying")]
    ControllerTimeout,
    /// 503: the change was made, but the jobs bucket did not take it in time.
    #[error("the change was made but NATS did not take it for the read replicas in time; read the job before retrying")]
    NotReplicated,
    /// 500: logged with its cause chain; the client sees no internals.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// A 404 for an unknown job.
    pub fn job_not_found(job: &str) -> Self {
        Self::NotFound {
            code: "job_not_found",
            message: format!("no job with id {job:?}"),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Invalid(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.code),
            Self::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::TooManyStreams => (StatusCode::SERVICE_UNAVAILABLE, "too_many_streams"),
            Self::NoController(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_controller"),
            Self::ControllerTimeout => (StatusCode::GATEWAY_TIMEOUT, "controller_timeout"),
            Self::NotReplicated => (StatusCode::SERVICE_UNAVAILABLE, "not_replicated"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The contract's error body.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code.
    pub code: String,
    /// A human sentence saying what to fix.
    pub message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if matches!(self, Self::PayloadTooLarge { .. }) {
            // The rest of the body is drained, not read: the connection cannot be reused.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        if matches!(self, Self::Overloaded | Self::TooManyStreams) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if matches!(self, Self::NoController(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
        }
        response
    }
}

/// A JSON request body: content type checked (415), size capped (413), syntax checked (400).
/// What the value must contain is the handler's business (422).
pub struct JsonBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = AppError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(AppError::UnsupportedMediaType);
        }
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        let bytes = read_capped(request.into_body(), limit).await?;
        serde_json::from_slice::<StrictJson>(&bytes)
            .map(|strict| JsonBody(strict.0))
            .map_err(|e| AppError::BadRequest {
                code: "malformed_json",
                message: format!("the request body is not valid JSON: {e}"),
            })
    }
}

/// Reads a whole request body of at most `limit` bytes, within the body read timeout.
pub async fn read_capped(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, AppError> {
    let mut chunks = body.into_data_stream();
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|_| AppError::BadRequest {
                code: "unreadable_body",
                message: "the request body could not be read".to_owned(),
            })?;
            if bytes.len() + chunk.len() > limit {
                return Err(AppError::PayloadTooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(())
    });
    match read.await {
        Ok(Ok(())) => Ok(bytes.into()),
        Ok(Err(error)) => {
            if matches!(error, AppError::PayloadTooLarge { .. }) {
                tokio::spawn(drain(chunks));
            }
            Err(error)
        }
        Err(_) => Err(AppError::RequestTimeout),
    }
}

/// Any JSON value, except that an object naming a key twice is refused: which of the two
/// counts would be a guess, and two parsers (a proxy's and ours) may guess differently.
struct StrictJson(serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((key, StrictJson(value))) = map.next_entry::<String, StrictJson>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "the key {:?} appears twice in one object",
                    key.chars().take(80).collect::<String>()
                )));
            }
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }
}

/// The most bytes of a refused body read (and thrown away) so that the client, still sending,
/// gets its 413 instead of a connection reset.
const DRAIN_AT_MOST: usize = 16 * 1024 * 1024;

/// Reads and discards what is left of a refused body, within bounds of size and time; the
/// connection closes after it (the 413 says `Connection: close`).
pub async fn drain(mut chunks: axum::body::BodyDataStream) {
    let mut seen = 0usize;
    let _ = tokio::time::timeout(BODY_READ_TIMEOUT, async {
        while let Some(Ok(chunk)) = chunks.next().await {
            seen += chunk.len();
            if seen > DRAIN_AT_MOST {
                break;
            }
        }
    })
    .await;
}

/// How long a client may take to send its request body: a client that announces more than it
/// sends must not hold a connection and a task forever.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The body limit in force, recorded for error messages.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_naming_a_key_twice_are_refused_at_any_depth() {
        let parse = |text: &str| serde_json::from_str::<StrictJson>(text).map(|s| s.0);
        assert_eq!(
            parse(r#"{"a":[1,{"b":null}],"c":1.5}"#).expect("valid"),
            serde_json::json!({"a":[1,{"b":null}],"c":1.5})
        );
        for text in [
            r#"{"id":"a","id":"b"}"#,
            r#"{"params":{"q":"x","q":"y"}}"#,
            r#"[{"a":1,"a":1}]"#,
        ] {
            let error = parse(text).expect_err("refused").to_string();
            assert!(error.contains("appears twice"), "{text}: {error}");
        }
    }
}
