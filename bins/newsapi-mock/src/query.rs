//! Request parameters turned into a validated [`NewsQuery`] or [`SourcesQuery`], rejecting
//! what NewsAPI rejects with its codes and messages and ignoring what it ignores.

use crate::protocol::{ApiError, Params};

/// Languages `/v2/everything` and `/v2/top-headlines/sources` accept.
#[rustfmt::skip]
pub const LANGUAGES: [&str; 14] = [
    "ar", "de", "en", "es", "fr", "he", "it", "nl", "no", "pt", "ru", "sv", "ud", "zh",
];

/// Countries `/v2/top-headlines` accepts.
#[rustfmt::skip]
pub const COUNTRIES: [&str; 54] = [
    "ae", "ar", "at", "au", "be", "bg", "br", "ca", "ch", "cn", "co", "cu", "cz", "de", "eg", "fr",
    "gb", "gr", "hk", "hu", "id", "ie", "il", "in", "it", "jp", "kr", "lt", "lv", "ma", "mx", "my",
    "ng", "nl", "no", "nz", "ph", "pl", "pt", "ro", "rs", "ru", "sa", "se", "sg", "si", "sk", "th",
    "tr", "tw", "ua", "us", "ve", "za",
];

/// Categories `/v2/top-headlines` accepts.
#[rustfmt::skip]
pub const CATEGORIES: [&str; 7] = [
    "business", "entertainment", "general", "health", "science", "sports", "technology",
];

const SEARCH_IN: [&str; 3] = ["title", "description", "content"];
const SORT_BY: [&str; 3] = ["relevancy", "popularity", "publishedAt"];
const MAX_SOURCES: usize = 20;
const MAX_Q_CHARS: usize = 500;
/// The page size NewsAPI uses when none is given, and the largest it accepts.
pub const MAX_PAGE_SIZE: u32 = 100;

/// The two article endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/everything`.
    Everything,
    /// `/v2/top-headlines`.
    TopHeadlines,
}

/// A validated article request: its scope, its page, and a canonical form for hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewsQuery {
    q: Option<String>,
    sources: Vec<String>,
    domains: Vec<String>,
    exclude_domains: Vec<String>,
    category: Option<String>,
    canonical: String,
    page: u32,
    page_size: u32,
}

impl NewsQuery {
    /// Validates the parameters of `endpoint`.
    pub fn parse(endpoint: Endpoint, params: &Params) -> Result<Self, ApiError> {
        let mut canonical = match endpoint {
            Endpoint::Everything => String::from("everything"),
            Endpoint::TopHeadlines => String::from("top-headlines"),
        };
        let mut add = |name: &str, value: &str| {
            canonical.push('|');
            canonical.push_str(name);
            canonical.push('=');
            canonical.push_str(value);
        };

        let q = params.get("q").map(str::to_owned);
        if let Some(q) = &q {
            if q.chars().count() > MAX_Q_CHARS {
                return Err(ApiError::parameter_invalid(format!(
                    "The q parameter is too long. Queries are limited to {MAX_Q_CHARS} \
                     characters."
                )));
            }
            add("q", q);
        }
        let sources = list(params.get("sources"));
        let language = one_of(params, "language", &LANGUAGES)?;
        let (mut domains, mut exclude_domains, mut category) = (Vec::new(), Vec::new(), None);

        match endpoint {
            Endpoint::Everything => {
                let q_in_title = params.get("qInTitle");
                domains = list(params.get("domains"));
                if q.is_none() && q_in_title.is_none() && sources.is_empty() && domains.is_empty() {
                    return Err(ApiError::everything_parameters_missing());
                }
                if let Some(q_in_title) = q_in_title {
                    add("qInTitle", q_in_title);
                }
                if let Some(search_in) = params.get("searchIn") {
                    let fields = list(Some(search_in));
                    if fields.is_empty() || fields.iter().any(|f| !SEARCH_IN.contains(&f.as_str()))
                    {
                        return Err(ApiError::parameter_invalid(format!(
                            "The searchIn parameter must be a comma-separated list of: {}.",
                            SEARCH_IN.join(", ")
                        )));
                    }
                    add("searchIn", &fields.join(","));
                }
                exclude_domains = list(params.get("excludeDomains"));
                add("excludeDomains", &exclude_domains.join(","));
                for name in ["from", "to"] {
                    if let Some(value) = params.get(name) {
                        if !is_iso8601(value) {
                            return Err(ApiError::parameter_invalid(format!(
                                "The {name} parameter is not a valid ISO 8601 date or datetime, \
                                 e.g. 2026-11-20 or 2026-11-20T08:15:00."
                            )));
                        }
                        add(name, value);
                    }
                }
                if let Some(sort_by) = params.get("sortBy") {
                    let Some(&sort_by) = SORT_BY.iter().find(|s| s.eq_ignore_ascii_case(sort_by))
                    else {
                        return Err(ApiError::parameter_invalid(format!(
                            "The sortBy parameter must be one of: {}.",
                            SORT_BY.join(", ")
                        )));
                    };
                    if sort_by != "publishedAt" {
                        add("sortBy", sort_by);
                    }
                }
            }
            Endpoint::TopHeadlines => {
                let country = one_of(params, "country", &COUNTRIES)?;
                category = one_of(params, "category", &CATEGORIES)?;
                if q.is_none()
                    && sources.is_empty()
                    && language.is_none()
                    && country.is_none()
                    && category.is_none()
                {
                    return Err(ApiError::headlines_parameters_missing());
                }
                if !sources.is_empty() && (country.is_some() || category.is_some()) {
                    return Err(ApiError::parameters_incompatible());
                }
                add("country", country.unwrap_or_default());
                add("category", category.unwrap_or_default());
            }
        }
        if sources.len() > MAX_SOURCES {
            return Err(ApiError::sources_too_many());
        }
        add("sources", &sources.join(","));
        add("domains", &domains.join(","));
        add("language", language.unwrap_or_default());

        Ok(Self {
            q,
            sources,
            domains,
            exclude_domains,
            category: category.map(str::to_owned),
            canonical,
            page: number(params, "page", 1, u32::MAX, 1)?,
            page_size: number(params, "pageSize", 1, MAX_PAGE_SIZE, MAX_PAGE_SIZE)?,
        })
    }

    /// The search terms, if any.
    pub fn q(&self) -> Option<&str> {
        self.q.as_deref()
    }

    /// Requested source ids, lower-cased.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Requested domains, lower-cased.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Domains to leave out, lower-cased.
    pub fn exclude_domains(&self) -> &[String] {
        &self.exclude_domains
    }

    /// The requested category, if any.
    pub fn category(&self) -> Option<&str> {
        self.category.as_deref()
    }

    /// Everything that selects the results, in a fixed order: equal for equal queries.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The 1-based page number.
    pub fn page(&self) -> u32 {
        self.page
    }

    /// Results per page, 1..=100.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }
}

/// The filters of `/v2/top-headlines/sources`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcesQuery {
    /// Only sources of this category.
    pub category: Option<&'static str>,
    /// Only sources in this language.
    pub language: Option<&'static str>,
    /// Only sources of this country.
    pub country: Option<&'static str>,
}

impl SourcesQuery {
    /// Validates the parameters of `/v2/top-headlines/sources`.
    pub fn parse(params: &Params) -> Result<Self, ApiError> {
        Ok(Self {
            category: one_of(params, "category", &CATEGORIES)?,
            language: one_of(params, "language", &LANGUAGES)?,
            country: one_of(params, "country", &COUNTRIES)?,
        })
    }
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

fn one_of(
    params: &Params,
    name: &str,
    allowed: &[&'static str],
) -> Result<Option<&'static str>, ApiError> {
    let Some(value) = params.get(name) else {
        return Ok(None);
    };
    match allowed.iter().find(|a| a.eq_ignore_ascii_case(value)) {
        Some(&found) => Ok(Some(found)),
        None => Err(ApiError::parameter_invalid(format!(
            "The {name} parameter you provided ({value}) is not supported. Possible options: {}.",
            allowed.join(", ")
        ))),
    }
}

fn number(params: &Params, name: &str, min: u32, max: u32, default: u32) -> Result<u32, ApiError> {
    let Some(value) = params.get(name) else {
        return Ok(default);
    };
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ if max == u32::MAX => Err(ApiError::parameter_invalid(format!(
            "The {name} parameter must be a whole number of at least {min}. You provided \
             {value}."
        ))),
        _ => Err(ApiError::parameter_invalid(format!(
            "The {name} parameter must be a whole number between {min} and {max}. You provided \
             {value}."
        ))),
    }
}

/// Whether `value` is an ISO 8601 date (`2026-11-20`) or datetime with optional seconds,
/// fraction and offset (`2026-11-20T08:15`, `2026-11-20T08:15:00.5Z`, `...+01:00`).
fn is_iso8601(value: &str) -> bool {
    use time::format_description::well_known::Iso8601;
    use time::macros::format_description;
    time::OffsetDateTime::parse(value, &Iso8601::DEFAULT).is_ok()
        || time::PrimitiveDateTime::parse(value, &Iso8601::DEFAULT).is_ok()
        || time::Date::parse(value, format_description!("[year]-[month]-[day]")).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Uri;

    fn params(query: &str) -> Params {
        Params::from_uri(&format!("/v2/x?{query}").parse::<Uri>().unwrap()).unwrap()
    }

    fn code(endpoint: Endpoint, query: &str) -> &'static str {
        NewsQuery::parse(endpoint, &params(query))
            .unwrap_err()
            .code()
    }

    #[test]
    fn everything_without_scope_is_parameters_missing() {
        assert_eq!(
            code(Endpoint::Everything, "language=en&sortBy=popularity"),
            "parametersMissing"
        );
        assert_eq!(code(Endpoint::Everything, "q=%20"), "parametersMissing");
    }

    #[test]
    fn everything_accepts_any_one_scope_parameter() {
        for query in [
            "q=rust",
            "qInTitle=rust",
            "sources=bbc-news",
            "domains=bbc.co.uk",
        ] {
            assert!(
                NewsQuery::parse(Endpoint::Everything, &params(query)).is_ok(),
                "{query}"
            );
        }
    }

    #[test]
    fn bad_values_are_parameter_invalid_naming_the_parameter() {
        for (query, name) in [
            ("q=a&language=xx", "language"),
            ("q=a&sortBy=newest", "sortBy"),
            ("q=a&pageSize=0", "pageSize"),
            ("q=a&pageSize=101", "pageSize"),
            ("q=a&page=0", "page"),
            ("q=a&page=two", "page"),
            ("q=a&from=yesterday", "from"),
            ("q=a&to=2026-13-01", "to"),
            ("q=a&searchIn=body", "searchIn"),
        ] {
            let error = NewsQuery::parse(Endpoint::Everything, &params(query)).unwrap_err();
            assert_eq!(error.code(), "parameterInvalid", "{query}");
            assert!(
                error.message().contains(name),
                "{query}: {}",
                error.message()
            );
        }
    }

    #[test]
    fn dates_and_datetimes_in_iso_8601_are_accepted() {
        for value in [
            "2026-11-20",
            "2026-11-20T08:15:00",
            "2026-11-20T08:15:00Z",
            "2026-11-20T08:15:00.123+01:00",
        ] {
            assert!(is_iso8601(value), "{value}");
        }
    }

    #[test]
    fn more_than_twenty_sources_is_sources_too_many() {
        let sources: Vec<String> = (0..21).map(|i| format!("s{i}")).collect();
        let query = format!("sources={}", sources.join(","));
        assert_eq!(code(Endpoint::Everything, &query), "sourcesTooMany");
        assert_eq!(code(Endpoint::TopHeadlines, &query), "sourcesTooMany");
    }

    #[test]
    fn headlines_need_a_scope_and_no_sources_with_country_or_category() {
        assert_eq!(
            code(Endpoint::TopHeadlines, "pageSize=5"),
            "parametersMissing"
        );
        assert_eq!(
            code(Endpoint::TopHeadlines, "sources=bbc-news&country=us"),
            "parametersIncompatible"
        );
        assert_eq!(
            code(Endpoint::TopHeadlines, "sources=bbc-news&category=health"),
            "parametersIncompatible"
        );
        assert_eq!(
            code(Endpoint::TopHeadlines, "country=zz"),
            "parameterInvalid"
        );
    }

    #[test]
    fn canonical_form_ignores_paging_key_case_and_default_sort() {
        let a = NewsQuery::parse(
            Endpoint::Everything,
            &params("q=rust&page=2&pageSize=10&apiKey=k&sortBy=publishedAt&utm=x"),
        )
        .unwrap();
        let b = NewsQuery::parse(Endpoint::Everything, &params("Q=rust")).unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!((a.page(), a.page_size()), (2, 10));
        assert_eq!((b.page(), b.page_size()), (1, 100));
    }
}
