//! Defensive parsing and classification of NewsAPI responses: the worker hands over the status,
//! the `Retry-After` header and the (size-capped) body, and gets back a page, the end of
//! results, or a typed error that knows whether it is worth retrying.

use std::time::Duration;

use serde::Deserialize;

use crate::article::RawArticle;
use crate::ErrorInfo;

/// One page of results.
#[derive(Debug, Clone, Default)]
pub struct NewsPage {
    /// How many results the query has in all (uncapped).
    pub total_results: u64,
    /// This page's articles, raw.
    pub articles: Vec<RawArticle>,
}

/// A successful answer.
#[derive(Debug)]
pub enum PageOutcome {
    /// A page of results.
    Page(NewsPage),
    /// 426 `maximumResultsReached`: the plan's cap on results; a normal end, not a failure.
    EndOfResults,
}

/// A failed fetch, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// 429 `rateLimited`: retry after the server's `Retry-After`.
    #[error("NewsAPI rate-limited the request ({code}): {message}")]
    RateLimited {
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// 429 `apiKeyExhausted`: the key's quota is spent; retrying now only burns requests.
    #[error("NewsAPI says the API key's quota is exhausted ({code}): {message}")]
    QuotaExhausted { code: String, message: String },
    /// 401: the key is missing, invalid or disabled.
    #[error("NewsAPI rejected the API key ({code}): {message}")]
    Unauthorized { code: String, message: String },
    /// Any other 4xx: the request itself is wrong; retrying cannot help.
    #[error("NewsAPI rejected the request with {status} ({code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// 5xx: the server failed.
    #[error("NewsAPI answered {status}: {message}")]
    Server { status: u16, message: String },
    /// The request timed out.
    #[error("NewsAPI did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed (refused, reset, DNS).
    #[error("could not reach NewsAPI: {0}")]
    Connection(String),
    /// The body was larger than the cap.
    #[error("NewsAPI's response is larger than the {limit}-byte cap")]
    TooLarge { limit: usize },
    /// The body was not NewsAPI's JSON.
    #[error("NewsAPI's response is not valid: {0}")]
    Malformed(String),
    /// The request budget shared by the workers on this key has no room for the request, which
    /// was not sent. The message says whose budget and when it returns.
    #[error("{message}")]
    BudgetExhausted {
        message: String,
        returns_at: time::OffsetDateTime,
    },
    /// The shared request budget could not be consulted, so the request was not sent.
    #[error("the shared request budget could not be checked, so nothing was sent: {0}")]
    BudgetUnavailable(String),
}

impl FetchError {
    /// Whether another attempt within the same run may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Timeout(_)
                | Self::Connection(_)
                | Self::Malformed(_)
        )
    }

    /// Whether the failure concerns the API key, shared by every job of a worker, so the
    /// worker should pause all calls rather than let each job find out again.
    pub fn is_key_failure(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. } | Self::QuotaExhausted { .. }
        )
    }

    /// Whether the shared request budget stopped the request before it was sent.
    pub fn is_budget(&self) -> bool {
        matches!(
            self,
            Self::BudgetExhausted { .. } | Self::BudgetUnavailable(_)
        )
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The error as a marker and `last_error` carry it: a snake_case code and this message.
    pub fn to_info(&self) -> ErrorInfo {
        let code = match self {
            Self::RateLimited { code, .. }
            | Self::QuotaExhausted { code, .. }
            | Self::Unauthorized { code, .. } => snake_case(code),
            Self::Rejected { code, .. } if !code.is_empty() => snake_case(code),
            Self::Rejected { .. } => "bad_request".to_owned(),
            Self::Server { .. } => "upstream_error".to_owned(),
            Self::Timeout(_) => "timeout".to_owned(),
            Self::Connection(_) => "connection_failed".to_owned(),
            Self::TooLarge { .. } => "response_too_large".to_owned(),
            Self::Malformed(_) => "malformed_response".to_owned(),
            Self::BudgetExhausted { .. } => "budget_exhausted".to_owned(),
            Self::BudgetUnavailable(_) => "budget_unavailable".to_owned(),
        };
        ErrorInfo::new(code, self.to_string())
    }
}

#[derive(Deserialize)]
struct Envelope {
    status: Option<String>,
    #[serde(rename = "totalResults")]
    total_results: Option<u64>,
    articles: Option<Vec<RawArticle>>,
    code: Option<String>,
    message: Option<String>,
}

const MAX_MESSAGE_CHARS: usize = 300;

/// Interprets one HTTP answer from NewsAPI.
pub fn interpret(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<PageOutcome, FetchError> {
    let envelope: Result<Envelope, _> = serde_json::from_slice(body);
    if status == 200 {
        let envelope =
            envelope.map_err(|e| FetchError::Malformed(format!("body is not JSON ({e})")))?;
        return match (envelope.status.as_deref(), envelope.articles) {
            (Some("ok"), Some(articles)) => Ok(PageOutcome::Page(NewsPage {
                total_results: envelope.total_results.unwrap_or(articles.len() as u64),
                articles,
            })),
            (Some("error"), _) => Err(FetchError::Rejected {
                status,
                code: envelope.code.unwrap_or_default(),
                message: clip(envelope.message.unwrap_or_default()),
            }),
            _ => Err(FetchError::Malformed(
                "expected {\"status\":\"ok\",\"articles\":[...]}".to_owned(),
            )),
        };
    }
    let (code, message) = match envelope {
        Ok(e) => (
            e.code.unwrap_or_default(),
            clip(e.message.unwrap_or_default()),
        ),
        Err(_) => (String::new(), format!("a non-JSON {status} answer")),
    };
    Err(match status {
        426 if code == "maximumResultsReached" || code.is_empty() => {
            return Ok(PageOutcome::EndOfResults)
        }
        429 if code == "apiKeyExhausted" => FetchError::QuotaExhausted { code, message },
        429 => FetchError::RateLimited {
            code: if code.is_empty() {
                "rateLimited".to_owned()
            } else {
                code
            },
            message,
            retry_after,
        },
        401 => FetchError::Unauthorized {
            code: if code.is_empty() {
                "apiKeyInvalid".to_owned()
            } else {
                code
            },
            message,
        },
        500..=599 => FetchError::Server { status, message },
        _ => FetchError::Rejected {
            status,
            code,
            message,
        },
    })
}

fn clip(message: String) -> String {
    crate::ids::truncate_chars(&message, MAX_MESSAGE_CHARS)
}

/// `apiKeyInvalid` → `api_key_invalid`.
pub fn snake_case(code: &str) -> String {
    let mut out = String::with_capacity(code.len() + 4);
    for c in code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
    {
        if c.is_ascii_uppercase() {
            if !out.is_empty() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        "upstream_error".to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_page_is_parsed_with_null_fields() {
        let body = br#"{"status":"ok","totalResults":2,"articles":[{"source":{"id":null,"name":"A"},"author":null,"title":"t","url":"https://a.test/1","publishedAt":"2026-11-20T08:00:00Z"},{"url":null}]}"#;
        match interpret(200, None, body) {
            Ok(PageOutcome::Page(page)) => {
                assert_eq!(page.total_results, 2);
                assert_eq!(page.articles.len(), 2);
            }
            other => panic!("expected a page, got {other:?}"),
        }
    }

    #[test]
    fn the_results_cap_is_the_end_not_a_failure() {
        let body = br#"{"status":"error","code":"maximumResultsReached","message":"You have requested too many results."}"#;
        assert!(matches!(
            interpret(426, None, body),
            Ok(PageOutcome::EndOfResults)
        ));
    }

    #[test]
    fn errors_are_classified_by_status_and_code() {
        let err = |status, body: &str| {
            interpret(status, Some(Duration::from_secs(3)), body.as_bytes()).expect_err("an error")
        };
        let limited = err(
            429,
            r#"{"status":"error","code":"rateLimited","message":"slow down"}"#,
        );
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(limited.to_info().code, "rate_limited");
        let exhausted = err(
            429,
            r#"{"status":"error","code":"apiKeyExhausted","message":"quota"}"#,
        );
        assert!(!exhausted.is_retryable() && exhausted.is_key_failure());
        let invalid = err(
            401,
            r#"{"status":"error","code":"apiKeyInvalid","message":"bad key"}"#,
        );
        assert!(!invalid.is_retryable() && invalid.is_key_failure());
        assert_eq!(invalid.to_info().code, "api_key_invalid");
        let bad = err(
            400,
            r#"{"status":"error","code":"parameterInvalid","message":"q"}"#,
        );
        assert!(!bad.is_retryable());
        assert_eq!(bad.to_info().code, "parameter_invalid");
        let server = err(
            500,
            r#"{"status":"error","code":"unexpectedError","message":"oops"}"#,
        );
        assert!(server.is_retryable());
        assert_eq!(server.to_info().code, "upstream_error");
        let html = err(503, "<html>Service Unavailable</html>");
        assert!(html.is_retryable());
    }

    #[test]
    fn a_malformed_or_wrongly_shaped_body_is_a_clear_error() {
        for body in [
            &b"{\"status\":\"ok\",\"articles\":[{"[..],
            br#"{"status":"ok","articles":"nope"}"#,
            br#"[1,2]"#,
            b"",
        ] {
            let err = interpret(200, None, body).expect_err("an error");
            assert_eq!(
                err.to_info().code,
                "malformed_response",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn codes_become_snake_case() {
        assert_eq!(snake_case("apiKeyInvalid"), "api_key_invalid");
        assert_eq!(snake_case("rateLimited"), "rate_limited");
        assert_eq!(snake_case(""), "upstream_error");
    }

    proptest! {
        #[test]
        fn any_bytes_with_any_status_never_panic(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = interpret(status, None, &body);
        }

        #[test]
        fn json_like_bodies_never_panic(body in r#"\{"status":"(ok|error)","totalResults":[0-9]{0,3},"articles":\[(\{"url":"[a-z:/.]{0,12}","title":(null|"x")\},?){0,3}\]\}"#) {
            let _ = interpret(200, None, body.as_bytes());
        }
    }
}
