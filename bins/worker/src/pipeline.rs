//! What a run does to its articles between the fetch and the publish: clean them (NewsAPI's
//! removed-article placeholders out, HTML entities in titles and descriptions decoded), turn
//! them into ours (no usable URL or already in the batch: out), then run the job's pipeline.
//! Pure: the run around it does the I/O. It is fed page by page, or the whole batch at once
//! when a stage needs it (`Pipeline::whole_batch`).

use std::collections::{BTreeMap, HashSet};

use newsflow_core::article::RawArticle;
use newsflow_core::pipeline::{clean, Memory};
use newsflow_core::{Article, BatchId, JobSpec};
use time::OffsetDateTime;

/// Shapes one batch's articles, keeping what it saw across the pages it is fed.
#[derive(Debug, Default)]
pub struct Shaper {
    /// URLs already in this batch.
    seen: HashSet<String>,
    /// How many articles NewsAPI returned so far.
    pub fetched: u32,
    /// How many each cleaning step (`removed`, `no_url`, `repeated`) and stage type dropped.
    pub dropped: BTreeMap<String, u32>,
}

impl Shaper {
    /// Shapes `raw` (a page, or every page) of a run of `spec` as batch `batch`: what to
    /// publish, in order.
    pub fn shape(
        &mut self,
        spec: &JobSpec,
        batch: BatchId,
        raw: Vec<RawArticle>,
        memory: &Memory,
        fetched_at: OffsetDateTime,
    ) -> Vec<Article> {
        self.fetched = self
            .fetched
            .saturating_add(u32::try_from(raw.len()).unwrap_or(u32::MAX));
        let mut articles = Vec::with_capacity(raw.len());
        for raw in raw {
            let Some(raw) = clean::clean(raw) else {
                self.count("removed", 1);
                continue;
            };
            let Some(article) = Article::from_newsapi(raw, spec.id(), batch, fetched_at) else {
                self.count("no_url", 1);
                continue;
            };
            if !self.seen.insert(article.url.clone()) {
                self.count("repeated", 1);
                continue;
            }
            articles.push(article);
        }
        let outcome = spec.pipeline().run(articles, memory);
        for (stage, n) in outcome.dropped {
            self.count(&stage, n);
        }
        outcome.kept
    }

    fn count(&mut self, reason: &str, n: u32) {
        *self.dropped.entry(reason.to_owned()).or_insert(0) += n;
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
        let spec = spec(json!([
            {"type":"filter","include":["ai"]},
            {"type":"dedupe","window_batches":1}
        ]));
        let memory = Memory {
            batches: vec![vec![ArticleId::from_url("https://a.test/3")
                .as_str()
                .to_owned()]],
        };
        let (batch, at) = (BatchId::generate(), newsflow_core::now_utc());
        let mut shaper = Shaper::default();

        let first = shaper.shape(
            &spec,
            batch,
            vec![
                raw(json!({"url":"https://a.test/1","title":"AI &amp; chips"})),
                removed(),
                removed(),
                raw(json!({"url":"javascript:x","title":"AI"})),
            ],
            &memory,
            at,
        );
        let second = shaper.shape(
            &spec,
            batch,
            vec![
                raw(json!({"url":"https://a.test/1","title":"AI again"})),
                raw(json!({"url":"https://a.test/2","title":"Cats"})),
                raw(json!({"url":"https://a.test/3","title":"AI isn&#x27;t new"})),
            ],
            &memory,
            at,
        );

        assert_eq!(shaper.fetched, 7);
        let titles: Vec<_> = first.iter().map(|a| a.title.as_deref()).collect();
        assert_eq!(titles, [Some("AI & chips")]);
        assert!(second.is_empty(), "{second:?}");
        let dropped: Vec<(&str, u32)> = shaper
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
        let kept = Shaper::default().shape(
            &spec(json!([])),
            BatchId::generate(),
            pages,
            &Memory::default(),
            newsflow_core::now_utc(),
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].title.as_deref(), Some("Rock & roll"));
        assert_eq!(kept[0].description.as_deref(), Some("It's back"));
    }
}
