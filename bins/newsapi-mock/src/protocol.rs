//! NewsAPI's side of the wire: error bodies with the real API's codes and messages, the query
//! string, and the API key.

use axum::extract::Query;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The content type NewsAPI sends with every JSON body.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A NewsAPI error: `{"status":"error","code":..,"message":..}` with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    status: &'static str,
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401 `apiKeyMissing`.
    pub fn api_key_missing() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "apiKeyMissing",
            "Your API key is missing. Append this to the URL with the apiKey param, or use the \
             x-api-key HTTP header.",
        )
    }

    /// 401 `apiKeyInvalid`.
    pub fn api_key_invalid() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "apiKeyInvalid",
            "Your API key is invalid or incorrect. Check your key, or go to https://newsapi.org \
             to create a free API key.",
        )
    }

    /// 400 `parameterInvalid` with a message naming the parameter.
    pub fn parameter_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "parameterInvalid", message)
    }

    /// 400 `parametersMissing` for `/v2/everything`.
    pub fn everything_parameters_missing() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "parametersMissing",
            "Required parameters are missing, the scope of your search is too broad. Please set \
             any of the following required parameters and try again: q, qInTitle, sources, \
             domains.",
        )
    }

    /// 400 `parametersMissing` for `/v2/top-headlines`.
    pub fn headlines_parameters_missing() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "parametersMissing",
            "Required parameters are missing. Please set any of the following required \
             parameters and try again: sources, q, language, country, category.",
        )
    }

    /// 400 `parametersIncompatible`.
    pub fn parameters_incompatible() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "parametersIncompatible",
            "You can't mix the sources parameter with the country or category parameters.",
        )
    }

    /// 400 `sourcesTooMany`.
    pub fn sources_too_many() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "sourcesTooMany",
            "You have requested too many sources in a single request. Try splitting the request \
             into 2 smaller requests.",
        )
    }

    /// 426 `maximumResultsReached` for a request of results `start` to `end` past the plan's cap.
    pub fn maximum_results_reached(max_results: u32, start: u64, end: u64) -> Self {
        Self::new(
            StatusCode::UPGRADE_REQUIRED,
            "maximumResultsReached",
            format!(
                "You have requested too many results. Developer accounts are limited to a max of \
                 {max_results} results. You are trying to request results {start} to {end}. \
                 Please upgrade to a paid plan if you need more results."
            ),
        )
    }

    /// 429 `rateLimited`.
    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rateLimited",
            "You have made too many requests recently. Developer accounts are limited to 100 \
             requests over a 24 hour period (50 requests available every 12 hours). Please \
             upgrade to a paid plan if you need more requests.",
        )
    }

    /// 429 `apiKeyExhausted`.
    pub fn api_key_exhausted() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "apiKeyExhausted",
            "Your API key has no more requests available. Developer accounts are limited to 100 \
             requests over a 24 hour period. Please upgrade to a paid plan if you need more \
             requests.",
        )
    }

    /// 500 `unexpectedError`.
    pub fn unexpected_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpectedError",
            "This shouldn't happen, and if it does then it's our fault, not yours. Try the \
             request again shortly.",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// NewsAPI's error code, e.g. `apiKeyInvalid`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The serialized JSON body.
    pub fn body(&self) -> Vec<u8> {
        let body = ErrorBody {
            status: "error",
            code: self.code,
            message: &self.message,
        };
        // Serializing a struct of strings cannot fail; an empty body would still be an answer.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, self.body())
    }
}

/// A response with NewsAPI's JSON content type.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

/// A request's query string, read the lenient way NewsAPI reads it.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The parameters of `uri`.
    pub fn from_uri(uri: &Uri) -> Result<Self, ApiError> {
        Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|Query(pairs)| Self(pairs))
            .map_err(|_| ApiError::parameter_invalid("The query string could not be parsed."))
    }

    /// The first non-blank value of `name`, trimmed; names match case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
            .find(|value| !value.is_empty())
    }
}

/// Checks the key in the `apiKey` parameter, `X-Api-Key` or `Authorization` (bearer or raw)
/// against `expected`; `None` accepts any key but still requires one.
pub fn check_api_key(
    expected: Option<&str>,
    params: &Params,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let from_header = |name| {
        headers
            .get(name)
            .map(HeaderValue::as_bytes)
            .map(<[u8]>::trim_ascii)
            .filter(|value| !value.is_empty())
    };
    let presented = params
        .get("apiKey")
        .map(str::as_bytes)
        .or_else(|| from_header(header::HeaderName::from_static("x-api-key")))
        .or_else(|| {
            from_header(header::AUTHORIZATION).map(|value| match value.get(..7) {
                Some(prefix) if prefix.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii(),
                _ => value,
            })
        })
        .ok_or_else(ApiError::api_key_missing)?;
    match expected {
        Some(expected) if expected.as_bytes() != presented => Err(ApiError::api_key_invalid()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Params {
        Params::from_uri(&format!("/v2/x?{query}").parse::<Uri>().unwrap()).unwrap()
    }

    #[test]
    fn key_is_read_from_parameter_header_or_authorization() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            check_api_key(Some("k"), &params("q=a"), &headers)
                .unwrap_err()
                .code(),
            "apiKeyMissing"
        );
        assert!(check_api_key(Some("k"), &params("apiKey=k"), &headers).is_ok());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        assert!(check_api_key(Some("k"), &params(""), &headers).is_ok());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("k"));
        assert!(check_api_key(Some("k"), &params(""), &headers).is_ok());
        headers.insert("x-api-key", HeaderValue::from_static("wrong"));
        assert_eq!(
            check_api_key(Some("k"), &params(""), &headers)
                .unwrap_err()
                .code(),
            "apiKeyInvalid"
        );
    }
}
