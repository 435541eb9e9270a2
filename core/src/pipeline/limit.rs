//! `{"type":"limit","max":N}` (1..=1000): keeps the N newest articles by `published_at`
//! (an article without one counts as the oldest; ties keep the earlier), in their order. The
//! only stage that judges the whole batch: a job with one publishes after its last page.

use serde::{Deserialize, Serialize};

use super::{Memory, Stage};
use crate::Article;

/// The largest `max`: a batch holds at most 1000 articles (10 pages of 100).
const MAX: u32 = 1000;

/// Keeps the newest N.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// How many to keep: 1 to 1000.
    max: u32,
}

impl Limit {
    /// A limit stage; [`Stage::check`] says whether it is valid.
    pub fn new(max: u32) -> Self {
        Self { max }
    }
}

impl Stage for Limit {
    fn check(&self) -> Result<(), String> {
        if (1..=MAX).contains(&self.max) {
            Ok(())
        } else {
            Err(format!(
                "max is out of range: it must be between 1 and {MAX}, got {}",
                self.max
            ))
        }
    }

    fn whole_batch(&self) -> bool {
        true
    }

    fn apply(&self, articles: Vec<Article>, _memory: &Memory) -> Vec<Article> {
        let max = self.max as usize;
        if articles.len() <= max {
            return articles;
        }
        let mut order: Vec<usize> = (0..articles.len()).collect();
        // Newest first; `None` sorts below any time; the sort is stable, so ties keep order.
        order.sort_by(|&a, &b| articles[b].published_at.cmp(&articles[a].published_at));
        let mut keep = vec![false; articles.len()];
        for &index in order.iter().take(max) {
            keep[index] = true;
        }
        articles
            .into_iter()
            .zip(keep)
            .filter_map(|(article, keep)| keep.then_some(article))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::article_with;
    use time::macros::datetime;

    #[test]
    fn the_newest_are_kept_in_their_order() {
        let mut articles: Vec<Article> = (0..4)
            .map(|i| article_with(&format!("https://a.test/{i}"), "t", None))
            .collect();
        articles[0].published_at = Some(datetime!(2026-11-20 08:00 UTC));
        articles[1].published_at = None;
        articles[2].published_at = Some(datetime!(2026-11-20 10:00 UTC));
        articles[3].published_at = Some(datetime!(2026-11-20 09:00 UTC));
        let kept = Limit::new(2).apply(articles, &Memory::default());
        let urls: Vec<&str> = kept.iter().map(|a| a.url.as_str()).collect();
        assert_eq!(urls, ["https://a.test/2", "https://a.test/3"]);
    }

    #[test]
    fn ties_keep_the_earlier_article() {
        let articles: Vec<Article> = (0..3)
            .map(|i| article_with(&format!("https://a.test/{i}"), "t", None))
            .collect();
        let kept = Limit::new(2).apply(articles, &Memory::default());
        assert_eq!(kept[0].url, "https://a.test/0");
        assert_eq!(kept[1].url, "https://a.test/1");
    }

    #[test]
    fn fewer_than_max_is_unchanged_and_max_is_one_to_a_thousand() {
        let articles = vec![article_with("https://a.test/1", "t", None)];
        assert_eq!(
            Limit::new(5).apply(articles.clone(), &Memory::default()),
            articles
        );
        assert!(Limit::new(0).check().is_err());
        assert!(Limit::new(1001).check().is_err());
    }
}
