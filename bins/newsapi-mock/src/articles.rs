//! Deterministic articles: article `i` of a query is a pure function of the query's canonical
//! form, the seed and the article's absolute index, so the same query always sees the same
//! articles and different queries see different URLs.
//!
//! The query is hashed once per request; each article then costs one cheap integer mix.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::{
    ADJECTIVES, FIRST_NAMES, GROUPS, LAST_NAMES, NOUNS, OUTLETS, PLACES, TOPICS, VERBS,
};
use crate::query::{Endpoint, NewsQuery};

/// Absolute index of the newest article before any rotation. Large so that indexes stay
/// positive however deep a listing goes; URLs carry it, so it looks like an article id.
const ANCHOR: i64 = 1_000_000;
/// `publishedAt` of the article at [`ANCHOR`]: 2026-11-20T12:00:00Z.
const ANCHOR_UNIX: i64 = 1_795_176_000;
/// Articles are this many seconds apart.
const SPACING_SECS: i64 = 7 * 60;

/// `source` of an article.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRef {
    /// NewsAPI's id of the source; `null` for sources it knows by name only.
    pub id: Option<String>,
    /// Display name.
    pub name: String,
}

/// One article, serialized exactly as NewsAPI does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Article {
    /// The outlet.
    pub source: SourceRef,
    /// `null` for every 4th article, as bylines often are missing.
    pub author: Option<String>,
    /// Mentions the query's terms when it has any.
    pub title: String,
    /// About 150 characters; `null` for every 7th article.
    pub description: Option<String>,
    /// Unique per query and article, stable across requests and rotation.
    pub url: String,
    /// `null` for every 5th article.
    pub url_to_image: Option<String>,
    /// RFC 3339 UTC, strictly decreasing down a result list.
    pub published_at: String,
    /// The first 200 characters and `… [+N chars]`, as on the free plan; `null` for every 11th.
    pub content: Option<String>,
}

/// How many steps the newest article has moved since start: one per `every`.
pub fn rotation_steps(elapsed: Duration, every: Option<Duration>) -> i64 {
    match every {
        Some(every) if !every.is_zero() => {
            i64::try_from(elapsed.as_nanos() / every.as_nanos()).unwrap_or(i64::MAX / 2)
        }
        _ => 0,
    }
}

/// Where an article is published.
#[derive(Debug, Clone)]
struct Origin {
    id: Option<String>,
    name: String,
    domain: String,
}

/// All results of one query: their number and how to make each of them.
#[derive(Debug, Clone)]
pub struct ResultSet {
    hash: u64,
    short_hash: String,
    topic: Option<String>,
    with_source_suffix: bool,
    outlets: Vec<Origin>,
    total: u32,
    newest: i64,
    dirty_every: Option<u32>,
}

impl ResultSet {
    /// The results of `query`; `total` overrides the hash-derived count, `rotation` is
    /// [`rotation_steps`].
    pub fn new(
        endpoint: Endpoint,
        query: &NewsQuery,
        seed: u64,
        total: Option<u32>,
        rotation: i64,
    ) -> Self {
        let digest = Sha256::new()
            .chain_update(seed.to_le_bytes())
            .chain_update(query.canonical().as_bytes())
            .finalize();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        let hash = u64::from_le_bytes(head);
        let short_hash = digest[..4].iter().fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        });
        let topic = query
            .q()
            .map(topic_of_q)
            .or_else(|| query.category().map(str::to_owned));
        Self {
            hash,
            short_hash,
            topic,
            with_source_suffix: endpoint == Endpoint::TopHeadlines,
            outlets: outlets_for(query),
            total: total.unwrap_or(120 + (hash % 281) as u32),
            newest: ANCHOR.saturating_add(rotation),
            dirty_every: None,
        }
    }

    /// Makes one result in `every` a `[Removed]` placeholder and the one after it carry HTML
    /// entities in its title and description, by absolute index, so a result keeps its
    /// dirt across pages and rotation.
    pub fn dirty_every(mut self, every: Option<u32>) -> Self {
        self.dirty_every = every.filter(|&n| n > 0);
        self
    }

    /// How many results the query has in all.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The result at `position`, 0 being the newest.
    pub fn article(&self, position: u32) -> Article {
        let index = self.newest - i64::from(position);
        match self
            .dirty_every
            .map(|every| index.rem_euclid(i64::from(every)))
        {
            Some(0) => return removed(),
            Some(1) => return with_entities(self.clean_article(index)),
            _ => {}
        }
        self.clean_article(index)
    }

    fn clean_article(&self, index: i64) -> Article {
        let mut mix = Mix(self.hash ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let r = mix.next();
        let pick = |shift: u32| (r >> shift) as usize % 8;
        let outlet = &self.outlets[(mix.next() % self.outlets.len() as u64) as usize];
        let topic = self.topic.as_deref().unwrap_or(TOPICS[pick(0)]);
        let (adjective, noun, group, verb, place) = (
            ADJECTIVES[pick(3)],
            NOUNS[pick(6)],
            GROUPS[pick(9)],
            VERBS[pick(12)],
            PLACES[pick(15)],
        );
        let other_group = GROUPS[(pick(9) + 1 + pick(18) % 7) % 8];

        // Every template starts with a fixed word, so the topic keeps the case q gave it.
        let mut title = match pick(21) % 4 {
            0 => format!(
                "{} {noun} on {topic} {verb} {group} {place}",
                capital(adjective)
            ),
            1 => format!("What the {adjective} {topic} {noun} means for {group} {place}"),
            2 => format!(
                "{} weigh {adjective} {topic} {noun} {place}",
                capital(group)
            ),
            _ => format!("Explainer: how the {topic} {noun} {verb} {group} {place}"),
        };
        let slug = slug(&title);
        if self.with_source_suffix {
            title.push_str(" - ");
            title.push_str(&outlet.name);
        }

        let description = (index.rem_euclid(7) != 6).then(|| {
            format!(
                "{} say the {adjective} {noun} on {topic} could change how {other_group} plan \
                 for the months ahead, according to people familiar with the matter. The {noun} \
                 follows weeks of debate {place}.",
                capital(group)
            )
        });
        let content = (index.rem_euclid(11) != 10).then(|| {
            let mut text = format!(
                "{} ({}) — The {adjective} {noun} on {topic} {verb} {group} {place}, and \
                 {other_group} were quick to respond. Officials said more details would follow \
                 later this week as the {noun} is reviewed by independent experts and",
                capital(place),
                outlet.name
            );
            truncate_chars(&mut text, 200);
            let _ = write!(text, "… [+{} chars]", 1200 + (r >> 32) % 4800);
            text
        });

        Article {
            source: SourceRef {
                id: outlet.id.clone(),
                name: outlet.name.clone(),
            },
            author: (index.rem_euclid(4) != 3).then(|| {
                format!(
                    "{} {}",
                    FIRST_NAMES[pick(24)],
                    LAST_NAMES[(r >> 27) as usize % 8]
                )
            }),
            title,
            description,
            url: format!(
                "https://{}/news/{}/{index}-{slug}",
                outlet.domain, self.short_hash
            ),
            url_to_image: (index.rem_euclid(5) != 4).then(|| {
                format!(
                    "https://cdn.{}/images/2026/11/{}-{index}-1200x630.jpg?width=1200&quality=85",
                    outlet.domain, self.short_hash
                )
            }),
            published_at: published_at(index),
            content,
        }
    }
}

/// NewsAPI's placeholder for an article that was removed, field for field.
fn removed() -> Article {
    const REMOVED: &str = "[Removed]";
    Article {
        source: SourceRef {
            id: None,
            name: REMOVED.to_owned(),
        },
        author: None,
        title: REMOVED.to_owned(),
        description: Some(REMOVED.to_owned()),
        url: "https://removed.com".to_owned(),
        url_to_image: None,
        published_at: "1970-01-01T00:00:00Z".to_owned(),
        content: Some(REMOVED.to_owned()),
    }
}

/// `article` with the HTML entities publishers leave in titles and descriptions.
fn with_entities(mut article: Article) -> Article {
    article.title = format!("{} &amp; what&#x27;s next", article.title);
    article.description = article
        .description
        .map(|description| format!("&quot;It&#x27;s early days&quot; &#8212; {description}"));
    article
}

/// `publishedAt` of the article at absolute `index`: 7 minutes per index around the anchor.
fn published_at(index: i64) -> String {
    let unix = (index - ANCHOR)
        .saturating_mul(SPACING_SECS)
        .saturating_add(ANCHOR_UNIX);
    let at =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Where a query's articles come from: the sources and domains it names, else the outlets
/// it does not exclude.
fn outlets_for(query: &NewsQuery) -> Vec<Origin> {
    let mut outlets: Vec<Origin> = query
        .sources()
        .iter()
        .map(
            |id| match OUTLETS.iter().find(|o| o.id == Some(id.as_str())) {
                Some(outlet) => Origin {
                    id: Some(id.clone()),
                    name: outlet.name.to_owned(),
                    domain: outlet.domain.to_owned(),
                },
                None => Origin {
                    id: Some(id.clone()),
                    name: id.split('-').map(capital).collect::<Vec<_>>().join(" "),
                    domain: format!("{}.com", id.replace(['-', '.'], "")),
                },
            },
        )
        .chain(query.domains().iter().map(|domain| Origin {
            id: None,
            name: capital(domain),
            domain: domain.clone(),
        }))
        .collect();
    if outlets.is_empty() {
        outlets = OUTLETS
            .iter()
            .filter(|o| !query.exclude_domains().iter().any(|d| d == o.domain))
            .map(|o| Origin {
                id: o.id.map(str::to_owned),
                name: o.name.to_owned(),
                domain: o.domain.to_owned(),
            })
            .collect();
    }
    if outlets.is_empty() {
        outlets.push(Origin {
            id: None,
            name: OUTLETS[0].name.to_owned(),
            domain: OUTLETS[0].domain.to_owned(),
        });
    }
    outlets
}

/// The words of a NewsAPI query without its operators and quotes, as a headline would use them.
fn topic_of_q(q: &str) -> String {
    let words: Vec<&str> = q
        .split_whitespace()
        .filter(|w| !matches!(*w, "AND" | "OR" | "NOT") && !w.starts_with('-'))
        .map(|w| w.trim_matches(['"', '(', ')', '+']))
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        q.trim().to_owned()
    } else {
        words.join(" ")
    }
}

fn capital(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The title as a URL path segment: ASCII letters and digits, lower-cased, dash-separated.
fn slug(title: &str) -> String {
    let mut slug = String::with_capacity(title.len());
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    truncate_chars(&mut slug, 80);
    slug.trim_end_matches('-').to_owned()
}

fn truncate_chars(text: &mut String, chars: usize) {
    if let Some((at, _)) = text.char_indices().nth(chars) {
        text.truncate(at);
    }
}

/// splitmix64: a fast, well-spread stream of numbers from one seed.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Params;

    fn results(endpoint: Endpoint, query: &str, rotation: i64) -> ResultSet {
        let uri = format!("/v2/x?{query}").parse().unwrap();
        let query = NewsQuery::parse(endpoint, &Params::from_uri(&uri).unwrap()).unwrap();
        ResultSet::new(endpoint, &query, 0, None, rotation)
    }

    #[test]
    fn anchor_is_the_documented_base_time() {
        assert_eq!(published_at(ANCHOR), "2026-11-20T12:00:00Z");
        assert_eq!(published_at(ANCHOR - 1), "2026-11-20T11:53:00Z");
    }

    #[test]
    fn same_query_gives_same_articles_and_count() {
        let a = results(Endpoint::Everything, "q=rust&page=3", 0);
        let b = results(Endpoint::Everything, "q=rust", 0);
        assert_eq!(a.total(), b.total());
        assert!((120..=400).contains(&a.total()));
        assert_eq!(a.article(17), b.article(17));
    }

    #[test]
    fn different_queries_give_different_urls() {
        let a = results(Endpoint::Everything, "q=rust", 0);
        let b = results(Endpoint::Everything, "q=go", 0);
        let c = results(Endpoint::TopHeadlines, "q=rust", 0);
        assert_ne!(a.article(0).url, b.article(0).url);
        assert_ne!(a.article(0).url, c.article(0).url);
    }

    #[test]
    fn articles_are_newest_first_and_mention_q() {
        let set = results(Endpoint::Everything, "q=%22open+source%22+AND+-crypto", 0);
        let articles: Vec<Article> = (0..100).map(|i| set.article(i)).collect();
        for pair in articles.windows(2) {
            assert!(pair[0].published_at > pair[1].published_at);
        }
        assert!(articles.iter().all(|a| a.title.contains("open source")));
    }

    #[test]
    fn nulls_follow_the_index_pattern_and_sizes_are_realistic() {
        let set = results(Endpoint::Everything, "q=rust", 0);
        let articles: Vec<Article> = (0..200).map(|i| set.article(i)).collect();
        let nulls = |f: fn(&Article) -> bool| articles.iter().filter(|a| f(a)).count();
        assert!(nulls(|a| a.author.is_none()) > 0);
        assert!(nulls(|a| a.description.is_none()) > 0);
        assert!(nulls(|a| a.url_to_image.is_none()) > 0);
        assert!(nulls(|a| a.content.is_none()) > 0);
        assert!(nulls(|a| a.source.id.is_none()) > 0);
        let full = articles
            .iter()
            .find(|a| a.content.is_some() && a.description.is_some())
            .unwrap();
        let content = full.content.as_deref().unwrap();
        assert!(content.contains("… [+") && content.ends_with(" chars]"));
        let size = serde_json::to_vec(full).unwrap().len();
        assert!((650..=1400).contains(&size), "{size}");
    }

    #[test]
    fn rotation_shifts_articles_down_keeping_their_urls() {
        let before = results(Endpoint::Everything, "q=rust", 0);
        let after = results(Endpoint::Everything, "q=rust", 1);
        assert_eq!(before.article(0), after.article(1));
        assert!(after.article(0).published_at > before.article(0).published_at);
    }

    #[test]
    fn dirty_results_are_placeholders_and_entity_encoded_by_index() {
        let clean = results(Endpoint::Everything, "q=rust", 0);
        let dirty = results(Endpoint::Everything, "q=rust", 0).dirty_every(Some(5));
        let articles: Vec<Article> = (0..20).map(|i| dirty.article(i)).collect();
        let placeholders = articles
            .iter()
            .filter(|a| a.url == "https://removed.com")
            .count();
        assert_eq!(placeholders, 4);
        let encoded: Vec<&Article> = articles
            .iter()
            .filter(|a| a.title.contains("&#x27;"))
            .collect();
        assert_eq!(encoded.len(), 4);
        for (i, article) in articles.iter().enumerate() {
            if article.url == "https://removed.com" {
                assert_eq!(article.title, "[Removed]");
                assert_eq!(article.published_at, "1970-01-01T00:00:00Z");
            } else if !article.title.contains("&amp;") {
                assert_eq!(article, &clean.article(i as u32));
            }
        }
        assert_eq!(dirty.total(), clean.total());
    }

    #[test]
    fn rotation_steps_count_whole_periods() {
        let every = Some(Duration::from_secs(10));
        assert_eq!(rotation_steps(Duration::from_secs(9), every), 0);
        assert_eq!(rotation_steps(Duration::from_secs(25), every), 2);
        assert_eq!(rotation_steps(Duration::from_secs(25), None), 0);
    }

    #[test]
    fn requested_sources_are_the_articles_sources() {
        let set = results(Endpoint::TopHeadlines, "sources=bbc-news,daily-ledger", 0);
        for i in 0..20 {
            let article = set.article(i);
            let id = article.source.id.unwrap();
            assert!(id == "bbc-news" || id == "daily-ledger");
            assert!(article.title.ends_with(&article.source.name));
        }
    }
}
