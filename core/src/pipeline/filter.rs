//! `{"type":"filter","include":[..],"exclude":[..],"fields":[..]}`: whole-word phrase matching,
//! case-insensitive, in any script. With `include`, an article stays only if some phrase
//! matches; any `exclude` match drops it.

use serde::{Deserialize, Serialize};

use super::words::{contains_phrase, words};
use super::{check_list, Memory, Stage};
use crate::Article;

/// The most phrases `include` or `exclude` may hold.
const MAX_PHRASES: usize = 100;

/// Which article text a filter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TextField {
    /// The headline.
    Title,
    /// The description.
    Description,
    /// The truncated content.
    Content,
}

/// Keeps or drops articles by the phrases their text holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Keep an article only if one of these phrases matches (none: keep all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    include: Vec<String>,
    /// Drop an article if one of these phrases matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<String>,
    /// Which text is matched; title and description by default.
    #[serde(default = "default_fields")]
    fields: Vec<TextField>,
}

fn default_fields() -> Vec<TextField> {
    vec![TextField::Title, TextField::Description]
}

impl Filter {
    /// A filter; [`Stage::check`] says whether it is valid.
    pub fn new(include: Vec<String>, exclude: Vec<String>, fields: Vec<TextField>) -> Self {
        Self {
            include,
            exclude,
            fields,
        }
    }

    fn text_of(&self, article: &Article) -> Vec<String> {
        let mut text = Vec::new();
        for field in &self.fields {
            let value = match field {
                TextField::Title => &article.title,
                TextField::Description => &article.description,
                TextField::Content => &article.content,
            };
            if let Some(value) = value {
                // A field boundary breaks a phrase: no phrase spans the title and description.
                text.push(String::new());
                text.extend(words(value));
            }
        }
        text
    }
}

impl Stage for Filter {
    fn check(&self) -> Result<(), String> {
        check_list("include", &self.include, MAX_PHRASES)?;
        check_list("exclude", &self.exclude, MAX_PHRASES)?;
        if self.include.is_empty() && self.exclude.is_empty() {
            return Err("a filter needs at least one phrase in include or exclude".to_owned());
        }
        if let Some(phrase) = self
            .include
            .iter()
            .chain(&self.exclude)
            .find(|phrase| words(phrase).is_empty())
        {
            return Err(format!(
                "the phrase {phrase:?} has no letters or digits to match"
            ));
        }
        if self.fields.is_empty() {
            return Err("fields must name at least one of title, description, content".to_owned());
        }
        Ok(())
    }

    fn apply(&self, articles: Vec<Article>, _memory: &Memory) -> Vec<Article> {
        let include: Vec<Vec<String>> = self.include.iter().map(|p| words(p)).collect();
        let exclude: Vec<Vec<String>> = self.exclude.iter().map(|p| words(p)).collect();
        articles
            .into_iter()
            .filter(|article| {
                let text = self.text_of(article);
                let matches = |phrases: &[Vec<String>]| {
                    phrases.iter().any(|phrase| contains_phrase(&text, phrase))
                };
                (include.is_empty() || matches(&include)) && !matches(&exclude)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::article_with;

    fn filter(include: &[&str], exclude: &[&str]) -> Filter {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Filter::new(owned(include), owned(exclude), default_fields())
    }

    fn titles(kept: &[Article]) -> Vec<&str> {
        kept.iter().filter_map(|a| a.title.as_deref()).collect()
    }

    #[test]
    fn include_matches_whole_words_ignoring_case() {
        let articles = vec![
            article_with("https://a.test/1", "AI chips sell out", None),
            article_with("https://a.test/2", "The minister said no", None),
            article_with("https://a.test/3", "Open-AI rivals", None),
        ];
        let kept = filter(&["ai"], &[]).apply(articles, &Memory::default());
        assert_eq!(titles(&kept), ["AI chips sell out", "Open-AI rivals"]);
    }

    #[test]
    fn a_phrase_needs_its_words_consecutively_and_not_across_fields() {
        let articles = vec![
            article_with("https://a.test/1", "Open source wins", None),
            article_with("https://a.test/2", "Open the source", None),
            article_with("https://a.test/3", "Open", Some("source of it")),
        ];
        let kept = filter(&["open source"], &[]).apply(articles, &Memory::default());
        assert_eq!(titles(&kept), ["Open source wins"]);
    }

    #[test]
    fn exclude_wins_over_include_and_reads_the_description() {
        let articles = vec![
            article_with("https://a.test/1", "Bitcoin rally", Some("Prices rise")),
            article_with(
                "https://a.test/2",
                "Bitcoin rally",
                Some("A sponsored post"),
            ),
        ];
        let kept = filter(&["bitcoin"], &["Sponsored"]).apply(articles, &Memory::default());
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].url, "https://a.test/1");
    }

    #[test]
    fn unicode_text_matches_case_insensitively() {
        let articles = vec![
            article_with("https://a.test/1", "ÜBER München", None),
            article_with("https://a.test/2", "Uber Munich", None),
        ];
        let kept = filter(&["über münchen"], &[]).apply(articles, &Memory::default());
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].url, "https://a.test/1");
    }

    #[test]
    fn articles_without_the_text_fields_match_no_include() {
        let mut bare = article_with("https://a.test/1", "x", None);
        bare.title = None;
        let kept = filter(&["x"], &[]).apply(vec![bare.clone()], &Memory::default());
        assert!(kept.is_empty());
        let kept = filter(&[], &["x"]).apply(vec![bare], &Memory::default());
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn content_is_read_only_when_asked() {
        let mut article = article_with("https://a.test/1", "Title", None);
        article.content = Some("rust inside".to_owned());
        let default = filter(&["rust"], &[]);
        assert!(default
            .apply(vec![article.clone()], &Memory::default())
            .is_empty());
        let with_content = Filter::new(vec!["rust".to_owned()], vec![], vec![TextField::Content]);
        assert_eq!(
            with_content.apply(vec![article], &Memory::default()).len(),
            1
        );
    }

    #[test]
    fn empty_or_blank_phrases_and_empty_fields_are_refused() {
        assert!(filter(&[], &[]).check().is_err());
        assert!(filter(&[" "], &[]).check().is_err());
        assert!(filter(&["--"], &[]).check().is_err());
        assert!(Filter::new(vec!["x".to_owned()], vec![], vec![])
            .check()
            .is_err());
        assert!(filter(&["x"], &[]).check().is_ok());
    }
}
