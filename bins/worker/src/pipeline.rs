//! What a run does to its articles between the fetch and the publish: clean them (NewsAPI's
//! removed-article placeholders out, HTML entities in titles and descriptions decoded), turn
//! them into ours (no usable URL or already in the batch: out), then run the job's pipeline.
//! Pure: the run around it does the I/O.

use std::collections::{BTreeMap, HashSet};

use newsflow_core::article::RawArticle;
use newsflow_core::pipeline::{clean, Memory};
use newsflow_core::{Article, BatchId, JobSpec};
use time::OffsetDateTime;

/// A batch's articles, ready to publish, and what happened on the way.
#[derive(Debug, Default)]
pub struct Shaped {
    /// What the batch publishes, in order.
    pub articles: Vec<Article>,
    /// How many articles NewsAPI returned.
    pub fetched: u32,
    /// How many each cleaning step (`removed`, `no_url`, `repeated`) and stage type dropped.
    pub dropped: BTreeMap<String, u32>,
}

/// Shapes the raw articles of every page of a run of `spec`, as batch `batch`.
pub fn shape(
    spec: &JobSpec,
    batch: BatchId,
    raw: Vec<RawArticle>,
    memory: &Memory,
    fetched_at: OffsetDateTime,
) -> Shaped {
    let mut dropped = BTreeMap::new();
    let mut count = |reason: &str| *dropped.entry(reason.to_owned()).or_insert(0u32) += 1;
    let fetched = u32::try_from(raw.len()).unwrap_or(u32::MAX);
    let mut seen = HashSet::new();
    let mut articles = Vec::with_capacity(raw.len());
    for raw in raw {
        let Some(raw) = clean::clean(raw) else {
            count("removed");
            continue;
        };
        let Some(article) = Article::from_newsapi(raw, spec.id(), batch, fetched_at) else {
            count("no_url");
            continue;
        };
        if !seen.insert(article.url.clone()) {
            count("repeated");
            continue;
        }
        articles.push(article);
    }
    let outcome = spec.pipeline().run(articles, memory);
    for (stage, n) in outcome.dropped {
        *dropped.entry(stage).or_insert(0) += n;
    }
    Shaped {
        articles: outcome.kept,
        fetched,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use newsflow_core::ArticleId;
    use serde_json::json;

    fn raw(json: serde_json::Value) -> RawArticle {
        serde_json::from_value(json).expect("raw article")
    }

    fn spec(pipeline: serde_json::Value) -> JobSpec {
        JobSpec::from_create_request(&json!({"id":"j","params":{"q":"x"},"pipeline":pipeline}))
            .expect("valid")
    }

    fn removed() -> RawArticle {
        raw(
            json!({"source":{"id":null,"name":"[Removed]"},"title":"[Removed]","description":"[Removed]","url":"https://removed.com","publishedAt":"1970-01-01T00:00:00Z","content":"[Removed]"}),
        )
    }

    #[test]
    fn placeholders_unusable_and_repeated_articles_are_counted_apart_from_stages() {
        let pages = vec![
            raw(json!({"url":"https://a.test/1","title":"AI &amp; chips"})),
            removed(),
            removed(),
            raw(json!({"url":"javascript:x","title":"AI"})),
            raw(json!({"url":"https://a.test/1","title":"AI again"})),
            raw(json!({"url":"https://a.test/2","title":"Cats"})),
            raw(json!({"url":"https://a.test/3","title":"AI isn&#x27;t new"})),
        ];
        let memory = Memory {
            batches: vec![vec![ArticleId::from_url("https://a.test/3")
                .as_str()
                .to_owned()]],
        };
        let spec = spec(json!([
            {"type":"filter","include":["ai"]},
            {"type":"dedupe","window_batches":1}
        ]));
        let shaped = shape(
            &spec,
            BatchId::generate(),
            pages,
            &memory,
            newsflow_core::now_utc(),
        );
        assert_eq!(shaped.fetched, 7);
        let titles: Vec<_> = shaped.articles.iter().map(|a| a.title.as_deref()).collect();
        assert_eq!(titles, [Some("AI & chips")]);
        let dropped: Vec<(&str, u32)> = shaped
            .dropped
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            dropped,
            [
                ("dedupe", 1),
                ("filter", 1),
                ("no_url", 1),
                ("removed", 2),
                ("repeated", 1)
            ]
        );
    }

    #[test]
    fn without_a_pipeline_only_cleaning_applies() {
        let pages = vec![
            removed(),
            raw(
                json!({"url":"https://a.test/1","title":"Rock &amp; roll","description":"It&#x27;s back"}),
            ),
        ];
        let shaped = shape(
            &spec(json!([])),
            BatchId::generate(),
            pages,
            &Memory::default(),
            newsflow_core::now_utc(),
        );
        assert_eq!(shaped.articles.len(), 1);
        assert_eq!(shaped.articles[0].title.as_deref(), Some("Rock & roll"));
        assert_eq!(shaped.articles[0].description.as_deref(), Some("It's back"));
        assert_eq!(shaped.dropped.get("removed"), Some(&1));
    }
}
