//! `{"type":"dedupe","window_batches":N}` (1..=1000): drops articles whose URL was published
//! by any of the job's previous N complete batches, so subscribers get only new articles.
//! The memory of those batches is the worker's to keep (see [`Memory`]); it holds article ids,
//! which are a hash of the URL, so it stays small.

use serde::{Deserialize, Serialize};

use super::{Memory, Stage};
use crate::Article;

/// The widest window.
const MAX_WINDOW: u32 = 1000;

/// Drops articles recent batches already published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Dedupe {
    /// How many previous complete batches to compare with: 1 to 1000.
    window_batches: u32,
}

impl Dedupe {
    /// A dedupe stage over `window_batches` batches; [`Stage::check`] says whether it is valid.
    pub fn new(window_batches: u32) -> Self {
        Self { window_batches }
    }

    /// How many previous batches it compares with.
    pub fn window(&self) -> usize {
        self.window_batches as usize
    }
}

impl Stage for Dedupe {
    fn check(&self) -> Result<(), String> {
        if (1..=MAX_WINDOW).contains(&self.window_batches) {
            Ok(())
        } else {
            Err(format!(
                "window_batches is out of range: it must be between 1 and {MAX_WINDOW}, got {}",
                self.window_batches
            ))
        }
    }

    fn apply(&self, articles: Vec<Article>, memory: &Memory) -> Vec<Article> {
        let seen = memory.recent(self.window());
        articles
            .into_iter()
            .filter(|article| !seen.contains(article.id.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::article_with;

    fn memory(batches: &[&[&str]]) -> Memory {
        Memory {
            batches: batches
                .iter()
                .map(|urls| urls.iter().map(|u| id(u)).collect())
                .collect(),
        }
    }

    fn id(url: &str) -> String {
        crate::ArticleId::from_url(url).as_str().to_owned()
    }

    #[test]
    fn urls_of_batches_inside_the_window_are_dropped() {
        let articles = vec![
            article_with("https://a.test/1", "a", None),
            article_with("https://a.test/2", "b", None),
            article_with("https://a.test/3", "c", None),
        ];
        let memory = memory(&[&["https://a.test/1"], &["https://a.test/2"]]);
        let kept = Dedupe::new(1).apply(articles.clone(), &memory);
        assert_eq!(kept.len(), 2);
        let kept = Dedupe::new(2).apply(articles, &memory);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].url, "https://a.test/3");
    }

    #[test]
    fn with_no_memory_everything_is_new() {
        let articles = vec![article_with("https://a.test/1", "a", None)];
        assert_eq!(Dedupe::new(5).apply(articles, &Memory::default()).len(), 1);
    }

    #[test]
    fn memory_keeps_the_newest_batches_first() {
        let mut memory = Memory::default();
        for i in 0..4 {
            memory.remember(vec![id(&format!("https://a.test/{i}"))], 3);
        }
        assert_eq!(memory.batches.len(), 3);
        assert_eq!(memory.batches[0], [id("https://a.test/3")]);
        assert!(memory.recent(1).contains(id("https://a.test/3").as_str()));
        assert!(!memory.recent(3).contains(id("https://a.test/0").as_str()));
    }

    #[test]
    fn the_window_is_one_to_a_thousand() {
        assert!(Dedupe::new(0).check().is_err());
        assert!(Dedupe::new(1001).check().is_err());
        assert!(Dedupe::new(1).check().is_ok());
        assert!(Dedupe::new(1000).check().is_ok());
    }
}
