//! The fixed material articles are made of: outlets, words and names, and the sources listing
//! built from the outlets.

use serde::Serialize;

use crate::query::SourcesQuery;

/// A news outlet articles can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlet {
    /// NewsAPI's id; `None` for sites it indexes by name only, as it does many smaller ones.
    pub id: Option<&'static str>,
    /// Display name.
    pub name: &'static str,
    /// Host of its article URLs.
    pub domain: &'static str,
    /// One of NewsAPI's categories.
    pub category: &'static str,
    /// ISO 639-1 language code.
    pub language: &'static str,
    /// ISO 3166-1 country code, lower-case.
    pub country: &'static str,
}

const fn outlet(
    id: Option<&'static str>,
    name: &'static str,
    domain: &'static str,
    category: &'static str,
    language: &'static str,
    country: &'static str,
) -> Outlet {
    Outlet {
        id,
        name,
        domain,
        category,
        language,
        country,
    }
}

/// Outlets of the articles of queries that name no source or domain.
#[rustfmt::skip]
pub const OUTLETS: [Outlet; 12] = [
    outlet(Some("daily-ledger"), "The Daily Ledger", "dailyledger.com", "general", "en", "us"),
    outlet(Some("northern-wire"), "Northern Wire", "northernwire.co.uk", "general", "en", "gb"),
    outlet(Some("circuit-review"), "Circuit Review", "circuitreview.com", "technology", "en", "us"),
    outlet(Some("market-sentinel"), "Market Sentinel", "marketsentinel.com", "business", "en", "us"),
    outlet(None, "Signalpost.io", "signalpost.io", "technology", "en", "us"),
    outlet(Some("harbor-times"), "Harbor Times", "harbortimes.com.au", "general", "en", "au"),
    outlet(Some("science-current"), "Science Current", "sciencecurrent.org", "science", "en", "us"),
    outlet(None, "Quarterly Byte", "quarterlybyte.com", "technology", "en", "ca"),
    outlet(Some("le-courrier-libre"), "Le Courrier Libre", "courrierlibre.fr", "general", "fr", "fr"),
    outlet(Some("sportsdesk"), "SportsDesk", "sportsdesk.com", "sports", "en", "us"),
    outlet(None, "Fieldnotes.dev", "fieldnotes.dev", "technology", "en", "de"),
    outlet(Some("health-beat"), "Health Beat", "healthbeat.news", "health", "en", "gb"),
];

/// Topics of queries without `q` or `category`.
#[rustfmt::skip]
pub const TOPICS: [&str; 8] = [
    "markets", "climate policy", "elections", "AI", "space exploration", "public health",
    "energy prices", "housing",
];
#[rustfmt::skip]
pub const ADJECTIVES: [&str; 8] = [
    "new", "surprising", "long-awaited", "controversial", "record", "sweeping", "unexpected",
    "quiet",
];
#[rustfmt::skip]
pub const NOUNS: [&str; 8] = [
    "report", "deal", "study", "plan", "ruling", "update", "forecast", "proposal",
];
#[rustfmt::skip]
pub const GROUPS: [&str; 8] = [
    "investors", "researchers", "regulators", "consumers", "developers", "city officials",
    "small businesses", "analysts",
];
#[rustfmt::skip]
pub const VERBS: [&str; 8] = [
    "reshapes", "divides", "boosts", "worries", "surprises", "challenges", "lifts", "unsettles",
];
#[rustfmt::skip]
pub const PLACES: [&str; 8] = [
    "in Europe", "across Asia", "in the US", "worldwide", "in Latin America", "in Africa",
    "in Canada", "in Australia",
];
#[rustfmt::skip]
pub const FIRST_NAMES: [&str; 8] = [
    "Maya", "Daniel", "Priya", "Tomás", "Aiko", "Oliver", "Fatima", "Jonas",
];
#[rustfmt::skip]
pub const LAST_NAMES: [&str; 8] = [
    "Lindqvist", "Okafor", "Chen", "Moreau", "Haddad", "Novak", "Ramirez", "Sato",
];

/// An entry of `/v2/top-headlines/sources`, with NewsAPI's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceInfo {
    pub id: &'static str,
    pub name: &'static str,
    pub description: String,
    pub url: String,
    pub category: &'static str,
    pub language: &'static str,
    pub country: &'static str,
}

/// The outlets that have an id and match `query`, as `/v2/top-headlines/sources` lists them.
pub fn source_listing(query: &SourcesQuery) -> Vec<SourceInfo> {
    OUTLETS
        .iter()
        .filter(|o| {
            query.category.is_none_or(|c| c == o.category)
                && query.language.is_none_or(|l| l == o.language)
                && query.country.is_none_or(|c| c == o.country)
        })
        .filter_map(|o| {
            Some(SourceInfo {
                id: o.id?,
                name: o.name,
                description: format!("{} covers {} news as it happens.", o.name, o.category),
                url: format!("https://{}", o.domain),
                category: o.category,
                language: o.language,
                country: o.country,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_listing_filters_by_category() {
        let listing = source_listing(&SourcesQuery {
            category: Some("technology"),
            ..SourcesQuery::default()
        });
        assert!(!listing.is_empty());
        assert!(listing.iter().all(|s| s.category == "technology"));
    }

    #[test]
    fn source_listing_leaves_out_sources_without_an_id() {
        let listing = source_listing(&SourcesQuery::default());
        assert_eq!(
            listing.len(),
            OUTLETS.iter().filter(|o| o.id.is_some()).count()
        );
    }
}
