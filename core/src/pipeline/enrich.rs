//! `{"type":"enrich","add":["domain","word_count","reading_time_secs"]}`: adds an object
//! `extra` to each article holding the keys asked for.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::domains::host_of;
use super::{Memory, Stage};
use crate::Article;

/// Reading speed behind `reading_time_secs`, in words per minute.
const WORDS_PER_MINUTE: u64 = 200;

/// A key `enrich` can add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Enrichment {
    /// The host of the article's URL, lower-cased.
    Domain,
    /// Words in the title, description and content (without NewsAPI's `[+N chars]` tail).
    WordCount,
    /// Seconds to read those words at 200 words a minute, rounded up.
    ReadingTimeSecs,
}

/// Adds computed keys under `extra`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Enrich {
    /// The keys to add.
    add: Vec<Enrichment>,
}

impl Enrich {
    /// An enrich stage; [`Stage::check`] says whether it is valid.
    pub fn new(add: Vec<Enrichment>) -> Self {
        Self { add }
    }
}

/// Words of the article's text; NewsAPI's `… [+1234 chars]` tail is not a word.
pub fn word_count(article: &Article) -> u64 {
    [&article.title, &article.description, &article.content]
        .into_iter()
        .flatten()
        .map(|text| {
            let text = match text.rfind(" [+") {
                Some(at) if text.ends_with(" chars]") => &text[..at],
                _ => text,
            };
            text.split_whitespace()
                .filter(|w| w.chars().any(char::is_alphanumeric))
                .count() as u64
        })
        .sum()
}

impl Stage for Enrich {
    fn check(&self) -> Result<(), String> {
        if self.add.is_empty() {
            return Err(
                "add must name at least one of domain, word_count, reading_time_secs".to_owned(),
            );
        }
        Ok(())
    }

    fn apply(&self, mut articles: Vec<Article>, _memory: &Memory) -> Vec<Article> {
        for article in &mut articles {
            let words = word_count(article);
            let domain = host_of(&article.url);
            let extra = article.extra.get_or_insert_with(Default::default);
            for key in &self.add {
                let (name, value) = match key {
                    Enrichment::Domain => {
                        ("domain", domain.clone().map_or(Value::Null, Value::from))
                    }
                    Enrichment::WordCount => ("word_count", Value::from(words)),
                    Enrichment::ReadingTimeSecs => (
                        "reading_time_secs",
                        Value::from((words * 60).div_ceil(WORDS_PER_MINUTE)),
                    ),
                };
                extra.insert(name.to_owned(), value);
            }
        }
        articles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::article_with;
    use serde_json::json;

    #[test]
    fn each_key_asked_for_is_added_under_extra() {
        let mut article = article_with(
            "https://News.Example.com/a",
            "Three word title",
            Some("and four more words"),
        );
        article.content = Some("Five words of content here… [+1234 chars]".to_owned());
        let all = Enrich::new(vec![
            Enrichment::Domain,
            Enrichment::WordCount,
            Enrichment::ReadingTimeSecs,
        ]);
        let kept = all.apply(vec![article], &Memory::default());
        let extra = Value::Object(kept[0].extra.clone().expect("extra added"));
        assert_eq!(
            extra,
            json!({"domain":"news.example.com","word_count":12,"reading_time_secs":4})
        );
    }

    #[test]
    fn only_the_keys_asked_for_are_added_and_earlier_ones_stay() {
        let article = article_with("https://a.test/1", "One", None);
        let first = Enrich::new(vec![Enrichment::Domain]).apply(vec![article], &Memory::default());
        let second = Enrich::new(vec![Enrichment::WordCount]).apply(first, &Memory::default());
        let extra = Value::Object(second[0].extra.clone().expect("extra"));
        assert_eq!(extra, json!({"domain":"a.test","word_count":1}));
    }

    #[test]
    fn an_article_without_text_has_no_words() {
        let mut article = article_with("https://a.test/1", "x", None);
        article.title = None;
        assert_eq!(word_count(&article), 0);
        let kept =
            Enrich::new(vec![Enrichment::ReadingTimeSecs]).apply(vec![article], &Memory::default());
        assert_eq!(
            kept[0].extra.as_ref().expect("extra")["reading_time_secs"],
            0
        );
    }

    #[test]
    fn an_empty_add_list_is_refused() {
        assert!(Enrich::new(vec![]).check().is_err());
    }
}
