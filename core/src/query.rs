//! NewsAPI query parameters, checked against the chosen endpoint's names and rules.
//!
//! A job carries its query as a string map (`params`). Only parameters the endpoint documents
//! are accepted; `page` and `pageSize` belong to the job's `max_pages`/`page_size`, and `apiKey`
//! belongs to the worker, never to a job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// Which NewsAPI v2 endpoint a job queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// `/v2/everything`: search across all articles.
    #[default]
    Everything,
    /// `/v2/top-headlines`: breaking headlines by country, category or source.
    TopHeadlines,
}

impl Endpoint {
    /// Parses the contract's name for an endpoint.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "everything" => Ok(Self::Everything),
            "top-headlines" => Ok(Self::TopHeadlines),
            other => Err(ValidationError::new(
                "endpoint",
                "unknown_endpoint",
                format!(
                    "endpoint {:?} is not supported: use \"everything\" or \"top-headlines\"",
                    crate::ids::truncate_for_message(other)
                ),
            )),
        }
    }

    /// The contract's name of the endpoint.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Everything => "everything",
            Self::TopHeadlines => "top-headlines",
        }
    }

    /// The URL path of the endpoint on a NewsAPI server.
    pub fn path(self) -> &'static str {
        match self {
            Self::Everything => "/v2/everything",
            Self::TopHeadlines => "/v2/top-headlines",
        }
    }

    fn accepted(self) -> &'static [&'static str] {
        match self {
            Self::Everything => &[
                "q",
                "qInTitle",
                "searchIn",
                "sources",
                "domains",
                "excludeDomains",
                "from",
                "to",
                "language",
                "sortBy",
            ],
            Self::TopHeadlines => &["country", "category", "sources", "q"],
        }
    }

    fn scope(self) -> &'static [&'static str] {
        match self {
            Self::Everything => &["q", "qInTitle", "sources", "domains"],
            Self::TopHeadlines => &["country", "category", "sources", "q"],
        }
    }
}

/// The most characters NewsAPI accepts in `q`.
pub const MAX_Q_CHARS: usize = 500;
/// The most sources NewsAPI accepts in one request.
pub const MAX_SOURCES: usize = 20;

const LANGUAGES: &[&str] = &[
    "ar", "de", "en", "es", "fr", "he", "it", "nl", "no", "pt", "ru", "sv", "ud", "zh",
];
const COUNTRIES: &[&str] = &[
    "ae", "ar", "at", "au", "be", "bg", "br", "ca", "ch", "cn", "co", "cu", "cz", "de", "eg", "fr",
    "gb", "gr", "hk", "hu", "id", "ie", "il", "in", "it", "jp", "kr", "lt", "lv", "ma", "mx", "my",
    "ng", "nl", "no", "nz", "ph", "pl", "pt", "ro", "rs", "ru", "sa", "se", "sg", "si", "sk", "th",
    "tr", "tw", "ua", "us", "ve", "za",
];
const CATEGORIES: &[&str] = &[
    "business",
    "entertainment",
    "general",
    "health",
    "science",
    "sports",
    "technology",
];
const SORT_BY: &[&str] = &["relevancy", "popularity", "publishedAt"];
const SEARCH_IN: &[&str] = &["title", "description", "content"];

/// A NewsAPI query that the endpoint will accept: known parameter names, valid values, a
/// scope narrow enough, no incompatible mixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewsQuery {
    endpoint: Endpoint,
    params: BTreeMap<String, String>,
}

impl NewsQuery {
    /// Checks `params` against `endpoint`'s names and rules.
    pub fn parse(
        endpoint: Endpoint,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, ValidationError> {
        let mut checked = BTreeMap::new();
        for (name, value) in params {
            let field = format!("params.{name}");
            check_name(endpoint, name, &field)?;
            let value = match value {
                serde_json::Value::String(s) => s.trim().to_owned(),
                _ => {
                    return Err(ValidationError::new(
                        field,
                        "invalid_type",
                        format!("params.{name} must be a string, as in a NewsAPI query string"),
                    ))
                }
            };
            if value.is_empty() {
                return Err(ValidationError::new(
                    field,
                    "empty_value",
                    format!("params.{name} is empty: give it a value or leave it out"),
                ));
            }
            if let Some(control) = value.chars().find(|c| c.is_control()) {
                return Err(ValidationError::new(
                    field,
                    "control_character",
                    format!(
                        "params.{name} contains the control character U+{:04X}; remove it",
                        u32::from(control)
                    ),
                ));
            }
            check_value(name, &value, &field)?;
            checked.insert(name.clone(), value);
        }
        check_combination(endpoint, &checked)?;
        Ok(Self {
            endpoint,
            params: checked,
        })
    }

    /// The endpoint this query is for.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The parameters, in name order.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }
}

fn check_name(endpoint: Endpoint, name: &str, field: &str) -> Result<(), ValidationError> {
    match name {
        "apiKey" | "apikey" | "api_key" => Err(ValidationError::new(
            field,
            "api_key_not_allowed",
            "params must not contain an API key: the key belongs to the worker (NEWSAPI_KEY) and is sent as a header, never stored with a job",
        )),
        "page" | "pageSize" => Err(ValidationError::new(
            field,
            "reserved_param",
            format!("params.{name} is set by the job: use max_pages and page_size instead"),
        )),
        _ if endpoint.accepted().contains(&name) => Ok(()),
        _ => Err(ValidationError::new(
            field,
            "unknown_param",
            format!(
                "params.{} is not a parameter of the {} endpoint; accepted: {}",
                crate::ids::truncate_for_message(name),
                endpoint.as_str(),
                endpoint.accepted().join(", ")
            ),
        )),
    }
}

fn check_value(name: &str, value: &str, field: &str) -> Result<(), ValidationError> {
    let one_of = |allowed: &[&str]| {
        if allowed.contains(&value) {
            Ok(())
        } else {
            Err(ValidationError::new(
                field,
                "invalid_value",
                format!(
                    "params.{name} {:?} is not one of: {}",
                    crate::ids::truncate_for_message(value),
                    allowed.join(", ")
                ),
            ))
        }
    };
    match name {
        "q" | "qInTitle" if value.chars().count() > MAX_Q_CHARS => Err(ValidationError::new(
            field,
            "too_long",
            format!("params.{name} is {} characters long; NewsAPI accepts at most {MAX_Q_CHARS}", value.chars().count()),
        )),
        "language" => one_of(LANGUAGES),
        "country" => one_of(COUNTRIES),
        "category" => one_of(CATEGORIES),
        "sortBy" => one_of(SORT_BY),
        "searchIn" => value.split(',').try_for_each(|part| {
            if SEARCH_IN.contains(&part.trim()) {
                Ok(())
            } else {
                Err(ValidationError::new(
                    field,
                    "invalid_value",
                    format!("params.searchIn must be a comma-separated list of: {}", SEARCH_IN.join(", ")),
                ))
            }
        }),
        "sources" => check_list(name, value, field, MAX_SOURCES, is_source_id),
        "domains" | "excludeDomains" => check_list(name, value, field, usize::MAX, is_domain),
        "from" | "to" => parse_date(value).map(|_| ()).ok_or_else(|| {
            ValidationError::new(
                field,
                "invalid_date",
                format!(
                    "params.{name} {:?} is not an ISO 8601 date or date-time (e.g. 2026-11-20 or 2026-11-20T08:00:00Z)",
                    crate::ids::truncate_for_message(value)
                ),
            )
        }),
        _ => Ok(()),
    }
}

fn check_list(
    name: &str,
    value: &str,
    field: &str,
    max: usize,
    valid: fn(&str) -> bool,
) -> Result<(), ValidationError> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.len() > max {
        return Err(ValidationError::new(
            field,
            "too_many",
            format!(
                "params.{name} lists {} entries; NewsAPI accepts at most {max}",
                items.len()
            ),
        ));
    }
    match items.iter().find(|item| !valid(item)) {
        Some(bad) => Err(ValidationError::new(
            field,
            "invalid_value",
            format!(
                "params.{name} entry {:?} is not valid",
                crate::ids::truncate_for_message(bad)
            ),
        )),
        None => Ok(()),
    }
}

fn is_source_id(item: &str) -> bool {
    !item.is_empty()
        && item.len() <= 100
        && item
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

fn is_domain(item: &str) -> bool {
    !item.is_empty()
        && item.len() <= 253
        && item.contains('.')
        && item.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses NewsAPI's accepted date forms: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS` and RFC 3339.
pub fn parse_date(value: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    if let Ok(at) = time::OffsetDateTime::parse(value, &Rfc3339) {
        return Some(at);
    }
    if let Ok(at) = time::PrimitiveDateTime::parse(
        value,
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
    ) {
        return Some(at.assume_utc());
    }
    time::Date::parse(value, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|date| date.midnight().assume_utc())
}

fn check_combination(
    endpoint: Endpoint,
    params: &BTreeMap<String, String>,
) -> Result<(), ValidationError> {
    if !endpoint
        .scope()
        .iter()
        .any(|name| params.contains_key(*name))
    {
        return Err(ValidationError::new(
            "params",
            "scope_missing",
            format!(
                "the {} endpoint needs at least one of these params: {}",
                endpoint.as_str(),
                endpoint.scope().join(", ")
            ),
        ));
    }
    if endpoint == Endpoint::TopHeadlines
        && params.contains_key("sources")
        && (params.contains_key("country") || params.contains_key("category"))
    {
        return Err(ValidationError::new(
            "params.sources",
            "incompatible_params",
            "params.sources cannot be mixed with params.country or params.category (a NewsAPI rule)",
        ));
    }
    if let (Some(from), Some(to)) = (
        params.get("from").and_then(|v| parse_date(v)),
        params.get("to").and_then(|v| parse_date(v)),
    ) {
        if from > to {
            return Err(ValidationError::new(
                "params.from",
                "invalid_range",
                "params.from must not be after params.to",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(endpoint: Endpoint, params: serde_json::Value) -> Result<NewsQuery, &'static str> {
        let map = params.as_object().cloned().unwrap_or_default();
        NewsQuery::parse(endpoint, &map).map_err(|e| e.code)
    }

    #[test]
    fn valid_queries_are_accepted_and_trimmed() {
        let q = parse(Endpoint::Everything, json!({"q":" bitcoin ","language":"en","sortBy":"publishedAt","from":"2026-11-01","to":"2026-11-20T10:00:00Z"}))
            .expect("valid");
        assert_eq!(q.params()["q"], "bitcoin");
        assert!(parse(
            Endpoint::TopHeadlines,
            json!({"country":"us","category":"business"})
        )
        .is_ok());
        assert!(parse(Endpoint::TopHeadlines, json!({"sources":"bbc-news,cnn"})).is_ok());
    }

    #[test]
    fn each_rule_has_its_own_code() {
        let cases = [
            (
                Endpoint::Everything,
                json!({"q":"x","apiKey":"k"}),
                "api_key_not_allowed",
            ),
            (
                Endpoint::Everything,
                json!({"q":"x","pageSize":"10"}),
                "reserved_param",
            ),
            (
                Endpoint::Everything,
                json!({"q":"x","country":"us"}),
                "unknown_param",
            ),
            (
                Endpoint::TopHeadlines,
                json!({"q":"x","language":"en"}),
                "unknown_param",
            ),
            (Endpoint::Everything, json!({"q":1}), "invalid_type"),
            (Endpoint::Everything, json!({"q":"  "}), "empty_value"),
            (
                Endpoint::Everything,
                json!({"q":"a".repeat(501)}),
                "too_long",
            ),
            (
                Endpoint::Everything,
                json!({"q":"x","language":"xx"}),
                "invalid_value",
            ),
            (
                Endpoint::Everything,
                json!({"q":"x","sortBy":"newest"}),
                "invalid_value",
            ),
            (
                Endpoint::Everything,
                json!({"q":"x","from":"yesterday"}),
                "invalid_date",
            ),
            (
                Endpoint::Everything,
                json!({"q":"x","from":"2026-11-02","to":"2026-11-01"}),
                "invalid_range",
            ),
            (
                Endpoint::Everything,
                json!({"language":"en"}),
                "scope_missing",
            ),
            (Endpoint::Everything, json!({}), "scope_missing"),
            (
                Endpoint::TopHeadlines,
                json!({"sources":"cnn","country":"us"}),
                "incompatible_params",
            ),
            (
                Endpoint::TopHeadlines,
                json!({"sources":"cnn","category":"health"}),
                "incompatible_params",
            ),
            (
                Endpoint::TopHeadlines,
                json!({"country":"zz"}),
                "invalid_value",
            ),
            (
                Endpoint::Everything,
                json!({"domains":"not a domain"}),
                "invalid_value",
            ),
            (
                Endpoint::Everything,
                json!({"sources":"Bad Source"}),
                "invalid_value",
            ),
        ];
        for (endpoint, params, code) in cases {
            assert_eq!(
                parse(endpoint, params.clone()).err(),
                Some(code),
                "{params}"
            );
        }
    }

    #[test]
    fn more_than_twenty_sources_are_rejected() {
        let twenty: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
        assert!(parse(Endpoint::Everything, json!({"sources": twenty.join(",")})).is_ok());
        let many: Vec<String> = (0..21).map(|i| format!("s{i}")).collect();
        assert_eq!(
            parse(Endpoint::Everything, json!({"sources": many.join(",")})).err(),
            Some("too_many")
        );
    }

    #[test]
    fn endpoint_names_round_trip() {
        for endpoint in [Endpoint::Everything, Endpoint::TopHeadlines] {
            assert_eq!(Endpoint::parse(endpoint.as_str()), Ok(endpoint));
        }
        assert_eq!(
            Endpoint::parse("sources").map_err(|e| e.code),
            Err("unknown_endpoint")
        );
    }
}
