//! The article: served over HTTP and carried on the stream.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{ArticleId, BatchId, JobId};

/// Where an article was published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Source {
    /// NewsAPI's source id, when it has one.
    #[serde(default)]
    pub id: Option<String>,
    /// The source's display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// One fetched article, as the HTTP API serves it. NewsAPI returns `null` for many fields;
/// they stay `null` here rather than being invented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Article {
    /// First 16 bytes of the SHA-256 of `url`, hex.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "5d41402abc4b2a76b9719d911017c592"))]
    pub id: ArticleId,
    /// The job that fetched it.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub job_id: JobId,
    /// The batch (run) that fetched it.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub batch_id: BatchId,
    /// The publisher.
    pub source: Source,
    /// The author, when known.
    pub author: Option<String>,
    /// The headline.
    pub title: Option<String>,
    /// A short description.
    pub description: Option<String>,
    /// The article's URL, its identity.
    pub url: String,
    /// A picture for it.
    pub url_to_image: Option<String>,
    /// When it was published (RFC 3339 UTC).
    #[serde(with = "crate::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub published_at: Option<OffsetDateTime>,
    /// The first characters of the text, as NewsAPI truncates it.
    pub content: Option<String>,
    /// When the worker fetched it (RFC 3339 UTC).
    #[serde(with = "crate::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub fetched_at: OffsetDateTime,
    /// What the job's `enrich` stage added (`domain`, `word_count`, `reading_time_secs`);
    /// absent when the job has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An article as published on `news.articles.<job_id>.<batch_id>`: the HTTP `Article` plus its
/// 0-based place in the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleMessage {
    /// The article itself.
    #[serde(flatten)]
    pub article: Article,
    /// Its 0-based place in the batch.
    pub seq: u32,
}

/// An article as NewsAPI returns it: every field may be missing or `null`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawArticle {
    /// `{id, name}` of the source.
    pub source: Option<Source>,
    /// Author.
    pub author: Option<String>,
    /// Headline.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// URL: an article without one is dropped, since its URL is its identity.
    pub url: Option<String>,
    /// Picture URL.
    pub url_to_image: Option<String>,
    /// Publication time as text.
    pub published_at: Option<String>,
    /// Truncated content.
    pub content: Option<String>,
}

impl Article {
    /// Turns a NewsAPI article into ours; `None` when it has no usable URL.
    pub fn from_newsapi(
        raw: RawArticle,
        job_id: &JobId,
        batch_id: BatchId,
        fetched_at: OffsetDateTime,
    ) -> Option<Self> {
        let url = raw
            .url
            .map(|u| u.trim().to_owned())
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))?;
        Some(Self {
            id: ArticleId::from_url(&url),
            job_id: job_id.clone(),
            batch_id,
            source: raw.source.unwrap_or_default(),
            author: raw.author,
            title: raw.title,
            description: raw.description,
            url,
            url_to_image: raw.url_to_image,
            published_at: raw
                .published_at
                .as_deref()
                .and_then(crate::query::parse_date),
            content: raw.content,
            fetched_at,
            extra: None,
        })
    }

    /// Whether `needle` (already lowercase) occurs in the title, description or content,
    /// ignoring case.
    pub fn matches_text(&self, needle_lowercase: &str) -> bool {
        [&self.title, &self.description, &self.content]
            .into_iter()
            .flatten()
            .any(|text| text.to_lowercase().contains(needle_lowercase))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawArticle {
        serde_json::from_str(json).expect("raw article parses")
    }

    #[test]
    fn nulls_and_missing_fields_are_kept_as_null() {
        let job = JobId::parse("j").expect("valid");
        let batch = BatchId::generate();
        let article = Article::from_newsapi(
            raw(r#"{"source":{"id":null,"name":"Wired"},"author":null,"url":"https://x.test/a","urlToImage":null,"publishedAt":"2026-11-20T08:15:00Z","content":null}"#),
            &job,
            batch,
            crate::now_utc(),
        )
        .expect("has a url");
        assert_eq!(article.author, None);
        assert_eq!(article.title, None);
        assert_eq!(article.source.name.as_deref(), Some("Wired"));
        assert_eq!(article.id, ArticleId::from_url("https://x.test/a"));
        assert!(article.published_at.is_some());
    }

    #[test]
    fn articles_without_a_usable_url_are_dropped() {
        let job = JobId::parse("j").expect("valid");
        for json in [
            r#"{}"#,
            r#"{"url":null}"#,
            r#"{"url":""}"#,
            r#"{"url":"javascript:alert(1)"}"#,
        ] {
            assert!(
                Article::from_newsapi(raw(json), &job, BatchId::generate(), crate::now_utc())
                    .is_none(),
                "{json}"
            );
        }
    }

    #[test]
    fn an_article_message_is_the_article_plus_seq() {
        let job = JobId::parse("j").expect("valid");
        let article = Article::from_newsapi(
            raw(r#"{"url":"https://x.test/a","title":"T"}"#),
            &job,
            BatchId::generate(),
            crate::now_utc(),
        )
        .expect("url");
        let message = ArticleMessage {
            article: article.clone(),
            seq: 3,
        };
        let value = serde_json::to_value(&message).expect("serializes");
        assert_eq!(value["seq"], 3);
        assert_eq!(value["url"], "https://x.test/a");
        let back: ArticleMessage = serde_json::from_value(value).expect("parses");
        assert_eq!(back.article, article);
    }

    #[test]
    fn text_matching_ignores_case_and_nulls() {
        let job = JobId::parse("j").expect("valid");
        let article = Article::from_newsapi(
            raw(r#"{"url":"https://x.test/a","title":"Bitcoin Soars"}"#),
            &job,
            BatchId::generate(),
            crate::now_utc(),
        )
        .expect("url");
        assert!(article.matches_text("bitcoin"));
        assert!(!article.matches_text("ether"));
    }
}
